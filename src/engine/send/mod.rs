//! The sending role of a session: walks the sources, announces entries on the
//! control connection and stripes chunks over the lanes. It runs on the client for
//! `push` and on the one-shot receiver of a `pull`.
//!
//! Threads: one walker, one control writer, one control reader, and per lane one
//! writer (reads the source, hashes, sends) and one ack reader. They share the
//! sans-I/O [`Sender`] behind a mutex and wake each other with one condition variable.

use super::error::Error;
use super::stats::Stats;
use crate::proto::chunk::{sparse_layout, BlockEncoder};
use crate::proto::error::code;
use crate::proto::frame::{ChunkHead, Frame, Limits, TargetKind, BLOCK_RAW, CHUNK_COMPRESSED, SPARSE_GRAIN};
use crate::proto::handshake::Negotiated;
use crate::proto::hash::ChunkHasher;
use crate::proto::lane::LaneWindow;
use crate::proto::path::{components, show};
use crate::proto::sender::Expect;
use crate::proto::sender::{Failure, Sender};
use crate::storage::store::{Source, SourceFile};
use crate::transport::conn::{Closer, Conn, ConnReader, ConnWriter};
use crate::transport::framed::{frame_buffered, read_frame, write_frame, WireError};
use std::io::{BufReader, BufWriter, Write};
use std::net::Shutdown;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The connections of an established session, as the sending side uses them.
pub(crate) struct Wired {
    /// The control connection.
    pub ctl: Conn,
    /// Its reading half.
    pub ctl_r: BufReader<ConnReader>,
    /// Its writing half.
    pub ctl_w: BufWriter<ConnWriter>,
    /// The data lanes, in lane order.
    pub lanes: Vec<(Conn, BufReader<ConnReader>, ConnWriter)>,
    /// Cap on the sending rate, bits per second, shared evenly by the lanes.
    pub rate: Option<u64>,
    /// False when each lane's JOINED is still to be read (a client sends behind JOIN).
    pub joined: bool,
    /// A daemon serving a pull: files are opened under this root only, never
    /// through a symlink (the walk sends links as links already).
    pub source: Box<dyn Source>,
    /// What the handshake agreed on.
    pub n: Negotiated,
    /// Owners go by number only, no names (`--numeric-ids`).
    pub numeric_ids: bool,
}

/// Where the sources go.
pub(crate) enum Target {
    /// Push: TARGET went out with the session's first frames (before the lanes
    /// opened); its TARGET_INFO is still to be read. The destination path and
    /// whether it was written as a directory.
    Asked(Vec<u8>, bool),
    /// The receiver told us already (PULL): path, what is there, written as a directory.
    Known(Vec<u8>, TargetKind, bool),
}

/// How many walked entries may wait for announcement; bounds memory for huge trees.
const QUEUE_MAX: usize = 4096;
/// Failures listed one per line at the end of a push; the rest are counted.
const MAX_FAILURES_SHOWN: usize = 20;
/// Size of the piece a lane reads from the source and writes to the socket at once.
const PIECE: usize = 1 << 20;

