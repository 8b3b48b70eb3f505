//! Advisory file locks (`flock`) that order the store's writers: short exclusive
//! holds around record updates, and a shared/exclusive pair that keeps garbage
//! collection from sweeping blobs a pull is still writing.
//!
//! `std::fs::File::lock`/`lock_shared` are `flock(2)` on Linux (the tests watch
//! `/proc/locks` for a blocked FLOCK); what this adds is the lock file's creation with
//! the store's mode, the retry when a signal interrupts the wait, and a guard whose drop
//! (closing the file) releases the lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A held lock; dropping it (closing the file) releases it.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub fn shared(path: &Path) -> super::Result<FileLock> {
        Self::take(path, File::lock_shared)
    }

    pub fn exclusive(path: &Path) -> super::Result<FileLock> {
        Self::take(path, File::lock)
    }

    /// A failure names the lock file: the OS error alone ("Is a directory") says nothing
    /// of which file or why imgfs wanted it.
    fn take(path: &Path, lock: fn(&File) -> io::Result<()>) -> super::Result<FileLock> {
        let named = || super::io(format!("cannot lock {}", path.display()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(super::FILE_MODE)
            .open(path)
            .map_err(named())?;
        loop {
            match lock(&file) {
                Ok(()) => return Ok(FileLock { _file: file }),
                // flock(2) returns EINTR when a signal handler runs during the wait; a
                // signal handled elsewhere in the process must not fail the lock.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(named()(e)),
            }
        }
    }
}
