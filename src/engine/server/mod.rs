//! `gfast serve`: accepts connections, runs the handshake on control connections and
//! attaches data lanes to their sessions. A session's failure never ends the daemon.

use super::guard::{Full, Gate, Pass, Throttle, HANDSHAKE_DEADLINE};
use super::send::{run_sender, Target, Wired};
use super::session::{self, Mode, Session, Setup};
use super::stats::Stats;
use super::wire::refuse;
use crate::proto::error::code;
use crate::proto::frame::TargetKind;
use crate::proto::frame::{Frame, Limits};
use crate::proto::handshake::{welcome, Negotiated, ServerHandshake, ServerPolicy};
use crate::proto::path::{components, show};
use crate::storage::dest::{DestError, DestRoot, Kept, SourceRoot};
use crate::storage::store::LocalTree;
use crate::transport::conn::{Closer, Conn, ConnReader, ConnWriter, TLS_HANDSHAKE_BYTE};
use crate::transport::framed::{read_frame, write_frame, WireError};
use crate::transport::quic;
use crate::transport::tcp::{self, Tuning};
use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Validated settings of a daemon.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    /// Everything is confined under this directory.
    pub root: PathBuf,
    /// Gives received entries the owners the client sends, and keeps setuid,
    /// setgid and sticky bits (`--preserve-owner`; a daemon running as root).
    pub preserve_owner: bool,
    /// Makes the device nodes clients send (`--allow-devices`; as root).
    pub allow_devices: bool,
    /// Shared secret clients must prove they know.
    pub token: Vec<u8>,
    /// Receive and verify, write nothing.
    pub discard: bool,
    /// Socket tuning for accepted connections.
    pub tuning: Tuning,
    /// Most lanes one session may open.
    pub max_lanes: u16,
    /// Print one line per session to stderr.
    pub verbose: bool,
    /// TLS configuration presenting the server's identity.
    pub tls: Arc<rustls::ServerConfig>,
    /// Accept clients that ask for no encryption (`--allow-no-encrypt`).
    pub allow_plain: bool,
    /// Serve pulls of what is under `root` (`--allow-pull`).
    pub allow_pull: bool,
    /// Refuse pushes (`--read-only`).
    pub read_only: bool,
    /// Serve one session only (ssh one-shot mode).
    pub oneshot: bool,
    /// Send this file or tree instead of receiving (the one-shot end of a pull).
    pub send: Option<std::path::PathBuf>,
    /// Most sessions at once (`--max-sessions`); more are told the server is busy.
    pub max_sessions: usize,
    /// Partial files nobody resumed for this long are removed (`--partial-ttl`).
    pub partial_ttl: Option<Duration>,
    /// How received files are written (`--fsync`, `--io`).
    pub store: crate::storage::store::StoreConfig,
}

/// The running daemon: configuration and live sessions.
pub(crate) struct Server {
    pub(crate) cfg: ServeConfig,
    pub(crate) sessions: Mutex<HashMap<[u8; 16], Arc<Session>>>,
    /// Connections still in their handshake.
    gate: Arc<Gate>,
    /// Failed authentications by address.
    throttle: Throttle,
    /// An expiry of kept partial files is running.
    expiring: AtomicBool,
    /// QUIC connections on which no session authenticated yet, by stable id.
    quic_pending: Mutex<HashMap<usize, Pass>>,
    /// Partial files that sessions left for a resume, to expire.
    kept: Mutex<Vec<Kept>>,
    /// Permission bits kept of what is pushed: no setuid, setgid or sticky
    /// bit, and the daemon's umask applied.
    mode_mask: u32,
    /// A descriptor given up when accept finds none left, to turn the
    /// connection away with a word instead of leaving it unanswered.
    spare_fd: Mutex<Option<std::fs::File>>,
    /// One-shot mode: a session has started; and how it ended, once it has.
    started: AtomicBool,
    ended: Mutex<Option<bool>>,
    /// Sessions that ended lately, oldest first (see [`RECENT_FOR`]).
    recent: Mutex<VecDeque<([u8; 16], Instant)>>,
}

/// A lane may join after its session is over: a session of a few chunks can
/// end before a slower lane's connection is up (a lost SYN costs a second).
/// Such a JOIN, up to this long after the end, is turned away without a log
/// line (at most [`RECENT_MAX`] sessions are remembered).
const RECENT_FOR: Duration = Duration::from_secs(60);
const RECENT_MAX: usize = 1024;

