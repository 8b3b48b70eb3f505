//! One layer as the union needs it: a table of contents (every entry's path, type,
//! attributes and where its bytes sit in the uncompressed tar), the layer's whiteouts
//! and opaque directories, and random access to file data.
//!
//! A layer is parsed once, while its blob is decompressed (`build`), and the table is
//! kept in the store keyed by the layer digest, so a remount never parses again.

pub mod build;
pub mod checkpoints;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "f")]
    File,
    #[serde(rename = "d")]
    Dir,
    #[serde(rename = "l")]
    Symlink,
    /// A hard link; `Entry::link` names the target path, `Entry::link_entry` the
    /// entry in this layer it resolved to when it was read (if any).
    #[serde(rename = "h")]
    Hardlink,
    #[serde(rename = "c")]
    Char,
    #[serde(rename = "b")]
    Block,
    #[serde(rename = "p")]
    Fifo,
}

/// One tar entry. Short serde names keep the on-disk index small: images with 50k+
/// entries are common.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Normalised: relative, no `./`, no trailing `/`; the root is `""`.
    #[serde(rename = "p")]
    pub path: String,
    #[serde(rename = "k")]
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (07777).
    #[serde(rename = "m")]
    pub mode: u32,
    #[serde(rename = "u")]
    pub uid: u32,
    #[serde(rename = "g")]
    pub gid: u32,
    #[serde(rename = "s", default)]
    pub size: u64,
    #[serde(rename = "t")]
    pub mtime: i64,
    /// Symlink target, or the (normalised) path a hard link points at.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// For a hard link: the entry of this layer holding the data, if the target was
    /// an earlier entry of the same layer. `None` means the target lies in a lower layer.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub link_entry: Option<u32>,
    #[serde(rename = "r", default, skip_serializing_if = "is_zero_pair")]
    pub rdev: (u32, u32),
    #[serde(rename = "x", default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Offset of the data in the uncompressed tar stream.
    #[serde(rename = "o", default)]
    pub offset: u64,
}

fn is_zero_pair(p: &(u32, u32)) -> bool {
    *p == (0, 0)
}

/// What the tar held, in stream order, before any lookup tables are built.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Contents {
    /// Every entry in tar order, including those a later duplicate replaced (a hard
    /// link read before the duplicate still points at the earlier one).
    pub entries: Vec<Entry>,
    /// Paths named by `.wh.NAME` markers: hidden in lower layers.
    pub whiteouts: Vec<String>,
    /// Directories holding a `.wh..wh..opq` marker: their lower children are hidden.
    pub opaque: Vec<String>,
}

/// The table of contents of one layer with the lookup tables the union needs.
pub struct LayerIndex {
    pub contents: Contents,
    /// Path → index of the entry that finally holds that path in this layer.
    by_path: HashMap<String, u32>,
    /// Directory path → names of its children in this layer (entries and implicit dirs).
    children: HashMap<String, Vec<String>>,
    /// Directories that only exist as parents of entries, with no entry of their own.
    implicit: HashSet<String>,
    whiteouts: HashSet<String>,
    opaque: HashSet<String>,
    /// Paths in lower layers that hard links of this layer point at → those links.
    lower_links: HashMap<String, Vec<u32>>,
    /// Entry → the hard links of this layer that resolved to it when they were read.
    links_to: HashMap<u32, Vec<u32>>,
    /// Entries that share data with another entry through a hard link of this layer.
    linked: HashSet<u32>,
}

/// How an upper layer sees a path.
#[derive(Debug, Clone, Copy)]
pub enum Presence<'a> {
    /// The layer has an entry for the path.
    Entry(&'a Entry),
    /// The layer has no entry but has entries below the path: a directory with no
    /// attributes of its own.
    ImplicitDir,
    Absent,
}

impl LayerIndex {
    pub fn new(contents: Contents) -> LayerIndex {
        let mut by_path = HashMap::new();
        for (i, e) in contents.entries.iter().enumerate() {
            by_path.insert(e.path.clone(), i as u32);
        }
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut implicit = HashSet::new();
        for path in by_path.keys() {
            // Register the path with its parent and any missing ancestors.
            let mut p: &str = path;
            while !p.is_empty() && seen.insert(p) {
                let (parent, name) = split_parent(p);
                children.entry(parent.to_string()).or_default().push(name.to_string());
                if !by_path.contains_key(parent) && !parent.is_empty() {
                    implicit.insert(parent.to_string());
                }
                p = parent;
            }
        }
        for names in children.values_mut() {
            names.sort();
        }
        let mut lower_links: HashMap<String, Vec<u32>> = HashMap::new();
        let mut links_to: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut linked = HashSet::new();
        for (i, e) in contents.entries.iter().enumerate() {
            if e.kind == Kind::Hardlink {
                match e.link_entry {
                    Some(t) => {
                        links_to.entry(t).or_default().push(i as u32);
                        linked.insert(t);
                        linked.insert(i as u32);
                    }
                    None => {
                        lower_links.entry(e.link.clone().unwrap_or_default()).or_default().push(i as u32);
                        linked.insert(i as u32);
                    }
                }
            }
        }
        LayerIndex {
            whiteouts: contents.whiteouts.iter().cloned().collect(),
            opaque: contents.opaque.iter().cloned().collect(),
            contents,
            by_path,
            children,
            implicit,
            lower_links,
            links_to,
            linked,
        }
    }

