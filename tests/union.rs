//! The union rules, checked on the tree without a kernel mount: layers are tar
//! archives built here with the `tar` crate, kept in temp files, and served through a
//! `LayerSource` that counts which layers were asked for.

use imgfs::fs::{Fs, FsError};
use imgfs::image::Compression;
use imgfs::layer::{build, Kind, LayerData, LayerIndex};
use imgfs::tree::{DirAttrs, LayerSource, Tree, ROOT};
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
            let contents = build::index_layer(&mut r, Compression::None, None, None).unwrap().contents;
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
        Ok(Arc::new(LayerData::tar(self.files[i].path())?))
    }
    fn is_local(&self, i: usize) -> bool {
        self.asked[i].load(Ordering::SeqCst) > 0
    }
}

fn fs_of(layers: &[Vec<E>]) -> (Fs, Arc<MemLayers>) {
    let src = MemLayers::new(layers);
    (Fs::new(Tree::new(src.clone(), DirAttrs::Provisional), 0), src)
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
        vec![
            E::Dir("a"),
            E::File("a/keep", "k"),
            E::File("a/gone", "g"),
            E::Dir("d"),
            E::Dir("d/sub"),
            E::File("d/sub/f", "x"),
        ],
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

// ---- Real image shapes: upper layers without `./`, and no waiting on other layers ----

/// A base layer with `./` (as debootstrap and umoci write it) and upper layers that
/// name only what they change, as docker, BuildKit and `umoci repack` write them.
fn real_shape() -> Vec<Vec<E<'static>>> {
    vec![
        vec![
            E::DirMode("./", 0o750),
            E::Dir("etc"),
            E::File("etc/os-release", "ID=test\n"),
            E::DirMode("root", 0o700),
            E::File("root/.profile", "base"),
            E::Dir("usr"),
            E::Dir("usr/bin"),
            E::File("usr/bin/sh", "shell"),
        ],
        vec![E::File("usr/bin/apt", "apt"), E::File("etc/apt.conf", "apt conf")],
        vec![
            E::Dir("opt"),
            E::File("opt/tool", "tool data"),
            E::Hard("opt/tool-a", "opt/tool"),
            E::Hard("usr/bin/tool-b", "opt/tool"),
            E::File("etc/app.conf", "top"),
        ],
    ]
}

#[test]
fn implicit_directories_get_provisional_attributes_until_their_layer_is_local() {
    let (fs, src) = fs_of(&real_shape());
    let root = fs.getattr(ROOT).unwrap();
    assert_eq!((root.mode, root.uid, root.settled), (0o755, 0, false), "provisional root");
    assert_eq!(src.asked(), vec![false, false, false], "a stat of the root fetches nothing");
    assert_eq!(content(&fs, "etc/app.conf"), "top");
    let etc = fs.getattr(walk(&fs, "etc").unwrap()).unwrap();
    assert!(!etc.settled, "etc's entry is in the base layer, not read yet");
    assert_eq!(src.asked(), vec![false, false, true], "a top-layer file needs the top layer only");

    // Once the base layer is local, the exact attributes are served, and settled.
    assert_eq!(content(&fs, "usr/bin/sh"), "shell");
    assert_eq!(src.asked(), vec![true, true, true]);
    let root = fs.getattr(ROOT).unwrap();
    assert_eq!((root.mode, root.settled), (0o750, true), "the base layer's `./`");
    assert_eq!(fs.getattr(walk(&fs, "root").unwrap()).unwrap().mode, 0o700);
}

#[test]
fn exact_directory_attributes_fetch_the_layer_that_holds_them() {
    let src = MemLayers::new(&real_shape());
    let fs = Fs::new(Tree::new(src.clone(), DirAttrs::Exact), 0);
    assert_eq!(fs.getattr(ROOT).unwrap().mode, 0o750);
    assert_eq!(src.asked(), vec![true, true, true]);
}

