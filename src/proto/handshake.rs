//! The handshake (protocol-spec §2.2, §5.1, §5.2) as two sans-I/O halves that
//! end in one [`Negotiated`] value: every later decision of a session reads that
//! value, never the capability bits themselves.
//!
//! The engine moves the frames; the halves decide. The client half is fed
//! CHALLENGE and WELCOME, the server half HELLO and AUTH, and each answers with
//! the frame to send or a typed [`Refusal`] / [`HandshakeError`].

use super::auth::SessionKeys;
use super::error::code;
use super::frame::{Frame, ID_LEN, MAX_CHUNK_SIZE, MAX_COMPRESSED_CHUNK, MIN_CHUNK_SIZE, NONCE_LEN};
use super::{
    CAPS, CAP_COMPRESS, CAP_DELTA, CAP_EARLY_DONE, CAP_HARDLINKS, CAP_OWNERS, CAP_PULL, CAP_RESUME, CAP_SPARSE,
    CAP_SPECIALS, CAP_SYNC, CAP_WIDE_WINDOW, CAP_XATTRS, FILE_WINDOW, FILE_WINDOW_WIDE, VERSION,
};
use std::fmt;

/// A set of capability bits (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps(u64);

impl Caps {
    /// Compressed chunks (bit 1).
    pub const COMPRESS: Caps = Caps(CAP_COMPRESS);
    /// Resume (bit 2).
    pub const RESUME: Caps = Caps(CAP_RESUME);
    /// Delta (bit 3).
    pub const DELTA: Caps = Caps(CAP_DELTA);
    /// DONE before every entry settled (bit 5).
    pub const EARLY_DONE: Caps = Caps(CAP_EARLY_DONE);
    /// Pull from a daemon (bit 6).
    pub const PULL: Caps = Caps(CAP_PULL);
    /// Sync: LIST, LISTED, REMOVE, REMOVED (bit 7).
    pub const SYNC: Caps = Caps(CAP_SYNC);
    /// The wide window, W = 4096 (bit 8).
    pub const WIDE_WINDOW: Caps = Caps(CAP_WIDE_WINDOW);
    /// Holes described, not sent (bit 9).
    pub const SPARSE: Caps = Caps(CAP_SPARSE);
    /// Owners and groups in FILE (bit 10).
    pub const OWNERS: Caps = Caps(CAP_OWNERS);
    /// Extended attributes in FILE (bit 11).
    pub const XATTRS: Caps = Caps(CAP_XATTRS);
    /// FIFOs, sockets and devices (bit 12).
    pub const SPECIALS: Caps = Caps(CAP_SPECIALS);
    /// Hard links (bit 13).
    pub const HARDLINKS: Caps = Caps(CAP_HARDLINKS);
    /// Every bit this build understands.
    pub const ALL: Caps = Caps(CAPS);

    /// No capability.
    pub const fn none() -> Caps {
        Caps(0)
    }

    /// The set as it travels in HELLO and CHALLENGE.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The set of `bits`, unknown ones included (they are never accepted).
    pub const fn from_bits(bits: u64) -> Caps {
        Caps(bits)
    }

    /// True when every bit of `other` is in the set.
    pub const fn contains(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }

    /// The set with `other` added when `on`.
    #[must_use]
    pub const fn with(self, other: Caps, on: bool) -> Caps {
        if on {
            Caps(self.0 | other.0)
        } else {
            self
        }
    }

    /// The set without `other`.
    #[must_use]
    pub const fn without(self, other: Caps) -> Caps {
        Caps(self.0 & !other.0)
    }

    /// The bits of both sets.
    #[must_use]
    pub const fn and(self, other: Caps) -> Caps {
        Caps(self.0 & other.0)
    }
}

/// What a session agreed on, once WELCOME went out or came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Protocol version (§2.1).
    pub version: u16,
    /// Capabilities both sides use (§2.2).
    pub caps: Caps,
    /// Data lanes the session opens (§5.1).
    pub lanes: u16,
    /// Chunk size of every file of the session (§3.3).
    pub chunk_size: u32,
    /// The session's id (§4.4).
    pub session_id: [u8; ID_LEN],
    /// The receiving end writes nothing (§4.4).
    pub discard: bool,
}

