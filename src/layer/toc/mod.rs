//! A layer's table of contents (TOC) as a file read where it lies: mapped, never decoded
//! whole, so opening one costs the same at a thousand entries and at a million, its
//! pages are shared through the page cache by every mount that uses the layer, and a
//! mount's private memory does not grow with the layer.
//!
//! Layout (little-endian throughout):
//! - the header: magic `IMGFSTOC`, format version, its own length, the layer digest,
//!   counts, how the data is reached (plain, checkpoints, re-encoded), where each
//!   section lies, the CRC-32s of the page-checksum section (per 4 KiB of it), and its
//!   own CRC-32.
//! - records: one fixed 48-byte record per path of the layer ("node"), in breadth-first
//!   order with the children of each directory contiguous and sorted by name bytes, so
//!   a directory's children are the range `first_child(d)..first_child(d + 1)` and a
//!   child is found by binary search; then one record per tar entry that a later entry
//!   for the same path replaced ("orphans": a hard link read before the replacement
//!   still resolves to them). A node with no entry is an implicit directory (a parent
//!   the tar left out) or, not visible, a carrier of whiteouts, opaque markers or hard
//!   links from lower layers below it.
//! - names: each node's own name (one path component), in node order.
//! - strings: symlink targets, hard-link target paths and xattrs.
//! - xattrs `(record, length, offset)`, links-to `(target, link)` and lower-links
//!   `(node, link)` tables, sorted, searched by binary search.
//! - fences: for a directory of more than `FENCE_EVERY` children, every
//!   `FENCE_EVERY`-th child's index and the first bytes of its name, so a lookup in a
//!   big directory touches one or two pages of fences and one block of records instead
//!   of a page per probe.
//! - checkpoints (fixed records) and their windows, and the CRC-32 of each 64 KiB block
//!   of the stored data file (`block_sums::BlockSums`): read when a read needs them.
//! - page checksums: a CRC-32 of each 4 KiB page of the file (of its bytes between the
//!   header and the checksums), checked the first time the page is read, so damage
//!   anywhere gives an error, never a wrong answer or a panic.
//!
//! Every access is bounds-checked against the file and its sections, every name against
//! what `build` would make, and every record against the rules the tree relies on (a
//! hard link resolves to an earlier entry, a child range lies after its directory), so
//! a damaged or hostile file answers with `layer::Error::Damaged`.
//!
//! The file is written once (`write`, through a temp file and a rename: `Store::
//! write_derived`) and never changed in place; the store removes it only by unlinking,
//! which leaves a mapping valid.

mod sort;
pub mod write;

use super::checkpoints::{self, Format};
use super::names::{self, NAME_MAX};
use super::{Error, Kind, Result};
use memmap2::Mmap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use sort::scratch_file;
pub use write::{TocParts, TocWriter};

const MAGIC: &[u8; 8] = b"IMGFSTOC";
/// A file of another version is rebuilt from the blob, never misread.
const VERSION: u32 = 1;
pub const PAGE: u64 = 4096;
const RECORD: u64 = 48;
/// A directory with more children than this has fences (see the module note).
const FENCE_EVERY: u32 = 64;
const FENCE: u64 = 24;
const FENCE_PREFIX: usize = 16;
const XATTR_ITEM: u64 = 16;
const PAIR: u64 = 8;
const POINT: u64 = 32;
/// Longest string (a symlink target, a hard link's path, one entry's xattrs) a record
/// may point at.
const STRING_MAX: u64 = 16 << 20;

/// Record flags.
const VISIBLE: u8 = 1;
const WHITEOUT: u8 = 2;
const OPAQUE: u8 = 4;
const XATTRS: u8 = 8;
const LINKED: u8 = 16;
const LOWER_LINKS: u8 = 32;
const LINKS_TO: u8 = 64;
/// `seq` of a record with no entry.
const NO_SEQ: u32 = u32::MAX;

/// The sections after the header, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Records,
    Names,
    Strings,
    Xattrs,
    LinksTo,
    LowerLinks,
    Fences,
    Points,
    Windows,
    Sums,
    PageCrcs,
}
const SECTIONS: usize = 11;

/// How a layer's uncompressed bytes are reached, as the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// The blob is an uncompressed tar.
    Plain,
    /// The blob is compressed; decoding starts at the checkpoint nearest a read.
    Checkpoints,
    /// The blob can't be entered midway (a zstd layer in one big frame): its re-encoded
    /// copy is, through these checkpoints.
    Reframed,
}

/// What the checkpoint section holds, from the header.
#[derive(Clone, Copy, Debug)]
pub struct PointsInfo {
    pub format: Format,
    pub span: u64,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub count: u64,
}

/// What a path is in this layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// The layer has an entry for the path, of this kind.
    Entry(Kind),
    /// No entry, but entries below it: a directory with no attributes of its own.
    ImplicitDir,
    Absent,
}

/// One record, decoded: a node (a path of the layer) or an orphan entry.
#[derive(Clone, Copy, Debug)]
pub struct Rec {
    pub id: u32,
    name_off: u32,
    name_len: u8,
    flags: u8,
    kind: Option<Kind>,
    pub mode: u32,
    /// A node's first child; an orphan's node.
    link: u32,
    seq: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    a: u64,
    b: u64,
}

impl Rec {
    /// The entry's kind; `None` for a node with no entry.
    pub fn kind(&self) -> Option<Kind> {
        self.kind
    }

    pub fn presence(&self) -> Presence {
        match self.kind {
            Some(k) => Presence::Entry(k),
            None if self.flags & VISIBLE != 0 => Presence::ImplicitDir,
            None => Presence::Absent,
        }
    }

    /// Is the path whited out (for lower layers) by this layer?
    pub fn is_whiteout(&self) -> bool {
        self.flags & WHITEOUT != 0
    }

    /// Does this layer hide the lower children of this directory?
    pub fn is_opaque(&self) -> bool {
        self.flags & OPAQUE != 0
    }

    /// Is the entry part of a hard-link group formed within this layer?
    pub fn is_linked(&self) -> bool {
        self.flags & LINKED != 0
    }

    /// Do hard links of this layer point at this path in a lower layer?
    pub fn has_lower_links(&self) -> bool {
        self.flags & LOWER_LINKS != 0
    }

