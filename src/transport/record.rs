//! TLS 1.3 records sealed and opened here, after rustls has run the handshake.
//!
//! rustls negotiates (certificate pinning, key exchange) through its unbuffered
//! API, then hands over the traffic keys with its kernel-connection API, the one
//! kTLS users drive. From there each half protects its own direction (RFC 8446
//! §5): records of at most 16 KiB of plaintext, sealed with the negotiated AEAD
//! (ring), nonce = IV xor sequence number, the record header as associated data.
//! Compared with rustls' buffered connection this removes two copies and an
//! allocation per received record and one copy per sent record, and the two
//! halves no longer share a lock. The wire is unchanged: standard TLS 1.3 records.
//!
//! Key updates: a writer sends a KeyUpdate and switches to the next traffic
//! secret every [`KEY_UPDATE_AT`] records (far below AES-GCM's limit of 2^24);
//! a reader follows the peer's, and answers one that requests an update.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::unbuffered::{ConnectionState, EncodeError};
use rustls::{ClientConfig, ConnectionTrafficSecrets, ServerConfig};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Most plaintext in one record (RFC 8446 §5.1).
const MAX_PLAIN: usize = 1 << 14;
/// Record header: type, legacy version, length.
const HEADER: usize = 5;
/// AEAD tag.
const TAG: usize = 16;
/// Largest ciphertext a record may carry (RFC 8446 §5.2).
const MAX_CIPHER: usize = MAX_PLAIN + 256;
/// Records sent under one key before the writer moves to the next.
pub const KEY_UPDATE_AT: u64 = 1 << 22;
/// Records accepted under one key of the peer (AES-GCM's limit, RFC 8446 §5.5).
const PEER_KEY_LIMIT: u64 = 1 << 24;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const KEY_UPDATE: u8 = 24;
const NEW_SESSION_TICKET: u8 = 4;

/// What rustls keeps after the handshake: it derives the next secrets.
enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn next(&mut self, tx: bool) -> io::Result<ConnectionTrafficSecrets> {
        let r = match (self, tx) {
            (Kernel::Client(k), true) => k.update_tx_secret(),
            (Kernel::Client(k), false) => k.update_rx_secret(),
            (Kernel::Server(k), true) => k.update_tx_secret(),
            (Kernel::Server(k), false) => k.update_rx_secret(),
        };
        r.map(|(_, s)| s).map_err(io::Error::other)
    }
}

/// State both halves share: rustls' key schedule, and whether the peer asked
/// for our keys to be updated.
struct Shared {
    kernel: Mutex<Kernel>,
    update_requested: AtomicBool,
}

/// One direction's key, IV and sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new(s: &ConnectionTrafficSecrets, seq: u64) -> io::Result<Self> {
        let (alg, key, iv) = match s {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv),
            _ => return Err(io::Error::other("TLS: unsupported cipher suite")),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| io::Error::other("TLS: bad traffic key"))?;
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| io::Error::other("TLS: bad IV"))?;
        Ok(Keys { key: LessSafeKey::new(key), iv, seq })
    }

    /// The per-record nonce (RFC 8446 §5.3); each sequence number is used once.
    fn nonce(&mut self) -> io::Result<Nonce> {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or_else(|| io::Error::other("TLS: sequence number exhausted"))?;
        Ok(Nonce::assume_unique_for_key(n))
    }
}

/// The sending half.
pub struct RecordWriter {
    keys: Keys,
    shared: Arc<Shared>,
    out: Vec<u8>,
    /// Records under one key before a key update ([`KEY_UPDATE_AT`]).
    update_at: u64,
}

/// The receiving half.
pub struct RecordReader {
    keys: Keys,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    /// Ciphertext not yet opened: `buf[start..end]`.
    start: usize,
    end: usize,
    /// Plaintext not yet handed out: `buf[plain.0..plain.1]`.
    plain: (usize, usize),
    eof: bool,
    closed: bool,
    /// A record that failed: reported after the plaintext before it was handed out.
    failed: Option<(io::ErrorKind, String)>,
}

