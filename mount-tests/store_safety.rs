//! The store with live mounts: `rm` refuses a mounted image and `prune -a` keeps its
//! blobs, a prune that races a starting mount must not take its image, the store stays
//! private (0700/0600) with mounts running whatever the umask, and layer bytes damaged
//! on disk are never served.

use super::*;

/// Run `imgfs prune -a -f` under strace with its second `flock` (the records lock it
/// deletes under) held back by `delay` microseconds, returning once it is about to
/// make that call. Real processes throughout; strace only widens the window.
fn prune_held_before_its_records_lock(root: &Path, delay: u64) -> (std::process::Child, PathBuf) {
    let trace = root.join("prune.strace");
    let child = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat,flock"])
        .arg("-e")
        .arg(format!("inject=flock:delay_enter={delay}:when=2"))
        .arg("-o")
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_imgfs"))
        .arg("--root")
        .arg(root)
        .args(["prune", "-a", "-f"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace (Debian package strace) runs imgfs");
    // Its second open of db.lock comes right before that flock.
    let opened_twice = || fs::read_to_string(&trace).unwrap_or_default().matches("db.lock").count() >= 2;
    assert!(wait_until(Duration::from_secs(30), opened_twice), "prune never reached its records lock");
    (child, trace)
}

#[test]
fn a_mount_that_starts_while_prune_runs_keeps_its_image() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let root = store.root();
    let name = format!("{}/lazy:1", env().addr);
    imgfs_ok(root, &["pull", &name]);
    // prune -a has read the records and is about to take the lock it deletes under;
    // the mount starts and records itself meanwhile. Reading the mount records before
    // that lock (as prune did) missed it and deleted the mounted image.
    let (prune, _trace) = prune_held_before_its_records_lock(root, 2_000_000);
    let m = mount(root, &name, &[]);
    let out = prune.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipping image") && err.contains("in use by the mount"), "{}", show(&out));
    assert!(imgfs_ok(root, &["ls", "-q"]).trim().len() >= 12, "the mounted image was removed");
    assert_eq!(fs::read(m.path("top/c.txt")).unwrap(), reference_file("lazy:1", "top/c.txt"));
    assert_eq!(fs::read(m.path("bottom/a.txt")).unwrap(), reference_file("lazy:1", "bottom/a.txt"));
}

#[test]
fn the_store_stays_private_with_a_mount_running_whatever_the_umask() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let root = store.root().join("store");
    // umask only sets this process's file-creation mask, which the imgfs children (and
    // their mount server) inherit.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let name = format!("{}/app:1", env().addr);
    imgfs_ok(&root, &["pull", &name]);
    let m = mount(&root, &name, &[]);
    rustix::process::umask(old);
    read_all(&m.dir);
    let mut seen = 0;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else {
                seen += 1;
                assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "{}", p.display());
            }
        }
    }
    assert!(fs::read_dir(root.join("mounts")).unwrap().count() == 1, "the mount record is there");
    assert!(fs::read_dir(root.join("logs")).unwrap().count() == 1, "the mount log is there");
    assert!(seen > 8, "{seen} files");
}

/// The layer blobs of a stored image, in order.
fn layer_blobs(root: &Path, name: &str) -> Vec<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(&imgfs_ok(root, &["inspect", name])).unwrap();
    v[0]["Layers"].as_array().unwrap().iter().map(|l| blob_file(root, l["Digest"].as_str().unwrap())).collect()
}

/// Flip the byte at `at` of `path`.
fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

/// The read fails with EIO, and the server's log says why.
fn assert_eio_logged(root: &Path, path: &Path) {
    assert_eq!(errno_of(&path.display().to_string(), fs::read(path)), libc::EIO, "{}", path.display());
    let logs = server_logs(root);
    assert!(logs.contains("damaged on disk"), "the mount log does not say why: {logs}");
}

