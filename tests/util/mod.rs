//! Helpers for integration tests: temporary directories, a real `gfast serve`
//! process on a loopback port, pushes through the real binary, tree comparison.

#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const TOKEN: &str = "integration-test-token";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gfast")
}

/// True in the `transfer_quic` test binary: the same suite over `--transport quic`.
pub fn quic() -> bool {
    env!("CARGO_CRATE_NAME") == "transfer_quic"
}

/// For a test that only makes sense over TCP: true (and says why) in the QUIC
/// suite, where the caller returns.
pub fn tcp_only(why: &str) -> bool {
    if quic() {
        eprintln!("SKIP over QUIC: {why}");
    }
    quic()
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        static ENV: std::sync::Once = std::sync::Once::new();
        // Keep the job store out of the tester's home; the jobs test names its own.
        ENV.call_once(|| {
            std::env::set_var("GFAST_JOBS_DIR", "");
            // The transfer_quic suite: every push and pull below goes over QUIC.
            if quic() {
                std::env::set_var("GFAST_TRANSPORT", "quic");
                // A killed peer is noticed by QUIC's idle timeout only (no RST):
                // keep it short for both ends of every test.
                std::env::set_var("GFAST_TIMEOUT", "8");
            }
        });
        let base = std::env::var_os("GFAST_TEST_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let p = base.join(format!("gfast-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A `gfast serve` child process, killed (by its PID) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub root: PathBuf,
    /// The server's key fingerprint, as printed on its first line.
    pub key: String,
    _keydir: TempDir,
}

impl Server {
    pub fn start(root: &Path, extra: &[&str]) -> Server {
        Self::start_with(root, "127.0.0.1:0", TempDir::new("key"), extra)
    }

    /// Starts a server on `listen` with its key kept in `keydir`.
    pub fn start_with(root: &Path, listen: &str, keydir: TempDir, extra: &[&str]) -> Server {
        let key = keydir.path().join("server.key");
        Self::start_keyed(root, listen, &key, keydir, extra)
    }

    /// Starts a server on `listen` with the key at `key_file` (kept across restarts).
    pub fn start_keyed(root: &Path, listen: &str, key_file: &Path, keydir: TempDir, extra: &[&str]) -> Server {
        let mut child = Command::new(bin())
            .args(["serve", "--listen", listen, "--root"])
            .arg(root)
            .arg("--key-file")
            .arg(key_file)
            .args(extra)
            .env("GFAST_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gfast serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "unexpected first line from serve: {line:?}");
        let (addr, key) = parse_listening(&line);
        Server { child, addr, root: root.to_path_buf(), key, _keydir: keydir }
    }

    /// Runs `gfast push ARGS` against this server, pinning its key.
    pub fn push<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.client("push", args)
    }

    /// Runs `gfast pull ARGS` against this server, pinning its key.
    pub fn pull<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.client("pull", args)
    }

    fn client<I, S>(&self, verb: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Command::new(bin())
            .arg(verb)
            .args(["--fingerprint", &self.key])
            .args(args)
            .env("GFAST_TOKEN", TOKEN)
            .env("GFAST_KNOWN_HOSTS", "/nonexistent/known_hosts")
            .output()
            .unwrap_or_else(|e| panic!("run gfast {verb}: {e}"))
    }

    /// A `gfast push` command with token and pinned key set, to add arguments to.
    pub fn push_cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("push").args(["--fingerprint", &self.key]).env("GFAST_TOKEN", TOKEN);
        c
    }

    pub fn url(&self, path: &str) -> String {
        format!("gfast://{}/{}", self.addr, path)
    }

    /// Kills the server and returns what it wrote on stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address whose port lies below the kernel's ephemeral range, so a
/// server restarted on it cannot find it taken by some other test's connection.
pub fn stable_addr() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    for _ in 0..200 {
        let k = N.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + (std::process::id() * 37 + k * 101) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free port below the ephemeral range");
}

/// Parses `gfast serve: listening on ADDR, key FP`.
pub fn parse_listening(line: &str) -> (String, String) {
    let rest = line.trim().split("listening on ").nth(1).expect("listening line");
    let (addr, key) = rest.split_once(", key ").expect("key in the listening line");
    (addr.to_string(), key.to_string())
}

/// Runs `gfast push ARGS` with the test token and no pinned key.
pub fn push<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(bin())
        .arg("push")
        .args(args)
        .env("GFAST_TOKEN", TOKEN)
        .env("GFAST_KNOWN_HOSTS", "/nonexistent/known_hosts")
        .output()
        .expect("run gfast push")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn assert_ok(o: &Output) {
    assert!(o.status.success(), "push failed: {:?}\nstderr: {}", o.status, stderr(o));
}

/// A deterministic pseudo-random byte generator (xorshift64*).
pub struct Gen(pub u64);

impl Gen {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Writes a file of `size` pseudo-random bytes.
pub fn write_random(path: &Path, size: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut g = Gen(seed | 1);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        g.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// Compares two files byte for byte.
pub fn assert_same_file(a: &Path, b: &Path) {
    let (ma, mb) = (fs::metadata(a).unwrap(), fs::metadata(b).unwrap());
    assert_eq!(ma.len(), mb.len(), "size differs: {} vs {}", a.display(), b.display());
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            break;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        assert!(ba[..n] == bb[..n], "content differs near offset {off}: {} vs {}", a.display(), b.display());
        off += n as u64;
    }
}

/// Compares two trees: same names, types, contents, symlink targets, file modes
/// and file mtimes. Returns the number of entries compared.
pub fn assert_same_tree(a: &Path, b: &Path) -> usize {
    let (ma, mb) = (fs::symlink_metadata(a).unwrap(), fs::symlink_metadata(b).unwrap());
    assert_eq!(ma.file_type(), mb.file_type(), "type differs: {}", b.display());
    if ma.file_type().is_symlink() {
        assert_eq!(fs::read_link(a).unwrap(), fs::read_link(b).unwrap(), "link differs: {}", b.display());
        return 1;
    }
    assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "mode differs: {}", b.display());
    if ma.is_file() {
        assert_same_file(a, b);
        assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()), "mtime differs: {}", b.display());
        return 1;
    }
    let mut na: Vec<_> = fs::read_dir(a).unwrap().map(|e| e.unwrap().file_name()).collect();
    let mut nb: Vec<_> = fs::read_dir(b).unwrap().map(|e| e.unwrap().file_name()).collect();
    na.sort();
    nb.sort();
    assert_eq!(na, nb, "entries differ in {}", b.display());
    let mut n = 1;
    for name in na {
        n += assert_same_tree(&a.join(&name), &b.join(&name));
    }
    n
}

/// Lists every path under `dir` (for "nothing else was written" checks).
pub fn list_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

pub fn parse_json(o: &Output) -> serde_json::Value {
    let s = String::from_utf8_lossy(&o.stdout);
    let line = s.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON on stdout: {s:?}"));
    serde_json::from_str(line).unwrap()
}