/// Drives an unbuffered rustls connection (client or server: two types with the
/// same methods) through its handshake on `tcp`; yields the handshake buffers.
macro_rules! drive {
    ($c:expr, $tcp:expr) => {{
        let mut hs = Handshake::new();
        loop {
            let status = $c.process_tls_records(&mut hs.inb[..hs.used]);
            let (discard, traffic) = step(status, &mut hs.out, &mut hs.early, $tcp)?;
            // A server may write before the client's Finished arrives: it waits for it.
            if hs.advance(discard, traffic, $c.is_handshaking(), $tcp)? {
                break;
            }
        }
        hs
    }};
}

/// Runs the client side of a handshake on `tcp`.
pub fn client(tcp: &mut TcpStream, cfg: Arc<ClientConfig>) -> io::Result<(RecordReader, RecordWriter)> {
    let mut c =
        rustls::client::UnbufferedClientConnection::new(cfg, super::tls::server_name()).map_err(io::Error::other)?;
    let hs = drive!(c, tcp);
    let (secrets, k) = c.dangerous_into_kernel_connection().map_err(io::Error::other)?;
    hs.finish(secrets, Kernel::Client(k))
}

/// Runs the server side of a handshake on `tcp`.
pub fn server(tcp: &mut TcpStream, cfg: Arc<ServerConfig>) -> io::Result<(RecordReader, RecordWriter)> {
    let mut c = rustls::server::UnbufferedServerConnection::new(cfg).map_err(io::Error::other)?;
    let hs = drive!(c, tcp);
    let (secrets, k) = c.dangerous_into_kernel_connection().map_err(io::Error::other)?;
    hs.finish(secrets, Kernel::Server(k))
}

/// Buffers of a handshake in progress.
struct Handshake {
    inb: Vec<u8>,
    used: usize,
    out: Vec<u8>,
    /// Application data that arrived with the handshake's last flight.
    early: Vec<u8>,
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Handshake {
    fn new() -> Self {
        Handshake { inb: vec![0; 64 << 10], used: 0, out: Vec::new(), early: Vec::new() }
    }

    fn read_more(&mut self, tcp: &mut TcpStream) -> io::Result<()> {
        if self.used == self.inb.len() {
            if self.inb.len() >= 1 << 20 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS: handshake too large"));
            }
            self.inb.resize(self.inb.len() * 2, 0);
        }
        match tcp.read(&mut self.inb[self.used..])? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the TLS handshake",
            )),
            n => {
                self.used += n;
                self.refused()
            }
        }
    }

    /// A server that turns a connection away before its TLS handshake (busy)
    /// says why in one plain ERROR frame (protocol-spec §5.14): its first byte,
    /// 0x7F, is no TLS record type. Once it has arrived whole, the handshake
    /// ends with the server's message (ConnectionRefused).
    fn refused(&self) -> io::Result<()> {
        use crate::proto::frame::{decode, kind, Decoded, Frame, Limits};
        if self.inb[0] != kind::ERROR {
            return Ok(());
        }
        match decode(&self.inb[..self.used], &Limits::handshake()) {
            Ok(Decoded::Frame(Frame::Error { message, .. }, _)) => {
                Err(io::Error::new(io::ErrorKind::ConnectionRefused, message))
            }
            Ok(Decoded::Incomplete(_)) => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::InvalidData, "the peer does not speak TLS")),
        }
    }

    /// Drops `discard` bytes of input, then reads more when the handshake is
    /// blocked, or when traffic is allowed while it still runs (a server before
    /// the client's Finished). Returns true once done.
    fn advance(&mut self, discard: usize, step: Step, handshaking: bool, tcp: &mut TcpStream) -> io::Result<bool> {
        self.inb.copy_within(discard..self.used, 0);
        self.used -= discard;
        match step {
            Step::Again => Ok(false),
            Step::Traffic if !handshaking => Ok(true),
            Step::Traffic | Step::Blocked => self.read_more(tcp).map(|_| false),
        }
    }

    fn finish(self, secrets: rustls::ExtractedSecrets, kernel: Kernel) -> io::Result<(RecordReader, RecordWriter)> {
        let shared = Arc::new(Shared { kernel: Mutex::new(kernel), update_requested: AtomicBool::new(false) });
        let tx = Keys::new(&secrets.tx.1, secrets.tx.0)?;
        let rx = Keys::new(&secrets.rx.1, secrets.rx.0)?;
        // Unread records stay at the front of the reader's buffer; plaintext that
        // rustls already opened goes before them.
        let cap = (128 << 10).max(self.used + self.early.len());
        let mut buf = vec![0u8; cap];
        buf[..self.early.len()].copy_from_slice(&self.early);
        let e = self.early.len();
        buf[e..e + self.used].copy_from_slice(&self.inb[..self.used]);
        let reader = RecordReader {
            keys: rx,
            shared: shared.clone(),
            buf,
            start: e,
            end: e + self.used,
            plain: (0, e),
            eof: false,
            closed: false,
            failed: None,
        };
        let writer = RecordWriter { keys: tx, shared, out: Vec::with_capacity(300 << 10), update_at: KEY_UPDATE_AT };
        Ok((reader, writer))
    }
}

