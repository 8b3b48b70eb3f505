//! Decoding one gzip stream on every core during the indexing pass, with the same output
//! and the same checkpoints as the one-core decoder (`indexing`), from a blob that may
//! still be arriving (`arriving`).
//!
//! rapidgzip's two stages. The blob is cut into chunks of `CHUNK` compressed bytes. For
//! each chunk ahead of the reader, a worker (`workers`) finds the first place in it where
//! a dynamic-Huffman deflate block may start (`blockfind`) and decodes from there without
//! knowing the window before it, keeping unresolved back-references as markers
//! (`marker`), up to the first such block start at or after the next chunk. In order, the
//! reader then takes each chunk whose start is exactly where the previous one ended (so
//! its start was a real block boundary, not a lookalike), puts the window's bytes in
//! place of its markers, and hands the bytes on. A chunk that could not be decoded ahead
//! (no start found, a lookalike, not reached yet by the download, or still queued when
//! needed) is decoded in order by the reader itself, which then knows its window.
//!
//! Nothing unchecked is committed: the reader checks every member's CRC-32 and length
//! against its trailer as the bytes pass (bytes reach the caller, the tar parser, before
//! their member's check: it keeps nothing until the stream has ended well, and checks
//! the diff_id over them all), a marker reaching before its member's start is an
//! error, and a stream that ends early is an error of kind `UnexpectedEof`. Every block
//! boundary met is noted in order, so the checkpoints are chosen exactly as the
//! one-core decoder chooses them.
//!
//! Memory: at most one chunk decoded ahead per worker (up to `MAX_IN_FLIGHT`), each
//! bounded (`MAX_SPECULATIVE`, `MAX_MARKED`; a chunk that grows past them is decoded in
//! order, streaming), and the one being handed on.

use super::arriving::Arriving;
use super::blockfind;
use super::checkpoints::{deflate_window, Checkpoint, Checkpoints, Format};
use super::marker::{self, End, Event, Stretch};
use super::workers::Workers;
use super::zlib::{invalid_data, WINDOW_SIZE};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// Compressed bytes per chunk. A chunk's first few hundred KiB of output are decoded twice
/// (markers may still come there; see `marker`), so a chunk must be large for that to cost
/// little: at 1 MiB it was a third of the output of a real layer, at 4 MiB a tenth, at
/// 8 MiB a twentieth. But each chunk decoded ahead holds its output (about four times its
/// size, `MAX_SPECULATIVE` at most) until the reader takes it: at 4 MiB, about 16 MiB per
/// chunk in flight (`MAX_IN_FLIGHT`).
pub const CHUNK: u64 = 4 << 20;
/// Blobs smaller than this are decoded in order: with one chunk there is nothing to decode
/// ahead of the reader, and a short second chunk does not pay for its marked stretch.
pub const MIN_PARALLEL: u64 = CHUNK + CHUNK / 2;

/// Counts the layers being indexed in this process at once: while there are several (a
/// pull), they already keep the cores busy, one each, and chunks of one of them decoded
/// ahead as well would only add their marked stretches and their memory. Chunks are
/// handed to the workers only while one layer is being indexed.
pub struct Indexing;

static INDEXING: AtomicUsize = AtomicUsize::new(0);

impl Indexing {
    /// A layer's indexing starts; it ends when the value is dropped.
    pub fn start() -> Indexing {
        INDEXING.fetch_add(1, Ordering::AcqRel);
        Indexing
    }

    fn alone() -> bool {
        INDEXING.load(Ordering::Acquire) <= 1
    }
}

