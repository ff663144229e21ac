//! The dialing side of a session: connects the control connection and the lanes,
//! runs the handshake, and then takes the sending role (`push`) or the receiving
//! role (`pull`).

use super::error::Error;
use super::send::{run_sender, wire_err, Target, Wired};
use super::server::random;
use super::stats::Stats;
use crate::proto::error::code;
use crate::proto::frame::{Frame, Limits};
use crate::proto::handshake::{Caps, ClientHandshake, HandshakeError, Negotiated};
use crate::storage::store::LocalTree;
use crate::transport::conn::{Conn, ConnReader, ConnWriter};
use crate::transport::framed::WireError;
use crate::transport::framed::{read_frame, write_frame};
use crate::transport::quic;
use crate::transport::tcp::{self, Tuning};
use crate::transport::tls::{self, Fingerprint};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Validated settings of one push.
#[derive(Debug, Clone)]
pub(crate) struct PushConfig {
    /// Local files and directories to send.
    pub sources: Vec<PathBuf>,
    /// "host:port" of the daemon.
    pub server: String,
    /// Destination path under the server's root (no leading or trailing slash).
    pub dest: Vec<u8>,
    /// The destination was written with a trailing slash: it names a directory.
    pub dest_is_dir: bool,
    /// Shared token.
    pub token: Vec<u8>,
    /// Number of data lanes; 0 picks from the handshake's round trip.
    pub lanes: u16,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Socket tuning.
    pub tuning: Tuning,
    /// Job id (for reports now, for resume later).
    pub job_id: [u8; 16],
    /// Encrypt every connection with TLS (the default).
    pub encrypt: bool,
    /// The server key to insist on (`--fingerprint`).
    pub fingerprint: Option<Fingerprint>,
    /// Where server keys are remembered (trust on first use); `None` disables it.
    pub known_hosts: Option<PathBuf>,
    /// Says one line to the user (e.g. that a new server key is trusted).
    pub notice: fn(&str),
    /// Resume what an earlier run left (protocol-spec §5.11).
    pub resume: bool,
    /// Carry the session over one QUIC connection instead of TCP connections.
    pub quic: bool,
    /// Ask for compressed chunks (zstd), whichever way the session's data flows.
    pub compress: bool,
    /// Offer holes as ZERO blocks (capability bit 9), whichever way the data flows.
    pub sparse: bool,
    /// Offer owners and groups (capability bit 10), whichever way the data flows.
    pub owners: bool,
    /// Owners by number, not by name (`--numeric-ids`).
    pub numeric_ids: bool,
    /// Offer extended attributes and ACLs (capability bit 11).
    pub xattrs: bool,
    /// Offer FIFOs, sockets and devices (capability bit 12).
    pub specials: bool,
    /// Offer hard links (capability bit 13).
    pub hardlinks: bool,
    /// Ask for delta: files the receiver already has under their names are
    /// compared chunk by chunk and only the differing chunks are sent.
    pub delta: bool,
    /// How a pull writes what it receives (`--fsync`, `--io`).
    pub store: crate::storage::store::StoreConfig,
    /// A sync: compare with what the receiver holds and send only what differs.
    pub sync: Option<super::send::SyncPlan>,
}

/// What a finished push reports.
#[derive(Debug)]
pub(crate) struct Summary {
    /// Entries the receiver confirmed.
    pub files: u64,
    /// The server writes nothing (`--discard`).
    pub discard: bool,
}

/// Runs one push to completion. `stats` is updated live for progress display.
pub(crate) fn push(cfg: &PushConfig, stats: Arc<Stats>) -> Result<Summary, Error> {
    // Check every source before touching the network.
    for s in &cfg.sources {
        let md = std::fs::metadata(s).map_err(|e| Error::Source(s.clone(), e))?;
        if md.is_dir() {
            std::fs::read_dir(s).map_err(|e| Error::Source(s.clone(), e))?;
        } else {
            File::open(s).map_err(|e| Error::Source(s.clone(), e))?;
        }
    }
    // TARGET goes out with the session's first frames; its answer is read once the
    // lanes are open (one round trip fewer before the first chunk).
    let d = dial(cfg, &stats, Some(Frame::Target { path: cfg.dest.clone() }))?;
    let target = Target::Asked(cfg.dest.clone(), cfg.dest_is_dir);
    let discard = d.wired.n.discard;
    let files = run_sender(d.wired, &cfg.sources, target, stats.clone(), cfg.sync.as_ref());
    end_quic(d.quic.as_ref(), files.is_ok(), &stats);
    Ok(Summary { files: files?, discard })
}

