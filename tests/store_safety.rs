//! The store's integrity under races, crashes and damage, through the real `imgfs`
//! binary against the real test registry (scripts/test starts it and pushes the test
//! images): garbage collection racing pulls, record writes racing the temp sweep, pulls
//! killed with SIGKILL, the store's file modes, inconsistent records, and `imgfs check`
//! finding (and with `--repair` removing) damaged blobs, indexes, records and mount
//! records, and a lock that can't be taken. Tests with a FUSE mount are in
//! mount-tests/store_safety.rs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[path = "outcome/mod.rs"]
mod outcome;
use outcome::registry_addr as addr;

fn image(name: &str) -> String {
    format!("{}/{name}", addr())
}

fn command(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgfs"));
    c.arg("--root").arg(root).args(args);
    c
}

fn imgfs(root: &Path, args: &[&str]) -> Output {
    command(root, args).output().unwrap()
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = imgfs(root, args);
    assert!(
        out.status.success(),
        "imgfs {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The one-line error of a failed command (never a panic).
fn fails(root: &Path, args: &[&str]) -> String {
    let out = imgfs(root, args);
    assert!(!out.status.success(), "imgfs {args:?}: expected failure, got: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "imgfs {args:?}: error is one line: {err}");
    assert!(err.starts_with("imgfs: error: "), "imgfs {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn db(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("images.json")).unwrap()).unwrap()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn id_of(root: &Path, name: &str) -> String {
    ok(root, &["inspect", "--format", "{{.Id}}", name]).trim().to_string()
}

/// The layer digests of a stored image, and whether each blob is present.
fn layers_present(root: &Path, name: &str) -> Vec<(String, bool)> {
    let v: serde_json::Value = serde_json::from_str(&ok(root, &["inspect", name])).unwrap();
    v[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["Digest"].as_str().unwrap().to_string(), l["Present"].as_bool().unwrap()))
        .collect()
}

fn blob(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

/// `imgfs check` passes and says so.
fn check_clean(root: &Path) {
    let out = ok(root, &["check"]);
    assert!(out.contains("is consistent"), "{out}");
}

/// Runs `args` over and over in other processes until dropped.
struct Loop {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Loop {
    fn start(root: &Path, args: &[&str]) -> Loop {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (root, args) = (root.to_path_buf(), args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut runs = 0;
            while !s.load(Ordering::SeqCst) {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = imgfs(&root, &args);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!err.contains("panicked"), "imgfs {args:?} panicked: {err}");
                runs += 1;
            }
            runs
        });
        Loop { stop, thread: Some(thread) }
    }

    /// Stop and return how many runs there were.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn gc_never_removes_a_pull_in_flight() {
    let Some(_) = outcome::test_env() else { return };
    // Each round pulls into an empty store while prune sweeps in a loop: before one
    // lease covered the whole pull, blobs written between the sweep's steps (the
    // manifest and config, a layer before its record) were removed.
    let name = image("layered:1");
    for round in 0..4 {
        let store = tempfile::tempdir().unwrap();
        let root = store.path();
        ok(root, &["ls"]);
        let pruner = Loop::start(root, &["prune", "-f"]);
        ok(root, &["pull", &name]);
        let prunes = pruner.finish();
        for (d, present) in layers_present(root, &name) {
            assert!(present, "round {round}: layer {d} was removed by a prune ({prunes} prunes ran)");
        }
        let id = id_of(root, &name);
        assert!(blob(root, &id).is_file(), "round {round}: config gone");
        check_clean(root);
    }
}

#[test]
fn record_writes_survive_a_concurrent_temp_sweep() {
    let Some(_) = outcome::test_env() else { return };
    // Every tag writes images.json through a temp file; the sweep of tmp/ in prune
    // must not remove it midway (the tag would fail: "cannot write images.json").
    let store = tempfile::tempdir().unwrap();
    let root = store.path();
    let name = image("base:1");
    ok(root, &["pull", &name]);
    let pruner = Loop::start(root, &["prune", "-f"]);
    for i in 0..150 {
        ok(root, &["tag", &name, &format!("copy:{i}")]);
    }
    pruner.finish();
    let tags = db(root)["tags"].as_object().unwrap().len();
    assert_eq!(tags, 151, "every tag made it");
    check_clean(root);
}

/// Wait until a temp file under `tmp/` holds more than `bytes`, or the child ends.
fn wait_for_temp(root: &Path, child: &mut Child, bytes: u64) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if files_in(&root.join("tmp")).iter().any(|p| p.metadata().map_or(0, |m| m.len()) > bytes) {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn a_killed_pull_leaves_no_temp_file_behind() {
    let Some(_) = outcome::test_env() else { return };
    let store = tempfile::tempdir().unwrap();
    let root = store.path();
    let mut child =
        command(root, &["pull", &image("big:1")]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let caught = wait_for_temp(root, &mut child, 1 << 20);
    child.kill().unwrap(); // SIGKILL: nothing gets cleaned up by the pull itself
    child.wait().unwrap();
    assert!(caught, "the pull ended before a temp file of 1 MiB showed up");
    assert!(!files_in(&root.join("tmp")).is_empty());
    // Any next command removes the dead pull's temp files.
    ok(root, &["ls"]);
    assert_eq!(files_in(&root.join("tmp")), Vec::<PathBuf>::new());
    ok(root, &["pull", &image("big:1")]);
    check_clean(root);
}

/// Every directory and file under `root` (root included) with its mode bits.
fn modes(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![(root.to_path_buf(), root.metadata().unwrap().permissions().mode() & 0o7777)];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            out.push((e.path(), m.permissions().mode() & 0o7777));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn assert_private(root: &Path) {
    for (p, mode) in modes(root) {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}, want {want:o}", p.display());
    }
}

#[test]
fn the_store_is_private_to_its_owner_whatever_the_umask() {
    let Some(_) = outcome::test_env() else { return };
    let store = tempfile::tempdir().unwrap();
    let root = store.path().join("store");
    // umask only changes this process's file-creation mask, inherited by the imgfs
    // children; no other test here depends on it.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    ok(&root, &["pull", &image("zstd:1")]);
    ok(&root, &["pull", &image("app:1")]);
    ok(&root, &["tag", &image("app:1"), "private:1"]);
    rustix::process::umask(old);
    assert!(files_in(&root.join("blobs/sha256")).len() > 3);
    assert_private(&root);

    // A store an older imgfs left world-readable is tightened when next opened.
    for (p, _) in modes(&root) {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // A file of the user's own in the directory they made the root is left alone.
    let own = root.join("notes.sh");
    std::fs::write(&own, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(&root, &["ls"]);
    assert_eq!(own.metadata().unwrap().permissions().mode() & 0o7777, 0o755);
    std::fs::remove_file(&own).unwrap();
    assert_private(&root);
}

#[test]
fn inconsistent_records_and_huge_durations_give_one_line_errors() {
    let Some(_) = outcome::test_env() else { return };
    let store = tempfile::tempdir().unwrap();
    let root = store.path();
    let name = image("base:1");
    ok(root, &["pull", &name]);
    let id = id_of(root, &name);
    // A tag naming an image that has no record (records edited or damaged by hand).
    let mut records = db(root);
    records["tags"]["example.com/ghost:1"] = serde_json::Value::String("sha256:".to_string() + &"ab".repeat(32));
    std::fs::write(root.join("images.json"), serde_json::to_vec(&records).unwrap()).unwrap();
    for cmd in [&["rm", "example.com/ghost:1"][..], &["inspect", "example.com/ghost:1"]] {
        let err = fails(root, cmd);
        assert!(err.contains("ghost") && err.contains("no record"), "{cmd:?}: {err}");
    }
    // A record whose layer list doesn't match its config.
    let mut records = db(root);
    records["images"][&id]["layers"].as_array_mut().unwrap().clear();
    std::fs::write(root.join("images.json"), serde_json::to_vec(&records).unwrap()).unwrap();
    ok(root, &["inspect", &name]);
    let out = imgfs(root, &["check"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("diff_ids"), "{}", String::from_utf8_lossy(&out.stdout));

    for until in ["-9999999999999999h", "9999999999999999h", "99999999999999999999999999999999h", "-2562048h"] {
        let err = fails(root, &["prune", "-f", "--filter", &format!("until={until}")]);
        assert!(err.contains("until"), "{until}: {err}");
    }
    ok(root, &["prune", "-f", "--filter", "until=-2562047h"]);
}

/// A lock that can't be taken (here a directory where its file goes) fails the command
/// with one line naming the lock file; the bare OS error named nothing.
#[test]
fn a_lock_that_cannot_be_taken_is_named() {
    let store = tempfile::tempdir().unwrap();
    let root = store.path();
    ok(root, &["ls"]);
    for (lock, cmd) in [("db.lock", &["ls"][..]), ("gc.lock", &["prune", "-f"])] {
        let path = root.join(lock);
        let _ = std::fs::remove_file(&path);
        std::fs::create_dir(&path).unwrap();
        let err = fails(root, cmd);
        assert!(err.contains(&format!("cannot lock {}", path.display())), "{cmd:?}: {err}");
        std::fs::remove_dir(&path).unwrap();
    }
}

/// Flip one byte in the middle of a file.
fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

/// Runs `imgfs check`, expects it to fail, returns its stdout lines.
fn check_damaged(root: &Path) -> Vec<String> {
    let out = imgfs(root, &["check"]);
    assert!(!out.status.success(), "check passed a damaged store: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged items") && err.contains("--repair"), "{err}");
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect()
}

#[test]
fn check_finds_each_kind_of_damage_and_repair_removes_it() {
    let Some(_) = outcome::test_env() else { return };
    let store = tempfile::tempdir().unwrap();
    let root = store.path();
    let (app, lazy) = (image("app:1"), image("lazy:1"));
    ok(root, &["pull", &app]);
    ok(root, &["pull", &lazy]);
    ok(root, &["pull", &image("zstd:1")]);
    check_clean(root);
    let app_layers: Vec<String> = layers_present(root, &app).into_iter().map(|(d, _)| d).collect();
    let lazy_id = id_of(root, &lazy);

    // A flipped byte in a layer blob, a truncated index of another layer, the config
    // a record names deleted, and the record of a mount server that is gone.
    let top = app_layers.last().unwrap();
    corrupt(&blob(root, top));
    let index = root.join("toc/sha256").join(format!("{}.toc", app_layers[0].strip_prefix("sha256:").unwrap()));
    let len = index.metadata().unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&index).unwrap().set_len(len / 2).unwrap();
    std::fs::remove_file(blob(root, &lazy_id)).unwrap();
    let stale = serde_json::json!({
        "pid": 999999999u32, "start_ticks": 1, "mountpoint": "/mnt/gone",
        "image": lazy_id, "reference": "lazy:1"
    });
    std::fs::write(root.join("mounts/999999999.json"), stale.to_string()).unwrap();

    let lines = check_damaged(root);
    let has = |needle: &str| lines.iter().any(|l| l.starts_with("damaged: ") && l.contains(needle));
    assert!(has(&format!("blob {top}: its")), "{lines:?}");
    assert!(has(&format!("TOC of layer {}", app_layers[0])), "{lines:?}");
    assert!(
        has(&format!("image {lazy_id}")) && has(&format!("blob {lazy_id} it names is not in the store")),
        "{lines:?}"
    );
    assert!(has("mount record 999999999.json: its server (pid 999999999"), "{lines:?}");
    assert_eq!(lines.len(), 4, "{lines:?}");

    let repaired = ok(root, &["check", "--repair"]);
    assert_eq!(repaired.lines().filter(|l| l.starts_with("removed: ")).count(), 4, "{repaired}");
    check_clean(root);
    assert!(!blob(root, top).exists() && !index.exists());
    fails(root, &["inspect", &lazy]);

    // Pulls bring back what was removed, verified and indexed.
    ok(root, &["pull", &app]);
    ok(root, &["pull", &lazy]);
    assert!(layers_present(root, &app).iter().all(|(_, p)| *p));
    assert!(index.is_file());
    check_clean(root);
}

/// Temp files of every kind: in tmp/, and `.tmp-…` beside records and indexes.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let beside = [root.to_path_buf(), root.join("mounts"), root.join("toc/sha256")];
    let mut v = files_in(&root.join("tmp"));
    for dir in beside {
        v.extend(files_in(&dir).into_iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp-")));
    }
    v
}

/// A small xorshift generator: the kill points differ run to run of the loop but the
/// test needs no crate for it.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn pulls_killed_at_random_points_leave_a_consistent_store() {
    let Some(_) = outcome::test_env() else { return };
    let store = tempfile::tempdir().unwrap();
    let root = store.path();
    // A pull of this small image takes some tens of milliseconds: kill points spread
    // over that, from before the first request to after the record is written.
    let names = [image("app:1"), image("zstd:1"), image("plain:1")];
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    for round in 0..20 {
        let name = &names[round % names.len()];
        let mut child = command(root, &["pull", name]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_micros(next(&mut seed) % 60_000));
        let _ = child.kill();
        child.wait().unwrap();
        if round % 5 == 4 {
            // Now and then a prune, as a user would run, between the crashes.
            ok(root, &["prune", "-f"]);
        }
        check_clean(root);
        // check was the next command: the killed pull's temp files went with it.
        assert_eq!(temp_files(root), Vec::<PathBuf>::new(), "round {round}");
    }
    for name in &names {
        ok(root, &["pull", name]);
        assert!(layers_present(root, name).iter().all(|(_, p)| *p), "{name}");
    }
    check_clean(root);
}

#[test]
fn pulls_of_images_sharing_layers_race_prune_and_rm_and_lose_nothing() {
    let Some(_) = outcome::test_env() else { return };
    let store = tempfile::tempdir().unwrap();
    let root = store.path().to_path_buf();
    let names = [image("base:1"), image("app:1"), image("app:2"), image("retag:old")];
    let pruner = Loop::start(&root, &["prune", "-a", "-f"]);
    let remover = Loop::start(&root, &["rm", &names[0]]);
    std::thread::scope(|s| {
        for name in &names {
            let root = &root;
            s.spawn(move || {
                for _ in 0..3 {
                    // A pull may find its image removed again right after, by the
                    // racing prune -a or rm; the pull itself must never fail.
                    ok(root, &["pull", name]);
                }
            });
        }
    });
    pruner.finish();
    remover.finish();
    check_clean(&root);
    // Whatever the race left, a pull of each now completes and every blob is there.
    for name in &names {
        ok(&root, &["pull", name]);
    }
    for name in &names {
        assert!(layers_present(&root, name).iter().all(|(_, p)| *p), "{name}");
    }
    check_clean(&root);
}

/// Whether `pid` waits for a file lock (a `->` line of /proc/locks names it).
fn waits_for_a_lock(pid: u32) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| l.contains("->") && l.split_whitespace().nth(5) == Some(pid.to_string().as_str()))
}

#[test]
fn a_config_swept_while_a_pull_waits_for_its_lease_is_stored_again() {
    let Some(_) = outcome::test_env() else { return };
    // A pull that finds the config blob already in the store (left by an image just
    // removed) must not trust it past the sweep that removes it: a GC can run between
    // the look and the lease. Here the test plays that GC, holding its lock while the
    // pull waits, and removes the blob before letting the pull on.
    let store = tempfile::tempdir().unwrap();
    let root = store.path();
    let name = image("layered:1");
    ok(root, &["pull", &name]);
    let config = blob(root, &id_of(root, &name));
    let kept = std::fs::read(&config).unwrap();
    ok(root, &["rm", &name]);
    assert!(!config.exists(), "rm sweeps the config");
    std::fs::write(&config, &kept).unwrap();

    let gc = std::fs::File::open(root.join("gc.lock")).unwrap();
    gc.lock().unwrap();
    let mut pull = command(root, &["pull", &name]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while !waits_for_a_lock(pull.id()) {
        assert!(start.elapsed() < Duration::from_secs(60), "the pull never waited for the GC lock");
        assert!(pull.try_wait().unwrap().is_none(), "the pull ended without waiting for the GC lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(&config).unwrap();
    gc.unlock().unwrap();
    let out = pull.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&config).unwrap(), kept, "the pull stored the config again");
    check_clean(root);
}
