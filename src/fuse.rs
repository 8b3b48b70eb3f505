//! The fuser adapter: each kernel operation is one call into `fs` and one reply.
//! Mount options and cache lifetimes live here too: the image never changes, so
//! settled attributes and entries (negative ones included) are cached for a long
//! time, and file pages are kept across opens.

use crate::fs::{Fs, FsError};
use crate::layer::Kind;
use crate::tree::{NodeInfo, Target};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// How long the kernel may keep what we told it. Unsettled attributes (a directory
/// whose lower layers are not read yet) are not cached at all.
const TTL: Duration = Duration::from_secs(24 * 3600);
const NO_TTL: Duration = Duration::ZERO;

pub struct FuseFs {
    fs: Fs,
    /// The kernel takes ENOSYS from `open` to mean "no open needed, keep the page
    /// cache" and stops sending OPEN and RELEASE for files.
    no_open: bool,
    /// Likewise for directories: no OPENDIR/RELEASEDIR, and the listing is kept in
    /// the kernel's cache.
    no_opendir: bool,
}

pub struct MountSettings<'a> {
    pub fsname: &'a str,
    pub allow_other: bool,
    pub threads: usize,
}

/// Mount `fs` at `dir`. Nothing is served until the session's `run`, which returns
/// once the mount is gone. The mount is made here, by mount(2) as root and through
/// fusermount3 otherwise (as libfuse does), and the session only gets its `/dev/fuse`
/// descriptor: a session of fuser's own mount unmounts by path when it ends, and by then
/// a lazily detached mount's directory may hold another mount, which it would take
/// down. A server unmounts its own mount by its device instead (`store::mounts`).
pub fn mount(fs: Fs, dir: &Path, settings: &MountSettings) -> std::io::Result<fuser::Session<FuseFs>> {
    let mut config = fuser::Config::default();
    config.acl = if settings.allow_other { fuser::SessionACL::All } else { fuser::SessionACL::Owner };
    config.n_threads = Some(settings.threads);
    let fs = FuseFs { fs, no_open: false, no_opendir: false };
    let fd = if rustix::process::geteuid().is_root() {
        mount_directly(dir, settings)?
    } else {
        let mut options = String::from("ro,nodev,nosuid,default_permissions,subtype=imgfs");
        options.push_str(&format!(",fsname={}", settings.fsname));
        if settings.allow_other {
            options.push_str(",allow_other");
        }
        crate::fusermount::mount(dir, &options).map_err(|e| {
            if !dev_fuse_is_closed_to_us() {
                return e;
            }
            // Debian's fusermount3 opens the device with the user's rights, so a device
            // closed to the user fails there too, and the error must say what to change.
            let dev = dev_fuse_description();
            let fix = "let the user open /dev/fuse: chmod 0666 /dev/fuse (what udev sets), or give it a group \
                       the user is in (chgrp fuse /dev/fuse; chmod 0660 /dev/fuse; usermod -aG fuse USER)";
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                format!("/dev/fuse ({dev}) is not open to this user and fusermount3 is not installed: install fuse3, or {fix}")
            } else {
                format!("/dev/fuse ({dev}) is not open to this user, and {e}: {fix}")
            };
            std::io::Error::new(e.kind(), msg)
        })?
    };
    let acl = config.acl;
    fuser::Session::from_fd(fs, fd, acl, config)
}

/// mount(2) of a FUSE filesystem on a `/dev/fuse` descriptor of our own, with the
/// options and flags fuser's own mount gives (type plain `fuse`, the fsname as source).
fn mount_directly(dir: &Path, settings: &MountSettings) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::mount::{mount, MountFlags};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
    // The root's type and mode until the first GETATTR: the mountpoint's.
    let rootmode = std::fs::metadata(dir)?.mode() & (libc::S_IFMT | 0o7777);
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw()
    );
    if settings.allow_other {
        data.push_str(",allow_other");
    }
    let data = std::ffi::CString::new(data)?;
    let flags = MountFlags::RDONLY | MountFlags::NODEV | MountFlags::NOSUID;
    mount(settings.fsname, dir, "fuse", flags, data.as_c_str())?;
    Ok(dev.into())
}

/// "mode 0600, owner 0:0", for the error that says why /dev/fuse is closed.
fn dev_fuse_description() -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/dev/fuse") {
        Ok(m) => format!("mode {:04o}, owner {}:{}", m.mode() & 0o7777, m.uid(), m.gid()),
        Err(e) => e.to_string(),
    }
}

/// Can't a non-root user open /dev/fuse (a host or container that leaves it 0600)?
/// Root always can; a missing device is left to fuser's own error.
fn dev_fuse_is_closed_to_us() -> bool {
    if rustix::process::geteuid().is_root() {
        return false;
    }
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
    }
}

/// The answer to a failed operation. An I/O failure is logged first, one line per
/// operation with its causes: the errno alone tells the user nothing.
fn errno(op: &str, ino: INodeNo, e: FsError) -> Errno {
    if let FsError::Io(_) = e {
        tracing::error!("{op} (inode {}): {}", ino.0, crate::log::Chain(&e));
    }
    Errno::from_i32(e.errno())
}

