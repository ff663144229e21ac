//! The sending side of a sync (protocol-spec §5.15): asks the receiver what it
//! holds under each root (LIST), merges that listing with the walk as both
//! arrive (`proto::sync::Merge`), decides per entry (`proto::sync::decide`),
//! announces only what differs, and once every file of the run arrived has the
//! receiver remove what the source no longer has (`--delete`).

use super::{join, record_walk_failure, Announcer, Shared};
use crate::engine::error::Error;
use crate::engine::filter::Filter;
use crate::engine::stats::SyncCounts;
use crate::proto::frame::{EntryKind, FileMeta, TargetKind};
use crate::proto::path::{components, show};
use crate::proto::sync::{decide, itemize, itemize_delete, rsync_name, Change, Listed, Merge, Rules};
use crate::storage::walk::{Item, Prune};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// What a sync compares and does, besides sending.
#[derive(Debug, Clone)]
pub(crate) struct SyncPlan {
    /// When a file counts as unchanged.
    pub rules: Rules,
    /// Remove what the source does not have (`--delete`).
    pub delete: bool,
    /// Remove excluded entries too (`--delete-excluded`).
    pub delete_excluded: bool,
    /// Include and exclude rules.
    pub filter: Filter,
    /// Decide and report, change nothing (`--dry-run`).
    pub dry_run: bool,
    /// Where each itemize line goes (`--itemize-changes`, and every dry run).
    pub itemize: Option<fn(&str)>,
    /// The destination is another host (rsync's `<` "sent" in itemize lines).
    pub remote: bool,
    /// `gfast ls`: no sources; every entry of the destination's listing goes
    /// here, with the listing's mode mask, and nothing is sent or changed.
    pub list: Option<ListShow>,
}

/// Where `gfast ls` shows each listed entry (and the mode mask of its listing).
#[derive(Clone)]
pub(crate) struct ListShow(pub Arc<ShowEntry>);

/// Shows one listed entry, given the listing's mode mask.
pub(crate) type ShowEntry = dyn Fn(&Listed, u32) + Send + Sync;

impl std::fmt::Debug for ListShow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListShow")
    }
}

/// `gfast ls` against a receiver: asks for the listing of `dest` and shows it
/// as it arrives; announces nothing.
pub(super) fn list_walk(sh: &Shared, dest: Vec<u8>, show: ListShow, rx: Receiver<ListBatch>) {
    {
        let mut g = sh.lock();
        g.request_listing(dest, false);
        sh.wake();
    }
    loop {
        let Ok(b) = rx.recv() else { return };
        for e in &b.entries {
            (show.0)(e, b.mask);
        }
        if b.last {
            break;
        }
    }
    let mut g = sh.lock();
    g.close_input();
    sh.wake_after(&g);
}

/// One LISTED frame, as the control reader hands it to the walk.
pub(crate) struct ListBatch {
    /// Entries, in listing order.
    pub entries: Vec<Listed>,
    /// The listing of the root is complete.
    pub last: bool,
    /// Permission bits the receiver keeps.
    pub mask: u32,
}

/// The path of `p` below `base` (both receiver paths); `p` itself when `base`
/// is the receiver's root.
pub(crate) fn rel_to<'a>(base: &[u8], p: &'a [u8]) -> &'a [u8] {
    if base.is_empty() {
        return p;
    }
    match p.strip_prefix(base) {
        Some([]) => &[],
        Some([b'/', rest @ ..]) => rest,
        _ => p,
    }
}

/// True when receiver path `p` is `dir` or below it.
fn under(p: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || p == dir || (p.starts_with(dir) && p.get(dir.len()) == Some(&b'/'))
}

/// With `--delete`, two sources landing in the same place would each see the
/// other's files as gone: refused. (One landing inside another's is fine: the
/// outer one's deletions leave the inner root alone.)
pub(crate) fn check_overlap(roots: &[(PathBuf, Vec<u8>)], plan: &SyncPlan) -> Result<(), Error> {
    if !plan.delete {
        return Ok(());
    }
    for (i, (a, ra)) in roots.iter().enumerate() {
        if let Some((b, _)) = roots[i + 1..].iter().find(|(_, rb)| rb == ra) {
            return Err(Error::Usage(format!(
                "'{}' and '{}' land in the same place ({}): --delete would remove each other's files; sync them into separate directories",
                a.display(),
                b.display(),
                if ra.is_empty() { "the destination root".to_string() } else { show(ra) }
            )));
        }
    }
    Ok(())
}

