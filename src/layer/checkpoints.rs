//! Random access into a compressed layer blob without an uncompressed copy.
//!
//! While a gzip or zstd layer streams in for the first time, [`IndexingDecoder`] passes the
//! uncompressed bytes through and notes, every `span` bytes of output, a place where decoding
//! can restart: for gzip a zran checkpoint (the bit position of a deflate block boundary and
//! the 32 KiB of output before it, which later back-references may copy from), for zstd the
//! start of a frame. The resulting [`Checkpoints`] are small enough to keep next to the blob,
//! and [`Checkpoints::decode_span`] later rebuilds any one span from the blob alone with
//! positioned reads, so the FUSE threads can decode different spans of one file at once.
//!
//! Gzip goes through zlib-rs's C API (`libz-rs-sys`) because flate2 does not expose the two
//! calls a restart needs: `inflatePrime` (feed the leftover bits of a byte shared by two
//! blocks) and `inflateSetDictionary` on a raw stream (the window).

use super::{Context, Result};
use libz_rs_sys as zlib;
use std::ffi::{c_int, CStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

/// Uncompressed bytes between checkpoints unless the caller asks otherwise. A read of one byte
/// decodes on average half a span; 1 MiB is a few milliseconds of inflate.
pub const DEFAULT_SPAN: u64 = 1 << 20;

/// A span longer than this many times the requested span makes the layer "not seekable": a
/// small read would cost too much decoding. Only zstd gets there in practice (a frame can
/// only be entered at its start, and many encoders write one frame per layer).
pub const MAX_SPAN_FACTOR: u64 = 4;

/// Deflate's history: a back-reference reaches at most this far.
const WINDOW_SIZE: usize = 32 * 1024;
/// A deflated window may grow a little when the window is incompressible.
const MAX_STORED_WINDOW: usize = WINDOW_SIZE + WINDOW_SIZE / 8 + 64;
const INPUT_BUFFER: usize = 128 * 1024;

const MAGIC: &[u8; 8] = b"imgfsckp";
const VERSION: u32 = 1;

/// How the blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One or more gzip members, as `flate2::read::MultiGzDecoder` reads them.
    Gzip,
    /// One or more zstd frames (skippable frames allowed).
    Zstd,
}

impl Format {
    fn code(self) -> u8 {
        match self {
            Format::Gzip => 1,
            Format::Zstd => 2,
        }
    }
}

/// A place in the blob where decoding can restart.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Checkpoint {
    /// Offset in the uncompressed stream.
    uncompressed: u64,
    /// Offset in the blob of the first byte wholly after the checkpoint.
    compressed: u64,
    /// gzip: how many high bits of the byte at `compressed - 1` belong to the data after
    /// the checkpoint (zlib's "unused bits"); 0 means the checkpoint is byte-aligned.
    bits: u8,
    /// gzip: the up to 32 KiB of the member's output before the checkpoint, raw-deflated;
    /// empty at a member start. Always empty for zstd.
    window: Vec<u8>,
}

/// The restart points of one blob, and how to decode a span from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoints {
    format: Format,
    span: u64,
    compressed_size: u64,
    uncompressed_size: u64,
    points: Vec<Checkpoint>,
}

impl Checkpoints {
    pub fn format(&self) -> Format {
        self.format
    }

    /// Number of spans; 0 only for an empty stream.
    pub fn span_count(&self) -> usize {
        self.points.len()
    }

    /// The span holding `uncompressed_offset`, or `span_count()` when the offset is at or past
    /// the end of the stream.
    pub fn span_of(&self, uncompressed_offset: u64) -> usize {
        if uncompressed_offset >= self.uncompressed_size {
            return self.points.len();
        }
        // The first point is at 0, so at least one point is <= the offset.
        self.points.partition_point(|p| p.uncompressed <= uncompressed_offset) - 1
    }

    /// Span `i` as `(start, end)` uncompressed offsets, end exclusive. Panics if
    /// `i >= span_count()`, like slice indexing.
    pub fn span_range(&self, i: usize) -> (u64, u64) {
        let start = self.points[i].uncompressed;
        let end = self.points.get(i + 1).map_or(self.uncompressed_size, |p| p.uncompressed);
        (start, end)
    }

    pub fn uncompressed_size(&self) -> u64 {
        self.uncompressed_size
    }

    /// Size of the blob the checkpoints were taken from.
    pub fn compressed_size(&self) -> u64 {
        self.compressed_size
    }

