//! The body of a compressed CHUNK (protocol-spec §4.14), free of I/O: the raw
//! length, then blocks of at most 1 MiB of raw data, each `method u8, raw u32,
//! stored u32` and its stored bytes (zstd level 1, or the raw bytes when that
//! does not shrink them). The engine moves bytes; this decides what they mean.

use super::error::ProtocolError;
use super::frame::{method, BLOCK_HEAD_LEN, BLOCK_RAW};

/// zstd level: 1 compressed a mixed corpus at 560-600 MB/s per core here,
/// within 4 % of level 3's ratio (benches/README.md, "Compression").
pub const ZSTD_LEVEL: i32 = 1;

/// After a block that did not shrink, this many more blocks of the same file
/// go as they are without trying (benches/README.md, "Compression").
pub const SKIP_AFTER_STORED: u32 = 15;

/// A block's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHead {
    /// [`method::STORED`] or [`method::ZSTD`].
    pub method: u8,
    /// Raw bytes the block holds.
    pub raw: u32,
    /// Bytes that follow the header.
    pub stored: u32,
}

impl BlockHead {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; BLOCK_HEAD_LEN] {
        let mut b = [0u8; BLOCK_HEAD_LEN];
        b[0] = self.method;
        b[1..5].copy_from_slice(&self.raw.to_be_bytes());
        b[5..9].copy_from_slice(&self.stored.to_be_bytes());
        b
    }

    /// Decodes a header with `left` raw bytes of the chunk still to come:
    /// every block but the last holds exactly 1 MiB, none is empty, a stored
    /// block is as long as its raw bytes and a zstd block no longer.
    pub fn decode(b: &[u8; BLOCK_HEAD_LEN], left: usize) -> Result<BlockHead, ProtocolError> {
        let h = BlockHead {
            method: b[0],
            raw: u32::from_be_bytes([b[1], b[2], b[3], b[4]]),
            stored: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
        };
        let raw = h.raw as usize;
        if raw == 0 || raw > left.min(BLOCK_RAW) || (raw < BLOCK_RAW && raw != left) {
            return Err(ProtocolError::Unexpected("a compressed chunk's block has the wrong raw length"));
        }
        match h.method {
            method::STORED if h.stored == h.raw => Ok(h),
            method::ZSTD if h.stored <= h.raw => Ok(h),
            _ => Err(ProtocolError::Unexpected("a compressed chunk's block has an unknown method or a bad length")),
        }
    }
}

/// Decodes zstd blocks (one per lane; its state is reused).
#[derive(Default)]
pub struct BlockDecoder {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl BlockDecoder {
    /// Decompresses a zstd block's `stored` bytes into `out` (its raw length).
    /// False when they do not decompress to exactly that: `out` then holds
    /// zeros, and the chunk is a bad one (acknowledged BAD_HASH, sent again).
    /// The output never exceeds `out`, itself at most 1 MiB.
    pub fn unzstd(&mut self, stored: &[u8], out: &mut [u8]) -> std::io::Result<bool> {
        let z = match &mut self.zstd {
            Some(z) => z,
            None => self.zstd.insert(zstd::bulk::Decompressor::new()?),
        };
        match z.decompress_to_buffer(stored, out) {
            Ok(k) if k == out.len() => Ok(true),
            _ => {
                out.fill(0);
                Ok(false)
            }
        }
    }
}

/// Builds compressed chunk bodies (one per lane; its buffers are reused).
pub struct BlockEncoder {
    zstd: zstd::bulk::Compressor<'static>,
    /// Where a block is compressed.
    zbuf: Vec<u8>,
    /// The body being made: its first `used` bytes (kept at its largest size).
    out: Vec<u8>,
    used: usize,
    /// Blocks still to store without trying ([`SKIP_AFTER_STORED`]).
    skip: u32,
    /// The file the last block belonged to.
    file: u64,
}

impl BlockEncoder {
    /// An encoder at [`ZSTD_LEVEL`].
    pub fn new() -> std::io::Result<BlockEncoder> {
        let zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
        let zbuf = vec![0u8; zstd::zstd_safe::compress_bound(BLOCK_RAW)];
        Ok(BlockEncoder { zstd, zbuf, out: Vec::new(), used: 0, skip: 0, file: u64::MAX })
    }

