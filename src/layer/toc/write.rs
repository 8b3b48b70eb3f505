//! Writing a TOC as a layer streams in, with memory that does not grow with its entries.
//!
//! Each tar entry, whiteout and opaque marker becomes an item of an external sort
//! (`sort`), keyed by (depth, path compared component by component, place in the
//! stream), along with "ancestor" items for the directories above it and, for a hard
//! link, a "link" item at its target's path. Merged back, the items come path by path
//! in breadth-first order with every directory's children sorted by name: each path
//! becomes a node record at once, the entries a later duplicate replaced become
//! orphan records, and a hard link's target is resolved there, against the entries
//! the target path held before the link in the stream. The first child of each node
//! and the fences of big directories follow from the next level, read in step with a
//! list of the previous level's paths. Hard-link results are joined to the links'
//! records through two more sorts (by stream place, then by record) and applied when
//! the file is assembled (`write`). Everything between passes lives in scratch files.

use super::sort::{scratch_file, Sorted, Sorter};
use super::*;
use crate::layer::block_sums::BlockSums;
use crate::layer::checkpoints::Checkpoints;
use crate::layer::{Context, Entry};
use std::cmp::Ordering;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// Bytes the item sort holds before it spills a run; the other sorts hold less.
const ITEM_BUDGET: usize = 8 << 20;
const SMALL_BUDGET: usize = 2 << 20;
const BUFFER: usize = 64 << 10;

/// Item kinds, in the order they sort at one path and stream place.
const LINKREF: u8 = 0;
const ENTRY: u8 = 1;
const WHITEOUT_ITEM: u8 = 2;
const OPAQUE_ITEM: u8 = 3;
const ANCESTOR_VISIBLE: u8 = 4;
const ANCESTOR: u8 = 5;

/// An orphan's id before the node count is known: this bit and its place.
const ORPHAN: u32 = 1 << 31;

