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

use crate::layer::{join, Entry, Kind, LayerData, LayerIndex, Presence};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where layers come from: the store (fetching from the registry on first use), or
/// tarballs in memory in tests.
pub trait LayerSource: Send + Sync {
    fn layer_count(&self) -> usize;
    /// The index of layer `i` (0 = bottom), fetching and indexing it if needed.
    fn index(&self, i: usize) -> Result<Arc<LayerIndex>>;
    /// Random access to layer `i`'s uncompressed tar. Only called after `index(i)`.
    fn data(&self, i: usize) -> Result<Arc<LayerData>>;
    /// Is layer `i` available without a fetch?
    fn is_local(&self, i: usize) -> bool;
}

pub type Ino = u64;
pub const ROOT: Ino = 1;

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
    pub link: Option<String>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// False while the attributes may still change as more layers are read (a
    /// directory's link count before all its layers are known): serve with no cache.
    pub settled: bool,
}

struct DirState {
    path: String,
    parent: Ino,
    /// Layers with index >= next have been examined for this directory (next may be
    /// 0 and `floor` set when done).
    next: usize,
    floor: Option<usize>,
    /// Topmost explicit entry (layer, entry index): the directory's attributes.
    attrs_from: Option<(usize, u32)>,
    lookups: HashMap<String, Option<Ino>>,
    /// Set by readdir: every visible child, by name.
    listing: Option<BTreeMap<String, Ino>>,
}

enum NodeKind {
    Dir(DirState),
    /// A non-directory: its data lives in entry `entry` of layer `layer`. `linked`:
    /// a hard link may give it other names, so its link count needs counting.
    Leaf { layer: usize, entry: u32, linked: bool },
}

struct Node {
    kind: NodeKind,
}

struct State {
    nodes: Vec<Node>,
    dirs: HashMap<String, Ino>,
    leaves: HashMap<(usize, u32), Ino>,
    /// Link counts of hard-linked leaves, known once the whole tree has been walked.
    nlinks: Option<HashMap<Ino, u32>>,
    /// Layer indexes already loaded, so lookups don't go back to the source.
    layers: Vec<Option<Arc<LayerIndex>>>,
}

pub struct Tree {
    source: Arc<dyn LayerSource>,
    state: Mutex<State>,
}

/// A failure to read a layer; the filesystem answers EIO.
#[derive(Debug)]
pub struct LayerError(pub String);

impl std::fmt::Display for LayerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type TResult<T> = std::result::Result<T, LayerError>;

