//! The indexing pass's decoder: reads a compressed layer stream once, front to back (it can
//! sit directly on a download), yields the uncompressed bytes and notes, every `span` bytes
//! of output, a place where decoding can restart (see `checkpoints`): for gzip the bit
//! position of a deflate block boundary and the window before it, for zstd a frame start.

use super::checkpoints::{deflate_window, Checkpoint, Checkpoints, Format};
use super::zlib::{self, invalid_data, Inflater, WINDOW_SIZE};
use super::Result;
use std::io::{self, Read};

/// Compressed bytes read from the source at a time.
const INPUT_BUFFER: usize = 128 * 1024;

/// Read adapter over a compressed layer stream: yields the uncompressed bytes and records
/// checkpoints as it goes. One pass, no seeking, so it can sit directly on a download.
pub struct IndexingDecoder<R> {
    inner: R,
    engine: Engine,
    span: u64,
    input: Box<[u8]>,
    in_pos: usize,
    in_len: usize,
    /// Blob offset of `input[0]`.
    in_base: u64,
    input_eof: bool,
    out_total: u64,
    points: Vec<Checkpoint>,
    done: bool,
}

enum Engine {
    Gzip {
        inflater: Inflater,
        /// Between the end of one member and the start of the next (or of the first).
        between_members: bool,
        first_member: bool,
        deflater: flate2::Compress,
        window: Box<[u8]>,
    },
    Zstd {
        decoder: zstd::stream::raw::Decoder<'static>,
        in_frame: bool,
    },
}

impl<R: Read> IndexingDecoder<R> {
    /// Decodes `inner`, compressed as `format`, with a checkpoint about every `span` bytes
    /// of output (see `checkpoints::DEFAULT_SPAN`).
    pub fn new(inner: R, format: Format, span: u64) -> Result<Self> {
        ensure!(span > 0, "span must be positive");
        let engine = match format {
            // 15 + 16: a gzip wrapper with a 32 KiB window; zlib parses the member header.
            Format::Gzip => Engine::Gzip {
                inflater: Inflater::new(15 + 16)?,
                between_members: true,
                first_member: true,
                // Level 1: windows are written once per span and read once per decode; the
                // higher levels cost several times more for a few percent.
                deflater: flate2::Compress::new(flate2::Compression::fast(), false),
                window: vec![0; WINDOW_SIZE].into_boxed_slice(),
            },
            Format::Zstd => Engine::Zstd { decoder: zstd::stream::raw::Decoder::new()?, in_frame: false },
        };
        Ok(IndexingDecoder {
            inner,
            engine,
            span,
            input: vec![0; INPUT_BUFFER].into_boxed_slice(),
            in_pos: 0,
            in_len: 0,
            in_base: 0,
            input_eof: false,
            out_total: 0,
            points: Vec::new(),
            done: false,
        })
    }

