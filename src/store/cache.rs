//! The on-disk cache of bytes fetched by HTTP Range for layers read through a published
//! index (`layer::remote`): compressed spans and gzip windows, one file each under
//! `ROOT/cache/`, bounded in bytes and evicted least recently used (by mtime, which a
//! hit refreshes). What goes out is fetched again by Range when a read needs it.
//!
//! Several mount servers may share it, with no lock at all: an entry is written to a
//! temp file and renamed into place, so a name only ever holds a whole entry; a reader
//! reads an entry whole into memory, so an eviction that unlinks it meanwhile takes
//! nothing from under it. Entries are not synced to disk: every read checks the bytes
//! against the digest the verified index gives for them, and one that fails (a crash
//! mid-write, a damaged disk) is removed and fetched again, never served.

use super::{create_temp, Result, Store, DERIVED_TEMP};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// The default bound when `--cache-size` is not given: enough for the spans of a few
/// large images' working sets, small next to any disk that holds the store.
pub const DEFAULT_LIMIT: u64 = 1 << 30;

pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    /// Held while making room and writing an entry, so that this process's writers
    /// (FUSE threads, read-ahead) together never go past the bound. Local disk work
    /// only, never a fetch.
    writing: Mutex<()>,
}

impl DiskCache {
    /// The store's cache, holding at most `limit` bytes.
    pub fn open(store: &Store, limit: u64) -> DiskCache {
        DiskCache { dir: store.cache_dir(), limit, writing: Mutex::new(()) }
    }

    /// Entry `key`, if cached and `check` accepts its bytes. One that `check` refuses is
    /// removed: the caller fetches it again.
    pub fn get(&self, key: &str, check: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let path = self.dir.join(key);
        let bytes = fs::read(&path).ok()?;
        if !check(&bytes) {
            tracing::warn!("cache entry {} fails its digest; fetching it again", path.display());
            let _ = fs::remove_file(&path);
            return None;
        }
        // Most recently used now. A failure (the entry just evicted) changes nothing.
        if let Ok(f) = fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    /// Keep `bytes` (already checked by the caller) as entry `key`, evicting first to
    /// make room. A failure to write is not an error for the read that fetched them.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let len = bytes.len() as u64;
        if len > self.limit {
            return;
        }
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.evict(key, self.limit - len);
        let written = create_temp(&self.dir, DERIVED_TEMP).and_then(|(tmp, mut file)| {
            let done = file.write_all(bytes).and_then(|()| fs::rename(&tmp, self.dir.join(key))).map_err(Into::into);
            if done.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            done
        });
        if let Err(e) = written {
            tracing::warn!("cannot cache {key}: {}", crate::log::Chain(&e));
        }
    }

    /// Remove the least recently used entries until the whole cache (every process's
    /// entries, and `key`'s old copy if any) holds at most `target` bytes. One directory
    /// scan per new entry: a new entry costs a network round trip, which dwarfs it.
    /// Processes sharing the cache each keep to the bound; two writing at the same
    /// moment may together pass it by an entry each, until the next write.
    fn evict(&self, key: &str, target: u64) {
        let Ok(dir) = fs::read_dir(&self.dir) else { return };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let mut total = 0u64;
        for e in dir.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += meta.len();
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Temp files count against the bound but belong to their writers.
            if name.starts_with(DERIVED_TEMP) {
                continue;
            }
            if name == key {
                // Replaced by the new entry: oldest of all.
                entries.push((SystemTime::UNIX_EPOCH, meta.len(), e.path()));
                continue;
            }
            entries.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), e.path()));
        }
        if total <= target {
            return;
        }
        entries.sort_by_key(|(t, _, _)| *t);
        for (_, len, path) in entries {
            if total <= target {
                break;
            }
            // Another process may have evicted it first; either way it is gone.
            let _ = fs::remove_file(&path);
            total = total.saturating_sub(len);
        }
    }

    /// Empty the cache (for `imgfs prune`), returning the bytes freed. Entries being
    /// written are left to their writers.
    pub fn clear(store: &Store) -> Result<u64> {
        let mut freed = 0;
        let Ok(dir) = fs::read_dir(store.cache_dir()) else { return Ok(0) };
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(DERIVED_TEMP) {
                continue;
            }
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(e.path()).is_ok() {
                freed += len;
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_and_the_least_recently_used_go_first() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let cache = DiskCache::open(&store, 3000);
        let ok = |_: &[u8]| true;
        cache.put("a", &[1; 1000]);
        cache.put("b", &[2; 1000]);
        // a used after b: b is the least recently used now.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(cache.get("a", ok).unwrap(), vec![1; 1000]);
        cache.put("c", &[3; 1000]);
        cache.put("d", &[4; 1000]);
        assert!(cache.get("b", ok).is_none(), "b was least recently used");
        assert!(cache.get("a", ok).is_some() && cache.get("d", ok).is_some());
        // An entry its check refuses is removed, not served.
        assert!(cache.get("a", |b: &[u8]| b[0] == 9).is_none());
        assert!(!store.cache_dir().join("a").exists());
        assert!(DiskCache::clear(&store).unwrap() >= 1000);
        assert_eq!(fs::read_dir(store.cache_dir()).unwrap().count(), 0);
    }
}