    /// The span length asked for when indexing.
    pub fn requested_span(&self) -> u64 {
        self.span
    }

    /// The longest span: the most a single small read may have to decode.
    pub fn max_span_len(&self) -> u64 {
        (0..self.points.len()).map(|i| self.span_range(i)).map(|(s, e)| e - s).max().unwrap_or(0)
    }

    /// Whether reading through the checkpoints is cheap enough: no span is longer than
    /// [`MAX_SPAN_FACTOR`] times the requested span. When false, keep an uncompressed copy.
    pub fn is_seekable(&self) -> bool {
        self.max_span_len() <= self.span.saturating_mul(MAX_SPAN_FACTOR)
    }

    /// The blob bytes span `i` decodes from, as `(start, end)`, end exclusive: everything
    /// the span needs lies before the next checkpoint, including any member trailers and
    /// headers it crosses.
    /// Panics if `i >= span_count()`.
    pub fn compressed_range(&self, i: usize) -> (u64, u64) {
        let point = &self.points[i];
        let cend = self.points.get(i + 1).map_or(self.compressed_size, |p| p.compressed);
        (point.compressed - u64::from(point.bits > 0), cend)
    }

    /// Takes every point's window out, leaving the points without them: a published
    /// index keeps the windows apart, so that a reader fetches only the one its span
    /// needs (`index_artifact`).
    pub fn take_windows(&mut self) -> Vec<Vec<u8>> {
        self.points.iter_mut().map(|p| std::mem::take(&mut p.window)).collect()
    }

    /// Puts back point `i`'s window, as `take_windows` gave it.
    pub fn set_window(&mut self, i: usize, window: Vec<u8>) -> Result<()> {
        ensure!(i < self.points.len(), "checkpoint {i} out of range");
        ensure!(window.len() <= MAX_STORED_WINDOW, "checkpoint {i}: window of {} bytes", window.len());
        ensure!(self.format == Format::Gzip || window.is_empty(), "checkpoint {i}: zstd with a window");
        self.points[i].window = window;
        Ok(())
    }

    /// Decodes exactly span `i`'s uncompressed bytes from `blob`, the same compressed bytes
    /// the checkpoints were taken from. Uses only positioned reads and local state, so any
    /// number of threads may call it at once on one `File`.
    pub fn decode_span(&self, blob: &File, i: usize) -> io::Result<Vec<u8>> {
        self.check_span(i)?;
        let (cstart, cend) = self.compressed_range(i);
        let clen = usize::try_from(cend - cstart).map_err(|_| invalid_input("span too large".into()))?;
        let mut data = vec![0; clen];
        blob.read_exact_at(&mut data, cstart)?;
        self.decode_span_from(i, &data)
    }

    /// Decodes span `i` from `data`, the blob bytes `compressed_range(i)` names (read by
    /// a caller that checks them on the way).
    pub fn decode_span_from(&self, i: usize, data: &[u8]) -> io::Result<Vec<u8>> {
        self.check_span(i)?;
        let (start, end) = self.span_range(i);
        let len = usize::try_from(end - start).map_err(|_| invalid_input("span too large".into()))?;
        let mut out = vec![0; len];
        match self.format {
            Format::Gzip => inflate_span(&self.points[i], data, &mut out)?,
            Format::Zstd => {
                let mut dec = zstd::stream::read::Decoder::with_buffer(data)?;
                dec.read_exact(&mut out)?;
            }
        }
        Ok(out)
    }

    /// Decodes span `i` from `data` with `window` as its checkpoint's window, for
    /// checkpoints loaded without windows (a published index read by Range fetches
    /// each window with its span; see `layer::remote`).
    pub fn decode_span_with_window(&self, i: usize, window: &[u8], data: &[u8]) -> io::Result<Vec<u8>> {
        self.check_span(i)?;
        if self.format != Format::Gzip || window.is_empty() {
            return self.decode_span_from(i, data);
        }
        let (start, end) = self.span_range(i);
        let len = usize::try_from(end - start).map_err(|_| invalid_input("span too large".into()))?;
        let mut out = vec![0; len];
        let point = Checkpoint { window: window.to_vec(), ..self.points[i].clone() };
        inflate_span(&point, data, &mut out)?;
        Ok(out)
    }

