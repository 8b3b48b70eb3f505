//! An image shaped as real ones are: layered:1 (scripts/testimages/layered_image.py) is
//! built the way docker, BuildKit and umoci build images: only the base layer (a busybox
//! root) has a "./" entry; the three layers above, made by `umoci repack`, list only
//! what changed and the directories whose mtime the change moved. Layers, bottom to top:
//!   0 busybox base: ./, bin/busybox + applet symlinks, etc, root 0700, tmp 1777,
//!     usr/local 2775 root:staff, 3 MiB of data (the big, slow download)
//!   1 apt-like: usr/bin/hello*, usr/share/doc/hello/, var/lib/dpkg/, etc/shells
//!     changed, etc/motd deleted (etc/.wh.motd)
//!   2 config: etc/hello/hello.conf, etc/hostname changed
//!   3 top: etc/app.conf, usr/local/bin/app, the new directory usr/local/lib/app/ with
//!     tool and tool-alias, hard links of usr/bin/app-tool (three names, one inode);
//!     no entry for usr/ or usr/local/ (this layer only passes through them)
//! With default_permissions the kernel asks for the attributes of the root and of
//! every directory on a path before it looks a name up in it; none of that may need a
//! layer that the answer does not depend on.

use super::*;

pub(crate) const LAYERED: &str = "layered:1";
/// Files of the top layer, and the hard-link group it adds.
const TOP_FILE: &str = "usr/local/bin/app";
const TOP_PARENTS: [&str; 4] = ["", "usr", "usr/local", "usr/local/bin"];
const LINK_GROUP: [&str; 3] = ["usr/local/lib/app/tool", "usr/local/lib/app/tool-alias", "usr/bin/app-tool"];

/// A mount of layered:1 through a private proxy, and the layer blob GETs it caused.
/// Fields drop in this order: the proxy first (its Drop opens a held gate), then the
/// mount (detached), then the store.
struct Layered {
    proxy: FaultProxy,
    m: Mount,
    store: Store,
    layers: Vec<String>,
    mark: u64,
}

impl Layered {
    fn mount() -> Layered {
        let layers = layer_digests(LAYERED);
        assert_eq!(layers.len(), 4, "{LAYERED} should have 4 layers: {layers:?}");
        let proxy = FaultProxy::start(&env().addr);
        let store = Store::new();
        let mark = log_mark();
        let m = mount(store.root(), &format!("{}/{LAYERED}", proxy.addr), &[]);
        Layered { proxy, m, store, layers, mark }
    }

    /// Blob GETs answered so far for each layer, bottom to top.
    fn fetched(&self) -> Vec<usize> {
        sync_registry_log();
        let repo = LAYERED.split(':').next().unwrap();
        self.layers.iter().map(|d| blob_gets(self.mark, &self.proxy.addr, repo, d)).collect()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.m.path(rel)
    }
}

