//! Compressed chunks on a sending lane, and chunks with holes (protocol-spec
//! §4.14, capability bits 1 and 9).

use super::*;
use crate::proto::chunk::{stored_body_len, BlockHead, Span};
use crate::proto::frame::method;

/// A chunk with holes to send (§4.14): where it goes, its raw length, its
/// layout, and whether the test hook corrupts its first data byte.
pub(super) struct Holed<'a> {
    pub(super) head: ChunkHead,
    pub(super) len: usize,
    pub(super) spans: &'a [Span],
    pub(super) corrupt: bool,
}

/// A lane's compressor: reads a chunk a block at a time through the lane's
/// piece buffer and has `proto::chunk::BlockEncoder` make the compressed
/// CHUNK's body (protocol-spec §4.14).
pub(super) struct Squeeze {
    pub(super) enc: BlockEncoder,
}

// A compressed block is read through the lane's piece buffer.
const _: () = assert!(PIECE >= BLOCK_RAW);

impl Squeeze {
    pub(super) fn new() -> Squeeze {
        Squeeze { enc: BlockEncoder::new().expect("a zstd compressor at level 1") }
    }

    /// Reads `len` bytes of file `file`'s source at `offset` a block at a time
    /// (`None`: it cannot be read), hashes them, and appends each block to the
    /// body; returns the chunk's hash and the read error, if any. A read error
    /// is handled as in the plain path: zeros, and a hash that cannot match.
    pub(super) fn assemble(
        &mut self,
        piece: &mut [u8],
        src: Option<&dyn SourceFile>,
        (file, offset, len): (u64, u64, usize),
        corrupt: bool,
    ) -> ([u8; crate::proto::frame::HASH_LEN], Option<std::io::Error>) {
        let mut read_err = None;
        // A block is read into the lane's piece buffer (which stays in the
        // cache: reading in place into the body cost more sender CPU,
        // benches/README.md), then goes into the body compressed or as it is.
        self.enc.start(file, len);
        let mut hasher = ChunkHasher::new();
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(BLOCK_RAW);
            let buf = &mut piece[..n];
            match (src, &read_err) {
                (Some(f), None) => {
                    if let Err(e) = f.read_exact_at(buf, offset + done as u64) {
                        read_err = Some(e);
                        buf.fill(0);
                    }
                }
                _ => buf.fill(0),
            }
            hasher.update(buf);
            if corrupt && done == 0 {
                buf[0] ^= 1;
            }
            self.enc.push(buf);
            done += n;
        }
        let mut hash = hasher.finish();
        if read_err.is_some() || src.is_none() {
            hash[0] ^= 0xff;
        }
        (hash, read_err)
    }

    /// As [`Squeeze::assemble`] for a chunk laid out as `spans`: the data
    /// blocks compressed where that shrinks them, the holes as ZERO blocks
    /// (hashed as the zeros they stand for, never read). Also returns the data
    /// bytes, those that are not hole.
    pub(super) fn assemble_sparse(
        &mut self,
        piece: &mut [u8],
        src: &dyn SourceFile,
        c: &Holed,
    ) -> ([u8; crate::proto::frame::HASH_LEN], Option<std::io::Error>, u64) {
        let (offset, spans) = (c.head.offset, c.spans);
        self.enc.start(c.head.id, c.len);
        let mut rd = SpanReader::new(c.corrupt);
        let mut data = 0u64;
        for s in spans {
            if s.hole {
                rd.hasher.update_zeros(s.raw);
                self.enc.push_zero(s.raw);
                continue;
            }
            let buf = &mut piece[..s.raw];
            rd.read(src, buf, offset + s.at as u64);
            self.enc.push(buf);
            data += s.raw as u64;
        }
        let (hash, read_err) = rd.finish();
        (hash, read_err, data)
    }
}

/// Reads a chunk's data blocks and hashes them in order, the holes' zeros
/// included: a read error leaves zeros and a hash that cannot match (as in the
/// plain path); the test hook corrupts the first data byte after hashing.
struct SpanReader {
    hasher: ChunkHasher,
    read_err: Option<std::io::Error>,
    corrupt: bool,
}

impl SpanReader {
    fn new(corrupt: bool) -> SpanReader {
        SpanReader { hasher: ChunkHasher::new(), read_err: None, corrupt }
    }

    /// Fills `buf` from `at` of `src`, hashes it, and applies the test hook.
    fn read(&mut self, src: &dyn SourceFile, buf: &mut [u8], at: u64) {
        if self.read_err.is_none() {
            if let Err(e) = src.read_exact_at(buf, at) {
                self.read_err = Some(e);
            }
        }
        if self.read_err.is_some() {
            buf.fill(0);
        }
        self.hasher.update(buf);
        if std::mem::take(&mut self.corrupt) {
            buf[0] ^= 1;
        }
    }

    /// The chunk's hash (spoilt after a read error) and the error.
    fn finish(self) -> ([u8; crate::proto::frame::HASH_LEN], Option<std::io::Error>) {
        let mut hash = self.hasher.finish();
        if self.read_err.is_some() {
            hash[0] ^= 0xff;
        }
        (hash, self.read_err)
    }
}

/// Sends a chunk laid out as `spans` without compression (capability bit 9
/// alone): every data block stored, so the body's length is known before a
/// byte is read and the data streams through `piece` as in the plain path.
/// Returns the hash, the read error if any (zeros then, and a hash that cannot
/// match), and the data bytes sent; `Err` when the connection failed.
pub(super) fn send_stored_sparse(
    w: &mut impl Write,
    piece: &mut [u8],
    src: &dyn SourceFile,
    c: &Holed,
) -> std::io::Result<([u8; crate::proto::frame::HASH_LEN], Option<std::io::Error>, u64)> {
    let (head, spans) = (&c.head, c.spans);
    w.write_all(&head.encode_prefix_flagged(CHUNK_COMPRESSED, stored_body_len(spans) as u32))?;
    w.write_all(&(c.len as u32).to_be_bytes())?;
    let mut rd = SpanReader::new(c.corrupt);
    let mut data = 0u64;
    for s in spans {
        if s.hole {
            w.write_all(&BlockHead { method: method::ZERO, raw: s.raw as u32, stored: 0 }.encode())?;
            rd.hasher.update_zeros(s.raw);
            continue;
        }
        w.write_all(&BlockHead { method: method::STORED, raw: s.raw as u32, stored: s.raw as u32 }.encode())?;
        let buf = &mut piece[..s.raw];
        rd.read(src, buf, head.offset + s.at as u64);
        w.write_all(buf)?;
        data += s.raw as u64;
    }
    let (hash, read_err) = rd.finish();
    w.write_all(&hash)?;
    Ok((hash, read_err, data))
}
