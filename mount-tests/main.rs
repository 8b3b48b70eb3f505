//! Real FUSE mounts of the real `imgfs` binary against the real test registry that
//! `scripts/test` starts (IMGFS_TEST_ENV names its state directory: registry.addr,
//! registry.log, images.tsv and the `umoci unpack` reference trees).
//!
//! Every test has its own store (`--root` in a temp dir) and its own mountpoints, and
//! every mountpoint is held by a `Mount` guard whose Drop detaches it and ends its
//! server, so a failing assert never leaves a dead mount behind.
//!
//! Tests that count registry requests go through a private pass-through TCP proxy:
//! the registry logs each request's Host header, which is then the proxy's own
//! address, so requests made by tests running in parallel are never counted.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;

// Test modules of their own: hostile layers, registry faults, the store's integrity,
// the server's lifecycle and security, local sources (layouts and archives). They use the helpers below.
// The fault proxy is shared with the pull tests.
mod estargz;
#[path = "../tests/faultproxy/mod.rs"]
mod faultproxy;
mod faults;
mod fleet;
mod hostile;
mod inspect;
mod lifecycle;
mod local_sources;
#[path = "../tests/outcome/mod.rs"]
mod outcome;
mod progress;
mod published_index;
#[path = "../tests/pushing/mod.rs"]
mod pushing;
#[path = "../tests/registries/mod.rs"]
mod registries;
mod security;
mod store_safety;

// ---------------------------------------------------------------------------------------
// The test environment

struct TestEnv {
    dir: PathBuf,
    addr: String,
    /// images.tsv: (repo:tag, unpack dir) for the lines that have an unpack.
    unpacked: Vec<(String, PathBuf)>,
}

fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = outcome::env_dir();
        let addr = fs::read_to_string(dir.join("registry.addr"))
            .unwrap_or_else(|e| panic!("{}/registry.addr: {e}: run scripts/test", dir.display()))
            .trim()
            .to_string();
        let tsv = fs::read_to_string(dir.join("images.tsv"))
            .unwrap_or_else(|e| panic!("{}/images.tsv: {e}: run scripts/test", dir.display()));
        let unpacked = tsv
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (name, unpack) = (f.next()?, f.next()?);
                (unpack != "-").then(|| (name.to_string(), PathBuf::from(unpack)))
            })
            .collect();
        TestEnv { dir, addr, unpacked }
    })
}

/// The unpack directory images.tsv gives for `repo_tag`.
fn unpack_of(repo_tag: &str) -> PathBuf {
    env()
        .unpacked
        .iter()
        .find(|(n, _)| n == repo_tag)
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| panic!("{repo_tag} has no unpack in images.tsv"))
}

fn reference_file(repo_tag: &str, rel: &str) -> Vec<u8> {
    let p = unpack_of(repo_tag).join("rootfs").join(rel);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------
// Running imgfs

/// A store of its own for one test.
struct Store {
    tmp: TempDir,
}

impl Store {
    fn new() -> Store {
        Store { tmp: tempfile::tempdir().expect("temp store") }
    }
    fn root(&self) -> &Path {
        self.tmp.path()
    }
}

fn imgfs(root: &Path, args: &[&str]) -> Output {
    imgfs_env(root, &[], args)
}

/// `imgfs` with environment variables set (limits, the default platform).
fn imgfs_env(root: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgfs"));
    cmd.arg("--root").arg(root).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("cannot run imgfs")
}

/// Everything the store's mount servers have logged, in one string.
fn server_logs(root: &Path) -> String {
    let logs = fs::read_dir(root.join("logs")).expect("logs dir");
    logs.map(|e| fs::read_to_string(e.unwrap().path()).unwrap_or_default()).collect()
}

fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs imgfs, asserts success, returns stdout.
fn imgfs_ok(root: &Path, args: &[&str]) -> String {
    let out = imgfs(root, args);
    assert!(out.status.success(), "imgfs {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs imgfs, asserts failure with exactly one line on stderr, returns that line.
fn imgfs_fails(root: &Path, args: &[&str]) -> String {
    let out = imgfs(root, args);
    assert!(!out.status.success(), "imgfs {args:?} should fail: {}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(err.lines().count(), 1, "imgfs {args:?}: want a one-line error: {}", show(&out));
    assert!(err.starts_with("imgfs: error: "), "imgfs {args:?}: {}", show(&out));
    err
}

// ---------------------------------------------------------------------------------------
// Mounts and their teardown

/// A mountpoint that is unmounted (lazily) and whose server is ended on drop, whether
/// or not anything got mounted. It owns the temp dir the mountpoint lives in, which
/// Drop removes only after the detach (never walking into a live or dead mount).
struct Mount {
    dir: PathBuf,
    _tmp: TempDir,
}

impl Mount {
    /// A fresh, empty mountpoint; nothing mounted yet.
    fn empty() -> Mount {
        let tmp = tempfile::tempdir().expect("temp mountpoint");
        Mount { dir: tmp.path().canonicalize().unwrap(), _tmp: tmp }
    }

    /// Guard `dir` (inside `tmp`, which is removed after the teardown).
    fn at(dir: PathBuf, tmp: TempDir) -> Mount {
        Mount { dir, _tmp: tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn arg(&self) -> &str {
        self.dir.to_str().expect("UTF-8 temp path")
    }

    /// The pid of the server serving this mountpoint (found in /proc, not in the
    /// store, so it is found even if the store's records are wrong).
    fn server(&self) -> u32 {
        let pids = server_pids(&self.dir);
        assert_eq!(pids.len(), 1, "want exactly one server for {}, have {pids:?}", self.dir.display());
        pids[0]
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        teardown(&self.dir);
    }
}

/// Mount `image` (with `extra` options before it) at a fresh mountpoint.
fn mount(root: &Path, image: &str, extra: &[&str]) -> Mount {
    let m = Mount::empty();
    let mut args = vec!["mount"];
    args.extend_from_slice(extra);
    args.push(image);
    args.push(m.arg());
    imgfs_ok(root, &args);
    assert!(mountinfo(&m.dir).is_some(), "imgfs mount {image} returned but {} is not mounted", m.dir.display());
    m
}

/// Detach whatever is mounted at `dir` and make sure its server ends. Never panics:
/// it runs in Drop, maybe while a failed assert unwinds.
fn teardown(dir: &Path) {
    // EINVAL (not mounted) is fine.
    let _ = rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH);
    for pid in server_pids(dir) {
        // The detach ends the FUSE session, so the server should exit on its own.
        if !wait_until(Duration::from_secs(5), || pid_gone(pid)) {
            eprintln!("teardown: server {pid} for {} still running; killing it", dir.display());
            let _ = kill(pid, libc::SIGKILL);
        }
    }
}

/// Mount servers (`imgfs ... mount -f ... DIR`) for `dir`, from /proc.
fn server_pids(dir: &Path) -> Vec<u32> {
    let want = dir.as_os_str().as_bytes();
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = fs::read(p.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        let is_server = args.iter().any(|a| *a == b"mount")
            && args.iter().any(|a| *a == b"-f" || *a == b"--foreground")
            && args.last() == Some(&want);
        if is_server && !pid_gone(pid) {
            out.push(pid);
        }
    }
    out
}

/// kill(2): send the signal numbered `sig` (a `libc::SIG*`) to process `pid`.
fn kill(pid: u32, sig: i32) -> std::io::Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or_else(|| invalid(format!("pid {pid}")))?;
    let sig = Signal::from_named_raw(sig).ok_or_else(|| invalid(format!("signal {sig}")))?;
    Ok(kill_process(pid, sig)?)
}

/// Has the process exited? A zombie has: reaping it is its parent's (init's) business.
fn pid_gone(pid: u32) -> bool {
    // A zombie leader whose other threads are still exiting has not closed its files
    // (/dev/fuse among them) yet: gone means no thread is left but the zombie.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            matches!(stat.rsplit_once(") ").and_then(|(_, s)| s.chars().next()), Some('Z' | 'X'))
                && imgfs::store::mounts::threads_left(pid) <= 1
        }
    }
}

/// Poll `f` until it holds or `timeout` passes; returns whether it held.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One /proc/self/mountinfo line, for the mount whose mountpoint is `dir`.
#[derive(Debug)]
struct MountInfo {
    options: String,
    fstype: String,
    source: String,
}

fn mountinfo(dir: &Path) -> Option<MountInfo> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_str()?;
    info.lines().rev().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        if unescape_mountinfo(f.get(4)?) != want {
            return None;
        }
        Some(MountInfo {
            options: f.get(5)?.to_string(),
            fstype: f.get(sep + 1)?.to_string(),
            source: unescape_mountinfo(f.get(sep + 2)?),
        })
    })
}

