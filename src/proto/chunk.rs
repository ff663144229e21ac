//! The body of a compressed CHUNK (protocol-spec §4.14), free of I/O: the raw
//! length, then blocks of at most 1 MiB of raw data, each `method u8, raw u32,
//! stored u32` and its stored bytes (zstd level 1, or the raw bytes when that
//! does not shrink them). The engine moves bytes; this decides what they mean.

use super::error::ProtocolError;
use super::frame::{method, BLOCK_HEAD_LEN, BLOCK_RAW, SPARSE_GRAIN};

/// zstd level: 1 compressed a mixed corpus at 560-600 MB/s per core here,
/// within 4 % of level 3's ratio (benches/README.md, "Compression").
pub const ZSTD_LEVEL: i32 = 1;

/// After a block that did not shrink, this many more blocks of the same file
/// go as they are without trying (benches/README.md, "Compression").
pub const SKIP_AFTER_STORED: u32 = 15;

/// A block's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHead {
    /// [`method::STORED`], [`method::ZSTD`] or [`method::ZERO`].
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

    /// Decodes the header of the block that starts `at` raw bytes into a chunk
    /// of `len`, under the session's `rules` (§4.14). Without holes every block
    /// but the last holds exactly 1 MiB; with them (capability bit 9) a block
    /// ends on a multiple of [`SPARSE_GRAIN`] or at the chunk's end, a ZERO block
    /// stores nothing and may cover the rest of the chunk, the others at most
    /// 1 MiB. None is empty, a stored block is as long as its raw bytes and a
    /// zstd block no longer; zstd needs bit 1, ZERO bit 9.
    pub fn decode(
        b: &[u8; BLOCK_HEAD_LEN],
        at: usize,
        len: usize,
        rules: BlockRules,
    ) -> Result<BlockHead, ProtocolError> {
        let h = BlockHead {
            method: b[0],
            raw: u32::from_be_bytes([b[1], b[2], b[3], b[4]]),
            stored: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
        };
        let (raw, left) = (h.raw as usize, len.saturating_sub(at));
        let most = if h.method == method::ZERO { left } else { left.min(BLOCK_RAW) };
        let ends_well = if rules.sparse {
            at + raw == len || (at + raw) % SPARSE_GRAIN == 0
        } else {
            raw == BLOCK_RAW || raw == left
        };
        if raw == 0 || raw > most || !ends_well {
            return Err(ProtocolError::Unexpected("a compressed chunk's block has the wrong raw length"));
        }
        match h.method {
            method::STORED if h.stored == h.raw => Ok(h),
            method::ZSTD if rules.zstd && h.stored <= h.raw => Ok(h),
            method::ZERO if rules.sparse && h.stored == 0 => Ok(h),
            _ => Err(ProtocolError::Unexpected("a compressed chunk's block has an unknown method or a bad length")),
        }
    }
}

/// What a session's compressed CHUNKs may hold (§4.14): zstd blocks with
/// capability bit 1, ZERO blocks and the finer block grid with bit 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRules {
    /// zstd blocks (bit 1).
    pub zstd: bool,
    /// ZERO blocks, blocks ending on the 64 KiB grid (bit 9).
    pub sparse: bool,
}

impl BlockRules {
    /// Everything this build reads (for the fuzz target).
    pub const ALL: BlockRules = BlockRules { zstd: true, sparse: true };
    /// A compressed CHUNK may be sent at all.
    pub fn any(self) -> bool {
        self.zstd || self.sparse
    }
}

/// One block of a chunk's layout with holes (§4.14): `raw` bytes from `at`
/// (relative to the chunk's start), a hole or data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Raw offset within the chunk.
    pub at: usize,
    /// Raw bytes.
    pub raw: usize,
    /// A hole: a ZERO block.
    pub hole: bool,
}

/// Lays out a chunk of `len` bytes whose source has `holes` (ranges relative
/// to the chunk's start, sorted, not overlapping) as blocks: each hole
/// shrunk to whole [`SPARSE_GRAIN`] cells (what is left of it travels as
/// zeros), neighbouring holes joined, data cut into blocks of at most 1 MiB
/// on the grid. `None` when no whole cell is a hole: the chunk goes as it is.
pub fn sparse_layout(holes: &[(usize, usize)], len: usize) -> Option<Vec<Span>> {
    let g = SPARSE_GRAIN;
    let mut cells: Vec<(usize, usize)> = Vec::new();
    for &(a, b) in holes {
        let (a, b) = (a.div_ceil(g) * g, b.min(len) / g * g);
        if a >= b {
            continue;
        }
        match cells.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => cells.push((a, b)),
        }
    }
    if cells.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let data = |from: usize, to: usize, out: &mut Vec<Span>| {
        let mut at = from;
        while at < to {
            let raw = (to - at).min(BLOCK_RAW);
            out.push(Span { at, raw, hole: false });
            at += raw;
        }
    };
    let mut at = 0;
    for (a, b) in cells {
        data(at, a, &mut out);
        out.push(Span { at: a, raw: b - a, hole: true });
        at = b;
    }
    data(at, len, &mut out);
    Some(out)
}

