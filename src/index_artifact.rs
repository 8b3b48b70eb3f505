//! A layer's index as it is published next to its image (see `referrers`): everything a
//! host needs to serve the layer without downloading it first.
//!
//! One artifact blob per layer. Format 2 (what `imgfs index push` publishes) is: `IMGFSRIX`,
//! a little-endian u32 format version, the u64 length of the head, the head (a zstd frame
//! of the postcard-encoded body), then the layer's TOC file as the store keeps it
//! (`layer::toc`: its table of contents, checkpoints and windows), then a SHA-256 of
//! every `page` bytes of the TOC and of every span's compressed bytes, in chunks of
//! `per_chunk` digests. The head holds the SHA-256 of each chunk: a reader fetches the
//! head (checked against the manifest's annotation), then only the TOC pages its
//! lookups touch and the chunks of digests that vouch for them, each by Range and
//! checked, so `cat` of one file of a layer of 300,000 entries fetches tens of KB of
//! table, not megabytes. A span fetched by Range is trusted only if its bytes hash to its
//! digest. The blob is bound to its layer (layer digest, diff_id, compressed size in the
//! head; the layer digest in the TOC's header) so an index published for one layer
//! can't be passed off as another's.
//!
//! Format 1 (what earlier imgfs published) is still read: its head holds the whole table
//! of contents (`Contents`), the checkpoints without their windows, each span's SHA-256
//! and each window's length and SHA-256; the windows follow it. (A layer without
//! checkpoints, an uncompressed tar or a zstd layer in one big frame, is published with
//! its table of contents alone: a mount downloads it whole on first use.)
//!
//! It all comes from the network, so decoding bounds every size before it allocates, and
//! refuses anything `build` would not have made.