/// mountinfo writes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push(b[i + 1..i + 4].iter().fold(0u8, |a, c| a.wrapping_mul(8) + (c - b'0')));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `imgfs mount` (no arguments): the listing of live mounts.
fn mount_listing(root: &Path) -> String {
    imgfs_ok(root, &["mount"])
}

fn errno_of<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what}: should fail, got {v:?}"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("{what}: not an OS error: {e}")),
    }
}

/// Read every regular file under `dir` (symlinks not followed); returns how many.
fn read_all(dir: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if md.is_dir() {
            n += read_all(&p);
        } else if md.is_file() {
            fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    n
}

/// Every directory under `dir`, `dir` included (symlinks not followed).
fn all_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(all_dirs(&e.path()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// treecmp.py

/// Compare a mount with a reference tree; returns the differences that matter (empty:
/// equal). umoci drops xattrs whose value is empty (Go's archive/tar skips such PAX
/// records), so a difference that is only such an xattr missing from the reference is
/// not one; `empty_xattr_value_is_served` checks that xattr on the mount directly.
fn treecmp(mnt: &Path, reference: &Path, options: &[&str]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-tests/treecmp.py");
    let out = Command::new("python3").arg(script).args(options).arg(mnt).arg(reference).output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => Vec::new(),
        Some(1) => stdout.lines().filter(|l| !only_empty_xattrs_missing(l)).map(String::from).collect(),
        _ => vec![format!("treecmp.py failed: {}", show(&out))],
    }
}

/// Is `line` (`PATH: xattrs: {A} != {B}`) a difference only in xattrs with an empty
/// value present on the mount (A) and absent from the reference (B)? Conservative: a
/// value that doesn't split cleanly just stays a difference.
fn only_empty_xattrs_missing(line: &str) -> bool {
    let Some((_, rest)) = line.split_once(": xattrs: {") else { return false };
    let Some((a, b)) = rest.split_once("} != {") else { return false };
    let Some(b) = b.strip_suffix('}') else { return false };
    let split = |s: &str| -> Vec<String> { s.split(", ").filter(|x| !x.is_empty()).map(String::from).collect() };
    let (a, b) = (split(a), split(b));
    let a_kept: Vec<String> = a.iter().filter(|x| !x.ends_with("=''") || b.contains(x)).cloned().collect();
    a_kept.len() < a.len() && a_kept == b
}

// ---------------------------------------------------------------------------------------
// The registry: manifests and the request log

/// The raw manifest of `repo:tag` (from the registry directly, with skopeo).
fn manifest(repo_tag: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{}/{repo_tag}", env().addr))
        .output()
        .expect("cannot run skopeo");
    assert!(out.status.success(), "skopeo inspect {repo_tag}: {}", show(&out));
    serde_json::from_slice(&out.stdout).expect("manifest JSON")
}

fn layer_digests(repo_tag: &str) -> Vec<String> {
    manifest(repo_tag)["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn config_digest(repo_tag: &str) -> String {
    manifest(repo_tag)["config"]["digest"].as_str().unwrap().to_string()
}

fn blob_file(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

fn registry_log() -> PathBuf {
    env().dir.join("registry.log")
}

/// Where the registry log ends now: count requests made after this.
fn log_mark() -> u64 {
    fs::metadata(registry_log()).map(|m| m.len()).unwrap_or(0)
}

fn log_since(mark: u64) -> String {
    let mut f = fs::File::open(registry_log()).expect("registry.log");
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(mark)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    // Only whole lines: the registry may be writing one right now.
    match s.rfind('\n') {
        Some(i) => s[..=i].to_string(),
        None => String::new(),
    }
}

/// GET requests for blob `digest` of `repo` that reached the registry (through the
/// host `via`) since `mark`: one "response completed" line each.
fn blob_gets(mark: u64, via: &str, repo: &str, digest: &str) -> usize {
    let uri = format!("/v2/{repo}/blobs/{digest}");
    let (host_q, host_p) = (format!("http.request.host=\"{via}\""), format!("http.request.host={via} "));
    log_since(mark)
        .lines()
        .filter(|l| {
            l.contains("msg=\"response completed")
                && l.contains("http.request.method=GET ")
                && l.contains(&uri)
                && (l.contains(&host_q) || l.contains(&host_p))
        })
        .count()
}

/// Make sure the registry has logged every request answered so far: send one more
/// (to a path of our own) and wait until it is in the log. The registry writes a
/// request's line right after answering it, so earlier lines are there by then.
fn sync_registry_log() {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = format!("/v2/imgfs-log-sync-{}-{}/tags/list", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let mut s = TcpStream::connect(&env().addr).expect("connect to the registry");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", env().addr).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    let ok = wait_until(Duration::from_secs(10), || {
        fs::read_to_string(registry_log()).map(|l| l.contains(&path)).unwrap_or(false)
    });
    assert!(ok, "the registry never logged {path}");
}

// ---------------------------------------------------------------------------------------
// A switchable TCP proxy in front of the registry

/// Forwards each connection to the registry while on; while off, closes new
/// connections at once and cuts open ones at their next chunk (the client keeps
/// connections alive between requests, so an off switch must reach those too).
/// It can also hold back the answer to requests for one blob (`hold`) until the test
/// opens the gate (`release`), passing everything else.
struct Proxy {
    addr: String,
    on: Arc<AtomicBool>,
    gate: Arc<Gate>,
}

/// Holds the responses on connections that asked for `digest`, until opened.
#[derive(Default)]
struct Gate {
    digest: Mutex<Option<String>>,
    open: Mutex<bool>,
    opened: Condvar,
    /// Requests held so far (connections that asked for the digest before the gate opened).
    held: AtomicUsize,
}

impl Gate {
    fn is_open(&self) -> bool {
        *self.open.lock().unwrap()
    }
    fn wait_open(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().unwrap().to_string();
        let on = Arc::new(AtomicBool::new(true));
        let gate = Arc::new(Gate::default());
        let (flag, gate2) = (Arc::clone(&on), Arc::clone(&gate));
        // Lives as long as the test binary; one idle thread per proxy.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(&env().addr) else { continue };
                // Set by the request direction when a request names the held digest
                // (before it is forwarded); the response direction then writes nothing
                // more until the gate opens. HTTP/1.1 without pipelining: the bytes that
                // come back after such a request are its answer.
                let held = Arc::new(AtomicBool::new(false));
                for (from, to, requests) in [(&client, &upstream, true), (&upstream, &client, false)] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let (flag, gate, held) = (Arc::clone(&flag), Arc::clone(&gate2), Arc::clone(&held));
                    std::thread::spawn(move || pump(from, to, &flag, &gate, &held, requests));
                }
            }
        });
        Proxy { addr, on, gate }
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// From now on, hold the answers to requests whose bytes contain `digest`.
    fn hold(&self, digest: &str) {
        *self.gate.digest.lock().unwrap() = Some(digest.to_string());
    }

    /// How many requests have been held so far.
    fn held(&self) -> usize {
        self.gate.held.load(Ordering::SeqCst)
    }

    /// Open the gate: held answers flow, and nothing is held any more.
    fn release(&self) {
        *self.gate.open.lock().unwrap() = true;
        self.gate.opened.notify_all();
    }
}

