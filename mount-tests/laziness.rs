//! What a mount fetches, and when: nothing but the manifest and config at mount time, a
//! layer when a lookup or a read needs it, each layer once however many mounts read it,
//! nothing again once a layer is indexed (a remount, a store written by an older imgfs
//! converted from its own blobs), and nothing at all for a pulled image of the default
//! platform; a pulled image of another platform is mounted with docker's warning.

use super::*;

/// A mount fetches no layer; reading /top/c.txt fetches only the top layer (an upper
/// layer settles the lookup); listing the root needs, and fetches, the other two, each
/// once; the image is then in `imgfs ls`.
#[test]
fn layers_are_fetched_only_when_needed() {
    let Some(_) = outcome::test_env() else { return };
    let layers = layer_digests("lazy:1");
    assert_eq!(layers.len(), 3, "lazy:1 should have 3 layers: {layers:?}");
    let config = config_digest("lazy:1");
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let mark = log_mark();
    let m = mount(store.root(), &format!("{}/lazy:1", proxy.addr), &[]);
    let gets = |d: &str| blob_gets(mark, &proxy.addr, "lazy", d);

    // Every step is checked, and all that went wrong is reported at the end.
    let mut wrong: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            wrong.push(what);
        }
    };
    sync_registry_log();
    check(gets(&config) == 1, format!("the mount fetched the config {} times, want 1", gets(&config)));
    for l in &layers {
        check(gets(l) == 0, format!("the mount itself fetched layer {l} ({} GETs)", gets(l)));
        check(!blob_file(store.root(), l).exists(), format!("layer {l} is in the store right after the mount"));
    }

    let c = fs::read(m.path("top/c.txt")).expect("read top/c.txt");
    assert_eq!(c, reference_file("lazy:1", "top/c.txt"));
    sync_registry_log();
    check(gets(&layers[2]) == 1, format!("top layer: {} GETs after reading top/c.txt, want 1", gets(&layers[2])));
    for l in &layers[..2] {
        check(gets(l) == 0, format!("reading top/c.txt fetched lower layer {l} ({} GETs)", gets(l)));
        check(!blob_file(store.root(), l).exists(), format!("lower layer {l} is in the store after reading top/c.txt"));
    }

    let mut names: Vec<String> =
        fs::read_dir(&m.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["bottom", "middle", "top"]);
    sync_registry_log();
    for l in &layers {
        check(gets(l) == 1, format!("layer {l}: {} GETs after listing the root, want exactly 1", gets(l)));
    }
    assert!(wrong.is_empty(), "laziness:\n{}", wrong.join("\n"));

    let ls = imgfs_ok(store.root(), &["ls"]);
    let short_id = &config.trim_start_matches("sha256:")[..12];
    assert!(
        ls.lines().any(|l| l.contains(&format!("{}/lazy", proxy.addr)) && l.contains(short_id)),
        "imgfs ls does not show {}/lazy:1 ({short_id}):\n{ls}",
        proxy.addr
    );
}

/// Layers indexed by one mount are never fetched or parsed again: after app:1 was read
/// whole and unmounted, mounting app:1 again and app:2 (same base layer) leaves the
/// index files as they were and fetches only app:2's own layer.
#[test]
fn remount_reuses_layer_indexes() {
    let Some(_) = outcome::test_env() else { return };
    let app1 = layer_digests("app:1");
    let app2 = layer_digests("app:2");
    assert_eq!(app1[0], app2[0], "app:1 and app:2 should share their base layer");
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let toc_dir = store.root().join("toc/sha256");

    let first = mount(store.root(), &format!("{}/app:1", proxy.addr), &[]);
    assert!(read_all(&first.dir) > 5);
    imgfs_ok(store.root(), &["umount", first.arg()]);
    drop(first);

    let idx_stamp = |d: &str| -> (u64, i64, i64, u64) {
        let p = toc_dir.join(format!("{}.toc", d.trim_start_matches("sha256:")));
        let md = fs::metadata(&p).unwrap_or_else(|e| panic!("TOC of layer {d}: {}: {e}", p.display()));
        (md.ino(), md.mtime(), md.mtime_nsec(), md.len())
    };
    let before: Vec<_> = app1.iter().map(|d| idx_stamp(d)).collect();

    let mark = log_mark();
    let again = mount(store.root(), &format!("{}/app:1", proxy.addr), &[]);
    let other = mount(store.root(), &format!("{}/app:2", proxy.addr), &[]);
    read_all(&again.dir);
    read_all(&other.dir);
    assert_eq!(fs::read(again.path("etc/hostname")).unwrap(), reference_file("app:1", "etc/hostname"));
    assert_eq!(fs::read(other.path("etc/hostname")).unwrap(), reference_file("app:2", "etc/hostname"));

    let after: Vec<_> = app1.iter().map(|d| idx_stamp(d)).collect();
    assert_eq!(before, after, "index files of app:1's layers were rewritten (inode, mtime, size)");
    idx_stamp(&app2[1]); // app:2's own layer got its index

    sync_registry_log();
    for d in &app1 {
        assert_eq!(blob_gets(mark, &proxy.addr, "app", d), 0, "layer {d} of app:1 was fetched again");
    }
    assert_eq!(blob_gets(mark, &proxy.addr, "app", &app2[1]), 1, "app:2's own layer is fetched once");
}

