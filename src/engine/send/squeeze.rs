//! Compressed chunks on a sending lane (protocol-spec §4.14).

use super::*;

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
}
