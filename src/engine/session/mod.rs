//! One receiving session on the daemon: the control loop and its data lanes.
//!
//! The control thread creates entries and answers announcements; each lane thread
//! reads chunks, verifies them while writing them at their offset in the temporary
//! file, and acks them. Whichever thread completes a file puts it in place.

use super::error::Error;
use super::wire::refuse;
use crate::proto::auth::SessionKeys;
use crate::proto::chunk::{BlockDecoder, BlockHead, BlockRules};
use crate::proto::error::{code, ProtocolError};
use crate::proto::frame::{
    method, AckStatus, ChunkHead, EntryKind, FileMeta, Frame, Limits, BLOCK_HEAD_LEN, CHUNK_COMPRESSED, CHUNK_HEAD_LEN,
    HASH_LEN,
};
use crate::proto::handshake::{admit_lane, Negotiated, Refusal};
use crate::proto::hash::ChunkHasher;
use crate::proto::path::{components, show};
use crate::proto::receiver::{ChunkPlan, Next, Receiver};
use crate::storage::dest::{DestError, Kept};
use crate::storage::journal::Identity;
use crate::storage::store::{self, Destination, Given, IncomingRef, Opened, StoreConfig};
use crate::transport::conn::{Closer, Conn, ConnReader, ConnWriter};
use crate::transport::framed::{eof_is_error, read_frame, read_header, write_frame, WireError};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Size of the piece a lane reads from the socket and writes to the file at once.
const PIECE: usize = 1 << 20;

struct OpenFile {
    file: IncomingRef,
    meta: FileMeta,
}

struct State {
    /// The receiving state machine, holding each open file's handle.
    rx: Receiver<OpenFile>,
    dest: Box<dyn Destination>,
    /// Directories whose metadata is set at the end, and whether their mode
    /// is (false: a daemon's directory that was there before keeps its mode).
    dirs: Vec<(FileMeta, bool)>,
    /// Directories that were there before, remembered once each (sync).
    dirs_seen: std::collections::HashSet<Vec<u8>>,
    joined: Vec<bool>,
    lanes: Vec<Closer>,
    encrypted: bool,
    done: bool,
    /// Entries that failed here, with reasons (the first 20), and how many.
    failures: (u64, Vec<String>),
    /// Send mode: lanes handed over to the sending role as they join.
    handed: Vec<(u16, Lane)>,
}

/// A joined data lane, as handed to the sending role.
pub(crate) type Lane = (Conn, BufReader<ConnReader>, ConnWriter);

/// Which role this end of the session plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Receive files (push to a daemon or one-shot receiver; the client of a pull).
    Receive,
    /// Send files (the one-shot end of a pull): joined lanes are handed over.
    Send,
}

/// How a session is set up, besides what the handshake agreed on.
pub(crate) struct Setup<'a> {
    /// Receive, or hand joined lanes to the sending role.
    pub(crate) mode: Mode,
    /// Where files land (`None`: `--discard`).
    pub(crate) root: Option<&'a std::path::Path>,
    /// How the destination writes.
    pub(crate) store: StoreConfig,
    /// A line per session.
    pub(crate) verbose: bool,
    /// Keys the lanes must prove (`None`: this end dialed them itself).
    pub(crate) keys: Option<SessionKeys>,
}