/// Where a pull's files land on this machine.
pub(crate) struct PullDest<'a> {
    /// The local directory everything is confined to.
    pub root: &'a std::path::Path,
    /// The path under `root` (may be empty).
    pub target: Vec<u8>,
    /// What is at `target` now.
    pub kind: crate::proto::frame::TargetKind,
    /// The user wrote the destination as a directory (trailing `/`).
    pub is_dir: bool,
}

/// Runs one pull: asks the sending end for its files (PULL with where they land
/// here, and for a daemon, `source`: what to send from under its root) and
/// takes the receiving role. Returns the entries completed.
pub(crate) fn pull(cfg: &PushConfig, dest: PullDest, source: Option<Vec<u8>>, stats: Arc<Stats>) -> Result<u64, Error> {
    let PullDest { root, target, kind, is_dir } = dest;
    let d = dial(cfg, &stats, Some(Frame::Pull { target, kind, is_dir, source }))?;
    let w = d.wired;
    stats.mark_first_byte();
    let got = super::session::receive_dialed(root, cfg.store, w, cfg.tuning.timeout);
    end_quic(d.quic.as_ref(), got.is_ok(), &stats);
    let super::session::Received { files, bytes, compressed, holes } = got?;
    use std::sync::atomic::Ordering::Relaxed;
    stats.bytes_compressed.store(compressed, Relaxed);
    stats.bytes_holes.store(holes, Relaxed);
    stats.files_done.store(files, Relaxed);
    stats.files_total.store(files, Relaxed);
    stats.bytes_done.store(bytes, Relaxed);
    stats.bytes_total.store(bytes, Relaxed);
    // What the receiving end counts: payload bytes of completed files, less
    // what came as holes.
    stats.bytes_sent.store(bytes.saturating_sub(holes), Relaxed);
    Ok(files)
}

/// Over QUIC: keeps what the connection saw for the report, then closes it.
fn end_quic(q: Option<&quic::Client>, completed: bool, stats: &Stats) {
    if let Some(q) = q {
        *stats.quic.lock().expect("stats") = Some(quic::stats(&q.conn));
        q.close(completed);
    }
}

/// An established session seen from the dialing side.
pub(crate) struct Dialed {
    /// The session's connections and what was agreed.
    pub(crate) wired: Wired,
    /// The QUIC connection, closed by the caller when the session is over.
    pub(crate) quic: Option<quic::Client>,
}

