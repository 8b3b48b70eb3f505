//! The union of an image's layers, resolved lazily over their tables of contents.
//!
//! A node refers into the layers' TOCs instead of copying from them: a directory by
//! the TOC node of its topmost layer (and, as they are looked at, its node in each
//! other one: a layer above may hold whiteouts or an opaque marker inside it with no
//! entry of its own), everything else by the layer entry that holds its data, so that
//! the names of a hard-link group share one node. That reference is also its inode number
//! (layer + 1 in the high half, the TOC record in the low; the root is 1), so a file
//! keeps its number for the life of the mount, even when its node goes and comes back:
//! tools that find hard links by `st_ino` (tar, du, rsync) never see two files as one.
//! Names, attributes and listings are read from the TOCs (mapped files) whenever they
//! are asked for; a node holds a few words. The kernel's lookups are counted, and a
//! node it has forgotten goes, unless a directory node below it is still alive.
//!
//! Layers are consulted from the top down and only as far as an answer needs:
//! a lookup that an upper layer settles (a non-directory there, a whiteout, an opaque
//! directory above) never touches a lower layer. Each directory remembers how far
//! down it has been examined (`next`) and where its range ends (`floor`): the lowest
//! layer whose entries below it are still visible. The OCI rules, per layer L and
//! path P, in this order (never depending on tar order):
//! - an entry for P in L is visible if nothing above settled P;
//! - a non-directory entry cuts everything below L at P;
//! - `.wh.P` in L hides P in layers below L (L's own entry for P, if any, stays);
//! - an opaque marker in P in L hides P's children in layers below L.
//!
//! A listing is a merge of the directory's children in every layer of its range (each
//! TOC keeps them sorted by name), each name resolved by the rules above; it is read
//! from a name on (the cookie the kernel hands back names where the last batch ended),
//! so nothing of it is kept between calls.
//!
//! Two things would otherwise pull in lower layers on real images, whose upper
//! layers name the paths they change but not the directories above them (no `./`):
//! - A directory's mode, owner and mtime come from its topmost explicit entry, which
//!   for `/`, `/usr` or `/etc` is usually in the base layer. Until the layer holding
//!   it is local, the directory is served with provisional attributes (0755, root,
//!   mtime 0: what tar extractors give a directory with no entry), marked unsettled so
//!   the kernel does not cache them; once the layer is local the exact ones are
//!   served. `DirAttrs::Exact` fetches instead (for mounts other users can see, where
//!   a provisional 0755 could let them into a directory that is really 0700).
//! - A hard-link group's `st_nlink`: its names can only be in the layer holding its
//!   data and above, which the lookup that found it has read already.
//!
//! Locking: one mutex guards the node table, and nothing slow happens under it (a TOC
//! read is a page of a mapped file). An operation runs under the lock until it needs a
//! layer whose TOC is not open; then it drops the lock, waits for that layer alone (the
//! `LayerSource` loads each layer once), and runs again from the start. The parts of
//! the state it updated before stopping are complete facts, so a rerun only goes
//! faster; a kernel reference is counted only by the run that answers. Operations that
//! don't need that layer never wait for it.

use crate::layer::toc::{Presence, Rec, Toc};
use crate::layer::{show, Kind, LayerData};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a layer source could not give a layer: whatever its own error type (a fetch,
/// a TOC, a test's), with its causes.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where layers come from: the store (fetching from the registry on first use), or
/// tarballs in temp files in tests.
pub trait LayerSource: Send + Sync {
    fn layer_count(&self) -> usize;
    /// The TOC of layer `i` (0 = bottom), fetching and indexing it if needed. May take
    /// as long as a download; the tree never calls it under its lock.
    fn toc(&self, i: usize) -> Result<Arc<Toc>, SourceError>;
    /// Random access to layer `i`'s uncompressed tar. Only called after `toc(i)`.
    fn data(&self, i: usize) -> Result<Arc<LayerData>, SourceError>;
    /// Is layer `i` available without a fetch? Answers at once, never waiting for a
    /// fetch in progress.
    fn is_local(&self, i: usize) -> bool;
    /// Is layer `i`'s TOC read from its registry page by page (a published index), so
    /// that reading all of a big directory costs a download?
    fn reads_by_range(&self, _i: usize) -> bool {
        false
    }
}

pub type Ino = u64;
pub const ROOT: Ino = 1;

/// How a directory's mode, owner and mtime are served while the layer that holds its
/// topmost entry is not local yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirAttrs {
    /// Provisional attributes (0755, root, mtime 0, not cached) until that layer is
    /// local; nothing is fetched to answer a stat.
    Provisional,
    /// Fetch that layer to answer.
    Exact,
}

/// What a node is, with the attributes the filesystem serves.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub ino: Ino,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub rdev: (u32, u32),
    pub nlink: u32,
    pub link: Option<Vec<u8>>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// False while the attributes may still change as more layers are read (a
    /// directory's link count before all its layers are known, or its provisional
    /// mode and owner): serve with no cache.
    pub settled: bool,
}

/// One entry of a listing, and where the next batch starts.
#[derive(Clone, Debug)]
pub struct Listed {
    pub name: Vec<u8>,
    pub kind: Kind,
    /// What the name resolves to; a node is made for it by `remember`.
    pub target: Target,
    /// The offset that resumes the listing after this entry.
    pub cookie: u64,
}

/// What a visible name is, before a node is made for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A directory first present in `layer` as TOC node `node`.
    Dir { parent: Ino, layer: u32, node: u32 },
    /// A non-directory whose data is record `rec` of `layer`.
    Leaf { layer: u32, rec: u32 },
    /// `.` or `..`: a directory the kernel holds already.
    Dot(Ino),
}

