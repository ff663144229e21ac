//! Correctness over emulated WAN links (gfast-netem: two network namespaces joined
//! by a userspace link with delay, rate, loss, jitter and dark periods). No
//! throughput thresholds here; see netem-tests/bench.sh for numbers. Needs root,
//! `ip` and /dev/net/tun; skipped with a message where they are missing.

use crate::util::*;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the server in namespace B listens (pushes run in namespace A).
const B_URL: &str = "gfast://10.99.0.2:7447/";

struct Netem {
    child: Child,
    a: String,
    b: String,
}

impl Netem {
    /// Starts an emulated link, or says why the test is skipped.
    fn start(test: &str, link: &[&str]) -> Option<Netem> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let ip = Command::new("ip").arg("-V").output().is_ok();
        if !root || !ip || !Path::new("/dev/net/tun").exists() {
            eprintln!("SKIP {test}: needs root, iproute2 and /dev/net/tun (network namespaces and TUN)");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let (a, b) = (format!("gfa{}-{n}", std::process::id()), format!("gfb{}-{n}", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_gfast-netem"))
            .args(["--ns-a", &a, "--ns-b", &b, "--duration", "300"])
            .args(link)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("ready"), "gfast-netem did not start: {line:?}");
        Some(Netem { child, a, b })
    }

    /// `gfast serve` for clients over `t` inside namespace B on 10.99.0.2:7447;
    /// returns it and its key.
    fn serve_b(&self, t: &Transport, root: &Path) -> (Child, String) {
        let keydir = root.with_extension("key");
        let mut c = Gfast::serve(t)
            .netns(&self.b)
            .args(["--listen", "10.99.0.2:7447", "--root"])
            .arg(root)
            .arg("--key-file")
            .arg(keydir.join("server.key"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let (_, key) = parse_listening(&line);
        (c, key)
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by PID; it cleans up its namespaces.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn tree(dir: &Path, big: u64, seed: u64) {
    fs::create_dir_all(dir.join("small")).unwrap();
    write_random(&dir.join("big"), big, seed);
    let mut g = Gen(seed);
    for i in 0..100 {
        let n = (g.next() % 6000) as usize;
        fs::write(dir.join(format!("small/{i}")), g.bytes(n)).unwrap();
    }
}

both_transports!(lossy_jittery_link_delivers_every_byte, |t| {
    let link = ["--delay-ms", "15", "--jitter-ms", "4", "--rate-mbit", "300", "--loss", "0.005"];
    let Some(n) = Netem::start("lossy_jittery_link_delivers_every_byte", &link) else { return };
    let src = TempDir::new("netem-src");
    let root = TempDir::new("netem-root");
    let data = src.path().join("data");
    tree(&data, 24 << 20, 3);
    let (mut srv, key) = n.serve_b(&t, root.path());
    let o = Gfast::push(&t)
        .netns(&n.a)
        .arg("--json")
        .fingerprint(&key)
        .args(["--chunk-size", "1M"])
        .arg(&data)
        .arg(B_URL)
        .output();
    let _ = srv.kill();
    let _ = srv.wait();
    assert_ok(&o);
    assert_same_tree(&data, &root.path().join("data"));
});

both_transports!(a_link_dark_for_five_seconds_recovers_on_its_own, |t| {
    let link = ["--delay-ms", "10", "--rate-mbit", "100", "--dark-at", "1.5", "--dark-for", "5"];
    let Some(n) = Netem::start("a_link_dark_for_five_seconds_recovers_on_its_own", &link) else { return };
    let src = TempDir::new("dark-src");
    let root = TempDir::new("dark-root");
    let data = src.path().join("data");
    tree(&data, 48 << 20, 5);
    let (mut srv, key) = n.serve_b(&t, root.path());
    let t0 = Instant::now();
    // A generous timeout: under a loaded CI box the recovery after the dark
    // period (TCP backoff) has taken up to ~30 s; the point is that it recovers.
    let o = Gfast::push(&t)
        .netns(&n.a)
        .arg("--json")
        .fingerprint(&key)
        .args(["--timeout", "120"])
        .arg(&data)
        .arg(B_URL)
        .output();
    let took = t0.elapsed();
    let _ = srv.kill();
    let _ = srv.wait();
    assert_ok(&o);
    assert!(took > Duration::from_secs(6), "the transfer ran across the dark period ({took:?})");
    assert_same_tree(&data, &root.path().join("data"));
});

both_transports!(a_link_dark_longer_than_the_timeout_fails_clearly, |t| {
    let link = ["--delay-ms", "10", "--rate-mbit", "100", "--dark-at", "1", "--dark-for", "60"];
    let Some(n) = Netem::start("a_link_dark_longer_than_the_timeout_fails_clearly", &link) else { return };
    let src = TempDir::new("dark2-src");
    let root = TempDir::new("dark2-root");
    let data = src.path().join("data");
    tree(&data, 48 << 20, 6);
    let (mut srv, key) = n.serve_b(&t, root.path());
    let t0 = Instant::now();
    let o = Gfast::push(&t)
        .netns(&n.a)
        .arg("--json")
        .fingerprint(&key)
        .args(["--timeout", "4"])
        .arg(&data)
        .arg(B_URL)
        .output();
    let took = t0.elapsed();
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(!o.status.success());
    assert!(took < Duration::from_secs(30), "gave up after about --timeout, not never ({took:?})");
    let e = stderr(&o);
    assert!(e.contains("lost mid-transfer") || e.contains("timed out"), "{e}");
    assert!(!root.path().join("data/big").exists(), "no partial file under the final name");
});
