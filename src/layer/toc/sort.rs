//! An external sort of byte records, for writing a TOC whatever the entry count: records
//! are gathered in a buffer of bounded size, which is sorted and spilled to a scratch
//! file whenever it fills, and the sorted runs are merged back in one pass. Memory stays
//! at the buffer plus a read buffer per run, however many records go through.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How two records compare: the sort order of a `Sorter`.
pub type Compare = fn(&[u8], &[u8]) -> Ordering;

/// Runs merged at once: more are first merged into longer runs, so the read buffers
/// (64 KiB each) and the open files stay bounded too.
const MAX_FAN_IN: usize = 64;
const READ_BUFFER: usize = 64 << 10;

/// A scratch file no one else can see: an unnamed file in `dir` (`O_TMPFILE`), which
/// goes with the process whatever happens to it, even a kill. Where the filesystem has
/// no unnamed files, a named one unlinked at once; a kill between the two leaves a
/// `.toc-scratch-…` file in the store's `tmp/`, which the sweep of `rm` and `prune`
/// (under the exclusive lock) removes; the sweep of dead owners' temp files when a
/// store is opened does not know the name.
pub fn scratch_file(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match File::options().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(dir) {
        Ok(file) => return Ok(file),
        // EISDIR: a kernel that does not know the flag; EOPNOTSUPP: a filesystem that
        // does not have unnamed files.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)) => {}
        Err(e) => return Err(e),
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".toc-scratch-{}-{n}", std::process::id()));
        let file = match File::options().read(true).write(true).create_new(true).mode(0o600).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        std::fs::remove_file(&path)?;
        return Ok(file);
    }
}

/// Sorts records (each a byte string) by `compare`; equal records keep the order they
/// were pushed in.
pub struct Sorter {
    dir: PathBuf,
    compare: Compare,
    budget: usize,
    bytes: Vec<u8>,
    /// (start, len) of each record in `bytes`.
    spans: Vec<(usize, u32)>,
    /// Sorted runs in push order, each with its level (how many merges made it).
    runs: Vec<(u32, File)>,
}

impl Sorter {
    /// A sorter that spills to `dir` once it holds about `budget` bytes.
    pub fn new(dir: &Path, budget: usize, compare: Compare) -> Sorter {
        Sorter { dir: dir.to_path_buf(), compare, budget, bytes: Vec::new(), spans: Vec::new(), runs: Vec::new() }
    }

    #[cfg(test)]
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
    }

    pub fn push(&mut self, record: &[u8]) -> io::Result<()> {
        let len = u32::try_from(record.len()).map_err(|_| io::Error::other("a sort record over 4 GiB"))?;
        self.spans.push((self.bytes.len(), len));
        self.bytes.extend_from_slice(record);
        if self.bytes.len() + self.spans.len() * 16 >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn sorted_spans(&mut self) -> Vec<(usize, u32)> {
        let (bytes, compare) = (&self.bytes, self.compare);
        let at = |&(s, l): &(usize, u32)| &bytes[s..s + l as usize];
        let mut spans = std::mem::take(&mut self.spans);
        spans.sort_by(|a, b| compare(at(a), at(b)));
        spans
    }

    fn spill(&mut self) -> io::Result<()> {
        let spans = self.sorted_spans();
        let mut w = BufWriter::with_capacity(READ_BUFFER, scratch_file(&self.dir)?);
        for (s, l) in spans {
            w.write_all(&l.to_le_bytes())?;
            w.write_all(&self.bytes[s..s + l as usize])?;
        }
        let mut file = w.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        self.runs.push((0, file));
        self.bytes.clear();
        // As soon as the last MAX_FAN_IN runs are of one level, they become one run of
        // the next (levels never rise towards the end): the open runs stay under
        // MAX_FAN_IN per level, however many records go through, and each record is
        // written once per level.
        while self.runs.len() >= MAX_FAN_IN {
            let tail = self.runs.len() - MAX_FAN_IN;
            let level = self.runs[tail].0;
            if self.runs[tail..].iter().any(|&(l, _)| l != level) {
                break;
            }
            let group = self.runs.drain(tail..).map(|(_, f)| f).collect();
            let merged = merge_to_run(group, self.compare, &self.dir)?;
            self.runs.push((level + 1, merged));
        }
        Ok(())
    }

    /// Every record pushed, in order.
    pub fn finish(mut self) -> io::Result<Sorted> {
        if self.runs.is_empty() {
            let spans = self.sorted_spans();
            return Ok(Sorted { inner: Inner::Memory { bytes: std::mem::take(&mut self.bytes), spans, next: 0 } });
        }
        if !self.spans.is_empty() {
            self.spill()?;
        }
        let mut runs: Vec<File> = std::mem::take(&mut self.runs).into_iter().map(|(_, f)| f).collect();
        while runs.len() > MAX_FAN_IN {
            let mut longer = Vec::new();
            let mut rest = runs.into_iter();
            loop {
                let group: Vec<File> = rest.by_ref().take(MAX_FAN_IN).collect();
                if group.is_empty() {
                    break;
                }
                longer.push(merge_to_run(group, self.compare, &self.dir)?);
            }
            runs = longer;
        }
        Ok(Sorted { inner: Inner::Runs(Merge::new(runs, self.compare)?) })
    }
}