/// Where each source lands under the receiver's root, by rsync's rule: `SRC/`
/// (a directory) is its contents, `SRC` is `SRC` itself inside the destination;
/// a single file onto a name that is not a directory takes that name.
pub(crate) fn sync_roots(
    sources: &[PathBuf],
    src_dirs: &[bool],
    dest: &[u8],
    kind: TargetKind,
    dest_is_dir: bool,
) -> Result<Vec<(PathBuf, Vec<u8>)>, Error> {
    use std::os::unix::ffi::OsStrExt;
    let shown = if dest.is_empty() { "the destination root".to_string() } else { show(dest) };
    let one_file = sources.len() == 1 && !src_dirs[0];
    if one_file && kind != TargetKind::Dir && !dest_is_dir {
        if dest.is_empty() {
            return Err(Error::Usage("the destination cannot be the receiver's root itself for a single file".into()));
        }
        return Ok(vec![(sources[0].clone(), dest.to_vec())]);
    }
    match kind {
        TargetKind::Dir | TargetKind::Missing => {}
        TargetKind::File => return Err(Error::Usage(format!("destination {shown} is a file, not a directory"))),
        TargetKind::Other => return Err(Error::Usage(format!("destination {shown} is not a file or directory"))),
    }
    let mut roots = Vec::new();
    for (s, &is_dir) in sources.iter().zip(src_dirs) {
        let b = s.as_os_str().as_bytes();
        let contents = is_dir && (b.ends_with(b"/") || b.ends_with(b"/.") || b == b".");
        let d = if contents { dest.to_vec() } else { join(dest, &super::base_name(s)?) };
        if !d.is_empty() {
            components(&d).map_err(|e| Error::Usage(e.to_string()))?;
        }
        roots.push((s.clone(), d));
    }
    Ok(roots)
}

/// The receiver's entries that the walk did not meet: left alone, protected by
/// a filter, or to be removed.
pub(crate) struct Gone<'a> {
    plan: &'a SyncPlan,
    /// The destination named on the command line (filters match below it).
    base: &'a [u8],
    /// The root being merged.
    root: &'a [u8],
    /// An excluded directory: nothing in it is removed.
    protect: Option<Vec<u8>>,
    /// Other roots of the run below this one: another source lands there, so
    /// nothing at or below them is gone.
    others: Vec<Vec<u8>>,
    /// What is to be removed, in listing order, with its kind.
    pub(crate) out: Vec<(Vec<u8>, EntryKind)>,
}

impl<'a> Gone<'a> {
    /// Nothing gone yet under `root`, one of the run's `roots`.
    pub(crate) fn new(plan: &'a SyncPlan, base: &'a [u8], root: &'a [u8], roots: &[Vec<u8>]) -> Self {
        let others = roots.iter().filter(|r| r.as_slice() != root && under(r, root)).cloned().collect();
        Gone { plan, base, root, protect: None, others, out: Vec::new() }
    }

    /// One of the receiver's entries the walk did not meet.
    pub(crate) fn take(&mut self, e: Listed) {
        let full = join(self.root, &e.path);
        if let Some(p) = &self.protect {
            if under(&full, p) {
                return;
            }
            self.protect = None;
        }
        if self.others.iter().any(|o| under(&full, o)) {
            return;
        }
        let excluded = self.plan.filter.excluded(rel_to(self.base, &full), e.kind == EntryKind::Dir);
        if excluded && !self.plan.delete_excluded {
            if e.kind == EntryKind::Dir {
                self.protect = Some(full);
            }
            return;
        }
        if self.plan.delete {
            self.out.push((full, e.kind));
        }
    }
}