    /// The checkpoints, once the stream has been read to EOF.
    pub fn finish(self) -> Result<Checkpoints> {
        ensure!(self.done, "IndexingDecoder::finish before the end of the stream");
        let format = match self.engine {
            Engine::Gzip { .. } => Format::Gzip,
            Engine::Zstd { .. } => Format::Zstd,
        };
        let mut points = self.points;
        // A checkpoint at the very end (an empty stream, or an empty last member) would be an
        // empty span.
        points.retain(|p| p.uncompressed < self.out_total);
        Ok(Checkpoints::new(format, self.span, self.in_base + self.in_len as u64, self.out_total, points))
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.in_pos == self.in_len && !self.input_eof {
            self.in_base += self.in_len as u64;
            self.in_pos = 0;
            self.in_len = 0;
            let n = loop {
                match self.inner.read(&mut self.input) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            self.in_len = n;
            self.input_eof = n == 0;
        }
        Ok(())
    }

    fn due(&self) -> bool {
        self.points.last().is_none_or(|p| self.out_total - p.uncompressed >= self.span)
    }

    fn read_gzip(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.in_pos == self.in_len && !self.input_eof {
                self.fill()?;
                continue;
            }
            let Engine::Gzip { inflater, between_members, first_member, deflater, window } = &mut self.engine else {
                unreachable!()
            };
            if *between_members {
                if self.in_pos == self.in_len {
                    self.done = true;
                    return Ok(0);
                }
                if !*first_member {
                    inflater.reset()?;
                }
                *first_member = false;
                *between_members = false;
            }
            let input = &self.input[self.in_pos..self.in_len];
            // Z_BLOCK: return at every block boundary, where a checkpoint can go.
            let (ret, consumed, produced) = inflater.inflate(input, buf, zlib::Z_BLOCK);
            self.in_pos += consumed;
            self.out_total += produced as u64;
            match ret {
                zlib::Z_OK | zlib::Z_BUF_ERROR => {
                    let state = inflater.data_type();
                    // 128: stopped at a block boundary (or just after the header); 64: the
                    // block just finished was the member's last, so the trailer follows.
                    let at_boundary = state & 128 != 0 && state & 64 == 0;
                    let due = self.points.last().is_none_or(|p| self.out_total - p.uncompressed >= self.span);
                    if at_boundary && due {
                        // Bits the inflater has taken but not used. zlib keeps fewer than 8 at
                        // a boundary; whole bytes are handed back just in case.
                        let held = (state & 63) as u64;
                        let next = self.in_base + self.in_pos as u64;
                        let compressed = next.checked_sub(held / 8).ok_or_else(|| invalid_data("bit count"))?;
                        let n = inflater.dictionary(window)?;
                        let stored = if n == 0 { Vec::new() } else { deflate_window(deflater, &window[..n])? };
                        self.points.push(Checkpoint {
                            uncompressed: self.out_total,
                            compressed,
                            bits: (held % 8) as u8,
                            window: stored,
                        });
                    }
                    if consumed == 0 && produced == 0 && ret == zlib::Z_BUF_ERROR {
                        if self.input_eof {
                            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "gzip stream is truncated"));
                        }
                        if self.in_pos < self.in_len {
                            return Err(invalid_data("inflate made no progress"));
                        }
                    }
                }
                zlib::Z_STREAM_END => *between_members = true,
                _ => return Err(inflater.error(ret)),
            }
            if produced > 0 {
                return Ok(produced);
            }
        }
    }

    fn read_zstd(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.in_pos == self.in_len && !self.input_eof {
                self.fill()?;
                continue;
            }
            let due = self.due();
            let Engine::Zstd { decoder, in_frame } = &mut self.engine else { unreachable!() };
            if !*in_frame {
                if self.in_pos == self.in_len {
                    self.done = true;
                    return Ok(0);
                }
                if due {
                    self.points.push(Checkpoint {
                        uncompressed: self.out_total,
                        compressed: self.in_base + self.in_pos as u64,
                        bits: 0,
                        window: Vec::new(),
                    });
                }
                *in_frame = true;
            }
            use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
            let mut inb = InBuffer::around(&self.input[self.in_pos..self.in_len]);
            let mut outb = OutBuffer::around(&mut *buf);
            let hint = decoder.run(&mut inb, &mut outb)?;
            let (consumed, produced) = (inb.pos(), outb.pos());
            self.in_pos += consumed;
            self.out_total += produced as u64;
            if hint == 0 {
                // The frame is decoded and flushed; the next byte starts a new frame.
                *in_frame = false;
            } else if consumed == 0 && produced == 0 && self.in_pos == self.in_len && self.input_eof {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "zstd stream is truncated"));
            }
            if produced > 0 {
                return Ok(produced);
            }
        }
    }
}

