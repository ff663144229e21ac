//! Shared by the benchmarks (each bench is its own crate: `mod common;`).

use std::io::Write;
use std::os::unix::fs::FileExt;
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

/// Whether two files hold the same bytes (compared a MiB at a time).
pub(crate) fn same_bytes(a: &Path, b: &Path) -> bool {
    let (fa, fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let size = fa.metadata().unwrap().len();
    if fb.metadata().unwrap().len() != size {
        return false;
    }
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut o = 0;
    while o < size {
        let n = (size - o).min(x.len() as u64) as usize;
        fa.read_exact_at(&mut x[..n], o).unwrap();
        fb.read_exact_at(&mut y[..n], o).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
        o += n as u64;
    }
    true
}