    /// Starts the body of a chunk of `len` raw bytes of file `file`.
    pub fn start(&mut self, file: u64, len: usize) {
        if file != self.file {
            (self.file, self.skip) = (file, 0);
        }
        let need = 4 + len.div_ceil(BLOCK_RAW) * BLOCK_HEAD_LEN + len;
        if self.out.len() < need {
            self.out.resize(need, 0);
        }
        self.out[..4].copy_from_slice(&(len as u32).to_be_bytes());
        self.used = 4;
    }

    /// Appends the next block (at most 1 MiB of raw bytes): zstd when that is
    /// smaller, else as it is.
    pub fn push(&mut self, raw: &[u8]) {
        let n = raw.len();
        let at = self.used;
        let tried = match self.skip {
            0 => self.zstd.compress_to_buffer(raw, &mut self.zbuf[..]).ok(),
            _ => {
                self.skip -= 1;
                None
            }
        };
        let dst = &mut self.out[at + BLOCK_HEAD_LEN..];
        let (m, stored) = match tried {
            Some(k) if k < n => {
                dst[..k].copy_from_slice(&self.zbuf[..k]);
                (method::ZSTD, k)
            }
            t => {
                if t.is_some() {
                    self.skip = SKIP_AFTER_STORED;
                }
                dst[..n].copy_from_slice(raw);
                (method::STORED, n)
            }
        };
        let head = BlockHead { method: m, raw: n as u32, stored: stored as u32 };
        self.out[at..at + BLOCK_HEAD_LEN].copy_from_slice(&head.encode());
        self.used = at + BLOCK_HEAD_LEN + stored;
    }

    /// The body made so far.
    pub fn body(&self) -> &[u8] {
        &self.out[..self.used]
    }
}

/// Decodes a whole compressed chunk body into its raw bytes: the reference
/// reader of §4.14, for tests and the fuzz target (the engine reads blocks as
/// they arrive instead). `Ok(None)`: a block did not decompress (a bad chunk).
#[doc(hidden)]
pub fn decode_body(body: &[u8], max_raw: usize) -> Result<Option<Vec<u8>>, ProtocolError> {
    let short = ProtocolError::Unexpected("compressed chunk shorter than its blocks");
    let raw_len = u32::from_be_bytes(body.get(..4).ok_or(short.clone())?.try_into().expect("4 bytes")) as usize;
    if raw_len == 0 || raw_len > max_raw {
        return Err(ProtocolError::Unexpected("compressed chunk of a wrong raw length"));
    }
    let mut rest = &body[4..];
    let mut out = Vec::new();
    let mut dec = BlockDecoder::default();
    let mut good = true;
    while out.len() < raw_len {
        let hb: &[u8; BLOCK_HEAD_LEN] = rest.get(..BLOCK_HEAD_LEN).ok_or(short.clone())?.try_into().expect("9");
        let h = BlockHead::decode(hb, raw_len - out.len())?;
        let stored = rest.get(BLOCK_HEAD_LEN..BLOCK_HEAD_LEN + h.stored as usize).ok_or(short.clone())?;
        let at = out.len();
        out.resize(at + h.raw as usize, 0);
        match h.method {
            method::STORED => out[at..].copy_from_slice(stored),
            _ => good &= dec.unzstd(stored, &mut out[at..]).unwrap_or(false),
        }
        rest = &rest[BLOCK_HEAD_LEN + h.stored as usize..];
    }
    if !rest.is_empty() {
        return Err(ProtocolError::Unexpected("compressed chunk longer than its blocks"));
    }
    Ok(good.then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(data: &[u8]) -> Vec<u8> {
        let mut e = BlockEncoder::new().unwrap();
        e.start(1, data.len());
        for b in data.chunks(BLOCK_RAW) {
            e.push(b);
        }
        e.body().to_vec()
    }

    #[test]
    fn bodies_round_trip_and_incompressible_blocks_are_stored() {
        let text: Vec<u8> = (0..BLOCK_RAW * 2 + 10).map(|i| b"abcabcabd"[i % 9]).collect();
        let body = encode(&text);
        assert!(body.len() < text.len() / 10, "text compresses");
        assert_eq!(decode_body(&body, 8 << 20).unwrap().unwrap(), text);
        let mut x = 7u64;
        let noise: Vec<u8> = (0..BLOCK_RAW + 5)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let body = encode(&noise);
        assert_eq!(body[4], method::STORED, "noise goes as it is");
        assert_eq!(decode_body(&body, 8 << 20).unwrap().unwrap(), noise);
    }

    #[test]
    fn malformed_bodies_are_refused_or_bad_never_larger() {
        let body = encode(&vec![5u8; 3000]);
        assert!(decode_body(&body[..body.len() - 1], 1 << 20).is_err(), "short");
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_body(&longer, 1 << 20).is_err(), "trailing bytes");
        assert!(decode_body(&body, 100).is_err(), "over the chunk size");
        // A zstd block whose data is garbage: a bad chunk, not an error.
        let mut bad = body.clone();
        let n = bad.len();
        bad[n - 3] ^= 0x55;
        assert!(matches!(decode_body(&bad, 1 << 20), Ok(None) | Ok(Some(_))));
        if let Ok(Some(v)) = decode_body(&bad, 1 << 20) {
            assert_eq!(v.len(), 3000, "never more than stated");
        }
        for (m, raw, stored, left) in
            [(9u8, 10u32, 10u32, 10usize), (0, 9, 10, 9), (0, 10, 10, 20), (1, 10, 11, 10), (0, 0, 0, 0)]
        {
            let h = BlockHead { method: m, raw, stored }.encode();
            assert!(BlockHead::decode(&h, left).is_err(), "{m} {raw} {stored} {left}");
        }
        assert!(BlockHead::decode(&BlockHead { method: 1, raw: BLOCK_RAW as u32 + 1, stored: 1 }.encode(), 2 << 20)
            .is_err());
    }
}

#[cfg(test)]
mod vectors {
    use super::*;
    use crate::proto::frame::{ChunkHead, Header, Limits, CHUNK_COMPRESSED, CHUNK_HEAD_LEN, HEADER_LEN};
    use crate::proto::hash::chunk_hash;

