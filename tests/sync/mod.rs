//! `gfast sync` against a real daemon (over TCP and QUIC) and between local
//! directories: what a second run moves, changes with and without --delete,
//! filters, dry runs, the trailing-slash rule, no deletion after a failure,
//! links never followed. rsync is the oracle: after a sync, `rsync -a -n -i`
//! from the source must find nothing to do.

use crate::util::*;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Where a scenario syncs to: a daemon's root, or a local directory.
enum To {
    Daemon(Transport, Server),
    Local(TempDir),
}

impl To {
    /// A daemon over `t` that lists its tree to token holders (--allow-pull).
    fn daemon(t: Transport) -> To {
        let root = TempDir::new("sync-root");
        let s = Server::start(&t, root.path(), &["--allow-pull"]);
        std::mem::forget(root);
        To::Daemon(t, s)
    }

    fn local() -> To {
        To::Local(TempDir::new("sync-local"))
    }

    /// The directory everything lands in.
    fn root(&self) -> PathBuf {
        match self {
            To::Daemon(_, s) => s.root.clone(),
            To::Local(d) => d.path().to_path_buf(),
        }
    }

    /// The destination argument for `sub` under the root.
    fn dest(&self, sub: &str) -> String {
        match self {
            To::Daemon(_, s) => s.url(sub),
            To::Local(d) => format!("{}/{sub}", d.path().display()),
        }
    }

    /// `gfast sync ARGS... SRC DEST(sub)`.
    fn sync(&self, args: &[&str], src: &str, sub: &str) -> Output {
        let g = match self {
            To::Daemon(t, s) => Gfast::sync(t).pin(s),
            To::Local(_) => Gfast::new("sync"),
        };
        g.args(args).arg(src).arg(self.dest(sub)).output()
    }
}

impl Drop for To {
    fn drop(&mut self) {
        if let To::Daemon(_, s) = self {
            let _ = fs::remove_dir_all(&s.root);
        }
    }
}

