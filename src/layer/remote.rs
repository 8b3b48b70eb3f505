//! Compressed bytes of a layer that is not in the store, fetched by HTTP Range from its
//! registry as reads need them. Two kinds of layer are read this way:
//! - a layer with a published index ([`Published`]): the span of the layer blob
//!   between two checkpoints, and the checkpoint's gzip window from the index blob;
//! - an eStargz layer ([`Estargz`]): the gzip members of a file's chunks.
//!
//! Trust: what vouches for the bytes (the published index, fetched by digest from its
//! manifest and bound to the layer; the eStargz TOC, checked against the layer's
//! annotation) gives a digest for every piece, and a piece is used only if its bytes
//! match, whether they come from the network or from the disk cache (`store::cache`).
//! A piece that fails is an error for that read (EIO, logged), never decoded.

use super::estargz::{decode_chunk, Chunk};
use crate::digest::Digest;
use crate::registry::Client;
use crate::store::cache::DiskCache;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::io;
use std::sync::Arc;

/// Where the TOC and the digests of a format 2 blob lie, and what vouches for them.
#[derive(Clone, Debug)]
pub struct Paged {
    pub toc_len: u64,
    /// Bytes per TOC page (the last may be short) and digests per chunk.
    pub page: u64,
    pub per_chunk: u64,
    /// TOC pages, then spans: digest `i < pages` is page `i`'s, `pages + j` span `j`'s.
    pub pages: u64,
    pub spans: u64,
    /// SHA-256 of each chunk of digests.
    pub chunks: Vec<[u8; 32]>,
}

impl Paged {
    /// Blob bytes `(start, end)` of TOC page `i`, for a head of `head_len` bytes.
    pub fn page_range(&self, head_len: u64, i: u64) -> (u64, u64) {
        let start = head_len + i * self.page;
        (start, (start + self.page).min(head_len + self.toc_len))
    }

    /// Blob bytes of chunk `k` of the digests.
    pub fn chunk_range(&self, head_len: u64, k: u64) -> (u64, u64) {
        let first = head_len + self.toc_len + k * self.per_chunk * 32;
        let end = head_len + self.toc_len + (self.pages + self.spans) * 32;
        (first, (first + self.per_chunk * 32).min(end))
    }

    /// The whole blob's length, for a head of `head_len` bytes.
    pub fn blob_len(&self, head_len: u64) -> u64 {
        head_len + self.toc_len + (self.pages + self.spans) * 32
    }
}

/// One checkpoint's window (raw-deflated, as `Checkpoints` keeps it) as a published
/// index lists it: its length and SHA-256.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Window {
    pub len: u32,
    pub sha256: [u8; 32],
}

impl Window {
    pub fn of(window: &[u8]) -> Window {
        Window { len: window.len() as u32, sha256: Sha256::digest(window).into() }
    }

    /// Are these the window's bytes?
    pub fn matches(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.len as usize && <[u8; 32]>::from(Sha256::digest(bytes)) == self.sha256
    }
}

/// Where a layer's blobs are, and the disk cache their fetched pieces go to.
#[derive(Clone)]
pub struct RangeSource {
    pub client: Arc<Client>,
    pub registry: String,
    pub repository: String,
    pub cache: Arc<DiskCache>,
}

impl RangeSource {
    /// Bytes `start..end` of `blob`, from the cache if there and passing `check`, else by
    /// Range from the registry (through its mirrors), checked, then cached. No lock is
    /// held across the fetch. `vouched_by` names what gave the digest, for the message
    /// when the bytes don't match it.
    fn fetch(
        &self,
        key: &str,
        blob: &Digest,
        (start, end): (u64, u64),
        check: impl Fn(&[u8]) -> bool,
        what: impl Fn() -> String,
        vouched_by: &str,
    ) -> io::Result<Vec<u8>> {
        if let Some(bytes) = self.cache.get(key, &check) {
            return Ok(bytes);
        }
        let bytes = self.read(blob, start, end).map_err(|e| fetch_failed(format!("cannot fetch {}", what()), e))?;
        if !check(&bytes) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} from {}/{} does not match the digest its {vouched_by} gives; not served",
                    what(),
                    self.registry,
                    self.repository,
                ),
            ));
        }
        self.cache.put(key, &bytes);
        Ok(bytes)
    }

    fn read(&self, blob: &Digest, start: u64, end: u64) -> Result<Vec<u8>, crate::registry::RegistryError> {
        self.client.read_blob_range(&self.registry, &self.repository, blob, start, end - start)
    }
}