/// What a handshake status asks for next.
#[derive(Clone, Copy)]
enum Step {
    /// Process again.
    Again,
    /// More input is needed.
    Blocked,
    /// Application data may be written.
    Traffic,
}

/// Acts on one status of the handshake; returns the bytes of input to drop and what next.
fn step<D>(
    status: rustls::unbuffered::UnbufferedStatus<'_, '_, D>,
    out: &mut Vec<u8>,
    early: &mut Vec<u8>,
    tcp: &mut TcpStream,
) -> io::Result<(usize, Step)> {
    let discard = status.discard;
    let mut next = Step::Again;
    match status.state.map_err(tls_err)? {
        ConnectionState::EncodeTlsData(mut e) => {
            let at = out.len();
            out.resize(at + (16 << 10), 0);
            let n = loop {
                match e.encode(&mut out[at..]) {
                    Ok(n) => break n,
                    Err(EncodeError::InsufficientSize(s)) => out.resize(at + s.required_size, 0),
                    Err(e) => return Err(io::Error::other(e.to_string())),
                }
            };
            out.truncate(at + n);
        }
        ConnectionState::TransmitTlsData(t) => {
            tcp.write_all(out)?;
            out.clear();
            t.done();
        }
        ConnectionState::ReadTraffic(mut r) => {
            while let Some(rec) = r.next_record() {
                early.extend_from_slice(rec.map_err(tls_err)?.payload);
            }
        }
        ConnectionState::BlockedHandshake => next = Step::Blocked,
        ConnectionState::WriteTraffic(_) => next = Step::Traffic,
        ConnectionState::PeerClosed | ConnectionState::Closed => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the TLS handshake",
            ))
        }
        _ => return Err(io::Error::other("TLS: unexpected state during the handshake")),
    }
    Ok((discard, next))
}

impl RecordWriter {
    /// Seals one record of `kind` carrying `data` (at most 16 KiB) onto `out`.
    fn seal(&mut self, kind: u8, data: &[u8]) -> io::Result<()> {
        let len = data.len() + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        self.out.extend_from_slice(&header);
        let body = self.out.len();
        self.out.extend_from_slice(data);
        self.out.push(kind);
        let nonce = self.keys.nonce()?;
        let tag = self
            .keys
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.out[body..])
            .map_err(|_| io::Error::other("TLS: sealing failed"))?;
        self.out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Moves to the next sending key, after telling the peer (KeyUpdate, no request).
    fn key_update(&mut self, request: bool) -> io::Result<()> {
        self.seal(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, request as u8])?;
        let next = self.shared.kernel.lock().expect("tls kernel").next(true)?;
        self.keys = Keys::new(&next, 0)?;
        Ok(())
    }

    /// Seals `data` into records and writes them to `tcp`.
    pub fn write_all(&mut self, tcp: &mut impl Write, data: &[u8]) -> io::Result<()> {
        self.out.clear();
        for piece in data.chunks(MAX_PLAIN) {
            if self.keys.seq >= self.update_at || self.shared.update_requested.swap(false, Ordering::SeqCst) {
                self.key_update(false)?;
            }
            self.seal(APPLICATION_DATA, piece)?;
        }
        tcp.write_all(&self.out)
    }

    /// Sends close_notify: the peer reads a clean end of stream.
    pub fn close_notify(&mut self, tcp: &mut impl Write) -> io::Result<()> {
        self.out.clear();
        self.seal(ALERT, &[1, 0])?;
        tcp.write_all(&self.out)
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {msg}"))
}

/// A peer gone without close_notify.
pub fn unclean_close() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the peer closed the connection without a clean TLS close (it died, or rejected data tampered with on the way)",
    )
}

