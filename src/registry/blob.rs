//! Blob transfers: a whole blob streamed into a file, hashed on the way and checked
//! against its digest and size, resuming with `Range` when the connection breaks; and a
//! byte range of a blob, for reads that need only a span of a layer. Both cope with
//! registries that ignore `Range` and send the whole blob with 200.

use super::error::{RegistryError, Subject};
use super::retry::Retries;
use super::{check_repository, fail, Client};
use crate::digest::{Digest, HashingWriter};
use reqwest::blocking::Response;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

const COPY_BUFFER: usize = 256 << 10;

/// Where a downloaded blob goes: a file, or a file plus something that reads the bytes
/// as they pass (a layer's indexer).
pub trait BlobSink: Write {
    /// Forget everything written so far: the server is sending the blob again from its
    /// first byte.
    fn restart(&mut self) -> io::Result<()>;
}

impl BlobSink for File {
    fn restart(&mut self) -> io::Result<()> {
        self.set_len(0)?;
        self.seek(SeekFrom::Start(0))?;
        Ok(())
    }
}

/// A small blob (an image config) kept in memory until it has been checked.
impl BlobSink for Vec<u8> {
    fn restart(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
}

impl Client {
    /// Streams the blob into `out` (a fresh, empty file opened read+write), hashing
    /// while writing; on a dropped connection or a read error, retries (retry.rs; an
    /// attempt that got further than any before renews the budget) resuming with
    /// `Range: bytes=N-` from what is already written; if the server answers a resume
    /// with 200 instead of 206, truncates and starts over. At the end checks size (if expected_size is Some) and digest;
    /// mismatch -> error (the caller deletes the temp file). Returns bytes written.
    ///
    /// Asked of the mirrors configured for `registry` first, then of the registry.
    pub fn download_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        expected_size: Option<u64>,
        out: &mut dyn BlobSink,
    ) -> Result<u64, RegistryError> {
        // Each try starts the sink afresh (`restart` below), so a mirror that fails
        // midway leaves nothing behind for the next.
        self.via_mirrors(registry, repository, true, |r, repo| {
            self.download_blob_from(r, repo, digest, expected_size, &mut *out)
        })
    }

    fn download_blob_from(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        expected_size: Option<u64>,
        out: &mut dyn BlobSink,
    ) -> Result<u64, RegistryError> {
        check_repository(repository)?;
        let subject = Subject::Blob { repository, digest };
        let what = subject.describe(registry);
        let url = self.url(registry, &format!("v2/{repository}/blobs/{digest}"))?;
        let local = |e: io::Error| RegistryError::LocalIo { what: what.clone(), source: e };
        let mut retries = Retries::new(registry, &what, self.timeout);

        let mut sink = restart(HashingWriter::new(out)).map_err(local)?;
        let mut written: u64 = 0;
        let mut furthest: u64 = 0;
        loop {
            let resuming = written > 0;
            let mut headers = HeaderMap::new();
            if resuming {
                headers.insert(RANGE, range_header(written, None));
            }
            // `get` itself retries failures to connect and 5xx/429 answers.
            let resp = self.get(registry, subject, &url, &headers)?;
            let status = resp.status();
            match status {
                StatusCode::OK => {
                    // A whole blob, whether or not we asked for the rest only.
                    if resuming {
                        sink = restart(sink).map_err(local)?;
                        written = 0;
                    }
                }
                StatusCode::PARTIAL_CONTENT if content_range_start(resp.headers()) == Some(written) => {}
                // We asked for bytes past the end: the file already holds the whole
                // blob (the break came after the last byte). The checks below decide.
                StatusCode::RANGE_NOT_SATISFIABLE if resuming => break,
                s if s.is_success() => {
                    // A range other than the one asked for: start again from scratch.
                    let asked = written;
                    sink = restart(sink).map_err(local)?;
                    written = 0;
                    retries.pause(format!("asked for bytes from {asked}, got {s} with another range"))?;
                    continue;
                }
                _ => return Err(fail(registry, subject, resp)),
            }

            // One byte over the expected size is enough to know it is wrong; reading
            // on would only fill the disk.
            let limit = expected_size.map(|s| s.saturating_sub(written) + 1);
            let (n, copied) = copy_body(resp, &mut sink, limit);
            written += n;
            // Progress means further into the blob than ever: a server that ignores
            // Range and breaks off at the same place each time is not progressing.
            if written > furthest {
                furthest = written;
                retries.progressed();
            }
            if let Some(expected) = expected_size.filter(|s| written > *s) {
                return Err(RegistryError::SizeMismatch { what: what.clone(), expected, actual: written });
            }
            match copied {
                Ok(()) => match expected_size {
                    // A body that ends cleanly but short (a close-delimited answer cut
                    // off) is a break like any other.
                    Some(expected) if written < expected => {
                        retries.pause(format!("connection closed after {written} of {expected} bytes"))?;
                    }
                    _ => break,
                },
                Err(CopyError::Read(e)) => retries.pause(format!("connection lost after {written} bytes: {e}"))?,
                Err(CopyError::Write(e)) => return Err(local(e)),
            }
        }

        sink.flush().map_err(local)?;
        let (_, actual, count) = sink.finish();
        debug_assert_eq!(count, written);
        if let Some(expected) = expected_size.filter(|s| *s != written) {
            return Err(RegistryError::SizeMismatch { what, expected, actual: written });
        }
        if actual != *digest {
            return Err(RegistryError::DigestMismatch { what, expected: digest.clone(), actual });
        }
        Ok(written)
    }

