//! Decoding a stretch of a gzip stream from a deflate block boundary, with or without the
//! 32 KiB window that precedes it: the first stage of the parallel decoder (`pargz`).
//!
//! Without the window, a back-reference into it can't be resolved yet, so its bytes are
//! kept as markers, the window positions they copy, and put right once the window is
//! known (rapidgzip's method). The markers come from zlib-rs itself rather than a second
//! inflate implementation: the stretch is decoded by two inflaters at once, each primed
//! with a different made-up window (position `i`, split into its low byte `lo` and high
//! bits `hi`, holds `lo` in one and `lo ^ (hi + 1)` in the other). Deflate's control flow
//! never depends on the bytes it outputs, so the two consume the same input and make the
//! same output except where a byte comes from the window: there they differ (`hi + 1` is
//! never 0), and together they spell the position. Once 32 KiB of output without a
//! marker has passed, the made-up window is out of reach and one inflater goes on alone.
//!
//! A stretch ends at the first block boundary at or after its `stop` bit where a block
//! with dynamic Huffman codes starts (the kind of start `blockfind` looks for), so a
//! stretch that begins at a real boundary ends exactly where the next one begins. It
//! crosses gzip members as the stream does: a member's trailer is noted for the caller to
//! check, the next member's header skipped, and decoding goes on with an empty window.

use super::arriving::Arriving;
use super::blockfind;
use super::checkpoints::gzip_header_len;
use super::zlib::{self, invalid_data, Inflater, WINDOW_SIZE};
use std::io;
use std::sync::Arc;

/// Compressed bytes read at a time.
const INPUT_STEP: usize = 64 << 10;
/// Output made by one inflate call, at most.
const OUTPUT_STEP: usize = 64 << 10;
/// Bytes read first for a gzip member header: most are 10 to a few dozen.
const HEADER_STEP: usize = 512;

/// A marker: output byte `i & 0x7fff` of the 32 KiB before the stretch, oldest first.
pub(super) const MARKER: u16 = 0x8000;

/// What happens at a place in the output of a stretch, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// A deflate block starts at compressed bit `bit`, at output offset `out`
    /// (counted from the stretch's start). The stretch's own start is the first.
    Boundary { out: u64, bit: u64 },
    /// A gzip member ends at output offset `out`; its trailer says `crc` and `size`.
    MemberEnd { out: u64, crc: u32, size: u32 },
}

/// How a stretch ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// At a block boundary, where the next stretch starts.
    Boundary(u64),
    /// At the end of the blob, after the last member's trailer.
    Blob,
}

/// Decodes a stretch step by step. Each step appends output to `head` while markers may
/// still come (only in a stretch started without its window), then to `tail`.
pub(super) struct Stretch {
    blob: Arc<Arriving>,
    inflaters: Vec<Inflater>,
    /// Compressed bytes from blob offset `in_base`; `in_pos` of them handed to zlib.
    input: Vec<u8>,
    in_base: u64,
    in_pos: usize,
    stop: u64,
    out: u64,
    /// Output offset just after the last marker (0: none yet).
    clean_from: u64,
    outs: [Vec<u8>; 2],
    pub(super) events: Vec<Event>,
    end: Option<End>,
}

/// The made-up window of inflater `k` (see the module's notes).
fn made_up_window(k: usize) -> Vec<u8> {
    (0..WINDOW_SIZE)
        .map(|i| match k {
            0 => i as u8,
            _ => (i as u8) ^ ((i >> 8) as u8 + 1),
        })
        .collect()
}

