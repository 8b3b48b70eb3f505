//! Advisory file locks (`flock`) that order the store's writers: short exclusive
//! holds around record updates, and a shared/exclusive pair that keeps garbage
//! collection from sweeping blobs a pull is still writing.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A held lock; dropping it (closing the file) releases it.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub fn shared(path: &Path) -> io::Result<FileLock> {
        Self::take(path, libc::LOCK_SH)
    }

    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        Self::take(path, libc::LOCK_EX)
    }

    fn take(path: &Path, op: libc::c_int) -> io::Result<FileLock> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(super::FILE_MODE).open(path)?;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}
