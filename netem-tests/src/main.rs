//! gfast-netem: a userspace WAN emulator for machines without `tc netem`.
//!
//! It creates two network namespaces, a TUN device in each, and moves IP packets
//! between them with a one-way delay, a rate limit (a drop-tail queue in front of
//! it), random loss, jitter, and optionally a dark period where nothing passes.
//! Real kernel TCP and UDP run over it. Only addresses inside the two namespaces
//! it creates are ever used. It prints `ready` when the link is up, runs until
//! SIGINT/SIGTERM or `--duration`, and deletes its namespaces on the way out.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
struct Link {
    delay: Duration,
    jitter: Duration,
    rate_bps: f64,
    loss: f64,
    queue_bytes: usize,
    dark: Option<(Duration, Duration)>,
}

struct Args {
    ns_a: String,
    ns_b: String,
    addr_a: String,
    addr_b: String,
    mtu: u32,
    duration: Duration,
    link: Link,
}

fn usage() -> String {
    "usage: gfast-netem --ns-a NAME --ns-b NAME [--addr-a 10.99.0.1] [--addr-b 10.99.0.2] \
     [--delay-ms ONE_WAY] [--jitter-ms MS] [--rate-mbit MBIT] [--loss FRACTION] [--queue-kb KB] \
     [--dark-at SECS --dark-for SECS] [--mtu 9000] [--duration SECS]"
        .into()
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        ns_a: String::new(),
        ns_b: String::new(),
        addr_a: "10.99.0.1".into(),
        addr_b: "10.99.0.2".into(),
        mtu: 9000,
        duration: Duration::from_secs(600),
        link: Link {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate_bps: 0.0,
            loss: 0.0,
            queue_bytes: 0,
            dark: None,
        },
    };
    let mut dark_at = None;
    let mut dark_for = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{k} needs a value\n{}", usage()));
        let num = |s: String| s.parse::<f64>().map_err(|_| format!("{k}: '{s}' is not a number"));
        match k.as_str() {
            "--ns-a" => a.ns_a = v()?,
            "--ns-b" => a.ns_b = v()?,
            "--addr-a" => a.addr_a = v()?,
            "--addr-b" => a.addr_b = v()?,
            "--mtu" => a.mtu = num(v()?)? as u32,
            "--duration" => a.duration = Duration::from_secs_f64(num(v()?)?),
            "--delay-ms" => a.link.delay = Duration::from_secs_f64(num(v()?)? / 1e3),
            "--jitter-ms" => a.link.jitter = Duration::from_secs_f64(num(v()?)? / 1e3),
            "--rate-mbit" => a.link.rate_bps = num(v()?)? * 1e6,
            "--loss" => a.link.loss = num(v()?)?,
            "--queue-kb" => a.link.queue_bytes = (num(v()?)? * 1024.0) as usize,
            "--dark-at" => dark_at = Some(Duration::from_secs_f64(num(v()?)?)),
            "--dark-for" => dark_for = Some(Duration::from_secs_f64(num(v()?)?)),
            "-h" | "--help" => return Err(usage()),
            _ => return Err(format!("unknown option {k}\n{}", usage())),
        }
    }
    if a.ns_a.is_empty() || a.ns_b.is_empty() {
        return Err(format!("--ns-a and --ns-b are required\n{}", usage()));
    }
    if let (Some(at), Some(f)) = (dark_at, dark_for) {
        a.link.dark = Some((at, f));
    }
    if a.link.queue_bytes == 0 {
        // Default: one bandwidth-delay product of buffer (at least 1 MiB).
        let bdp = a.link.rate_bps / 8.0 * (2.0 * a.link.delay.as_secs_f64()).max(0.01);
        a.link.queue_bytes = (bdp as usize).max(1 << 20);
    }
    Ok(a)
}

fn ip(args: &[&str]) -> io::Result<()> {
    let st = Command::new("ip").args(args).status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {} failed", args.join(" "))))
    }
}

const TUNSETIFF: libc::c_ulong = 0x400454ca;