/// Compare two paths component by component: `/` below every other byte.
fn compare_paths(a: &[u8], b: &[u8]) -> Ordering {
    let key = |b: u8| if b == b'/' { 0u16 } else { u16::from(b) + 1 };
    for (x, y) in a.iter().zip(b) {
        match key(*x).cmp(&key(*y)) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// An item: depth u16, kind u8, seq u32, path length u16, path, then the payload.
fn item_parts(r: &[u8]) -> (u16, u8, u32, &[u8]) {
    let depth = u16::from_le_bytes([r[0], r[1]]);
    let plen = u16::from_le_bytes([r[7], r[8]]) as usize;
    (depth, r[2], le32(&r[3..]), &r[9..9 + plen])
}

fn compare_items(a: &[u8], b: &[u8]) -> Ordering {
    let (da, ka, sa, pa) = item_parts(a);
    let (db, kb, sb, pb) = item_parts(b);
    da.cmp(&db).then_with(|| compare_paths(pa, pb)).then(sa.cmp(&sb)).then(ka.cmp(&kb))
}

fn compare_u32_pairs(a: &[u8], b: &[u8]) -> Ordering {
    (le32(a), le32(&a[4..])).cmp(&(le32(b), le32(&b[4..])))
}

fn compare_first_u32(a: &[u8], b: &[u8]) -> Ordering {
    le32(a).cmp(&le32(b))
}

fn depth_of(path: &[u8]) -> u16 {
    if path.is_empty() {
        0
    } else {
        // At most 2048 components fit a path of 4096 bytes.
        (path.iter().filter(|&&b| b == b'/').count() + 1) as u16
    }
}

/// `a` is `b` or one of its ancestors.
fn is_ancestor_or_self(a: &[u8], b: &[u8]) -> bool {
    a.is_empty() || (b.starts_with(a) && (b.len() == a.len() || b[a.len()] == b'/'))
}

/// Turns a stream of entries and markers into the parts of a TOC (see the module note).
pub struct TocWriter {
    dir: PathBuf,
    items: Sorter,
    /// What each of the sorts after the merge holds before it spills.
    small_budget: usize,
    entries: u32,
    /// The last path whose ancestors went in as visible, and as any kind.
    prev_visible: Vec<u8>,
    prev_any: Vec<u8>,
    buf: Vec<u8>,
}

impl TocWriter {
    /// A writer whose scratch files go in `dir` (each unlinked as soon as it is made).
    pub fn new(dir: &Path) -> Result<TocWriter> {
        let mut w = TocWriter {
            dir: dir.to_path_buf(),
            items: Sorter::new(dir, ITEM_BUDGET, compare_items),
            small_budget: SMALL_BUDGET,
            entries: 0,
            prev_visible: Vec::new(),
            prev_any: Vec::new(),
            buf: Vec::new(),
        };
        // The root is always there, an implicit directory if nothing names it.
        w.item(ANCESTOR_VISIBLE, NO_SEQ, b"", |_| {})?;
        Ok(w)
    }

    fn item(&mut self, kind: u8, seq: u32, path: &[u8], payload: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        if path.len() >= 4096 {
            bail!("a name in the layer is too long");
        }
        let mut b = std::mem::take(&mut self.buf);
        b.clear();
        b.extend_from_slice(&depth_of(path).to_le_bytes());
        b.push(kind);
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&(path.len() as u16).to_le_bytes());
        b.extend_from_slice(path);
        payload(&mut b);
        let pushed = self.items.push(&b);
        self.buf = b;
        Ok(pushed?)
    }

    /// Items for the directories above `path` not already given for an earlier path.
    fn ancestors(&mut self, path: &[u8], visible: bool) -> Result<()> {
        let prev = std::mem::take(if visible { &mut self.prev_visible } else { &mut self.prev_any });
        for (i, _) in path.iter().enumerate().filter(|(_, &b)| b == b'/') {
            let a = &path[..i];
            if !is_ancestor_or_self(a, &prev) {
                self.item(if visible { ANCESTOR_VISIBLE } else { ANCESTOR }, NO_SEQ, a, |_| {})?;
            }
        }
        if visible {
            self.prev_visible = path.to_vec();
        }
        self.prev_any = path.to_vec();
        Ok(())
    }

    /// The next entry of the layer, in stream order (`link_entry` is ignored: hard links
    /// are resolved here, from their target paths).
    pub fn entry(&mut self, e: &Entry) -> Result<()> {
        let seq = self.entries;
        self.entries = seq.checked_add(1).filter(|&n| n < ORPHAN).context("layer has too many entries for a TOC")?;
        self.ancestors(&e.path, true)?;
        if e.path.len() > u16::MAX as usize || e.link.as_ref().is_some_and(|l| l.len() > u16::MAX as usize) {
            bail!("a name in the layer is too long");
        }
        self.item(ENTRY, seq, &e.path, |b| {
            b.push(kind_code(Some(e.kind)) as u8);
            b.extend_from_slice(&(e.mode as u16 & 0o7777).to_le_bytes());
            for v in [e.uid, e.gid] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&e.mtime.to_le_bytes());
            b.extend_from_slice(&e.size.to_le_bytes());
            b.extend_from_slice(&e.offset.to_le_bytes());
            b.extend_from_slice(&e.rdev.0.to_le_bytes());
            b.extend_from_slice(&e.rdev.1.to_le_bytes());
            match &e.link {
                Some(l) => {
                    b.extend_from_slice(&(l.len() as u32).to_le_bytes());
                    b.extend_from_slice(l);
                }
                None => b.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
            b.extend_from_slice(&(e.xattrs.len() as u32).to_le_bytes());
            for (k, v) in &e.xattrs {
                b.extend_from_slice(&(k.len() as u32).to_le_bytes());
                b.extend_from_slice(&(v.len() as u32).to_le_bytes());
                b.extend_from_slice(k);
                b.extend_from_slice(v);
            }
        })?;
        if let (Kind::Hardlink, Some(target)) = (e.kind, &e.link) {
            // A link item at the target's path; the target's own node carries it (and
            // the links to lower layers), visible or not.
            let target = target.clone();
            self.ancestors(&target, false)?;
            self.item(LINKREF, seq, &target, |_| {})?;
        }
        Ok(())
    }

    /// `.wh.NAME`: `path` is hidden in lower layers.
    pub fn whiteout(&mut self, path: &[u8]) -> Result<()> {
        self.ancestors(path, false)?;
        self.item(WHITEOUT_ITEM, NO_SEQ, path, |_| {})
    }

    /// `DIR/.wh..wh..opq`: the lower children of `dir` are hidden.
    pub fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        self.ancestors(dir, false)?;
        self.item(OPAQUE_ITEM, NO_SEQ, dir, |_| {})
    }

    /// Spill sooner (every sort), to test the spilled paths on small layers.
    #[cfg(test)]
    pub(super) fn set_budget(&mut self, budget: usize) {
        self.items.set_budget(budget);
        self.small_budget = budget;
    }

    /// Merge everything into the parts `write` assembles.
    pub fn finish(self) -> Result<TocParts> {
        let dir = self.dir.clone();
        let entries = self.entries;
        let mut m = Merger::new(&dir, self.small_budget)?;
        let mut items = self.items.finish()?;
        while let Some(item) = items.next()? {
            m.item(item)?;
        }
        m.end_group()?;
        m.close_level()?;
        m.finish(entries)
    }
}