fn attr(info: &NodeInfo) -> FileAttr {
    let mtime = if info.mtime >= 0 {
        UNIX_EPOCH + Duration::from_secs(info.mtime as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(info.mtime.unsigned_abs())
    };
    FileAttr {
        ino: INodeNo(info.ino),
        size: info.size,
        // 512-byte blocks, rounded up to whole 4 KiB pages as a disk would, so `du` is sensible.
        blocks: info.size.div_ceil(4096) * 8,
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(info.kind),
        perm: (info.mode & 0o7777) as u16,
        nlink: info.nlink,
        uid: info.uid,
        gid: info.gid,
        rdev: libc::makedev(info.rdev.0, info.rdev.1) as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File | Kind::Hardlink => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
    }
}

fn ttl(info: &NodeInfo) -> Duration {
    if info.settled {
        TTL
    } else {
        NO_TTL
    }
}

/// A negative entry: inode 0 tells the kernel to cache "no such name".
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// Entries read from the TOCs per batch of a readdir; a reply takes what fits.
const BATCH: usize = 128;

impl FuseFs {
    /// A readdirplus that failed midway: the entries it had counted never reach the
    /// kernel.
    fn fail_plus(&self, ino: INodeNo, e: FsError, given: &[u64], reply: ReplyDirectoryPlus) {
        for &i in given {
            self.fs.forget(i, 1);
        }
        reply.error(errno("readdirplus", ino, e))
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Larger reads mean fewer round trips for `cat` and `tar`; refused values are fine.
        let _ = config.set_max_readahead(1 << 20);
        // Every readdir carries the entries' attributes (readdirplus, not only for the
        // first batch as READDIRPLUS_AUTO would): attributes cost a table lookup here,
        // while each entry left without them costs `ls -l` or `find` a LOOKUP round trip.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS);
        // Without this the kernel sends one lookup or readdir per directory at a time,
        // so a lookup in `/` waiting for a layer download would hold up every other
        // lookup in `/`, whatever layer it needs.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        // Symlink targets never change either: let the kernel keep them, or every
        // readlink (tar, ls -l, path walks through links) is a round trip.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_CACHE_SYMLINKS);
        // Opening a file needs no state here, and the mount is read-only, so the kernel
        // refuses write opens itself (EROFS): two round trips fewer per file opened.
        self.no_open = config.capabilities().contains(fuser::InitFlags::FUSE_NO_OPEN_SUPPORT);
        self.no_opendir = config.capabilities().contains(fuser::InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(Some(info)) => reply.entry(&ttl(&info), &attr(&info), Generation(0)),
            Ok(None) => reply.entry(&TTL, &negative_attr(), Generation(0)),
            Err(e) => reply.error(errno("lookup", parent, e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(info) => reply.attr(&ttl(&info), &attr(&info)),
            Err(e) => reply.error(errno("getattr", ino, e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno("readlink", ino, e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.open(ino.0, flags.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno("open", ino, e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno("read", ino, e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.opendir(ino.0, flags.0) {
            // The kernel may keep the listing in its page cache: the image never changes.
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR),
            Err(e) => reply.error(errno("opendir", ino, e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut offset = offset;
        loop {
            let batch = match self.fs.read_dir(ino.0, offset, BATCH) {
                Ok(b) => b,
                Err(e) => return reply.error(errno("readdir", ino, e)),
            };
            let Some(last) = batch.last() else { break };
            offset = last.cookie;
            for l in &batch {
                let child = self.fs.ino_of(l);
                let name = <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&l.name);
                if reply.add(INodeNo(child), l.cookie, file_type(l.kind), name) {
                    return reply.ok();
                }
            }
        }
        reply.ok()
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        // Each entry given counts as a reference the kernel holds; one that does not fit
        // (or a batch that fails) is not given, and its reference is dropped again.
        let mut given: Vec<u64> = Vec::new();
        let mut offset = offset;
        loop {
            let batch = match self.fs.read_dir(ino.0, offset, BATCH) {
                Ok(b) => b,
                Err(e) => return self.fail_plus(ino, e, &given, reply),
            };
            let Some(last) = batch.last() else { break };
            offset = last.cookie;
            for l in &batch {
                let info = match self.fs.entry(l) {
                    Ok(info) => info,
                    Err(e) => return self.fail_plus(ino, e, &given, reply),
                };
                let counted = !matches!(l.target, Target::Dot(_));
                let name = <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&l.name);
                if reply.add(INodeNo(info.ino), l.cookie, name, &ttl(&info), &attr(&info), Generation(0)) {
                    if counted {
                        self.fs.forget(info.ino, 1);
                    }
                    return reply.ok();
                }
                if counted {
                    given.push(info.ino);
                }
            }
        }
        reply.ok()
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(s.bytes.div_ceil(4096), 0, 0, s.files, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(errno("getxattr", ino, FsError::Range)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno("getxattr", ino, e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(errno("listxattr", ino, FsError::Range)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno("listxattr", ino, e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.fs.access(ino.0, mask.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("access", ino, e)),
        }
    }

    // Every operation that would change the image answers EROFS.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS)
    }

    fn mknod(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _r: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS)
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS)
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS)
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS)
    }

    fn symlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _t: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS)
    }

    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS)
    }

    fn link(&self, _req: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS)
    }

    fn write(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _o: u64,
        _d: &[u8],
        _wf: fuser::WriteFlags,
        _f: OpenFlags,
        _l: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(Errno::EROFS)
    }

    fn setxattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, _v: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        reply.error(Errno::EROFS)
    }

    fn removexattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS)
    }

    fn create(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, _f: i32, reply: fuser::ReplyCreate) {
        reply.error(Errno::EROFS)
    }

    fn fallocate(&self, _req: &Request, _i: INodeNo, _fh: FileHandle, _o: u64, _l: u64, _m: i32, reply: ReplyEmpty) {
        reply.error(Errno::EROFS)
    }
}