impl RecordReader {
    /// Opens the record at `start` if it is complete; false when more bytes are needed.
    fn open_next(&mut self) -> io::Result<bool> {
        let avail = self.end - self.start;
        if avail < HEADER {
            return Ok(false);
        }
        let h = &self.buf[self.start..self.start + HEADER];
        let header: [u8; HEADER] = h.try_into().expect("header");
        let len = u16::from_be_bytes([h[3], h[4]]) as usize;
        if h[0] != APPLICATION_DATA || !(TAG + 1..=MAX_CIPHER).contains(&len) {
            return Err(bad("malformed record (not a gfast peer, or data tampered with on the way)"));
        }
        if avail < HEADER + len {
            return Ok(false);
        }
        let body = self.start + HEADER;
        self.start = body + len;
        if self.keys.seq >= PEER_KEY_LIMIT {
            return Err(bad("the peer sent 2^24 records without updating its key"));
        }
        let nonce = self.keys.nonce()?;
        let plain = self
            .keys
            .key
            .open_in_place(nonce, Aad::from(header), &mut self.buf[body..body + len])
            .map_err(|_| bad("a record failed authentication (data tampered with on the way)"))?;
        // The content type is the last non-zero byte (padding is zeros).
        let Some(t) = plain.iter().rposition(|&b| b != 0) else { return Err(bad("record without a content type")) };
        let kind = plain[t];
        match kind {
            APPLICATION_DATA => self.plain = (body, body + t),
            ALERT => {
                if t == 2 && plain[1] == 0 {
                    self.closed = true;
                } else {
                    let d = if t == 2 { plain[1] } else { 0 };
                    return Err(bad(&format!("the peer sent alert {d}")));
                }
            }
            HANDSHAKE => {
                let msg = plain[..t].to_vec();
                self.handshake(&msg)?;
            }
            _ => return Err(bad("unexpected record type")),
        }
        Ok(true)
    }

    /// Post-handshake messages: KeyUpdate (follow it), NewSessionTicket (not used).
    fn handshake(&mut self, mut msg: &[u8]) -> io::Result<()> {
        while !msg.is_empty() {
            let [typ, a, b, c, rest @ ..] = msg else { return Err(bad("truncated handshake message")) };
            let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
            if rest.len() < len {
                return Err(bad("truncated handshake message"));
            }
            let (body, next) = rest.split_at(len);
            match (*typ, body) {
                (KEY_UPDATE, [req]) if *req <= 1 => {
                    let s = self.shared.kernel.lock().expect("tls kernel").next(false)?;
                    self.keys = Keys::new(&s, 0)?;
                    if *req == 1 {
                        self.shared.update_requested.store(true, Ordering::SeqCst);
                    }
                }
                (NEW_SESSION_TICKET, _) => {}
                _ => return Err(bad("unexpected handshake message after the handshake")),
            }
            msg = next;
        }
        Ok(())
    }

    /// Reads plaintext into `dst` from the socket `tcp`.
    pub fn read(&mut self, tcp: &mut impl Read, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        loop {
            // Hand out what is open, then open what is complete, without a syscall.
            // A bad record ends the stream, but only after the good ones before it.
            while n < dst.len() {
                let (a, b) = self.plain;
                if a < b {
                    let k = (b - a).min(dst.len() - n);
                    dst[n..n + k].copy_from_slice(&self.buf[a..a + k]);
                    self.plain.0 += k;
                    n += k;
                    continue;
                }
                if let Some((kind, msg)) = &self.failed {
                    if n > 0 {
                        break;
                    }
                    return Err(io::Error::new(*kind, msg.clone()));
                }
                if self.closed {
                    break;
                }
                match self.open_next() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => self.failed = Some((e.kind(), e.to_string())),
                }
            }
            if n > 0 || self.closed {
                return Ok(n);
            }
            if self.eof {
                return Err(unclean_close());
            }
            // Need more ciphertext: keep the partial record, read after it.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                self.plain = (0, 0);
            }
            match tcp.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tls::{client_config, Identity};
    use std::net::TcpListener;

    /// A handshake over loopback: (client halves, server halves, client socket, server socket).
    fn pair() -> ((RecordReader, RecordWriter), (RecordReader, RecordWriter), TcpStream, TcpStream) {
        let id = Identity::ephemeral().unwrap();
        let scfg = id.server_config().unwrap();
        let (ccfg, _) = client_config(Some(id.fingerprint)).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let h = server(&mut s, scfg).unwrap();
            (h, s)
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let ch = client(&mut c, ccfg).unwrap();
        let (sh, s) = t.join().unwrap();
        (ch, sh, c, s)
    }