    /// A file's size (0 for other kinds).
    pub fn size(&self) -> u64 {
        if self.kind == Some(Kind::File) {
            self.b
        } else {
            0
        }
    }

    /// Where a file's data starts in the uncompressed tar (for an eStargz layer, its
    /// place in the layer's file table).
    pub fn offset(&self) -> u64 {
        if self.kind == Some(Kind::File) {
            self.a
        } else {
            0
        }
    }

    pub fn rdev(&self) -> (u32, u32) {
        match self.kind {
            Some(Kind::Char | Kind::Block) => ((self.b >> 32) as u32, self.b as u32),
            _ => (0, 0),
        }
    }

    /// For a hard link: the entry of this layer holding its data, if it resolved to one
    /// when read (`None`: its target lies in a lower layer).
    pub fn link_entry(&self) -> Option<u32> {
        match self.kind {
            Some(Kind::Hardlink) => ((self.b >> 32) as u32).checked_sub(1),
            _ => None,
        }
    }

    /// The length of a symlink's target or a hard link's path.
    fn link_len(&self) -> Option<u64> {
        match self.kind {
            Some(Kind::Symlink) => Some(self.b),
            Some(Kind::Hardlink) => Some(self.b & 0xffff_ffff),
            _ => None,
        }
    }
}

/// One record as it is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RawRecord {
    name_off: u32,
    name_len: u8,
    flags: u8,
    /// kind << 12 | mode.
    kind_mode: u16,
    link: u32,
    seq: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    a: u64,
    b: u64,
}

impl RawRecord {
    fn encode(&self) -> [u8; RECORD as usize] {
        let mut r = [0u8; RECORD as usize];
        r[0..4].copy_from_slice(&self.name_off.to_le_bytes());
        r[4] = self.name_len;
        r[5] = self.flags;
        r[6..8].copy_from_slice(&self.kind_mode.to_le_bytes());
        r[8..12].copy_from_slice(&self.link.to_le_bytes());
        r[12..16].copy_from_slice(&self.seq.to_le_bytes());
        r[16..20].copy_from_slice(&self.uid.to_le_bytes());
        r[20..24].copy_from_slice(&self.gid.to_le_bytes());
        r[24..32].copy_from_slice(&self.mtime.to_le_bytes());
        r[32..40].copy_from_slice(&self.a.to_le_bytes());
        r[40..48].copy_from_slice(&self.b.to_le_bytes());
        r
    }

    fn decode(r: &[u8]) -> RawRecord {
        RawRecord {
            name_off: le32(&r[0..4]),
            name_len: r[4],
            flags: r[5],
            kind_mode: u16::from_le_bytes([r[6], r[7]]),
            link: le32(&r[8..12]),
            seq: le32(&r[12..16]),
            uid: le32(&r[16..20]),
            gid: le32(&r[20..24]),
            mtime: le64(&r[24..32]) as i64,
            a: le64(&r[32..40]),
            b: le64(&r[40..48]),
        }
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

fn kind_code(k: Option<Kind>) -> u16 {
    match k {
        None => 0,
        Some(Kind::File) => 1,
        Some(Kind::Dir) => 2,
        Some(Kind::Symlink) => 3,
        Some(Kind::Hardlink) => 4,
        Some(Kind::Char) => 5,
        Some(Kind::Block) => 6,
        Some(Kind::Fifo) => 7,
    }
}

fn kind_of(code: u16) -> Option<Option<Kind>> {
    Some(match code {
        0 => None,
        1 => Some(Kind::File),
        2 => Some(Kind::Dir),
        3 => Some(Kind::Symlink),
        4 => Some(Kind::Hardlink),
        5 => Some(Kind::Char),
        6 => Some(Kind::Block),
        7 => Some(Kind::Fifo),
        _ => return None,
    })
}

/// The header, as `write` makes it and `open` reads it back: magic, version and its
/// own length (u32), then varints (the digest's length and bytes, the counts, the data
/// access, each section's length), the page checksums' directory (u32 each) and a
/// CRC-32 of all before it. Sections follow it in order, with no gaps.
#[derive(Clone, Debug, Default)]
struct Header {
    digest: String,
    nodes: u32,
    orphans: u32,
    access: u8,
    format: u8,
    span: u64,
    compressed_size: u64,
    uncompressed_size: u64,
    points: u64,
    sums_len: u64,
    sums: u64,
    /// (offset, length) of each section; offsets follow from the lengths.
    sections: [(u64, u64); SECTIONS],
    /// CRC-32 of each 4 KiB of the page-checksum section.
    crc_dir: Vec<u32>,
}

/// A TOC of more than about 4 GiB is refused (no real layer comes near): each entry of
/// the page checksums' directory covers 1024 pages.
pub const MAX_CRC_DIR: usize = 1024;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(p: &[u8], at: &mut usize) -> std::result::Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *p.get(*at).ok_or("its header is cut short")?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("its header holds a bad number".into())
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(256);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&[0; 4]); // its length, below
        put_varint(&mut h, self.digest.len() as u64);
        h.extend_from_slice(self.digest.as_bytes());
        for v in [u64::from(self.nodes), u64::from(self.orphans), u64::from(self.access), u64::from(self.format)] {
            put_varint(&mut h, v);
        }
        for v in [self.span, self.compressed_size, self.uncompressed_size, self.points, self.sums_len, self.sums] {
            put_varint(&mut h, v);
        }
        for (_, len) in &self.sections[..Section::PageCrcs as usize] {
            put_varint(&mut h, *len);
        }
        put_varint(&mut h, self.crc_dir.len() as u64);
        for c in &self.crc_dir {
            h.extend_from_slice(&c.to_le_bytes());
        }
        let len = (h.len() + 4) as u32;
        h[12..16].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        h
    }

    fn len(&self) -> usize {
        self.encode().len()
    }

    /// The header at the start of `p`, checked; `Err` with what is wrong.
    fn decode(p: &[u8]) -> std::result::Result<Header, String> {
        Self::decode_with(p, true)
    }

    fn decode_with(p: &[u8], check_crc: bool) -> std::result::Result<Header, String> {
        if p.len() < 8 || &p[..8] != MAGIC {
            return Err("it is not a TOC file".into());
        }
        if p.len() < 20 {
            return Err("it is shorter than its header".into());
        }
        if le32(&p[8..]) != VERSION {
            return Err(format!("it is of format version {}", le32(&p[8..])));
        }
        let len = le32(&p[12..]) as usize;
        if len < 20 || len > p.len() || len > 16 + 128 + 30 * 10 + 4 * MAX_CRC_DIR + 4 {
            return Err("its header is cut short or of the wrong length".into());
        }
        if check_crc && le32(&p[len - 4..]) != crc32fast::hash(&p[..len - 4]) {
            return Err("its header fails its checksum".into());
        }
        let p = &p[..len - 4];
        let mut at = 16;
        let dl = get_varint(p, &mut at)? as usize;
        let digest = p.get(at..at + dl).ok_or("its digest is cut short")?;
        let digest = String::from_utf8(digest.to_vec()).map_err(|_| "its digest is not text")?;
        at += dl;
        let mut v = || get_varint(p, &mut at);
        let small = |v: u64| u32::try_from(v).map_err(|_| "a count in its header is out of range".to_string());
        let (nodes, orphans) = (small(v()?)?, small(v()?)?);
        let (access, format) = (v()?.min(255) as u8, v()?.min(255) as u8);
        let (span, compressed_size, uncompressed_size, points, sums_len, sums) = (v()?, v()?, v()?, v()?, v()?, v()?);
        let mut sections = [(0, 0); SECTIONS];
        let mut off = len as u64;
        for s in sections[..Section::PageCrcs as usize].iter_mut() {
            let l = v()?;
            *s = (off, l);
            off = off.checked_add(l).ok_or("its sections overflow")?;
        }
        sections[Section::PageCrcs as usize] = (off, off.div_ceil(PAGE) * 4);
        let n = v()? as usize;
        if n > MAX_CRC_DIR || at + 4 * n != p.len() {
            return Err("its page checksum directory does not fit its header".into());
        }
        let crc_dir = (0..n).map(|i| le32(&p[at + 4 * i..])).collect();
        Ok(Header {
            digest,
            nodes,
            orphans,
            access,
            format,
            span,
            compressed_size,
            uncompressed_size,
            points,
            sums_len,
            sums,
            sections,
            crc_dir,
        })
    }
}