impl Tree {
    pub fn new(source: Arc<dyn LayerSource>) -> Tree {
        let n = source.layer_count();
        let root = Node {
            kind: NodeKind::Dir(DirState {
                path: String::new(),
                parent: ROOT,
                next: n,
                floor: if n == 0 { Some(0) } else { None },
                attrs_from: None,
                lookups: HashMap::new(),
                listing: None,
            }),
        };
        let mut dirs = HashMap::new();
        dirs.insert(String::new(), ROOT);
        Tree {
            source,
            state: Mutex::new(State { nodes: vec![root], dirs, leaves: HashMap::new(), nlinks: None, layers: vec![None; n] }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Find `name` in directory `parent`. `Ok(None)`: no such entry.
    pub fn lookup(&self, parent: Ino, name: &str) -> TResult<Option<Ino>> {
        let mut st = self.lock();
        self.lookup_locked(&mut st, parent, name)
    }

    /// Attributes of a node. Directories whose layers are all local are completed
    /// first, so their link count is exact; otherwise the answer is marked unsettled
    /// rather than fetching layers just to count subdirectories.
    pub fn info(&self, ino: Ino) -> TResult<Option<NodeInfo>> {
        let mut st = self.lock();
        if ino == 0 || ino as usize > st.nodes.len() {
            return Ok(None);
        }
        if let NodeKind::Dir(d) = &st.nodes[(ino - 1) as usize].kind {
            if d.listing.is_none() && self.all_local(d) {
                self.list_locked(&mut st, ino)?;
            }
            // Mode, owner and mtime come from the topmost explicit entry: read down to
            // it (usually the layer that made the directory visible in the first place).
            loop {
                let d = Self::dir(&mut st, ino);
                if d.attrs_from.is_some() || d.floor.is_some() || d.next == 0 {
                    break;
                }
                let next = d.next - 1;
                self.reaches(&mut st, ino, next)?;
            }
        }
        self.info_locked(&mut st, ino).map(Some)
    }

    fn all_local(&self, d: &DirState) -> bool {
        let floor = d.floor.unwrap_or(0);
        (floor..self.source.layer_count()).all(|i| self.source.is_local(i))
    }

    /// Every visible child of a directory, by name.
    pub fn list(&self, ino: Ino) -> TResult<Vec<(String, Ino)>> {
        let mut st = self.lock();
        let listing = self.list_locked(&mut st, ino)?;
        Ok(listing.into_iter().collect())
    }

    pub fn parent(&self, ino: Ino) -> Ino {
        let st = self.lock();
        match st.nodes.get((ino - 1) as usize).map(|n| &n.kind) {
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
        let data = self.source.data(layer).map_err(|e| LayerError(format!("layer {layer}: {e:#}")))?;
        Ok(Some((data, entry)))
    }

    /// What a node is, without computing its attributes (readdir needs no more).
    pub fn kind(&self, ino: Ino) -> Option<Kind> {
        let st = self.lock();
        match &st.nodes.get((ino.wrapping_sub(1)) as usize)?.kind {
            NodeKind::Dir(_) => Some(Kind::Dir),
            NodeKind::Leaf { layer, entry, .. } => st.layers[*layer].as_ref().map(|idx| idx.entry(*entry).kind),
        }
    }

    /// Number of nodes created so far.
    pub fn node_count(&self) -> usize {
        self.lock().nodes.len()
    }

    // ---- internals; all run under the state lock ----

    fn layer(&self, st: &mut State, i: usize) -> TResult<Arc<LayerIndex>> {
        if let Some(idx) = &st.layers[i] {
            return Ok(idx.clone());
        }
        let idx = self.source.index(i).map_err(|e| LayerError(format!("layer {i}: {e:#}")))?;
        st.layers[i] = Some(idx.clone());
        Ok(idx)
    }

    fn dir<'a>(st: &'a mut State, ino: Ino) -> &'a mut DirState {
        match &mut st.nodes[(ino - 1) as usize].kind {
            NodeKind::Dir(d) => d,
            NodeKind::Leaf { .. } => unreachable!("caller checked that {ino} is a directory"),
        }
    }

    fn is_dir(st: &State, ino: Ino) -> bool {
        matches!(st.nodes.get((ino.wrapping_sub(1)) as usize).map(|n| &n.kind), Some(NodeKind::Dir(_)))
    }

    /// Is layer `l` within directory `ino`'s range? Examines layers from the top
    /// down to `l` as needed.
    fn reaches(&self, st: &mut State, ino: Ino, l: usize) -> TResult<bool> {
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
            let idx = self.layer(st, k)?;
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

    fn lookup_locked(&self, st: &mut State, parent: Ino, name: &str) -> TResult<Option<Ino>> {
        if !Self::is_dir(st, parent) {
            return Ok(None);
        }
        if let Some(hit) = Self::dir(st, parent).lookups.get(name) {
            return Ok(*hit);
        }
        let child = join(&Self::dir(st, parent).path, name);
        let mut found = None;
        for l in (0..self.source.layer_count()).rev() {
            if !self.reaches(st, parent, l)? {
                break;
            }
            let idx = self.layer(st, l)?;
            match idx.presence(&child) {
                Presence::Entry(e) if e.kind != Kind::Dir => {
                    let i = idx.entry_index(&child).expect("present");
                    found = Some(self.leaf_node(st, l, i)?);
                    break;
                }
                Presence::Entry(_) | Presence::ImplicitDir => {
                    found = Some(self.dir_node(st, &child, parent, l));
                    break;
                }
                Presence::Absent if idx.is_whiteout(&child) => break,
                Presence::Absent => {}
            }
        }
        Self::dir(st, parent).lookups.insert(name.to_string(), found);
        Ok(found)
    }

    fn dir_node(&self, st: &mut State, path: &str, parent: Ino, top: usize) -> Ino {
        if let Some(&ino) = st.dirs.get(path) {
            return ino;
        }
        st.nodes.push(Node {
            kind: NodeKind::Dir(DirState {
                path: path.to_string(),
                parent,
                next: top + 1,
                floor: None,
                attrs_from: None,
                lookups: HashMap::new(),
                listing: None,
            }),
        });
        let ino = st.nodes.len() as Ino;
        st.dirs.insert(path.to_string(), ino);
        ino
    }

    /// The node for entry `i` of layer `l`, following hard links to the entry that
    /// holds the data.
    fn leaf_node(&self, st: &mut State, l: usize, i: u32) -> TResult<Ino> {
        let (dl, di) = self.data_entry(st, l, i)?;
        if let Some(&ino) = st.leaves.get(&(dl, di)) {
            return Ok(ino);
        }
        // Decided once, here, where every layer above the data has just been read,
        // rather than on each getattr.
        let linked = self.may_be_linked(st, dl, di)?;
        st.nodes.push(Node { kind: NodeKind::Leaf { layer: dl, entry: di, linked } });
        let ino = st.nodes.len() as Ino;
        st.leaves.insert((dl, di), ino);
        Ok(ino)
    }

    /// A hard link resolves to its target as the stream had it when the link was
    /// read: an earlier entry of the same layer, else the path in the layers below.
    fn data_entry(&self, st: &mut State, l: usize, i: u32) -> TResult<(usize, u32)> {
        let idx = self.layer(st, l)?;
        let e = idx.entry(i);
        if e.kind != Kind::Hardlink {
            return Ok((l, i));
        }
        if let Some(t) = e.link_entry {
            return Ok((l, t));
        }
        let target = e.link.clone().unwrap_or_default();
        for k in (0..l).rev() {
            let lower = self.layer(st, k)?;
            match lower.presence(&target) {
                Presence::Entry(t) if t.kind != Kind::Dir => {
                    let ti = lower.entry_index(&target).expect("present");
                    return self.data_entry(st, k, ti);
                }
                Presence::Entry(_) | Presence::ImplicitDir => break,
                Presence::Absent if lower.is_whiteout(&target) => break,
                Presence::Absent => {}
            }
        }
        Err(LayerError(format!("hard link {:?} in layer {l} points at {target:?}, which does not exist", e.path)))
    }

    fn list_locked(&self, st: &mut State, ino: Ino) -> TResult<BTreeMap<String, Ino>> {
        if !Self::is_dir(st, ino) {
            return Ok(BTreeMap::new());
        }
        if let Some(l) = &Self::dir(st, ino).listing {
            return Ok(l.clone());
        }
        let path = Self::dir(st, ino).path.clone();
        let mut names = std::collections::BTreeSet::new();
        for l in (0..self.source.layer_count()).rev() {
            if !self.reaches(st, ino, l)? {
                break;
            }
            let idx = self.layer(st, l)?;
            names.extend(idx.children(&path).iter().cloned());
        }
        let mut listing = BTreeMap::new();
        for name in names {
            if let Some(child) = self.lookup_locked(st, ino, &name)? {
                listing.insert(name, child);
            }
        }
        Self::dir(st, ino).listing = Some(listing.clone());
        Ok(listing)
    }

    fn info_locked(&self, st: &mut State, ino: Ino) -> TResult<NodeInfo> {
        match &st.nodes[(ino - 1) as usize].kind {
            NodeKind::Dir(d) => {
                let attrs_from = d.attrs_from;
                let listing = d.listing.clone();
                let explicit_known = attrs_from.is_some() || d.floor.is_some();
                let (mode, uid, gid, mtime, xattrs) = match attrs_from {
                    Some((l, i)) => {
                        let e = self.layer(st, l)?.entry(i).clone();
                        (e.mode, e.uid, e.gid, e.mtime, e.xattrs)
                    }
                    // A directory no layer has an entry for (a parent left out of the
                    // tar) gets the attributes tar extractors give it.
                    None => (0o755, 0, 0, 0, Vec::new()),
                };
                let subdirs = listing
                    .as_ref()
                    .map(|l| l.values().filter(|c| Self::is_dir(st, **c)).count() as u32)
                    .unwrap_or(0);
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
            NodeKind::Leaf { layer, entry, linked } => {
                let (layer, entry, linked) = (*layer, *entry, *linked);
                let idx = self.layer(st, layer)?;
                let e = idx.entry(entry);
                let nlink = if linked { self.nlink(st, ino)? } else { 1 };
                Ok(NodeInfo {
                    ino,
                    kind: e.kind,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    size: match e.kind {
                        Kind::Symlink => e.link.as_deref().map_or(0, |l| crate::layer::name_to_bytes(l).len() as u64),
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
    fn may_be_linked(&self, st: &mut State, layer: usize, entry: u32) -> TResult<bool> {
        let idx = self.layer(st, layer)?;
        if idx.is_linked(entry) {
            return Ok(true);
        }
        let path = &idx.entry(entry).path;
        for k in layer + 1..self.source.layer_count() {
            if self.layer(st, k)?.links_to_lower(path) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Link count of a hard-linked leaf: walk the whole tree once and count the
    /// visible names of every leaf.
    fn nlink(&self, st: &mut State, ino: Ino) -> TResult<u32> {
        if st.nlinks.is_none() {
            let mut counts: HashMap<Ino, u32> = HashMap::new();
            let mut stack = vec![ROOT];
            while let Some(dir) = stack.pop() {
                for (_, child) in self.list_locked(st, dir)? {
                    if Self::is_dir(st, child) {
                        stack.push(child);
                    } else {
                        *counts.entry(child).or_default() += 1;
                    }
                }
            }
            st.nlinks = Some(counts);
        }
        Ok(st.nlinks.as_ref().and_then(|c| c.get(&ino).copied()).unwrap_or(1))
    }
}
