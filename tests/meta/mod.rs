//! Metadata fidelity (issue 17), sparse files first: holes found at the
//! source never travel (capability bit 9, ZERO blocks) and stay holes at the
//! destination, over TCP and QUIC to a daemon, in a pull, with and without
//! compression, and in a local copy. Space is asserted from `stat`'s
//! allocated blocks and the bytes sent from `--json`.

use crate::util::*;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

pub(crate) const MIB: u64 = 1 << 20;
/// The grid holes are described on (protocol-spec §4.14).
pub(crate) const GRAIN: u64 = 64 << 10;

fn allocated(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks() * 512
}

/// Sparse files in `dir`: `one` is 1 GiB holding one byte at 1 MiB, `hole` is
/// all hole, `tail` is 3 MB of data then a hole to 40 MiB, `middle` is data,
/// a 10 MiB hole, data. False (and a message) when this file system keeps no holes.
pub(crate) fn sparse_tree(dir: &Path) -> bool {
    let one = fs::File::create(dir.join("one")).unwrap();
    one.set_len(1 << 30).unwrap();
    one.write_all_at(b"x", MIB).unwrap();
    fs::File::create(dir.join("hole")).unwrap().set_len(100 * MIB).unwrap();
    write_random(&dir.join("tail"), 3_000_000, 11);
    fs::OpenOptions::new().write(true).open(dir.join("tail")).unwrap().set_len(40 * MIB).unwrap();
    write_random(&dir.join("middle"), 2 * MIB, 12);
    let m = fs::OpenOptions::new().write(true).open(dir.join("middle")).unwrap();
    let tail: Vec<u8> = (0..MIB).map(|i| (i * 31 % 253) as u8).collect();
    m.write_all_at(&tail, 12 * MIB).unwrap();
    if allocated(&dir.join("one")) > GRAIN || allocated(&dir.join("hole")) != 0 {
        eprintln!("SKIP: the test directory's file system does not keep holes (set GFAST_TEST_TMP to ext4 or tmpfs)");
        return false;
    }
    true
}

/// Every file of the sparse tree arrived whole and holds no more space than
/// its data takes on the 64 KiB grid.
pub(crate) fn check_sparse(src: &Path, dst: &Path) {
    for f in ["one", "hole", "tail", "middle"] {
        assert_same_file(&src.join(f), &dst.join(f));
    }
    assert!(allocated(&dst.join("one")) <= GRAIN, "one byte in 1 GiB takes {} bytes", allocated(&dst.join("one")));
    assert_eq!(allocated(&dst.join("hole")), 0, "a file that is all hole takes no space");
    let tail = allocated(&dst.join("tail"));
    assert!(tail <= 3_000_000 + GRAIN + 64 * 1024, "3 MB of data then a hole: {tail} bytes allocated");
    let middle = allocated(&dst.join("middle"));
    assert!(middle <= 3 * MIB + 2 * GRAIN + 64 * 1024, "3 MiB of data around a hole: {middle} allocated");
}

/// What travelled and what did not, from `--json`.
pub(crate) fn sent_and_holes(o: &std::process::Output) -> (u64, u64) {
    assert_ok(o);
    let j = parse_json(o);
    (j["bytes_sent"].as_u64().unwrap(), j["bytes_holes"].as_u64().unwrap())
}

both_transports!(sparse_files_stay_sparse_on_a_push, |t| {
    let (src, root) = (TempDir::new("sparse-src"), TempDir::new("sparse-dst"));
    if !sparse_tree(src.path()) {
        return;
    }
    let s = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t).pin(&s).args(["--json", "-q"]).arg(src.path().join("one")).arg(s.url("")).output();
    let (sent, holes) = sent_and_holes(&o);
    assert!(sent <= GRAIN, "one byte in 1 GiB sent {sent} bytes");
    assert_eq!(sent + holes, 1 << 30, "the rest is described as holes");
    // The whole tree, compressed and not.
    for (sub, z) in [("plain/", false), ("z/", true)] {
        let mut g = Gfast::push(&t).pin(&s).args(["--json", "-q"]);
        if z {
            g = g.arg("-z");
        }
        let o = g.arg(src.path()).arg(s.url(sub)).output();
        let (sent, _) = sent_and_holes(&o);
        assert!(sent <= 6 * MIB + 4 * GRAIN, "sent {sent} bytes of a tree with 5 MiB of data");
        let name = src.path().file_name().unwrap();
        check_sparse(src.path(), &root.path().join(sub).join(name));
    }
    // --no-sparse: the holes go as zeros and are written out.
    let o = Gfast::push(&t)
        .pin(&s)
        .args(["--json", "-q", "--no-sparse"])
        .arg(src.path().join("hole"))
        .arg(s.url("dense/"))
        .output();
    assert_eq!(sent_and_holes(&o), (100 * MIB, 0));
    assert_same_file(&src.path().join("hole"), &root.path().join("dense/hole"));
});

