//! Unmounting a mount that something still holds open: `imgfs umount` refuses a busy
//! mount (as umount(8) does) and leaves it serving; `imgfs umount --lazy` detaches it,
//! its record stays (listed as detached, protecting the image) until the last open
//! file closes and the server exits; and a server that outlives its unmount that way
//! never takes down a later mount at the same directory.
//!
//! Each test runs as root (mount(2) and umount2(2) directly) and as an unprivileged
//! user (through fusermount3), the user played by `runuser` as in the other non-root
//! tests. What holds a file open is a shell of the mounting user's, `sh`, which opens
//! the file on descriptor 3 and, once told to let go (its stdin closed), copies the
//! file out of that descriptor before it exits.

use super::security::{ensure_dev_fuse_is_world_usable, test_user, TEST_USER};
use super::*;
use std::io::BufRead;
use std::process::{Child, Stdio};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Root,
    User,
}

/// A store and a mountpoint of `who`'s, in a temp dir of theirs.
struct Setup {
    who: Who,
    store: PathBuf,
    m: Mount,
}

impl Setup {
    fn new(who: Who) -> Setup {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (store, mnt) = (tmp.path().join("store"), tmp.path().join("mnt"));
        for d in [&store, &mnt] {
            fs::create_dir_all(d).unwrap();
        }
        if who == Who::User {
            let uid = test_user();
            ensure_dev_fuse_is_world_usable();
            for d in [tmp.path(), &store, &mnt] {
                std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
            }
        }
        let m = Mount::at(mnt.canonicalize().unwrap(), tmp);
        Setup { who, store, m }
    }