#[test]
fn hard_link_counts_need_only_the_layers_holding_the_group() {
    let (fs, src) = fs_of(&real_shape());
    let attrs: Vec<_> = ["opt/tool", "opt/tool-a", "usr/bin/tool-b"]
        .iter()
        .map(|p| fs.getattr(walk(&fs, p).unwrap()).unwrap())
        .collect();
    assert!(attrs.iter().all(|a| a.nlink == 3 && a.ino == attrs[0].ino), "{attrs:?}");
    assert_eq!(src.asked(), vec![false, false, true], "stat of the group's names reads the top layer only");
    // Listing a directory needs every layer in its range (any of them may add names).
    assert_eq!(names(&fs, "opt"), vec!["tool", "tool-a"]);
    assert_eq!(src.asked(), vec![true, true, true]);
    assert_eq!(fs.getattr(walk(&fs, "opt/tool").unwrap()).unwrap().nlink, 3);
}

#[test]
fn a_hardlink_to_a_link_of_a_lower_file_reads_the_lower_data() {
    let (fs, _) = fs_of(&[vec![E::File("base", "lower data")], vec![E::Hard("a", "base"), E::Hard("b", "a")]]);
    assert_eq!(content(&fs, "b"), "lower data");
    let (a, b) = (fs.getattr(walk(&fs, "a").unwrap()).unwrap(), fs.getattr(walk(&fs, "b").unwrap()).unwrap());
    assert_eq!((a.ino, a.nlink, b.nlink, b.kind), (b.ino, 3, 3, Kind::File));
}

/// A source whose bottom layer is held back until the test lets it go, as a slow
/// download would be.
struct HeldLayers {
    inner: Arc<MemLayers>,
    gate: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    waiting: AtomicUsize,
}

impl LayerSource for HeldLayers {
    fn layer_count(&self) -> usize {
        self.inner.layer_count()
    }
    fn index(&self, i: usize) -> anyhow::Result<Arc<LayerIndex>> {
        if i == 0 {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let mut open = self.gate.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        self.inner.index(i)
    }
    fn data(&self, i: usize) -> anyhow::Result<Arc<LayerData>> {
        self.inner.data(i)
    }
    fn is_local(&self, i: usize) -> bool {
        i != 0 && self.inner.is_local(i)
    }
}

#[test]
fn a_layer_being_fetched_blocks_only_the_operations_that_need_it() {
    let held = Arc::new(HeldLayers {
        inner: MemLayers::new(&real_shape()),
        gate: std::sync::Mutex::new(false),
        opened: std::sync::Condvar::new(),
        waiting: AtomicUsize::new(0),
    });
    let fs = Arc::new(Fs::new(Tree::new(held.clone(), DirAttrs::Provisional), 0));
    let (tx, rx) = std::sync::mpsc::channel();
    let slow = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            let sh = content(&fs, "usr/bin/sh");
            tx.send(()).unwrap();
            sh
        })
    };
    while held.waiting.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    // The bottom layer is "downloading"; everything the top layer settles still
    // answers. (In a thread of its own, so that if it does block, the test opens the
    // gate and fails instead of hanging.)
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let settled = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            let root_mode = fs.getattr(ROOT).unwrap().mode;
            let conf = content(&fs, "etc/app.conf");
            let nlink = fs.getattr(walk(&fs, "opt/tool-a").unwrap()).unwrap().nlink;
            done_tx.send(()).unwrap();
            (root_mode, conf, nlink)
        })
    };
    let finished = done_rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok();
    let slow_done_early = rx.try_recv().is_ok();
    *held.gate.lock().unwrap() = true;
    held.opened.notify_all();
    assert!(finished, "operations settled by the top layer waited for the bottom layer's fetch");
    assert!(!slow_done_early, "the read of a base-layer file finished before its layer arrived");
    assert_eq!(settled.join().unwrap(), (0o755, "top".to_string(), 3));
    assert_eq!(slow.join().unwrap(), "shell");
    assert_eq!(fs.getattr(ROOT).unwrap().mode, 0o750);
}