use crate::digest::Digest;
use crate::image::{Compression, Descriptor};
use crate::layer::checkpoints::{Checkpoints, Format, MAX_STORED_WINDOW, MAX_TABLE_SPAN_FACTOR};
use crate::layer::remote::{Paged, Window};
use crate::layer::toc::{AccessKind, Toc};
use crate::layer::Contents;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Why an artifact cannot be built, or a fetched one is refused. The reasons for
/// refusing one read "it …": `Invalid` says which layer's published index "it" is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("layer {digest} is not in the store")]
    NotStored {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} is {actual} bytes in the store, not {expected}")]
    StoredSize { digest: Digest, actual: u64, expected: u64 },
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("window does not match its published digest")]
    WindowMismatch,
    #[error("the published index of layer {layer} is not valid")]
    Invalid {
        layer: Digest,
        #[source]
        source: Box<Error>,
    },
    #[error("it is larger than {MAX_BLOB} bytes")]
    TooLarge,
    #[error("it is not an imgfs layer index")]
    NotAnIndex,
    #[error("it is of format version {0}; this imgfs reads versions 1 and {VERSION}")]
    Version(u32),
    #[error("its TOC pages are of {0} bytes")]
    PageSize(u64),
    #[error("its digests do not fit its TOC and spans")]
    DigestLayout,
    #[error("its digests (chunk {0}) do not match its head")]
    DigestMismatch(u64),
    #[error("its TOC (page {0}) does not match its digest")]
    TocPageMismatch(u64),
    #[error("its TOC does not describe the layer's blob")]
    TocNotOfLayer,
    #[error("its head is longer than {MAX_BLOB} bytes")]
    HeadTooLong,
    #[error("its head is cut short")]
    HeadCut,
    #[error("its windows do not fill the rest of the blob")]
    WindowsDoNotFill,
    #[error("window {index}")]
    Window {
        index: usize,
        #[source]
        source: Box<Error>,
    },
    #[error("its zstd frame is damaged")]
    Zstd(#[source] io::Error),
    #[error("it decodes to more than {MAX_DECODED} bytes")]
    DecodesTooLarge,
    #[error("its body is damaged")]
    Body(#[source] postcard::Error),
    #[error("it is the index of layer {0}")]
    OtherLayer(Digest),
    #[error("its checkpoints are of a blob of another size")]
    CheckpointsBlobSize,
    #[error("its checkpoints are of a stream of another size")]
    CheckpointsStreamSize,
    #[error("it has {have} span digests for {spans} spans")]
    SpanDigestCount { have: usize, spans: usize },
    #[error("it has {have} windows for {checkpoints} checkpoints")]
    WindowCount { have: usize, checkpoints: usize },
    #[error("its window {index} is of {len} bytes")]
    WindowTooLong { index: usize, len: u32 },
    #[error(
        "its longest span is of {len} bytes, more than {limit} (its requested span times {MAX_TABLE_SPAN_FACTOR})"
    )]
    SpanTooLong { len: u64, limit: u64 },
    #[error("it has {0} entries, more than {MAX_ENTRIES}")]
    TooManyEntries(usize),
    #[error("entry {0} lies past the end of the layer")]
    EntryPastEnd(String),
    #[error("it is of a blob of {actual} bytes, not {expected}")]
    BlobSize { actual: u64, expected: u64 },
    #[error("it names diff_id {actual}, not {expected}")]
    DiffId { actual: Digest, expected: Digest },
    /// The layer's media type is none we read.
    #[error(transparent)]
    MediaType(#[from] crate::image::Error),
    #[error("its spans are not those of a {0:?} layer")]
    SpansNotOf(Compression),
    #[error(transparent)]
    Encode(#[from] postcard::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The store index, checkpoints and contents (`layer/`).
    #[error(transparent)]
    Layer(#[from] crate::layer::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// `Err(e)` unless `cond`: the checks below read as the rules they are.
fn ensure(cond: bool, e: Error) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(e)
    }
}

/// The media type of one artifact blob (one layer's index).
pub const MEDIA_TYPE: &str = "application/vnd.imgfs.index.layer.v1+zstd";

const MAGIC: &[u8; 8] = b"IMGFSRIX";
/// What `index push` publishes; format 1 is still read.
const VERSION: u32 = 2;
/// Bytes of TOC a reader fetches at a time: a lookup touches a few such pages per
/// directory on its path.
pub const TOC_PAGE: u64 = 2048;
/// Digests per chunk of the digest list: one chunk vouches for 128 KiB of TOC.
const PER_CHUNK: u64 = 64;

/// The most an artifact blob may be, compressed and decoded. A layer of a million empty
/// files makes a store index of 26 MB: these leave room for ten times that, and no more.
pub const MAX_BLOB: u64 = 256 << 20;
const MAX_DECODED: u64 = 1 << 30;
/// As many entries as the default layer bound lets a pull index.
const MAX_ENTRIES: usize = 2_000_000;

const HEADER: usize = 20;

/// How the spans of a layer map onto its blob.
pub enum Spans {
    /// A gzip or zstd blob: span `i` is `compressed_range(i)` of the checkpoints, which
    /// decodes alone into `span_range(i)` of the tar.
    Checkpoints(Checkpoints),
    /// As `Checkpoints`, the checkpoints in the TOC (format 2, its head alone decoded):
    /// this many spans.
    InToc(u64),
    /// A blob read only from its start (an uncompressed tar, or a zstd layer in one big
    /// frame, which the store re-encodes): no spans.
    Whole,
}

/// One layer's published index, decoded and checked.
pub struct IndexArtifact {
    pub version: u32,
    pub layer: Digest,
    pub diff_id: Digest,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    /// Format 1: the table of contents, from the head. Format 2 keeps it in its TOC
    /// (see `contents`).
    contents: Option<Contents>,
    pub spans: Spans,
    /// SHA-256 of span `i`'s compressed bytes (`compressed_range(i)`): all of them in
    /// format 1, and in format 2 when built or decoded whole (a head alone has none).
    pub span_digests: Vec<[u8; 32]>,
    /// Format 1, for checkpoint spans: checkpoint `i`'s window as stored after the
    /// head: its length and SHA-256.
    pub windows: Vec<Window>,
    /// Format 2: the layer's TOC file, when built or decoded whole.
    pub toc: Option<Vec<u8>>,
    /// Format 2: where its TOC and digests lie, from the head.
    pub paged: Option<Paged>,
}

/// Format 2's head (postcard: no field names).
#[derive(Serialize, Deserialize)]
struct Body2 {
    layer: Digest,
    diff_id: Digest,
    compressed_size: u64,
    uncompressed_size: u64,
    /// The layer is read whole, not by span (an uncompressed tar, a one-frame zstd).
    whole: bool,
    spans: u64,
    toc_len: u64,
    page: u32,
    per_chunk: u32,
    chunks: Vec<[u8; 32]>,
}

/// What travels, in this order (postcard: no field names).
#[derive(Serialize, Deserialize)]
struct Body {
    layer: Digest,
    diff_id: Digest,
    compressed_size: u64,
    uncompressed_size: u64,
    contents: Contents,
    spans: WireSpans,
    span_digests: Vec<[u8; 32]>,
    windows: Vec<Window>,
}

/// Postcard names a variant by its number, so the order is the format: a new variant
/// goes last.
#[derive(Serialize, Deserialize)]
enum WireSpans {
    /// An uncompressed tar's spans as fixed 1 MiB ranges, as earlier imgfs published
    /// them; nothing reads them (the layer is downloaded whole), so their digests are
    /// dropped and it reads as `Whole`.
    Plain {
        chunk: u64,
    },
    /// `Checkpoints::save`'s bytes with the windows taken out: versioned and checked
    /// on their own.
    Checkpoints(Vec<u8>),
    /// A one-frame zstd layer's spans, as `Plain`: read as `Whole`.
    Stream {
        chunk: u64,
    },
    Whole,
}

/// What the artifact must be bound to: the layer descriptor from the image manifest and
/// the diff_id from its config.
pub struct Expected<'a> {
    pub layer: &'a Descriptor,
    pub diff_id: &'a Digest,
}