fn reference_meta(rel: &str) -> fs::Metadata {
    let p = unpack_of(LAYERED).join("rootfs").join(rel);
    fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// mode (with the file type and setuid/setgid/sticky), uid, gid, mtime: what the
/// kernel checks and `ls -l` shows.
fn attrs(md: &fs::Metadata) -> (String, u32, u32, i64) {
    (format!("{:o}", md.mode()), md.uid(), md.gid(), md.mtime())
}

/// stat of every name of `rel` with its parents, root first.
fn stat_path(m: &Mount, rel: &str) -> std::io::Result<()> {
    let mut p = String::new();
    fs::metadata(&m.dir)?;
    for part in rel.split('/') {
        p = if p.is_empty() { part.to_string() } else { format!("{p}/{part}") };
        fs::symlink_metadata(m.path(&p))?;
    }
    Ok(())
}

/// `cat` of a file that the top layer settles fetches the top layer only, and stat of
/// the root and of the file's parents (usr/ and usr/local/ have no entry in the top
/// layer: their attributes are in the base) then fetches nothing more. (On code that
/// reads a directory's attributes down to its topmost explicit entry, the root's getattr
/// fetches every layer down to the base's "./".)
#[test]
fn layered_top_layer_file_fetches_only_the_top_layer() {
    let Some(_) = outcome::test_env() else { return };
    let l = Layered::mount();
    assert_eq!(l.fetched(), [0, 0, 0, 0], "the mount itself fetched layers (bottom..top)");

    let data = fs::read(l.path(TOP_FILE)).unwrap_or_else(|e| panic!("cat {TOP_FILE}: {e}"));
    assert_eq!(data, reference_file(LAYERED, TOP_FILE));
    assert_eq!(l.fetched(), [0, 0, 0, 1], "blob GETs per layer (bottom..top) after cat {TOP_FILE}");

    for rel in TOP_PARENTS {
        let md = fs::metadata(l.path(rel)).unwrap_or_else(|e| panic!("stat /{rel}: {e}"));
        assert!(md.is_dir(), "/{rel} is not a directory");
    }
    // Exact where the top layer has the entry.
    for rel in [TOP_FILE, "usr/local/bin", "etc/app.conf", "etc"] {
        let md = fs::symlink_metadata(l.path(rel)).unwrap_or_else(|e| panic!("stat {rel}: {e}"));
        assert_eq!(attrs(&md), attrs(&reference_meta(rel)), "{rel}: (mode, uid, gid, mtime)");
    }
    assert_eq!(fs::read(l.path("etc/app.conf")).unwrap(), reference_file(LAYERED, "etc/app.conf"));
    assert_eq!(
        l.fetched(),
        [0, 0, 0, 1],
        "blob GETs per layer (bottom..top) after stat of /, its parents and etc/app.conf"
    );
}

/// The three names of the top layer's hard-link group: stat of each (what `ls -l
/// NAME...` does; lookups by name) fetches only the top layer and shows st_nlink 3 and
/// one st_ino, in the new directory and in usr/bin alike. `ls -l` of the new
/// directory then lists the reference's names with the same link count and inode
/// (listing a directory must read the lower layers too, since any of them could hold
/// entries of that path: the layer count is not checked there). After the whole tree
/// is read the mount equals the reference unpack, hard-link groups included, and a
/// second mount, with every layer local, gives the same link count and inode.
#[test]
fn layered_hard_link_group_counts_links_from_its_own_layer() {
    let Some(_) = outcome::test_env() else { return };
    let l = Layered::mount();
    let group = |m: &Mount| -> Vec<(u64, u64)> {
        LINK_GROUP
            .iter()
            .map(|rel| {
                let md = fs::symlink_metadata(m.path(rel)).unwrap_or_else(|e| panic!("stat {rel}: {e}"));
                (md.ino(), md.nlink())
            })
            .collect()
    };
    let first = group(&l.m);
    assert_eq!(l.fetched(), [0, 0, 0, 1], "blob GETs per layer (bottom..top) after stat of {LINK_GROUP:?}");
    let ino = first[0].0;
    assert_eq!(first, vec![(ino, 3); 3], "(st_ino, st_nlink) of {LINK_GROUP:?}");
    let readme = fs::symlink_metadata(l.path("usr/local/lib/app/README")).unwrap();
    assert!(readme.ino() != ino && readme.nlink() == 1, "README: ino {} nlink {}", readme.ino(), readme.nlink());
    assert_eq!(fs::read(l.path(LINK_GROUP[1])).unwrap(), reference_file(LAYERED, LINK_GROUP[0]));
    assert_eq!(l.fetched(), [0, 0, 0, 1], "blob GETs per layer (bottom..top) after reading {}", LINK_GROUP[1]);

    // ls -l of the new directory.
    let dir = l.path("usr/local/lib/app");
    let mut listed: Vec<(String, u64, u64)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), md.ino(), md.nlink())
        })
        .collect();
    listed.sort();
    let mut want: Vec<String> = fs::read_dir(unpack_of(LAYERED).join("rootfs/usr/local/lib/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(listed.iter().map(|x| x.0.clone()).collect::<Vec<_>>(), want, "ls usr/local/lib/app");
    for (name, i, n) in &listed {
        let linked = name == "tool" || name == "tool-alias";
        assert_eq!((*i == ino, *n), (linked, if linked { 3 } else { 1 }), "ls -l usr/local/lib/app: {name}");
    }

    // Everything read: the whole tree (hard-link groups and st_nlink included) is the
    // reference's.
    read_all(&l.m.dir);
    assert_eq!(group(&l.m), first, "(st_ino, st_nlink) of {LINK_GROUP:?} after reading the whole tree");
    let diffs = treecmp(&l.m.dir, &unpack_of(LAYERED).join("rootfs"), &["--no-dir-mtime"]);
    assert!(diffs.is_empty(), "{LAYERED} differs from its reference unpack:\n{}", diffs.join("\n"));
    let reference: Vec<(u64, u64)> = LINK_GROUP
        .iter()
        .map(|rel| {
            let md = reference_meta(rel);
            (md.ino(), md.nlink())
        })
        .collect();
    assert_eq!(reference, vec![(reference[0].0, 3); 3], "the reference unpack's link group");

    // A second mount in the same store: every layer is local from the start.
    let again = mount(l.store.root(), &format!("{}/{LAYERED}", l.proxy.addr), &[]);
    let second = group(&again);
    assert_eq!(
        second,
        vec![(second[0].0, 3); 3],
        "(st_ino, st_nlink) of {LINK_GROUP:?} in a mount with every layer local"
    );
}

/// stat of the mount root needs no layer: it answers with the registry unreachable
/// right after the mount returned. Once the top layer is local, the top-layer file, its
/// parents and its data are all served during an outage too, while a file only the
/// base layer has fails with EIO (the outage is real) and reads once the registry is back.
#[test]
fn layered_root_and_settled_paths_answer_without_the_registry() {
    let Some(_) = outcome::test_env() else { return };
    let l = Layered::mount();
    l.proxy.set_offline(true);
    let md =
        fs::metadata(&l.m.dir).unwrap_or_else(|e| panic!("stat of the mount root with the registry unreachable: {e}"));
    assert!(md.is_dir(), "the mount root is not a directory: {md:?}");

    l.proxy.set_offline(false);
    assert_eq!(fs::read(l.path(TOP_FILE)).unwrap(), reference_file(LAYERED, TOP_FILE));
    assert_eq!(l.fetched(), [0, 0, 0, 1], "blob GETs per layer (bottom..top) after cat {TOP_FILE}");

    l.proxy.set_offline(true);
    stat_path(&l.m, TOP_FILE).unwrap_or_else(|e| panic!("stat of {TOP_FILE} and its parents during the outage: {e}"));
    assert_eq!(
        fs::read(l.path(TOP_FILE)).unwrap_or_else(|e| panic!("cat {TOP_FILE} during the outage: {e}")),
        reference_file(LAYERED, TOP_FILE)
    );
    assert_eq!(
        fs::read(l.path("etc/app.conf")).unwrap_or_else(|e| panic!("cat etc/app.conf during the outage: {e}")),
        reference_file(LAYERED, "etc/app.conf")
    );
    let e = errno_of("read bin/busybox with the registry down", fs::read(l.path("bin/busybox")));
    assert_eq!(e, libc::EIO, "errno {e}, want EIO");

    l.proxy.set_offline(false);
    assert_eq!(fs::read(l.path("bin/busybox")).unwrap(), reference_file(LAYERED, "bin/busybox"));
}

/// A slow download of the base layer stalls only the operations that need it. The
/// proxy holds the base layer's blob; a thread reads bin/busybox and waits on it; while
/// it waits, stat and read of files that the top layer settles answer. Then the gate
/// opens and bin/busybox reads whole. No timing assertion: the guards only keep the
/// test from hanging (40 s: below the client's 60 s read timeout, so a held download
/// does not time out before the gate opens); the time the settled operations took is
/// printed.
#[test]
fn layered_slow_base_layer_stalls_nothing_else() {
    let Some(_) = outcome::test_env() else { return };
    let l = Layered::mount();
    l.proxy.add(Rule::new(&l.layers[0], Fault::Hold));
    let guard = Duration::from_secs(40);

    let (base_tx, base_rx) = mpsc::channel();
    let busybox = l.path("bin/busybox");
    std::thread::spawn(move || {
        let _ = base_tx.send(fs::read(&busybox));
    });
    let asked = wait_until(guard, || l.proxy.held() > 0);
    if !asked {
        l.proxy.release();
        panic!("reading bin/busybox never asked for the base layer: {:?}", base_rx.recv_timeout(guard));
    }
    assert!(base_rx.try_recv().is_err(), "bin/busybox was read while its layer's download was held");

    let (top_tx, top_rx) = mpsc::channel();
    let (file, conf) = (l.path(TOP_FILE), l.path("etc/app.conf"));
    let started = Instant::now();
    std::thread::spawn(move || {
        let r = (|| -> std::io::Result<(fs::Metadata, Vec<u8>, Vec<u8>)> {
            let md = fs::metadata(&file)?;
            Ok((md, fs::read(&file)?, fs::read(&conf)?))
        })();
        let _ = top_tx.send(r);
    });
    let settled = top_rx.recv_timeout(guard);
    let took = started.elapsed();
    let still_held = !l.proxy.is_released() && matches!(base_rx.try_recv(), Err(mpsc::TryRecvError::Empty));
    l.proxy.release();
    let (md, data, app_conf) = match settled {
        Ok(r) => r.unwrap_or_else(|e| panic!("stat/read of {TOP_FILE} and etc/app.conf while the base layer is held: {e}")),
        Err(_) => panic!(
            "stat/read of {TOP_FILE} and etc/app.conf got no answer in {guard:?} while the base layer's download was held: they wait behind it"
        ),
    };
    eprintln!("layered_slow_base_layer_stalls_nothing_else: stat + read of the top-layer files took {took:?} while the base layer was held");
    assert!(still_held, "the base layer's download was not held while the top-layer files were read");
    assert_eq!(attrs(&md), attrs(&reference_meta(TOP_FILE)));
    assert_eq!(data, reference_file(LAYERED, TOP_FILE));
    assert_eq!(app_conf, reference_file(LAYERED, "etc/app.conf"));

    let base =
        base_rx.recv_timeout(Duration::from_secs(60)).expect("bin/busybox: no answer 60 s after the gate opened");
    let base = base.unwrap_or_else(|e| panic!("read bin/busybox after the gate opened: {e}"));
    assert!(base == reference_file(LAYERED, "bin/busybox"), "bin/busybox: wrong bytes ({} bytes)", base.len());
    assert_eq!(l.fetched()[0], 1, "the base layer was fetched more than once");
}

/// Directories answered before the layer that settles their attributes was local (the
/// root, usr/ and usr/local/, whose entries are in the base layer only) get exactly the
/// reference's mode, owner, mtime and link count once everything is read: what was
/// served before then was not cached. usr/local (2775 root:staff) and the root (mtime
/// 1990) differ from what a provisional answer could guess.
#[test]
fn layered_provisional_dir_attrs_become_exact() {
    let Some(_) = outcome::test_env() else { return };
    let l = Layered::mount();
    let dirs = ["", "usr", "usr/local"];
    let ignored = fs::read_to_string(unpack_of(LAYERED).join("dir-mtime-ignore")).unwrap();
    for d in dirs {
        let name = if d.is_empty() { "." } else { d };
        assert!(!ignored.lines().any(|x| x == name), "the reference's mtime of {name} is not that of its entry");
    }
    assert_eq!(fs::read(l.path(TOP_FILE)).unwrap(), reference_file(LAYERED, TOP_FILE));
    for d in dirs {
        fs::metadata(l.path(d)).unwrap_or_else(|e| panic!("stat /{d}: {e}"));
    }

    assert_eq!(read_all(&l.m.dir), read_all(&unpack_of(LAYERED).join("rootfs")), "regular files read");
    assert_eq!(l.fetched(), [1, 1, 1, 1], "blob GETs per layer (bottom..top) after reading everything");
    for d in dirs {
        let md = fs::metadata(l.path(d)).unwrap();
        assert_eq!(attrs(&md), attrs(&reference_meta(d)), "/{d}: (mode, uid, gid, mtime)");
        let reference = unpack_of(LAYERED).join("rootfs").join(d);
        let subdirs =
            fs::read_dir(&reference).unwrap().filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir()).count();
        assert_eq!(md.nlink(), 2 + subdirs as u64, "/{d}: st_nlink");
    }
    let ignore = unpack_of(LAYERED).join("dir-mtime-ignore");
    let diffs =
        treecmp(&l.m.dir, &unpack_of(LAYERED).join("rootfs"), &["--ignore-dir-mtime-of", ignore.to_str().unwrap()]);
    assert!(diffs.is_empty(), "{LAYERED} differs from its reference unpack:\n{}", diffs.join("\n"));
}