/// Partial files tracked for expiry at most (a few hundred bytes each).
const MAX_KEPT_TRACKED: usize = 100_000;
/// How long a pull's lanes may take to join.
const LANES_TIMEOUT: Duration = Duration::from_secs(15);
/// A new session is refused while more than this share of the descriptor limit
/// is in use, so the daemon can always accept and answer.
const FD_SHARE_IN_USE: f64 = 0.75;

impl Server {
    /// A daemon with this configuration.
    pub(crate) fn new(cfg: ServeConfig) -> Arc<Self> {
        // SAFETY: umask only sets and returns the process's file mode mask.
        let umask = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        } as u32;
        let mode_mask = if cfg.oneshot || cfg.preserve_owner { 0o7777 } else { 0o777 & !umask };
        let me = Arc::new(Server {
            cfg,
            sessions: Mutex::new(HashMap::new()),
            gate: Arc::new(Gate::default()),
            throttle: Throttle::default(),
            quic_pending: Mutex::new(HashMap::new()),
            expiring: AtomicBool::new(false),
            kept: Mutex::new(Vec::new()),
            mode_mask,
            spare_fd: Mutex::new(std::fs::File::open("/dev/null").ok()),
            started: AtomicBool::new(false),
            ended: Mutex::new(None),
            recent: Mutex::new(VecDeque::new()),
        });
        let weak = Arc::downgrade(&me);
        std::thread::spawn(move || watch(weak));
        if let (Some(ttl), false, false) = (me.cfg.partial_ttl, me.cfg.discard, me.cfg.oneshot) {
            let root = me.cfg.root.clone();
            std::thread::spawn(move || match crate::storage::dest::sweep_partials(&root, ttl) {
                Ok(0) | Err(_) => {}
                Ok(n) => say!("gfast serve: removed {n} partial files nobody resumed for {} s", ttl.as_secs()),
            });
        }
        me
    }

    /// Binds `addr`.
    pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
        tcp::listen(addr)
    }

    /// Accepts connections forever; each gets its own thread.
    pub(crate) fn run(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        self.accept_loop(listener, &|| false)
    }

    /// One-shot mode: serves one session and returns whether it succeeded. Gives up
    /// (false) when no session starts within `idle`, or when `channel_closed` says
    /// the ssh channel that started us is gone.
    pub(crate) fn run_oneshot(
        self: &Arc<Self>,
        listener: TcpListener,
        idle: Duration,
        channel_closed: &AtomicBool,
    ) -> bool {
        let t0 = std::time::Instant::now();
        listener.set_nonblocking(true).expect("nonblocking listener");
        let give_up = || {
            channel_closed.load(Ordering::SeqCst)
                || (!self.started.load(Ordering::SeqCst) && t0.elapsed() > idle)
                || self.ended.lock().expect("ended").is_some()
        };
        let _ = self.accept_loop(listener, &give_up);
        let ended = *self.ended.lock().expect("ended");
        if ended.is_none() {
            // Gave up mid-session (the ssh channel closed): end it and remove its
            // temporary files before the process exits.
            let live: Vec<_> = self.sessions.lock().expect("sessions").values().cloned().collect();
            for s in live {
                s.abort("the ssh channel that started this receiver closed");
            }
        }
        ended.unwrap_or(false)
    }

    fn accept_loop(self: &Arc<Self>, listener: TcpListener, stop: &dyn Fn() -> bool) -> std::io::Result<()> {
        loop {
            if stop() {
                return Ok(());
            }
            let (stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // One-shot mode only (the listener is non-blocking there).
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    self.shed_one(&listener);
                    continue;
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    say!("gfast serve: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let _ = stream.set_nonblocking(false);
            let Ok(clone) = stream.try_clone() else { continue };
            let pass = match self.gate.admit(peer.ip(), Closer::Tcp(clone)) {
                Ok(p) => p,
                Err(full) => {
                    turn_away(&stream, full);
                    continue;
                }
            };
            let me = self.clone();
            std::thread::spawn(move || {
                if let Err(e) = me.handle(stream, peer, pass) {
                    if me.cfg.verbose || !matches!(e, WireError::Closed) {
                        say!("gfast serve: session from {peer} ended: {e}");
                    }
                }
            });
        }
    }

    /// Out of descriptors: lets one go, accepts a waiting connection with it,
    /// tells it the server is busy and closes it, then takes the descriptor back.
    fn shed_one(&self, listener: &TcpListener) {
        let mut spare = self.spare_fd.lock().expect("spare fd");
        *spare = None;
        if let Ok((s, peer)) = listener.accept() {
            let mut w = &s;
            let m = "server busy: it has no file descriptors left; try again later";
            let _ = write_frame(&mut w, &Frame::Error { code: code::BUSY, message: m.into() }, &mut Vec::new());
            say!("gfast serve: out of file descriptors: turned {peer} away");
        }
        *spare = std::fs::File::open("/dev/null").ok();
        drop(spare);
        std::thread::sleep(Duration::from_millis(10));
    }

    fn handle(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, pass: Pass) -> Result<(), WireError> {
        let conn = (|| {
            stream.set_read_timeout(Some(HANDSHAKE_DEADLINE))?;
            tcp::tune(&stream, &self.cfg.tuning)?;
            let mut b = [0u8; 1];
            if stream.peek(&mut b)? == 0 {
                return Err(WireError::Closed);
            }
            Ok(if b[0] == TLS_HANDSHAKE_BYTE {
                Conn::tls_server(stream.try_clone()?, self.cfg.tls.clone())?
            } else {
                Conn::plain(stream.try_clone()?)
            })
        })();
        self.handle_conn(conn?, peer, Some(pass))
    }

    /// Listens for QUIC on UDP `addr` (the TCP port's number) and serves every
    /// stream of every connection like an accepted TCP connection. Returns a note
    /// when a kernel limit caps the UDP buffers.
    pub(crate) fn start_quic(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<Option<String>> {
        let max_streams = u32::from(self.cfg.max_lanes) + 2;
        let l = quic::listen(addr, &self.cfg.tls, self.cfg.tuning.timeout, max_streams)?;
        let me = self.clone();
        let ep = l.endpoint.clone();
        let note = l.note.clone();
        quic::rt().spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let me = me.clone();
                let cfg = l.config_for(incoming.remote_address());
                tokio::spawn(async move {
                    let Ok(connecting) = incoming.accept_with(cfg) else { return };
                    let Ok(conn) = connecting.await else { return };
                    quic::govern_send_window(&conn);
                    let peer = conn.remote_address();
                    // The connection itself waits at the gate until a session
                    // authenticates on it (then its receive window opens up).
                    let id = conn.stable_id();
                    match me.gate.admit(peer.ip(), Closer::QuicConn(conn.clone())) {
                        Ok(p) => me.quic_pending.lock().expect("quic pending").insert(id, p),
                        Err(full) => return quic::refuse(&conn, code::BUSY, busy_message(full)),
                    };
                    while let Ok((s, r)) = conn.accept_bi().await {
                        let (me, c) = (me.clone(), conn.clone());
                        let stream = Conn::quic(quic::Stream::new(c, s, r));
                        let Ok(closer) = stream.closer() else { continue };
                        // Once a session authenticated on the connection, its
                        // streams (the session's lanes) do not wait at the gate.
                        let authenticated = !me.quic_pending.lock().expect("quic pending").contains_key(&id);
                        let pass = match authenticated {
                            true => None,
                            false => match me.gate.admit(peer.ip(), closer) {
                                Ok(p) => Some(p),
                                Err(full) => {
                                    quic::refuse(&conn, code::BUSY, busy_message(full));
                                    break;
                                }
                            },
                        };
                        std::thread::spawn(move || {
                            if let Err(e) = me.handle_conn(stream, peer, pass) {
                                if me.cfg.verbose || !matches!(e, WireError::Closed) {
                                    say!("gfast serve: QUIC session from {peer} ended: {e}");
                                }
                            }
                        });
                    }
                    me.quic_pending.lock().expect("quic pending").remove(&id);
                });
            }
        });
        Ok(note)
    }

    /// Reads the first frame of a new connection (TCP or a QUIC stream) and runs
    /// what it asks for: a session (HELLO) or a data lane (JOIN).
    fn handle_conn(self: &Arc<Self>, conn: Conn, peer: SocketAddr, pass: Option<Pass>) -> Result<(), WireError> {
        // Until AUTH succeeded (or a JOIN is checked) only handshake frames of a
        // few bytes are read, and the gate's deadline bounds the whole of it.
        let (r, mut w, first) = (|| {
            conn.set_read_timeout(Some(HANDSHAKE_DEADLINE))?;
            let (r, w) = conn.split()?;
            // Small: it is allocated for every connection in its handshake (a
            // lane's large reads bypass it).
            let mut r = BufReader::with_capacity(32 << 10, r);
            let mut buf = Vec::new();
            let f = read_frame(&mut r, &Limits::handshake(), &mut buf)?;
            Ok::<_, WireError>((r, w, f))
        })()?;
        if !conn.is_tls() && !self.cfg.allow_plain {
            let m = "this server requires encryption: drop --no-encrypt, or start the server with --allow-no-encrypt";
            return refuse(&conn, &mut w, code::AUTH_FAILED, m);
        }
        match first {
            hello @ Frame::Hello { .. } => self.control(Accepted { conn, r, w, peer, pass }, &hello),
            Frame::Join { session_id, lane, mac } => {
                drop(pass);
                conn.set_read_timeout(None)?;
                let s = self.sessions.lock().expect("sessions").get(&session_id).cloned();
                match s {
                    Some(s) => session::run_lane(s, (conn, r, w), (lane, mac)),
                    None if self.ended_lately(&session_id) => {
                        let _ = refuse(&conn, &mut w, code::AUTH_FAILED, "session already over");
                        if self.cfg.verbose {
                            let tag: String = session_id[..6].iter().map(|b| format!("{b:02x}")).collect();
                            say!("gfast serve: session {tag}: a lane that joined after the end was turned away");
                        }
                        Ok(())
                    }
                    None => refuse(&conn, &mut w, code::AUTH_FAILED, "unknown session"),
                }
            }
            _ => refuse(&conn, &mut w, code::PROTOCOL, "expected HELLO or JOIN"),
        }
    }

    fn control(self: &Arc<Self>, accepted: Accepted, hello: &Frame) -> Result<(), WireError> {
        let Accepted { conn, mut r, w, peer, pass } = accepted;
        let mut w = BufWriter::with_capacity(64 << 10, w);
        if self.cfg.oneshot && self.started.load(Ordering::SeqCst) {
            return refuse(&conn, &mut w, code::BUSY, "this one-shot receiver already serves a session");
        }
        if self.throttle.is_crowded(peer.ip()) {
            let m = "too many wrong tokens from your address are being answered: try again in a few seconds";
            let _ = refuse(&conn, &mut w, code::AUTH_FAILED, m);
            return Ok(());
        }
        let (hs, challenge) = match ServerHandshake::on_hello(self.policy(), hello, random::<32>()) {
            Ok(v) => v,
            Err(r) => return refuse(&conn, &mut w, r.code, &r.message),
        };
        let mut scratch = Vec::new();
        write_frame(&mut w, &challenge, &mut scratch)?;
        w.flush()?;
        let mut buf = Vec::new();
        let auth = read_frame(&mut r, &Limits::handshake(), &mut buf)?;
        let (keys, n) = match hs.on_auth(&self.cfg.token, &auth, random::<16>()) {
            Ok(v) => v,
            Err(r) if r.is_wrong_token() => {
                // One line a minute per address at most; the rest are counted.
                // After a few, each wrong answer is held back, at most 8 at once
                // per address (64 in all): one address tests at most 8 tokens
                // per 10 s.
                let what = format!("wrong token from {}", peer.ip());
                let (line, delay) = self.throttle.failed(peer.ip(), Instant::now(), &what);
                if let Some(line) = line {
                    say!("gfast serve: {line}");
                }
                // The place at the gate goes back first: the right token from
                // the same address must find room (the hold caps these instead).
                drop(pass);
                let _held = self.throttle.hold(peer.ip());
                std::thread::sleep(delay);
                let _ = refuse(&conn, &mut w, r.code, &r.message);
                return Ok(());
            }
            Err(r) => return refuse(&conn, &mut w, r.code, &r.message),
        };
        drop(pass);
        if let Some(q) = conn.quic_conn() {
            self.quic_pending.lock().expect("quic pending").remove(&q.stable_id());
            quic::authenticated(q);
        }
        conn.set_read_timeout(None)?;
        if fds_nearly_exhausted() {
            return refuse(&conn, &mut w, code::BUSY, "server busy: it is short of file descriptors; try again later");
        }
        if self.cfg.oneshot && self.started.swap(true, Ordering::SeqCst) {
            return refuse(&conn, &mut w, code::BUSY, "this one-shot receiver already serves a session");
        }
        let id = n.session_id;
        let conn_quic = conn.quic_conn().cloned();
        let mode = if self.cfg.send.is_some() || n.pull() { Mode::Send } else { Mode::Receive };
        let root = (!self.cfg.discard).then_some(self.cfg.root.as_path());
        let setup = Setup { mode, root, store: self.cfg.store, verbose: self.cfg.verbose, keys: Some(keys.clone()) };
        let sess = Session::new(setup, &n, &conn, w).map_err(WireError::Io)?;
        sess.set_mode_mask(self.mode_mask);
        // Owners as rsync keeps them: where this end may give files away, and on
        // a daemon only when its operator said so.
        if (self.cfg.oneshot || self.cfg.preserve_owner) && crate::storage::owners::may_chown() {
            sess.keep_owners(false);
        }
        if (self.cfg.oneshot || self.cfg.allow_devices) && crate::storage::owners::may_chown() {
            sess.allow_devices();
        }
        // Extended attributes: a daemon gives `user.*` only, unless its operator
        // said --preserve-owner; a one-shot end what its user may set.
        if n.xattrs() {
            use crate::storage::xattrs::Policy;
            sess.keep_xattrs(if self.cfg.oneshot || self.cfg.preserve_owner {
                Policy::Permitted
            } else {
                Policy::User
            });
        }
        {
            // Checked and taken under one lock: concurrent AUTHs cannot pass it.
            let mut table = self.sessions.lock().expect("sessions");
            if table.len() >= self.cfg.max_sessions {
                drop(table);
                let m = format!(
                    "server busy: it serves {} sessions already (its --max-sessions); try again later",
                    self.cfg.max_sessions
                );
                sess.abort_with(code::BUSY, &m);
                return Err(WireError::Io(std::io::Error::other(format!("refused: {m}"))));
            }
            table.insert(id, sess.clone());
        }
        // Whatever ends the session, a panic in its threads included, it leaves
        // the table and gives back its place under --max-sessions.
        let _registered = Registered { server: self, id, sess: &sess };
        let res = sess.send_control(&welcome(&keys, &n)).map_err(WireError::Io).and_then(|_| match mode {
            Mode::Receive => sess.clone().run_control(r),
            Mode::Send => self.serve_pull(&sess, conn, r, &n),
        });
        let ok = res.is_ok() && sess.completed();
        drop(_registered);
        if let Some(q) = conn_quic {
            // QUIC: the client closes the connection once it has read the end;
            // closing first (or exiting) could cut what it has not read yet.
            quic::wait_closed(&q, Duration::from_secs(5));
        }
        if self.cfg.oneshot {
            *self.ended.lock().expect("ended") = Some(ok);
        }
        res
    }
}