/// Opens a TUN device named `dev` inside network namespace `ns`.
fn tun_in(ns: &str, dev: &str) -> io::Result<File> {
    let ns = ns.to_string();
    let dev = dev.to_string();
    // setns affects only the calling thread: do it on a thread of its own.
    std::thread::spawn(move || -> io::Result<File> {
        let nsf = File::open(format!("/var/run/netns/{ns}"))?;
        // SAFETY: a valid namespace descriptor; this thread only.
        if unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let tun = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
        let mut req = [0u8; 40];
        req[..dev.len()].copy_from_slice(dev.as_bytes());
        let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as u16;
        req[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF with an ifreq-sized buffer.
        if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, req.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(tun)
    })
    .join()
    .map_err(|_| io::Error::other("tun thread panicked"))?
}

struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Packets waiting to be delivered, in delivery order, each with its due time.
struct Pipe {
    q: Mutex<VecDeque<(Instant, Vec<u8>)>>,
    cv: Condvar,
}

/// Counters printed at exit.
#[derive(Default)]
struct Counts {
    passed: u64,
    lost: u64,
    overflow: u64,
    dark: u64,
}

/// One direction of the link: its two ends and its seeded randomness.
struct Direction {
    from: File,
    to: File,
    seed: u64,
}

fn forward(dir: Direction, link: Link, start: Instant, stop: Arc<AtomicBool>) -> Counts {
    let Direction { mut from, to, seed } = dir;
    let pipe = Arc::new(Pipe { q: Mutex::new(VecDeque::new()), cv: Condvar::new() });
    let p2 = pipe.clone();
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut to = to;
        loop {
            let pkt = {
                let mut g = p2.q.lock().unwrap();
                loop {
                    if stop2.load(Ordering::SeqCst) {
                        return;
                    }
                    match g.front() {
                        Some((due, _)) if *due <= Instant::now() => break,
                        Some((due, _)) => {
                            let wait = due.saturating_duration_since(Instant::now());
                            g = p2.cv.wait_timeout(g, wait).unwrap().0;
                        }
                        None => g = p2.cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0,
                    }
                }
                g.pop_front().unwrap().1
            };
            let _ = to.write(&pkt);
        }
    });
    let mut rng = Rng(seed | 1);
    let mut c = Counts::default();
    let mut buf = vec![0u8; 65536];
    // The rate limiter: when the link is free again, and what it still has to send.
    let mut link_free = Instant::now();
    let mut last_due = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        // Wait with a timeout so a stop request is seen even on a silent link.
        let mut pfd = libc::pollfd { fd: from.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        };
        let now = Instant::now();
        if let Some((at, len)) = link.dark {
            let t = now - start;
            if t >= at && t < at + len {
                c.dark += 1;
                continue;
            }
        }
        if link.loss > 0.0 && rng.unit() < link.loss {
            c.lost += 1;
            continue;
        }
        // Serialization at the link rate, behind a drop-tail queue.
        let backlog = link_free.saturating_duration_since(now);
        let queued = (backlog.as_secs_f64() * link.rate_bps / 8.0) as usize;
        if link.rate_bps > 0.0 && queued + n > link.queue_bytes {
            c.overflow += 1;
            continue;
        }
        let sent_at = if link.rate_bps > 0.0 {
            link_free = link_free.max(now) + Duration::from_secs_f64(n as f64 * 8.0 / link.rate_bps);
            link_free
        } else {
            now
        };
        let jitter = if link.jitter > Duration::ZERO { link.jitter.mul_f64(rng.unit()) } else { Duration::ZERO };
        // Never reorder: jitter delays, it does not overtake.
        let due = (sent_at + link.delay + jitter).max(last_due);
        last_due = due;
        let mut g = pipe.q.lock().unwrap();
        g.push_back((due, buf[..n].to_vec()));
        drop(g);
        pipe.cv.notify_one();
        c.passed += 1;
    }
    stop.store(true, Ordering::SeqCst);
    pipe.cv.notify_all();
    let _ = writer.join();
    c
}

fn run(a: Args) -> io::Result<()> {
    let mut cleanup = Cleanup(Vec::new());
    for ns in [&a.ns_a, &a.ns_b] {
        ip(&["netns", "add", ns])?;
        cleanup.0.push(ns.clone());
    }
    let ta = tun_in(&a.ns_a, "gf0")?;
    let tb = tun_in(&a.ns_b, "gf0")?;
    let mtu = a.mtu.to_string();
    for (ns, addr, peer) in [(&a.ns_a, &a.addr_a, &a.addr_b), (&a.ns_b, &a.addr_b, &a.addr_a)] {
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", addr, "peer", peer, "dev", "gf0"])?;
        ip(&["-n", ns, "link", "set", "gf0", "mtu", &mtu, "up"])?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    install_signal_stop(stop.clone());
    let start = Instant::now();
    // Each direction reads one TUN and writes the other.
    // SAFETY: duplicating valid descriptors we own.
    let (ta2, tb2) =
        unsafe { (File::from_raw_fd(libc::dup(ta.as_raw_fd())), File::from_raw_fd(libc::dup(tb.as_raw_fd()))) };
    let (l1, l2, s1, s2) = (a.link.clone(), a.link.clone(), stop.clone(), stop.clone());
    let ab = std::thread::spawn(move || forward(Direction { from: ta, to: tb2, seed: 0x1234 }, l1, start, s1));
    let ba = std::thread::spawn(move || forward(Direction { from: tb, to: ta2, seed: 0x5678 }, l2, start, s2));
    println!("ready {} {} <-> {} {}", a.ns_a, a.addr_a, a.ns_b, a.addr_b);
    let _ = io::stdout().flush();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < a.duration {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let (c1, c2) = (ab.join().unwrap_or_default(), ba.join().unwrap_or_default());
    drop(cleanup);
    eprintln!(
        "gfast-netem: a->b passed {} lost {} overflow {} dark {}; b->a passed {} lost {} overflow {} dark {}",
        c1.passed, c1.lost, c1.overflow, c1.dark, c2.passed, c2.lost, c2.overflow, c2.dark
    );
    Ok(())
}

struct Cleanup(Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

static STOP: Mutex<Option<Arc<AtomicBool>>> = Mutex::new(None);

extern "C" fn on_signal(_: libc::c_int) {
    if let Ok(g) = STOP.try_lock() {
        if let Some(s) = g.as_ref() {
            s.store(true, Ordering::SeqCst);
        }
    }
}

fn install_signal_stop(stop: Arc<AtomicBool>) {
    *STOP.lock().unwrap() = Some(stop);
    // SAFETY: installing a handler that only sets an atomic flag.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn main() -> ExitCode {
    match parse().and_then(|a| run(a).map_err(|e| format!("gfast-netem: {e}"))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