/// A directory's node in a layer: not looked at yet, or the layer has no such path.
const UNKNOWN: u32 = u32::MAX;
const ABSENT: u32 = u32::MAX - 1;

struct DirState {
    parent: Ino,
    /// The layer and TOC node it was first found as (top down); its name comes from
    /// there. The root has none.
    key: Option<(u32, u32)>,
    /// Layers with index >= next have been examined for this directory (next may be
    /// 0 and `floor` set when done).
    next: u32,
    floor: Option<u32>,
    /// Topmost explicit entry (layer, record): the directory's attributes.
    attrs_from: Option<(u32, u32)>,
    /// Its TOC node in each layer (`UNKNOWN`, `ABSENT` or a node).
    locs: Box<[u32]>,
    /// Visible subdirectories, counted once every layer of its range was local.
    subdirs: Option<u32>,
}

enum NodeKind {
    Dir(Box<DirState>),
    /// A non-directory: its data lives in record `rec` of layer `layer`. `nlink` is
    /// known at once for a leaf no hard link can name again, and counted on the first
    /// getattr otherwise (0 until then).
    Leaf {
        layer: u32,
        rec: u32,
        nlink: u32,
    },
}

struct Node {
    kind: NodeKind,
    /// Lookups the kernel holds (replies that gave it this inode, less its forgets).
    refs: u64,
    /// Directory nodes whose parent this is: it stays while they do.
    children: u32,
}

struct State {
    /// Live nodes by inode number (see `ino_of_key`).
    nodes: HashMap<Ino, Node, foldhash::fast::RandomState>,
    /// Layer TOCs opened so far; `None` until an operation needs the layer.
    layers: Vec<Option<Arc<Toc>>>,
}

pub struct Tree {
    source: Arc<dyn LayerSource>,
    dir_attrs: DirAttrs,
    state: Mutex<State>,
}

/// Why the tree can't answer; the filesystem answers EIO.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LayerError {
    /// Layer `layer` (0 = bottom) could not be loaded or its TOC read; the cause, shared
    /// (an `Arc`) so one failure can be answered to every operation that needed it.
    #[error("layer {layer}")]
    Load {
        layer: usize,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A name the image has but can't serve (a hard link whose target is missing at
    /// that point of the stream, or is a directory), and why. That name alone fails;
    /// listings leave it out, and the rest of the image is served.
    #[error("{0}")]
    Broken(Arc<str>),
    /// A listing offset that is none this filesystem gave.
    #[error("bad directory offset {0}")]
    BadOffset(u64),
}

impl LayerError {
    fn load(layer: usize) -> impl FnOnce(SourceError) -> LayerError {
        move |e| LayerError::Load { layer, source: Arc::from(e) }
    }
}

type TResult<T> = std::result::Result<T, LayerError>;

/// Why a step under the lock stopped short.
enum Stop {
    /// Layer k's TOC is not open: load it with the lock released, then rerun.
    Need(usize),
    /// Page p of layer k's TOC (one read from elsewhere, page by page) is not there:
    /// fetch it with the lock released, then rerun.
    Fetch(usize, u64),
    Fail(LayerError),
}

type Step<T> = std::result::Result<T, Stop>;

/// A TOC read of layer `l` that failed: a page to fetch first, or damage.
fn bad(l: u32) -> impl Fn(crate::layer::Error) -> Stop {
    move |e| match e {
        crate::layer::Error::PageMissing { page } => Stop::Fetch(l as usize, page),
        e => Stop::Fail(LayerError::Load { layer: l as usize, source: Arc::new(e) }),
    }
}

/// What a name in a directory resolves to, before any node is made.
enum Resolved {
    Target(Target),
    Absent,
    Broken(Arc<str>),
}

/// A listing resumes after a name: the cookie says where that name is (`layer + 1` in
/// the high half, its TOC node in the low), so that it can be read back; 1 and 2 are
/// after `.` and `..`.
fn cookie(layer: u32, node: u32) -> u64 {
    (u64::from(layer) + 1) << 32 | u64::from(node)
}