/// A control connection that sent HELLO: its halves, its peer, and its place
/// at the gate (given up once AUTH succeeded).
struct Accepted {
    conn: Conn,
    r: BufReader<ConnReader>,
    w: ConnWriter,
    peer: SocketAddr,
    pass: Option<Pass>,
}

/// A session's entry in the daemon's table, removed (its partial files
/// cleaned up or kept for a resume) when dropped, also while unwinding.
struct Registered<'a> {
    server: &'a Server,
    id: [u8; 16],
    sess: &'a Arc<Session>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let s = self.server;
        s.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
        if std::thread::panicking() {
            // A second panic here would abort the daemon: the session's own
            // state may be poisoned, so its files are left to --partial-ttl.
            return;
        }
        s.note_ended(self.id);
        self.sess.cleanup();
        let mut kept = s.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.extend(self.sess.take_kept());
        // Bounded: past this the oldest are no longer tracked (the sweep at the
        // next start still removes them).
        let excess = kept.len().saturating_sub(MAX_KEPT_TRACKED);
        kept.drain(..excess);
    }
}

impl Server {
    /// What this daemon allows a session (its command line).
    fn policy(&self) -> ServerPolicy {
        ServerPolicy {
            allow_pull: self.cfg.allow_pull,
            read_only: self.cfg.read_only,
            oneshot: self.cfg.oneshot,
            discard: self.cfg.discard,
            max_lanes: self.cfg.max_lanes,
            wide_window: crate::engine::wide_window_fits(),
        }
    }

