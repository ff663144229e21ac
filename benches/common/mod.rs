//! Shared by the benchmarks (each bench is its own crate: `mod common;`).

use std::io::Write;
use std::path::Path;

/// Writes `size` bytes (rounded down to whole MiB) of cheap pseudo-random data
/// (xorshift), incompressible enough for a transfer benchmark.
pub(crate) fn write_pseudo_random(path: &Path, size: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut b = vec![0u8; 1 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for _ in 0..size / b.len() as u64 {
        for c in b.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&b).unwrap();
    }
}
