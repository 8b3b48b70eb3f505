//! The paths that differ between two images, compared through their unions (`Fs`).
//!
//! Layers the two share at the bottom (the same digest at the same position) are never
//! walked: below them both images are the same tree, so only the paths the other
//! layers touch can differ: their entries, their whiteouts and opaque directories, and
//! the directories above those. Each of those paths is looked up in both images (a
//! lookup may read a shared layer's table of contents, never its data) and compared;
//! below a whiteout or an opaque directory, and below a path that is a directory in
//! one image only, the two subtrees are compared whole; so is the PATH asked for when
//! such a change, or a non-directory, is above it. A file's content is read only
//! when everything else matches and the two files are not the same bytes of the same
//! layer (same layer digest, same offset).

use crate::digest::Digest;
use crate::fs::Fs;
use crate::layer::{show, Kind};
use crate::layer_changes::{self, LayerChanges};
use crate::layer_source::ImageLayers;
use crate::tree::SourceError;
use crate::walk::{self, entries, join, lookup_literal, FileReader, Resolved};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Walk(#[from] walk::Error),
    #[error("reading the layers' tables of contents")]
    Layers(#[source] SourceError),
    #[error("{0}: in neither image")]
    InNeither(String),
}

/// How a path differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Only in the second image.
    Added,
    /// Only in the first image.
    Deleted,
    /// In both, with different type, mode, owner, size, content, link target, device
    /// numbers or xattrs (or mtime, when asked).
    Changed,
}

impl Change {
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Deleted => 'D',
            Change::Changed => 'C',
        }
    }
}

/// One path that differs.
#[derive(Clone, Debug)]
pub struct Difference {
    /// Absolute, inside the images.
    pub path: Vec<u8>,
    pub change: Change,
    /// Its size in the first image and in the second (files and symlinks; 0 for the rest).
    pub sizes: (Option<u64>, Option<u64>),
    /// For `Changed`: what differs (`type`, `mode`, `uid`, `gid`, `size`, `content`,
    /// `link`, `rdev`, `xattrs`, `mtime`).
    pub what: Vec<&'static str>,
}

/// One image as the diff reads it.
pub struct Side<'a> {
    pub fs: &'a Fs,
    pub layers: &'a ImageLayers,
}

/// The differences between images `a` and `b` at or below `under` (absolute), sorted
/// by path in byte order. `mtime`: a different mtime alone makes a path changed.
pub fn diff(a: &Side<'_>, b: &Side<'_>, under: &[u8], mtime: bool) -> Result<Vec<Difference>, Error> {
    let (da, db) = (a.layers.descriptors(), b.layers.descriptors());
    let shared = da.iter().zip(db).take_while(|(x, y)| x.digest == y.digest).count();
    let read = |side: &Side<'_>, n: usize| -> Result<Vec<LayerChanges>, Error> {
        let upper: Vec<usize> = (shared..n).collect();
        layer_changes::read_all(side.layers, &upper).map_err(Error::Layers)
    };
    let (ca, cb) = std::thread::scope(|s| {
        let ta = s.spawn(|| read(a, da.len()));
        let cb = read(b, db.len());
        (ta.join().expect("reading layers does not panic"), cb)
    });
    let under_rel: Vec<u8> =
        under.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").collect::<Vec<_>>().join(&b'/');
    let mut touched: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    // Has a layer hidden or replaced a directory above `under` (which then changes
    // though no layer names it)?
    let mut above = false;
    for c in ca?.iter().chain(cb?.iter()) {
        for e in &c.entries {
            touch(&mut touched, &e.path, false);
            above |= e.kind != Kind::Dir && is_above(&e.path, &under_rel);
        }
        for p in c.whiteouts.iter().chain(&c.opaque) {
            touch(&mut touched, p, true);
            above |= is_above(p, &under_rel);
        }
    }
    let mut cmp = Compare { a, b, mtime, out: Vec::new(), whole: BTreeSet::new(), digests: (da, db) };
    if !under_rel.is_empty() {
        let path = [b"/".as_slice(), &under_rel].concat();
        let (ra, rb) = (lookup_literal(a.fs, &path)?, lookup_literal(b.fs, &path)?);
        if ra.is_none() && rb.is_none() {
            return Err(Error::InNeither(show(under)));
        }
        if above {
            cmp.nodes(&path, ra, rb, true)?;
        }
    }
    for (rel, deep) in touched {
        if !is_under(&rel, &under_rel) {
            continue;
        }
        let path = [b"/".as_slice(), &rel].concat();
        if cmp.compared_whole(&path) {
            continue; // compared already, with the subtree it is in
        }
        cmp.path(&path, deep)?;
    }
    let mut out = cmp.out;
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out.dedup_by(|x, y| x.path == y.path);
    Ok(out)
}