/// One session: the receiving role, plus lane admission on the listening side.
pub(crate) struct Session {
    mode: Mode,
    /// What the handshake agreed on (resume, compression, delta, lanes).
    n: Negotiated,
    /// Bytes of compressed chunk bodies received.
    compressed_in: std::sync::atomic::AtomicU64,
    /// Bytes of holes received (ZERO blocks, §4.14).
    holes_in: std::sync::atomic::AtomicU64,
    /// Permission bits kept of what the peer sends (a daemon: no setuid, setgid
    /// or sticky bit, and its umask applied).
    mode_mask: std::sync::atomic::AtomicU32,
    /// Owners the peer sends are given (§4.7), mapped by name unless the bool
    /// (`--numeric-ids`) says by number; `None`: every entry is this end's user's.
    owners: Mutex<Option<(crate::storage::owners::Ids, bool)>>,
    /// Extended attributes the peer sends (§4.7) are given, those this policy
    /// allows; `None`: none.
    xattrs: Mutex<Option<crate::storage::xattrs::Policy>>,
    /// Device nodes the peer announces are made (root, and a daemon only with
    /// `--allow-devices`); otherwise each fails.
    devices: AtomicBool,
    /// When the session was made, and milliseconds since then at its last frame
    /// from the peer (the daemon ends a session silent past --timeout).
    born: std::time::Instant,
    last_heard: std::sync::atomic::AtomicU64,
    /// Frames this end is working on (a delta's copy of an old file, a
    /// journal's read-back, a durable rename): the peer waits then, it is not
    /// silent.
    working: std::sync::atomic::AtomicUsize,
    verbose: bool,
    handed_cv: Condvar,
    id: [u8; 16],
    pub(crate) tag: String,
    keys: Option<SessionKeys>,
    chunk_size: u64,
    state: Mutex<State>,
    /// The control writer and its scratch buffer; taken out in send mode.
    control: Mutex<Option<(BufWriter<ConnWriter>, Vec<u8>)>>,
    control_stream: Closer,
    failed: AtomicBool,
    /// The ERROR the peer ended the session with, if it did.
    peer_error: Mutex<Option<(u16, String)>>,
    /// Partial files left for a resume when the session ended.
    kept: Mutex<Vec<Kept>>,
    /// How the destination writes (lanes make their piece writers from it).
    store: StoreConfig,
}

impl Session {
    /// A session set up as `setup` says, for what the handshake agreed on.
    pub(crate) fn new(
        setup: Setup<'_>,
        n: &Negotiated,
        control: &Conn,
        w: BufWriter<ConnWriter>,
    ) -> io::Result<Arc<Self>> {
        let Setup { mode, root, store: store_cfg, verbose, keys } = setup;
        let (id, lanes, chunk_size) = (n.session_id, n.lanes, u64::from(n.chunk_size));
        let dest = match mode {
            Mode::Receive => store::open(root, store_cfg)?,
            Mode::Send => store::open(None, store_cfg)?,
        };
        let tag: String = id[..6].iter().map(|b| format!("{b:02x}")).collect();
        let control_stream = control.closer()?;
        let encrypted = control.is_tls();
        Ok(Arc::new(Session {
            mode,
            n: n.clone(),
            compressed_in: std::sync::atomic::AtomicU64::new(0),
            holes_in: std::sync::atomic::AtomicU64::new(0),
            mode_mask: std::sync::atomic::AtomicU32::new(0o7777),
            owners: Mutex::new(None),
            xattrs: Mutex::new(None),
            devices: AtomicBool::new(false),
            born: std::time::Instant::now(),
            last_heard: std::sync::atomic::AtomicU64::new(0),
            working: std::sync::atomic::AtomicUsize::new(0),
            verbose,
            handed_cv: Condvar::new(),
            id,
            tag,
            keys,
            chunk_size,
            state: Mutex::new(State {
                rx: {
                    let mut rx = Receiver::new(chunk_size);
                    rx.set_sync(n.sync());
                    rx.set_window(n.window());
                    rx
                },
                dest,
                dirs: Vec::new(),
                dirs_seen: Default::default(),
                joined: vec![false; lanes as usize],
                lanes: Vec::new(),
                encrypted,
                done: false,
                failures: (0, Vec::new()),
                handed: Vec::new(),
            }),
            control: Mutex::new(Some((w, Vec::new()))),
            control_stream,
            failed: AtomicBool::new(false),
            peer_error: Mutex::new(None),
            kept: Mutex::new(Vec::new()),
            store: store_cfg,
        }))
    }

    /// Keeps only these permission bits of what the peer sends.
    pub(crate) fn set_mode_mask(&self, mask: u32) {
        self.mode_mask.store(mask, Ordering::Relaxed);
    }

    /// Gives entries the owners the peer sends (by number when `numeric`): a
    /// daemon with `--preserve-owner`, a one-shot end or a pulling client
    /// running as root.
    pub(crate) fn keep_owners(&self, numeric: bool) {
        *self.owners.lock().expect("owners") = Some((Default::default(), numeric));
    }