impl Drop for Indexing {
    fn drop(&mut self) {
        INDEXING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether decoding a gzip blob of `len` bytes on `workers` pays.
pub fn pays(len: u64, workers: &Workers) -> bool {
    workers.size() > 1 && len >= MIN_PARALLEL
}

/// Chunks decoded ahead at once, at most (each holds its output, about four times its
/// size, until the reader takes it).
const MAX_IN_FLIGHT: usize = 8;
/// Output (markers count two bytes) a chunk decoded ahead may hold; past it the chunk is
/// dropped and decoded in order, streaming. Twice what ordinary data makes of a chunk.
const MAX_SPECULATIVE: usize = 8 * CHUNK as usize;
/// Output a chunk decoded ahead may have while markers can still come (two bytes each);
/// past it the chunk is dropped and decoded in order. Markers stop within a few hundred
/// KiB in ordinary data (32 KiB without one), but never in a run of zeros: there every
/// byte copies the one before, and so, in the end, the window the chunk lacks.
const MAX_MARKED: usize = 4 << 20;
/// Possible block starts tried in a chunk before it is left to the in-order decode.
const MAX_TRIES: usize = 32;
/// Bytes past a chunk's end read with it, so a block header near the end can be checked.
const HEADER_SLACK: u64 = 4096;
/// A chunk is handed to a worker once this much of what follows it has arrived too (its
/// last block runs past its end).
const ARRIVED_AHEAD: u64 = 64 << 10;

/// A chunk's job: queued, taken by a worker, or taken back by the reader (then the
/// worker skips it, or gives up on it).
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const TAKEN_BACK: u8 = 2;

struct Task {
    chunk: u64,
    state: Arc<AtomicU8>,
    result: mpsc::Receiver<Option<Decoded>>,
}

/// A chunk decoded ahead, markers unresolved.
struct Decoded {
    start: u64,
    end: End,
    head: Vec<u16>,
    tail: Vec<u8>,
    events: Vec<Event>,
}

/// The stretch being handed out.
struct Current {
    bytes: Vec<u8>,
    /// Output to hand on after `bytes` (a chunk decoded ahead: its tail, after its head).
    next: Option<Vec<u8>>,
    pos: usize,
    /// Offset of `bytes[0]` in the stretch's output.
    base: u64,
    events: VecDeque<Event>,
    /// Decoding in order, streaming; `None` once all the output is in `bytes`.
    stretch: Option<Stretch>,
    end: Option<End>,
}

/// Read adapter: yields the uncompressed bytes of a gzip blob in order and, at the end,
/// its checkpoints (`finish`).
pub struct ParallelGzip {
    blob: Arc<Arriving>,
    workers: &'static Workers,
    span: u64,
    chunk: u64,
    /// Blob offset where chunk 0 starts (the first member's first block).
    first: u64,
    in_flight: usize,
    tasks: VecDeque<Task>,
    next_chunk: u64,
    next_bit: u64,
    cur: Option<Current>,
    /// The window before the current segment's bytes (see `window_now`).
    window: Vec<u8>,
    scratch: Vec<u8>,
    spare: Spare,
    crc: crc32fast::Hasher,
    member_out: u64,
    out_total: u64,
    points: Vec<Checkpoint>,
    deflater: flate2::Compress,
    done: bool,
    /// The first member's header has been read.
    started: bool,
    stats: Stats,
    /// Take back a chunk still queued when it is needed (off only in tests, which
    /// want every chunk decoded ahead whatever the load).
    take_back: bool,
}

/// How the chunks were decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Stretches decoded ahead by a worker and used.
    pub ahead: u64,
    /// Stretches decoded in order by the reader.
    pub in_order: u64,
    /// Bytes that were markers, put right from a window.
    pub markers: u64,
    /// Bytes decoded by two inflaters (while markers could still come).
    pub marked: u64,
    /// Time the reader waited for a chunk a worker was decoding.
    pub waited: std::time::Duration,
}

impl ParallelGzip {
    /// Decodes `blob`, a gzip stream, with a checkpoint about every `span` bytes of output,
    /// in chunks of `chunk` compressed bytes decoded ahead on `workers`.
    /// Nothing is read until the first `read`, where an error in the first header shows.
    pub fn new(blob: Arc<Arriving>, span: u64, chunk: u64, workers: &'static Workers) -> io::Result<ParallelGzip> {
        if span == 0 || chunk == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "span and chunk must be positive"));
        }
        Ok(ParallelGzip {
            in_flight: workers.size().min(MAX_IN_FLIGHT),
            blob,
            workers,
            span,
            chunk,
            first: 0,
            tasks: VecDeque::new(),
            next_chunk: 1,
            next_bit: 0,
            cur: None,
            window: Vec::with_capacity(WINDOW_SIZE),
            scratch: Vec::with_capacity(WINDOW_SIZE),
            spare: Spare::default(),
            crc: crc32fast::Hasher::new(),
            member_out: 0,
            out_total: 0,
            points: Vec::new(),
            deflater: flate2::Compress::new(flate2::Compression::fast(), false),
            done: false,
            started: false,
            stats: Stats::default(),
            take_back: true,
        })
    }

    /// The checkpoints, once the stream has been read to its end.
    pub fn finish(mut self) -> super::Result<Checkpoints> {
        ensure!(self.done, "ParallelGzip::finish before the end of the stream");
        let mut points = std::mem::take(&mut self.points);
        let total = self.out_total;
        points.retain(|p| p.uncompressed < total);
        Ok(Checkpoints::new(Format::Gzip, self.span, self.blob.len(), total, points))
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Reads the first member's header: chunk 0 starts after it. An empty blob is an
    /// empty stream, as for the one-core decoder.
    fn start(&mut self) -> io::Result<()> {
        self.started = true;
        if self.blob.is_empty() {
            self.done = true;
            return Ok(());
        }
        let len = marker::member_header_len(&self.blob, 0)?;
        self.first = len as u64;
        self.next_bit = 8 * self.first;
        Ok(())
    }

    fn chunk_of(&self, bit: u64) -> u64 {
        (bit / 8).saturating_sub(self.first) / self.chunk
    }

    /// Where a stretch starting in chunk `c` stops looking for its end.
    fn stop_of(&self, c: u64) -> u64 {
        8 * (self.first + (c + 1) * self.chunk)
    }

    /// Hands the chunks after `c` whose bytes have arrived to the workers, up to the
    /// in-flight bound.
    fn submit(&mut self, c: u64) {
        if self.workers.size() < 2 || !Indexing::alone() {
            return; // one core, or one per layer: the reader decoding in order is as fast
        }
        self.next_chunk = self.next_chunk.max(c + 1);
        while self.tasks.len() < self.in_flight {
            let n = self.next_chunk;
            let lo = self.first + n * self.chunk;
            if lo >= self.blob.len() || self.blob.frontier() < (lo + self.chunk + ARRIVED_AHEAD).min(self.blob.len()) {
                break;
            }
            let (tx, rx) = mpsc::sync_channel(1);
            let state = Arc::new(AtomicU8::new(QUEUED));
            let job = Job {
                blob: Arc::clone(&self.blob),
                lo,
                stop: self.stop_of(n),
                state: Arc::clone(&state),
                spare: Arc::clone(&self.spare),
            };
            self.workers.run(move || {
                if job.state.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let _ = tx.send(job.decode());
                }
            });
            self.tasks.push_back(Task { chunk: n, state, result: rx });
            self.next_chunk += 1;
        }
    }

    /// Starts the stretch at `next_bit`: the chunk decoded ahead if it starts there, else
    /// an in-order decode.
    fn start_stretch(&mut self) -> io::Result<()> {
        let bit = self.next_bit;
        let c = self.chunk_of(bit);
        while self.tasks.front().is_some_and(|t| t.chunk < c) {
            let t = self.tasks.pop_front().unwrap();
            t.state.store(TAKEN_BACK, Ordering::Release);
        }
        let mut ahead = None;
        if self.tasks.front().is_some_and(|t| t.chunk == c) {
            let t = self.tasks.pop_front().unwrap();
            // Still queued: decoding it here, in order, beats waiting for a worker.
            if !self.take_back
                || t.state.compare_exchange(QUEUED, TAKEN_BACK, Ordering::AcqRel, Ordering::Acquire).is_err()
            {
                let t0 = std::time::Instant::now();
                ahead = t.result.recv().ok().flatten();
                self.stats.waited += t0.elapsed();
            }
        }
        let cur = match ahead {
            Some(d) if d.start == bit => {
                let mut bytes = Vec::with_capacity(d.head.len());
                self.stats.markers += marker::resolve(&d.head, &self.window, &mut bytes)?;
                self.stats.ahead += 1;
                self.stats.marked += d.head.len() as u64;
                let next = Some(d.tail);
                Current { bytes, next, pos: 0, base: 0, events: d.events.into(), stretch: None, end: Some(d.end) }
            }
            _ => {
                let stretch = Stretch::new(Arc::clone(&self.blob), bit, self.stop_of(c), Some(&self.window))?;
                self.stats.in_order += 1;
                Current {
                    bytes: Vec::new(),
                    next: None,
                    pos: 0,
                    base: 0,
                    events: VecDeque::new(),
                    stretch: Some(stretch),
                    end: None,
                }
            }
        };
        self.cur = Some(cur);
        self.submit(c);
        Ok(())
    }

    /// Output handed on: the member's CRC, the counts.
    fn account(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.member_out += bytes.len() as u64;
        self.out_total += bytes.len() as u64;
    }

    /// The window now: the last (up to) 32 KiB of the member's output handed on, from the
    /// part of the current segment handed on and, before it, `window`. Kept this way, not
    /// copied as the bytes pass, because it is needed only every span or so.
    fn window_now(&self, out: &mut Vec<u8>) {
        out.clear();
        let need = (WINDOW_SIZE as u64).min(self.member_out) as usize;
        let seg = self.cur.as_ref().map_or(&[][..], |c| &c.bytes[..c.pos]);
        if seg.len() >= need {
            out.extend_from_slice(&seg[seg.len() - need..]);
        } else {
            let older = need - seg.len();
            out.extend_from_slice(&self.window[self.window.len().saturating_sub(older)..]);
            out.extend_from_slice(seg);
        }
    }

    /// Before the current segment's bytes go: keep the window they end.
    fn save_window(&mut self) {
        let mut w = std::mem::take(&mut self.scratch);
        self.window_now(&mut w);
        std::mem::swap(&mut self.window, &mut w);
        self.scratch = w;
    }

    fn event(&mut self, event: Event) -> io::Result<()> {
        match event {
            Event::Boundary { bit, .. } => {
                let due = self.points.last().is_none_or(|p| self.out_total - p.uncompressed >= self.span);
                if due {
                    let mut window = std::mem::take(&mut self.scratch);
                    self.window_now(&mut window);
                    let stored =
                        if window.is_empty() { Vec::new() } else { deflate_window(&mut self.deflater, &window)? };
                    self.scratch = window;
                    let compressed = bit.div_ceil(8);
                    self.points.push(Checkpoint {
                        uncompressed: self.out_total,
                        compressed,
                        bits: (compressed * 8 - bit) as u8,
                        window: stored,
                    });
                }
            }
            Event::MemberEnd { crc, size, .. } => {
                let actual = std::mem::take(&mut self.crc).finalize();
                if actual != crc || self.member_out as u32 != size {
                    return Err(invalid_data("a gzip member fails its CRC-32 or length check"));
                }
                self.member_out = 0;
                self.window.clear();
            }
        }
        Ok(())
    }
}

