//! A blob file read by position while it may still be arriving: the parallel decoder
//! (`pargz`) reads compressed bytes from any offset of a layer's blob, and a download
//! writes that blob front to back at the same time. A read past what has arrived waits
//! for it (the download frontier), so the decoder's chunks follow the download instead
//! of waiting for its end. A blob already whole (in the store, in a layout) is the same
//! thing with the frontier at its end.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex};

/// A blob of known final length, read by position.
pub struct Arriving {
    file: File,
    len: u64,
    state: Mutex<State>,
    moved: Condvar,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes from the start are written and may be read.
    Written(u64),
    /// The writer gave up (a failed or restarted download): reads fail.
    Failed,
}

impl Arriving {
    /// A blob of `len` bytes that a writer is filling through another handle of `file`;
    /// nothing has arrived yet.
    pub fn new(file: File, len: u64) -> Arriving {
        Arriving { file, len, state: Mutex::new(State::Written(0)), moved: Condvar::new() }
    }

    /// A blob that is whole: `file` as it is now.
    pub fn whole(file: File) -> io::Result<Arriving> {
        let len = file.metadata()?.len();
        Ok(Arriving { file, len, state: Mutex::new(State::Written(len)), moved: Condvar::new() })
    }

    /// The blob's final length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes from the start have arrived (the whole blob once it is whole).
    pub fn frontier(&self) -> u64 {
        match *self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Written(w) => w,
            State::Failed => 0,
        }
    }

    /// The writer has written the first `n` bytes (flushed to the file).
    pub fn arrived(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let State::Written(w) = *s {
            *s = State::Written(w.max(n.min(self.len)));
            self.moved.notify_all();
        }
    }

    /// The writer stopped for good before the end: every read waiting, or to come, fails.
    pub fn fail(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = State::Failed;
        self.moved.notify_all();
    }

    /// Reads into `buf` at `at`, waiting until at least one byte there has arrived; 0 only
    /// at or past the end of the blob. Reads never see bytes past the frontier, which
    /// may not be written yet.
    pub fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<usize> {
        if at >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let written = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match *s {
                    State::Failed => return Err(io::Error::other("the layer's download stopped")),
                    State::Written(w) if w > at => break w,
                    State::Written(_) => s = self.moved.wait(s).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        let n = buf.len().min(usize::try_from(written - at).unwrap_or(usize::MAX));
        let got = self.file.read_at(&mut buf[..n], at)?;
        if got == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the layer's blob is shorter than it said"));
        }
        Ok(got)
    }

    /// Fills `buf` from `at`, waiting as needed; fewer bytes only at the end of the blob.
    pub fn read_full_at(&self, buf: &mut [u8], at: u64) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.read_at(&mut buf[n..], at + n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }

    /// A front-to-back reader over the blob (for the sequential decoders).
    pub fn reader(&self) -> Sequential<'_> {
        Sequential { blob: self, at: 0 }
    }
}

/// Reads an [`Arriving`] blob in order.
pub struct Sequential<'a> {
    blob: &'a Arriving,
    at: u64,
}

impl io::Read for Sequential<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.blob.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Arc;

    #[test]
    fn reads_wait_for_the_writer_and_see_only_what_arrived() {
        let mut writer = tempfile::tempfile().unwrap();
        let blob = Arc::new(Arriving::new(writer.try_clone().unwrap(), 10));
        let reader = {
            let blob = Arc::clone(&blob);
            std::thread::spawn(move || {
                let mut all = Vec::new();
                blob.reader().read_to_end(&mut all).unwrap();
                all
            })
        };
        for part in [&b"abc"[..], b"defg", b"hij"] {
            writer.write_all(part).unwrap();
            let pos = writer.metadata().unwrap().len();
            blob.arrived(pos);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(reader.join().unwrap(), b"abcdefghij");
        let mut buf = [0; 4];
        assert_eq!(blob.read_at(&mut buf, 8).unwrap(), 2);
        assert_eq!(blob.read_at(&mut buf, 10).unwrap(), 0);
    }

    #[test]
    fn a_failed_writer_fails_the_readers_waiting() {
        let blob = Arc::new(Arriving::new(tempfile::tempfile().unwrap(), 10));
        let waiting = {
            let blob = Arc::clone(&blob);
            std::thread::spawn(move || blob.read_at(&mut [0; 4], 3))
        };
        std::thread::sleep(std::time::Duration::from_millis(5));
        blob.fail();
        assert!(waiting.join().unwrap().is_err());
        assert!(blob.read_at(&mut [0; 1], 0).is_err());
    }
}
