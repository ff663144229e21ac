//! Transfers through the real binary: trees, names, pulls, compression, delta,
//! errors, kills and corruption, each over TCP and QUIC unless it says why not.

use crate::util::*;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

both_transports!(large_file_arrives_byte_for_byte, |t| {
    let src = TempDir::new("large-src");
    let root = TempDir::new("large-root");
    // 1 GiB and a bit: the last chunk is short.
    let f = src.path().join("big.bin");
    write_random(&f, (1 << 30) + 12345, 42);
    let s = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t).pin(&s).args(["-n", "4", "--json"]).arg(&f).arg(s.url("in/")).output();
    assert_ok(&o);
    assert_same_file(&f, &root.path().join("in/big.bin"));
    let j = parse_json(&o);
    assert_eq!(j["bytes_total"], (1u64 << 30) + 12345);
    assert_eq!(j["bytes_sent"], (1u64 << 30) + 12345);
    assert_eq!(j["streams"], 4);
    let per: Vec<u64> = j["per_stream_bytes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(per.len(), 4);
    assert_eq!(per.iter().sum::<u64>(), (1u64 << 30) + 12345);
    assert!(per.iter().filter(|&&b| b > 0).count() >= 2, "chunks were striped over several streams: {per:?}");
    assert_eq!(j["retransmitted_chunks"], 0);
    assert!(j["chunk_rtt_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(j["chunk_rtt_ms"]["max"].as_f64().unwrap() >= j["chunk_rtt_ms"]["p99"].as_f64().unwrap());
    assert!(j["job_id"].as_str().unwrap().len() == 32);
    assert!(j.get("error").is_none());
    // No temporary file is left next to it.
    assert_eq!(list_tree(&root.path().join("in")), vec![root.path().join("in/big.bin")]);
});

both_transports!(tree_of_ten_thousand_small_files, |t| {
    let src = TempDir::new("small-src");
    let root = TempDir::new("small-root");
    let top = src.path().join("tree");
    let mut g = Gen(7);
    for d in 0..100 {
        let dir = top.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..100 {
            let n = (g.next() % 9000) as usize;
            fs::write(dir.join(format!("f{i}")), g.bytes(n)).unwrap();
        }
    }
    let s = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t).pin(&s).arg("--json").arg(&top).arg(s.url("")).output();
    assert_ok(&o);
    let n = assert_same_tree(&top, &root.path().join("tree"));
    assert_eq!(n, 1 + 100 + 10_000);
    assert_eq!(parse_json(&o)["files"], 10_101);
});

both_transports!(empty_files_empty_dirs_odd_names_symlinks_and_metadata, |t| {
    let src = TempDir::new("odd-src");
    let root = TempDir::new("odd-root");
    let top = src.path().join("odd");
    fs::create_dir_all(top.join("empty dir/nested empty")).unwrap();
    fs::write(top.join("empty file"), b"").unwrap();
    let names: Vec<&[u8]> = vec![
        b"with space",
        b"new\nline",
        b"non-utf8-\xff\xfe",
        b"-leading-dash",
        "ünïcødé-日本".as_bytes(),
        b"tab\there",
        b"back\\slash",
        b"'quote\"",
    ];
    for (i, n) in names.iter().enumerate() {
        fs::write(top.join(std::ffi::OsStr::from_bytes(n)), format!("content {i}")).unwrap();
    }
    let long = "x".repeat(255);
    fs::write(top.join(&long), b"longest name").unwrap();
    symlink("with space", top.join("link-in")).unwrap();
    symlink("/nonexistent/target", top.join("dangling")).unwrap();
    let exec = top.join("script.sh");
    fs::write(&exec, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&exec, fs::Permissions::from_mode(0o751)).unwrap();
    let old = std::time::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    fs::File::options().write(true).open(&exec).unwrap().set_modified(old).unwrap();
    fs::set_permissions(top.join("empty dir"), fs::Permissions::from_mode(0o700)).unwrap();

    let s = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t).pin(&s).arg(&top).arg(s.url("dst/")).output();
    assert_ok(&o);
    let n = assert_same_tree(&top, &root.path().join("dst/odd"));
    assert_eq!(n, 1 + 2 + 1 + names.len() + 1 + 2 + 1);
});

