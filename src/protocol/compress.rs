//! COMPRESS=DEFLATE (RFC 4978): raw DEFLATE streams, one per direction.
//!
//! The relay never touches compressed bytes; the tracker inflates a copy of each direction so
//! the transcript keeps showing IMAP. The replayer and the fake server also deflate what they
//! send. Bytes in, bytes out, no I/O.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Inflates one direction of a compressed stream.
pub struct Inflater {
    inner: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("in", &self.inner.total_in())
            .field("out", &self.inner.total_out())
            .finish()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater {
            // RFC 4978: raw DEFLATE, no zlib header.
            inner: Decompress::new(false),
        }
    }

    /// Inflates from the front of `input` into the spare capacity of `out` (never beyond it,
    /// so the caller bounds memory), advancing `input`. Returns whether `out` filled up (more
    /// output may be pending even when `input` is used up). An error means the stream is not
    /// DEFLATE, or is damaged, and cannot be followed any further.
    pub fn inflate_step(&mut self, input: &mut &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        let before_in = self.inner.total_in();
        let status = self
            .inner
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|e| format!("cannot inflate: {e}"))?;
        let used = (self.inner.total_in() - before_in) as usize;
        *input = &input[used..];
        if status == Status::StreamEnd && !input.is_empty() {
            return Err("bytes after the end of the DEFLATE stream".into());
        }
        Ok(out.len() == out.capacity())
    }

    /// Inflates all of `input`, appending to `out` (unbounded: for tests and small inputs).
    pub fn inflate(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        loop {
            out.reserve(64 * 1024);
            let full = self.inflate_step(&mut input, out)?;
            if input.is_empty() && !full {
                return Ok(());
            }
        }
    }

    /// Compressed bytes read and inflated bytes produced so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.inner.total_in(), self.inner.total_out())
    }
}

/// Deflates what one side sends, flushing after each call so the peer can read it at once.
pub struct Deflater {
    inner: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflater {
    pub fn new() -> Deflater {
        Deflater {
            inner: Compress::new(Compression::default(), false),
        }
    }

    pub fn deflate(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        loop {
            out.reserve(input.len() + 64);
            let before = self.inner.total_in();
            // Compressing into a Vec with room cannot fail.
            let _ = self
                .inner
                .compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.inner.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut d = Deflater::new();
        let mut wire = d.deflate(b"a1 NOOP\r\n");
        wire.extend(d.deflate(&vec![b'x'; 100_000]));
        let mut i = Inflater::new();
        let mut out = Vec::new();
        for piece in wire.chunks(7) {
            i.inflate(piece, &mut out).unwrap();
        }
        assert_eq!(&out[..9], b"a1 NOOP\r\n");
        assert_eq!(out.len(), 9 + 100_000);
        assert_eq!(i.totals(), (wire.len() as u64, out.len() as u64));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut i = Inflater::new();
        let mut out = Vec::new();
        assert!(
            i.inflate(b"\xff\xff\xff\xff not deflate at all", &mut out)
                .is_err()
        );
    }
}
