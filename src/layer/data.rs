//! Random access to a layer's uncompressed tar without an uncompressed copy: an
//! uncompressed blob is read in place; a compressed one (or the re-encoded form of a
//! zstd layer in one big frame) is decoded from the checkpoint at or before a read,
//! span by span, through the shared span cache; a compressed layer with a published
//! index may instead have its spans fetched by Range from its registry (`remote`).
//! A read past the middle of a span
//! has the spans after it decoded on the decoding workers meanwhile (`workers`: one per
//! core, shared with the indexing pass), as many as there are cores and as half the
//! span cache holds, so a sequential reader keeps every core busy: the workers decoding,
//! the reader's thread copying to the kernel.
//!
//! Bytes damaged on disk are never served: the index keeps a CRC-32 of every 64 KiB
//! block of the stored file the data is read from (`BlockSums`, taken when the layer
//! was indexed, right after its digest was verified), and every read from disk checks
//! the blocks it touches. Verification stays lazy and cheap: only what is read is
//! checked, a compressed span once per decode. A mismatch fails that read (EIO, logged
//! by the filesystem) and nothing else.

use super::block_sums::BlockSums;
use super::checkpoints::Checkpoints;
use super::estargz::Chunk;
use super::remote::{Estargz, Published};
use super::spans::SpanCache;
use super::toc::Toc;
use super::workers;
use super::{Context, Result};
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub enum LayerData {
    /// An uncompressed layer: its blob, read in place.
    Tar(Stored),
    Compressed(Arc<Compressed>),
    /// An eStargz layer read from its registry chunk by chunk (`estargz`, `remote`):
    /// a file's `Entry::offset` is its place in `files`. Decoded chunks are kept in
    /// the span cache shared by all reads, as a compressed layer's spans are, so a
    /// sequential reader inflates and checks each chunk once, not once per read.
    Estargz {
        remote: Estargz,
        files: Vec<Vec<Chunk>>,
        /// The cache key of file `i`'s first chunk; its chunk `j` is `first[i] + j`.
        first: Vec<usize>,
        spans: Arc<SpanCache>,
        id: u64,
    },
}

#[cfg(test)]
impl BlockSums {
    /// Check every block of `file` against sums taken in memory.
    pub fn verify(&self, path: &Path) -> io::Result<()> {
        Sums::Owned(self.clone()).verify(path)
    }
}

/// Where the block sums of a stored file are: in memory (just taken), or in the
/// layer's TOC, read as reads need them.
#[derive(Clone)]
pub enum Sums {
    Owned(BlockSums),
    Toc(Arc<Toc>),
}

impl Sums {
    fn len(&self) -> u64 {
        match self {
            Sums::Owned(s) => s.covered(),
            Sums::Toc(t) => t.sums_len(),
        }
    }

    fn get(&self, i: usize) -> io::Result<Option<u32>> {
        match self {
            Sums::Owned(s) => Ok(s.sums().get(i).copied()),
            Sums::Toc(t) => t.fetching(|t| t.sum(i as u64)).map_err(io::Error::other),
        }
    }

    /// Read `buf.len()` bytes at `at` from `file`, whole blocks at a time, each checked
    /// against its sum.
    fn read_exact_at(&self, file: &File, path: &Path, buf: &mut [u8], at: u64) -> io::Result<()> {
        let len = self.len();
        let end = at + buf.len() as u64;
        if end > len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the stored layer"));
        }
        const BLOCK: u64 = BlockSums::BLOCK;
        let first = at / BLOCK;
        let from = first * BLOCK;
        let to = end.div_ceil(BLOCK).saturating_mul(BLOCK).min(len);
        let mut blocks = vec![0u8; (to - from) as usize];
        file.read_exact_at(&mut blocks, from)?;
        for (k, chunk) in blocks.chunks(BLOCK as usize).enumerate() {
            let b = first as usize + k;
            if self.get(b)? != Some(crc32fast::hash(chunk)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is damaged on disk: bytes {}..{} fail their checksum (imgfs check --repair removes it)",
                        path.display(),
                        b as u64 * BLOCK,
                        b as u64 * BLOCK + chunk.len() as u64
                    ),
                ));
            }
        }
        let skip = (at - from) as usize;
        buf.copy_from_slice(&blocks[skip..skip + buf.len()]);
        Ok(())
    }

    /// Check every block of `file` (for `imgfs check`).
    pub fn verify(&self, path: &Path) -> io::Result<()> {
        let file = File::open(path)?;
        let real = file.metadata()?.len();
        let len = self.len();
        if real != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is {real} bytes, its TOC says {len}", path.display()),
            ));
        }
        let mut at = 0;
        while at < len {
            let n = BlockSums::BLOCK.min(len - at);
            self.read_exact_at(&file, path, &mut vec![0u8; n as usize], at)?;
            at += n;
        }
        Ok(())
    }
}