impl Negotiated {
    /// Resume is in force (§5.11).
    pub fn resume(&self) -> bool {
        self.caps.contains(Caps::RESUME)
    }
    /// Compressed chunks may travel (§4.14).
    pub fn compress(&self) -> bool {
        self.caps.contains(Caps::COMPRESS)
    }
    /// Delta is in force (§5.13).
    pub fn delta(&self) -> bool {
        self.caps.contains(Caps::DELTA)
    }
    /// The sender may send DONE before every entry settled (§4.13).
    pub fn early_done(&self) -> bool {
        self.caps.contains(Caps::EARLY_DONE)
    }
    /// A pull from a daemon: the server sends (§5.9).
    pub fn pull(&self) -> bool {
        self.caps.contains(Caps::PULL)
    }
    /// The sender may ask what the receiver holds and have entries removed (§5.15).
    pub fn sync(&self) -> bool {
        self.caps.contains(Caps::SYNC)
    }
    /// Holes travel as ZERO blocks of compressed CHUNKs (§4.14).
    pub fn sparse(&self) -> bool {
        self.caps.contains(Caps::SPARSE)
    }
    /// FILE may carry owners and groups (§4.7).
    pub fn owners(&self) -> bool {
        self.caps.contains(Caps::OWNERS)
    }
    /// FILE may announce hard links (§4.7).
    pub fn hardlinks(&self) -> bool {
        self.caps.contains(Caps::HARDLINKS)
    }
    /// FILE may announce FIFOs, sockets and devices (§4.7).
    pub fn specials(&self) -> bool {
        self.caps.contains(Caps::SPECIALS)
    }
    /// FILE may carry extended attributes (§4.7).
    pub fn xattrs(&self) -> bool {
        self.caps.contains(Caps::XATTRS)
    }
    /// What a compressed CHUNK's blocks may be in this session (§4.14).
    pub fn blocks(&self) -> super::chunk::BlockRules {
        super::chunk::BlockRules { zstd: self.compress(), sparse: self.sparse() }
    }
    /// W, the entries announced and not yet settled (§5.3).
    pub fn window(&self) -> usize {
        if self.caps.contains(Caps::WIDE_WINDOW) {
            FILE_WINDOW_WIDE
        } else {
            FILE_WINDOW
        }
    }
}

/// Why a server turns a client away: the ERROR it sends (§4.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Error code (§7).
    pub code: u16,
    /// One line for the user.
    pub message: String,
}

impl Refusal {
    fn new(code: u16, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into() }
    }

    /// The ERROR frame that carries it.
    pub fn frame(&self) -> Frame {
        Frame::Error { code: self.code, message: self.message.clone() }
    }

    /// A wrong token (the daemon throttles and logs these apart, §5.14).
    pub fn is_wrong_token(&self) -> bool {
        self.code == code::AUTH_FAILED && self.message == WRONG_TOKEN
    }
}

/// The message of a wrong token's AUTH_FAILED.
pub const WRONG_TOKEN: &str = "wrong token";

/// What a server allows (its command line, §5.9, §5.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Serves pulls by name (`--allow-pull`).
    pub allow_pull: bool,
    /// Refuses pushes (`--read-only`).
    pub read_only: bool,
    /// A one-shot end started over ssh: it knows what it sends, never pulled by name.
    pub oneshot: bool,
    /// Writes nothing (`--discard`).
    pub discard: bool,
    /// Most lanes a session may open.
    pub max_lanes: u16,
    /// Its descriptor limit holds wide windows (bit 8, §5.3).
    pub wide_window: bool,
}

/// The server's half, from HELLO to WELCOME.
#[derive(Debug)]
pub struct ServerHandshake {
    policy: ServerPolicy,
    client_nonce: [u8; NONCE_LEN],
    server_nonce: [u8; NONCE_LEN],
    caps: Caps,
}