    /// Each checkpoint as `(uncompressed offset, compressed offset, bits, window)`: what a
    /// layer's TOC file keeps of them, to be read back by position (`decode_point`).
    pub fn points(&self) -> impl Iterator<Item = (u64, u64, u8, &[u8])> {
        self.points.iter().map(|p| (p.uncompressed, p.compressed, p.bits, &p.window[..]))
    }

    /// Checkpoints from their parts (as `points` gives them), checked as `load` checks
    /// what it reads.
    pub fn from_points(
        format: Format,
        span: u64,
        compressed_size: u64,
        uncompressed_size: u64,
        points: impl IntoIterator<Item = (u64, u64, u8, Vec<u8>)>,
    ) -> Result<Checkpoints> {
        let mut body = vec![format.code()];
        let points: Vec<_> = points.into_iter().collect();
        for v in [span, compressed_size, uncompressed_size, points.len() as u64] {
            put_varint(&mut body, v);
        }
        let (mut last_out, mut last_in) = (0, 0);
        for (out, inp, bits, window) in &points {
            put_varint(&mut body, out.checked_sub(last_out).context("checkpoints out of order")?);
            put_varint(&mut body, inp.checked_sub(last_in).context("checkpoints out of order")?);
            body.push(*bits);
            put_varint(&mut body, window.len() as u64);
            body.extend_from_slice(window);
            (last_out, last_in) = (*out, *inp);
        }
        parse_body(&body)
    }

    fn check_span(&self, i: usize) -> io::Result<()> {
        if i >= self.points.len() {
            return Err(invalid_input(format!("span {i} out of range ({} spans)", self.points.len())));
        }
        Ok(())
    }

    /// Writes the checkpoints: magic, version, body length, body, CRC-32 of the body.
    pub fn save(&self, mut w: impl Write) -> Result<()> {
        let mut body = Vec::with_capacity(64 + self.points.iter().map(|p| 16 + p.window.len()).sum::<usize>());
        body.push(self.format.code());
        put_varint(&mut body, self.span);
        put_varint(&mut body, self.compressed_size);
        put_varint(&mut body, self.uncompressed_size);
        put_varint(&mut body, self.points.len() as u64);
        let (mut last_out, mut last_in) = (0, 0);
        for p in &self.points {
            // Deltas keep the offsets to two or three bytes each.
            put_varint(&mut body, p.uncompressed - last_out);
            put_varint(&mut body, p.compressed - last_in);
            body.push(p.bits);
            put_varint(&mut body, p.window.len() as u64);
            body.extend_from_slice(&p.window);
            (last_out, last_in) = (p.uncompressed, p.compressed);
        }
        let mut crc = flate2::Crc::new();
        crc.update(&body);
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(body.len() as u64).to_le_bytes())?;
        w.write_all(&body)?;
        w.write_all(&crc.sum().to_le_bytes())?;
        Ok(())
    }

    /// Reads what [`save`](Self::save) wrote, checking every length and offset: corrupt or
    /// truncated input gives an error, never a panic or a huge allocation.
    pub fn load(mut r: impl Read) -> Result<Checkpoints> {
        let mut head = [0; 20];
        r.read_exact(&mut head).context("checkpoint file is truncated")?;
        ensure!(&head[..8] == MAGIC, "not a checkpoint file");
        let version = u32::from_le_bytes(head[8..12].try_into().unwrap());
        ensure!(version == VERSION, "checkpoint file version {version}, expected {VERSION}");
        let body_len = u64::from_le_bytes(head[12..20].try_into().unwrap());
        let mut body = Vec::new();
        r.by_ref().take(body_len).read_to_end(&mut body)?;
        ensure!(body.len() as u64 == body_len, "checkpoint file is truncated");
        let mut crc = [0; 4];
        r.read_exact(&mut crc).context("checkpoint file is truncated")?;
        let mut sum = flate2::Crc::new();
        sum.update(&body);
        ensure!(sum.sum() == u32::from_le_bytes(crc), "checkpoint file is corrupt (CRC mismatch)");
        let mut extra = [0; 1];
        ensure!(r.read(&mut extra)? == 0, "trailing bytes after checkpoint file");
        parse_body(&body)
    }
}

