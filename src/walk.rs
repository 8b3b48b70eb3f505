//! Paths inside an image and walks of its tree, through the same filesystem operations
//! a mount serves (`Fs`), for the commands that read an image without a mount.
//!
//! A path is inside the image, absolute or relative to its root. `..` stops at the root
//! and symbolic links resolve inside the image, never on the host: an absolute target
//! starts again from the image's root, as it would in a container or a chroot. Walks go
//! depth first, each directory's entries in byte order of their names.

use crate::fs::{Fs, FsError};
use crate::layer::{show, Kind};
use crate::tree::{Ino, NodeInfo, ROOT};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// How many symbolic links one resolution may follow (Linux's limit).
const MAX_LINKS: usize = 40;

/// Why a path does not resolve, or a walk or read stopped. The path is the one asked
/// for, shown as the image has it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: no such file or directory in the image")]
    NotFound(String),
    #[error("{0}: not a directory")]
    NotDir(String),
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
    #[error("{path}")]
    Fs {
        path: String,
        #[source]
        source: FsError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A path resolved to a node.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub info: NodeInfo,
    /// Where it is, absolute and without links, `.` or `..`: `/` for the root.
    pub path: Vec<u8>,
}

impl Resolved {
    /// The last component of the path, `/` for the root.
    pub fn name(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) if i + 1 < self.path.len() => &self.path[i + 1..],
            _ => b"/",
        }
    }

    pub fn is_dir(&self) -> bool {
        self.info.kind == Kind::Dir
    }
}

fn fs_error(path: &[u8]) -> impl FnOnce(FsError) -> Error + '_ {
    move |source| Error::Fs { path: show(path), source }
}

/// Resolve `path` inside the image. Links along the way are followed; the last
/// component's link too when `follow_last` (what `cat` and `cp -L` want).
pub fn resolve(fs: &Fs, path: &[u8], follow_last: bool) -> Result<Resolved> {
    let asked = if path.is_empty() { b"/".as_slice() } else { path };
    let mut todo: VecDeque<Vec<u8>> = split(path).collect();
    // The directories from the root down to where we are, with their names.
    let mut stack: Vec<(Vec<u8>, NodeInfo)> = Vec::new();
    let root = fs.getattr(ROOT).map_err(fs_error(asked))?;
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == b"." || name == b".." {
            // Only a directory has them: `/etc/hostname/..` is no path, as on Linux.
            if stack.last().is_some_and(|(_, info)| info.kind != Kind::Dir) {
                return Err(Error::NotDir(show(asked)));
            }
            if name == b".." {
                stack.pop();
            }
            continue;
        }
        let here = stack.last().map_or(&root, |(_, info)| info);
        if here.kind != Kind::Dir {
            return Err(Error::NotDir(show(asked)));
        }
        let Some(info) = fs.lookup(here.ino, OsStr::from_bytes(&name)).map_err(fs_error(asked))? else {
            return Err(Error::NotFound(show(asked)));
        };
        if info.kind == Kind::Symlink && (follow_last || !todo.is_empty()) {
            links += 1;
            if links > MAX_LINKS {
                return Err(Error::Loop(show(asked)));
            }
            let target = info.link.clone().unwrap_or_default();
            if target.is_empty() {
                // Linux resolves an empty target to nothing (ENOENT), not to the link's directory.
                return Err(Error::NotFound(show(asked)));
            }
            if target.starts_with(b"/") {
                stack.clear();
            }
            for (i, c) in split(&target).enumerate() {
                todo.insert(i, c);
            }
            continue;
        }
        stack.push((name, info));
    }
    let mut canonical = Vec::new();
    for (name, _) in &stack {
        canonical.push(b'/');
        canonical.extend_from_slice(name);
    }
    if canonical.is_empty() {
        canonical.push(b'/');
    }
    let info = stack.pop().map_or(root, |(_, info)| info);
    Ok(Resolved { info, path: canonical })
}

/// The node at `path` taken literally: every component looked up as it is, no link
/// followed (a link on the way means no such path). `None`: the image has no such path.
pub fn lookup_literal(fs: &Fs, path: &[u8]) -> Result<Option<Resolved>> {
    let mut info = fs.getattr(ROOT).map_err(fs_error(path))?;
    let mut canonical = Vec::new();
    for name in split(path) {
        if info.kind != Kind::Dir {
            return Ok(None);
        }
        match fs.lookup(info.ino, OsStr::from_bytes(&name)).map_err(fs_error(path))? {
            Some(child) => info = child,
            None => return Ok(None),
        }
        canonical.push(b'/');
        canonical.extend_from_slice(&name);
    }
    if canonical.is_empty() {
        canonical.push(b'/');
    }
    Ok(Some(Resolved { info, path: canonical }))
}

