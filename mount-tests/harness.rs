//! The mount tests' harness: the test environment (the registry, images.tsv and the
//! reference unpacks), running `imgfs` in a store of a test's own, mounts that are
//! always torn down (a `Mount` guard detaches its mountpoint and ends its server on
//! drop, so a failing assert never leaves a dead mount behind), the mount table, the
//! tree comparer, and the registry's manifests and request log.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

use super::outcome;

// ---------------------------------------------------------------------------------------
// The test environment

pub(crate) struct TestEnv {
    pub(crate) dir: PathBuf,
    pub(crate) addr: String,
    /// images.tsv: (repo:tag, unpack dir) for the lines that have an unpack.
    pub(crate) unpacked: Vec<(String, PathBuf)>,
}

pub(crate) fn env() -> &'static TestEnv {
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
pub(crate) fn unpack_of(repo_tag: &str) -> PathBuf {
    env()
        .unpacked
        .iter()
        .find(|(n, _)| n == repo_tag)
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| panic!("{repo_tag} has no unpack in images.tsv"))
}

pub(crate) fn reference_file(repo_tag: &str, rel: &str) -> Vec<u8> {
    let p = unpack_of(repo_tag).join("rootfs").join(rel);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------
// Running imgfs

/// A store of its own for one test.
pub(crate) struct Store {
    tmp: TempDir,
}

impl Store {
    pub(crate) fn new() -> Store {
        Store { tmp: tempfile::tempdir().expect("temp store") }
    }
    pub(crate) fn root(&self) -> &Path {
        self.tmp.path()
    }
}

pub(crate) fn imgfs(root: &Path, args: &[&str]) -> Output {
    imgfs_env(root, &[], args)
}

/// `imgfs` with environment variables set (limits, the default platform).
pub(crate) fn imgfs_env(root: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgfs"));
    cmd.arg("--root").arg(root).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("cannot run imgfs")
}

/// Everything the store's mount servers have logged, in one string.
pub(crate) fn server_logs(root: &Path) -> String {
    let logs = fs::read_dir(root.join("logs")).expect("logs dir");
    logs.map(|e| fs::read_to_string(e.unwrap().path()).unwrap_or_default()).collect()
}

pub(crate) fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs imgfs, asserts success, returns stdout.
pub(crate) fn imgfs_ok(root: &Path, args: &[&str]) -> String {
    let out = imgfs(root, args);
    assert!(out.status.success(), "imgfs {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs imgfs, asserts failure with exactly one line on stderr, returns that line.
pub(crate) fn imgfs_fails(root: &Path, args: &[&str]) -> String {
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
pub(crate) struct Mount {
    pub(crate) dir: PathBuf,
    _tmp: TempDir,
}

impl Mount {
    /// A fresh, empty mountpoint; nothing mounted yet.
    pub(crate) fn empty() -> Mount {
        let tmp = tempfile::tempdir().expect("temp mountpoint");
        Mount { dir: tmp.path().canonicalize().unwrap(), _tmp: tmp }
    }

    /// Guard `dir` (inside `tmp`, which is removed after the teardown).
    pub(crate) fn at(dir: PathBuf, tmp: TempDir) -> Mount {
        Mount { dir, _tmp: tmp }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub(crate) fn arg(&self) -> &str {
        self.dir.to_str().expect("UTF-8 temp path")
    }

    /// The pid of the server serving this mountpoint (found in /proc, not in the
    /// store, so it is found even if the store's records are wrong).
    pub(crate) fn server(&self) -> u32 {
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
pub(crate) fn mount(root: &Path, image: &str, extra: &[&str]) -> Mount {
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
pub(crate) fn server_pids(dir: &Path) -> Vec<u32> {
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
pub(crate) fn kill(pid: u32, sig: i32) -> std::io::Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or_else(|| invalid(format!("pid {pid}")))?;
    let sig = Signal::from_named_raw(sig).ok_or_else(|| invalid(format!("signal {sig}")))?;
    Ok(kill_process(pid, sig)?)
}

/// Has the process exited? A zombie has: reaping it is its parent's (init's) business.
pub(crate) fn pid_gone(pid: u32) -> bool {
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
pub(crate) fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
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
pub(crate) struct MountInfo {
    pub(crate) options: String,
    pub(crate) fstype: String,
    pub(crate) source: String,
}

pub(crate) fn mountinfo(dir: &Path) -> Option<MountInfo> {
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
pub(crate) fn mount_listing(root: &Path) -> String {
    imgfs_ok(root, &["mount"])
}

pub(crate) fn errno_of<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what}: should fail, got {v:?}"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("{what}: not an OS error: {e}")),
    }
}

/// Read every regular file under `dir` (symlinks not followed); returns how many.
pub(crate) fn read_all(dir: &Path) -> usize {
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
pub(crate) fn all_dirs(dir: &Path) -> Vec<PathBuf> {
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
pub(crate) fn treecmp(mnt: &Path, reference: &Path, options: &[&str]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/treecmp.py");
    let out = Command::new("python3").arg(script).args(options).arg(mnt).arg(reference).output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => Vec::new(),
        // Exit 1 with no difference printed is no comparison: treecmp.py turns its own
        // exceptions into exit 3, but Python still exits 1 when the script can't start
        // (a syntax error, a missing module).
        Some(1) if stdout.trim().is_empty() => vec![format!("treecmp.py failed: {}", show(&out))],
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
pub(crate) fn manifest(repo_tag: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{}/{repo_tag}", env().addr))
        .output()
        .expect("cannot run skopeo");
    assert!(out.status.success(), "skopeo inspect {repo_tag}: {}", show(&out));
    serde_json::from_slice(&out.stdout).expect("manifest JSON")
}

pub(crate) fn layer_digests(repo_tag: &str) -> Vec<String> {
    manifest(repo_tag)["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn config_digest(repo_tag: &str) -> String {
    manifest(repo_tag)["config"]["digest"].as_str().unwrap().to_string()
}

pub(crate) fn blob_file(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

fn registry_log() -> PathBuf {
    env().dir.join("registry.log")
}

/// Where the registry log ends now: count requests made after this.
pub(crate) fn log_mark() -> u64 {
    fs::metadata(registry_log()).map(|m| m.len()).unwrap_or(0)
}

pub(crate) fn log_since(mark: u64) -> String {
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
pub(crate) fn blob_gets(mark: u64, via: &str, repo: &str, digest: &str) -> usize {
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
pub(crate) fn sync_registry_log() {
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
// Extended attributes

pub(crate) fn listxattr(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display()));
    buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into()).collect()
}

/// The value, or None for ENODATA.
pub(crate) fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
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