    /// `program args…`, run as `who`.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        match self.who {
            Who::Root => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
            Who::User => {
                let mut c = Command::new("runuser");
                c.args(["-u", TEST_USER, "--", program]).args(args);
                c
            }
        }
    }

    fn imgfs(&self, args: &[&str]) -> Output {
        let mut full = vec!["--root", self.store.to_str().unwrap()];
        full.extend_from_slice(args);
        self.command(env!("CARGO_BIN_EXE_imgfs"), &full).output().expect("cannot run imgfs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.imgfs(args);
        assert!(out.status.success(), "{:?}: imgfs {args:?}: {}", self.who, show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `rel` in the mount, read by `who` (only they may enter a mount without
    /// `--allow-other`).
    fn read(&self, rel: &str) -> Vec<u8> {
        let out = self.command("cat", &[self.m.path(rel).to_str().unwrap()]).output().expect("cat");
        assert!(out.status.success(), "{:?}: cat {rel}: {}", self.who, show(&out));
        out.stdout
    }

    /// The lines of `imgfs mount` for this mountpoint.
    fn listed(&self) -> Vec<String> {
        let listing = self.ok(&["mount"]);
        listing.lines().filter(|l| l.split_whitespace().any(|f| f == self.m.arg())).map(String::from).collect()
    }

    /// Mount records in the store (the files: listing through imgfs could drop some).
    fn records(&self) -> usize {
        fs::read_dir(self.store.join("mounts"))
            .map_or(0, |d| d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json")).count())
    }

    /// A shell of `who`'s holding `rel` open in the mount.
    fn hold(&self, rel: &str) -> Holder {
        let script = r#"exec 3<"$1" || exit 1; echo ready; read _; cat <&3"#;
        let path = self.m.path(rel);
        let mut child = self
            .command("sh", &["-c", script, "sh", path.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let out = child.wait_with_output().unwrap();
            panic!("{:?}: sh could not open {}: {}", self.who, path.display(), show(&out));
        }
        Holder { child: Some(child) }
    }
}

/// A process with a file of a mount open (see `Setup::hold`).
struct Holder {
    child: Option<Child>,
}

impl Holder {
    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Let go: the shell reads the rest of the file from its descriptor and exits.
    /// Returns what it read.
    fn release(mut self) -> Vec<u8> {
        let mut child = self.child.take().unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the holder's read of its open file failed: {}", show(&out));
        out.stdout
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // A failed assert: don't leave the shell (and so a server) behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How the server of a detached mount ends, with its directory mounted again.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Its reader closes the file.
    ReaderCloses,
    /// It gets SIGTERM while its reader still holds the file.
    Signalled,
    /// Before it ends, `imgfs umount` of the directory unmounts the new mount, and waits
    /// for that mount's server, not for it.
    NewUnmountedFirst,
}

/// A server whose mount was detached while a reader held a file of it goes on serving
/// that reader; the directory is mounted again meanwhile, and `imgfs mount` lists both,
/// the old one as detached. However the old server ends (its reader closes the file, or
/// a signal), the new mount is still there and serving, its server alive and its record
/// kept; and `imgfs umount` of the directory unmounts the new mount and waits for its
/// server alone. The detach is the system's own (`umount -l`, `fusermount3 -uz`), so
/// this holds whoever detaches.
#[test]
fn a_remount_survives_the_exit_of_the_server_it_replaced() {
    let Some(_) = outcome::test_env() else { return };
    let image = format!("{}/lazy:1", env().addr);
    let want = reference_file("lazy:1", "top/c.txt");
    for who in [Who::Root, Who::User] {
        for ending in [Ending::ReaderCloses, Ending::Signalled, Ending::NewUnmountedFirst] {
            let what = format!("{who:?}, {ending:?}");
            let s = Setup::new(who);
            s.ok(&["mount", &image, s.m.arg()]);
            let old = s.m.server();
            let holder = s.hold("top/c.txt");
            let out = match who {
                Who::Root => s.command("umount", &["-l", s.m.arg()]).output(),
                Who::User => s.command("fusermount3", &["-uz", s.m.arg()]).output(),
            };
            let out = out.expect("umount -l / fusermount3 -uz");
            assert!(out.status.success(), "{what}: lazy detach: {}", show(&out));
            assert!(mountinfo(&s.m.dir).is_none(), "{what}: still mounted after the lazy detach");
            assert!(!pid_gone(old), "{what}: the old server exited while its reader holds a file");

            s.ok(&["mount", &image, s.m.arg()]);
            let new = *server_pids(&s.m.dir).iter().find(|p| **p != old).expect("the new server");
            let both = s.listed();
            match ending {
                Ending::ReaderCloses => {
                    assert_eq!(holder.release(), want, "{what}: the detached mount served wrong bytes");
                }
                Ending::Signalled => {
                    kill(old, libc::SIGTERM).unwrap();
                    drop(holder);
                }
                Ending::NewUnmountedFirst => {
                    let out = s.imgfs(&["umount", s.m.arg()]);
                    assert!(out.status.success() && out.stderr.is_empty(), "{what}: umount: {}", show(&out));
                    assert!(pid_gone(new), "{what}: umount returned before the new server {new} exited");
                    assert!(mountinfo(&s.m.dir).is_none(), "{what}: still mounted after umount");
                    assert!(!pid_gone(old), "{what}: umount of the new mount ended the old server");
                    assert_eq!(holder.release(), want, "{what}: the detached mount served wrong bytes");
                    assert!(wait_until(Duration::from_secs(10), || pid_gone(old)), "{what}: {old} did not exit");
                    assert_eq!(s.records(), 0, "{what}: records left");
                    continue;
                }
            }
            assert!(wait_until(Duration::from_secs(10), || pid_gone(old)), "{what}: old server {old} did not exit");

            assert!(mountinfo(&s.m.dir).is_some(), "{what}: the old server's exit took down the new mount");
            assert!(!pid_gone(new), "{what}: the new server {new} exited with the old one");
            assert_eq!(s.read("top/c.txt"), want, "{what}: the new mount does not serve");
            assert_eq!(s.records(), 1, "{what}: want the new server's record alone");
            let listed = s.listed();
            assert!(listed.len() == 1 && listed[0].ends_with(&new.to_string()), "{what}: {listed:?}");
            assert!(!listed[0].contains("detached"), "{what}: the new mount is listed as detached: {listed:?}");
            // While both ran, both were listed, the old one as detached.
            assert_eq!(both.len(), 2, "{what}: {both:?}");
            let detached: Vec<&String> = both.iter().filter(|l| l.contains("(detached)")).collect();
            assert!(detached.len() == 1 && detached[0].ends_with(&old.to_string()), "{what}: {both:?}");

            s.ok(&["umount", s.m.arg()]);
            assert!(wait_until(Duration::from_secs(10), || pid_gone(new)), "{what}: server {new} did not exit");
            assert!(mountinfo(&s.m.dir).is_none() && s.records() == 0, "{what}: umount left the mount or its record");
        }
    }
}

/// `imgfs umount` of a mount a process has a file open in fails, as umount(8) does: exit
/// 1, one line that says the mount is busy and names the process holding it, and the
/// mount untouched: still mounted, serving, its server and record there. Once the file
/// is closed the same command unmounts and the server exits.
#[test]
fn umount_of_a_busy_mount_fails_and_leaves_it_serving() {
    let Some(_) = outcome::test_env() else { return };
    let image = format!("{}/lazy:1", env().addr);
    for who in [Who::Root, Who::User] {
        let s = Setup::new(who);
        s.ok(&["mount", &image, s.m.arg()]);
        let pid = s.m.server();
        let holder = s.hold("top/c.txt");

        let out = s.imgfs(&["umount", s.m.arg()]);
        assert_eq!(out.status.code(), Some(1), "{who:?}: umount of a busy mount: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        assert_eq!(err.lines().count(), 1, "{who:?}: want a one-line error: {}", show(&out));
        assert!(err.starts_with("imgfs: error: ") && err.contains(" is busy"), "{who:?}: {err}");
        assert!(err.contains(s.m.arg()) && err.contains("--lazy"), "{who:?}: {err}");
        // The shell is the process that holds it (under runuser, a child of the pid we know).
        let named = match who {
            Who::Root => format!("pid {} (sh)", holder.pid()),
            Who::User => " (sh)".to_string(),
        };
        assert!(err.contains(&named), "{who:?}: the holder ({named}) is not named: {err}");

        assert!(mountinfo(&s.m.dir).is_some(), "{who:?}: the busy mount was unmounted");
        assert!(!pid_gone(pid), "{who:?}: the server exited");
        for rel in ["top/c.txt", "bottom/a.txt"] {
            assert_eq!(s.read(rel), reference_file("lazy:1", rel), "{who:?}: the mount stopped serving {rel}");
        }
        assert_eq!(s.records(), 1, "{who:?}: the record is gone");
        let listed = s.listed();
        assert!(listed.len() == 1 && !listed[0].contains("detached"), "{who:?}: {listed:?}");

        assert_eq!(holder.release(), reference_file("lazy:1", "top/c.txt"), "{who:?}");
        s.ok(&["umount", s.m.arg()]);
        assert!(mountinfo(&s.m.dir).is_none(), "{who:?}: still mounted after umount of the idle mount");
        assert!(wait_until(Duration::from_secs(10), || pid_gone(pid)), "{who:?}: server {pid} did not exit");
        assert_eq!(s.records(), 0, "{who:?}: the record was left");
    }
}

/// `imgfs umount --lazy` (and `-l`) of a busy mount detaches it at once: the directory
/// is empty again, the reader goes on reading, the mount is listed as detached (also in
/// `--format json`) and its image can't be removed; once the reader closes its file the
/// server exits, the record goes and `rm` removes the image.
#[test]
fn lazy_umount_detaches_and_keeps_the_record_until_the_last_reader_closes() {
    let Some(_) = outcome::test_env() else { return };
    let image = format!("{}/lazy:1", env().addr);
    let want = reference_file("lazy:1", "top/c.txt");
    for (who, flag) in [(Who::Root, "--lazy"), (Who::User, "-l")] {
        let s = Setup::new(who);
        s.ok(&["mount", &image, s.m.arg()]);
        let pid = s.m.server();
        let holder = s.hold("top/c.txt");

        s.ok(&["umount", flag, s.m.arg()]);
        assert!(mountinfo(&s.m.dir).is_none(), "{who:?}: {flag} left {} mounted", s.m.arg());
        assert!(fs::read_dir(&s.m.dir).unwrap().next().is_none(), "{who:?}: {} is not empty", s.m.arg());
        assert!(!pid_gone(pid), "{who:?}: the server exited while a file is open");
        let listed = s.listed();
        assert!(listed.len() == 1 && listed[0].contains("(detached)"), "{who:?}: {listed:?}");
        let json = s.ok(&["mount", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(v["Detached"], serde_json::json!(true), "{who:?}: {json}");
        assert_eq!(v["PID"], serde_json::json!(pid), "{who:?}: {json}");
        let out = s.imgfs(&["rm", &image]);
        assert_eq!(out.status.code(), Some(1), "{who:?}: rm of the image a detached mount serves: {}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{who:?}: {}", show(&out));
        // Nothing to unmount at the directory now; the error says what is still served.
        let out = s.imgfs(&["umount", s.m.arg()]);
        assert_eq!(out.status.code(), Some(1), "{who:?}: {}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not mounted"), "{who:?}: {}", show(&out));

        assert_eq!(holder.release(), want, "{who:?}: the reader of the detached mount got wrong bytes");
        assert!(wait_until(Duration::from_secs(10), || pid_gone(pid)), "{who:?}: server {pid} did not exit");
        assert_eq!(s.records(), 0, "{who:?}: the record outlived its server");
        assert!(s.listed().is_empty(), "{who:?}: still listed");
        s.ok(&["rm", &image]);
    }
}

/// A server that is alive but stopped (SIGSTOP here; a debugger or a stuck thread pool
/// alike) never answers the kernel. `imgfs umount` of its mount must still unmount it,
/// not hang on the statfs that asks whether the mount is dead (it waited for ever), and
/// say that the server is stopped and exits once continued, instead of waiting for it.
#[test]
fn umount_of_a_stopped_servers_mount_does_not_hang() {
    let Some(_) = outcome::test_env() else { return };
    let image = format!("{}/lazy:1", env().addr);
    let s = Setup::new(Who::Root);
    s.ok(&["mount", &image, s.m.arg()]);
    let pid = s.m.server();
    assert_eq!(s.read("top/c.txt"), reference_file("lazy:1", "top/c.txt"));

    /// Lets the server run again however the test ends, so it never stays behind stopped.
    struct Stopped(u32);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = kill(self.0, libc::SIGCONT);
        }
    }
    kill(pid, libc::SIGSTOP).unwrap();
    let stopped = Stopped(pid);

    let mut umount = s
        .command(env!("CARGO_BIN_EXE_imgfs"), &["--root", s.store.to_str().unwrap(), "umount", s.m.arg()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("imgfs umount");
    // Neither the unmount nor the look at the server takes long; 40 s is hanging.
    let ended = wait_until(Duration::from_secs(40), || umount.try_wait().unwrap().is_some());
    if !ended {
        let _ = umount.kill();
    }
    let out = umount.wait_with_output().unwrap();
    assert!(ended, "imgfs umount of a stopped server's mount hung: {}", show(&out));
    assert!(out.status.success(), "imgfs umount: {}", show(&out));
    assert!(mountinfo(&s.m.dir).is_none(), "still mounted after umount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("server {pid} is stopped")) && stderr.contains("kill -CONT"), "{stderr}");

    drop(stopped);
    assert!(wait_until(Duration::from_secs(10), || pid_gone(pid)), "server {pid} did not exit once running again");
    assert_eq!(s.records(), 0, "the record was left");
}
