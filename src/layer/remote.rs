//! Compressed bytes of a layer that is not in the store, fetched by HTTP Range from
//! its registry as reads need them, for a layer with a published index
//! (`index_artifact`, found by `referrers`): the span of the layer blob between two
//! checkpoints, and the checkpoint's gzip window from the artifact blob.
//!
//! Trust: the index was fetched by digest from its artifact manifest and bound to the
//! layer; a span or window is used only if its bytes hash to the SHA-256 the index
//! gives for it, whether it comes from the network or from the disk cache
//! (`store::cache`). A span that fails is an error for that read (EIO, logged), never
//! decoded.

use super::estargz::{decode_chunk, Chunk};
use crate::digest::Digest;
use crate::index_artifact::Window;
use crate::registry::Client;
use crate::store::cache::DiskCache;
use sha2::{Digest as _, Sha256};
use std::io;
use std::sync::Arc;

/// Where a layer's published index and blob are, and the digests that vouch for them.
pub struct Remote {
    pub client: Arc<Client>,
    pub registry: String,
    pub repository: String,
    pub layer: Digest,
    /// The artifact blob holding the windows, after a head of `head_len` bytes.
    pub artifact: Digest,
    pub span_digests: Vec<[u8; 32]>,
    pub windows: Vec<Window>,
    /// `(start, end)` of each window in the artifact blob.
    pub window_ranges: Vec<(u64, u64)>,
    pub cache: Arc<DiskCache>,
    /// What vouches for the bytes, for the message when some don't match:
    /// "published index" or "eStargz TOC".
    pub vouched_by: &'static str,
}

impl Remote {
    /// An eStargz layer, served from its own TOC: no artifact, so no spans or windows;
    /// reads go through `chunk`, checked against the TOC's chunk digests.
    pub fn estargz(
        client: Arc<Client>,
        registry: &str,
        repository: &str,
        layer: Digest,
        cache: Arc<DiskCache>,
    ) -> Remote {
        Remote {
            client,
            registry: registry.to_string(),
            repository: repository.to_string(),
            artifact: layer.clone(),
            layer,
            span_digests: Vec::new(),
            windows: Vec::new(),
            window_ranges: Vec::new(),
            cache,
            vouched_by: "eStargz TOC",
        }
    }

    /// The uncompressed bytes of an eStargz chunk: its gzip member(s) from the cache or
    /// by Range, decoded and checked against the chunk's digest from the verified TOC.
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
        self.fetch(&key, &self.layer, (c.start, c.end), check, what)?;
        // `fetch` returns only bytes its check accepted, the last of which set `decoded`.
        decoded.into_inner().ok_or_else(|| io::Error::other("an eStargz chunk passed its check undecoded"))
    }

    /// Bytes `start..end` of the layer blob, unchecked: the caller checks them (an
    /// eStargz footer and TOC, against the layer's annotation).
    pub fn blob_range(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        self.client
            .read_blob_range(&self.registry, &self.repository, &self.layer, start, end - start)
            .map_err(|e| fetch_failed(format!("cannot fetch bytes {start}..{end} of layer {}", self.layer), e))
    }

    /// The compressed bytes of span `i`, blob bytes `range`, checked.
    pub fn span(&self, i: usize, range: (u64, u64)) -> io::Result<Vec<u8>> {
        let want = self.span_digests.get(i).ok_or_else(|| io::Error::other(format!("span {i} out of range")))?;
        let check = |b: &[u8]| <[u8; 32]>::from(Sha256::digest(b)) == *want;
        let key = format!("{}-span-{i}", self.layer.hex());
        let what = || format!("span {i} (bytes {}..{}) of layer {}", range.0, range.1, self.layer);
        self.fetch(&key, &self.layer, range, check, what)
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
        self.fetch(&key, &self.artifact, range, |b: &[u8]| w.check(b).is_ok(), what)
    }

    /// From the cache if there and whole, else by Range from the registry (through its
    /// mirrors), checked, then cached. No lock is held across the fetch.
    fn fetch(
        &self,
        key: &str,
        blob: &Digest,
        (start, end): (u64, u64),
        check: impl Fn(&[u8]) -> bool,
        what: impl Fn() -> String,
    ) -> io::Result<Vec<u8>> {
        if let Some(bytes) = self.cache.get(key, &check) {
            return Ok(bytes);
        }
        let bytes = self
            .client
            .read_blob_range(&self.registry, &self.repository, blob, start, end - start)
            .map_err(|e| fetch_failed(format!("cannot fetch {}", what()), e))?;
        if !check(&bytes) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} from {}/{} does not match the digest its {} gives; not served",
                    what(),
                    self.registry,
                    self.repository,
                    self.vouched_by
                ),
            ));
        }
        self.cache.put(key, &bytes);
        Ok(bytes)
    }
}

/// A failed Range read as the `io::Error` reads answer with, its cause kept as the
/// source (a log line shows the chain) rather than flattened into the text.
fn fetch_failed(what: String, cause: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(super::Error::Context { what, source: Box::new(cause) })
}
