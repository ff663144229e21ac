//! ssh one-shot mode against a real OpenSSH server that the test starts on a
//! loopback port with generated host and user keys. Skipped, with a message, where
//! sshd is not installed (`.ci/run` installs it).

use crate::util::*;
use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

impl Sshd {
    /// Starts sshd, or says why the test is skipped.
    fn start(test: &str) -> Option<Sshd> {
        Self::start_with(test, "")
    }

    /// Starts sshd with extra sshd_config lines.
    fn start_with(test: &str, extra: &str) -> Option<Sshd> {
        if !Path::new(SSHD).exists() || Command::new("ssh").arg("-V").output().is_err() {
            eprintln!("SKIP {test}: OpenSSH (sshd, ssh) is not installed; .ci/run installs openssh-server");
            return None;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP {test}: sshd needs root to run here");
            return None;
        }
        let dir = TempDir::new("sshd");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        let _ = fs::create_dir_all("/run/sshd");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPrintMotd no\nAcceptEnv none\n{extra}\n",
            hk = d.join("host_key").display(),
            ak = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
        );
        fs::write(d.join("sshd_config"), cfg).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "sshd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Sshd { child, port, dir })
    }

    fn ssh_cmd(&self, key: &str) -> String {
        format!(
            "ssh -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
             -o LogLevel=ERROR",
            self.port,
            self.dir.path().join(key).display()
        )
    }
}

fn remote(p: &Path) -> String {
    format!("127.0.0.1:{}", p.display())
}

/// PIDs of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

fn wait_gone(needle: &str) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        if processes_with(needle).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

both_transports!(ssh_push_of_trees_and_odd_names, |t| {
    let Some(sshd) = Sshd::start("ssh_push_of_trees_and_odd_names") else { return };
    let src = TempDir::new("ssh-src");
    let dst = TempDir::new("ssh-dst");
    let tree = src.path().join("tree");
    fs::create_dir_all(tree.join("sub dir/empty")).unwrap();
    write_random(&tree.join("sub dir/big"), 20 << 20, 4);
    fs::write(tree.join("new\nline"), b"odd").unwrap();
    fs::write(tree.join("it's"), b"quote").unwrap();
    let single = src.path().join("single.txt");
    fs::write(&single, b"one file").unwrap();

    let o = Gfast::push(&t)
        .ssh(&sshd.ssh_cmd("user_key"))
        .arg("--json")
        .arg(&tree)
        .arg(&single)
        .arg(remote(dst.path()))
        .output();
    assert_ok(&o);
    assert_same_tree(&tree, &dst.path().join("tree"));
    assert_same_file(&single, &dst.path().join("single.txt"));
    let j = parse_json(&o);
    assert_eq!(j["encrypted"], true);

    // A new name under an existing directory, with a quote in the remote path.
    let odd = dst.path().join("it's new");
    let o = Gfast::push(&t).ssh(&sshd.ssh_cmd("user_key")).arg(&single).arg(remote(&odd)).output();
    assert_ok(&o);
    assert_eq!(fs::read(&odd).unwrap(), b"one file");
    assert!(wait_gone(&dst.path().display().to_string()), "a one-shot receiver outlived its session");
});

both_transports!(ssh_errors_are_clear, |t| {
    let Some(sshd) = Sshd::start("ssh_errors_are_clear") else { return };
    let src = TempDir::new("ssh-err-src");
    let f = src.path().join("f");
    fs::write(&f, b"x").unwrap();

    // Remote parent directory does not exist.
    let o = Gfast::push(&t).ssh(&sshd.ssh_cmd("user_key")).arg(&f).arg("127.0.0.1:/nonexistent/gfast/dir/x").output();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/gfast/dir"), "{}", stderr(&o));
    assert!(!Path::new("/nonexistent/gfast").exists());

    // No gfast at the remote command.
    let o = Gfast::push(&t)
        .args(["--ssh", &sshd.ssh_cmd("user_key"), "--remote-cmd", "/nonexistent/gfast"])
        .arg(&f)
        .arg(remote(src.path()))
        .env_remove("GFAST_TOKEN")
        .output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--remote-cmd"), "{}", stderr(&o));

    // A key the server does not accept.
    keygen(&sshd.dir.path().join("stranger"));
    let o = Gfast::push(&t).ssh(&sshd.ssh_cmd("stranger")).arg(&f).arg(remote(src.path())).output();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("ssh failed"), "{}", stderr(&o));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
});

