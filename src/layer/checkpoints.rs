//! Random access into a compressed layer blob without an uncompressed copy: the table of
//! places where decoding can restart, its on-disk form, and decoding one span from it.
//!
//! For gzip a checkpoint is a zran restart point (the bit position of a deflate block
//! boundary and the 32 KiB of output before it, which later back-references may copy from),
//! for zstd the start of a frame. [`Checkpoints`] are small enough to keep next to the blob
//! (they are made by the indexing pass, `layer::indexing`), and any one span is later
//! rebuilt from its checkpoint and the blob bytes up to the next one alone
//! ([`Checkpoints::decode_span_from`], [`decode_point`] for checkpoints kept in a TOC), so
//! the FUSE threads can decode different spans of one file at once.

use super::zlib::{self, invalid_data, Inflater, WINDOW_SIZE};
use super::{Context, Result};
use std::io::{self, Read, Write};

/// Uncompressed bytes between checkpoints unless the caller asks otherwise. A read of one byte
/// decodes on average half a span; 1 MiB is a few milliseconds of inflate.
pub const DEFAULT_SPAN: u64 = 1 << 20;

/// A span longer than this many times the requested span makes the layer "not seekable": a
/// small read would cost too much decoding. Only zstd gets there in practice (a frame can
/// only be entered at its start, and many encoders write one frame per layer).
pub const MAX_SPAN_FACTOR: u64 = 4;

/// The longest span a table of checkpoints read from elsewhere (a published index) may
/// have, as a multiple of its requested span: a read decodes a whole span in memory.
pub const MAX_TABLE_SPAN_FACTOR: u64 = MAX_SPAN_FACTOR * 64;

/// A deflated window may grow a little when the window is incompressible.
pub const MAX_STORED_WINDOW: usize = WINDOW_SIZE + WINDOW_SIZE / 8 + 64;
/// Deflate's largest ratio of output to input: a 258-byte copy coded in two bits.
const MAX_DEFLATE_RATIO: u64 = 1032;

pub(super) const MAGIC: &[u8; 8] = b"imgfsckp";
pub(super) const VERSION: u32 = 1;

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
pub(super) struct Checkpoint {
    /// Offset in the uncompressed stream.
    pub(super) uncompressed: u64,
    /// Offset in the blob of the first byte wholly after the checkpoint.
    pub(super) compressed: u64,
    /// gzip: how many high bits of the byte at `compressed - 1` belong to the data after
    /// the checkpoint (zlib's "unused bits"); 0 means the checkpoint is byte-aligned.
    pub(super) bits: u8,
    /// gzip: the up to 32 KiB of the member's output before the checkpoint, raw-deflated;
    /// empty at a member start. Always empty for zstd.
    pub(super) window: Vec<u8>,
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
    /// The table of `points`, in order of offset, taken from a blob of `compressed_size`
    /// bytes that decodes to `uncompressed_size`.
    pub(super) fn new(
        format: Format,
        span: u64,
        compressed_size: u64,
        uncompressed_size: u64,
        points: Vec<Checkpoint>,
    ) -> Checkpoints {
        Checkpoints { format, span, compressed_size, uncompressed_size, points }
    }

    #[cfg(test)]
    pub(super) fn checkpoint_list(&self) -> &[Checkpoint] {
        &self.points
    }

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
    #[cfg(test)]
    pub fn decode_span(&self, blob: &std::fs::File, i: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
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
        decode(self.format, &self.points[i], data, end - start)
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
        let point = Checkpoint { window: window.to_vec(), ..self.points[i].clone() };
        decode(self.format, &point, data, end - start)
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
    if bits >= 8 || window.len() > MAX_STORED_WINDOW {
        return Err(invalid_data("bad checkpoint"));
    }
    let point = Checkpoint { uncompressed: start, compressed, bits, window: window.to_vec() };
    decode(format, &point, data, end.saturating_sub(start))
}

/// Decodes `len` bytes from `point` out of `data` (the blob from the checkpoint, one byte
/// earlier when it is not byte-aligned, to the next checkpoint). The length comes from a
/// table that may have come from the network: one that `data` cannot decode to, or that
/// no memory can hold, is an error before anything is allocated, never an abort.
fn decode(format: Format, point: &Checkpoint, data: &[u8], len: u64) -> io::Result<Vec<u8>> {
    if format == Format::Gzip && len > (data.len() as u64 + 1).saturating_mul(MAX_DEFLATE_RATIO) {
        return Err(invalid_data(&format!("a span of {len} bytes from {} compressed bytes", data.len())));
    }
    let len = usize::try_from(len).map_err(|_| invalid_input("span too large".into()))?;
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, format!("no memory for a span of {len} bytes")))?;
    match format {
        Format::Gzip => inflate_span(point, data, &mut out, len)?,
        Format::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(data)?;
            dec.take(len as u64).read_to_end(&mut out)?;
            if out.len() < len {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "span data ends early"));
            }
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

pub(super) fn deflate_window(deflater: &mut flate2::Compress, window: &[u8]) -> io::Result<Vec<u8>> {
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

/// Appends `len` bytes decoded from `point` to `out` (which has room for them); `data`
/// holds the blob from the checkpoint (one byte earlier when it is not byte-aligned) to
/// the next checkpoint.
fn inflate_span(point: &Checkpoint, data: &[u8], out: &mut Vec<u8>, len: usize) -> io::Result<()> {
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
    while out.len() < len {
        let room = len - out.len();
        let (ret, consumed, produced) = inflater.inflate_onto(&data[pos..], out, room, zlib::Z_NO_FLUSH);
        pos += consumed;
        match ret {
            zlib::Z_OK => {}
            zlib::Z_BUF_ERROR if consumed > 0 || produced > 0 => {}
            zlib::Z_BUF_ERROR => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "span data ends early"));
            }
            zlib::Z_STREAM_END if out.len() == len => {}
            zlib::Z_STREAM_END => {
                // The member ended inside the span: skip its trailer (CRC-32, ISIZE) and the
                // next member's header, and go on with a fresh raw stream.
                pos += 8;
                let rest = data.get(pos..).ok_or_else(|| invalid_data("gzip trailer cut short"))?;
                pos += gzip_header_len(rest)?.ok_or_else(|| invalid_data("gzip member header cut short"))?;
                inflater.reset()?;
            }
            _ => return Err(inflater.error(ret)),
        }
    }
    Ok(())
}

