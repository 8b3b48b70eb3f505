//! Filesystem operations over the union tree, as plain functions that return values
//! or an `FsError` with its errno. Nothing here knows about fuser, so all of it can
//! be tested without a kernel mount; `fuse` only adapts these calls to replies.
//!
//! A failure to fetch or read a layer is answered with EIO, the cause kept in the error
//! for `fuse` to log; nothing is cached about the failure, so the same operation is
//! tried afresh later.

use crate::layer::Kind;
use crate::tree::{Ino, LayerError, NodeInfo, Tree, ROOT};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("ENOENT")]
    NotFound,
    #[error("ENOTDIR")]
    NotDir,
    #[error("EISDIR")]
    IsDir,
    #[error("EINVAL")]
    NotLink,
    #[error("EROFS")]
    ReadOnly,
    #[error("ENODATA")]
    NoAttr,
    #[error("ERANGE")]
    Range,
    #[error("EBADF")]
    BadHandle,
    /// A layer could not be fetched, indexed or read: why.
    #[error("EIO")]
    Io(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Two errors are the same answer when they give the same errno (the cause of an EIO
/// is for the log, not for comparing).
impl PartialEq for FsError {
    fn eq(&self, other: &FsError) -> bool {
        self.errno() == other.errno()
    }
}

impl Eq for FsError {}

impl From<LayerError> for FsError {
    fn from(e: LayerError) -> FsError {
        FsError::Io(Box::new(e))
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        FsError::Io(Box::new(e))
    }
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotLink => libc::EINVAL,
            FsError::ReadOnly => libc::EROFS,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::BadHandle => libc::EBADF,
            FsError::Io(_) => libc::EIO,
        }
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// One entry of a directory listing.
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: Ino,
    pub kind: Kind,
}

/// The entries of a directory, `.` and `..` first, taken once per directory (see
/// `Fs::listing`): readdir calls stream from it by offset, so a listing is never
/// rebuilt per open or per kernel call.
pub type DirSnapshot = Arc<Vec<DirEntry>>;

/// Totals for statfs.
pub struct FsStats {
    pub bytes: u64,
    pub files: u64,
}

pub struct Fs {
    tree: Tree,
    /// Sum of the image's layer sizes: what statfs reports as used.
    image_bytes: u64,
    /// Open directories, by handle.
    open_dirs: Mutex<HashMap<u64, DirSnapshot>>,
    next_handle: AtomicU64,
    /// Each directory's snapshot, made on its first listing: the image never changes,
    /// so one per directory serves every open handle, and the kernels that read
    /// directories without opening them (see `fuse`).
    listings: Mutex<HashMap<Ino, DirSnapshot>>,
}

impl Fs {
    pub fn new(tree: Tree, image_bytes: u64) -> Fs {
        Fs {
            tree,
            image_bytes,
            open_dirs: Mutex::default(),
            next_handle: AtomicU64::new(1),
            listings: Mutex::default(),
        }
    }

    /// `Ok(None)` means "no such name", which the kernel may cache: the image never changes.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Option<NodeInfo>> {
        match self.tree.lookup(parent, name.as_bytes())? {
            Some(ino) => self.getattr(ino).map(Some),
            None => Ok(None),
        }
    }

    pub fn getattr(&self, ino: Ino) -> FsResult<NodeInfo> {
        self.tree.info(ino)?.ok_or(FsError::NotFound)
    }

    pub fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let info = self.getattr(ino)?;
        match (info.kind, info.link) {
            (Kind::Symlink, Some(l)) => Ok(l),
            _ => Err(FsError::NotLink),
        }
    }

    /// Check an open: anything that could write is refused.
    pub fn open(&self, ino: Ino, flags: i32) -> FsResult<()> {
        let info = self.getattr(ino)?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly);
        }
        if info.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        Ok(())
    }

    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (data, entry) = self.tree.data(ino)?.ok_or(FsError::IsDir)?;
        Ok(data.read(&entry, offset, size)?)
    }

    /// The directory's entries, `.` and `..` first.
    pub fn readdir(&self, ino: Ino) -> FsResult<Vec<DirEntry>> {
        let info = self.getattr(ino)?;
        if info.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let children = self.tree.list(ino)?;
        let mut out = Vec::with_capacity(children.len() + 2);
        out.push(DirEntry { name: b".".to_vec(), ino, kind: Kind::Dir });
        out.push(DirEntry { name: b"..".to_vec(), ino: self.tree.parent(ino), kind: Kind::Dir });
        for (name, child, kind) in children {
            out.push(DirEntry { name, ino: child, kind });
        }
        Ok(out)
    }

    /// Open a directory for reading: its snapshot (made on the first open, shared by
    /// the later ones: the image never changes) under a new handle.
    pub fn opendir(&self, ino: Ino, flags: i32) -> FsResult<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(FsError::ReadOnly);
        }
        let entries = self.listing(ino)?;
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.open_dirs.lock().unwrap_or_else(|p| p.into_inner()).insert(fh, entries);
        Ok(fh)
    }

    /// The snapshot taken when handle `fh` was opened.
    pub fn dir_handle(&self, fh: u64) -> FsResult<DirSnapshot> {
        self.open_dirs.lock().unwrap_or_else(|p| p.into_inner()).get(&fh).cloned().ok_or(FsError::BadHandle)
    }

    /// The snapshot of directory `ino`, made on its first listing and kept.
    pub fn listing(&self, ino: Ino) -> FsResult<DirSnapshot> {
        if let Some(l) = self.listings.lock().unwrap_or_else(|p| p.into_inner()).get(&ino) {
            return Ok(Arc::clone(l));
        }
        let entries = Arc::new(self.readdir(ino)?);
        let mut listings = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(listings.entry(ino).or_insert(entries)))
    }

    pub fn releasedir(&self, fh: u64) {
        self.open_dirs.lock().unwrap_or_else(|p| p.into_inner()).remove(&fh);
    }

    pub fn getxattr(&self, ino: Ino, name: &OsStr) -> FsResult<Vec<u8>> {
        let info = self.getattr(ino)?;
        info.xattrs.into_iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v).ok_or(FsError::NoAttr)
    }

    /// Attribute names, each followed by a NUL, as listxattr(2) returns them.
    pub fn listxattr(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let info = self.getattr(ino)?;
        let mut out = Vec::new();
        for (k, _) in info.xattrs {
            out.extend_from_slice(&k);
            out.push(0);
        }
        Ok(out)
    }

    /// `access(2)`: the kernel checks permissions itself (default_permissions); only
    /// write access needs an answer here, and it is always no.
    pub fn access(&self, ino: Ino, mask: i32) -> FsResult<()> {
        self.getattr(ino)?;
        if mask & libc::W_OK != 0 {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    pub fn statfs(&self) -> FsStats {
        FsStats { bytes: self.image_bytes, files: self.tree.node_count() as u64 }
    }

    /// Where a non-directory's bytes are (see `Tree::data_origin`).
    pub fn data_origin(&self, ino: Ino) -> Option<(usize, u64)> {
        self.tree.data_origin(ino)
    }

    pub fn root(&self) -> Ino {
        ROOT
    }
}