/// The length of the uncompressed stream, from the first bytes of what
/// [`Checkpoints::save`] wrote (for showing an image's size without loading every
/// checkpoint; the CRC over the whole body is not checked here).
pub fn read_uncompressed_size(mut r: impl Read) -> Result<u64> {
    let mut head = [0; 20];
    r.read_exact(&mut head).context("checkpoint file is truncated")?;
    ensure!(&head[..8] == MAGIC, "not a checkpoint file");
    ensure!(head[8..12] == VERSION.to_le_bytes(), "checkpoint file of another version");
    // A format byte and three varints of at most 10 bytes each.
    let mut body = Vec::new();
    r.take(31).read_to_end(&mut body)?;
    let mut c = Cursor(&body);
    c.byte()?;
    c.varint()?;
    c.varint()?;
    c.varint()
}

fn parse_body(body: &[u8]) -> Result<Checkpoints> {
    let mut c = Cursor(body);
    let format = match c.byte()? {
        1 => Format::Gzip,
        2 => Format::Zstd,
        other => bail!("unknown compression code {other}"),
    };
    let span = c.varint()?;
    let compressed_size = c.varint()?;
    let uncompressed_size = c.varint()?;
    let count = c.varint()?;
    ensure!(span > 0, "span is zero");
    // Each point takes at least four bytes, which bounds the allocation below.
    ensure!(count <= (c.0.len() / 4) as u64, "checkpoint count {count} exceeds the file");
    let mut points = Vec::with_capacity(count as usize);
    let (mut last_out, mut last_in) = (0u64, 0u64);
    for i in 0..count {
        let d_out = c.varint()?;
        let d_in = c.varint()?;
        let bits = c.byte()?;
        let wlen = c.varint()?;
        ensure!(wlen <= MAX_STORED_WINDOW as u64, "checkpoint {i}: window of {wlen} bytes");
        let window = c.take(wlen as usize)?.to_vec();
        ensure!(i == 0 || d_out > 0, "checkpoint {i} does not advance");
        let uncompressed = last_out.checked_add(d_out).context("offset overflow")?;
        let compressed = last_in.checked_add(d_in).context("offset overflow")?;
        ensure!(i > 0 || uncompressed == 0, "first checkpoint is not at offset 0");
        ensure!(uncompressed < uncompressed_size, "checkpoint {i} lies past the end of the stream");
        ensure!(compressed <= compressed_size, "checkpoint {i} lies past the end of the blob");
        ensure!(bits < 8 && (bits == 0 || compressed > 0), "checkpoint {i}: bad bit offset {bits}");
        ensure!(format == Format::Gzip || (bits == 0 && window.is_empty()), "checkpoint {i}: zstd with a window");
        points.push(Checkpoint { uncompressed, compressed, bits, window });
        (last_out, last_in) = (uncompressed, compressed);
    }
    ensure!(c.0.is_empty(), "trailing bytes in checkpoint body");
    ensure!(!points.is_empty() || uncompressed_size == 0, "no checkpoints for a non-empty stream");
    Ok(Checkpoints { format, span, compressed_size, uncompressed_size, points })
}

/// Decodes the span `start..end` of the uncompressed stream from one checkpoint given by
/// its parts (a table kept elsewhere and read by position, as a layer's TOC file keeps
/// it): `compressed` and `bits` as `points` gives them, `window` as stored, `data` the
/// blob bytes from `compressed` (one byte earlier when `bits` > 0) to the next checkpoint.
pub fn decode_point(
    format: Format,
    (start, end): (u64, u64),
    (compressed, bits): (u64, u8),
    window: &[u8],
    data: &[u8],
) -> io::Result<Vec<u8>> {
    let len = usize::try_from(end.saturating_sub(start)).map_err(|_| invalid_input("span too large".into()))?;
    if bits >= 8 || window.len() > MAX_STORED_WINDOW {
        return Err(invalid_data("bad checkpoint"));
    }
    let mut out = vec![0; len];
    match format {
        Format::Gzip => {
            let point = Checkpoint { uncompressed: start, compressed, bits, window: window.to_vec() };
            inflate_span(&point, data, &mut out)?;
        }
        Format::Zstd => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(data)?;
            dec.read_exact(&mut out)?;
        }
    }
    Ok(out)
}

impl Format {
    /// The code a file stores for the format, and back.
    pub fn to_code(self) -> u8 {
        self.code()
    }