struct Shared {
    sender: Mutex<Sender<Arc<PathBuf>>>,
    /// The walker, the control writer and the main thread wait here.
    cv: Condvar,
    /// The lane writers wait here: woken only for a chunk to send, a window
    /// freed or the end (not for every file's every step, which on small files
    /// woke every lane several times a file).
    lanes_cv: Condvar,
    /// The main thread waits here, for the end alone.
    end_cv: Condvar,
    stats: Arc<Stats>,
    abort: AtomicBool,
    error: Mutex<Option<Error>>,
    session_done: AtomicBool,
    walk_failures: Mutex<(u64, Vec<Failure>)>,
    sockets: Mutex<Vec<Closer>>,
    /// Test hook (GFAST_FAULT_CORRUPT_EVERY=N): corrupt the first sending of every
    /// Nth chunk on the wire, after hashing, to exercise verification and resend.
    corrupt_every: u64,
    first_sendings: std::sync::atomic::AtomicU64,
    source: Box<dyn Source>,
    compress: bool,
    /// Holes go as ZERO blocks (capability bit 9).
    sparse: bool,
    /// What FILE says of owners (capability bit 10).
    owners: Owners,
    /// FILE carries extended attributes (capability bit 11).
    xattrs: bool,
    /// FIFOs, sockets and devices may be announced (capability bit 12).
    specials: bool,
    /// Files with several names go once, the other names as hard links (bit 13).
    hardlinks: bool,
    /// When a lane last told the receiver this end is busy checking chunks
    /// (milliseconds since `born`): see [`Shared::keep_alive`].
    born: Instant,
    alive_at: std::sync::atomic::AtomicU64,
    /// Sync: where the control reader hands the receiver's listing to the walk.
    list_tx: Mutex<Option<std::sync::mpsc::Sender<plan::ListBatch>>>,
    /// Sync: the itemize lines of the removals handed to the sender, shown
    /// once they were carried out (a failure in the run cancels them).
    removal_lines: Mutex<Vec<String>>,
}

/// How often lanes busy checking chunks against the source (resume, delta)
/// say so: well inside any --timeout (at least 1 s).
const KEEPALIVE_EVERY: Duration = Duration::from_millis(500);

impl Shared {
    /// A lane checked a chunk instead of sending it: at most every
    /// [`KEEPALIVE_EVERY`] a keepalive NOTICE goes out, so a receiver does not
    /// take a long check of a resumed file for a silent sender (§4.19).
    fn keep_alive(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.alive_at.load(Relaxed);
        if now.saturating_sub(last) < KEEPALIVE_EVERY.as_millis() as u64 {
            return;
        }
        if self.alive_at.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            self.lock().keep_alive();
            self.wake();
        }
    }

    /// A change the walker, the control writer or the main thread may wait for.
    fn wake(&self) {
        self.cv.notify_all();
    }

    /// A change the lanes may wait for as well: a chunk to send, room in a
    /// lane's window, the end.
    fn wake_all(&self) {
        self.cv.notify_all();
        self.lanes_cv.notify_all();
    }

    /// The session ended or failed: everyone.
    fn wake_end(&self) {
        self.wake_all();
        self.end_cv.notify_all();
    }

    /// After a frame from the receiver: the lanes only if there is a chunk for
    /// them or nothing more to do.
    fn wake_after(&self, g: &Sender<Arc<PathBuf>>) {
        if g.has_chunk() || g.is_finished() {
            self.wake_all();
        } else {
            self.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sender<Arc<PathBuf>>> {
        self.sender.lock().expect("sender lock")
    }

    /// Records the first error and stops every thread.
    fn fail(&self, e: Error) {
        {
            let mut g = self.error.lock().expect("error lock");
            if g.is_none() && !self.session_done.load(SeqCst) {
                *g = Some(e);
            }
        }
        self.abort.store(true, SeqCst);
        for s in self.sockets.lock().expect("sockets").iter() {
            s.shutdown(Shutdown::Both);
        }
        let _g = self.lock();
        self.wake_end();
    }

    /// A data lane broke: the control connection usually carries the reason (the
    /// server sends ERROR there before it cuts the lanes), so give it a moment to
    /// arrive and win before reporting the bare connection error.
    fn fail_lane(&self, e: Error) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut g = self.lock();
        while !self.stopped() && !self.session_done.load(SeqCst) && Instant::now() < deadline {
            g = self.cv.wait_timeout(g, Duration::from_millis(50)).expect("cv").0;
        }
        drop(g);
        self.fail(e);
    }

    /// Opens a source file to read (under the served root for a daemon's pull).
    fn open_source(&self, path: &Path) -> std::io::Result<Box<dyn SourceFile>> {
        self.source.open(path)
    }

    fn stopped(&self) -> bool {
        self.abort.load(SeqCst)
    }
}

