//! A data lane of a receiving session: chunks read, verified, written at their
//! offset and acknowledged (protocol-spec §4.14, §4.15, §5.5).

use super::*;

impl Session {
    pub(super) fn lane_loop(&self, mut r: BufReader<ConnReader>, w: ConnWriter) -> Result<(), WireError> {
        let mut w = BufWriter::with_capacity(16 << 10, w);
        let mut scratch = Vec::new();
        let limits = Limits::lane(self.chunk_size as u32);
        let mut pw = self.store.piece_writer(PIECE);
        let mut unsqueeze = Unsqueeze::default();
        let rules = self.n.blocks();
        loop {
            let h = match read_header(&mut r, &limits) {
                Ok(h) => h,
                Err(WireError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            if h.kind != crate::proto::frame::kind::CHUNK {
                return Err(self.lane_protocol(ProtocolError::Unexpected("frame on a data lane")));
            }
            self.heard();
            let compressed = h.flags == CHUNK_COMPRESSED;
            if compressed && !rules.any() {
                return Err(
                    self.lane_protocol(ProtocolError::Unexpected("compressed chunk without capability bit 1 or 9"))
                );
            }
            let mut hb = [0u8; CHUNK_HEAD_LEN];
            r.read_exact(&mut hb).map_err(|e| WireError::Io(eof_is_error(e)))?;
            let (ChunkHead { id, offset }, mut len) = ChunkHead::decode(&hb, h.len).map_err(WireError::Decode)?;
            // Compressed: what follows is the raw length, then blocks (§4.14).
            let mut body = 0u32;
            if compressed {
                let mut rl = [0u8; 4];
                r.read_exact(&mut rl).map_err(|e| WireError::Io(eof_is_error(e)))?;
                body = len.checked_sub(4).ok_or(WireError::Decode(crate::proto::error::DecodeError::Short("CHUNK")))?;
                len = u32::from_be_bytes(rl);
                self.compressed_in.fetch_add(u64::from(body) + 4, Ordering::Relaxed);
                if len == 0 || u64::from(len) > self.chunk_size {
                    return Err(self.lane_protocol(ProtocolError::Unexpected("compressed chunk of a wrong raw length")));
                }
            }
            let (plan, file, reclaimed) = {
                let mut st = self.state.lock().expect("state");
                match st.rx.on_chunk_head(id, offset, len as u64) {
                    Ok(p) => {
                        let reclaimed = p == ChunkPlan::Store && st.rx.reclaim(id, offset);
                        (p, st.rx.handle(id).map(|o| o.file.clone()), reclaimed)
                    }
                    Err(e) => return Err(self.lane_protocol(e)),
                }
            };
            let mut hasher = ChunkHasher::new();
            let mut done = 0usize;
            let mut write_err: Option<io::Error> = None;
            if let (Some(f), true) = (&file, reclaimed) {
                write_err = f.retract((offset / self.chunk_size) as u32).err();
            }
            // A block that does not decompress to what it says is a bad chunk:
            // acknowledged BAD_HASH and sent again, like corrupted data.
            let mut undecodable = false;
            while done < len as usize {
                let n = if compressed {
                    match unsqueeze.read_block(&mut r, &mut body, (done, len as usize, rules), pw.buffer()) {
                        Ok(Block::Data(n)) => n,
                        Ok(Block::Bad(n)) => {
                            undecodable = true;
                            n
                        }
                        Ok(Block::Hole(n)) => {
                            // A hole (§4.14): hashed as the zeros it stands for,
                            // and left a hole here (the partial has its size already).
                            hasher.update_zeros(n);
                            self.holes_in.fetch_add(n as u64, Ordering::Relaxed);
                            if let (Some(f), None) = (&file, &write_err) {
                                write_err = f.zero(offset + done as u64, n as u64).err();
                            }
                            self.heard();
                            done += n;
                            continue;
                        }
                        Err(e) => return Err(self.lane_protocol_or_io(e)),
                    }
                } else {
                    let n = (len as usize - done).min(PIECE);
                    r.read_exact(&mut pw.buffer()[..n]).map_err(|e| WireError::Io(eof_is_error(e)))?;
                    n
                };
                // A large chunk on a slow link is not silence.
                self.heard();
                let piece = &mut pw.buffer()[..n];
                hasher.update(piece);
                if let (Some(f), None) = (&file, &write_err) {
                    // Space is reserved piece by piece as the data arrives, never
                    // ahead of it; a chunk of one piece is one write, which
                    // allocates as well (no syscall more per small file).
                    let at = offset + done as u64;
                    let reserved = if (len as usize) > PIECE { f.reserve(at, n as u64) } else { Ok(()) };
                    if let Err(e) = reserved.and_then(|_| f.write_piece(&mut pw, at, n)) {
                        write_err = Some(e);
                    }
                }
                done += n;
            }
            // The chunk's writes are complete before it is journaled and acknowledged.
            if let Err(e) = pw.finish() {
                write_err.get_or_insert(e);
            }
            let mut trailer = [0u8; HASH_LEN];
            r.read_exact(&mut trailer).map_err(|e| WireError::Io(eof_is_error(e)))?;
            if compressed && body != 0 {
                return Err(self.lane_protocol(ProtocolError::Unexpected("compressed chunk longer than its blocks")));
            }
            let ok = plan == ChunkPlan::Store && !undecodable && hasher.finish() == trailer;
            if let (true, None, Some(f)) = (ok, &write_err, &file) {
                // Verified and written: note it in the journal (synced when the session lets go).
                let idx = (offset / self.chunk_size) as u32;
                if let Err(e) = f.record(idx, trailer) {
                    write_err = Some(e);
                }
            }
            let status = if let Some(e) = write_err {
                if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                    self.fail(code::NO_SPACE, &format!("writing received data: {e}"));
                    return Err(WireError::Io(e));
                }
                let next = {
                    let mut st = self.state.lock().expect("state");
                    let path = st.rx.handle(id).map(|o| show(&o.meta.path)).unwrap_or_default();
                    Next::Fail(st.rx.failing(id, code::IO, format!("cannot write {path}: {e}")))
                };
                self.settle(next).map_err(|_| WireError::Io(io::Error::other("session failed")))?;
                AckStatus::Dropped
            } else {
                let (status, next) = self.state.lock().expect("state").rx.on_chunk_checked(id, offset, trailer, ok);
                if let Err(e) = self.settle(next) {
                    let m = match e {
                        Fatal::Code(_, m) | Fatal::Peer(_, m) => m,
                        Fatal::Protocol(p) => p.to_string(),
                    };
                    return Err(WireError::Io(io::Error::other(m)));
                }
                status
            };
            write_frame(&mut w, &Frame::ChunkAck { id, offset, status }, &mut scratch)?;
            if r.buffer().is_empty() {
                w.flush()?;
                self.flush_control()?;
            }
        }
    }

    pub(super) fn lane_protocol(&self, e: ProtocolError) -> WireError {
        self.fail(code::PROTOCOL, &e.to_string());
        WireError::Io(io::Error::other(e.to_string()))
    }

    fn lane_protocol_or_io(&self, e: BlockError) -> WireError {
        match e {
            BlockError::Protocol(p) => self.lane_protocol(p),
            BlockError::Io(e) => WireError::Io(eof_is_error(e)),
        }
    }
}

/// A lane's reader of compressed chunks' blocks (protocol-spec §4.14): it
/// moves the bytes; `proto::chunk` checks each block's header and decodes it.
#[derive(Default)]
struct Unsqueeze {
    dec: BlockDecoder,
    stored: Vec<u8>,
}

/// Reading a block failed: the peer broke the protocol, or the connection broke.
enum BlockError {
    Protocol(ProtocolError),
    Io(io::Error),
}

impl From<io::Error> for BlockError {
    fn from(e: io::Error) -> Self {
        BlockError::Io(e)
    }
}

/// One block of a compressed chunk, read (§4.14).
enum Block {
    /// Its raw bytes are in the buffer.
    Data(usize),
    /// It did not decompress to what it says: the buffer holds zeros and the
    /// chunk must be sent again.
    Bad(usize),
    /// A hole of this many zero bytes: nothing was read.
    Hole(usize),
}

impl Unsqueeze {
    /// Reads the next block of a compressed chunk into `out` as raw bytes.
    /// `body` counts down the block bytes the frame still holds; the block
    /// starts `at` raw bytes into a chunk of `len`, under the session's
    /// `rules`. The output is bounded by the raw length the block states,
    /// itself at most 1 MiB (a hole's is not read at all).
    fn read_block(
        &mut self,
        r: &mut impl Read,
        body: &mut u32,
        (at, len, rules): (usize, usize, BlockRules),
        out: &mut [u8],
    ) -> Result<Block, BlockError> {
        let short = || BlockError::Protocol(ProtocolError::Unexpected("compressed chunk shorter than its blocks"));
        let mut take = |n: usize| {
            *body = body.checked_sub(n as u32).ok_or_else(short)?;
            Ok::<_, BlockError>(())
        };
        take(BLOCK_HEAD_LEN)?;
        let mut hb = [0u8; BLOCK_HEAD_LEN];
        r.read_exact(&mut hb)?;
        let h = BlockHead::decode(&hb, at, len, rules).map_err(BlockError::Protocol)?;
        let (raw, stored) = (h.raw as usize, h.stored as usize);
        take(stored)?;
        match h.method {
            method::ZERO => return Ok(Block::Hole(raw)),
            method::STORED => {
                r.read_exact(&mut out[..raw])?;
                return Ok(Block::Data(raw));
            }
            _ => {}
        }
        self.stored.resize(stored, 0);
        r.read_exact(&mut self.stored)?;
        Ok(if self.dec.unzstd(&self.stored, &mut out[..raw])? { Block::Data(raw) } else { Block::Bad(raw) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::BLOCK_RAW;

    fn block(m: u8, raw: usize, data: &[u8]) -> Vec<u8> {
        let mut b = vec![m];
        b.extend_from_slice(&(raw as u32).to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        b
    }

    const ZSTD_ONLY: BlockRules = BlockRules { zstd: true, sparse: false };

    /// Reads one block from `bytes`, the first of a chunk of `len` raw bytes;
    /// `Ok(Ok(n))` data, `Ok(Err(n))` a bad block, `Err` a broken frame.
    fn read_with(
        bytes: &[u8],
        len: usize,
        rules: BlockRules,
    ) -> (Result<Result<usize, usize>, &'static str>, Vec<u8>, u32) {
        let mut out = vec![7u8; BLOCK_RAW];
        let mut body = bytes.len() as u32;
        let r = Unsqueeze::default().read_block(&mut &bytes[..], &mut body, (0, len, rules), &mut out);
        let r = match r {
            Ok(Block::Data(n)) => Ok(Ok(n)),
            Ok(Block::Bad(n)) => Ok(Err(n)),
            Ok(Block::Hole(_)) => Err("hole"),
            Err(BlockError::Protocol(ProtocolError::Unexpected(m))) => Err(m),
            Err(BlockError::Protocol(_)) => Err("protocol"),
            Err(BlockError::Io(_)) => Err("io"),
        };
        (r, out, body)
    }

    fn read(bytes: &[u8], len: usize) -> (Result<Result<usize, usize>, &'static str>, Vec<u8>, u32) {
        read_with(bytes, len, ZSTD_ONLY)
    }

    #[test]
    fn a_hole_is_read_as_nothing_and_only_with_bit_9() {
        use crate::proto::frame::SPARSE_GRAIN;
        let sparse = BlockRules { zstd: false, sparse: true };
        let b = block(method::ZERO, 4 * SPARSE_GRAIN, b"");
        let mut body = b.len() as u32;
        let mut out = vec![7u8; BLOCK_RAW];
        let r = Unsqueeze::default().read_block(&mut &b[..], &mut body, (0, 8 << 20, sparse), &mut out);
        assert!(matches!(r, Ok(Block::Hole(n)) if n == 4 * SPARSE_GRAIN));
        assert_eq!(body, 0);
        assert!(out.iter().all(|&x| x == 7), "nothing written for a hole");
        assert!(matches!(read_with(&b, 8 << 20, ZSTD_ONLY).0, Err(m) if m != "io" && m != "hole"));
        // Off the 64 KiB grid, even with bit 9.
        let b = block(method::ZERO, SPARSE_GRAIN + 1, b"");
        assert!(matches!(read_with(&b, 8 << 20, sparse).0, Err(m) if m != "io" && m != "hole"));
    }

    #[test]
    fn compressed_blocks_are_read_bounded_and_checked() {
        let text: Vec<u8> = (0..BLOCK_RAW).map(|i| b"abcabcabd"[i % 9]).collect();
        let z = zstd::bulk::compress(&text, 1).unwrap();
        // A whole zstd block and a short stored last block.
        let (r, out, body) = read(&block(method::ZSTD, BLOCK_RAW, &z), BLOCK_RAW + 10);
        assert_eq!(r, Ok(Ok(BLOCK_RAW)));
        assert_eq!(out, text);
        assert_eq!(body, 0);
        let (r, out, _) = read(&block(method::STORED, 10, b"0123456789"), 10);
        assert_eq!(r, Ok(Ok(10)));
        assert_eq!(&out[..10], b"0123456789");
        // zstd data that decompresses to another length: a bad chunk (sent
        // again), never more than the stated raw length written.
        let short = zstd::bulk::compress(&text[..1000], 1).unwrap();
        let (r, out, _) = read(&block(method::ZSTD, 2000, &short), 2000);
        assert_eq!(r, Ok(Err(2000)));
        assert!(out[..2000].iter().all(|&b| b == 0) && out[2000] == 7);
        let (r, out, _) = read(&block(method::ZSTD, 500, &short), 500);
        assert_eq!(r, Ok(Err(500)));
        assert_eq!(out[500], 7);
        let (r, ..) = read(&block(method::ZSTD, 100, b"not zstd at all"), 100);
        assert_eq!(r, Ok(Err(100)));
        // Broken framing ends the session.
        for (b, left) in [
            (block(9, 10, b"0123456789"), 10),                          // unknown method
            (block(method::STORED, 9, b"0123456789"), 9),               // stored length differs
            (block(method::STORED, 10, b"0123456789"), 20),             // short block not last
            (block(method::STORED, 10, b"0123456789"), 5),              // more than the chunk holds
            (block(method::STORED, BLOCK_RAW + 1, b""), BLOCK_RAW + 1), // over 1 MiB
            (block(method::ZSTD, 10, &[0u8; 11]), 10),                  // "compressed" larger
            (block(method::STORED, 0, b""), 0),                         // empty
        ] {
            assert!(matches!(read(&b, left).0, Err(m) if m != "io"), "{:?}", &b[..9]);
        }
        // A block longer than the frame says.
        let b = block(method::STORED, 10, b"0123456789");
        let mut body = 12u32;
        let r = Unsqueeze::default().read_block(&mut &b[..], &mut body, (0, 10, ZSTD_ONLY), &mut [0u8; 16]);
        assert!(matches!(r, Err(BlockError::Protocol(_))));
    }
}