impl Drop for Proxy {
    /// Never leave a connection (and the thread of a test waiting on it) held.
    fn drop(&mut self) {
        self.release();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, on: &AtomicBool, gate: &Gate, held: &AtomicBool, requests: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    // The end of the previous chunk, so a digest split across two reads is still seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) if n > 0 && on.load(Ordering::SeqCst) => n,
            _ => break,
        };
        if requests {
            let digest = gate.digest.lock().unwrap().clone();
            if let Some(d) = digest.filter(|_| !gate.is_open()) {
                let mut seen = std::mem::take(&mut tail);
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(d.len()).any(|w| w == d.as_bytes()) && !held.swap(true, Ordering::SeqCst) {
                    gate.held.fetch_add(1, Ordering::SeqCst);
                }
                tail = seen[seen.len().saturating_sub(d.len())..].to_vec();
            }
        } else if held.load(Ordering::SeqCst) {
            gate.wait_open();
        }
        if !on.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// =======================================================================================
// 1. The mounted tree is the reference unpack

/// Every image with a reference unpack mounts as exactly that tree (types, modes,
/// owners, sizes, contents, links, devices, xattrs, hardlink groups), directory mtimes
/// aside (see the next test); multi-arch images also for linux/arm64.
#[test]
fn trees_match_reference_unpacks() {
    let Some(_) = outcome::test_env() else { return };
    let failures = compare_all(&["--no-dir-mtime"], |_| Vec::new());
    assert!(failures.is_empty(), "trees differ:\n{}", failures.join("\n"));
}

/// Directory mtimes match too, wherever umoci itself gives a directory the mtime of its
/// topmost tar entry (the unpack's dir-mtime-ignore lists where it doesn't).
#[test]
fn dir_mtimes_match_where_the_reference_defines_them() {
    let Some(_) = outcome::test_env() else { return };
    let failures = compare_all(&[], |unpack| {
        vec!["--ignore-dir-mtime-of".to_string(), unpack.join("dir-mtime-ignore").display().to_string()]
    });
    assert!(failures.is_empty(), "trees differ:\n{}", failures.join("\n"));
}

/// Mount each image of images.tsv (and the arm64 side of the multi-arch ones) in turn
/// into one store and compare; returns one message per image that differs.
fn compare_all(options: &[&str], per_unpack: impl Fn(&Path) -> Vec<String>) -> Vec<String> {
    let store = Store::new();
    let mut cases: Vec<(String, Vec<&str>, PathBuf)> = Vec::new();
    for (name, unpack) in &env().unpacked {
        // images.tsv gives the amd64 unpack for the multi-arch images.
        let platform = if name.starts_with("multi") && !cfg!(target_arch = "x86_64") {
            vec!["--platform", "linux/amd64"]
        } else {
            vec![]
        };
        cases.push((name.clone(), platform, unpack.clone()));
    }
    let arm64 = env().dir.join("unpacked/multi-arm64");
    for name in ["multi:1", "multi-docker:1"] {
        cases.push((name.to_string(), vec!["--platform", "linux/arm64"], arm64.clone()));
    }
    assert!(cases.len() > 10, "images.tsv lists too few images: {cases:?}");
    let mut failures = Vec::new();
    for (name, platform, unpack) in cases {
        let m = mount(store.root(), &format!("{}/{name}", env().addr), &platform);
        // The finished tree is what must be exact: a directory whose topmost entry is in
        // a layer not fetched yet is served with provisional attributes until then, so
        // fetch everything first (every file read, every directory listed).
        read_all(&m.dir);
        let mut opts: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        opts.extend(per_unpack(&unpack));
        let opts: Vec<&str> = opts.iter().map(|s| s.as_str()).collect();
        let diffs = treecmp(&m.dir, &unpack.join("rootfs"), &opts);
        if !diffs.is_empty() {
            failures.push(format!("== {name} {platform:?} vs {}:\n{}", unpack.display(), diffs.join("\n")));
        }
    }
    failures
}

/// edge:1's xattrs/file carries `user.empty` with an empty value (which the umoci
/// reference cannot show), next to the others; getfattr reads them all.
#[test]
fn empty_xattr_value_is_served() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let m = mount(store.root(), &format!("{}/edge:1", env().addr), &[]);
    let file = m.path("xattrs/file");
    let names = listxattr(&file);
    for want in ["user.empty", "user.foo", "user.unicode"] {
        assert!(names.iter().any(|n| n == want), "{want} not in listxattr {names:?}");
    }
    assert_eq!(getxattr(&file, "user.empty"), Some(Vec::new()));
    assert_eq!(getxattr(&file, "user.foo"), Some(b"bar".to_vec()));
    assert_eq!(getxattr(&file, "user.unicode"), Some("välue ✓".as_bytes().to_vec()));
    assert_eq!(getxattr(&file, "user.nope"), None);
    assert_eq!(getxattr(&m.path("xattrs"), "user.dir"), Some(b"on a directory".to_vec()));
    let out = Command::new("getfattr").args(["-d", "-m", "-"]).arg(&file).output().expect("getfattr");
    assert!(out.status.success(), "getfattr: {}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("user.empty=\"\"") && text.contains("user.foo=\"bar\""), "getfattr output:\n{text}");
}