/// Maps a frame-level failure to what the user is told.
pub(crate) fn wire_err(e: WireError) -> Error {
    match e {
        WireError::Decode(d) => Error::Protocol(d.to_string()),
        WireError::Closed => Error::PeerVanished("the server closed the connection".into()),
        WireError::Io(e) => Error::PeerVanished(e.to_string()),
    }
}

/// The last path component a source lands under, as `cp -r` names it.
fn base_name(p: &Path) -> Result<Vec<u8>, Error> {
    let name = match p.file_name() {
        Some(n) => n.as_bytes().to_vec(),
        None => {
            let canon = p.canonicalize().map_err(|e| Error::Source(p.into(), e))?;
            canon.file_name().map(|n| n.as_bytes().to_vec()).ok_or_else(|| {
                Error::Usage(format!("cannot copy '{}' by name: name a directory below it", p.display()))
            })?
        }
    };
    Ok(name)
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut v = a.to_vec();
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

/// Where each source lands under the receiver's root (cp -r semantics, §5.3),
/// given what is at the destination now.
pub(crate) fn plan_roots(
    sources: &[PathBuf],
    src_dirs: &[bool],
    dest: Vec<u8>,
    kind: TargetKind,
    dest_is_dir: bool,
) -> Result<Vec<(PathBuf, Vec<u8>)>, Error> {
    let shown = if dest.is_empty() { "the destination root".to_string() } else { show(&dest) };
    let into_dir = match kind {
        TargetKind::Dir => true,
        TargetKind::Missing if dest_is_dir => true,
        TargetKind::Missing if sources.len() == 1 => false,
        TargetKind::Missing => {
            return Err(Error::Usage(format!(
                "destination {shown} does not exist and several sources need a directory: end it with '/' to create it"
            )))
        }
        TargetKind::File if sources.len() == 1 && !src_dirs[0] && !dest_is_dir => false,
        TargetKind::File => return Err(Error::Usage(format!("destination {shown} is a file, not a directory"))),
        TargetKind::Other => return Err(Error::Usage(format!("destination {shown} is not a file or directory"))),
    };
    let mut roots = Vec::new();
    for s in sources {
        let dest = if into_dir { join(&dest, &base_name(s)?) } else { dest.clone() };
        if dest.is_empty() {
            return Err(Error::Usage("the destination cannot be the receiver's root itself for a single file".into()));
        }
        components(&dest).map_err(|e| Error::Usage(e.to_string()))?;
        roots.push((s.clone(), dest));
    }
    Ok(roots)
}

/// Runs the sending role to completion over `w`; returns the entries confirmed.
/// With `sync`, only what differs from the receiver's listing is sent (§5.15).
pub(crate) fn run_sender(
    w: Wired,
    sources: &[PathBuf],
    target: Target,
    stats: Arc<Stats>,
    sync: Option<&SyncPlan>,
) -> Result<u64, Error> {
    let (chunk_size, resume, window) = (w.n.chunk_size, w.n.resume(), w.n.window());
    let mut src_dirs = Vec::new();
    for s in sources {
        let md = std::fs::metadata(s).map_err(|e| Error::Source(s.clone(), e))?;
        src_dirs.push(md.is_dir());
    }
    let (ctl, mut r, lanes, joined, early_done) = (w.ctl, w.ctl_r, w.lanes, w.joined, w.n.early_done());
    let (source, compress, delta, sparse) = (w.source, w.n.compress(), w.n.delta(), w.n.sparse());
    let (xattrs, specials, hardlinks) = (w.n.xattrs(), w.n.specials(), w.n.hardlinks());
    let owners = match (w.n.owners(), w.numeric_ids) {
        (false, _) => Owners::Not,
        (true, true) => Owners::Numbers,
        (true, false) => Owners::Named,
    };
    if let Some(bits) = w.rate {
        // Each lane is paced at its share, in bytes per second.
        let share = (bits / 8 / lanes.len().max(1) as u64).max(1);
        for t in lanes.iter().filter_map(|l| l.0.tcp()) {
            crate::transport::tcp::set_pacing(t, share)
                .map_err(|e| Error::Io("setting the pacing rate (SO_MAX_PACING_RATE)".into(), e))?;
        }
    }
    let mut buf = Vec::new();
    let limits = Limits::control();
    let pulled = matches!(target, Target::Known(..));
    let (dest, kind, dest_is_dir) = match target {
        Target::Known(p, k, d) => (p, k, d),
        Target::Asked(p, d) => match read_frame(&mut r, &limits, &mut buf).map_err(wire_err)? {
            Frame::TargetInfo { kind } => (p, kind, d),
            Frame::Error { code, message } => return Err(Error::Remote(code, message)),
            _ => return Err(Error::Protocol("expected TARGET_INFO".into())),
        },
    };
    let listed = w.n.sync();
    let list_only = sync.and_then(|p| p.list.clone());
    if list_only.is_some() {
        if !listed {
            return Err(Error::Usage(
                "this daemon does not show its tree to a token holder: start it with --allow-pull to list it".into(),
            ));
        }
        if kind == TargetKind::Missing {
            return Err(Error::Usage(format!("nothing at {} on the far end: check the path", show(&dest))));
        }
    }
    if let (Some(p), None) = (sync, &list_only) {
        if !listed && (p.delete || p.dry_run || p.rules != Default::default()) {
            return Err(Error::Usage(
                "this daemon does not show its tree to a token holder, which sync needs to --delete, compare (--checksum, --size-only, --update, --ignore-existing) or --dry-run: start it with --allow-pull".into(),
            ));
        }
        if !listed {
            say!("gfast: note: this daemon does not list its tree (start it with --allow-pull for that): files already in place are skipped one by one");
        }
    }
    let mut w = w.ctl_w;
    let planned = match sync {
        Some(_) if list_only.is_some() => Ok(Vec::new()),
        Some(p) => plan::sync_roots(sources, &src_dirs, &dest, kind, dest_is_dir)
            .and_then(|r| plan::check_overlap(&r, p).map(|_| r)),
        None => plan_roots(sources, &src_dirs, dest.clone(), kind, dest_is_dir),
    };
    let roots = match planned {
        Ok(r) => r,
        Err(e) => {
            if pulled {
                // The puller's destination does not fit what is sent: it is the
                // one to be told (its control reader takes the ERROR).
                let f = Frame::Error { code: code::PATH_REFUSED, message: e.to_string() };
                let _ = write_frame(&mut w, &f, &mut Vec::new()).and_then(|_| w.flush());
            }
            return Err(e);
        }
    };
    let mut sender = Sender::new(chunk_size as u64, window);
    sender.set_resume(resume);
    sender.set_early_done(early_done);
    sender.set_delta(delta);
    if hardlinks {
        sender.with_hardlinks();
    }
    let shared = Arc::new(Shared {
        sender: Mutex::new(sender),
        cv: Condvar::new(),
        lanes_cv: Condvar::new(),
        end_cv: Condvar::new(),
        stats: stats.clone(),
        abort: AtomicBool::new(false),
        error: Mutex::new(None),
        session_done: AtomicBool::new(false),
        walk_failures: Mutex::new((0, Vec::new())),
        sockets: Mutex::new(lanes.iter().map(|l| &l.0).chain([&ctl]).filter_map(|c| c.closer().ok()).collect()),
        corrupt_every: std::env::var("GFAST_FAULT_CORRUPT_EVERY").ok().and_then(|v| v.parse().ok()).unwrap_or(0),
        first_sendings: std::sync::atomic::AtomicU64::new(0),
        source,
        compress,
        sparse,
        owners,
        xattrs,
        specials,
        hardlinks,
        born: Instant::now(),
        alive_at: std::sync::atomic::AtomicU64::new(0),
        list_tx: Mutex::new(None),
        removal_lines: Mutex::new(Vec::new()),
    });
    if sync.is_some() {
        stats.sync.on.store(true, SeqCst);
    }

    let mut handles = Vec::new();
    {
        let sh = shared.clone();
        match sync {
            Some(_) if list_only.is_some() => {
                let (tx, rx) = std::sync::mpsc::channel();
                *shared.list_tx.lock().expect("list") = Some(tx);
                let (d, show) = (dest.clone(), list_only.clone().expect("list"));
                handles.push(std::thread::spawn(move || plan::list_walk(&sh, d, show, rx)));
            }
            Some(p) if listed => {
                let (tx, rx) = std::sync::mpsc::channel();
                *shared.list_tx.lock().expect("list") = Some(tx);
                let p = p.clone();
                handles.push(std::thread::spawn(move || plan::sync_walk(&sh, roots, &p, dest, rx)));
            }
            Some(p) => {
                let f = p.filter.clone();
                let prune = (!f.is_empty()).then(|| {
                    Arc::new(move |q: &[u8], d: bool| f.excluded(plan::rel_to(&dest, q), d))
                        as crate::storage::walk::Prune
                });
                handles.push(std::thread::spawn(move || walk(&sh, roots, prune)));
            }
            None => handles.push(std::thread::spawn(move || walk(&sh, roots, None))),
        }
    }
    let ctl_writer = {
        let sh = shared.clone();
        std::thread::spawn(move || control_writer(&sh, w))
    };
    {
        let sh = shared.clone();
        handles.push(std::thread::spawn(move || control_reader(&sh, r)));
    }
    let mut lane_conns = Vec::new();
    for (i, (c, r, w)) in lanes.into_iter().enumerate() {
        let inflight = Arc::new(Mutex::new(LaneWindow::new(u64::from(chunk_size))));
        let (sh, inf) = (shared.clone(), inflight.clone());
        handles.push(std::thread::spawn(move || lane_writer(&sh, i, w, &inf)));
        let sh = shared.clone();
        handles.push(std::thread::spawn(move || ack_reader(&sh, i, r, &inflight, joined)));
        lane_conns.push(c);
    }

    // Wait for SESSION_DONE or the first error.
    {
        let mut g = shared.lock();
        while !shared.session_done.load(SeqCst) && !shared.stopped() {
            g = shared.end_cv.wait_timeout(g, Duration::from_millis(200)).expect("cv").0;
        }
    }
    // What the kernel saw on each lane, for the report and for advice.
    *shared.stats.lane_tcp.lock().expect("stats") =
        lane_conns.iter().filter_map(|c| c.tcp().and_then(crate::transport::tcp::tcp_stats)).collect();
    // The control writer ends the control connection cleanly (close_notify) once
    // SESSION_DONE is in; only then cut the sockets, or the peer sees a broken end.
    let _ = ctl_writer.join();
    let clean_end = shared.session_done.load(SeqCst);
    for c in &lane_conns {
        c.shutdown(Shutdown::Write);
        if clean_end {
            // Nothing more comes on the lanes: end their readers now rather than
            // a round trip later, when the peer's end of each lane arrives.
            c.shutdown(Shutdown::Read);
        }
    }
    ctl.shutdown(Shutdown::Write);
    let first_error = shared.error.lock().expect("error").take();
    if let Some(e) = first_error {
        shared.fail(Error::Protocol("stopping".into()));
        for h in handles {
            let _ = h.join();
        }
        return Err(e);
    }
    for h in handles {
        let _ = h.join();
    }
    let tx = shared.lock();
    let rm = tx.removal();
    if sync.is_some() {
        let c = &shared.stats.sync;
        if !sync.is_some_and(|p| p.dry_run) {
            c.deleted.store(rm.removed, Relaxed);
        }
        c.not_deleted.fetch_add(rm.skipped + rm.failed, Relaxed);
        if let (0, Some(out)) = (rm.skipped, sync.and_then(|p| p.itemize)) {
            for l in shared.removal_lines.lock().expect("removal lines").iter() {
                out(l);
            }
        }
        if rm.skipped > 0 {
            say!(
                "gfast: {} entries not deleted: a file of this run failed (nothing is deleted after a failure)",
                rm.skipped
            );
        }
        if rm.failed > 0 {
            say!("gfast: {} entries could not be deleted: {}", rm.failed, rm.message);
        }
    }
    let wf = shared.walk_failures.lock().expect("walk failures");
    let failed = tx.failed_count() + wf.0;
    if failed > 0 {
        // A walk failure's message names its local path already; a transfer
        // failure is named by its destination path unless its message does.
        let all: Vec<(&Failure, bool)> =
            wf.1.iter().map(|f| (f, true)).chain(tx.failures().iter().map(|f| (f, false))).collect();
        let render = |&(f, named): &(&Failure, bool)| {
            let p = show(&f.path);
            if named || f.message.contains(&p) {
                f.message.clone()
            } else {
                format!("{p}: {}", f.message)
            }
        };
        for f in all.iter().take(MAX_FAILURES_SHOWN) {
            say!("gfast: not transferred: {}", render(f));
        }
        if failed as usize > MAX_FAILURES_SHOWN {
            say!("gfast: … and {} more", failed as usize - MAX_FAILURES_SHOWN);
        }
        let total = tx.stats().announced + wf.0;
        return Err(Error::Incomplete { failed, total, first: render(&all[0]) });
    }
    Ok(tx.stats().done)
}

/// Hands entries to the sender in batches, within the queue's bound: one lock
/// and one wake-up per [`ANNOUNCE_BATCH`] entries rather than per entry (the
/// walk is much faster than the sending, and every lock taken is contended by
/// the control and lane threads on small files).
struct Announcer {
    batch: Vec<crate::storage::walk::Item>,
    /// Names of the owners met so far.
    names: crate::storage::owners::Names,
    /// `-H`: the first name sent of each file with several (device, inode).
    linked: std::collections::HashMap<(u64, u64), Vec<u8>>,
    /// `-H`: the other names, announced after everything else (§4.7).
    links: Vec<crate::storage::walk::Item>,
}

/// What FILE says of owners (§4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owners {
    /// Nothing (capability bit 10 not accepted).
    Not,
    /// Ids only (`--numeric-ids`).
    Numbers,
    /// Ids and names.
    Named,
}