    fn note_ended(&self, id: [u8; 16]) {
        let mut r = self.recent.lock().expect("recent");
        let now = Instant::now();
        while r.front().is_some_and(|(_, t)| now.duration_since(*t) > RECENT_FOR) || r.len() >= RECENT_MAX {
            r.pop_front();
        }
        r.push_back((id, now));
    }

    fn ended_lately(&self, id: &[u8; 16]) -> bool {
        let now = Instant::now();
        self.recent.lock().expect("recent").iter().any(|(i, t)| i == id && now.duration_since(*t) <= RECENT_FOR)
    }

    /// The sending end of a pull (a one-shot end, or a daemon with --allow-pull):
    /// reads PULL, waits for the lanes, and runs the sending role over the
    /// session's connections.
    fn serve_pull(
        &self,
        sess: &Arc<Session>,
        conn: Conn,
        mut r: BufReader<ConnReader>,
        n: &Negotiated,
    ) -> Result<(), WireError> {
        let lanes = n.lanes;
        let mut buf = Vec::new();
        conn.set_read_timeout(Some(LANES_TIMEOUT))?;
        let Frame::Pull { target, kind, is_dir, source } = read_frame(&mut r, &Limits::control(), &mut buf)? else {
            sess.abort("expected PULL: this end only sends files");
            return Err(WireError::Io(std::io::Error::other("expected PULL")));
        };
        conn.set_read_timeout(None)?;
        let resolved = match (&self.cfg.send, source) {
            (Some(s), None) => Ok((s.clone(), None)),
            (None, Some(p)) => self.pull_source(&p),
            _ => Err((code::PROTOCOL, "PULL names a source only to a daemon that accepted the pull capability".into())),
        };
        let Some(lane_conns) = sess.take_lanes(lanes as usize, LANES_TIMEOUT) else {
            sess.abort("not every data connection joined in time");
            return Err(WireError::Io(std::io::Error::other("lanes did not join")));
        };
        // A refusal goes out once the lanes are in: the client reads the control
        // connection only after every JOINED (a lane refused earlier would hide why).
        let (src, served) = match resolved {
            Ok(v) => v,
            Err((c, m)) => {
                sess.abort_with(c, &m);
                return Err(WireError::Io(std::io::Error::other(m)));
            }
        };
        let ctl_w = sess.take_control_writer().expect("control writer");
        let wired = Wired {
            ctl: conn,
            ctl_r: r,
            ctl_w,
            lanes: lane_conns,
            rate: self.cfg.tuning.rate,
            joined: true,
            source: Box::new(match served {
                Some(root) => LocalTree::served(root),
                None => LocalTree::client(),
            }),
            n: n.clone(),
            numeric_ids: false,
        };
        let stats = Arc::new(Stats::new(lanes as usize));
        match run_sender(wired, std::slice::from_ref(&src), Target::Known(target, kind, is_dir), stats.clone(), None) {
            Ok(files) => {
                sess.mark_done();
                if self.cfg.verbose {
                    use std::sync::atomic::Ordering::Relaxed;
                    let (bytes, what) = (stats.bytes_sent.load(Relaxed), src.display());
                    say!("gfast serve: session {} done: sent {files} entries of {what}, {bytes} bytes", sess.tag);
                }
                Ok(())
            }
            Err(e) => {
                say!("gfast serve: pull of {} failed: {e}", src.display());
                Err(WireError::Io(std::io::Error::other(e.to_string())))
            }
        }
    }
}