both_transports!(a_daemon_serves_pulls_when_allowed_and_never_through_a_symlink, |t| {
    let base = TempDir::new("dpull");
    let root = base.path().join("root");
    let tree = root.join("data");
    fs::create_dir_all(tree.join("sub/empty")).unwrap();
    write_random(&tree.join("big.bin"), (20 << 20) + 7, 9);
    fs::write(tree.join("sub/small"), b"small").unwrap();
    fs::write(base.path().join("secret"), b"outside the root").unwrap();
    symlink(base.path().join("secret"), tree.join("link-out")).unwrap();
    symlink(base.path(), root.join("dir-out")).unwrap();
    let out = base.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let s = Server::start(&t, &root, &["--allow-pull"]);

    // A tree, into a directory; a link inside it arrives as a link, not as what it names.
    let o = Gfast::pull(&t).pin(&s).args([s.url("data").as_str(), &format!("{}/", out.display())]).output();
    assert_ok(&o);
    assert_eq!(assert_same_tree(&tree, &out.join("data")), 1 + 2 + 1 + 2);
    assert!(fs::symlink_metadata(out.join("data/link-out")).unwrap().file_type().is_symlink());
    // A file, to a new name.
    let o = Gfast::pull(&t)
        .pin(&s)
        .args([s.url("data/sub/small").as_str(), out.join("renamed").to_str().unwrap()])
        .output();
    assert_ok(&o);
    assert_eq!(fs::read(out.join("renamed")).unwrap(), b"small");

    // Refused in one line, nothing written: a missing source, a symlink, a path
    // through a symlinked directory, '..', a wrong token.
    let before = list_tree(&out);
    for (src, code, says) in [
        ("nothing-here", 2, "does not exist"),
        ("data/link-out", 2, "symlink"),
        ("dir-out/secret", 2, "symlink"),
        ("data/../../secret", 2, "'..'"),
    ] {
        let o = Gfast::pull(&t).pin(&s).args([s.url(src).as_str(), &format!("{}/", out.display())]).output();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{src}: {e}");
        assert!(e.contains(says), "{src}: {e}");
        assert_eq!(e.lines().filter(|l| l.contains("error")).count(), 1, "{src}: one error line: {e}");
    }
    // A tree onto a local file: the sending daemon says why, the file stays.
    let o = Gfast::pull(&t).pin(&s).args([s.url("data").as_str(), out.join("renamed").to_str().unwrap()]).output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a file, not a directory"), "{}", stderr(&o));
    assert_eq!(fs::read(out.join("renamed")).unwrap(), b"small");
    let o = Gfast::pull(&t).pin(&s).arg(s.url("data")).arg(&out).env("GFAST_TOKEN", "not-the-token").output();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(list_tree(&out), before, "a refused pull wrote something");
    assert!(s.stop().lines().all(|l| !l.contains("panic")));

    // A daemon started without --allow-pull says how to allow it.
    let s = Server::start(&t, &root, &[]);
    let o = Gfast::pull(&t).pin(&s).args([s.url("data").as_str(), &format!("{}/", out.display())]).output();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--allow-pull"), "{}", stderr(&o));
    assert_eq!(list_tree(&out), before);
    drop(s);

    // A --read-only daemon serves pulls and refuses every push, writing nothing.
    let s = Server::start(&t, &root, &["--read-only"]);
    let o =
        Gfast::pull(&t).pin(&s).args([s.url("data/sub/small").as_str(), out.join("again").to_str().unwrap()]).output();
    assert_ok(&o);
    assert_eq!(fs::read(out.join("again")).unwrap(), b"small");
    let before = list_tree(&root);
    let o = Gfast::push(&t).pin(&s).arg(out.join("again")).arg(s.url("data/")).output();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("only serves pulls"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().filter(|l| l.contains("error")).count(), 1, "{}", stderr(&o));
    assert_eq!(list_tree(&root), before, "a read-only daemon's root changed");
});

