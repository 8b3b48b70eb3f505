//! The TOC against a model of the rules it encodes (hash maps over the whole layer, as
//! the union used to build at open), on random layers; and damaged files.

use super::*;
use crate::layer::{build, join, split_parent, Contents, Entry};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// What a layer means to the union, computed the plain way: the entries in stream
/// order with hard links resolved as the stream had them, and tables over paths.
struct Model {
    entries: Vec<Entry>,
    by_path: HashMap<Vec<u8>, usize>,
    children: HashMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    implicit: HashSet<Vec<u8>>,
    whiteouts: HashSet<Vec<u8>>,
    opaque: HashSet<Vec<u8>>,
    lower_links: HashMap<Vec<u8>, BTreeSet<usize>>,
    links_to: HashMap<usize, BTreeSet<usize>>,
    linked: HashSet<usize>,
}

impl Model {
    fn new(contents: &Contents) -> Model {
        let mut entries = contents.entries.clone();
        let mut latest: HashMap<Vec<u8>, usize> = HashMap::new();
        for i in 0..entries.len() {
            if entries[i].kind == Kind::Hardlink {
                let t = entries[i].link.clone().unwrap();
                entries[i].link_entry = latest.get(&t).map(|&j| {
                    let target = &entries[j];
                    target.link_entry.filter(|_| target.kind == Kind::Hardlink).unwrap_or(j as u32)
                });
            } else {
                entries[i].link_entry = None;
            }
            latest.insert(entries[i].path.clone(), i);
        }
        let by_path: HashMap<Vec<u8>, usize> = latest;
        let mut children: HashMap<Vec<u8>, BTreeSet<Vec<u8>>> = HashMap::new();
        let mut implicit = HashSet::new();
        for p in by_path.keys() {
            let mut p: &[u8] = p;
            while !p.is_empty() {
                let (parent, name) = split_parent(p);
                children.entry(parent.to_vec()).or_default().insert(name.to_vec());
                if !by_path.contains_key(parent) && !parent.is_empty() {
                    implicit.insert(parent.to_vec());
                }
                p = parent;
            }
        }
        let mut lower_links: HashMap<Vec<u8>, BTreeSet<usize>> = HashMap::new();
        let mut links_to: HashMap<usize, BTreeSet<usize>> = HashMap::new();
        let mut linked = HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            if e.kind == Kind::Hardlink {
                linked.insert(i);
                match e.link_entry {
                    Some(t) => {
                        links_to.entry(t as usize).or_default().insert(i);
                        linked.insert(t as usize);
                    }
                    None => {
                        lower_links.entry(e.link.clone().unwrap()).or_default().insert(i);
                    }
                }
            }
        }
        Model {
            entries,
            by_path,
            children,
            implicit,
            whiteouts: contents.whiteouts.iter().cloned().collect(),
            opaque: contents.opaque.iter().cloned().collect(),
            lower_links,
            links_to,
            linked,
        }
    }

    fn presence(&self, path: &[u8]) -> Presence {
        match self.by_path.get(path) {
            Some(&i) => Presence::Entry(self.entries[i].kind),
            None if path.is_empty() || self.implicit.contains(path) => Presence::ImplicitDir,
            None => Presence::Absent,
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn entry(path: &[u8], kind: Kind) -> Entry {
    Entry {
        path: path.to_vec(),
        kind,
        mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 1_600_000_000,
        link: None,
        link_entry: None,
        rdev: (0, 0),
        xattrs: Vec::new(),
        offset: 0,
    }
}

/// A random layer over a small set of names, so paths meet: duplicates, hard links to
/// earlier, later, missing and replaced paths, links to links, whiteouts and opaque
/// markers anywhere, a big directory (fences), names that share long prefixes.
fn random_contents(rng: &mut Rng, n: usize) -> Contents {
    let names: Vec<Vec<u8>> = ["a", "b", "c", "dir", "a.b", "a-b", "\u{e9}t\u{e9}", "zz"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .chain((0..6).map(|i| format!("a-very-long-shared-prefix-{i}").into_bytes()))
        .chain([b"caf\xe9".to_vec()])
        .collect();
    let path = |rng: &mut Rng| -> Vec<u8> {
        let depth = 1 + rng.below(3);
        let parts: Vec<&[u8]> = (0..depth).map(|_| &names[rng.below(names.len())][..]).collect();
        parts.join(&b'/')
    };
    let mut c = Contents::default();
    if rng.below(2) == 0 {
        c.entries.push(entry(b"", Kind::Dir));
    }
    for i in 0..n {
        let p = path(rng);
        let kind = [Kind::File, Kind::Dir, Kind::Symlink, Kind::Hardlink, Kind::Char, Kind::Fifo][rng.below(6)];
        let mut e = entry(&p, kind);
        e.mode = (rng.next() & 0o7777) as u32;
        e.uid = rng.below(3) as u32 * 1000;
        e.gid = rng.below(2) as u32;
        e.mtime = rng.next() as i64 >> 20;
        match kind {
            Kind::File => {
                e.size = rng.below(100_000) as u64;
                e.offset = i as u64 * 512;
            }
            Kind::Symlink => e.link = Some(format!("../target/{i}").into_bytes()),
            Kind::Hardlink => e.link = Some(path(rng)),
            Kind::Char => e.rdev = (rng.below(300) as u32, rng.below(70000) as u32),
            _ => {}
        }
        if rng.below(5) == 0 {
            e.xattrs.push((b"user.k".to_vec(), format!("v{i}").into_bytes()));
            if rng.below(2) == 0 {
                e.xattrs.push((b"security.\xff".to_vec(), Vec::new()));
            }
        }
        c.entries.push(e);
        match rng.below(12) {
            0 => c.whiteouts.push(path(rng)),
            1 => c.opaque.push(path(rng)),
            2 => c.opaque.push(Vec::new()),
            _ => {}
        }
    }
    // A big directory: fences, and a lookup of every child.
    if rng.below(2) == 0 {
        for i in 0..(200 + rng.below(300)) {
            c.entries.push(entry(format!("big/f{:04}-{}", rng.below(10_000), i % 7).as_bytes(), Kind::File));
        }
    }
    c.entries.retain(|e| !e.path.is_empty() || e.kind == Kind::Dir);
    c
}

fn sums() -> crate::layer::block_sums::BlockSums {
    crate::layer::block_sums::BlockSums::of(&b"some layer data"[..]).unwrap()
}

fn toc_of(c: &Contents, dir: &Path) -> Toc {
    from_contents(c, dir, "sha256:aa", write::DataIndex::Plain, &sums()).unwrap()
}

/// Every path the model knows, and absent paths near them.
fn universe(m: &Model, c: &Contents) -> BTreeSet<Vec<u8>> {
    let mut all: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut add = |p: &[u8]| {
        let mut p = p.to_vec();
        loop {
            all.insert(p.clone());
            all.insert(join(&p, b"nope"));
            if p.is_empty() {
                break;
            }
            p = split_parent(&p).0.to_vec();
        }
    };
    for e in &c.entries {
        add(&e.path);
        if let Some(l) = &e.link {
            add(l);
        }
    }
    for p in c.whiteouts.iter().chain(&c.opaque).chain(m.lower_links.keys()) {
        add(p);
    }
    all
}

fn check_against_model(c: &Contents, toc: &Toc) {
    let m = Model::new(c);
    // Record ids by stream place.
    let mut by_seq: HashMap<u32, u32> = HashMap::new();
    for id in 0..toc.record_count() {
        let r = toc.record(id).unwrap();
        if r.kind().is_some() {
            assert!(by_seq.insert(r.seq, id).is_none(), "two records for entry {}", r.seq);
        }
    }
    assert_eq!(by_seq.len(), m.entries.len(), "one record per entry");
    let seq_of = |id: u32| toc.record(id).unwrap().seq as usize;
    for p in universe(&m, c) {
        let node = toc.lookup(&p).unwrap();
        let r = node.map(|n| toc.record(n).unwrap());
        let what = crate::layer::show(&p);
        assert_eq!(r.map_or(Presence::Absent, |r| r.presence()), m.presence(&p), "presence of {what}");
        assert_eq!(r.is_some_and(|r| r.is_whiteout()), m.whiteouts.contains(&p), "whiteout {what}");
        assert_eq!(r.is_some_and(|r| r.is_opaque()), m.opaque.contains(&p), "opaque {what}");
        let lower: BTreeSet<usize> =
            r.map(|r| toc.links_to_lower(&r).unwrap().into_iter().map(seq_of).collect()).unwrap_or_default();
        assert_eq!(lower, m.lower_links.get(&p).cloned().unwrap_or_default(), "links to lower {what}");
        let Some(r) = r else { continue };
        assert_eq!(toc.path_of(r.id).unwrap(), p, "path of node {}", r.id);
        // Listed children: entries and implicit directories, sorted, carriers left out.
        let kids: Vec<Vec<u8>> = toc
            .children(r.id)
            .unwrap()
            .filter_map(|k| {
                let kr = toc.record(k).unwrap();
                (kr.presence() != Presence::Absent).then(|| toc.name(&kr).unwrap().to_vec())
            })
            .collect();
        let want: Vec<Vec<u8>> = m.children.get(&p).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        assert_eq!(kids, want, "children of {what}");
        if let Some(&i) = m.by_path.get(&p) {
            assert_eq!(r.seq as usize, i, "{what} holds the last entry for it");
            assert_eq!(toc.final_path(r.id).unwrap(), Some(p.clone()));
        }
    }
    for (i, e) in m.entries.iter().enumerate() {
        let r = toc.record(by_seq[&(i as u32)]).unwrap();
        let what = format!("entry {i} ({})", crate::layer::show(&e.path));
        assert_eq!(r.kind(), Some(e.kind), "{what}");
        assert_eq!((r.mode, r.uid, r.gid, r.mtime), (e.mode & 0o7777, e.uid, e.gid, e.mtime), "{what}");
        assert_eq!((r.size(), r.offset(), r.rdev()), (e.size, e.offset, e.rdev), "{what}");
        if e.kind == Kind::File {
            assert_eq!((r.size(), r.offset()), (e.size, e.offset), "{what}");
        }
        assert_eq!(toc.link(&r).unwrap(), e.link.as_deref(), "{what}");
        assert_eq!(toc.xattrs(&r).unwrap(), e.xattrs, "{what}");
        assert_eq!(toc.entry_path(&r).unwrap(), e.path, "{what}");
        let target = toc.link_target(&r).unwrap().map(|t| t.seq);
        assert_eq!(target, e.link_entry, "link of {what}");
        let to: BTreeSet<usize> = toc.links_to(&r).unwrap().into_iter().map(seq_of).collect();
        assert_eq!(to, m.links_to.get(&i).cloned().unwrap_or_default(), "links to {what}");
        assert_eq!(r.is_linked(), m.linked.contains(&i), "{what} linked");
        if m.by_path[&e.path] != i {
            assert_eq!(toc.final_path(r.id).unwrap(), None, "{what} was replaced");
        }
    }
}

#[test]
fn random_layers_read_back_as_the_model_says() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..60 {
        let c = random_contents(&mut rng, 10 + round * 3);
        let toc = toc_of(&c, dir.path());
        check_against_model(&c, &toc);
        toc.verify().unwrap();
    }
}

/// With a sort budget small enough that every sort spills many runs, the file is
/// byte for byte the one made in memory.
#[test]
fn spilled_sorts_write_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let c = random_contents(&mut rng, 400);
    let bytes = |budget: Option<usize>| {
        let mut w = TocWriter::new(dir.path()).unwrap();
        if let Some(b) = budget {
            w.set_budget(b);
        }
        for e in &c.entries {
            w.entry(e).unwrap();
        }
        for p in &c.whiteouts {
            w.whiteout(p).unwrap();
        }
        for p in &c.opaque {
            w.opaque(p).unwrap();
        }
        let mut f = scratch_file(dir.path()).unwrap();
        write::write(&mut f, "sha256:aa", w.finish().unwrap(), write::DataIndex::Plain, &sums()).unwrap();
        let mut out = Vec::new();
        use std::io::{Read, Seek};
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut out).unwrap();
        out
    };
    assert_eq!(bytes(Some(512)), bytes(None));
}

