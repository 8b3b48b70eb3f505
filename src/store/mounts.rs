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

use super::Store;
use crate::digest::Digest;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

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
            Ok(f.write_all(&bytes)?)
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
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
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
                if is_dead_imgfs_mount(&rec.mountpoint) {
                    if let Err(e) = detach(&rec.mountpoint) {
                        // Another command may have detached it at the same moment: only
                        // a mount that is still there is worth a word.
                        if is_dead_imgfs_mount(&rec.mountpoint) {
                            eprintln!("imgfs: dead mount of a killed server: {e:#}");
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
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let after = &stat[stat.rfind(')')? + 2..];
    // A killed server its parent has not reaped yet is a zombie: dead all the same.
    // But a killed thread-group leader shows as a zombie while its other threads are
    // still exiting, and the last of them closes /dev/fuse: until then the mount is not
    // dead yet (ENOTCONN), so the process counts as alive.
    if matches!(after.split(' ').next(), Some("Z" | "X")) && threads_left(pid) <= 1 {
        return None;
    }
    after.split(' ').nth(19)?.parse().ok()
}

/// How many threads of `pid` are still there (a zombie leader counts itself).
pub fn threads_left(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Is `dir` currently a FUSE mountpoint (per mountinfo)?
pub fn is_fuse_mountpoint(dir: &Path) -> bool {
    mount_at(&mountpoint_path(dir)).is_some_and(|m| m.is_fuse())
}

/// The topmost mount at a directory, from /proc/self/mountinfo.
#[derive(Debug)]
pub struct MountEntry {
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

/// The topmost mount whose mountpoint is `dir` (absolute, as `mountpoint_path` gives).
pub fn mount_at(dir: &Path) -> Option<MountEntry> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_str()?;
    // Mounts stacked on one directory are listed in mount order: the last is on top.
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        if unescape_mountinfo(fields.get(4)?) != want {
            return None;
        }
        let fstype = fields.get(sep + 1)?.to_string();
        let source = unescape_mountinfo(fields.get(sep + 2)?);
        Some(MountEntry { fstype, source })
    })
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
    mount_at(dir).is_some_and(|m| m.is_imgfs()) && statfs_errno(dir) == Some(libc::ENOTCONN)
}

/// statfs(2) of `dir`: None if it answers, else its errno.
pub fn statfs_errno(dir: &Path) -> Option<i32> {
    rustix::fs::statvfs(dir).err().map(|e| e.raw_os_error())
}

/// Unmount `dir`: a plain unmount first, then a lazy detach if something holds it
/// busy. As root that is umount2(2) directly; otherwise fusermount3 does it.
pub fn detach(dir: &Path) -> Result<()> {
    use anyhow::bail;
    use rustix::mount::{unmount, UnmountFlags};
    if rustix::process::geteuid().is_root() {
        if unmount(dir, UnmountFlags::empty()).is_ok() {
            return Ok(());
        }
        return unmount(dir, UnmountFlags::DETACH)
            .map_err(std::io::Error::from)
            .with_context(|| format!("cannot unmount {}", dir.display()));
    }
    let quiet = |flags: &str| {
        std::process::Command::new("fusermount3").arg(flags).arg(dir).stderr(std::process::Stdio::null()).status()
    };
    if matches!(quiet("-u"), Ok(s) if s.success()) {
        return Ok(());
    }
    let out =
        std::process::Command::new("fusermount3").arg("-uz").arg(dir).output().context("cannot run fusermount3")?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().replace('\n', " ");
        bail!("cannot unmount {}: fusermount3 failed: {why}", dir.display());
    }
    Ok(())
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
        let entry = |fstype: &str, source: &str| MountEntry { fstype: fstype.into(), source: source.into() };
        assert!(entry("fuse", "imgfs:alpine").is_imgfs());
        assert!(entry("fuse.imgfs", "imgfs:127.0.0.1:5000/app:1").is_imgfs());
        assert!(!entry("fuse.sshfs", "imgfs:x").is_imgfs());
        assert!(!entry("fuse.sshfs", "me@host:/srv").is_imgfs());
        assert!(!entry("fuse", "/srv/data").is_imgfs());
        assert!(!entry("tmpfs", "imgfs:x").is_imgfs());
        assert!(entry("fuse.sshfs", "me@host:/srv").is_fuse() && !entry("tmpfs", "tmpfs").is_fuse());
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