impl Stretch {
    /// A stretch from the block boundary at bit `start` of `blob`, to the first dynamic
    /// block boundary at or after bit `stop`. `window`: the output before `start` in its
    /// member (at most 32 KiB, empty at a member's start); `None` when not known, which
    /// makes markers.
    pub(super) fn new(blob: Arc<Arriving>, start: u64, stop: u64, window: Option<&[u8]>) -> io::Result<Stretch> {
        let count = if window.is_some() { 1 } else { 2 };
        let mut inflaters = Vec::with_capacity(count);
        let (byte, skip) = (start / 8, (start % 8) as u8);
        let mut first = [0u8];
        if skip > 0 && blob.read_full_at(&mut first, byte)? == 0 {
            return Err(truncated());
        }
        for k in 0..count {
            let mut inf = Inflater::new(-15)?;
            if skip > 0 {
                inf.prime(8 - skip, first[0] >> skip)?;
            }
            match window {
                Some(w) if !w.is_empty() => inf.set_dictionary(w)?,
                Some(_) => {}
                None => inf.set_dictionary(&made_up_window(k))?,
            }
            inflaters.push(inf);
        }
        let in_base = byte + u64::from(skip > 0);
        Ok(Stretch {
            blob,
            inflaters,
            input: Vec::new(),
            in_base,
            in_pos: 0,
            stop,
            out: 0,
            clean_from: 0,
            outs: Default::default(),
            events: vec![Event::Boundary { out: 0, bit: start }],
            end: None,
        })
    }

    /// Whether markers may still come (two inflaters at work).
    pub(super) fn marking(&self) -> bool {
        self.inflaters.len() > 1
    }

    /// How the stretch ended, once it has.
    pub(super) fn end(&self) -> Option<End> {
        self.end
    }

    /// Output so far.
    pub(super) fn produced(&self) -> u64 {
        self.out
    }

    fn fill(&mut self) -> io::Result<bool> {
        let next = self.in_base + self.input.len() as u64;
        if self.in_pos > 0 {
            self.input.drain(..self.in_pos);
            self.in_base += self.in_pos as u64;
            self.in_pos = 0;
        }
        let have = self.input.len();
        self.input.resize(have + INPUT_STEP, 0);
        let n = self.blob.read_at(&mut self.input[have..], next)?;
        self.input.truncate(have + n);
        Ok(n > 0)
    }

    /// Reads `n` bytes at blob offset `at` (trailers and headers), wherever they are.
    fn bytes_at(&self, at: u64, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        let got = self.blob.read_full_at(&mut buf, at)?;
        buf.truncate(got);
        Ok(buf)
    }

    /// Whether a block with dynamic Huffman codes starts at bit `bit`.
    fn dynamic_at(&self, bit: u64) -> io::Result<bool> {
        let two = self.bytes_at(bit / 8, 2)?;
        Ok(matches!(blockfind::block_type_at(&two, (bit % 8) as usize), Some((_, 2))))
    }

    /// Decodes some more: appends at most `OUTPUT_STEP` bytes, and the events met, until
    /// the stretch ends (`end()` is then set).
    pub(super) fn step(&mut self, head: &mut Vec<u16>, tail: &mut Vec<u8>) -> io::Result<()> {
        if self.end.is_some() {
            return Ok(());
        }
        if self.in_pos == self.input.len() && !self.fill()? {
            return Err(truncated());
        }
        let input = &self.input[self.in_pos..];
        let (ret, consumed, produced, state) = if self.marking() {
            let mut results = [(0, 0, 0, 0); 2];
            for (k, inf) in self.inflaters.iter_mut().enumerate() {
                self.outs[k].resize(OUTPUT_STEP, 0);
                let (ret, consumed, produced) = inf.inflate(input, &mut self.outs[k], zlib::Z_BLOCK);
                results[k] = (ret, consumed, produced, inf.data_type());
            }
            if results[1] != results[0] {
                // Cannot happen with a sound inflater; never trust such output.
                return Err(invalid_data("the marker inflaters disagree"));
            }
            results[0]
        } else {
            let inf = &mut self.inflaters[0];
            let (ret, consumed, produced) = inf.inflate_onto(input, tail, OUTPUT_STEP, zlib::Z_BLOCK);
            (ret, consumed, produced, inf.data_type())
        };
        self.in_pos += consumed;
        if self.marking() {
            let made = &self.outs[0][..produced];
            head.reserve(produced);
            for (j, (&a, &b)) in made.iter().zip(&self.outs[1]).enumerate() {
                if a == b {
                    head.push(u16::from(a));
                } else {
                    head.push(MARKER | u16::from(a) | (u16::from((a ^ b) - 1) << 8));
                    self.clean_from = self.out + j as u64 + 1;
                }
            }
        }
        self.out += produced as u64;
        if self.marking() && self.out - self.clean_from >= WINDOW_SIZE as u64 {
            // The made-up windows are out of reach: the two would agree from here on.
            self.inflaters.truncate(1);
        }
        match ret {
            zlib::Z_OK | zlib::Z_BUF_ERROR => {
                // 128: at a block boundary; 64: the block just ended was the member's last.
                if state & 128 != 0 && state & 64 == 0 {
                    let bit = 8 * (self.in_base + self.in_pos as u64) - (state & 63) as u64;
                    if bit >= self.stop && self.dynamic_at(bit)? {
                        self.end = Some(End::Boundary(bit));
                    } else {
                        self.events.push(Event::Boundary { out: self.out, bit });
                    }
                } else if consumed == 0 && produced == 0 && self.in_pos < self.input.len() {
                    return Err(invalid_data("inflate made no progress"));
                }
            }
            zlib::Z_STREAM_END => self.member_end(state)?,
            _ => return Err(self.inflaters[0].error(ret)),
        }
        Ok(())
    }