impl Tree {
    pub fn new(source: Arc<dyn LayerSource>, dir_attrs: DirAttrs) -> Tree {
        let n = source.layer_count();
        let root = Node {
            kind: NodeKind::Dir(Box::new(DirState {
                parent: ROOT,
                key: None,
                next: n as u32,
                floor: if n == 0 { Some(0) } else { None },
                attrs_from: None,
                // The root is node 0 of every TOC.
                locs: vec![0; n].into(),
                subdirs: None,
            })),
            refs: 1,
            children: 0,
        };
        let mut nodes = HashMap::default();
        nodes.insert(ROOT, root);
        Tree { source, dir_attrs, state: Mutex::new(State { nodes, layers: vec![None; n] }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn layer_count(&self) -> u32 {
        self.source.layer_count() as u32
    }

    /// Run `op` under the lock; whenever it needs a layer that is not loaded, load that
    /// layer with the lock released and run `op` again.
    fn run<T>(&self, mut op: impl FnMut(&Self, &mut State) -> Step<T>) -> TResult<T> {
        loop {
            let (need, fetch) = {
                let mut st = self.lock();
                match op(self, &mut st) {
                    Ok(v) => return Ok(v),
                    Err(Stop::Fail(e)) => return Err(e),
                    Err(Stop::Need(k)) => (k, None),
                    Err(Stop::Fetch(k, page)) => (k, st.layers[k].clone().map(|toc| (toc, page))),
                }
            };
            if let Some((toc, page)) = fetch {
                toc.fetch_page(page).map_err(|e| LayerError::Load { layer: need, source: Arc::new(e) })?;
                continue;
            }
            let toc = self.source.toc(need).map_err(LayerError::load(need))?;
            self.lock().layers[need].get_or_insert(toc);
        }
    }

    /// Find `name` in directory `parent` and count the kernel's reference to what it
    /// finds. `Ok(None)`: no such entry.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> TResult<Option<NodeInfo>> {
        self.run(|t, st| match t.resolve(st, parent, name)? {
            Resolved::Target(target) => t.remember_locked(st, target).map(Some),
            Resolved::Absent => Ok(None),
            Resolved::Broken(why) => Err(Stop::Fail(LayerError::Broken(why))),
        })
    }

    /// Make (or find) the node of a listed entry, count the kernel's reference to it,
    /// and give its attributes.
    pub fn remember(&self, target: Target) -> TResult<NodeInfo> {
        self.run(|t, st| t.remember_locked(st, target))
    }

    fn remember_locked(&self, st: &mut State, target: Target) -> Step<NodeInfo> {
        let made = !matches!(target, Target::Dot(_)) && !st.nodes.contains_key(&Self::ino_of(target));
        let ino = self.node_of(st, target)?;
        let info = match self.info_locked(st, ino) {
            Ok(info) => info,
            Err(stop) => {
                // A node this run made goes again, whether it failed or stopped for a
                // layer (a rerun makes it anew, and a failed load ends the operation
                // with no rerun); one that was there before, `.` and `..` included,
                // stays for whoever holds it.
                if made {
                    Self::unmake(st, ino);
                }
                return Err(stop);
            }
        };
        if !matches!(target, Target::Dot(_)) {
            Self::node(st, ino).refs += 1;
        }
        Ok(info)
    }

    /// The kernel dropped `n` references to `ino`: a node it no longer holds, and that
    /// no live directory below it needs, goes.
    pub fn forget(&self, ino: Ino, n: u64) {
        let mut st = self.lock();
        let Some(node) = st.nodes.get_mut(&ino) else { return };
        node.refs = node.refs.saturating_sub(n);
        Self::release(&mut st, ino);
    }

    /// Drop a node this operation made, if nothing came to hold it meanwhile; its
    /// parent stays (it was there before). False if it stays.
    fn unmake(st: &mut State, ino: Ino) -> bool {
        let Some(node) = st.nodes.get(&ino) else { return true };
        if ino == ROOT || node.refs > 0 || node.children > 0 {
            return false;
        }
        let parent = match &node.kind {
            NodeKind::Dir(d) => Some(d.parent),
            NodeKind::Leaf { .. } => None,
        };
        st.nodes.remove(&ino);
        if let Some(p) = parent.and_then(|p| st.nodes.get_mut(&p)) {
            p.children = p.children.saturating_sub(1);
        }
        true
    }

    /// Drop `ino` if nothing holds it, and then its parent if that was all it held.
    fn release(st: &mut State, mut ino: Ino) {
        while ino != ROOT {
            let Some(node) = st.nodes.get(&ino) else { return };
            if node.refs > 0 || node.children > 0 {
                return;
            }
            let parent = match &node.kind {
                NodeKind::Dir(d) => Some(d.parent),
                NodeKind::Leaf { .. } => None,
            };
            st.nodes.remove(&ino);
            match parent.and_then(|p| st.nodes.get_mut(&p).map(|n| (p, n))) {
                Some((p, pn)) => {
                    pn.children = pn.children.saturating_sub(1);
                    ino = p;
                }
                None => return,
            }
        }
    }

    /// Attributes of a node. Directories whose layers are all local have their
    /// subdirectories counted first, so their link count is exact; otherwise the answer
    /// is marked unsettled rather than fetching layers just to count them.
    pub fn info(&self, ino: Ino) -> TResult<Option<NodeInfo>> {
        self.run(|t, st| {
            if !Self::is_live(st, ino) {
                return Ok(None);
            }
            t.info_locked(st, ino).map(Some)
        })
    }

    /// Up to `max` visible children of a directory from `offset` on (0: from the start,
    /// `.` and `..` first; else a cookie a previous batch gave), each with the cookie
    /// that resumes after it. No node is made for them (see `remember`).
    pub fn read_dir(&self, ino: Ino, offset: u64, max: usize) -> TResult<Vec<Listed>> {
        if offset == 0 {
            self.fetch_range(ino);
        }
        self.run(|t, st| {
            if !Self::is_dir(st, ino) {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            let parent = Self::dir(st, ino).parent;
            let dot = |name: &[u8], cookie, ino| Listed {
                name: name.to_vec(),
                kind: Kind::Dir,
                target: Target::Dot(ino),
                cookie,
            };
            if offset == 0 {
                out.push(dot(b".", 1, ino));
            }
            if offset <= 1 {
                out.push(dot(b"..", 2, parent));
            }
            out.truncate(max);
            if out.len() == max {
                return Ok(out);
            }
            let after = match offset {
                0..=2 => None,
                c => {
                    let layer = ((c >> 32) as u32).checked_sub(1).ok_or(Stop::Fail(LayerError::BadOffset(c)))?;
                    let node = c as u32;
                    let toc = st.layers.get(layer as usize).cloned().flatten();
                    let toc = toc.ok_or(Stop::Fail(LayerError::BadOffset(c)))?;
                    let name = toc.record(node).and_then(|r| toc.name(&r).map(<[u8]>::to_vec));
                    Some(name.map_err(|_| Stop::Fail(LayerError::BadOffset(c)))?)
                }
            };
            let mut complete = true;
            t.merge(st, ino, after.as_deref(), true, |name, target, kind, cookie| {
                out.push(Listed { name: name.to_vec(), kind, target, cookie });
                complete = out.len() < max;
                complete
            })?;
            // A whole listing in one batch counts the subdirectories on the way (what a
            // directory read page by page by Range gets its link count from).
            if offset == 0 && complete {
                let n = out.iter().filter(|l| matches!(l.target, Target::Dir { .. })).count() as u32;
                Self::dir(st, ino).subdirs = Some(n);
            }
            Ok(out)
        })
    }

    /// A listing needs every layer of the directory's range: fetch the layers of it that
    /// are neither loaded nor local together (as many at once as there are cores, two at
    /// least), instead of one after another as the merge comes to them. The range runs
    /// down to the directory's floor, or, before that is known, to the nearest floor
    /// among its ancestors (the root's range is every layer): a layer that an opaque
    /// marker or whiteout of a layer above turns out to cut is then fetched for nothing,
    /// the one speculation here. A fetch that fails is left for the listing itself to
    /// meet and report. Nothing else is fetched ahead: a lookup still reads layers from
    /// the top down, as far as its answer needs.
    fn fetch_range(&self, ino: Ino) {
        let missing: Vec<usize> = {
            let mut st = self.lock();
            if !Self::is_dir(&st, ino) {
                return;
            }
            let top = Self::dir(&mut st, ino).next;
            let mut at = ino;
            let floor = loop {
                let d = Self::dir(&mut st, at);
                match d.floor {
                    Some(f) => break f,
                    None if at == ROOT => break 0,
                    None => at = d.parent,
                }
            };
            // Top down, as the listing merges them: the first it needs come first.
            (floor..top)
                .rev()
                .map(|l| l as usize)
                .filter(|&l| st.layers[l].is_none() && !self.source.is_local(l))
                .collect()
        };
        if missing.len() < 2 {
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        // Two at least: a fetch waits on the network as much as on a core.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.max(2).min(missing.len());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    while let Some(&l) = missing.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                        if let Ok(toc) = self.source.toc(l) {
                            self.lock().layers[l].get_or_insert(toc);
                        }
                    }
                });
            }
        });
    }

    /// The inode number a listed entry has, or will have once a lookup makes its node:
    /// what a plain readdir gives the kernel, which takes no reference to its entries
    /// and looks each one up before using it. No node is made.
    pub fn ino_of(target: Target) -> Ino {
        match target {
            Target::Dir { layer, node, .. } | Target::Leaf { layer, rec: node } => Self::ino_of_key(layer, node),
            Target::Dot(ino) => ino,
        }
    }

    /// The node of a listed entry, made if needed, without counting a kernel reference:
    /// for callers outside the kernel that go on to ask for its attributes or data.
    /// Such a node stays until the kernel forgets a reference it takes to it or below
    /// it (or the process ends).
    pub fn keep(&self, target: Target) -> TResult<Ino> {
        self.run(|t, st| t.node_of(st, target))
    }

    /// Where a file's data is: its layer's data, and (offset, size) in it.
    pub fn data(&self, ino: Ino) -> TResult<Option<(Arc<LayerData>, u64, u64)>> {
        let (layer, offset, size): (usize, u32, Arc<Toc>) = {
            let st = self.lock();
            match st.nodes.get(&ino).map(|n| &n.kind) {
                Some(NodeKind::Leaf { layer, rec, .. }) => {
                    (*layer as usize, *rec, st.layers[*layer as usize].clone().expect("a leaf's layer is loaded"))
                }
                _ => return Ok(None),
            }
        };
        let (layer, offset, size) = {
            let (layer, rec, toc) = (layer, offset, size);
            // No lock is held: the record's page may be fetched.
            let r = toc.fetching(|t| t.record(rec)).map_err(|e| LayerError::Load { layer, source: Arc::new(e) })?;
            (layer, r.offset(), r.size())
        };
        let data = self.source.data(layer).map_err(LayerError::load(layer))?;
        Ok(Some((data, offset, size)))
    }

    /// Where a non-directory's bytes are: its layer (0 = bottom) and the offset of its
    /// data in that layer's uncompressed tar. Nodes of two images whose layers at those
    /// positions have the same digest, at the same offset, hold the same bytes.
    pub fn data_origin(&self, ino: Ino) -> Option<(usize, u64)> {
        let (layer, rec, toc) = {
            let st = self.lock();
            match st.nodes.get(&ino).map(|n| &n.kind) {
                Some(NodeKind::Leaf { layer, rec, .. }) => (*layer as usize, *rec, st.layers[*layer as usize].clone()?),
                _ => return None,
            }
        };
        // No lock is held: the record's page may be fetched.
        let r = toc.fetching(|t| t.record(rec)).ok()?;
        Some((layer, r.offset()))
    }

    /// Number of live nodes.
    pub fn node_count(&self) -> usize {
        self.lock().nodes.len()
    }

    // ---- internals; all run under the state lock ----

    fn is_live(st: &State, ino: Ino) -> bool {
        st.nodes.contains_key(&ino)
    }

    fn node(st: &mut State, ino: Ino) -> &mut Node {
        st.nodes.get_mut(&ino).expect("callers check that the node is live")
    }

    /// The inode number of the node a (layer, TOC record) key names: a directory's
    /// topmost node, a leaf's data record.
    fn ino_of_key(layer: u32, id: u32) -> Ino {
        (u64::from(layer) + 1) << 32 | u64::from(id)
    }

    fn layer(st: &State, i: u32) -> Step<Arc<Toc>> {
        st.layers[i as usize].clone().ok_or(Stop::Need(i as usize))
    }

    /// Can layer `i` be read without a fetch?
    fn available(&self, st: &State, i: u32) -> bool {
        st.layers[i as usize].is_some() || self.source.is_local(i as usize)
    }

    /// Can the directory's children be counted without a fetch: every layer of its
    /// range local, none read by Range page by page (there a listing counts them)?
    fn range_is_local(&self, st: &mut State, ino: Ino) -> bool {
        let floor = Self::dir(st, ino).floor.unwrap_or(0);
        (floor..self.layer_count()).all(|i| {
            let remote = match &st.layers[i as usize] {
                Some(toc) => toc.is_remote(),
                None => self.source.reads_by_range(i as usize),
            };
            self.available(st, i) && !remote
        })
    }

    fn dir(st: &mut State, ino: Ino) -> &mut DirState {
        match &mut Self::node(st, ino).kind {
            NodeKind::Dir(d) => d,
            _ => unreachable!("caller checked that {ino} is a directory"),
        }
    }

    fn is_dir(st: &State, ino: Ino) -> bool {
        matches!(st.nodes.get(&ino).map(|n| &n.kind), Some(NodeKind::Dir(_)))
    }

    /// The TOC node of directory `ino` in layer `l` (`ABSENT`: the layer has no such
    /// path), found from its parent's.
    fn loc(&self, st: &mut State, ino: Ino, l: u32) -> Step<u32> {
        // The ancestors whose node is not known yet, nearest first: found from the top
        // down, in a loop (paths may be 2000 directories deep).
        let mut chain = vec![ino];
        loop {
            let d = Self::dir(st, *chain.last().expect("not empty"));
            if d.locs[l as usize] != UNKNOWN {
                chain.pop();
                break;
            }
            chain.push(d.parent);
        }
        let mut loc = ABSENT;
        for &i in chain.iter().rev() {
            loc = self.loc_from_parent(st, i, l)?;
        }
        Ok(if chain.is_empty() { Self::dir(st, ino).locs[l as usize] } else { loc })
    }

    /// `loc`, for a directory whose parent's node in layer `l` is known.
    fn loc_from_parent(&self, st: &mut State, ino: Ino, l: u32) -> Step<u32> {
        let d = Self::dir(st, ino);
        let (parent, (kl, kn)) = (d.parent, d.key.expect("only the root has no key, and it knows its nodes"));
        let parent_loc = Self::dir(st, parent).locs[l as usize];
        let loc = if parent_loc == ABSENT {
            ABSENT
        } else {
            let own = Self::layer(st, kl)?;
            let name = own.record(kn).and_then(|r| own.name(&r).map(<[u8]>::to_vec)).map_err(bad(kl))?;
            let toc = Self::layer(st, l)?;
            toc.child(parent_loc, &name).map_err(bad(l))?.unwrap_or(ABSENT)
        };
        Self::dir(st, ino).locs[l as usize] = loc;
        Ok(loc)
    }

    /// Read down to the directory's topmost explicit entry, through local layers only
    /// unless exact attributes were asked for.
    fn find_dir_attrs(&self, st: &mut State, ino: Ino) -> Step<()> {
        loop {
            let d = Self::dir(st, ino);
            if d.attrs_from.is_some() || d.floor.is_some() || d.next == 0 {
                return Ok(());
            }
            let next = d.next - 1;
            if self.dir_attrs == DirAttrs::Provisional && !self.available(st, next) {
                return Ok(());
            }
            self.reaches(st, ino, next)?;
        }
    }

    /// Does directory `ino` know whether layer `l` is in its range?
    fn answers(st: &mut State, ino: Ino, l: u32) -> bool {
        let d = Self::dir(st, ino);
        d.floor.is_some() || d.next <= l
    }

    /// Make `ino` and its ancestors answer for layer `l`, from the top down, in a loop
    /// (paths may be 2000 directories deep): each asks its parent only what it needs.
    fn reach_up(&self, st: &mut State, ino: Ino, l: u32) -> Step<bool> {
        let mut chain = vec![ino];
        let mut i = ino;
        while i != ROOT && !Self::answers(st, i, l) {
            i = Self::dir(st, i).parent;
            chain.push(i);
        }
        for &a in chain.iter().rev() {
            if !Self::answers(st, a, l) {
                self.reaches(st, a, l)?;
            }
        }
        self.reaches(st, ino, l)
    }

    /// Is layer `l` within directory `ino`'s range? Examines layers from the top
    /// down to `l` as needed, asking the parent through `reach_up`.
    fn reaches(&self, st: &mut State, ino: Ino, l: u32) -> Step<bool> {
        loop {
            let d = Self::dir(st, ino);
            if let Some(f) = d.floor {
                return Ok(l >= f);
            }
            if d.next <= l {
                return Ok(true);
            }
            let k = d.next - 1;
            let parent = d.parent;
            if ino != ROOT && !self.reach_up(st, parent, k)? {
                let d = Self::dir(st, ino);
                d.floor = Some(k + 1);
                d.next = k + 1;
                continue;
            }
            let toc = Self::layer(st, k)?;
            let loc = self.loc(st, ino, k)?;
            let r = if loc == ABSENT { None } else { Some(toc.record(loc).map_err(bad(k))?) };
            let d = Self::dir(st, ino);
            d.next = k;
            let present = match r.map(|r| r.presence()) {
                Some(Presence::Entry(Kind::Dir)) => {
                    if d.attrs_from.is_none() {
                        d.attrs_from = Some((k, loc));
                    }
                    true
                }
                Some(Presence::Entry(_)) => {
                    // A non-directory here was replaced by the directory above it.
                    d.floor = Some(k + 1);
                    d.next = k + 1;
                    continue;
                }
                Some(Presence::ImplicitDir) => true,
                Some(Presence::Absent) | None => false,
            };
            if r.is_some_and(|r| r.is_opaque()) {
                d.floor = Some(k);
            } else if r.is_some_and(|r| r.is_whiteout()) {
                d.floor = Some(if present { k } else { k + 1 });
            } else if k == 0 {
                d.floor = Some(0);
            }
        }
    }

    /// What `name` in directory `parent` resolves to, top down.
    fn resolve(&self, st: &mut State, parent: Ino, name: &[u8]) -> Step<Resolved> {
        if !Self::is_dir(st, parent) {
            return Ok(Resolved::Absent);
        }
        for l in (0..self.layer_count()).rev() {
            if !self.reaches(st, parent, l)? {
                break;
            }
            let loc = self.loc(st, parent, l)?;
            if loc == ABSENT {
                continue;
            }
            let toc = Self::layer(st, l)?;
            let Some(child) = toc.child(loc, name).map_err(bad(l))? else { continue };
            if let Some(r) = self.settle(st, parent, l, &toc, child, true)? {
                return Ok(r);
            }
        }
        Ok(Resolved::Absent)
    }

    /// What TOC node `child` of layer `l` (a child of `parent`'s node there) makes of
    /// the name, or `None` to go on to lower layers. With `follow` false a non-directory
    /// is not followed through hard links (what counting subdirectories needs: it is no
    /// directory either way).
    fn settle(
        &self,
        st: &mut State,
        parent: Ino,
        l: u32,
        toc: &Toc,
        child: u32,
        follow: bool,
    ) -> Step<Option<Resolved>> {
        let r = toc.record(child).map_err(bad(l))?;
        Ok(match r.presence() {
            Presence::Entry(Kind::Dir) | Presence::ImplicitDir => {
                Some(Resolved::Target(Target::Dir { parent, layer: l, node: child }))
            }
            Presence::Entry(_) if !follow => Some(Resolved::Target(Target::Leaf { layer: l, rec: child })),
            Presence::Entry(_) => Some(self.leaf(st, l, &r)?),
            Presence::Absent if r.is_whiteout() => Some(Resolved::Absent),
            Presence::Absent => None,
        })
    }

    /// A non-directory entry, followed through hard links to the entry with its data.
    fn leaf(&self, st: &mut State, l: u32, r: &Rec) -> Step<Resolved> {
        match self.data_entry(st, l, r.id, 0)? {
            Some((dl, di)) => Ok(Resolved::Target(Target::Leaf { layer: dl, rec: di })),
            None => {
                let toc = Self::layer(st, l)?;
                let path = toc.entry_path(r).map_err(bad(l))?;
                let link = toc.link(r).map_err(bad(l))?.unwrap_or_default();
                Ok(Resolved::Broken(
                    format!(
                        "hard link {} in layer {l} points at {}, which is not a file of the image at that point",
                        show(&path),
                        show(link)
                    )
                    .into(),
                ))
            }
        }
    }

    /// The node for a target, made if it is not there.
    fn node_of(&self, st: &mut State, target: Target) -> Step<Ino> {
        let ino = Self::ino_of(target);
        if let Target::Dot(ino) = target {
            if Self::is_live(st, ino) {
                return Ok(ino);
            }
            return Err(Stop::Fail(LayerError::Broken(format!("inode {ino} is gone").into())));
        }
        if st.nodes.contains_key(&ino) {
            return Ok(ino);
        }
        let kind = match target {
            Target::Dir { parent, layer, node } => {
                if !Self::is_dir(st, parent) {
                    return Err(Stop::Fail(LayerError::Broken("a listed directory's parent is gone".into())));
                }
                // Layers above `layer` have no entry at this path (else the lookup would
                // have stopped there), but may still carry a whiteout or an opaque
                // marker inside it (`a/.wh.x` with no `a/`): they are examined like the
                // rest, from the top. The lookup has loaded them already.
                let n = self.layer_count();
                let mut locs = vec![UNKNOWN; n as usize];
                locs[layer as usize] = node;
                // Its own entry here is its topmost explicit one (none is above): taken
                // now, so that an opaque marker above, which ends its range there, does
                // not leave it with no attributes.
                let toc = Self::layer(st, layer)?;
                let explicit = toc.record(node).map_err(bad(layer))?.presence() == Presence::Entry(Kind::Dir);
                Self::node(st, parent).children += 1;
                NodeKind::Dir(Box::new(DirState {
                    parent,
                    key: Some((layer, node)),
                    next: n,
                    floor: None,
                    attrs_from: explicit.then_some((layer, node)),
                    locs: locs.into(),
                    subdirs: None,
                }))
            }
            Target::Dot(_) => unreachable!("handled above"),
            Target::Leaf { layer, rec } => {
                // Decided once, here, where every layer above the data has just been
                // read, rather than on each getattr.
                let nlink = if self.may_be_linked(st, layer, rec)? { 0 } else { 1 };
                NodeKind::Leaf { layer, rec, nlink }
            }
        };
        st.nodes.insert(ino, Node { kind, refs: 0, children: 0 });
        Ok(ino)
    }

    /// A hard link resolves to its target as the stream had it when the link was
    /// read: an earlier entry of the same layer, else the path in the layers below,
    /// down to layer `floor` at the lowest. `None`: the target is not there.
    fn data_entry(&self, st: &mut State, l: u32, i: u32, floor: u32) -> Step<Option<(u32, u32)>> {
        let toc = Self::layer(st, l)?;
        let r = toc.record(i).map_err(bad(l))?;
        match r.kind() {
            Some(Kind::Dir) | None => return Ok(None), // a hard link to a directory
            Some(Kind::Hardlink) => {}
            Some(_) => return Ok(Some((l, i))),
        }
        if let Some(t) = toc.link_target(&r).map_err(bad(l))? {
            // The earlier entry may itself be a link to a lower layer.
            return self.data_entry(st, l, t.id, floor);
        }
        let target = toc.link(&r).map_err(bad(l))?.unwrap_or_default().to_vec();
        let names: Vec<&[u8]> = target.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        for k in (floor..l).rev() {
            let lower = Self::layer(st, k)?;
            // Down to the target in layer k. A directory on the way that this layer
            // whites out, makes opaque or replaces by a non-directory hides the target
            // in the layers below, as it does for the union.
            let mut node = lower.root();
            let mut hides_below = lower.record(node).map_err(bad(k))?.is_opaque();
            let mut found = None;
            for (j, name) in names.iter().enumerate() {
                let Some(child) = lower.child(node, name).map_err(bad(k))? else { break };
                let c = lower.record(child).map_err(bad(k))?;
                if j + 1 == names.len() {
                    found = Some(c);
                    break;
                }
                if matches!(c.presence(), Presence::Entry(kind) if kind != Kind::Dir) {
                    hides_below = true;
                    break;
                }
                hides_below |= c.is_whiteout() || c.is_opaque();
                node = child;
            }
            if let Some(t) = found {
                match t.presence() {
                    Presence::Entry(kind) if kind != Kind::Dir => return self.data_entry(st, k, t.id, floor),
                    Presence::Entry(_) | Presence::ImplicitDir => break,
                    Presence::Absent if t.is_whiteout() => break,
                    Presence::Absent => {}
                }
            }
            if hides_below {
                break;
            }
        }
        Ok(None)
    }

    /// Walk the children of directory `ino` in every layer of its range, merged by
    /// name from after `after` on, and hand each visible one to `each` (with its kind
    /// and cookie) until it says stop.
    fn merge(
        &self,
        st: &mut State,
        ino: Ino,
        after: Option<&[u8]>,
        follow: bool,
        mut each: impl FnMut(&[u8], Target, Kind, u64) -> bool,
    ) -> Step<()> {
        // The layers in range, top down, and where each one's children are read from.
        let mut cursors: Vec<(u32, Arc<Toc>, u32, u32)> = Vec::new();
        for l in (0..self.layer_count()).rev() {
            if !self.reaches(st, ino, l)? {
                break;
            }
            let loc = self.loc(st, ino, l)?;
            if loc == ABSENT {
                continue;
            }
            let toc = Self::layer(st, l)?;
            let range = toc.children(loc).map_err(bad(l))?;
            let start = match after {
                Some(name) => {
                    let at = toc.lower_bound(loc, name).map_err(bad(l))?;
                    let same =
                        at < range.end && toc.record(at).and_then(|r| Ok(toc.name(&r)? == name)).map_err(bad(l))?;
                    at + u32::from(same)
                }
                None => range.start,
            };
            cursors.push((l, toc, start, range.end));
        }
        // Each cursor's current name, read once.
        let name_at =
            |l: u32, toc: &Toc, at: u32| toc.record(at).and_then(|r| toc.name(&r).map(<[u8]>::to_vec)).map_err(bad(l));
        let mut heads: Vec<Option<Vec<u8>>> = Vec::with_capacity(cursors.len());
        for (l, toc, at, end) in &cursors {
            heads.push(if at < end { Some(name_at(*l, toc, *at)?) } else { None });
        }
        loop {
            // The smallest name at any cursor.
            let Some(name) = heads.iter().flatten().min().cloned() else { return Ok(()) };
            // Every layer holding it, top down: its node there.
            let mut found: Vec<(u32, u32)> = Vec::new();
            for ((l, toc, at, end), head) in cursors.iter_mut().zip(heads.iter_mut()) {
                if head.as_deref() == Some(&name[..]) {
                    found.push((*l, *at));
                    *at += 1;
                    *head = if at < end { Some(name_at(*l, toc, *at)?) } else { None };
                }
            }
            let mut resolved = Resolved::Absent;
            for &(l, child) in &found {
                let toc = Self::layer(st, l)?;
                if let Some(r) = self.settle(st, ino, l, &toc, child, follow)? {
                    resolved = r;
                    break;
                }
            }
            let (l, node) = found[0];
            match resolved {
                Resolved::Target(target) => {
                    let kind = match target {
                        Target::Dir { .. } | Target::Dot(_) => Kind::Dir,
                        Target::Leaf { .. } if !follow => Kind::File,
                        Target::Leaf { layer, rec } => {
                            let toc = Self::layer(st, layer)?;
                            toc.record(rec).map_err(bad(layer))?.kind().unwrap_or(Kind::File)
                        }
                    };
                    if !each(&name, target, kind, cookie(l, node)) {
                        return Ok(());
                    }
                }
                Resolved::Absent => {}
                Resolved::Broken(why) => tracing::warn!("{} left out of its directory: {why}", show(&name)),
            }
        }
    }

    /// Count the visible subdirectories of `ino` (for its link count).
    fn count_subdirs(&self, st: &mut State, ino: Ino) -> Step<u32> {
        let mut n = 0;
        self.merge(st, ino, None, false, |_, _, kind, _| {
            n += u32::from(kind == Kind::Dir);
            true
        })?;
        Ok(n)
    }

    fn info_locked(&self, st: &mut State, ino: Ino) -> Step<NodeInfo> {
        match &Self::node(st, ino).kind {
            NodeKind::Dir(d) => {
                if d.subdirs.is_none() && self.range_is_local(st, ino) {
                    let n = self.count_subdirs(st, ino)?;
                    Self::dir(st, ino).subdirs = Some(n);
                }
                self.find_dir_attrs(st, ino)?;
                let d = Self::dir(st, ino);
                let (attrs_from, subdirs) = (d.attrs_from, d.subdirs);
                // Known once the topmost explicit entry is found, or once every layer
                // in range has been read and none has one.
                let explicit_known = attrs_from.is_some() || d.floor.is_some() || d.next == 0;
                let (mode, uid, gid, mtime, xattrs) = match attrs_from {
                    Some((l, i)) => {
                        let toc = Self::layer(st, l)?;
                        let r = toc.record(i).map_err(bad(l))?;
                        (r.mode, r.uid, r.gid, r.mtime, toc.xattrs(&r).map_err(bad(l))?)
                    }
                    // A directory no layer has an entry for (a parent left out of the
                    // tar) gets the attributes tar extractors give it; so does one whose
                    // entry is in a layer not read yet, provisionally.
                    None => (0o755, 0, 0, 0, Vec::new()),
                };
                Ok(NodeInfo {
                    ino,
                    kind: Kind::Dir,
                    mode,
                    uid,
                    gid,
                    size: 4096,
                    mtime,
                    rdev: (0, 0),
                    nlink: 2 + subdirs.unwrap_or(0),
                    link: None,
                    xattrs,
                    settled: subdirs.is_some() && explicit_known,
                })
            }
            NodeKind::Leaf { layer, rec, nlink } => {
                let (layer, rec, nlink) = (*layer, *rec, *nlink);
                let nlink = match nlink {
                    0 => {
                        let n = self.count_links(st, layer, rec)?;
                        if let NodeKind::Leaf { nlink, .. } = &mut Self::node(st, ino).kind {
                            *nlink = n;
                        }
                        n
                    }
                    n => n,
                };
                let toc = Self::layer(st, layer)?;
                let r = toc.record(rec).map_err(bad(layer))?;
                let kind = r.kind().unwrap_or(Kind::File);
                let link = toc.link(&r).map_err(bad(layer))?.map(<[u8]>::to_vec);
                Ok(NodeInfo {
                    ino,
                    kind,
                    mode: r.mode,
                    uid: r.uid,
                    gid: r.gid,
                    size: match kind {
                        Kind::Symlink => link.as_ref().map_or(0, |l| l.len() as u64),
                        _ => r.size(),
                    },
                    mtime: r.mtime,
                    rdev: r.rdev(),
                    nlink,
                    link,
                    xattrs: toc.xattrs(&r).map_err(bad(layer))?,
                    settled: true,
                })
            }
        }
    }

    /// Could some other visible name share this leaf? Only hard links make that so:
    /// one in the leaf's own layer, or one above it that points at its path. Every
    /// layer above the leaf has been read by the lookup that found it.
    fn may_be_linked(&self, st: &mut State, layer: u32, rec: u32) -> Step<bool> {
        let toc = Self::layer(st, layer)?;
        let r = toc.record(rec).map_err(bad(layer))?;
        if r.is_linked() {
            return Ok(true);
        }
        // Most layers link to nothing below them: no path to build then.
        let mut uppers = Vec::new();
        for k in layer + 1..self.layer_count() {
            let upper = Self::layer(st, k)?;
            if upper.has_lower_links() {
                uppers.push(k);
            }
        }
        if uppers.is_empty() {
            return Ok(false);
        }
        let path = toc.entry_path(&r).map_err(bad(layer))?;
        for k in uppers {
            let upper = Self::layer(st, k)?;
            if let Some(node) = upper.lookup(&path).map_err(bad(k))? {
                if upper.record(node).map_err(bad(k))?.has_lower_links() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The visible names of the hard-link group whose data is record `di` of layer
    /// `dl`. A name of the group is either in layer `dl` (the data entry, or a link to
    /// it) or a link in a higher layer to a path that was a name of the group below it,
    /// so only layers `dl` and up are read: the ones the lookup that found the node has
    /// read. A candidate name counts if the union resolves it to the same data.
    fn count_links(&self, st: &mut State, dl: u32, di: u32) -> Step<u32> {
        let base = Self::layer(st, dl)?;
        let mut names: HashSet<Vec<u8>> = HashSet::new();
        let data = base.record(di).map_err(bad(dl))?;
        names.extend(base.final_path(di).map_err(bad(dl))?);
        for i in base.links_to(&data).map_err(bad(dl))? {
            names.extend(base.final_path(i).map_err(bad(dl))?);
        }
        for k in dl + 1..self.layer_count() {
            let toc = Self::layer(st, k)?;
            let mut found = Vec::new();
            for target in names.iter() {
                let Some(node) = toc.lookup(target).map_err(bad(k))? else { continue };
                let r = toc.record(node).map_err(bad(k))?;
                for li in toc.links_to_lower(&r).map_err(bad(k))? {
                    if self.data_entry(st, k, li, dl)? == Some((dl, di)) {
                        found.extend(toc.final_path(li).map_err(bad(k))?);
                        let lr = toc.record(li).map_err(bad(k))?;
                        for i in toc.links_to(&lr).map_err(bad(k))? {
                            found.extend(toc.final_path(i).map_err(bad(k))?);
                        }
                    }
                }
            }
            names.extend(found);
        }
        let mut visible = 0;
        for path in names {
            if self.resolve_path(st, &path)? == Some(Target::Leaf { layer: dl, rec: di }) {
                visible += 1;
            }
        }
        Ok(visible.max(1))
    }

    /// What a path resolves to from the root. The directories on the way get nodes
    /// (held by no kernel reference: they go when the kernel forgets one below them).
    fn resolve_path(&self, st: &mut State, path: &[u8]) -> Step<Option<Target>> {
        let mut ino = ROOT;
        let mut last = None;
        let mut made = Vec::new();
        let result = (|| {
            for name in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
                if last.is_some() {
                    last = None; // a component under a non-directory
                    break;
                }
                match self.resolve(st, ino, name)? {
                    Resolved::Target(t @ Target::Dir { layer, node, .. }) => {
                        let existed = st.nodes.contains_key(&Self::ino_of_key(layer, node));
                        ino = self.node_of(st, t)?;
                        if !existed {
                            made.push(ino);
                        }
                    }
                    Resolved::Target(t) => last = Some(t),
                    Resolved::Absent | Resolved::Broken(_) => break,
                }
            }
            Ok(last)
        })();
        // The directories made on the way go again, deepest first, if no one holds them
        // meanwhile; only those: a node made before (for a listing, say, whose caller
        // holds no reference) stays.
        for ino in made.into_iter().rev() {
            if !Self::unmake(st, ino) {
                break;
            }
        }
        result
    }
}