/// A file layer data is read from, checked against its sums when it has them (an
/// index of the store always does).
pub struct Stored {
    file: File,
    path: PathBuf,
    sums: Option<Sums>,
}

impl Stored {
    fn open(path: &Path, sums: Option<Sums>) -> Result<Stored> {
        let file = File::open(path).with_context(|| format!("cannot open layer data {}", path.display()))?;
        Ok(Stored { file, path: path.to_path_buf(), sums })
    }

    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        match &self.sums {
            Some(s) => s.read_exact_at(&self.file, &self.path, buf, at),
            None => self.file.read_exact_at(buf, at),
        }
    }
}

/// Where a compressed layer's bytes come from.
enum Source {
    /// Its blob (or re-encoded form) in the store or in place.
    Stored(Stored),
    /// Its registry, span by span, through a published index.
    Remote(Published),
}

/// A compressed layer's checkpoints: in memory, or in its TOC, read by position.
pub enum Table {
    Memory(Checkpoints),
    Toc(Arc<Toc>),
}

impl Table {
    fn span_count(&self) -> usize {
        match self {
            Table::Memory(c) => c.span_count(),
            Table::Toc(t) => t.points().map_or(0, |p| p.count as usize),
        }
    }

    /// About how much one span decodes to, for sizing read-ahead: the longest span of a
    /// table in memory; the span asked for at indexing of one in a TOC (finding the
    /// longest would read every checkpoint).
    fn span_len(&self) -> u64 {
        match self {
            Table::Memory(c) => c.max_span_len(),
            Table::Toc(t) => t.points().map_or(0, |p| p.span),
        }
    }

    fn span_of(&self, at: u64) -> io::Result<usize> {
        match self {
            Table::Memory(c) => Ok(c.span_of(at)),
            Table::Toc(t) => t.fetching(|t| t.span_of(at)).map(|i| i as usize).map_err(io::Error::other),
        }
    }

    /// Span `i`'s uncompressed and compressed ranges.
    fn ranges(&self, i: usize) -> io::Result<((u64, u64), (u64, u64))> {
        match self {
            Table::Memory(c) if i < c.span_count() => Ok((c.span_range(i), c.compressed_range(i))),
            Table::Memory(_) => Err(io::Error::other(format!("span {i} out of range"))),
            Table::Toc(t) => t.fetching(|t| t.span(i as u64)).map_err(io::Error::other),
        }
    }

    fn decode(&self, i: usize, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Table::Memory(c) => c.decode_span_from(i, data),
            Table::Toc(t) => t.decode_span(i as u64, data),
        }
    }

    fn decode_with_window(&self, i: usize, window: &[u8], data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Table::Memory(c) => c.decode_span_with_window(i, window, data),
            Table::Toc(_) => self.decode(i, data),
        }
    }
}

pub struct Compressed {
    blob: Source,
    checkpoints: Table,
    spans: Arc<SpanCache>,
    id: u64,
    /// Spans after a read to decode ahead of it: as many as there are cores, and as
    /// fit in half the span cache (at least one).
    ahead: usize,
    /// Spans being decoded ahead now.
    reading_ahead: Mutex<HashSet<usize>>,
}

