//! Records of running mount servers, one JSON file per server under `mounts/`, and
//! the kernel's mount table as far as imgfs mounts go.
//!
//! Records let `rm` and `prune` leave mounted images alone and let `imgfs mount` list
//! what is mounted. A record names its server by pid *and* the process start time,
//! so a server killed with SIGKILL (which cannot clean up) is recognised as dead even
//! if its pid has been reused; dead records are removed by whoever notices, and so is
//! the dead mountpoint such a server leaves (every access fails with ENOTCONN until it
//! is detached).
//!
//! A mount is imgfs's when the mount table says so (a FUSE mount whose source is
//! `imgfs:REF`): `imgfs umount` and the dead-mount cleanup never touch another
//! filesystem, an sshfs mount included.
//!
//! A server's mount is named by its device (`MAJOR:MINOR`, one per FUSE connection),
//! never by its path alone: a mount detached lazily goes on serving the files open in
//! it while the directory is mounted again, so two records may name one path, and
//! whatever unmounts checks it has the mount it means (`unmount_device`).

use super::{io, Error, Result, Store};
use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MountRecord {
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (/proc/PID/stat field 22).
    pub start_ticks: u64,
    pub mountpoint: PathBuf,
    pub image: Digest,
    /// What the user asked to mount, for display.
    pub reference: String,
    /// Held by an `imgfs mount` whose server is not up yet: the image is in use (rm
    /// and prune leave it), but there is no mount to list or unmount.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starting: bool,
    /// The device of the server's mount (`MAJOR:MINOR`, as mountinfo shows it), written
    /// once the mount is up: what tells this mount from a later one at the same path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl MountRecord {
    /// Is this the record of the server of `entry`? By device; a record that has none
    /// (its server is just starting, or is an older imgfs's) by its path.
    pub fn serves(&self, entry: &MountEntry) -> bool {
        match &self.device {
            Some(d) => *d == entry.device,
            None => self.mountpoint == entry.mountpoint,
        }
    }

    /// Has the server's mount been detached (lazily unmounted: no longer in the mount
    /// `table`, but served while files opened in it stay open)?
    pub fn is_detached(&self, table: &[MountEntry]) -> bool {
        self.device.as_ref().is_some_and(|d| !table.iter().any(|m| m.device == *d))
    }
}

impl Store {
    fn mount_record_path(&self, pid: u32) -> PathBuf {
        self.root().join("mounts").join(format!("{pid}.json"))
    }

    pub fn add_mount_record(&self, rec: &MountRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(rec)?;
        let dest = self.mount_record_path(rec.pid);
        self.write_derived(&dest, |f| {
            use std::io::Write;
            f.write_all(&bytes).map_err(Error::from)
        })
    }

    pub fn remove_mount_record(&self, pid: u32) {
        let _ = fs::remove_file(self.mount_record_path(pid));
    }

    /// Records of servers that are still running. Records of dead servers are
    /// removed on the way and returned in the second list.
    pub fn mounts(&self) -> Result<(Vec<MountRecord>, Vec<MountRecord>)> {
        let dir = self.root().join("mounts");
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io(format!("cannot list {}", dir.display())))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(bytes) = fs::read(&path) else { continue };
            let Ok(rec) = serde_json::from_slice::<MountRecord>(&bytes) else {
                let _ = fs::remove_file(&path);
                continue;
            };
            if process_start_ticks(rec.pid) == Some(rec.start_ticks) {
                live.push(rec);
            } else {
                // Only the dead server's own mount: the directory may hold a later one.
                if is_dead_imgfs_mount(&rec.mountpoint) && mount_at(&rec.mountpoint).is_some_and(|m| rec.serves(&m)) {
                    if let Err(e) = detach(&rec.mountpoint) {
                        // Another command may have detached it at the same moment: only
                        // a mount that is still there is worth a word.
                        if is_dead_imgfs_mount(&rec.mountpoint) {
                            tracing::warn!("dead mount of a killed server: {}", crate::log::Chain(&e));
                        }
                    }
                }
                let _ = fs::remove_file(&path);
                dead.push(rec);
            }
        }
        live.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        Ok((live, dead))
    }

    /// Live mounts that use image `id`.
    pub fn mounts_of(&self, id: &Digest) -> Result<Vec<MountRecord>> {
        Ok(self.mounts()?.0.into_iter().filter(|m| &m.image == id).collect())
    }
}

