//! The union of an image's layers, resolved lazily.
//!
//! Nodes live in a flat table and a node's inode number is its index + 1, so the
//! root is inode 1 (FUSE's root). Directories are keyed by path; everything else by
//! the layer entry that holds its data, so that the names of a hard-link group share
//! one node (and one `st_ino`).
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
//! Locking: one mutex guards the node table, and nothing slow happens under it. An
//! operation runs under the lock until it needs a layer whose index is not loaded;
//! then it drops the lock, waits for that layer alone (the `LayerSource` loads each
//! layer once), and runs again from the start. The parts of the state it updated
//! before stopping are complete facts, so a rerun only goes faster. Operations that
//! don't need that layer never wait for it.

use crate::layer::{join, show, Entry, Kind, LayerData, LayerIndex, Presence};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a layer source could not give a layer: whatever its own error type (a fetch,
/// an index, a test's), with its causes.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where layers come from: the store (fetching from the registry on first use), or
/// tarballs in memory in tests.
pub trait LayerSource: Send + Sync {
    fn layer_count(&self) -> usize;
    /// The index of layer `i` (0 = bottom), fetching and indexing it if needed. May
    /// take as long as a download; the tree never calls it under its lock.
    fn index(&self, i: usize) -> Result<Arc<LayerIndex>, SourceError>;
    /// Random access to layer `i`'s uncompressed tar. Only called after `index(i)`.
    fn data(&self, i: usize) -> Result<Arc<LayerData>, SourceError>;
    /// Is layer `i` available without a fetch? Answers at once, never waiting for a
    /// fetch in progress.
    fn is_local(&self, i: usize) -> bool;
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

struct DirState {
    path: Vec<u8>,
    parent: Ino,
    /// Layers with index >= next have been examined for this directory (next may be
    /// 0 and `floor` set when done).
    next: usize,
    floor: Option<usize>,
    /// Topmost explicit entry (layer, entry index): the directory's attributes.
    attrs_from: Option<(usize, u32)>,
    lookups: HashMap<Vec<u8>, Child>,
    /// Set by the first listing: every visible child, by name.
    listing: Option<Arc<BTreeMap<Vec<u8>, Ino>>>,
}

/// What a name in a directory resolves to.
#[derive(Clone)]
enum Child {
    Node(Ino),
    Absent,
    /// An entry the image has but that can't be served: a hard link whose target is
    /// missing at that point of the stream, or is a directory. That name alone fails
    /// (EIO, with this reason); listings leave it out, and the rest of the image is served.
    Broken(Arc<str>),
}

enum NodeKind {
    Dir(DirState),
    /// A non-directory: its data lives in entry `entry` of layer `layer`. `nlink` is
    /// known at once for a leaf no hard link can name again, and counted on the first
    /// getattr otherwise.
    Leaf {
        layer: usize,
        entry: u32,
        nlink: Option<u32>,
    },
}

struct Node {
    kind: NodeKind,
}

struct State {
    nodes: Vec<Node>,
    dirs: HashMap<Vec<u8>, Ino>,
    leaves: HashMap<(usize, u32), Ino>,
    /// Layer indexes loaded so far; `None` until an operation needs the layer.
    layers: Vec<Option<Arc<LayerIndex>>>,
}

pub struct Tree {
    source: Arc<dyn LayerSource>,
    dir_attrs: DirAttrs,
    state: Mutex<State>,
}

/// Why the tree can't answer; the filesystem answers EIO.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LayerError {
    /// Layer `layer` (0 = bottom) could not be loaded; the cause, shared (an `Arc`) so
    /// one failure can be answered to every operation that needed the layer.
    #[error("layer {layer}")]
    Load {
        layer: usize,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A name the image has but can't serve (see `Child::Broken`), and why.
    #[error("{0}")]
    Broken(Arc<str>),
}

impl LayerError {
    fn load(layer: usize) -> impl FnOnce(SourceError) -> LayerError {
        move |e| LayerError::Load { layer, source: Arc::from(e) }
    }
}

type TResult<T> = std::result::Result<T, LayerError>;

/// Why a step under the lock stopped short.
enum Stop {
    /// Layer k's index is not loaded: load it with the lock released, then rerun.
    Need(usize),
    Fail(LayerError),
}

type Step<T> = std::result::Result<T, Stop>;

impl Tree {
    pub fn new(source: Arc<dyn LayerSource>, dir_attrs: DirAttrs) -> Tree {
        let n = source.layer_count();
        let root = Node {
            kind: NodeKind::Dir(DirState {
                path: Vec::new(),
                parent: ROOT,
                next: n,
                floor: if n == 0 { Some(0) } else { None },
                attrs_from: None,
                lookups: HashMap::new(),
                listing: None,
            }),
        };
        let mut dirs = HashMap::new();
        dirs.insert(Vec::new(), ROOT);
        Tree {
            source,
            dir_attrs,
            state: Mutex::new(State { nodes: vec![root], dirs, leaves: HashMap::new(), layers: vec![None; n] }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `op` under the lock; whenever it needs a layer that is not loaded, load that
    /// layer with the lock released and run `op` again.
    fn run<T>(&self, mut op: impl FnMut(&Self, &mut State) -> Step<T>) -> TResult<T> {
        loop {
            let need = {
                let mut st = self.lock();
                match op(self, &mut st) {
                    Ok(v) => return Ok(v),
                    Err(Stop::Fail(e)) => return Err(e),
                    Err(Stop::Need(k)) => k,
                }
            };
            let idx = self.source.index(need).map_err(LayerError::load(need))?;
            self.lock().layers[need].get_or_insert(idx);
        }
    }

    /// Find `name` in directory `parent`. `Ok(None)`: no such entry.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> TResult<Option<Ino>> {
        self.run(|t, st| match t.lookup_locked(st, parent, name)? {
            Child::Node(ino) => Ok(Some(ino)),
            Child::Absent => Ok(None),
            Child::Broken(why) => Err(Stop::Fail(LayerError::Broken(why))),
        })
    }

    /// Attributes of a node. Directories whose layers are all local are listed
    /// first, so their link count is exact; otherwise the answer is marked unsettled
    /// rather than fetching layers just to count subdirectories.
    pub fn info(&self, ino: Ino) -> TResult<Option<NodeInfo>> {
        self.run(|t, st| {
            if ino == 0 || ino as usize > st.nodes.len() {
                return Ok(None);
            }
            if Self::is_dir(st, ino) {
                if Self::dir(st, ino).listing.is_none() && t.range_is_local(st, ino) {
                    t.list_locked(st, ino)?;
                }
                t.find_dir_attrs(st, ino)?;
            }
            t.info_locked(st, ino).map(Some)
        })
    }

    /// Every visible child of a directory, by name, with its type.
    pub fn list(&self, ino: Ino) -> TResult<Vec<(Vec<u8>, Ino, Kind)>> {
        self.run(|t, st| {
            let listing = t.list_locked(st, ino)?;
            let mut out = Vec::with_capacity(listing.len());
            for (name, &child) in listing.iter() {
                let kind = Self::kind_locked(st, child).expect("a listed child's layer is loaded");
                out.push((name.clone(), child, kind));
            }
            Ok(out)
        })
    }

    pub fn parent(&self, ino: Ino) -> Ino {
        let st = self.lock();
        match st.nodes.get((ino.wrapping_sub(1)) as usize).map(|n| &n.kind) {
            Some(NodeKind::Dir(d)) => d.parent,
            _ => ROOT,
        }
    }

    /// Read file data: returns the layer data and the entry to read from.
    pub fn data(&self, ino: Ino) -> TResult<Option<(Arc<LayerData>, Entry)>> {
        let (layer, entry) = {
            let st = self.lock();
            match st.nodes.get((ino.wrapping_sub(1)) as usize).map(|n| &n.kind) {
                Some(NodeKind::Leaf { layer, entry, .. }) => {
                    let idx = st.layers[*layer].clone().expect("a leaf's layer is loaded");
                    (*layer, idx.entry(*entry).clone())
                }
                _ => return Ok(None),
            }
        };
        let data = self.source.data(layer).map_err(LayerError::load(layer))?;
        Ok(Some((data, entry)))
    }

    /// Where a non-directory's bytes are: its layer (0 = bottom) and the offset of its
    /// data in that layer's uncompressed tar. Nodes of two images whose layers at those
    /// positions have the same digest, at the same offset, hold the same bytes.
    pub fn data_origin(&self, ino: Ino) -> Option<(usize, u64)> {
        let st = self.lock();
        match st.nodes.get((ino.wrapping_sub(1)) as usize).map(|n| &n.kind) {
            Some(NodeKind::Leaf { layer, entry, .. }) => {
                st.layers[*layer].as_ref().map(|idx| (*layer, idx.entry(*entry).offset))
            }
            _ => None,
        }
    }

    /// Number of nodes created so far.
    pub fn node_count(&self) -> usize {
        self.lock().nodes.len()
    }

    // ---- internals; all run under the state lock ----

    fn kind_locked(st: &State, ino: Ino) -> Option<Kind> {
        match &st.nodes.get((ino.wrapping_sub(1)) as usize)?.kind {
            NodeKind::Dir(_) => Some(Kind::Dir),
            // A leaf is only made once its layer is loaded.
            NodeKind::Leaf { layer, entry, .. } => st.layers[*layer].as_ref().map(|idx| idx.entry(*entry).kind),
        }
    }

    fn layer(st: &State, i: usize) -> Step<Arc<LayerIndex>> {
        st.layers[i].clone().ok_or(Stop::Need(i))
    }

    /// Can layer `i` be read without a fetch?
    fn available(&self, st: &State, i: usize) -> bool {
        st.layers[i].is_some() || self.source.is_local(i)
    }

    fn range_is_local(&self, st: &mut State, ino: Ino) -> bool {
        let floor = Self::dir(st, ino).floor.unwrap_or(0);
        (floor..self.source.layer_count()).all(|i| self.available(st, i))
    }

    fn dir(st: &mut State, ino: Ino) -> &mut DirState {
        match &mut st.nodes[(ino - 1) as usize].kind {
            NodeKind::Dir(d) => d,
            NodeKind::Leaf { .. } => unreachable!("caller checked that {ino} is a directory"),
        }
    }

    fn is_dir(st: &State, ino: Ino) -> bool {
        matches!(st.nodes.get((ino.wrapping_sub(1)) as usize).map(|n| &n.kind), Some(NodeKind::Dir(_)))
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

    /// Is layer `l` within directory `ino`'s range? Examines layers from the top
    /// down to `l` as needed.
    fn reaches(&self, st: &mut State, ino: Ino, l: usize) -> Step<bool> {
        loop {
            let d = Self::dir(st, ino);
            if let Some(f) = d.floor {
                return Ok(l >= f);
            }
            if d.next <= l {
                return Ok(true);
            }
            let k = d.next - 1;
            let (path, parent) = (d.path.clone(), d.parent);
            if ino != ROOT && !self.reaches(st, parent, k)? {
                let d = Self::dir(st, ino);
                d.floor = Some(k + 1);
                d.next = k + 1;
                continue;
            }
            let idx = Self::layer(st, k)?;
            let d = Self::dir(st, ino);
            d.next = k;
            let present = match idx.presence(&path) {
                Presence::Entry(e) if e.kind == Kind::Dir => {
                    if d.attrs_from.is_none() {
                        d.attrs_from = idx.entry_index(&path).map(|i| (k, i));
                    }
                    true
                }
                Presence::Entry(_) => {
                    // A non-directory here was replaced by the directory above it.
                    d.floor = Some(k + 1);
                    d.next = k + 1;
                    continue;
                }
                Presence::ImplicitDir => true,
                Presence::Absent => false,
            };
            if idx.is_opaque(&path) {
                d.floor = Some(k);
            } else if idx.is_whiteout(&path) {
                d.floor = Some(if present { k } else { k + 1 });
            } else if k == 0 {
                d.floor = Some(0);
            }
        }
    }

    fn lookup_locked(&self, st: &mut State, parent: Ino, name: &[u8]) -> Step<Child> {
        if !Self::is_dir(st, parent) {
            return Ok(Child::Absent);
        }
        if let Some(hit) = Self::dir(st, parent).lookups.get(name) {
            return Ok(hit.clone());
        }
        let child = join(&Self::dir(st, parent).path, name);
        let mut found = Child::Absent;
        for l in (0..self.source.layer_count()).rev() {
            if !self.reaches(st, parent, l)? {
                break;
            }
            let idx = Self::layer(st, l)?;
            match idx.presence(&child) {
                Presence::Entry(e) if e.kind != Kind::Dir => {
                    let i = idx.entry_index(&child).expect("present");
                    found = self.leaf_node(st, l, i)?;
                    break;
                }
                Presence::Entry(_) | Presence::ImplicitDir => {
                    found = Child::Node(self.dir_node(st, &child, parent, l));
                    break;
                }
                Presence::Absent if idx.is_whiteout(&child) => break,
                Presence::Absent => {}
            }
        }
        Self::dir(st, parent).lookups.insert(name.to_vec(), found.clone());
        Ok(found)
    }

    /// The node a path resolves to from the root, if any.
    fn resolve_locked(&self, st: &mut State, path: &[u8]) -> Step<Option<Ino>> {
        let mut ino = ROOT;
        for name in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            match self.lookup_locked(st, ino, name)? {
                Child::Node(child) => ino = child,
                Child::Absent | Child::Broken(_) => return Ok(None),
            }
        }
        Ok(Some(ino))
    }

    fn dir_node(&self, st: &mut State, path: &[u8], parent: Ino, top: usize) -> Ino {
        if let Some(&ino) = st.dirs.get(path) {
            return ino;
        }
        st.nodes.push(Node {
            kind: NodeKind::Dir(DirState {
                path: path.to_vec(),
                parent,
                next: top + 1,
                floor: None,
                attrs_from: None,
                lookups: HashMap::new(),
                listing: None,
            }),
        });
        let ino = st.nodes.len() as Ino;
        st.dirs.insert(path.to_vec(), ino);
        ino
    }

    /// The node for entry `i` of layer `l`, following hard links to the entry that
    /// holds the data.
    fn leaf_node(&self, st: &mut State, l: usize, i: u32) -> Step<Child> {
        let Some((dl, di)) = self.data_entry(st, l, i, 0)? else {
            let e = Self::layer(st, l)?.entry(i).clone();
            return Ok(Child::Broken(
                format!(
                    "hard link {} in layer {l} points at {}, which is not a file of the image at that point",
                    show(&e.path),
                    show(&e.link.unwrap_or_default())
                )
                .into(),
            ));
        };
        if let Some(&ino) = st.leaves.get(&(dl, di)) {
            return Ok(Child::Node(ino));
        }
        // Decided once, here, where every layer above the data has just been read,
        // rather than on each getattr.
        let nlink = if self.may_be_linked(st, dl, di)? { None } else { Some(1) };
        st.nodes.push(Node { kind: NodeKind::Leaf { layer: dl, entry: di, nlink } });
        let ino = st.nodes.len() as Ino;
        st.leaves.insert((dl, di), ino);
        Ok(Child::Node(ino))
    }

    /// A hard link resolves to its target as the stream had it when the link was
    /// read: an earlier entry of the same layer, else the path in the layers below,
    /// down to layer `floor` at the lowest. `None`: the target is not there.
    fn data_entry(&self, st: &mut State, l: usize, i: u32, floor: usize) -> Step<Option<(usize, u32)>> {
        let idx = Self::layer(st, l)?;
        let e = idx.entry(i);
        if e.kind == Kind::Dir {
            return Ok(None); // a hard link to a directory
        }
        if e.kind != Kind::Hardlink {
            return Ok(Some((l, i)));
        }
        if let Some(t) = e.link_entry {
            // The earlier entry may itself be a link to a lower layer.
            return self.data_entry(st, l, t, floor);
        }
        let target = e.link.clone().unwrap_or_default();
        for k in (floor..l).rev() {
            let lower = Self::layer(st, k)?;
            match lower.presence(&target) {
                Presence::Entry(t) if t.kind != Kind::Dir => {
                    let ti = lower.entry_index(&target).expect("present");
                    return self.data_entry(st, k, ti, floor);
                }
                Presence::Entry(_) | Presence::ImplicitDir => break,
                Presence::Absent if lower.is_whiteout(&target) => break,
                Presence::Absent => {}
            }
        }
        Ok(None)
    }

    fn list_locked(&self, st: &mut State, ino: Ino) -> Step<Arc<BTreeMap<Vec<u8>, Ino>>> {
        if !Self::is_dir(st, ino) {
            return Ok(Arc::default());
        }
        if let Some(l) = &Self::dir(st, ino).listing {
            return Ok(Arc::clone(l));
        }
        let path = Self::dir(st, ino).path.clone();
        let mut names = BTreeSet::new();
        for l in (0..self.source.layer_count()).rev() {
            if !self.reaches(st, ino, l)? {
                break;
            }
            let idx = Self::layer(st, l)?;
            names.extend(idx.children(&path).iter().cloned());
        }
        let mut listing = BTreeMap::new();
        for name in names {
            match self.lookup_locked(st, ino, &name)? {
                Child::Node(child) => {
                    listing.insert(name, child);
                }
                Child::Absent => {}
                // Logged once: the listing is kept.
                Child::Broken(why) => tracing::warn!("{} left out of its directory: {why}", show(&name)),
            }
        }
        let listing = Arc::new(listing);
        Self::dir(st, ino).listing = Some(Arc::clone(&listing));
        Ok(listing)
    }

    fn info_locked(&self, st: &mut State, ino: Ino) -> Step<NodeInfo> {
        match &st.nodes[(ino - 1) as usize].kind {
            NodeKind::Dir(d) => {
                let attrs_from = d.attrs_from;
                let listing = d.listing.clone();
                // Known once the topmost explicit entry is found, or once every layer
                // in range has been read and none has one.
                let explicit_known = attrs_from.is_some() || d.floor.is_some() || d.next == 0;
                let (mode, uid, gid, mtime, xattrs) = match attrs_from {
                    Some((l, i)) => {
                        let e = Self::layer(st, l)?.entry(i).clone();
                        (e.mode, e.uid, e.gid, e.mtime, e.xattrs)
                    }
                    // A directory no layer has an entry for (a parent left out of the
                    // tar) gets the attributes tar extractors give it; so does one whose
                    // entry is in a layer not read yet, provisionally.
                    None => (0o755, 0, 0, 0, Vec::new()),
                };
                let subdirs =
                    listing.as_ref().map(|l| l.values().filter(|c| Self::is_dir(st, **c)).count() as u32).unwrap_or(0);
                Ok(NodeInfo {
                    ino,
                    kind: Kind::Dir,
                    mode,
                    uid,
                    gid,
                    size: 4096,
                    mtime,
                    rdev: (0, 0),
                    nlink: 2 + subdirs,
                    link: None,
                    xattrs,
                    settled: listing.is_some() && explicit_known,
                })
            }
            NodeKind::Leaf { layer, entry, nlink } => {
                let (layer, entry, nlink) = (*layer, *entry, *nlink);
                let nlink = match nlink {
                    Some(n) => n,
                    None => {
                        let n = self.count_links(st, ino, layer, entry)?;
                        if let NodeKind::Leaf { nlink, .. } = &mut st.nodes[(ino - 1) as usize].kind {
                            *nlink = Some(n);
                        }
                        n
                    }
                };
                let idx = Self::layer(st, layer)?;
                let e = idx.entry(entry);
                Ok(NodeInfo {
                    ino,
                    kind: e.kind,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    size: match e.kind {
                        Kind::Symlink => e.link.as_ref().map_or(0, |l| l.len() as u64),
                        _ => e.size,
                    },
                    mtime: e.mtime,
                    rdev: e.rdev,
                    nlink,
                    link: e.link.clone(),
                    xattrs: e.xattrs.clone(),
                    settled: true,
                })
            }
        }
    }

    /// Could some other visible name share this leaf? Only hard links make that so:
    /// one in the leaf's own layer, or one above it that points at its path. Every
    /// layer above the leaf has been read by the lookup that found it.
    fn may_be_linked(&self, st: &mut State, layer: usize, entry: u32) -> Step<bool> {
        let idx = Self::layer(st, layer)?;
        if idx.is_linked(entry) {
            return Ok(true);
        }
        let path = &idx.entry(entry).path;
        for k in layer + 1..self.source.layer_count() {
            if !Self::layer(st, k)?.links_to_lower(path).is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The visible names of the hard-link group whose data is entry `di` of layer `dl`
    /// (node `ino`). A name of the group is either in layer `dl` (the data entry, or a
    /// link to it) or a link in a higher layer to a path that was a name of the group
    /// below it, so only layers `dl` and up are read: the ones the lookup that found
    /// the node has read. A candidate name counts if the union resolves it to `ino`.
    fn count_links(&self, st: &mut State, ino: Ino, dl: usize, di: u32) -> Step<u32> {
        let base = Self::layer(st, dl)?;
        let mut names: HashSet<Vec<u8>> = HashSet::new();
        for i in std::iter::once(di).chain(base.links_to(di).iter().copied()) {
            names.extend(base.final_path(i));
        }
        for k in dl + 1..self.source.layer_count() {
            let idx = Self::layer(st, k)?;
            let mut found = Vec::new();
            for target in names.iter() {
                for &li in idx.links_to_lower(target) {
                    if self.data_entry(st, k, li, dl)? == Some((dl, di)) {
                        found.extend(idx.final_path(li));
                        found.extend(idx.links_to(li).iter().filter_map(|&i| idx.final_path(i)));
                    }
                }
            }
            names.extend(found);
        }
        let mut visible = 0;
        for path in names {
            if self.resolve_locked(st, &path)? == Some(ino) {
                visible += 1;
            }
        }
        Ok(visible.max(1))
    }
}