/// Waits for the next batch of the listing and feeds it to `merge`; false when
/// the session stopped (the reason is recorded already).
fn feed(sh: &Shared, rx: &Receiver<ListBatch>, merge: &mut Merge, mask: &mut u32) -> bool {
    loop {
        if sh.stopped() {
            return false;
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(b) => {
                *mask = b.mask;
                if let Err(e) = merge.feed(b.entries, b.last) {
                    sh.fail(Error::Protocol(e.to_string()));
                    return false;
                }
                return true;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if !sh.stopped() {
                    sh.fail(Error::PeerVanished("the listing stopped before its end".into()));
                }
                return false;
            }
        }
    }
}

/// The whole-file checksum of a source file, for `--checksum`.
fn source_sum(it: &Item) -> Option<[u8; 16]> {
    let f = std::fs::File::open(&it.source).ok()?;
    crate::storage::dest::whole_sum(f).ok()
}

/// How an entry's name shows in an itemize line: below the destination named
/// on the command line, `./` for that destination itself.
pub(crate) fn item_name(base: &[u8], m: &FileMeta) -> String {
    let r = rel_to(base, &m.path);
    if r.is_empty() {
        "./".into()
    } else {
        rsync_name(r)
    }
}

/// Decides one walked entry against the receiver's, counts and reports the
/// decision, and says whether the entry goes to the receiver. `sum` gives the
/// source's whole-file checksum when `--checksum` needs it.
pub(crate) fn judge(
    plan: &SyncPlan,
    base: &[u8],
    it: &Item,
    existing: Option<&Listed>,
    (mask, c): (u32, &SyncCounts),
) -> bool {
    let m = &it.meta;
    let same_size_file =
        existing.is_some_and(|e| e.kind == EntryKind::File && m.kind == EntryKind::File && e.size == m.size);
    let sum = (plan.rules.checksum && same_size_file).then(|| source_sum(it)).flatten();
    let change = decide(m, sum, existing, &plan.rules, mask);
    c.considered.fetch_add(1, Relaxed);
    match change {
        Change::Create | Change::Replace => c.created.fetch_add(1, Relaxed),
        Change::Update(_) | Change::Touch(_) => c.updated.fetch_add(1, Relaxed),
        Change::Same => c.unchanged.fetch_add(1, Relaxed),
    };
    if m.kind == EntryKind::File {
        let counter = if change.sends() { &c.bytes_to_send } else { &c.bytes_unchanged };
        counter.fetch_add(m.size, Relaxed);
    }
    if let (Some(out), Some(line)) = (plan.itemize, itemize(change, m, &item_name(base, m), plan.remote)) {
        out(&line);
    }
    // Directories always go: they are created, or their time is set once
    // their contents are done (one small frame each).
    (change.sends() || m.kind == EntryKind::Dir) && !plan.dry_run
}

/// The walk of a sync: LIST for each root, merged with the walk of that root.
pub(super) fn sync_walk(
    sh: &Shared,
    roots: Vec<(PathBuf, Vec<u8>)>,
    plan: &SyncPlan,
    base: Vec<u8>,
    rx: Receiver<ListBatch>,
) {
    {
        let mut g = sh.lock();
        for (_, d) in &roots {
            g.request_listing(d.clone(), plan.rules.checksum);
        }
        sh.wake();
    }
    let prune: Option<Prune> = (!plan.filter.is_empty()).then(|| {
        let (f, b) = (plan.filter.clone(), base.clone());
        Arc::new(move |p: &[u8], dir: bool| f.excluded(rel_to(&b, p), dir)) as Prune
    });
    let mut removals = Vec::new();
    let mut mask = 0o7777;
    let mut out = Announcer::new();
    let all: Vec<Vec<u8>> = roots.iter().map(|(_, d)| d.clone()).collect();
    for (src, dst) in roots {
        let mut merge = Merge::new();
        let mut gone = Gone::new(plan, &base, &dst, &all);
        for item in sh.source.walk(vec![(src, dst.clone())], prune.clone()) {
            if sh.stopped() {
                return;
            }
            let it = match item {
                Ok(it) => it,
                Err(e) => {
                    record_walk_failure(sh, e);
                    continue;
                }
            };
            let rel = rel_to(&dst, &it.meta.path).to_vec();
            let matched = loop {
                if let Some(m) = merge.step(&rel) {
                    break m;
                }
                // What is judged goes out before this waits for more of the listing.
                out.flush(sh);
                if !feed(sh, &rx, &mut merge, &mut mask) {
                    return;
                }
            };
            for e in matched.gone {
                gone.take(e);
            }
            if judge(plan, &base, &it, matched.existing.as_ref(), (mask, &sh.stats.sync)) {
                out.add(sh, it);
            }
            // A long run of unchanged entries (or --checksum's hashing) sends
            // nothing else: the receiver must not take it for silence.
            sh.keep_alive();
        }
        out.flush(sh);
        let rest = loop {
            if let Some(r) = merge.finish() {
                break r;
            }
            if !feed(sh, &rx, &mut merge, &mut mask) {
                return;
            }
        };
        for e in rest {
            gone.take(e);
        }
        removals.extend(gone.out);
    }
    out.finish(sh);
    finish_removals(sh, plan, &base, removals);
    let mut g = sh.lock();
    g.close_input();
    sh.wake_after(&g);
}

