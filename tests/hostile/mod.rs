//! Hostile input against the real daemon (issue: a daemon that no one can
//! crash, starve, fool or use to gain privileges; ../shared/SECURITY-REVIEW.md).
//! A small crafted-frame client speaks protocol v1 with the project's own codec;
//! every test checks that the daemon stays up with bounded memory, serves a
//! legitimate push during or after the attack, and that nothing outside what
//! was asked is written or lost.
//!
//! Attack traffic comes from 127.0.0.2 and up, the legitimate client from
//! 127.0.0.1, so limits per source address can be seen to spare the latter.

use crate::util::*;
use gfast::proto::auth::SessionKeys;
use gfast::proto::frame::{kind, EntryKind, FileMeta, Frame, Limits, Owner, HEADER_LEN};
use gfast::proto::{
    CAP_HARDLINKS, CAP_OWNERS, CAP_RESUME, CAP_SPECIALS, CAP_SYNC, CAP_WIDE_WINDOW, CAP_XATTRS, FILE_WINDOW,
    FILE_WINDOW_WIDE, VERSION,
};
use gfast::transport::framed::read_frame;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A TCP connection from `src` (a loopback address) to `addr`.
fn connect_from(src: [u8; 4], addr: &str) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((src, 0)).into()).unwrap();
    sock.connect_timeout(&addr.parse::<SocketAddr>().unwrap().into(), Duration::from_secs(5)).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A crafted client in plain mode (the daemon runs with --allow-no-encrypt).
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    /// The capabilities the server accepted (its CHALLENGE).
    caps: u64,
}

impl Raw {
    fn new(src: [u8; 4], addr: &str) -> Raw {
        Raw { s: connect_from(src, addr), buf: Vec::new(), caps: 0 }
    }

    fn send(&mut self, f: &Frame) -> std::io::Result<()> {
        self.s.write_all(&f.to_vec())
    }

    fn recv(&mut self) -> Result<Frame, String> {
        read_frame(&mut self.s, &Limits::default(), &mut self.buf).map_err(|e| e.to_string())
    }

    /// HELLO, CHALLENGE, AUTH, WELCOME with `token`; the server's last frame
    /// (WELCOME or ERROR).
    fn login(&mut self, token: &[u8], caps: u64, chunk_size: u32) -> Result<Frame, String> {
        let cn = [7u8; 32];
        self.send(&Frame::Hello { min_version: VERSION, max_version: VERSION, caps, nonce: cn }).unwrap();
        let sn = match self.recv()? {
            Frame::Challenge { nonce, caps, .. } => {
                self.caps = caps;
                nonce
            }
            other => return Ok(other),
        };
        let keys = SessionKeys::derive(token, &cn, &sn);
        let auth = Frame::Auth { proof: keys.client_proof(), lanes: 1, chunk_size, job_id: [0; 16] };
        self.send(&auth).map_err(|e| e.to_string())?;
        self.recv()
    }

