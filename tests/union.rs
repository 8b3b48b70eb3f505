//! The union rules, checked on the tree without a kernel mount: layers are tar
//! archives built here with the `tar` crate, kept in temp files, and served through a
//! `LayerSource` that counts which layers were asked for.

use imgfs::fs::{Fs, FsError};
use imgfs::image::Compression;
use imgfs::layer::toc::{self, write::DataIndex, Toc};
use imgfs::layer::{block_sums::BlockSums, build, Kind, LayerData};
use imgfs::tree::{DirAttrs, LayerSource, SourceError, Tree, ROOT};
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
    tocs: Vec<Arc<Toc>>,
    asked: Vec<AtomicUsize>,
}

impl MemLayers {
    fn new(layers: &[Vec<E>]) -> Arc<MemLayers> {
        Self::of_tars(&layers.iter().map(|l| tar_of(l)).collect::<Vec<_>>())
    }

    fn of_tars(tars: &[Vec<u8>]) -> Arc<MemLayers> {
        let mut files = Vec::new();
        let mut tocs = Vec::new();
        let scratch = std::env::temp_dir();
        for tar in tars {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(tar).unwrap();
            let mut r = std::fs::File::open(f.path()).unwrap();
            let built = build::index_layer(&mut r, Compression::None, None, None, &scratch).unwrap();
            let sums = BlockSums::of(&tar[..]).unwrap();
            tocs.push(Arc::new(toc::open_parts(built.toc, &scratch, "sha256:test", DataIndex::Plain, &sums).unwrap()));
            files.push(f);
        }
        let asked = tars.iter().map(|_| AtomicUsize::new(0)).collect();
        Arc::new(MemLayers { files, tocs, asked })
    }

    fn asked(&self) -> Vec<bool> {
        self.asked.iter().map(|a| a.load(Ordering::SeqCst) > 0).collect()
    }
}

