//! Filesystem operations over the union tree, as plain functions that return values
//! or an `FsError` with its errno. Nothing here knows about fuser, so all of it can
//! be tested without a kernel mount; `fuse` only adapts these calls to replies.
//!
//! A failure to fetch or read a layer is answered with EIO, the cause kept in the error
//! for `fuse` to log; nothing is cached about the failure, so the same operation is
//! tried afresh later.

use crate::layer::Kind;
use crate::tree::{Ino, LayerError, Listed, NodeInfo, Tree, ROOT};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

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
    /// The offset that resumes the listing after this entry.
    pub offset: u64,
}

/// Totals for statfs.
pub struct FsStats {
    pub bytes: u64,
    /// Inodes: 0, unknown (the layers not read yet hold an unknown share of them).
    pub files: u64,
}

pub struct Fs {
    tree: Tree,
    /// Sum of the image's layer sizes: what statfs reports as used.
    image_bytes: u64,
}

impl Fs {
    pub fn new(tree: Tree, image_bytes: u64) -> Fs {
        Fs { tree, image_bytes }
    }

    /// `Ok(None)` means "no such name", which the kernel may cache: the image never
    /// changes. A name found counts as a reference the kernel holds until `forget`.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> FsResult<Option<NodeInfo>> {
        Ok(self.tree.lookup(parent, name.as_bytes())?)
    }

    /// The kernel dropped `n` references to `ino` (from lookups and readdirplus).
    pub fn forget(&self, ino: Ino, n: u64) {
        self.tree.forget(ino, n)
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
        let (data, start, len) = self.tree.data(ino)?.ok_or(FsError::IsDir)?;
        Ok(data.read(start, len, offset, size)?)
    }

    /// Up to `max` entries of a directory from `offset` on (0 first: `.` and `..`, then
    /// the children by name), read from the layers' TOCs: nothing is kept between
    /// calls. No node is counted as held by the kernel: see `entry` and `ino_of`.
    pub fn read_dir(&self, ino: Ino, offset: u64, max: usize) -> FsResult<Vec<Listed>> {
        let info = self.getattr(ino)?;
        if info.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(self.tree.read_dir(ino, offset, max)?)
    }

    /// A listed entry's attributes, its node made and counted as a reference the
    /// kernel holds (readdirplus; `.` and `..` are not counted, as the kernel takes no
    /// reference to them).
    pub fn entry(&self, listed: &Listed) -> FsResult<NodeInfo> {
        Ok(self.tree.remember(listed.target)?)
    }

    /// A listed entry's inode, for a plain readdir: no node is made (the kernel takes
    /// no reference, and looks the name up before it uses the inode).
    pub fn ino_of(&self, listed: &Listed) -> Ino {
        Tree::ino_of(listed.target)
    }

    /// The whole listing, `.` and `..` first: for callers outside the kernel (tests, the
    /// fuzz target, the mount-free commands' walks), which go on to ask for the entries'
    /// attributes by inode. Nodes are made for every entry.
    pub fn readdir(&self, ino: Ino) -> FsResult<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let batch = self.read_dir(ino, offset, 256)?;
            let Some(last) = batch.last() else { return Ok(out) };
            offset = last.cookie;
            for l in &batch {
                out.push(DirEntry {
                    name: l.name.clone(),
                    ino: self.tree.keep(l.target)?,
                    kind: l.kind,
                    offset: l.cookie,
                });
            }
        }
    }

    /// Open a directory for reading: only reading is allowed, and there is nothing to
    /// keep per handle (a listing resumes from the offset the kernel gives).
    pub fn opendir(&self, ino: Ino, flags: i32) -> FsResult<()> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(FsError::ReadOnly);
        }
        if self.getattr(ino)?.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(())
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
        FsStats { bytes: self.image_bytes, files: 0 }
    }

    /// Nodes alive in the tree (for tests: what the kernel's references keep).
    pub fn node_count(&self) -> usize {
        self.tree.node_count()
    }

    /// Where a non-directory's bytes are (see `Tree::data_origin`).
    pub fn data_origin(&self, ino: Ino) -> Option<(usize, u64)> {
        self.tree.data_origin(ino)
    }

    pub fn root(&self) -> Ino {
        ROOT
    }
}
