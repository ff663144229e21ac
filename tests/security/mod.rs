//! Encryption, key pinning and attacks on the handshake, with the real binary.

use crate::util::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

both_transports!(first_use_trust_is_remembered_and_a_changed_key_is_refused, |t| {
    let work = TempDir::new("tofu");
    let root = TempDir::new("tofu-root");
    let kh = work.path().join("known_hosts");
    let f = work.path().join("file");
    fs::write(&f, b"pinned").unwrap();
    // Pushes that trust on first use and remember keys in `kh`.
    let tofu = || Gfast::push(&t).env("GFAST_KNOWN_HOSTS", &kh);

    // A port below the ephemeral range: nothing else can take it before B binds it.
    let a = Server::start_with(&t, root.path(), &stable_addr(), TempDir::new("key-a"), &[]);
    let addr = a.addr.clone();
    let o = tofu().arg(&f).arg(a.url("one")).output();
    assert_ok(&o);
    assert!(stderr(&o).contains("trusting its key"), "{}", stderr(&o));
    let line = fs::read_to_string(&kh).unwrap();
    assert_eq!(line.trim(), format!("{addr} {}", a.key));

    let o = tofu().arg(&f).arg(a.url("two")).output();
    assert_ok(&o);
    assert!(!stderr(&o).contains("trusting"), "known key, no notice: {}", stderr(&o));
    let _ = a.stop();

    // Another server (new key) on the same address: refused, nothing written.
    let root_b = TempDir::new("tofu-root-b");
    let b = Server::start_with(&t, root_b.path(), &addr, TempDir::new("key-b"), &[]);
    assert_ne!(b.key, fs::read_to_string(&kh).unwrap().split(' ').nth(1).unwrap().trim());
    let o = tofu().arg(&f).arg(b.url("three")).output();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("key changed"), "{}", stderr(&o));
    assert!(list_tree(root_b.path()).is_empty());

    // Pinning the new key explicitly is the way through.
    let fp = b.key.clone();
    let o = tofu().fingerprint(&fp).arg(&f).arg(b.url("four")).output();
    assert_ok(&o);
    assert_eq!(fs::read(root_b.path().join("four")).unwrap(), b"pinned");
});

both_transports!(a_wrong_fingerprint_is_refused_before_any_data, |t| {
    let work = TempDir::new("wrongfp");
    let root = TempDir::new("wrongfp-root");
    let f = work.path().join("file");
    fs::write(&f, b"x").unwrap();
    let s = Server::start(&t, root.path(), &[]);
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let o = Gfast::push(&t).fingerprint(&wrong).arg(&f).arg(s.url("")).output();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("--fingerprint asks for"), "{}", stderr(&o));
    assert!(list_tree(root.path()).is_empty());
});

// Over TCP only: QUIC always encrypts (--no-encrypt is refused with it: tested in
// suite::quic_refuses_flags_that_only_mean_something_over_tcp).
tcp_test!(no_encrypt_needs_both_sides_to_agree, |t| {
    let work = TempDir::new("plain");
    let f = work.path().join("file");
    fs::write(&f, b"in the clear").unwrap();

    let root = TempDir::new("plain-root");
    let strict = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t).arg("--no-encrypt").arg(&f).arg(strict.url("")).output();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("requires encryption"), "{}", stderr(&o));
    assert!(list_tree(root.path()).is_empty());

    let root2 = TempDir::new("plain-root2");
    let lax = Server::start(&t, root2.path(), &["--allow-no-encrypt"]);
    let o = Gfast::push(&t).args(["--no-encrypt", "--json"]).arg(&f).arg(lax.url("")).output();
    assert_ok(&o);
    let j = parse_json(&o);
    assert_eq!(j["encrypted"], false);
    assert_eq!(fs::read(root2.path().join("file")).unwrap(), b"in the clear");
    // An encrypting client still gets TLS from a lax server.
    let o = Gfast::push(&t).pin(&lax).arg("--json").arg(&f).arg(lax.url("again")).output();
    assert_ok(&o);
    assert_eq!(parse_json(&o)["encrypted"], true);
    assert_eq!(parse_json(&o)["server_key"], lax.key.as_str());
});

