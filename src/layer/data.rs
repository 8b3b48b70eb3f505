//! Random access to a layer's uncompressed tar without an uncompressed copy: an
//! uncompressed blob is read in place; a compressed one (or the re-encoded form of a
//! zstd layer in one big frame) is decoded from the checkpoint at or before a read,
//! span by span, through the shared span cache. A read that nears the end of a span
//! has the next span decoded on another thread meanwhile, so a sequential reader keeps
//! two cores busy: one decoding, one copying to the kernel.

use super::checkpoints::Checkpoints;
use super::spans::SpanCache;
use super::Entry;
use anyhow::{Context, Result};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub enum LayerData {
    /// An uncompressed layer: its blob, read in place.
    Tar(File),
    Compressed(Arc<Compressed>),
}

pub struct Compressed {
    blob: File,
    checkpoints: Checkpoints,
    spans: Arc<SpanCache>,
    id: u64,
    /// A read-ahead decode is running; one at a time per layer is enough to stay
    /// ahead of a sequential reader and leaves the other cores to other readers.
    reading_ahead: AtomicBool,
}

impl Compressed {
    fn span(&self, i: usize) -> io::Result<Arc<Vec<u8>>> {
        let (s0, s1) = self.checkpoints.span_range(i);
        self.spans.get(self.id, i, s1 - s0, || self.checkpoints.decode_span(&self.blob, i))
    }

    /// Decode span `i` on another thread, unless it is cached or a read-ahead runs.
    fn read_ahead(self: &Arc<Self>, i: usize) {
        if i >= self.checkpoints.span_count() || self.spans.contains(self.id, i) {
            return;
        }
        if self.reading_ahead.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        std::thread::spawn(move || {
            // An error here is met again, and reported, by the read that needs the span.
            let _ = this.span(i);
            this.reading_ahead.store(false, Ordering::Release);
        });
    }
}

impl LayerData {
    pub fn tar(path: &Path) -> Result<LayerData> {
        Ok(LayerData::Tar(File::open(path).with_context(|| format!("cannot open layer data {}", path.display()))?))
    }

    pub fn compressed(blob: &Path, checkpoints: Checkpoints, spans: Arc<SpanCache>) -> Result<LayerData> {
        let blob = File::open(blob).with_context(|| format!("cannot open layer blob {}", blob.display()))?;
        let id = SpanCache::layer_id();
        Ok(LayerData::Compressed(Arc::new(Compressed {
            blob,
            checkpoints,
            spans,
            id,
            reading_ahead: AtomicBool::new(false),
        })))
    }

    /// Read up to `len` bytes of an entry's data starting at `pos` within the entry.
    pub fn read(&self, entry: &Entry, pos: u64, len: u32) -> io::Result<Vec<u8>> {
        if pos >= entry.size {
            return Ok(Vec::new());
        }
        let n = (len as u64).min(entry.size - pos) as usize;
        let start = entry.offset + pos;
        match self {
            LayerData::Tar(file) => {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, start)?;
                Ok(buf)
            }
            LayerData::Compressed(c) => {
                let mut buf = Vec::with_capacity(n);
                let end = start + n as u64;
                let mut at = start;
                while at < end {
                    let span = c.checkpoints.span_of(at);
                    if span >= c.checkpoints.span_count() {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the layer"));
                    }
                    let (s0, s1) = c.checkpoints.span_range(span);
                    let bytes = c.span(span)?;
                    let from = (at - s0) as usize;
                    let to = (end.min(s1) - s0) as usize;
                    if to > bytes.len() {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "a span decoded short"));
                    }
                    buf.extend_from_slice(&bytes[from..to]);
                    at = s0 + to as u64;
                    // Past the middle of a span: a sequential reader wants the next one soon.
                    if at >= s0 + (s1 - s0) / 2 {
                        c.read_ahead(span + 1);
                    }
                }
                Ok(buf)
            }
        }
    }
}