both_transports!(killing_ssh_mid_transfer_ends_the_remote_and_leaves_no_final_file, |t| {
    let Some(sshd) = Sshd::start("killing_ssh_mid_transfer_ends_the_remote_and_leaves_no_final_file") else {
        return;
    };
    let src = TempDir::new("ssh-kill-src");
    let dst = TempDir::new("ssh-kill-dst");
    let f = src.path().join("huge");
    // Sparse: quick to make and read; 1 GiB so a resume afterwards is quick too.
    // Its zeros travel (--no-sparse), so the transfer lasts long enough to be cut.
    fs::File::create(&f).unwrap().set_len(1 << 30).unwrap();
    let push = Gfast::push(&t)
        .ssh(&sshd.ssh_cmd("user_key"))
        .arg("--no-sparse")
        .arg(&f)
        .arg(remote(dst.path()))
        .stderr(Stdio::piped())
        .spawn();
    let t0 = Instant::now();
    // Wait until the journal holds a few chunks (its header is < 100 bytes).
    let part = || {
        fs::read_dir(dst.path()).unwrap().filter_map(|e| e.ok()).any(|e| {
            e.file_name().to_string_lossy().ends_with(".jrnl") && e.metadata().map(|m| m.len() > 100).unwrap_or(false)
        })
    };
    while !part() {
        assert!(t0.elapsed() < Duration::from_secs(30), "transfer never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Kill the ssh client that push started.
    let ssh_pids: Vec<u32> = processes_with(&format!("-p {}", sshd.port))
        .into_iter()
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim() == "ssh").unwrap_or(false))
        .collect();
    assert!(!ssh_pids.is_empty(), "found the ssh process");
    for pid in &ssh_pids {
        // SAFETY: sending a signal to a PID we just found as our child's ssh.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    let o = push.wait_with_output().unwrap();
    assert!(!o.status.success(), "{}", stderr(&o));
    // The remote's own command line (the shell removed the quotes ssh was given).
    assert!(wait_gone(&format!("--oneshot --dest {}", dst.path().display())), "the remote receiver survived");
    assert!(!dst.path().join("huge").exists(), "no file under the final name");
    // What arrived stays, as a partial file with its journal, for --resume.
    let left: Vec<String> =
        list_tree(dst.path()).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|n| n.ends_with(".part")) && left.iter().any(|n| n.ends_with(".jrnl")), "{left:?}");

    // The same push with --resume, through a new ssh and a new one-shot receiver,
    // sends only what is missing (and, keeping holes now, describes the rest).
    let o = Gfast::push(&t)
        .ssh(&sshd.ssh_cmd("user_key"))
        .args(["--resume", "--json"])
        .arg(&f)
        .arg(remote(dst.path()))
        .output();
    assert_ok(&o);
    assert_same_file(&f, &dst.path().join("huge"));
    let j = parse_json(&o);
    assert!(j["bytes_resumed"].as_u64().unwrap() > 0, "{j}");
    let n = |k: &str| j[k].as_u64().unwrap();
    assert_eq!(n("bytes_resumed") + n("bytes_sent") + n("bytes_holes"), 1 << 30, "{j}");
    assert_eq!(n("bytes_sent"), 0, "what is missing is all hole: {j}");
});

