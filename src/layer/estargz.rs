//! eStargz layers (stargz-snapshotter's format): a gzip stream, readable by any gzip
//! reader, in which every file chunk starts a gzip member of its own, the last tar entry
//! is a table of contents `stargz.index.json`, and a 51-byte footer (an empty gzip
//! member whose extra field `SG` holds the TOC's offset in hex and `STARGZ`) ends the
//! blob. With it a layer can be listed from its footer and TOC alone, and a file read
//! from the gzip member(s) holding its chunks, fetched by Range.
//!
//! This module reads the format: the footer (`toc_offset`), the TOC (`read_toc`, which
//! checks it against the digest the layer's `toc.digest` annotation gives: the manifest
//! is verified by digest, so that anchors trust), the layer's table of contents built from
//! it (`Layout`, whiteouts and opaque markers taken from names as in a tar), and one
//! chunk decoded and checked against its `chunkDigest` (`decode_chunk`).

use super::{build, names, Contents, Entry, Kind};
use super::{Context, Result};
use crate::digest::Digest;
use base64::Engine as _;
use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

/// The layer annotation holding the digest of the TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The layer annotation holding the size of the uncompressed tar.
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// Bytes of the footer at the end of the blob.
pub const FOOTER_LEN: u64 = 51;
const TOC_NAME: &[u8] = b"stargz.index.json";
/// A TOC larger than this is refused rather than held in memory (stargz-snapshotter's
/// own limit is 50 MB of JSON for a layer).
const MAX_TOC: u64 = 64 << 20;
/// A chunk larger than this is refused: a read decodes a whole chunk in memory.
/// stargz-snapshotter writes chunks of 4 MiB unless told otherwise.
const MAX_CHUNK: u64 = 64 << 20;

/// The layout of an eStargz layer of `size` bytes from its footer and TOC alone, read
/// with `fetch(start, end)` (by Range), the TOC checked against `toc_digest`.
pub fn open(size: u64, toc_digest: &Digest, fetch: impl Fn(u64, u64) -> io::Result<Vec<u8>>) -> Result<Layout> {
    let toc_end = size.checked_sub(FOOTER_LEN).context("layer is too short for an eStargz footer")?;
    let footer = fetch(toc_end, size)?;
    let off = toc_offset(&footer)?;
    if off >= toc_end || toc_end - off > MAX_TOC {
        bail!("eStargz footer gives the TOC offset {off}, outside the layer or too far from its end");
    }
    let toc = read_toc(&fetch(off, toc_end)?, toc_digest)?;
    Layout::new(&toc, off)
}

/// The offset of the TOC's gzip member, from the blob's last `FOOTER_LEN` bytes.
pub fn toc_offset(footer: &[u8]) -> Result<u64> {
    // gzip magic, deflate, FEXTRA; XLEN 26; subfield "SG" of 22 bytes: 16 hex + "STARGZ".
    if footer.len() as u64 != FOOTER_LEN
        || footer[..4] != [0x1f, 0x8b, 8, 4]
        || footer[10..16] != [26, 0, b'S', b'G', 22, 0]
        || &footer[32..38] != b"STARGZ"
    {
        bail!("no eStargz footer at the end of the layer");
    }
    let hex = std::str::from_utf8(&footer[16..32]).ok().context("eStargz footer: TOC offset is not hex")?;
    u64::from_str_radix(hex, 16).ok().context("eStargz footer: TOC offset is not hex")
}

/// The TOC JSON from the bytes between the TOC offset and the footer, checked against
/// the layer's `toc.digest` annotation.
pub fn read_toc(member: &[u8], want: &Digest) -> Result<Toc> {
    let mut archive = tar::Archive::new(MultiGzDecoder::new(member));
    let mut entry = archive
        .entries()
        .and_then(|mut e| e.next().transpose())
        .context("eStargz TOC is not a gzipped tar")?
        .context("eStargz TOC member is empty")?;
    if entry.path_bytes().as_ref() != TOC_NAME {
        bail!("eStargz TOC member holds {}, not stargz.index.json", String::from_utf8_lossy(&entry.path_bytes()));
    }
    if entry.size() > MAX_TOC {
        bail!("eStargz TOC is {} bytes, over the limit of {MAX_TOC}", entry.size());
    }
    let mut json = Vec::new();
    entry.read_to_end(&mut json).context("cannot decode the eStargz TOC")?;
    let got = Digest::of(&json);
    if got != *want {
        bail!("eStargz TOC has digest {got}, not the {want} its layer annotation gives");
    }
    serde_json::from_slice(&json).context("eStargz TOC is not valid JSON")
}

