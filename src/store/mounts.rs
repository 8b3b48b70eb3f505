//! Records of running mount servers, one JSON file per server under `mounts/`.
//!
//! They let `rm` and `prune` leave mounted images alone and let `imgfs mount` list
//! what is mounted. A record names its server by pid *and* the process start time,
//! so a server killed with SIGKILL (which cannot clean up) is recognised as dead even
//! if its pid has been reused; dead records are removed by whoever notices.

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
    if matches!(after.split(' ').next(), Some("Z" | "X")) {
        return None;
    }
    after.split(' ').nth(19)?.parse().ok()
}

/// Is `dir` currently a mountpoint of an imgfs FUSE filesystem (per mountinfo)?
pub fn is_fuse_mountpoint(dir: &Path) -> bool {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else { return false };
        let mp = fields.get(4).map(|m| unescape_mountinfo(m));
        let fstype = fields.get(sep + 1).copied().unwrap_or("");
        mp.as_deref() == Some(canon.as_os_str().to_str().unwrap_or("")) && fstype.starts_with("fuse")
    })
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
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