fn listxattr(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display()));
    buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into()).collect()
}

/// The value, or None for ENODATA.
fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
        Ok(len) => {
            buf.truncate(len);
            Some(buf)
        }
        Err(e) => {
            assert_eq!(e.raw_os_error(), libc::ENODATA, "getxattr {} {name}: {e}", p.display());
            None
        }
    }
}

// =======================================================================================
// 2, 3. Laziness and index reuse

/// A mount fetches no layer; reading /top/c.txt fetches only the top layer (an upper
/// layer settles the lookup); listing the root needs, and fetches, the other two, each
/// once; the image is then in `imgfs ls`.
#[test]
fn layers_are_fetched_only_when_needed() {
    let Some(_) = outcome::test_env() else { return };
    let layers = layer_digests("lazy:1");
    assert_eq!(layers.len(), 3, "lazy:1 should have 3 layers: {layers:?}");
    let config = config_digest("lazy:1");
    let proxy = Proxy::start();
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
    let proxy = Proxy::start();
    let store = Store::new();
    let index_dir = store.root().join("index/sha256");

    let first = mount(store.root(), &format!("{}/app:1", proxy.addr), &[]);
    assert!(read_all(&first.dir) > 5);
    imgfs_ok(store.root(), &["umount", first.arg()]);
    drop(first);

    let idx_stamp = |d: &str| -> (u64, i64, i64, u64) {
        let p = index_dir.join(format!("{}.idx", d.trim_start_matches("sha256:")));
        let md = fs::metadata(&p).unwrap_or_else(|e| panic!("index of layer {d}: {}: {e}", p.display()));
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

/// Two mounts of one image in one store, read at once: each layer blob is fetched
/// once (the second mount waits for the first one's fetch through the store), both
/// read the right bytes, and a gzip layer leaves no uncompressed copy behind.
#[test]
fn two_mounts_of_one_image_fetch_each_layer_once() {
    let Some(_) = outcome::test_env() else { return };
    let layers = layer_digests("lazy:1");
    let proxy = Proxy::start();
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

/// A store written by an older imgfs (JSON indexes, an uncompressed copy of each gzip
/// layer) is converted on first use, from the blobs it has: nothing is fetched, the
/// copies go, the indexes are rewritten in the current format, and the tree is right.
#[test]
fn an_older_store_is_converted_on_first_use() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = Proxy::start();
    let store = Store::new();
    let image = format!("{}/app:1", proxy.addr);
    imgfs_ok(store.root(), &["pull", "-q", &image]);
    let layers = layer_digests("app:1");
    for l in &layers {
        let hex = l.trim_start_matches("sha256:");
        fs::write(
            store.root().join(format!("index/sha256/{hex}.idx")),
            br#"{"entries":[],"whiteouts":[],"opaque":[]}"#,
        )
        .unwrap();
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
        let idx = fs::read(store.root().join(format!("index/sha256/{hex}.idx"))).unwrap();
        assert!(idx.starts_with(b"IMGFSIDX"), "index of {l} was not rewritten");
        assert!(!store.root().join(format!("layers/sha256/{hex}.tar")).exists(), "the old copy of {l} is still there");
    }
}

// =======================================================================================
// 4, 5. Unmounting, listing, a killed server

/// `imgfs mount` lists live mounts (reference, mountpoint, pid); `imgfs umount`,
/// `fusermount3 -u` and `umount` each unmount, and the server then exits and its
/// listing line goes.
#[test]
fn unmount_by_imgfs_fusermount3_and_umount() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/lazy:1", env().addr);
    let mounts: Vec<Mount> = (0..3).map(|_| mount(store.root(), &image, &[])).collect();
    let pids: Vec<u32> = mounts.iter().map(|m| m.server()).collect();

    let listing = mount_listing(store.root());
    for (m, pid) in mounts.iter().zip(&pids) {
        assert!(
            listing.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&image.as_str())
                    && f.contains(&m.arg())
                    && f.last() == Some(&pid.to_string().as_str())
            }),
            "imgfs mount does not list {image} at {} (pid {pid}):\n{listing}",
            m.arg()
        );
    }

    let ways: [(&str, Vec<String>); 3] = [
        (env!("CARGO_BIN_EXE_imgfs"), vec!["--root".into(), store.root().display().to_string(), "umount".into()]),
        ("fusermount3", vec!["-u".into()]),
        ("umount", vec![]),
    ];
    for ((m, pid), (cmd, args)) in mounts.iter().zip(&pids).zip(ways) {
        let out = Command::new(cmd).args(&args).arg(&m.dir).output().expect(cmd);
        assert!(out.status.success(), "{cmd} {args:?} {}: {}", m.arg(), show(&out));
        assert!(mountinfo(&m.dir).is_none(), "{cmd}: {} is still mounted", m.arg());
        assert!(wait_until(Duration::from_secs(10), || pid_gone(*pid)), "{cmd}: server {pid} did not exit");
        let listing = mount_listing(store.root());
        assert!(!listing.contains(m.arg()), "{cmd}: {} still listed:\n{listing}", m.arg());
        assert!(fs::read_dir(&m.dir).unwrap().next().is_none(), "{cmd}: {} is not an empty dir", m.arg());
    }
}

