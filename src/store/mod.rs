//! The local content-addressed store.
//!
//! Layout under the root directory:
//! - `blobs/sha256/HEX`: manifests, indexes, configs and layer blobs, each verified
//!   against its digest before it was renamed into place. A file there is trusted.
//! - `tmp/`: downloads in progress. Nothing here is ever read as a blob; stale files
//!   are removed by `prune`.
//! - `index/sha256/HEX.idx`: a layer's table of contents and decompression
//!   checkpoints, keyed by the layer's digest (see `layer::IndexFile`).
//! - `layers/sha256/HEX.zst`: a layer that can't be entered midway (zstd in one
//!   frame), re-encoded in frames; other layers are read from their blobs.
//! - `locks/fetch-HEX.lock`: held by the one process fetching blob HEX.
//! - `images.json`: image records and tags (see `db`).
//! - `mounts/`: one record per running mount server (see `mounts`).
//! - `logs/`: logs of background mount servers.
//! - `db.lock`, `gc.lock`: `flock` files that order writers (see `lock`).

pub mod db;
pub mod gc;
pub mod lock;
pub mod mounts;

use crate::digest::Digest;
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Open (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        for sub in ["blobs/sha256", "tmp", "index/sha256", "layers/sha256", "locks", "mounts", "logs"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).with_context(|| format!("cannot create store directory {}", dir.display()))?;
        }
        Ok(Store { root: root.to_path_buf() })
    }

    /// The default root: `/var/lib/imgfs` for root, else the XDG data dir.
    pub fn default_root() -> PathBuf {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
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

    pub fn index_path(&self, layer: &Digest) -> PathBuf {
        self.root.join("index/sha256").join(format!("{}.idx", layer.hex()))
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
        lock::FileLock::exclusive(&path).with_context(|| format!("cannot lock {}", path.display()))
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        fs::read(&p).with_context(|| format!("blob {d} is not in the store"))
    }

    /// Store bytes under their digest after checking them against `expected`.
    pub fn put_blob_bytes(&self, expected: &Digest, bytes: &[u8]) -> Result<()> {
        let actual = Digest::of(bytes);
        if &actual != expected {
            bail!("digest mismatch: expected {expected}, got {actual}");
        }
        if self.has_blob(expected) {
            return Ok(());
        }
        let (tmp, mut file) = self.temp_file()?;
        let written = file.write_all(bytes).and_then(|_| file.sync_all());
        self.commit_temp(tmp, written.map_err(Into::into), expected)
    }

    /// Fill a temp file with `fill`, which returns the digest of what it wrote as it
    /// hashed the bytes on their way in (the registry client does, while streaming), so
    /// a blob is hashed once, not written and then read back. Only if that digest is
    /// `expected` is the file renamed into place; on any failure it is removed, so a
    /// failed download never leaves anything a later run would trust. Two processes
    /// racing for the same blob both succeed: rename is atomic and the files identical.
    pub fn put_blob_with(&self, expected: &Digest, fill: impl FnOnce(&mut File) -> Result<Digest>) -> Result<()> {
        let (tmp, mut file) = self.temp_file()?;
        let result = fill(&mut file).and_then(|actual| {
            if &actual != expected {
                bail!("digest mismatch: expected {expected}, got {actual}");
            }
            Ok(file.sync_all()?)
        });
        self.commit_temp(tmp, result, expected)
    }

    fn commit_temp(&self, tmp: PathBuf, result: Result<()>, d: &Digest) -> Result<()> {
        match result {
            Ok(()) => {
                fs::rename(&tmp, self.blob_path(d)).with_context(|| format!("cannot store blob {d}"))?;
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// A new, uniquely named file under `tmp/`.
    pub fn temp_file(&self) -> Result<(PathBuf, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!("{}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), nanos);
        let path = self.root.join("tmp").join(name);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create temp file {}", path.display()))?;
        Ok((path, file))
    }

    /// Write a derived file (an index, an uncompressed layer) through a temp file and
    /// rename, so that readers only ever see complete files.
    pub fn write_derived(&self, dest: &Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
        let (tmp, mut file) = self.temp_file()?;
        match fill(&mut file).and_then(|_| Ok(file.sync_all()?)) {
            Ok(()) => {
                fs::rename(&tmp, dest).with_context(|| format!("cannot write {}", dest.display()))?;
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    pub fn db_lock_path(&self) -> PathBuf {
        self.root.join("db.lock")
    }

    pub fn gc_lock_path(&self) -> PathBuf {
        self.root.join("gc.lock")
    }
}