both_transports!(compressed_chunks_arrive_exact_and_smaller_on_the_wire, |t| {
    let base = TempDir::new("zip");
    let top = base.path().join("data");
    fs::create_dir_all(top.join("sub")).unwrap();
    // Log-like text over several chunks and blocks (the last ones short), random
    // bytes that do not compress, an empty and a tiny file.
    let mut g = Gen(5);
    let mut text = Vec::new();
    while text.len() < (7 << 20) + 12_345 {
        text.extend_from_slice(
            format!("2026-11-22 host-{} GET /api/items/{} 200\n", g.next() % 40, g.next() % 5000).as_bytes(),
        );
    }
    fs::write(top.join("app.log"), &text).unwrap();
    write_random(&top.join("sub/random.bin"), (5 << 20) + 3, 8);
    fs::write(top.join("empty"), b"").unwrap();
    fs::write(top.join("sub/tiny"), b"x").unwrap();
    let root = base.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let s = Server::start(&t, &root, &["--allow-pull"]);

    let push = |dest: &str, corrupt: Option<&str>| {
        let mut c = Gfast::push(&t).pin(&s).args(["-z", "--json", "--chunk-size", "3M"]).arg(&top).arg(s.url(dest));
        if let Some(n) = corrupt {
            c = c.env("GFAST_FAULT_CORRUPT_EVERY", n);
        }
        c.output()
    };
    let o = push("a/", None);
    assert_ok(&o);
    assert_same_tree(&top, &root.join("a/data"));
    let j = parse_json(&o);
    let (raw, wire) = (j["bytes_sent"].as_u64().unwrap(), j["bytes_compressed"].as_u64().unwrap());
    assert_eq!(raw, text.len() as u64 + (5 << 20) + 3 + 1);
    // The text shrinks; the random bytes go as they are (plus block headers).
    assert!(wire < raw - (4 << 20), "compressed {wire} of {raw} bytes");
    assert!(wire > (5 << 20), "random data cannot shrink: {wire}");

    // Corrupted on the wire after hashing: detected, sent again, exact.
    let o = push("b/", Some("2"));
    assert_ok(&o);
    assert!(parse_json(&o)["retransmitted_chunks"].as_u64().unwrap() > 0);
    assert_same_tree(&top, &root.join("b/data"));

    // Pulled compressed from the daemon.
    let out = base.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let o = Gfast::pull(&t)
        .pin(&s)
        .args(["-z", "--json", "--chunk-size", "3M", &s.url("a/data"), &format!("{}/", out.display())])
        .output();
    assert_ok(&o);
    assert_eq!(parse_json(&o)["bytes_compressed"].as_u64().unwrap(), wire, "the puller counts what arrived");
    assert_same_tree(&top, &out.join("data"));

    // A compressed chunk is held whole by the sender: big chunks are refused first.
    let o = Gfast::push(&t).pin(&s).args(["-z", "--chunk-size", "32M"]).arg(&top).arg(s.url("d/")).output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--chunk-size 16M or less"), "{}", stderr(&o));
    assert!(!root.join("d").exists());

    // Without -z nothing is compressed.
    let o = Gfast::push(&t).pin(&s).arg("--json").arg(&top).arg(s.url("c/")).output();
    assert_ok(&o);
    assert!(parse_json(&o)["bytes_compressed"].is_null());
});