/// A server killed with SIGKILL cannot clean up: the next imgfs command recognises its
/// record as dead, drops it and detaches the dead mountpoint, which is then a plain
/// directory again; `imgfs umount` of such a mountpoint does the same and succeeds.
#[test]
fn sigkilled_server_is_cleared_and_its_mountpoint_detached() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/lazy:1", env().addr);
    let (a, b) = (mount(store.root(), &image, &[]), mount(store.root(), &image, &[]));
    let mut records = Vec::new();
    for m in [&a, &b] {
        let pid = m.server();
        let record = store.root().join(format!("mounts/{pid}.json"));
        assert!(record.exists(), "no mount record {}", record.display());
        kill(pid, libc::SIGKILL).unwrap();
        // Wait for it to be gone, reaped included (a zombie is a separate matter).
        assert!(wait_until(Duration::from_secs(10), || !Path::new(&format!("/proc/{pid}")).exists()));
        assert_eq!(errno_of("stat of a dead mount", fs::metadata(m.path("top"))), libc::ENOTCONN);
        records.push(record);
    }

    // umount first: it detaches b and clears a's mountpoint and record on the way.
    imgfs_ok(store.root(), &["umount", b.arg()]);
    let listing = mount_listing(store.root());
    for (m, record) in [&a, &b].into_iter().zip(&records) {
        assert!(!listing.contains(m.arg()), "a dead server is still listed:\n{listing}");
        assert!(!record.exists(), "the dead server's record {} was not removed", record.display());
        assert!(mountinfo(&m.dir).is_none(), "{} is still mounted", m.arg());
        assert!(fs::read_dir(&m.dir).unwrap().next().is_none(), "{} is not a plain empty dir", m.arg());
    }
}

// =======================================================================================
// 6. rm and prune leave a mounted image alone

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

// =======================================================================================
// 7. Read-only, errnos, attributes