/// A listing needs every layer of its directory's range, so a listing of the root from a
/// fresh mount fetches them together: while the top layer's download is held back, the
/// layers below it are asked for too (one after another, each would wait for the top
/// one). The listing then equals the reference's.
#[test]
fn layered_listing_fetches_its_layers_together() {
    let Some(_) = outcome::test_env() else { return };
    let l = Layered::mount();
    l.proxy.add(Rule::new(&l.layers[3], Fault::Hold));
    let guard = Duration::from_secs(40);
    let (tx, rx) = mpsc::channel();
    let root = l.path("");
    std::thread::spawn(move || {
        let names = fs::read_dir(&root).map(|d| {
            let mut names: Vec<String> = d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        });
        let _ = tx.send(names);
    });
    let top_held = wait_until(guard, || l.proxy.held() > 0);
    let below_asked = top_held && wait_until(guard, || l.layers[..3].iter().all(|d| !l.proxy.seen_for(d).is_empty()));
    let asked: Vec<bool> = l.layers.iter().map(|d| !l.proxy.seen_for(d).is_empty()).collect();
    let still_held = !l.proxy.is_released();
    l.proxy.release();
    let names = rx.recv_timeout(guard).expect("the listing answers once the top layer is let go").unwrap();
    assert!(top_held, "listing the root never asked for the top layer");
    assert!(still_held && below_asked, "with the top layer held, the layers below were not all asked for: {asked:?}");
    let mut want: Vec<String> = fs::read_dir(unpack_of(LAYERED).join("rootfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(names, want);
}
