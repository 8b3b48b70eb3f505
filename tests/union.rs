//! The union rules, checked on the tree without a kernel mount: layers are tar
//! archives built here with the `tar` crate, kept in temp files, and served through a
//! `LayerSource` that counts which layers were asked for.

use imgfs::fs::{Fs, FsError};
use imgfs::image::Compression;
use imgfs::layer::{build, Kind, LayerData, LayerIndex};
use imgfs::tree::{LayerSource, Tree, ROOT};
use std::ffi::OsStr;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One tar entry to put in a test layer.
enum E<'a> {
    Dir(&'a str),
    /// A directory with these permission bits.
    DirMode(&'a str, u32),
    File(&'a str, &'a str),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
    /// A whiteout or opaque marker: just an empty file with that name.
    Marker(&'a str),
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::Dir(p) | E::DirMode(p, _) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(if let E::DirMode(_, m) = e { *m } else { 0o755 });
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, content) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, p, content.as_bytes()).unwrap();
            }
            E::Marker(p) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Hard(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

struct MemLayers {
    files: Vec<tempfile::NamedTempFile>,
    indexes: Vec<Arc<LayerIndex>>,
    asked: Vec<AtomicUsize>,
}

impl MemLayers {
    fn new(layers: &[Vec<E>]) -> Arc<MemLayers> {
        let mut files = Vec::new();
        let mut indexes = Vec::new();
        for l in layers {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(&tar_of(l)).unwrap();
            let mut r = std::fs::File::open(f.path()).unwrap();
            let contents = build::index_layer(&mut r, Compression::None, None, None).unwrap();
            indexes.push(Arc::new(LayerIndex::new(contents)));
            files.push(f);
        }
        let asked = layers.iter().map(|_| AtomicUsize::new(0)).collect();
        Arc::new(MemLayers { files, indexes, asked })
    }

    fn asked(&self) -> Vec<bool> {
        self.asked.iter().map(|a| a.load(Ordering::SeqCst) > 0).collect()
    }
}

impl LayerSource for MemLayers {
    fn layer_count(&self) -> usize {
        self.indexes.len()
    }
    fn index(&self, i: usize) -> anyhow::Result<Arc<LayerIndex>> {
        self.asked[i].fetch_add(1, Ordering::SeqCst);
        Ok(self.indexes[i].clone())
    }
    fn data(&self, i: usize) -> anyhow::Result<Arc<LayerData>> {
        Ok(Arc::new(LayerData::open(self.files[i].path())?))
    }
    fn is_local(&self, i: usize) -> bool {
        self.asked[i].load(Ordering::SeqCst) > 0
    }
}

fn fs_of(layers: &[Vec<E>]) -> (Fs, Arc<MemLayers>) {
    let src = MemLayers::new(layers);
    (Fs::new(Tree::new(src.clone()), 0), src)
}

/// Resolve a path from the root; None if any component is missing.
fn walk(fs: &Fs, path: &str) -> Option<u64> {
    let mut ino = ROOT;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = fs.lookup(ino, OsStr::new(c)).unwrap()?.ino;
    }
    Some(ino)
}

fn names(fs: &Fs, path: &str) -> Vec<String> {
    let ino = walk(fs, path).expect("directory exists");
    fs.readdir(ino)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .filter(|n| n != "." && n != "..")
        .collect()
}

fn content(fs: &Fs, path: &str) -> String {
    let ino = walk(fs, path).expect("file exists");
    String::from_utf8(fs.read(ino, 0, 1 << 20).unwrap()).unwrap()
}

#[test]
fn whiteout_hides_a_file_and_a_whole_subtree_of_lower_layers() {
    let (fs, _) = fs_of(&[
        vec![E::Dir("a"), E::File("a/keep", "k"), E::File("a/gone", "g"), E::Dir("d"), E::Dir("d/sub"), E::File("d/sub/f", "x")],
        vec![E::Dir("a"), E::Marker("a/.wh.gone"), E::Marker(".wh.d")],
    ]);
    assert_eq!(names(&fs, "a"), vec!["keep"]);
    assert_eq!(names(&fs, ""), vec!["a"]);
    assert!(walk(&fs, "d/sub/f").is_none());
    assert!(walk(&fs, "a/.wh.gone").is_none(), "markers are never shown");
}

#[test]
fn opaque_marker_applies_whatever_its_place_in_the_tar() {
    for marker_first in [true, false] {
        let mut upper = vec![E::Dir("o")];
        if marker_first {
            upper.push(E::Marker("o/.wh..wh..opq"));
        }
        upper.push(E::File("o/new", "n"));
        if !marker_first {
            upper.push(E::Marker("o/.wh..wh..opq"));
        }
        let (fs, _) = fs_of(&[vec![E::Dir("o"), E::File("o/old", "o"), E::Dir("o/olddir")], upper]);
        assert_eq!(names(&fs, "o"), vec!["new"], "marker first: {marker_first}");
    }
}

#[test]
fn a_file_replaces_a_lower_directory_and_a_directory_a_lower_file() {
    let (fs, _) = fs_of(&[
        vec![E::Dir("x"), E::File("x/inner", "i"), E::File("y", "file"), E::Dir("z"), E::File("z/in", "1")],
        vec![E::File("x", "now a file"), E::Dir("y"), E::File("y/child", "c"), E::Link("z", "/x")],
    ]);
    assert_eq!(content(&fs, "x"), "now a file");
    assert_eq!(names(&fs, "y"), vec!["child"]);
    let z = walk(&fs, "z").unwrap();
    assert_eq!(fs.readlink(z).unwrap(), b"/x");
    assert_eq!(fs.lookup(walk(&fs, "x").unwrap(), OsStr::new("inner")).unwrap().map(|i| i.ino), None);
}