#[test]
fn layer_bytes_damaged_on_disk_are_never_served() {
    let Some(_) = outcome::test_env() else { return };
    // An uncompressed layer is read in place: a flipped byte there must fail the read,
    // not be served as is.
    let store = Store::new();
    let root = store.root();
    let name = format!("{}/plain:1", env().addr);
    imgfs_ok(root, &["pull", &name]);
    let m = mount(root, &name, &[]);
    let two = reference_file("plain:1", "data/two.txt");
    let top = &layer_blobs(root, &name)[1];
    let bytes = fs::read(top).unwrap();
    let at = bytes.windows(two.len()).position(|w| w == &two[..]).expect("data/two.txt's bytes in the top layer");
    flip(top, at + two.len() / 2);
    assert!(m.path("data").is_dir() && m.path("etc/plain-release").exists(), "lookups need no file data");
    assert_eio_logged(root, &m.path("data/two.txt"));
    assert_eq!(fs::read(m.path("etc/plain-release")).unwrap(), reference_file("plain:1", "etc/plain-release"));
    drop(m);

    // A gzip layer: a byte flipped in the middle of the blob is inside big.bin's data;
    // the other files of the same layer still read.
    let name = format!("{}/big:1", env().addr);
    imgfs_ok(root, &["pull", &name]);
    let m = mount(root, &name, &[]);
    let blob = &layer_blobs(root, &name)[0];
    flip(blob, fs::metadata(blob).unwrap().len() as usize / 2);
    assert_eio_logged(root, &m.path("data/big.bin"));
    for f in ["data/1m.bin", "data/small.txt"] {
        assert_eq!(fs::read(m.path(f)).unwrap(), reference_file("big:1", f), "{f}");
    }
    drop(m);
    // check finds both damaged blobs; after --repair a pull fetches them again and
    // the mount serves the right bytes.
    assert!(!imgfs(root, &["check"]).status.success());
    imgfs_ok(root, &["check", "--repair"]);
    imgfs_ok(root, &["pull", &name]);
    let m = mount(root, &name, &[]);
    assert_eq!(fs::read(m.path("data/big.bin")).unwrap(), reference_file("big:1", "data/big.bin"));
}

/// Runs imgfs with `args` over and over on other threads until dropped; a panic in
/// imgfs fails the test.
struct Churn {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Churn {
    fn start(root: &Path, commands: &[Vec<String>]) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = commands
            .iter()
            .map(|args| {
                let (root, args, stop) = (root.to_path_buf(), args.clone(), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let out = imgfs(&root, &args);
                        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", show(&out));
                    }
                })
            })
            .collect();
        Churn { stop, threads }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn mounts_racing_pulls_prune_and_rm_serve_their_image_and_lose_no_blob() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let root = store.root();
    let [app1, app2, base] = ["app:1", "app:2", "base:1"].map(|n| format!("{}/{n}", env().addr));
    // Images that share app:1's base layer come and go all the time, and whatever no
    // mount uses is pruned; each mount of app:1 fetches its layers lazily meanwhile.
    let churn = Churn::start(
        root,
        &[
            vec!["pull".into(), app2.clone()],
            vec!["pull".into(), base.clone()],
            vec!["rm".into(), base.clone()],
            vec!["prune".into(), "-a".into(), "-f".into()],
        ],
    );
    for round in 0..4 {
        // The mount holds the image from the moment it finds or registers it, so
        // prune -a and rm, running all the while, never take it from under the mount.
        let m = Mount::empty();
        let out = imgfs(root, &["mount", &app1, m.arg()]);
        assert!(out.status.success(), "round {round}: {}", show(&out));
        let diff = treecmp(&m.dir, &unpack_of("app:1").join("rootfs"), &["--no-dir-mtime"]);
        assert!(diff.is_empty(), "round {round}: the mount differs:\n{}", diff.join("\n"));
    }
    drop(churn);
    let out = imgfs_ok(root, &["check"]);
    assert!(out.contains("is consistent"), "{out}");
    for name in [&app1, &app2, &base] {
        imgfs_ok(root, &["pull", name]);
    }
    let out = imgfs_ok(root, &["check"]);
    assert!(out.contains("is consistent"), "{out}");
}