/// Connects the control connection, runs the handshake (protocol-spec §5.1, §5.2),
/// sends `first` right after WELCOME if given (PULL), and opens the lanes.
pub(crate) fn dial(cfg: &PushConfig, stats: &Stats, first: Option<Frame>) -> Result<Dialed, Error> {
    // Every wait of the handshake (connect, TLS, CHALLENGE, WELCOME, JOINED)
    // is bounded by --timeout.
    let timeout = cfg.tuning.timeout;
    let (pin, tofu) = match (cfg.encrypt, cfg.fingerprint, &cfg.known_hosts) {
        (false, ..) => (None, false),
        (true, Some(f), _) => (Some(f), false),
        (true, None, Some(kh)) => match tls::known_host(kh, &cfg.server) {
            Some(f) => (Some(f), false),
            None => (None, true),
        },
        (true, None, None) => (None, false),
    };
    let (ctl, fingerprint, qc) = open_conn(cfg, timeout, pin)?;
    if let Some(note) = qc.as_ref().and_then(|q| q.note.clone()) {
        (cfg.notice)(&note);
    }
    *stats.server_key.lock().expect("stats") = fingerprint.map(|f| f.to_string());
    let (r, w) = ctl.split().map_err(|e| Error::Io("socket".into(), e))?;
    let mut r = BufReader::with_capacity(64 << 10, r);
    let mut w = BufWriter::with_capacity(64 << 10, w);
    let mut scratch = Vec::new();
    let mut buf = Vec::new();
    // The server has not proved the token yet: its frames are handshake frames,
    // as small as the daemon takes them (protocol-spec §3.3).
    let limits = Limits::handshake();
    let mut send = |w: &mut BufWriter<ConnWriter>, f: &Frame| -> Result<(), Error> {
        write_frame(w, f, &mut scratch).and_then(|_| w.flush()).map_err(|e| Error::PeerVanished(e.to_string()))
    };
    let mut recv = |r: &mut BufReader<ConnReader>| -> Result<Frame, Error> {
        read_frame(r, &limits, &mut buf).map_err(|e| handshake_err(cfg, e))
    };

    // Handshake (protocol-spec §5.1, §5.2).
    ctl.set_read_timeout(Some(timeout)).ok();
    let from_daemon = matches!(first, Some(Frame::Pull { source: Some(_), .. }));
    let syncing = cfg.sync.is_some() && first.as_ref().is_some_and(|f| matches!(f, Frame::Target { .. }));
    let offer = Caps::EARLY_DONE
        .with(Caps::RESUME, cfg.resume || syncing)
        .with(Caps::SYNC, syncing)
        .with(Caps::PULL, from_daemon)
        .with(Caps::COMPRESS, cfg.compress)
        .with(Caps::SPARSE, cfg.sparse)
        .with(Caps::OWNERS, cfg.owners)
        .with(Caps::XATTRS, cfg.xattrs)
        .with(Caps::SPECIALS, cfg.specials)
        .with(Caps::HARDLINKS, cfg.hardlinks)
        .with(Caps::DELTA, cfg.delta)
        // A pull's receiver is this end: it holds the window's files open.
        .with(Caps::WIDE_WINDOW, crate::engine::wide_window_fits());
    let t_hello = std::time::Instant::now();
    let (hs, hello) = ClientHandshake::start(offer, random::<32>());
    send(&mut w, &hello)?;
    let challenged = hs.on_challenge(&cfg.token, &recv(&mut r)?).map_err(|e| handshake_failed(cfg, e))?;
    let caps = challenged.caps;
    if cfg.delta && !caps.contains(Caps::DELTA) {
        (cfg.notice)(
            "the server does not compare chunks (an older gfast, or a daemon without --allow-pull): changed files go whole",
        );
    }
    if cfg.compress && !caps.contains(Caps::COMPRESS) {
        (cfg.notice)("the server cannot take compressed chunks (an older gfast): data goes as it is");
    }
    if cfg.owners && !caps.contains(Caps::OWNERS) {
        (cfg.notice)("the server cannot carry owners and groups (an older gfast): files get the receiving user's");
    }
    if cfg.xattrs && !caps.contains(Caps::XATTRS) {
        (cfg.notice)("the server cannot carry extended attributes or ACLs (an older gfast): they are left behind");
    }
    if cfg.resume && !caps.contains(Caps::RESUME) {
        (cfg.notice)("the server cannot resume: everything is sent again");
    }
    // The handshake's round trip picks the lane count when not given: more lanes
    // keep a long path full while each one's window grows (measured on an emulated
    // 1 Gbit/s 50 ms link: 4 lanes 790, 8 lanes 831 Mbit/s from the first byte).
    // Over QUIC the first stream's round trip also pays for the server's new
    // stream and thread (2-5 ms on loopback, which read as a WAN and gave 8
    // streams): quinn's estimate from the handshake's packets is the path's.
    let rtt = match &qc {
        Some(q) => q.conn.rtt().min(t_hello.elapsed()),
        None => t_hello.elapsed(),
    };
    // Over QUIC one congestion controller drives every stream: on a LAN more
    // streams only add threads (loopback, 2 GiB: 1 stream 1.08 GB/s, 2 1.06, 4
    // 0.96, 8 0.93); on a long path see quic_wan_lanes.
    let lanes = match (cfg.lanes, cfg.quic) {
        (0, false) if rtt < Duration::from_millis(2) => 4,
        (0, false) => wan_lanes(rtt, tcp::KernelLimits::read().tcp_wmem_max),
        (0, true) if rtt < Duration::from_millis(2) => 2,
        (0, true) => quic_wan_lanes(rtt),
        (n, _) => n,
    };
    stats.handshake_rtt_us.store(rtt.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
    stats.lanes.store(lanes as u64, std::sync::atomic::Ordering::Relaxed);
    // A receiving client (pull) waits for JOINED before the server starts sending;
    // a sending one sends chunks right behind JOIN (one round trip fewer) and its
    // acknowledgement reader takes the JOINED (or a refusal) first.
    let await_joined = matches!(first, Some(Frame::Pull { .. }));
    let keys = challenged.keys().clone();
    type Lane = (Conn, BufReader<ConnReader>, ConnWriter);
    let (lanes, n) = std::thread::scope(|sc| -> Result<(Vec<Lane>, Negotiated), Error> {
        // TCP lanes connect and run TLS while AUTH and WELCOME cross (one round
        // trip fewer); they must present the same server key as the control
        // connection. QUIC streams cost no round trip: they open below.
        let early: Vec<_> = match qc {
            Some(_) => Vec::new(),
            None => (0..lanes).map(|_| sc.spawn(move || open_conn(cfg, timeout, fingerprint))).collect(),
        };
        let auth = challenged.auth(lanes, cfg.chunk_size, cfg.job_id);
        let welcome = send(&mut w, &auth).and_then(|_| {
            let f = recv(&mut r)?;
            challenged.on_welcome(&f, lanes, cfg.chunk_size).map_err(|e| handshake_failed(cfg, e))
        });
        let n = match welcome {
            Ok(v) => v,
            Err(e) => {
                // No session: end the lanes that connected early cleanly, so the
                // server sees them close rather than break.
                for h in early {
                    if let Ok(Ok((c, ..))) = h.join() {
                        if let Ok((_, mut lw)) = c.split() {
                            let _ = lw.close_notify();
                        }
                    }
                }
                return Err(e);
            }
        };
        let session_id = n.session_id;
        stats.setup_us.store(stats.start.elapsed().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
        // Remember the key only once the server proved it knows the token.
        if let (true, Some(fp), Some(kh)) = (tofu, fingerprint, &cfg.known_hosts) {
            match tls::remember_host(kh, &cfg.server, fp) {
                Ok(()) => (cfg.notice)(&format!(
                    "first connection to {}: trusting its key {fp} (remembered in {})",
                    cfg.server,
                    kh.display()
                )),
                Err(e) => (cfg.notice)(&format!("cannot remember the key of {} in {}: {e}", cfg.server, kh.display())),
            }
        }
        if let Some(f) = &first {
            // Before the lanes, so the server knows the session's direction when they join.
            send(&mut w, f)?;
        }
        ctl.set_read_timeout(None).ok();

        // Each lane joins in its own thread: one round trip for all of them.
        let mut early = early.into_iter();
        let hs: Vec<_> = (0..lanes)
            .map(|lane| {
                let (keys, qc, pre) = (&keys, &qc, early.next());
                sc.spawn(move || -> Result<Lane, Error> {
                    let c = match (pre, qc) {
                        (Some(h), _) => h.join().expect("lane connect thread")?.0,
                        (None, Some(q)) => Conn::quic(
                            quic::Stream::open(&q.conn)
                                .map_err(|e| Error::PeerVanished(format!("QUIC stream: {e}")))?,
                        ),
                        (None, None) => open_conn(cfg, timeout, fingerprint)?.0,
                    };
                    let (r, mut w) = c.split().map_err(|e| Error::Io("socket".into(), e))?;
                    let mut r = BufReader::with_capacity(64 << 10, r);
                    let mut scratch = Vec::new();
                    let join = Frame::Join { session_id, lane, mac: keys.join_mac(&session_id, lane) };
                    write_frame(&mut w, &join, &mut scratch)
                        .and_then(|_| w.flush())
                        .map_err(|e| Error::PeerVanished(e.to_string()))?;
                    if !await_joined {
                        return Ok((c, r, w));
                    }
                    c.set_read_timeout(Some(timeout)).ok();
                    let mut b = Vec::new();
                    match read_frame(&mut r, &Limits::handshake(), &mut b).map_err(wire_err)? {
                        Frame::Joined { lane: l } if l == lane => {}
                        Frame::Error { code, message } => return Err(Error::Remote(code, message)),
                        _ => return Err(Error::Protocol("expected JOINED".into())),
                    }
                    c.set_read_timeout(None).ok();
                    Ok((c, r, w))
                })
            })
            .collect();
        let lanes = hs.into_iter().map(|h| h.join().expect("lane setup thread")).collect::<Result<Vec<_>, _>>()?;
        Ok((lanes, n))
    })?;
    let wired = Wired {
        ctl,
        ctl_r: r,
        ctl_w: w,
        lanes,
        rate: cfg.tuning.rate,
        joined: await_joined,
        source: Box::new(LocalTree::client()),
        n,
        numeric_ids: cfg.numeric_ids,
    };
    Ok(Dialed { wired, quic: qc })
}

/// Connects, tunes and (unless `--no-encrypt`) runs TLS pinned to `pin` (any key
/// when `None`); returns the connection, the key seen, and with QUIC the
/// connection its streams are opened on.
fn open_conn(
    cfg: &PushConfig,
    timeout: Duration,
    pin: Option<Fingerprint>,
) -> Result<(Conn, Option<Fingerprint>, Option<quic::Client>), Error> {
    if cfg.quic {
        let (tls_cfg, verifier) = tls::client_config(pin).map_err(|e| Error::Io("TLS setup".into(), e))?;
        let q = quic::connect(&cfg.server, &tls_cfg, cfg.tuning.timeout).map_err(|e| match (pin, verifier.seen()) {
            (Some(want), Some(got)) if want != got => key_changed(cfg, want, got),
            _ if e.kind() == std::io::ErrorKind::TimedOut => Error::Connect(cfg.server.clone(), e),
            _ => Error::Protocol(format!("QUIC handshake with {} failed: {e}", cfg.server)),
        })?;
        let s = quic::Stream::open(&q.conn).map_err(|e| Error::PeerVanished(format!("QUIC stream: {e}")))?;
        return Ok((Conn::quic(s), verifier.seen(), Some(q)));
    }
    let tcp = tcp::connect(&cfg.server, timeout).map_err(|e| Error::Connect(cfg.server.clone(), e))?;
    tcp::tune(&tcp, &cfg.tuning).map_err(|e| Error::Io("tuning a socket".into(), e))?;
    if !cfg.encrypt {
        return Ok((Conn::plain(tcp), None, None));
    }
    let (tls_cfg, verifier) = tls::client_config(pin).map_err(|e| Error::Io("TLS setup".into(), e))?;
    tcp.set_read_timeout(Some(timeout)).ok();
    let conn = Conn::tls_client(tcp, tls_cfg).map_err(|e| match (pin, verifier.seen()) {
        (Some(want), Some(got)) if want != got => key_changed(cfg, want, got),
        _ if e.kind() == std::io::ErrorKind::ConnectionRefused => Error::Remote(code::BUSY, e.to_string()),
        _ if is_timeout(&e) => Error::NoAnswer(cfg.server.clone(), cfg.tuning.timeout.as_secs()),
        // Every TLS failure (an alert included) comes as InvalidData (transport/record.rs).
        _ if e.kind() == std::io::ErrorKind::InvalidData => Error::Protocol(format!(
            "TLS handshake with {} failed: {e} (is it a gfast server, and does it allow your --no-encrypt setting?)",
            cfg.server
        )),
        _ => Error::PeerVanished(format!("TLS handshake with {}: {e}", cfg.server)),
    })?;
    conn.set_read_timeout(None).ok();
    Ok((conn, verifier.seen(), None))
}

/// What the user is told when the handshake's client half gives up.
fn handshake_failed(cfg: &PushConfig, e: HandshakeError) -> Error {
    match e {
        HandshakeError::Refused(r) => Error::Remote(r.code, r.message),
        HandshakeError::ServerProof => Error::Auth(e.to_string()),
        HandshakeError::NoPull => Error::Usage(format!(
            "{} cannot be pulled from: it runs an older gfast, or is a one-shot end; pull over ssh instead (HOST:PATH)",
            cfg.server
        )),
        HandshakeError::Protocol(_) | HandshakeError::Version(_) => Error::Protocol(e.to_string()),
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// A frame of the handshake could not be read: a silent server is reported
/// as such, and a plaintext peer that is no gfast server as that.
fn handshake_err(cfg: &PushConfig, e: WireError) -> Error {
    match e {
        WireError::Io(e) if is_timeout(&e) => Error::NoAnswer(cfg.server.clone(), cfg.tuning.timeout.as_secs()),
        WireError::Decode(d) if !cfg.encrypt => {
            Error::Protocol(format!("{} is not a gfast server, or not one that speaks this protocol ({d})", cfg.server))
        }
        e => wire_err(e),
    }
}

fn key_changed(cfg: &PushConfig, want: Fingerprint, got: Fingerprint) -> Error {
    if cfg.fingerprint.is_some() {
        return Error::Auth(format!(
            "the server {} presented key {got}, not the {want} that --fingerprint asks for: check the fingerprint \
             (`gfast serve` prints its key) and that this is the right server",
            cfg.server
        ));
    }
    Error::Auth(format!(
        "the server's key changed: expected {want}, got {got}. If you trust the new key, pass --fingerprint {got} \
         or remove the line for {} from {}",
        cfg.server,
        cfg.known_hosts.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the known-hosts file".into())
    ))
}

/// TCP lanes on a long path: enough that their send buffers (autotuned up to
/// tcp_wmem's maximum, about half of it payload) hold the bandwidth-delay
/// product of a 2.5 Gbit/s path; 8 to 32. On the emulated 2 Gbit/s 100 ms link
/// (tcp_wmem maximum 4 MiB), 2 GiB: 8 lanes 1,361 Mbit/s with the send buffers
/// limiting a quarter of the time, 16 lanes 1,597.
fn wan_lanes(rtt: Duration, tcp_wmem_max: u64) -> u16 {
    const PATH_BYTES_PER_SEC: f64 = 2.5e9 / 8.0;
    let per_lane = (tcp_wmem_max.max(1 << 20) / 2) as f64;
    ((PATH_BYTES_PER_SEC * rtt.as_secs_f64() / per_lane).ceil() as u16).clamp(8, 32)
}

/// QUIC streams on a long path: one per 6.25 ms of round trip, 8 to 32. A lost
/// packet holds up its stream's in-order delivery, and the acknowledgements of
/// that lane's chunks, for more than a round trip while the other streams go
/// on. Emulated links, 1 GiB from the first byte: 1 Gbit/s 100 ms 0.1 % loss, 4
/// / 8 / 16 streams 834-861 / 856-905 / 899-906 Mbit/s; 1 Gbit/s 50 ms, 4 / 8
/// streams 851-882 / 916-924; 500 Mbit/s 200 ms, 4 / 16 / 30 all 409-423.
fn quic_wan_lanes(rtt: Duration) -> u16 {
    ((rtt.as_secs_f64() / 0.00625).ceil() as u16).clamp(8, 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_streams_grow_with_the_round_trip() {
        let ms = Duration::from_millis;
        assert_eq!(quic_wan_lanes(ms(2)), 8);
        assert_eq!(quic_wan_lanes(ms(50)), 8);
        assert_eq!(quic_wan_lanes(ms(100)), 16);
        assert_eq!(quic_wan_lanes(ms(200)), 32);
        assert_eq!(quic_wan_lanes(ms(600)), 32);
    }

    #[test]
    fn long_paths_get_lanes_for_their_send_buffers() {
        let ms = Duration::from_millis;
        let small = 4 << 20;
        assert_eq!(wan_lanes(ms(2), small), 8);
        assert_eq!(wan_lanes(ms(50), small), 8);
        assert_eq!(wan_lanes(ms(100), small), 15);
        assert_eq!(wan_lanes(ms(200), small), 30);
        assert_eq!(wan_lanes(ms(600), small), 32);
        // Larger send buffers: fewer lanes do.
        assert_eq!(wan_lanes(ms(100), 32 << 20), 8);
        assert_eq!(wan_lanes(ms(200), 16 << 20), 8);
        // An unreadable limit (0) counts as 1 MiB.
        assert_eq!(wan_lanes(ms(100), 0), 32);
    }
}
