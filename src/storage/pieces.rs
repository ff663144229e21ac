//! Writing received pieces at their offsets: through io_uring when the kernel
//! allows it, with pwrite(2) as the fallback that is always built.
//!
//! A lane reads a piece from its socket into a buffer handed out here, hashes it,
//! and submits the buffer; with io_uring the write runs while the lane reads the
//! next piece, and [`PieceWriter::finish`] waits for a chunk's writes before the
//! chunk is acknowledged. Buffers are allocated once per lane (a small pool),
//! never per chunk.

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use io_uring::{opcode, types, IoUring};

/// How received data is written. pwrite is the default: on the machine in
/// benches/README.md it used ~15 % less receiver CPU than io_uring for the same
/// rate (4 lanes already overlap socket reads with writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoMode {
    /// io_uring, detected at run time (falls back to pwrite, with a note, when
    /// the kernel or a seccomp filter refuses it).
    Uring,
    /// pwrite(2).
    Pwrite,
}

/// Largest single write. On ext4 (kernel 6.18, the machine in
/// benches/README.md) a 1 MiB write into the page cache often cost 3-6 x the
/// CPU of the same bytes in smaller writes (2 GiB from one thread: 1.1-2.6 GB/s
/// in 7 of 10 runs, against 5.1-7.0 in every run with 64-512 KiB writes); tmpfs
/// shows no difference.
const WRITE_SLICE: usize = 256 << 10;

/// From this offset on a file is written behind (see [`SharedFile::behind`]).
const BEHIND_FROM: u64 = 1 << 30;
/// How far behind the write front pages are dropped from the page cache.
const BEHIND_LAG: u64 = 64 << 20;

/// A file that several lanes write into. Their pwrites are taken one at a time:
/// concurrent writers of one file contend for its inode lock, which spins while
/// the holder runs; on 2 cores that spinning took 22 % of the receiver's samples
/// with 1 MiB writes and 5 % with 256 KiB slices, where a waiter here sleeps.
pub(crate) struct SharedFile {
    file: File,
    writing: Mutex<()>,
}

impl SharedFile {
    /// Wraps `file` for writing by several lanes.
    pub(crate) fn new(file: File) -> SharedFile {
        SharedFile { file, writing: Mutex::new(()) }
    }