/// Anything that would write fails with EROFS; a missing name is ENOENT; symlinks read
/// back their targets; directory link counts, block counts and statfs are what tools
/// (find, du, df) expect.
#[test]
fn mount_is_read_only_with_posix_errnos_and_attrs() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let app = mount(store.root(), &format!("{}/app:1", env().addr), &[]);
    let edge = mount(store.root(), &format!("{}/edge:1", env().addr), &[]);
    let p = |rel: &str| app.path(rel);

    let erofs = [
        ("open for write", errno_of("w", fs::OpenOptions::new().write(true).open(p("etc/hostname")))),
        ("truncate", errno_of("t", fs::OpenOptions::new().write(true).truncate(true).open(p("etc/hostname")))),
        ("create", errno_of("c", fs::File::create(p("etc/new-file")))),
        ("mkdir", errno_of("m", fs::create_dir(p("new-dir")))),
        ("unlink", errno_of("u", fs::remove_file(p("etc/hostname")))),
        ("rmdir", errno_of("r", fs::remove_dir(p("srv/www")))),
        ("rename", errno_of("mv", fs::rename(p("etc/hostname"), p("etc/hostname2")))),
        ("symlink", errno_of("ln", std::os::unix::fs::symlink("x", p("etc/new-link")))),
        ("chmod", errno_of("chmod", fs::set_permissions(p("etc/hostname"), fs::Permissions::from_mode(0o600)))),
        ("setxattr", setxattr(&p("etc/hostname"), "user.x", b"y")),
    ];
    for (what, e) in erofs {
        assert_eq!(e, libc::EROFS, "{what}: errno {e}, want EROFS");
    }

    assert_eq!(errno_of("missing", fs::metadata(p("no/such/path"))), libc::ENOENT);
    assert_eq!(errno_of("missing", fs::read(p("etc/no-such-file"))), libc::ENOENT);
    // Whited out in app:1's upper layers: gone, not merely hidden from readdir.
    assert_eq!(errno_of("whiteout", fs::metadata(p("etc/debian_version"))), libc::ENOENT);
    assert_eq!(errno_of("whiteout", fs::metadata(p("usr/share/doc"))), libc::ENOENT);
    assert_eq!(errno_of("readdir of a file", fs::read_dir(p("etc/hostname"))), libc::ENOTDIR);

    assert_eq!(fs::read_link(p("etc/issue.link")).unwrap(), Path::new("issue"));
    assert_eq!(fs::read_link(p("bin")).unwrap(), Path::new("/usr/bin"));
    assert_eq!(fs::symlink_metadata(p("bin")).unwrap().len(), "/usr/bin".len() as u64);
    assert_eq!(errno_of("readlink of a file", fs::read_link(p("etc/hostname"))), libc::EINVAL);
    assert_eq!(fs::read(p("etc/issue.link")).unwrap(), fs::read(p("etc/issue")).unwrap());

    for m in [&app, &edge] {
        for dir in all_dirs(&m.dir) {
            let subdirs =
                fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir()).count();
            let nlink = fs::metadata(&dir).unwrap().nlink();
            assert_eq!(nlink, 2 + subdirs as u64, "{}: st_nlink {nlink}, {subdirs} subdirectories", dir.display());
            for e in fs::read_dir(&dir).unwrap() {
                let md = fs::symlink_metadata(e.unwrap().path()).unwrap();
                if md.is_file() {
                    assert!(
                        md.blocks() * 512 >= md.len(),
                        "{}: st_blocks {} for {} bytes",
                        dir.display(),
                        md.blocks(),
                        md.len()
                    );
                }
            }
        }
    }
    let big = fs::symlink_metadata(p("usr/bin/true")).unwrap();
    assert!(big.len() > 4096 && big.blocks() > 0);

    let sv = rustix::fs::statvfs(app.arg()).unwrap_or_else(|e| panic!("statvfs: {e}"));
    assert!(sv.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY), "statvfs: not ST_RDONLY");
    assert!(sv.f_bsize > 0 && sv.f_namemax > 0, "statvfs: bsize {} namemax {}", sv.f_bsize, sv.f_namemax);
    let df = Command::new("df").arg(&app.dir).output().expect("df");
    assert!(df.status.success(), "df: {}", show(&df));
    let du = Command::new("du").arg("-s").arg(&app.dir).output().expect("du");
    assert!(du.status.success(), "du: {}", show(&du));
}

/// setxattr(2)'s errno.
fn setxattr(p: &Path, name: &str, value: &[u8]) -> i32 {
    let r = rustix::fs::setxattr(p, name, value, rustix::fs::XattrFlags::empty());
    r.expect_err("setxattr on the mount succeeded").raw_os_error()
}

/// The mount table shows an imgfs mount as a FUSE mount, ro,nosuid,nodev, with
/// `imgfs:IMAGE` in the source column.
#[test]
fn mount_table_shows_imgfs_source_ro_nosuid_nodev() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/base:1", env().addr);
    let m = mount(store.root(), &image, &[]);
    let info = mountinfo(&m.dir).expect("in mountinfo");
    let opts: Vec<&str> = info.options.split(',').collect();
    for o in ["ro", "nosuid", "nodev"] {
        assert!(opts.contains(&o), "mount options {:?} lack {o}", info.options);
    }
    assert!(info.source.starts_with("imgfs:"), "source {:?} does not say imgfs", info.source);
    assert!(info.source.contains(&image), "source {:?} does not name {image}", info.source);
    // fuser's own mount(2) as root registers the type as plain "fuse"; through
    // fusermount3 (non-root) it is "fuse.imgfs". The source column names imgfs either way.
    assert!(info.fstype == "fuse" || info.fstype == "fuse.imgfs", "{info:?}");
    let out = Command::new("mount").output().expect("mount");
    let line = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.contains(m.arg())).map(String::from);
    let line = line.unwrap_or_else(|| panic!("`mount` does not show {}", m.arg()));
    assert!(line.starts_with("imgfs:") && line.contains(" type fuse"), "`mount` shows: {line}");
}

// =======================================================================================
// 8. An unprivileged user

const TEST_USER: &str = "imgfs-test";