impl IndexArtifact {
    /// Build the artifact of a stored layer from its TOC and blob (one read of the blob
    /// for the span digests): format 2.
    pub fn build(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<IndexArtifact> {
        let toc_path = store.toc_path(&layer.digest);
        let toc = Toc::open(&toc_path, layer.digest.as_str())?;
        let toc_bytes = std::fs::read(&toc_path).map_err(|source| Error::Read { path: toc_path.clone(), source })?;
        let blob_path = store.blob_path(&layer.digest);
        let blob =
            File::open(&blob_path).map_err(|source| Error::NotStored { digest: layer.digest.clone(), source })?;
        let compressed_size = blob.metadata()?.len();
        ensure(
            compressed_size == layer.size,
            Error::StoredSize { digest: layer.digest.clone(), actual: compressed_size, expected: layer.size },
        )?;
        let (spans, uncompressed_size) = match (toc.access(), toc.checkpoints()?) {
            (AccessKind::Checkpoints, Some(c)) => {
                let u = c.uncompressed_size();
                (Spans::Checkpoints(c), u)
            }
            // The checkpoints are of the store's re-encoded copy, not of the blob.
            (AccessKind::Reframed, Some(c)) => (Spans::Whole, c.uncompressed_size()),
            _ => (Spans::Whole, compressed_size),
        };
        let mut artifact = IndexArtifact {
            version: VERSION,
            layer: layer.digest.clone(),
            diff_id: diff_id.clone(),
            compressed_size,
            uncompressed_size,
            contents: None,
            spans,
            span_digests: Vec::new(),
            windows: Vec::new(),
            toc: Some(toc_bytes),
            paged: None,
        };
        let mut buf = Vec::new();
        for i in 0..artifact.span_count() {
            let (start, end) = artifact.compressed_range(i);
            buf.resize((end - start) as usize, 0);
            blob.read_exact_at(&mut buf, start).map_err(|source| Error::Read { path: blob_path.clone(), source })?;
            artifact.span_digests.push(Sha256::digest(&buf).into());
        }
        Ok(artifact)
    }

    /// The table of contents: format 1's from its head; format 2's from its TOC (built,
    /// or decoded whole).
    pub fn contents(&self) -> Result<Contents> {
        if let Some(c) = &self.contents {
            return Ok(Contents {
                entries: c.entries.clone(),
                whiteouts: c.whiteouts.clone(),
                opaque: c.opaque.clone(),
            });
        }
        let bytes = self.toc.as_ref().ok_or(Error::HeadCut)?;
        Ok(self.open_toc(bytes)?.to_contents()?)
    }

    /// Format 1's table of contents, moved out (for a reader that serves it whole).
    pub fn take_contents(&mut self) -> Option<Contents> {
        self.contents.take()
    }

    /// A format 2 TOC held whole, opened from a scratch file.
    fn open_toc(&self, bytes: &[u8]) -> Result<Toc> {
        let dir = std::env::temp_dir();
        let mut f = crate::layer::toc::scratch_file(&dir)?;
        io::Write::write_all(&mut f, bytes)?;
        Ok(Toc::open_file(&f, &dir.join(format!("(published TOC of {})", self.layer)), self.layer.as_str())?)
    }

    pub fn span_count(&self) -> usize {
        match &self.spans {
            Spans::Whole => 0,
            Spans::Checkpoints(c) => c.span_count(),
            Spans::InToc(n) => *n as usize,
        }
    }

    /// The blob bytes of span `i`, as `(start, end)`, end exclusive: what a Range read
    /// fetches and what `span_digests[i]` covers. Panics if `i >= span_count()`, or
    /// when the checkpoints are in a TOC not held here.
    pub fn compressed_range(&self, i: usize) -> (u64, u64) {
        match &self.spans {
            Spans::Whole => panic!("span {i} out of range: the layer has no spans"),
            Spans::Checkpoints(c) => c.compressed_range(i),
            Spans::InToc(_) => panic!("span {i}: the checkpoints are in the TOC"),
        }
    }

    /// The artifact blob: format 2 for one built from a TOC, else format 1 (header, head
    /// (the body, postcard in a zstd frame), windows).
    pub fn encode(&self) -> Result<Vec<u8>> {
        if let Some(toc) = &self.toc {
            return self.encode_paged(toc);
        }
        let mut windows = Vec::new();
        let spans = match &self.spans {
            Spans::Whole | Spans::InToc(_) => WireSpans::Whole,
            Spans::Checkpoints(c) => {
                let mut c = c.clone();
                windows = c.take_windows();
                let mut bytes = Vec::new();
                c.save(&mut bytes)?;
                WireSpans::Checkpoints(bytes)
            }
        };
        let body = Body {
            layer: self.layer.clone(),
            diff_id: self.diff_id.clone(),
            compressed_size: self.compressed_size,
            uncompressed_size: self.uncompressed_size,
            contents: self.contents()?,
            spans,
            span_digests: self.span_digests.clone(),
            windows: windows.iter().map(|w| Window::of(w)).collect(),
        };
        // Level 19: paths compress well; the blob is made once and fetched by every host.
        let head = zstd::bulk::compress(&postcard::to_stdvec(&body)?, 19)?;
        let mut out = Vec::from(&MAGIC[..]);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(head.len() as u64).to_le_bytes());
        out.extend(head);
        // Already deflated: zstd would not shrink them, and they must stay addressable.
        out.extend(windows.concat());
        Ok(out)
    }