fn event_out(e: &Event) -> u64 {
    match e {
        Event::Boundary { out, .. } | Event::MemberEnd { out, .. } => *out,
    }
}

impl Read for ParallelGzip {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.started {
            self.start()?;
        }
        loop {
            if self.done {
                return Ok(0);
            }
            if self.cur.is_none() {
                self.start_stretch()?;
            }
            let cur = self.cur.as_mut().expect("a stretch was just started");
            let at = cur.base + cur.pos as u64;
            if cur.events.front().is_some_and(|e| event_out(e) <= at) {
                let e = cur.events.pop_front().unwrap();
                self.event(e)?;
                continue;
            }
            if cur.pos < cur.bytes.len() {
                let mut n = (cur.bytes.len() - cur.pos).min(buf.len());
                if let Some(e) = cur.events.front() {
                    n = n.min((event_out(e) - at) as usize);
                }
                buf[..n].copy_from_slice(&cur.bytes[cur.pos..cur.pos + n]);
                cur.pos += n;
                self.account(&buf[..n]);
                return Ok(n);
            }
            if cur.next.is_some() || cur.stretch.is_some() || cur.end.is_some() {
                self.save_window();
            }
            let cur = self.cur.as_mut().expect("still the current stretch");
            if let Some(next) = cur.next.take() {
                cur.base += cur.bytes.len() as u64;
                cur.bytes = next;
                cur.pos = 0;
                continue;
            }
            if cur.stretch.is_none() {
                // A chunk decoded ahead, handed on: its buffer serves the next.
                let done = std::mem::take(&mut cur.bytes);
                let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
                if spare.is_empty() {
                    spare.push(done);
                }
            }
            if let Some(stretch) = cur.stretch.as_mut() {
                cur.base += cur.bytes.len() as u64;
                cur.bytes.clear();
                cur.pos = 0;
                stretch.step(&mut Vec::new(), &mut cur.bytes)?;
                cur.events.extend(stretch.events.drain(..));
                if let Some(end) = stretch.end() {
                    cur.end = Some(end);
                    cur.stretch = None;
                }
                let c = self.chunk_of(self.next_bit);
                self.submit(c);
                continue;
            }
            if !cur.events.is_empty() {
                return Err(invalid_data("gzip stream events past the end of its output"));
            }
            match cur.end {
                Some(End::Boundary(bit)) => {
                    self.next_bit = bit;
                    self.cur = None;
                }
                Some(End::Blob) => self.done = true,
                None => return Err(invalid_data("a gzip stretch ended without an end")),
            }
        }
    }
}

