//! A copy between two local directories (`gfast push` or `gfast sync` to a
//! local path): both ends in this process, no sockets and no TLS. The walk
//! and, for a sync, the destination's listing are merged and decided exactly
//! as a remote sync does (`proto::sync`); directories and links are made in
//! walk order by this thread; files are copied by N workers, each through its
//! own handle on the destination (`storage::store::LocalDir`: an anonymous
//! file, copied into in the kernel with copy_file_range, given its mode and
//! mtime, then linked or renamed into place, so no reader ever sees a part).

use super::error::Error;
use super::send::plan::{check_overlap, judge, rel_to, sync_roots, Gone};
use super::send::{plan_roots, SyncPlan};
use super::stats::Stats;
use crate::proto::frame::{EntryKind, FileMeta};
use crate::proto::path::{components, show};
use crate::proto::sync::{itemize_delete, rsync_name, Merge};
use crate::storage::dest::DestError;
use crate::storage::journal::Identity;
use crate::storage::store::{Destination, Given, LocalDir, LocalTree, Opened, Reuse, Source, StoreConfig};
use crate::storage::walk::{Item, Prune};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// A local copy's settings.
pub(crate) struct LocalCopy<'a> {
    /// Files and trees to copy.
    pub sources: &'a [PathBuf],
    /// The destination as typed (a trailing `/` names a directory).
    pub dest: &'a Path,
    /// Files copied at once.
    pub workers: usize,
    /// A sync: compare first (else every entry is copied, as `push` does).
    pub sync: Option<&'a SyncPlan>,
    /// How files are written (`--fsync`).
    pub store: StoreConfig,
}

/// Failures kept with their reasons; the rest are counted.
const FAILURES_SHOWN: usize = 20;

/// What went wrong, shared by the workers.
#[derive(Default)]
struct Failures {
    count: u64,
    shown: Vec<String>,
}

impl Failures {
    fn add(&mut self, m: String) {
        self.count += 1;
        if self.shown.len() < FAILURES_SHOWN {
            self.shown.push(m);
        }
    }
}

/// One file for a worker: the walked entry and its path's components.
struct Job {
    it: Item,
}

/// Copies one file into place through `d`.
fn copy_one(d: &mut LocalDir, it: &Item) -> Result<u64, String> {
    let m = &it.meta;
    let shown = || show(&m.path);
    let comps = components(&m.path).map_err(|e| format!("{}: {e}", shown()))?;
    let src = std::fs::File::open(&it.source).map_err(|e| format!("cannot read '{}': {e}", it.source.display()))?;
    let ident = Identity {
        name: comps.last().map(|n| n.to_vec()).unwrap_or_default(),
        size: m.size,
        mtime_sec: m.mtime_sec,
        mtime_nsec: m.mtime_nsec,
        // One chunk whatever the size: an anonymous file, nothing left behind.
        chunk_size: u64::MAX,
    };
    let file = match d.open_file(&comps, &ident, Reuse::Fresh).map_err(|e| e.to_string())? {
        Opened::Partial(f, _, _) => f,
        Opened::InPlace => return Ok(0),
    };
    let res = file.copy_from(&src, m.size).map_err(|e| format!("cannot copy '{}': {e}", it.source.display()));
    // Like tar's "file changed as we read it": such a copy is not placed.
    let res = res.and_then(|_| {
        use std::os::unix::fs::MetadataExt;
        let now = src.metadata().map_err(|e| format!("'{}': {e}", it.source.display()))?;
        let same = now.len() == m.size && now.mtime() == m.mtime_sec && now.mtime_nsec() == i64::from(m.mtime_nsec);
        if same {
            Ok(())
        } else {
            Err(format!("'{}' changed while it was copied: not placed; copy it again", it.source.display()))
        }
    });
    let res = res.and_then(|_| {
        let given = Given {
            mode: Some(m.mode & 0o7777),
            mtime: (m.mtime_sec, m.mtime_nsec),
            owner: d.owner_of(m),
            xattrs: d.xattrs_of(m),
        };
        file.place(given).map_err(|e| format!("cannot put {} in place: {e}", shown()))
    });
    if res.is_err() {
        file.discard();
    }
    res.map(|_| m.size)
}

