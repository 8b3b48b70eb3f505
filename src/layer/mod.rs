//! One layer as the union needs it: a table of contents (every entry's path, type,
//! attributes and where its bytes sit in the uncompressed tar), the layer's whiteouts
//! and opaque directories, and random access to file data.
//!
//! A layer is parsed once, while its blob streams in and is decompressed (`build`),
//! and the table is kept in the store keyed by the layer digest, so a remount never
//! parses again. File data is read from the blob itself: in place for an uncompressed
//! layer, from the nearest decompression checkpoint for a compressed one (`data`).

/// Refuse what a layer, its TOC or a stored index holds: `Error::Invalid` with the text.
macro_rules! bail {
    ($($why:tt)*) => {
        return Err($crate::layer::Error::Invalid(format!($($why)*)))
    };
}

/// `bail!` unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($why:tt)*) => {
        if !$cond {
            bail!($($why)*);
        }
    };
}

pub mod build;
pub mod checkpoints;
pub mod data;
pub mod estargz;
pub mod ingest;
pub mod reframe;
pub mod remote;
pub mod spans;
pub mod toc;

pub use data::LayerData;

use serde::{Deserialize, Serialize};
use std::collections::{HashMap as StdHashMap, HashSet as StdHashSet};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// What goes wrong reading a layer (its tar, compressed stream or eStargz TOC) or the
/// files kept for it (index, checkpoints). The texts are what users see in `pull`'s
/// error and a mount's log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The layer or a file kept for it holds what imgfs refuses; the text says what.
    #[error("{0}")]
    Invalid(String),
    /// What failed (an entry, a file, a step) over its cause.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored index that can't be read back: rebuilt from the blob by whoever loads it.
    #[error("layer index {} is damaged", .path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("layer content does not match the config's diff_id: expected {want}, got {actual}")]
    DiffId { want: crate::digest::Digest, actual: crate::digest::Digest },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Encode(#[from] postcard::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Name what failed over its cause, as `Error::Context` (or, for a missing value,
/// `Error::Invalid`): the typed counterpart of anyhow's `context` for this module.
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Context { what: what.into(), source: Box::new(e) })
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Context { what: what().into(), source: Box::new(e) })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(what.into()))
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(what().into()))
    }
}

/// foldhash: faster than the default SipHash on short keys such as paths, which is most
/// of what building a layer's tables hashes, and seeded at random per process, so a
/// layer can't be crafted to make every path collide.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = StdHashSet<K, foldhash::fast::RandomState>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A hard link; `Entry::link` names the target path, `Entry::link_entry` the
    /// entry in this layer it resolved to when it was read (if any).
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// One tar entry, as the on-disk index keeps it (postcard: fields in order, no names).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The name's bytes as the tar had them (names need not be UTF-8), normalised:
    /// relative, no `./` or `..`, no trailing `/`; the root is empty.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    /// Symlink target (as is), or the (normalised) path a hard link points at.
    pub link: Option<Vec<u8>>,
    /// For a hard link: the entry of this layer holding the data, if the target was
    /// an earlier entry of the same layer. `None` means the target lies in a lower layer.
    pub link_entry: Option<u32>,
    pub rdev: (u32, u32),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Offset of the data in the uncompressed tar stream.
    pub offset: u64,
}

/// What the tar held, in stream order, before any lookup tables are built.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Contents {
    /// Every entry in tar order, including those a later duplicate replaced (a hard
    /// link read before the duplicate still points at the earlier one).
    pub entries: Vec<Entry>,
    /// Paths named by `.wh.NAME` markers: hidden in lower layers.
    pub whiteouts: Vec<Vec<u8>>,
    /// Directories holding a `.wh..wh..opq` marker: their lower children are hidden.
    pub opaque: Vec<Vec<u8>>,
}

impl Contents {
    /// Does this hold only what `build` makes? Names normalised and servable, hard links
    /// resolved to earlier entries. An index file that passes holds nothing the tree
    /// could trip on.
    pub fn check(&self) -> Result<()> {
        let normal = |p: &[u8]| build::normalise(p) == p && build::check_name(p).is_ok();
        for (i, e) in self.entries.iter().enumerate() {
            if !normal(&e.path) {
                bail!("entry {i} has the name {}", show(&e.path));
            }
            if e.link_entry.is_some_and(|t| t as usize >= i) {
                bail!("hard link {} resolves to a later entry", show(&e.path));
            }
        }
        if let Some(p) = self.whiteouts.iter().chain(&self.opaque).find(|p| !normal(p)) {
            bail!("a whiteout names {}", show(p));
        }
        Ok(())
    }
}