/// Entries a walker gathers before it hands them over.
const ANNOUNCE_BATCH: usize = 64;

impl Announcer {
    fn new() -> Self {
        Announcer {
            batch: Vec::with_capacity(ANNOUNCE_BATCH),
            names: Default::default(),
            linked: Default::default(),
            links: Vec::new(),
        }
    }

    fn add(&mut self, sh: &Shared, mut it: crate::storage::walk::Item) {
        if it.meta.kind.is_special() && !sh.specials {
            let error = std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "special file (fifo, socket or device) skipped: pass -D to send it (the receiver must be a gfast that makes them)",
            );
            return record_walk_failure(sh, crate::storage::walk::WalkError { path: it.source, error });
        }
        match (sh.owners, it.meta.owner.as_mut()) {
            (Owners::Not, _) => it.meta.owner = None,
            (Owners::Named, Some(o)) => self.names.name(o),
            _ => {}
        }
        if let (true, Some(key)) = (sh.hardlinks, it.inode) {
            match self.linked.get(&key) {
                Some(first) => {
                    (it.meta.hardlink, it.meta.link) = (true, first.clone());
                    sh.stats.files_total.fetch_add(1, Relaxed);
                    return self.links.push(it);
                }
                None => {
                    self.linked.insert(key, it.meta.path.clone());
                }
            }
        }
        if sh.xattrs && it.meta.kind != crate::proto::frame::EntryKind::Symlink {
            match crate::storage::xattrs::read(&it.source) {
                Ok(xs) => it.meta.xattrs = xs,
                Err(e) => say!("gfast: {}: extended attributes not sent: {e}", it.source.display()),
            }
        }
        sh.stats.files_total.fetch_add(1, Relaxed);
        sh.stats.bytes_total.fetch_add(it.meta.size, Relaxed);
        self.batch.push(it);
        if self.batch.len() >= ANNOUNCE_BATCH {
            self.flush(sh);
        }
    }

    /// At the end of the walk: hands over what is gathered, the hard links last.
    fn finish(&mut self, sh: &Shared) {
        let links = std::mem::take(&mut self.links);
        self.batch.extend(links);
        self.flush(sh);
    }

    /// Hands over what is gathered: before the walker waits for anything else,
    /// and at the end.
    fn flush(&mut self, sh: &Shared) {
        if self.batch.is_empty() {
            return;
        }
        let mut g = sh.lock();
        for it in self.batch.drain(..) {
            while g.queued_len() >= QUEUE_MAX && !sh.stopped() {
                sh.wake();
                g = sh.cv.wait(g).expect("cv");
            }
            g.push(it.meta, Arc::new(it.source));
        }
        sh.wake();
    }
}