    /// Makes the device nodes the peer announces.
    pub(crate) fn allow_devices(&self) {
        self.devices.store(true, Ordering::Relaxed);
    }

    /// Gives entries the extended attributes the peer sends that `policy` allows.
    pub(crate) fn keep_xattrs(&self, policy: crate::storage::xattrs::Policy) {
        *self.xattrs.lock().expect("xattrs") = Some(policy);
    }

    /// The attributes to give `meta`'s entry, if they are kept.
    fn xattrs_of<'a>(&self, meta: &'a FileMeta) -> Option<crate::storage::xattrs::Giving<'a>> {
        let p = (*self.xattrs.lock().expect("xattrs"))?;
        (!meta.xattrs.is_empty()).then_some((&meta.xattrs[..], p))
    }

    /// The ids to give `meta`'s entry, if owners are kept.
    fn owner_of(&self, meta: &FileMeta) -> Option<(u32, u32)> {
        let o = meta.owner.as_ref()?;
        let mut g = self.owners.lock().expect("owners");
        let (ids, numeric) = g.as_mut()?;
        Some(ids.map(o, *numeric))
    }

    /// True once the session was ended with an ERROR.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Notes progress: a frame from the peer, or an answer to it.
    fn heard(&self) {
        self.last_heard.store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// True while this end works on a frame (the peer is waiting for it).
    pub(crate) fn is_working(&self) -> bool {
        self.working.load(Ordering::SeqCst) > 0
    }

    /// Cuts every connection of the session without taking any of its locks
    /// (the watchdog's last resort when an orderly end is stuck).
    pub(crate) fn cut(&self) {
        self.control_stream.shutdown(Shutdown::Both);
        if let Ok(st) = self.state.try_lock() {
            for l in &st.lanes {
                l.shutdown(Shutdown::Both);
            }
        }
    }

    /// How long since the session last made progress (a frame from the peer on
    /// any of its connections, or an answer to one).
    pub(crate) fn silent_for(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_heard.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    /// True in the receiving role (its peer must keep sending).
    pub(crate) fn is_receiving(&self) -> bool {
        self.mode == Mode::Receive
    }

    /// Queues a control frame (not flushed).
    /// What a file opened for this session may take over (§5.11, §5.15).
    fn reuse(&self) -> store::Reuse {
        match (self.n.resume(), self.n.sync()) {
            (false, _) => store::Reuse::Fresh,
            // The sender announced it because it differs.
            (true, true) => store::Reuse::Partials,
            (true, false) => store::Reuse::All,
        }
    }

    fn queue_control(&self, f: &Frame) -> io::Result<()> {
        self.heard();
        let mut g = self.control.lock().expect("control");
        let (w, scratch) = g.as_mut().ok_or_else(taken)?;
        write_frame(w, f, scratch)
    }

    /// Sends a control frame now.
    pub(crate) fn send_control(&self, f: &Frame) -> io::Result<()> {
        self.heard();
        let mut g = self.control.lock().expect("control");
        let (w, scratch) = g.as_mut().ok_or_else(taken)?;
        write_frame(w, f, scratch)?;
        w.flush()
    }

    fn flush_control(&self) -> io::Result<()> {
        self.control.lock().expect("control").as_mut().ok_or_else(taken)?.0.flush()
    }

    /// Ends the session with ERROR: tells the client, then cuts every connection so
    /// all threads of the session stop.
    fn fail(&self, code: u16, message: &str) {
        if self.failed.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.send_control(&Frame::Error { code, message: message.into() });
        self.control_stream.shutdown(Shutdown::Both);
        for l in &self.state.lock().expect("state").lanes {
            l.shutdown(Shutdown::Both);
        }
    }

    /// Send mode: waits until all `n` lanes joined (in lane order), or `timeout`.
    pub(crate) fn take_lanes(&self, n: usize, timeout: std::time::Duration) -> Option<Vec<Lane>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut st = self.state.lock().expect("state");
        while st.handed.len() < n {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            st = self.handed_cv.wait_timeout(st, left).expect("state").0;
        }
        let mut v = std::mem::take(&mut st.handed);
        v.sort_by_key(|l| l.0);
        Some(v.into_iter().map(|l| l.1).collect())
    }

    /// Takes the control writer back (send mode: the sending role writes there).
    pub(crate) fn take_control_writer(&self) -> Option<BufWriter<ConnWriter>> {
        self.control.lock().expect("control").take().map(|c| c.0)
    }

    /// Ends the session from outside (one-shot receiver giving up) and cleans up.
    pub(crate) fn abort(&self, why: &str) {
        self.abort_with(code::CANCELLED, why);
    }

    /// Ends the session with ERROR `code`.
    pub(crate) fn abort_with(&self, code: u16, why: &str) {
        self.fail(code, why);
        self.cleanup();
    }

    /// Send mode: the sending role saw SESSION_DONE.
    pub(crate) fn mark_done(&self) {
        self.state.lock().expect("state").done = true;
    }

    /// True once SESSION_DONE was sent (or, in send mode, received).
    pub(crate) fn completed(&self) -> bool {
        self.state.lock().expect("state").done
    }

    /// The partial files this session left for a resume (once it ended).
    pub(crate) fn take_kept(&self) -> Vec<Kept> {
        std::mem::take(&mut *self.kept.lock().expect("kept"))
    }

    /// Removes temporary files of entries that never completed.
    pub(crate) fn cleanup(&self) {
        let mut st = self.state.lock().expect("state");
        for of in st.rx.take_handles() {
            // A resumable partial file stays, with its journal sealed, for a resume.
            match of.file.keep() {
                Some(k) => self.kept.lock().expect("kept").push(k),
                None => of.file.discard(),
            }
        }
        for l in st.lanes.drain(..) {
            l.shutdown(Shutdown::Both);
        }
    }
}

