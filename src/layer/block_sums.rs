//! CRC-32 of every 64 KiB block of a stored layer file, taken when the layer is indexed
//! right after its digest is verified and kept in its TOC, so that every later read from
//! disk can check the blocks it touches (`data::Sums`) without hashing the whole blob.

use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// CRC-32 of each `BLOCK` bytes of a stored file (the last block may be short).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSums {
    len: u64,
    sums: Vec<u32>,
}

impl BlockSums {
    pub const BLOCK: u64 = 64 << 10;

    /// The length of the file the sums cover.
    pub fn covered(&self) -> u64 {
        self.len
    }

    /// The CRC-32 of each block, in order.
    pub fn sums(&self) -> &[u32] {
        &self.sums
    }

    /// The sums of everything `file` holds.
    pub fn of(file: impl Read) -> io::Result<BlockSums> {
        let mut file = io::BufReader::with_capacity(Self::BLOCK as usize, file);
        let (mut len, mut sums) = (0, Vec::new());
        let mut block = vec![0u8; Self::BLOCK as usize];
        loop {
            let n = read_full(&mut file, &mut block)?;
            if n == 0 {
                break;
            }
            sums.push(crc32fast::hash(&block[..n]));
            len += n as u64;
        }
        Ok(BlockSums { len, sums })
    }
}

/// Read until `buf` is full or the end; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