/// Two mounts of images that share a layer read that layer's TOC from one file, mapped
/// by both servers (so its pages are the page cache's, shared, not a copy in each
/// server's memory), and both serve their image exactly.
#[test]
fn two_mounts_sharing_a_layer_map_one_toc_file() {
    let Some(_) = outcome::test_env() else { return };
    let (app1, app2) = (layer_digests("app:1"), layer_digests("app:2"));
    assert_eq!(app1[0], app2[0], "app:1 and app:2 should share their base layer");
    let store = Store::new();
    let a = mount(store.root(), &format!("{}/app:1", env().addr), &[]);
    let b = mount(store.root(), &format!("{}/app:2", env().addr), &[]);
    read_all(&a.dir);
    read_all(&b.dir);
    for (m, image) in [(&a, "app:1"), (&b, "app:2")] {
        let diffs = treecmp(&m.dir, &unpack_of(image).join("rootfs"), &["--no-dir-mtime"]);
        assert!(diffs.is_empty(), "{image}:\n{}", diffs.join("\n"));
    }
    let toc = store.root().join("toc/sha256").join(format!("{}.toc", app1[0].trim_start_matches("sha256:")));
    let ino = fs::metadata(&toc).unwrap().ino();
    for m in [&a, &b] {
        let pids = server_pids(&m.dir);
        assert_eq!(pids.len(), 1, "one server for {}", m.dir.display());
        let maps = fs::read_to_string(format!("/proc/{}/maps", pids[0])).unwrap();
        // Fields: address perms offset dev inode path.
        let mapped = maps.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 6 && f[4] == ino.to_string() && f[5] == toc.to_str().unwrap()
        });
        assert!(mapped, "the server of {} does not map {}:\n{maps}", m.dir.display(), toc.display());
    }
}

