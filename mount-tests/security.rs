//! Who may reach a mount, and what imgfs's mount commands may touch.
//!
//! - A mount is private to the user who made it unless `--allow-other`; it is read-only,
//!   nodev, nosuid, and with `default_permissions` the kernel checks the image's own
//!   modes and owners, so with `--allow-other` a 0600 root file stays closed to others.
//!   Another user is played by `nobody` through setpriv (real uid and gid, no groups).
//! - `imgfs umount` and the dead-mount cleanup touch imgfs mounts only: another FUSE
//!   filesystem (bindfs, from Debian) at the directory is refused, alive or dead.
//! - A non-root user goes the whole way through fusermount3: pull, mount, read, signal,
//!   unmount.

use super::*;
use std::os::unix::fs::FileTypeExt;
use std::process::{Child, Stdio};

/// Run `args` as nobody:nogroup with no supplementary groups.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(args)
        .output()
        .expect("setpriv")
}

/// The super options (after the source) of the mount at `dir`: `user_id=`,
/// `default_permissions`, `allow_other`.
fn super_options(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info.lines().rev().find(|l| l.split(' ').nth(4) == dir.to_str()).expect("in mountinfo");
    let f: Vec<&str> = line.split(' ').collect();
    let sep = f.iter().position(|x| *x == "-").unwrap();
    f[sep + 3].split(',').map(String::from).collect()
}

/// A mountpoint that other users can reach (a temp dir is 0700), so that what stops
/// them is the mount and nothing on the way.
fn reachable_mount(root: &Path, image: &str, extra: &[&str]) -> Mount {
    let m = Mount::empty();
    fs::set_permissions(&m.dir, fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = vec!["mount"];
    args.extend_from_slice(extra);
    args.extend([image, m.arg()]);
    imgfs_ok(root, &args);
    m
}

/// Without --allow-other nobody else gets in, not even to files the image gives to
/// everyone; with it, the kernel checks the image's modes: a 0644 file is readable, a
/// 0600 root file is not. Either way the mount is ro, nosuid, nodev (a device node in the
/// image does not open the host's device) with default_permissions.
#[test]
fn a_mount_is_private_to_its_user_unless_allow_other() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/base:1", env().addr);
    let (hostname, secret) = (reference_file("base:1", "etc/hostname"), reference_file("base:1", "etc/secret"));

    let private = reachable_mount(store.root(), &image, &[]);
    let opts = super_options(&private.dir);
    assert!(opts.contains(&"default_permissions".into()) && !opts.contains(&"allow_other".into()), "{opts:?}");
    let mount_opts = mountinfo(&private.dir).unwrap().options;
    for o in ["ro", "nosuid", "nodev"] {
        assert!(mount_opts.split(',').any(|x| x == o), "mount options {mount_opts:?} lack {o}");
    }
    assert_eq!(fs::read(private.path("etc/hostname")).unwrap(), hostname, "the owner reads");
    // The directory holding the mountpoint is open to nobody; the mount is not.
    let out = as_nobody(&["stat", "-c", "%a", private.dir.parent().unwrap().to_str().unwrap()]);
    assert!(out.status.success(), "nobody cannot even reach the mountpoint's parent: {}", show(&out));
    for args in [vec!["cat", private.path("etc/hostname").to_str().unwrap()], vec!["ls", private.arg()]] {
        let out = as_nobody(&args);
        assert!(!out.status.success(), "nobody ran {args:?} on a private mount: {}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{args:?}: {}", show(&out));
    }

    let shared = reachable_mount(store.root(), &image, &["--allow-other"]);
    let opts = super_options(&shared.dir);
    assert!(opts.contains(&"default_permissions".into()) && opts.contains(&"allow_other".into()), "{opts:?}");
    let out = as_nobody(&["cat", shared.path("etc/hostname").to_str().unwrap()]);
    assert!(out.status.success(), "nobody reads a 0644 file with --allow-other: {}", show(&out));
    assert_eq!(out.stdout, hostname);
    let md = fs::metadata(shared.path("etc/secret")).unwrap();
    assert_eq!((md.mode() & 0o777, md.uid()), (0o600, 0), "etc/secret should be root's 0600 file");
    let out = as_nobody(&["cat", shared.path("etc/secret").to_str().unwrap()]);
    assert!(!out.status.success(), "nobody read the 0600 root file: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{}", show(&out));
    assert_eq!(fs::read(shared.path("etc/secret")).unwrap(), secret, "root reads its 0600 file");
    let out = as_nobody(&["touch", shared.path("tmp/x").to_str().unwrap()]);
    assert!(!out.status.success(), "nobody wrote into the mount: {}", show(&out));

    // nodev: the image's /special/null (char 1,3) must not open the host's /dev/null.
    let edge = mount(store.root(), &format!("{}/edge:1", env().addr), &[]);
    let null = edge.path("special/null");
    assert!(fs::symlink_metadata(&null).unwrap().file_type().is_char_device());
    assert_eq!(errno_of("open of a device node", fs::File::open(&null)), libc::EACCES);
}