impl ServerHandshake {
    /// Takes HELLO; answers CHALLENGE with the capabilities this server accepts,
    /// or refuses (version).
    pub fn on_hello(
        policy: ServerPolicy,
        hello: &Frame,
        server_nonce: [u8; NONCE_LEN],
    ) -> Result<(ServerHandshake, Frame), Refusal> {
        let Frame::Hello { min_version, max_version, caps, nonce } = *hello else {
            return Err(Refusal::new(code::PROTOCOL, "expected HELLO"));
        };
        if !(min_version..=max_version).contains(&VERSION) {
            let m = format!("this server speaks protocol version {VERSION}, the client {min_version}..{max_version}");
            return Err(Refusal::new(code::VERSION, m));
        }
        // Only a daemon is pulled from by name; a one-shot end knows what it sends.
        let mut accepted = Caps::from_bits(caps).and(Caps::ALL);
        if policy.oneshot {
            accepted = accepted.without(Caps::PULL);
        }
        if !policy.wide_window {
            accepted = accepted.without(Caps::WIDE_WINDOW);
        }
        // Delta on a push lets the client learn hashes of whole chunks of the
        // daemon's files: only a daemon that lets token holders read them anyway
        // (--allow-pull) takes it (§5.13). A one-shot end runs as the ssh user.
        // Sync's listing shows names, sizes and times under the root: the same
        // rule (§5.15).
        if !accepted.contains(Caps::PULL) && !policy.oneshot && !policy.allow_pull {
            accepted = accepted.without(Caps::DELTA).without(Caps::SYNC);
        }
        let challenge = Frame::Challenge { version: VERSION, caps: accepted.bits(), nonce: server_nonce };
        Ok((ServerHandshake { policy, client_nonce: nonce, server_nonce, caps: accepted }, challenge))
    }

    /// Takes AUTH: checks the token's proof, then the session's parameters
    /// against the policy. Returns the session's keys and what was agreed;
    /// [`Negotiated::session_id`] is `session_id`, and WELCOME is [`welcome`].
    pub fn on_auth(
        self,
        token: &[u8],
        auth: &Frame,
        session_id: [u8; ID_LEN],
    ) -> Result<(SessionKeys, Negotiated), Refusal> {
        let Frame::Auth { proof, lanes, chunk_size, .. } = *auth else {
            return Err(Refusal::new(code::PROTOCOL, "expected AUTH"));
        };
        let keys = SessionKeys::derive(token, &self.client_nonce, &self.server_nonce);
        if !keys.verify_client(&proof) {
            return Err(Refusal::new(code::AUTH_FAILED, WRONG_TOKEN));
        }
        let p = self.policy;
        if lanes == 0 || lanes > p.max_lanes {
            return Err(Refusal::new(code::PROTOCOL, format!("lanes must be 1..={}", p.max_lanes)));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(Refusal::new(code::PROTOCOL, "chunk size must be 64 KiB..1 GiB"));
        }
        if self.caps.contains(Caps::COMPRESS) && chunk_size > MAX_COMPRESSED_CHUNK {
            let m = format!("compressed sessions take chunks up to {} MiB", MAX_COMPRESSED_CHUNK >> 20);
            return Err(Refusal::new(code::PROTOCOL, m));
        }
        let pull = self.caps.contains(Caps::PULL);
        if pull && !p.allow_pull {
            let m = "this daemon does not serve pulls: its operator can start it with --allow-pull";
            return Err(Refusal::new(code::PERMISSION, m));
        }
        if !pull && p.read_only {
            let m = "this daemon only serves pulls (--read-only): nothing can be pushed to it";
            return Err(Refusal::new(code::PERMISSION, m));
        }
        if pull && p.discard {
            return Err(Refusal::new(code::PERMISSION, "this daemon runs with --discard: it has nothing to send"));
        }
        let n = Negotiated { version: VERSION, caps: self.caps, lanes, chunk_size, session_id, discard: p.discard };
        Ok((keys, n))
    }
}

/// WELCOME for an agreed session (§4.4).
pub fn welcome(keys: &SessionKeys, n: &Negotiated) -> Frame {
    Frame::Welcome { proof: keys.server_proof(), session_id: n.session_id, discard: n.discard }
}