/// Notes a source the walk could not read; the transfer goes on without it.
fn record_walk_failure(sh: &Shared, e: crate::storage::walk::WalkError) {
    let mut wf = sh.walk_failures.lock().expect("walk failures");
    wf.0 += 1;
    if wf.1.len() < 100 {
        let path = e.path.as_os_str().as_bytes().to_vec();
        let message = match e.error.kind() {
            std::io::ErrorKind::Unsupported => format!("'{}': {}", e.path.display(), e.error),
            _ => format!("cannot read '{}': {}", e.path.display(), e.error),
        };
        wf.1.push(Failure { path, code: code::IO, message });
    }
}

fn walk(sh: &Shared, roots: Vec<(PathBuf, Vec<u8>)>, prune: Option<crate::storage::walk::Prune>) {
    let mut out = Announcer::new();
    for item in sh.source.walk(roots, prune) {
        if sh.stopped() {
            return;
        }
        match item {
            Ok(it) => out.add(sh, it),
            Err(e) => record_walk_failure(sh, e),
        }
    }
    out.finish(sh);
    let mut g = sh.lock();
    g.close_input();
    sh.wake_after(&g);
}

/// Why the source of file `id` no longer matches its announcement (size or
/// mtime differ: it was written to, appended to or replaced while it was read),
/// if it does not. Like tar's "file changed as we read it", such a file is not
/// placed as verified: its transfer fails, and the job exits non-zero.
fn source_changed(source: &dyn Source, g: &Sender<Arc<PathBuf>>, id: u64) -> Option<String> {
    let (meta, src) = g.open_file(id)?;
    let now = match source.stamp(src.as_path()) {
        Ok(m) => m,
        Err(e) => return Some(format!("source cannot be checked after it was sent: {e}")),
    };
    let same = now.size == meta.size && now.mtime_sec == meta.mtime_sec && now.mtime_nsec == meta.mtime_nsec;
    (!same).then(|| {
        format!(
            "source file changed while it was being sent ({} -> {} bytes, modified again): not placed; send it again",
            meta.size, now.size
        )
    })
}