    fn encode_paged(&self, toc: &[u8]) -> Result<Vec<u8>> {
        let mut digests: Vec<[u8; 32]> = toc.chunks(TOC_PAGE as usize).map(|p| Sha256::digest(p).into()).collect();
        digests.extend(&self.span_digests);
        let list: Vec<u8> = digests.concat();
        let chunks = list.chunks((PER_CHUNK * 32) as usize).map(|c| Sha256::digest(c).into()).collect();
        let body = Body2 {
            layer: self.layer.clone(),
            diff_id: self.diff_id.clone(),
            compressed_size: self.compressed_size,
            uncompressed_size: self.uncompressed_size,
            whole: matches!(self.spans, Spans::Whole),
            spans: self.span_digests.len() as u64,
            toc_len: toc.len() as u64,
            page: TOC_PAGE as u32,
            per_chunk: PER_CHUNK as u32,
            chunks,
        };
        let head = zstd::bulk::compress(&postcard::to_stdvec(&body)?, 19)?;
        let mut out = Vec::from(&MAGIC[..]);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(head.len() as u64).to_le_bytes());
        out.extend(head);
        out.extend_from_slice(toc);
        out.extend(list);
        Ok(out)
    }

    /// The head of an artifact blob: its first bytes, up to the windows (format 1) or the
    /// TOC (format 2). What a reader fetches (and checks against the manifest's
    /// annotation) before anything else.
    pub fn head(blob: &[u8]) -> Result<&[u8]> {
        ensure(blob.len() >= HEADER && &blob[..8] == MAGIC, Error::NotAnIndex)?;
        let version = u32::from_le_bytes(blob[8..12].try_into().unwrap());
        ensure(version == 1 || version == VERSION, Error::Version(version))?;
        let len = u64::from_le_bytes(blob[12..20].try_into().unwrap());
        ensure(len <= MAX_BLOB, Error::HeadTooLong)?;
        blob.get(..HEADER + len as usize).ok_or(Error::HeadCut)
    }

    /// Where each checkpoint's window lies in the artifact blob whose head is
    /// `head_len` bytes: `(start, end)`, end exclusive, in checkpoint order (format 1).
    pub fn window_ranges(&self, head_len: u64) -> Vec<(u64, u64)> {
        let mut start = head_len;
        self.windows
            .iter()
            .map(|w| {
                let range = (start, start + u64::from(w.len));
                start = range.1;
                range
            })
            .collect()
    }

    /// How many bytes the blob of this head must have (`head_len` its head's).
    pub fn blob_len(&self, head_len: u64) -> u64 {
        match &self.paged {
            Some(p) => p.blob_len(head_len),
            None => self.window_ranges(head_len).last().map_or(head_len, |r| r.1),
        }
    }

    /// Decode an artifact blob fetched for the layer `expect` names, refusing one of
    /// another format version, for another layer, or anything `build` would not make.
    pub fn decode(bytes: &[u8], expect: &Expected<'_>) -> Result<IndexArtifact> {
        let layer = &expect.layer.digest;
        Self::decode_unbound(bytes, layer)
            .and_then(|a| a.check_binding(expect).map(|()| a))
            .map_err(|e| Error::Invalid { layer: layer.clone(), source: Box::new(e) })
    }

    fn decode_unbound(bytes: &[u8], layer: &Digest) -> Result<IndexArtifact> {
        ensure(bytes.len() as u64 <= MAX_BLOB, Error::TooLarge)?;
        let head = Self::head(bytes)?;
        let mut artifact = Self::decode_head_unbound(head, layer)?;
        let head_len = head.len() as u64;
        if let Some(p) = artifact.paged.clone() {
            ensure(p.blob_len(head_len) == bytes.len() as u64, Error::DigestLayout)?;
            let (list_start, _) = p.chunk_range(head_len, 0);
            let list = &bytes[list_start as usize..];
            for (k, chunk) in list.chunks((p.per_chunk * 32) as usize).enumerate() {
                ensure(<[u8; 32]>::from(Sha256::digest(chunk)) == p.chunks[k], Error::DigestMismatch(k as u64))?;
            }
            let toc = &bytes[head_len as usize..(head_len + p.toc_len) as usize];
            for (i, page) in toc.chunks(p.page as usize).enumerate() {
                let want = &list[i * 32..i * 32 + 32];
                ensure(Sha256::digest(page).as_slice() == want, Error::TocPageMismatch(i as u64))?;
            }
            artifact.span_digests =
                list[(p.pages * 32) as usize..].chunks(32).map(|d| d.try_into().expect("32 bytes")).collect();
            artifact.toc = Some(toc.to_vec());
            if let Spans::InToc(n) = artifact.spans {
                let c = artifact.open_toc(toc)?.checkpoints()?.ok_or(Error::TocNotOfLayer)?;
                ensure(c.span_count() as u64 == n, Error::TocNotOfLayer)?;
                artifact.spans = Spans::Checkpoints(c);
                artifact.check_shape()?;
            }
            return Ok(artifact);
        }
        let total = artifact.windows.iter().map(|w| u64::from(w.len)).sum::<u64>();
        ensure(head_len + total == bytes.len() as u64, Error::WindowsDoNotFill)?;
        // Bounded by the sum above: every window lies within the blob.
        let ranges = artifact.window_ranges(head_len);
        if let Spans::Checkpoints(c) = &mut artifact.spans {
            for (i, (w, (start, end))) in artifact.windows.iter().zip(ranges).enumerate() {
                let window = &bytes[start as usize..end as usize];
                if !w.matches(window) {
                    return Err(Error::Window { index: i, source: Box::new(Error::WindowMismatch) });
                }
                c.set_window(i, window.to_vec())?;
            }
        }
        Ok(artifact)
    }

    /// Decode the head alone (`head`), for a reader that fetches the rest piece by
    /// piece: format 1's windows (`window_ranges`, checked with `Window::matches`, put
    /// back with `Checkpoints::set_window`), format 2's TOC pages and digests (`paged`).
    pub fn decode_head(head: &[u8], expect: &Expected<'_>) -> Result<IndexArtifact> {
        let layer = &expect.layer.digest;
        Self::decode_head_unbound(head, layer)
            .and_then(|a| a.check_binding(expect).map(|()| a))
            .map_err(|e| Error::Invalid { layer: layer.clone(), source: Box::new(e) })
    }

    fn decode_head_unbound(head: &[u8], layer: &Digest) -> Result<IndexArtifact> {
        let head = Self::head(head)?;
        let mut decoded = Vec::new();
        zstd::stream::read::Decoder::new(&head[HEADER..])?
            .take(MAX_DECODED + 1)
            .read_to_end(&mut decoded)
            .map_err(Error::Zstd)?;
        ensure(decoded.len() as u64 <= MAX_DECODED, Error::DecodesTooLarge)?;
        if u32::from_le_bytes(head[8..12].try_into().unwrap()) == VERSION {
            let body: Body2 = postcard::from_bytes(&decoded).map_err(Error::Body)?;
            ensure(&body.layer == layer, Error::OtherLayer(body.layer.clone()))?;
            let page = u64::from(body.page);
            ensure(page.is_power_of_two() && (512..=1 << 20).contains(&page), Error::PageSize(page))?;
            let per_chunk = u64::from(body.per_chunk);
            ensure((16..=4096).contains(&per_chunk), Error::DigestLayout)?;
            ensure(body.toc_len <= MAX_BLOB && body.spans <= MAX_BLOB / 32, Error::DigestLayout)?;
            ensure(!body.whole || body.spans == 0, Error::DigestLayout)?;
            let pages = body.toc_len.div_ceil(page);
            ensure((pages + body.spans).div_ceil(per_chunk) == body.chunks.len() as u64, Error::DigestLayout)?;
            return Ok(IndexArtifact {
                version: VERSION,
                layer: body.layer,
                diff_id: body.diff_id,
                compressed_size: body.compressed_size,
                uncompressed_size: body.uncompressed_size,
                contents: None,
                spans: if body.whole { Spans::Whole } else { Spans::InToc(body.spans) },
                span_digests: Vec::new(),
                windows: Vec::new(),
                toc: None,
                paged: Some(Paged {
                    toc_len: body.toc_len,
                    page,
                    per_chunk,
                    pages,
                    spans: body.spans,
                    chunks: body.chunks,
                }),
            });
        }
        let body: Body = postcard::from_bytes(&decoded).map_err(Error::Body)?;
        ensure(&body.layer == layer, Error::OtherLayer(body.layer.clone()))?;
        let mut span_digests = body.span_digests;
        let spans = match body.spans {
            WireSpans::Plain { .. } | WireSpans::Stream { .. } => {
                span_digests.clear();
                Spans::Whole
            }
            WireSpans::Whole => Spans::Whole,
            WireSpans::Checkpoints(bytes) => Spans::Checkpoints(Checkpoints::load(&bytes[..])?),
        };
        let artifact = IndexArtifact {
            version: 1,
            layer: body.layer,
            diff_id: body.diff_id,
            compressed_size: body.compressed_size,
            uncompressed_size: body.uncompressed_size,
            contents: Some(body.contents),
            spans,
            span_digests,
            windows: body.windows,
            toc: None,
            paged: None,
        };
        artifact.check_shape()?;
        Ok(artifact)
    }

    /// Everything inside agrees with itself: sizes, span counts, entries within the tar.
    fn check_shape(&self) -> Result<()> {
        if let Spans::Checkpoints(c) = &self.spans {
            ensure(c.compressed_size() == self.compressed_size, Error::CheckpointsBlobSize)?;
            ensure(c.uncompressed_size() == self.uncompressed_size, Error::CheckpointsStreamSize)?;
            // A read decodes a whole span in memory: as a TOC's checkpoints are bounded.
            let (len, limit) = (c.max_span_len(), c.requested_span().saturating_mul(MAX_TABLE_SPAN_FACTOR));
            ensure(len <= limit, Error::SpanTooLong { len, limit })?;
        }
        let spans = self.span_count();
        ensure(self.span_digests.len() == spans, Error::SpanDigestCount { have: self.span_digests.len(), spans })?;
        if self.paged.is_some() {
            return Ok(());
        }
        let windows = if let Spans::Checkpoints(c) = &self.spans { c.span_count() } else { 0 };
        ensure(self.windows.len() == windows, Error::WindowCount { have: self.windows.len(), checkpoints: windows })?;
        if let Some(i) = self.windows.iter().position(|w| w.len as usize > MAX_STORED_WINDOW) {
            return Err(Error::WindowTooLong { index: i, len: self.windows[i].len });
        }
        let Some(c) = &self.contents else { return Ok(()) };
        ensure(c.entries.len() <= MAX_ENTRIES, Error::TooManyEntries(c.entries.len()))?;
        c.check()?;
        for e in &c.entries {
            if e.offset.checked_add(e.size).is_none_or(|end| end > self.uncompressed_size) {
                return Err(Error::EntryPastEnd(crate::layer::show(&e.path)));
            }
        }
        Ok(())
    }

    /// Bound to the layer the image names: digest, size, diff_id and compression.
    fn check_binding(&self, expect: &Expected<'_>) -> Result<()> {
        let l = expect.layer;
        ensure(self.compressed_size == l.size, Error::BlobSize { actual: self.compressed_size, expected: l.size })?;
        if &self.diff_id != expect.diff_id {
            return Err(Error::DiffId { actual: self.diff_id.clone(), expected: expect.diff_id.clone() });
        }
        let compression = Compression::of_media_type(&l.media_type).map_err(Error::MediaType)?;
        let fits = match (&self.spans, compression) {
            (Spans::Whole, Compression::None) => self.uncompressed_size == self.compressed_size,
            (Spans::Checkpoints(c), Compression::Gzip) => c.format() == Format::Gzip,
            (Spans::Checkpoints(c), Compression::Zstd) => c.format() == Format::Zstd,
            // The TOC's checkpoints are checked against the layer when it is opened.
            (Spans::InToc(_), Compression::Gzip | Compression::Zstd) => true,
            (Spans::Whole, Compression::Zstd) => true,
            _ => false,
        };
        if !fits {
            return Err(Error::SpansNotOf(compression));
        }
        Ok(())
    }

    /// How the layer is read, for people: `gzip` or `zstd` checkpoints; `plain` (an
    /// uncompressed tar) or `stream` (a zstd layer in one frame), downloaded whole.
    pub fn span_kind(&self) -> &'static str {
        match &self.spans {
            Spans::Checkpoints(c) if c.format() == Format::Gzip => "gzip",
            Spans::Checkpoints(_) => "zstd",
            Spans::InToc(_) => "paged",
            Spans::Whole if self.uncompressed_size == self.compressed_size => "plain",
            Spans::Whole => "stream",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::build;
    use std::io::Write;

    fn tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut x = 0x9e3779b97f4a7c15u64;
        for i in 0..40 {
            // Noisy bytes, so that deflate ends blocks (and leaves checkpoints) often.
            let data: Vec<u8> = (0..100_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b'a' + (x % 16) as u8
                })
                .collect();
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, format!("d/f{i}"), &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Does `bytes` hash to span `i`'s published digest? What a mount checks (`remote`).
    fn span_matches(a: &IndexArtifact, i: usize, bytes: &[u8]) -> bool {
        <[u8; 32]>::from(Sha256::digest(bytes)) == a.span_digests[i]
    }

    /// An artifact made by hand as `build` makes one from the store, for a gzip layer.
    fn gzip_artifact() -> (IndexArtifact, Vec<u8>, Descriptor) {
        let tar = tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let blob = gz.finish().unwrap();
        let (contents, c) = build::index_contents(&blob[..], Compression::Gzip).unwrap();
        let c = c.unwrap();
        let layer = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: Digest::of(&blob),
            size: blob.len() as u64,
            platform: None,
            annotations: None,
        };
        let mut a = IndexArtifact {
            version: 1,
            toc: None,
            paged: None,
            layer: layer.digest.clone(),
            diff_id: Digest::of(&tar),
            compressed_size: blob.len() as u64,
            uncompressed_size: tar.len() as u64,
            contents: Some(contents),
            windows: c.clone().take_windows().iter().map(|w| Window::of(w)).collect(),
            spans: Spans::Checkpoints(c),
            span_digests: vec![],
        };
        a.span_digests = (0..a.span_count())
            .map(|i| {
                let (s, e) = a.compressed_range(i);
                Sha256::digest(&blob[s as usize..e as usize]).into()
            })
            .collect();
        (a, blob, layer)
    }

    #[test]
    fn an_artifact_round_trips_and_its_spans_decode_and_check() {
        let (a, blob, layer) = gzip_artifact();
        let diff_id = a.diff_id.clone();
        assert!(a.span_count() > 1, "several spans");
        let bytes = a.encode().unwrap();
        let back = IndexArtifact::decode(&bytes, &Expected { layer: &layer, diff_id: &diff_id }).unwrap();
        assert_eq!(back.contents().unwrap().entries.len(), 40);
        let Spans::Checkpoints(c) = &back.spans else { panic!("gzip spans") };
        let tar = tar();
        for i in 0..back.span_count() {
            let (s, e) = back.compressed_range(i);
            let span = &blob[s as usize..e as usize];
            assert!(span_matches(&back, i, span));
            let (us, ue) = c.span_range(i);
            assert_eq!(c.decode_span_from(i, span).unwrap(), &tar[us as usize..ue as usize]);
        }
        let mut bad = blob[..].to_vec();
        let (s, _) = back.compressed_range(1);
        bad[s as usize + 3] ^= 1;
        let (s, e) = back.compressed_range(1);
        assert!(!span_matches(&back, 1, &bad[s as usize..e as usize]));
    }

    /// A reader with the head alone fetches the one window a span needs, checks it, and
    /// decodes the span.
    #[test]
    fn the_head_alone_and_one_window_decode_a_span() {
        let (a, blob, layer) = gzip_artifact();
        let diff_id = a.diff_id.clone();
        let bytes = a.encode().unwrap();
        let head = IndexArtifact::head(&bytes).unwrap();
        let mut back = IndexArtifact::decode_head(head, &Expected { layer: &layer, diff_id: &diff_id }).unwrap();
        let ranges = back.window_ranges(head.len() as u64);
        assert_eq!(ranges.last().unwrap().1, bytes.len() as u64);
        let i = back.span_count() - 1;
        let (ws, we) = ranges[i];
        let window = &bytes[ws as usize..we as usize];
        assert!(back.windows[i].matches(window));
        assert!(!back.windows[i].matches(&window[1..]));
        let (s, e) = back.compressed_range(i);
        let span = &blob[s as usize..e as usize];
        assert!(span_matches(&back, i, span));
        let Spans::Checkpoints(c) = &mut back.spans else { panic!("gzip spans") };
        let (us, ue) = c.span_range(i);
        let tar = tar();
        if !window.is_empty() {
            // Without its window the span does not decode to the tar's bytes.
            assert_ne!(c.decode_span_from(i, span).ok().as_deref(), Some(&tar[us as usize..ue as usize]));
        }
        c.set_window(i, window.to_vec()).unwrap();
        assert_eq!(c.decode_span_from(i, span).unwrap(), &tar[us as usize..ue as usize]);
    }

    #[test]
    fn artifacts_for_other_layers_versions_or_damaged_are_refused() {
        let (a, _, layer) = gzip_artifact();
        let diff_id = a.diff_id.clone();
        let bytes = a.encode().unwrap();
        let expect = Expected { layer: &layer, diff_id: &diff_id };
        let err = |b: &[u8], e: &Expected<'_>| {
            format!("{:#}", anyhow::Error::from(IndexArtifact::decode(b, e).err().expect("refused")))
        };

        let other = Descriptor { digest: Digest::of(b"other"), ..layer.clone() };
        assert!(err(&bytes, &Expected { layer: &other, diff_id: &diff_id }).contains("is the index of layer"));
        let bigger = Descriptor { size: layer.size + 1, ..layer.clone() };
        assert!(err(&bytes, &Expected { layer: &bigger, diff_id: &diff_id }).contains("not"));
        let plain = Descriptor { media_type: "application/vnd.oci.image.layer.v1.tar".into(), ..layer.clone() };
        assert!(err(&bytes, &Expected { layer: &plain, diff_id: &diff_id }).contains("not those of a None layer"));
        assert!(err(&bytes, &Expected { layer: &layer, diff_id: &Digest::of(b"x") }).contains("diff_id"));

        // A version this imgfs does not know (format 1 and 2 it reads).
        let mut v3 = bytes.clone();
        v3[8] = 3;
        assert!(err(&v3, &expect).contains("format version 3"));
        for cut in [0, 5, 12, 40, bytes.len() / 2, bytes.len() - 1] {
            let e = err(&bytes[..cut], &expect);
            assert!(e.contains("is not valid"), "cut at {cut}: {e}");
        }
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(IndexArtifact::decode(&flipped, &expect).is_err());

        // Consistent bytes that don't add up: a digest missing, an entry past the end.
        let (mut a, _, _) = gzip_artifact();
        a.span_digests.pop();
        assert!(err(&a.encode().unwrap(), &expect).contains("span digests"));
        let (mut a, _, _) = gzip_artifact();
        a.contents.as_mut().unwrap().entries[3].offset = a.uncompressed_size;
        assert!(err(&a.encode().unwrap(), &expect).contains("past the end"));
    }

    /// A format 1 index (its checkpoints in memory, not in a TOC) whose last span claims
    /// a terabyte: refused when it is decoded, as a TOC's checkpoints are, not left for
    /// the first read to allocate.
    #[test]
    fn an_artifact_with_a_span_too_long_to_decode_is_refused() {
        let (mut a, _, layer) = gzip_artifact();
        let diff_id = a.diff_id.clone();
        let Spans::Checkpoints(c) = &a.spans else { panic!("gzip spans") };
        let points: Vec<_> = c.points().map(|(u, cp, bits, w)| (u, cp, bits, w.to_vec())).collect();
        let huge = c.uncompressed_size() + (1 << 40);
        let long =
            Checkpoints::from_points(Format::Gzip, c.requested_span(), c.compressed_size(), huge, points).unwrap();
        a.uncompressed_size = huge;
        a.spans = Spans::Checkpoints(long);
        let bytes = a.encode().unwrap();
        let err = IndexArtifact::decode(&bytes, &Expected { layer: &layer, diff_id: &diff_id }).err().expect("refused");
        let err = format!("{:#}", anyhow::Error::from(err));
        assert!(err.contains("its longest span is of ") && err.contains("more than"), "{err}");
    }

    /// Format 2: the layer's TOC after the head, then the digests of its pages and spans
    /// in chunks vouched for by the head. Decoded whole it gives the same table and spans;
    /// its head alone says where the pieces lie; a changed TOC page or digest is refused.
    #[test]
    fn a_paged_artifact_round_trips_and_refuses_a_changed_page_or_digest() {
        let (v1, blob, layer) = gzip_artifact();
        let dir = tempfile::tempdir().unwrap();
        let Spans::Checkpoints(c) = &v1.spans else { panic!("gzip spans") };
        let sums = crate::layer::block_sums::BlockSums::of(&blob[..]).unwrap();
        let contents = v1.contents().unwrap();
        let mut w = crate::layer::toc::TocWriter::new(dir.path()).unwrap();
        for e in &contents.entries {
            w.entry(e).unwrap();
        }
        let path = dir.path().join("x.toc");
        let mut f = File::create(&path).unwrap();
        let data = crate::layer::toc::write::DataIndex::Checkpoints(c);
        crate::layer::toc::write::write(&mut f, layer.digest.as_str(), w.finish().unwrap(), data, &sums).unwrap();
        let a = IndexArtifact {
            version: VERSION,
            layer: v1.layer.clone(),
            diff_id: v1.diff_id.clone(),
            compressed_size: v1.compressed_size,
            uncompressed_size: v1.uncompressed_size,
            contents: None,
            spans: Spans::Checkpoints(c.clone()),
            span_digests: v1.span_digests.clone(),
            windows: Vec::new(),
            toc: Some(std::fs::read(&path).unwrap()),
            paged: None,
        };
        let bytes = a.encode().unwrap();
        let expect = Expected { layer: &layer, diff_id: &a.diff_id };
        let back = IndexArtifact::decode(&bytes, &expect).unwrap();
        assert_eq!(back.version, 2);
        assert_eq!(back.contents().unwrap().entries.len(), 40);
        assert_eq!(back.span_digests, v1.span_digests);
        let Spans::Checkpoints(bc) = &back.spans else { panic!("spans from the TOC") };
        assert_eq!(bc.span_count(), c.span_count());
        let head = IndexArtifact::head(&bytes).unwrap();
        let h = IndexArtifact::decode_head(head, &expect).unwrap();
        let p = h.paged.clone().unwrap();
        assert_eq!(h.blob_len(head.len() as u64), bytes.len() as u64);
        assert_eq!(p.toc_len, a.toc.as_ref().unwrap().len() as u64);
        assert!(matches!(h.spans, Spans::InToc(n) if n as usize == c.span_count()));
        let (s0, _) = p.page_range(head.len() as u64, 1);
        for at in [s0 as usize + 7, bytes.len() - 5] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(IndexArtifact::decode(&bad, &expect).is_err(), "a change at {at} went unnoticed");
        }
    }
}