/// A layer served through its published index: spans of the layer blob, and the
/// windows the gzip checkpoints need, from the index blob (format 1; in format 2 the
/// windows are in the TOC, read through `Paged`).
pub struct Published {
    pub source: RangeSource,
    pub layer: Digest,
    /// The index blob, which holds the windows after its head.
    pub artifact: Digest,
    /// SHA-256 of span `i`'s compressed bytes (format 1; format 2's are in `paged`).
    pub span_digests: Vec<[u8; 32]>,
    pub windows: Vec<Window>,
    /// `(start, end)` of each window in the index blob.
    pub window_ranges: Vec<(u64, u64)>,
    /// Format 2: the TOC pages and digests, fetched as they are needed.
    pub paged: Option<Arc<PagedIndex>>,
}

const PUBLISHED: &str = "published index";

/// A published index of format 2 read piece by piece: the chunks of its digest list
/// (each checked against the head), the TOC pages and spans they vouch for.
pub struct PagedIndex {
    pub source: RangeSource,
    pub layer: Digest,
    pub artifact: Digest,
    pub head_len: u64,
    pub paged: Paged,
    /// Chunks of digests fetched so far (a few KiB each, about 32 bytes per 2 KiB of
    /// TOC and per span: kept).
    chunks: std::sync::Mutex<std::collections::HashMap<u64, Arc<Vec<u8>>>>,
}

impl PagedIndex {
    pub fn new(source: RangeSource, layer: Digest, artifact: Digest, head_len: u64, paged: Paged) -> PagedIndex {
        PagedIndex { source, layer, artifact, head_len, paged, chunks: Default::default() }
    }

    /// Digest `i` of the list (TOC page `i`, or span `i - pages`), from its checked chunk.
    fn digest(&self, i: u64) -> io::Result<[u8; 32]> {
        let p = &self.paged;
        if i >= p.pages + p.spans {
            return Err(io::Error::other(format!("digest {i} out of range")));
        }
        let k = i / p.per_chunk;
        let cached = self.chunks.lock().unwrap_or_else(|e| e.into_inner()).get(&k).cloned();
        let chunk = match cached {
            Some(c) => c,
            None => {
                let want = p.chunks.get(k as usize).ok_or_else(|| io::Error::other("digest chunk out of range"))?;
                let range = p.chunk_range(self.head_len, k);
                let key = format!("{}-digests-{k}", self.artifact.hex());
                let what = || format!("digests {k} of the published index of layer {}", self.layer);
                let check = |b: &[u8]| <[u8; 32]>::from(Sha256::digest(b)) == *want;
                let bytes = Arc::new(self.source.fetch(&key, &self.artifact, range, check, what, PUBLISHED)?);
                self.chunks.lock().unwrap_or_else(|e| e.into_inner()).insert(k, Arc::clone(&bytes));
                bytes
            }
        };
        let at = ((i % p.per_chunk) * 32) as usize;
        chunk.get(at..at + 32).and_then(|d| d.try_into().ok()).ok_or_else(|| io::Error::other("digest chunk cut short"))
    }

    /// The digest of span `i`.
    fn span_digest(&self, i: usize) -> io::Result<[u8; 32]> {
        self.digest(self.paged.pages + i as u64)
    }
}

/// The TOC pages of a published index of format 2, for `Toc::open_remote`.
pub struct TocPages(pub Arc<PagedIndex>);

impl crate::layer::toc::PageSource for TocPages {
    fn page_size(&self) -> u64 {
        self.0.paged.page
    }