both_transports!(ssh_pull_of_trees_and_files, |t| {
    let Some(sshd) = Sshd::start("ssh_pull_of_trees_and_files") else { return };
    let remote_side = TempDir::new("pull-remote");
    let local = TempDir::new("pull-local");
    let tree = remote_side.path().join("run42");
    fs::create_dir_all(tree.join("a/b/empty")).unwrap();
    write_random(&tree.join("a/big"), 24 << 20, 8);
    fs::write(tree.join("a/b/new\nline"), b"odd").unwrap();
    std::os::unix::fs::symlink("big", tree.join("a/link")).unwrap();

    // A tree into an existing directory.
    let o = Gfast::pull(&t).ssh(&sshd.ssh_cmd("user_key")).arg("--json").arg(remote(&tree)).arg(local.path()).output();
    assert_ok(&o);
    assert_same_tree(&tree, &local.path().join("run42"));
    let j = parse_json(&o);
    assert_eq!(j["encrypted"], true);
    assert_eq!(j["files"], 7);
    assert_eq!(j["transport"], t.name());
    // The ssh login counts in the set-up time, which is part of the whole run.
    let (setup, secs) = (j["setup_seconds"].as_f64().unwrap(), j["seconds"].as_f64().unwrap());
    assert!(setup > 0.0 && setup < secs, "setup {setup} s of a {secs} s run");
    let first = j["first_byte_seconds"].as_f64().unwrap();
    assert!(setup <= first && first < secs, "first byte at {first} s, setup {setup} s, run {secs} s");

    // One file to a new name.
    let o = Gfast::pull(&t)
        .ssh(&sshd.ssh_cmd("user_key"))
        .arg(remote(&tree.join("a/big")))
        .arg(local.path().join("copy.bin"))
        .output();
    assert_ok(&o);
    assert_same_file(&tree.join("a/big"), &local.path().join("copy.bin"));
    // Compressed: the one-shot sender compresses what the puller asked for.
    let o = Gfast::pull(&t)
        .ssh(&sshd.ssh_cmd("user_key"))
        .args(["-z", "--json"])
        .arg(remote(&tree.join("a/big")))
        .arg(local.path().join("z.bin"))
        .output();
    assert_ok(&o);
    // Random bytes go as they are, in blocks: a little more than the file.
    let wire = parse_json(&o)["bytes_compressed"].as_u64().unwrap();
    assert!(((24 << 20)..(24 << 20) + 4096).contains(&wire), "{wire}");
    assert_same_file(&tree.join("a/big"), &local.path().join("z.bin"));
    fs::remove_file(local.path().join("z.bin")).unwrap();

    // A source that does not exist: one clear line, nothing written.
    let before = list_tree(local.path());
    let o = Gfast::pull(&t)
        .ssh(&sshd.ssh_cmd("user_key"))
        .arg(remote(&remote_side.path().join("nope")))
        .arg(local.path())
        .output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot read source"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    assert_eq!(list_tree(local.path()), before);

    // A local destination whose parent does not exist.
    let o = Gfast::pull(&t)
        .ssh(&sshd.ssh_cmd("user_key"))
        .arg(remote(&tree))
        .arg(local.path().join("missing/deeper"))
        .output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        wait_gone(&format!("--oneshot --send {}", remote_side.path().display())),
        "a one-shot sender outlived its session"
    );
});

// Over TCP only: an ssh tunnel carries TCP only.
tcp_test!(blocked_direct_connections_fall_back_to_the_ssh_tunnel, |t| {
    // The remote advertises an address where nothing listens (as a host behind a
    // firewall would), so the direct connection is refused.
    let Some(sshd) =
        Sshd::start_with("blocked_direct_connections_fall_back_to_the_ssh_tunnel", "SetEnv GFAST_ADVERTISE=127.0.0.2")
    else {
        return;
    };
    let src = TempDir::new("tunnel-src");
    let dst = TempDir::new("tunnel-dst");
    let f = src.path().join("through-ssh");
    write_random(&f, 8 << 20, 12);
    let o = Gfast::push(&t).ssh(&sshd.ssh_cmd("user_key")).arg(&f).arg(remote(dst.path())).output();
    assert_ok(&o);
    assert!(stderr(&o).contains("falling back to the ssh tunnel"), "{}", stderr(&o));
    assert_same_file(&f, &dst.path().join("through-ssh"));

    // Pull with the tunnel asked for up front: no announcement, same result.
    let back = TempDir::new("tunnel-back");
    let o = Gfast::pull(&t)
        .ssh(&sshd.ssh_cmd("user_key"))
        .arg("--tunnel")
        .arg(remote(&dst.path().join("through-ssh")))
        .arg(back.path())
        .output();
    assert_ok(&o);
    assert!(!stderr(&o).contains("falling back"), "{}", stderr(&o));
    assert_same_file(&f, &back.path().join("through-ssh"));
});

both_transports!(ssh_sync_moves_only_what_changed_and_deletes, |t| {
    let Some(sshd) = Sshd::start("ssh_sync_moves_only_what_changed_and_deletes") else { return };
    let src = TempDir::new("ssh-sync-src");
    let dst = TempDir::new("ssh-sync-dst");
    fs::create_dir_all(src.path().join("d/e")).unwrap();
    for i in 0..50 {
        fs::write(src.path().join(format!("d/f{i}")), format!("file {i}")).unwrap();
    }
    write_random(&src.path().join("d/e/big"), 6 << 20, 3);
    std::os::unix::fs::symlink("f1", src.path().join("d/l")).unwrap();
    let s = format!("{}/", src.path().display());
    let to = format!("{}/", remote(dst.path()));
    let sync = |extra: &[&str]| {
        Gfast::sync(&t).ssh(&sshd.ssh_cmd("user_key")).arg("--json").args(extra).arg(&s).arg(&to).output()
    };
    let o = sync(&[]);
    assert_ok(&o);
    assert_eq!(parse_json(&o)["sync"]["created"], 54);
    assert_same_tree(src.path(), dst.path());
    // Nothing changed: nothing moves.
    let o = sync(&[]);
    assert_ok(&o);
    let j = parse_json(&o);
    assert_eq!((j["sync"]["created"].as_u64(), j["sync"]["updated"].as_u64()), (Some(0), Some(0)), "{j}");
    assert_eq!(j["bytes_sent"], 0);
    // One file changed, one gone: only that file's bytes go.
    fs::write(src.path().join("d/f7"), b"file 7, longer now").unwrap();
    fs::remove_file(src.path().join("d/f8")).unwrap();
    let o = sync(&["--delete"]);
    assert_ok(&o);
    let j = parse_json(&o);
    assert_eq!(j["bytes_sent"], 18, "{j}");
    assert_eq!(j["sync"]["deleted"], 1, "{j}");
    assert!(!dst.path().join("d/f8").exists());
    assert_same_tree(src.path(), dst.path());
    if let Some(left) = rsync_would(&s, &format!("{}/", dst.path().display()), &["--delete"]) {
        assert!(left.is_empty(), "rsync would still do: {left:#?}");
    }
});