/// A tree with nested directories, odd names and links.
fn tree(dir: &Path) {
    fs::create_dir_all(dir.join("a/b/c")).unwrap();
    fs::create_dir_all(dir.join("empty")).unwrap();
    fs::create_dir_all(dir.join("logs")).unwrap();
    fs::write(dir.join("a/one.txt"), b"one").unwrap();
    fs::write(dir.join("a/b/two.txt"), b"two two").unwrap();
    write_random(&dir.join("a/b/c/big.bin"), 3 << 20, 7);
    fs::write(dir.join("new\nline"), b"odd").unwrap();
    fs::write(dir.join("it's café"), b"quote").unwrap();
    fs::write(dir.join(std::ffi::OsStr::from_bytes(b"bad\xffutf8")), b"bytes").unwrap();
    fs::write(dir.join("logs/app.log"), b"log").unwrap();
    fs::write(dir.join("logs/important.log"), b"keep").unwrap();
    fs::write(dir.join("logs/x.tmp"), b"tmp").unwrap();
    std::os::unix::fs::symlink("a/one.txt", dir.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", dir.join("dangling")).unwrap();
}

fn sync_counts(o: &Output) -> serde_json::Value {
    assert_ok(o);
    parse_json(o)["sync"].clone()
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// rsync finds nothing to do from `src` to `dst` (with `extra`).
fn in_sync(src: &Path, dst: &Path, extra: &[&str]) {
    let (s, d) = (format!("{}/", src.display()), format!("{}/", dst.display()));
    if let Some(left) = rsync_would(&s, &d, extra) {
        assert!(left.is_empty(), "rsync would still do: {left:#?}");
    }
}

fn twice_moves_nothing(to: To) {
    let src = TempDir::new("sync-src");
    tree(src.path());
    let s = format!("{}/", src.path().display());
    let first = sync_counts(&to.sync(&["--json"], &s, "copy/"));
    assert_eq!(n(&first, "unchanged"), 0);
    assert!(n(&first, "created") >= 14, "{first}");
    let dst = to.root().join("copy");
    in_sync(src.path(), &dst, &[]);
    assert_same_tree(src.path(), &dst);
    // Again: nothing moves, and the destination is untouched.
    let before = digest(&dst);
    let o = to.sync(&["--json"], &s, "copy/");
    let again = sync_counts(&o);
    assert_eq!((n(&again, "created"), n(&again, "updated"), n(&again, "deleted")), (0, 0, 0), "{again}");
    assert_eq!(n(&again, "unchanged"), n(&first, "created"));
    assert_eq!(n(&again, "bytes_to_send"), 0);
    assert_eq!(parse_json(&o)["bytes_sent"], 0);
    assert_eq!(digest(&dst), before);
}

fn changes_with_and_without_delete(to: To) {
    let src = TempDir::new("sync-src");
    tree(src.path());
    let s = format!("{}/", src.path().display());
    assert_ok(&to.sync(&["-q"], &s, "d/"));
    let dst = to.root().join("d");
    // Change one file (same size, new time), grow one, add one and a
    // directory, remove a file and a directory.
    fs::write(src.path().join("a/one.txt"), b"ONE").unwrap();
    fs::write(src.path().join("a/b/two.txt"), b"two two two").unwrap();
    fs::create_dir_all(src.path().join("fresh/deeper")).unwrap();
    fs::write(src.path().join("fresh/deeper/n.txt"), b"new").unwrap();
    fs::remove_file(src.path().join("logs/x.tmp")).unwrap();
    fs::remove_dir_all(src.path().join("a/b/c")).unwrap();
    let c = sync_counts(&to.sync(&["--json"], &s, "d/"));
    assert_eq!(n(&c, "created"), 3, "{c}");
    assert_eq!(n(&c, "deleted"), 0);
    // Without --delete what is gone from the source stays.
    assert!(dst.join("a/b/c/big.bin").exists() && dst.join("logs/x.tmp").exists());
    assert_eq!(fs::read(dst.join("a/one.txt")).unwrap(), b"ONE");
    let c = sync_counts(&to.sync(&["--json", "--delete"], &s, "d/"));
    // x.tmp, c/ and big.bin.
    assert_eq!(n(&c, "deleted"), 3, "{c}");
    assert_eq!((n(&c, "created"), n(&c, "updated")), (0, 0), "{c}");
    assert!(!dst.join("a/b/c").exists() && !dst.join("logs/x.tmp").exists());
    in_sync(src.path(), &dst, &["--delete"]);
    assert_same_tree(src.path(), &dst);
}

fn filters_apply_to_send_and_delete(to: To) {
    let src = TempDir::new("sync-src");
    tree(src.path());
    let s = format!("{}/", src.path().display());
    let rules = ["--include", "important.log", "--exclude", "*.log", "--exclude", "/a/b/"];
    let o = to.sync(&[&["--json"][..], &rules].concat(), &s, "f/");
    let c = sync_counts(&o);
    let dst = to.root().join("f");
    assert!(dst.join("logs/important.log").exists(), "an earlier include wins over a later exclude");
    assert!(!dst.join("logs/app.log").exists());
    assert!(!dst.join("a/b").exists() && dst.join("a/one.txt").exists());
    in_sync(src.path(), &dst, &rules);
    assert!(n(&c, "created") > 0);
    // The other order: the exclude wins.
    let o = to.sync(&["-q", "--exclude", "*.log", "--include", "important.log"], &s, "g/");
    assert_ok(&o);
    assert!(!to.root().join("g/logs/important.log").exists());
    // Excluded entries at the destination are kept by --delete, removed by --delete-excluded.
    fs::write(dst.join("logs/other.log"), b"theirs").unwrap();
    fs::create_dir_all(dst.join("a/b/theirs")).unwrap();
    fs::write(dst.join("stray"), b"gone").unwrap();
    let c = sync_counts(&to.sync(&[&["--json", "--delete"][..], &rules].concat(), &s, "f/"));
    assert_eq!(n(&c, "deleted"), 1, "only the stray file: {c}");
    assert!(dst.join("logs/other.log").exists() && dst.join("a/b/theirs").exists() && !dst.join("stray").exists());
    let c = sync_counts(&to.sync(&[&["--json", "--delete-excluded"][..], &rules].concat(), &s, "f/"));
    assert!(!dst.join("logs/other.log").exists() && !dst.join("a/b").exists(), "{c}");
    assert_eq!(n(&c, "deleted"), 3, "other.log, a/b/theirs, a/b: {c}");
    // A rule gfast does not take is refused in one line.
    let o = to.sync(&["--filter", ": .rsync-filter"], &s, "f/");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not supported"), "{}", stderr(&o));
}

fn dry_run_changes_nothing_and_tells_what_a_run_does(to: To) {
    let src = TempDir::new("sync-src");
    tree(src.path());
    let s = format!("{}/", src.path().display());
    assert_ok(&to.sync(&["-q"], &s, "n/"));
    let dst = to.root().join("n");
    fs::write(src.path().join("a/one.txt"), b"changed!").unwrap();
    fs::write(src.path().join("added"), b"+").unwrap();
    fs::remove_file(src.path().join("it's café")).unwrap();
    fs::write(dst.join("theirs"), b"x").unwrap();
    let before = digest(&to.root());
    let dry = to.sync(&["-n", "--delete"], &s, "n/");
    assert_ok(&dry);
    assert_eq!(digest(&to.root()), before, "a dry run changed the destination");
    let real = to.sync(&["-i", "--delete"], &s, "n/");
    assert_ok(&real);
    let lines = |o: &Output| {
        let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(lines(&dry), lines(&real));
    let l = lines(&real);
    let arrow = if matches!(to, To::Local(_)) { '>' } else { '<' };
    for want in [
        format!("{arrow}f+++++++++ added"),
        format!("{arrow}f.st...... a/one.txt"),
        "*deleting   it's café".to_string(),
        "*deleting   theirs".to_string(),
    ] {
        assert!(l.contains(&want), "no line {want:?} in {l:#?}");
    }
    in_sync(src.path(), &dst, &["--delete"]);
}

fn trailing_slash_rule(to: To) {
    let src = TempDir::new("sync-src");
    let tree_dir = src.path().join("proj");
    fs::create_dir_all(tree_dir.join("sub")).unwrap();
    fs::write(tree_dir.join("sub/f"), b"f").unwrap();
    let file = src.path().join("single.txt");
    fs::write(&file, b"single").unwrap();
    // SRC: the directory itself inside DEST; SRC/: its contents.
    assert_ok(&to.sync(&["-q"], &tree_dir.display().to_string(), "ts1/"));
    assert!(to.root().join("ts1/proj/sub/f").exists());
    assert_ok(&to.sync(&["-q"], &format!("{}/", tree_dir.display()), "ts2"));
    assert!(to.root().join("ts2/sub/f").exists() && !to.root().join("ts2/proj").exists());
    // One file onto a new name takes that name.
    assert_ok(&to.sync(&["-q"], &file.display().to_string(), "renamed.txt"));
    assert_eq!(fs::read(to.root().join("renamed.txt")).unwrap(), b"single");
}

fn a_failure_deletes_nothing(to: To) {
    let src = TempDir::new("sync-src");
    tree(src.path());
    let s = format!("{}/", src.path().display());
    assert_ok(&to.sync(&["-q"], &s, "x/"));
    let dst = to.root().join("x");
    // The source now has a file where the destination has a non-empty
    // directory: that file fails. Something else is gone from the source.
    fs::remove_dir_all(src.path().join("empty")).unwrap();
    fs::write(src.path().join("empty"), b"now a file").unwrap();
    fs::create_dir_all(dst.join("empty/kept")).unwrap();
    fs::remove_file(src.path().join("a/one.txt")).unwrap();
    let o = to.sync(&["--json", "--delete"], &s, "x/");
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let c = parse_json(&o)["sync"].clone();
    assert_eq!(n(&c, "deleted"), 0, "{c}");
    assert!(n(&c, "not_deleted") >= 1, "{c}");
    assert!(dst.join("a/one.txt").exists(), "deleted after a failed file");
    assert!(stderr(&o).contains("not deleted"), "{}", stderr(&o));
}

fn links_are_removed_never_followed(to: To) {
    let src = TempDir::new("sync-src");
    tree(src.path());
    let outside = TempDir::new("sync-outside");
    fs::create_dir_all(outside.path().join("d")).unwrap();
    fs::write(outside.path().join("d/precious"), b"must stay").unwrap();
    let s = format!("{}/", src.path().display());
    assert_ok(&to.sync(&["-q"], &s, "l/"));
    let dst = to.root().join("l");
    // Links at the destination to a directory outside its root, one where the
    // source has nothing, one where the source has a directory of that name.
    std::os::unix::fs::symlink(outside.path().join("d"), dst.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dst.join("extra-link")).unwrap();
    let o = to.sync(&["--json", "--delete"], &s, "l/");
    let c = sync_counts(&o);
    assert_eq!(n(&c, "deleted"), 2, "{c}");
    assert!(fs::symlink_metadata(dst.join("out")).is_err() && fs::symlink_metadata(dst.join("extra-link")).is_err());
    assert_eq!(fs::read(outside.path().join("d/precious")).unwrap(), b"must stay");
    in_sync(src.path(), &dst, &["--delete"]);
}

both_transports!(sync_twice_moves_nothing, |t| { twice_moves_nothing(To::daemon(t)) });
both_transports!(sync_changes_with_and_without_delete, |t| { changes_with_and_without_delete(To::daemon(t)) });
// Filters, dry runs, the slash rule and deletion are decided above the
// transport: TCP covers them for a daemon (and the local runs below).
tcp_test!(sync_filters_apply_to_send_and_delete, |t| { filters_apply_to_send_and_delete(To::daemon(t)) });
tcp_test!(sync_dry_run_changes_nothing, |t| { dry_run_changes_nothing_and_tells_what_a_run_does(To::daemon(t)) });
tcp_test!(sync_trailing_slash_rule, |t| { trailing_slash_rule(To::daemon(t)) });
both_transports!(sync_a_failure_deletes_nothing, |t| { a_failure_deletes_nothing(To::daemon(t)) });
tcp_test!(sync_links_are_removed_never_followed, |t| { links_are_removed_never_followed(To::daemon(t)) });

#[test]
fn local_sync_twice_moves_nothing() {
    twice_moves_nothing(To::local());
}

#[test]
fn local_sync_changes_with_and_without_delete() {
    changes_with_and_without_delete(To::local());
}

#[test]
fn local_sync_filters() {
    filters_apply_to_send_and_delete(To::local());
}

#[test]
fn local_sync_dry_run() {
    dry_run_changes_nothing_and_tells_what_a_run_does(To::local());
}

#[test]
fn local_sync_trailing_slash_rule() {
    trailing_slash_rule(To::local());
}

#[test]
fn local_sync_a_failure_deletes_nothing() {
    a_failure_deletes_nothing(To::local());
}

#[test]
fn local_sync_links_are_removed_never_followed() {
    links_are_removed_never_followed(To::local());
}

fn checksum_repairs_what_the_quick_check_misses(to: To) {
    let src = TempDir::new("sync-src");
    tree(src.path());
    let s = format!("{}/", src.path().display());
    assert_ok(&to.sync(&["-q"], &s, "c/"));
    let dst = to.root().join("c");
    // Silent damage: same size, same mtime, other bytes.
    let f = dst.join("a/b/two.txt");
    let mtime = fs::metadata(&f).unwrap().modified().unwrap();
    fs::write(&f, b"TWO TWO").unwrap();
    fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
    let c = sync_counts(&to.sync(&["--json"], &s, "c/"));
    assert_eq!(n(&c, "updated"), 0, "the quick check sees nothing: {c}");
    let c = sync_counts(&to.sync(&["--json", "--checksum"], &s, "c/"));
    assert_eq!(n(&c, "updated"), 1, "{c}");
    assert_eq!(fs::read(&f).unwrap(), b"two two");
    assert_same_tree(src.path(), &dst);
}

fn sources_sharing_a_destination_never_delete_each_other(to: To) {
    let (a, b) = (TempDir::new("sync-a"), TempDir::new("sync-b"));
    fs::write(a.path().join("from-a"), b"a").unwrap();
    fs::create_dir_all(b.path().join("deep")).unwrap();
    fs::write(b.path().join("deep/from-b"), b"b").unwrap();
    let (sa, sb) = (format!("{}/", a.path().display()), format!("{}/", b.path().display()));
    // Both into the same place: refused with --delete.
    let g = match &to {
        To::Daemon(t, s) => Gfast::sync(t).pin(s),
        To::Local(_) => Gfast::new("sync"),
    };
    let o = g.args(["--delete", &sa, &sb]).arg(to.dest("o/")).output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("same place"), "{}", stderr(&o));
    // One inside the other's destination: each keeps the other's files.
    let g = match &to {
        To::Daemon(t, s) => Gfast::sync(t).pin(s),
        To::Local(_) => Gfast::new("sync"),
    };
    let o = g.args(["--delete", "--json", &sa]).arg(b.path()).arg(to.dest("o/")).output();
    assert_ok(&o);
    let name = b.path().file_name().unwrap();
    let dst = to.root().join("o");
    assert!(dst.join("from-a").exists());
    assert!(dst.join(name).join("deep/from-b").exists(), "the second source was deleted by the first");
    assert_eq!(parse_json(&o)["sync"]["deleted"], 0);
}

tcp_test!(sync_checksum_repairs_what_the_quick_check_misses, |t| {
    checksum_repairs_what_the_quick_check_misses(To::daemon(t))
});
tcp_test!(sync_sources_sharing_a_destination, |t| {
    sources_sharing_a_destination_never_delete_each_other(To::daemon(t))
});

#[test]
fn local_sync_checksum_repairs() {
    checksum_repairs_what_the_quick_check_misses(To::local());
}

#[test]
fn local_sync_sources_sharing_a_destination() {
    sources_sharing_a_destination_never_delete_each_other(To::local());
}

#[test]
fn local_push_copies_a_tree() {
    let src = TempDir::new("push-src");
    tree(src.path());
    let dst = TempDir::new("push-dst");
    let o = Gfast::new("push").arg(src.path()).arg(format!("{}/", dst.path().display())).output();
    assert_ok(&o);
    let name = src.path().file_name().unwrap();
    assert_same_tree(src.path(), &dst.path().join(name));
    // Into itself: refused, nothing written.
    let o = Gfast::new("push").arg(src.path()).arg(src.path().join("a/")).output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("into itself"), "{}", stderr(&o));
}

both_transports!(sync_to_a_daemon_that_does_not_list, |t| {
    // Without --allow-pull a daemon shows no token holder its tree: a plain
    // sync still skips what is in place (one by one), --delete is refused.
    let root = TempDir::new("sync-nolist");
    let s = Server::start(&t, root.path(), &[]);
    let src = TempDir::new("sync-src");
    tree(src.path());
    let arg = format!("{}/", src.path().display());
    let o = Gfast::sync(&t).pin(&s).arg("--json").arg(&arg).arg(s.url("b/")).output();
    assert_ok(&o);
    assert!(stderr(&o).contains("does not list"), "{}", stderr(&o));
    let again = Gfast::sync(&t).pin(&s).arg("--json").arg(&arg).arg(s.url("b/")).output();
    assert_ok(&again);
    let j = parse_json(&again);
    assert_eq!(j["bytes_sent"], 0, "{j}");
    let o = Gfast::sync(&t).pin(&s).args(["--delete"]).arg(&arg).arg(s.url("b/")).output();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--allow-pull"), "{}", stderr(&o));
});

/// `gfast ls --json` lines → (path, type, size, link) per entry.
fn listed(o: &Output) -> Vec<(String, String, u64, String)> {
    assert_ok(o);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
            (s("path"), s("type"), v["size"].as_u64().unwrap(), s("link"))
        })
        .collect()
}

