//! One layer as the union needs it: a table of contents (every entry's path, type,
//! attributes and where its bytes sit in the uncompressed tar), the layer's whiteouts
//! and opaque directories, and random access to file data.
//!
//! A layer is parsed once, while its blob streams in and is decompressed (`build`),
//! and its table of contents is written as it goes into a TOC file (`toc`), kept in
//! the store keyed by the layer digest and read in place, so a remount never parses
//! again and a mount never decodes the table. File data is read from the blob itself:
//! in place for an uncompressed layer, from the nearest decompression checkpoint for a
//! compressed one (`data`).

/// Refuse what a layer or a file kept for it holds: `Error::Invalid` with the text.
macro_rules! bail {
    ($($why:tt)*) => {
        return Err($crate::layer::Error::Invalid(format!($($why)*)))
    };
}

/// `bail!` unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($why:tt)*) => {
        if !$cond {
            bail!($($why)*);
        }
    };
}

pub mod arriving;
pub mod block_sums;
mod blockfind;
pub mod build;
pub mod checkpoints;
pub mod data;
pub mod estargz;
pub mod indexing;
pub mod ingest;
mod marker;
pub mod names;
pub mod pargz;
pub mod reframe;
pub mod remote;
pub mod spans;
#[cfg(test)]
mod testdata;
pub mod toc;
pub mod workers;
mod zlib;

pub use data::LayerData;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What goes wrong reading a layer (its tar, compressed stream or eStargz TOC) or the
/// files kept for it (its TOC). The texts are what users see in `pull`'s
/// error and a mount's log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The layer or a file kept for it holds what imgfs refuses; the text says what.
    #[error("{0}")]
    Invalid(String),
    /// The layer passes a bound the user sets (`build::Limits`): it is refused whatever
    /// its remaining bytes are.
    #[error("{0}")]
    OverLimit(String),
    /// What failed (an entry, a file, a step) over its cause.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored TOC that can't be read back: rebuilt from the blob by whoever loads it.
    #[error("layer TOC {} is damaged", .path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A page of a TOC read from elsewhere (`toc::PageSource`) is not fetched yet: the
    /// caller fetches it (`Toc::fetch_page`), with no lock held, and reads again.
    #[error("page {page} of a layer TOC is not fetched yet")]
    PageMissing { page: u64 },
    #[error("layer content does not match the config's diff_id: expected {want}, got {actual}")]
    DiffId { want: crate::digest::Digest, actual: crate::digest::Digest },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Name what failed over its cause, as `Error::Context` (or, for a missing value,
/// `Error::Invalid`): the typed counterpart of anyhow's `context` for this module.
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Context { what: what.into(), source: Box::new(e) })
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Context { what: what().into(), source: Box::new(e) })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(what.into()))
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(what().into()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A hard link; `Entry::link` names the target path, `Entry::link_entry` the
    /// entry in this layer it resolved to when it was read (if any).
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// One tar entry, as a layer's table of contents holds it (postcard: fields in order,
/// no names; as the first published index format carries it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The name's bytes as the tar had them (names need not be UTF-8), normalised:
    /// relative, no `./` or `..`, no trailing `/`; the root is empty.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    /// Symlink target (as is), or the (normalised) path a hard link points at.
    pub link: Option<Vec<u8>>,
    /// For a hard link: the entry of this layer holding the data, if the target was
    /// an earlier entry of the same layer. `None` means the target lies in a lower layer.
    pub link_entry: Option<u32>,
    pub rdev: (u32, u32),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Offset of the data in the uncompressed tar stream.
    pub offset: u64,
}

/// What the tar held, in stream order, before any lookup tables are built.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Contents {
    /// Every entry in tar order, including those a later duplicate replaced (a hard
    /// link read before the duplicate still points at the earlier one).
    pub entries: Vec<Entry>,
    /// Paths named by `.wh.NAME` markers: hidden in lower layers.
    pub whiteouts: Vec<Vec<u8>>,
    /// Directories holding a `.wh..wh..opq` marker: their lower children are hidden.
    pub opaque: Vec<Vec<u8>>,
}

impl Contents {
    /// Does this hold only what `build` makes? Names normalised and servable, hard links
    /// resolved to earlier entries. An index file that passes holds nothing the tree
    /// could trip on.
    pub fn check(&self) -> Result<()> {
        let normal = |p: &[u8]| names::normalise(p) == p && names::check_name(p).is_ok();
        for (i, e) in self.entries.iter().enumerate() {
            if !normal(&e.path) {
                bail!("entry {i} has the name {}", show(&e.path));
            }
            if e.link_entry.is_some_and(|t| t as usize >= i) {
                bail!("hard link {} resolves to a later entry", show(&e.path));
            }
        }
        if let Some(p) = self.whiteouts.iter().chain(&self.opaque).find(|p| !normal(p)) {
            bail!("a whiteout names {}", show(p));
        }
        Ok(())
    }
}

/// A name for messages: UTF-8 as is, other bytes as `\xNN`, quoted.
pub fn show(name: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in name.utf8_chunks() {
        out.extend(chunk.valid().escape_debug());
        out.extend(chunk.invalid().iter().map(|b| format!("\\x{b:02x}")));
    }
    out.push('"');
    out
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// Join a directory path and a name in the normalised form.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_show_escaped_where_not_utf8() {
        assert_eq!(show("caf\u{e9}/x".as_bytes()), "\"caf\u{e9}/x\"");
        assert_eq!(show(b"caf\xe9\n"), "\"caf\\xe9\\n\"");
    }
}
