//! Build a layer's table of contents in one pass over its compressed stream, which may
//! still be arriving from the registry: decompress (recording checkpoints where a later
//! read can start decoding), check the uncompressed stream against the config's
//! diff_id, and turn tar entries into `Entry`s with whiteouts and opaque markers taken
//! out, each handed on as it is read: to a TOC being written (`toc::TocWriter`, whose
//! memory does not grow with the entries), or to a list in memory.

use super::arriving::Arriving;
use super::checkpoints::{Checkpoints, Format};
use super::indexing::IndexingDecoder;
use super::names::{check_name, normalise, normalise_inside, PATH_MAX};
use super::pargz::{self, ParallelGzip};
use super::toc::{TocParts, TocWriter};
use super::workers;
use super::{join, show, split_parent, Contents, Entry, Kind};
use super::{Context, Error, Result};
use crate::digest::{Digest, HashingReader};
use crate::image::Compression;
use std::cell::Cell;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use tar::EntryType;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Uncompressed bytes between two checkpoints: a read decodes at most this much
/// before its first byte. 1 MiB keeps a cold small read at about a millisecond of
/// decoding while the checkpoints (a 32 KiB window each, compressed) stay near 1% of
/// the layer.
pub const SPAN: u64 = 1 << 20;

/// What one pass over a layer yields.
pub struct Built {
    /// The table of contents, to be assembled into a TOC file (`toc::write::write`).
    pub toc: TocParts,
    /// Where decoding can start, for a compressed layer.
    pub checkpoints: Option<Checkpoints>,
}

/// Where the entries of a layer go as they are read, in stream order.
pub trait Sink {
    fn entry(&mut self, e: &Entry) -> Result<()>;
    /// `.wh.NAME`: `path` is hidden in lower layers.
    fn whiteout(&mut self, path: &[u8]) -> Result<()>;
    /// `DIR/.wh..wh..opq`: the lower children of `dir` are hidden.
    fn opaque(&mut self, dir: &[u8]) -> Result<()>;
}

impl Sink for TocWriter {
    fn entry(&mut self, e: &Entry) -> Result<()> {
        TocWriter::entry(self, e)
    }
    fn whiteout(&mut self, path: &[u8]) -> Result<()> {
        TocWriter::whiteout(self, path)
    }
    fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        TocWriter::opaque(self, dir)
    }
}

/// A list in memory, for small tables (tests, and what is published whole); hard links
/// are not resolved here (`link_entry` stays `None`): a TOC made from the list does it.
impl Sink for Contents {
    fn entry(&mut self, e: &Entry) -> Result<()> {
        self.entries.push(e.clone());
        Ok(())
    }
    fn whiteout(&mut self, path: &[u8]) -> Result<()> {
        self.whiteouts.push(path.to_vec());
        Ok(())
    }
    fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        self.opaque.push(dir.to_vec());
        Ok(())
    }
}

/// Bounds on what one layer may hold, so that a hostile layer (a decompression bomb,
/// millions of tiny entries) can't exhaust the disk or memory: indexing stops with an
/// error once the uncompressed stream or the entry count passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Uncompressed bytes. The checkpoints kept in memory and in the index grow with
    /// this (at most about 3.6%: a 32 KiB window per 1 MiB span, stored deflated), and
    /// so does a re-encoded copy of a zstd layer in one frame.
    pub max_bytes: u64,
    /// Tar entries, markers included. The table of contents on disk grows with this
    /// (about a hundred bytes per entry, plus its name); writing it takes bounded
    /// memory, whatever the count.
    pub max_entries: u64,
}

pub const BYTES_VAR: &str = "IMGFS_MAX_LAYER_SIZE";
pub const ENTRIES_VAR: &str = "IMGFS_MAX_LAYER_ENTRIES";

impl Limits {
    /// 32 GiB uncompressed (larger than the largest layers of common images, CUDA and
    /// ML ones included) and 2 million entries (a full TeX Live tree is about 200k).
    pub const DEFAULT: Limits = Limits { max_bytes: 32 << 30, max_entries: 2_000_000 };