/// `stargz.index.json` (the fields imgfs serves; others are ignored).
#[derive(Debug, Deserialize)]
pub struct Toc {
    pub version: u32,
    pub entries: Vec<TocEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TocEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub modtime: Option<String>,
    pub link_name: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Values are base64 (Go's encoding of `[]byte`).
    pub xattrs: BTreeMap<String, String>,
    /// Offset of the gzip member holding this chunk in the blob.
    pub offset: u64,
    pub chunk_offset: u64,
    /// 0: to the end of the file.
    pub chunk_size: u64,
    pub chunk_digest: String,
    /// Where the chunk starts in its member's decoded bytes.
    pub inner_offset: u64,
}

/// Where one chunk of a file sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of the chunk in the file.
    pub file_offset: u64,
    pub size: u64,
    /// Compressed bytes `start..end` of the blob: the gzip member(s) holding the chunk.
    pub start: u64,
    pub end: u64,
    pub inner_offset: u64,
    /// SHA-256 of the chunk's uncompressed bytes.
    pub digest: [u8; 32],
}

/// A layer's table of contents built from its TOC, and where each file's chunks are.
#[derive(Debug)]
pub struct Layout {
    pub contents: Contents,
    /// The chunks of each file with data, in file order; such a file's `Entry::offset`
    /// is its place in this table (an eStargz file has no offset in a tar to give).
    pub files: Vec<Vec<Chunk>>,
}

impl Layout {
    /// The layout of a layer whose TOC member starts at `toc_offset`.
    pub fn new(toc: &Toc, toc_offset: u64) -> Result<Layout> {
        if toc.version != 1 {
            bail!("eStargz TOC version {} is not supported", toc.version);
        }
        // A member ends where the next one starts; the last before the TOC at the TOC.
        let mut starts: Vec<u64> = toc.entries.iter().filter(|e| e.offset > 0).map(|e| e.offset).collect();
        starts.push(toc_offset);
        starts.sort_unstable();
        starts.dedup();
        let member_end = |start: u64| -> Result<u64> {
            let i = starts.partition_point(|&s| s <= start);
            starts.get(i).copied().with_context(|| format!("eStargz chunk at {start} lies past the TOC"))
        };
        let mut contents = Contents::default();
        let mut files: Vec<Vec<Chunk>> = Vec::new();
        let mut latest: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut last_file: Option<u32> = None;
        for te in &toc.entries {
            let path = names::normalise(te.name.as_bytes());
            names::check_name(&path).with_context(|| format!("eStargz TOC entry {}", te.name))?;
            if te.kind == "chunk" {
                let Some(file) = last_file.filter(|&f| contents.entries[f as usize].path == path) else {
                    bail!("eStargz TOC has a chunk of {} with no file before it", te.name);
                };
                let size = contents.entries[file as usize].size;
                files.last_mut().context("eStargz TOC: a chunk of an empty file")?.push(chunk(te, size, &member_end)?);
                continue;
            }
            if let Some(m) = build::marker(&path) {
                match m {
                    build::Marker::Whiteout(p) => contents.whiteouts.push(p),
                    build::Marker::Opaque(d) => contents.opaque.push(d),
                    build::Marker::Invalid => {}
                }
                continue;
            }
            let kind = match te.kind.as_str() {
                "reg" => Kind::File,
                "dir" => Kind::Dir,
                "symlink" => Kind::Symlink,
                "hardlink" => Kind::Hardlink,
                "char" => Kind::Char,
                "block" => Kind::Block,
                "fifo" => Kind::Fifo,
                other => bail!("eStargz TOC entry {} has the unknown type {other:?}", te.name),
            };
            if path.is_empty() && kind != Kind::Dir {
                bail!("eStargz TOC entry {} makes the image's root a {kind:?}", te.name);
            }
            let link = match kind {
                Kind::Symlink => Some(te.link_name.as_bytes().to_vec()),
                Kind::Hardlink => Some(
                    names::normalise_inside(te.link_name.as_bytes())
                        .with_context(|| format!("hard link {} points outside the image", te.name))
                        .and_then(|t| {
                            names::check_name(&t)
                                .with_context(|| format!("hard link {} points at {}", te.name, te.link_name))?;
                            Ok(t)
                        })?,
                ),
                _ => None,
            };
            let link_entry = match kind {
                Kind::Hardlink => link.as_ref().and_then(|t| latest.get(t)).map(|&i| {
                    let target = &contents.entries[i as usize];
                    target.link_entry.filter(|_| target.kind == Kind::Hardlink).unwrap_or(i)
                }),
                _ => None,
            };
            let mut xattrs = Vec::new();
            for (k, v) in &te.xattrs {
                let v = base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .with_context(|| format!("eStargz TOC entry {}: xattr {k} is not base64", te.name))?;
                xattrs.push((k.as_bytes().to_vec(), v));
            }
            let mtime = match &te.modtime {
                Some(t) => t
                    .parse::<jiff::Timestamp>()
                    .with_context(|| format!("eStargz TOC entry {}: modtime {t:?}", te.name))?
                    .as_second(),
                None => 0,
            };
            let idx = contents.entries.len() as u32;
            contents.entries.push(Entry {
                path: path.clone(),
                kind,
                mode: te.mode & 0o7777,
                uid: te.uid,
                gid: te.gid,
                size: if kind == Kind::File { te.size } else { 0 },
                mtime,
                link,
                link_entry,
                rdev: (te.dev_major, te.dev_minor),
                xattrs,
                // For a file with data, its place in `files` (set below).
                offset: 0,
            });
            latest.insert(path, idx);
            last_file = None;
            if kind == Kind::File {
                last_file = Some(idx);
                if te.size > 0 {
                    contents.entries[idx as usize].offset = files.len() as u64;
                    files.push(vec![chunk(te, te.size, &member_end)?]);
                }
            }
        }
        for e in contents.entries.iter().filter(|e| e.kind == Kind::File && e.size > 0) {
            let list = &files[e.offset as usize];
            let covered = list.iter().try_fold(0u64, |at, c| (c.file_offset == at).then_some(at + c.size));
            if covered != Some(e.size) {
                bail!(
                    "eStargz TOC: the chunks of {} do not cover its {} bytes",
                    String::from_utf8_lossy(&e.path),
                    e.size
                );
            }
        }
        contents.check()?;
        Ok(Layout { contents, files })
    }
}