impl Compressed {
    fn span(&self, i: usize) -> io::Result<Arc<Vec<u8>>> {
        let ((s0, s1), (c0, c1)) = self.checkpoints.ranges(i)?;
        self.spans.get(self.id, i, s1 - s0, || {
            // The compressed bytes are read once, checked on the way (a damaged block
            // may still decode), and decoded from memory.
            match &self.blob {
                Source::Stored(blob) => {
                    let mut data = vec![0; usize::try_from(c1 - c0).map_err(|_| io::Error::other("span too large"))?];
                    blob.read_exact_at(&mut data, c0)?;
                    self.checkpoints.decode(i, &data)
                }
                // The windows of a published TOC are in the TOC itself.
                Source::Remote(remote) if matches!(self.checkpoints, Table::Toc(_)) => {
                    let data = remote.span(i, (c0, c1))?;
                    self.checkpoints.decode(i, &data)
                }
                Source::Remote(remote) => {
                    let window = remote.window(i)?;
                    let data = remote.span(i, (c0, c1))?;
                    self.checkpoints.decode_with_window(i, &window, &data)
                }
            }
        })
    }

    /// Decode the spans from `from` on (`ahead` of them) on the workers, those not
    /// cached nor being decoded already.
    fn read_ahead(self: &Arc<Self>, from: usize) {
        let to = from.saturating_add(self.ahead).min(self.checkpoints.span_count());
        for i in from..to {
            if self.spans.contains(self.id, i) {
                continue;
            }
            if !self.reading_ahead.lock().unwrap_or_else(|p| p.into_inner()).insert(i) {
                continue;
            }
            let this = Arc::clone(self);
            workers::global().run(move || {
                // An error here is met again, and reported, by the read that needs the span.
                let _ = this.span(i);
                this.reading_ahead.lock().unwrap_or_else(|p| p.into_inner()).remove(&i);
            });
        }
    }
}

impl LayerData {
    /// An uncompressed layer read unchecked (for layers outside the store).
    pub fn tar(path: &Path) -> Result<LayerData> {
        Ok(LayerData::Tar(Stored::open(path, None)?))
    }

    /// An uncompressed layer whose reads are checked against `sums`.
    pub fn tar_checked(path: &Path, sums: Sums) -> Result<LayerData> {
        Ok(LayerData::Tar(Stored::open(path, Some(sums))?))
    }

    pub fn compressed(blob: &Path, checkpoints: Checkpoints, spans: Arc<SpanCache>) -> Result<LayerData> {
        let blob = Stored::open(blob, None)?;
        Ok(Self::compressed_from(Source::Stored(blob), Table::Memory(checkpoints), spans))
    }

    /// A compressed layer of the store: its checkpoints and block sums read from its
    /// TOC, every read from `blob` (the blob or its re-encoded copy) checked.
    pub fn compressed_checked(blob: &Path, toc: Arc<Toc>, spans: Arc<SpanCache>) -> Result<LayerData> {
        let blob = Stored::open(blob, Some(Sums::Toc(Arc::clone(&toc))))?;
        Ok(Self::compressed_from(Source::Stored(blob), Table::Toc(toc), spans))
    }

    /// A compressed layer read from its registry by Range, span by span, as its
    /// published index (whose checkpoints these are, without windows) allows.
    pub fn remote(remote: Published, checkpoints: Checkpoints, spans: Arc<SpanCache>) -> LayerData {
        Self::compressed_from(Source::Remote(remote), Table::Memory(checkpoints), spans)
    }

    /// A compressed layer read from its registry by Range, span by span, as its
    /// published index of format 2 allows: its checkpoints and windows in `toc`, itself
    /// read page by page.
    pub fn remote_toc(remote: Published, toc: Arc<Toc>, spans: Arc<SpanCache>) -> Result<LayerData> {
        if toc.points().is_none() {
            bail!("the published TOC of layer {} has no checkpoints", remote.layer);
        }
        Ok(Self::compressed_from(Source::Remote(remote), Table::Toc(toc), spans))
    }

    /// An eStargz layer read chunk by chunk from its registry, `files` as its TOC lays
    /// them out, decoded chunks kept in `spans`.
    pub fn estargz(remote: Estargz, files: Vec<Vec<Chunk>>, spans: Arc<SpanCache>) -> LayerData {
        let first = files
            .iter()
            .scan(0, |next, chunks| {
                let at = *next;
                *next += chunks.len();
                Some(at)
            })
            .collect();
        LayerData::Estargz { remote, files, first, spans, id: SpanCache::layer_id() }
    }