    /// The defaults, or what IMGFS_MAX_LAYER_SIZE (bytes, or with a K, M, G or T
    /// suffix, powers of 1024) and IMGFS_MAX_LAYER_ENTRIES say.
    pub fn from_env() -> Result<Limits> {
        let mut limits = Limits::DEFAULT;
        if let Ok(v) = std::env::var(BYTES_VAR) {
            limits.max_bytes = parse_size(&v).with_context(|| format!("{BYTES_VAR}={v:?} is not a size"))?;
        }
        if let Ok(v) = std::env::var(ENTRIES_VAR) {
            limits.max_entries = v.trim().parse().with_context(|| format!("{ENTRIES_VAR}={v:?} is not a count"))?;
        }
        Ok(limits)
    }
}

/// `123`, `64K`, `10M`, `32G`, `1T` (powers of 1024; a trailing `B`/`iB` is allowed).
pub(crate) fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let v = v.strip_suffix("iB").or_else(|| v.strip_suffix('B')).unwrap_or(v);
    let (digits, shift) = match v.char_indices().last()? {
        (i, 'K' | 'k') => (&v[..i], 10),
        (i, 'M' | 'm') => (&v[..i], 20),
        (i, 'G' | 'g') => (&v[..i], 30),
        (i, 'T' | 't') => (&v[..i], 40),
        _ => (v, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Index the layer whose (possibly compressed) bytes `blob` yields, within the limits
/// of the environment (`Limits::from_env`), its TOC's scratch files in `scratch`. When
/// `copy` is given, the uncompressed tar is written to it as it streams (for
/// `reframe`). `diff_id`, when known, must match the uncompressed stream.
pub fn index_layer(
    blob: impl Read,
    compression: Compression,
    diff_id: Option<&Digest>,
    copy: Option<&mut dyn Write>,
    scratch: &Path,
) -> Result<Built> {
    index_layer_with(blob, compression, diff_id, copy, scratch, &Limits::from_env()?)
}

/// `index_layer` within the given limits.
pub fn index_layer_with(
    blob: impl Read,
    compression: Compression,
    diff_id: Option<&Digest>,
    copy: Option<&mut dyn Write>,
    scratch: &Path,
    limits: &Limits,
) -> Result<Built> {
    let mut toc = TocWriter::new(scratch)?;
    let checkpoints = index_into(Decoder::in_order(blob, compression)?, compression, diff_id, copy, limits, &mut toc)?;
    Ok(Built { toc: toc.finish()?, checkpoints })
}

/// `index_layer` over a blob read by position, which may still be arriving: a gzip blob
/// of at least `pargz::MIN_PARALLEL` bytes is decoded on every core this process may use
/// while no other layer is being indexed in it (`pargz`), with the same output and
/// checkpoints; others are read front to back.
pub fn index_blob(
    blob: &Arc<Arriving>,
    compression: Compression,
    diff_id: Option<&Digest>,
    copy: Option<&mut dyn Write>,
    scratch: &Path,
) -> Result<Built> {
    let limits = Limits::from_env()?;
    let workers = workers::global();
    let _indexing = pargz::Indexing::start();
    let mut toc = TocWriter::new(scratch)?;
    let checkpoints = if compression == Compression::Gzip && pargz::pays(blob.len(), workers) {
        let decoder = ParallelGzip::new(Arc::clone(blob), SPAN, pargz::CHUNK, workers)?;
        let decoder: Decoder<io::Empty> = Decoder::Parallel(Box::new(decoder));
        index_into(decoder, compression, diff_id, copy, &limits, &mut toc)?
    } else {
        let decoder = Decoder::in_order(blob.reader(), compression)?;
        index_into(decoder, compression, diff_id, copy, &limits, &mut toc)?
    };
    Ok(Built { toc: toc.finish()?, checkpoints })
}

/// Index a layer into a list in memory (for small layers: tests, what is published
/// whole), within the limits of the environment.
pub fn index_contents(blob: impl Read, compression: Compression) -> Result<(Contents, Option<Checkpoints>)> {
    let mut contents = Contents::default();
    let decoder = Decoder::in_order(blob, compression)?;
    let checkpoints = index_into(decoder, compression, None, None, &Limits::from_env()?, &mut contents)?;
    Ok((contents, checkpoints))
}

/// A layer's uncompressed stream, from the decoder that suits its blob.
enum Decoder<R: Read> {
    Plain(BufReader<R>),
    InOrder(IndexingDecoder<BufReader<R>>),
    Parallel(Box<ParallelGzip>),
}

impl<R: Read> Decoder<R> {
    fn in_order(blob: R, compression: Compression) -> Result<Decoder<R>> {
        let raw = BufReader::with_capacity(1 << 20, blob);
        Ok(match compression {
            Compression::None => Decoder::Plain(raw),
            Compression::Gzip => Decoder::InOrder(IndexingDecoder::new(raw, Format::Gzip, SPAN)?),
            Compression::Zstd => Decoder::InOrder(IndexingDecoder::new(raw, Format::Zstd, SPAN)?),
        })
    }

    /// The checkpoints, for a compressed layer read to its end.
    fn finish(self) -> Result<Option<Checkpoints>> {
        Ok(match self {
            Decoder::Plain(_) => None,
            Decoder::InOrder(d) => Some(d.finish()?),
            Decoder::Parallel(d) => {
                let stats = d.stats();
                tracing::debug!(
                    "gzip decoded in parallel: {} chunks ahead, {} in order, {} bytes marked, {} markers, \
                     {:?} waited for workers",
                    stats.ahead,
                    stats.in_order,
                    stats.marked,
                    stats.markers,
                    stats.waited
                );
                Some(d.finish()?)
            }
        })
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::InOrder(d) => d.read(buf),
            Decoder::Parallel(d) => d.read(buf),
        }
    }
}

/// One pass over a layer's uncompressed stream: every entry to `sink`, the diff_id
/// checked, the limits kept; the checkpoints of a compressed one.
fn index_into<R: Read>(
    mut decoder: Decoder<R>,
    compression: Compression,
    diff_id: Option<&Digest>,
    copy: Option<&mut dyn Write>,
    limits: &Limits,
    sink: &mut dyn Sink,
) -> Result<Option<Checkpoints>> {
    {
        let frontier = Cell::new(MAX_HEADERS);
        let mut watch =
            Watch { inner: &mut decoder, copy, read: 0, max: limits.max_bytes, frontier: &frontier, failure: None };
        let mut hashed = HashingReader::new(&mut watch);
        let parsed = parse_entries(&mut hashed, limits, Some(&frontier), sink).and_then(|()| {
            // The tar parser stops at the end-of-archive blocks; the diff_id covers the
            // padding after them too.
            frontier.set(u64::MAX);
            io::copy(&mut hashed, &mut io::sink()).context("cannot read the end of the layer")?;
            Ok(())
        });
        let (actual, _) = hashed.finish();
        // What went wrong below the tar parser says more than the parser's own error.
        if let Some(failure) = watch.failure.take() {
            return Err(failure.into_error(compression, limits));
        }
        parsed?;
        if let Some(want) = diff_id {
            if &actual != want {
                return Err(Error::DiffId { want: want.clone(), actual });
            }
        }
    }
    decoder.finish()
}

/// Sits between the decompressor and the tar parser: counts the uncompressed bytes
/// against the limit and the parser's frontier (see `parse_entries`), copies them to
/// `copy` if asked, and remembers the first failure below the parser, which then names
/// the cause (a bomb, a truncated or invalid compressed stream, a full disk) instead of
/// a corrupt tar entry.
struct Watch<'a, 'f, R> {
    inner: R,
    copy: Option<&'a mut dyn Write>,
    read: u64,
    max: u64,
    frontier: &'f Cell<u64>,
    failure: Option<Failure>,
}

enum Failure {
    TooLarge,
    HeadersTooLarge,
    /// Reading or decompressing the blob failed.
    Source(io::Error),
    /// Writing the uncompressed copy failed.
    Copy(io::Error),
}

impl Failure {
    fn into_error(self, compression: Compression, limits: &Limits) -> Error {
        match self {
            Failure::TooLarge => Error::OverLimit(format!(
                "layer is larger than {} bytes uncompressed, the limit (set {BYTES_VAR} to raise it)",
                limits.max_bytes
            )),
            Failure::HeadersTooLarge => Error::Invalid(format!(
                "layer has over {MAX_HEADERS} bytes of tar headers (PAX records or a GNU long name) for one entry"
            )),
            Failure::Source(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Error::Invalid(format!("layer is truncated: its {} stream ends early", name_of(compression)))
            }
            Failure::Source(e) if compression != Compression::None && e.raw_os_error().is_none() => {
                Error::Context { what: format!("layer is not valid {}", name_of(compression)), source: Box::new(e) }
            }
            Failure::Source(e) => Error::Context { what: "cannot read the layer".into(), source: Box::new(e) },
            Failure::Copy(e) => {
                Error::Context { what: "cannot write the re-encoded layer".into(), source: Box::new(e) }
            }
        }
    }
}

fn name_of(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "tar",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

impl<R: Read> Read for Watch<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::Error::other("layer read stopped"));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failure = Some(Failure::Source(e));
                return Err(copy);
            }
        };
        self.read += n as u64;
        if self.read > self.max {
            self.failure = Some(Failure::TooLarge);
            return Err(io::Error::other("layer is over the size limit"));
        }
        if self.read > self.frontier.get() {
            self.failure = Some(Failure::HeadersTooLarge);
            return Err(io::Error::other("tar headers over the limit"));
        }
        if let Some(c) = self.copy.as_mut() {
            if let Err(e) = c.write_all(&buf[..n]) {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failure = Some(Failure::Copy(e));
                return Err(copy);
            }
        }
        Ok(n)
    }
}