/// bindfs in the foreground, as a FUSE filesystem that is not imgfs's; killed and
/// detached on drop.
struct Bindfs {
    child: Child,
    m: Mount,
    _src: TempDir,
}

impl Bindfs {
    fn start() -> Bindfs {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("file"), "bindfs data\n").unwrap();
        let m = Mount::empty();
        let child = Command::new("bindfs")
            .arg("-f")
            .arg(src.path())
            .arg(&m.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bindfs (Debian package bindfs)");
        assert!(wait_until(Duration::from_secs(10), || mountinfo(&m.dir).is_some()), "bindfs did not mount");
        Bindfs { child, m, _src: src }
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The Mount guard (dropped next) detaches the mountpoint.
    }
}

/// `imgfs umount` refuses a FUSE mount that is not imgfs's, with one line naming it,
/// and leaves it serving; `imgfs mount` won't stack on it; once its server is killed,
/// neither `imgfs mount` nor the dead-mount cleanup of other commands detach it.
#[test]
fn umount_and_mount_leave_other_fuse_mounts_alone() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let mut b = Bindfs::start();
    let info = mountinfo(&b.m.dir).unwrap();
    assert!(info.fstype.starts_with("fuse") && !info.source.starts_with("imgfs:"), "{info:?}");

    let err = imgfs_fails(store.root(), &["umount", b.m.arg()]);
    assert!(err.contains(b.m.arg()) && err.contains("not an imgfs mount"), "{err}");
    assert_eq!(fs::read_to_string(b.m.path("file")).unwrap(), "bindfs data\n", "bindfs stopped serving");
    let image = format!("{}/lazy:1", env().addr);
    let err = imgfs_fails(store.root(), &["mount", &image, b.m.arg()]);
    assert!(err.contains(b.m.arg()) && err.contains("FUSE"), "{err}");
    assert_eq!(fs::read_to_string(b.m.path("file")).unwrap(), "bindfs data\n");

    b.child.kill().unwrap();
    b.child.wait().unwrap();
    assert_eq!(errno_of("stat of dead bindfs", fs::metadata(b.m.path("file"))), libc::ENOTCONN);
    let err = imgfs_fails(store.root(), &["mount", &image, b.m.arg()]);
    assert!(err.contains(b.m.arg()) && err.contains("not imgfs"), "{err}");
    let err = imgfs_fails(store.root(), &["umount", b.m.arg()]);
    assert!(err.contains("not an imgfs mount"), "{err}");
    imgfs_ok(store.root(), &["ls"]);
    assert!(mountinfo(&b.m.dir).is_some_and(|i| i.source == info.source), "the dead bindfs mount was detached");
}

