//! An owned zlib-rs inflate stream over its C API (`libz-rs-sys`), with all of this
//! crate's inflate FFI and its unsafe in one place. Gzip goes through it because flate2 does
//! not expose the calls a restart at a checkpoint needs: `inflatePrime` (feed the leftover
//! bits of a byte shared by two blocks), `inflateSetDictionary` on a raw stream (the window)
//! and `inflateGetDictionary` (take the window while indexing).

pub(super) use libz_rs_sys::{Z_BLOCK, Z_BUF_ERROR, Z_NO_FLUSH, Z_OK, Z_STREAM_END};

use libz_rs_sys as zlib;
use std::ffi::{c_int, CStr};
use std::io;

/// Deflate's history: a back-reference reaches at most this far.
pub(super) const WINDOW_SIZE: usize = 32 * 1024;

/// The error of a stream that is not valid deflate or gzip.
pub(super) fn invalid_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// An owned zlib-rs inflate stream. Boxed because zlib-rs checks that the stream has not
/// moved since `inflateInit2_`.
pub(super) struct Inflater {
    strm: Box<zlib::z_stream>,
}

// SAFETY: the stream's state is owned by this value alone (no thread-local or shared data
// in zlib-rs), and its buffer pointers are only set for the duration of one call.
unsafe impl Send for Inflater {}

impl Inflater {
    /// `window_bits`: -15 for raw deflate, 15 + 16 for gzip.
    pub(super) fn new(window_bits: c_int) -> io::Result<Self> {
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
    pub(super) fn inflate(&mut self, input: &[u8], output: &mut [u8], flush: c_int) -> (c_int, usize, usize) {
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

    /// `inflate` appending at most `room` bytes to `out`, straight into its spare capacity
    /// (no zeroing, no copy): what the parallel decoder's chunks are made of.
    pub(super) fn inflate_onto(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        room: usize,
        flush: c_int,
    ) -> (c_int, usize, usize) {
        out.reserve(room);
        let spare = out.spare_capacity_mut();
        let avail_in = input.len().min(u32::MAX as usize) as u32;
        let avail_out = spare.len().min(room).min(u32::MAX as usize) as u32;
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in;
        self.strm.next_out = spare.as_mut_ptr().cast::<u8>();
        self.strm.avail_out = avail_out;
        // SAFETY: as in `inflate`; next_out/avail_out describe the first `avail_out` bytes of
        // `out`'s spare capacity, which `out` owns and nothing else borrows during the call.
        // inflate only writes there, and reads back only bytes it wrote in this same call.
        let ret = unsafe { zlib::inflate(&mut *self.strm, flush) };
        let consumed = (avail_in - self.strm.avail_in) as usize;
        let produced = (avail_out - self.strm.avail_out) as usize;
        self.strm.next_in = std::ptr::null();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        // SAFETY: inflate initialised the first `produced` bytes of the spare capacity
        // (avail_out went down by exactly that much), and `produced <= avail_out`, which is
        // within the capacity reserved above.
        unsafe { out.set_len(out.len() + produced) };
        (ret, consumed, produced)
    }

    pub(super) fn data_type(&self) -> c_int {
        self.strm.data_type
    }

    pub(super) fn reset(&mut self) -> io::Result<()> {
        // SAFETY: initialised, unmoved stream (see `inflate`).
        let ret = unsafe { zlib::inflateReset(&mut *self.strm) };
        self.check(ret)
    }

    /// Feeds `bits` (< 8) low bits of `value` before the next input byte.
    pub(super) fn prime(&mut self, bits: u8, value: u8) -> io::Result<()> {
        // SAFETY: initialised, unmoved stream (see `inflate`).
        let ret = unsafe { zlib::inflatePrime(&mut *self.strm, c_int::from(bits), c_int::from(value)) };
        self.check(ret)
    }

    pub(super) fn set_dictionary(&mut self, dict: &[u8]) -> io::Result<()> {
        // SAFETY: initialised, unmoved stream; `dict` is a slice, valid for reads of its
        // length (the length given is never more: a longer slice would pass fewer bytes,
        // and zlib keeps only the last 32 KiB of what it is given).
        let ret = unsafe { zlib::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), dict.len() as u32) };
        self.check(ret)
    }

    /// Copies the current window (the member's last up to 32 KiB of output) into `buf`.
    pub(super) fn dictionary(&self, buf: &mut [u8]) -> io::Result<usize> {
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

    pub(super) fn error(&self, ret: c_int) -> io::Error {
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