/// An entry item's payload, decoded.
struct EntryItem {
    seq: u32,
    kind: u8,
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    offset: u64,
    rdev: (u32, u32),
    link: Option<Vec<u8>>,
    /// The xattrs as `write` stores them: (key length, value length, key, value)...
    xattrs: Vec<u8>,
}

fn decode_entry(seq: u32, p: &[u8]) -> EntryItem {
    let link_len = le32(&p[43..]);
    let mut at = 47;
    let link = (link_len != u32::MAX).then(|| {
        let l = p[at..at + link_len as usize].to_vec();
        at += link_len as usize;
        l
    });
    let count = le32(&p[at..]);
    at += 4;
    let xattrs = if count == 0 { Vec::new() } else { p[at..].to_vec() };
    EntryItem {
        seq,
        kind: p[0],
        mode: u16::from_le_bytes([p[1], p[2]]),
        uid: le32(&p[3..]),
        gid: le32(&p[7..]),
        mtime: le64(&p[11..]) as i64,
        size: le64(&p[19..]),
        offset: le64(&p[27..]),
        rdev: (le32(&p[35..]), le32(&p[39..])),
        link,
        xattrs,
    }
}

/// A buffered scratch file, written once then read back.
struct Scratch {
    w: BufWriter<File>,
    len: u64,
}

impl Scratch {
    fn new(dir: &Path) -> io::Result<Scratch> {
        Ok(Scratch { w: BufWriter::with_capacity(BUFFER, scratch_file(dir)?), len: 0 })
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.len += b.len() as u64;
        self.w.write_all(b)
    }

    /// The file, rewound, for reading back.
    fn into_reader(self) -> io::Result<(BufReader<File>, u64)> {
        let mut f = self.w.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(0))?;
        Ok((BufReader::with_capacity(BUFFER, f), self.len))
    }
}

/// The node of the previous level children attach to now.
struct Open {
    key: Vec<u8>,
    first_child: u32,
    first_name: Vec<u8>,
    fence_off: u64,
    count: u32,
    /// The first child's fence, written only once a second one shows the directory
    /// is big.
    first_fence: [u8; FENCE as usize],
}

struct Merger {
    dir: PathBuf,
    budget: usize,
    // The group (one path) being read.
    group: Option<Group>,
    next_node: u32,
    orphans: u32,
    depth: u16,
    /// Paths of this level's nodes, and of the previous level's, read in step.
    level_keys: Scratch,
    prev_keys: Option<BufReader<File>>,
    open: Option<Open>,
    node_records: Scratch,
    orphan_records: Scratch,
    /// Per node, in order: first child u32, fence count u32, first fence u64.
    dir_info: Scratch,
    names: Scratch,
    strings: Scratch,
    xattrs_nodes: Scratch,
    xattrs_orphans: Scratch,
    fences: Scratch,
    /// (seq, record id) of every entry, and (link seq, resolution) of every hard link.
    ids: Sorter,
    links: Sorter,
}

struct Group {
    depth: u16,
    path: Vec<u8>,
    node: u32,
    current: Option<EntryItem>,
    flags: u8,
}

/// A hard link's resolution, in the `links` sort: link seq u32, then `TARGET` and the
/// seq of the entry it resolved to, or `LOWER` and the node of its target path.
const TARGET: u8 = 0;
const LOWER: u8 = 1;

impl Merger {
    fn new(dir: &Path, budget: usize) -> io::Result<Merger> {
        Ok(Merger {
            budget,
            dir: dir.to_path_buf(),
            group: None,
            next_node: 0,
            orphans: 0,
            depth: 0,
            level_keys: Scratch::new(dir)?,
            prev_keys: None,
            open: None,
            node_records: Scratch::new(dir)?,
            orphan_records: Scratch::new(dir)?,
            dir_info: Scratch::new(dir)?,
            names: Scratch::new(dir)?,
            strings: Scratch::new(dir)?,
            xattrs_nodes: Scratch::new(dir)?,
            xattrs_orphans: Scratch::new(dir)?,
            fences: Scratch::new(dir)?,
            ids: Sorter::new(dir, budget, compare_first_u32),
            links: Sorter::new(dir, budget, compare_first_u32),
        })
    }