#[test]
fn rm_and_prune_spare_a_mounted_image() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/app:2", env().addr);
    let mut blobs: Vec<String> = layer_digests("app:2");
    blobs.push(config_digest("app:2"));
    imgfs_ok(store.root(), &["pull", &image]);
    let m = mount(store.root(), &image, &[]);

    let out = imgfs(store.root(), &["rm", &image]);
    assert!(!out.status.success(), "imgfs rm of a mounted image should fail: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(m.arg()), "rm's error should name the mount: {}", show(&out));

    imgfs_ok(store.root(), &["prune", "-a", "-f"]);
    for d in &blobs {
        assert!(blob_file(store.root(), d).exists(), "prune -a removed blob {d} of the mounted image");
    }
    assert_eq!(fs::read(m.path("etc/hostname")).unwrap(), reference_file("app:2", "etc/hostname"));
    assert_eq!(read_all(&m.dir), read_all(&unpack_of("app:2").join("rootfs")));

    imgfs_ok(store.root(), &["umount", m.arg()]);
    imgfs_ok(store.root(), &["rm", &image]);
    let out = imgfs(store.root(), &["rm", &image]);
    assert!(!out.status.success(), "the image should be gone after rm: {}", show(&out));
}

/// One image under two manifests: zstd:1 and zstd-gzip:1 have one config (so one image
/// ID) and zstd and gzip layer blobs. Each manifest keeps its blobs while the image has
/// a name: a dangling-only `prune -f` removes none of them (`ls --digests` names both
/// digests, so both must be served), a pull again fetches nothing, `check` verifies both manifests, and each name mounts with
/// its own layers and reads with the registry gone.
#[test]
fn one_image_under_two_manifests_keeps_both_through_prune() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let root = store.root();
    let (zstd, gzip) = (format!("{}/zstd:1", proxy.addr), format!("{}/zstd-gzip:1", proxy.addr));
    assert_eq!(config_digest("zstd:1"), config_digest("zstd-gzip:1"), "the test images no longer share a config");
    let (zstd_layers, gzip_layers) = (layer_digests("zstd:1"), layer_digests("zstd-gzip:1"));
    imgfs_ok(root, &["pull", "-q", &zstd]);
    imgfs_ok(root, &["pull", "-q", &gzip]);
    assert_eq!(imgfs_ok(root, &["ls", "-q"]).lines().count(), 1, "one image ID");
    let digests = imgfs_ok(root, &["ls", "--digests", "--format", "{{.Repository}} {{.Digest}}"]);
    let manifest_of = |repo_tag: &str| {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{}/{repo_tag}", env().addr))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (zstd_manifest, gzip_manifest) = (manifest_of("zstd:1"), manifest_of("zstd-gzip:1"));
    assert!(digests.contains(&zstd_manifest) && digests.contains(&gzip_manifest), "{digests}");

    let out = imgfs_ok(root, &["prune", "-f"]);
    for d in zstd_layers.iter().chain(&gzip_layers).chain([&zstd_manifest, &gzip_manifest]) {
        assert!(blob_file(root, d).exists(), "prune -f removed blob {d} of a named image:\n{out}");
    }
    assert!(imgfs_ok(root, &["check"]).contains("is consistent"));

    // Pulled again: every layer is there, nothing is fetched.
    sync_registry_log();
    let mark = log_mark();
    imgfs_ok(root, &["pull", "-q", &gzip]);
    sync_registry_log();
    for l in &gzip_layers {
        assert_eq!(blob_gets(mark, &proxy.addr, "zstd-gzip", l), 0, "layer {l} fetched again");
    }

    // Each name has its own layers (inspect shows them, all stored), and mounts them
    // with the registry gone.
    for (name, layers) in [(&zstd, &zstd_layers), (&gzip, &gzip_layers)] {
        let shown =
            imgfs_ok(root, &["inspect", "--format", "{{range .Layers}}{{.Digest}} {{.Present}}\n{{end}}", name]);
        let want: String = layers.iter().map(|l| format!("{l} true\n")).collect();
        assert_eq!(shown.trim_end(), want.trim_end(), "{name}");
    }
    proxy.set_offline(true);
    for name in [&zstd, &gzip] {
        let m = mount(root, name, &[]);
        let diff = treecmp(&m.dir, &unpack_of("zstd:1").join("rootfs"), &["--no-dir-mtime"]);
        assert!(diff.is_empty(), "{name} differs from the unpack:\n{}", diff.join("\n"));
    }

    // `check` looks at the second manifest too.
    fs::remove_file(blob_file(root, &gzip_manifest)).unwrap();
    let out = imgfs(root, &["check"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("blob {gzip_manifest}")), "{}", show(&out));
}