both_transports!(sparse_files_stay_sparse_on_a_pull, |t| {
    let (src, dst) = (TempDir::new("sparse-pull-src"), TempDir::new("sparse-pull-dst"));
    if !sparse_tree(src.path()) {
        return;
    }
    let s = Server::start(&t, src.path(), &["--allow-pull"]);
    let o = Gfast::pull(&t).pin(&s).args(["--json", "-q"]).arg(s.url("")).arg(dst.path().join("got")).output();
    let (sent, holes) = sent_and_holes(&o);
    assert!(sent <= 6 * MIB + 4 * GRAIN, "received {sent} bytes of data");
    assert!(holes >= (1 << 30) + 100 * MIB, "holes: {holes}");
    check_sparse(src.path(), &dst.path().join("got"));
});

// A hole where the destination's old file had data: delta seeds the new file
// with the old one's matching chunks, and a chunk that is now a hole must be
// emptied there, not left holding the old bytes.
both_transports!(a_hole_replaces_old_data_under_delta, |t| {
    let (src, root) = (TempDir::new("sparse-delta-src"), TempDir::new("sparse-delta-dst"));
    write_random(&root.path().join("f"), 16 * MIB, 5);
    // Same size; the last 8 MiB as before, the first 8 MiB now a hole.
    fs::copy(root.path().join("f"), src.path().join("f")).unwrap();
    let f = fs::OpenOptions::new().write(true).open(src.path().join("f")).unwrap();
    // SAFETY: plain fallocate on a file we own.
    let r = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            8 << 20,
        )
    };
    if r != 0 || allocated(&src.path().join("f")) > 9 * MIB {
        eprintln!("SKIP: the test directory's file system cannot punch holes");
        return;
    }
    let s = Server::start(&t, root.path(), &["--allow-pull"]);
    let o = Gfast::push(&t)
        .pin(&s)
        .args(["--json", "-q", "--delta", "--chunk-size", "8M"])
        .arg(src.path().join("f"))
        .arg(s.url(""))
        .output();
    let (sent, holes) = sent_and_holes(&o);
    assert_eq!((sent, holes), (0, 8 * MIB), "the old chunk is kept, the new hole described");
    assert_same_file(&src.path().join("f"), &root.path().join("f"));
    assert!(allocated(&root.path().join("f")) <= 8 * MIB + GRAIN, "the hole is a hole");
});

#[test]
fn sparse_files_stay_sparse_in_a_local_copy() {
    let (src, dst) = (TempDir::new("sparse-local-src"), TempDir::new("sparse-local-dst"));
    if !sparse_tree(src.path()) {
        return;
    }
    let o =
        Gfast::new("sync").arg("-q").arg(format!("{}/", src.path().display())).arg(dst.path().join("copy")).output();
    assert_ok(&o);
    check_sparse(src.path(), &dst.path().join("copy"));
    // A local copy keeps the holes exactly (no grid): as much space as the source.
    for f in ["one", "hole", "tail", "middle"] {
        assert_eq!(allocated(&dst.path().join("copy").join(f)), allocated(&src.path().join(f)), "{f}");
    }
    let o = Gfast::new("sync")
        .args(["-q", "--no-sparse"])
        .arg(src.path().join("hole"))
        .arg(dst.path().join("dense"))
        .output();
    assert_ok(&o);
    assert_same_file(&src.path().join("hole"), &dst.path().join("dense"));
    assert!(allocated(&dst.path().join("dense")) >= 100 * MIB, "--no-sparse writes the zeros out");
}

/// Root may give files away; the owner tests need it (CI runs as root).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) const UID: u32 = 4242;
pub(crate) const GID: u32 = 4343;