    fn fetch(&self, i: u64) -> io::Result<Vec<u8>> {
        let p = &self.0;
        let want = p.digest(i)?;
        let range = p.paged.page_range(p.head_len, i);
        let key = format!("{}-toc-{i}", p.artifact.hex());
        let what = || format!("TOC page {i} of the published index of layer {}", p.layer);
        let check = |b: &[u8]| <[u8; 32]>::from(Sha256::digest(b)) == want;
        p.source.fetch(&key, &p.artifact, range, check, what, PUBLISHED)
    }
}

impl Published {
    /// The compressed bytes of span `i`, blob bytes `range`, checked.
    pub fn span(&self, i: usize, range: (u64, u64)) -> io::Result<Vec<u8>> {
        let want = match &self.paged {
            Some(p) => p.span_digest(i)?,
            None => *self.span_digests.get(i).ok_or_else(|| io::Error::other(format!("span {i} out of range")))?,
        };
        let check = |b: &[u8]| <[u8; 32]>::from(Sha256::digest(b)) == want;
        let key = format!("{}-span-{i}", self.layer.hex());
        let what = || format!("span {i} (bytes {}..{}) of layer {}", range.0, range.1, self.layer);
        self.source.fetch(&key, &self.layer, range, check, what, PUBLISHED)
    }

    /// The window checkpoint `i` needs (empty when it needs none), checked.
    pub fn window(&self, i: usize) -> io::Result<Vec<u8>> {
        let (Some(w), Some(&range)) = (self.windows.get(i), self.window_ranges.get(i)) else {
            return Err(io::Error::other(format!("checkpoint {i} out of range")));
        };
        if w.len == 0 {
            return Ok(Vec::new());
        }
        let key = format!("{}-window-{i}", self.artifact.hex());
        let what = || format!("window {i} of the published index of layer {}", self.layer);
        self.source.fetch(&key, &self.artifact, range, |b: &[u8]| w.matches(b), what, PUBLISHED)
    }
}

/// An eStargz layer, served from its own TOC: reads fetch the gzip members of the
/// chunks they touch, checked against the TOC's chunk digests.
pub struct Estargz {
    pub source: RangeSource,
    pub layer: Digest,
}

impl Estargz {
    /// The uncompressed bytes of a chunk: its gzip member(s) from the cache or by Range,
    /// decoded and checked against the chunk's digest from the verified TOC.
    pub fn chunk(&self, c: &Chunk) -> io::Result<Vec<u8>> {
        let key = format!("{}-chunk-{}", self.layer.hex(), c.start);
        let what = || format!("eStargz chunk (bytes {}..{}) of layer {}", c.start, c.end, self.layer);
        // Checking a chunk means decoding it: keep what the check decoded, so a read
        // inflates its chunk once, not once to check and again to serve.
        let decoded = std::cell::RefCell::new(None);
        let check = |b: &[u8]| match decode_chunk(b, c) {
            Ok(d) => {
                *decoded.borrow_mut() = Some(d);
                true
            }
            Err(_) => false,
        };
        self.source.fetch(&key, &self.layer, (c.start, c.end), check, what, "eStargz TOC")?;
        // `fetch` returns only bytes its check accepted, the last of which set `decoded`.
        decoded.into_inner().ok_or_else(|| io::Error::other("an eStargz chunk passed its check undecoded"))
    }

    /// Bytes `start..end` of the layer blob, unchecked: the caller checks them (the
    /// footer and the TOC, against the layer's annotation).
    pub fn blob_range(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        self.source
            .read(&self.layer, start, end)
            .map_err(|e| fetch_failed(format!("cannot fetch bytes {start}..{end} of layer {}", self.layer), e))
    }
}

/// A failed Range read as the `io::Error` reads answer with, its cause kept as the
/// source (a log line shows the chain) rather than flattened into the text.
fn fetch_failed(what: String, cause: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(super::Error::Context { what, source: Box::new(cause) })
}