/// Mark `rel` (relative to the root) and every directory above it as touched.
fn touch(touched: &mut BTreeMap<Vec<u8>, bool>, rel: &[u8], deep: bool) {
    *touched.entry(rel.to_vec()).or_default() |= deep;
    let mut p = rel;
    loop {
        p = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => &p[..i],
            None if p.is_empty() => return,
            None => b"",
        };
        if touched.contains_key(p) {
            return;
        }
        touched.insert(p.to_vec(), false);
    }
}

/// Is `dir` a directory above `path` (both relative to the root, the root empty)?
fn is_above(dir: &[u8], path: &[u8]) -> bool {
    !path.is_empty() && (dir.is_empty() || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/')))
}

/// Is `path` `dir` itself or below it (both with or both without a leading `/`)?
fn is_under(path: &[u8], dir: &[u8]) -> bool {
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    dir.is_empty() || path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

struct Compare<'a, 'b> {
    a: &'a Side<'b>,
    b: &'a Side<'b>,
    mtime: bool,
    out: Vec<Difference>,
    /// Paths whose whole subtree has been compared.
    whole: BTreeSet<Vec<u8>>,
    digests: (&'a [crate::image::Descriptor], &'a [crate::image::Descriptor]),
}

fn size_of(r: &Resolved) -> u64 {
    if r.is_dir() {
        0
    } else {
        r.info.size
    }
}

impl Compare<'_, '_> {
    /// Has `path` been compared already, as part of a subtree compared whole?
    fn compared_whole(&self, path: &[u8]) -> bool {
        if self.whole.contains(b"/".as_slice()) {
            return true;
        }
        (1..=path.len()).filter(|&i| i == path.len() || path[i] == b'/').any(|i| self.whole.contains(&path[..i]))
    }

    /// Compare `path` in both images; `deep`: its whole subtree too.
    fn path(&mut self, path: &[u8], deep: bool) -> Result<(), Error> {
        let ra = lookup_literal(self.a.fs, path)?;
        let rb = lookup_literal(self.b.fs, path)?;
        self.nodes(path, ra, rb, deep)
    }

    fn nodes(&mut self, path: &[u8], ra: Option<Resolved>, rb: Option<Resolved>, deep: bool) -> Result<(), Error> {
        match (ra, rb) {
            (None, None) => {}
            (Some(x), None) => self.one_side(&x, Change::Deleted, self.a.fs)?,
            (None, Some(y)) => self.one_side(&y, Change::Added, self.b.fs)?,
            (Some(x), Some(y)) => {
                let what = self.differences(&x, &y)?;
                if !what.is_empty() {
                    self.out.push(Difference {
                        path: path.to_vec(),
                        change: Change::Changed,
                        sizes: (Some(size_of(&x)), Some(size_of(&y))),
                        what,
                    });
                }
                match (x.is_dir(), y.is_dir()) {
                    (true, true) if deep => self.children(path, &x, &y)?,
                    (true, false) => self.below(&x, Change::Deleted, self.a.fs)?,
                    (false, true) => self.below(&y, Change::Added, self.b.fs)?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Both are directories: compare everything below them.
    fn children(&mut self, path: &[u8], x: &Resolved, y: &Resolved) -> Result<(), Error> {
        self.whole.insert(path.to_vec());
        let mut ea: BTreeMap<Vec<u8>, Resolved> = entries(self.a.fs, x)?
            .into_iter()
            .map(|(n, info)| (n.clone(), Resolved { info, path: join(path, &n) }))
            .collect();
        let eb = entries(self.b.fs, y)?;
        let mut pairs: Vec<(Vec<u8>, Option<Resolved>, Option<Resolved>)> = Vec::new();
        for (n, info) in eb {
            let left = ea.remove(&n);
            let p = join(path, &n);
            pairs.push((n, left, Some(Resolved { info, path: p })));
        }
        for (n, left) in ea {
            pairs.push((n, Some(left), None));
        }
        for (n, l, r) in pairs {
            self.nodes(&join(path, &n), l, r, true)?;
        }
        Ok(())
    }

    /// `node` is only in one image: it and, for a directory, everything below it.
    fn one_side(&mut self, node: &Resolved, change: Change, fs: &Fs) -> Result<(), Error> {
        self.whole.insert(node.path.clone());
        walk::walk(fs, node, |_, n| -> Result<(), Error> {
            let size = Some(size_of(n));
            let sizes = if change == Change::Added { (None, size) } else { (size, None) };
            self.out.push(Difference { path: n.path.clone(), change, sizes, what: Vec::new() });
            Ok(())
        })
    }

    /// Everything below directory `node`, which is only in one image as a directory.
    fn below(&mut self, node: &Resolved, change: Change, fs: &Fs) -> Result<(), Error> {
        self.whole.insert(node.path.clone());
        for (name, info) in entries(fs, node)? {
            self.one_side(&Resolved { info, path: join(&node.path, &name) }, change, fs)?;
        }
        Ok(())
    }

    fn differences(&self, x: &Resolved, y: &Resolved) -> Result<Vec<&'static str>, Error> {
        let (i, j) = (&x.info, &y.info);
        let mut what = Vec::new();
        let kind = |k: Kind| if k == Kind::Hardlink { Kind::File } else { k };
        if kind(i.kind) != kind(j.kind) {
            what.push("type");
        }
        if i.mode & 0o7777 != j.mode & 0o7777 {
            what.push("mode");
        }
        if i.uid != j.uid {
            what.push("uid");
        }
        if i.gid != j.gid {
            what.push("gid");
        }
        if !x.is_dir() && !y.is_dir() && i.size != j.size {
            what.push("size");
        }
        if i.link != j.link {
            what.push("link");
        }
        if i.rdev != j.rdev {
            what.push("rdev");
        }
        let sorted = |v: &Vec<(Vec<u8>, Vec<u8>)>| {
            let mut v = v.clone();
            v.sort();
            v
        };
        if sorted(&i.xattrs) != sorted(&j.xattrs) {
            what.push("xattrs");
        }
        if self.mtime && i.mtime != j.mtime {
            what.push("mtime");
        }
        if what.is_empty() && i.kind == Kind::File && j.kind == Kind::File && !self.same_bytes(x, y)? {
            what.push("content");
        }
        Ok(what)
    }

    /// Do two files of the same size hold the same bytes? Known without reading when
    /// both are the same data of the same layer blob.
    fn same_bytes(&self, x: &Resolved, y: &Resolved) -> Result<bool, Error> {
        if let (Some((la, oa)), Some((lb, ob))) = (self.a.fs.data_origin(x.info.ino), self.b.fs.data_origin(y.info.ino))
        {
            let digest =
                |d: &[crate::image::Descriptor], l: usize| -> Option<Digest> { d.get(l).map(|d| d.digest.clone()) };
            if oa == ob
                && digest(self.digests.0, la).is_some()
                && digest(self.digests.0, la) == digest(self.digests.1, lb)
            {
                return Ok(true);
            }
        }
        let (mut ra, mut rb) = (FileReader::new(self.a.fs, x), FileReader::new(self.b.fs, y));
        let (mut ba, mut bb): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
        loop {
            if ba.is_empty() {
                ba = ra.next_chunk()?.unwrap_or_default();
            }
            if bb.is_empty() {
                bb = rb.next_chunk()?.unwrap_or_default();
            }
            if ba.is_empty() || bb.is_empty() {
                return Ok(ba.is_empty() && bb.is_empty());
            }
            let n = ba.len().min(bb.len());
            if ba[..n] != bb[..n] {
                return Ok(false);
            }
            ba.drain(..n);
            bb.drain(..n);
        }
    }
}