    fn welcome(src: [u8; 4], addr: &str, caps: u64, chunk_size: u32) -> Raw {
        let mut r = Raw::new(src, addr);
        match r.login(TOKEN.as_bytes(), caps, chunk_size) {
            Ok(Frame::Welcome { .. }) => r,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }
}

fn meta_of(id: u64, path: &str, size: u64) -> FileMeta {
    FileMeta {
        id,
        kind: EntryKind::File,
        mode: 0o644,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 0,
        size,
        path: path.as_bytes().to_vec(),
        link: Vec::new(),
        owner: None,
        xattrs: Vec::new(),
        rdev: 0,
        hardlink: false,
    }
}

fn file(id: u64, path: &str, size: u64) -> Frame {
    Frame::File(meta_of(id, path, size))
}

/// The 8-byte header of a frame of type `kind` announcing `len` bytes (the
/// attacks send headers alone).
fn header(kind: u8, len: u32) -> [u8; HEADER_LEN] {
    gfast::proto::frame::Header { kind, flags: 0, len }.encode()
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 =
        s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A legitimate push of a small file over `t`, checked byte for byte.
fn legit_push(t: &Transport, s: &Server, work: &Path, name: &str) {
    let f = work.join(format!("{name}.src"));
    write_random(&f, 3 << 20, name.len() as u64 + 11);
    let o = Gfast::push(t).pin(s).arg(&f).arg(s.url(name)).output();
    assert_ok(&o);
    assert_same_file(&f, &s.root.join(name));
}

/// Until `cond` holds or `limit` passes (bounded polling).
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

// Over TCP only: the QUIC variant is quic_frames_before_authentication_cost_nothing.
tcp_test!(frames_before_authentication_cost_the_daemon_nothing, |t| {
    let work = TempDir::new("preauth");
    let root = TempDir::new("preauth-root");
    let mut s = Server::start(&t, root.path(), &["--allow-no-encrypt"]);
    let pid = s.child.id();
    let before = rss_mib(pid);
    // Headers announcing a CHUNK of 1 GiB and a HELLO of 1 MiB as the first
    // frame, from a client without a token: refused at the header.
    let mut held = Vec::new();
    for i in 0..8u8 {
        let mut c = connect_from([127, 0, 0, 2], &s.addr);
        let (k, len) = if i % 2 == 0 { (kind::CHUNK, (1u32 << 30) + 32) } else { (kind::HELLO, 1 << 20) };
        let h = header(k, len);
        c.write_all(&h).unwrap();
        held.push(c);
    }
    // In place of AUTH: a 1 MiB AUTH header after a genuine HELLO.
    let mut r = Raw::new([127, 0, 0, 2], &s.addr);
    r.send(&Frame::Hello { min_version: VERSION, max_version: VERSION, caps: 0, nonce: [1; 32] }).unwrap();
    assert!(matches!(r.recv(), Ok(Frame::Challenge { .. })));
    let h = header(kind::AUTH, 1u32 << 20);
    r.s.write_all(&h).unwrap();
    // Every one is closed by the daemon at once, without waiting for the body.
    for c in held.iter_mut().chain(std::iter::once(&mut r.s)) {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        let closed = match c.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        };
        assert!(closed, "the daemon kept a connection that announced an oversized frame");
    }
    let after = rss_mib(pid);
    assert!(after < before + 32, "daemon RSS grew from {before} to {after} MiB");
    legit_push(&t, &s, work.path(), "after-preauth");
    assert!(s.is_alive());
    // A daemon that requires TLS reads no plaintext frame body either.
    let tls_root = TempDir::new("preauth-tls-root");
    let mut tls = Server::start(&t, tls_root.path(), &[]);
    let before = rss_mib(tls.child.id());
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut c = connect_from([127, 0, 0, 2], &tls.addr);
        let h = header(kind::CHUNK, (1u32 << 30) + 32);
        c.write_all(&h).unwrap();
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_mib(tls.child.id());
    assert!(after < before + 32, "TLS-only daemon RSS grew from {before} to {after} MiB");
    legit_push(&t, &tls, work.path(), "after-preauth-tls");
    assert!(tls.is_alive());
});

// Over QUIC only: the variant of frames_before_authentication_cost_the_daemon_nothing
// for QUIC streams.
quic_test!(quic_frames_before_authentication_cost_nothing, |t| {
    use gfast::transport::{conn::Conn, quic as q, tls};
    let work = TempDir::new("preauth-quic");
    let root = TempDir::new("preauth-quic-root");
    let mut s = Server::start(&t, root.path(), &[]);
    let before = rss_mib(s.child.id());
    let (cfg, _) = tls::client_config(None).unwrap();
    let client = q::connect(&s.addr, &cfg, Duration::from_secs(10)).unwrap();
    let mut streams = Vec::new();
    for i in 0..6u8 {
        let c = Conn::quic(q::Stream::open(&client.conn).unwrap());
        let (_, mut w) = c.split().unwrap();
        let h = header(if i % 2 == 0 { kind::CHUNK } else { kind::HELLO }, (1u32 << 30) + 32);
        w.write_all(&h).unwrap();
        w.flush().unwrap();
        streams.push((c, w));
    }
    std::thread::sleep(Duration::from_millis(800));
    let after = rss_mib(s.child.id());
    assert!(after < before + 32, "daemon RSS grew from {before} to {after} MiB over QUIC");
    legit_push(&t, &s, work.path(), "after-quic-preauth");
    assert!(s.is_alive());
});

// Over TCP only: modes are the same code over QUIC.
tcp_test!(pushed_files_lose_setuid_setgid_and_sticky_bits_and_take_the_umask, |t| {
    let work = TempDir::new("modes");
    let root = TempDir::new("modes-root");
    let src = work.path().join("tree");
    fs::create_dir_all(src.join("d1777")).unwrap();
    fs::create_dir_all(src.join("d2777")).unwrap();
    for (name, mode) in [("suid", 0o4755), ("sgid", 0o2755), ("s6777", 0o6777), ("world", 0o777), ("plain", 0o640)] {
        let p = src.join(name);
        fs::write(&p, b"#!/bin/sh\nid\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(src.join("d1777"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(src.join("d2777"), fs::Permissions::from_mode(0o2777)).unwrap();
    // nextest runs each test in its own process: the daemon inherits this umask.
    // A directory the operator made private, which a token holder names.
    fs::create_dir(root.path().join("priv")).unwrap();
    fs::set_permissions(root.path().join("priv"), fs::Permissions::from_mode(0o700)).unwrap();
    // A setuid file the operator put there, pulled by a client.
    fs::write(root.path().join("op-suid"), b"x").unwrap();
    fs::set_permissions(root.path().join("op-suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    // SAFETY: umask only sets the process's file mode mask.
    let old = unsafe { libc::umask(0o027) };
    let s = Server::start(&t, root.path(), &["--allow-no-encrypt", "--allow-pull"]);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let o = Gfast::push(&t).pin(&s).arg(&src).arg(s.url("")).output();
    assert_ok(&o);
    let mode = |p: &str| fs::symlink_metadata(root.path().join("tree").join(p)).unwrap().permissions().mode() & 0o7777;
    for (name, want) in [
        ("suid", 0o750),
        ("sgid", 0o750),
        ("s6777", 0o750),
        ("world", 0o750),
        ("plain", 0o640),
        ("d1777", 0o750),
        ("d2777", 0o750),
    ] {
        assert_eq!(mode(name), want, "{name}: {:o}", mode(name));
    }
    assert_eq!(fs::read(root.path().join("tree/suid")).unwrap(), b"#!/bin/sh\nid\n");
    // A pushed directory entry does not change an existing directory's mode.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, 0, 1 << 20);
    let dir = FileMeta { kind: EntryKind::Dir, mode: 0o777, size: 0, ..meta_of(0, "priv", 0) };
    r.send(&Frame::File(dir)).unwrap();
    r.send(&Frame::Done { files: 1 }).unwrap();
    assert!(matches!(r.recv(), Ok(Frame::FileDone { .. })));
    assert!(matches!(r.recv(), Ok(Frame::SessionDone { .. })));
    let priv_mode = fs::metadata(root.path().join("priv")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(priv_mode, 0o700, "an existing directory was opened up");
    // A pulling client keeps no setuid bit of what a server sends.
    let dest = work.path().join("pulled");
    let o = Gfast::pull(&t).pin(&s).arg(s.url("op-suid")).arg(&dest).output();
    assert_ok(&o);
    assert_eq!(fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o755);
});

// Over TCP only: the crafted client speaks plain TCP.
tcp_test!(a_file_announcing_any_size_never_crashes_or_bloats_the_daemon, |t| {
    let work = TempDir::new("huge");
    let root = TempDir::new("huge-root");
    let mut s = Server::start(&t, root.path(), &["--allow-no-encrypt"]);
    let pid = s.child.id();
    let before = rss_mib(pid);
    // 2^64-1 bytes: more chunks than a session counts.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, 0, 64 << 10);
    r.send(&file(0, "huge", u64::MAX)).unwrap();
    match r.recv() {
        Ok(Frame::Error { message, .. }) => assert!(message.contains("chunks"), "{message}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    // 1 PiB: more than the disk holds, refused at once with nothing created.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, 0, 64 << 20);
    r.send(&file(0, "pib", 1 << 50)).unwrap();
    match r.recv() {
        Ok(Frame::Error { code, message }) => {
            assert_eq!(code, gfast::proto::error::code::NO_SPACE, "{message}");
            assert!(message.contains("bytes are free"), "{message}");
        }
        other => panic!("expected ERROR NO_SPACE, got {other:?}"),
    }
    assert!(list_tree(root.path()).is_empty(), "{:?}", list_tree(root.path()));
    assert!(rss_mib(pid) < before + 32);
    legit_push(&t, &s, work.path(), "after-huge");
    assert!(s.is_alive());
    // A --discard daemon takes four 1 TiB files of 64 KiB chunks without
    // memory for their chunk tables (the review measured 1,094 MiB).
    let mut d = Server::start(&t, root.path(), &["--allow-no-encrypt", "--discard"]);
    let before = rss_mib(d.child.id());
    let mut r = Raw::welcome([127, 0, 0, 2], &d.addr, 0, 64 << 10);
    for id in 0..4 {
        r.send(&file(id, &format!("tib{id}"), 1 << 40)).unwrap();
    }
    for _ in 0..4 {
        assert!(matches!(r.recv(), Ok(Frame::FileReady { .. })));
    }
    let after = rss_mib(d.child.id());
    assert!(after < before + 32, "discard daemon RSS grew from {before} to {after} MiB");
    assert!(d.is_alive());
});

// Over TCP only: the same path rules over QUIC.
tcp_test!(gfast_names_cannot_be_pushed_and_planted_journals_are_not_trusted, |t| {
    let work = TempDir::new("names");
    let root = TempDir::new("names-root");
    let s = Server::start(&t, root.path(), &["--allow-no-encrypt"]);
    // The review's collision: a file named like another's partial file.
    let coll = work.path().join("coll");
    fs::create_dir_all(&coll).unwrap();
    write_random(&coll.join("big"), 6 << 20, 5);
    let h = xxhash_rust::xxh3::xxh3_64(b"big");
    let part = format!(".gfast-{h:016x}.part");
    fs::write(coll.join(&part), b"EVIL CONTENT\n").unwrap();
    fs::create_dir_all(root.path().join("in")).unwrap();
    let o = Gfast::push(&t).pin(&s).args(["--chunk-size", "1M"]).arg(&coll).arg(s.url("in/")).output();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("reserved for gfast"), "{}", stderr(&o));
    assert_same_file(&coll.join("big"), &root.path().join("in/coll/big"));
    assert!(!root.path().join("in/coll").join(&part).exists());
    // A crafted FILE or TARGET with such a name is a protocol error.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, 0, 1 << 20);
    r.send(&file(0, "in/.gfast-1234.jrnl", 10)).unwrap();
    match r.recv() {
        Ok(Frame::Error { message, .. }) => assert!(message.contains("reserved"), "{message}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    let o = Gfast::push(&t).pin(&s).arg(coll.join("big")).arg(s.url(".gfast-x.part")).output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A partial file and journal planted in the destination (by someone with
    // write access there) are not resumed: the victim's file arrives whole.
    let victim = work.path().join("dataset.bin");
    write_random(&victim, 3 << 20, 77);
    let mtime = fs::metadata(&victim).unwrap().modified().unwrap();
    let secs = mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
    let vh = xxhash_rust::xxh3::xxh3_64(b"dataset.bin");
    let dir = root.path().join("in");
    let planted = dir.join(format!(".gfast-{vh:016x}.part"));
    fs::write(&planted, vec![b'E'; 3 << 20]).unwrap();
    let mut j = b"GFJ2".to_vec();
    j.extend_from_slice(&(1u64 << 20).to_be_bytes());
    j.extend_from_slice(&(3u64 << 20).to_be_bytes());
    j.extend_from_slice(&(secs.as_secs() as i64).to_be_bytes());
    j.extend_from_slice(&secs.subsec_nanos().to_be_bytes());
    j.extend_from_slice(&(11u16).to_be_bytes());
    j.extend_from_slice(b"dataset.bin");
    j.extend_from_slice(&[0u8; 32]); // inode and MAC: the planter knows no key
    let evil = gfast::proto::hash::chunk_hash(&vec![b'E'; 1 << 20]);
    for i in 0..3u32 {
        j.extend_from_slice(&i.to_be_bytes());
        j.extend_from_slice(&evil);
        j.extend_from_slice(&[0u8; 16]);
    }
    j.extend_from_slice(&u32::MAX.to_be_bytes());
    j.extend_from_slice(&[0u8; 32]);
    fs::write(dir.join(format!(".gfast-{vh:016x}.jrnl")), &j).unwrap();
    let o = Gfast::push(&t)
        .pin(&s)
        .args(["--resume", "--json", "--chunk-size", "1M"])
        .arg(&victim)
        .arg(s.url("in/"))
        .output();
    assert_ok(&o);
    assert_eq!(parse_json(&o)["bytes_resumed"], 0, "{}", stderr(&o));
    assert_same_file(&victim, &dir.join("dataset.bin"));
});

// Over TCP only: the crafted connections are TCP.
tcp_test!(slow_and_idle_connections_cannot_lock_clients_out, |t| {
    let work = TempDir::new("slow");
    let root = TempDir::new("slow-root");
    let mut s = Server::start(&t, root.path(), &[]);
    // Far past the per-address limit from one address: the rest of the world
    // is still served.
    // Each starts a valid HELLO whose body then comes one byte a second.
    let hello = Frame::Hello { min_version: VERSION, max_version: VERSION, caps: 0, nonce: [3; 32] }.to_vec();
    let mut drip: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut c = connect_from([127, 0, 0, 2], &s.addr);
            c.write_all(&hello[..HEADER_LEN]).unwrap();
            c
        })
        .collect();
    legit_push(&t, &s, work.path(), "during-drip");
    // The daemon told the connections past the limit so.
    let mut busy = 0;
    for c in drip.iter_mut() {
        c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut b = [0u8; 256];
        if let Ok(n) = c.read(&mut b) {
            if n > 0 && String::from_utf8_lossy(&b[..n]).contains("server busy") {
                busy += 1;
            }
        }
    }
    assert_eq!(busy, 40 - 32, "connections past the per-address limit are told the server is busy");
    // A byte every second does not keep a handshake alive past its deadline.
    let t0 = Instant::now();
    let mut open = drip.len();
    let mut sent = HEADER_LEN;
    while t0.elapsed() < Duration::from_secs(25) && open > 0 && sent < hello.len() {
        open = 0;
        for c in drip.iter_mut() {
            if c.write_all(&hello[sent..sent + 1]).is_ok() {
                let mut b = [0u8; 1];
                c.set_nonblocking(true).unwrap();
                let alive = matches!(c.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
                c.set_nonblocking(false).unwrap();
                open += alive as usize;
            }
        }
        sent += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(sent < hello.len(), "the HELLO was complete before the deadline");
    assert_eq!(open, 0, "dripping connections outlived the handshake deadline");
    drop(drip);
    // Every handshake slot taken (32 from each of 16 addresses): a real client
    // is told the server is busy, in one line, and served once they are gone.
    let mut idle = Vec::new();
    for a in 0..16u8 {
        for _ in 0..32 {
            idle.push(connect_from([127, 0, 1, 10 + a], &s.addr));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let f = work.path().join("refused");
    fs::write(&f, b"x").unwrap();
    let o = Gfast::push(&t).pin(&s).arg(&f).arg(s.url("refused")).output();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("server busy"), "{}", stderr(&o));
    drop(idle);
    assert!(eventually(Duration::from_secs(10), || Gfast::push(&t)
        .pin(&s)
        .arg(&f)
        .arg(s.url("refused"))
        .output()
        .status
        .success()));
    assert!(s.is_alive());
});

// Over TCP only: the crafted client speaks plain TCP.
tcp_test!(a_token_holder_cannot_exhaust_descriptors_or_sessions, |t| {
    let work = TempDir::new("fds");
    let root = TempDir::new("fds-root");
    let mut s = Server::start(&t, root.path(), &["--allow-no-encrypt", "--max-sessions", "3"]);
    let pid = s.child.id();
    let fds_before = open_fds(pid);
    // FILE frames past the window of unsettled entries end the session: 1,024,
    // or 4,096 with the wide window (bit 8), which this daemon takes when its
    // descriptor limit holds four such windows.
    let limit = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let fds_max: u64 = limit
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    for caps in [0, CAP_WIDE_WINDOW] {
        let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, caps, 64 << 10);
        let wide = r.caps & CAP_WIDE_WINDOW != 0;
        assert_eq!(wide, caps != 0 && fds_max >= 4 * FILE_WINDOW_WIDE as u64, "accepted {:#x}", r.caps);
        let w = if wide { FILE_WINDOW_WIDE } else { FILE_WINDOW };
        let mut frames = Vec::new();
        for id in 0..(w + 76) as u64 {
            frames.extend_from_slice(&file(id, &format!("f{id}"), 100_000).to_vec());
        }
        r.s.write_all(&frames).unwrap();
        let mut ready = 0;
        let end = loop {
            match r.recv() {
                Ok(Frame::FileReady { .. }) => ready += 1,
                Ok(Frame::Error { message, .. }) => break message,
                other => panic!("expected FILE_READY or ERROR, got {other:?}"),
            }
        };
        assert!(end.contains("window"), "{end}");
        assert_eq!(ready, w, "files opened of a window of {w}");
        assert!(
            eventually(Duration::from_secs(10), || open_fds(pid) < fds_before + 20),
            "descriptors were not released"
        );
    }
    // Sessions past --max-sessions are told the server is busy.
    let held: Vec<Raw> = (0..3).map(|_| Raw::welcome([127, 0, 0, 2], &s.addr, 0, 1 << 20)).collect();
    let f = work.path().join("x");
    fs::write(&f, b"x").unwrap();
    let o = Gfast::push(&t).pin(&s).arg(&f).arg(s.url("x")).output();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("--max-sessions"), "{}", stderr(&o));
    drop(held);
    assert!(eventually(Duration::from_secs(10), || Gfast::push(&t)
        .pin(&s)
        .arg(&f)
        .arg(s.url("x"))
        .output()
        .status
        .success()));
    // Partial files kept for a resume hold no descriptor: 300 files in 300
    // directories, announced and left, cost nothing once the session is gone.
    let before = open_fds(pid);
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_RESUME, 64 << 10);
    let mut frames = Vec::new();
    for id in 0..300u64 {
        frames.extend_from_slice(&file(id, &format!("d{id}/f"), 100_000).to_vec());
    }
    r.s.write_all(&frames).unwrap();
    for _ in 0..300 {
        assert!(matches!(r.recv(), Ok(Frame::FileReady { .. })));
    }
    drop(r);
    assert!(
        eventually(Duration::from_secs(10), || open_fds(pid) < before + 20),
        "kept partials hold {} descriptors",
        open_fds(pid) - before
    );
    assert!(root.path().join("d299").read_dir().unwrap().next().is_some(), "the partials were kept");
    legit_push(&t, &s, work.path(), "after-fds");
    assert!(s.is_alive());
});

// Over TCP only: --rate stretches the push, and QUIC has no pacing.
tcp_test!(a_partial_file_left_by_another_client_never_becomes_yours, |t| {
    let work = TempDir::new("foreign");
    let root = TempDir::new("foreign-root");
    let s = Server::start(&t, root.path(), &[]);
    // Two different files with the same name, size and mtime.
    let (a, b) = (work.path().join("a/data.bin"), work.path().join("b/data.bin"));
    fs::create_dir_all(a.parent().unwrap()).unwrap();
    fs::create_dir_all(b.parent().unwrap()).unwrap();
    write_random(&a, 24 << 20, 1);
    write_random(&b, 24 << 20, 2);
    let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for p in [&a, &b] {
        fs::File::options().write(true).open(p).unwrap().set_modified(when).unwrap();
    }
    // A's push is killed halfway: its partial file and journal stay.
    let mut child = Gfast::push(&t)
        .pin(&s)
        .args(["--rate", "60M", "--chunk-size", "1M", "--resume"])
        .arg(&a)
        .arg(s.url(""))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(eventually(Duration::from_secs(10), || list_tree(root.path())
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".jrnl"))));
    // B resumes "its" file: the chunks the journal holds are A's, so each is
    // checked against B's source and sent again; B gets B's file.
    let o = Gfast::push(&t).pin(&s).args(["--resume", "--json", "--chunk-size", "1M"]).arg(&b).arg(s.url("")).output();
    assert_ok(&o);
    assert_eq!(parse_json(&o)["bytes_resumed"], 0, "{}", stderr(&o));
    assert_same_file(&b, &root.path().join("data.bin"));
    // The same with a file that differs from A's in one chunk only: the
    // others resume, the different one is sent again, and FILE_END waits for
    // its acknowledgement (it used to overtake it: a digest mismatch).
    fs::remove_file(root.path().join("data.bin")).unwrap();
    let mut child = Gfast::push(&t)
        .pin(&s)
        .args(["--rate", "60M", "--chunk-size", "1M", "--resume"])
        .arg(&a)
        .arg(s.url(""))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let c = work.path().join("c/data.bin");
    fs::create_dir_all(c.parent().unwrap()).unwrap();
    let mut bytes = fs::read(&a).unwrap();
    bytes[(2 << 20) + 5] ^= 0xff;
    fs::write(&c, &bytes).unwrap();
    fs::File::options().write(true).open(&c).unwrap().set_modified(when).unwrap();
    let o = Gfast::push(&t)
        .pin(&s)
        .args(["--resume", "--json", "--chunk-size", "1M", "-n", "2", "--rate", "800M"])
        .arg(&c)
        .arg(s.url(""))
        .output();
    assert_ok(&o);
    assert!(parse_json(&o)["bytes_resumed"].as_u64().unwrap() > 0, "{}", stderr(&o));
    assert_same_file(&c, &root.path().join("data.bin"));
});

// Over TCP only: the crafted client speaks plain TCP.
tcp_test!(announcements_reserve_no_disk_and_unresumed_partials_expire, |t| {
    let root = TempDir::new("fill-root");
    // A partial file and journal left by an earlier daemon, untouched for an hour.
    fs::create_dir_all(root.path().join("old")).unwrap();
    let stale = root.path().join("old/.gfast-00000000000000aa.part");
    fs::write(&stale, b"left over").unwrap();
    fs::write(root.path().join("old/.gfast-00000000000000aa.jrnl"), b"GFJ2").unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for p in [stale.clone(), root.path().join("old/.gfast-00000000000000aa.jrnl")] {
        fs::File::options().write(true).open(&p).unwrap().set_modified(hour_ago).unwrap();
    }
    let keep = root.path().join("old/keep.txt");
    fs::write(&keep, b"user data").unwrap();
    let mut s = Server::start(&t, root.path(), &["--allow-no-encrypt", "--partial-ttl", "2"]);
    assert!(eventually(Duration::from_secs(10), || !stale.exists()), "the stale partial was not removed at start");
    assert_eq!(fs::read(&keep).unwrap(), b"user data");
    // Three announced files of 200 MB, no data, then a disconnect: nothing is
    // preallocated, and the partials kept for a resume expire.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_RESUME, 1 << 20);
    for id in 0..3 {
        r.send(&file(id, &format!("big{id}"), 200_000_000)).unwrap();
    }
    for _ in 0..3 {
        assert!(matches!(r.recv(), Ok(Frame::FileReady { .. })));
    }
    let used: u64 = list_tree(root.path())
        .iter()
        .filter_map(|p| fs::symlink_metadata(p).ok())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum();
    assert!(used < 1 << 20, "{used} bytes allocated for announcements without data");
    drop(r);
    std::thread::sleep(Duration::from_millis(500));
    let partials = || list_tree(root.path()).iter().filter(|p| p.to_string_lossy().contains(".gfast-")).count();
    assert!(eventually(Duration::from_secs(3), || partials() > 0), "the partials were kept for a resume");
    assert!(eventually(Duration::from_secs(15), || partials() == 0), "kept partials did not expire");
    assert!(s.is_alive());
});

// Over TCP only: QUIC has its own idle timeout (tested with kills in the resume tests).
tcp_test!(every_wait_has_a_deadline_on_both_sides, |t| {
    let work = TempDir::new("timeouts");
    let root = TempDir::new("timeouts-root");
    let mut s = Server::start(&t, root.path(), &["--allow-no-encrypt", "--timeout", "2"]);
    // An authenticated client that goes silent is ended by --timeout.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, 0, 1 << 20);
    r.send(&file(0, "half", 5 << 20)).unwrap();
    assert!(matches!(r.recv(), Ok(Frame::FileReady { .. })));
    match r.recv() {
        Ok(Frame::Error { message, .. }) => assert!(message.contains("--timeout"), "{message}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert!(s.is_alive());
    legit_push(&t, &s, work.path(), "after-silence");
    // A server that accepts and never answers: the client gives up after its
    // --timeout, and says so.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = mute.local_addr().unwrap();
    let hold = std::thread::spawn(move || {
        let c = mute.accept();
        std::thread::sleep(Duration::from_secs(8));
        drop(c);
    });
    let f = work.path().join("x");
    fs::write(&f, b"x").unwrap();
    let o = Gfast::push(&t).args(["--timeout", "2"]).arg(&f).arg(format!("gfast://{addr}/x")).output();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("did not answer the handshake within 2 s"), "{}", stderr(&o));
    hold.join().unwrap();
});

// Over TCP only: the push is stretched with --rate, and QUIC has no pacing.
tcp_test!(a_source_that_changes_while_it_is_sent_is_not_placed, |t| {
    let work = TempDir::new("changing");
    let root = TempDir::new("changing-root");
    let s = Server::start(&t, root.path(), &[]);
    for (case, grow) in [("appended", true), ("overwritten", false)] {
        let f = work.path().join(case);
        write_random(&f, 24 << 20, 3);
        let child = Gfast::push(&t)
            .pin(&s)
            .args(["--rate", "60M", "--chunk-size", "1M"])
            .arg(&f)
            .arg(s.url(case))
            .stderr(std::process::Stdio::piped())
            .spawn();
        std::thread::sleep(Duration::from_millis(700));
        if grow {
            fs::OpenOptions::new().append(true).open(&f).unwrap().write_all(&[9u8; 1 << 20]).unwrap();
        } else {
            use std::os::unix::fs::FileExt;
            fs::OpenOptions::new().write(true).open(&f).unwrap().write_all_at(&[9u8; 8 << 20], 4 << 20).unwrap();
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(5), "{case}: {}", stderr(&o));
        assert!(stderr(&o).contains("changed while it was being sent"), "{case}: {}", stderr(&o));
        assert!(!root.path().join(case).exists(), "{case}: a file that never existed at the source was placed");
    }
});

// Over TCP only: the crafted client speaks plain TCP.
tcp_test!(guessing_tokens_is_slowed_per_address_and_logged_in_summary, |t| {
    let work = TempDir::new("guess");
    let root = TempDir::new("guess-root");
    let s = Server::start(&t, root.path(), &["--allow-no-encrypt"]);
    // Five wrong tokens are answered at once; after them each wrong answer is
    // held back, 1 s, then 2 s (doubling, up to 10 s).
    let mut held_back = Vec::new();
    for i in 0..7 {
        let mut r = Raw::new([127, 0, 0, 2], &s.addr);
        let t0 = Instant::now();
        match r.login(format!("guess-{i}").as_bytes(), 0, 1 << 20) {
            Ok(Frame::Error { message, .. }) if message == "wrong token" => held_back.push(t0.elapsed()),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(held_back[5] >= Duration::from_secs(1), "the sixth wrong answer came after {:?}", held_back[5]);
    assert!(held_back[6] >= Duration::from_secs(2), "the seventh wrong answer came after {:?}", held_back[6]);
    // The right token is never held back, not even from the guessing address
    // (a shared host or NAT): it is checked before anything is delayed.
    let mut r = Raw::new([127, 0, 0, 2], &s.addr);
    assert!(matches!(r.login(TOKEN.as_bytes(), 0, 1 << 20), Ok(Frame::Welcome { .. })));
    drop(r);
    // At most 8 wrong answers are held back at once for one address: past
    // that a HELLO from it is refused before its token is even tested.
    let addr = s.addr.clone();
    let guessers: Vec<_> = (0..8)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || Raw::new([127, 0, 0, 2], &addr).login(format!("g{i}").as_bytes(), 0, 1 << 20))
        })
        .collect();
    // Each of the eight is held back 4 s or more (the address failed 7 times
    // already); 2 s is ample for eight loopback handshakes to reach that point.
    std::thread::sleep(Duration::from_secs(2));
    let ninth = Raw::new([127, 0, 0, 2], &addr).login(b"one more", 0, 1 << 20);
    assert!(
        matches!(&ninth, Ok(Frame::Error { message, .. }) if message.contains("being answered")),
        "a ninth guess was tested while eight were held back: {ninth:?}"
    );
    for g in guessers {
        assert!(matches!(g.join().unwrap(), Ok(Frame::Error { message, .. }) if message == "wrong token"));
    }
    // Nor a client from another address.
    legit_push(&t, &s, work.path(), "during-guessing");
    let log = s.stop();
    let lines = log.lines().filter(|l| l.contains("wrong token")).count();
    assert_eq!(lines, 1, "one log line, the rest counted: {log}");
});

// Over TCP only: CLI checks, the same over QUIC.
tcp_test!(small_mistakes_get_clear_words, |t| {
    let work = TempDir::new("minor");
    let root = TempDir::new("minor-root");
    let s = Server::start(&t, root.path(), &[]);
    let f = work.path().join("x");
    fs::write(&f, b"x").unwrap();
    // A typo of gfast:// never runs ssh.
    let o = Gfast::push(&t).arg(&f).arg("gfast:/127.0.0.1/x").output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("two slashes"), "{}", stderr(&o));
    // A token file others can read works, with a warning.
    let tok = work.path().join("token");
    fs::write(&tok, TOKEN).unwrap();
    fs::set_permissions(&tok, fs::Permissions::from_mode(0o644)).unwrap();
    let o = Gfast::push(&t)
        .pin(&s)
        .arg("--token-file")
        .arg(&tok)
        .arg(&f)
        .arg(s.url("x"))
        .env_remove("GFAST_TOKEN")
        .output();
    assert_ok(&o);
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    // --no-encrypt against something that is no gfast server.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = http.local_addr().unwrap();
    let answer = std::thread::spawn(move || {
        if let Ok((mut c, _)) = http.accept() {
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let o = Gfast::push(&t).arg("--no-encrypt").arg(&f).arg(format!("gfast://{addr}/x")).output();
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("is not a gfast server"), "{}", stderr(&o));
    answer.join().unwrap();
    // --json on a usage error reports no streams.
    let o = Gfast::push(&t).args(["--json", "--chunk-size", "1K"]).arg(&f).arg(s.url("x")).output();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(parse_json(&o)["streams"], 0);
});

// Over TCP only: the frames are decided above the transport.
tcp_test!(sync_frames_list_and_remove_only_under_the_root, |t| {
    use gfast::proto::error::code;
    let work = TempDir::new("sync-hostile");
    let root = TempDir::new("sync-hostile-root");
    let outside = TempDir::new("sync-hostile-outside");
    fs::create_dir_all(outside.path().join("d")).unwrap();
    fs::write(outside.path().join("d/precious"), b"must stay").unwrap();
    fs::create_dir_all(root.path().join("tree/sub")).unwrap();
    fs::write(root.path().join("tree/sub/f"), b"f").unwrap();
    std::os::unix::fs::symlink(outside.path().join("d"), root.path().join("out")).unwrap();

    // Without --allow-pull the capability is not accepted and LIST is refused.
    let mut s = Server::start(&t, root.path(), &["--allow-no-encrypt"]);
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_SYNC, 64 << 10);
    r.send(&Frame::List { root: Vec::new(), sums: false }).unwrap();
    assert!(matches!(r.recv(), Ok(Frame::Error { code: code::PROTOCOL, .. })));
    assert!(s.is_alive());
    drop(s);

    let mut s = Server::start(&t, root.path(), &["--allow-no-encrypt", "--allow-pull"]);
    let pid = s.child.id();
    let before = rss_mib(pid);
    // Escapes, reserved and oversized roots end the session with a refusal.
    for bad in [&b"../x"[..], b"/etc", b"tree/../..", b".gfast-x", b"a\0b"] {
        let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_SYNC, 64 << 10);
        r.send(&Frame::List { root: bad.to_vec(), sums: true }).unwrap();
        match r.recv() {
            Ok(Frame::Error { code, .. }) => assert!(code == code::PATH_REFUSED || code == code::PROTOCOL, "{code}"),
            other => panic!("LIST {bad:?}: expected ERROR, got {other:?}"),
        }
    }
    // A link under the root is listed as a link, never entered; through it, refused.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_SYNC, 64 << 10);
    r.send(&Frame::List { root: b"out".to_vec(), sums: true }).unwrap();
    match r.recv() {
        Ok(Frame::Listed { last: true, entries, .. }) => {
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].kind, EntryKind::Symlink);
        }
        other => panic!("expected one LISTED, got {other:?}"),
    }
    r.send(&Frame::List { root: b"out/precious".to_vec(), sums: true }).unwrap();
    assert!(matches!(r.recv(), Ok(Frame::Error { code: code::PATH_REFUSED, .. })));
    // REMOVE: escapes, the root, through a link: each fails, nothing outside moves;
    // the link itself goes as a link.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_SYNC, 64 << 10);
    let paths: Vec<Vec<u8>> = [&b"../victim"[..], b"", b"out/precious", b".gfast-j", b"tree/sub", b"out"]
        .iter()
        .map(|p| p.to_vec())
        .collect();
    r.send(&Frame::Remove { paths }).unwrap();
    match r.recv() {
        // tree/sub is not empty; only the link went.
        Ok(Frame::Removed { removed, failed, .. }) => assert_eq!((removed, failed), (1, 5)),
        other => panic!("expected REMOVED, got {other:?}"),
    }
    assert!(fs::symlink_metadata(root.path().join("out")).is_err());
    assert_eq!(fs::read(outside.path().join("d/precious")).unwrap(), b"must stay");
    assert_eq!(fs::read(root.path().join("tree/sub/f")).unwrap(), b"f");
    // More paths than a REMOVE may name, and a listing garbled by the client.
    let many: Vec<Vec<u8>> = (0..5000).map(|i| format!("n{i}").into_bytes()).collect();
    r.send(&Frame::Remove { paths: many }).unwrap();
    assert!(matches!(r.recv(), Ok(Frame::Error { code: code::PROTOCOL, .. })));
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_SYNC, 64 << 10);
    r.send(&Frame::Listed { last: true, mask: 0, entries: Vec::new() }).unwrap();
    assert!(matches!(r.recv(), Ok(Frame::Error { code: code::PROTOCOL, .. })));
    // A header announcing a huge LIST is refused before its body.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_SYNC, 64 << 10);
    r.s.write_all(&header(kind::LIST, 1 << 30)).unwrap();
    let mut b = [0u8; 64];
    let _ = r.s.read(&mut b);
    assert!(rss_mib(pid) < before + 32, "RSS grew from {before} to {} MiB", rss_mib(pid));
    legit_push(&t, &s, work.path(), "after-sync-frames");
    assert!(s.is_alive());
});

// Over TCP only: the crafted client speaks plain TCP.
tcp_test!(owners_a_token_holder_sends_are_refused_or_ignored, |t| {
    use std::os::unix::fs::MetadataExt;
    let root = TempDir::new("owners-root");
    let s = Server::start(&t, root.path(), &["--allow-no-encrypt"]);
    let owned = |path: &str| FileMeta {
        kind: EntryKind::Dir,
        mode: 0o755,
        size: 0,
        owner: Some(Owner { uid: 4242, gid: 4343, user: b"root".to_vec(), group: b"root".to_vec() }),
        ..meta_of(0, path, 0)
    };
    // Without capability bit 10 a FILE may not carry an owner at all.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, 0, 1 << 20);
    r.send(&Frame::File(owned("a"))).unwrap();
    match r.recv() {
        Ok(Frame::Error { code, message }) => {
            assert_eq!(code, gfast::proto::error::code::PROTOCOL, "{message}");
            assert!(message.contains("bit 10"), "{message}");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    // With it, a daemon without --preserve-owner takes the entry as its own user's.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_OWNERS, 1 << 20);
    assert_ne!(r.caps & CAP_OWNERS, 0, "bit 10 accepted");
    r.send(&Frame::File(owned("b"))).unwrap();
    r.send(&Frame::Done { files: 1 }).unwrap();
    assert!(matches!(r.recv(), Ok(Frame::FileDone { .. })));
    assert!(matches!(r.recv(), Ok(Frame::SessionDone { .. })));
    let md = fs::metadata(root.path().join("b")).unwrap();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert_eq!((md.uid(), md.gid() == 4343), (me, false), "the daemon's user, not the one sent");
    assert!(!root.path().join("a").exists());
});

// Over TCP only: the crafted client speaks plain TCP.
tcp_test!(xattrs_a_token_holder_sends_are_refused_or_kept_to_user_ones, |t| {
    let root = TempDir::new("xattrs-root");
    let s = Server::start(&t, root.path(), &["--allow-no-encrypt"]);
    let with = |path: &str| FileMeta {
        kind: EntryKind::Dir,
        mode: 0o755,
        size: 0,
        xattrs: vec![
            (b"user.note".to_vec(), b"fine".to_vec()),
            (b"trusted.evil".to_vec(), b"x".to_vec()),
            (b"security.capability".to_vec(), vec![1, 0, 0, 2]),
        ],
        ..meta_of(0, path, 0)
    };
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, 0, 1 << 20);
    r.send(&Frame::File(with("a"))).unwrap();
    match r.recv() {
        Ok(Frame::Error { message, .. }) => assert!(message.contains("bit 11"), "{message}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_XATTRS, 1 << 20);
    assert_ne!(r.caps & CAP_XATTRS, 0, "bit 11 accepted");
    r.send(&Frame::File(with("b"))).unwrap();
    r.send(&Frame::Done { files: 1 }).unwrap();
    assert!(matches!(r.recv(), Ok(Frame::FileDone { .. })));
    assert!(matches!(r.recv(), Ok(Frame::SessionDone { .. })));
    let b = root.path().join("b");
    if xattr::get(&b, "user.note").is_err() {
        eprintln!("SKIP the rest: the test directory's file system keeps no user xattrs");
        return;
    }
    assert_eq!(xattr::get(&b, "user.note").unwrap().as_deref(), Some(&b"fine"[..]), "user.* is given");
    assert_eq!(xattr::get(&b, "trusted.evil").unwrap(), None, "trusted.* is not");
    assert_eq!(xattr::get(&b, "security.capability").unwrap(), None, "nor a file capability");
});

// Over TCP only: the crafted client speaks plain TCP.
tcp_test!(device_nodes_a_token_holder_sends_are_refused, |t| {
    let root = TempDir::new("devices-root");
    let s = Server::start(&t, root.path(), &["--allow-no-encrypt"]);
    // /dev/sda's number, 8:0, with everyone allowed to write it.
    let dev = |path: &str| FileMeta {
        kind: EntryKind::BlockDev,
        mode: 0o666,
        size: 0,
        rdev: libc::makedev(8, 0),
        ..meta_of(0, path, 0)
    };
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, 0, 1 << 20);
    r.send(&Frame::File(dev("a"))).unwrap();
    match r.recv() {
        Ok(Frame::Error { message, .. }) => assert!(message.contains("bit 12"), "{message}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_SPECIALS, 1 << 20);
    assert_ne!(r.caps & CAP_SPECIALS, 0, "bit 12 accepted");
    r.send(&Frame::File(dev("b"))).unwrap();
    match r.recv() {
        Ok(Frame::FileFailed { message, .. }) => assert!(message.contains("--allow-devices"), "{message}"),
        other => panic!("expected FILE_FAILED, got {other:?}"),
    }
    assert!(fs::symlink_metadata(root.path().join("b")).is_err(), "no device node made");
    assert!(fs::symlink_metadata(root.path().join("a")).is_err());
});

// Over TCP only: the crafted client speaks plain TCP.
tcp_test!(hard_links_a_token_holder_sends_stay_under_the_root, |t| {
    let (root, outside) = (TempDir::new("links-root"), TempDir::new("links-outside"));
    fs::write(outside.path().join("secret"), b"outside").unwrap();
    fs::create_dir_all(root.path().join("dir")).unwrap();
    fs::write(root.path().join("mine"), b"mine").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("out")).unwrap();
    let s = Server::start(&t, root.path(), &["--allow-no-encrypt"]);
    let link = |path: &str, to: &str| {
        Frame::File(FileMeta { hardlink: true, link: to.as_bytes().to_vec(), ..meta_of(0, path, 0) })
    };
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, 0, 1 << 20);
    r.send(&link("a", "mine")).unwrap();
    match r.recv() {
        Ok(Frame::Error { message, .. }) => assert!(message.contains("bit 13"), "{message}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    let abs = outside.path().join("secret").display().to_string();
    for (to, why) in [
        ("../x", "a path out of the root"),
        (abs.as_str(), "an absolute path"),
        ("dir", "a directory"),
        ("out", "a symlink out"),
    ] {
        let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_HARDLINKS, 1 << 20);
        r.send(&link("b", to)).unwrap();
        match r.recv() {
            Ok(Frame::FileFailed { .. }) | Ok(Frame::Error { .. }) => {}
            other => panic!("{why}: expected a refusal, got {other:?}"),
        }
        assert!(fs::symlink_metadata(root.path().join("b")).is_err(), "{why}: nothing made");
    }
    assert_eq!(fs::read(outside.path().join("secret")).unwrap(), b"outside");
    // A link to a file under the root is made.
    let mut r = Raw::welcome([127, 0, 0, 2], &s.addr, CAP_HARDLINKS, 1 << 20);
    r.send(&link("c", "mine")).unwrap();
    r.send(&Frame::Done { files: 1 }).unwrap();
    assert!(matches!(r.recv(), Ok(Frame::FileDone { .. })));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(root.path().join("c")).unwrap().ino(),
        fs::metadata(root.path().join("mine")).unwrap().ino()
    );
});