/// Counts a piece of this end's own work while it runs.
struct Working<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Working<'a> {
    fn new(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Working(n)
    }
}

impl Drop for Working<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn taken() -> io::Error {
    io::Error::other("the control connection belongs to the sending role")
}

fn record(f: &mut (u64, Vec<String>), m: &str) {
    f.0 += 1;
    if f.1.len() < 20 {
        f.1.push(m.to_string());
    }
}

enum Fatal {
    Protocol(ProtocolError),
    Code(u16, String),
    Peer(u16, String),
}

fn io_fatal(e: io::Error) -> Fatal {
    Fatal::Code(code::CANCELLED, format!("control connection broke: {e}"))
}

/// Attaches a data connection to its session after checking its JOIN, then runs it.
pub(crate) fn run_lane(s: Arc<Session>, (conn, r, mut w): Lane, (lane, mac): (u16, [u8; 32])) -> Result<(), WireError> {
    {
        let mut st = s.state.lock().expect("state");
        let like_session = conn.is_tls() == st.encrypted;
        let admitted = match &s.keys {
            Some(k) => admit_lane(k, &s.id, (lane, &mac), &mut st.joined, like_session),
            None => Err(Refusal { code: code::AUTH_FAILED, message: "this end takes no lanes".into() }),
        };
        if let Err(r) = admitted {
            drop(st);
            return refuse(&conn, &mut w, r.code, &r.message);
        }
        st.lanes.push(conn.closer()?);
    }
    let mut scratch = Vec::new();
    write_frame(&mut w, &Frame::Joined { lane }, &mut scratch)?;
    w.flush()?;
    if s.mode == Mode::Send {
        s.state.lock().expect("state").handed.push((lane, (conn, r, w)));
        s.handed_cv.notify_all();
        return Ok(());
    }
    let res = s.lane_loop(r, w);
    if res.is_err() {
        if s.state.lock().expect("state").done {
            // The session is over; its end cut this lane before it read the close.
            return Ok(());
        }
        s.fail(code::CANCELLED, "a data connection broke");
    }
    res
}

mod control;
mod dialed;
mod lane;
mod sync;

pub(crate) use dialed::{receive_dialed, Received};