    pub fn from_code(code: u8) -> Option<Format> {
        match code {
            1 => Some(Format::Gzip),
            2 => Some(Format::Zstd),
            _ => None,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A bounds-checked reader over the checkpoint body.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(n <= self.0.len(), "checkpoint body is truncated");
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            ensure!(shift < 63 || part <= 1, "varint overflow");
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint too long")
    }
}

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
    /// of output (see [`DEFAULT_SPAN`]).
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
        Ok(Checkpoints {
            format,
            span: self.span,
            compressed_size: self.in_base + self.in_len as u64,
            uncompressed_size: self.out_total,
            points,
        })
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

fn deflate_window(deflater: &mut flate2::Compress, window: &[u8]) -> io::Result<Vec<u8>> {
    deflater.reset();
    let mut out = Vec::with_capacity(MAX_STORED_WINDOW);
    let status = deflater
        .compress_vec(window, &mut out, flate2::FlushCompress::Finish)
        .map_err(|e| io::Error::other(format!("deflating a window: {e}")))?;
    if status != flate2::Status::StreamEnd {
        return Err(io::Error::other("deflated window does not fit"));
    }
    // Kept for the life of the layer: one per span, so the room reserved for the worst
    // case (37 KiB) would cost that much per MiB of layer even for a window of zeros.
    out.shrink_to_fit();
    Ok(out)
}

fn inflate_window(stored: &[u8]) -> io::Result<Vec<u8>> {
    let mut window = Vec::with_capacity(WINDOW_SIZE);
    flate2::read::DeflateDecoder::new(stored).take(WINDOW_SIZE as u64 + 1).read_to_end(&mut window)?;
    if window.len() > WINDOW_SIZE {
        return Err(invalid_data("checkpoint window longer than 32 KiB"));
    }
    Ok(window)
}

/// Decodes `out.len()` bytes starting at `point`; `data` holds the blob from the checkpoint
/// (one byte earlier when it is not byte-aligned) to the next checkpoint.
fn inflate_span(point: &Checkpoint, data: &[u8], out: &mut [u8]) -> io::Result<()> {
    let mut inflater = Inflater::new(-15)?;
    let mut pos = 0;
    if point.bits > 0 {
        let byte = *data.first().ok_or_else(|| invalid_data("empty span"))?;
        inflater.prime(point.bits, byte >> (8 - point.bits))?;
        pos = 1;
    }
    if !point.window.is_empty() {
        inflater.set_dictionary(&inflate_window(&point.window)?)?;
    }
    let mut filled = 0;
    while filled < out.len() {
        let (ret, consumed, produced) = inflater.inflate(&data[pos..], &mut out[filled..], zlib::Z_NO_FLUSH);
        pos += consumed;
        filled += produced;
        match ret {
            zlib::Z_OK => {}
            zlib::Z_BUF_ERROR if consumed > 0 || produced > 0 => {}
            zlib::Z_BUF_ERROR => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "span data ends early"));
            }
            zlib::Z_STREAM_END if filled == out.len() => {}
            zlib::Z_STREAM_END => {
                // The member ended inside the span: skip its trailer (CRC-32, ISIZE) and the
                // next member's header, and go on with a fresh raw stream.
                pos += 8;
                let rest = data.get(pos..).ok_or_else(|| invalid_data("gzip trailer cut short"))?;
                pos += gzip_header_len(rest)?;
                inflater.reset()?;
            }
            _ => return Err(inflater.error(ret)),
        }
    }
    Ok(())
}

/// Length of the gzip member header at the start of `d` (RFC 1952, 2.3).
fn gzip_header_len(d: &[u8]) -> io::Result<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let bad = || invalid_data("bad gzip member header");
    if d.len() < 10 || d[0] != 0x1f || d[1] != 0x8b || d[2] != 8 || d[3] & 0xe0 != 0 {
        return Err(bad());
    }
    let flags = d[3];
    let mut p = 10;
    if flags & FEXTRA != 0 {
        let xlen = d.get(p..p + 2).ok_or_else(bad)?;
        p += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let nul = d.get(p..).ok_or_else(bad)?.iter().position(|&b| b == 0).ok_or_else(bad)?;
            p += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        p += 2;
    }
    if p > d.len() {
        return Err(bad());
    }
    Ok(p)
}

fn invalid_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// An owned zlib-rs inflate stream. Boxed because zlib-rs checks that the stream has not
/// moved since `inflateInit2_`.
struct Inflater {
    strm: Box<zlib::z_stream>,
}

// SAFETY: the stream's state is owned by this value alone (no thread-local or shared data
// in zlib-rs), and its buffer pointers are only set for the duration of one call.
unsafe impl Send for Inflater {}