#[test]
fn paths_sort_component_by_component() {
    use std::cmp::Ordering::*;
    let cmp = write::test_compare_paths;
    assert_eq!(cmp(b"a", b"a-b"), Less);
    assert_eq!(cmp(b"a/z", b"a-b/a"), Less, "a/ before a-");
    assert_eq!(cmp(b"a/b", b"a/bc"), Less);
    assert_eq!(cmp(b"ab", b"a/b"), Greater);
}

#[test]
fn a_tar_layer_with_checkpoints_and_sums_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut x = 1u64;
    for i in 0..30 {
        let data: Vec<u8> = (0..60_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                b'a' + (x >> 60) as u8
            })
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        b.append_data(&mut h, format!("d/f{i}"), &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let blob = gz.finish().unwrap();
    let built = build::index_layer(&blob[..], crate::image::Compression::Gzip, None, None, dir.path()).unwrap();
    let c = built.checkpoints.unwrap();
    let s = crate::layer::block_sums::BlockSums::of(&blob[..]).unwrap();
    let toc = open_parts(built.toc, dir.path(), "sha256:bb", write::DataIndex::Checkpoints(&c), &s).unwrap();
    assert_eq!(toc.access(), AccessKind::Checkpoints);
    assert_eq!(toc.checkpoints().unwrap().unwrap(), c);
    assert_eq!(toc.sums_len(), s.covered());
    for (i, want) in s.sums().iter().enumerate() {
        assert_eq!(toc.sum(i as u64).unwrap(), Some(*want));
    }
    assert_eq!(toc.sum(s.sums().len() as u64).unwrap(), None);
    for i in 0..c.span_count() {
        let ((u0, u1), (c0, c1)) = toc.span(i as u64).unwrap();
        assert_eq!(((u0, u1), (c0, c1)), (c.span_range(i), c.compressed_range(i)));
        assert_eq!(toc.span_of(u0).unwrap(), i as u64);
        let span = toc.decode_span(i as u64, &blob[c0 as usize..c1 as usize]).unwrap();
        assert_eq!(span, &tar[u0 as usize..u1 as usize]);
    }
    let f = toc.lookup(b"d/f7").unwrap().unwrap();
    let r = toc.record(f).unwrap();
    assert_eq!((r.kind(), r.mode, r.size()), (Some(Kind::File), 0o600, 60_000));
}