    /// Writes all of `buf` at `offset`, in slices of at most [`WRITE_SLICE`].
    pub(crate) fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        {
            let _one_at_a_time = self.writing.lock().unwrap_or_else(|e| e.into_inner());
            for (k, slice) in buf.chunks(WRITE_SLICE).enumerate() {
                self.file.write_all_at(slice, offset + (k * WRITE_SLICE) as u64)?;
            }
        }
        self.behind(offset, buf.len() as u64);
        Ok(())
    }

    /// Write-behind for large files, once `len` bytes at `offset` are written:
    /// from [`BEHIND_FROM`] on, their writeback starts now (sync_file_range,
    /// asynchronous) and the pages [`BEHIND_LAG`] behind them, written back by
    /// then, leave the page cache (POSIX_FADV_DONTNEED drops only clean pages;
    /// tmpfs ignores both). Without it a file larger than the dirty threshold
    /// fills fresh page-cache memory, which cost this VM 2-4 x the receiver's
    /// CPU (4 GiB TLS push to disk 0.63-1.23 -> 1.58-1.66 GB/s); the first GiB
    /// of every file stays cached as before. Advice only: errors are ignored.
    fn behind(&self, offset: u64, len: u64) {
        if offset < BEHIND_FROM {
            return;
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: advisory calls on a valid descriptor; no memory is passed.
        unsafe {
            libc::sync_file_range(fd, offset as libc::off64_t, len as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE);
            libc::posix_fadvise(
                fd,
                (offset - BEHIND_LAG) as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }
}

impl Deref for SharedFile {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

/// Pieces a lane may have in flight with io_uring.
const DEPTH: usize = 4;

/// Hands out piece buffers and writes them at file offsets.
pub(crate) struct PieceWriter {
    piece: usize,
    inner: Inner,
}

enum Inner {
    Pwrite(Vec<u8>),
    Uring(Box<Uring>),
}

struct Uring {
    ring: IoUring,
    bufs: Vec<Vec<u8>>,
    /// Buffers registered with the kernel (WRITE_FIXED) or not (plain WRITE).
    fixed: bool,
    free: Vec<usize>,
    cur: Option<usize>,
    /// Per buffer: the write in flight (file, offset, length).
    slots: Vec<Option<(Arc<SharedFile>, u64, usize)>>,
    /// Pieces in flight.
    inflight: usize,
    /// Per buffer: its slices still in flight.
    pending: Vec<usize>,
    err: Option<io::Error>,
}

impl PieceWriter {
    /// A writer for pieces of at most `piece` bytes, writing with `mode`.
    pub(crate) fn new(piece: usize, mode: IoMode) -> PieceWriter {
        match mode {
            IoMode::Pwrite => PieceWriter { piece, inner: Inner::Pwrite(vec![0u8; piece]) },
            IoMode::Uring => Self::with_ring(piece, Uring::new(piece)),
        }
    }

    /// io_uring if the ring could be set up, else pwrite (with a note, once).
    fn with_ring(piece: usize, ring: io::Result<Uring>) -> PieceWriter {
        let inner = match ring {
            Ok(u) => Inner::Uring(Box::new(u)),
            Err(e) => {
                warn_once(&e);
                Inner::Pwrite(vec![0u8; piece])
            }
        };
        PieceWriter { piece, inner }
    }

    /// "io_uring" or "pwrite": what this writer uses (the tests check it).
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        match self.inner {
            Inner::Pwrite(_) => "pwrite",
            Inner::Uring(_) => "io_uring",
        }
    }

    /// The buffer for the next piece (waits for a free one if all are in flight).
    pub(crate) fn buffer(&mut self) -> &mut [u8] {
        let piece = self.piece;
        match &mut self.inner {
            Inner::Pwrite(b) => &mut b[..piece],
            Inner::Uring(u) => {
                let i = u.current();
                &mut u.bufs[i][..piece]
            }
        }
    }

    /// Writes the first `n` bytes of the buffer from [`buffer`](Self::buffer) at
    /// `offset` in `file`. With io_uring the write completes later: errors show
    /// in [`finish`](Self::finish).
    pub(crate) fn write(&mut self, file: &Arc<SharedFile>, offset: u64, n: usize) -> io::Result<()> {
        match &mut self.inner {
            Inner::Pwrite(b) => file.write_at(&b[..n], offset),
            Inner::Uring(u) => {
                u.submit(file, offset, n);
                Ok(())
            }
        }
    }

    /// Waits until every submitted piece is written; returns the first error
    /// since the last call.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Pwrite(_) => Ok(()),
            Inner::Uring(u) => {
                while u.inflight > 0 {
                    u.wait_one();
                }
                u.err.take().map_or(Ok(()), Err)
            }
        }
    }
}

fn warn_once(e: &io::Error) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        use std::io::Write as _;
        let _ = writeln!(io::stderr(), "gfast: io_uring is not available ({e}); writing with pwrite");
    });
}