/// The chunk a TOC entry (a file's first chunk, or a `chunk`) describes.
fn chunk(te: &TocEntry, file_size: u64, member_end: &impl Fn(u64) -> Result<u64>) -> Result<Chunk> {
    let size = match te.chunk_size {
        0 => file_size.checked_sub(te.chunk_offset).context("eStargz chunk past the end of its file")?,
        n => n,
    };
    if size > MAX_CHUNK {
        bail!("eStargz TOC entry {}: a chunk of {size} bytes, over the limit of {MAX_CHUNK}", te.name);
    }
    let digest = te
        .chunk_digest
        .strip_prefix("sha256:")
        .and_then(|h| {
            let mut out = [0u8; 32];
            (h.len() == 64).then_some(())?;
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(out)
        })
        .with_context(|| format!("eStargz TOC entry {}: chunkDigest {:?} is not sha256", te.name, te.chunk_digest))?;
    Ok(Chunk {
        file_offset: te.chunk_offset,
        size,
        start: te.offset,
        end: member_end(te.offset)?,
        inner_offset: te.inner_offset,
        digest,
    })
}

/// The uncompressed bytes of `chunk` from the compressed bytes `chunk.start..chunk.end`
/// of the blob, checked against the chunk's digest: a mismatch is an error, never data.
pub fn decode_chunk(compressed: &[u8], chunk: &Chunk) -> io::Result<Vec<u8>> {
    let mut decoder = MultiGzDecoder::new(compressed);
    io::copy(&mut (&mut decoder).take(chunk.inner_offset), &mut io::sink())?;
    // What the TOC claims, bounded; the chunk grows to its true size as it decodes.
    let mut out = Vec::with_capacity(chunk.size.min(1 << 20) as usize);
    decoder.take(chunk.size).read_to_end(&mut out)?;
    if out.len() as u64 != chunk.size || <[u8; 32]>::from(Sha256::digest(&out)) != chunk.digest {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "eStargz chunk at bytes {}..{} does not match the chunkDigest its TOC gives; not served",
                chunk.start, chunk.end
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use serde_json::json;
    use std::io::Write;

    /// A writer following the published format (stargz-snapshotter docs/estargz.md):
    /// tar headers go in the current gzip member, every chunk of file data starts a
    /// member of its own, the TOC is the last tar entry in a member of its own, then the
    /// 51-byte footer. (xattrs go in the TOC only; a tar reader sees none.)
    struct Writer {
        out: Vec<u8>,
        member: Vec<u8>,
        toc: Vec<serde_json::Value>,
        chunk_size: usize,
    }

    impl Writer {
        fn new(chunk_size: usize) -> Writer {
            Writer { out: Vec::new(), member: Vec::new(), toc: Vec::new(), chunk_size }
        }

        fn close_member(&mut self) {
            if !self.member.is_empty() {
                let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(&std::mem::take(&mut self.member)).unwrap();
                self.out.extend(gz.finish().unwrap());
            }
        }

        fn header(&mut self, name: &str, kind: tar::EntryType, size: u64, link: &str, mode: u32) {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).unwrap();
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(mode);
            h.set_mtime(1_700_000_000);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            self.member.extend_from_slice(h.as_bytes());
        }

        fn add(&mut self, name: &str, kind: &str, data: &[u8], link: &str, extra: serde_json::Value) {
            let (tk, mode) = match kind {
                "dir" => (tar::EntryType::Directory, 0o755),
                "reg" => (tar::EntryType::Regular, 0o644),
                "symlink" => (tar::EntryType::Symlink, 0o777),
                "hardlink" => (tar::EntryType::Link, 0o644),
                "char" => (tar::EntryType::Char, 0o600),
                _ => unreachable!(),
            };
            self.header(name, tk, data.len() as u64, link, mode);
            let mut entry = json!({"name": name, "type": kind, "mode": mode, "uid": 1, "gid": 2,
                "modtime": "2023-11-14T22:13:20Z", "linkName": link});
            for (k, v) in extra.as_object().unwrap() {
                entry[k] = v.clone();
            }
            if data.is_empty() {
                self.toc.push(entry);
                return;
            }
            entry["size"] = json!(data.len());
            for (i, chunk) in data.chunks(self.chunk_size).enumerate() {
                self.close_member();
                let mut e = if i == 0 { entry.clone() } else { json!({"name": name, "type": "chunk"}) };
                e["offset"] = json!(self.out.len());
                e["chunkOffset"] = json!(i * self.chunk_size);
                e["chunkSize"] = json!(chunk.len());
                e["chunkDigest"] = json!(Digest::of(chunk).as_str());
                self.toc.push(e);
                self.member.extend_from_slice(chunk);
            }
            self.member.resize(self.member.len().next_multiple_of(512), 0);
        }

        /// The blob and the digest of its TOC.
        fn finish(mut self) -> (Vec<u8>, Digest) {
            self.close_member();
            let toc_offset = self.out.len() as u64;
            let json = serde_json::to_vec(&json!({"version": 1, "entries": self.toc})).unwrap();
            self.header("stargz.index.json", tar::EntryType::Regular, json.len() as u64, "", 0o644);
            self.member.extend_from_slice(&json);
            self.member.resize(self.member.len().next_multiple_of(512) + 1024, 0);
            self.close_member();
            let mut footer = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0];
            footer.extend(format!("{toc_offset:016x}STARGZ").bytes());
            footer.extend([1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
            self.out.extend(footer);
            (self.out, Digest::of(&json))
        }
    }

    fn big() -> Vec<u8> {
        (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect()
    }

    fn sample() -> (Vec<u8>, Digest) {
        let mut w = Writer::new(16 << 10);
        w.add("./", "dir", b"", "", json!({}));
        w.add("etc/", "dir", b"", "", json!({"xattrs": {"user.k": "dmFsdWU="}}));
        w.add("etc/hello", "reg", b"hello\n", "", json!({}));
        w.add("etc/big", "reg", &big(), "", json!({}));
        w.add("etc/empty", "reg", b"", "", json!({}));
        w.add("etc/link", "symlink", b"", "hello", json!({}));
        w.add("etc/hard", "hardlink", b"", "etc/hello", json!({}));
        w.add("dev/null", "char", b"", "", json!({"devMajor": 1, "devMinor": 3}));
        w.add("var/.wh.gone", "reg", b"", "", json!({}));
        w.add("opt/.wh..wh..opq", "reg", b"", "", json!({}));
        w.finish()
    }

    fn layout_of(blob: &[u8], digest: &Digest) -> Result<Layout> {
        open(blob.len() as u64, digest, |a, b| Ok(blob[a as usize..b as usize].to_vec()))
    }

    #[test]
    fn the_blob_is_plain_gzip_of_a_tar() {
        let (blob, _) = sample();
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(MultiGzDecoder::new(&blob[..]));
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if name == "etc/big" {
                assert_eq!(data, big());
            }
            names.push(name);
        }
        assert_eq!(names.first().map(String::as_str), Some("./"));
        assert_eq!(names.last().map(String::as_str), Some("stargz.index.json"));
        assert!(names.contains(&"etc/big".to_string()));
    }

    #[test]
    fn the_toc_makes_the_layer_and_chunks_decode_checked() {
        let (blob, digest) = sample();
        let l = layout_of(&blob, &digest).unwrap();
        let c = &l.contents;
        let find = |p: &str| c.entries.iter().position(|e| e.path == p.as_bytes()).unwrap();
        let paths: Vec<_> = c.entries.iter().map(|e| String::from_utf8_lossy(&e.path).into_owned()).collect();
        assert_eq!(paths, ["", "etc", "etc/hello", "etc/big", "etc/empty", "etc/link", "etc/hard", "dev/null"]);
        assert_eq!(c.whiteouts, [b"var/gone".to_vec()]);
        assert_eq!(c.opaque, [b"opt".to_vec()]);
        let etc = &c.entries[find("etc")];
        assert_eq!((etc.mode, etc.uid, etc.gid, etc.mtime), (0o755, 1, 2, 1_700_000_000));
        assert_eq!(etc.xattrs, [(b"user.k".to_vec(), b"value".to_vec())]);
        assert_eq!(c.entries[find("etc/link")].link.as_deref(), Some(&b"hello"[..]));
        assert_eq!(c.entries[find("etc/hard")].link_entry, Some(find("etc/hello") as u32));
        assert_eq!(c.entries[find("dev/null")].rdev, (1, 3));
        let big_chunks = &l.files[c.entries[find("etc/big")].offset as usize];
        assert_eq!(big_chunks.len(), 3, "40000 bytes in chunks of 16 KiB");
        let mut data = Vec::new();
        for ch in big_chunks {
            data.extend(decode_chunk(&blob[ch.start as usize..ch.end as usize], ch).unwrap());
        }
        assert_eq!(data, big());
        assert_eq!(l.files.len(), 2, "hello and big have data, empty has none");
        // Bytes of another chunk under this chunk's digest: refused, not served.
        let (a, b) = (&big_chunks[0], &big_chunks[1]);
        let err = decode_chunk(&blob[b.start as usize..b.end as usize], a).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_toc_that_does_not_match_its_annotation_is_refused() {
        let (blob, _) = sample();
        let err = layout_of(&blob, &Digest::of(b"another TOC")).unwrap_err();
        assert!(format!("{err:#}").contains("layer annotation"), "{err:#}");
    }

    /// A TOC may claim a chunk of any size: one over the limit is refused when the
    /// layer is opened, and a chunk's claimed size is never allocated before its bytes
    /// decode to it.
    #[test]
    fn a_chunk_too_large_to_decode_is_refused() {
        let digest = format!("sha256:{}", "0".repeat(64));
        for chunk_size in [1u64 << 40, 0] {
            let toc: Toc = serde_json::from_value(json!({"version": 1, "entries": [{"name": "huge", "type": "reg",
                "size": 1u64 << 40, "offset": 10, "chunkSize": chunk_size, "chunkDigest": digest}]}))
            .unwrap();
            let err = Layout::new(&toc, 1000).unwrap_err();
            assert!(format!("{err:#}").contains("over the limit"), "{err:#}");
        }
        let (blob, digest) = sample();
        let l = layout_of(&blob, &digest).unwrap();
        let hello = l.files[0][0].clone();
        let claims = Chunk { size: 1 << 40, ..hello.clone() };
        let err = decode_chunk(&blob[hello.start as usize..hello.end as usize], &claims).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_plain_gzip_layer_has_no_footer() {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&big()).unwrap();
        let blob = gz.finish().unwrap();
        let err = toc_offset(&blob[blob.len() - FOOTER_LEN as usize..]).unwrap_err();
        assert!(err.to_string().contains("no eStargz footer"), "{err}");
    }
}