/// A non-root user, with a store of its own, pulls an image, mounts it through
/// fusermount3 (type fuse.imgfs, user_id = the user), reads it, stops a second mount's
/// server with SIGTERM (unmounted through fusermount3, record gone), has a third one's
/// dead mount (SIGKILL) cleared by its next command, and unmounts the first with
/// `imgfs umount`. `--allow-other` without `user_allow_other` in
/// /etc/fuse.conf fails with one line that says so, and leaves nothing behind.
#[test]
fn non_root_user_pulls_mounts_reads_and_umounts() {
    let Some(_) = outcome::test_env() else { return };
    let uid = test_user();
    ensure_dev_fuse_is_world_usable();
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = tmp.path().join("store");
    let (dir1, dir2, dir3) = (tmp.path().join("m1"), tmp.path().join("m2"), tmp.path().join("m3"));
    for d in [tmp.path(), &store, &dir1, &dir2, &dir3] {
        fs::create_dir_all(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
    }
    let base = tmp.path().canonicalize().unwrap();
    // Guards for each mountpoint; the last one owns (and finally removes) the temp dir.
    let m1 = Mount::at(base.join("m1"), tempfile::tempdir().unwrap());
    let m2 = Mount::at(base.join("m2"), tempfile::tempdir().unwrap());
    let m3 = Mount::at(base.join("m3"), tmp);
    let as_user = |args: &[&str]| -> Output {
        Command::new("runuser").args(["-u", TEST_USER, "--"]).args(args).output().expect("runuser")
    };
    let bin = env!("CARGO_BIN_EXE_imgfs");
    let root = store.to_str().unwrap();
    let image = format!("{}/app:1", env().addr);
    let ok = |args: &[&str]| -> String {
        let mut full = vec![bin, "--root", root];
        full.extend_from_slice(args);
        let out = as_user(&full);
        assert!(out.status.success(), "{TEST_USER}: imgfs {args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    ok(&["pull", &image]);
    ok(&["mount", &image, m1.arg()]);
    let info = mountinfo(&m1.dir).expect("mounted");
    assert_eq!(info.fstype, "fuse.imgfs", "{info:?}");
    assert!(info.source.starts_with("imgfs:"), "{info:?}");
    assert!(super_options(&m1.dir).contains(&format!("user_id={uid}")), "{:?}", super_options(&m1.dir));
    let pid1 = m1.server();
    assert_eq!(fs::metadata(format!("/proc/{pid1}")).unwrap().uid(), uid, "the server runs as {TEST_USER}");
    for rel in ["etc/hostname", "etc/issue", "usr/bin/true"] {
        let out = as_user(&["cat", m1.path(rel).to_str().unwrap()]);
        assert!(out.status.success(), "{TEST_USER} reads {rel}: {}", show(&out));
        assert!(out.stdout == reference_file("app:1", rel), "{rel} differs from the reference");
    }

    ok(&["mount", &image, m2.arg()]);
    let pid2 = m2.server();
    kill(pid2, libc::SIGTERM).unwrap();
    assert!(wait_until(Duration::from_secs(10), || pid_gone(pid2)), "SIGTERM did not end server {pid2}");
    assert!(mountinfo(&m2.dir).is_none(), "SIGTERM left {} mounted", m2.arg());
    assert!(!store.join(format!("mounts/{pid2}.json")).exists(), "SIGTERM left the record");

    // A killed server of the user's: the user's next command detaches the dead mount
    // (through fusermount3) and drops its record.
    ok(&["mount", &image, m2.arg()]);
    let pid2 = m2.server();
    kill(pid2, libc::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(10), || pid_gone(pid2)));
    ok(&["ls"]);
    assert!(mountinfo(&m2.dir).is_none(), "the user's dead mount at {} is still there", m2.arg());
    assert!(!store.join(format!("mounts/{pid2}.json")).exists(), "the dead server's record is still there");

    let fuse_conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    if !fuse_conf.lines().any(|l| l.trim() == "user_allow_other") {
        let out = as_user(&[bin, "--root", root, "mount", "--allow-other", &image, m3.arg()]);
        assert!(!out.status.success(), "--allow-other without user_allow_other: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        assert_eq!(err.lines().count(), 1, "want a one-line error: {}", show(&out));
        assert!(err.contains("user_allow_other"), "{err}");
        assert!(mountinfo(&m3.dir).is_none() && server_pids(&m3.dir).is_empty());
    }

    let listing = ok(&["mount"]);
    assert!(listing.contains(m1.arg()) && !listing.contains(m2.arg()), "{listing}");
    ok(&["umount", m1.arg()]);
    assert!(mountinfo(&m1.dir).is_none(), "still mounted after the user's umount");
    assert!(wait_until(Duration::from_secs(10), || pid_gone(pid1)), "server {pid1} did not exit");
    let records = fs::read_dir(store.join("mounts")).unwrap().count();
    assert_eq!(records, 0, "mount records left in the user's store");
}

/// A non-root user who may not open /dev/fuse (a host or container that leaves it
/// 0600) goes through fusermount3 as libfuse does; Debian's fusermount3 opens the
/// device as the user too, so it fails the same way, and `imgfs mount` says so in one
/// line that names /dev/fuse and the fix; without fusermount3 the line says to install
/// fuse3. The 0600 device is a node of our own bind-mounted over /dev/fuse in a private
/// mount namespace (`unshare -m`), so the machine's /dev/fuse, and every other test,
/// are untouched; whatever is mounted in there goes with the namespace.
#[test]
fn non_root_mount_without_access_to_dev_fuse_fails_with_one_line_naming_the_fix() {
    let Some(_) = outcome::test_env() else { return };
    let uid = test_user();
    let tmp = tempfile::tempdir().expect("temp dir");
    let (store, dir) = (tmp.path().join("store"), tmp.path().join("m"));
    for d in [&store, &dir] {
        fs::create_dir_all(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
    }
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let closed = tmp.path().join("fuse-0600");
    let guard = Mount::at(dir.clone(), tmp);
    let image = format!("{}/app:1", env().addr);
    let try_mount = |path: &str| -> Output {
        let script = r#"set -e
            rm -f "$1"; mknod -m 0600 "$1" c 10 229; mount --bind "$1" /dev/fuse
            shift; exec runuser -u "$@""#;
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(&closed)
            .args([TEST_USER, "--", "env", &format!("PATH={path}"), env!("CARGO_BIN_EXE_imgfs"), "--root"])
            .arg(&store)
            .args(["mount", &image])
            .arg(&dir)
            .output()
            .expect("unshare")
    };
    let one_line = |out: &Output| -> String {
        assert_eq!(out.status.code(), Some(1), "{}", show(out));
        let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        assert_eq!(err.lines().count(), 1, "want a one-line error: {}", show(out));
        assert!(err.starts_with("imgfs: error: ") && err.contains("/dev/fuse (mode 0600"), "{err}");
        assert!(err.contains("chmod 0666 /dev/fuse"), "the fix is not named: {err}");
        err
    };
    let err = one_line(&try_mount("/usr/sbin:/usr/bin:/sbin:/bin"));
    assert!(err.contains("fusermount3 failed ("), "fusermount3 was not tried: {err}");
    let err = one_line(&try_mount("/nonexistent"));
    assert!(err.contains("install fuse3"), "{err}");
    // Nothing left: no server, no mount record, and the real /dev/fuse as it was.
    assert!(server_pids(&guard.dir).is_empty(), "a server is still running for {}", guard.arg());
    assert_eq!(fs::read_dir(store.join("mounts")).map(|d| d.count()).unwrap_or(0), 0, "mount records left");
    assert!(mountinfo(&guard.dir).is_none());
    let real = fs::metadata("/dev/fuse").unwrap();
    assert!(real.file_type().is_char_device(), "/dev/fuse changed outside the namespace");
}

pub(crate) const TEST_USER: &str = "imgfs-test";

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
pub(crate) fn test_user() -> u32 {
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
pub(crate) fn ensure_dev_fuse_is_world_usable() {
    let md = fs::metadata("/dev/fuse").expect("/dev/fuse");
    if md.permissions().mode() & 0o666 != 0o666 {
        eprintln!(
            "note: /dev/fuse was {:o}; setting 0666 as udev does on a normal host",
            md.permissions().mode() & 0o777
        );
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).expect("chmod /dev/fuse");
    }
}
