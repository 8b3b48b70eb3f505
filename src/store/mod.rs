//! The local content-addressed store.
//!
//! Layout under the root directory:
//! - `blobs/sha256/HEX`: manifests, indexes, configs and layer blobs, each verified
//!   against its digest before it was renamed into place. A file there is trusted.
//! - `tmp/`: downloads and derived files in progress, written only under a GC lease
//!   (see `gc`). Nothing here is ever read as a blob. A temp file is named after its
//!   owner (pid and process start time): one whose owner is dead is removed by the
//!   next command that opens the store, the rest by `prune`.
//! - `toc/sha256/HEX.toc`: a layer's table of contents, decompression checkpoints and
//!   block sums, keyed by the layer's digest and read in place (see `layer::toc`). An
//!   older imgfs kept them as `index/sha256/HEX.idx`: those are never read, and go when
//!   the layer's TOC is written or at the next `prune`.
//! - `layers/sha256/HEX.zst`: a layer that can't be entered midway (zstd in one
//!   frame), re-encoded in frames; other layers are read from their blobs.
//! - `locks/fetch-HEX.lock`: held by the one process fetching blob HEX.
//! - `images.json`: image records and tags (see `db`).
//! - `mounts/`: one record per running mount server (see `mounts`).
//! - `logs/`: logs of background mount servers.
//! - `db.lock`, `gc.lock`: `flock` files that order writers (see `lock`).
//!
//! Records (`images.json`, `mounts/*.json`) are written without a GC lease, so their
//! temp files sit beside them (`.tmp-…`, as do those of indexes), where the sweep of
//! `tmp/` can't reach.
//!
//! The store is private to its owner whatever the umask: directories 0700, files
//! 0600, so no other local user reads an image's files from it (bypassing a mount's
//! permissions). A store made by an older imgfs is tightened the first time it is
//! opened.

pub mod cache;
pub mod db;
pub mod gc;
pub mod lock;
pub mod mounts;
pub mod remove;

use crate::digest::Digest;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Mode of every directory in the store.
const DIR_MODE: u32 = 0o700;
/// Mode of every file in the store.
pub const FILE_MODE: u32 = 0o600;
/// The subdirectories, created on open.
const SUBDIRS: [&str; 8] = ["blobs/sha256", "tmp", "toc/sha256", "layers/sha256", "locks", "mounts", "logs", "cache"];
/// Where `write_derived` puts files, and so its temp files (`.tmp-…`).
const DERIVED_DIRS: [&str; 4] = ["", "mounts", "toc/sha256", "cache"];