impl Drop for ParallelGzip {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.state.store(TAKEN_BACK, Ordering::Release);
        }
    }
}

/// What a worker needs to decode a chunk ahead.
struct Job {
    blob: Arc<Arriving>,
    lo: u64,
    stop: u64,
    state: Arc<AtomicU8>,
    spare: Spare,
}

/// Output buffers of chunks the reader is done with, for the next chunks: a chunk's tens
/// of MiB, freed and allocated anew, would be handed back to the system and faulted in
/// again page by page.
type Spare = Arc<Mutex<Vec<Vec<u8>>>>;

impl Job {
    fn cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) == TAKEN_BACK
    }

    /// The chunk from its first possible block start that decodes, or `None` (none found,
    /// too large, an error after a real-looking start, given up).
    fn decode(&self) -> Option<Decoded> {
        let len = self.blob.len();
        let hi = (self.stop / 8).min(len);
        let mut data = vec![0; usize::try_from((hi + HEADER_SLACK).min(len) - self.lo).ok()?];
        let got = self.blob.read_full_at(&mut data, self.lo).ok()?;
        data.truncate(got);
        let mut tries = 0;
        for b in 0..(hi - self.lo) as usize * 8 {
            if b % 4096 == 0 && self.cancelled() {
                return None;
            }
            if !blockfind::dynamic_block_at(&data, b) {
                continue;
            }
            tries += 1;
            if tries > MAX_TRIES {
                return None;
            }
            let start = self.lo * 8 + b as u64;
            let mut stretch = Stretch::new(Arc::clone(&self.blob), start, self.stop, None).ok()?;
            // Most chunks decode to about four times their size: room for that, taken
            // from the system only as it is written.
            let mut tail = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
            tail.clear();
            tail.reserve(4 * (self.stop / 8 - self.lo) as usize);
            let mut head = Vec::new();
            loop {
                if stretch.step(&mut head, &mut tail).is_err() {
                    // A lookalike fails fast; a failure after real-looking blocks is left for
                    // the in-order decode to meet (and report).
                    if stretch.events.len() > 1 || stretch.produced() > 1 << 16 {
                        return None;
                    }
                    break;
                }
                if let Some(end) = stretch.end() {
                    let events = std::mem::take(&mut stretch.events);
                    return Some(Decoded { start, end, head, tail, events });
                }
                if head.len() > MAX_MARKED || head.len() * 2 + tail.len() > MAX_SPECULATIVE || self.cancelled() {
                    return None;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::indexing::IndexingDecoder;
    use crate::layer::testdata::*;
    use crate::layer::workers;
    use flate2::Compression;
    use std::io::Write;
    use std::time::Duration;

    /// Decodes `blob` whole with the parallel decoder in chunks of `chunk` bytes, reading
    /// with uneven buffer sizes; fails the test instead of hanging.
    fn decode(blob: &[u8], chunk: u64, span: u64) -> io::Result<(Vec<u8>, Checkpoints, Stats)> {
        let file = blob_file(blob);
        let arriving = Arc::new(Arriving::whole(file).unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let run = || -> io::Result<_> {
                let mut dec = ParallelGzip::new(arriving, span, chunk, workers::global())?;
                dec.take_back = false;
                let mut out = Vec::new();
                let mut rng = Rng(3);
                let mut buf = vec![0; 300_000];
                loop {
                    let want = 1 + rng.below(buf.len() as u64) as usize;
                    match dec.read(&mut buf[..want])? {
                        0 => break,
                        n => out.extend_from_slice(&buf[..n]),
                    }
                }
                let stats = dec.stats();
                Ok((out, dec.finish().map_err(io::Error::other)?, stats))
            };
            let _ = tx.send(run());
        });
        rx.recv_timeout(Duration::from_secs(120)).expect("the parallel decoder hangs")
    }

    fn sequential(blob: &[u8], span: u64) -> (Vec<u8>, Checkpoints) {
        let mut dec = IndexingDecoder::new(blob, Format::Gzip, span).unwrap();
        let mut out = Vec::new();
        dec.read_to_end(&mut out).unwrap();
        (out, dec.finish().unwrap())
    }

    /// The parallel decoder gives flate2's bytes and the one-core decoder's checkpoints,
    /// which decode every span right.
    fn same_as_sequential(blob: &[u8], chunk: u64, span: u64) -> Stats {
        let expected = plain_gunzip(blob);
        let (out, cps, stats) = decode(blob, chunk, span).unwrap();
        assert!(out == expected, "output differs ({} bytes, expected {})", out.len(), expected.len());
        let (_, seq) = sequential(blob, span);
        assert_eq!(cps, seq, "checkpoints differ from the one-core decoder's");
        if !expected.is_empty() {
            check_random_access(blob, &expected, &cps);
        }
        stats
    }

    #[test]
    fn one_big_member_in_many_chunks() {
        let data = mixed(4 << 20, 41);
        let blob = gzip(&data, 6);
        let stats = same_as_sequential(&blob, 64 << 10, 256 << 10);
        if workers::cores() > 1 {
            assert!(stats.ahead >= 5, "{stats:?}");
            // Chunks start within 32 KiB of copied text and noise repeats: markers occur.
            assert!(stats.markers > 0, "{stats:?}");
        }
    }

    #[test]
    fn back_references_across_every_chunk_boundary() {
        // Fresh noise, then a copy of 16 KiB from up to 32 KiB back, over and over: a
        // chunk decoded ahead meets back-references into the window it lacks at once.
        let mut rng = Rng(9);
        let mut data: Vec<u8> = (0..32_768).map(|_| rng.next() as u8).collect();
        while data.len() < 3 << 20 {
            data.extend((0..6000).map(|_| rng.next() as u8));
            let from = data.len() - 16_384 - rng.below(16_000) as usize;
            data.extend_from_within(from..from + 16_384);
        }
        let blob = gzip(&data, 9);
        let stats = same_as_sequential(&blob, 64 << 10, 256 << 10);
        if workers::cores() > 1 {
            assert!(stats.ahead >= 10 && stats.markers > 100_000, "{stats:?}");
        }
    }

    #[test]
    fn multi_member_tiny_huge_and_empty_members() {
        let sizes = [0, 1, 2_000_000, 0, 0, 10, 700_000, 64 << 10, 1_500_000, 1, 0];
        let mut blob = Vec::new();
        for (k, &n) in sizes.iter().enumerate() {
            let part = mixed(n, 50 + k as u64);
            blob.extend(if k % 2 == 0 { gzip(&part, 6) } else { gzip_all_fields(&part) });
        }
        same_as_sequential(&blob, 128 << 10, 256 << 10);
        // Many small members, chunks much larger than a member.
        let mut blob = Vec::new();
        for k in 0..300 {
            blob.extend(gzip(&mixed(k * 131, k as u64), 1 + (k % 9) as u32));
        }
        same_as_sequential(&blob, 64 << 10, 64 << 10);
    }

    /// Member headers as RFC 1952 allows them and zlib reads them, longer than 64 KiB:
    /// the largest extra field (65,547 bytes of header), a name of 100 KiB; each with a
    /// header CRC, checked. The first member's header among them.
    #[test]
    fn member_headers_longer_than_64_kib() {
        let data = mixed(3 << 20, 61);
        let mut blob = Vec::new();
        let mut names = Vec::new();
        for (k, part) in data.chunks(700_000).enumerate() {
            let mut m = vec![0x1f, 0x8b, 8, 2 | 4 | 8, 0, 0, 0, 0, 0, 3];
            let xlen = if k % 2 == 0 { u16::MAX } else { 6 };
            m.extend_from_slice(&xlen.to_le_bytes());
            m.resize(m.len() + usize::from(xlen), b'x');
            names.push(blob.len() + m.len());
            m.resize(m.len() + if k % 2 == 0 { 10 } else { 100 << 10 }, b'n');
            m.push(0);
            let crc = crc32fast::hash(&m) as u16;
            m.extend_from_slice(&crc.to_le_bytes());
            let mut e = flate2::write::DeflateEncoder::new(m, Compression::new(6));
            e.write_all(part).unwrap();
            let mut m = e.finish().unwrap();
            m.extend_from_slice(&crc32fast::hash(part).to_le_bytes());
            m.extend_from_slice(&(part.len() as u32).to_le_bytes());
            blob.extend(m);
        }
        let (out, cps, _) = decode(&blob, 128 << 10, 256 << 10).unwrap();
        assert!(out == data, "output differs ({} bytes, expected {})", out.len(), data.len());
        let (seq_out, seq) = sequential(&blob, 256 << 10);
        assert!(seq_out == data);
        assert_eq!(cps, seq, "checkpoints differ from the one-core decoder's");
        check_random_access(&blob, &data, &cps);
        // A name changed under its header CRC: an error for both decoders.
        for at in [names[0], names[3]] {
            let mut bad = blob.clone();
            bad[at] ^= 1;
            assert!(decode(&bad, 128 << 10, 256 << 10).is_err(), "a header CRC failed at {at}, unnoticed");
            let mut dec = IndexingDecoder::new(&bad[..], Format::Gzip, 256 << 10).unwrap();
            assert!(io::copy(&mut dec, &mut io::sink()).is_err(), "zlib reads it");
        }
    }

    #[test]
    fn stored_blocks() {
        let data = mixed(2 << 20, 43);
        same_as_sequential(&gzip(&data, 0), 256 << 10, 1 << 20);
        // Stored and compressed members mixed.
        let mut blob = gzip(&data[..1 << 20], 0);
        blob.extend(gzip(&data[1 << 20..], 6));
        same_as_sequential(&blob, 128 << 10, 256 << 10);
    }

    /// A raw deflate stream of fixed-Huffman blocks, literals only (RFC 1951, 3.2.6).
    fn fixed_blocks(data: &[u8], per_block: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut n) = (0u64, 0u32);
        let mut put = |v: u64, bits: u32, out: &mut Vec<u8>| {
            acc |= v << n;
            n += bits;
            while n >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                n -= 8;
            }
        };
        // Huffman codes are sent most significant bit first.
        let rev = |code: u64, bits: u32| (0..bits).fold(0, |r, i| r | ((code >> i) & 1) << (bits - 1 - i));
        let blocks: Vec<&[u8]> = data.chunks(per_block).collect();
        for (i, block) in blocks.iter().enumerate() {
            put(u64::from(i + 1 == blocks.len()), 1, &mut out);
            put(1, 2, &mut out); // BTYPE 01, fixed
            for &b in *block {
                let (code, bits) = if b < 144 { (0x30 + u64::from(b), 8) } else { (0x190 + u64::from(b) - 144, 9) };
                put(rev(code, bits), bits, &mut out);
            }
            put(0, 7, &mut out); // end of block: 256 is 0000000
        }
        put(0, 7, &mut out); // flush the last bits
        out
    }

    fn gzip_member_around(deflated: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        m.extend_from_slice(deflated);
        let mut crc = flate2::Crc::new();
        crc.update(data);
        m.extend_from_slice(&crc.sum().to_le_bytes());
        m.extend_from_slice(&(data.len() as u32).to_le_bytes());
        m
    }

    #[test]
    fn fixed_huffman_blocks() {
        let data = mixed(2 << 20, 44);
        let mut blob = gzip_member_around(&fixed_blocks(&data, 70_000), &data);
        assert!(plain_gunzip(&blob) == data);
        blob.extend(gzip(&data, 6));
        blob.extend(gzip_member_around(&fixed_blocks(&data[..300_000], 1000), &data[..300_000]));
        same_as_sequential(&blob, 128 << 10, 256 << 10);
    }

    #[test]
    fn truncated_streams_are_errors() {
        let data = mixed(1 << 20, 45);
        let mut blob = gzip(&data, 6);
        blob.extend(gzip(&data[..500_000], 1));
        let mut rng = Rng(46);
        let mut cuts: Vec<usize> = (0..25).map(|_| rng.below(blob.len() as u64) as usize).collect();
        cuts.extend([1, 9, 10, 11, blob.len() - 9, blob.len() - 8, blob.len() - 1]);
        for cut in cuts {
            let e = decode(&blob[..cut], 64 << 10, 256 << 10).err();
            assert!(e.is_some(), "cut at {cut} of {} decoded", blob.len());
        }
    }

    #[test]
    fn corrupt_streams_give_an_error_or_flate2s_bytes() {
        let data = mixed(1 << 20, 47);
        let mut blob = gzip(&data, 6);
        blob.extend(gzip(&data[..300_000], 9));
        let mut rng = Rng(48);
        let mut errors = 0;
        for round in 0..40 {
            let mut bad = blob.clone();
            for _ in 0..1 + round % 3 {
                let at = rng.below(bad.len() as u64) as usize;
                bad[at] ^= 1 << rng.below(8);
            }
            if round % 5 == 0 {
                // Garbage after the end.
                bad.extend_from_slice(b"\0\0\0\0junk");
            }
            let mut reference = Vec::new();
            let flate = flate2::read::MultiGzDecoder::new(&bad[..]).read_to_end(&mut reference);
            match decode(&bad, 64 << 10, 256 << 10) {
                Ok((out, _, _)) => {
                    assert!(flate.is_ok() && out == reference, "round {round}: decoded to other bytes than flate2");
                }
                Err(_) => errors += 1,
            }
        }
        assert!(errors >= 30, "only {errors} of 40 corruptions were errors");
    }

    #[test]
    fn follows_a_blob_as_it_arrives_and_stops_when_the_download_does() {
        let data = mixed(3 << 20, 49);
        let blob = gzip(&data, 6);
        for fail_at in [None, Some(blob.len() / 2)] {
            let mut writer = tempfile::tempfile().unwrap();
            let arriving = Arc::new(Arriving::new(writer.try_clone().unwrap(), blob.len() as u64));
            let reader = {
                let arriving = Arc::clone(&arriving);
                std::thread::spawn(move || -> io::Result<Vec<u8>> {
                    let mut dec = ParallelGzip::new(arriving, 1 << 20, 128 << 10, workers::global())?;
                    let mut out = Vec::new();
                    dec.read_to_end(&mut out)?;
                    dec.finish().map_err(io::Error::other)?;
                    Ok(out)
                })
            };
            let mut sent = 0;
            for piece in blob.chunks(100_000) {
                if fail_at.is_some_and(|f| sent >= f) {
                    arriving.fail();
                    break;
                }
                writer.write_all(piece).unwrap();
                sent += piece.len();
                arriving.arrived(sent as u64);
                std::thread::sleep(Duration::from_millis(2));
            }
            let got = reader.join().unwrap();
            match fail_at {
                None => assert!(got.unwrap() == data),
                Some(_) => assert!(got.is_err()),
            }
        }
    }

    #[test]
    fn tiny_blobs_and_one_chunk() {
        for n in [0, 1, 100, 40_000] {
            let data = mixed(n, 60 + n as u64);
            same_as_sequential(&gzip(&data, 6), 1 << 20, 4096);
        }
        let mut e = flate2::GzBuilder::new().comment("c").write(Vec::new(), Compression::best());
        e.write_all(b"x").unwrap();
        same_as_sequential(&e.finish().unwrap(), 1, 1);
    }
}