/// Where the pages of a TOC read from elsewhere come from (a published index, fetched
/// by Range): each page checked against what vouches for it before it is handed over.
pub trait PageSource: Send + Sync {
    /// Bytes per page; the last page may be short.
    fn page_size(&self) -> u64;
    /// Page `i`'s bytes, checked. May take as long as a network round trip: never
    /// called under a lock others need.
    fn fetch(&self, i: u64) -> std::io::Result<Vec<u8>>;
}

/// A TOC whose bytes arrive page by page into a scratch file: which pages are there.
struct Remote {
    source: Box<dyn PageSource>,
    file: File,
    page: u64,
    len: u64,
    present: Box<[AtomicU64]>,
}

impl Remote {
    fn fetch(&self, i: u64) -> Result<()> {
        if Toc::is_checked(&self.present, i) {
            return Ok(());
        }
        let want = (self.len - (i * self.page).min(self.len)).min(self.page);
        if want == 0 {
            return Err(Error::Invalid(format!("page {i} lies past the end of a layer TOC")));
        }
        let bytes = self.source.fetch(i)?;
        if bytes.len() as u64 != want {
            return Err(Error::Invalid(format!("page {i} of a layer TOC came as {} bytes, not {want}", bytes.len())));
        }
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&bytes, i * self.page)?;
        Toc::set_checked(&self.present, i);
        Ok(())
    }
}

/// A layer's TOC, opened in place.
pub struct Toc {
    path: PathBuf,
    map: Mmap,
    nodes: u32,
    orphans: u32,
    access: AccessKind,
    points: Option<PointsInfo>,
    sums_len: u64,
    sums: u64,
    sections: [(u64, u64); SECTIONS],
    crc_dir: Vec<u32>,
    /// Where the bytes the page checksums cover start (the header's end).
    data_start: u64,
    /// One bit per page: checked against its CRC already; one per 4 KiB of checksums.
    checked: Box<[AtomicU64]>,
    checked_crcs: Box<[AtomicU64]>,
    /// For a TOC read from elsewhere: where its pages come from. Its pages are checked
    /// by their source (SHA-256), not by the page checksums.
    remote: Option<Remote>,
}

impl std::fmt::Debug for Toc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Toc({})", self.path.display())
    }
}

impl Toc {
    /// Is there a TOC of layer `digest` in the current format at `path`? Reads the
    /// header only: what a pull needs to know to leave a stored layer alone.
    pub fn is_current(path: &Path, digest: &str) -> bool {
        Self::open(path, digest).is_ok()
    }

    /// Open the TOC of layer `digest` at `path`: the header is read and checked, nothing
    /// else. An error if the file is of another version, for another layer, or damaged.
    pub fn open(path: &Path, digest: &str) -> Result<Toc> {
        let file = File::open(path).map_err(|e| Error::Context {
            what: format!("cannot open layer TOC {}", path.display()),
            source: Box::new(e),
        })?;
        Self::open_file(&file, path, digest)
    }

    /// `open` for a file already open: a TOC in the store, or one written to a scratch
    /// file (`from_contents`); `path` names it in errors.
    pub fn open_file(file: &File, path: &Path, digest: &str) -> Result<Toc> {
        Self::open_mapped(file, path, digest, None)
    }

    /// A TOC of `len` bytes read from elsewhere, page by page as reads need them, into a
    /// scratch file in `dir` (its header's pages are fetched now). `path` names it in
    /// errors.
    pub fn open_remote(source: Box<dyn PageSource>, len: u64, dir: &Path, path: &Path, digest: &str) -> Result<Toc> {
        let page = source.page_size();
        if !(512..=1 << 20).contains(&page) {
            return Err(Error::Damaged { path: path.to_path_buf(), source: "its page size is out of range".into() });
        }
        let file = scratch_file(dir)?;
        file.set_len(len)?;
        let pages = len.div_ceil(page);
        let remote =
            Remote { source, file, page, len, present: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect() };
        // The header is at most about 4.6 KiB.
        for i in 0..(5 << 10u64).min(len).div_ceil(page) {
            remote.fetch(i)?;
        }
        let file = remote.file.try_clone()?;
        Self::open_mapped(&file, path, digest, Some(remote))
    }

