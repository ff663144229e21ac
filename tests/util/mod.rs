//! Helpers for integration tests: the transport a test runs over and the macros
//! that run it over each, one builder for every `gfast` command a test starts,
//! temporary directories, a real `gfast serve` process on a loopback port, tree
//! comparison.

#![allow(dead_code, unreachable_pub)]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// `both_transports!(name, |t| { ... })` makes the tests `name::tcp` and
/// `name::quic`, which run the body with `t` = [`Transport::Tcp`] and
/// [`Transport::Quic`]. The body is written as a closure so that rustfmt
/// formats it (as with ripgrep's `rgtest!`); it is the body of a function, so
/// `return` ends the test.
macro_rules! both_transports {
    ($name:ident, |$t:ident| $body:block) => {
        transport_tests!($name, [tcp, quic], |$t| $body);
    };
}

/// `tcp_test!(name, |t| { ... })`: only `name::tcp`, for a test that means
/// something over TCP only. A comment above each says why.
macro_rules! tcp_test {
    ($name:ident, |$t:ident| $body:block) => {
        transport_tests!($name, [tcp], |$t| $body);
    };
}

/// `quic_test!(name, |t| { ... })`: only `name::quic`, for a test that means
/// something over QUIC only. A comment above each says why.
macro_rules! quic_test {
    ($name:ident, |$t:ident| $body:block) => {
        transport_tests!($name, [quic], |$t| $body);
    };
}

/// A module `name` with the body as `run` and one `#[test]` per transport listed.
macro_rules! transport_tests {
    (@transport tcp) => {
        $crate::util::Transport::Tcp
    };
    (@transport quic) => {
        $crate::util::Transport::Quic
    };
    ($name:ident, [$($tr:ident),+], |$t:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($t: $crate::util::Transport) $body

            $(
                #[test]
                fn $tr() {
                    run(transport_tests!(@transport $tr));
                }
            )+
        }
    };
}

pub const TOKEN: &str = "integration-test-token";

/// Every command gets this known-hosts file unless the test names its own: it
/// does not exist, so nothing is read from or written to the tester's home.
pub const NO_KNOWN_HOSTS: &str = "/nonexistent/known_hosts";

/// `--timeout` of both ends of a QUIC test, unless the test gives its own: a
/// killed peer is noticed over QUIC by the idle timeout only (no RST).
pub const QUIC_TIMEOUT: &str = "8";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gfast")
}

/// What a test's pushes, pulls and servers run over; given to the body of each
/// test by [`both_transports!`], [`tcp_test!`] or [`quic_test!`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// gfast's default: no flag is added.
    Tcp,
    /// `--transport quic` on every push and pull, and `--timeout 8` on both ends.
    Quic,
}

impl Transport {
    pub fn is_quic(&self) -> bool {
        *self == Transport::Quic
    }

    /// As `--json` names it.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }
}

/// One `gfast` command as the tests run it: the test token in GFAST_TOKEN,
/// [`NO_KNOWN_HOSTS`], no job store (GFAST_JOBS_DIR empty: the tester's home
/// stays out of it), and for [`Transport::Quic`] `--transport quic` (push and
/// pull) and `--timeout 8` (unless the arguments have a `--timeout`) on the
/// command line. The test's own `env` and `env_remove` come after these and
/// win. Built into a [`Command`] when run.
pub struct Gfast {
    verb: &'static str,
    transport: Option<Transport>,
    netns: Option<String>,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
}

impl Gfast {
    /// `gfast push` over `t`.
    pub fn push(t: &Transport) -> Gfast {
        Self::over(Some(*t), "push")
    }

    /// `gfast pull` over `t`.
    pub fn pull(t: &Transport) -> Gfast {
        Self::over(Some(*t), "pull")
    }

    /// `gfast sync` over `t`.
    pub fn sync(t: &Transport) -> Gfast {
        Self::over(Some(*t), "sync")
    }

    /// `gfast ls` over `t`.
    pub fn ls(t: &Transport) -> Gfast {
        Self::over(Some(*t), "ls")
    }

    /// `gfast serve` for clients over `t` (the daemon takes both transports;
    /// over QUIC it gets the shorter `--timeout`).
    pub fn serve(t: &Transport) -> Gfast {
        Self::over(Some(*t), "serve")
    }

    /// `gfast VERB` without transport flags (jobs, resume, bench).
    pub fn new(verb: &'static str) -> Gfast {
        Self::over(None, verb)
    }

    fn over(transport: Option<Transport>, verb: &'static str) -> Gfast {
        Gfast { verb, transport, netns: None, args: Vec::new(), env: Vec::new(), stdout: None, stderr: None }
    }

    /// Pins the key of `s` (`--fingerprint`).
    pub fn pin(self, s: &Server) -> Gfast {
        self.fingerprint(&s.key)
    }

    /// Pins `key` (`--fingerprint`).
    pub fn fingerprint(self, key: &str) -> Gfast {
        self.args(["--fingerprint", key])
    }

    /// ssh mode with `ssh_cmd` and this build as the remote gfast; no
    /// GFAST_TOKEN (the one-shot remote makes up its own).
    pub fn ssh(self, ssh_cmd: &str) -> Gfast {
        self.args(["--ssh", ssh_cmd, "--remote-cmd", bin()]).env_remove("GFAST_TOKEN")
    }

