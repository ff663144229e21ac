//! Loopback benchmark: raw TCP (iperf3 and a built-in blaster) against gfast with
//! the same number of streams, measured in one run, printed as ratios.
//!
//! `cargo bench --bench loopback` (release build). Settings from the environment:
//! GFAST_BENCH_SIZE (bytes, default 4 GiB), GFAST_BENCH_STREAMS (4),
//! GFAST_BENCH_REPS (3), GFAST_BENCH_DISK_DIR (a directory on disk, default /var/tmp),
//! GFAST_BENCH_SMALL (small files in the tree test, default 100000).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

const TOKEN: &str = "bench-token";

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// CPU seconds and peak RSS of a finished child, from wait4.
struct Usage {
    wall: f64,
    cpu: f64,
    maxrss_mib: f64,
}

fn wait_usage(child: &mut Child, start: Instant) -> (i32, Usage) {
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child by PID with valid out-pointers.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert!(r > 0, "wait4 failed");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let u = Usage {
        wall: start.elapsed().as_secs_f64(),
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        maxrss_mib: ru.ru_maxrss as f64 / 1024.0,
    };
    (libc::WEXITSTATUS(status), u)
}

/// CPU seconds and peak RSS of a running process, from /proc.
fn proc_usage(pid: u32) -> (f64, f64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / 100.0;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0);
    (ticks, hwm / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Reads a file once so the timed run sees it in the page cache.
fn warm(p: &Path) {
    let mut f = fs::File::open(p).unwrap();
    let mut b = vec![0u8; 1 << 20];
    while f.read(&mut b).unwrap() > 0 {}
}

/// Raw TCP: `streams` connections each write size/streams bytes; the receiver
/// reads them. Without `files` the sender writes one hot buffer and the receiver
/// drops what it reads. With `files` (source, destination) each stream preads its
/// part of the source and the receiver pwrites it into the destination
/// (preallocated like gfast does): the least any file copy over TCP must do, with
/// no hash and no protocol. Returns bytes per second.
fn blaster(size: u64, streams: u64, files: Option<(&Path, &Path)>) -> f64 {
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    let paths = files;
    let files = files.map(|(s, d)| {
        let src = fs::File::open(s).unwrap();
        let _ = fs::remove_file(d);
        let dst = fs::OpenOptions::new().write(true).create_new(true).open(d).unwrap();
        // SAFETY: a valid descriptor; preallocation as gfast's receiver does it.
        unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&dst), 0, 0, size as libc::off_t) };
        (Arc::new(src), Arc::new(dst))
    });
    let part = size / streams;
    let len = move |i: u64| if i == streams - 1 { size - part * i } else { part };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let dst = files.as_ref().map(|f| f.1.clone());
    let rx = std::thread::spawn(move || {
        let hs: Vec<_> = (0..streams)
            .map(|_| {
                let (mut s, _) = l.accept().unwrap();
                let dst = dst.clone();
                std::thread::spawn(move || {
                    let mut b = vec![0u8; 1 << 20];
                    let mut i = [0u8; 8];
                    s.read_exact(&mut i).unwrap();
                    let mut at = part * u64::from_le_bytes(i);
                    loop {
                        let n = s.read(&mut b).unwrap();
                        if n == 0 {
                            break;
                        }
                        if let Some(d) = &dst {
                            d.write_all_at(&b[..n], at).unwrap();
                        }
                        at += n as u64;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    let t = Instant::now();
    let hs: Vec<_> = (0..streams)
        .map(|i| {
            let src = files.as_ref().map(|f| f.0.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(&i.to_le_bytes()).unwrap();
                let mut b = vec![7u8; 1 << 20];
                let (mut at, end) = (part * i, part * i + len(i));
                while at < end {
                    let n = (end - at).min(b.len() as u64) as usize;
                    if let Some(f) = &src {
                        f.read_exact_at(&mut b[..n], at).unwrap();
                    }
                    s.write_all(&b[..n]).unwrap();
                    at += n as u64;
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    rx.join().unwrap();
    let rate = size as f64 / t.elapsed().as_secs_f64();
    if let Some((s, d)) = paths {
        assert!(common::same_bytes(s, d), "the raw file copy stored wrong bytes");
    }
    rate
}

/// iperf3 -P `streams` from memory to memory, or with `files` (source, destination)
/// its file mode (`-F` on both ends: the client reads the file, the server writes
/// what arrives into its file). Returns bytes per second as the receiver saw it.
fn iperf3(size: u64, streams: u64, files: Option<(&Path, &Path)>) -> Option<f64> {
    let port = free_port();
    let mut srv = Command::new("iperf3");
    srv.args(["-s", "-1", "-p", &port.to_string()]);
    let mut cli = Command::new("iperf3");
    cli.args(["-c", "127.0.0.1", "-p", &port.to_string(), "-P", &streams.to_string(), "-J"]);
    match files {
        Some((src, dst)) => {
            srv.arg("-F").arg(dst);
            cli.arg("-F").arg(src);
        }
        None => {
            cli.args(["-n", &size.to_string()]);
        }
    }
    let mut srv = srv.stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = cli.output().ok()?;
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().map(|b| b / 8.0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Serve {
    child: Child,
    addr: String,
    key: String,
    _keydir: PathBuf,
}

impl Serve {
    fn start(root: Option<&Path>) -> Serve {
        let keydir = std::env::temp_dir().join(format!("gfast-bench-key-{}", std::process::id()));
        let _ = fs::create_dir_all(&keydir);
        let mut c = Command::new(env!("CARGO_BIN_EXE_gfast"));
        c.args(["serve", "--listen", "127.0.0.1:0", "--allow-no-encrypt", "--key-file"]);
        c.arg(keydir.join("server.key"));
        match root {
            Some(r) => c.arg("--root").arg(r),
            None => c.arg("--discard"),
        };
        let mut child = c.env("GFAST_TOKEN", TOKEN).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let rest = line.trim().split("listening on ").nth(1).expect("listening line");
        let (addr, key) = rest.split_once(", key ").expect("key in the listening line");
        Serve { child, addr: addr.to_string(), key: key.to_string(), _keydir: keydir }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    rate: f64,
    client: Usage,
    server_cpu: f64,
    server_rss: f64,
}

/// One push of `src` to a fresh server; returns payload bytes per second (wall
/// clock of the push process) and resource use of both sides.
/// How a benchmark push runs.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// TCP, --no-encrypt.
    Plain,
    /// TCP with TLS (the default).
    Tls,
    /// QUIC (its own stream count: the default for a LAN).
    Quic,
}

fn gfast_push(src: &Path, root: Option<&Path>, streams: u64, bytes: u64, mode: Mode) -> Run {
    let s = Serve::start(root);
    let (cpu0, _) = proc_usage(s.child.id());
    let t = Instant::now();
    let n = streams.to_string();
    let enc: Vec<&str> = match mode {
        Mode::Plain => vec!["-n", &n, "--no-encrypt"],
        Mode::Tls => vec!["-n", &n, "--fingerprint", &s.key],
        Mode::Quic => vec!["--transport", "quic", "--fingerprint", &s.key],
    };
    let mut c = Command::new(env!("CARGO_BIN_EXE_gfast"))
        .args(["push", "-q"])
        .args(&enc)
        .arg(src)
        .arg(format!("gfast://{}/", s.addr))
        .env("GFAST_TOKEN", TOKEN)
        .spawn()
        .unwrap();
    let (code, client) = wait_usage(&mut c, t);
    assert_eq!(code, 0, "gfast push failed");
    let (cpu1, rss) = proc_usage(s.child.id());
    Run { rate: bytes as f64 / client.wall, client, server_cpu: cpu1 - cpu0, server_rss: rss }
}

fn gb(r: f64) -> String {
    format!("{:.2} GB/s", r / 1e9)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let size = env_u64("GFAST_BENCH_SIZE", 4 << 30);
    let streams = env_u64("GFAST_BENCH_STREAMS", 4);
    let reps = env_u64("GFAST_BENCH_REPS", 3).max(1);
    let small = env_u64("GFAST_BENCH_SMALL", 100_000);
    let disk = PathBuf::from(std::env::var("GFAST_BENCH_DISK_DIR").unwrap_or("/var/tmp".into()));
    let gib = size as f64 / (1u64 << 30) as f64;
    let host = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l[l.find(':').unwrap() + 2..].to_string())
        })
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("# gfast loopback benchmark");
    println!(
        "machine: {} cores, {host}, kernel {}; file {:.2} GiB, {streams} streams, median of {reps}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel.trim(),
        gib
    );

    let work = PathBuf::from("/dev/shm").join(format!("gfast-bench-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let src = work.join("src.bin");
    common::write_pseudo_random(&src, size);
    let size = fs::metadata(&src).unwrap().len();

    let mut rows: Vec<(String, f64, String)> = Vec::new();
    let raw = median((0..reps).map(|_| blaster(size, streams, None)).collect());
    let ips: Vec<f64> = (0..reps).filter_map(|_| iperf3(size, streams, None)).collect();
    let ip = if ips.is_empty() { 0.0 } else { median(ips) };
    let baseline = if ip > 0.0 { ip } else { raw };
    let base_name = if ip > 0.0 { format!("iperf3 -P {streams}") } else { format!("raw TCP blaster x{streams}") };
    rows.push((format!("raw TCP blaster, {streams} streams"), raw, String::new()));
    if ip > 0.0 {
        rows.push((format!("iperf3 -P {streams}"), ip, String::new()));
    } else {
        println!("(iperf3 not installed: the built-in blaster is the baseline)");
    }

    let mut measure = |name: &str, root: Option<&Path>, mode: Mode| -> f64 {
        let runs: Vec<Run> = (0..reps)
            .map(|_| {
                if let Some(r) = root {
                    let _ = fs::remove_dir_all(r);
                    fs::create_dir_all(r).unwrap();
                }
                warm(&src);
                gfast_push(&src, root, streams, size, mode)
            })
            .collect();
        let rate = median(runs.iter().map(|r| r.rate).collect());
        let ccpu = median(runs.iter().map(|r| r.client.cpu / gib).collect());
        let scpu = median(runs.iter().map(|r| r.server_cpu / gib).collect());
        let crss = runs.iter().map(|r| r.client.maxrss_mib).fold(0.0, f64::max);
        let srss = runs.iter().map(|r| r.server_rss).fold(0.0, f64::max);
        let note = format!(
            "CPU s/GiB sender {ccpu:.2} receiver {scpu:.2}; peak RSS sender {crss:.0} MiB receiver {srss:.0} MiB"
        );
        rows.push((name.to_string(), rate, note));
        if let Some(r) = root {
            let _ = fs::remove_dir_all(r);
        }
        rate
    };
    let discard = measure("gfast --no-encrypt -> --discard", None, Mode::Plain);
    let discard_tls = measure("gfast (TLS) -> --discard", None, Mode::Tls);
    let discard_quic = measure("gfast --transport quic -> --discard", None, Mode::Quic);
    let shm = measure("gfast --no-encrypt -> /dev/shm (tmpfs)", Some(&work.join("dst")), Mode::Plain);
    let on_disk = disk.join(format!("gfast-bench-dst-{}", std::process::id()));
    let d = measure(&format!("gfast --no-encrypt -> {} (disk)", disk.display()), Some(&on_disk), Mode::Plain);
    let d_tls = measure(&format!("gfast (TLS) -> {} (disk)", disk.display()), Some(&on_disk), Mode::Tls);

    // What any file copy over TCP into tmpfs can reach on this machine: the same
    // file, streams and preallocation, without hashing or protocol.
    let raw_file = work.join("raw-dst.bin");
    let shm_raw = median(
        (0..reps)
            .map(|_| {
                warm(&src);
                let r = blaster(size, streams, Some((&src, &raw_file)));
                let _ = fs::remove_file(&raw_file);
                r
            })
            .collect(),
    );
    rows.push((
        format!("raw TCP file copy -> /dev/shm, {streams} streams (pread + write -> read + pwrite, no hash)"),
        shm_raw,
        String::new(),
    ));
    // iperf3's own file mode into the same tmpfs, one stream (with -P N its
    // streams share one file and offset, so the file it writes is not a copy).
    let ip_file = if ip > 0.0 {
        let runs: Vec<f64> = (0..reps)
            .filter_map(|_| {
                warm(&src);
                let r = iperf3(size, 1, Some((&src, &raw_file)));
                let _ = fs::remove_file(&raw_file);
                r
            })
            .collect();
        (!runs.is_empty()).then(|| median(runs))
    } else {
        None
    };
    if let Some(r) = ip_file {
        rows.push(("iperf3 -F, 1 stream: file -> /dev/shm file".to_string(), r, String::new()));
    }
    // cp of the same file to the same disk.
    let cp = median(
        (0..reps)
            .map(|_| {
                let dst = disk.join(format!("gfast-bench-cp-{}", std::process::id()));
                warm(&src);
                let t = Instant::now();
                assert!(Command::new("cp").arg(&src).arg(&dst).status().unwrap().success());
                let r = size as f64 / t.elapsed().as_secs_f64();
                let _ = fs::remove_file(&dst);
                r
            })
            .collect(),
    );
    rows.push((format!("cp to {} (disk)", disk.display()), cp, String::new()));

    println!();
    println!("| what | rate | ratio | notes |");
    println!("|---|---|---|---|");
    for (n, r, note) in &rows {
        println!("| {n} | {} | {:.2} x {base_name} | {note} |", gb(*r), r / baseline);
    }
    println!();
    println!("gfast --no-encrypt -> --discard / {base_name}: {:.2}", discard / baseline);
    println!("gfast (TLS) -> --discard / {base_name}: {:.2}", discard_tls / baseline);
    println!("gfast --transport quic -> --discard / gfast (TLS): {:.2}", discard_quic / discard_tls);
    println!("gfast --no-encrypt -> tmpfs / {base_name}: {:.2}", shm / baseline);
    println!(
        "raw TCP file copy -> tmpfs / {base_name}: {:.2}; gfast --no-encrypt -> tmpfs / raw TCP file copy: {:.2}",
        shm_raw / baseline,
        shm / shm_raw
    );
    if let Some(r) = ip_file {
        println!("gfast --no-encrypt -> tmpfs / iperf3 -F (file to tmpfs file): {:.2}", shm / r);
    }
    println!("gfast --no-encrypt -> disk / cp: {:.2}", d / cp);
    println!("gfast (TLS) -> disk / cp: {:.2}", d_tls / cp);
    fs::remove_file(&src).unwrap();

    // Many small files: files per second and peak memory of both sides.
    if small > 0 {
        let tree = work.join("tree");
        for i in 0..small {
            let dir = tree.join(format!("d{}", i / 1000));
            if i % 1000 == 0 {
                fs::create_dir_all(&dir).unwrap();
            }
            fs::write(dir.join(format!("f{i}")), if i % 4 == 0 { &b""[..] } else { &[b'x'; 1024][..] }).unwrap();
        }
        let dst = work.join("tree-dst");
        fs::create_dir_all(&dst).unwrap();
        let r = gfast_push(&tree, Some(&dst), streams, 0, Mode::Tls);
        println!(
            "{small} small files (0-1 KiB) to tmpfs: {:.0} files/s; peak RSS sender {:.0} MiB, receiver {:.0} MiB",
            small as f64 / r.client.wall,
            r.client.maxrss_mib,
            r.server_rss
        );
    }
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_dir_all(std::env::temp_dir().join(format!("gfast-bench-key-{}", std::process::id())));
}