/// Field 22 of /proc/PID/stat, or None if there is no such (living) process.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let after = stat_after_comm(pid)?;
    // A killed server its parent has not reaped yet is a zombie: dead all the same.
    // But a killed thread-group leader shows as a zombie while its other threads are
    // still exiting, and the last of them closes /dev/fuse: until then the mount is not
    // dead yet (ENOTCONN), so the process counts as alive.
    if matches!(after.split(' ').next(), Some("Z" | "X")) && threads_left(pid) <= 1 {
        return None;
    }
    after.split(' ').nth(19)?.parse().ok()
}

/// Is `pid` stopped (SIGSTOP, or held by a tracer)? It sees nothing, its session's end
/// included, until it runs again.
pub fn process_is_stopped(pid: u32) -> bool {
    stat_after_comm(pid).is_some_and(|f| matches!(f.split(' ').next(), Some("T" | "t")))
}

/// The fields of /proc/PID/stat from the third (the state) on.
fn stat_after_comm(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    Some(stat.get(stat.rfind(')')? + 2..)?.to_string())
}

/// How many threads of `pid` are still there (a zombie leader counts itself).
pub fn threads_left(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Is `dir` currently a FUSE mountpoint (per mountinfo)?
pub fn is_fuse_mountpoint(dir: &Path) -> bool {
    mount_at(&mountpoint_path(dir)).is_some_and(|m| m.is_fuse())
}

/// One mount of /proc/self/mountinfo.
#[derive(Debug)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    /// `MAJOR:MINOR` of the mounted filesystem; a FUSE mount has one per connection.
    pub device: String,
    pub fstype: String,
    /// The source column (FUSE: the fsname; imgfs's is `imgfs:REF`).
    pub source: String,
}

impl MountEntry {
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype == "fuseblk" || self.fstype.starts_with("fuse.")
    }

    /// Mounted by imgfs: as root its type is plain `fuse`, through fusermount3
    /// `fuse.imgfs`; the source is the fsname imgfs gives.
    pub fn is_imgfs(&self) -> bool {
        (self.fstype == "fuse" || self.fstype == "fuse.imgfs") && self.source.starts_with("imgfs:")
    }
}

/// Every mount of this process's mount namespace, in mount order: of mounts stacked
/// on one directory, the last is on top.
pub fn mount_table() -> Vec<MountEntry> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape_mountinfo(fields.get(4)?)),
                device: fields.get(2)?.to_string(),
                fstype: fields.get(sep + 1)?.to_string(),
                source: unescape_mountinfo(fields.get(sep + 2)?),
            })
        })
        .collect()
}

/// The topmost mount whose mountpoint is `dir` (absolute, as `mountpoint_path` gives).
pub fn mount_at(dir: &Path) -> Option<MountEntry> {
    mount_table().into_iter().rev().find(|m| m.mountpoint == dir)
}

/// `dir` as the mount table names it: absolute, with symlinks resolved. A dead mount
/// can't be resolved itself (stat fails with ENOTCONN), so then its parent is.
pub fn mountpoint_path(dir: &Path) -> PathBuf {
    if let Ok(c) = dir.canonicalize() {
        return c;
    }
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match (abs.parent().and_then(|p| p.canonicalize().ok()), abs.file_name()) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => abs,
    }
}

/// Is `dir` an imgfs mount whose server is gone (the kernel answers ENOTCONN)?
pub fn is_dead_imgfs_mount(dir: &Path) -> bool {
    mount_at(dir).is_some_and(|m| m.is_imgfs()) && statfs_of(dir) == Statfs::Failed(libc::ENOTCONN)
}

/// What statfs(2) of a directory said.
#[derive(Debug, PartialEq)]
pub enum Statfs {
    Answered,
    Failed(i32),
    /// Nothing within `STATFS_LIMIT`: a FUSE server that is alive but stopped (SIGSTOP,
    /// a debugger) or stuck never answers, and the kernel waits for it.
    NoAnswer,
}

/// How long `statfs_of` waits. A live server answers statfs at once (it reads no layer).
const STATFS_LIMIT: Duration = Duration::from_secs(1);