#[test]
fn directory_over_directory_merges_children_and_takes_upper_attributes() {
    let (fs, _) = fs_of(&[
        vec![E::DirMode("m", 0o700), E::File("m/low", "l")],
        vec![E::DirMode("m", 0o751), E::File("m/high", "h")],
    ]);
    assert_eq!(names(&fs, "m"), vec!["high", "low"]);
    let info = fs.getattr(walk(&fs, "m").unwrap()).unwrap();
    assert_eq!(info.kind, Kind::Dir);
    assert_eq!(info.mode, 0o751, "the upper entry's attributes win");
    assert_eq!(info.nlink, 2);
}

#[test]
fn whiteout_and_readd_in_one_layer_shows_the_new_file_in_either_order() {
    for marker_first in [true, false] {
        let upper = if marker_first {
            vec![E::Marker(".wh.f"), E::File("f", "new")]
        } else {
            vec![E::File("f", "new"), E::Marker(".wh.f")]
        };
        let (fs, _) = fs_of(&[vec![E::File("f", "old")], upper]);
        assert_eq!(content(&fs, "f"), "new", "marker first: {marker_first}");
    }
}

#[test]
fn hardlinks_share_an_inode_and_count_only_visible_names() {
    let (fs, _) = fs_of(&[
        vec![E::File("orig", "data"), E::Hard("l1", "orig"), E::Hard("l2", "orig")],
        vec![E::Marker(".wh.orig")],
    ]);
    let l1 = fs.getattr(walk(&fs, "l1").unwrap()).unwrap();
    let l2 = fs.getattr(walk(&fs, "l2").unwrap()).unwrap();
    assert_eq!(l1.ino, l2.ino);
    assert_eq!(l1.nlink, 2, "orig is whited out, two names remain");
    assert_eq!(content(&fs, "l2"), "data");
    assert!(walk(&fs, "orig").is_none());
}

#[test]
fn a_hardlink_to_a_lower_layer_resolves_to_the_lower_file() {
    let (fs, _) = fs_of(&[vec![E::File("base", "lower data")], vec![E::Hard("up", "base")]]);
    let up = fs.getattr(walk(&fs, "up").unwrap()).unwrap();
    let base = fs.getattr(walk(&fs, "base").unwrap()).unwrap();
    assert_eq!(up.ino, base.ino);
    assert_eq!(up.nlink, 2);
    assert_eq!(content(&fs, "up"), "lower data");
}

#[test]
fn duplicate_entries_in_one_layer_the_last_wins_but_a_link_keeps_the_earlier_data() {
    let (fs, _) = fs_of(&[vec![E::File("d", "first"), E::Hard("keep", "d"), E::File("d", "second")]]);
    assert_eq!(content(&fs, "d"), "second");
    assert_eq!(content(&fs, "keep"), "first");
}

#[test]
fn a_lookup_the_top_layer_settles_reads_no_lower_layer() {
    let (fs, src) = fs_of(&[
        vec![E::Dir("bottom"), E::File("bottom/a", "a")],
        vec![E::Dir("middle"), E::File("middle/b", "b")],
        vec![E::Dir("top"), E::File("top/c", "c")],
    ]);
    assert_eq!(content(&fs, "top/c"), "c");
    assert_eq!(src.asked(), vec![false, false, true]);
    // A whiteout or a non-directory in the top layer settles a lookup too.
    assert!(fs.lookup(ROOT, OsStr::new("nothing")).unwrap().is_none());
    assert_eq!(src.asked(), vec![true, true, true], "a miss has to ask every layer");
    assert_eq!(names(&fs, ""), vec!["bottom", "middle", "top"]);
}

#[test]
fn an_opaque_directory_stops_the_search_below_it() {
    let (fs, src) = fs_of(&[
        vec![E::Dir("o"), E::File("o/hidden", "h")],
        vec![E::Dir("o"), E::Marker("o/.wh..wh..opq"), E::File("o/seen", "s")],
    ]);
    assert!(fs.lookup(walk(&fs, "o").unwrap(), OsStr::new("hidden")).unwrap().is_none());
    assert_eq!(src.asked(), vec![false, true], "the opaque marker settles misses in o/");
}

#[test]
fn entries_without_their_parent_directories_get_implicit_parents() {
    let (fs, _) = fs_of(&[vec![E::File("p/q/r", "deep")]]);
    assert_eq!(names(&fs, "p"), vec!["q"]);
    let q = fs.getattr(walk(&fs, "p/q").unwrap()).unwrap();
    assert_eq!((q.kind, q.mode), (Kind::Dir, 0o755));
    assert_eq!(content(&fs, "p/q/r"), "deep");
}

#[test]
fn directory_link_count_is_two_plus_subdirectories() {
    let (fs, _) = fs_of(&[vec![E::Dir("d"), E::Dir("d/a"), E::Dir("d/b"), E::File("d/f", "")], vec![E::Dir("d/c")]]);
    let d = walk(&fs, "d").unwrap();
    fs.readdir(d).unwrap();
    assert_eq!(fs.getattr(d).unwrap().nlink, 5);
}

#[test]
fn reads_return_the_requested_span_and_writes_are_refused() {
    let (fs, _) = fs_of(&[vec![E::File("f", "0123456789")]]);
    let f = walk(&fs, "f").unwrap();
    assert_eq!(fs.read(f, 3, 4).unwrap(), b"3456");
    assert_eq!(fs.read(f, 8, 100).unwrap(), b"89");
    assert!(fs.read(f, 20, 10).unwrap().is_empty());
    assert_eq!(fs.open(f, libc::O_WRONLY), Err(FsError::ReadOnly));
    assert_eq!(fs.access(f, libc::W_OK), Err(FsError::ReadOnly));
    assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
}
