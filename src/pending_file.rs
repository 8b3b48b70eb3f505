//! A file (or directory) written under a temporary name beside where it goes and
//! renamed into place only once it is complete, so that a command that fails halfway
//! leaves nothing half-written at its destination: `export -o`, `cp`; and the hidden
//! temporary names `cp` makes what it merges into a directory under.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A temporary name beside `dest`: hidden, and unique to this process and attempt.
pub fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    dest.with_file_name(temp_name(&name))
}

/// A temporary name inside the directory `dir`, as hidden and unique.
pub fn temp_in(dir: &Path) -> PathBuf {
    dir.join(temp_name("merge"))
}

fn temp_name(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(".{name}.imgfs-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A file being written; `commit` renames it to its destination, dropping it removes it.
pub struct PendingFile {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
}

impl PendingFile {
    /// Start writing what will become `dest`, with permission bits `mode` (before the umask).
    pub fn create(dest: &Path, mode: u32) -> io::Result<PendingFile> {
        let temp = temp_beside(dest);
        let file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp)?;
        Ok(PendingFile { file: Some(file), temp, dest: dest.to_path_buf() })
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until committed")
    }

    /// Flush it and put it in place (replacing a file there). When that fails, the
    /// temporary file goes when this is dropped, as for one never committed.
    pub fn commit(mut self) -> io::Result<()> {
        self.file().sync_all()?;
        std::fs::rename(&self.temp, &self.dest)?;
        self.file = None;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl io::Write for PendingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::PendingFile;
    use std::io::Write;

    #[test]
    fn a_commit_that_fails_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory at the destination: the rename fails (EISDIR).
        let dest = dir.path().join("taken");
        std::fs::create_dir(&dest).unwrap();
        let mut file = PendingFile::create(&dest, 0o644).unwrap();
        file.write_all(b"complete, but with nowhere to go\n").unwrap();
        assert!(file.commit().is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["taken"], "the temporary file stays after a failed commit");
    }

    #[test]
    fn a_commit_puts_the_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let mut file = PendingFile::create(&dest, 0o644).unwrap();
        file.write_all(b"done\n").unwrap();
        file.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"done\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
