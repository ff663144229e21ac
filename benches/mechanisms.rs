//! Zero-copy mechanisms, one at a time, on loopback TCP: which way of moving a
//! cached file through a socket (and a socket into a file) is fastest here, with
//! the per-chunk hash kept on, as gfast must.
//!
//! `cargo bench --bench mechanisms`. Each variant moves the same file from
//! /dev/shm over N streams (each stream a contiguous part, 1 MiB pieces, every
//! piece hashed with xxh3-128 on both sides); sender variants run against the
//! plain receiver (read, hash, drop), receiver variants against the plain sender
//! (pread, hash, write). Printed: rate, CPU seconds per GiB of the sending and
//! receiving threads, ratio to the plain variant of the same side.
//! Settings: GFAST_MECH_SIZE (bytes, default 2 GiB), GFAST_MECH_STREAMS (4),
//! GFAST_MECH_REPS (3).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use xxhash_rust::xxh3::xxh3_128;

mod common;

const PIECE: usize = 1 << 20;
// From the kernel's uapi (not all are in libc).
const SO_ZEROCOPY: libc::c_int = 60;
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn thread_cpu() -> f64 {
    // SAFETY: rusage is plain data; RUSAGE_THREAD fills it for the calling thread.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn check(r: isize, what: &str) -> usize {
    assert!(r >= 0, "{what}: {}", std::io::Error::last_os_error());
    r as usize
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Send {
    PreadWrite,
    MmapWrite,
    PreadSendfile,
    PreadSplice,
    PreadZerocopy,
    MmapSendfile,
    PreadWriteNoHash,
    MmapPopulateWrite,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Recv {
    ReadDrop,
    ReadPwrite,
    ReadIntoMmap,
    SpliceThenHash,
    SpliceHashMap,
    ReadPwriteNoHash,
    ReadIntoMmapPopulate,
}

struct Map {
    ptr: *mut u8,
    len: usize,
}
// SAFETY: the mapping is only read (sender) or written in disjoint ranges
// (receiver threads), and outlives every thread using it.
unsafe impl Sync for Map {}
unsafe impl std::marker::Send for Map {}

impl Map {
    fn new(f: &File, len: usize, write: bool) -> Map {
        let prot = if write { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a fresh shared mapping of an open file of at least `len` bytes.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        assert!(p != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        Map { ptr: p as *mut u8, len }
    }
    #[allow(clippy::mut_from_ref)]
    fn slice(&self, off: usize, n: usize) -> &mut [u8] {
        assert!(off + n <= self.len);
        // SAFETY: in bounds; callers use disjoint ranges (see the Sync note).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), n) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps what new() mapped.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Sends bytes [off, off+len) of `src` on `s`; returns the thread's CPU seconds.
fn sender(how: Send, src: &File, map: Option<&Map>, mut s: TcpStream, (off, len): (u64, u64)) -> f64 {
    let c0 = thread_cpu();
    let mut buf = vec![0u8; PIECE];
    let fd = s.as_raw_fd();
    let pipe = if how == Send::PreadSplice { new_pipe() } else { [0i32; 2] };
    // MSG_ZEROCOPY: a ring of buffers, each reused only after the kernel says so.
    const ZC: usize = 16;
    let mut zbufs: Vec<Vec<u8>> = Vec::new();
    let (mut sent_calls, mut done_calls, mut copied) = (0u32, 0u32, 0u32);
    if how == Send::PreadZerocopy {
        let one: libc::c_int = 1;
        // SAFETY: an int option.
        let r =
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, SO_ZEROCOPY, &one as *const _ as *const libc::c_void, 4) };
        check(r as isize, "SO_ZEROCOPY");
        zbufs = (0..ZC).map(|_| vec![0u8; PIECE]).collect();
    }
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(PIECE as u64) as usize;
        let at = off + done;
        match how {
            Send::PreadWrite => {
                src.read_exact_at(&mut buf[..n], at).unwrap();
                std::hint::black_box(xxh3_128(&buf[..n]));
                s.write_all(&buf[..n]).unwrap();
            }
            Send::MmapWrite => {
                let m = map.unwrap().slice(at as usize, n);
                std::hint::black_box(xxh3_128(m));
                s.write_all(m).unwrap();
            }
            Send::MmapPopulateWrite => {
                let m = map.unwrap().slice(at as usize, n);
                // SAFETY: a range inside our own mapping (MADV_POPULATE_READ = 22).
                let r = unsafe { libc::madvise(m.as_mut_ptr() as *mut libc::c_void, n, 22) };
                check(r as isize, "MADV_POPULATE_READ");
                std::hint::black_box(xxh3_128(m));
                s.write_all(m).unwrap();
            }
            Send::PreadWriteNoHash => {
                src.read_exact_at(&mut buf[..n], at).unwrap();
                s.write_all(&buf[..n]).unwrap();
            }
            Send::MmapSendfile => {
                std::hint::black_box(xxh3_128(map.unwrap().slice(at as usize, n)));
                let mut o = at as libc::off_t;
                let mut left = n;
                while left > 0 {
                    // SAFETY: valid descriptors and offset pointer.
                    left -= check(unsafe { libc::sendfile(fd, src.as_raw_fd(), &mut o, left) }, "sendfile");
                }
            }
            Send::PreadSendfile => {
                src.read_exact_at(&mut buf[..n], at).unwrap();
                std::hint::black_box(xxh3_128(&buf[..n]));
                let mut o = at as libc::off_t;
                let mut left = n;
                while left > 0 {
                    // SAFETY: valid descriptors and offset pointer.
                    left -= check(unsafe { libc::sendfile(fd, src.as_raw_fd(), &mut o, left) }, "sendfile");
                }
            }
            Send::PreadSplice => {
                src.read_exact_at(&mut buf[..n], at).unwrap();
                std::hint::black_box(xxh3_128(&buf[..n]));
                let mut o = at as libc::loff_t;
                let mut left = n;
                while left > 0 {
                    left -= splice_via(pipe, (src.as_raw_fd(), Some(&mut o)), (fd, None), left);
                }
            }
            Send::PreadZerocopy => {
                while sent_calls - done_calls >= ZC as u32 {
                    reap_zerocopy(fd, true, &mut done_calls, &mut copied);
                }
                let b = &mut zbufs[sent_calls as usize % ZC];
                src.read_exact_at(&mut b[..n], at).unwrap();
                std::hint::black_box(xxh3_128(&b[..n]));
                let mut k = 0;
                while k < n {
                    // SAFETY: the buffer stays untouched until its completion is reaped.
                    let r =
                        unsafe { libc::send(fd, b[k..n].as_ptr() as *const libc::c_void, n - k, libc::MSG_ZEROCOPY) };
                    if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                        reap_zerocopy(fd, true, &mut done_calls, &mut copied);
                        continue;
                    }
                    k += check(r, "send MSG_ZEROCOPY");
                    sent_calls += 1;
                }
                reap_zerocopy(fd, false, &mut done_calls, &mut copied);
            }
        }
        done += n as u64;
    }
    while how == Send::PreadZerocopy && done_calls < sent_calls {
        reap_zerocopy(fd, true, &mut done_calls, &mut copied);
    }
    if how == Send::PreadZerocopy && copied > 0 && off == 0 {
        eprintln!("  (MSG_ZEROCOPY: the kernel reported {copied} of {sent_calls} sends as copied anyway)");
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut b = [0u8; 1];
    let _ = s.read(&mut b);
    if pipe[0] != 0 {
        // SAFETY: closing our own pipe descriptors.
        unsafe {
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
    }
    thread_cpu() - c0
}

/// A pipe that holds one piece.
fn new_pipe() -> [i32; 2] {
    let mut pipe = [0i32; 2];
    // SAFETY: a two-element array for the pipe's ends.
    check(unsafe { libc::pipe(pipe.as_mut_ptr()) } as isize, "pipe");
    // SAFETY: valid pipe descriptor.
    unsafe { libc::fcntl(pipe[1], libc::F_SETPIPE_SZ, PIECE as libc::c_int) };
    pipe
}

/// Moves up to `n` bytes from `from` through `pipe` into `to` with splice(2)
/// (an offset where that side is a file); returns how many (0: end of input).
fn splice_via(
    pipe: [i32; 2],
    (from, from_off): (i32, Option<&mut libc::loff_t>),
    (to, mut to_off): (i32, Option<&mut libc::loff_t>),
    n: usize,
) -> usize {
    let ptr = |o: Option<&mut libc::loff_t>| o.map_or(std::ptr::null_mut(), |r| r as *mut libc::loff_t);
    let null = std::ptr::null_mut();
    // SAFETY: valid descriptors; the offsets point to live integers or are null.
    let k = check(unsafe { libc::splice(from, ptr(from_off), pipe[1], null, n, libc::SPLICE_F_MOVE) }, "splice in");
    let mut m = k;
    while m > 0 {
        let o = ptr(to_off.as_deref_mut());
        // SAFETY: as above.
        m -= check(unsafe { libc::splice(pipe[0], null, to, o, m, libc::SPLICE_F_MOVE) }, "splice out");
    }
    k
}

/// Reads MSG_ZEROCOPY completions into the counts of sends completed and of
/// sends the kernel copied anyway.
fn reap_zerocopy(fd: i32, block: bool, done_total: &mut u32, copied_total: &mut u32) {
    let (d, c) = reap_zerocopy_once(fd, block);
    *done_total += d;
    *copied_total += c;
}

fn reap_zerocopy_once(fd: i32, block: bool) -> (u32, u32) {
    if block {
        let mut p = libc::pollfd { fd, events: 0, revents: 0 };
        // SAFETY: one pollfd; POLLERR is always reported.
        unsafe { libc::poll(&mut p, 1, 1000) };
    }
    let (mut done, mut copied) = (0u32, 0u32);
    loop {
        let mut ctrl = [0u8; 128];
        // SAFETY: msghdr is plain data.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = ctrl.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = ctrl.len();
        // SAFETY: reads the error queue into our control buffer.
        let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if r < 0 {
            return (done, copied);
        }
        // SAFETY: walks the control messages the kernel wrote.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !c.is_null() {
            // SAFETY: as above; the payload of IP_RECVERR is a sock_extended_err.
            let e = unsafe { &*(libc::CMSG_DATA(c) as *const libc::sock_extended_err) };
            if e.ee_origin == SO_EE_ORIGIN_ZEROCOPY {
                let k = e.ee_data.wrapping_sub(e.ee_info).wrapping_add(1);
                done += k;
                if e.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                    copied += k;
                }
            }
            // SAFETY: as above.
            c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
        }
    }
}

/// Receives `len` bytes on `s` for offset `off` of `dst`; returns CPU seconds.
fn receiver(how: Recv, dst: Option<&File>, map: Option<&Map>, mut s: TcpStream, (off, len): (u64, u64)) -> f64 {
    let c0 = thread_cpu();
    let mut buf = vec![0u8; PIECE];
    let pipe = if matches!(how, Recv::SpliceThenHash | Recv::SpliceHashMap) { new_pipe() } else { [0i32; 2] };
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(PIECE as u64) as usize;
        let at = off + done;
        match how {
            Recv::ReadDrop => {
                s.read_exact(&mut buf[..n]).unwrap();
                std::hint::black_box(xxh3_128(&buf[..n]));
            }
            Recv::ReadPwrite => {
                s.read_exact(&mut buf[..n]).unwrap();
                std::hint::black_box(xxh3_128(&buf[..n]));
                dst.unwrap().write_all_at(&buf[..n], at).unwrap();
            }
            Recv::ReadIntoMmap => {
                let m = map.unwrap().slice(at as usize, n);
                s.read_exact(m).unwrap();
                std::hint::black_box(xxh3_128(m));
            }
            Recv::ReadIntoMmapPopulate => {
                let m = map.unwrap().slice(at as usize, n);
                // SAFETY: a range inside our own mapping.
                let r = unsafe { libc::madvise(m.as_mut_ptr() as *mut libc::c_void, n, 23) };
                check(r as isize, "MADV_POPULATE_WRITE");
                s.read_exact(m).unwrap();
                std::hint::black_box(xxh3_128(m));
            }
            Recv::ReadPwriteNoHash => {
                s.read_exact(&mut buf[..n]).unwrap();
                dst.unwrap().write_all_at(&buf[..n], at).unwrap();
            }
            Recv::SpliceHashMap | Recv::SpliceThenHash => {
                let f = dst.unwrap();
                let mut left = n;
                let mut o = at as libc::loff_t;
                while left > 0 {
                    let k = splice_via(pipe, (s.as_raw_fd(), None), (f.as_raw_fd(), Some(&mut o)), left);
                    assert!(k > 0, "early end of stream");
                    left -= k;
                }
                // The hash must still be checked: from a mapping of the file, or
                // by reading the piece back from the page cache.
                if how == Recv::SpliceHashMap {
                    std::hint::black_box(xxh3_128(map.unwrap().slice(at as usize, n)));
                } else {
                    f.read_exact_at(&mut buf[..n], at).unwrap();
                    std::hint::black_box(xxh3_128(&buf[..n]));
                }
            }
        }
        done += n as u64;
    }
    let _ = s.write_all(&[1]);
    if pipe[0] != 0 {
        // SAFETY: our own descriptors.
        unsafe {
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
    }
    thread_cpu() - c0
}

struct Result1 {
    rate: f64,
    send_cpu: f64,
    recv_cpu: f64,
}

fn run(src: &Path, dst: &Path, size: u64, streams: u64, (s, r): (Send, Recv)) -> Result1 {
    let _ = fs::remove_file(dst);
    let file = File::open(src).unwrap();
    let out = (r != Recv::ReadDrop).then(|| {
        let f = fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dst).unwrap();
        // SAFETY: valid descriptor; preallocates like gfast does.
        unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, size as libc::off_t) };
        f
    });
    let smap = matches!(s, Send::MmapWrite | Send::MmapSendfile | Send::MmapPopulateWrite)
        .then(|| Map::new(&file, size as usize, false));
    let rmap = matches!(r, Recv::ReadIntoMmap | Recv::SpliceHashMap | Recv::ReadIntoMmapPopulate)
        .then(|| Map::new(out.as_ref().unwrap(), size as usize, true));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let part = size / streams;
    let t = Instant::now();
    let (send_cpu, recv_cpu) = std::thread::scope(|sc| {
        let conns: Vec<TcpStream> = (0..streams).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let accepted: Vec<TcpStream> = (0..streams).map(|_| l.accept().unwrap().0).collect();
        let mut hs = Vec::new();
        let mut hr = Vec::new();
        for (i, (c, a)) in conns.into_iter().zip(accepted).enumerate() {
            let i = i as u64;
            let len = if i == streams - 1 { size - part * i } else { part };
            let (file, smap, out, rmap) = (&file, smap.as_ref(), out.as_ref(), rmap.as_ref());
            hs.push(sc.spawn(move || sender(s, file, smap, c, (part * i, len))));
            hr.push(sc.spawn(move || receiver(r, out, rmap, a, (part * i, len))));
        }
        let sc_: f64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        let rc: f64 = hr.into_iter().map(|h| h.join().unwrap()).sum();
        (sc_, rc)
    });
    let secs = t.elapsed().as_secs_f64();
    drop(rmap);
    if r != Recv::ReadDrop {
        // Whatever the mechanism, the bytes must be right.
        assert!(common::same_bytes(src, dst), "{r:?} stored wrong bytes");
    }
    let _ = fs::remove_file(dst);
    let gib = size as f64 / (1u64 << 30) as f64;
    Result1 { rate: size as f64 / secs, send_cpu: send_cpu / gib, recv_cpu: recv_cpu / gib }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let size = env_u64("GFAST_MECH_SIZE", 2 << 30) & !((PIECE as u64) - 1);
    let streams = env_u64("GFAST_MECH_STREAMS", 4);
    let reps = env_u64("GFAST_MECH_REPS", 3).max(1) as usize;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("# zero-copy mechanisms on loopback");
    println!(
        "machine: {} cores, kernel {}; {:.2} GiB from /dev/shm, {streams} streams, 1 MiB pieces, xxh3-128 on both sides, median of {reps}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel.trim(),
        size as f64 / (1u64 << 30) as f64
    );
    let work = PathBuf::from("/dev/shm").join(format!("gfast-mech-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let src = work.join("src");
    common::write_pseudo_random(&src, size);
    let dst = work.join("dst");
    let variants: Vec<(&str, Send, Recv)> = vec![
        ("send: pread + write (gfast default)", Send::PreadWrite, Recv::ReadDrop),
        ("send: mmap + write", Send::MmapWrite, Recv::ReadDrop),
        ("send: pread (hash) + sendfile", Send::PreadSendfile, Recv::ReadDrop),
        ("send: pread (hash) + splice", Send::PreadSplice, Recv::ReadDrop),
        ("send: pread + MSG_ZEROCOPY", Send::PreadZerocopy, Recv::ReadDrop),
        ("recv to tmpfs: read + pwrite (gfast default)", Send::PreadWrite, Recv::ReadPwrite),
        ("recv to tmpfs: read into mmap of the file", Send::PreadWrite, Recv::ReadIntoMmap),
        ("recv to tmpfs: splice to file, hash read back", Send::PreadWrite, Recv::SpliceThenHash),
        ("recv to tmpfs: splice to file, hash from a mapping", Send::PreadWrite, Recv::SpliceHashMap),
        ("both: mmap-hash + sendfile -> splice + mapping-hash", Send::MmapSendfile, Recv::SpliceHashMap),
        ("ceiling: no hash, pread + write -> read + pwrite", Send::PreadWriteNoHash, Recv::ReadPwriteNoHash),
        ("recv to tmpfs: MADV_POPULATE_WRITE, read into mmap", Send::PreadWrite, Recv::ReadIntoMmapPopulate),
        ("send: mmap + MADV_POPULATE_READ + write", Send::MmapPopulateWrite, Recv::ReadDrop),
    ];
    let only = std::env::var("GFAST_MECH_ONLY").ok();
    let variants: Vec<_> = variants
        .into_iter()
        .enumerate()
        .filter(|(i, _)| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == i.to_string())))
        .map(|(_, v)| v)
        .collect();
    // Repetitions interleaved, and the order rotated each time, so a slow spell
    // of the host hits every variant alike. On the VM this was written on, the
    // first large tmpfs write after a large free is often several times slower
    // (page allocation): one untimed run of it goes first.
    let _ = run(&src, &dst, size, streams, (Send::PreadWrite, Recv::ReadPwrite));
    let mut res: Vec<Vec<Result1>> = variants.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for i in 0..variants.len() {
            let k = (i + rep) % variants.len();
            let (_, s, r) = variants[k];
            res[k].push(run(&src, &dst, size, streams, (s, r)));
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!();
    println!("| mechanism | rate | ratio | CPU s/GiB send / recv |");
    println!("|---|---|---|---|");
    let mut base = [0.0f64; 2];
    for (k, (name, _, r)) in variants.iter().enumerate() {
        let rate = med(&mut res[k].iter().map(|x| x.rate).collect());
        let sc = med(&mut res[k].iter().map(|x| x.send_cpu).collect());
        let rc = med(&mut res[k].iter().map(|x| x.recv_cpu).collect());
        let side = usize::from(*r != Recv::ReadDrop);
        if base[side] == 0.0 {
            base[side] = rate;
        }
        println!("| {name} | {:.2} GB/s | {:.2} | {sc:.2} / {rc:.2} |", rate / 1e9, rate / base[side]);
    }
    let _ = fs::remove_dir_all(&work);
}
