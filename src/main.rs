//! The `gfast` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    // rustls (a fresh buffer per TLS write) and quinn (per stream write) allocate
    // blocks of 100s of KiB; above glibc's default mmap threshold each one was a
    // new mapping, unmapped again when freed: a page fault per 4 KiB written
    // (264,000 per 2 GiB sent). Keeping them in the heap (loopback, 2 GiB):
    // TLS to --discard 1.64 -> 2.09 GB/s with sender CPU 1.75 -> 1.26 s; QUIC
    // 1.03-1.11 -> 1.19-1.21 GB/s. Peak RSS did not move (12 MiB over TCP).
    // SAFETY: mallopt only tunes glibc's allocator, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    gfast::cli::run()
}