/// Why the client's half gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The server refused with ERROR.
    Refused(Refusal),
    /// The server broke the handshake's rules.
    Protocol(&'static str),
    /// The server chose a version this client does not speak.
    Version(u16),
    /// A pull by name from a server that does not serve it (an older gfast, or
    /// a one-shot end).
    NoPull,
    /// The server could not prove it knows the token.
    ServerProof,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Refused(r) => write!(f, "{}", r.message),
            HandshakeError::Protocol(m) => write!(f, "{m}"),
            HandshakeError::Version(v) => write!(f, "server chose unsupported version {v}"),
            HandshakeError::NoPull => write!(f, "the server does not serve pulls by name"),
            HandshakeError::ServerProof => {
                write!(f, "the server could not prove it knows the token: refusing to send to it")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

fn refused(f: &Frame) -> Option<HandshakeError> {
    match f {
        Frame::Error { code, message } => Some(HandshakeError::Refused(Refusal::new(*code, message.clone()))),
        _ => None,
    }
}

/// The client's half, from HELLO to WELCOME.
#[derive(Debug)]
pub struct ClientHandshake {
    offer: Caps,
    client_nonce: [u8; NONCE_LEN],
}

/// The client's half after CHALLENGE: what the server accepted, and the keys.
pub struct Challenged {
    /// Capabilities the server accepted.
    pub caps: Caps,
    keys: SessionKeys,
}

impl ClientHandshake {
    /// Starts a handshake offering `offer`; returns the half and HELLO.
    pub fn start(offer: Caps, client_nonce: [u8; NONCE_LEN]) -> (ClientHandshake, Frame) {
        let hello =
            Frame::Hello { min_version: VERSION, max_version: VERSION, caps: offer.bits(), nonce: client_nonce };
        (ClientHandshake { offer, client_nonce }, hello)
    }

    /// Takes CHALLENGE (or a refusal) and derives the session's keys from `token`.
    pub fn on_challenge(self, token: &[u8], f: &Frame) -> Result<Challenged, HandshakeError> {
        if let Some(e) = refused(f) {
            return Err(e);
        }
        let Frame::Challenge { version, nonce, caps } = *f else {
            return Err(HandshakeError::Protocol("expected CHALLENGE"));
        };
        if version != VERSION {
            return Err(HandshakeError::Version(version));
        }
        let caps = Caps::from_bits(caps);
        if !self.offer.contains(caps) {
            return Err(HandshakeError::Protocol("server accepted capabilities that were not offered"));
        }
        if self.offer.contains(Caps::PULL) && !caps.contains(Caps::PULL) {
            return Err(HandshakeError::NoPull);
        }
        Ok(Challenged { caps, keys: SessionKeys::derive(token, &self.client_nonce, &nonce) })
    }
}

impl fmt::Debug for Challenged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys stay out of logs.
        f.debug_struct("Challenged").field("caps", &self.caps).finish_non_exhaustive()
    }
}

impl Challenged {
    /// AUTH for `lanes` lanes of `chunk_size` chunks.
    pub fn auth(&self, lanes: u16, chunk_size: u32, job_id: [u8; ID_LEN]) -> Frame {
        Frame::Auth { proof: self.keys.client_proof(), lanes, chunk_size, job_id }
    }

    /// The session's keys (lanes prove themselves with them, §5.2).
    pub fn keys(&self) -> &SessionKeys {
        &self.keys
    }

    /// Takes WELCOME (or a refusal) for the AUTH sent with `lanes` and `chunk_size`.
    pub fn on_welcome(&self, f: &Frame, lanes: u16, chunk_size: u32) -> Result<Negotiated, HandshakeError> {
        if let Some(e) = refused(f) {
            return Err(e);
        }
        let Frame::Welcome { proof, session_id, discard } = *f else {
            return Err(HandshakeError::Protocol("expected WELCOME"));
        };
        if !self.keys.verify_server(&proof) {
            return Err(HandshakeError::ServerProof);
        }
        Ok(Negotiated { version: VERSION, caps: self.caps, lanes, chunk_size, session_id, discard })
    }
}