/// Write the TOC of `c` to `path`.
fn write_named(c: &Contents, path: &Path, scratch: &Path) {
    let mut f = File::create(path).unwrap();
    let mut w = TocWriter::new(scratch).unwrap();
    for e in &c.entries {
        w.entry(e).unwrap();
    }
    for p in &c.whiteouts {
        w.whiteout(p).unwrap();
    }
    for p in &c.opaque {
        w.opaque(p).unwrap();
    }
    write::write(&mut f, "sha256:aa", w.finish().unwrap(), write::DataIndex::Plain, &sums()).unwrap();
}

/// A TOC cut short or with a flipped bit anywhere fails to open or fails every read
/// that touches the damage; nothing panics, nothing wrong is served.
#[test]
fn damaged_tocs_give_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(99);
    let c = random_contents(&mut rng, 300);
    let path = dir.path().join("t.toc");
    write_named(&c, &path, dir.path());
    let bytes = std::fs::read(&path).unwrap();
    check_against_model(&c, &Toc::open(&path, "sha256:aa").unwrap());
    let err = Toc::open(&path, "sha256:bb").unwrap_err().to_string();
    assert!(err.contains("not the TOC of sha256:bb"), "{err}");

    for cut in [0, 100, 4095, 4096, 5000, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(Toc::open(&path, "sha256:aa").is_err(), "cut at {cut}");
    }
    let mut positions: Vec<usize> = (0..bytes.len()).step_by(97).collect();
    positions.extend([8, 9, 12, 200, 4092, 4096, 4100, bytes.len() - 1]);
    for at in positions {
        for bit in [0, 5] {
            let mut bad = bytes.clone();
            bad[at] ^= 1 << bit;
            std::fs::write(&path, &bad).unwrap();
            let Ok(toc) = Toc::open(&path, "sha256:aa") else { continue };
            assert!(toc.verify().is_err(), "a flip at byte {at} went unnoticed");
            // Any read that touches the damaged page fails.
            let page = at as u64 / PAGE;
            if page >= 1 && (page + 1) * PAGE <= toc.sections[Section::PageCrcs as usize].0 {
                let toc = Toc::open(&path, "sha256:aa").unwrap();
                assert!(toc.bytes(page * PAGE, 1).is_err(), "page {page} read despite a flip at {at}");
            }
        }
    }
}