/// Parse an uncompressed tar stream into entries, whiteouts and opaque markers, with
/// the default (or environment-configured) limits.
pub fn parse_tar(stream: impl Read) -> Result<Contents> {
    parse_tar_with(stream, &Limits::from_env()?)
}

/// Parse an uncompressed tar stream. Names are kept as the bytes the tar has. Entries a
/// kernel could not serve, or that would reach outside the image, make the layer fail
/// with an error naming the entry; see `check_name`.
pub fn parse_tar_with(stream: impl Read, limits: &Limits) -> Result<Contents> {
    let mut contents = Contents::default();
    parse_entries(stream, limits, None, &mut contents)?;
    Ok(contents)
}

/// Tar header bytes (PAX records, GNU long names, the headers themselves) allowed
/// before one entry: the `tar` crate holds them in memory whole, and no real name or set
/// of attributes needs a fraction of this.
const MAX_HEADERS: u64 = 1 << 20;

/// `parse_tar_with`; when `frontier` is given, it is kept at the stream offset the parser
/// may read up to before it yields the next entry (the end of this entry's data plus
/// `MAX_HEADERS`), for a reader below to enforce.
fn parse_entries(stream: impl Read, limits: &Limits, frontier: Option<&Cell<u64>>, sink: &mut dyn Sink) -> Result<()> {
    let mut archive = tar::Archive::new(stream);
    let mut count: u64 = 0;
    let mut last: Option<Vec<u8>> = None;
    for item in archive.entries().context("layer is not a tar archive")? {
        let mut te = item.with_context(|| match &last {
            None => "layer is not a tar archive".to_string(),
            Some(p) => format!("corrupt tar entry after {}", show(p)),
        })?;
        if let Some(f) = frontier {
            f.set(te.raw_file_position().saturating_add(te.size().div_ceil(512) * 512).saturating_add(MAX_HEADERS));
        }
        count += 1;
        if count > limits.max_entries {
            return Err(Error::OverLimit(format!(
                "layer has more than {} entries, the limit (set {ENTRIES_VAR} to raise it)",
                limits.max_entries
            )));
        }
        let header_type = te.header().entry_type();
        if matches!(
            header_type,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            continue;
        }
        let raw_path = te.path_bytes().into_owned();
        // Like containerd and umoci: `..` never climbs above the root.
        let path = normalise(&raw_path);
        check_name(&path).with_context(|| format!("tar entry {}", show(&raw_path)))?;
        last = Some(path.clone());
        match marker(&path) {
            Some(Marker::Whiteout(p)) => {
                sink.whiteout(&p)?;
                continue;
            }
            Some(Marker::Opaque(d)) => {
                sink.opaque(&d)?;
                continue;
            }
            Some(Marker::Invalid) => continue,
            None => {}
        }
        let sparse = match te.pax_extensions()? {
            Some(pax) => pax.filter_map(|e| e.ok()).any(|e| e.key_bytes().starts_with(b"GNU.sparse.")),
            None => false,
        };
        if sparse {
            bail!("sparse file {} (PAX) in layer is not supported", show(&path));
        }
        let kind = match header_type {
            EntryType::Regular | EntryType::Continuous => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::Hardlink,
            EntryType::Char => Kind::Char,
            EntryType::Block => Kind::Block,
            EntryType::Fifo => Kind::Fifo,
            // Old tars mark regular files with a NUL type byte; tar maps other unknown
            // bytes to Other. Sparse files are not supported.
            EntryType::GNUSparse => bail!("sparse file {} in layer is not supported", show(&path)),
            other if other.as_byte() == 0 => Kind::File,
            other => bail!("unsupported tar entry type {:?} for {}", other.as_byte() as char, show(&path)),
        };
        if path.is_empty() && kind != Kind::Dir {
            bail!("tar entry {} makes the image's root a {kind:?}, not a directory", show(&raw_path));
        }
        let header = te.header().clone();
        // A missing mode: what tar extractors give (a directory must stay traversable).
        let mode = header.mode().unwrap_or(if kind == Kind::Dir { 0o755 } else { 0o644 }) & 0o7777;
        let mut uid = header.uid().unwrap_or(0) as u32;
        let mut gid = header.gid().unwrap_or(0) as u32;
        let mut mtime = header.mtime().unwrap_or(0) as i64;
        let rdev =
            (header.device_major().ok().flatten().unwrap_or(0), header.device_minor().ok().flatten().unwrap_or(0));
        let link = match kind {
            Kind::Symlink => {
                // Served as it is: the reader's kernel resolves it, inside the mount or not.
                let target = te.link_name_bytes().unwrap_or_default().into_owned();
                if target.len() >= PATH_MAX || target.contains(&0) {
                    bail!("symlink {} has a target no kernel can serve", show(&path));
                }
                Some(target)
            }
            Kind::Hardlink => {
                let raw = te.link_name_bytes().unwrap_or_default().into_owned();
                let target = normalise_inside(&raw).with_context(|| {
                    format!("hard link {} points outside the image, at {}", show(&path), show(&raw))
                })?;
                // The target is a path of the image too, kept in the TOC as one.
                check_name(&target).with_context(|| format!("hard link {} points at {}", show(&path), show(&raw)))?;
                Some(target)
            }
            _ => None,
        };
        let mut xattrs = Vec::new();
        if let Some(pax) = te.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                if let Some(attr) = key.strip_prefix(b"SCHILY.xattr.") {
                    // Attribute names are bytes to the kernel too.
                    xattrs.push((attr.to_vec(), value.to_vec()));
                } else if key == b"mtime" {
                    // PAX times may be fractional ("1234.5"); whole seconds are what we serve.
                    if let Some(secs) = std::str::from_utf8(value).ok().and_then(|v| v.split('.').next()?.parse().ok())
                    {
                        mtime = secs;
                    }
                } else if key == b"uid" {
                    uid = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(uid);
                } else if key == b"gid" {
                    gid = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(gid);
                }
            }
        }
        let size = if kind == Kind::File { te.size() } else { 0 };
        // A hard link resolves to the entry its target path held at this point of the
        // stream: the sink knows (a TOC resolves it when it sorts the paths).
        let entry = Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            size,
            mtime,
            link,
            link_entry: None,
            rdev,
            xattrs,
            offset: te.raw_file_position(),
        };
        sink.entry(&entry)?;
    }
    Ok(())
}