impl Server {
    /// What a daemon's pull names: a file or directory under the root, reached
    /// without a symlink on the way (its files are then opened the same way, see
    /// [`SourceRoot`]). Returns its path and the root to open files under, or the
    /// error code and message for the client.
    fn pull_source(&self, source: &[u8]) -> Result<(PathBuf, Option<SourceRoot>), (u16, String)> {
        let comps = components(source).map_err(|e| (code::PATH_REFUSED, e.to_string()))?;
        let shown = if source.is_empty() { "the daemon's root".to_string() } else { show(source) };
        let open_err = |e: std::io::Error| (code::IO, format!("cannot open the daemon's root: {e}"));
        let kind = DestRoot::open(&self.cfg.root).map_err(open_err)?.target_kind(&comps).map_err(|e| {
            let c = if matches!(e, DestError::Refused(_)) { code::PATH_REFUSED } else { code::IO };
            (c, e.to_string())
        })?;
        match kind {
            TargetKind::File | TargetKind::Dir => {}
            TargetKind::Missing => return Err((code::NOT_FOUND, format!("{shown} does not exist on the server"))),
            TargetKind::Other => return Err((code::PATH_REFUSED, format!("{shown} is not a file or directory"))),
        }
        let root = SourceRoot::open(&self.cfg.root).map_err(open_err)?;
        let path = if source.is_empty() {
            self.cfg.root.clone()
        } else {
            self.cfg.root.join(std::ffi::OsStr::from_bytes(source))
        };
        Ok((path, Some(root)))
    }
}

pub(crate) use crate::random::random;

mod watch;
use watch::{busy_message, fds_nearly_exhausted, turn_away, watch};