    fn item(&mut self, item: &[u8]) -> Result<()> {
        let (depth, kind, seq, path) = item_parts(item);
        let same = self.group.as_ref().is_some_and(|g| g.depth == depth && g.path == path);
        if !same {
            self.end_group()?;
            self.start_group(depth, path)?;
        }
        let g = self.group.as_mut().expect("a group was just started");
        match kind {
            ENTRY => {
                let e = decode_entry(seq, &item[9 + path.len()..]);
                let node = g.node;
                if let Some(prev) = g.current.replace(e) {
                    self.orphan(prev, node)?;
                }
            }
            LINKREF => {
                // The entries of this path before the link are all read: the latest is
                // what the link resolves to.
                let mut r = seq.to_le_bytes().to_vec();
                match &g.current {
                    Some(c) => {
                        r.push(TARGET);
                        r.extend_from_slice(&c.seq.to_le_bytes());
                    }
                    None => {
                        r.push(LOWER);
                        r.extend_from_slice(&g.node.to_le_bytes());
                    }
                }
                self.links.push(&r)?;
            }
            WHITEOUT_ITEM => g.flags |= WHITEOUT,
            OPAQUE_ITEM => g.flags |= OPAQUE,
            ANCESTOR_VISIBLE => g.flags |= VISIBLE,
            _ => {}
        }
        Ok(())
    }