fn control_writer(sh: &Shared, mut w: BufWriter<ConnWriter>) {
    let mut scratch = Vec::new();
    let mut batch = Vec::new();
    loop {
        {
            let mut g = sh.lock();
            loop {
                while batch.len() < 256 {
                    match g.poll_frame() {
                        // Every chunk was read: the file counts as sent only if
                        // the source still looks as it did when it was announced.
                        Some(Frame::FileEnd { id, digest }) => match source_changed(sh.source.as_ref(), &g, id) {
                            None => batch.push(Frame::FileEnd { id, digest }),
                            Some(m) => {
                                if let Some((_, src)) = g.open_file(id) {
                                    say!("gfast: {}: {m}", src.display());
                                }
                                g.on_source_error(id, code::SOURCE_CHANGED, m);
                            }
                        },
                        Some(f) => batch.push(f),
                        None => break,
                    }
                }
                if !batch.is_empty() || sh.stopped() || g.is_finished() {
                    break;
                }
                g = sh.cv.wait(g).expect("cv");
            }
            // Frees queue room for the walker; a FILE_ABORT may have finished the session.
            sh.wake_after(&g);
        }
        if batch.is_empty() {
            // The server reads the control connection until the end of the session:
            // close it cleanly only after SESSION_DONE.
            let mut g = sh.lock();
            while !sh.session_done.load(SeqCst) && !sh.stopped() {
                g = sh.cv.wait(g).expect("cv");
            }
            drop(g);
            if !sh.stopped() {
                let _ = w.get_mut().close_notify();
            }
            return;
        }
        for f in batch.drain(..) {
            if let Err(e) = write_frame(&mut w, &f, &mut scratch) {
                return sh.fail(Error::PeerVanished(e.to_string()));
            }
        }
        if let Err(e) = w.flush() {
            return sh.fail(Error::PeerVanished(e.to_string()));
        }
    }
}