both_transports!(delta_sends_only_the_chunks_that_changed, |t| {
    let base = TempDir::new("delta");
    let src = base.path().join("src");
    let root = base.path().join("root");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&root).unwrap();
    let (a, b, c) = (src.join("grows.bin"), src.join("shrinks.bin"), src.join("new.bin"));
    write_random(&a, (12 << 20) + 5, 1);
    write_random(&b, 9 << 20, 2);
    let s = Server::start(&t, &root, &["--allow-pull"]);
    let push = |args: &[&str]| {
        Gfast::push(&t)
            .pin(&s)
            .args(["--delta", "--chunk-size", "1M", "--json"])
            .args(args)
            .arg(&src)
            .arg(s.url(""))
            .output()
    };
    assert_ok(&Gfast::push(&t).pin(&s).arg(&src).arg(s.url("")).output());
    // Three bytes changed in one chunk of the first file, 1 MiB appended; the
    // second cut to 5 MiB and one byte changed; a new file.
    let mut f = fs::OpenOptions::new().write(true).open(&a).unwrap();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(5_000_000)).unwrap();
    f.write_all(b"XYZ").unwrap();
    f.seek(std::io::SeekFrom::End(0)).unwrap();
    f.write_all(&Gen(3).bytes(1 << 20)).unwrap();
    drop(f);
    let mut old = fs::read(&b).unwrap();
    old.truncate(5 << 20);
    old[4 << 20] ^= 0xff;
    fs::write(&b, &old).unwrap();
    write_random(&c, 3 << 20, 4);
    for args in [&[][..], &["-z"][..]] {
        let o = push(args);
        assert_ok(&o);
        assert_same_tree(&src, &root.join("src"));
        let j = parse_json(&o);
        let (sent, same) = (j["bytes_sent"].as_u64().unwrap(), j["bytes_unchanged"].as_u64().unwrap());
        if args.is_empty() {
            // Sent: the changed chunk of each file, the appended MiB and its
            // partial neighbour, and the new file; everything else stayed.
            assert!(sent <= (1 << 20) + (2 << 20) + 5 + (1 << 20) + (3 << 20), "sent {sent}");
            assert_eq!(sent + same, (13 << 20) + 5 + (5 << 20) + (3 << 20));
        } else {
            // Nothing changed since: only the short last chunk of a file is sent
            // (delta lists whole chunks only).
            assert_eq!(sent, 5, "{j}");
        }
    }
    // A daemon that does not let token holders read does not take delta: the
    // push says so and sends everything.
    let s2 = Server::start(&t, &base.path().join("root"), &[]);
    let o = Gfast::push(&t).pin(&s2).args(["--delta", "--json"]).arg(&src).arg(s2.url("")).output();
    assert_ok(&o);
    assert!(stderr(&o).contains("changed files go whole"), "{}", stderr(&o));
    assert_eq!(parse_json(&o)["bytes_unchanged"], 0);
    drop(s2);
    // Pulled back with --delta into a copy that differs in one chunk.
    let out = base.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let mut stale = fs::read(&a).unwrap();
    stale[100] ^= 1;
    fs::write(out.join("grows.bin"), &stale).unwrap();
    let o = Gfast::pull(&t)
        .pin(&s)
        .args(["--delta", "--chunk-size", "1M", &s.url("src/grows.bin"), out.to_str().unwrap()])
        .output();
    assert_ok(&o);
    assert_same_file(&a, &out.join("grows.bin"));
    assert_eq!(list_tree(&out), vec![out.join("grows.bin")]);
});

both_transports!(three_hundred_level_deep_tree, |t| {
    let src = TempDir::new("deep-src");
    let root = TempDir::new("deep-root");
    let top = src.path().join("deep");
    let mut p = top.clone();
    for i in 0..300 {
        p = p.join(format!("l{i}"));
    }
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("bottom.txt"), b"the bottom").unwrap();
    fs::write(top.join("l0/l1/mid.txt"), b"the middle").unwrap();
    let s = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t).pin(&s).arg(&top).arg(s.url("")).output();
    assert_ok(&o);
    assert_eq!(assert_same_tree(&top, &root.path().join("deep")), 1 + 300 + 2);
});

both_transports!(several_sources_land_side_by_side_with_cp_semantics, |t| {
    let src = TempDir::new("multi-src");
    let root = TempDir::new("multi-root");
    let a = src.path().join("a.txt");
    fs::write(&a, b"file a").unwrap();
    let d = src.path().join("dir");
    fs::create_dir_all(d.join("sub")).unwrap();
    fs::write(d.join("sub/b.txt"), b"file b").unwrap();
    let s = Server::start(&t, root.path(), &[]);

    // Into a directory that does not exist yet: the trailing slash creates it.
    assert_ok(&Gfast::push(&t).pin(&s).arg(&a).arg(&d).arg(s.url("x/y/")).output());
    assert_same_file(&a, &root.path().join("x/y/a.txt"));
    assert_same_tree(&d, &root.path().join("x/y/dir"));

    // Into an existing directory without the slash: same thing.
    assert_ok(&Gfast::push(&t).pin(&s).arg(&a).arg(s.url("x")).output());
    assert_same_file(&a, &root.path().join("x/a.txt"));

    // One file to a new name: it takes that name. Then overwrite it.
    assert_ok(&Gfast::push(&t).pin(&s).arg(&a).arg(s.url("renamed.txt")).output());
    assert_same_file(&a, &root.path().join("renamed.txt"));
    fs::write(&a, b"newer content").unwrap();
    assert_ok(&Gfast::push(&t).pin(&s).arg(&a).arg(s.url("renamed.txt")).output());
    assert_eq!(fs::read(root.path().join("renamed.txt")).unwrap(), b"newer content");

    // One directory to a new name: its contents land under that name.
    assert_ok(&Gfast::push(&t).pin(&s).arg(&d).arg(s.url("copy")).output());
    assert_same_tree(&d, &root.path().join("copy"));

    // Several sources to a missing path without slash: refused, nothing written.
    let o = Gfast::push(&t).pin(&s).arg(&a).arg(&d).arg(s.url("nope")).output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("end it with '/'"), "{}", stderr(&o));
    assert!(!root.path().join("nope").exists());

    // A directory onto an existing file: refused.
    let o = Gfast::push(&t).pin(&s).arg(&d).arg(s.url("renamed.txt")).output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a file"), "{}", stderr(&o));
});