/// `-H`: links `it` to the copy of `first`, the first name of the same source
/// file, if that copy is in place (same size and mtime); else copies it whole.
fn link_one(d: &mut LocalDir, it: &Item, first: &[u8], (n, tag): (u64, &str)) -> Result<(), String> {
    let m = &it.meta;
    let comps = components(&m.path).map_err(|e| format!("{}: {e}", show(&m.path)))?;
    let target = components(first).map_err(|e| format!("{}: {e}", show(first)))?;
    let there = d.stat(&target);
    let placed = there.is_some_and(|(size, mtime)| size == m.size && mtime == (m.mtime_sec, m.mtime_nsec));
    if !placed {
        return copy_one(d, it).map(|_| ());
    }
    d.make_hardlink(&comps, &target, u64::MAX - n, tag).map_err(|e| e.to_string())
}

fn worker(
    root: PathBuf,
    store: StoreConfig,
    rx: Arc<Mutex<Receiver<Job>>>,
    stats: Arc<Stats>,
    fails: Arc<Mutex<Failures>>,
) {
    let mut d = match LocalDir::open(&root, store) {
        Ok(d) => d,
        Err(e) => {
            fails.lock().expect("failures").add(format!("cannot open '{}': {e}", root.display()));
            return;
        }
    };
    loop {
        let job = { rx.lock().expect("jobs").recv() };
        let Ok(Job { it }) = job else { return };
        match copy_one(&mut d, &it) {
            Ok(n) => {
                stats.bytes_sent.fetch_add(n, Relaxed);
                stats.bytes_done.fetch_add(n, Relaxed);
                stats.files_done.fetch_add(1, Relaxed);
            }
            Err(m) => fails.lock().expect("failures").add(m),
        }
    }
}

/// The main thread's part: directories and links in walk order, files to the workers.
struct Placer<'a> {
    d: LocalDir,
    tx: SyncSender<Job>,
    dirs: Vec<FileMeta>,
    stats: &'a Stats,
    fails: &'a Mutex<Failures>,
    tag: String,
    /// `-H`: the first name of each file with several, and the other names,
    /// linked once every file is copied.
    linked: std::collections::HashMap<(u64, u64), Vec<u8>>,
    links: Vec<(Item, Vec<u8>)>,
}

impl Placer<'_> {
    fn place(&mut self, mut it: Item) {
        if let (true, Some(key)) = (self.d.keeps_hardlinks(), it.inode) {
            if let Some(first) = self.linked.get(&key) {
                self.stats.files_total.fetch_add(1, Relaxed);
                let first = first.clone();
                return self.links.push((it, first));
            }
            self.linked.insert(key, it.meta.path.clone());
        }
        if self.d.keeps_xattrs() && it.meta.kind != EntryKind::Symlink {
            match crate::storage::xattrs::read(&it.source) {
                Ok(xs) => it.meta.xattrs = xs,
                Err(e) => {
                    let m = format!("'{}': cannot read its extended attributes: {e}", it.source.display());
                    return self.fails.lock().expect("failures").add(m);
                }
            }
        }
        let m = &it.meta;
        self.stats.files_total.fetch_add(1, Relaxed);
        self.stats.bytes_total.fetch_add(m.size, Relaxed);
        let comps = match components(&m.path) {
            Ok(c) => c,
            Err(e) => return self.fails.lock().expect("failures").add(format!("{}: {e}", show(&m.path))),
        };
        let res: Result<(), DestError> = match m.kind {
            EntryKind::File => {
                let _ = self.tx.send(Job { it });
                return;
            }
            EntryKind::Dir => self.d.make_dir(&comps).map(|_| self.dirs.push(m.clone())),
            EntryKind::Symlink => self.d.make_symlink(&comps, m, self.d.owner_of(m), &self.tag),
            k if !self.d.keeps_specials() || (k.is_device() && !crate::storage::owners::may_chown()) => {
                let why = if self.d.keeps_specials() { "device nodes need root" } else { "pass -D to copy it" };
                let m = format!("'{}': special file (fifo, socket or device) skipped: {why}", it.source.display());
                return self.fails.lock().expect("failures").add(m);
            }
            EntryKind::Fifo | EntryKind::Socket | EntryKind::CharDev | EntryKind::BlockDev => {
                let given = Given {
                    mode: Some(m.mode & 0o7777),
                    mtime: (m.mtime_sec, m.mtime_nsec),
                    owner: self.d.owner_of(m),
                    xattrs: None,
                };
                self.d.make_special(&comps, m, given, &self.tag)
            }
        };
        match res {
            Ok(()) => {
                self.stats.files_done.fetch_add(1, Relaxed);
            }
            Err(e) => self.fails.lock().expect("failures").add(e.to_string()),
        }
    }
}