fn split(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty()).map(<[u8]>::to_vec)
}

/// The entries of directory `dir` (no `.` and `..`), in byte order of their names.
pub fn entries(fs: &Fs, dir: &Resolved) -> Result<Vec<(Vec<u8>, NodeInfo)>> {
    let listing = fs.readdir(dir.info.ino).map_err(fs_error(&dir.path))?;
    let mut out = Vec::with_capacity(listing.len().saturating_sub(2));
    for e in listing.iter().filter(|e| e.name != b"." && e.name != b"..") {
        let info = fs.getattr(e.ino).map_err(|source| Error::Fs { path: show(&join(&dir.path, &e.name)), source })?;
        out.push((e.name.clone(), info));
    }
    Ok(out)
}

/// `dir/name` for an absolute `dir` (`/` included).
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Visit `top` and, if it is a directory, everything below it, depth first, a
/// directory before its entries and its entries in byte order. `visit` gets each
/// node's path relative to `top` (empty for `top` itself) and may stop the walk by
/// returning an error.
pub fn walk<E: From<Error>>(
    fs: &Fs,
    top: &Resolved,
    mut visit: impl FnMut(&[u8], &Resolved) -> Result<(), E>,
) -> Result<(), E> {
    // (relative path, node); children pushed in reverse so they pop in order.
    let mut todo: Vec<(Vec<u8>, Resolved)> = vec![(Vec::new(), top.clone())];
    while let Some((rel, node)) = todo.pop() {
        visit(&rel, &node)?;
        if node.is_dir() {
            for (name, info) in entries(fs, &node)?.into_iter().rev() {
                let child_rel = if rel.is_empty() { name.clone() } else { [&rel[..], b"/", &name[..]].concat() };
                todo.push((child_rel, Resolved { info, path: join(&node.path, &name) }));
            }
        }
        // Done with this node (a directory's entries have nodes of their own): let the
        // union drop it, as the kernel's forget would, so a walk of a million entries
        // does not keep a million nodes. One a lookup holds stays, and so does a file
        // with other names: they share its node, and may still be ahead in the walk.
        if node.is_dir() || node.info.nlink <= 1 {
            fs.forget(node.info.ino, 0);
        }
    }
    Ok(())
}

/// Reads a regular file of the image from start to end, a chunk at a time.
pub struct FileReader<'a> {
    fs: &'a Fs,
    ino: Ino,
    pos: u64,
    size: u64,
    path: Vec<u8>,
}

/// How much one read asks the layer for: large enough to keep per-call costs small.
const CHUNK: u32 = 1 << 20;

impl<'a> FileReader<'a> {
    pub fn new(fs: &'a Fs, node: &Resolved) -> FileReader<'a> {
        FileReader { fs, ino: node.info.ino, pos: 0, size: node.info.size, path: node.path.clone() }
    }

    /// The next chunk, or `None` at the end. A file that ends before its size is an error.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let want = CHUNK.min(u32::try_from(self.size - self.pos).unwrap_or(CHUNK));
        let data = self.fs.read(self.ino, self.pos, want).map_err(fs_error(&self.path))?;
        if data.is_empty() {
            let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the layer ends before the file does");
            return Err(Error::Fs { path: show(&self.path), source: FsError::from(e) });
        }
        self.pos += data.len() as u64;
        Ok(Some(data))
    }
}

/// Read in whole chunks, handed out as the caller asks (a tar writer asks for a few KiB
/// at a time; each layer read should still be large).
pub struct BufferedFile<'a> {
    file: FileReader<'a>,
    chunk: Vec<u8>,
    at: usize,
}

impl<'a> BufferedFile<'a> {
    pub fn new(fs: &'a Fs, node: &Resolved) -> BufferedFile<'a> {
        BufferedFile { file: FileReader::new(fs, node), chunk: Vec::new(), at: 0 }
    }
}

impl std::io::Read for BufferedFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.chunk.len() {
            match self.file.next_chunk().map_err(std::io::Error::other)? {
                Some(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