both_transports!(wrong_token_is_refused_and_nothing_is_written, |t| {
    let src = TempDir::new("tok-src");
    let root = TempDir::new("tok-root");
    let f = src.path().join("f");
    fs::write(&f, b"secret data").unwrap();
    let s = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t).pin(&s).arg(&f).arg(s.url("")).env("GFAST_TOKEN", "not-the-token").output();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("refused the token"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    assert!(list_tree(root.path()).is_empty());

    // No token at all: a clear usage error before any connection.
    let o = Gfast::push(&t).pin(&s).arg(&f).arg(s.url("")).env_remove("GFAST_TOKEN").output();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--token-file"), "{}", stderr(&o));
    // The server says why it refused, once: the lanes that connected while
    // AUTH was on its way are ended cleanly, not left to look broken.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = s.stop();
    assert_eq!(log.matches("wrong token").count(), 1, "{log}");
    assert!(!log.contains("without a clean"), "{log}");
});

both_transports!(paths_outside_the_root_are_refused_and_nothing_is_written_outside, |t| {
    let base = TempDir::new("escape");
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    symlink(&outside, root.join("link-out")).unwrap();
    let src = TempDir::new("escape-src");
    let f = src.path().join("payload");
    fs::write(&f, b"must not escape").unwrap();
    let s = Server::start(&t, &root, &[]);

    for dest in ["../outside/", "a/../../outside/", "link-out/", "link-out/sub/x"] {
        let o = Gfast::push(&t).pin(&s).arg(&f).arg(s.url(dest)).output();
        assert!(!o.status.success(), "{dest} must be refused");
        let e = stderr(&o);
        assert!(e.contains("symlink") || e.contains("'..'"), "{dest}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    }
    assert!(list_tree(&outside).is_empty(), "something was written outside the root");
    assert_eq!(list_tree(&root), vec![root.join("link-out")]);
});

both_transports!(server_killed_mid_transfer_gives_a_clean_error_and_no_final_file, |t| {
    let src = TempDir::new("kill-src");
    let root = TempDir::new("kill-root");
    let f = src.path().join("huge");
    // Sparse: quick to make and to read, slow enough to write on the other side
    // with its zeros sent as data (--no-sparse).
    fs::File::create(&f).unwrap().set_len(8 << 30).unwrap();
    // An older version already sits at the destination: it must survive intact.
    fs::create_dir_all(root.path().join("in")).unwrap();
    fs::write(root.path().join("in/huge"), b"the old version").unwrap();
    let s = Server::start(&t, root.path(), &[]);
    let child = Gfast::push(&t)
        .pin(&s)
        .args(["--json", "--no-sparse"])
        .arg(&f)
        .arg(s.url("in/"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    // Wait until data is flowing into the temporary file, then kill the server.
    let t0 = Instant::now();
    loop {
        let part = fs::read_dir(root.path().join("in"))
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().as_bytes().ends_with(b".part"));
        if part.is_some() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "transfer never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    let _ = s.stop();
    let t1 = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(t1.elapsed() < Duration::from_secs(60), "the client noticed the dead server");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("lost mid-transfer") || e.contains("closed the connection"), "{e}");
    let j = parse_json(&o);
    assert!(j["error"].is_string() && j["bytes_sent"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(fs::read(root.path().join("in/huge")).unwrap(), b"the old version");
});

both_transports!(discard_mode_verifies_and_writes_nothing, |t| {
    let src = TempDir::new("discard-src");
    let root = TempDir::new("discard-root");
    write_random(&src.path().join("a"), 20 << 20, 3);
    fs::create_dir(src.path().join("d")).unwrap();
    let s = Server::start(&t, root.path(), &["--discard"]);
    let o = Gfast::push(&t).pin(&s).arg("--json").arg(src.path()).arg(s.url("x/")).output();
    assert_ok(&o);
    assert_eq!(parse_json(&o)["bytes_sent"], 20u64 << 20);
    assert!(list_tree(root.path()).is_empty());
});

both_transports!(corrupted_chunks_are_detected_resent_and_the_file_is_exact, |t| {
    let src = TempDir::new("corrupt-src");
    let root = TempDir::new("corrupt-root");
    let f = src.path().join("f");
    write_random(&f, 50 << 20, 9);
    let s = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t)
        .pin(&s)
        .args(["--json", "--chunk-size", "1M"])
        .arg(&f)
        .arg(s.url(""))
        .env("GFAST_FAULT_CORRUPT_EVERY", "5")
        .output();
    assert_ok(&o);
    assert_same_file(&f, &root.path().join("f"));
    assert_eq!(parse_json(&o)["retransmitted_chunks"], 10, "every 5th of 50 chunks was corrupted once");
});

both_transports!(bad_sources_and_unreachable_servers_give_one_line_errors, |t| {
    let root = TempDir::new("err-root");
    let s = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t).pin(&s).args(["/nonexistent/gfast-source", &s.url("")]).output();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read source '/nonexistent/gfast-source'"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1);

    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let o = Gfast::push(&t).pin(&s).args(["Cargo.toml".to_string(), format!("gfast://127.0.0.1:{port}/x")]).output();
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("cannot reach 127.0.0.1"), "{}", stderr(&o));

    // A gfast URL with one slash is not a local path named "gfast:".
    let o = Gfast::push(&t).pin(&s).args(["Cargo.toml", "gfast:/127.0.0.1/x"]).output();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("gfast://HOST"), "{}", stderr(&o));
    // A local path is a local copy (no daemon); its parent must exist.
    let local = TempDir::new("local-dest");
    let o = Gfast::push(&t).args(["Cargo.toml".into(), local.path().join("copied.toml")]).output();
    assert_ok(&o);
    assert_same_file(Path::new("Cargo.toml"), &local.path().join("copied.toml"));
    let o = Gfast::push(&t).args(["Cargo.toml".into(), local.path().join("missing/deeper/x")]).output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Bad chunk size.
    let o = Gfast::push(&t).pin(&s).args(["--chunk-size", "1K", "Cargo.toml", &s.url("")]).output();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("64K to 1G"), "{}", stderr(&o));

    // serve with a missing root.
    let o = Gfast::serve(&t).args(["--root", "/nonexistent/root", "--listen", "127.0.0.1:0"]).output();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("create it first"), "{}", stderr(&o));
});

