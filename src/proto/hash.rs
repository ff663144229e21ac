//! Chunk hashes and file digests (protocol-spec §5.5).

use super::frame::HASH_LEN;
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

/// Incremental xxh3-128 over the data of one chunk, fed piece by piece as it moves.
#[derive(Clone, Default)]
pub struct ChunkHasher(Xxh3);

impl ChunkHasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        ChunkHasher(Xxh3::new())
    }
    /// Feeds the next piece of chunk data.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// Feeds `n` zero bytes (a hole, §4.14), without a buffer of that size.
    pub fn update_zeros(&mut self, mut n: usize) {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        while n > 0 {
            let k = n.min(ZEROS.len());
            self.0.update(&ZEROS[..k]);
            n -= k;
        }
    }
    /// The chunk hash as it travels on the wire (big-endian xxh3-128).
    pub fn finish(&self) -> [u8; HASH_LEN] {
        self.0.digest128().to_be_bytes()
    }
}

/// The hash of one whole chunk.
pub fn chunk_hash(data: &[u8]) -> [u8; HASH_LEN] {
    xxh3_128(data).to_be_bytes()
}

/// The whole-file digest: xxh3-128 over the chunk hashes in offset order (§5.5).
pub fn file_digest<'a>(hashes: impl Iterator<Item = &'a [u8; HASH_LEN]>) -> [u8; HASH_LEN] {
    let mut h = Xxh3::new();
    for c in hashes {
        h.update(c);
    }
    h.digest128().to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut h = ChunkHasher::new();
        for piece in data.chunks(4097) {
            h.update(piece);
        }
        assert_eq!(h.finish(), chunk_hash(&data));
        assert_ne!(chunk_hash(&data), chunk_hash(&data[1..]));
    }

    #[test]
    fn digest_depends_on_order() {
        let (a, b) = (chunk_hash(b"a"), chunk_hash(b"b"));
        assert_ne!(file_digest([a, b].iter()), file_digest([b, a].iter()));
    }
}