    /// Bytes [offset, offset+len) of a blob via a Range request; if the registry
    /// answers 200 with the whole blob, skips to offset and takes len bytes. A short
    /// read at the end of the blob is fine (returns fewer bytes, none past the end).
    pub fn read_blob_range(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        self.via_mirrors(registry, repository, true, |r, repo| self.read_blob_range_from(r, repo, digest, offset, len))
    }

    fn read_blob_range_from(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        check_repository(repository)?;
        let subject = Subject::Blob { repository, digest };
        let url = self.url(registry, &format!("v2/{repository}/blobs/{digest}"))?;
        let end = offset.saturating_add(len); // exclusive
        let what = format!("bytes {offset}..{end} of {}", subject.describe(registry));
        let mut retries = Retries::new(registry, &what, self.timeout);
        let mut data = Vec::with_capacity(len.min(8 << 20) as usize);
        loop {
            let from = offset + data.len() as u64;
            if from >= end {
                return Ok(data);
            }
            let mut headers = HeaderMap::new();
            headers.insert(RANGE, range_header(from, Some(end - 1)));
            let mut resp = self.get(registry, subject, &url, &headers)?;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT => match content_range_start(resp.headers()) {
                    Some(start) if start == from => {}
                    // 206 without Content-Range breaks the spec, but the body can only
                    // be what we asked for.
                    None => {}
                    Some(start) => {
                        return Err(RegistryError::InvalidResponse {
                            registry: registry.to_string(),
                            what: what.clone(),
                            reason: format!("asked for a range from byte {from}, got one from byte {start}"),
                        })
                    }
                },
                StatusCode::OK => {
                    // Registries are not all kind: this one sent the whole blob.
                    match io::copy(&mut (&mut resp).take(from), &mut io::sink()) {
                        Ok(skipped) if skipped < from => return Ok(data), // the blob ends before `from`
                        Ok(_) => {}
                        Err(e) => {
                            retries.pause(format!("connection lost: {e}"))?;
                            continue;
                        }
                    }
                }
                StatusCode::RANGE_NOT_SATISFIABLE => return Ok(data), // `from` is past the end
                _ => return Err(fail(registry, subject, resp)),
            }
            let want = end - from;
            let (n, copied) = copy_body(resp, &mut data, Some(want));
            if n > 0 {
                retries.progressed(); // `data` only ever grows
            }
            match copied {
                Ok(()) => return Ok(data),
                Err(CopyError::Read(e)) => retries.pause(format!("connection lost: {e}"))?,
                Err(CopyError::Write(e)) => unreachable!("writing to a Vec cannot fail: {e}"),
            }
        }
    }
}

/// Empty the sink and start hashing afresh.
fn restart(sink: HashingWriter<&mut dyn BlobSink>) -> io::Result<HashingWriter<&mut dyn BlobSink>> {
    let (out, _, _) = sink.finish();
    out.restart()?;
    Ok(HashingWriter::new(out))
}

fn range_header(from: u64, to: Option<u64>) -> HeaderValue {
    let v = match to {
        Some(to) => format!("bytes={from}-{to}"),
        None => format!("bytes={from}-"),
    };
    HeaderValue::from_str(&v).expect("digits and ASCII")
}

/// START of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

enum CopyError {
    /// From the network: worth a retry.
    Read(io::Error),
    /// From our side (disk full, …): not.
    Write(io::Error),
}

/// Copy at most `limit` bytes of the body; returns how many were copied either way.
fn copy_body(mut body: Response, out: &mut impl Write, limit: Option<u64>) -> (u64, Result<(), CopyError>) {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut n: u64 = 0;
    loop {
        let want = match limit {
            Some(l) => (l - n).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        if want == 0 {
            return (n, Ok(()));
        }
        match body.read(&mut buf[..want]) {
            Ok(0) => return (n, Ok(())),
            Ok(k) => {
                if let Err(e) = out.write_all(&buf[..k]) {
                    return (n, Err(CopyError::Write(e)));
                }
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (n, Err(CopyError::Read(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start_is_read() {
        let mut h = HeaderMap::new();
        assert_eq!(content_range_start(&h), None);
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 100-199/1000"));
        assert_eq!(content_range_start(&h), Some(100));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 0-9/*"));
        assert_eq!(content_range_start(&h), Some(0));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes */1000"));
        assert_eq!(content_range_start(&h), None);
    }
}