    fn start_group(&mut self, depth: u16, path: &[u8]) -> Result<()> {
        if depth != self.depth {
            if depth != self.depth + 1 {
                bail!("the TOC items skip a level");
            }
            self.close_level()?;
            let keys = std::mem::replace(&mut self.level_keys, Scratch::new(&self.dir)?);
            self.prev_keys = Some(keys.into_reader()?.0);
            self.depth = depth;
        }
        let node = self.next_node;
        if depth == 0 {
            if node != 0 {
                bail!("the TOC items hold two roots");
            }
        } else {
            let parent = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => &path[..i],
                None => b"",
            };
            // Before the count moves on: nodes passed on the way have no children, and
            // their (empty) children start where this one's siblings do.
            self.attach(parent, node, &path[path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1)..])?;
        }
        self.next_node = node.checked_add(1).filter(|&n| n < ORPHAN).context("layer has too many paths for a TOC")?;
        self.level_keys.put(&(path.len() as u32).to_le_bytes())?;
        self.level_keys.put(path)?;
        self.group = Some(Group { depth, path: path.to_vec(), node, current: None, flags: 0 });
        Ok(())
    }

    /// Node `node` (named `name`) is a child of `parent`: move the previous level's
    /// cursor to it, closing the nodes passed on the way.
    fn attach(&mut self, parent: &[u8], node: u32, name: &[u8]) -> Result<()> {
        loop {
            if let Some(o) = &self.open {
                if o.key == parent {
                    break;
                }
            }
            self.close_open()?;
            let key = self.next_prev_key()?.context("a TOC path has no parent")?;
            if key == parent {
                let fence_off = self.fences.len / FENCE;
                self.open = Some(Open {
                    key,
                    first_child: node,
                    first_name: name.to_vec(),
                    fence_off,
                    count: 0,
                    first_fence: [0; FENCE as usize],
                });
            } else {
                self.childless()?;
            }
        }
        let o = self.open.as_mut().expect("the parent is open");
        if o.count.is_multiple_of(FENCE_EVERY) {
            // The bytes after those shared with the first child: names in one
            // directory often share a long prefix, which would leave nothing to compare.
            let skip = o.first_name.iter().zip(name).take_while(|(a, b)| a == b).count();
            let plen = (name.len() - skip).min(FENCE_PREFIX);
            let mut f = [0u8; FENCE as usize];
            f[..4].copy_from_slice(&node.to_le_bytes());
            f[4] = plen as u8;
            f[5] = skip as u8;
            f[8..8 + plen].copy_from_slice(&name[skip..skip + plen]);
            if o.count == 0 {
                o.first_fence = f;
            } else {
                if o.count == FENCE_EVERY {
                    let first = o.first_fence;
                    self.fences.put(&first)?;
                }
                self.fences.put(&f)?;
            }
        }
        self.open.as_mut().expect("the parent is open").count += 1;
        Ok(())
    }

    fn next_prev_key(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(r) = self.prev_keys.as_mut() else { return Ok(None) };
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut key = vec![0; u32::from_le_bytes(len) as usize];
        r.read_exact(&mut key)?;
        Ok(Some(key))
    }

    /// The dir info of a node of the previous level with no children.
    fn childless(&mut self) -> Result<()> {
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&self.next_node.to_le_bytes());
        self.dir_info.put(&d)?;
        Ok(())
    }

    fn close_open(&mut self) -> Result<()> {
        if let Some(o) = self.open.take() {
            let fences = if o.count > FENCE_EVERY { o.count.div_ceil(FENCE_EVERY) } else { 0 };
            let mut d = [0u8; 16];
            d[..4].copy_from_slice(&o.first_child.to_le_bytes());
            d[4..8].copy_from_slice(&fences.to_le_bytes());
            d[8..].copy_from_slice(&o.fence_off.to_le_bytes());
            self.dir_info.put(&d)?;
        }
        Ok(())
    }

    /// Close every node of the previous level (those with children are closed when
    /// passed; the rest have none).
    fn close_level(&mut self) -> Result<()> {
        self.close_open()?;
        while self.next_prev_key()?.is_some() {
            self.childless()?;
        }
        Ok(())
    }

    fn end_group(&mut self) -> Result<()> {
        let Some(g) = self.group.take() else { return Ok(()) };
        let name = match g.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &g.path[i + 1..],
            None => &g.path[..],
        };
        if name.len() > NAME_MAX {
            bail!("a name component of the layer is longer than {NAME_MAX} bytes");
        }
        let name_off = u32::try_from(self.names.len).ok().context("the layer's names take more than 4 GiB")?;
        self.names.put(name)?;
        let mut raw = match &g.current {
            Some(e) => {
                if g.depth == 0 && e.kind != kind_code(Some(Kind::Dir)) as u8 {
                    bail!("the layer makes its root something other than a directory");
                }
                self.ids.push(&[e.seq.to_le_bytes(), g.node.to_le_bytes()].concat())?;
                self.entry_record(e, g.node, true)?
            }
            None => RawRecord { seq: NO_SEQ, ..RawRecord::default() },
        };
        raw.name_off = name_off;
        raw.name_len = name.len() as u8;
        raw.flags |= g.flags;
        self.node_records.put(&raw.encode())?;
        Ok(())
    }

    fn orphan(&mut self, e: EntryItem, node: u32) -> Result<()> {
        let j = self.orphans;
        self.orphans += 1;
        self.ids.push(&[e.seq.to_le_bytes(), (ORPHAN | j).to_le_bytes()].concat())?;
        let mut raw = self.entry_record(&e, j, false)?;
        raw.link = node;
        self.orphan_records.put(&raw.encode())?;
        Ok(())
    }

    /// The record of an entry (`id`: its node, or its place among the orphans), its
    /// strings and its xattrs item written.
    fn entry_record(&mut self, e: &EntryItem, id: u32, is_node: bool) -> Result<RawRecord> {
        let kind = kind_of(u16::from(e.kind)).flatten().context("an entry of no kind")?;
        let mut raw = RawRecord {
            kind_mode: kind_code(Some(kind)) << 12 | (e.mode & 0o7777),
            flags: VISIBLE,
            seq: e.seq,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            ..RawRecord::default()
        };
        match kind {
            Kind::File => (raw.a, raw.b) = (e.offset, e.size),
            Kind::Char | Kind::Block => raw.b = u64::from(e.rdev.0) << 32 | u64::from(e.rdev.1),
            Kind::Symlink | Kind::Hardlink => {
                let link = e.link.as_deref().unwrap_or_default();
                raw.a = self.strings.len;
                raw.b = link.len() as u64;
                self.strings.put(link)?;
            }
            Kind::Dir | Kind::Fifo => {}
        }
        if !e.xattrs.is_empty() {
            if e.xattrs.len() as u64 > STRING_MAX {
                bail!("an entry's xattrs take more than {STRING_MAX} bytes");
            }
            raw.flags |= XATTRS;
            let mut item = [0u8; XATTR_ITEM as usize];
            item[..4].copy_from_slice(&id.to_le_bytes());
            item[4..8].copy_from_slice(&(e.xattrs.len() as u32).to_le_bytes());
            item[8..].copy_from_slice(&self.strings.len.to_le_bytes());
            self.strings.put(&e.xattrs)?;
            if is_node {
                self.xattrs_nodes.put(&item)?;
            } else {
                self.xattrs_orphans.put(&item)?;
            }
        }
        Ok(raw)
    }

    /// Resolve the hard links and hand over the parts.
    fn finish(mut self, entries: u32) -> Result<TocParts> {
        // The last level's nodes have no children.
        self.prev_keys = Some(std::mem::replace(&mut self.level_keys, Scratch::new(&self.dir)?).into_reader()?.0);
        self.close_level()?;
        let nodes = self.next_node;
        let resolve = |id: u32| if id & ORPHAN != 0 { nodes + (id & !ORPHAN) } else { id };

        // Every entry's record id, by its place in the stream, in a table read back by
        // position: (id u32, kind u8, pad, resolved link target + 1 u32, pad).
        let table = scratch_file(&self.dir)?;
        {
            let mut w = BufWriter::with_capacity(BUFFER, &table);
            let mut ids = self.ids.finish()?;
            let mut expect = 0u32;
            while let Some(r) = ids.next()? {
                if le32(r) != expect {
                    bail!("the TOC lost an entry");
                }
                expect += 1;
                let mut t = [0u8; 16];
                t[..4].copy_from_slice(&resolve(le32(&r[4..])).to_le_bytes());
                w.write_all(&t)?;
            }
            if expect != entries {
                bail!("the TOC lost an entry");
            }
            w.flush()?;
        }
        let read_at = |seq: u32| -> io::Result<[u8; 16]> {
            let mut t = [0u8; 16];
            table.read_exact_at(&mut t, u64::from(seq) * 16)?;
            Ok(t)
        };

        let mut patches = Sorter::new(&self.dir, self.budget, compare_first_u32);
        let mut links_to = Sorter::new(&self.dir, self.budget, compare_u32_pairs);
        let mut lower_links = Sorter::new(&self.dir, self.budget, compare_u32_pairs);
        let patch = |p: &mut Sorter, id: u32, op: u8, v: u32| {
            p.push(&[&id.to_le_bytes()[..], &[op], &v.to_le_bytes()].concat())
        };
        let (mut links_to_count, mut lower_count) = (0u64, 0u64);
        let mut links = self.links.finish()?;
        while let Some(r) = links.next()? {
            let (seq, how, v) = (le32(r), r[4], le32(&r[5..]));
            let link = le32(&read_at(seq)?);
            if how == LOWER {
                patch(&mut patches, link, PATCH_FLAGS, u32::from(LINKED))?;
                patch(&mut patches, v, PATCH_FLAGS, u32::from(LOWER_LINKS))?;
                lower_links.push(&[v.to_le_bytes(), link.to_le_bytes()].concat())?;
                lower_count += 1;
                continue;
            }
            // A link to a link shares the first link's data entry (when that one
            // resolved within the layer).
            let t = read_at(v)?;
            let target = match le32(&t[8..]) {
                0 => le32(&t),
                n => n - 1,
            };
            let mut mine = read_at(seq)?;
            mine[8..12].copy_from_slice(&(target + 1).to_le_bytes());
            table.write_all_at(&mine, u64::from(seq) * 16)?;
            patch(&mut patches, link, PATCH_LINK_ENTRY, target)?;
            patch(&mut patches, link, PATCH_FLAGS, u32::from(LINKED))?;
            patch(&mut patches, target, PATCH_FLAGS, u32::from(LINKED | LINKS_TO))?;
            links_to.push(&[target.to_le_bytes(), link.to_le_bytes()].concat())?;
            links_to_count += 1;
        }
        Ok(TocParts {
            nodes,
            orphans: self.orphans,
            node_records: self.node_records.into_reader()?.0,
            orphan_records: self.orphan_records.into_reader()?.0,
            dir_info: self.dir_info.into_reader()?.0,
            patches: patches.finish()?,
            names: self.names.into_reader()?,
            strings: self.strings.into_reader()?,
            xattrs_nodes: self.xattrs_nodes.into_reader()?,
            xattrs_orphans: self.xattrs_orphans.into_reader()?,
            fences: self.fences.into_reader()?,
            links_to: (links_to.finish()?, links_to_count),
            lower_links: (lower_links.finish()?, lower_count),
        })
    }
}