impl Uring {
    fn new(piece: usize) -> io::Result<Uring> {
        let ring = IoUring::new((DEPTH * piece.div_ceil(WRITE_SLICE)) as u32)?;
        let bufs: Vec<Vec<u8>> = (0..DEPTH).map(|_| vec![0u8; piece]).collect();
        let iov: Vec<libc::iovec> =
            bufs.iter().map(|b| libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() }).collect();
        // SAFETY: the buffers live as long as the ring (both are owned by this
        // struct, and Drop waits for every write before either is freed); their
        // heap storage never moves.
        let fixed = unsafe { ring.submitter().register_buffers(&iov) }.is_ok();
        Ok(Uring {
            ring,
            bufs,
            fixed,
            free: (0..DEPTH).rev().collect(),
            cur: None,
            slots: (0..DEPTH).map(|_| None).collect(),
            inflight: 0,
            pending: vec![0; DEPTH],
            err: None,
        })
    }

    fn current(&mut self) -> usize {
        if let Some(i) = self.cur {
            return i;
        }
        while self.free.is_empty() {
            self.wait_one();
        }
        let i = self.free.pop().expect("a free buffer");
        self.cur = Some(i);
        i
    }

    fn submit(&mut self, file: &Arc<SharedFile>, offset: u64, n: usize) {
        let i = self.current();
        self.cur = None;
        let fd = types::Fd(file.as_raw_fd());
        self.slots[i] = Some((file.clone(), offset, n));
        self.inflight += 1;
        // One write per slice of WRITE_SLICE bytes (as with pwrite); the piece is
        // done when its last slice completes.
        for (k, a) in (0..n).step_by(WRITE_SLICE).enumerate() {
            let len = (n - a).min(WRITE_SLICE);
            // SAFETY: `a` < n <= the buffer's length.
            let ptr = unsafe { self.bufs[i].as_ptr().add(a) };
            let e = if self.fixed {
                opcode::WriteFixed::new(fd, ptr, len as u32, i as u16).offset(offset + a as u64).build()
            } else {
                opcode::Write::new(fd, ptr, len as u32).offset(offset + a as u64).build()
            };
            // SAFETY: the buffer and the file stay alive and untouched until every
            // completion of buffer `i` is reaped (slots holds the file; the buffer
            // is neither handed out nor freed while its slot is taken).
            let pushed = unsafe { self.ring.submission().push(&e.user_data(((i << 16) | k) as u64)) };
            if pushed.is_err() {
                // Cannot happen (the ring holds DEPTH pieces of slices); write the
                // slice directly rather than lose it.
                if let Err(e) = file.write_all_at(&self.bufs[i][a..a + len], offset + a as u64) {
                    self.err.get_or_insert(e);
                }
                continue;
            }
            self.pending[i] += 1;
        }
        if self.pending[i] == 0 {
            self.release(i);
            return;
        }
        if let Err(e) = self.ring.submit() {
            self.err.get_or_insert(e);
        }
    }

    fn release(&mut self, i: usize) {
        self.slots[i] = None;
        self.inflight -= 1;
        self.free.push(i);
    }

    /// Waits for at least one completion and handles every one that is ready.
    fn wait_one(&mut self) {
        if self.inflight == 0 {
            return;
        }
        if let Err(e) = self.ring.submit_and_wait(1) {
            if e.raw_os_error() != Some(libc::EINTR) {
                // The ring is unusable: nothing more completes, so finish the
                // writes in flight by hand.
                self.err.get_or_insert(e);
                self.abandon();
                return;
            }
        }
        let done: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (user_data, res) in done {
            self.complete(user_data, res);
        }
    }

    fn complete(&mut self, user_data: u64, res: i32) {
        let (i, k) = ((user_data >> 16) as usize, (user_data & 0xffff) as usize);
        let Some((file, offset, n)) = self.slots[i].clone() else { return };
        let (a, b) = (k * WRITE_SLICE, ((k + 1) * WRITE_SLICE).min(n));
        if res < 0 {
            self.err.get_or_insert(io::Error::from_raw_os_error(-res));
        } else if (res as usize) < b - a {
            // Short write: finish the slice synchronously.
            let from = a + res as usize;
            if let Err(e) = file.write_all_at(&self.bufs[i][from..b], offset + from as u64) {
                self.err.get_or_insert(e);
            }
        }
        // (Saturating: a completion that outlived an abandoned ring must not wrap.)
        self.pending[i] = self.pending[i].saturating_sub(1);
        if self.pending[i] == 0 {
            self.release(i);
            file.behind(offset, n as u64);
        }
    }

    /// Rewrites every piece still in flight with pwrite (used when the ring fails).
    fn abandon(&mut self) {
        for i in 0..DEPTH {
            if let Some((file, offset, n)) = self.slots[i].clone() {
                self.pending[i] = 0;
                self.release(i);
                if let Err(e) = file.write_at(&self.bufs[i][..n], offset) {
                    self.err.get_or_insert(e);
                }
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // The kernel may still be reading these buffers: wait before freeing them.
        let mut tries = 0;
        while self.inflight > 0 && tries < 1000 {
            self.wait_one();
            tries += 1;
        }
    }
}

/// Copies `len` bytes at `offset` of `src` to the same offset of `dst`: in the
/// kernel (copy_file_range: no copy through user space, and extents shared
/// where the file system can), else through a buffer (another file system's
/// files on some kernels, or a file system without it).
pub(crate) fn copy_range(src: &File, dst: &SharedFile, (offset, len): (u64, u64)) -> io::Result<()> {
    let (mut off_in, mut off_out): (i64, i64) = (offset as i64, offset as i64);
    let mut left = len;
    while left > 0 {
        let n = left.min(1 << 30) as usize;
        // SAFETY: valid descriptors and offsets the kernel updates.
        let r =
            unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.file.as_raw_fd(), &mut off_out, n, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EXDEV) | Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
                    if off_in == offset as i64 =>
                {
                    return copy_buffered(src, &dst.file, (offset, len));
                }
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
        if r == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the source ended early: it shrank while copied"));
        }
        left -= r as u64;
    }
    Ok(())
}