/// Reports the removals and hands them to the sender, deepest first, unless
/// the walk itself missed something (then nothing is removed: what could not
/// be read may still exist).
fn finish_removals(sh: &Shared, plan: &SyncPlan, base: &[u8], removals: Vec<(Vec<u8>, EntryKind)>) {
    let c = &sh.stats.sync;
    if removals.is_empty() {
        return;
    }
    let walk_failed = sh.walk_failures.lock().expect("walk failures").0 > 0;
    if walk_failed {
        c.not_deleted.fetch_add(removals.len() as u64, Relaxed);
        say!(
            "gfast: {} entries not deleted: some sources could not be read (deleting with an incomplete walk could remove what still exists)",
            removals.len()
        );
        return;
    }
    // Reported as they go: everything inside a directory before it. A real
    // run shows them once they were carried out.
    let lines = removals.iter().rev().map(|(p, k)| itemize_delete(*k, &rsync_name(rel_to(base, p))));
    if plan.dry_run {
        if let Some(out) = plan.itemize {
            lines.for_each(|l| out(&l));
        }
        c.deleted.fetch_add(removals.len() as u64, Relaxed);
        return;
    }
    if plan.itemize.is_some() {
        *sh.removal_lines.lock().expect("removal lines") = lines.collect();
    }
    // Reversed listing order: everything inside a directory before it.
    let paths: Vec<Vec<u8>> = removals.into_iter().rev().map(|(p, _)| p).collect();
    sh.lock().set_removals(paths);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_the_destination() {
        assert_eq!(rel_to(b"", b"a/b"), b"a/b");
        assert_eq!(rel_to(b"a", b"a/b"), b"b");
        assert_eq!(rel_to(b"a", b"a"), b"");
        assert_eq!(rel_to(b"a", b"ab/c"), b"ab/c");
    }

    #[test]
    fn the_trailing_slash_rule() {
        let p = |s: &str| PathBuf::from(s);
        let r = sync_roots(&[p("src")], &[true], b"dst", TargetKind::Dir, false).unwrap();
        assert_eq!(r[0].1, b"dst/src");
        let r = sync_roots(&[p("src/")], &[true], b"dst", TargetKind::Missing, false).unwrap();
        assert_eq!(r[0].1, b"dst");
        let r = sync_roots(&[p("/x/src/")], &[true], b"", TargetKind::Dir, true).unwrap();
        assert_eq!(r[0].1, b"");
        // A single file onto a new name takes it; into a directory, its own.
        let r = sync_roots(&[p("f")], &[false], b"new", TargetKind::Missing, false).unwrap();
        assert_eq!(r[0].1, b"new");
        let r = sync_roots(&[p("d/f")], &[false], b"new", TargetKind::Missing, true).unwrap();
        assert_eq!(r[0].1, b"new/f");
        assert!(sync_roots(&[p("a"), p("b")], &[true, false], b"f", TargetKind::File, false).is_err());
    }
}