const PATCH_FLAGS: u8 = 0;
const PATCH_LINK_ENTRY: u8 = 1;

/// What `TocWriter::finish` leaves for `write`: the sections, in scratch files.
pub struct TocParts {
    nodes: u32,
    orphans: u32,
    node_records: BufReader<File>,
    orphan_records: BufReader<File>,
    dir_info: BufReader<File>,
    patches: Sorted,
    names: (BufReader<File>, u64),
    strings: (BufReader<File>, u64),
    xattrs_nodes: (BufReader<File>, u64),
    xattrs_orphans: (BufReader<File>, u64),
    fences: (BufReader<File>, u64),
    /// Sorted pairs, and how many.
    links_to: (Sorted, u64),
    lower_links: (Sorted, u64),
}

impl TocParts {
    /// Paths (nodes) and replaced entries (orphans) the TOC will hold.
    pub fn counts(&self) -> (u32, u32) {
        (self.nodes, self.orphans)
    }
}

/// How the layer's data is reached, for the TOC's header and its last sections.
pub enum DataIndex<'a> {
    Plain,
    Checkpoints(&'a Checkpoints),
    Reframed(&'a Checkpoints),
}

/// Counts every page it passes, and its CRC-32, after the header page.
struct PageWriter<W: Write> {
    w: W,
    at: u64,
    page: crc32fast::Hasher,
    crcs: Vec<u32>,
}

impl<W: Write> PageWriter<W> {
    /// Bytes from file offset `at` on; the pages before it hold nothing checked.
    fn new(w: W, at: u64) -> PageWriter<W> {
        let crcs = (0..at / PAGE).map(|_| crc32fast::hash(&[])).collect();
        PageWriter { w, at, page: crc32fast::Hasher::new(), crcs }
    }

    /// The CRC of the last page, if it is not whole.
    fn end(&mut self) {
        if !self.at.is_multiple_of(PAGE) {
            self.crcs.push(std::mem::take(&mut self.page).finalize());
        }
    }

    fn put(&mut self, mut b: &[u8]) -> io::Result<()> {
        while !b.is_empty() {
            let room = (PAGE - self.at % PAGE) as usize;
            let n = room.min(b.len());
            self.page.update(&b[..n]);
            self.w.write_all(&b[..n])?;
            self.at += n as u64;
            b = &b[n..];
            if self.at.is_multiple_of(PAGE) {
                self.crcs.push(std::mem::take(&mut self.page).finalize());
            }
        }
        Ok(())
    }

    fn copy(&mut self, r: &mut impl Read, len: u64) -> io::Result<()> {
        let mut buf = vec![0u8; BUFFER];
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            r.read_exact(&mut buf[..n])?;
            self.put(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

/// Assemble the TOC of layer `digest` into `out` (a new, empty file): the parts from
/// `TocWriter::finish`, how the data is reached, and the block sums of the stored data
/// file.
pub fn write(out: &mut File, digest: &str, mut parts: TocParts, data: DataIndex<'_>, sums: &BlockSums) -> Result<()> {
    let mut h = Header { digest: digest.to_string(), nodes: parts.nodes, orphans: parts.orphans, ..Header::default() };
    if digest.len() > 128 {
        bail!("layer digest {digest} is too long for a TOC");
    }
    let (access, checkpoints) = match data {
        DataIndex::Plain => (0, None),
        DataIndex::Checkpoints(c) => (1, Some(c)),
        DataIndex::Reframed(c) => (2, Some(c)),
    };
    // Every section's length is known: so is the header's (it holds the checksums of
    // the page checksums, whose number depends on the file's length).
    let windows: u64 = checkpoints.map_or(0, |c| c.points().map(|p| p.3.len() as u64).sum());
    let body = u64::from(parts.nodes + parts.orphans) * RECORD
        + parts.names.1
        + parts.strings.1
        + parts.xattrs_nodes.1
        + parts.xattrs_orphans.1
        + (parts.links_to.1 + parts.lower_links.1) * PAIR
        + parts.fences.1
        + checkpoints.map_or(0, |c| c.span_count() as u64) * POINT
        + windows
        + sums.sums().len() as u64 * 4;
    // The sections' lengths go in the header: fill them in now.
    let lens = [
        (Section::Records, u64::from(parts.nodes + parts.orphans) * RECORD),
        (Section::Names, parts.names.1),
        (Section::Strings, parts.strings.1),
        (Section::Xattrs, parts.xattrs_nodes.1 + parts.xattrs_orphans.1),
        (Section::LinksTo, parts.links_to.1 * PAIR),
        (Section::LowerLinks, parts.lower_links.1 * PAIR),
        (Section::Fences, parts.fences.1),
        (Section::Points, checkpoints.map_or(0, |c| c.span_count() as u64) * POINT),
        (Section::Windows, windows),
        (Section::Sums, sums.sums().len() as u64 * 4),
    ];
    for (s, l) in lens {
        h.sections[s as usize].1 = l;
    }
    if let Some(c) = checkpoints {
        h.access = access;
        h.format = c.format().to_code();
        h.span = c.requested_span();
        h.compressed_size = c.compressed_size();
        h.uncompressed_size = c.uncompressed_size();
        h.points = c.span_count() as u64;
    }
    (h.sums_len, h.sums) = (sums.covered(), sums.sums().len() as u64);
    loop {
        let head = h.len() as u64;
        let table = (head + body).div_ceil(PAGE) * 4;
        let need = table.div_ceil(PAGE) as usize;
        if need == h.crc_dir.len() {
            break;
        }
        if need > MAX_CRC_DIR {
            bail!("the layer's TOC would be larger than its format allows");
        }
        h.crc_dir = vec![0; need];
    }
    let head = h.len() as u64;
    let mut w = BufWriter::with_capacity(BUFFER, &*out);
    w.write_all(&vec![0u8; head as usize])?;
    let mut p = PageWriter::new(w, head);
    // Each section must come out at the length the header gives.
    fn section<W: Write>(h: &mut Header, p: &PageWriter<W>, s: Section, start: u64) {
        debug_assert_eq!(h.sections[s as usize].1, p.at - start, "{s:?}");
        h.sections[s as usize] = (start, p.at - start);
    }

    // Records: nodes with their first child and fences, then orphans; patches applied.
    let start = p.at;
    let mut patch = parts.patches.next()?.map(<[u8]>::to_vec);
    let mut rec = [0u8; RECORD as usize];
    let mut info = [0u8; 16];
    for id in 0..parts.nodes + parts.orphans {
        if id < parts.nodes {
            parts.node_records.read_exact(&mut rec)?;
            parts.dir_info.read_exact(&mut info)?;
        } else {
            parts.orphan_records.read_exact(&mut rec)?;
        }
        let mut raw = RawRecord::decode(&rec);
        if id < parts.nodes {
            raw.link = le32(&info);
            if matches!(kind_of(raw.kind_mode >> 12), Some(None | Some(Kind::Dir))) {
                (raw.a, raw.b) = (le64(&info[8..]), u64::from(le32(&info[4..])));
            }
        }
        while let Some(pt) = patch.as_deref().filter(|pt| le32(pt) == id) {
            match pt[4] {
                PATCH_FLAGS => raw.flags |= pt[5],
                _ => raw.b = (raw.b & 0xffff_ffff) | (u64::from(le32(&pt[5..])) + 1) << 32,
            }
            patch = parts.patches.next()?.map(<[u8]>::to_vec);
        }
        p.put(&raw.encode())?;
    }
    if patch.is_some() {
        bail!("the TOC has a hard link to no record");
    }
    section(&mut h, &p, Section::Records, start);

    for (s, (r, len)) in [(Section::Names, &mut parts.names), (Section::Strings, &mut parts.strings)] {
        let start = p.at;
        p.copy(r, *len)?;
        section(&mut h, &p, s, start);
    }
    // Xattr items: the orphans' carry their place among the orphans until now.
    let start = p.at;
    p.copy(&mut parts.xattrs_nodes.0, parts.xattrs_nodes.1)?;
    let mut item = [0u8; XATTR_ITEM as usize];
    for _ in 0..parts.xattrs_orphans.1 / XATTR_ITEM {
        parts.xattrs_orphans.0.read_exact(&mut item)?;
        let id = le32(&item) + parts.nodes;
        item[..4].copy_from_slice(&id.to_le_bytes());
        p.put(&item)?;
    }
    section(&mut h, &p, Section::Xattrs, start);
    for (s, (sorted, _)) in [(Section::LinksTo, &mut parts.links_to), (Section::LowerLinks, &mut parts.lower_links)] {
        let start = p.at;
        while let Some(r) = sorted.next()? {
            p.put(r)?;
        }
        section(&mut h, &p, s, start);
    }
    let start = p.at;
    p.copy(&mut parts.fences.0, parts.fences.1)?;
    section(&mut h, &p, Section::Fences, start);

    // Checkpoints and their windows, then the block sums.
    let start = p.at;
    let mut window_at = 0u64;
    if let Some(c) = checkpoints {
        for (u, cpos, bits, window) in c.points() {
            let mut pt = [0u8; POINT as usize];
            pt[..8].copy_from_slice(&u.to_le_bytes());
            pt[8..16].copy_from_slice(&cpos.to_le_bytes());
            pt[16..24].copy_from_slice(&window_at.to_le_bytes());
            pt[24..28].copy_from_slice(&(window.len() as u32).to_le_bytes());
            pt[28] = bits;
            p.put(&pt)?;
            window_at += window.len() as u64;
        }
    }
    section(&mut h, &p, Section::Points, start);
    let start = p.at;
    if let Some(c) = checkpoints {
        for (.., window) in c.points() {
            p.put(window)?;
        }
    }
    section(&mut h, &p, Section::Windows, start);
    let start = p.at;
    for s in sums.sums() {
        p.put(&s.to_le_bytes())?;
    }
    section(&mut h, &p, Section::Sums, start);

    // The checksum of each page.
    p.end();
    let crc_off = p.at;
    if crc_off != head + body {
        bail!("the TOC's sections came out at {} bytes, not {body}", crc_off - head);
    }
    let PageWriter { mut w, crcs, .. } = p;
    let table: Vec<u8> = crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
    w.write_all(&table)?;
    w.flush()?;
    drop(w);
    h.sections[Section::PageCrcs as usize] = (crc_off, table.len() as u64);
    h.crc_dir = table.chunks(PAGE as usize).map(crc32fast::hash).collect();
    let header = h.encode();
    if header.len() as u64 != head {
        bail!("the TOC's header came out at {} bytes, not {head}", header.len());
    }
    out.write_all_at(&header, 0)?;
    Ok(())
}

#[cfg(test)]
pub(super) fn test_compare_paths(a: &[u8], b: &[u8]) -> Ordering {
    compare_paths(a, b)
}