    /// Runs it inside network namespace `ns` (`ip netns exec`).
    pub fn netns(mut self, ns: &str) -> Gfast {
        self.netns = Some(ns.to_string());
        self
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Gfast {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Gfast
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Gfast {
        self.env.push((k.as_ref().to_os_string(), Some(v.as_ref().to_os_string())));
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Gfast {
        self.env.push((k.as_ref().to_os_string(), None));
        self
    }

    pub fn stdout(mut self, s: Stdio) -> Gfast {
        self.stdout = Some(s);
        self
    }

    pub fn stderr(mut self, s: Stdio) -> Gfast {
        self.stderr = Some(s);
        self
    }

    /// The command line and environment described above.
    pub fn command(self) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin()]);
                c
            }
            None => Command::new(bin()),
        };
        c.arg(self.verb);
        if self.transport == Some(Transport::Quic) {
            if self.verb != "serve" {
                c.args(["--transport", "quic"]);
            }
            if !self.args.iter().any(|a| a == "--timeout") {
                c.args(["--timeout", QUIC_TIMEOUT]);
            }
        }
        c.args(&self.args);
        c.env("GFAST_TOKEN", TOKEN).env("GFAST_KNOWN_HOSTS", NO_KNOWN_HOSTS).env("GFAST_JOBS_DIR", "");
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(s) = self.stdout {
            c.stdout(s);
        }
        if let Some(s) = self.stderr {
            c.stderr(s);
        }
        c
    }

    /// Runs it to the end (stdout and stderr captured).
    pub fn output(self) -> Output {
        let what = format!("gfast {}", self.verb);
        self.command().output().unwrap_or_else(|e| panic!("run {what}: {e}"))
    }

    /// Starts it.
    pub fn spawn(self) -> Child {
        let what = format!("gfast {}", self.verb);
        self.command().spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"))
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
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
    /// Starts a server for clients over `t` on a free loopback port.
    pub fn start(t: &Transport, root: &Path, extra: &[&str]) -> Server {
        Self::start_with(t, root, "127.0.0.1:0", TempDir::new("key"), extra)
    }

    /// Starts a server on `listen` with its key kept in `keydir`.
    pub fn start_with(t: &Transport, root: &Path, listen: &str, keydir: TempDir, extra: &[&str]) -> Server {
        let key = keydir.path().join("server.key");
        Self::start_keyed(t, root, listen, (&key, keydir), extra)
    }

    /// Starts a server on `listen` with the key at `key_file` (kept across
    /// restarts; `keydir` is removed with the server).
    pub fn start_keyed(
        t: &Transport,
        root: &Path,
        listen: &str,
        (key_file, keydir): (&Path, TempDir),
        extra: &[&str],
    ) -> Server {
        let mut child = Gfast::serve(t)
            .args(["--listen", listen, "--root"])
            .arg(root)
            .arg("--key-file")
            .arg(key_file)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "unexpected first line from serve: {line:?}");
        let (addr, key) = parse_listening(&line);
        Server { child, addr, root: root.to_path_buf(), key, _keydir: keydir }
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

/// Everything about a tree a sync keeps, one line per entry, sorted: path,
/// type, mode, size, mtime (directories too), a content hash, link target.
/// Two trees in sync have the same digest; a tree untouched keeps its own.
pub fn digest(dir: &Path) -> Vec<String> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let extra = if md.is_file() {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                fs::read(&p).unwrap().hash(&mut h);
                format!("{:x}", h.finish())
            } else if md.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                stack.push(p.clone());
                String::new()
            };
            let kind = if md.is_dir() {
                'd'
            } else if md.is_file() {
                'f'
            } else {
                'l'
            };
            let mode = if md.file_type().is_symlink() { 0 } else { md.mode() & 0o7777 };
            let size = if md.is_file() { md.len() } else { 0 };
            out.push(format!("{rel:?} {kind} {mode:o} {size} {}.{} {extra}", md.mtime(), md.mtime_nsec()));
        }
    }
    let top = fs::metadata(dir).unwrap();
    out.push(format!(". d {:o} {}.{}", top.mode() & 0o7777, top.mtime(), top.mtime_nsec()));
    out.sort();
    out
}

/// `rsync -a --dry-run --itemize-changes` from `src` to `dst` with `extra`
/// flags: what rsync would still do (empty when the trees are in sync), or
/// `None` when rsync is not installed (`.ci/run` installs it).
pub fn rsync_would(src: &str, dst: &str, extra: &[&str]) -> Option<Vec<String>> {
    let o = Command::new("rsync").args(["-a", "--dry-run", "--itemize-changes"]).args(extra).arg(src).arg(dst).output();
    let o = match o {
        Ok(o) => o,
        Err(_) => {
            eprintln!("SKIP the rsync oracle: rsync is not installed; .ci/run installs it");
            return None;
        }
    };
    assert!(o.status.success(), "rsync: {}", String::from_utf8_lossy(&o.stderr));
    Some(String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
}

pub fn parse_json(o: &Output) -> serde_json::Value {
    let s = String::from_utf8_lossy(&o.stdout);
    let line = s.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON on stdout: {s:?}"));
    serde_json::from_str(line).unwrap()
}
