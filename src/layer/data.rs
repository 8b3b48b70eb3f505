//! Random access to a layer's uncompressed tar, without an uncompressed copy where
//! the format allows: an uncompressed blob is read in place; a compressed one is
//! decoded from the checkpoint at or before a read, span by span, through the shared
//! span cache; a zstd layer with no frames to start from has an uncompressed copy.

use super::checkpoints::Checkpoints;
use super::spans::SpanCache;
use super::Entry;
use anyhow::{Context, Result};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

pub enum LayerData {
    /// An uncompressed tar: the blob itself, or the uncompressed copy of a layer that
    /// can't be entered midway.
    Tar(File),
    Compressed {
        blob: File,
        checkpoints: Checkpoints,
        spans: Arc<SpanCache>,
        id: u64,
    },
}

impl LayerData {
    pub fn tar(path: &Path) -> Result<LayerData> {
        Ok(LayerData::Tar(File::open(path).with_context(|| format!("cannot open layer data {}", path.display()))?))
    }

    pub fn compressed(blob: &Path, checkpoints: Checkpoints, spans: Arc<SpanCache>) -> Result<LayerData> {
        let blob = File::open(blob).with_context(|| format!("cannot open layer blob {}", blob.display()))?;
        Ok(LayerData::Compressed { blob, checkpoints, spans, id: SpanCache::layer_id() })
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
            LayerData::Compressed { blob, checkpoints, spans, id } => {
                let mut buf = Vec::with_capacity(n);
                let end = start + n as u64;
                let mut at = start;
                while at < end {
                    let span = checkpoints.span_of(at);
                    let (s0, s1) = checkpoints.span_range(span);
                    if s1 <= at {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the layer"));
                    }
                    let bytes = spans.get(*id, span, s1 - s0, || checkpoints.decode_span(blob, span))?;
                    let from = (at - s0) as usize;
                    let to = ((end.min(s1)) - s0) as usize;
                    if to > bytes.len() {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "a span decoded short"));
                    }
                    buf.extend_from_slice(&bytes[from..to]);
                    at = s0 + to as u64;
                }
                Ok(buf)
            }
        }
    }
}