impl Inflater {
    /// `window_bits`: -15 for raw deflate, 15 + 16 for gzip.
    fn new(window_bits: c_int) -> io::Result<Self> {
        // Default sets the Rust allocator in zalloc/zfree.
        let mut strm = Box::new(zlib::z_stream::default());
        // SAFETY: `strm` is a fully initialised z_stream with valid zalloc/zfree/opaque;
        // the version string and struct size come from the library we call.
        let ret = unsafe {
            zlib::inflateInit2_(
                &mut *strm,
                window_bits,
                zlib::zlibVersion(),
                std::mem::size_of::<zlib::z_stream>() as c_int,
            )
        };
        if ret != zlib::Z_OK {
            return Err(io::Error::other(format!("inflateInit2 failed ({ret})")));
        }
        Ok(Inflater { strm })
    }

    /// One `inflate` call; returns (return code, bytes consumed, bytes produced).
    fn inflate(&mut self, input: &[u8], output: &mut [u8], flush: c_int) -> (c_int, usize, usize) {
        let avail_in = input.len().min(u32::MAX as usize) as u32;
        let avail_out = output.len().min(u32::MAX as usize) as u32;
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = avail_out;
        // SAFETY: the stream was initialised by inflateInit2_ and has not moved (boxed);
        // next_in/avail_in and next_out/avail_out describe `input` and `output`, which are
        // borrowed for the whole call.
        let ret = unsafe { zlib::inflate(&mut *self.strm, flush) };
        let consumed = (avail_in - self.strm.avail_in) as usize;
        let produced = (avail_out - self.strm.avail_out) as usize;
        // Leave no pointers into buffers we no longer borrow.
        self.strm.next_in = std::ptr::null();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        (ret, consumed, produced)
    }

    fn data_type(&self) -> c_int {
        self.strm.data_type
    }

    fn reset(&mut self) -> io::Result<()> {
        // SAFETY: initialised, unmoved stream (see `inflate`).
        let ret = unsafe { zlib::inflateReset(&mut *self.strm) };
        self.check(ret)
    }

    /// Feeds `bits` (< 8) low bits of `value` before the next input byte.
    fn prime(&mut self, bits: u8, value: u8) -> io::Result<()> {
        // SAFETY: initialised, unmoved stream (see `inflate`).
        let ret = unsafe { zlib::inflatePrime(&mut *self.strm, c_int::from(bits), c_int::from(value)) };
        self.check(ret)
    }

