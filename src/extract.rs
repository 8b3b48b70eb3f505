//! A subtree of an image copied to the host, as `tar -x --same-owner --xattrs` would
//! extract it from `export`'s stream: modes (setuid, setgid, sticky included), mtimes,
//! symbolic links as links, hard links as links within what is copied, fifos, and as
//! root also owners, device nodes and every xattr. Without root, owners are the
//! caller's, device nodes are skipped with a warning, and only `user.` xattrs are set,
//! as tar does (its warnings become `imgfs: warning:` lines).
//!
//! Everything is made below a destination that must not exist yet: the caller makes
//! it under a temporary name and renames it into place when the copy is complete.
//! Directories get their own mode, owner and time last, deepest first, so that a
//! read-only directory can still be filled and a directory's mtime is not moved by
//! what is made in it. A caller that moves what was made into another directory
//! entry by entry (`cp`'s merge) has them set only after the move ([`Dirs`]): Linux
//! lets a directory move to another parent only when it is writable.

use crate::fs::Fs;
use crate::layer::{show, Kind};
use crate::tree::NodeInfo;
use crate::walk::{self, FileReader, Resolved};
use rustix::fs::{AtFlags, Gid, Mode, Timespec, Timestamps, Uid, CWD};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Walk(#[from] walk::Error),
    #[error("cannot make {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The error with a path below `temp`, where the copy was being made, shown below
    /// `dest`, where it goes: the temporary name means nothing to the user.
    pub fn shown_at(self, temp: &Path, dest: &Path) -> Error {
        match self {
            Error::Io { path, source } => {
                let path = match path.strip_prefix(temp) {
                    Ok(rest) if rest.as_os_str().is_empty() => dest.to_path_buf(),
                    Ok(rest) => dest.join(rest),
                    Err(_) => path,
                };
                Error::Io { path, source }
            }
            other => other,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn errno_at(path: &Path) -> impl FnOnce(rustix::io::Errno) -> Error + '_ {
    move |e| Error::Io { path: path.to_path_buf(), source: e.into() }
}

/// Copy `top` (and, for a directory, everything below it) to `dest`, which must not
/// exist.
pub fn extract(fs: &Fs, top: &Resolved, dest: &Path) -> Result<(), Error> {
    extract_deferred(fs, top, dest)?.apply(dest)
}

/// The directories of a copy, each with the attributes it is to get, in the order
/// they were made (a directory before what is in it).
pub struct Dirs {
    /// Path relative to the copy's top (empty for the top), path in the image, node.
    dirs: Vec<(PathBuf, Vec<u8>, NodeInfo)>,
    as_root: bool,
}

impl Dirs {
    /// Give each directory, now below `base` (where the copy's top is), its own
    /// attributes, deepest first.
    pub fn apply(&self, base: &Path) -> Result<(), Error> {
        for (rel, shown, info) in self.dirs.iter().rev() {
            let path = if rel.as_os_str().is_empty() { base.to_path_buf() } else { base.join(rel) };
            set_attributes(&path, shown, info, self.as_root)?;
        }
        Ok(())
    }
}

/// As [`extract`], but the directories are left as they were made (writable, the
/// caller's), for [`Dirs::apply`] to finish once they are where they go.
pub fn extract_deferred(fs: &Fs, top: &Resolved, dest: &Path) -> Result<Dirs, Error> {
    let as_root = rustix::process::geteuid().is_root();
    // First host path made for each hard-link group, by inode.
    let mut linked: HashMap<u64, PathBuf> = HashMap::new();
    let mut dirs = Dirs { dirs: Vec::new(), as_root };
    walk::walk(fs, top, |rel, node| -> Result<(), Error> {
        let path = if rel.is_empty() { dest.to_path_buf() } else { dest.join(OsStr::from_bytes(rel)) };
        let info = &node.info;
        let grouped = info.kind != Kind::Dir && info.nlink > 1;
        if grouped {
            if let Some(first) = linked.get(&info.ino) {
                return std::fs::hard_link(first, &path).map_err(io_at(&path));
            }
        }
        match info.kind {
            Kind::Dir => {
                std::fs::create_dir(&path).map_err(io_at(&path))?;
                dirs.dirs.push((PathBuf::from(OsStr::from_bytes(rel)), node.path.clone(), info.clone()));
                return Ok(());
            }
            Kind::File | Kind::Hardlink => {
                let mut f =
                    std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io_at(&path))?;
                let mut reader = FileReader::new(fs, node);
                while let Some(chunk) = reader.next_chunk()? {
                    f.write_all(&chunk).map_err(io_at(&path))?;
                }
            }
            Kind::Symlink => {
                let target = info.link.clone().unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path).map_err(io_at(&path))?;
            }
            Kind::Fifo => {
                rustix::fs::mknodat(CWD, &path, rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(errno_at(&path))?;
            }
            Kind::Char | Kind::Block if !as_root => {
                // Never recorded as made, so each other name of its hard-link group
                // comes here too and is skipped the same way.
                tracing::warn!("{}: a device node is made only as root; skipped", show(&node.path));
                return Ok(());
            }
            Kind::Char | Kind::Block => {
                let kind = if info.kind == Kind::Char {
                    rustix::fs::FileType::CharacterDevice
                } else {
                    rustix::fs::FileType::BlockDevice
                };
                let dev = rustix::fs::makedev(info.rdev.0, info.rdev.1);
                rustix::fs::mknodat(CWD, &path, kind, Mode::from_raw_mode(0o600), dev).map_err(errno_at(&path))?;
            }
        }
        set_attributes(&path, &node.path, info, as_root)?;
        if grouped {
            linked.insert(info.ino, path);
        }
        Ok(())
    })?;
    Ok(dirs)
}

/// Xattrs, owner, mode and mtime of what was just made at `path` (`shown`: its path
/// in the image, for warnings), in the order that lets each step succeed: xattrs
/// while the file is still writable, the owner before the mode (a chown clears setuid).
fn set_attributes(path: &Path, shown: &[u8], info: &NodeInfo, as_root: bool) -> Result<(), Error> {
    let symlink = info.kind == Kind::Symlink;
    for (name, value) in &info.xattrs {
        if !as_root && !name.starts_with(b"user.") {
            continue;
        }
        let name = OsStr::from_bytes(name);
        if let Err(e) = rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()) {
            tracing::warn!("{}: cannot set xattr {}: {e}", show(shown), name.to_string_lossy());
        }
    }
    if as_root {
        let (uid, gid) = (Uid::from_raw(info.uid), Gid::from_raw(info.gid));
        rustix::fs::chownat(CWD, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW).map_err(errno_at(path))?;
    }
    if !symlink {
        rustix::fs::chmodat(CWD, path, Mode::from_raw_mode(info.mode & 0o7777), AtFlags::empty())
            .map_err(errno_at(path))?;
    }
    let t = Timespec { tv_sec: info.mtime, tv_nsec: 0 };
    let times = Timestamps { last_access: t, last_modification: t };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(errno_at(path))?;
    Ok(())
}