both_transports!(malformed_input_ends_the_session_not_the_daemon, |t| {
    let src = TempDir::new("fuzz-src");
    let root = TempDir::new("fuzz-root");
    let mut s = Server::start(&t, root.path(), &[]);
    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0x12, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], // FILE claiming 4 GiB
        vec![0x01, 0, 0, 0, 0, 0, 0, 4, b'G', b'F'], // HELLO cut short
        vec![0x05, 0, 0, 0, 0, 0, 0, 0x32].into_iter().chain([0u8; 0x32]).collect(), // JOIN to no session
        (0..4096).map(|i| (i * 31 % 251) as u8).collect(),
    ];
    for g in &garbage {
        let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = c.write_all(g);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
    }
    assert!(s.is_alive(), "the daemon died on malformed input");
    let f = src.path().join("after");
    fs::write(&f, b"still serving").unwrap();
    assert_ok(&Gfast::push(&t).pin(&s).arg(&f).arg(s.url("")).output());
    assert_eq!(fs::read(root.path().join("after")).unwrap(), b"still serving");
});

both_transports!(a_full_disk_gives_a_clear_error_and_leaves_no_file, |t| {
    if !is_root() {
        eprintln!("SKIP a_full_disk_gives_a_clear_error_and_leaves_no_file: needs root to mount a small tmpfs");
        return;
    }
    let base = TempDir::new("full");
    let mnt = base.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "gfast-test"]).arg(&mnt).status();
    if !st.map(|s| s.success()).unwrap_or(false) {
        eprintln!("SKIP a_full_disk_gives_a_clear_error_and_leaves_no_file: cannot mount tmpfs here");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(&mnt);
    let src = TempDir::new("full-src");
    let f = src.path().join("too-big");
    write_random(&f, 16 << 20, 5);
    // 12 MiB of the 24 are taken: the 16 MiB file does not fit.
    let filler = mnt.join("filler");
    write_random(&filler, 12 << 20, 4);
    let s = Server::start(&t, &mnt, &[]);
    let o = Gfast::push(&t).pin(&s).arg(&f).arg(s.url("")).output();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("destination is full"), "{}", stderr(&o));
    assert_eq!(list_tree(&mnt), vec![filler.clone()], "nothing left behind");
    // Space freed: the same push, resumed, completes.
    fs::remove_file(&filler).unwrap();
    assert_ok(&Gfast::push(&t).pin(&s).arg("--resume").arg(&f).arg(s.url("")).output());
    assert_same_file(&f, &mnt.join("too-big"));
    // Another file goes through afterwards.
    let small = src.path().join("fits");
    write_random(&small, 1 << 20, 6);
    assert_ok(&Gfast::push(&t).pin(&s).arg(&small).arg(s.url("")).output());
    assert_same_file(&small, &mnt.join("fits"));
});

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// No transfer: the same over both (kept as both, as each of the former two
// binaries ran it).
both_transports!(bench_names_the_slowest_stage, |_t| {
    let dir = TempDir::new("bench");
    let o = Gfast::new("bench").args(["--size", "64M", "--dir"]).arg(dir.path()).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let rates: Vec<f64> = out
        .lines()
        .filter(|l| l.trim_end().ends_with("GB/s"))
        .map(|l| l.split_whitespace().rev().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(rates.len(), 6, "{out}");
    assert!(rates.iter().all(|&r| r > 0.0), "{out}");
    assert!(out.contains("verdict: "), "{out}");
    assert!(list_tree(dir.path()).is_empty(), "the benchmark cleans up after itself");
});

both_transports!(both_write_paths_store_the_same_bytes, |t| {
    let src = TempDir::new("io-src");
    let f = src.path().join("f.bin");
    // 4 MiB chunks of four 1 MiB pieces, several in flight per lane, a short tail.
    write_random(&f, (26 << 20) + 777, 11);
    // The third run also syncs every file before its rename (--fsync).
    for (io, extra) in [("pwrite", None), ("uring", None), ("uring", Some("--fsync"))] {
        let root = TempDir::new(&format!("io-root-{io}"));
        let mut flags = vec!["--io", io];
        flags.extend(extra);
        let s = Server::start(&t, root.path(), &flags);
        let args = ["-n", "2", "--chunk-size", "4M"];
        let o = Gfast::push(&t).pin(&s).args(args).arg(&f).arg(s.url("")).output();
        assert_ok(&o);
        assert_same_file(&f, &root.path().join("f.bin"));
        assert_eq!(list_tree(root.path()), vec![root.path().join("f.bin")]);
        let err = s.stop();
        if err.contains("io_uring is not available") {
            assert_eq!(io, "uring", "{err}");
            eprintln!("SKIP io_uring half (the pwrite fallback ran instead): {err}");
        }
    }
});

// --rate paces TCP streams (QUIC refuses it: quic_refuses_flags_that_only_mean_something_over_tcp).
tcp_test!(rate_paces_every_stream_at_its_share, |t| {
    let src = TempDir::new("rate-src");
    let root = TempDir::new("rate-root");
    let f = src.path().join("f.bin");
    write_random(&f, 6 << 20, 12);
    let s = Server::start(&t, root.path(), &[]);
    let args = ["-n", "2", "--chunk-size", "1M", "--rate", "40M", "--json"];
    let o = Gfast::push(&t).pin(&s).args(args).arg(&f).arg(s.url("")).output();
    assert_ok(&o);
    assert_same_file(&f, &root.path().join("f.bin"));
    let j = parse_json(&o);
    let caps: Vec<u64> = j["tcp"].as_array().unwrap().iter().map(|t| t["max_pacing_rate"].as_u64().unwrap()).collect();
    // 40 Mbit/s over 2 streams: 2.5 MB/s each.
    assert_eq!(caps, vec![2_500_000, 2_500_000]);
    // A cap can only slow a transfer: 6 MiB at 5 MB/s cannot be much faster than 1.2 s.
    let bps = j["bytes_per_second"].as_f64().unwrap();
    assert!(bps < 5e6 * 1.3, "paced at 40 Mbit/s but moved {:.1} Mbit/s", bps * 8e-6);
    // Without --rate nothing is capped.
    let o = Gfast::push(&t).pin(&s).arg("--json").arg(&f).arg(s.url("again")).output();
    assert_ok(&o);
    assert!(parse_json(&o)["tcp"].as_array().unwrap().iter().all(|t| t["max_pacing_rate"].is_null()));
    // A rate that makes no sense is refused before anything starts.
    let o = Gfast::push(&t).pin(&s).args(["--rate", "fast"]).arg(&f).arg(s.url("x")).output();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bits per second"), "{}", stderr(&o));

    // A daemon paces what it sends to pulls with its own --rate.
    let s = Server::start(&t, src.path(), &["--allow-pull", "--rate", "40M"]);
    let out = TempDir::new("rate-out");
    let o = Gfast::pull(&t)
        .pin(&s)
        .args(["-n", "2", "--chunk-size", "1M", "--json", &s.url("f.bin"), out.path().to_str().unwrap()])
        .output();
    assert_ok(&o);
    assert_same_file(&f, &out.path().join("f.bin"));
    let bps = parse_json(&o)["bytes_per_second"].as_f64().unwrap();
    assert!(bps < 5e6 * 1.3, "the daemon paced at 40 Mbit/s but a pull moved {:.1} Mbit/s", bps * 8e-6);
    // Asking for a rate on the pulling side says where it belongs.
    let o = Gfast::pull(&t)
        .pin(&s)
        .args(["--rate", "40M", &s.url("f.bin"), out.path().join("g").to_str().unwrap()])
        .output();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("its own --rate"), "{}", stderr(&o));
});