impl LayerSource for MemLayers {
    fn layer_count(&self) -> usize {
        self.tocs.len()
    }
    fn toc(&self, i: usize) -> Result<Arc<Toc>, SourceError> {
        self.asked[i].fetch_add(1, Ordering::SeqCst);
        Ok(self.tocs[i].clone())
    }
    fn data(&self, i: usize) -> Result<Arc<LayerData>, SourceError> {
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

/// A listing's entries keep their nodes while their attributes are read: counting a
/// hard-link group's names resolves their paths, and the directories that makes on the
/// way go again only if that resolution made them, never one the listing handed out.
#[test]
fn a_listed_directory_outlives_the_link_count_of_a_sibling() {
    let (fs, _) = fs_of(&[vec![
        E::Dir("hardlinks"),
        E::File("hardlinks/a", "shared"),
        E::Hard("hardlinks/b", "hardlinks/a"),
        E::Dir("hardlinks/sub"),
        E::Hard("hardlinks/sub/c", "hardlinks/a"),
    ]]);
    let dir = walk(&fs, "hardlinks").unwrap();
    let listing = fs.readdir(dir).unwrap();
    let mut seen = Vec::new();
    for e in listing.iter().filter(|e| e.name != b"." && e.name != b"..") {
        let info = fs.getattr(e.ino).unwrap_or_else(|err| panic!("{:?}: {err:?}", String::from_utf8_lossy(&e.name)));
        seen.push((String::from_utf8(e.name.clone()).unwrap(), info.nlink));
    }
    assert_eq!(seen, [("a".to_string(), 3), ("b".to_string(), 3), ("sub".to_string(), 2)]);
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
    fn toc(&self, i: usize) -> Result<Arc<Toc>, SourceError> {
        if i == 0 {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let mut open = self.gate.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        self.inner.toc(i)
    }
    fn data(&self, i: usize) -> Result<Arc<LayerData>, SourceError> {
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

/// A listing is read from the TOCs in batches, each resuming at the cookie the last
/// one ended with: any batch size gives readdir's entries, and nothing is kept between
/// batches (the same cookie read twice gives the same entries).
#[test]
fn listings_resume_from_any_cookie_in_batches_of_any_size() {
    let mut layers = real_shape();
    let names: Vec<&'static str> =
        (0..150).map(|i| &*Box::leak(format!("usr/many/f{i:03}").into_boxed_str())).collect();
    layers[0].extend(names.iter().map(|n| E::File(n, "x")));
    layers[2].extend([E::Marker("usr/many/.wh.f007"), E::File("usr/many/f151", "y"), E::File("usr/many/a", "z")]);
    let (fs, _) = fs_of(&layers);
    for dir in ["etc", "usr/many", ""] {
        let ino = walk(&fs, dir).unwrap();
        let want: Vec<(Vec<u8>, u64)> = fs.readdir(ino).unwrap().into_iter().map(|e| (e.name, e.ino)).collect();
        for batch in [1, 2, 7, 64, 1000] {
            let mut got = Vec::new();
            let mut offset = 0;
            loop {
                let b = fs.read_dir(ino, offset, batch).unwrap();
                let Some(last) = b.last() else { break };
                assert!(b.len() <= batch);
                offset = last.cookie;
                // Reading from the same cookie again gives the same next entries.
                let again = fs.read_dir(ino, offset, batch).unwrap();
                let next: Vec<_> = fs.read_dir(ino, offset, batch).unwrap().into_iter().map(|l| l.name).collect();
                assert_eq!(again.into_iter().map(|l| l.name).collect::<Vec<_>>(), next);
                for l in b {
                    got.push((l.name.clone(), fs.ino_of(&l).unwrap()));
                }
            }
            assert_eq!(got, want, "{dir:?} in batches of {batch}");
        }
    }
    let many = walk(&fs, "usr/many").unwrap();
    let listed: Vec<Vec<u8>> = fs.readdir(many).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(listed.len(), 2 + 150 + 2 - 1, "f007 whited out, f151 and a added");
    assert!(listed.windows(2).skip(2).all(|w| w[0] < w[1]), "sorted by name");
    let etc = walk(&fs, "etc").unwrap();
    assert_eq!(fs.opendir(etc, libc::O_RDWR), Err(FsError::ReadOnly));
    assert!(fs.read_dir(etc, 0xdead_0000_0000_beef, 10).is_err(), "an offset this listing never gave");
}

// ---------------------------------------------------------------------------------------
// Hostile layer content: names as bytes, broken hard links, entries that would reach
// outside the image or that no kernel could serve, and the bounds on a layer.

/// One raw tar entry: the name and link target go in a PAX header as the bytes given
/// (the `tar` crate's builder refuses `..` and other names a hostile tar may hold).
struct Raw<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    link: &'a [u8],
    data: &'a [u8],
    /// `None`: the mode field is left blank, as some tar writers do.
    mode: Option<u32>,
    pax: Vec<(&'a [u8], &'a [u8])>,
}

fn raw<'a>(name: &'a [u8], kind: tar::EntryType) -> Raw<'a> {
    Raw { name, kind, link: b"", data: b"", mode: Some(0o644), pax: Vec::new() }
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = [b" ", key, b"=", value, b"\n"].concat();
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    [len.to_string().as_bytes(), &body].concat()
}

fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut records = pax_record(b"path", e.name);
        if !e.link.is_empty() {
            records.extend(pax_record(b"linkpath", e.link));
        }
        for (k, v) in &e.pax {
            records.extend(pax_record(k, v));
        }
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(records.len() as u64);
        x.set_path("pax").unwrap();
        x.set_cksum();
        b.append(&x, &records[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("placeholder").unwrap();
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mtime(1_600_000_000);
        match e.mode {
            Some(m) => h.set_mode(m),
            None => h.as_old_mut().mode = [0; 8],
        }
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

fn fs_of_tars(tars: &[Vec<u8>]) -> Fs {
    Fs::new(Tree::new(MemLayers::of_tars(tars), DirAttrs::Provisional), 0)
}

/// The error indexing this layer gives, within these limits.
fn index_error(blob: &[u8], compression: Compression, limits: &build::Limits) -> String {
    match build::index_layer_with(blob, compression, None, None, &std::env::temp_dir(), limits) {
        Ok(_) => panic!("the layer was accepted"),
        Err(e) => format!("{:#}", anyhow::Error::from(e)),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn names_are_bytes_so_two_names_never_collapse_into_one() {
    use std::os::unix::ffi::OsStrExt;
    // Before names were bytes, the byte 0xe9 was kept as U+10FFE9: one entry for both.
    let latin1 = &b"caf\xe9"[..];
    let private = "caf\u{10FFE9}".as_bytes();
    let tar = raw_tar(&[
        Raw { data: b"latin-1", ..raw(latin1, tar::EntryType::Regular) },
        Raw { data: b"private use", ..raw(private, tar::EntryType::Regular) },
        Raw { link: b"caf\xe9", ..raw(b"to-latin1", tar::EntryType::Symlink) },
    ]);
    let fs = fs_of_tars(&[tar]);
    let listed: Vec<Vec<u8>> = fs.readdir(ROOT).unwrap().into_iter().map(|e| e.name).skip(2).collect();
    assert_eq!(listed, vec![latin1.to_vec(), private.to_vec(), b"to-latin1".to_vec()]);
    for (name, want) in [(latin1, &b"latin-1"[..]), (private, b"private use")] {
        let info = fs.lookup(ROOT, OsStr::from_bytes(name)).unwrap().unwrap();
        assert_eq!(fs.read(info.ino, 0, 100).unwrap(), want);
    }
    let link = fs.lookup(ROOT, OsStr::new("to-latin1")).unwrap().unwrap();
    assert_eq!((fs.readlink(link.ino).unwrap(), link.size), (b"caf\xe9".to_vec(), 4));
}

#[test]
fn a_broken_hard_link_fails_alone_and_the_rest_of_the_image_is_served() {
    let (fs, _) = fs_of(&[
        vec![E::Dir("lowdir"), E::File("lowdir/f", "low")],
        vec![
            E::File("ok", "fine"),
            E::Hard("missing", "/etc/passwd"),
            E::Hard("early", "later"),
            E::File("later", "written after the link"),
            E::Dir("d"),
            E::Hard("to-dir", "d"),
            E::Hard("to-lower-dir", "lowdir"),
        ],
    ]);
    // Before, the root's listing (which looks up every name) failed with EIO.
    assert_eq!(names(&fs, ""), vec!["d", "later", "lowdir", "ok"]);
    assert_eq!(content(&fs, "ok"), "fine");
    assert_eq!(content(&fs, "later"), "written after the link");
    for name in ["missing", "early", "to-dir", "to-lower-dir"] {
        // The EIO keeps its cause, for the log line of the failed operation.
        let err = match fs.lookup(ROOT, OsStr::new(name)) {
            Err(e @ FsError::Io(_)) => imgfs::log::Chain(&e).to_string(),
            other => panic!("{name}: {:?}", other.map(|_| ())),
        };
        assert!(err.starts_with(&format!("EIO: hard link \"{name}\" in layer ")), "{err}");
        assert!(err.contains("which is not a file of the image at that point"), "{err}");
    }
    assert_eq!(content(&fs, "lowdir/f"), "low");
}

#[test]
fn a_directory_with_no_mode_is_traversable() {
    let tar = raw_tar(&[
        Raw { mode: None, ..raw(b"d", tar::EntryType::Directory) },
        Raw { mode: None, data: b"x", ..raw(b"d/f", tar::EntryType::Regular) },
    ]);
    let fs = fs_of_tars(&[tar]);
    assert_eq!(fs.getattr(walk(&fs, "d").unwrap()).unwrap().mode, 0o755);
    assert_eq!(fs.getattr(walk(&fs, "d/f").unwrap()).unwrap().mode, 0o644);
}

#[test]
fn dot_dot_and_absolute_names_stay_inside_the_image() {
    let tar = raw_tar(&[
        Raw { data: b"climbed", ..raw(b"../../../escape", tar::EntryType::Regular) },
        Raw { data: b"absolute", ..raw(b"/abs/file", tar::EntryType::Regular) },
        Raw { data: b"middle", ..raw(b"a/b/../c", tar::EntryType::Regular) },
        Raw { link: b"/abs/file", ..raw(b"hard-abs", tar::EntryType::Link) },
        Raw { link: b"../../../etc/passwd", ..raw(b"sym-out", tar::EntryType::Symlink) },
    ]);
    let fs = fs_of_tars(&[tar]);
    assert_eq!(names(&fs, ""), vec!["a", "abs", "escape", "hard-abs", "sym-out"]);
    assert_eq!(content(&fs, "escape"), "climbed");
    assert_eq!(content(&fs, "a/c"), "middle");
    assert_eq!(content(&fs, "hard-abs"), "absolute", "an absolute hard link names a file of the image");
    // Symlinks are served as they are: the reader's kernel resolves them.
    assert_eq!(fs.readlink(walk(&fs, "sym-out").unwrap()).unwrap(), b"../../../etc/passwd");

    let out = raw_tar(&[Raw { link: b"a/../../etc/passwd", ..raw(b"hard-out", tar::EntryType::Link) }]);
    let err = index_error(&out, Compression::None, &build::Limits::DEFAULT);
    assert!(err.contains(r#"hard link "hard-out" points outside the image, at "a/../../etc/passwd""#), "{err}");
}

#[test]
fn invalid_whiteouts_hide_nothing_and_are_never_shown() {
    let (fs, _) = fs_of(&[
        vec![E::Dir("d"), E::File("d/f", "kept"), E::File("top", "t")],
        vec![E::Dir("d"), E::Marker("d/.wh."), E::Marker("d/.wh.."), E::Marker("d/.wh..."), E::Marker(".wh..")],
    ]);
    assert_eq!(names(&fs, ""), vec!["d", "top"]);
    assert_eq!(names(&fs, "d"), vec!["f"]);
    assert_eq!(content(&fs, "d/f"), "kept");
}

#[test]
fn names_no_kernel_can_serve_fail_the_layer_with_the_entry_named() {
    let long = vec![b'n'; 256];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (raw_tar(&[raw(&long, tar::EntryType::Regular)]), "a name component is longer than 255 bytes"),
        (raw_tar(&[raw(b"nul\0name", tar::EntryType::Regular)]), "the name holds a NUL byte"),
        (raw_tar(&[raw(b"./", tar::EntryType::Regular)]), "makes the image's root a File"),
        (
            raw_tar(&[Raw {
                pax: vec![(b"GNU.sparse.major", b"1"), (b"GNU.sparse.name", b"real")],
                ..raw(b"GNUSparseFile.0/real", tar::EntryType::Regular)
            }]),
            r#"sparse file "GNUSparseFile.0/real" (PAX) in layer is not supported"#,
        ),
    ];
    for (tar, want) in cases {
        let err = index_error(&tar, Compression::None, &build::Limits::DEFAULT);
        assert!(err.contains(want), "{err}");
    }
    // 255 bytes is fine.
    let fs = fs_of_tars(&[raw_tar(&[raw(&long[..255], tar::EntryType::Regular)])]);
    assert_eq!(names(&fs, "")[0].len(), 255);
}

#[test]
fn a_layer_that_is_not_a_tar_or_is_cut_short_says_so() {
    let tar = tar_of(&[E::File("f", &"x".repeat(100_000))]);
    let not_tar = b"this is not a tar archive, just text that goes on for a while".repeat(20);
    let err = index_error(&not_tar, Compression::None, &build::Limits::DEFAULT);
    assert!(err.contains("layer is not a tar archive"), "{err}");
    let err = index_error(&gzip(&not_tar), Compression::Gzip, &build::Limits::DEFAULT);
    assert!(err.contains("layer is not a tar archive"), "{err}");

    let gz = gzip(&tar);
    let err = index_error(&gz[..gz.len() / 2], Compression::Gzip, &build::Limits::DEFAULT);
    assert!(err.contains("layer is truncated: its gzip stream ends early"), "{err}");
    let zs = zstd::encode_all(&tar[..], 3).unwrap();
    let err = index_error(&zs[..zs.len() / 2], Compression::Zstd, &build::Limits::DEFAULT);
    assert!(err.contains("layer is truncated: its zstd stream ends early"), "{err}");
    let err = index_error(&not_tar, Compression::Gzip, &build::Limits::DEFAULT);
    assert!(err.contains("layer is not valid gzip"), "{err}");
}

#[test]
fn a_layer_over_the_size_or_entry_limit_fails_naming_the_limit() {
    // A small gzip bomb: 64 MiB of zeros in one file compress to about 64 KiB.
    let zeros = vec![0u8; 64 << 20];
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(zeros.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "zeros", &zeros[..]).unwrap();
    let bomb = gzip(&b.into_inner().unwrap());
    assert!(bomb.len() < 1 << 20);
    let limits = build::Limits { max_bytes: 8 << 20, max_entries: 1000 };
    let err = index_error(&bomb, Compression::Gzip, &limits);
    assert!(
        err.contains("layer is larger than 8388608 bytes uncompressed, the limit (set IMGFS_MAX_LAYER_SIZE"),
        "{err}"
    );

    let many: Vec<E> = (0..200).map(|_| E::Marker("f")).collect();
    let limits = build::Limits { max_bytes: 1 << 30, max_entries: 100 };
    let err = index_error(&tar_of(&many), Compression::None, &limits);
    assert!(err.contains("layer has more than 100 entries, the limit (set IMGFS_MAX_LAYER_ENTRIES"), "{err}");
}

#[test]
fn a_full_disk_while_copying_the_layer_says_no_space() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let tar = tar_of(&[E::File("f", "data")]);
    let zs = zstd::encode_all(&tar[..], 3).unwrap();
    let err =
        build::index_layer(&zs[..], Compression::Zstd, None, Some(&mut Full), &std::env::temp_dir()).err().unwrap();
    let err = format!("{:#}", anyhow::Error::from(err));
    assert!(err.starts_with("cannot write the re-encoded layer: No space left on device"), "{err}");
}

#[test]
fn tar_headers_for_one_entry_are_bounded() {
    let big = vec![b'x'; 2 << 20];
    let tar = raw_tar(&[Raw { pax: vec![(b"comment", &big)], ..raw(b"f", tar::EntryType::Regular) }]);
    let err = index_error(&tar, Compression::None, &build::Limits::DEFAULT);
    assert!(
        err.contains("layer has over 1048576 bytes of tar headers (PAX records or a GNU long name) for one entry"),
        "{err}"
    );
    // Under the bound, with a large file before it, is fine.
    let fine = vec![b'y'; 512 << 10];
    let tar = raw_tar(&[
        Raw { data: &big, ..raw(b"large", tar::EntryType::Regular) },
        Raw { pax: vec![(b"SCHILY.xattr.user.big", &fine)], ..raw(b"g", tar::EntryType::Regular) },
    ]);
    let fs = fs_of_tars(&[tar]);
    assert_eq!(fs.getxattr(walk(&fs, "g").unwrap(), OsStr::new("user.big")).unwrap().len(), 512 << 10);
    assert_eq!(fs.read(walk(&fs, "large").unwrap(), 0, 10).unwrap(), b"xxxxxxxxxx");
}

#[test]
fn xattr_names_are_bytes_too() {
    use std::os::unix::ffi::OsStrExt;
    let tar = raw_tar(&[Raw {
        pax: vec![(b"SCHILY.xattr.user.caf\xe9", b"latin-1"), (b"SCHILY.xattr.user.plain", b"p")],
        ..raw(b"f", tar::EntryType::Regular)
    }]);
    let fs = fs_of_tars(&[tar]);
    let f = walk(&fs, "f").unwrap();
    // Before, a key that is not UTF-8 was dropped.
    assert_eq!(fs.getxattr(f, OsStr::from_bytes(b"user.caf\xe9")).unwrap(), b"latin-1");
    assert_eq!(fs.listxattr(f).unwrap(), b"user.caf\xe9\0user.plain\0");
}

/// The deepest path a layer may hold (just under 4096 bytes: 2047 directories) resolves
/// on an ordinary thread's stack, with the directories in a lower layer than the file.
#[test]
fn the_deepest_path_resolves() {
    let dirs = vec!["d"; 2046].join("/");
    let file = format!("{dirs}/f");
    assert!(file.len() < 4096);
    let lower = raw_tar(&[raw(dirs.as_bytes(), tar::EntryType::Directory)]);
    let upper = raw_tar(&[Raw { data: b"deep", ..raw(file.as_bytes(), tar::EntryType::Regular) }]);
    let fs = fs_of_tars(&[lower, upper]);
    let mut ino = ROOT;
    for _ in 0..2046 {
        ino = fs.lookup(ino, OsStr::new("d")).unwrap().unwrap().ino;
        assert_eq!(fs.getattr(ino).unwrap().kind, Kind::Dir);
    }
    let f = fs.lookup(ino, OsStr::new("f")).unwrap().unwrap();
    assert_eq!(fs.read(f.ino, 0, 10).unwrap(), b"deep");
    assert_eq!(fs.readdir(ino).unwrap().len(), 3);
}

/// The kernel's references are counted: a node it has forgotten every lookup of goes
/// (a directory only once no directory below it is alive), and comes back, when looked
/// up again, under the same inode number: a number never passes to another file, so a
/// walk that finds hard links by `st_ino` (tar, du) never sees two files as one; a
/// hard-link group is one node however many names were looked up.
#[test]
fn nodes_the_kernel_forgets_go_and_come_back_under_the_same_number() {
    let (fs, _) = fs_of(&real_shape());
    let nodes = || fs.statfs().files;
    let start = nodes();
    let etc = fs.lookup(ROOT, OsStr::new("etc")).unwrap().unwrap();
    let f = fs.lookup(etc.ino, OsStr::new("os-release")).unwrap().unwrap();
    assert_eq!(fs.lookup(etc.ino, OsStr::new("os-release")).unwrap().unwrap().ino, f.ino);
    assert_eq!(nodes(), start + 2);
    fs.forget(f.ino, 1);
    assert_eq!(fs.getattr(f.ino).unwrap().ino, f.ino, "one lookup is still held");
    fs.forget(f.ino, 1);
    assert_eq!(fs.getattr(f.ino).err(), Some(FsError::NotFound), "forgotten, and gone");
    fs.forget(etc.ino, 1);
    assert_eq!(nodes(), start);

    // A directory stays while one below it is alive.
    let usr = fs.lookup(ROOT, OsStr::new("usr")).unwrap().unwrap();
    let bin = fs.lookup(usr.ino, OsStr::new("bin")).unwrap().unwrap();
    fs.forget(usr.ino, 1);
    assert_eq!(fs.getattr(usr.ino).unwrap().kind, Kind::Dir);
    assert_eq!(fs.lookup(bin.ino, OsStr::new("sh")).unwrap().map(|i| i.kind), Some(Kind::File));
    fs.forget(bin.ino, 1);
    assert_eq!(nodes(), start + 1, "bin and usr went; usr/bin/sh is still held");

    // Forgotten nodes come back under their own numbers, and no other file takes them.
    let again = fs.lookup(ROOT, OsStr::new("etc")).unwrap().unwrap();
    assert_eq!(again.ino, etc.ino);
    let f_again = fs.lookup(again.ino, OsStr::new("os-release")).unwrap().unwrap();
    assert_eq!((f_again.ino, f_again.size), (f.ino, 8));
    let mut seen = std::collections::HashMap::new();
    for path in ["etc", "etc/os-release", "etc/apt.conf", "etc/app.conf", "usr", "usr/bin", "usr/bin/sh", "root"] {
        let info = fs.getattr(walk(&fs, path).unwrap()).unwrap();
        if let Some(other) = seen.insert(info.ino, path) {
            panic!("{path} and {other} have one inode number");
        }
    }

    // Three names of one hard-link group: one node, counted once per lookup of any name.
    let opt = fs.lookup(ROOT, OsStr::new("opt")).unwrap().unwrap();
    let a = fs.lookup(opt.ino, OsStr::new("tool")).unwrap().unwrap();
    let b = fs.lookup(opt.ino, OsStr::new("tool-a")).unwrap().unwrap();
    assert_eq!((a.ino, a.nlink), (b.ino, 3));
    fs.forget(a.ino, 1);
    assert_eq!(fs.getattr(b.ino).unwrap().nlink, 3, "still held through tool-a");
    fs.forget(b.ino, 1);
    assert_eq!(fs.getattr(a.ino).err(), Some(FsError::NotFound));

    // Entries handed out by a listing are counted as lookups are; `.` and `..` are not.
    let listed = fs.read_dir(ROOT, 0, 100).unwrap();
    let before = nodes();
    let infos: Vec<_> = listed.iter().map(|l| fs.entry(l).unwrap()).collect();
    for (l, info) in listed.iter().zip(&infos) {
        if l.name != b"." && l.name != b".." {
            fs.forget(info.ino, 1);
        }
    }
    assert!(nodes() <= before, "{} nodes after forgetting a listing, {before} before", nodes());
    assert_eq!(fs.getattr(ROOT).unwrap().kind, Kind::Dir, "the root is never forgotten");
}