    fn pattern(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8).collect()
    }

    fn read_to_end(r: &mut RecordReader, s: &mut TcpStream) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 100_000];
        loop {
            match r.read(s, &mut buf)? {
                0 => return Ok(got),
                n => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn data_flows_both_ways_and_close_notify_ends_it() {
        let ((mut cr, mut cw), (mut sr, mut sw), mut c, mut s) = pair();
        let up = pattern(1_000_003, 1);
        let down = pattern(300_001, 2);
        let (up2, mut c2) = (up.clone(), c.try_clone().unwrap());
        let t = std::thread::spawn(move || {
            for piece in up2.chunks(70_000) {
                cw.write_all(&mut c2, piece).unwrap();
            }
            cw.close_notify(&mut c2).unwrap();
        });
        sw.write_all(&mut s.try_clone().unwrap(), &down).unwrap();
        sw.close_notify(&mut s.try_clone().unwrap()).unwrap();
        assert_eq!(read_to_end(&mut sr, &mut s).unwrap(), up);
        assert_eq!(read_to_end(&mut cr, &mut c).unwrap(), down);
        t.join().unwrap();
    }

    #[test]
    fn keys_are_updated_on_schedule_and_on_request() {
        let ((mut cr, mut cw), (mut sr, mut sw), mut c, mut s) = pair();
        // Every third record under a new key: 62 records, about 20 updates.
        cw.update_at = 3;
        let data = pattern(1_000_000, 3);
        cw.write_all(&mut c, &data).unwrap();
        assert!(cw.keys.seq <= 3, "no key update on schedule: seq {}", cw.keys.seq);
        // The client asks the server to update its keys too.
        cw.out.clear();
        cw.key_update(true).unwrap();
        c.write_all(&cw.out).unwrap();
        cw.close_notify(&mut c).unwrap();
        assert_eq!(read_to_end(&mut sr, &mut s).unwrap(), data);
        assert!(sr.keys.seq <= 3, "the reader did not follow the updates: seq {}", sr.keys.seq);
        assert!(sr.shared.update_requested.load(Ordering::SeqCst));
        let old_seq = sw.keys.seq;
        sw.write_all(&mut s, b"after the update").unwrap();
        assert_eq!(sw.keys.seq, 1, "the server moved to a new key (seq was {old_seq})");
        sw.close_notify(&mut s).unwrap();
        assert_eq!(read_to_end(&mut cr, &mut c).unwrap(), b"after the update");
    }

    #[test]
    fn a_flipped_bit_or_a_cut_stream_is_an_error() {
        let ((_, mut cw), (mut sr, _), _c, _s) = pair();
        let mut wire = Vec::new();
        cw.write_all(&mut wire, &pattern(50_000, 4)).unwrap();
        wire[20_000] ^= 0x10;
        let mut feed = &wire[..];
        let mut buf = vec![0u8; 1 << 16];
        let mut first = Ok(0);
        for _ in 0..3 {
            first = sr.read(&mut feed, &mut buf);
            if first.is_err() {
                break;
            }
        }
        let e = first.expect_err("tampered record accepted");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // The records before the bad one are delivered before the error, in one read.
        let ((_, mut cw), (mut sr, _), _c, _s) = pair();
        let mut wire = Vec::new();
        cw.write_all(&mut wire, b"JOIN").unwrap();
        let good = wire.len();
        cw.write_all(&mut wire, &pattern(100, 5)).unwrap();
        wire[good + 10] ^= 1;
        let mut feed = &wire[..];
        assert_eq!(sr.read(&mut feed, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"JOIN");
        let e = sr.read(&mut feed, &mut buf).expect_err("tampered record accepted");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(sr.read(&mut feed, &mut buf).is_err(), "the failure sticks");
        // A stream that ends without close_notify is not a clean end.
        let ((_, mut cw), (mut sr, _), _c, _s) = pair();
        let mut wire = Vec::new();
        cw.write_all(&mut wire, b"partial").unwrap();
        let mut feed = &wire[..wire.len() - 3];
        let e = sr.read(&mut feed, &mut buf).expect_err("truncated record accepted");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
    }
}