/// Many threads resolving and reading paths in different orders get what one thread
/// gets, and agree on inode numbers.
#[test]
fn concurrent_operations_agree_with_a_single_thread() {
    let mut layers: Vec<Vec<E<'static>>> = Vec::new();
    let files: Vec<&'static str> =
        (0..40).map(|i| &*Box::leak(format!("d{}/f{}", i % 7, i).into_boxed_str())).collect();
    for l in 0..5 {
        let mut entries = Vec::new();
        for (i, n) in files.iter().enumerate() {
            if (i + l) % 3 == 0 {
                entries.push(E::File(n, Box::leak(format!("layer {l} file {i}").into_boxed_str())));
            } else if (i + l) % 11 == 0 {
                let (dir, file) = n.split_once('/').unwrap();
                entries.push(E::Marker(Box::leak(format!("{dir}/.wh.{file}").into_boxed_str())));
            }
        }
        if l == 3 {
            entries.push(E::Marker("d2/.wh..wh..opq"));
            entries.push(E::Hard("d5/link", files[5]));
        }
        layers.push(entries);
    }
    let mut paths: Vec<String> = files.iter().map(|s| s.to_string()).collect();
    paths.extend((0..7).map(|d| format!("d{d}")));
    paths.push("d5/link".into());
    paths.push("missing/x".into());

    let answer = |fs: &Fs, p: &str| -> Option<(u64, u32, u32, String)> {
        let ino = walk(fs, p)?;
        let a = fs.getattr(ino).unwrap();
        let data = if a.kind == Kind::Dir { names(fs, p).join(",") } else { content(fs, p) };
        Some((ino, a.mode, a.nlink, data))
    };
    let (single, _) = fs_of(&layers);
    let expected: Vec<_> = paths.iter().map(|p| answer(&single, p).map(|(_, m, n, d)| (m, n, d))).collect();
    assert!(expected.iter().filter(|e| e.is_some()).count() > 20, "the image is too sparse to test anything");

    let (fs, _) = fs_of(&layers);
    let fs = Arc::new(fs);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (fs, paths) = (fs.clone(), paths.clone());
            std::thread::spawn(move || {
                let mut order: Vec<usize> = (0..paths.len()).collect();
                // A different order per thread (a fixed permutation, so a failure repeats).
                order.sort_by_key(|&i| (i * (2 * t + 7) + t) % paths.len());
                let mut got = vec![None; paths.len()];
                for _ in 0..3 {
                    for &i in &order {
                        got[i] = answer(&fs, &paths[i]);
                    }
                }
                got
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, p) in paths.iter().enumerate() {
        for r in &results {
            assert_eq!(r[i].as_ref().map(|(_, m, n, d)| (*m, *n, d.clone())), expected[i], "{p}");
            assert_eq!(r[i].as_ref().map(|a| a.0), results[0][i].as_ref().map(|a| a.0), "inode of {p}");
        }
    }
}

/// A directory's entries are snapshotted once per open handle, and once per directory
/// for kernels that read directories without opening them; both match readdir.
#[test]
fn directory_snapshots_match_readdir_and_are_built_once() {
    let (fs, _) = fs_of(&real_shape());
    let etc = walk(&fs, "etc").unwrap();
    let want: Vec<Vec<u8>> = fs.readdir(etc).unwrap().into_iter().map(|e| e.name).collect();
    let fh = fs.opendir(etc, libc::O_RDONLY).unwrap();
    let by_handle: Vec<Vec<u8>> = fs.dir_handle(fh).unwrap().iter().map(|e| e.name.clone()).collect();
    assert_eq!(by_handle, want);
    fs.releasedir(fh);
    assert_eq!(fs.dir_handle(fh).err(), Some(FsError::BadHandle));
    let (a, b) = (fs.listing(etc).unwrap(), fs.listing(etc).unwrap());
    assert!(Arc::ptr_eq(&a, &b), "the listing was built twice");
    assert_eq!(a.iter().map(|e| e.name.clone()).collect::<Vec<_>>(), want);
    assert_eq!(fs.opendir(etc, libc::O_RDWR), Err(FsError::ReadOnly));
}
