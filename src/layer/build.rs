//! Build a layer's table of contents in one pass over its compressed stream, which may
//! still be arriving from the registry: decompress (recording checkpoints where a later
//! read can start decoding), check the uncompressed stream against the config's
//! diff_id, and turn tar entries into `Entry`s with whiteouts and opaque markers taken
//! out.

use super::checkpoints::{Checkpoints, Format, IndexingDecoder};
use super::{join, name_from_bytes, split_parent, Contents, Entry, Kind};
use crate::digest::{Digest, HashingReader};
use crate::image::Compression;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use tar::EntryType;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Uncompressed bytes between two checkpoints: a read decodes at most this much
/// before its first byte. 1 MiB keeps a cold small read at about a millisecond of
/// decoding while the checkpoints (a 32 KiB window each, compressed) stay near 1% of
/// the layer.
pub const SPAN: u64 = 1 << 20;

/// What one pass over a layer yields.
pub struct Built {
    pub contents: Contents,
    /// Where decoding can start, for a compressed layer.
    pub checkpoints: Option<Checkpoints>,
}

/// Index the layer whose (possibly compressed) bytes `blob` yields. When `copy` is
/// given, the uncompressed tar is written to it as it streams (for `reframe`). `diff_id`, when known,
/// must match the uncompressed stream.
pub fn index_layer(
    blob: impl Read,
    compression: Compression,
    diff_id: Option<&Digest>,
    copy: Option<&mut dyn Write>,
) -> Result<Built> {
    let raw = BufReader::with_capacity(1 << 20, blob);
    let (mut decoder, mut plain) = match compression {
        Compression::None => (None, Some(raw)),
        Compression::Gzip => (Some(IndexingDecoder::new(raw, Format::Gzip, SPAN)?), None),
        Compression::Zstd => (Some(IndexingDecoder::new(raw, Format::Zstd, SPAN)?), None),
    };
    let contents = {
        let decompressed: &mut dyn Read = match (decoder.as_mut(), plain.as_mut()) {
            (Some(d), _) => d,
            (None, Some(p)) => p,
            (None, None) => unreachable!("one of the two is set"),
        };
        let mut hashed = HashingReader::new(Tee { inner: decompressed, copy });
        let contents = parse_tar(&mut hashed)?;
        // The tar parser stops at the end-of-archive blocks; the diff_id covers the
        // padding after them too.
        io::copy(&mut hashed, &mut io::sink()).context("layer stream is truncated")?;
        let (actual, _) = hashed.finish();
        if let Some(want) = diff_id {
            if &actual != want {
                bail!("layer content does not match the config's diff_id: expected {want}, got {actual}");
            }
        }
        contents
    };
    let checkpoints = match decoder {
        Some(d) => Some(d.finish()?),
        None => None,
    };
    Ok(Built { contents, checkpoints })
}

/// Copies what is read into `copy` as it passes.
struct Tee<'a, R> {
    inner: R,
    copy: Option<&'a mut dyn Write>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(c) = self.copy.as_mut() {
            c.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// Parse an uncompressed tar stream into entries, whiteouts and opaque markers.
pub fn parse_tar(stream: impl Read) -> Result<Contents> {
    let mut archive = tar::Archive::new(stream);
    let mut contents = Contents::default();
    // Path → latest entry, to resolve hard links "at that point of the stream".
    let mut latest: HashMap<String, u32> = HashMap::new();
    for item in archive.entries().context("layer is not a tar archive")? {
        let mut te = item.context("corrupt tar entry in layer")?;
        let header_type = te.header().entry_type();
        if matches!(
            header_type,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            continue;
        }
        let Some(path) = normalise(&name_from_bytes(&te.path_bytes())) else {
            continue; // an entry escaping the root (`..`) is never shown
        };
        let (parent, name) = split_parent(&path);
        if name == OPAQUE_MARKER {
            contents.opaque.push(parent.to_string());
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if !hidden.is_empty() {
                contents.whiteouts.push(join(parent, hidden));
            }
            continue; // a bare `.wh.` is invalid and ignored
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
            EntryType::GNUSparse => bail!("sparse file {path:?} in layer is not supported"),
            other if other.as_byte() == 0 => Kind::File,
            other => bail!("unsupported tar entry type {:?} for {path:?}", other.as_byte() as char),
        };
        let header = te.header().clone();
        let mut mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mut uid = header.uid().unwrap_or(0) as u32;
        let mut gid = header.gid().unwrap_or(0) as u32;
        let mut mtime = header.mtime().unwrap_or(0) as i64;
        let rdev =
            (header.device_major().ok().flatten().unwrap_or(0), header.device_minor().ok().flatten().unwrap_or(0));
        let link = match kind {
            Kind::Symlink => Some(name_from_bytes(&te.link_name_bytes().unwrap_or_default())),
            Kind::Hardlink => {
                let raw = name_from_bytes(&te.link_name_bytes().unwrap_or_default());
                Some(normalise(&raw).with_context(|| format!("hard link {path:?} points outside the layer"))?)
            }
            _ => None,
        };
        let mut xattrs = Vec::new();
        if let Some(pax) = te.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                let key = ext.key().unwrap_or("");
                let value = ext.value_bytes();
                if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((attr.to_string(), value.to_vec()));
                } else if key == "mtime" {
                    // PAX times may be fractional ("1234.5"); whole seconds are what we serve.
                    if let Some(secs) = std::str::from_utf8(value).ok().and_then(|v| v.split('.').next()?.parse().ok())
                    {
                        mtime = secs;
                    }
                } else if key == "uid" {
                    uid = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(uid);
                } else if key == "gid" {
                    gid = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(gid);
                }
            }
        }
        if kind == Kind::Dir && mode & 0o7777 == 0 && header.mode().is_err() {
            mode = 0o755;
        }
        let link_entry = match kind {
            Kind::Hardlink => link.as_ref().and_then(|t| latest.get(t)).map(|&i| {
                // A link to a link shares the first link's data entry.
                let target = &contents.entries[i as usize];
                target.link_entry.filter(|_| target.kind == Kind::Hardlink).unwrap_or(i)
            }),
            _ => None,
        };
        let size = if kind == Kind::File { te.size() } else { 0 };
        let entry = Entry {
            path: path.clone(),
            kind,
            mode,
            uid,
            gid,
            size,
            mtime,
            link,
            link_entry,
            rdev,
            xattrs,
            offset: te.raw_file_position(),
        };
        let idx = contents.entries.len() as u32;
        latest.insert(path, idx);
        contents.entries.push(entry);
    }
    Ok(contents)
}

/// Normalise a tar path: strip `./` and leading `/`, collapse `//` and `.`; refuse `..`.
pub fn normalise(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_paths() {
        assert_eq!(normalise("./a/b/").as_deref(), Some("a/b"));
        assert_eq!(normalise("/a//b").as_deref(), Some("a/b"));
        assert_eq!(normalise("./").as_deref(), Some(""));
        assert_eq!(normalise("a/../b"), None);
    }
}