    fn open_mapped(file: &File, path: &Path, digest: &str, remote: Option<Remote>) -> Result<Toc> {
        // SAFETY: a TOC file is written once, whole (the store's through a temp file and
        // a rename, a scratch one before it is opened here), and never changed in place;
        // the store removes one only by unlinking, which keeps the pages of a mapping,
        // and the store is private to its owner (0700), so no one else truncates it
        // under us. A TOC read from elsewhere is an unlinked scratch file of its final
        // length, each page written once, with bytes its source checked, before any read
        // of it (`Remote::present`). Every read through the map is bounds-checked against
        // the length the header gives, which is checked below to be the file's.
        let map = unsafe { Mmap::map(file) }.map_err(|e| Error::Context {
            what: format!("cannot map layer TOC {}", path.display()),
            source: Box::new(e),
        })?;
        let damaged = |why: String| Error::Damaged { path: path.to_path_buf(), source: why.into() };
        let h = Header::decode(&map).map_err(|why| {
            if why.starts_with("it is of format version") || why == "it is not a TOC file" {
                Error::Invalid(format!("layer TOC {} is of another format version", path.display()))
            } else {
                damaged(why)
            }
        })?;
        if h.digest != digest {
            return Err(Error::Invalid(format!("layer TOC {} is not the TOC of {digest}", path.display())));
        }
        Self::check_header(&h, map.len() as u64).map_err(damaged)?;
        let data_start = h.len() as u64;
        let pages = h.sections[Section::PageCrcs as usize].0.div_ceil(PAGE);
        let access = match h.access {
            0 => AccessKind::Plain,
            1 => AccessKind::Checkpoints,
            2 => AccessKind::Reframed,
            _ => return Err(damaged("its data access kind is unknown".into())),
        };
        let points = match access {
            AccessKind::Plain => None,
            _ => Some(PointsInfo {
                format: Format::from_code(h.format).ok_or_else(|| damaged("its compression is unknown".into()))?,
                span: h.span,
                compressed_size: h.compressed_size,
                uncompressed_size: h.uncompressed_size,
                count: h.points,
            }),
        };
        Ok(Toc {
            path: path.to_path_buf(),
            map,
            nodes: h.nodes,
            orphans: h.orphans,
            access,
            points,
            sums_len: h.sums_len,
            sums: h.sums,
            sections: h.sections,
            checked_crcs: (0..h.crc_dir.len().div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            crc_dir: h.crc_dir,
            data_start,
            checked: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            remote,
        })
    }

    /// Are its pages fetched from elsewhere as reads need them?
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Fetch page `i` of a TOC read from elsewhere (after a read answered
    /// `Error::PageMissing`); with no lock held, as it may wait for the network.
    pub fn fetch_page(&self, i: u64) -> Result<()> {
        match &self.remote {
            Some(r) => r.fetch(i),
            None => Ok(()),
        }
    }

    /// Run `read`, fetching the pages it misses as it goes (for readers that hold no
    /// lock others need: file data, tools).
    pub fn fetching<T>(&self, read: impl Fn(&Toc) -> Result<T>) -> Result<T> {
        loop {
            match read(self) {
                Err(Error::PageMissing { page }) => self.fetch_page(page)?,
                other => return other,
            }
        }
    }

    /// Do the sections fit the file and each other?
    fn check_header(h: &Header, real_len: u64) -> std::result::Result<(), String> {
        let (crc_off, crc_len) = h.sections[Section::PageCrcs as usize];
        if crc_off + crc_len != real_len {
            return Err(format!("it is {real_len} bytes, its header says {}", crc_off + crc_len));
        }
        if crc_len.div_ceil(PAGE) != h.crc_dir.len() as u64 {
            return Err("its page checksums do not cover it".into());
        }
        let len = |s: Section| h.sections[s as usize].1;
        let count = u64::from(h.nodes) + u64::from(h.orphans);
        let fits = h.nodes >= 1
            && count < u64::from(u32::MAX)
            && len(Section::Records) == count * RECORD
            && len(Section::Names) <= u64::from(u32::MAX)
            && len(Section::Xattrs) % XATTR_ITEM == 0
            && len(Section::LinksTo) % PAIR == 0
            && len(Section::LowerLinks) % PAIR == 0
            && len(Section::Fences) % FENCE == 0
            && len(Section::Points) == h.points.saturating_mul(POINT)
            && len(Section::Sums) == h.sums.saturating_mul(4)
            && h.sums == h.sums_len.div_ceil(super::block_sums::BlockSums::BLOCK);
        if !fits {
            return Err("its sections do not agree with its counts".into());
        }
        Ok(())
    }

    fn damaged(&self, why: impl Into<String>) -> Error {
        Error::Damaged { path: self.path.clone(), source: why.into().into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes `off..off + len` of the file, every page they touch checked (or, for a TOC
    /// read from elsewhere, fetched: `Error::PageMissing` for the first that is not).
    fn bytes(&self, off: u64, len: u64) -> Result<&[u8]> {
        if let Some(r) = &self.remote {
            let end =
                off.checked_add(len).filter(|&e| e <= r.len).ok_or_else(|| self.damaged("a read past its end"))?;
            if len > 0 {
                for page in off / r.page..end.div_ceil(r.page) {
                    if !Self::is_checked(&r.present, page) {
                        return Err(Error::PageMissing { page });
                    }
                }
            }
            return Ok(&self.map[off as usize..end as usize]);
        }
        let data_end = self.sections[Section::PageCrcs as usize].0;
        let end = off
            .checked_add(len)
            .filter(|&e| e <= data_end && off >= self.data_start)
            .ok_or_else(|| self.damaged("a read past its end"))?;
        if len > 0 {
            for page in off / PAGE..end.div_ceil(PAGE) {
                self.check_page(page)?;
            }
        }
        Ok(&self.map[off as usize..end as usize])
    }

    fn is_checked(bits: &[AtomicU64], i: u64) -> bool {
        bits[(i / 64) as usize].load(Ordering::Relaxed) & (1 << (i % 64)) != 0
    }

    fn set_checked(bits: &[AtomicU64], i: u64) {
        bits[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::Relaxed);
    }

    /// Check page `page` (its bytes past the header and before the checksums) against
    /// its CRC, once, and the 4 KiB of checksums holding that CRC against the header's
    /// directory, once.
    fn check_page(&self, page: u64) -> Result<()> {
        if Self::is_checked(&self.checked, page) {
            return Ok(());
        }
        let (crc_off, crc_len) = self.sections[Section::PageCrcs as usize];
        let chunk = page * 4 / PAGE;
        if !Self::is_checked(&self.checked_crcs, chunk) {
            let start = crc_off + chunk * PAGE;
            let end = (start + PAGE).min(crc_off + crc_len);
            let want = self.crc_dir.get(chunk as usize);
            if want != Some(&crc32fast::hash(&self.map[start as usize..end as usize])) {
                return Err(self.damaged(format!("its page checksums ({chunk}) fail their checksum")));
            }
            Self::set_checked(&self.checked_crcs, chunk);
        }
        let want = le32(&self.map[(crc_off + page * 4) as usize..]);
        let end = ((page + 1) * PAGE).min(crc_off) as usize;
        let start = ((page * PAGE).max(self.data_start) as usize).min(end);
        if want != crc32fast::hash(&self.map[start..end]) {
            return Err(self.damaged(format!("its page {page} fails its checksum")));
        }
        Self::set_checked(&self.checked, page);
        Ok(())
    }

    /// Verify every page, then read everything as the tree would (for `imgfs check`,
    /// and the fuzz target): every record, name, child lookup, link and table.
    pub fn verify(&self) -> Result<()> {
        let data_end = self.sections[Section::PageCrcs as usize].0;
        if self.remote.is_none() {
            for page in 0..data_end.div_ceil(PAGE) {
                self.check_page(page)?;
            }
        }
        for id in 0..self.nodes + self.orphans {
            let r = self.record(id)?;
            if id < self.nodes {
                self.name(&r)?;
                for child in self.children(id)? {
                    let name = self.name(&self.record(child)?)?;
                    if self.child(id, name)? != Some(child) {
                        return Err(self.damaged(format!("record {child} is not found under its name")));
                    }
                }
                self.links_to_lower(&r)?;
            }
            self.link(&r)?;
            self.link_target(&r)?;
            self.links_to(&r)?;
            self.xattrs(&r)?;
        }
        for i in 0..self.points.map_or(0, |p| p.count) {
            self.span(i)?;
            self.window(i)?;
        }
        for i in 0..self.sums {
            self.sum(i)?;
        }
        Ok(())
    }

    fn section(&self, s: Section) -> (u64, u64) {
        self.sections[s as usize]
    }

    /// Item `i` of a section of fixed-size items.
    fn item(&self, s: Section, size: u64, i: u64) -> Result<&[u8]> {
        let (off, len) = self.section(s);
        if i.checked_mul(size).is_none_or(|at| at + size > len) {
            return Err(self.damaged(format!("an index past its {s:?} section")));
        }
        self.bytes(off + i * size, size)
    }

    fn items(&self, s: Section, size: u64) -> u64 {
        self.section(s).1 / size
    }

    /// Paths in the layer (nodes) and entries a later one replaced (orphans); records
    /// are numbered nodes first.
    pub fn node_count(&self) -> u32 {
        self.nodes
    }

    pub fn record_count(&self) -> u32 {
        self.nodes + self.orphans
    }

    pub fn root(&self) -> u32 {
        0
    }

    /// Record `id`, checked: a kind it knows, a name within bounds.
    pub fn record(&self, id: u32) -> Result<Rec> {
        let raw = RawRecord::decode(self.item(Section::Records, RECORD, u64::from(id))?);
        let kind =
            kind_of(raw.kind_mode >> 12).ok_or_else(|| self.damaged(format!("record {id} has no known kind")))?;
        let is_node = id < self.nodes;
        if !is_node && (kind.is_none() || raw.link >= self.nodes) {
            return Err(self.damaged(format!("record {id} is an entry of no path")));
        }
        if kind.is_some() != (raw.seq != NO_SEQ) || (kind.is_some() && raw.flags & VISIBLE == 0) {
            return Err(self.damaged(format!("record {id} is inconsistent")));
        }
        Ok(Rec {
            id,
            name_off: raw.name_off,
            name_len: raw.name_len,
            flags: raw.flags,
            kind,
            mode: u32::from(raw.kind_mode & 0o7777),
            link: raw.link,
            seq: raw.seq,
            uid: raw.uid,
            gid: raw.gid,
            mtime: raw.mtime,
            a: raw.a,
            b: raw.b,
        })
    }

    /// A node's own name: one path component, as `build` would have kept it (the
    /// root's is empty).
    pub fn name(&self, r: &Rec) -> Result<&[u8]> {
        let node = if r.id < self.nodes { *r } else { self.record(r.link)? };
        let (off, len) = self.section(Section::Names);
        let (at, n) = (u64::from(node.name_off), u64::from(node.name_len));
        if at + n > len {
            return Err(self.damaged(format!("the name of record {} lies past its names", r.id)));
        }
        let name = self.bytes(off + at, n)?;
        let ok = if node.id == 0 {
            name.is_empty()
        } else {
            !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
        };
        if !ok {
            return Err(self.damaged(format!("record {} has the name {}", node.id, super::show(name))));
        }
        Ok(name)
    }

    /// The first child of node `id` (the end of its children when it has none).
    fn first_child(&self, id: u32) -> Result<u32> {
        if id >= self.nodes {
            return Ok(self.nodes);
        }
        Ok(le32(&self.item(Section::Records, RECORD, u64::from(id))?[8..]))
    }

    /// The children of node `id`, as a range of node ids (sorted by name).
    pub fn children(&self, id: u32) -> Result<Range<u32>> {
        if id >= self.nodes {
            return Err(self.damaged(format!("record {id} is not a path")));
        }
        let (start, end) = (self.first_child(id)?, self.first_child(id + 1)?);
        // Children lie after their parent, so no walk down the tree comes back up.
        if start > end || end > self.nodes || (start < end && start <= id) {
            return Err(self.damaged(format!("the children of record {id} are out of place")));
        }
        Ok(start..end)
    }

    /// The child of node `dir` named `name`, if the layer has that path.
    pub fn child(&self, dir: u32, name: &[u8]) -> Result<Option<u32>> {
        let at = self.lower_bound(dir, name)?;
        if at < self.children(dir)?.end && self.name(&self.record(at)?)? == name {
            return Ok(Some(at));
        }
        Ok(None)
    }

    /// The first child of `dir` whose name is not below `name`.
    pub fn lower_bound(&self, dir: u32, name: &[u8]) -> Result<u32> {
        let range = self.children(dir)?;
        let (mut lo, mut hi) = (range.start, range.end);
        if let Some((first, count)) = self.fences(dir, &range)? {
            use std::cmp::Ordering::*;
            // A fence holds the bytes of its child's name after those it shares with
            // the first child's.
            let first_name = self.name(&self.record(range.start)?)?;
            // The last fence at or below `name` bounds the block it is in.
            let (mut flo, mut fhi) = (0u64, count);
            while flo < fhi {
                let mid = (flo + fhi) / 2;
                let f = self.item(Section::Fences, FENCE, first + mid)?;
                let child = le32(f);
                let (plen, skip) = ((f[4] as usize).min(FENCE_PREFIX), f[5] as usize);
                let shared = first_name.get(..skip).ok_or_else(|| self.damaged("a fence skips too much"))?;
                let prefix = &f[8..8 + plen];
                let head = &name[..skip.min(name.len())];
                let below = match shared.cmp(head) {
                    Less => true,
                    Greater => false,
                    // `name` is a prefix of the shared bytes: shorter, so before the fence.
                    Equal if name.len() < skip => false,
                    Equal => {
                        let rest = &name[skip..];
                        if plen < FENCE_PREFIX || rest.len() < plen {
                            prefix <= rest
                        } else {
                            // A whole prefix is ambiguous when `rest` starts with it: ask
                            // the record.
                            match prefix.cmp(&rest[..plen]) {
                                Less => true,
                                Greater => false,
                                Equal => {
                                    if !range.contains(&child) {
                                        return Err(self.damaged(format!("a fence of record {dir} is out of place")));
                                    }
                                    self.name(&self.record(child)?)? <= name
                                }
                            }
                        }
                    }
                };
                if below {
                    flo = mid + 1;
                } else {
                    fhi = mid;
                }
            }
            // Fence k marks child start + k * FENCE_EVERY.
            let block_start = |k: u64| range.start as u64 + k * u64::from(FENCE_EVERY);
            if flo > 0 {
                lo = (block_start(flo - 1) as u32).max(lo);
            }
            if flo < count {
                hi = (block_start(flo).min(u64::from(hi))) as u32;
            }
            if lo > hi {
                return Err(self.damaged(format!("the fences of record {dir} are out of place")));
            }
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.name(&self.record(mid)?)? < name {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The fences of a directory node with many children: (first item, count).
    fn fences(&self, dir: u32, range: &Range<u32>) -> Result<Option<(u64, u64)>> {
        if range.len() as u64 <= u64::from(FENCE_EVERY) {
            return Ok(None);
        }
        let r = self.record(dir)?;
        if !matches!(r.kind, None | Some(Kind::Dir)) || r.b == 0 {
            return Ok(None);
        }
        let want = (range.len() as u64).div_ceil(u64::from(FENCE_EVERY));
        if r.b != want || r.a.checked_add(r.b).is_none_or(|e| e > self.items(Section::Fences, FENCE)) {
            return Err(self.damaged(format!("the fences of record {dir} do not fit its children")));
        }
        Ok(Some((r.a, r.b)))
    }

    /// The node of a path (components separated by `/`, the root empty), if the layer
    /// has that path.
    pub fn lookup(&self, path: &[u8]) -> Result<Option<u32>> {
        let mut node = 0;
        for name in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            match self.child(node, name)? {
                Some(c) => node = c,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    /// The parent of node `id` (the root is its own).
    pub fn parent(&self, id: u32) -> Result<u32> {
        if id == 0 {
            return Ok(0);
        }
        // The last node whose children start at or before `id`.
        let (mut lo, mut hi) = (0u32, id);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.first_child(mid)? <= id {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if !self.children(lo)?.contains(&id) {
            return Err(self.damaged(format!("record {id} has no parent")));
        }
        Ok(lo)
    }

    /// The full path of node `id`.
    pub fn path_of(&self, id: u32) -> Result<Vec<u8>> {
        let mut names = Vec::new();
        let mut at = id;
        while at != 0 {
            names.push(self.name(&self.record(at)?)?.to_vec());
            at = self.parent(at)?;
        }
        names.reverse();
        Ok(names.join(&b'/'))
    }

    /// Entry `id`'s path, if `id` is what that path finally holds in this layer (not an
    /// entry a later one replaced).
    pub fn final_path(&self, id: u32) -> Result<Option<Vec<u8>>> {
        if id >= self.nodes || self.record(id)?.kind.is_none() {
            return Ok(None);
        }
        self.path_of(id).map(Some)
    }

    /// The path of any entry: its node's.
    pub fn entry_path(&self, r: &Rec) -> Result<Vec<u8>> {
        self.path_of(if r.id < self.nodes { r.id } else { r.link })
    }

    /// A hard link's resolved entry, checked: an earlier entry of this layer that is no
    /// link itself, or a link to a lower layer (a link to a link shares its data entry).
    pub fn link_target(&self, r: &Rec) -> Result<Option<Rec>> {
        let Some(t) = r.link_entry() else { return Ok(None) };
        let target = self.record(t)?;
        if target.seq >= r.seq || target.link_entry().is_some() {
            return Err(self.damaged(format!("hard link record {} resolves to a later entry or a chain", r.id)));
        }
        Ok(Some(target))
    }

    fn string(&self, off: u64, len: u64) -> Result<&[u8]> {
        let (s_off, s_len) = self.section(Section::Strings);
        if len > STRING_MAX || off.checked_add(len).is_none_or(|e| e > s_len) {
            return Err(self.damaged("a string lies past its strings"));
        }
        self.bytes(s_off + off, len)
    }

    /// A symlink's target (as is), or a hard link's target path (normalised).
    pub fn link(&self, r: &Rec) -> Result<Option<&[u8]>> {
        let Some(len) = r.link_len() else { return Ok(None) };
        let s = self.string(r.a, len)?;
        let ok = match r.kind {
            Some(Kind::Hardlink) => names::normalise(s) == s && names::check_name(s).is_ok(),
            _ => s.len() < 4096 && !s.contains(&0),
        };
        if !ok {
            return Err(self.damaged(format!("record {} has the link {}", r.id, super::show(s))));
        }
        Ok(Some(s))
    }

    /// The entry's xattrs, names and values as bytes.
    pub fn xattrs(&self, r: &Rec) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if r.flags & XATTRS == 0 {
            return Ok(Vec::new());
        }
        let n = self.items(Section::Xattrs, XATTR_ITEM);
        let at = self.search(n, |i| Ok(le32(self.item(Section::Xattrs, XATTR_ITEM, i)?)), r.id)?;
        let item = self.item(Section::Xattrs, XATTR_ITEM, at)?;
        if at >= n || le32(item) != r.id {
            return Err(self.damaged(format!("record {} has no xattrs", r.id)));
        }
        let mut s = self.string(le64(&item[8..]), u64::from(le32(&item[4..])))?;
        let mut out = Vec::new();
        let cut = || self.damaged(format!("the xattrs of record {} are cut short", r.id));
        while !s.is_empty() {
            let (kl, vl) = (le32(s.get(..4).ok_or_else(cut)?) as usize, le32(s.get(4..8).ok_or_else(cut)?) as usize);
            let kv = s.get(8..8 + kl + vl).ok_or_else(cut)?;
            out.push((kv[..kl].to_vec(), kv[kl..].to_vec()));
            s = &s[8 + kl + vl..];
        }
        Ok(out)
    }

    /// The first index `i < n` whose key (from `key`) is not below `want`.
    fn search(&self, n: u64, key: impl Fn(u64) -> Result<u32>, want: u32) -> Result<u64> {
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key(mid)? < want {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The second halves of the pairs of a pair table whose first half is `key`.
    fn pairs(&self, s: Section, key: u32) -> Result<Vec<u32>> {
        let n = self.items(s, PAIR);
        let mut i = self.search(n, |i| Ok(le32(self.item(s, PAIR, i)?)), key)?;
        let mut out = Vec::new();
        while i < n {
            let p = self.item(s, PAIR, i)?;
            if le32(p) != key {
                break;
            }
            let v = le32(&p[4..]);
            if v >= self.nodes + self.orphans {
                return Err(self.damaged(format!("a hard link of record {key} is out of range")));
            }
            out.push(v);
            i += 1;
        }
        Ok(out)
    }

    /// The hard links of this layer that resolved to entry `id` when they were read.
    pub fn links_to(&self, r: &Rec) -> Result<Vec<u32>> {
        if r.flags & LINKS_TO == 0 {
            return Ok(Vec::new());
        }
        self.pairs(Section::LinksTo, r.id)
    }

    /// Does any hard link of this layer point at a path of a lower layer?
    pub fn has_lower_links(&self) -> bool {
        self.section(Section::LowerLinks).1 > 0
    }

    /// The hard links of this layer that point at node `r`'s path in a lower layer.
    pub fn links_to_lower(&self, r: &Rec) -> Result<Vec<u32>> {
        if !r.has_lower_links() {
            return Ok(Vec::new());
        }
        self.pairs(Section::LowerLinks, r.id)
    }

    /// The whole table as a list in stream order (for publishing it whole): every
    /// entry, whiteout and opaque directory, hard links resolved as in the TOC.
    pub fn to_contents(&self) -> Result<super::Contents> {
        // Paths in node order: each node's parent comes before it.
        let mut paths: Vec<Vec<u8>> = vec![Vec::new()];
        let mut contents = super::Contents::default();
        for id in 0..self.nodes {
            let r = self.record(id)?;
            for child in self.children(id)? {
                if child as usize != paths.len() {
                    return Err(self.damaged(format!("the children of record {id} are out of place")));
                }
                let name = self.name(&self.record(child)?)?;
                paths.push(super::join(&paths[id as usize], name));
            }
            if r.is_whiteout() {
                contents.whiteouts.push(paths[id as usize].clone());
            }
            if r.is_opaque() {
                contents.opaque.push(paths[id as usize].clone());
            }
        }
        let mut entries: Vec<(u32, u32)> = Vec::new();
        for id in 0..self.nodes + self.orphans {
            let r = self.record(id)?;
            if r.kind().is_some() {
                entries.push((r.seq, id));
            }
        }
        entries.sort_unstable();
        let place: std::collections::HashMap<u32, u32> =
            entries.iter().enumerate().map(|(i, &(_, id))| (id, i as u32)).collect();
        for &(_, id) in &entries {
            let r = self.record(id)?;
            let node = if id < self.nodes { id } else { r.link };
            let kind = r.kind().ok_or_else(|| self.damaged("an entry of no kind"))?;
            contents.entries.push(super::Entry {
                path: paths.get(node as usize).cloned().ok_or_else(|| self.damaged("an entry of no path"))?,
                kind,
                mode: r.mode,
                uid: r.uid,
                gid: r.gid,
                size: r.size(),
                mtime: r.mtime,
                link: self.link(&r)?.map(<[u8]>::to_vec),
                link_entry: self.link_target(&r)?.map(|t| place[&t.id]),
                rdev: r.rdev(),
                xattrs: self.xattrs(&r)?,
                offset: match kind {
                    Kind::File => r.offset(),
                    _ => 0,
                },
            });
        }
        Ok(contents)
    }

    pub fn access(&self) -> AccessKind {
        self.access
    }

    /// The checkpoints' shape, for a compressed layer.
    pub fn points(&self) -> Option<PointsInfo> {
        self.points
    }

    fn point(&self, i: u64) -> Result<(u64, u64, u8, u64, u32)> {
        let p = self.item(Section::Points, POINT, i)?;
        Ok((le64(p), le64(&p[8..]), p[28], le64(&p[16..]), le32(&p[24..])))
    }

    /// The span holding uncompressed offset `at` (`span_count` at or past the end).
    pub fn span_of(&self, at: u64) -> Result<u64> {
        let Some(info) = self.points else { return Ok(0) };
        if at >= info.uncompressed_size {
            return Ok(info.count);
        }
        let (mut lo, mut hi) = (0, info.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.point(mid)?.0 <= at {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).ok_or_else(|| self.damaged("its first checkpoint is not at 0"))
    }

    /// Span `i` as uncompressed `(start, end)` and blob `(start, end)`, checked.
    pub fn span(&self, i: u64) -> Result<((u64, u64), (u64, u64))> {
        let info = self.points.ok_or_else(|| self.damaged("no checkpoints"))?;
        let (u0, c0, bits, _, _) = self.point(i)?;
        let (u1, c1) = if i + 1 < info.count {
            let (u, c, ..) = self.point(i + 1)?;
            (u, c)
        } else {
            (info.uncompressed_size, info.compressed_size)
        };
        let start = c0.checked_sub(u64::from(bits > 0));
        let ok = u0 < u1
            && u1 <= info.uncompressed_size
            && bits < 8
            && start.is_some_and(|s| s <= c1)
            && c1 <= info.compressed_size
            && u1 - u0 <= info.span.saturating_mul(checkpoints::MAX_SPAN_FACTOR * 64);
        if !ok {
            return Err(self.damaged(format!("its checkpoint {i} is out of place")));
        }
        Ok(((u0, u1), (start.unwrap_or(0), c1)))
    }

    /// Checkpoint `i`'s window, as stored (raw deflate; empty at a member start).
    pub fn window(&self, i: u64) -> Result<&[u8]> {
        let (_, _, _, off, len) = self.point(i)?;
        let (w_off, w_len) = self.section(Section::Windows);
        if off.checked_add(u64::from(len)).is_none_or(|e| e > w_len) {
            return Err(self.damaged(format!("the window of checkpoint {i} lies past its windows")));
        }
        self.bytes(w_off + off, u64::from(len))
    }

    /// Decode span `i` from `data`, the blob bytes `span(i).1` names (fetching the pages
    /// of a TOC read from elsewhere as needed: not for callers holding a lock).
    pub fn decode_span(&self, i: u64, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let info = self.points.ok_or_else(|| std::io::Error::other(self.damaged("no checkpoints")))?;
        let (range, _) = self.fetching(|t| t.span(i)).map_err(std::io::Error::other)?;
        let (_, compressed, bits, _, _) = self.fetching(|t| t.point(i)).map_err(std::io::Error::other)?;
        self.fetching(|t| t.window(i).map(drop)).map_err(std::io::Error::other)?;
        let window = self.window(i).map_err(std::io::Error::other)?;
        checkpoints::decode_point(info.format, range, (compressed, bits), window, data)
    }

    /// Every checkpoint, whole (for publishing an index).
    pub fn checkpoints(&self) -> Result<Option<checkpoints::Checkpoints>> {
        let Some(info) = self.points else { return Ok(None) };
        let mut points = Vec::new();
        for i in 0..info.count {
            let (u, c, bits, ..) = self.point(i)?;
            points.push((u, c, bits, self.window(i)?.to_vec()));
        }
        checkpoints::Checkpoints::from_points(
            info.format,
            info.span,
            info.compressed_size,
            info.uncompressed_size,
            points,
        )
        .map(Some)
        .map_err(|e| self.damaged(format!("its checkpoints: {e}")))
    }

    /// The length of the stored data file the block sums cover.
    pub fn sums_len(&self) -> u64 {
        self.sums_len
    }

    /// The CRC-32 of block `i` of the stored data file.
    pub fn sum(&self, i: u64) -> Result<Option<u32>> {
        if i >= self.sums {
            return Ok(None);
        }
        Ok(Some(le32(self.item(Section::Sums, 4, i)?)))
    }

    /// The length of the layer's uncompressed tar: `blob_size` for an uncompressed one.
    pub fn uncompressed_size(&self, blob_size: u64) -> u64 {
        self.points.map_or(blob_size, |p| p.uncompressed_size)
    }
}

/// Recompute the checksums of the TOC in `bytes` (its pages', its page checksums', its
/// header's), whatever it holds, as a hostile writer would: for the fuzz target and
/// tests, which check that the reader's other checks hold on their own. Bytes that do
/// not start like a TOC are left as they are.
pub fn reseal(bytes: &mut [u8]) {
    let Ok(mut h) = Header::decode_with(bytes, false) else { return };
    let head = le32(&bytes[12..]) as u64;
    let (crc_off, crc_len) = h.sections[Section::PageCrcs as usize];
    if crc_off.checked_add(crc_len) != Some(bytes.len() as u64) {
        return;
    }
    for page in 0..crc_off.div_ceil(PAGE) {
        let end = ((page + 1) * PAGE).min(crc_off) as usize;
        let start = ((page * PAGE).max(head) as usize).min(end);
        let crc = crc32fast::hash(&bytes[start..end]);
        let at = (crc_off + page * 4) as usize;
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let table = &bytes[crc_off as usize..];
    let dir: Vec<u32> = table.chunks(PAGE as usize).map(crc32fast::hash).collect();
    if dir.len() != h.crc_dir.len() {
        return;
    }
    h.crc_dir = dir;
    // The directory sits just before the header's own CRC.
    let at = head as usize - 4 - 4 * h.crc_dir.len();
    for (i, c) in h.crc_dir.iter().enumerate() {
        bytes[at + 4 * i..at + 4 * i + 4].copy_from_slice(&c.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes[..head as usize - 4]);
    bytes[head as usize - 4..head as usize].copy_from_slice(&crc.to_le_bytes());
}

/// The TOC of `contents` (entries in stream order, whiteouts, opaque directories),
/// written to a scratch file in `dir` and opened: for a table that comes whole from
/// elsewhere (an eStargz TOC, a published index of the first format), and for tests.
pub fn from_contents(
    contents: &super::Contents,
    dir: &Path,
    digest: &str,
    data: write::DataIndex<'_>,
    sums: &super::block_sums::BlockSums,
) -> Result<Toc> {
    let mut w = TocWriter::new(dir)?;
    for e in &contents.entries {
        w.entry(e)?;
    }
    for p in &contents.whiteouts {
        w.whiteout(p)?;
    }
    for p in &contents.opaque {
        w.opaque(p)?;
    }
    open_parts(w.finish()?, dir, digest, data, sums)
}

/// A TOC assembled from its parts into a scratch file in `dir`, and opened: for one
/// kept only while the process runs.
pub fn open_parts(
    parts: TocParts,
    dir: &Path,
    digest: &str,
    data: write::DataIndex<'_>,
    sums: &super::block_sums::BlockSums,
) -> Result<Toc> {
    let mut file = scratch_file(dir)?;
    write::write(&mut file, digest, parts, data, sums)?;
    Toc::open_file(&file, &dir.join(format!("(TOC of {digest})")), digest)
}

#[cfg(test)]
mod tests;
