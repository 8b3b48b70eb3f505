//! A layer's index as it is published next to its image (see `referrers`): everything a
//! host needs to serve the layer without downloading it first.
//!
//! One artifact blob per layer holds the table of contents (the same `Contents` the store
//! keeps), the decompression checkpoints of a gzip or zstd layer that has them, and a
//! SHA-256 of the compressed bytes of every span between them. (A layer without
//! checkpoints, an uncompressed tar or a zstd layer in one big frame, is published with
//! its table of contents alone: a mount downloads it whole on first use.) A host that later fetches one span by HTTP Range trusts it only if its
//! bytes hash to the digest in this index, which itself was fetched by digest from the
//! artifact manifest. The blob is bound to its layer (layer digest, diff_id, compressed
//! size inside) so an index published for one layer can't be passed off as another's.
//!
//! Layout: `IMGFSRIX`, a little-endian u32 format version, the u64 length of the head,
//! the head (a zstd frame of the postcard-encoded body: everything but the gzip
//! windows), then the windows, one after another. The head is what every lookup needs
//! (about 0.2% of a layer); the windows are most of the bytes (a deflated 32 KiB per
//! 1 MiB span), and a reader needs only the one before the span it reads: the head
//! holds each window's length and SHA-256, so a window fetched alone by Range is
//! checked like a span. The head's own digest goes in the artifact manifest
//! (`referrers`), so it can be fetched alone too. It all comes from the network, so
//! decoding bounds every size before it allocates, and refuses anything `build` would
//! not have made.

use crate::digest::Digest;
use crate::image::{Compression, Descriptor};
use crate::layer::checkpoints::{Checkpoints, Format};
use crate::layer::remote::Window;
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
    #[error("it is of format version {0}; this imgfs reads version {VERSION}")]
    Version(u32),
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
const VERSION: u32 = 1;

/// The most an artifact blob may be, compressed and decoded. A layer of a million empty
/// files makes a store index of 26 MB: these leave room for ten times that, and no more.
pub const MAX_BLOB: u64 = 256 << 20;
const MAX_DECODED: u64 = 1 << 30;
/// As many entries as the default layer bound lets a pull index.
const MAX_ENTRIES: usize = 2_000_000;

const HEADER: usize = 20;
/// A deflated 32 KiB window, with room for incompressible bytes (as `checkpoints` bounds it).
const MAX_WINDOW: usize = 40 << 10;

/// How the spans of a layer map onto its blob.
pub enum Spans {
    /// A gzip or zstd blob: span `i` is `compressed_range(i)` of the checkpoints, which
    /// decodes alone into `span_range(i)` of the tar.
    Checkpoints(Checkpoints),
    /// A blob read only from its start (an uncompressed tar, or a zstd layer in one big
    /// frame, which the store re-encodes): no spans.
    Whole,
}

/// One layer's published index, decoded and checked.
pub struct IndexArtifact {
    pub layer: Digest,
    pub diff_id: Digest,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub contents: Contents,
    pub spans: Spans,
    /// SHA-256 of span `i`'s compressed bytes (`compressed_range(i)`).
    pub span_digests: Vec<[u8; 32]>,
    /// For checkpoint spans, checkpoint `i`'s window as stored after the head (empty
    /// otherwise): its length and SHA-256.
    pub windows: Vec<Window>,
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
    /// Build the artifact of a stored layer from its store index and blob (one read of
    /// the blob for the span digests).
    pub fn build(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<IndexArtifact> {
        let toc = Toc::open(&store.toc_path(&layer.digest), layer.digest.as_str())?;
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
            layer: layer.digest.clone(),
            diff_id: diff_id.clone(),
            compressed_size,
            uncompressed_size,
            contents: toc.to_contents()?,
            spans,
            span_digests: Vec::new(),
            windows: Vec::new(),
        };
        if let Spans::Checkpoints(c) = &artifact.spans {
            artifact.windows = c.clone().take_windows().iter().map(|w| Window::of(w)).collect();
        }
        let mut buf = Vec::new();
        for i in 0..artifact.span_count() {
            let (start, end) = artifact.compressed_range(i);
            buf.resize((end - start) as usize, 0);
            blob.read_exact_at(&mut buf, start).map_err(|source| Error::Read { path: blob_path.clone(), source })?;
            artifact.span_digests.push(Sha256::digest(&buf).into());
        }
        Ok(artifact)
    }

    pub fn span_count(&self) -> usize {
        match &self.spans {
            Spans::Whole => 0,
            Spans::Checkpoints(c) => c.span_count(),
        }
    }