/// Length of the gzip member header at the start of `d` (RFC 1952, 2.3), its CRC-16
/// checked when it has one (as zlib checks it); `None` when `d` ends inside it. Its
/// fields have no bound but the blob's end (FEXTRA alone may take 65,547 bytes).
pub(super) fn gzip_header_len(d: &[u8]) -> io::Result<Option<usize>> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let bad = || invalid_data("bad gzip member header");
    if d.iter().zip([0x1f, 0x8b, 8]).any(|(&a, b)| a != b) || d.get(3).is_some_and(|f| f & 0xe0 != 0) {
        return Err(bad());
    }
    if d.len() < 10 {
        return Ok(None);
    }
    let flags = d[3];
    let mut p = 10;
    if flags & FEXTRA != 0 {
        let Some(xlen) = d.get(p..p + 2) else { return Ok(None) };
        p += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(nul) = d.get(p..).and_then(|rest| rest.iter().position(|&b| b == 0)) else { return Ok(None) };
            p += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        let Some(sum) = d.get(p..p + 2) else { return Ok(None) };
        if crc32fast::hash(&d[..p]) as u16 != u16::from_le_bytes([sum[0], sum[1]]) {
            return Err(invalid_data("gzip member header fails its CRC-16"));
        }
        p += 2;
    }
    Ok((p <= d.len()).then_some(p))
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::indexing::IndexingDecoder;
    use crate::layer::testdata::{gzip, mixed};

    /// A checkpoint as `points` gives it, its window owned.
    type Point = (u64, u64, u8, Vec<u8>);

    /// Checkpoints of `blob` as the indexing pass takes them, each with its window.
    fn index(blob: &[u8], format: Format) -> (Checkpoints, Vec<Point>) {
        let mut dec = IndexingDecoder::new(blob, format, 1 << 20).unwrap();
        io::copy(&mut dec, &mut io::sink()).unwrap();
        let c = dec.finish().unwrap();
        let points = c.points().map(|(u, cp, bits, w)| (u, cp, bits, w.to_vec())).collect();
        (c, points)
    }

    /// A table read from elsewhere may claim any length for a span: one its compressed
    /// bytes can't decode to, or that no memory could hold, is an error for that read,
    /// never an allocation that aborts the process.
    #[test]
    fn a_span_longer_than_its_bytes_or_memory_allow_is_an_error() {
        let data = mixed(3 << 20, 5);
        for (format, blob) in [(Format::Gzip, gzip(&data, 6)), (Format::Zstd, zstd::encode_all(&data[..], 3).unwrap())]
        {
            let (c, points) = index(&blob, format);
            let last = c.span_count() - 1;
            for extra in [1 << 40, (isize::MAX as u64) * 2 - c.uncompressed_size()] {
                let size = c.uncompressed_size() + extra;
                let long =
                    Checkpoints::from_points(format, c.requested_span(), c.compressed_size(), size, points.clone())
                        .unwrap();
                let (s, e) = long.compressed_range(last);
                let got = long.decode_span_from(last, &blob[s as usize..e as usize]);
                assert!(got.is_err(), "{format:?}: a span of {} bytes decoded", size - long.span_range(last).0);
                let (start, end) = long.span_range(last);
                let (_, compressed, bits, window) = &points[last];
                let got = decode_point(format, (start, end), (*compressed, *bits), window, &blob[s as usize..]);
                assert!(got.is_err(), "{format:?}: decode_point of a span of {} bytes", end - start);
            }
            // Told the true length, the same span decodes.
            let (s, e) = c.compressed_range(last);
            let (us, ue) = c.span_range(last);
            assert!(c.decode_span_from(last, &blob[s as usize..e as usize]).unwrap() == data[us as usize..ue as usize]);
        }
    }

    /// Member headers as RFC 1952 allows them: an extra field of 65,535 bytes, a name of
    /// 100 KiB, a header CRC (checked: a wrong one is an error, as zlib makes it).
    #[test]
    fn member_headers_of_any_length_and_their_crc() {
        let mut h = vec![0x1f, 0x8b, 8, 2 | 4 | 8, 0, 0, 0, 0, 0, 3];
        h.extend_from_slice(&u16::MAX.to_le_bytes());
        h.resize(h.len() + usize::from(u16::MAX), b'x');
        h.resize(h.len() + (100 << 10), b'n');
        h.push(0);
        let crc = crc32fast::hash(&h) as u16;
        h.extend_from_slice(&crc.to_le_bytes());
        let len = h.len();
        h.extend_from_slice(b"deflate data follows");
        assert_eq!(gzip_header_len(&h).unwrap(), Some(len));
        for cut in [0, 3, 9, 10, 11, 12, 70_000, len - 1] {
            assert_eq!(gzip_header_len(&h[..cut]).unwrap(), None, "cut at {cut}");
        }
        h[len - 1] ^= 1;
        assert!(gzip_header_len(&h).is_err(), "a wrong header CRC");
        assert!(gzip_header_len(b"\x1f\x8c").is_err());
    }
}