    /// After a member's last block: check its trailer's place, note it, and go on with the
    /// next member, if any.
    fn member_end(&mut self, state: i32) -> io::Result<()> {
        // The trailer starts at the byte after the last block (zlib has skipped to it, but
        // may hold whole bytes it read ahead).
        let held = (state & 63) as u64;
        let at = self.in_base + self.in_pos as u64 - held / 8;
        let trailer = self.bytes_at(at, 8)?;
        if trailer.len() < 8 {
            return Err(truncated());
        }
        let crc = u32::from_le_bytes(trailer[..4].try_into().unwrap());
        let size = u32::from_le_bytes(trailer[4..].try_into().unwrap());
        self.events.push(Event::MemberEnd { out: self.out, crc, size });
        let next = at + 8;
        if next == self.blob.len() {
            self.end = Some(End::Blob);
            return Ok(());
        }
        let len = member_header_len(&self.blob, next)?;
        let bit = 8 * (next + len as u64);
        if bit >= self.stop && self.dynamic_at(bit)? {
            self.end = Some(End::Boundary(bit));
            return Ok(());
        }
        self.events.push(Event::Boundary { out: self.out, bit });
        // A new member has no window: markers can't come any more.
        self.inflaters.truncate(1);
        self.inflaters[0].reset()?;
        self.input.clear();
        self.in_base = next + len as u64;
        self.in_pos = 0;
        Ok(())
    }
}

/// The length of the gzip member header at blob offset `at`, read a few hundred bytes
/// first and more only while the header runs on (its fields may reach the blob's end).
pub(super) fn member_header_len(blob: &Arriving, at: u64) -> io::Result<usize> {
    let mut want = HEADER_STEP;
    loop {
        let mut head = vec![0; want];
        let got = blob.read_full_at(&mut head, at)?;
        match gzip_header_len(&head[..got])? {
            Some(len) => return Ok(len),
            // The blob ends inside the header.
            None if got < want => return Err(truncated()),
            None => want *= 2,
        }
    }
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "gzip stream is truncated")
}

/// Puts the window's bytes in place of the markers of `head`: `window` is the output
/// before the stretch in its member (at most 32 KiB; shorter near the member's start,
/// where a marker reaching before it means a corrupt stream). Returns how many markers
/// there were.
pub(super) fn resolve(head: &[u16], window: &[u8], out: &mut Vec<u8>) -> io::Result<u64> {
    let missing = WINDOW_SIZE - window.len();
    out.reserve(head.len());
    let mut markers = 0;
    for &s in head {
        if s & MARKER == 0 {
            out.push(s as u8);
        } else {
            markers += 1;
            let i = usize::from(s & !MARKER);
            let b = i
                .checked_sub(missing)
                .and_then(|i| window.get(i))
                .ok_or_else(|| invalid_data("invalid distance too far back (before the start of the gzip member)"))?;
            out.push(*b);
        }
    }
    Ok(markers)
}