/// The length of a compressed CHUNK body laid out as `spans` with every data
/// block stored (no zstd): known before a byte is read, so the body streams.
pub fn stored_body_len(spans: &[Span]) -> usize {
    4 + spans.iter().map(|s| BLOCK_HEAD_LEN + if s.hole { 0 } else { s.raw }).sum::<usize>()
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

    /// Appends a ZERO block of `n` raw bytes (capability bit 9).
    pub fn push_zero(&mut self, n: usize) {
        let at = self.used;
        let head = BlockHead { method: method::ZERO, raw: n as u32, stored: 0 };
        self.out[at..at + BLOCK_HEAD_LEN].copy_from_slice(&head.encode());
        self.used = at + BLOCK_HEAD_LEN;
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
pub fn decode_body(body: &[u8], max_raw: usize, rules: BlockRules) -> Result<Option<Vec<u8>>, ProtocolError> {
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
        let h = BlockHead::decode(hb, out.len(), raw_len, rules)?;
        let stored = rest.get(BLOCK_HEAD_LEN..BLOCK_HEAD_LEN + h.stored as usize).ok_or(short.clone())?;
        let at = out.len();
        out.resize(at + h.raw as usize, 0);
        match h.method {
            method::STORED => out[at..].copy_from_slice(stored),
            method::ZERO => {}
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

    /// A session with compression and without holes.
    const OLD: BlockRules = BlockRules { zstd: true, sparse: false };

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
        assert_eq!(decode_body(&body, 8 << 20, BlockRules::ALL).unwrap().unwrap(), text);
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
        assert_eq!(decode_body(&body, 8 << 20, BlockRules::ALL).unwrap().unwrap(), noise);
    }

    #[test]
    fn malformed_bodies_are_refused_or_bad_never_larger() {
        let body = encode(&vec![5u8; 3000]);
        assert!(decode_body(&body[..body.len() - 1], 1 << 20, BlockRules::ALL).is_err(), "short");
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_body(&longer, 1 << 20, BlockRules::ALL).is_err(), "trailing bytes");
        assert!(decode_body(&body, 100, BlockRules::ALL).is_err(), "over the chunk size");
        // A zstd block whose data is garbage: a bad chunk, not an error.
        let mut bad = body.clone();
        let n = bad.len();
        bad[n - 3] ^= 0x55;
        assert!(matches!(decode_body(&bad, 1 << 20, BlockRules::ALL), Ok(None) | Ok(Some(_))));
        if let Ok(Some(v)) = decode_body(&bad, 1 << 20, BlockRules::ALL) {
            assert_eq!(v.len(), 3000, "never more than stated");
        }
        for (m, raw, stored, left) in
            [(9u8, 10u32, 10u32, 10usize), (0, 9, 10, 9), (0, 10, 10, 20), (1, 10, 11, 10), (0, 0, 0, 0)]
        {
            let h = BlockHead { method: m, raw, stored }.encode();
            assert!(BlockHead::decode(&h, 0, left, OLD).is_err(), "{m} {raw} {stored} {left}");
        }
        assert!(BlockHead::decode(
            &BlockHead { method: 1, raw: BLOCK_RAW as u32 + 1, stored: 1 }.encode(),
            0,
            2 << 20,
            OLD
        )
        .is_err());
    }

    #[test]
    fn holes_are_laid_out_on_the_grid_and_small_ones_travel_as_zeros() {
        let g = SPARSE_GRAIN;
        let span = |at, raw, hole| Span { at, raw, hole };
        // No whole cell is a hole: the chunk goes as it is.
        assert_eq!(sparse_layout(&[], 8 << 20), None);
        assert_eq!(sparse_layout(&[(100, g + 99)], 8 << 20), None);
        // All hole: one ZERO block for the whole chunk.
        assert_eq!(sparse_layout(&[(0, 8 << 20)], 8 << 20), Some(vec![span(0, 8 << 20, true)]));
        // A hole shrinks to its whole cells; data around it is cut at 1 MiB.
        assert_eq!(
            sparse_layout(&[(1000, 3 * g + 5)], 2 << 20),
            Some(vec![
                span(0, g, false),
                span(g, 2 * g, true),
                span(3 * g, BLOCK_RAW, false),
                span(3 * g + BLOCK_RAW, (2 << 20) - 3 * g - BLOCK_RAW, false),
            ])
        );
        // Holes that touch once shrunk are one block; a tail shorter than a
        // cell goes as data, even when it is a hole.
        let len = 4 * g + 100;
        assert_eq!(
            sparse_layout(&[(0, g), (g, 2 * g), (3 * g, len)], len),
            Some(vec![span(0, 2 * g, true), span(2 * g, g, false), span(3 * g, g, true), span(4 * g, 100, false)])
        );
        // The streamed body's length is what the encoder makes with stored blocks.
        let spans = sparse_layout(&[(g, 3 * g)], 3 * g + 7).unwrap();
        let mut x = 88172645463325252u64;
        let noise: Vec<u8> = (0..3 * g + 7)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let mut e = BlockEncoder::new().unwrap();
        e.start(1, noise.len());
        for s in &spans {
            if s.hole {
                e.push_zero(s.raw);
            } else {
                e.push(&noise[s.at..s.at + s.raw]);
            }
        }
        assert_eq!(e.body().len(), stored_body_len(&spans), "incompressible data is stored");
        let mut want = noise.clone();
        want[g..3 * g].fill(0);
        assert_eq!(decode_body(e.body(), 1 << 20, BlockRules::ALL).unwrap().unwrap(), want);
        // Without bit 9 that body is refused; so is zstd without bit 1.
        assert!(decode_body(e.body(), 1 << 20, OLD).is_err());
        let z = encode(&vec![1u8; 1000]);
        assert!(decode_body(&z, 1 << 20, BlockRules { zstd: false, sparse: true }).is_err());
    }

    #[test]
    fn blocks_with_holes_keep_to_the_grid() {
        let g = SPARSE_GRAIN;
        let s = BlockRules { zstd: false, sparse: true };
        let h =
            |m: u8, raw: usize, stored: usize| BlockHead { method: m, raw: raw as u32, stored: stored as u32 }.encode();
        let len = 8 << 20;
        assert!(BlockHead::decode(&h(method::ZERO, len, 0), 0, len, s).is_ok(), "a whole chunk of hole");
        assert!(BlockHead::decode(&h(method::STORED, g, g), 0, len, s).is_ok(), "one cell of data");
        assert!(BlockHead::decode(&h(method::STORED, 100, 100), len - 100, len, s).is_ok(), "the chunk's tail");
        for (b, at, why) in [
            (h(method::ZERO, g, 1), 0, "a hole stores nothing"),
            (h(method::ZERO, g + 1, 0), 0, "off the grid"),
            (h(method::STORED, 100, 100), 0, "short, not at the end"),
            (h(method::STORED, 2 * BLOCK_RAW, 2 * BLOCK_RAW), 0, "data blocks hold at most 1 MiB"),
            (h(method::ZERO, len, 0), g, "past the chunk's end"),
            (h(method::ZERO, 0, 0), 0, "empty"),
            (h(method::ZSTD, g, 10), 0, "zstd without bit 1"),
        ] {
            assert!(BlockHead::decode(&b, at, len, s).is_err(), "{why}");
        }
        assert!(BlockHead::decode(&h(method::ZERO, len, 0), 0, len, OLD).is_err(), "ZERO without bit 9");
    }
}

#[cfg(test)]
mod vectors {
    use super::*;
    use crate::proto::frame::{ChunkHead, Header, Limits, CHUNK_COMPRESSED, CHUNK_HEAD_LEN, HEADER_LEN};
    use crate::proto::hash::chunk_hash;

    /// The raw data of each vector in protocol-spec/vectors/chunk_z.txt.
    fn raws() -> Vec<(&'static str, Vec<u8>)> {
        let mut sparse = vec![0u8; SPARSE_GRAIN];
        sparse.extend(0u8..16);
        vec![
            ("CHUNK_Z_ZSTD", b"gfast ".repeat(100)),
            ("CHUNK_Z_STORED", (0u8..16).collect()),
            ("CHUNK_Z_SPARSE", sparse),
        ]
    }

    fn frame(raw: &[u8]) -> Vec<u8> {
        let mut e = BlockEncoder::new().unwrap();
        e.start(7, raw.len());
        if raw.len() > SPARSE_GRAIN {
            // CHUNK_Z_SPARSE: a hole of one cell, then 16 bytes stored.
            e.push_zero(SPARSE_GRAIN);
            e.push(&raw[SPARSE_GRAIN..]);
        } else {
            e.push(raw);
        }
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
            assert_eq!(decode_body(body, 1 << 20, BlockRules::ALL).unwrap().as_deref(), Some(&raw[..]), "{name}");
            assert_eq!(&b[b.len() - 16..], &chunk_hash(&raw), "{name}: the trailer is the raw data's hash");
            seen += 1;
        }
        assert_eq!(seen, 3);
        // This build's encoder makes the stored and sparse vectors exactly (zstd's
        // output may differ between library versions; decoding it may not).
        for (name, raw) in raws().into_iter().skip(1) {
            let hex: String = frame(&raw).iter().map(|b| format!("{b:02x}")).collect();
            assert!(text.contains(&hex), "{name}");
        }
    }
}