both_transports!(json_names_the_transport_and_what_it_saw, |t| {
    let src = TempDir::new("tr-src");
    let root = TempDir::new("tr-root");
    let f = src.path().join("f.bin");
    write_random(&f, 3 << 20, 13);
    let s = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t).pin(&s).arg("--json").arg(&f).arg(s.url("")).output();
    assert_ok(&o);
    assert_same_file(&f, &root.path().join("f.bin"));
    let j = parse_json(&o);
    // The first chunk went out after the handshakes and before the end.
    let (setup, first, secs) = (
        j["setup_seconds"].as_f64().unwrap(),
        j["first_byte_seconds"].as_f64().unwrap(),
        j["seconds"].as_f64().unwrap(),
    );
    assert!(0.0 < setup && setup <= first && first < secs, "setup {setup}, first byte {first}, run {secs} s");
    let data_rate = j["data_bytes_per_second"].as_f64().unwrap();
    assert!(data_rate >= j["bytes_per_second"].as_f64().unwrap(), "{j}");
    if t.is_quic() {
        assert_eq!(j["transport"], "quic");
        let q = &j["quic"];
        assert!(q["sent_packets"].as_u64().unwrap() > 0, "{q}");
        assert!(q["mtu"].as_u64().unwrap() >= 1200, "{q}");
        assert!(j["tcp"].as_array().unwrap().is_empty(), "no TCP lanes over QUIC");
        assert_eq!(j["encrypted"], true);
    } else {
        assert_eq!(j["transport"], "tcp");
        assert!(j["quic"].is_null());
        assert_eq!(j["tcp"].as_array().unwrap().len(), j["streams"].as_u64().unwrap() as usize);
    }
});

// Every push here is a QUIC push, refused before it connects: the same in both
// runs (kept as both, as each of the former two binaries ran it).
both_transports!(quic_refuses_flags_that_only_mean_something_over_tcp, |_t| {
    let src = TempDir::new("qf-src");
    let f = src.path().join("f");
    fs::write(&f, b"x").unwrap();
    for (flags, says) in [
        (&["--no-encrypt"][..], "QUIC always encrypts"),
        (&["--tunnel"][..], "an ssh tunnel carries TCP only"),
        (&["--rate", "100M"][..], "pacing applies to TCP streams"),
        (&["--buffer", "4M"][..], "it sizes TCP sockets"),
    ] {
        let o = Gfast::push(&Transport::Quic).args(flags).arg(&f).arg("gfast://127.0.0.1:9/").output();
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(says) && e.contains("--transport tcp"), "{flags:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    }
});