/// Checks a lane's JOIN against its session (§4.5): the MAC proves the token,
/// the lane is in range and joins once, and it is encrypted like the session.
pub fn admit_lane(
    keys: &SessionKeys,
    session_id: &[u8; ID_LEN],
    join: (u16, &[u8; NONCE_LEN]),
    joined: &mut [bool],
    encrypted_like_session: bool,
) -> Result<(), Refusal> {
    let (lane, mac) = join;
    let ok = keys.verify_join(session_id, lane, mac) && encrypted_like_session;
    match joined.get_mut(lane as usize) {
        Some(j) if ok && !*j => {
            *j = true;
            Ok(())
        }
        _ => Err(Refusal::new(
            code::AUTH_FAILED,
            "data connection refused: bad or repeated JOIN, or not encrypted like the session",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: ServerPolicy = ServerPolicy {
        allow_pull: false,
        read_only: false,
        oneshot: false,
        discard: false,
        max_lanes: 64,
        wide_window: true,
    };

    /// Drives both halves against each other; the server's refusal, if any.
    fn run(
        policy: ServerPolicy,
        offer: Caps,
        tokens: (&[u8], &[u8]),
        lanes: u16,
        chunk: u32,
    ) -> Result<(Negotiated, Negotiated), HandshakeError> {
        let (c, hello) = ClientHandshake::start(offer, [1; 32]);
        let (s, challenge) = match ServerHandshake::on_hello(policy, &hello, [2; 32]) {
            Ok(v) => v,
            Err(r) => return Err(HandshakeError::Refused(r)),
        };
        let ch = c.on_challenge(tokens.0, &challenge)?;
        let auth = ch.auth(lanes, chunk, [0; 16]);
        let (keys, server_side) = match s.on_auth(tokens.1, &auth, [9; 16]) {
            Ok(v) => v,
            Err(r) => return ch.on_welcome(&r.frame(), lanes, chunk).map(|n| (n.clone(), n)),
        };
        let client_side = ch.on_welcome(&welcome(&keys, &server_side), lanes, chunk)?;
        Ok((client_side, server_side))
    }

    fn refusal(r: Result<(Negotiated, Negotiated), HandshakeError>) -> Refusal {
        match r {
            Err(HandshakeError::Refused(r)) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn both_halves_agree_on_one_value() {
        let offer = Caps::RESUME.with(Caps::COMPRESS, true).with(Caps::EARLY_DONE, true).with(Caps::DELTA, true);
        let (c, s) = run(ServerPolicy { allow_pull: true, ..POLICY }, offer, (b"t", b"t"), 4, 8 << 20).unwrap();
        assert_eq!(c, s);
        assert!(c.resume() && c.compress() && c.early_done() && c.delta() && !c.pull());
        assert_eq!((c.lanes, c.chunk_size, c.session_id), (4, 8 << 20, [9; 16]));
    }

    #[test]
    fn each_refusal_is_typed() {
        let t: (&[u8], &[u8]) = (b"t", b"t");
        let r = refusal(run(POLICY, Caps::none(), (b"a", b"b"), 1, 1 << 20));
        assert!(r.is_wrong_token());
        assert_eq!(refusal(run(POLICY, Caps::none(), t, 0, 1 << 20)).code, code::PROTOCOL);
        assert_eq!(refusal(run(POLICY, Caps::none(), t, 65, 1 << 20)).code, code::PROTOCOL);
        assert_eq!(refusal(run(POLICY, Caps::none(), t, 1, 1024)).code, code::PROTOCOL);
        assert_eq!(refusal(run(POLICY, Caps::COMPRESS, t, 1, 32 << 20)).code, code::PROTOCOL);
        assert_eq!(refusal(run(POLICY, Caps::PULL, t, 1, 1 << 20)).code, code::PERMISSION);
        let ro = ServerPolicy { read_only: true, allow_pull: true, ..POLICY };
        assert_eq!(refusal(run(ro, Caps::none(), t, 1, 1 << 20)).code, code::PERMISSION);
        let discard = ServerPolicy { discard: true, allow_pull: true, ..POLICY };
        assert_eq!(refusal(run(discard, Caps::PULL, t, 1, 1 << 20)).code, code::PERMISSION);
        // A version the server does not speak.
        let hello = Frame::Hello { min_version: 7, max_version: 9, caps: 0, nonce: [0; 32] };
        assert_eq!(ServerHandshake::on_hello(POLICY, &hello, [0; 32]).unwrap_err().code, code::VERSION);
    }

    #[test]
    fn capabilities_follow_the_policy() {
        let t: (&[u8], &[u8]) = (b"t", b"t");
        // Delta on a push needs --allow-pull (§5.13); a one-shot end takes it.
        let (n, _) = run(POLICY, Caps::DELTA, t, 1, 1 << 20).unwrap();
        assert!(!n.delta());
        let (n, _) = run(ServerPolicy { oneshot: true, ..POLICY }, Caps::DELTA, t, 1, 1 << 20).unwrap();
        assert!(n.delta());
        // A one-shot end is never pulled from by name: the client says so.
        let r = run(ServerPolicy { oneshot: true, allow_pull: true, ..POLICY }, Caps::PULL, t, 1, 1 << 20);
        assert_eq!(r.unwrap_err(), HandshakeError::NoPull);
        // The wide window only where the server's descriptors hold it (§5.3).
        let (n, _) = run(POLICY, Caps::WIDE_WINDOW, t, 1, 1 << 20).unwrap();
        assert_eq!(n.window(), crate::proto::FILE_WINDOW_WIDE);
        let (n, _) = run(ServerPolicy { wide_window: false, ..POLICY }, Caps::WIDE_WINDOW, t, 1, 1 << 20).unwrap();
        assert_eq!(n.window(), crate::proto::FILE_WINDOW);
        let (n, _) = run(POLICY, Caps::none(), t, 1, 1 << 20).unwrap();
        assert_eq!(n.window(), crate::proto::FILE_WINDOW);
        // Unknown bits are never accepted.
        let (c, hello) = ClientHandshake::start(Caps::from_bits(1 << 40), [1; 32]);
        let (_, challenge) = ServerHandshake::on_hello(POLICY, &hello, [2; 32]).unwrap();
        assert_eq!(c.on_challenge(b"t", &challenge).unwrap().caps, Caps::none());
    }

    #[test]
    fn a_server_that_cheats_is_caught() {
        let (c, _) = ClientHandshake::start(Caps::none(), [1; 32]);
        let extra = Frame::Challenge { version: VERSION, caps: CAP_RESUME, nonce: [2; 32] };
        assert!(matches!(c.on_challenge(b"t", &extra), Err(HandshakeError::Protocol(_))));
        let (c, _) = ClientHandshake::start(Caps::none(), [1; 32]);
        let ch = c.on_challenge(b"t", &Frame::Challenge { version: VERSION, caps: 0, nonce: [2; 32] }).unwrap();
        let fake = Frame::Welcome { proof: [0; 32], session_id: [0; 16], discard: false };
        assert_eq!(ch.on_welcome(&fake, 1, 1 << 20), Err(HandshakeError::ServerProof));
        let (c, _) = ClientHandshake::start(Caps::none(), [1; 32]);
        let wrong_version = Frame::Challenge { version: 2, caps: 0, nonce: [2; 32] };
        assert_eq!(c.on_challenge(b"t", &wrong_version).unwrap_err(), HandshakeError::Version(2));
    }

    #[test]
    fn lanes_join_once_with_a_valid_mac() {
        let keys = SessionKeys::derive(b"t", &[1; 32], &[2; 32]);
        let id = [5; 16];
        let mut joined = vec![false; 2];
        let mac0 = keys.join_mac(&id, 0);
        assert!(admit_lane(&keys, &id, (0, &mac0), &mut joined, true).is_ok());
        assert!(admit_lane(&keys, &id, (0, &mac0), &mut joined, true).is_err(), "a replayed JOIN");
        let mac1 = keys.join_mac(&id, 1);
        assert!(admit_lane(&keys, &id, (1, &mac1), &mut joined, false).is_err(), "not encrypted like the session");
        assert!(admit_lane(&keys, &id, (1, &[0; 32]), &mut joined, true).is_err(), "a forged MAC");
        let mac2 = keys.join_mac(&id, 2);
        assert!(admit_lane(&keys, &id, (2, &mac2), &mut joined, true).is_err(), "out of range");
        assert!(admit_lane(&keys, &id, (1, &mac1), &mut joined, true).is_ok());
    }
}