    fn compressed_from(blob: Source, checkpoints: Table, spans: Arc<SpanCache>) -> LayerData {
        let id = SpanCache::layer_id();
        let room = spans.limit() / (2 * checkpoints.span_len().max(1));
        let ahead = workers::cores().min(usize::try_from(room).unwrap_or(usize::MAX)).max(1);
        LayerData::Compressed(Arc::new(Compressed {
            blob,
            checkpoints,
            spans,
            id,
            ahead,
            reading_ahead: Mutex::default(),
        }))
    }

    /// Read up to `len` bytes of a file's data (`size` bytes at `offset` in the layer)
    /// starting at `pos` within the file.
    pub fn read(&self, offset: u64, size: u64, pos: u64, len: u32) -> io::Result<Vec<u8>> {
        if pos >= size {
            return Ok(Vec::new());
        }
        let n = (len as u64).min(size - pos) as usize;
        let start = offset + pos;
        match self {
            LayerData::Tar(stored) => {
                let mut buf = vec![0u8; n];
                stored.read_exact_at(&mut buf, start)?;
                Ok(buf)
            }
            LayerData::Estargz { remote, files, first, spans, id } => {
                let file = offset as usize;
                let chunks = files.get(file).map_or(&[][..], Vec::as_slice);
                let end = pos + n as u64;
                let mut buf = Vec::with_capacity(n);
                for (j, c) in
                    chunks.iter().enumerate().filter(|(_, c)| c.file_offset < end && c.file_offset + c.size > pos)
                {
                    let bytes = spans.get(*id, first[file] + j, c.size, || remote.chunk(c))?;
                    let from = pos.max(c.file_offset) - c.file_offset;
                    let to = end.min(c.file_offset + c.size) - c.file_offset;
                    buf.extend_from_slice(&bytes[from as usize..to as usize]);
                }
                if buf.len() != n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "eStargz chunks cover less than the file"));
                }
                Ok(buf)
            }
            LayerData::Compressed(c) => {
                let mut buf = Vec::with_capacity(n);
                let end = start + n as u64;
                let mut at = start;
                while at < end {
                    let span = c.checkpoints.span_of(at)?;
                    if span >= c.checkpoints.span_count() {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the layer"));
                    }
                    let ((s0, s1), _) = c.checkpoints.ranges(span)?;
                    let bytes = c.span(span)?;
                    let from = (at - s0) as usize;
                    let to = (end.min(s1) - s0) as usize;
                    if to > bytes.len() {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "a span decoded short"));
                    }
                    buf.extend_from_slice(&bytes[from..to]);
                    at = s0 + to as u64;
                    // Past the middle of a span: a sequential reader wants the next ones soon.
                    if at >= s0 + (s1 - s0) / 2 {
                        c.read_ahead(span + 1);
                    }
                }
                Ok(buf)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn block_sums_serve_exact_bytes_across_blocks_and_refuse_a_flipped_byte() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&data).unwrap();
        let sums = BlockSums::of(&data[..]).unwrap();
        let stored = Stored::open(tmp.path(), Some(Sums::Owned(sums.clone()))).unwrap();
        for (at, len) in [(0, 1), (65_535, 2), (65_000, 70_000), (131_072, 68_928), (199_999, 1)] {
            let mut buf = vec![0u8; len];
            stored.read_exact_at(&mut buf, at as u64).unwrap();
            assert_eq!(buf, data[at..at + len], "{at}+{len}");
        }
        let mut past = [0u8; 2];
        assert!(stored.read_exact_at(&mut past, 199_999).is_err());
        sums.verify(tmp.path()).unwrap();

        // One byte flipped in the second block: reads touching it fail, others don't.
        let mut bad = data.clone();
        bad[100_000] ^= 1;
        std::fs::write(tmp.path(), &bad).unwrap();
        let stored = Stored::open(tmp.path(), Some(Sums::Owned(sums.clone()))).unwrap();
        let mut buf = vec![0u8; 10];
        let e = stored.read_exact_at(&mut buf, 99_990).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("damaged on disk"), "{e}");
        stored.read_exact_at(&mut buf, 10).unwrap();
        stored.read_exact_at(&mut buf, 140_000).unwrap();
        assert!(sums.verify(tmp.path()).is_err());
    }
}
