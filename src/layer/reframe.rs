//! Re-encode a layer's uncompressed stream as independent zstd frames of about one
//! span each. zstd can only be entered at a frame start, so a zstd layer that came as
//! one big frame has no checkpoints inside; its re-encoded form (`layers/HEX.zst`,
//! about the size of the blob) has one per frame. That costs one extra encode when the
//! layer is indexed, instead of keeping an uncompressed copy (2–4 × the blob).

use std::io::{self, Write};

/// zstd's default level: fast enough to keep up with the indexing pass, and close to
/// the size of the layer as pushed.
const LEVEL: i32 = 3;

/// Writes what it is given as zstd frames of `frame` uncompressed bytes each.
pub struct FrameWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    frame: usize,
    compressor: zstd::bulk::Compressor<'static>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(out: W, frame: usize) -> io::Result<FrameWriter<W>> {
        let mut compressor = zstd::bulk::Compressor::new(LEVEL)?;
        // The frame header then carries its content size, which decoders use to size
        // their output at once.
        compressor.include_contentsize(true)?;
        Ok(FrameWriter { out, buf: Vec::with_capacity(frame), frame, compressor })
    }

    fn emit(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let frame = self.compressor.compress(&self.buf)?;
            self.out.write_all(&frame)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Write the last, partial frame and hand back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.frame - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.frame {
            self.emit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::checkpoints::Format;
    use crate::layer::indexing::IndexingDecoder;
    use std::io::Read;

    #[test]
    fn frames_decode_to_the_input_and_each_is_a_checkpoint() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 & 0x3f).collect();
        let mut w = FrameWriter::new(Vec::new(), 1 << 20).unwrap();
        for chunk in data.chunks(100_000) {
            w.write_all(chunk).unwrap();
        }
        let z = w.finish().unwrap();
        let mut back = Vec::new();
        zstd::stream::read::Decoder::new(&z[..]).unwrap().read_to_end(&mut back).unwrap();
        assert!(back == data, "decoded stream differs");

        let mut dec = IndexingDecoder::new(&z[..], Format::Zstd, 1 << 20).unwrap();
        io::copy(&mut dec, &mut io::sink()).unwrap();
        let c = dec.finish().unwrap();
        assert!(c.is_seekable());
        assert_eq!(c.span_count(), 5, "one span per 1 MiB frame");
        let file = tempfile::tempfile().unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &z, 0).unwrap();
        let (s, e) = c.span_range(3);
        assert_eq!(c.decode_span(&file, 3).unwrap(), &data[s as usize..e as usize]);
    }
}
