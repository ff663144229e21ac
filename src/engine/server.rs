//! `gfast serve`: accepts connections, runs the handshake on control connections and
//! attaches data lanes to their sessions. A session's failure never ends the daemon.

use super::send::{run_sender, Target, Wired};
use super::session::{self, Mode, Session};
use super::stats::Stats;
use crate::proto::auth::SessionKeys;
use crate::proto::error::code;
use crate::proto::frame::TargetKind;
use crate::proto::frame::{Frame, Limits, MAX_CHUNK_SIZE, MAX_COMPRESSED_CHUNK, MIN_CHUNK_SIZE};
use crate::proto::path::{components, show};
use crate::proto::{CAPS, CAP_COMPRESS, CAP_DELTA, CAP_EARLY_DONE, CAP_PULL, CAP_RESUME, VERSION};
use crate::storage::dest::{DestError, DestRoot, SourceRoot};
use crate::transport::conn::{Conn, ConnReader, ConnWriter, TLS_HANDSHAKE_BYTE};
use crate::transport::framed::{read_frame, write_frame, WireError};
use crate::transport::quic;
use crate::transport::tcp::{self, Tuning};
use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Validated settings of a daemon.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Everything is confined under this directory.
    pub root: PathBuf,
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
}

/// The running daemon: configuration and live sessions.
pub struct Server {
    pub(crate) cfg: ServeConfig,
    pub(crate) sessions: Mutex<HashMap<[u8; 16], Arc<Session>>>,
    pending: AtomicUsize,
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

/// Connections still in their first frame are limited, so a flood of idle sockets
/// cannot exhaust threads.
const MAX_PENDING: usize = 512;
/// How long a new connection may take to send its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(15);

impl Server {
    /// A daemon with this configuration.
    pub fn new(cfg: ServeConfig) -> Arc<Self> {
        Arc::new(Server {
            cfg,
            sessions: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            ended: Mutex::new(None),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
        tcp::listen(addr)
    }

    /// Accepts connections forever; each gets its own thread.
    pub fn run(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        self.accept_loop(listener, &|| false)
    }

    /// One-shot mode: serves one session and returns whether it succeeded. Gives up
    /// (false) when no session starts within `idle`, or when `channel_closed` says
    /// the ssh channel that started us is gone.
    pub fn run_oneshot(self: &Arc<Self>, listener: TcpListener, idle: Duration, channel_closed: &AtomicBool) -> bool {
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
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    say!("gfast serve: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if self.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let _ = stream.set_nonblocking(false);
            let me = self.clone();
            std::thread::spawn(move || {
                if let Err(e) = me.handle(stream) {
                    if me.cfg.verbose || !matches!(e, WireError::Closed) {
                        say!("gfast serve: session from {peer} ended: {e}");
                    }
                }
            });
        }
    }

    fn handle(self: &Arc<Self>, stream: TcpStream) -> Result<(), WireError> {
        let conn = (|| {
            stream.set_read_timeout(Some(FIRST_FRAME_TIMEOUT))?;
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
        match conn {
            Ok(c) => self.handle_conn(c),
            Err(e) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Listens for QUIC on UDP `addr` (the TCP port's number) and serves every
    /// stream of every connection like an accepted TCP connection. Returns a note
    /// when a kernel limit caps the UDP buffers.
    pub fn start_quic(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<Option<String>> {
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
                    while let Ok((s, r)) = conn.accept_bi().await {
                        if me.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
                            me.pending.fetch_sub(1, Ordering::SeqCst);
                            continue;
                        }
                        let (me, c) = (me.clone(), conn.clone());
                        std::thread::spawn(move || {
                            if let Err(e) = me.handle_conn(Conn::quic(quic::Stream::new(c, s, r))) {
                                if me.cfg.verbose || !matches!(e, WireError::Closed) {
                                    say!("gfast serve: QUIC session from {peer} ended: {e}");
                                }
                            }
                        });
                    }
                });
            }
        });
        Ok(note)
    }

    /// Reads the first frame of a new connection (TCP or a QUIC stream) and runs
    /// what it asks for: a session (HELLO) or a data lane (JOIN).
    fn handle_conn(self: &Arc<Self>, conn: Conn) -> Result<(), WireError> {
        let first = (|| {
            conn.set_read_timeout(Some(FIRST_FRAME_TIMEOUT))?;
            let (r, w) = conn.split()?;
            let mut r = BufReader::with_capacity(256 << 10, r);
            let mut buf = Vec::new();
            let f = read_frame(&mut r, &Limits::default(), &mut buf)?;
            conn.set_read_timeout(None)?;
            Ok::<_, WireError>((r, w, f))
        })();
        self.pending.fetch_sub(1, Ordering::SeqCst);
        let (r, mut w, first) = first?;
        if !conn.is_tls() && !self.cfg.allow_plain {
            let m = "this server requires encryption: drop --no-encrypt, or start the server with --allow-no-encrypt";
            return refuse(&conn, &mut w, code::AUTH_FAILED, m);
        }
        match first {
            Frame::Hello { min_version, max_version, nonce, caps } => {
                self.control(conn, r, w, (min_version, max_version, caps), nonce)
            }
            Frame::Join { session_id, lane, mac } => {
                let s = self.sessions.lock().expect("sessions").get(&session_id).cloned();
                match s {
                    Some(s) => session::run_lane(s, conn, r, w, lane, mac),
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

    fn control(
        self: &Arc<Self>,
        conn: Conn,
        mut r: BufReader<ConnReader>,
        w: ConnWriter,
        (min_v, max_v, offered): (u16, u16, u64),
        cn: [u8; 32],
    ) -> Result<(), WireError> {
        // Only a daemon is pulled from by name; a one-shot end knows what it sends.
        let mut caps = offered & CAPS & if self.cfg.oneshot { !CAP_PULL } else { !0 };
        // Delta on a push lets the client learn hashes of whole chunks of the
        // daemon's files: only a daemon that lets token holders read them anyway
        // (--allow-pull) takes it. A one-shot end runs as the ssh user.
        if caps & CAP_PULL == 0 && !self.cfg.oneshot && !self.cfg.allow_pull {
            caps &= !CAP_DELTA;
        }
        let mut w = BufWriter::with_capacity(64 << 10, w);
        if self.cfg.oneshot && self.started.load(Ordering::SeqCst) {
            return refuse(&conn, &mut w, code::BUSY, "this one-shot receiver already serves a session");
        }
        if !(min_v..=max_v).contains(&VERSION) {
            let m = format!("this server speaks protocol version {VERSION}, the client {min_v}..{max_v}");
            return refuse(&conn, &mut w, code::VERSION, &m);
        }
        let sn = random::<32>();
        let mut scratch = Vec::new();
        write_frame(&mut w, &Frame::Challenge { version: VERSION, caps, nonce: sn }, &mut scratch)?;
        w.flush()?;
        let mut buf = Vec::new();
        conn.set_read_timeout(Some(FIRST_FRAME_TIMEOUT))?;
        let Frame::Auth { proof, lanes, chunk_size, .. } = read_frame(&mut r, &Limits::default(), &mut buf)? else {
            return refuse(&conn, &mut w, code::PROTOCOL, "expected AUTH");
        };
        conn.set_read_timeout(None)?;
        let keys = SessionKeys::derive(&self.cfg.token, &cn, &sn);
        if !keys.verify_client(&proof) {
            return refuse(&conn, &mut w, code::AUTH_FAILED, "wrong token");
        }
        if lanes == 0 || lanes > self.cfg.max_lanes {
            return refuse(&conn, &mut w, code::PROTOCOL, &format!("lanes must be 1..={}", self.cfg.max_lanes));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return refuse(&conn, &mut w, code::PROTOCOL, "chunk size must be 64 KiB..1 GiB");
        }
        if caps & CAP_COMPRESS != 0 && chunk_size > MAX_COMPRESSED_CHUNK {
            let m = format!("compressed sessions take chunks up to {} MiB", MAX_COMPRESSED_CHUNK >> 20);
            return refuse(&conn, &mut w, code::PROTOCOL, &m);
        }
        let pull = caps & CAP_PULL != 0;
        if pull && !self.cfg.allow_pull {
            let m = "this daemon does not serve pulls: its operator can start it with --allow-pull";
            return refuse(&conn, &mut w, code::PERMISSION, m);
        }
        if !pull && self.cfg.read_only {
            let m = "this daemon only serves pulls (--read-only): nothing can be pushed to it";
            return refuse(&conn, &mut w, code::PERMISSION, m);
        }
        if pull && self.cfg.discard {
            return refuse(&conn, &mut w, code::PERMISSION, "this daemon runs with --discard: it has nothing to send");
        }
        if self.cfg.oneshot && self.started.swap(true, Ordering::SeqCst) {
            return refuse(&conn, &mut w, code::BUSY, "this one-shot receiver already serves a session");
        }
        let id = random::<16>();
        let conn_quic = conn.quic_conn().cloned();
        let mode = if self.cfg.send.is_some() || pull { Mode::Send } else { Mode::Receive };
        let root = (!self.cfg.discard).then_some(self.cfg.root.as_path());
        let sess =
            Session::new(mode, root, self.cfg.verbose, id, Some(keys.clone()), lanes, chunk_size as u64, &conn, w)
                .map_err(WireError::Io)?;
        sess.set_resume(caps & CAP_RESUME != 0);
        sess.set_compress(caps & CAP_COMPRESS != 0);
        sess.set_delta(caps & CAP_DELTA != 0);
        self.sessions.lock().expect("sessions").insert(id, sess.clone());
        let welcome = Frame::Welcome { proof: keys.server_proof(), session_id: id, discard: self.cfg.discard };
        let res = sess.send_control(&welcome).map_err(WireError::Io).and_then(|_| match mode {
            Mode::Receive => sess.clone().run_control(r),
            Mode::Send => self.serve_pull(&sess, conn, r, (lanes, chunk_size), caps),
        });
        self.sessions.lock().expect("sessions").remove(&id);
        self.note_ended(id);
        let ok = res.is_ok() && sess.completed();
        sess.cleanup();
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

impl Server {
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
        (lanes, chunk_size): (u16, u32),
        caps: u64,
    ) -> Result<(), WireError> {
        let resume = caps & CAP_RESUME != 0;
        let mut buf = Vec::new();
        conn.set_read_timeout(Some(FIRST_FRAME_TIMEOUT))?;
        let Frame::Pull { target, kind, is_dir, source } = read_frame(&mut r, &Limits::default(), &mut buf)? else {
            sess.abort("expected PULL: this end only sends files");
            return Err(WireError::Io(std::io::Error::other("expected PULL")));
        };
        conn.set_read_timeout(None)?;
        let resolved = match (&self.cfg.send, source) {
            (Some(s), None) => Ok((s.clone(), None)),
            (None, Some(p)) => self.pull_source(&p),
            _ => Err((code::PROTOCOL, "PULL names a source only to a daemon that accepted the pull capability".into())),
        };
        let Some(lane_conns) = sess.take_lanes(lanes as usize, FIRST_FRAME_TIMEOUT) else {
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
            early_done: caps & CAP_EARLY_DONE != 0,
            served,
            compress: caps & CAP_COMPRESS != 0,
            delta: caps & CAP_DELTA != 0,
        };
        let stats = Arc::new(Stats::new(lanes as usize));
        match run_sender(
            wired,
            std::slice::from_ref(&src),
            Target::Known(target, kind, is_dir),
            chunk_size,
            resume,
            stats.clone(),
        ) {
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

/// Sends ERROR and closes.
pub(crate) fn refuse(conn: &Conn, w: &mut impl Write, code: u16, message: &str) -> Result<(), WireError> {
    let mut scratch = Vec::new();
    let _ = write_frame(w, &Frame::Error { code, message: message.into() }, &mut scratch);
    let _ = w.flush();
    conn.shutdown(std::net::Shutdown::Write);
    Err(WireError::Io(std::io::Error::other(format!("refused: {message}"))))
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random<const N: usize>() -> [u8; N] {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).expect("the system random generator failed");
    b
}