/// What goes wrong in the store. The texts are what users see after `imgfs: error:`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation in the store, named (`cannot create …`), over its cause.
    #[error("{what}")]
    File {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("store records {} are corrupt", .path.display())]
    CorruptRecords {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(
        "store records are inconsistent: {input} names image {id}, which has no record (run imgfs check --repair)"
    )]
    Inconsistent { input: String, id: Digest },
    #[error("image ID prefix {input:?} is ambiguous: it matches {count} images")]
    Ambiguous { input: String, count: usize },
    /// `why`: what made the name no reference either, if it isn't one.
    #[error("no such image: {input}{}", .why.as_ref().map(|w| format!(" (not an image ID, and {w})")).unwrap_or_default())]
    NoSuchImage { input: String, why: Option<String> },
    #[error("cannot unmount {}: fusermount3 failed: {why}", .dir.display())]
    Fusermount { dir: PathBuf, why: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Error::File` naming what failed.
fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::File { what: what.into(), source }
}

#[derive(Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Open (creating if needed) the store at `root`, private to its owner, and remove
    /// the temp files of processes that died (a pull killed with SIGKILL).
    pub fn open(root: &Path) -> Result<Store> {
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io(format!("cannot create {}", parent.display())))?;
        }
        // A root that is not 0700 is new or was made by an older imgfs: tighten all of
        // it, then the root last, so an interrupted walk is done again next time.
        let loose = fs::metadata(root).map_or(true, |m| m.permissions().mode() & 0o7777 != DIR_MODE);
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(DIR_MODE);
        for sub in SUBDIRS {
            let dir = root.join(sub);
            builder.create(&dir).map_err(io(format!("cannot create store directory {}", dir.display())))?;
        }
        if loose {
            tighten(root).map_err(io(format!("cannot make the store {} private", root.display())))?;
        }
        let store = Store { root: root.to_path_buf() };
        store.remove_orphaned_temps();
        Ok(store)
    }

    /// Remove temp files whose owner is dead. Safe without any lock: no one else
    /// writes a file named after another process.
    fn remove_orphaned_temps(&self) {
        let dirs = std::iter::once("tmp").chain(DERIVED_DIRS);
        for dir in dirs {
            let Ok(entries) = fs::read_dir(self.root.join(dir)) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let owner = if dir == "tmp" { Some(&*name) } else { name.strip_prefix(DERIVED_TEMP) };
                if owner.is_some_and(owner_is_dead) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }

    /// The default root: `/var/lib/imgfs` for root, else the XDG data dir.
    pub fn default_root() -> PathBuf {
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/imgfs");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("imgfs");
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".local/share/imgfs")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// A layer's TOC.
    pub fn toc_path(&self, layer: &Digest) -> PathBuf {
        self.root.join("toc/sha256").join(format!("{}.toc", layer.hex()))
    }

    /// Where an older imgfs kept a layer's index (decoded whole, a format no longer
    /// read): removed when the layer's TOC is written.
    pub fn legacy_index_path(&self, layer: &Digest) -> PathBuf {
        self.root.join("index/sha256").join(format!("{}.idx", layer.hex()))
    }

    /// Scratch files of work in progress (a TOC being sorted): `tmp/`, under a GC lease.
    pub fn scratch_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Spans fetched by Range through a published index (`cache::DiskCache`).
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// A layer re-encoded in zstd frames, for one that can't be entered midway.
    pub fn reframed_path(&self, layer: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(format!("{}.zst", layer.hex()))
    }

    /// The uncompressed copy an older imgfs kept of each compressed layer.
    pub fn old_copy_path(&self, layer: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(format!("{}.tar", layer.hex()))
    }

    /// Wait until no other process is fetching blob `d`, then hold that right until
    /// the guard drops. Taken under the writer guard, so a sweep (which empties
    /// `tmp/` under the exclusive lock) never removes a lock file in use.
    pub fn fetch_lock(&self, d: &Digest) -> Result<lock::FileLock> {
        let path = self.root.join("locks").join(format!("fetch-{}.lock", d.hex()));
        lock::FileLock::exclusive(&path)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        fs::read(&p).map_err(io(format!("blob {d} is not in the store")))
    }

    /// Store bytes under their digest after checking them against `expected`.
    pub fn put_blob_bytes(&self, expected: &Digest, bytes: &[u8]) -> Result<()> {
        let actual = Digest::of(bytes);
        if &actual != expected {
            return Err(Error::DigestMismatch { expected: expected.clone(), actual });
        }
        if self.has_blob(expected) {
            return Ok(());
        }
        let (tmp, mut file) = self.temp_file()?;
        let written = file.write_all(bytes).and_then(|_| file.sync_all());
        self.commit_temp(tmp, written.map_err(Error::from), expected)
    }

    /// Fill a temp file with `fill`, which returns the digest of what it wrote as it
    /// hashed the bytes on their way in (the registry client does, while streaming), so
    /// a blob is hashed once, not written and then read back. Only if that digest is
    /// `expected` is the file renamed into place; on any failure it is removed, so a
    /// failed download never leaves anything a later run would trust. Two processes
    /// racing for the same blob both succeed: rename is atomic and the files identical.
    /// `fill`'s own error comes back as it is; the store's failures are made into it.
    pub fn put_blob_with<E: From<Error>>(
        &self,
        expected: &Digest,
        fill: impl FnOnce(&mut File) -> Result<Digest, E>,
    ) -> Result<(), E> {
        let (tmp, mut file) = self.temp_file()?;
        let result = fill(&mut file).and_then(|actual| {
            if &actual != expected {
                return Err(Error::DigestMismatch { expected: expected.clone(), actual }.into());
            }
            Ok(file.sync_all().map_err(Error::from)?)
        });
        self.commit_temp(tmp, result, expected)
    }

    fn commit_temp<E: From<Error>>(&self, tmp: PathBuf, result: Result<(), E>, d: &Digest) -> Result<(), E> {
        match result {
            Ok(()) => {
                fs::rename(&tmp, self.blob_path(d)).map_err(io(format!("cannot store blob {d}")))?;
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// A new, uniquely named file under `tmp/`. Only for a holder of a GC lease: a
    /// sweep empties `tmp/`.
    pub fn temp_file(&self) -> Result<(PathBuf, File)> {
        create_temp(&self.root.join("tmp"), "")
    }

    /// Write a file (an index, a record) whole through a temp file beside it and a
    /// rename, so that readers only ever see complete files. Beside it, not in `tmp/`:
    /// records are written without a GC lease, and a sweep of `tmp/` (which needs no
    /// records lock) must not take the temp file away midway.
    /// `fill`'s own error comes back as it is; the store's failures are made into it.
    pub fn write_derived<E: From<Error>>(
        &self,
        dest: &Path,
        fill: impl FnOnce(&mut File) -> Result<(), E>,
    ) -> Result<(), E> {
        let dir = dest
            .parent()
            .ok_or_else(|| io("a store file has no directory")(std::io::ErrorKind::InvalidInput.into()))?;
        let (tmp, file) = create_temp(dir, DERIVED_TEMP)?;
        finish_temp(tmp, file, dest, fill)
    }

    pub fn db_lock_path(&self) -> PathBuf {
        self.root.join("db.lock")
    }

    pub fn gc_lock_path(&self) -> PathBuf {
        self.root.join("gc.lock")
    }
}

/// Prefix of the temp file of `write_derived`, beside its target.
const DERIVED_TEMP: &str = ".tmp-";

/// A new file `DIR/PREFIX<pid>-<start ticks>-<n>`, mode 0600: the name says which
/// process owns it, so a dead owner's files can be told apart from a live one's.
fn create_temp(dir: &Path, prefix: &str) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static TICKS: OnceLock<u64> = OnceLock::new();
    let pid = std::process::id();
    let ticks = *TICKS.get_or_init(|| mounts::process_start_ticks(pid).unwrap_or(0));
    let name = format!("{prefix}{pid}-{ticks}-{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    let path = dir.join(name);
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io(format!("cannot create temp file {}", path.display())))?;
    Ok((path, file))
}

/// Fill a temp file, sync it and rename it to `dest`; on failure remove it.
fn finish_temp<E: From<Error>>(
    tmp: PathBuf,
    mut file: File,
    dest: &Path,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), E> {
    match fill(&mut file).and_then(|_| Ok(file.sync_all().map_err(Error::from)?)) {
        Ok(()) => {
            fs::rename(&tmp, dest).map_err(io(format!("cannot write {}", dest.display())))?;
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Is the owner named by a temp file (`<pid>-<start ticks>-…`) gone? A name that
/// isn't of that form (an older imgfs's) is left for `prune`.
fn owner_is_dead(name: &str) -> bool {
    let mut parts = name.split('-');
    let (Some(Ok(pid)), Some(Ok(ticks))) = (parts.next().map(str::parse::<u32>), parts.next().map(str::parse::<u64>))
    else {
        return false;
    };
    mounts::process_start_ticks(pid) != Some(ticks)
}

/// Make the store private: directories 0700, files 0600. Only what the store itself
/// made is touched (its subdirectories and top-level files), never other files a user
/// keeps in a directory they pointed `--root` at. Symlinks are not followed.
fn tighten(root: &Path) -> std::io::Result<()> {
    for file in ["images.json", "db.lock", "gc.lock"] {
        match fs::set_permissions(root.join(file), fs::Permissions::from_mode(FILE_MODE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    // The top of each subdirectory `open` makes (`toc/sha256` → `toc`), each once.
    let mut tops: Vec<&str> = SUBDIRS.iter().map(|s| s.split('/').next().unwrap_or(s)).collect();
    tops.dedup();
    let mut stack: Vec<PathBuf> = tops.iter().map(|t| root.join(t)).collect();
    for dir in &stack {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
    }
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(DIR_MODE))?;
                stack.push(entry.path());
            } else if kind.is_file() {
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(FILE_MODE))?;
            }
        }
    }
    fs::set_permissions(root, fs::Permissions::from_mode(DIR_MODE))
}
