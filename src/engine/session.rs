//! One receiving session on the daemon: the control loop and its data lanes.
//!
//! The control thread creates entries and answers announcements; each lane thread
//! reads chunks, verifies them while writing them at their offset in the temporary
//! file, and acks them. Whichever thread completes a file puts it in place.

use super::error::Error;
use super::wire::refuse;
use crate::proto::auth::SessionKeys;
use crate::proto::chunk::{BlockDecoder, BlockHead};
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
use crate::storage::store::{self, Destination, IncomingRef, Opened, StoreConfig};
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
    dirs: Vec<FileMeta>,
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
    /// Permission bits kept of what the peer sends (a daemon: no setuid, setgid
    /// or sticky bit, and its umask applied).
    mode_mask: std::sync::atomic::AtomicU32,
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
            mode_mask: std::sync::atomic::AtomicU32::new(0o7777),
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
                rx: Receiver::new(chunk_size),
                dest,
                dirs: Vec::new(),
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

    /// Runs the control loop until the client closes the connection.
    pub(crate) fn run_control(self: Arc<Self>, mut r: BufReader<ConnReader>) -> Result<(), WireError> {
        let mut buf = Vec::new();
        let limits = Limits::control();
        loop {
            let f = match read_frame(&mut r, &limits, &mut buf) {
                Ok(f) => {
                    self.heard();
                    f
                }
                Err(WireError::Closed) if self.state.lock().expect("state").done => return Ok(()),
                Err(WireError::Decode(e)) => {
                    self.fail(code::PROTOCOL, &format!("malformed frame: {e}"));
                    return Err(WireError::Decode(e));
                }
                Err(e) => {
                    self.fail(code::CANCELLED, "control connection broke");
                    return Err(e);
                }
            };
            if let Err(e) = self.on_control(f) {
                return Err(WireError::Io(io::Error::other(e)));
            }
            if r.buffer().is_empty() {
                self.flush_control()?;
            }
        }
    }

    /// Handles one control frame; an `Err` has already been reported to the client.
    fn on_control(&self, f: Frame) -> Result<(), String> {
        let res = match f {
            Frame::Target { path } => self.on_target(&path),
            Frame::File(meta) => self.on_file(meta),
            Frame::FileEnd { id, digest } => {
                let next = self.state.lock().expect("state").rx.on_file_end(id, digest);
                next.map_err(Fatal::Protocol).and_then(|n| self.settle(n))
            }
            Frame::FileAbort { id, message, .. } => {
                let mut st = self.state.lock().expect("state");
                let path = st.rx.handle(id).map(|o| show(&o.meta.path)).unwrap_or_default();
                record(&mut st.failures, &format!("{path}: sender gave up: {message}"));
                match st.rx.on_file_abort(id) {
                    Ok(Some(of)) => {
                        of.file.discard();
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(Fatal::Protocol(e)),
                }
            }
            Frame::Done { files } => {
                let r = self.state.lock().expect("state").rx.on_done(files);
                r.map_err(Fatal::Protocol).and_then(|_| self.maybe_finish())
            }
            Frame::FileSame { id, ref chunks } => {
                let next = self.state.lock().expect("state").rx.on_file_same(id, chunks);
                next.map_err(Fatal::Protocol).and_then(|n| self.settle(n))
            }
            Frame::Error { code, message } => Err(Fatal::Peer(code, message)),
            Frame::Notice { .. } => Ok(()),
            Frame::Pull { .. } => Err(Fatal::Code(
                code::PROTOCOL,
                "this end receives files: a pull asks for the pull capability first (protocol-spec §5.9)".into(),
            )),
            _ => Err(Fatal::Protocol(ProtocolError::Unexpected("frame on the control connection"))),
        };
        // DONE may come before the last entries settle (early DONE, §4.13); an
        // entry settled by this frame (created, in place, aborted) may be the last.
        let res = res.and_then(|_| self.maybe_finish());
        res.map_err(|e| {
            let (c, m) = match &e {
                Fatal::Protocol(p) => (code::PROTOCOL, p.to_string()),
                Fatal::Code(c, m) => (*c, m.clone()),
                Fatal::Peer(c, m) => {
                    *self.peer_error.lock().expect("peer error") = Some((*c, m.clone()));
                    (*c, format!("the other end ended the session: {m}"))
                }
            };
            self.fail(c, &m);
            m
        })
    }

    fn on_target(&self, path: &[u8]) -> Result<(), Fatal> {
        let comps = components(path).map_err(|e| Fatal::Code(code::PATH_REFUSED, e.to_string()))?;
        let kind = {
            let mut st = self.state.lock().expect("state");
            st.dest.target_kind(&comps).map_err(|e| Fatal::Code(code::PATH_REFUSED, e.to_string()))?
        };
        self.queue_control(&Frame::TargetInfo { kind }).map_err(io_fatal)
    }

    fn on_file(&self, meta: FileMeta) -> Result<(), Fatal> {
        let mut seed = None;
        let mut guard = self.state.lock().expect("state");
        let st = &mut *guard;
        st.rx.on_file(&meta).map_err(Fatal::Protocol)?;
        let id = meta.id;
        let replies = {
            let d = &mut st.dest;
            {
                let comps = components(&meta.path).map_err(Fatal::Protocol)?;
                // A daemon (which masks modes) sets metadata only on directories
                // this session created: a token holder must not open up, or
                // lock, a directory that was there before (and repeats of one
                // directory cost no memory).
                let daemon = self.mode_mask.load(Ordering::Relaxed) != 0o7777;
                let mut remember_dir = false;
                let res = match meta.kind {
                    EntryKind::Dir => d.make_dir(&comps).map(|created| {
                        remember_dir = created || !daemon;
                        None
                    }),
                    EntryKind::Symlink => d.make_symlink(&comps, &meta.link, &self.tag, id).map(|_| None),
                    EntryKind::File => {
                        let ident = Identity {
                            name: comps.last().map(|n| n.to_vec()).unwrap_or_default(),
                            size: meta.size,
                            mtime_sec: meta.mtime_sec,
                            mtime_nsec: meta.mtime_nsec,
                            chunk_size: self.chunk_size,
                        };
                        // Local work the peer waits for (a journal's read-back, a
                        // busy partial's 5 s): not its silence. Writes to the peer
                        // are never counted so: a peer that stops reading is silent.
                        let _working = Working::new(&self.working);
                        d.open_file(&comps, &ident, self.n.resume()).map(Some)
                    }
                };
                match res {
                    Ok(Some(Opened::Partial(file, have, changed))) => {
                        let file: IncomingRef = file.into();
                        let mut out = Vec::new();
                        if changed {
                            let message = format!(
                                "{} changed since the interrupted transfer: sending it again from the start",
                                show(&meta.path)
                            );
                            out.push(Frame::Notice { code: code::SOURCE_CHANGED, message });
                        }
                        if have.is_empty() && self.n.delta() && meta.size > 0 {
                            // Delta: what the file under its name holds goes into the
                            // new one first (below, outside the session's lock: the
                            // file is not ready, so no lane touches it meanwhile).
                            seed = Some((id, file.clone(), meta.size));
                            st.rx.attach(id, OpenFile { file, meta });
                            out
                        } else {
                            st.rx.attach(id, OpenFile { file, meta });
                            out.extend(st.rx.on_resumed(id, &have));
                            out
                        }
                    }
                    Ok(Some(Opened::InPlace)) => vec![st.rx.on_created(id)],
                    Ok(None) => {
                        if remember_dir {
                            st.dirs.push(meta);
                        }
                        vec![st.rx.on_created(id)]
                    }
                    Err(e) if e.is_no_space() => return Err(Fatal::Code(code::NO_SPACE, e.to_string())),
                    Err(e) => {
                        record(&mut st.failures, &e.to_string());
                        let c = match &e {
                            DestError::Refused(_) => code::PATH_REFUSED,
                            DestError::Busy(_) => code::BUSY,
                            DestError::Io(_, io) if io.kind() == io::ErrorKind::PermissionDenied => code::PERMISSION,
                            DestError::Io(..) => code::IO,
                        };
                        vec![st.rx.on_failed(id, c, e.to_string())]
                    }
                }
            }
        };
        drop(guard);
        let mut replies = replies;
        if let Some((id, file, size)) = seed {
            let sums = {
                let _working = Working::new(&self.working);
                file.seed_from_old(size, self.chunk_size)
            };
            // The peer waited on this end's copy: that was not its silence.
            self.heard();
            replies.extend(self.state.lock().expect("state").rx.on_seeded(id, &sums));
        }
        for r in &replies {
            self.queue_control(r).map_err(io_fatal)?;
        }
        Ok(())
    }

    /// Carries out what the receiver decided for a file.
    fn settle(&self, next: Next) -> Result<(), Fatal> {
        // The control queue is held from the file's last state change until its
        // answer is queued, and maybe_finish takes it first as well: SESSION_DONE
        // can never overtake a FILE_DONE or FILE_FAILED (the sender stops reading
        // at SESSION_DONE). Lock order: control, then state.
        let mut ctl = self.control.lock().expect("control");
        let reply = match next {
            Next::Wait => return Ok(()),
            Next::Fail(frame) => {
                let mut st = self.state.lock().expect("state");
                if let Frame::FileFailed { id, ref message, .. } = frame {
                    if let Some(of) = st.rx.take_handle(id) {
                        of.file.discard();
                    }
                    st.rx.forget(id);
                    record(&mut st.failures, message);
                }
                frame
            }
            Next::Finalize(id) => {
                let of = self.state.lock().expect("state").rx.take_handle(id);
                let res = match &of {
                    Some(OpenFile { file, meta }) => {
                        let mode = meta.mode & self.mode_mask.load(Ordering::Relaxed);
                        let _working = Working::new(&self.working);
                        file.place(mode, meta.mtime_sec, meta.mtime_nsec).map_err(|e| {
                            file.discard();
                            format!("cannot put {} in place: {e}", show(&meta.path))
                        })
                    }
                    _ => Ok(()),
                };
                let mut st = self.state.lock().expect("state");
                match res {
                    Ok(()) => st.rx.on_finalized(id),
                    Err(m) => {
                        record(&mut st.failures, &m);
                        st.rx.on_failed(id, code::IO, m)
                    }
                }
            }
        };
        {
            self.heard();
            let (w, scratch) = ctl.as_mut().ok_or_else(taken).map_err(io_fatal)?;
            write_frame(w, &reply, scratch).map_err(io_fatal)?;
        }
        drop(ctl);
        self.maybe_finish()
    }

    /// When DONE arrived and every entry settled: directory metadata, then SESSION_DONE.
    fn maybe_finish(&self) -> Result<(), Fatal> {
        // See settle: the control queue first, so no file's answer is in flight.
        let mut ctl = self.control.lock().expect("control");
        let mut st = self.state.lock().expect("state");
        if st.done || !st.rx.is_complete() {
            return Ok(());
        }
        st.done = true;
        let dirs = std::mem::take(&mut st.dirs);
        // Deepest first, so setting a parent's mtime comes after its children changed it.
        for m in dirs.iter().rev() {
            let Ok(comps) = components(&m.path) else { continue };
            let mode = m.mode & self.mode_mask.load(Ordering::Relaxed);
            if let Err(e) = st.dest.set_dir_meta(&comps, mode, m.mtime_sec, m.mtime_nsec) {
                say!("gfast serve: cannot set metadata of {}: {e}", show(&m.path));
            }
        }
        let (files, bytes) = st.rx.finished();
        drop(st);
        if self.verbose {
            say!("gfast serve: session {} done: {files} entries, {bytes} bytes", self.tag);
        }
        let (w, scratch) = ctl.as_mut().ok_or_else(taken).map_err(io_fatal)?;
        write_frame(w, &Frame::SessionDone { files, bytes }, scratch).and_then(|_| w.flush()).map_err(io_fatal)
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

    fn lane_loop(&self, mut r: BufReader<ConnReader>, w: ConnWriter) -> Result<(), WireError> {
        let mut w = BufWriter::with_capacity(16 << 10, w);
        let mut scratch = Vec::new();
        let limits = Limits::lane(self.chunk_size as u32);
        let mut pw = self.store.piece_writer(PIECE);
        let mut unsqueeze = Unsqueeze::default();
        loop {
            let h = match read_header(&mut r, &limits) {
                Ok(h) => h,
                Err(WireError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            };
            if h.kind != crate::proto::frame::kind::CHUNK {
                return Err(self.lane_protocol(ProtocolError::Unexpected("frame on a data lane")));
            }
            self.heard();
            let compressed = h.flags == CHUNK_COMPRESSED;
            if compressed && !self.n.compress() {
                return Err(self.lane_protocol(ProtocolError::Unexpected("compressed chunk without capability bit 1")));
            }
            let mut hb = [0u8; CHUNK_HEAD_LEN];
            r.read_exact(&mut hb).map_err(|e| WireError::Io(eof_is_error(e)))?;
            let (ChunkHead { id, offset }, mut len) = ChunkHead::decode(&hb, h.len).map_err(WireError::Decode)?;
            // Compressed: what follows is the raw length, then blocks (§4.14).
            let mut body = 0u32;
            if compressed {
                let mut rl = [0u8; 4];
                r.read_exact(&mut rl).map_err(|e| WireError::Io(eof_is_error(e)))?;
                body = len.checked_sub(4).ok_or(WireError::Decode(crate::proto::error::DecodeError::Short("CHUNK")))?;
                len = u32::from_be_bytes(rl);
                self.compressed_in.fetch_add(u64::from(body) + 4, Ordering::Relaxed);
                if len == 0 || u64::from(len) > self.chunk_size {
                    return Err(self.lane_protocol(ProtocolError::Unexpected("compressed chunk of a wrong raw length")));
                }
            }
            let (plan, file, reclaimed) = {
                let mut st = self.state.lock().expect("state");
                match st.rx.on_chunk_head(id, offset, len as u64) {
                    Ok(p) => {
                        let reclaimed = p == ChunkPlan::Store && st.rx.reclaim(id, offset);
                        (p, st.rx.handle(id).map(|o| o.file.clone()), reclaimed)
                    }
                    Err(e) => return Err(self.lane_protocol(e)),
                }
            };
            let mut hasher = ChunkHasher::new();
            let mut done = 0usize;
            let mut write_err: Option<io::Error> = None;
            if let (Some(f), true) = (&file, reclaimed) {
                write_err = f.retract((offset / self.chunk_size) as u32).err();
            }
            // A block that does not decompress to what it says is a bad chunk:
            // acknowledged BAD_HASH and sent again, like corrupted data.
            let mut undecodable = false;
            while done < len as usize {
                let n = if compressed {
                    let left = len as usize - done;
                    match unsqueeze.read_block(&mut r, &mut body, left, pw.buffer()) {
                        Ok(Ok(n)) => n,
                        Ok(Err(n)) => {
                            undecodable = true;
                            n
                        }
                        Err(e) => return Err(self.lane_protocol_or_io(e)),
                    }
                } else {
                    let n = (len as usize - done).min(PIECE);
                    r.read_exact(&mut pw.buffer()[..n]).map_err(|e| WireError::Io(eof_is_error(e)))?;
                    n
                };
                // A large chunk on a slow link is not silence.
                self.heard();
                let piece = &mut pw.buffer()[..n];
                hasher.update(piece);
                if let (Some(f), None) = (&file, &write_err) {
                    // Space is reserved piece by piece as the data arrives, never ahead of it.
                    let at = offset + done as u64;
                    if let Err(e) = f.reserve(at, n as u64).and_then(|_| f.write_piece(&mut pw, at, n)) {
                        write_err = Some(e);
                    }
                }
                done += n;
            }
            // The chunk's writes are complete before it is journaled and acknowledged.
            if let Err(e) = pw.finish() {
                write_err.get_or_insert(e);
            }
            let mut trailer = [0u8; HASH_LEN];
            r.read_exact(&mut trailer).map_err(|e| WireError::Io(eof_is_error(e)))?;
            if compressed && body != 0 {
                return Err(self.lane_protocol(ProtocolError::Unexpected("compressed chunk longer than its blocks")));
            }
            let ok = plan == ChunkPlan::Store && !undecodable && hasher.finish() == trailer;
            if let (true, None, Some(f)) = (ok, &write_err, &file) {
                // Verified and written: note it in the journal (synced when the session lets go).
                let idx = (offset / self.chunk_size) as u32;
                if let Err(e) = f.record(idx, trailer) {
                    write_err = Some(e);
                }
            }
            let status = if let Some(e) = write_err {
                if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                    self.fail(code::NO_SPACE, &format!("writing received data: {e}"));
                    return Err(WireError::Io(e));
                }
                let next = {
                    let mut st = self.state.lock().expect("state");
                    let path = st.rx.handle(id).map(|o| show(&o.meta.path)).unwrap_or_default();
                    Next::Fail(st.rx.failing(id, code::IO, format!("cannot write {path}: {e}")))
                };
                self.settle(next).map_err(|_| WireError::Io(io::Error::other("session failed")))?;
                AckStatus::Dropped
            } else {
                let (status, next) = self.state.lock().expect("state").rx.on_chunk_checked(id, offset, trailer, ok);
                if let Err(e) = self.settle(next) {
                    let m = match e {
                        Fatal::Code(_, m) | Fatal::Peer(_, m) => m,
                        Fatal::Protocol(p) => p.to_string(),
                    };
                    return Err(WireError::Io(io::Error::other(m)));
                }
                status
            };
            write_frame(&mut w, &Frame::ChunkAck { id, offset, status }, &mut scratch)?;
            if r.buffer().is_empty() {
                w.flush()?;
                self.flush_control()?;
            }
        }
    }

    fn lane_protocol(&self, e: ProtocolError) -> WireError {
        self.fail(code::PROTOCOL, &e.to_string());
        WireError::Io(io::Error::other(e.to_string()))
    }

    fn lane_protocol_or_io(&self, e: BlockError) -> WireError {
        match e {
            BlockError::Protocol(p) => self.lane_protocol(p),
            BlockError::Io(e) => WireError::Io(eof_is_error(e)),
        }
    }
}

/// A lane's reader of compressed chunks' blocks (protocol-spec §4.14): it
/// moves the bytes; `proto::chunk` checks each block's header and decodes it.
#[derive(Default)]
struct Unsqueeze {
    dec: BlockDecoder,
    stored: Vec<u8>,
}

/// Reading a block failed: the peer broke the protocol, or the connection broke.
enum BlockError {
    Protocol(ProtocolError),
    Io(io::Error),
}

impl From<io::Error> for BlockError {
    fn from(e: io::Error) -> Self {
        BlockError::Io(e)
    }
}

impl Unsqueeze {
    /// Reads the next block of a compressed chunk into `out` as raw bytes.
    /// `body` counts down the block bytes the frame still holds, `left` is how
    /// many raw bytes of the chunk are still to come. Returns the block's raw
    /// length, as `Err` when the block did not decompress to exactly that
    /// (`out` then holds zeros and the chunk must be sent again). The output is
    /// bounded by the raw length the block states, itself at most 1 MiB.
    fn read_block(
        &mut self,
        r: &mut impl Read,
        body: &mut u32,
        left: usize,
        out: &mut [u8],
    ) -> Result<Result<usize, usize>, BlockError> {
        let short = || BlockError::Protocol(ProtocolError::Unexpected("compressed chunk shorter than its blocks"));
        let mut take = |n: usize| {
            *body = body.checked_sub(n as u32).ok_or_else(short)?;
            Ok::<_, BlockError>(())
        };
        take(BLOCK_HEAD_LEN)?;
        let mut hb = [0u8; BLOCK_HEAD_LEN];
        r.read_exact(&mut hb)?;
        let h = BlockHead::decode(&hb, left).map_err(BlockError::Protocol)?;
        let (raw, stored) = (h.raw as usize, h.stored as usize);
        take(stored)?;
        if h.method == method::STORED {
            r.read_exact(&mut out[..raw])?;
            return Ok(Ok(raw));
        }
        self.stored.resize(stored, 0);
        r.read_exact(&mut self.stored)?;
        Ok(if self.dec.unzstd(&self.stored, &mut out[..raw])? { Ok(raw) } else { Err(raw) })
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

/// The receiving role over connections this end dialed (the client of a pull):
/// runs a lane loop per lane and the control loop until the sender closes.
/// Returns entries and bytes completed, and the compressed bytes they took.
pub(crate) fn receive_dialed(
    root: &std::path::Path,
    store: StoreConfig,
    w: super::send::Wired,
    timeout: std::time::Duration,
) -> Result<(u64, u64, u64), Error> {
    let super::send::Wired { ctl, ctl_r, ctl_w, lanes, n, .. } = w;
    let setup = Setup { mode: Mode::Receive, root: Some(root), store, verbose: false, keys: None };
    let s =
        Session::new(setup, &n, &ctl, ctl_w).map_err(|e| Error::Io(format!("cannot open '{}'", root.display()), e))?;
    // What a server sends gets no setuid, setgid or sticky bit here either.
    s.set_mode_mask(0o777);
    // A server that stays connected but sends nothing is given up on after --timeout.
    let (silent, over) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let watch = {
        let (s, silent, over) = (s.clone(), silent.clone(), over.clone());
        std::thread::spawn(move || {
            while !over.load(Ordering::SeqCst) && !s.completed() && !s.has_failed() {
                std::thread::sleep(std::time::Duration::from_millis(250));
                if s.silent_for() > timeout && !s.completed() && !s.is_working() {
                    silent.store(true, Ordering::SeqCst);
                    s.fail(code::CANCELLED, "the client heard nothing for its --timeout");
                }
            }
        })
    };
    let mut handles = Vec::new();
    for (c, r, w) in lanes {
        s.state.lock().expect("state").lanes.push(c.closer().map_err(|e| Error::Io("socket".into(), e))?);
        let s2 = s.clone();
        handles.push(std::thread::spawn(move || {
            let res = s2.lane_loop(r, w);
            if res.is_err() && !s2.state.lock().expect("state").done {
                s2.fail(code::CANCELLED, "a data connection broke");
            }
            drop(c);
        }));
    }
    let res = s.clone().run_control(ctl_r);
    let done = s.completed();
    s.cleanup();
    for h in handles {
        let _ = h.join();
    }
    over.store(true, Ordering::SeqCst);
    let _ = watch.join();
    if silent.load(Ordering::SeqCst) && !done {
        return Err(Error::Silent(timeout.as_secs()));
    }
    let st = s.state.lock().expect("state");
    if st.failures.0 > 0 {
        for m in &st.failures.1 {
            say!("gfast: not transferred: {m}");
        }
        let (files, _) = st.rx.finished();
        return Err(Error::Incomplete {
            failed: st.failures.0,
            total: files + st.failures.0,
            first: st.failures.1.first().cloned().unwrap_or_default(),
        });
    }
    if let (false, Some((c, m))) = (done, s.peer_error.lock().expect("peer error").take()) {
        return Err(Error::Remote(c, m));
    }
    match (res, done) {
        (_, true) => {
            let (files, bytes) = st.rx.finished();
            Ok((files, bytes, s.compressed_in.load(Ordering::Relaxed)))
        }
        (Err(e), false) => Err(Error::PeerVanished(e.to_string())),
        (Ok(()), false) => Err(Error::PeerVanished("the sender closed the session before it was complete".into())),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::BLOCK_RAW;

    fn block(m: u8, raw: usize, data: &[u8]) -> Vec<u8> {
        let mut b = vec![m];
        b.extend_from_slice(&(raw as u32).to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        b
    }

    /// Reads one block from `bytes`; `left` raw bytes of the chunk still to come.
    fn read(bytes: &[u8], left: usize) -> (Result<Result<usize, usize>, &'static str>, Vec<u8>, u32) {
        let mut out = vec![7u8; BLOCK_RAW];
        let mut body = bytes.len() as u32;
        let r = Unsqueeze::default().read_block(&mut &bytes[..], &mut body, left, &mut out).map_err(|e| match e {
            BlockError::Protocol(ProtocolError::Unexpected(m)) => m,
            BlockError::Protocol(_) => "protocol",
            BlockError::Io(_) => "io",
        });
        (r, out, body)
    }

    #[test]
    fn compressed_blocks_are_read_bounded_and_checked() {
        let text: Vec<u8> = (0..BLOCK_RAW).map(|i| b"abcabcabd"[i % 9]).collect();
        let z = zstd::bulk::compress(&text, 1).unwrap();
        // A whole zstd block and a short stored last block.
        let (r, out, body) = read(&block(method::ZSTD, BLOCK_RAW, &z), BLOCK_RAW + 10);
        assert_eq!(r, Ok(Ok(BLOCK_RAW)));
        assert_eq!(out, text);
        assert_eq!(body, 0);
        let (r, out, _) = read(&block(method::STORED, 10, b"0123456789"), 10);
        assert_eq!(r, Ok(Ok(10)));
        assert_eq!(&out[..10], b"0123456789");
        // zstd data that decompresses to another length: a bad chunk (sent
        // again), never more than the stated raw length written.
        let short = zstd::bulk::compress(&text[..1000], 1).unwrap();
        let (r, out, _) = read(&block(method::ZSTD, 2000, &short), 2000);
        assert_eq!(r, Ok(Err(2000)));
        assert!(out[..2000].iter().all(|&b| b == 0) && out[2000] == 7);
        let (r, out, _) = read(&block(method::ZSTD, 500, &short), 500);
        assert_eq!(r, Ok(Err(500)));
        assert_eq!(out[500], 7);
        let (r, ..) = read(&block(method::ZSTD, 100, b"not zstd at all"), 100);
        assert_eq!(r, Ok(Err(100)));
        // Broken framing ends the session.
        for (b, left) in [
            (block(9, 10, b"0123456789"), 10),                          // unknown method
            (block(method::STORED, 9, b"0123456789"), 9),               // stored length differs
            (block(method::STORED, 10, b"0123456789"), 20),             // short block not last
            (block(method::STORED, 10, b"0123456789"), 5),              // more than the chunk holds
            (block(method::STORED, BLOCK_RAW + 1, b""), BLOCK_RAW + 1), // over 1 MiB
            (block(method::ZSTD, 10, &[0u8; 11]), 10),                  // "compressed" larger
            (block(method::STORED, 0, b""), 0),                         // empty
        ] {
            assert!(matches!(read(&b, left).0, Err(m) if m != "io"), "{:?}", &b[..9]);
        }
        // A block longer than the frame says.
        let b = block(method::STORED, 10, b"0123456789");
        let mut body = 12u32;
        let r = Unsqueeze::default().read_block(&mut &b[..], &mut body, 10, &mut [0u8; 16]);
        assert!(matches!(r, Err(BlockError::Protocol(_))));
    }
}