/// A frame the sender's state machine takes (§4.8-§4.12, §4.20, §4.24).
fn is_file_level(f: &Frame) -> bool {
    matches!(
        f,
        Frame::FileReady { .. }
            | Frame::Removed { .. }
            | Frame::FileDone { .. }
            | Frame::FileFailed { .. }
            | Frame::FileHave { .. }
            | Frame::FileSums { .. }
    )
}

fn control_reader(sh: &Shared, mut r: BufReader<ConnReader>) {
    let mut buf = Vec::new();
    let limits = Limits::control();
    let mut next: Option<Frame> = None;
    loop {
        let f = match next.take() {
            Some(f) => f,
            None => match read_frame(&mut r, &limits, &mut buf) {
                Ok(f) => f,
                Err(e) => return sh.fail(wire_err(e)),
            },
        };
        match f {
            Frame::SessionDone { .. } => {
                sh.session_done.store(true, SeqCst);
                let _g = sh.lock();
                sh.wake_end();
                return;
            }
            Frame::Error { code, message } => return sh.fail(Error::Remote(code, message)),
            Frame::Notice { message, .. } => say!("gfast: note: {message}"),
            Frame::Listed { last, mask, entries } => {
                let tx = sh.list_tx.lock().expect("list").clone();
                match tx {
                    Some(tx) => {
                        // The walk may have stopped already: then nothing waits for it.
                        let _ = tx.send(plan::ListBatch { entries, last, mask });
                    }
                    None => return sh.fail(Error::Protocol("LISTED without a LIST".into())),
                }
            }
            f if is_file_level(&f) => {
                // Small files bring answers in runs: every one already buffered
                // is taken under the same lock, with one wake-up at the end.
                let mut g = sh.lock();
                let mut f = f;
                loop {
                    if let Err(e) = g.on_frame(&f) {
                        drop(g);
                        return sh.fail(Error::Protocol(e.to_string()));
                    }
                    if !frame_buffered(&r) {
                        break;
                    }
                    match read_frame(&mut r, &limits, &mut buf) {
                        Ok(n) if is_file_level(&n) => f = n,
                        Ok(n) => {
                            next = Some(n);
                            break;
                        }
                        Err(e) => {
                            drop(g);
                            return sh.fail(wire_err(e));
                        }
                    }
                }
                let st = g.stats();
                sh.stats.files_done.store(st.done, Relaxed);
                sh.stats.bytes_done.store(st.bytes_done, Relaxed);
                sh.stats.files_in_place.store(st.files_in_place, Relaxed);
                sh.wake_after(&g);
            }
            _ => return sh.fail(Error::Protocol("unexpected frame on the control connection".into())),
        }
    }
}

mod lane;
use lane::{ack_reader, lane_writer};
pub(crate) mod plan;
pub(crate) use plan::{ListShow, SyncPlan};
mod squeeze;
use squeeze::{send_stored_sparse, Holed, Squeeze};
