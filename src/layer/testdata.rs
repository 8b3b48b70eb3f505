//! Test data and checks shared by the decoders' tests: deterministic data with every
//! kind of deflate block in it, gzip members of every header shape, and the random-access
//! check that checkpoints must pass.

use super::checkpoints::Checkpoints;
use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::Compression;
use std::fs::File;
use std::io::{Read, Seek, Write};

/// xorshift64*: deterministic data without a dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Text, noise, zero runs and long-distance repeats, so blocks of every type and
/// back-references across checkpoints all occur.
pub(super) fn mixed(len: usize, seed: u64) -> Vec<u8> {
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

pub(super) fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A gzip member whose header carries FEXTRA, FNAME, FCOMMENT and FHCRC.
pub(super) fn gzip_all_fields(data: &[u8]) -> Vec<u8> {
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

pub(super) fn blob_file(blob: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(blob).unwrap();
    f.rewind().unwrap();
    f
}

/// Every span, span boundaries, random offsets and a save/load round trip.
pub(super) fn check_random_access(blob: &[u8], expected: &[u8], cps: &Checkpoints) {
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

pub(super) fn plain_gunzip(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(blob).read_to_end(&mut out).unwrap();
    out
}