/// A tree owned by a user and group this system has no names for (so the
/// numbers travel), with a setuid file and a setgid directory.
pub(crate) fn owned_tree(dir: &Path) {
    use std::os::unix::fs::{chown, lchown, PermissionsExt};
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/f"), b"owned").unwrap();
    fs::write(dir.join("suid"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("sub/f", dir.join("link")).unwrap();
    for p in ["sub", "sub/f", "suid"] {
        chown(dir.join(p), Some(UID), Some(GID)).unwrap();
    }
    lchown(dir.join("link"), Some(UID), Some(GID)).unwrap();
    // After chown, which clears them.
    fs::set_permissions(dir.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(dir.join("sub"), fs::Permissions::from_mode(0o2775)).unwrap();
}

/// (uid, gid, mode) of each entry of the owned tree under `dst`.
pub(crate) fn owners_of(dst: &Path) -> Vec<(String, u32, u32, u32)> {
    ["sub", "sub/f", "suid", "link"]
        .iter()
        .map(|p| {
            let m = fs::symlink_metadata(dst.join(p)).unwrap();
            (p.to_string(), m.uid(), m.gid(), m.mode() & 0o7777)
        })
        .collect()
}

both_transports!(a_daemon_keeps_owners_and_setuid_only_with_preserve_owner, |t| {
    if !is_root() {
        eprintln!("SKIP: giving files to other users needs root (CI runs as root)");
        return;
    }
    let src = TempDir::new("own-src");
    owned_tree(src.path());
    // A push of the directory lands as DEST/<its name>.
    let (s, name) = (src.path(), src.path().file_name().unwrap());
    // By default a daemon keeps nothing of it: its own user, no setuid or setgid.
    let (plain, strict) = (TempDir::new("own-plain"), TempDir::new("own-keep"));
    let d = Server::start(&t, plain.path(), &[]);
    assert_ok(&Gfast::push(&t).pin(&d).arg("-q").arg(s).arg(d.url("t/")).output());
    for (p, uid, gid, mode) in owners_of(&plain.path().join("t").join(name)) {
        assert_eq!((uid, gid), (0, 0), "{p} is the daemon's user's");
        assert_eq!(mode & 0o6000, 0, "{p}: no setuid or setgid bit ({mode:o})");
    }
    // With --preserve-owner, all of it.
    let k = Server::start(&t, strict.path(), &["--preserve-owner"]);
    assert_ok(&Gfast::push(&t).pin(&k).arg("-q").arg(s).arg(k.url("t/")).output());
    let got = owners_of(&strict.path().join("t").join(name));
    for (p, uid, gid, _) in &got {
        assert_eq!((*uid, *gid), (UID, GID), "{p} keeps its owner");
    }
    assert_eq!(got.iter().find(|e| e.0 == "suid").unwrap().3, 0o4755, "setuid kept");
    assert_eq!(got.iter().find(|e| e.0 == "sub").unwrap().3, 0o2775, "setgid kept");
    // --no-owner: the client does not send them, whatever the daemon allows.
    assert_ok(&Gfast::push(&t).pin(&k).args(["-q", "--no-owner"]).arg(s).arg(k.url("n/")).output());
    for (p, uid, gid, _) in owners_of(&strict.path().join("n").join(name)) {
        assert_eq!((uid, gid), (0, 0), "{p} with --no-owner");
    }
});

both_transports!(a_pull_as_root_keeps_owners, |t| {
    if !is_root() {
        eprintln!("SKIP: giving files to other users needs root (CI runs as root)");
        return;
    }
    let (src, dst) = (TempDir::new("own-pull-src"), TempDir::new("own-pull-dst"));
    owned_tree(&src.path().join("t"));
    let d = Server::start(&t, src.path(), &["--allow-pull"]);
    assert_ok(&Gfast::pull(&t).pin(&d).arg("-q").arg(d.url("t")).arg(dst.path().join("t")).output());
    for (p, uid, gid, mode) in owners_of(&dst.path().join("t")) {
        assert_eq!((uid, gid), (UID, GID), "{p} keeps its owner");
        // A pulling client strips setuid and setgid bits, whatever it runs as.
        assert_eq!(mode & 0o6000, 0, "{p}: {mode:o}");
    }
});

#[test]
fn a_local_copy_as_root_keeps_owners_and_rsync_agrees() {
    if !is_root() {
        eprintln!("SKIP: giving files to other users needs root (CI runs as root)");
        return;
    }
    let (src, dst) = (TempDir::new("own-local-src"), TempDir::new("own-local-dst"));
    owned_tree(src.path());
    let s = format!("{}/", src.path().display());
    assert_ok(&Gfast::new("sync").arg("-q").arg(&s).arg(dst.path().join("t")).output());
    for (p, uid, gid, _) in owners_of(&dst.path().join("t")) {
        assert_eq!((uid, gid), (UID, GID), "{p} keeps its owner");
    }
    // rsync -a (owners, groups, modes with setuid, times, links) finds nothing to do.
    if let Some(left) = rsync_would(&s, &format!("{}/", dst.path().join("t").display()), &[]) {
        assert!(left.is_empty(), "rsync would still do: {left:#?}");
    }
    assert_ok(&Gfast::new("sync").args(["-q", "--no-owner"]).arg(&s).arg(dst.path().join("n")).output());
    for (p, uid, gid, _) in owners_of(&dst.path().join("n")) {
        assert_eq!((uid, gid), (0, 0), "{p} with --no-owner");
    }
}

/// A tree with user xattrs on a file and a directory, and (where setfacl is
/// installed) an access ACL on the file and a default ACL on the directory.
/// False (and a message) where the file system keeps no user xattrs.
fn xattr_tree(dir: &Path) -> bool {
    fs::create_dir_all(dir.join("d")).unwrap();
    fs::write(dir.join("d/f"), b"attributed").unwrap();
    fs::write(dir.join("plain"), b"none").unwrap();
    if let Err(e) = xattr::set(dir.join("d/f"), "user.origin", b"lab 7") {
        eprintln!("SKIP: the test directory's file system keeps no user xattrs ({e})");
        return false;
    }
    xattr::set(dir.join("d"), "user.project", b"\x00binary\xff").unwrap();
    true
}

/// Sets ACLs with setfacl; false (and a message) where it is missing.
fn acls(dir: &Path) -> bool {
    let ok = std::process::Command::new("setfacl").args(["-m", "u:4242:rw"]).arg(dir.join("d/f")).status();
    let ok2 = std::process::Command::new("setfacl").args(["-d", "-m", "g:4343:rx"]).arg(dir.join("d")).status();
    match (ok, ok2) {
        (Ok(a), Ok(b)) if a.success() && b.success() => true,
        _ => {
            eprintln!("SKIP the ACL part: setfacl is missing or refused (.ci/run installs acl)");
            false
        }
    }
}

fn xattr_of(p: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(p, name).unwrap()
}

both_transports!(xattrs_and_acls_travel_with_x, |t| {
    let (src, root, back) = (TempDir::new("xa-src"), TempDir::new("xa-dst"), TempDir::new("xa-back"));
    if !xattr_tree(src.path()) {
        return;
    }
    let with_acls = is_root() && acls(src.path());
    let name = src.path().file_name().unwrap();
    // A default daemon: user.* only, and only with -X.
    let d = Server::start(&t, root.path(), &["--allow-pull"]);
    assert_ok(&Gfast::push(&t).pin(&d).arg("-q").arg(src.path()).arg(d.url("none/")).output());
    assert_eq!(xattr_of(&root.path().join("none").join(name).join("d/f"), "user.origin"), None, "not without -X");
    assert_ok(&Gfast::push(&t).pin(&d).args(["-q", "-X"]).arg(src.path()).arg(d.url("x/")).output());
    let got = root.path().join("x").join(name);
    assert_eq!(xattr_of(&got.join("d/f"), "user.origin").as_deref(), Some(&b"lab 7"[..]));
    assert_eq!(xattr_of(&got.join("d"), "user.project").as_deref(), Some(&b"\x00binary\xff"[..]));
    assert_eq!(xattr_of(&got.join("plain"), "user.origin"), None);
    if with_acls {
        assert_eq!(xattr_of(&got.join("d/f"), "system.posix_acl_access"), None, "a daemon gives no ACL");
    }
    // A pull (the client runs as root here): everything, ACLs included; rsync -aX(A) agrees.
    assert_ok(&Gfast::pull(&t).pin(&d).args(["-q", "-A"]).arg(d.url("x")).arg(back.path().join("x")).output());
    let pulled = back.path().join("x").join(name);
    assert_eq!(xattr_of(&pulled.join("d/f"), "user.origin").as_deref(), Some(&b"lab 7"[..]));
    if with_acls {
        // A daemon whose operator said --preserve-owner gives them, ACLs included.
        let keep = TempDir::new("xa-keep");
        let k = Server::start(&t, keep.path(), &["--preserve-owner"]);
        assert_ok(&Gfast::push(&t).pin(&k).args(["-q", "-A"]).arg(src.path()).arg(k.url("")).output());
        for (p, a) in [("d/f", "system.posix_acl_access"), ("d", "system.posix_acl_default")] {
            let want = xattr_of(&src.path().join(p), a);
            assert!(want.is_some(), "{p} {a} at the source");
            assert_eq!(xattr_of(&keep.path().join(name).join(p), a), want, "{p} {a} over the network");
        }
        // The default daemon's copy has none; compare with the source through a local copy too.
        let local = back.path().join("local");
        assert_ok(
            &Gfast::new("sync").args(["-q", "-A"]).arg(format!("{}/", src.path().display())).arg(&local).output(),
        );
        let extra: &[&str] = &["-A", "-X"];
        if let Some(left) = rsync_would(&format!("{}/", src.path().display()), &format!("{}/", local.display()), extra)
        {
            assert!(left.is_empty(), "rsync -aAX would still do: {left:#?}");
        }
        assert_eq!(
            xattr_of(&local.join("d"), "system.posix_acl_default"),
            xattr_of(&src.path().join("d"), "system.posix_acl_default"),
            "the default ACL"
        );
    }
});

/// A FIFO, a socket, and (as root) a character device like /dev/null, with a
/// regular file beside them.
fn special_tree(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    fs::write(dir.join("regular"), b"r").unwrap();
    let c = std::ffi::CString::new(dir.join("pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o640) }, 0);
    drop(std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap());
    if is_root() {
        let c = std::ffi::CString::new(dir.join("null").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string; makedev(1, 3) is /dev/null's number.
        assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) }, 0);
    }
}

fn kind_of(p: &Path) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(p).map(|m| m.file_type()) {
        Ok(t) if t.is_fifo() => "fifo",
        Ok(t) if t.is_socket() => "socket",
        Ok(t) if t.is_char_device() => "char",
        Ok(t) if t.is_file() => "file",
        Ok(_) => "other",
        Err(_) => "missing",
    }
}

both_transports!(fifos_sockets_and_devices_travel_with_d, |t| {
    let (src, plain, devs) = (TempDir::new("sp-src"), TempDir::new("sp-plain"), TempDir::new("sp-devs"));
    special_tree(src.path());
    let name = src.path().file_name().unwrap();
    let d = Server::start(&t, plain.path(), &[]);
    // Without -D they are skipped, said, and the job says it is incomplete.
    let o = Gfast::push(&t).pin(&d).arg("-q").arg(src.path()).arg(d.url("none/")).output();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("special file") && stderr(&o).contains("-D"), "{}", stderr(&o));
    assert_eq!(kind_of(&plain.path().join("none").join(name).join("regular")), "file");
    assert_eq!(kind_of(&plain.path().join("none").join(name).join("pipe")), "missing");
    // With -D a default daemon makes the FIFO and the socket, never a device.
    let o = Gfast::push(&t).pin(&d).args(["-q", "-D"]).arg(src.path()).arg(d.url("d/")).output();
    let got = plain.path().join("d").join(name);
    assert_eq!((kind_of(&got.join("pipe")), kind_of(&got.join("sock"))), ("fifo", "socket"));
    assert_eq!(fs::symlink_metadata(got.join("pipe")).unwrap().mode() & 0o777, 0o640);
    if is_root() {
        assert!(!o.status.success(), "the device failed");
        assert!(stderr(&o).contains("--allow-devices"), "{}", stderr(&o));
        assert_eq!(kind_of(&got.join("null")), "missing");
        // A daemon started with --allow-devices makes it, with its number.
        let k = Server::start(&t, devs.path(), &["--allow-devices"]);
        assert_ok(&Gfast::push(&t).pin(&k).args(["-q", "-D"]).arg(src.path()).arg(k.url("")).output());
        let null = devs.path().join(name).join("null");
        assert_eq!(kind_of(&null), "char");
        assert_eq!(fs::symlink_metadata(&null).unwrap().rdev(), libc::makedev(1, 3));
    } else {
        assert_ok(&o);
    }
});

#[test]
fn a_local_copy_with_d_makes_special_files_and_rsync_agrees() {
    let (src, dst) = (TempDir::new("sp-local-src"), TempDir::new("sp-local-dst"));
    special_tree(src.path());
    let s = format!("{}/", src.path().display());
    let copy = dst.path().join("copy");
    for args in [&["-q", "-D"][..], &["-q"]] {
        // Twice, the second time with -D implied: it finds them in place.
        assert_ok(&Gfast::new("sync").args(args).arg(&s).arg(&copy).output());
        assert_eq!((kind_of(&copy.join("pipe")), kind_of(&copy.join("sock"))), ("fifo", "socket"));
        if is_root() {
            assert_eq!(kind_of(&copy.join("null")), "char");
        }
        // rsync -a includes -D (devices as root).
        if let Some(left) = rsync_would(&s, &format!("{}/", copy.display()), &[]) {
            assert!(left.is_empty(), "rsync would still do: {left:#?}");
        }
    }
    // A push without -D (a sync has it on, as part of -a), into a fresh
    // directory: they are skipped, and said.
    let o = Gfast::new("push").arg("-q").arg(&s).arg(dst.path().join("none")).output();
    assert!(!o.status.success() && stderr(&o).contains("-D"), "{}", stderr(&o));
    assert_eq!(kind_of(&dst.path().join("none/regular")), "file");
    assert_eq!(kind_of(&dst.path().join("none/pipe")), "missing");
}

/// Two link groups: `a/one`, `a/two` and `b/three` are one file; `b/x` and
/// `b/y` another (8 MiB: several chunks); `solo` has one name.
fn linked_tree(dir: &Path) {
    fs::create_dir_all(dir.join("a")).unwrap();
    fs::create_dir_all(dir.join("b")).unwrap();
    fs::write(dir.join("a/one"), b"linked three times").unwrap();
    fs::hard_link(dir.join("a/one"), dir.join("a/two")).unwrap();
    fs::hard_link(dir.join("a/one"), dir.join("b/three")).unwrap();
    write_random(&dir.join("b/x"), 8 << 20, 21);
    fs::hard_link(dir.join("b/x"), dir.join("b/y")).unwrap();
    fs::write(dir.join("solo"), b"alone").unwrap();
}

/// The link groups of `linked_tree` are links at `dst` too.
fn check_linked(src: &Path, dst: &Path) {
    assert_same_tree(src, dst);
    let ino = |p: &str| fs::metadata(dst.join(p)).unwrap().ino();
    assert_eq!(ino("a/one"), ino("a/two"));
    assert_eq!(ino("a/one"), ino("b/three"));
    assert_eq!(ino("b/x"), ino("b/y"));
    assert_ne!(ino("a/one"), ino("b/x"));
    assert_eq!(fs::metadata(dst.join("a/one")).unwrap().nlink(), 3);
}

both_transports!(hard_links_are_kept_with_h, |t| {
    let (src, root) = (TempDir::new("hl-src"), TempDir::new("hl-dst"));
    linked_tree(src.path());
    let name = src.path().file_name().unwrap();
    let d = Server::start(&t, root.path(), &[]);
    let o = Gfast::push(&t).pin(&d).args(["-q", "-H", "--json"]).arg(src.path()).arg(d.url("h/")).output();
    assert_ok(&o);
    // Each file's data went once.
    let sent = parse_json(&o)["bytes_sent"].as_u64().unwrap();
    assert_eq!(sent, (8 << 20) + 18 + 5, "each linked file's data once");
    check_linked(src.path(), &root.path().join("h").join(name));
    // Without -H, separate files (as before).
    assert_ok(&Gfast::push(&t).pin(&d).arg("-q").arg(src.path()).arg(d.url("n/")).output());
    let n = root.path().join("n").join(name);
    assert_ne!(fs::metadata(n.join("a/one")).unwrap().ino(), fs::metadata(n.join("a/two")).unwrap().ino());
    // Again with -H over those separate files: the names become links.
    assert_ok(&Gfast::push(&t).pin(&d).args(["-q", "-H"]).arg(src.path()).arg(d.url("n/")).output());
    check_linked(src.path(), &n);
    // rsync -aH agrees (directory times aside: a daemon sets those only on
    // directories the session made, and these were made by the first push).
    if let Some(left) = rsync_would(&format!("{}/", src.path().display()), &format!("{}/", n.display()), &["-H", "-O"])
    {
        assert!(left.is_empty(), "rsync -aH would still do: {left:#?}");
    }
});

#[test]
fn hard_links_are_kept_in_a_local_copy() {
    let (src, dst) = (TempDir::new("hl-local-src"), TempDir::new("hl-local-dst"));
    linked_tree(src.path());
    let s = format!("{}/", src.path().display());
    assert_ok(&Gfast::new("sync").args(["-q", "-H"]).arg(&s).arg(dst.path().join("c")).output());
    check_linked(src.path(), &dst.path().join("c"));
    if let Some(left) = rsync_would(&s, &format!("{}/", dst.path().join("c").display()), &["-H"]) {
        assert!(left.is_empty(), "rsync -aH would still do: {left:#?}");
    }
}