/// Merge sorted runs (in push order) into one run in a new scratch file in `dir`.
fn merge_to_run(runs: Vec<File>, compare: Compare, dir: &Path) -> io::Result<File> {
    let mut merged = Merge::new(runs, compare)?;
    let mut w = BufWriter::with_capacity(READ_BUFFER, scratch_file(dir)?);
    while let Some(r) = merged.next()? {
        w.write_all(&(r.len() as u32).to_le_bytes())?;
        w.write_all(r)?;
    }
    let mut file = w.into_inner().map_err(|e| e.into_error())?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// The records of a `Sorter`, in order: `next` lends each in turn.
pub struct Sorted {
    inner: Inner,
}

enum Inner {
    Memory { bytes: Vec<u8>, spans: Vec<(usize, u32)>, next: usize },
    Runs(Merge),
}

impl Sorted {
    #[allow(clippy::should_implement_trait)] // lends each record; not an Iterator
    pub fn next(&mut self) -> io::Result<Option<&[u8]>> {
        match &mut self.inner {
            Inner::Memory { bytes, spans, next } => {
                let Some(&(s, l)) = spans.get(*next) else { return Ok(None) };
                *next += 1;
                Ok(Some(&bytes[s..s + l as usize]))
            }
            Inner::Runs(m) => m.next(),
        }
    }
}

/// A k-way merge of sorted runs.
struct Merge {
    readers: Vec<BufReader<File>>,
    heap: BinaryHeap<Head>,
    compare: Compare,
    current: Vec<u8>,
}

/// A run's next record, ordered so that the heap's top is the smallest (the earliest
/// run first among equals, which keeps equal records in push order).
struct Head {
    record: Vec<u8>,
    run: usize,
    compare: Compare,
}

impl PartialEq for Head {
    fn eq(&self, other: &Head) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Head) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Head) -> Ordering {
        (self.compare)(&other.record, &self.record).then(other.run.cmp(&self.run))
    }
}

fn read_record(r: &mut impl Read, into: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    into.clear();
    into.resize(u32::from_le_bytes(len) as usize, 0);
    r.read_exact(into)?;
    Ok(true)
}

impl Merge {
    fn new(runs: Vec<File>, compare: Compare) -> io::Result<Merge> {
        let mut readers: Vec<_> = runs.into_iter().map(|f| BufReader::with_capacity(READ_BUFFER, f)).collect();
        let mut heap = BinaryHeap::new();
        for (run, r) in readers.iter_mut().enumerate() {
            let mut record = Vec::new();
            if read_record(r, &mut record)? {
                heap.push(Head { record, run, compare });
            }
        }
        Ok(Merge { readers, heap, compare, current: Vec::new() })
    }

    fn next(&mut self) -> io::Result<Option<&[u8]>> {
        let Some(mut head) = self.heap.pop() else { return Ok(None) };
        std::mem::swap(&mut self.current, &mut head.record);
        if read_record(&mut self.readers[head.run], &mut head.record)? {
            head.compare = self.compare;
            self.heap.push(head);
        }
        Ok(Some(&self.current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_bytes(a: &[u8], b: &[u8]) -> Ordering {
        a.cmp(b)
    }

    #[test]
    fn sorts_in_memory_and_through_many_runs_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut x = 0x2545f4914f6cdd1du64;
        let records: Vec<Vec<u8>> = (0..20_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{:05}-{i}", x % 7000).into_bytes()
            })
            .collect();
        let mut want = records.clone();
        want.sort(); // stable, as the sorter is: equal keys cannot differ here anyway
        for budget in [usize::MAX, 4096, 300] {
            let mut s = Sorter::new(dir.path(), budget, by_bytes);
            for r in &records {
                s.push(r).unwrap();
                // A run per ~10 records at the smallest budget: 2000 in all, never
                // open at once.
                assert!(s.runs.len() < 2 * MAX_FAN_IN, "{} runs open", s.runs.len());
            }
            let mut got = Vec::new();
            let mut sorted = s.finish().unwrap();
            while let Some(r) = sorted.next().unwrap() {
                got.push(r.to_vec());
            }
            assert_eq!(got, want, "budget {budget}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "scratch files left behind");
    }

    #[test]
    fn equal_records_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let first_byte = |a: &[u8], b: &[u8]| a[0].cmp(&b[0]);
        let mut s = Sorter::new(dir.path(), 64, first_byte);
        for i in 0..500u32 {
            let mut r = vec![(i % 3) as u8];
            r.extend_from_slice(&i.to_be_bytes());
            s.push(&r).unwrap();
        }
        let mut sorted = s.finish().unwrap();
        let mut last = (0u8, 0u32);
        let mut n = 0;
        while let Some(r) = sorted.next().unwrap() {
            let here = (r[0], u32::from_be_bytes(r[1..5].try_into().unwrap()));
            assert!(n == 0 || here > last, "{here:?} after {last:?}");
            last = here;
            n += 1;
        }
        assert_eq!(n, 500);
    }
}