    /// The blob bytes of span `i`, as `(start, end)`, end exclusive: what a Range read
    /// fetches and what `span_digests[i]` covers. Panics if `i >= span_count()`.
    pub fn compressed_range(&self, i: usize) -> (u64, u64) {
        match &self.spans {
            Spans::Whole => panic!("span {i} out of range: the layer has no spans"),
            Spans::Checkpoints(c) => c.compressed_range(i),
        }
    }

    /// The artifact blob: header, head (the body, postcard in a zstd frame), windows.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut windows = Vec::new();
        let spans = match &self.spans {
            Spans::Whole => WireSpans::Whole,
            Spans::Checkpoints(c) => {
                let mut c = c.clone();
                windows = c.take_windows();
                let mut bytes = Vec::new();
                c.save(&mut bytes)?;
                WireSpans::Checkpoints(bytes)
            }
        };
        // Borrowing would need a second set of types; the contents are cloned once per push.
        let body = Body {
            layer: self.layer.clone(),
            diff_id: self.diff_id.clone(),
            compressed_size: self.compressed_size,
            uncompressed_size: self.uncompressed_size,
            contents: Contents {
                entries: self.contents.entries.clone(),
                whiteouts: self.contents.whiteouts.clone(),
                opaque: self.contents.opaque.clone(),
            },
            spans,
            span_digests: self.span_digests.clone(),
            windows: windows.iter().map(|w| Window::of(w)).collect(),
        };
        // Level 19: paths compress well; the blob is made once and fetched by every host.
        let head = zstd::bulk::compress(&postcard::to_stdvec(&body)?, 19)?;
        let mut out = Vec::from(&MAGIC[..]);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(head.len() as u64).to_le_bytes());
        out.extend(head);
        // Already deflated: zstd would not shrink them, and they must stay addressable.
        out.extend(windows.concat());
        Ok(out)
    }

    /// The head of an artifact blob: its first bytes, up to the windows. What a reader
    /// fetches (and checks against the manifest's annotation) before anything else.
    pub fn head(blob: &[u8]) -> Result<&[u8]> {
        ensure(blob.len() >= HEADER && &blob[..8] == MAGIC, Error::NotAnIndex)?;
        let version = u32::from_le_bytes(blob[8..12].try_into().unwrap());
        ensure(version == VERSION, Error::Version(version))?;
        let len = u64::from_le_bytes(blob[12..20].try_into().unwrap());
        ensure(len <= MAX_BLOB, Error::HeadTooLong)?;
        blob.get(..HEADER + len as usize).ok_or(Error::HeadCut)
    }

    /// Where each checkpoint's window lies in the artifact blob whose head is
    /// `head_len` bytes: `(start, end)`, end exclusive, in checkpoint order.
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

    /// Decode the head alone (`head`), for a reader that fetches windows one by one
    /// (`window_ranges`, checked with `Window::matches`, put back with
    /// `Checkpoints::set_window`).
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
            layer: body.layer,
            diff_id: body.diff_id,
            compressed_size: body.compressed_size,
            uncompressed_size: body.uncompressed_size,
            contents: body.contents,
            spans,
            span_digests,
            windows: body.windows,
        };
        artifact.check_shape()?;
        Ok(artifact)
    }

    /// Everything inside agrees with itself: sizes, span counts, entries within the tar.
    fn check_shape(&self) -> Result<()> {
        if let Spans::Checkpoints(c) = &self.spans {
            ensure(c.compressed_size() == self.compressed_size, Error::CheckpointsBlobSize)?;
            ensure(c.uncompressed_size() == self.uncompressed_size, Error::CheckpointsStreamSize)?;
        }
        let spans = self.span_count();
        ensure(self.span_digests.len() == spans, Error::SpanDigestCount { have: self.span_digests.len(), spans })?;
        let windows = if let Spans::Checkpoints(c) = &self.spans { c.span_count() } else { 0 };
        ensure(self.windows.len() == windows, Error::WindowCount { have: self.windows.len(), checkpoints: windows })?;
        if let Some(i) = self.windows.iter().position(|w| w.len as usize > MAX_WINDOW) {
            return Err(Error::WindowTooLong { index: i, len: self.windows[i].len });
        }
        let c = &self.contents;
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
            layer: layer.digest.clone(),
            diff_id: Digest::of(&tar),
            compressed_size: blob.len() as u64,
            uncompressed_size: tar.len() as u64,
            contents,
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
        assert_eq!(back.contents.entries.len(), 40);
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

        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(err(&v2, &expect).contains("format version 2"));
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
        a.contents.entries[3].offset = a.uncompressed_size;
        assert!(err(&a.encode().unwrap(), &expect).contains("past the end"));
    }
}