/// The table of contents of one layer with the lookup tables the union needs.
pub struct LayerIndex {
    pub contents: Contents,
    /// Path → index of the entry that finally holds that path in this layer.
    by_path: HashMap<Vec<u8>, u32>,
    /// Directory path → names of its children in this layer (entries and implicit dirs).
    children: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// Directories that only exist as parents of entries, with no entry of their own.
    implicit: HashSet<Vec<u8>>,
    whiteouts: HashSet<Vec<u8>>,
    opaque: HashSet<Vec<u8>>,
    /// Paths in lower layers that hard links of this layer point at → those links.
    lower_links: HashMap<Vec<u8>, Vec<u32>>,
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
    pub fn new(mut contents: Contents) -> LayerIndex {
        // A hard link resolves to an earlier entry (`build` makes it so); anything else,
        // from contents not made by `build`, would send the tree round in circles.
        for (i, e) in contents.entries.iter_mut().enumerate() {
            if e.link_entry.is_some_and(|t| t as usize >= i) {
                e.link_entry = None;
            }
        }
        let mut by_path = HashMap::default();
        for (i, e) in contents.entries.iter().enumerate() {
            by_path.insert(e.path.clone(), i as u32);
        }
        let mut children: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::default();
        let mut seen: HashSet<&[u8]> = HashSet::default();
        let mut implicit = HashSet::default();
        for path in by_path.keys() {
            // Register the path with its parent and any missing ancestors.
            let mut p: &[u8] = path;
            while !p.is_empty() && seen.insert(p) {
                let (parent, name) = split_parent(p);
                // get_mut first: most parents are there already, and a key costs an allocation.
                match children.get_mut(parent) {
                    Some(names) => names.push(name.to_vec()),
                    None => {
                        children.insert(parent.to_vec(), vec![name.to_vec()]);
                    }
                }
                if !by_path.contains_key(parent) && !parent.is_empty() {
                    implicit.insert(parent.to_vec());
                }
                p = parent;
            }
        }
        for names in children.values_mut() {
            names.sort();
        }
        let mut lower_links: HashMap<Vec<u8>, Vec<u32>> = HashMap::default();
        let mut links_to: HashMap<u32, Vec<u32>> = HashMap::default();
        let mut linked = HashSet::default();
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

    pub fn presence(&self, path: &[u8]) -> Presence<'_> {
        if let Some(&i) = self.by_path.get(path) {
            return Presence::Entry(&self.contents.entries[i as usize]);
        }
        if path.is_empty() || self.implicit.contains(path) {
            return Presence::ImplicitDir;
        }
        Presence::Absent
    }

    pub fn entry_index(&self, path: &[u8]) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    pub fn entry(&self, i: u32) -> &Entry {
        &self.contents.entries[i as usize]
    }

    /// Is `path` whited out (for lower layers) by this layer?
    pub fn is_whiteout(&self, path: &[u8]) -> bool {
        self.whiteouts.contains(path)
    }

    /// Does this layer hide the lower children of directory `path`?
    pub fn is_opaque(&self, path: &[u8]) -> bool {
        self.opaque.contains(path)
    }