both_transports!(ssh_ls_lists_what_is_there, |t| {
    let Some(sshd) = Sshd::start("ssh_ls_lists_what_is_there") else { return };
    let dst = TempDir::new("ssh-ls");
    fs::create_dir_all(dst.path().join("d/e")).unwrap();
    fs::write(dst.path().join("d/f"), b"four").unwrap();
    fs::write(dst.path().join("d/e/g"), b"").unwrap();
    std::os::unix::fs::symlink("f", dst.path().join("d/l")).unwrap();
    let ls = |args: &[&str], p: &Path| Gfast::ls(&t).ssh(&sshd.ssh_cmd("user_key")).args(args).arg(remote(p)).output();
    let o = ls(&["-R"], &dst.path().join("d"));
    assert_ok(&o);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "e/\ne/g\nf\nl\n");
    let o = ls(&["-l"], &dst.path().join("d"));
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.lines().any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with(" l -> f")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("-") && l.contains(" 4 ") && l.ends_with(" f")), "{out}");
    // Nothing there: a clear error, and nothing made there.
    let missing = dst.path().join("nothing");
    let o = ls(&[], &missing);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing at"), "{}", stderr(&o));
    assert!(!missing.exists());
});

both_transports!(ssh_sparse_files_stay_sparse_both_ways, |t| {
    use crate::meta::{check_sparse, sent_and_holes, sparse_tree, GRAIN, MIB};
    let Some(sshd) = Sshd::start("ssh_sparse_files_stay_sparse_both_ways") else { return };
    let (src, there, back) =
        (TempDir::new("ssh-sparse-src"), TempDir::new("ssh-sparse-there"), TempDir::new("ssh-sparse-back"));
    if !sparse_tree(src.path()) {
        return;
    }
    let o = Gfast::push(&t)
        .ssh(&sshd.ssh_cmd("user_key"))
        .args(["--json", "-q"])
        .arg(src.path())
        .arg(remote(there.path()))
        .output();
    let (sent, _) = sent_and_holes(&o);
    assert!(sent <= 6 * MIB + 4 * GRAIN, "sent {sent} bytes of a tree with 5 MiB of data");
    let name = src.path().file_name().unwrap();
    check_sparse(src.path(), &there.path().join(name));
    let o = Gfast::pull(&t)
        .ssh(&sshd.ssh_cmd("user_key"))
        .args(["--json", "-q"])
        .arg(remote(&there.path().join(name)))
        .arg(back.path().join("got"))
        .output();
    let (sent, _) = sent_and_holes(&o);
    assert!(sent <= 6 * MIB + 4 * GRAIN, "received {sent} bytes of data");
    check_sparse(src.path(), &back.path().join("got"));
});

both_transports!(ssh_as_root_keeps_owners_and_modes, |t| {
    use crate::meta::{is_root, owned_tree, owners_of, GID, UID};
    if !is_root() {
        eprintln!("SKIP ssh_as_root_keeps_owners_and_modes: giving files to other users needs root");
        return;
    }
    let Some(sshd) = Sshd::start("ssh_as_root_keeps_owners_and_modes") else { return };
    let (src, there) = (TempDir::new("ssh-own-src"), TempDir::new("ssh-own-there"));
    owned_tree(src.path());
    // The one-shot receiver runs as the ssh user (root here): it keeps what it may.
    let o = Gfast::push(&t).ssh(&sshd.ssh_cmd("user_key")).arg("-q").arg(src.path()).arg(remote(there.path())).output();
    assert_ok(&o);
    let got = owners_of(&there.path().join(src.path().file_name().unwrap()));
    for (p, uid, gid, _) in &got {
        assert_eq!((*uid, *gid), (UID, GID), "{p} keeps its owner");
    }
    assert_eq!(got.iter().find(|e| e.0 == "suid").unwrap().3, 0o4755, "the ssh user's own push keeps setuid");
});