/// A man in the middle that relays to `target` and flips one bit of the
/// client-to-server stream at byte `flip_at` of each connection (never, if None).
fn mitm(target: String, flip_at: Option<usize>) -> (String, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let flipped = Arc::new(AtomicBool::new(false));
    let fl = flipped.clone();
    thread::spawn(move || {
        for c in l.incoming().take(64) {
            let Ok(c) = c else { return };
            let Ok(s) = TcpStream::connect(&target) else { return };
            let (c2, s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
            let fl = fl.clone();
            thread::spawn(move || relay(c, s, flip_at, &fl, false));
            thread::spawn(move || relay(s2, c2, None, &AtomicBool::new(false), false));
        }
    });
    (addr, flipped)
}

/// Copies `from` to `to` until `from` ends, flipping one bit at `flip_at`;
/// returns what it copied when `record` is set (else nothing).
fn relay(
    mut from: TcpStream,
    mut to: TcpStream,
    flip_at: Option<usize>,
    flipped: &AtomicBool,
    record: bool,
) -> Vec<u8> {
    let mut buf = vec![0u8; 64 << 10];
    let mut seen = 0usize;
    let mut copied = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(at) = flip_at {
            if at >= seen && at < seen + n {
                buf[at - seen] ^= 0x20;
                flipped.store(true, Ordering::SeqCst);
            }
        }
        seen += n;
        if record {
            copied.extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    copied
}

// Over TCP only: the tampering proxy relays TCP (QUIC packets are authenticated by QUIC itself).
tcp_test!(a_bit_flipping_man_in_the_middle_is_detected_and_nothing_is_written, |t| {
    let work = TempDir::new("mitm");
    let root = TempDir::new("mitm-root");
    let f = work.path().join("data");
    write_random(&f, 4 << 20, 11);
    let s = Server::start(&t, root.path(), &[]);
    // Every connection gets one flipped bit, 3000 bytes in: inside the handshake
    // or early data of the control connection and inside chunk data of a lane.
    let (proxy, flipped) = mitm(s.addr.clone(), Some(3000));
    let o = Gfast::push(&t).pin(&s).arg(&f).arg(format!("gfast://{proxy}/")).output();
    assert!(flipped.load(Ordering::SeqCst), "the proxy did flip a bit");
    assert!(!o.status.success(), "a tampered session must fail");
    assert_eq!(stderr(&o).trim().lines().count(), 1, "one line: {}", stderr(&o));
    assert!(!root.path().join("data").exists(), "nothing under the final name");

    // The same proxy without tampering works: the pin is end to end.
    let (clean, _) = mitm(s.addr.clone(), None);
    assert_ok(&Gfast::push(&t).pin(&s).arg(&f).arg(format!("gfast://{clean}/")).output());
    assert_same_file(&f, &root.path().join("data"));
});

// Over TCP only: the impostor proxy relays TCP; over QUIC the pinned key is checked by the same verifier.
tcp_test!(an_impersonating_server_is_refused, |t| {
    let work = TempDir::new("imp");
    let f = work.path().join("secret");
    fs::write(&f, b"for the real server only").unwrap();
    let real_root = TempDir::new("imp-real");
    let real = Server::start(&t, real_root.path(), &[]);
    // The attacker runs its own gfast (it even knows the token) and relays to it.
    let evil_root = TempDir::new("imp-evil");
    let evil = Server::start(&t, evil_root.path(), &[]);
    let (proxy, _) = mitm(evil.addr.clone(), None);
    let o = Gfast::push(&t).pin(&real).arg(&f).arg(format!("gfast://{proxy}/")).output();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(list_tree(evil_root.path()).is_empty(), "nothing reached the impostor");
});

/// Connections a [`recorder`] accepted, and what each client sent once it
/// ended: (arrival index, bytes).
type Recorded = Arc<(AtomicUsize, Mutex<Vec<(usize, Vec<u8>)>>)>;

/// A proxy that relays to `target` and records what each client connection
/// sent.
fn recorder(target: String) -> (String, Recorded) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let all: Recorded = Arc::default();
    let rec = all.clone();
    thread::spawn(move || {
        for (k, c) in l.incoming().take(64).enumerate() {
            let Ok(c) = c else { return };
            let Ok(s) = TcpStream::connect(&target) else { return };
            rec.0.fetch_add(1, Ordering::SeqCst);
            let (c2, s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
            let rec = rec.clone();
            thread::spawn(move || {
                let bytes = relay(c, s, None, &AtomicBool::new(false), true);
                rec.1.lock().unwrap().push((k, bytes));
            });
            thread::spawn(move || relay(s2, c2, None, &AtomicBool::new(false), false));
        }
    });
    (addr, all)
}

// Over TCP only: the recording proxy relays TCP (QUIC's handshake is QUIC's own).
tcp_test!(a_replayed_session_is_refused_and_nothing_is_written, |t| {
    // In the clear the replay meets the token's challenge-response; with TLS it
    // meets the TLS handshake first.
    for plain in [true, false] {
        let work = TempDir::new("replay");
        let root = TempDir::new("replay-root");
        let f = work.path().join("data");
        write_random(&f, 3 << 20, 5);
        let mut s = Server::start(&t, root.path(), if plain { &["--allow-no-encrypt"] } else { &[] });
        let (proxy, recorded) = recorder(s.addr.clone());
        // --no-encrypt has no key to pin; with TLS the key is pinned.
        let mut args: Vec<std::ffi::OsString> =
            if plain { vec!["--no-encrypt".into()] } else { vec!["--fingerprint".into(), s.key.clone().into()] };
        args.extend([f.clone().into_os_string(), format!("gfast://{proxy}/").into()]);
        let run = |args: &[std::ffi::OsString]| Gfast::push(&t).args(args).output();
        assert_ok(&run(&args));
        assert_same_file(&f, &root.path().join("data"));
        fs::remove_file(root.path().join("data")).unwrap();

        // Every recorded connection again, byte for byte, in the order they came
        // (the control connection first), once the client has ended each one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while recorded.1.lock().unwrap().len() < recorded.0.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "the client's connections ended");
            thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut done = recorded.1.lock().unwrap().clone();
        done.sort();
        let conns: Vec<Vec<u8>> = done.into_iter().map(|(_, b)| b).collect();
        assert!(conns.len() >= 2 && conns.iter().all(|c| !c.is_empty()), "control and lanes were recorded");
        let socks: Vec<TcpStream> = conns
            .iter()
            .map(|bytes| {
                let mut c = TcpStream::connect(&s.addr).unwrap();
                let _ = c.write_all(bytes);
                let _ = c.shutdown(Shutdown::Write);
                c
            })
            .collect();
        for mut c in socks {
            c.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let _ = c.read_to_end(&mut Vec::new());
        }
        assert!(list_tree(root.path()).is_empty(), "the replay wrote nothing (plain: {plain})");
        assert!(s.is_alive(), "the daemon survived the replay");
        // A genuine push still goes through.
        args.pop();
        args.push(s.url("").into());
        assert_ok(&run(&args));
        assert_same_file(&f, &root.path().join("data"));
        let log = s.stop();
        eprintln!("--- server log (plain: {plain}) ---\n{log}");
        if plain {
            // The replayed control connection fails the challenge; its lanes name a
            // session that is over (turned away quietly, as a late lane would be).
            assert_eq!(log.matches("wrong token").count(), 1, "{log}");
        } else {
            // Every replayed connection fails TLS: the server's half of each handshake is new.
            assert_eq!(log.matches("cannot decrypt").count(), conns.len(), "{log}");
        }
        // The genuine push through the proxy ended without refusals, however late
        // its idle lanes joined.
        assert!(!log.contains("unknown session"), "{log}");
    }
});