    /// The raw data of each vector in protocol-spec/vectors/chunk_z.txt.
    fn raws() -> Vec<(&'static str, Vec<u8>)> {
        vec![("CHUNK_Z_ZSTD", b"gfast ".repeat(100)), ("CHUNK_Z_STORED", (0u8..16).collect())]
    }

    fn frame(raw: &[u8]) -> Vec<u8> {
        let mut e = BlockEncoder::new().unwrap();
        e.start(7, raw.len());
        e.push(raw);
        let head = ChunkHead { id: 7, offset: 1 << 20 };
        let mut f = head.encode_prefix_flagged(CHUNK_COMPRESSED, e.body().len() as u32).to_vec();
        f.extend_from_slice(e.body());
        f.extend_from_slice(&chunk_hash(raw));
        f
    }

    #[test]
    #[ignore = "prints the lines of protocol-spec/vectors/chunk_z.txt"]
    fn print_chunk_vectors() {
        for (name, raw) in raws() {
            let hex: String = frame(&raw).iter().map(|b| format!("{b:02x}")).collect();
            println!("{name}: {hex}");
        }
    }

    /// Every line decodes to its raw data: header, chunk head, the body's
    /// blocks, and a trailer that is the raw data's hash (§4.14).
    #[test]
    fn the_compressed_chunk_vectors_decode() {
        let text = include_str!("../../protocol-spec/vectors/chunk_z.txt");
        let mut seen = 0;
        for (name, raw) in raws() {
            let line = text.lines().find(|l| l.starts_with(&format!("{name}: "))).expect("vector line");
            let hex = line.split_once(": ").unwrap().1.trim();
            let b: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            let h = Header::decode(b[..HEADER_LEN].try_into().unwrap(), &Limits::lane(1 << 20)).unwrap();
            assert_eq!(h.flags, CHUNK_COMPRESSED, "{name}");
            assert_eq!(h.len as usize, b.len() - HEADER_LEN, "{name}");
            let (head, data_len) =
                ChunkHead::decode(b[HEADER_LEN..HEADER_LEN + CHUNK_HEAD_LEN].try_into().unwrap(), h.len).unwrap();
            assert_eq!((head.id, head.offset), (7, 1 << 20), "{name}");
            let body = &b[HEADER_LEN + CHUNK_HEAD_LEN..HEADER_LEN + CHUNK_HEAD_LEN + data_len as usize];
            assert_eq!(decode_body(body, 1 << 20).unwrap().as_deref(), Some(&raw[..]), "{name}");
            assert_eq!(&b[b.len() - 16..], &chunk_hash(&raw), "{name}: the trailer is the raw data's hash");
            seen += 1;
        }
        assert_eq!(seen, 2);
        // This build's encoder makes the stored vector exactly (zstd's output may
        // differ between library versions; decoding it may not).
        let stored = raws().pop().unwrap().1;
        let hex: String = frame(&stored).iter().map(|b| format!("{b:02x}")).collect();
        assert!(text.contains(&hex), "the stored vector");
    }
}