/// A user mounts through fusermount3 into a store of its own; the kernel checks
/// permissions (default_permissions: the 0600 root file is EACCES for the user), and
/// without allow_other nobody else may enter the mount, root included.
#[test]
fn unprivileged_user_mounts_via_fusermount3() {
    let Some(_) = outcome::test_env() else { return };
    let uid = test_user();
    ensure_dev_fuse_is_world_usable();

    let tmp = tempfile::tempdir().expect("temp dir");
    let (store, mnt) = (tmp.path().join("store"), tmp.path().join("mnt"));
    for d in [tmp.path(), &store, &mnt] {
        fs::create_dir_all(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
    }
    let m = Mount::at(mnt.canonicalize().unwrap(), tmp);
    let as_user = |args: &[&str]| -> Output {
        Command::new("runuser").args(["-u", TEST_USER, "--"]).args(args).output().expect("runuser")
    };
    let bin = env!("CARGO_BIN_EXE_imgfs");
    let root = store.to_str().unwrap();
    let image = format!("{}/base:1", env().addr);

    let out = as_user(&[bin, "--root", root, "mount", &image, m.arg()]);
    assert!(out.status.success(), "mount as {TEST_USER}: {}", show(&out));
    let info = mountinfo(&m.dir).expect("mounted");
    assert!(info.options.contains("ro"), "{info:?}");
    let pid = m.server();
    let owner = fs::metadata(format!("/proc/{pid}")).unwrap().uid();
    assert_eq!(owner, uid, "the server should run as {TEST_USER}");

    let out = as_user(&["cat", m.path("etc/hostname").to_str().unwrap()]);
    assert!(out.status.success(), "{TEST_USER} reads etc/hostname: {}", show(&out));
    assert_eq!(out.stdout, reference_file("base:1", "etc/hostname"));
    let out = as_user(&["cat", m.path("etc/secret").to_str().unwrap()]);
    assert!(!out.status.success(), "{TEST_USER} read the 0600 root file: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{}", show(&out));

    // Without allow_other the kernel lets only the mounting user in; root too is refused.
    assert_eq!(errno_of("root stats the user's mount", fs::metadata(m.path("etc/hostname"))), libc::EACCES);
    assert_eq!(errno_of("root lists the user's mount", fs::read_dir(&m.dir)), libc::EACCES);

    let out = as_user(&[bin, "--root", root, "mount"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(m.arg()), "{}", show(&out));
    let out = as_user(&[bin, "--root", root, "umount", m.arg()]);
    assert!(out.status.success(), "umount as {TEST_USER}: {}", show(&out));
    assert!(mountinfo(&m.dir).is_none(), "still mounted after the user's umount");
    assert!(wait_until(Duration::from_secs(10), || pid_gone(pid)), "server {pid} did not exit");
}

/// The uid of TEST_USER, created once (tests running at once must not race useradd).
fn test_user() -> u32 {
    static UID: OnceLock<u32> = OnceLock::new();
    *UID.get_or_init(|| {
        let _ = Command::new("useradd").args(["-m", TEST_USER]).output(); // fails if it exists: fine
        user_id(TEST_USER)
    })
}

fn user_id(name: &str) -> u32 {
    let out = Command::new("id").args(["-u", name]).output().expect("id");
    assert!(out.status.success(), "no user {name}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// On a normal host udev makes /dev/fuse 0666 (systemd's 50-udev-default.rules) and
/// unprivileged FUSE needs that (libfuse and fuser open it before calling fusermount3).
/// A container without udev may leave it 0600: set the host default.
fn ensure_dev_fuse_is_world_usable() {
    let md = fs::metadata("/dev/fuse").expect("/dev/fuse");
    if md.permissions().mode() & 0o666 != 0o666 {
        eprintln!(
            "note: /dev/fuse was {:o}; setting 0666 as udev does on a normal host",
            md.permissions().mode() & 0o777
        );
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).expect("chmod /dev/fuse");
    }
}

// =======================================================================================
// 9. A registry outage: EIO, then recovery

/// With the registry unreachable, reading a file whose layer is not fetched yet fails
/// with EIO (after the client's retries) while what is already known still reads; the
/// server logs why and stays up; once the registry is back, the same read succeeds.
#[test]
fn registry_outage_gives_eio_and_recovers() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = Proxy::start();
    let store = Store::new();
    let m = mount(store.root(), &format!("{}/lazy:1", proxy.addr), &[]);
    let pid = m.server();
    // Something known before the outage: top/c.txt, from the top layer only.
    let c = reference_file("lazy:1", "top/c.txt");
    assert_eq!(fs::read(m.path("top/c.txt")).unwrap(), c);

    proxy.set(false);
    // bottom/ is in the bottom layer, which no lookup has needed so far.
    let e = errno_of("read bottom/a.txt with the registry down", fs::read(m.path("bottom/a.txt")));
    assert_eq!(e, libc::EIO, "errno {e}, want EIO");
    assert!(!pid_gone(pid), "the server died");
    assert!(mountinfo(&m.dir).is_some(), "the mount went away");
    assert!(fs::metadata(&m.dir).unwrap().is_dir(), "stat of the mount root fails");
    assert_eq!(fs::read(m.path("top/c.txt")).expect("top/c.txt during the outage"), c);

    let log = newest_log(store.root());
    let text = fs::read_to_string(&log).unwrap();
    let eio = text.lines().find(|l| l.contains("EIO"));
    let eio = eio.unwrap_or_else(|| panic!("no EIO line in {}:\n{text}", log.display()));
    let reason = eio.split_once("EIO").unwrap().1.trim_start_matches([':', ' ']);
    assert!(reason.len() > 10, "EIO logged without a reason: {eio}");

    proxy.set(true);
    let a = fs::read(m.path("bottom/a.txt")).expect("read bottom/a.txt once the registry is back");
    assert_eq!(a, reference_file("lazy:1", "bottom/a.txt"));
    let mut names: Vec<String> =
        fs::read_dir(&m.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["bottom", "middle", "top"]);
}

fn newest_log(root: &Path) -> PathBuf {
    let logs = fs::read_dir(root.join("logs")).expect("logs dir");
    logs.map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("no server log")
}

// =======================================================================================
// 10. Bad input

/// A missing mountpoint, a file as mountpoint, an unknown tag or repository: exit
/// non-zero with one line naming the culprit, and nothing left mounted or listed.
#[test]
fn mount_rejects_bad_mountpoints_and_unknown_images() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let file = tmp.path().join("file");
    fs::write(&file, "not a dir").unwrap();
    let image = format!("{}/lazy:1", env().addr);

    let err = imgfs_fails(store.root(), &["mount", &image, missing.to_str().unwrap()]);
    assert!(err.contains("missing"), "{err}");
    let err = imgfs_fails(store.root(), &["mount", &image, file.to_str().unwrap()]);
    assert!(err.contains("file") && err.contains("not a directory"), "{err}");

    let m = Mount::empty();
    let err = imgfs_fails(store.root(), &["mount", &format!("{}/lazy:nosuchtag", env().addr), m.arg()]);
    assert!(err.contains("nosuchtag"), "{err}");
    let err = imgfs_fails(store.root(), &["mount", &format!("{}/nosuchrepo:1", env().addr), m.arg()]);
    assert!(err.contains("nosuchrepo"), "{err}");
    let err = imgfs_fails(store.root(), &["mount", "127.0.0.1:1/lazy:1", m.arg()]);
    assert!(err.contains("127.0.0.1:1"), "{err}");

    assert!(mountinfo(&m.dir).is_none(), "a failed mount left {} mounted", m.arg());
    assert!(server_pids(&m.dir).is_empty());
    let listing = mount_listing(store.root());
    assert!(!listing.contains(m.arg()), "a failed mount is listed:\n{listing}");
    assert!(fs::read_dir(store.root().join("mounts")).map_or(true, |mut d| d.next().is_none()), "mount records left");
}

/// Mounting over a live imgfs mount is refused, names the directory, and leaves the
/// first mount serving.
#[test]
fn mount_refuses_an_existing_mount() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/lazy:1", env().addr);
    let m = mount(store.root(), &image, &[]);
    let pid = m.server();
    let err = imgfs_fails(store.root(), &["mount", &image, m.arg()]);
    assert!(err.contains(m.arg()), "{err}");
    assert_eq!(server_pids(&m.dir), [pid], "a second server was started");
    assert_eq!(fs::read(m.path("top/c.txt")).unwrap(), reference_file("lazy:1", "top/c.txt"));
    // Only one mount stacked on the directory.
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(info.lines().filter(|l| l.split(' ').nth(4) == Some(m.arg())).count(), 1);
}