    pub fn presence(&self, path: &str) -> Presence<'_> {
        if let Some(&i) = self.by_path.get(path) {
            return Presence::Entry(&self.contents.entries[i as usize]);
        }
        if path.is_empty() || self.implicit.contains(path) {
            return Presence::ImplicitDir;
        }
        Presence::Absent
    }

    pub fn entry_index(&self, path: &str) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    pub fn entry(&self, i: u32) -> &Entry {
        &self.contents.entries[i as usize]
    }

    /// Is `path` whited out (for lower layers) by this layer?
    pub fn is_whiteout(&self, path: &str) -> bool {
        self.whiteouts.contains(path)
    }

    /// Does this layer hide the lower children of directory `path`?
    pub fn is_opaque(&self, path: &str) -> bool {
        self.opaque.contains(path)
    }

    /// Names directly below directory `path` in this layer.
    pub fn children(&self, path: &str) -> &[String] {
        self.children.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Does a hard link in this layer point at `path` in a lower layer?
    pub fn links_to_lower(&self, path: &str) -> bool {
        self.lower_links.contains_key(path)
    }

    /// The hard links of this layer that point at `path` in a lower layer.
    pub fn links_to_lower_path(&self, path: &str) -> &[u32] {
        self.lower_links.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The hard links of this layer that resolved to entry `i` when they were read.
    pub fn links_to(&self, i: u32) -> &[u32] {
        self.links_to.get(&i).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Entry `i`'s path, if `i` is what that path finally holds in this layer (a later
    /// entry for the same path replaces it).
    pub fn final_path(&self, i: u32) -> Option<String> {
        let path = &self.entry(i).path;
        (self.entry_index(path) == Some(i)).then(|| path.clone())
    }

    /// Is entry `i` part of a hard-link group formed within this layer?
    pub fn is_linked(&self, i: u32) -> bool {
        self.linked.contains(&i)
    }

    pub fn save(&self, out: &mut File) -> Result<()> {
        let mut w = std::io::BufWriter::new(out);
        serde_json::to_writer(&mut w, &self.contents)?;
        std::io::Write::flush(&mut w)?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<LayerIndex> {
        let f = File::open(path).with_context(|| format!("cannot open layer index {}", path.display()))?;
        let contents: Contents = serde_json::from_reader(std::io::BufReader::new(f))
            .with_context(|| format!("layer index {} is corrupt", path.display()))?;
        Ok(LayerIndex::new(contents))
    }
}

/// Tar names are bytes; we keep them as `String`s. Bytes that are not valid UTF-8 are
/// carried as code points U+10FF80..U+10FFFF (the end of a private-use plane, which no
/// real name uses) so that every name round-trips exactly to the bytes the layer had.
pub fn name_from_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(char::from_u32(ESCAPE_BASE + b as u32).expect("valid code point"));
        }
    }
    out
}

/// The inverse of `name_from_bytes`.
pub fn name_to_bytes(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for c in name.chars() {
        let v = c as u32;
        if (ESCAPE_BASE + 0x80..=ESCAPE_BASE + 0xff).contains(&v) {
            out.push((v - ESCAPE_BASE) as u8);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

const ESCAPE_BASE: u32 = 0x10FF00;

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
pub fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Join a directory path and a name in the normalised form.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Random access to the uncompressed tar of a layer: the blob itself for an
/// uncompressed layer, else the uncompressed copy made while indexing.
pub struct LayerData {
    file: File,
}

impl LayerData {
    pub fn open(path: &Path) -> Result<LayerData> {
        Ok(LayerData { file: File::open(path).with_context(|| format!("cannot open layer data {}", path.display()))? })
    }

    /// Read up to `len` bytes of an entry's data starting at `pos` within the entry.
    pub fn read(&self, entry: &Entry, pos: u64, len: u32) -> std::io::Result<Vec<u8>> {
        if pos >= entry.size {
            return Ok(Vec::new());
        }
        let n = (len as u64).min(entry.size - pos) as usize;
        let mut buf = vec![0u8; n];
        self.file.read_exact_at(&mut buf, entry.offset + pos)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_including_invalid_utf8() {
        for bytes in [&b"plain"[..], "héllo wörld ✓".as_bytes(), b"caf\xe9", b"\xff\xfe/x\x80"] {
            let name = name_from_bytes(bytes);
            assert_eq!(name_to_bytes(&name), bytes);
        }
        assert_eq!(name_from_bytes("ü".as_bytes()), "ü");
    }
}