/// Two mounts of one image in one store, read at once: each layer blob is fetched
/// once (the second mount waits for the first one's fetch through the store), both
/// read the right bytes, and a gzip layer leaves no uncompressed copy behind.
#[test]
fn two_mounts_of_one_image_fetch_each_layer_once() {
    let Some(_) = outcome::test_env() else { return };
    let layers = layer_digests("lazy:1");
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let mark = log_mark();
    let image = format!("{}/lazy:1", proxy.addr);
    let (a, b) = (mount(store.root(), &image, &[]), mount(store.root(), &image, &[]));
    let (na, nb) = std::thread::scope(|s| {
        let ta = s.spawn(|| read_all(&a.dir));
        let tb = s.spawn(|| read_all(&b.dir));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(na == nb && na >= 3, "read {na} and {nb} files");
    for rel in ["bottom/a.txt", "middle/b.txt", "top/c.txt"] {
        assert_eq!(fs::read(b.path(rel)).unwrap(), reference_file("lazy:1", rel), "{rel}");
    }
    sync_registry_log();
    for l in &layers {
        assert_eq!(blob_gets(mark, &proxy.addr, "lazy", l), 1, "GETs of layer {l} by two mounts");
    }
    let copies = fs::read_dir(store.root().join("layers/sha256")).unwrap().count();
    assert_eq!(copies, 0, "uncompressed copies of gzip layers in the store");
}

/// A store written by an older imgfs (layer indexes decoded whole, in `index/`, an
/// uncompressed copy of each gzip layer, no `toc/`) is converted on first use, from the
/// blobs it has: nothing is fetched, the old indexes and copies go, every layer gets a
/// TOC in the current format, and the tree is right.
#[test]
fn an_older_store_is_converted_on_first_use() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let image = format!("{}/app:1", proxy.addr);
    imgfs_ok(store.root(), &["pull", "-q", &image]);
    let layers = layer_digests("app:1");
    fs::remove_dir_all(store.root().join("toc")).unwrap();
    fs::create_dir_all(store.root().join("index/sha256")).unwrap();
    for (i, l) in layers.iter().enumerate() {
        let hex = l.trim_start_matches("sha256:");
        // The head of the last format an older imgfs wrote (version 4), then its body;
        // the first layer's is JSON, as still older ones wrote.
        let old: &[u8] =
            if i == 0 { br#"{"entries":[],"whiteouts":[],"opaque":[]}"# } else { b"IMGFSIDX\x04\0\0\0postcard" };
        fs::write(store.root().join(format!("index/sha256/{hex}.idx")), old).unwrap();
        fs::write(store.root().join(format!("layers/sha256/{hex}.tar")), b"an old uncompressed copy").unwrap();
    }
    let mark = log_mark();
    let m = mount(store.root(), &image, &[]);
    read_all(&m.dir);
    let diffs = treecmp(&m.dir, &unpack_of("app:1").join("rootfs"), &["--no-dir-mtime"]);
    assert!(diffs.is_empty(), "app:1 after conversion:\n{}", diffs.join("\n"));
    sync_registry_log();
    for l in &layers {
        let hex = l.trim_start_matches("sha256:");
        assert_eq!(blob_gets(mark, &proxy.addr, "app", l), 0, "layer {l} was fetched again");
        let toc = fs::read(store.root().join(format!("toc/sha256/{hex}.toc"))).unwrap();
        assert!(toc.starts_with(b"IMGFSTOC"), "layer {l} has no TOC in the current format");
        assert!(!store.root().join(format!("index/sha256/{hex}.idx")).exists(), "the old index of {l} is still there");
        assert!(!store.root().join(format!("layers/sha256/{hex}.tar")).exists(), "the old copy of {l} is still there");
    }
    imgfs_ok(store.root(), &["check"]);
}

/// `DOCKER_DEFAULT_PLATFORM` names the platform a mount wants: a pulled image
/// of that platform is mounted from the store, without asking its registry (here a
/// name on a port where nothing answers).
#[test]
fn a_default_platform_the_pulled_image_has_mounts_it_without_the_registry() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let root = store.root();
    let image = format!("{}/lazy:1", env().addr);
    imgfs_ok(root, &["pull", &image]);
    let platform = imgfs_ok(root, &["inspect", "--format", "{{.Os}}/{{.Architecture}}", &image]);
    imgfs_ok(root, &["tag", &image, "127.0.0.1:9/lazy:1"]);
    let m = Mount::empty();
    let out =
        imgfs_env(root, &[("DOCKER_DEFAULT_PLATFORM", platform.trim())], &["mount", "127.0.0.1:9/lazy:1", m.arg()]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(fs::read(m.path("top/c.txt")).unwrap(), reference_file("lazy:1", "top/c.txt"));
}

/// After `pull --platform` of the other architecture, a plain `imgfs mount` of the name
/// mounts that image (as docker runs it), and says on stderr and in the server's log
/// that its platform is not the host's; asked for explicitly, or the host's own, it
/// says nothing.
#[test]
fn a_mount_of_another_platforms_image_warns() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let root = store.root();
    let image = format!("{}/multi:1", env().addr);
    let (other, unpack) = if cfg!(target_arch = "x86_64") {
        ("linux/arm64", "unpacked/multi-arm64")
    } else {
        ("linux/amd64", "unpacked/multi-amd64")
    };
    imgfs_ok(root, &["pull", "-q", "--platform", other, &image]);
    let warning = format!("imgfs: warning: the requested image's platform ({other}");
    let m = Mount::empty();
    let out = imgfs(root, &["mount", &image, m.arg()]);
    assert!(out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&warning) && stderr.contains("does not match the detected host platform"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        fs::read(m.path("etc/arch")).unwrap(),
        fs::read(env().dir.join(unpack).join("rootfs/etc/arch")).unwrap()
    );
    assert!(server_logs(root).contains(&warning), "{}", server_logs(root));
    drop(m);

    // Asked for by name: no warning.
    let m = Mount::empty();
    let out = imgfs(root, &["mount", "--platform", other, &image, m.arg()]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(out.stderr.is_empty(), "{}", show(&out));
    drop(m);
    // The host's own image: no warning either.
    let m = Mount::empty();
    let out = imgfs(root, &["mount", &format!("{}/lazy:1", env().addr), m.arg()]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", show(&out));
    drop(m);
    assert_eq!(server_logs(root).matches(&warning).count(), 1, "{}", server_logs(root));
}
