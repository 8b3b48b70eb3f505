//! Garbage collection: mark every blob reachable from an image record (through each
//! manifest the image is known by), sweep the
//! rest (with the layer indexes, checkpoints and uncompressed copies derived from
//! them), stale temp files and fetch locks.
//!
//! It runs under the exclusive `gc.lock`. Everything that writes blobs holds the same
//! lock shared (a lease) while it works: a pull from its first blob through the record
//! that names the image (`register::Resolved` carries the lease), a mount server while it
//! fetches and indexes a layer, `imgfs check` while it looks. So a sweep never removes
//! a blob between its download and the record that names it. flock has no writer
//! preference: a lease taken while a sweep waits is granted, so nested leases in one
//! process can't deadlock.

use super::lock::FileLock;
use super::Result;
use super::Store;
use crate::digest::Digest;
use std::collections::HashSet;
use std::fs;

/// What a sweep removed.
#[derive(Debug, Default)]
pub struct Sweep {
    pub blobs: Vec<Digest>,
    pub bytes: u64,
}

impl Store {
    /// Hold this while writing blobs that are not yet named by a record.
    pub fn writer_guard(&self) -> Result<FileLock> {
        FileLock::shared(&self.gc_lock_path())
    }

    pub fn collect_garbage(&self) -> Result<Sweep> {
        let _gc = FileLock::exclusive(&self.gc_lock_path())?;
        let db = self.db()?;
        let mut keep: HashSet<String> = HashSet::new();
        for img in db.images.values() {
            keep.insert(img.id.hex().to_string());
            // Every manifest the image is known by keeps its own blobs.
            for m in img.manifests() {
                keep.extend(m.blobs().map(|d| d.hex().to_string()));
            }
        }
        let mut sweep = Sweep::default();
        for entry in fs::read_dir(self.root().join("blobs/sha256"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            sweep.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            if let Ok(d) = format!("sha256:{name}").parse() {
                sweep.blobs.push(d);
            }
            fs::remove_file(entry.path())?;
        }
        // Derived files are named HEX.toc / HEX.zst after the layer blob they came from.
        for sub in ["toc/sha256", "layers/sha256"] {
            for entry in fs::read_dir(self.root().join(sub))? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let hex = name.split('.').next().unwrap_or("");
                if !keep.contains(hex) {
                    sweep.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(entry.path())?;
                }
            }
        }
        // Indexes of an older imgfs (`index/`) are never read again: all go.
        let legacy = self.root().join("index");
        if let Ok(entries) = fs::read_dir(legacy.join("sha256")) {
            for entry in entries.flatten() {
                sweep.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(entry.path());
            }
            let _ = fs::remove_dir(legacy.join("sha256"));
            let _ = fs::remove_dir(&legacy);
        }
        // No writer holds the shared lock now, so every temp file in tmp/ is left over
        // (records, written without a lease, keep theirs beside them, out of reach
        // here), and no fetch lock is held (they are taken under the shared lock).
        for dir in ["tmp", "locks"] {
            for entry in fs::read_dir(self.root().join(dir))? {
                let entry = entry?;
                sweep.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(entry.path());
            }
        }
        sweep.blobs.sort();
        Ok(sweep)
    }
}