fn copy_buffered(src: &File, dst: &File, (offset, len): (u64, u64)) -> io::Result<()> {
    let mut buf = vec![0u8; (1 << 20).min(len as usize).max(1)];
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], offset + off)?;
        dst.write_all_at(&buf[..n], offset + off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn run(w: &mut PieceWriter) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("gfast-pieces-{}-{}", std::process::id(), w.kind()));
        let f = Arc::new(SharedFile::new(
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&dir).unwrap(),
        ));
        // Pieces written out of order, more than DEPTH of them, of varied length.
        let order = [3u64, 0, 5, 1, 4, 2, 7, 6];
        for &k in &order {
            let n = 1000 + k as usize;
            let b = w.buffer();
            b[..n].fill(k as u8 + 1);
            w.write(&f, k * 2000, n).unwrap();
        }
        w.finish().unwrap();
        let mut out = Vec::new();
        std::fs::File::open(&dir).unwrap().read_to_end(&mut out).unwrap();
        let _ = std::fs::remove_file(&dir);
        out
    }

    fn expected() -> Vec<u8> {
        let mut v = vec![0u8; 7 * 2000 + 1007];
        for k in 0..8usize {
            v[k * 2000..k * 2000 + 1000 + k].fill(k as u8 + 1);
        }
        v
    }

    #[test]
    fn pwrite_and_uring_write_the_same_bytes() {
        // A kernel or seccomp filter that refuses io_uring: the pwrite fallback.
        let refused = Err(io::Error::from_raw_os_error(libc::EPERM));
        let mut p = PieceWriter::with_ring(4096, refused);
        assert_eq!(p.kind(), "pwrite");
        assert_eq!(run(&mut p), expected());
        match Uring::new(4096) {
            Ok(u) => {
                let mut w = PieceWriter::with_ring(4096, Ok(u));
                assert_eq!(w.kind(), "io_uring");
                assert_eq!(run(&mut w), expected());
            }
            Err(e) => eprintln!("SKIP io_uring half: io_uring_setup refused here ({e})"),
        }
    }

    /// Writes `count` pieces of `n` bytes one after the other from offset 7,
    /// waiting only at the end; returns the file.
    fn sliced(w: &mut PieceWriter, n: usize, count: usize) -> Vec<u8> {
        let path = std::env::temp_dir().join(format!("gfast-pieces-slices-{}-{}", std::process::id(), w.kind()));
        let f = Arc::new(SharedFile::new(
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap(),
        ));
        for j in 0..count {
            for (i, b) in w.buffer()[..n].iter_mut().enumerate() {
                *b = ((i + j) % 251) as u8;
            }
            w.write(&f, (7 + j * n) as u64, n).unwrap();
        }
        w.finish().unwrap();
        let out = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        out
    }

    #[test]
    fn a_piece_larger_than_a_write_slice_lands_whole() {
        // Pieces of 2.5 slices at odd offsets, more of them than io_uring has
        // buffers: every slice at its own place, none lost, with either writer.
        let (n, count) = (WRITE_SLICE * 5 / 2 + 3, 2 * DEPTH + 1);
        let mut want = vec![0u8; 7];
        for j in 0..count {
            want.extend((0..n).map(|i| ((i + j) % 251) as u8));
        }
        let mut p = PieceWriter { piece: n, inner: Inner::Pwrite(vec![0u8; n]) };
        assert_eq!(sliced(&mut p, n, count), want);
        match Uring::new(n) {
            Ok(u) => {
                let mut w = PieceWriter { piece: n, inner: Inner::Uring(Box::new(u)) };
                assert_eq!(sliced(&mut w, n, count), want);
            }
            Err(e) => eprintln!("SKIP io_uring half: io_uring_setup refused here ({e})"),
        }
    }

    #[test]
    fn pieces_written_behind_read_back_whole() {
        // Past BEHIND_FROM (a sparse file): each piece starts its writeback and
        // drops the pages BEHIND_LAG before it; nothing written is lost.
        let n = WRITE_SLICE + 5;
        let offs = [BEHIND_FROM, BEHIND_FROM + 3, BEHIND_FROM + BEHIND_LAG, BEHIND_FROM + BEHIND_LAG + 4 * n as u64];
        for uring in [false, true] {
            let inner = if uring {
                match Uring::new(n) {
                    Ok(u) => Inner::Uring(Box::new(u)),
                    Err(e) => {
                        eprintln!("SKIP io_uring half: io_uring_setup refused here ({e})");
                        continue;
                    }
                }
            } else {
                Inner::Pwrite(vec![0u8; n])
            };
            let mut w = PieceWriter { piece: n, inner };
            let path = std::env::temp_dir().join(format!("gfast-pieces-behind-{}-{uring}", std::process::id()));
            let f = Arc::new(SharedFile::new(
                std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap(),
            ));
            for (j, &off) in offs.iter().enumerate() {
                w.buffer()[..n].fill(j as u8 + 1);
                w.write(&f, off, n).unwrap();
                w.finish().unwrap();
            }
            // The first piece was overwritten at +3 by the second: its first 3 bytes remain.
            let mut got = vec![0u8; n + 3];
            f.read_exact_at(&mut got, BEHIND_FROM).unwrap();
            assert!(got[..3].iter().all(|&b| b == 1) && got[3..].iter().all(|&b| b == 2));
            for (j, &off) in offs.iter().enumerate().skip(2) {
                let mut got = vec![0u8; n];
                f.read_exact_at(&mut got, off).unwrap();
                assert!(got.iter().all(|&b| b == j as u8 + 1), "piece {j}");
            }
            drop(f);
            let _ = std::fs::remove_file(&path);
        }
    }

    #[test]
    fn uring_reports_write_errors_at_finish() {
        let Ok(u) = Uring::new(4096) else {
            eprintln!("SKIP: io_uring_setup refused here");
            return;
        };
        let mut w = PieceWriter { piece: 4096, inner: Inner::Uring(Box::new(u)) };
        // A read-only descriptor: the write fails with EBADF, reported by finish.
        let path = std::env::temp_dir().join(format!("gfast-pieces-ro-{}", std::process::id()));
        std::fs::write(&path, b"x").unwrap();
        let ro = Arc::new(SharedFile::new(File::open(&path).unwrap()));
        w.buffer()[..10].fill(1);
        w.write(&ro, 0, 10).unwrap();
        let e = w.finish().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        // The error is reported once; the writer stays usable.
        assert!(w.finish().is_ok());
        let _ = std::fs::remove_file(&path);
    }
}