    /// Names directly below directory `path` in this layer.
    pub fn children(&self, path: &[u8]) -> &[Vec<u8>] {
        self.children.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The hard links of this layer that point at `path` in a lower layer.
    pub fn links_to_lower(&self, path: &[u8]) -> &[u32] {
        self.lower_links.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The hard links of this layer that resolved to entry `i` when they were read.
    pub fn links_to(&self, i: u32) -> &[u32] {
        self.links_to.get(&i).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Entry `i`'s path, if `i` is what that path finally holds in this layer (a later
    /// entry for the same path replaces it).
    pub fn final_path(&self, i: u32) -> Option<Vec<u8>> {
        let path = &self.entry(i).path;
        (self.entry_index(path) == Some(i)).then(|| path.clone())
    }

    /// Is entry `i` part of a hard-link group formed within this layer?
    pub fn is_linked(&self, i: u32) -> bool {
        self.linked.contains(&i)
    }
}

/// What a layer's index file holds: the table of contents and how to reach the data.
pub struct IndexFile {
    pub index: LayerIndex,
    pub access: Access,
    /// Checksums of the stored file the data is read from (the blob, or the
    /// re-encoded copy), checked on every read from disk (see `data`).
    pub sums: data::BlockSums,
}

/// How a layer's uncompressed bytes are read.
pub enum Access {
    /// The blob is an uncompressed tar.
    Plain,
    /// The blob is compressed; decoding starts at the checkpoint nearest a read.
    Checkpoints(checkpoints::Checkpoints),
    /// The blob is compressed in a way that can't be entered midway (a zstd layer in
    /// one big frame): it was re-encoded in frames (`reframe`), read through these
    /// checkpoints.
    Reframed(checkpoints::Checkpoints),
}

/// The index file's first bytes, then a format version: a file of another version
/// is rebuilt from the blob, never misread.
const MAGIC: &[u8; 8] = b"IMGFSIDX";
/// This version's format: entry names are bytes, as the tar header has them (not
/// strings, which a non-UTF-8 name would not survive), and the stored data file has a
/// CRC-32 per 64 KiB block, checked on every read from disk.
const VERSION: u32 = 4;

impl IndexFile {
    /// Write the index of layer `digest`: header, contents (postcard), access.
    pub fn save(&self, digest: &str, out: &mut File) -> Result<()> {
        let mut w = std::io::BufWriter::new(out);
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        write_chunk(&mut w, digest.as_bytes())?;
        write_chunk(&mut w, &postcard::to_stdvec(&self.index.contents)?)?;
        let (kind, checkpoints) = match &self.access {
            Access::Plain => (0u8, None),
            Access::Checkpoints(c) => (1, Some(c)),
            Access::Reframed(c) => (2, Some(c)),
        };
        w.write_all(&[kind])?;
        if let Some(c) = checkpoints {
            let mut bytes = Vec::new();
            c.save(&mut bytes)?;
            write_chunk(&mut w, &bytes)?;
        }
        write_chunk(&mut w, &postcard::to_stdvec(&self.sums)?)?;
        w.flush()?;
        Ok(())
    }

    /// Is there an index of layer `digest` in the current format at `path`? Reads the
    /// header only: what a pull needs to know to leave a stored layer alone.
    pub fn is_current(path: &Path, digest: &str) -> bool {
        Self::open_header(path, digest, 256).is_ok()
    }

    /// Open an index file and check its header (format version, layer digest); the
    /// reader is left at the contents.
    fn open_header(path: &Path, digest: &str, buffer: usize) -> Result<BufReader<File>> {
        let f = File::open(path).with_context(|| format!("cannot open layer index {}", path.display()))?;
        let mut r = BufReader::with_capacity(buffer, f);
        let mut head = [0u8; 12];
        r.read_exact(&mut head).map_err(damaged(path))?;
        if &head[..8] != MAGIC || head[8..] != VERSION.to_le_bytes() {
            bail!("layer index {} is of another format version", path.display());
        }
        if read_chunk(&mut r).map_err(damaged(path))? != digest.as_bytes() {
            bail!("layer index {} is not the index of {digest}", path.display());
        }
        Ok(r)
    }

    /// The length of layer `digest`'s uncompressed tar, read from the head of its index
    /// file (the contents are skipped, not parsed): `Some(blob_size)` for a layer that is
    /// an uncompressed tar itself. An error if there is no current index.
    pub fn uncompressed_size(path: &Path, digest: &str, blob_size: u64) -> Result<u64> {
        use std::io::{Seek, SeekFrom};
        let mut r = Self::open_header(path, digest, 256)?;
        let mut len = [0u8; 8];
        r.read_exact(&mut len).map_err(damaged(path))?;
        let skip = i64::try_from(u64::from_le_bytes(len)).map_err(damaged(path))?;
        r.seek(SeekFrom::Current(skip)).map_err(damaged(path))?;
        let mut kind = [0u8; 1];
        r.read_exact(&mut kind).map_err(damaged(path))?;
        match kind[0] {
            0 => Ok(blob_size),
            1 | 2 => {
                r.read_exact(&mut len).map_err(damaged(path))?;
                checkpoints::read_uncompressed_size(r).map_err(damaged(path))
            }
            _ => Err(damaged(path)("unknown data access kind")),
        }
    }

    /// Read the index of layer `digest`; an error if the file is of another version,
    /// for another layer, or damaged.
    pub fn load(path: &Path, digest: &str) -> Result<IndexFile> {
        let mut r = Self::open_header(path, digest, 1 << 20)?;
        let contents: Contents =
            postcard::from_bytes(&read_chunk(&mut r).map_err(damaged(path))?).map_err(damaged(path))?;
        contents.check().map_err(damaged(path))?;
        let mut kind = [0u8; 1];
        r.read_exact(&mut kind).map_err(damaged(path))?;
        let access = match kind[0] {
            0 => Access::Plain,
            1 | 2 => {
                let c = checkpoints::Checkpoints::load(&read_chunk(&mut r).map_err(damaged(path))?[..])
                    .map_err(damaged(path))?;
                if kind[0] == 1 {
                    Access::Checkpoints(c)
                } else {
                    Access::Reframed(c)
                }
            }
            _ => return Err(damaged(path)("unknown data access kind")),
        };
        let sums = postcard::from_bytes(&read_chunk(&mut r).map_err(damaged(path))?).map_err(damaged(path))?;
        Ok(IndexFile { index: LayerIndex::new(contents), access, sums })
    }
}

/// Make a cause into `Error::Damaged` for the index file at `path`.
fn damaged<E: Into<Box<dyn std::error::Error + Send + Sync>>>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Damaged { path: path.to_path_buf(), source: e.into() }
}

/// The longest chunk an index file may declare: more is damage, not a real layer.
const MAX_CHUNK: u64 = 4 << 30;

fn write_chunk(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(&(bytes.len() as u64).to_le_bytes())?;
    w.write_all(bytes)
}

fn read_chunk(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_CHUNK {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "chunk length out of range"));
    }
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// A name for messages: UTF-8 as is, other bytes as `\xNN`, quoted.
pub fn show(name: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in name.utf8_chunks() {
        out.extend(chunk.valid().escape_debug());
        out.extend(chunk.invalid().iter().map(|b| format!("\\x{b:02x}")));
    }
    out.push('"');
    out
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// Join a directory path and a name in the normalised form.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_files_round_trip_and_refuse_other_layers_versions_and_damage() {
        let tar = {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(5);
            h.set_mode(0o640);
            b.append_data(&mut h, "etc/x", &b"hello"[..]).unwrap();
            b.into_inner().unwrap()
        };
        let contents = build::index_layer(&tar[..], crate::image::Compression::None, None, None).unwrap().contents;
        let sums = data::BlockSums::of(&tar[..]).unwrap();
        let file = IndexFile { index: LayerIndex::new(contents), access: Access::Plain, sums: sums.clone() };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.idx");
        file.save("sha256:aa", &mut File::create(&path).unwrap()).unwrap();

        let back = IndexFile::load(&path, "sha256:aa").unwrap();
        let e = back.index.entry(back.index.entry_index(b"etc/x").unwrap());
        assert_eq!((e.kind, e.mode, e.size), (Kind::File, 0o640, 5));
        assert!(matches!(back.index.presence(b"etc"), Presence::ImplicitDir));
        assert_eq!(back.sums, sums);

        let err = IndexFile::load(&path, "sha256:bb").err().unwrap().to_string();
        assert!(err.contains("not the index of sha256:bb"), "{err}");
        let bytes = std::fs::read(&path).unwrap();
        for cut in [4, 13, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(IndexFile::load(&path, "sha256:aa").is_err(), "cut at {cut}");
        }
        std::fs::write(&path, br#"{"entries":[]}"#).unwrap();
        let err = IndexFile::load(&path, "sha256:aa").err().unwrap().to_string();
        assert!(err.contains("another format version"), "{err}");
    }

    fn entry(path: &[u8], kind: Kind, link_entry: Option<u32>) -> Entry {
        Entry {
            path: path.to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: (kind == Kind::Hardlink).then(|| b"x".to_vec()),
            link_entry,
            rdev: (0, 0),
            xattrs: Vec::new(),
            offset: 0,
        }
    }

    /// An index file holding what `build` never makes is damage: names not normalised or
    /// not servable, a hard link resolved to itself or a later entry.
    #[test]
    fn index_files_with_contents_build_never_makes_are_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.idx");
        let cases = [
            vec![entry(b"a/../b", Kind::File, None)],
            vec![entry(b"/abs", Kind::File, None)],
            vec![entry(b"a//b", Kind::File, None)],
            vec![entry(b"nul\0", Kind::File, None)],
            vec![entry(b"x", Kind::Hardlink, Some(0))],
            vec![entry(b"x", Kind::Hardlink, Some(1)), entry(b"y", Kind::File, None)],
        ];
        for entries in cases {
            let what = format!("{:?}", entries.iter().map(|e| show(&e.path)).collect::<Vec<_>>());
            let contents = Contents { entries, whiteouts: vec![], opaque: vec![] };
            let sums = data::BlockSums::of(&b""[..]).unwrap();
            let file = IndexFile { index: LayerIndex::new(Contents::default()), access: Access::Plain, sums };
            // Save the hand-made contents as they are (LayerIndex::new would mend them).
            let mut index = file.index;
            index.contents = contents;
            let file = IndexFile { index, access: Access::Plain, sums: file.sums };
            file.save("sha256:aa", &mut File::create(&path).unwrap()).unwrap();
            let err = format!("{:#}", IndexFile::load(&path, "sha256:aa").err().expect(&what));
            assert!(err.contains("is damaged"), "{what}: {err}");
        }
        // Handed such contents directly, the index drops a link that would loop.
        let index = LayerIndex::new(Contents {
            entries: vec![entry(b"x", Kind::Hardlink, Some(0))],
            whiteouts: vec![],
            opaque: vec![],
        });
        assert_eq!(index.entry(0).link_entry, None);
    }

    #[test]
    fn names_show_escaped_where_not_utf8() {
        assert_eq!(show("caf\u{e9}/x".as_bytes()), "\"caf\u{e9}/x\"");
        assert_eq!(show(b"caf\xe9\n"), "\"caf\\xe9\\n\"");
    }
}