/// What `gfast ls` shows of a synced tree: every entry, names escaped as
/// rsync's itemize lines, one level without -R; and it changes nothing.
fn ls_shows_what_sync_left(to: To, ls: impl Fn(&[&str], &str) -> Output) {
    let src = TempDir::new("ls-src");
    tree(src.path());
    assert_ok(&to.sync(&[], &format!("{}/", src.path().display()), "b/"));
    let before = digest(&to.root());
    let all = listed(&ls(&["-R", "--json"], "b"));
    let find = |p: &str| all.iter().find(|e| e.0 == p).unwrap_or_else(|| panic!("{p} not listed: {all:?}")).clone();
    assert_eq!(find("a/b/c/big.bin"), ("a/b/c/big.bin".into(), "file".into(), 3 << 20, String::new()));
    assert_eq!(find("a/b").1, "dir");
    assert_eq!(find("link"), ("link".into(), "symlink".into(), 0, "a/one.txt".into()));
    assert_eq!(find("dangling").3, "/nonexistent/target");
    find("new\\#012line");
    find("bad\\#377utf8");
    find("it's café");
    // Every entry of the source, nothing else: 16 below the root.
    assert_eq!(all.len(), 16, "{all:?}");
    let top = listed(&ls(&["--json"], "b"));
    let mut names: Vec<&str> = top.iter().map(|e| e.0.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a", "bad\\#377utf8", "dangling", "empty", "it's café", "link", "logs", "new\\#012line"]);
    // -l: type and mode, size, time, name; a directory ends in /.
    let o = ls(&["-l"], "b/a/b/c");
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let line = out.lines().next().unwrap_or_default().to_string();
    assert!(line.starts_with("-rw") && line.contains(" 3145728 ") && line.ends_with(" big.bin"), "{out}");
    let o = ls(&[], "b/a");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "b/\none.txt\n");
    // A file: that file alone.
    let o = ls(&["--json"], "b/a/one.txt");
    assert_eq!(listed(&o), [("one.txt".to_string(), "file".to_string(), 3, String::new())]);
    // Nothing there: a clear error, exit 2.
    let o = ls(&[], "b/nothing-here");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(digest(&to.root()), before, "ls changed the destination");
}

both_transports!(ls_lists_a_daemon_tree, |t| {
    let to = To::daemon(t);
    let (key, addr) = match &to {
        To::Daemon(_, s) => (s.key.clone(), s.addr.clone()),
        To::Local(_) => unreachable!(),
    };
    ls_shows_what_sync_left(to, |args, sub| {
        Gfast::ls(&t).fingerprint(&key).args(args).arg(format!("gfast://{addr}/{sub}")).output()
    });
});

#[test]
fn ls_lists_a_local_tree() {
    let to = To::local();
    let base = to.root();
    ls_shows_what_sync_left(to, move |args, sub| Gfast::new("ls").args(args).arg(base.join(sub)).output());
}

both_transports!(ls_on_a_daemon_that_does_not_list_is_refused, |t| {
    let root = TempDir::new("ls-nolist");
    fs::create_dir_all(root.path().join("x")).unwrap();
    let s = Server::start(&t, root.path(), &[]);
    let o = Gfast::ls(&t).pin(&s).arg(s.url("x")).output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--allow-pull"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
});