// =======================================================================================
// 11. Images shaped as real ones are (layered:1)
//
// layered:1 (scripts/build-test-images, build_layered) is built the way docker, BuildKit
// and umoci build images: only the base layer (a busybox root) has a "./" entry; the
// three layers above, made by `umoci repack`, list only what changed and the
// directories whose mtime the change moved. Layers, bottom to top:
//   0 busybox base: ./, bin/busybox + applet symlinks, etc, root 0700, tmp 1777,
//     usr/local 2775 root:staff, 3 MiB of data (the big, slow download)
//   1 apt-like: usr/bin/hello*, usr/share/doc/hello/, var/lib/dpkg/, etc/shells
//     changed, etc/motd deleted (etc/.wh.motd)
//   2 config: etc/hello/hello.conf, etc/hostname changed
//   3 top: etc/app.conf, usr/local/bin/app, the new directory usr/local/lib/app/ with
//     tool and tool-alias, hard links of usr/bin/app-tool (three names, one inode);
//     no entry for usr/ or usr/local/ (this layer only passes through them)
// With default_permissions the kernel asks for the attributes of the root and of
// every directory on a path before it looks a name up in it; none of that may need a
// layer that the answer does not depend on.

const LAYERED: &str = "layered:1";
/// Files of the top layer, and the hard-link group it adds.
const TOP_FILE: &str = "usr/local/bin/app";
const TOP_PARENTS: [&str; 4] = ["", "usr", "usr/local", "usr/local/bin"];
const LINK_GROUP: [&str; 3] = ["usr/local/lib/app/tool", "usr/local/lib/app/tool-alias", "usr/bin/app-tool"];

/// A mount of layered:1 through a private proxy, and the layer blob GETs it caused.
/// Fields drop in this order: the proxy first (its Drop opens a held gate), then the
/// mount (detached), then the store.
struct Layered {
    proxy: Proxy,
    m: Mount,
    store: Store,
    layers: Vec<String>,
    mark: u64,
}

impl Layered {
    fn mount() -> Layered {
        let layers = layer_digests(LAYERED);
        assert_eq!(layers.len(), 4, "{LAYERED} should have 4 layers: {layers:?}");
        let proxy = Proxy::start();
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
    l.proxy.set(false);
    let md =
        fs::metadata(&l.m.dir).unwrap_or_else(|e| panic!("stat of the mount root with the registry unreachable: {e}"));
    assert!(md.is_dir(), "the mount root is not a directory: {md:?}");

    l.proxy.set(true);
    assert_eq!(fs::read(l.path(TOP_FILE)).unwrap(), reference_file(LAYERED, TOP_FILE));
    assert_eq!(l.fetched(), [0, 0, 0, 1], "blob GETs per layer (bottom..top) after cat {TOP_FILE}");

    l.proxy.set(false);
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

    l.proxy.set(true);
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
    l.proxy.hold(&l.layers[0]);
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
    let still_held = !l.proxy.gate.is_open() && matches!(base_rx.try_recv(), Err(mpsc::TryRecvError::Empty));
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

/// `DOCKER_DEFAULT_PLATFORM` (issue 9) names the platform a mount wants: a pulled image
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
