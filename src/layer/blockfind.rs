//! Finding where a deflate block with dynamic Huffman codes may start, anywhere in a
//! compressed stream, without decoding what comes before: the parallel decoder (`pargz`)
//! starts its chunks at such places. A block header is checked as zlib would check it
//! (its code-length code complete, the literal/length and distance codes neither
//! over-subscribed nor incomplete beyond what zlib allows, an end-of-block code present),
//! which rules out nearly every bit position that is not a real block start; the decoder
//! then tries the survivors, and the chunk boundaries are checked against each other, so
//! a false start never reaches the output.

/// Order in which the code-length code lengths are stored (RFC 1951, 3.2.7).
const ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
const MAX_BITS: usize = 15;

/// Reads bits least significant first, as deflate packs them.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn get(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for k in 0..n {
            let p = self.pos + k;
            let byte = *self.data.get(p / 8)?;
            v |= u32::from((byte >> (p % 8)) & 1) << k;
        }
        self.pos += n;
        Some(v)
    }
}

/// A canonical Huffman code as puff.c decodes it: codes per length, symbols in order.
struct Code {
    count: [u16; MAX_BITS + 1],
    symbol: Vec<u16>,
}

impl Code {
    /// The code for `lengths`, or `None` if it is over-subscribed, or incomplete where
    /// zlib would refuse it (`incomplete_ok`: a lone code of one bit is allowed).
    fn new(lengths: &[u8], incomplete_ok: bool) -> Option<Code> {
        let mut count = [0u16; MAX_BITS + 1];
        for &l in lengths {
            count[l as usize] += 1;
        }
        let mut left: i32 = 1;
        for &c in &count[1..] {
            left = (left << 1) - i32::from(c);
            if left < 0 {
                return None;
            }
        }
        let max = (1..=MAX_BITS).rev().find(|&l| count[l] > 0).unwrap_or(0);
        // zlib's inflate_table: an incomplete code is an error unless it is a single code
        // of one bit (or no code at all, for distances).
        if left > 0 && !(incomplete_ok && max <= 1) {
            return None;
        }
        let mut offs = [0u16; MAX_BITS + 2];
        for l in 1..=MAX_BITS {
            offs[l + 1] = offs[l] + count[l];
        }
        let mut symbol = vec![0u16; lengths.len()];
        for (s, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbol[offs[l as usize] as usize] = s as u16;
                offs[l as usize] += 1;
            }
        }
        Some(Code { count, symbol })
    }

    fn decode(&self, bits: &mut Bits) -> Option<u16> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..=MAX_BITS {
            code |= bits.get(1)? as i32;
            let count = i32::from(self.count[len]);
            if code - count < first {
                return self.symbol.get((index + code - first) as usize).copied();
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        None
    }
}

/// Whether a dynamic-Huffman deflate block header that zlib would accept starts at bit
/// `bit` of `data` (false too when `data` ends before the header does).
pub(super) fn dynamic_block_at(data: &[u8], bit: usize) -> bool {
    let mut b = Bits { data, pos: bit };
    check(&mut b).is_some()
}

fn check(b: &mut Bits) -> Option<()> {
    let _last = b.get(1)?;
    if b.get(2)? != 2 {
        return None;
    }
    let nlen = b.get(5)? as usize + 257;
    let ndist = b.get(5)? as usize + 1;
    let ncode = b.get(4)? as usize + 4;
    if nlen > 286 || ndist > 30 {
        return None;
    }
    let mut cl = [0u8; 19];
    for &o in &ORDER[..ncode] {
        cl[o] = b.get(3)? as u8;
    }
    let clcode = Code::new(&cl, false)?;
    let mut lengths = [0u8; 286 + 30];
    let total = nlen + ndist;
    let mut i = 0;
    while i < total {
        let sym = clcode.decode(b)?;
        let (value, times) = match sym {
            0..=15 => (sym as u8, 1),
            16 => (*lengths.get(i.checked_sub(1)?)?, 3 + b.get(2)? as usize),
            17 => (0, 3 + b.get(3)? as usize),
            _ => (0, 11 + b.get(7)? as usize),
        };
        if i + times > total {
            return None;
        }
        lengths[i..i + times].fill(value);
        i += times;
    }
    if lengths[256] == 0 {
        return None;
    }
    Code::new(&lengths[..nlen], true)?;
    Code::new(&lengths[nlen..total], true)?;
    Some(())
}

/// The 3 header bits of the block at bit `bit` of `data`: (final, type), if present.
pub(super) fn block_type_at(data: &[u8], bit: usize) -> Option<(bool, u32)> {
    let mut b = Bits { data, pos: bit };
    let last = b.get(1)? == 1;
    Some((last, b.get(2)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::DeflateEncoder;
    use std::io::Write;

    #[test]
    fn finds_the_first_block_of_a_stream_and_few_false_starts() {
        let text: Vec<u8> =
            (0..200_000u32).flat_map(|i| format!("line {} of text {}\n", i, i % 97).into_bytes()).collect();
        let mut e = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&text).unwrap();
        let raw = e.finish().unwrap();
        assert!(dynamic_block_at(&raw, 0));
        let found = (0..raw.len() * 8).filter(|&b| dynamic_block_at(&raw, b)).count();
        // The real block starts (a few dozen) and not many more.
        assert!((2..200).contains(&found), "{found} candidates in {} bytes", raw.len());
        assert!(!dynamic_block_at(&raw, raw.len() * 8 - 4));
    }
}