/// Runs a local copy; returns the entries placed.
pub(crate) fn copy(cfg: &LocalCopy<'_>, stats: Arc<Stats>) -> Result<u64, Error> {
    let (root, target) = super::oneshot::split_dest(cfg.dest)
        .map_err(|e| Error::Usage(format!("cannot use '{}' as destination: {e}", cfg.dest.display())))?;
    let comps = components(&target).map_err(|e| Error::Usage(e.to_string()))?;
    let mut d =
        LocalDir::open(&root, cfg.store).map_err(|e| Error::Usage(format!("cannot open '{}': {e}", root.display())))?;
    let kind = d.target_kind(&comps).map_err(|e| Error::Usage(e.to_string()))?;
    let dest_is_dir = target.is_empty() || cfg.dest.as_os_str().as_bytes().ends_with(b"/");
    let mut src_dirs = Vec::new();
    for s in cfg.sources {
        let md = std::fs::metadata(s).map_err(|e| Error::Source(s.clone(), e))?;
        src_dirs.push(md.is_dir());
        // A tree copied into itself would never end.
        if md.is_dir() {
            if let (Ok(a), Ok(b)) = (s.canonicalize(), root.join(OsStrPath(&target).path()).canonicalize()) {
                if b.starts_with(&a) {
                    return Err(Error::Usage(format!(
                        "'{}' is inside '{}': a tree cannot be copied into itself",
                        cfg.dest.display(),
                        s.display()
                    )));
                }
            }
        }
    }
    let roots = match cfg.sync {
        Some(p) => {
            let r = sync_roots(cfg.sources, &src_dirs, &target, kind, dest_is_dir)?;
            check_overlap(&r, p)?;
            r
        }
        None => plan_roots(cfg.sources, &src_dirs, target.clone(), kind, dest_is_dir)?,
    };
    if cfg.sync.is_some() {
        stats.sync.on.store(true, Relaxed);
    }
    stats.lanes.store(cfg.workers as u64, Relaxed);
    let fails = Arc::new(Mutex::new(Failures::default()));
    let (tx, rx) = sync_channel::<Job>(cfg.workers * 64);
    let rx = Arc::new(Mutex::new(rx));
    let mut handles = Vec::new();
    for _ in 0..cfg.workers.max(1) {
        let (root, store, rx, stats, fails) = (root.clone(), cfg.store, rx.clone(), stats.clone(), fails.clone());
        handles.push(std::thread::spawn(move || worker(root, store, rx, stats, fails)));
    }
    let tag = format!("l{}", std::process::id());
    let mut placer = Placer {
        d,
        tx,
        dirs: Vec::new(),
        stats: &stats,
        fails: &fails,
        tag,
        linked: Default::default(),
        links: Vec::new(),
    };
    let walk_failed = std::cell::Cell::new(0u64);
    let on_walk_error = |e: crate::storage::walk::WalkError| {
        walk_failed.set(walk_failed.get() + 1);
        fails.lock().expect("failures").add(format!("cannot read '{}': {}", e.path.display(), e.error));
    };
    let mut removals = Vec::new();
    match cfg.sync {
        None => {
            for item in LocalTree::client().walk(roots, None) {
                match item {
                    Ok(it) => placer.place(it),
                    Err(e) => on_walk_error(e),
                }
            }
        }
        Some(plan) => removals = merge_roots(&mut placer, plan, roots, &target, &on_walk_error)?,
    }
    let Placer { mut d, tx, dirs, links, tag, .. } = placer;
    drop(tx);
    for h in handles {
        let _ = h.join();
    }
    for (n, (it, first)) in links.into_iter().enumerate() {
        link_one(&mut d, &it, &first, (n as u64, &tag)).unwrap_or_else(|m| fails.lock().expect("failures").add(m));
        stats.files_done.fetch_add(1, Relaxed);
    }
    let failed = fails.lock().expect("failures").count;
    if let Some(plan) = cfg.sync {
        remove(&mut d, (plan, &target), removals, (failed, walk_failed.get()), &stats);
    }
    // Deepest first: a parent's time is set after its children changed it.
    for m in dirs.iter().rev() {
        let Ok(c) = components(&m.path) else { continue };
        let given = Given {
            mode: Some(m.mode & 0o7777),
            mtime: (m.mtime_sec, m.mtime_nsec),
            owner: d.owner_of(m),
            xattrs: d.xattrs_of(m),
        };
        if let Err(e) = d.set_dir_meta(&c, given) {
            fails.lock().expect("failures").add(format!("cannot set the metadata of {}: {e}", show(&m.path)));
        }
    }
    let f = fails.lock().expect("failures");
    if f.count > 0 {
        for m in &f.shown {
            eprintln!("gfast: not copied: {m}");
        }
        if f.count as usize > f.shown.len() {
            eprintln!("gfast: … and {} more", f.count as usize - f.shown.len());
        }
        let total = Stats::get(&stats.files_total) + walk_failed.get();
        return Err(Error::Incomplete { failed: f.count, total, first: f.shown[0].clone() });
    }
    Ok(Stats::get(&stats.files_done))
}

