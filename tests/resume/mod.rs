//! Resume after SIGKILL of either side at random points: every loop ends with a
//! byte-identical tree, and what is sent again stays within what can be in
//! flight at a kill.

use crate::util::*;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

const CHUNK: u64 = 1 << 20;
const STREAMS: u64 = 2;
/// Per kill, what may be lost and sent again: each lane's window (2 chunks and
/// 4 MiB), the journal's commit group for each of two files being written (32 MiB),
/// and the small files whose single chunk was not yet committed.
fn lost_bound(small_bytes: u64) -> u64 {
    STREAMS * (2 * CHUNK + (4 << 20)) + 2 * (32 << 20) + small_bytes
}

fn seed() -> u64 {
    std::env::var("GFAST_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_2026)
}

both_transports!(sigkill_loop_resumes_to_an_identical_tree, |t| {
    let seed = seed();
    eprintln!("kill loop seed: {seed} (rerun with GFAST_KILL_SEED={seed})");
    let mut rng = Gen(seed);
    let src = TempDir::new("kill-src");
    let root = TempDir::new("kill-root");
    let keydir = TempDir::new("kill-key");
    let tree = src.path().join("data");
    fs::create_dir_all(tree.join("small/empty")).unwrap();
    let mut total = 0u64;
    for i in 0..3 {
        let n = (40 << 20) + (rng.next() % (16 << 20));
        write_random(&tree.join(format!("big{i}")), n, seed + i);
        total += n;
    }
    let mut small = 0u64;
    for i in 0..200 {
        let n = rng.next() % 8192;
        fs::write(tree.join(format!("small/f{i}")), rng.bytes(n as usize)).unwrap();
        small += n;
    }
    total += small;

    let keyfile = keydir.path().join("server.key");
    let start_server =
        |addr: &str| Server::start_keyed(&t, root.path(), addr, (&keyfile, TempDir::new("unused-key")), &[]);
    let mut server = start_server(&stable_addr());
    let addr = server.addr.clone();
    let key = server.key.clone();
    let mut sent_total = 0u64;
    let mut expected_total = total;
    let mut kills = 0;
    let mut receiver_kills = 0;
    // Over QUIC each receiver kill costs the idle timeout (no RST tells the
    // sender): fewer kills keep the loop within its time.
    let wanted = if t.is_quic() { 8 } else { 20 };
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(300), "the loop took too long");
        let mut push = Gfast::push(&t)
            .args(["--resume", "--json", "-q", "--chunk-size", "1M", "-n", &STREAMS.to_string()])
            .fingerprint(&key)
            .arg(&tree)
            .arg(format!("gfast://{addr}/"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let kill_now = kills < wanted;
        let kill_receiver = kill_now && rng.next() % 3 != 0;
        if kill_now {
            std::thread::sleep(Duration::from_millis(20 + rng.next() % 200));
            if kill_receiver {
                let _ = server.child.kill();
                let _ = server.child.wait();
            } else {
                let _ = push.kill();
            }
        }
        let o = push.wait_with_output().unwrap();
        let done = o.status.success();
        if kill_now && !done {
            kills += 1;
            receiver_kills += kill_receiver as u32;
        }
        // A killed push prints nothing; a push whose server died reports its counters.
        if let Some(line) = String::from_utf8_lossy(&o.stdout).lines().find(|l| l.starts_with('{')) {
            let j: serde_json::Value = serde_json::from_str(line).unwrap();
            sent_total += j["bytes_sent"].as_u64().unwrap();
        }
        if kill_receiver {
            server = start_server(&addr);
        }
        if done {
            assert_eq!(assert_same_tree(&tree, &root.path().join("data")), 1 + 3 + 1 + 1 + 200);
            if kills >= wanted {
                break;
            }
            // Finished before enough kills: start the same job over from nothing.
            fs::remove_dir_all(root.path().join("data")).unwrap();
            expected_total += total;
        }
    }
    eprintln!("{kills} kills ({receiver_kills} of the receiver)");
    // No partial file or journal is left behind once everything is in place.
    let leftovers: Vec<_> = list_tree(root.path())
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".gfast-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // What was sent again after receiver kills stays within what can be in flight
    // at each kill. (Sender kills print no counters, so only runs that reported
    // are counted: the bound is checked on those.)
    let resent = sent_total.saturating_sub(expected_total);
    eprintln!("payload {expected_total} bytes, sent {sent_total} in reported runs, re-sent {resent}");
    assert!(
        resent <= receiver_kills as u64 * lost_bound(small),
        "re-sent {resent} bytes over {receiver_kills} receiver kills; bound {} each",
        lost_bound(small)
    );
});

both_transports!(jobs_are_listed_and_resumed_by_id, |t| {
    let src = TempDir::new("jobs-src");
    let root = TempDir::new("jobs-root");
    let store = TempDir::new("jobs-store");
    let f = src.path().join("big");
    write_random(&f, 256 << 20, 21);
    let keydir = TempDir::new("jobs-key");
    let keyfile = keydir.path().join("server.key");
    let mut s = Server::start_keyed(&t, root.path(), &stable_addr(), (&keyfile, TempDir::new("k1")), &[]);
    // `gfast jobs` and `gfast resume` with the test's job store.
    let gf =
        |verb: &'static str, args: &[&str]| Gfast::new(verb).args(args).env("GFAST_JOBS_DIR", store.path()).output();
    // A push whose server dies halfway.
    let push = Gfast::push(&t)
        .args(["--chunk-size", "1M", "-n", "2"])
        .pin(&s)
        .arg(&f)
        .arg(s.url(""))
        .env("GFAST_JOBS_DIR", store.path())
        .stderr(Stdio::piped())
        .spawn();
    let t0 = Instant::now();
    while !fs::read_dir(root.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".jrnl")) {
        assert!(t0.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = s.child.kill();
    let _ = s.child.wait();
    let o = push.wait_with_output().unwrap();
    let e = stderr(&o);
    let id = e.split("resume with: gfast resume ").nth(1).map(|r| r.split(')').next().unwrap().to_string());
    let listed = gf("jobs", &[]);
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(!o.status.success(), "the server was killed mid-transfer");
    let id = id.unwrap_or_else(|| panic!("push printed its job id: {e}"));
    assert!(listing.contains("failed") && listing.contains(&id), "{listing}");

    // Same address, same key: resume by id sends only what is missing.
    let _s2 = Server::start_keyed(&t, root.path(), &s.addr, (&keyfile, TempDir::new("k2")), &[]);
    let o = gf("resume", &[&id]);
    assert_ok(&o);
    assert_same_file(&f, &root.path().join("big"));
    let listing = String::from_utf8_lossy(&gf("jobs", &[]).stdout).into_owned();
    assert!(listing.contains("done"), "{listing}");
    assert_eq!(String::from_utf8_lossy(&gf("jobs", &["--prune"]).stdout).trim(), "removed 1 finished job(s)");
    assert!(String::from_utf8_lossy(&gf("jobs", &[]).stdout).trim().is_empty());
    let o = gf("resume", &["ffff"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("gfast jobs"), "{}", stderr(&o));
});

both_transports!(a_source_changed_since_the_interruption_starts_over_with_a_note, |t| {
    let src = TempDir::new("chg-src");
    let root = TempDir::new("chg-root");
    let keydir = TempDir::new("chg-key");
    let keyfile = keydir.path().join("server.key");
    let f = src.path().join("f");
    // Sparse, its zeros sent as data (--no-sparse) so the push lasts long enough to be cut.
    fs::File::create(&f).unwrap().set_len(512 << 20).unwrap();
    let mut s = Server::start_keyed(&t, root.path(), &stable_addr(), (&keyfile, TempDir::new("k1")), &[]);
    let push =
        Gfast::push(&t).pin(&s).args(["-q", "--no-sparse"]).arg(&f).arg(s.url("")).stderr(Stdio::piped()).spawn();
    let t0 = Instant::now();
    while !fs::read_dir(root.path()).unwrap().any(|e| {
        let e = e.unwrap();
        e.file_name().to_string_lossy().ends_with(".jrnl") && e.metadata().unwrap().len() > 100
    }) {
        assert!(t0.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = s.child.kill();
    let _ = s.child.wait();
    assert!(!push.wait_with_output().unwrap().status.success());
    // The source changes before the resume.
    write_random(&f, 3 << 20, 77);
    let s2 = Server::start_keyed(&t, root.path(), &s.addr, (&keyfile, TempDir::new("k2")), &[]);
    let o = Gfast::push(&t).pin(&s2).args(["--resume", "--json"]).arg(&f).arg(s2.url("")).output();
    assert_ok(&o);
    assert!(stderr(&o).contains("changed since the interrupted transfer"), "{}", stderr(&o));
    assert_eq!(parse_json(&o)["bytes_resumed"], 0);
    assert_same_file(&f, &root.path().join("f"));
    assert_eq!(list_tree(root.path()), vec![root.path().join("f")], "the old partial is gone");
});

both_transports!(a_push_refused_for_its_arguments_leaves_no_job, |t| {
    let src = TempDir::new("nojob-src");
    let store = TempDir::new("nojob-store");
    let f = src.path().join("f");
    fs::write(&f, b"x").unwrap();
    // No token anywhere: a usage error (exit 2) before anything is sent.
    let o = Gfast::push(&t)
        .arg(&f)
        .arg("gfast://127.0.0.1:9/")
        .env_remove("GFAST_TOKEN")
        .env("GFAST_JOBS_DIR", store.path())
        .output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no token"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "one line, no job id to resume: {}", stderr(&o));
    assert!(list_tree(store.path()).is_empty(), "nothing to resume, so no job: {:?}", list_tree(store.path()));
    // A push that got going and failed (nothing listening) is kept for a resume.
    let o = Gfast::push(&t)
        .args(["--timeout", "2"])
        .arg(&f)
        .arg("gfast://127.0.0.1:9/")
        .env("GFAST_JOBS_DIR", store.path())
        .output();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("resume with: gfast resume "), "{}", stderr(&o));
    assert_eq!(list_tree(store.path()).len(), 1, "{:?}", list_tree(store.path()));
});

both_transports!(a_daemon_pull_killed_midway_resumes_to_the_same_file, |t| {
    let base = TempDir::new("dpres");
    let root = base.path().join("root");
    let out = base.path().join("out");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&out).unwrap();
    let f = root.join("big");
    write_random(&f, 256 << 20, 33);
    let s = Server::start(&t, &root, &["--allow-pull"]);
    let pull = || {
        Gfast::pull(&t)
            .args(["--resume", "--chunk-size", "1M", "-n", "2"])
            .pin(&s)
            .arg(s.url("big"))
            .arg(format!("{}/", out.display()))
    };
    // The pulling end dies once part of the file is in (its journal has entries).
    let mut child = pull().stderr(Stdio::null()).spawn();
    let t0 = Instant::now();
    let journal = || {
        fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".jrnl"))
            .and_then(|p| fs::metadata(p).ok())
            .is_some_and(|m| m.len() > 64)
    };
    while !journal() {
        assert!(child.try_wait().unwrap().is_none(), "the pull ended before it could be interrupted");
        assert!(t0.elapsed() < Duration::from_secs(20), "no journal appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
    // Nothing under the final name yet: a partial file and its journal.
    assert!(!out.join("big").exists());
    assert!(list_tree(&out).iter().any(|p| p.to_string_lossy().ends_with(".part")), "{:?}", list_tree(&out));
    // Resumed: the same bytes, and nothing left beside them.
    let o = pull().output();
    assert_ok(&o);
    assert_same_file(&f, &out.join("big"));
    assert_eq!(list_tree(&out), vec![out.join("big")]);
});