#[test]
fn other_versions_and_non_tocs_are_told_apart_from_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.toc");
    std::fs::write(&path, br#"{"entries":[]}"#).unwrap();
    let err = Toc::open(&path, "sha256:aa").unwrap_err().to_string();
    assert!(err.contains("another format version"), "{err}");
    let mut v2 = vec![0u8; 8192];
    v2[..8].copy_from_slice(MAGIC);
    v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, &v2).unwrap();
    let err = Toc::open(&path, "sha256:aa").unwrap_err().to_string();
    assert!(err.contains("another format version"), "{err}");
}

/// The root of a layer must be a directory; a layer with no entries at all has one.
#[test]
fn the_root_is_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let empty = toc_of(&Contents::default(), dir.path());
    assert_eq!(empty.record(0).unwrap().presence(), Presence::ImplicitDir);
    assert_eq!(empty.children(0).unwrap(), 1..1);
    let mut c = Contents::default();
    c.entries.push(entry(b"", Kind::File));
    assert!(from_contents(&c, dir.path(), "sha256:aa", write::DataIndex::Plain, &sums()).is_err());
}

/// Lookups in a directory of many children touch few pages: the fences narrow a
/// search to one block of records.
#[test]
fn big_directories_are_searched_through_their_fences() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Contents::default();
    let names: BTreeMap<String, ()> = (0..5000).map(|i| (format!("package-with-a-long-name-{i:05}"), ())).collect();
    for n in names.keys() {
        c.entries.push(entry(format!("nm/{n}").as_bytes(), Kind::Dir));
    }
    let path = dir.path().join("t.toc");
    write_named(&c, &path, dir.path());
    let toc = Toc::open(&path, "sha256:aa").unwrap();
    let nm = toc.lookup(b"nm").unwrap().unwrap();
    let r = toc.record(nm).unwrap();
    assert_eq!(r.b, 5000u64.div_ceil(u64::from(FENCE_EVERY)), "fences of nm");
    let pages = |t: &Toc| t.checked.iter().map(|w| w.load(Ordering::Relaxed).count_ones()).sum::<u32>();
    for n in names.keys().step_by(37) {
        let fresh = Toc::open(&path, "sha256:aa").unwrap();
        let nm = fresh.lookup(b"nm").unwrap().unwrap();
        let before = pages(&fresh);
        let id = fresh.child(nm, n.as_bytes()).unwrap().unwrap();
        assert_eq!(fresh.name(&fresh.record(id).unwrap()).unwrap(), n.as_bytes());
        // Fences (1-2 pages), a block of 64 records (1-2), its names (1-2), the
        // checksum page: without fences a search of 5000 records touches ~12 pages.
        assert!(pages(&fresh) - before <= 7, "{} pages for one lookup", pages(&fresh) - before);
        assert_eq!(toc.child(nm, format!("{n}x").as_bytes()).unwrap(), None);
        assert_eq!(toc.child(nm, &n.as_bytes()[..n.len() - 1]).unwrap(), None);
    }
    assert_eq!(toc.child(nm, b"a").unwrap(), None);
    assert_eq!(toc.child(nm, b"zzz").unwrap(), None);
    assert_eq!(toc.lower_bound(nm, b"zzz").unwrap(), toc.children(nm).unwrap().end);
}