/// A sync's walk of each root merged with the destination's listing of it;
/// returns what is gone from the source.
fn merge_roots(
    placer: &mut Placer<'_>,
    plan: &SyncPlan,
    roots: Vec<(PathBuf, Vec<u8>)>,
    target: &[u8],
    on_walk_error: &dyn Fn(crate::storage::walk::WalkError),
) -> Result<Vec<(Vec<u8>, EntryKind)>, Error> {
    let prune: Option<Prune> = (!plan.filter.is_empty()).then(|| {
        let (f, b) = (plan.filter.clone(), target.to_vec());
        Arc::new(move |p: &[u8], dir: bool| f.excluded(rel_to(&b, p), dir)) as Prune
    });
    let mut removals = Vec::new();
    let all: Vec<Vec<u8>> = roots.iter().map(|(_, d)| d.clone()).collect();
    for (src, dst) in roots {
        let dcomps = components(&dst).map_err(|e| Error::Usage(e.to_string()))?;
        let mut listing = placer.d.list(&dcomps, plan.rules.checksum).map_err(|e| Error::Usage(e.to_string()))?;
        let mut merge = Merge::new();
        let mut gone = Gone::new(plan, target, &dst, &all);
        let mut more = |merge: &mut Merge| -> Result<(), Error> {
            let mut batch = Vec::with_capacity(1024);
            let mut ended = true;
            for e in listing.by_ref() {
                match e {
                    Ok(e) => batch.push(e),
                    Err(e) => eprintln!("gfast: note: listing the destination: {e}"),
                }
                if batch.len() >= 1024 {
                    ended = false;
                    break;
                }
            }
            merge.feed(batch, ended).map_err(|e| Error::Protocol(e.to_string()))
        };
        for item in LocalTree::client().walk(vec![(src, dst.clone())], prune.clone()) {
            let it = match item {
                Ok(it) => it,
                Err(e) => {
                    on_walk_error(e);
                    continue;
                }
            };
            let rel = rel_to(&dst, &it.meta.path).to_vec();
            let matched = loop {
                if let Some(m) = merge.step(&rel) {
                    break m;
                }
                more(&mut merge)?;
            };
            for e in matched.gone {
                gone.take(e);
            }
            if judge(plan, target, &it, matched.existing.as_ref(), (0o7777, &placer.stats.sync)) {
                placer.place(it);
            }
        }
        let rest = loop {
            if let Some(r) = merge.finish() {
                break r;
            }
            more(&mut merge)?;
        };
        for e in rest {
            gone.take(e);
        }
        removals.extend(gone.out);
    }
    Ok(removals)
}

/// Removes what the sync found gone (after every file was copied, and only
/// when nothing failed), deepest first; itemizes each.
fn remove(
    d: &mut LocalDir,
    (plan, base): (&SyncPlan, &[u8]),
    removals: Vec<(Vec<u8>, EntryKind)>,
    (failed, walk_failed): (u64, u64),
    stats: &Stats,
) {
    let c = &stats.sync;
    if removals.is_empty() {
        return;
    }
    if failed > 0 || walk_failed > 0 {
        c.not_deleted.fetch_add(removals.len() as u64, Relaxed);
        eprintln!(
            "gfast: {} entries not deleted: {} (nothing is deleted after a failure)",
            removals.len(),
            if walk_failed > 0 { "some sources could not be read" } else { "a file of this run failed" }
        );
        return;
    }
    for (p, k) in removals.iter().rev() {
        if let Some(out) = plan.itemize {
            out(&itemize_delete(*k, &rsync_name(rel_to(base, p))));
        }
    }
    if plan.dry_run {
        c.deleted.fetch_add(removals.len() as u64, Relaxed);
        return;
    }
    for (p, _) in removals.iter().rev() {
        let res = components(p).map_err(|e| e.to_string()).and_then(|c| d.remove(&c).map_err(|e| e.to_string()));
        match res {
            Ok(()) => c.deleted.fetch_add(1, Relaxed),
            Err(m) => {
                eprintln!("gfast: {m}");
                c.not_deleted.fetch_add(1, Relaxed)
            }
        };
    }
}

/// A destination path (bytes) as a relative `Path`.
struct OsStrPath<'a>(&'a [u8]);

impl OsStrPath<'_> {
    fn path(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(self.0))
    }
}