    fn set_dictionary(&mut self, dict: &[u8]) -> io::Result<()> {
        // SAFETY: initialised, unmoved stream; `dict` is valid for reads of its length,
        // which is at most 32 KiB (checked by inflate_window).
        let ret = unsafe { zlib::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), dict.len() as u32) };
        self.check(ret)
    }

    /// Copies the current window (the member's last up to 32 KiB of output) into `buf`.
    fn dictionary(&self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(buf.len() >= WINDOW_SIZE);
        let mut len = 0;
        // SAFETY: initialised, unmoved stream; `buf` has room for the largest window zlib
        // keeps (32 KiB for window bits 15), which is all it writes.
        let ret = unsafe { zlib::inflateGetDictionary(&*self.strm, buf.as_mut_ptr(), &mut len) };
        self.check(ret)?;
        Ok(len as usize)
    }

    fn check(&self, ret: c_int) -> io::Result<()> {
        if ret == zlib::Z_OK {
            Ok(())
        } else {
            Err(self.error(ret))
        }
    }

    fn error(&self, ret: c_int) -> io::Error {
        let msg = if self.strm.msg.is_null() {
            String::new()
        } else {
            // SAFETY: zlib sets `msg` to null or to a static NUL-terminated string.
            unsafe { CStr::from_ptr(self.strm.msg) }.to_string_lossy().into_owned()
        };
        invalid_data(&format!("inflate error {ret}: {msg}"))
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: initialised, unmoved stream, ended exactly once.
        unsafe { zlib::inflateEnd(&mut *self.strm) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder};
    use flate2::Compression;
    use std::io::Seek;

    /// xorshift64*: deterministic data without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Text, noise, zero runs and long-distance repeats, so blocks of every type and
    /// back-references across checkpoints all occur.
    fn mixed(len: usize, seed: u64) -> Vec<u8> {
        const WORDS: [&str; 8] = ["layer ", "tar ", "usr/lib/", "checkpoint ", "\n", "0x7f ", "zran ", "ELF "];
        let mut rng = Rng(seed | 1);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let n = 1 + rng.below(64 * 1024) as usize;
            match rng.below(4) {
                0 => (0..n / 4).for_each(|_| out.extend_from_slice(WORDS[rng.below(8) as usize].as_bytes())),
                1 => (0..n).for_each(|_| out.push(rng.next() as u8)),
                2 => out.resize(out.len() + n * 3, 0),
                _ => {
                    let back = 1 + rng.below(out.len().clamp(1, 32 * 1024) as u64) as usize;
                    let from = out.len().saturating_sub(back);
                    (0..n).for_each(|k| out.push(out.get(from + k).copied().unwrap_or(7)));
                }
            }
        }
        out.truncate(len);
        out
    }

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A gzip member whose header carries FEXTRA, FNAME, FCOMMENT and FHCRC.
    fn gzip_all_fields(data: &[u8]) -> Vec<u8> {
        let mut m = vec![0x1f, 0x8b, 8, 2 | 4 | 8 | 16, 1, 2, 3, 4, 0, 3];
        m.extend_from_slice(&5u16.to_le_bytes());
        m.extend_from_slice(b"AB\x00\x01\x00");
        m.extend_from_slice(b"name.tar\x00");
        m.extend_from_slice(b"a comment\x00");
        let mut crc = flate2::Crc::new();
        crc.update(&m);
        m.extend_from_slice(&(crc.sum() as u16).to_le_bytes());
        let mut e = DeflateEncoder::new(m, Compression::new(9));
        e.write_all(data).unwrap();
        let mut m = e.finish().unwrap();
        let mut crc = flate2::Crc::new();
        crc.update(data);
        m.extend_from_slice(&crc.sum().to_le_bytes());
        m.extend_from_slice(&(data.len() as u32).to_le_bytes());
        m
    }

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

    fn blob_file(blob: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(blob).unwrap();
        f.rewind().unwrap();
        f
    }

    /// Every span, span boundaries, random offsets and a save/load round trip.
    fn check_random_access(blob: &[u8], expected: &[u8], cps: &Checkpoints) {
        let file = blob_file(blob);
        assert_eq!(cps.uncompressed_size(), expected.len() as u64);
        assert_eq!(cps.compressed_size(), blob.len() as u64);
        let n = cps.span_count();
        assert!(n > 0);
        let mut next = 0;
        for i in 0..n {
            let (start, end) = cps.span_range(i);
            assert_eq!(start, next, "span {i} does not start where span {} ended", i.wrapping_sub(1));
            assert!(end > start);
            assert_eq!((cps.span_of(start), cps.span_of(end - 1)), (i, i));
            let got = cps.decode_span(&file, i).unwrap();
            assert!(got == expected[start as usize..end as usize], "span {i} ({start}..{end}) differs");
            next = end;
        }
        assert_eq!(next, expected.len() as u64);
        assert_eq!(cps.span_of(next), n);
        assert!(cps.decode_span(&file, n).is_err());

        let mut rng = Rng(5);
        for _ in 0..50 {
            let off = rng.below(expected.len() as u64);
            let i = cps.span_of(off);
            let (start, _) = cps.span_range(i);
            let got = cps.decode_span(&file, i).unwrap();
            let k = (off - start) as usize;
            let len = 100.min(got.len() - k);
            assert_eq!(got[k..k + len], expected[off as usize..off as usize + len]);
        }

        let mut saved = Vec::new();
        cps.save(&mut saved).unwrap();
        assert_eq!(&Checkpoints::load(&saved[..]).unwrap(), cps);
    }

    fn plain_gunzip(blob: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(blob).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn single_member_gzip() {
        let data = mixed(6 << 20, 1);
        let blob = gzip(&data, 6);
        let (out, cps) = index(&blob, Format::Gzip, 256 * 1024, 1 << 16);
        assert!(out == plain_gunzip(&blob));
        assert!(cps.span_count() >= 10, "only {} spans", cps.span_count());
        // Most checkpoints fall inside a byte and carry a window: the hard case is covered.
        assert!(cps.points.iter().any(|p| p.bits != 0));
        assert!(cps.points.iter().skip(1).all(|p| !p.window.is_empty()));
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
        let held: usize = cps.points.iter().map(|p| p.window.capacity()).sum();
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
        let member_starts = cps.points.iter().filter(|p| p.window.is_empty()).count();
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