/// A marker's meaning: it is never an entry of its own (tar layers and eStargz TOCs
/// alike).
pub(crate) enum Marker {
    /// `.wh.NAME`: the path hidden in lower layers.
    Whiteout(Vec<u8>),
    /// `.wh..wh..opq`: the directory whose lower children are hidden.
    Opaque(Vec<u8>),
    /// A bare `.wh.`, a whiteout of `.` or `..`, another `.wh..wh.` marker: invalid or
    /// unknown, hiding nothing, never shown.
    Invalid,
}

/// Is `path` (normalised) a whiteout or opaque marker, and what does it mark?
pub(crate) fn marker(path: &[u8]) -> Option<Marker> {
    let (parent, name) = split_parent(path);
    if name == OPAQUE_MARKER {
        return Some(Marker::Opaque(parent.to_vec()));
    }
    let hidden = name.strip_prefix(WHITEOUT_PREFIX)?;
    if !hidden.is_empty() && hidden != b"." && hidden != b".." && !hidden.starts_with(WHITEOUT_PREFIX) {
        Some(Marker::Whiteout(join(parent, hidden)))
    } else {
        Some(Marker::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size(" 16M "), Some(16 << 20));
        assert_eq!(parse_size("32G"), Some(32 << 30));
        assert_eq!(parse_size("1KiB"), Some(1024));
        assert_eq!(parse_size("2t"), Some(2 << 40));
        for bad in ["", "G", "x", "-1", "1.5G", "99999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