/// statfs(2) of `dir`, on a thread of its own so that the caller is not stuck with it:
/// asking whether a mount is dead must not hang on one whose server is stopped (`imgfs
/// umount` of such a mount waited for ever). A thread left waiting ends with the process.
pub fn statfs_of(dir: &Path) -> Statfs {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    let asked = std::thread::Builder::new().name("statfs".into()).spawn(move || {
        let _ = tx.send(rustix::fs::statvfs(&dir).err().map(|e| e.raw_os_error()));
    });
    if asked.is_err() {
        return Statfs::NoAnswer;
    }
    match rx.recv_timeout(STATFS_LIMIT) {
        Ok(None) => Statfs::Answered,
        Ok(Some(errno)) => Statfs::Failed(errno),
        Err(_) => Statfs::NoAnswer,
    }
}

/// Unmount `dir`: a plain unmount first, then a lazy detach if something holds it
/// busy. As root that is umount2(2) directly; otherwise fusermount3 does it. For a dead
/// mount only (whatever is at `dir`, checked by the caller): a live one is unmounted
/// by its device, with `unmount_device`.
pub fn detach(dir: &Path) -> Result<()> {
    use rustix::mount::{unmount, UnmountFlags};
    if rustix::process::geteuid().is_root() {
        if unmount(dir, UnmountFlags::empty()).is_ok() {
            return Ok(());
        }
        return unmount(dir, UnmountFlags::DETACH)
            .map_err(std::io::Error::from)
            .map_err(io(format!("cannot unmount {}", dir.display())));
    }
    let quiet = |flags: &str| {
        std::process::Command::new("fusermount3").arg(flags).arg(dir).stderr(std::process::Stdio::null()).status()
    };
    if matches!(quiet("-u"), Ok(s) if s.success()) {
        return Ok(());
    }
    let out =
        std::process::Command::new("fusermount3").arg("-uz").arg(dir).output().map_err(io("cannot run fusermount3"))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().replace('\n', " ");
        return Err(Error::Fusermount { dir: dir.to_path_buf(), why });
    }
    Ok(())
}

/// What `unmount_device` did.
#[derive(Debug, PartialEq)]
pub enum Unmounted {
    Done,
    /// `dir` does not hold the mount of that device (any more): nothing was touched.
    NotThere,
    /// A plain unmount found the mount in use (EBUSY): nothing was touched.
    Busy,
}

/// Unmount the mount of `device` at `dir`, never another mounted there since. Plain:
/// refused as busy while a process has a file or its working directory in it (as
/// umount(8) is); `lazy`: detached at once (MNT_DETACH), the filesystem serving what is
/// open in it until the last of it is closed. As root through umount2(2), otherwise
/// through fusermount3.
pub fn unmount_device(dir: &Path, device: &str, lazy: bool) -> Result<Unmounted> {
    use rustix::mount::{unmount, UnmountFlags};
    let what = || format!("cannot unmount {}", dir.display());
    if lazy && rustix::process::geteuid().is_root() {
        // A descriptor pins the very mount it was opened on, and umount2 of its
        // /proc/self/fd link detaches that one, whatever is mounted at `dir` meanwhile.
        // (It keeps the mount busy, so a plain unmount can't go this way.)
        use rustix::fs::{open, Mode, OFlags};
        let fd = open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(std::io::Error::from)
            .map_err(io(what()))?;
        if device_of(&fd, "").as_deref() != Some(device) {
            return Ok(Unmounted::NotThere);
        }
        use std::os::fd::AsRawFd;
        unmount(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(), UnmountFlags::DETACH)
            .map_err(std::io::Error::from)
            .map_err(io(what()))?;
        return Ok(Unmounted::Done);
    }
    // By path, right after the check: only a mount made at `dir` in between would be
    // mistaken for it.
    if device_of(rustix::fs::CWD, dir).as_deref() != Some(device) {
        return Ok(Unmounted::NotThere);
    }
    if !rustix::process::geteuid().is_root() {
        return fusermount3_unmount(dir, if lazy { "-uz" } else { "-u" });
    }
    match unmount(dir, UnmountFlags::empty()) {
        Ok(()) => Ok(Unmounted::Done),
        Err(rustix::io::Errno::BUSY) => Ok(Unmounted::Busy),
        Err(e) => Err(io(what())(e.into())),
    }
}

/// `fusermount3 FLAGS dir`: its failure as an error with its message, but EBUSY as
/// `Busy` (its message is strerror's, read in the C locale).
fn fusermount3_unmount(dir: &Path, flags: &str) -> Result<Unmounted> {
    let out = std::process::Command::new("fusermount3")
        .arg(flags)
        .arg(dir)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io("cannot run fusermount3"))?;
    if out.status.success() {
        return Ok(Unmounted::Done);
    }
    let why = String::from_utf8_lossy(&out.stderr).trim().replace('\n', " ");
    if why.contains("Device or resource busy") {
        return Ok(Unmounted::Busy);
    }
    Err(Error::Fusermount { dir: dir.to_path_buf(), why })
}