impl<R: Read> Read for IndexingDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.done {
            return Ok(0);
        }
        match self.engine {
            Engine::Gzip { .. } => self.read_gzip(buf),
            Engine::Zstd { .. } => self.read_zstd(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::checkpoints::{MAGIC, VERSION};
    use crate::layer::testdata::*;
    use flate2::Compression;
    use std::io::Write;

    /// Hands out the blob a few bytes at a time, as a network stream may.
    struct Dribble<'a> {
        data: &'a [u8],
        rng: Rng,
        max: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (1 + self.rng.below(self.max as u64) as usize).min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Runs the indexing pass with uneven input and output chunks.
    fn index(blob: &[u8], format: Format, span: u64, max_chunk: usize) -> (Vec<u8>, Checkpoints) {
        let input = Dribble { data: blob, rng: Rng(99), max: max_chunk };
        let mut dec = IndexingDecoder::new(input, format, span).unwrap();
        let mut rng = Rng(7);
        let mut out = Vec::new();
        let mut buf = vec![0; 70_000];
        loop {
            let want = 1 + rng.below(buf.len() as u64) as usize;
            match dec.read(&mut buf[..want]).unwrap() {
                0 => break,
                n => out.extend_from_slice(&buf[..n]),
            }
        }
        (out, dec.finish().unwrap())
    }

    #[test]
    fn single_member_gzip() {
        let data = mixed(6 << 20, 1);
        let blob = gzip(&data, 6);
        let (out, cps) = index(&blob, Format::Gzip, 256 * 1024, 1 << 16);
        assert!(out == plain_gunzip(&blob));
        assert!(cps.span_count() >= 10, "only {} spans", cps.span_count());
        // Most checkpoints fall inside a byte and carry a window: the hard case is covered.
        assert!(cps.checkpoint_list().iter().any(|p| p.bits != 0));
        assert!(cps.checkpoint_list().iter().skip(1).all(|p| !p.window.is_empty()));
        assert!(cps.is_seekable());
        check_random_access(&blob, &data, &cps);
    }

    /// Checkpoints live as long as the layer: a window of zeros must cost its deflated
    /// size (tens of bytes), not the room reserved for the worst case.
    #[test]
    fn windows_of_zeros_keep_little_memory() {
        let data = vec![0u8; 16 << 20];
        let blob = gzip(&data, 9);
        let (_, cps) = index(&blob, Format::Gzip, 1 << 20, 1 << 16);
        assert!(cps.span_count() >= 3, "only {} spans", cps.span_count());
        let held: usize = cps.checkpoint_list().iter().map(|p| p.window.capacity()).sum();
        assert!(held < cps.span_count() * 1024, "{held} bytes for {} windows", cps.span_count());
        check_random_access(&blob, &data, &cps);
    }

    #[test]
    fn multi_member_gzip() {
        let sizes = [10_000, 300_000, 0, 1_000, 700_000, 5_000, 2_000_000, 50_000, 64 * 1024, 3];
        let mut blob = Vec::new();
        let mut data = Vec::new();
        for (k, &n) in sizes.iter().enumerate() {
            let part = mixed(n, 10 + k as u64);
            match k % 3 {
                0 => blob.extend(gzip(&part, 6)),
                1 => {
                    let mut e = flate2::GzBuilder::new().filename("layer.tar").write(Vec::new(), Compression::fast());
                    e.write_all(&part).unwrap();
                    blob.extend(e.finish().unwrap());
                }
                _ => blob.extend(gzip_all_fields(&part)),
            }
            data.extend(part);
        }
        assert!(plain_gunzip(&blob) == data);
        let (out, cps) = index(&blob, Format::Gzip, 64 * 1024, 5000);
        assert!(out == data);
        check_random_access(&blob, &data, &cps);
        // Spans that cross into a later member were exercised.
        let member_starts = cps.checkpoint_list().iter().filter(|p| p.window.is_empty()).count();
        assert!(member_starts >= 2 && member_starts < cps.span_count());
    }

    #[test]
    fn tiny_reads_and_tiny_members() {
        let mut blob = Vec::new();
        let mut data = Vec::new();
        for k in 0..40 {
            let part = mixed(1 + k * 997, 100 + k as u64);
            blob.extend(if k % 2 == 0 { gzip_all_fields(&part) } else { gzip(&part, 1) });
            data.extend(part);
        }
        let (out, cps) = index(&blob, Format::Gzip, 4096, 3);
        assert!(out == data);
        check_random_access(&blob, &data, &cps);
    }

    #[test]
    fn stored_gzip() {
        let data = mixed(3 << 20, 2);
        let blob = gzip(&data, 0);
        let (out, cps) = index(&blob, Format::Gzip, 200_000, 1 << 16);
        assert!(out == data);
        assert!(cps.span_count() >= 10);
        check_random_access(&blob, &data, &cps);
    }

    #[test]
    fn multi_frame_zstd() {
        let mut blob = Vec::new();
        let mut data = Vec::new();
        for (k, n) in [100_000, 5, 300_000, 390_000, 20_000, 0, 350_000, 3].into_iter().enumerate() {
            let part = mixed(n, 30 + k as u64);
            blob.extend(zstd::bulk::compress(&part, 3).unwrap());
            if k == 2 {
                // A skippable frame between data frames.
                blob.extend(0x184d_2a50u32.to_le_bytes());
                blob.extend(4u32.to_le_bytes());
                blob.extend(b"skip");
            }
            data.extend(part);
        }
        let (out, cps) = index(&blob, Format::Zstd, 100_000, 1 << 16);
        assert!(out == data);
        assert!(cps.is_seekable());
        assert!(cps.span_count() >= 4);
        check_random_access(&blob, &data, &cps);
    }

    #[test]
    fn one_big_zstd_frame_is_not_seekable() {
        let data = mixed(2 << 20, 3);
        let blob = zstd::bulk::compress(&data, 3).unwrap();
        let (out, cps) = index(&blob, Format::Zstd, 64 * 1024, 1 << 16);
        assert!(out == data);
        assert_eq!(cps.span_count(), 1);
        assert!(!cps.is_seekable());
        check_random_access(&blob, &data, &cps);
    }

    #[test]
    fn empty_and_truncated_streams() {
        let (out, cps) = index(&gzip(b"", 6), Format::Gzip, 1024, 100);
        assert!(out.is_empty());
        assert_eq!((cps.span_count(), cps.span_of(0)), (0, 0));

        let blob = gzip(&mixed(100_000, 4), 6);
        for cut in [5, 20, blob.len() / 2, blob.len() - 4] {
            let mut dec = IndexingDecoder::new(&blob[..cut], Format::Gzip, 1024).unwrap();
            assert!(io::copy(&mut dec, &mut io::sink()).is_err(), "cut at {cut}");
        }
        let blob = zstd::bulk::compress(&mixed(100_000, 4), 3).unwrap();
        let mut dec = IndexingDecoder::new(&blob[..blob.len() - 3], Format::Zstd, 1024).unwrap();
        assert!(io::copy(&mut dec, &mut io::sink()).is_err());
        let mut dec = IndexingDecoder::new(&b"not gzip at all"[..], Format::Gzip, 1024).unwrap();
        assert!(io::copy(&mut dec, &mut io::sink()).is_err());
    }

    #[test]
    fn corrupt_checkpoint_files_are_errors() {
        let data = mixed(1 << 20, 5);
        let blob = gzip(&data, 6);
        let (_, cps) = index(&blob, Format::Gzip, 100_000, 1 << 16);
        let mut saved = Vec::new();
        cps.save(&mut saved).unwrap();
        let step = (saved.len() / 300).max(1);
        for cut in (0..saved.len()).step_by(step) {
            assert!(Checkpoints::load(&saved[..cut]).is_err(), "truncated at {cut}");
        }
        let mut rng = Rng(11);
        for _ in 0..300 {
            let mut bad = saved.clone();
            let at = rng.below(bad.len() as u64) as usize;
            bad[at] ^= 1 << rng.below(8);
            assert!(Checkpoints::load(&bad[..]).is_err(), "flip at {at}");
        }
        let mut longer = saved.clone();
        longer.push(0);
        assert!(Checkpoints::load(&longer[..]).is_err());

        // Bodies with a valid CRC but impossible contents.
        let frame = |body: &[u8]| {
            let mut f = MAGIC.to_vec();
            f.extend(VERSION.to_le_bytes());
            f.extend((body.len() as u64).to_le_bytes());
            f.extend(body);
            let mut crc = flate2::Crc::new();
            crc.update(body);
            f.extend(crc.sum().to_le_bytes());
            f
        };
        let bodies: [&[u8]; 6] = [
            &[1, 1, 10, 10, 0xff, 0xff, 0xff, 0xff, 0x0f], // count far beyond the body
            &[1, 1, 10, 10, 1, 5, 1, 0, 0],                // first point not at 0
            &[1, 1, 10, 10, 1, 0, 11, 0, 0],               // past the end of the blob
            &[1, 1, 10, 10, 1, 0, 1, 9, 0],                // 9 bits
            &[2, 1, 10, 10, 1, 0, 1, 0, 1, 0],             // zstd with a window
            &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // varint overflow
        ];
        for body in bodies {
            assert!(Checkpoints::load(&frame(body)[..]).is_err(), "{body:?}");
        }
        assert!(Checkpoints::load(&frame(&[1, 1, 10, 10, 1, 0, 1, 0, 0])[..]).is_ok());

        // A blob that is not the one indexed gives errors or wrong bytes, never a panic.
        let file = blob_file(&blob[..blob.len() / 2]);
        assert!(cps.decode_span(&file, cps.span_count() - 1).is_err());
        let garbage = blob_file(&mixed(blob.len(), 77));
        for i in 0..cps.span_count() {
            let _ = cps.decode_span(&garbage, i);
        }
    }

    #[test]
    fn concurrent_decode_on_one_file() {
        let data = mixed(3 << 20, 6);
        let blob = gzip(&data, 6);
        let (_, cps) = index(&blob, Format::Gzip, 128 * 1024, 1 << 16);
        let file = blob_file(&blob);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (cps, file, data) = (&cps, &file, &data);
                s.spawn(move || {
                    let mut rng = Rng(1000 + t);
                    for _ in 0..12 {
                        let i = rng.below(cps.span_count() as u64) as usize;
                        let (start, end) = cps.span_range(i);
                        assert!(cps.decode_span(file, i).unwrap() == data[start as usize..end as usize]);
                    }
                });
            }
        });
    }
}