/// A hostile TOC whose checksums all hold (as a publisher could make one): every read
/// gives a value or an error, never a panic, an endless loop or a huge allocation.
#[test]
fn consistent_but_hostile_tocs_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(4242);
    let c = random_contents(&mut rng, 200);
    let path = dir.path().join("t.toc");
    write_named(&c, &path, dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let mut refused = 0;
    for round in 0..1000 {
        let mut bad = bytes.clone();
        for _ in 0..1 + round % 4 {
            let at = rng.below(bad.len());
            bad[at] ^= 1 << rng.below(8);
        }
        reseal(&mut bad);
        std::fs::write(&path, &bad).unwrap();
        let Ok(toc) = Toc::open(&path, "sha256:aa") else {
            refused += 1;
            continue;
        };
        if toc.verify().is_err() {
            refused += 1;
        }
        let _ = toc.to_contents();
        for p in [&b""[..], b"a", b"a/b", b"big/f0000-0", b"zz/zz/zz"] {
            let _ = toc.lookup(p);
        }
    }
    assert!(refused > 50, "only {refused} of 1000 changed TOCs were refused");
}

/// A TOC read from elsewhere page by page: a read of a page not there yet answers
/// `PageMissing` (so a caller under a lock can let it go and fetch), `fetching` fetches
/// as it reads, only the pages a lookup touches are fetched, and a page whose source
/// fails (a digest that does not match) fails the read.
#[test]
fn a_toc_read_from_elsewhere_fetches_only_the_pages_it_reads() {
    use std::sync::atomic::AtomicUsize;
    struct Pages {
        bytes: Vec<u8>,
        fetched: Arc<AtomicUsize>,
        bad: Option<u64>,
    }
    impl PageSource for Pages {
        fn page_size(&self) -> u64 {
            1024
        }
        fn fetch(&self, i: u64) -> std::io::Result<Vec<u8>> {
            if self.bad == Some(i) {
                return Err(std::io::Error::other("does not match its digest"));
            }
            self.fetched.fetch_add(1, Ordering::SeqCst);
            let start = (i * 1024) as usize;
            Ok(self.bytes[start..(start + 1024).min(self.bytes.len())].to_vec())
        }
    }
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let mut c = Contents::default();
    for i in 0..3000 {
        c.entries.push(entry(format!("d{}/f{i:04}", i % 30).as_bytes(), Kind::File));
    }
    let path = dir.path().join("t.toc");
    write_named(&c, &path, dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let pages = bytes.len().div_ceil(1024);
    let fetched = Arc::new(AtomicUsize::new(0));
    let source = Box::new(Pages { bytes: bytes.clone(), fetched: Arc::clone(&fetched), bad: None });
    let toc = Toc::open_remote(source, bytes.len() as u64, dir.path(), &path, "sha256:aa").unwrap();
    let at_open = fetched.load(Ordering::SeqCst);
    assert!(at_open <= 5, "{at_open} pages fetched to open");
    assert!(matches!(toc.lookup(b"d7/f0007"), Err(Error::PageMissing { .. })));
    let f = toc.fetching(|t| t.lookup(b"d7/f0007")).unwrap().unwrap();
    assert_eq!(toc.fetching(|t| t.record(f)).unwrap().kind(), Some(Kind::File));
    let used = fetched.load(Ordering::SeqCst);
    assert!(used < pages / 4, "{used} of {pages} pages fetched for one lookup");
    check_against_model(&c, &{
        let all = Box::new(Pages { bytes: bytes.clone(), fetched: Arc::new(AtomicUsize::new(0)), bad: None });
        let t = Toc::open_remote(all, bytes.len() as u64, dir.path(), &path, "sha256:aa").unwrap();
        for i in 0..pages as u64 {
            t.fetch_page(i).unwrap();
        }
        t
    });
    let failing =
        Box::new(Pages { bytes: bytes.clone(), fetched: Arc::new(AtomicUsize::new(0)), bad: Some(pages as u64 - 2) });
    let t = Toc::open_remote(failing, bytes.len() as u64, dir.path(), &path, "sha256:aa").unwrap();
    assert!(t.fetching(|t| t.verify()).is_err(), "a page that could not be fetched was read");
}