/// The device (`MAJOR:MINOR`) of `path` under `dirfd` (`""`: `dirfd` itself). Asks the
/// kernel for no attribute, so a FUSE filesystem gets no request: its server may be
/// this very process, or stuck, and a mount without `allow_other` answers the device
/// to anyone.
pub fn device_of<Fd: std::os::fd::AsFd, P: rustix::path::Arg>(dirfd: Fd, path: P) -> Option<String> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    let empty = if path.as_str().is_ok_and(str::is_empty) { AtFlags::EMPTY_PATH } else { AtFlags::empty() };
    let st = statx(dirfd, path, empty | AtFlags::STATX_DONT_SYNC, StatxFlags::empty()).ok()?;
    Some(format!("{}:{}", st.stx_dev_major, st.stx_dev_minor))
}

/// Processes that have a file, their working directory or their root in the filesystem
/// of `device`, as far as /proc shows this user: pid and command name. What makes an
/// unmount busy, for the error that says so (the kernel only says EBUSY).
pub fn holders(device: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(procs) = fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let dir = p.path();
        let fds = fs::read_dir(dir.join("fd")).into_iter().flatten().flatten().map(|e| e.path());
        let mut links = [dir.join("cwd"), dir.join("root")].into_iter().chain(fds);
        // statx follows the /proc link to the open file itself.
        if links.any(|l| device_of(rustix::fs::CWD, &l).as_deref() == Some(device)) {
            let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_string();
            found.push((pid, comm));
        }
    }
    found.sort();
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(o)) => {
                out.push(o.iter().fold(0u8, |acc, c| acc.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_a_start_time_and_a_dead_pid_has_none() {
        assert!(process_start_ticks(std::process::id()).is_some());
        assert!(process_start_ticks(u32::MAX - 1).is_none());
    }

    #[test]
    fn only_fuse_mounts_named_imgfs_are_imgfs_mounts() {
        let entry = |fstype: &str, source: &str| MountEntry {
            mountpoint: PathBuf::from("/mnt"),
            device: "0:99".into(),
            fstype: fstype.into(),
            source: source.into(),
        };
        assert!(entry("fuse", "imgfs:alpine").is_imgfs());
        assert!(entry("fuse.imgfs", "imgfs:127.0.0.1:5000/app:1").is_imgfs());
        assert!(!entry("fuse.sshfs", "imgfs:x").is_imgfs());
        assert!(!entry("fuse.sshfs", "me@host:/srv").is_imgfs());
        assert!(!entry("fuse", "/srv/data").is_imgfs());
        assert!(!entry("tmpfs", "imgfs:x").is_imgfs());
        assert!(entry("fuse.sshfs", "me@host:/srv").is_fuse() && !entry("tmpfs", "tmpfs").is_fuse());
    }

    #[test]
    fn a_record_names_its_mount_by_device_and_by_path_only_without_one() {
        let entry = |dir: &str, device: &str| MountEntry {
            mountpoint: PathBuf::from(dir),
            device: device.into(),
            fstype: "fuse".into(),
            source: "imgfs:x".into(),
        };
        let record = |device: Option<&str>| MountRecord {
            pid: 1,
            start_ticks: 1,
            mountpoint: PathBuf::from("/m"),
            image: Digest::of(b"x"),
            reference: "x".into(),
            starting: false,
            device: device.map(String::from),
        };
        // The directory mounted again: the new mount has another device.
        let table = [entry("/m", "0:51")];
        let (old, new, older_imgfs) = (record(Some("0:50")), record(Some("0:51")), record(None));
        assert!(!old.serves(&table[0]) && old.is_detached(&table));
        assert!(new.serves(&table[0]) && !new.is_detached(&table));
        assert!(older_imgfs.serves(&table[0]) && !older_imgfs.is_detached(&table));
        assert!(!older_imgfs.serves(&entry("/elsewhere", "0:51")));
    }

    #[test]
    fn a_path_that_cannot_be_resolved_is_made_absolute_through_its_parent() {
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(mountpoint_path(Path::new("no-such-dir-here")), cwd.join("no-such-dir-here"));
        assert_eq!(mountpoint_path(Path::new("/")), PathBuf::from("/"));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
