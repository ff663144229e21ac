//! Frame codec (protocol-spec §3 and §4): the 8-byte header and every v1 message.
//!
//! Decoding is pure: it takes bytes and returns a value, `Incomplete`, or a typed
//! error. It checks every length against [`Limits`] before it allocates and never
//! panics on any input (see the property tests and `fuzz/`).

use super::error::DecodeError;
use super::sync::Listed;

/// Size of the frame header in bytes (§3.1).
pub const HEADER_LEN: usize = 8;
/// Length of an xxh3-128 digest on the wire.
pub const HASH_LEN: usize = 16;
/// Length of the fixed part of a CHUNK payload before the data (§4.14).
pub const CHUNK_HEAD_LEN: usize = 16;
/// CHUNK flag: the data is compressed blocks (§4.14; capability bit 1).
pub const CHUNK_COMPRESSED: u8 = 1;
/// Largest chunk size a compressed session may use (§3.3): the sending side
/// assembles a compressed chunk in memory before its frame's length is known.
pub const MAX_COMPRESSED_CHUNK: u32 = 16 << 20;
/// FILE flag: the owner and group follow the link target (§4.7; capability bit 10).
pub const FILE_OWNER: u8 = 1;
/// Longest user or group name in a FILE (§4.7).
pub const MAX_OWNER_NAME: usize = 255;
/// FILE flag: extended attributes follow (§4.7; capability bit 11).
pub const FILE_XATTRS: u8 = 2;
/// FILE flag: a hard link to the earlier entry whose path is in `link` (§4.7;
/// capability bit 13).
pub const FILE_HARDLINK: u8 = 4;
/// Longest xattr name (Linux: XATTR_NAME_MAX) and value (XATTR_SIZE_MAX).
pub const MAX_XATTR_NAME: usize = 255;
/// Longest xattr value (Linux: XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE: usize = 64 << 10;
/// Raw bytes in every block of a compressed CHUNK but the last (§4.14).
pub const BLOCK_RAW: usize = 1 << 20;
/// A block's header in a compressed CHUNK: method u8, raw length u32, stored length u32.
pub const BLOCK_HEAD_LEN: usize = 9;
/// Block methods in a compressed CHUNK.
pub mod method {
    /// The raw bytes as they are.
    pub const STORED: u8 = 0;
    /// One zstd frame.
    pub const ZSTD: u8 = 1;
    /// A hole: `raw` zero bytes, none stored (capability bit 9).
    pub const ZERO: u8 = 2;
}
/// With capability bit 9 every block of a compressed CHUNK ends on a multiple
/// of this many raw bytes from the chunk's start, or at its end (§4.14): a
/// chunk holds at most `len / SPARSE_GRAIN + 1` blocks, and a hole shorter
/// than this travels as zeros.
pub const SPARSE_GRAIN: usize = 64 << 10;
/// Largest control frame payload (§3.3).
pub const MAX_CONTROL_PAYLOAD: u32 = 1 << 20;
/// Largest chunk size a peer may negotiate (§3.3).
pub const MAX_CHUNK_SIZE: u32 = 1 << 30;
/// Smallest chunk size a peer may negotiate (§3.3).
pub const MIN_CHUNK_SIZE: u32 = 64 << 10;
/// Longest relative path, in bytes (§3.3).
pub const MAX_PATH_LEN: usize = 32 * 1024;
/// Longest message text in ERROR, FILE_FAILED and FILE_ABORT (§3.3).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The magic that opens HELLO (§4.1).
pub const MAGIC: [u8; 4] = *b"GFST";
/// Length of nonces, proofs and MACs.
pub const NONCE_LEN: usize = 32;
/// Length of a session id or a job id.
pub const ID_LEN: usize = 16;

/// Frame type codes (§3.2).
#[allow(missing_docs)]
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const CHALLENGE: u8 = 0x02;
    pub const AUTH: u8 = 0x03;
    pub const WELCOME: u8 = 0x04;
    pub const JOIN: u8 = 0x05;
    pub const JOINED: u8 = 0x06;
    pub const TARGET: u8 = 0x10;
    pub const TARGET_INFO: u8 = 0x11;
    pub const FILE: u8 = 0x12;
    pub const FILE_READY: u8 = 0x13;
    pub const FILE_END: u8 = 0x14;
    pub const FILE_DONE: u8 = 0x15;
    pub const FILE_FAILED: u8 = 0x16;
    pub const FILE_ABORT: u8 = 0x17;
    pub const DONE: u8 = 0x18;
    pub const SESSION_DONE: u8 = 0x19;
    pub const PULL: u8 = 0x1a;
    pub const FILE_HAVE: u8 = 0x30;
    pub const FILE_SUMS: u8 = 0x40;
    pub const FILE_SAME: u8 = 0x41;
    pub const LIST: u8 = 0x50;
    pub const LISTED: u8 = 0x51;
    pub const REMOVE: u8 = 0x52;
    pub const REMOVED: u8 = 0x53;
    pub const NOTICE: u8 = 0x70;
    pub const CHUNK: u8 = 0x20;
    pub const CHUNK_ACK: u8 = 0x21;
    pub const ERROR: u8 = 0x7f;
}

/// Largest payload of a frame read before AUTH succeeded (§3.3, §5.1): the
/// handshake frames are a few dozen bytes; nothing a peer without the token says
/// can cost the daemon more than this.
pub const MAX_HANDSHAKE_PAYLOAD: u32 = 4096;

/// Decoding limits; a frame longer than its limit is refused before allocation.
/// They are a property of the connection's state (§3.3): [`Limits::handshake`]
/// until AUTH succeeded, [`Limits::control`] on a control connection after it,
/// and the negotiated chunk size on a data lane.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload accepted for any frame other than CHUNK.
    pub max_control: u32,
    /// Largest chunk data length accepted in CHUNK.
    pub max_chunk: u32,
    /// Only the handshake's frame types are legal (HELLO, CHALLENGE, AUTH,
    /// WELCOME, JOIN, JOINED, ERROR): the state before AUTH succeeded.
    pub handshake: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_control: MAX_CONTROL_PAYLOAD, max_chunk: MAX_CHUNK_SIZE, handshake: false }
    }
}

impl Limits {
    /// Before AUTH succeeded: handshake frames only, at most 4 KiB each.
    pub const fn handshake() -> Self {
        Limits { max_control: MAX_HANDSHAKE_PAYLOAD, max_chunk: 0, handshake: true }
    }

    /// A control connection after the handshake: control frames up to 1 MiB,
    /// no CHUNK (chunks travel on data lanes).
    pub const fn control() -> Self {
        Limits { max_control: MAX_CONTROL_PAYLOAD, max_chunk: 0, handshake: false }
    }

    /// A data lane of a session with this chunk size.
    pub const fn lane(chunk_size: u32) -> Self {
        Limits { max_control: 1 << 16, max_chunk: chunk_size, handshake: false }
    }
}

/// True for the frame types legal before AUTH succeeded (§5.1).
pub fn is_handshake_kind(k: u8) -> bool {
    matches!(k, kind::HELLO | kind::CHALLENGE | kind::AUTH | kind::WELCOME | kind::JOIN | kind::JOINED | kind::ERROR)
}

/// The fixed 8-byte header in front of every frame (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Frame type, one of [`kind`].
    pub kind: u8,
    /// Type-specific flags: only CHUNK has one ([`CHUNK_COMPRESSED`]); others must be zero.
    pub flags: u8,
    /// Payload length in bytes, not counting the header.
    pub len: u32,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.kind;
        out[1] = self.flags;
        out[4..8].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Decodes and validates a header against `limits` (§3.1, §3.3).
    pub fn decode(b: &[u8; HEADER_LEN], limits: &Limits) -> Result<Header, DecodeError> {
        let h = Header { kind: b[0], flags: b[1], len: u32::from_be_bytes([b[4], b[5], b[6], b[7]]) };
        if b[2] != 0 || b[3] != 0 {
            return Err(DecodeError::Reserved);
        }
        if limits.handshake && !is_handshake_kind(h.kind) {
            return Err(DecodeError::NotInHandshake(h.kind));
        }
        if h.kind == kind::CHUNK && limits.max_chunk == 0 {
            return Err(DecodeError::NotInHandshake(h.kind));
        }
        let compressed = h.kind == kind::CHUNK && h.flags == CHUNK_COMPRESSED;
        let owned = h.kind == kind::FILE && h.flags & !(FILE_OWNER | FILE_XATTRS | FILE_HARDLINK) == 0;
        if h.flags != 0 && !compressed && !owned {
            return Err(DecodeError::Flags(h.kind, h.flags));
        }
        let max = if h.kind == kind::CHUNK {
            // Compressed: the raw length, and a block header per started MiB.
            let blocks =
                if compressed { 4 + BLOCK_HEAD_LEN as u32 * limits.max_chunk.div_ceil(BLOCK_RAW as u32) } else { 0 };
            limits.max_chunk.saturating_add((CHUNK_HEAD_LEN + HASH_LEN) as u32).saturating_add(blocks)
        } else {
            limits.max_control
        };
        if h.len > max {
            return Err(DecodeError::TooLong { kind: h.kind, len: h.len, max });
        }
        Ok(h)
    }
}

/// What a FILE entry describes (§4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with `size` bytes of data.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; its target travels in the entry.
    Symlink,
    /// A named pipe (capability bit 12).
    Fifo,
    /// A Unix socket's name (bit 12).
    Socket,
    /// A character device; its number travels in `rdev` (bit 12).
    CharDev,
    /// A block device; its number travels in `rdev` (bit 12).
    BlockDev,
}

impl EntryKind {
    fn code(self) -> u8 {
        match self {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
            EntryKind::Symlink => 2,
            EntryKind::Fifo => 3,
            EntryKind::Socket => 4,
            EntryKind::CharDev => 5,
            EntryKind::BlockDev => 6,
        }
    }
    fn from_code(c: u8) -> Result<Self, DecodeError> {
        Ok(match c {
            0 => EntryKind::File,
            1 => EntryKind::Dir,
            2 => EntryKind::Symlink,
            3 => EntryKind::Fifo,
            4 => EntryKind::Socket,
            5 => EntryKind::CharDev,
            6 => EntryKind::BlockDev,
            _ => return Err(DecodeError::BadValue("entry kind")),
        })
    }
}

/// One entry of the manifest: a file, directory or symlink to create (§4.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Session-unique id, strictly increasing in announcement order.
    pub id: u64,
    /// What to create.
    pub kind: EntryKind,
    /// Permission bits (mode & 0o7777).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds part (< 1e9).
    pub mtime_nsec: u32,
    /// Size in bytes (0 for directories and symlinks).
    pub size: u64,
    /// Path relative to the receiver's root, components joined by `/`.
    pub path: Vec<u8>,
    /// Symlink target (empty unless `kind` is `Symlink`).
    pub link: Vec<u8>,
    /// Owner and group at the source (capability bit 10; `None` without it).
    pub owner: Option<Owner>,
    /// Extended attributes, names and values (capability bit 11; empty without it).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// A device's number (`st_rdev`); 0 for every other kind.
    pub rdev: u64,
    /// A hard link to the entry at `link`, announced and placed earlier in the
    /// session (capability bit 13): no data of its own, `size` 0.
    pub hardlink: bool,
}

impl FileMeta {
    /// Data chunks travel for this entry (a regular file, not a hard link).
    pub fn carries_data(&self) -> bool {
        self.kind == EntryKind::File && !self.hardlink
    }
}

impl EntryKind {
    /// A FIFO, socket or device node (capability bit 12).
    pub fn is_special(self) -> bool {
        matches!(self, EntryKind::Fifo | EntryKind::Socket | EntryKind::CharDev | EntryKind::BlockDev)
    }
    /// A device node: its number travels.
    pub fn is_device(self) -> bool {
        matches!(self, EntryKind::CharDev | EntryKind::BlockDev)
    }
}

/// Who owns an entry at the source (§4.7): ids, and names where the source
/// has them (empty: none, or `--numeric-ids`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// User name.
    pub user: Vec<u8>,
    /// Group name.
    pub group: Vec<u8>,
}

/// What the receiver found at the destination path (§4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Nothing there yet.
    Missing,
    /// An existing directory.
    Dir,
    /// An existing regular file.
    File,
    /// Something else (device, socket, …).
    Other,
}

impl TargetKind {
    fn code(self) -> u8 {
        match self {
            TargetKind::Missing => 0,
            TargetKind::Dir => 1,
            TargetKind::File => 2,
            TargetKind::Other => 3,
        }
    }
    fn from_code(c: u8) -> Result<Self, DecodeError> {
        Ok(match c {
            0 => TargetKind::Missing,
            1 => TargetKind::Dir,
            2 => TargetKind::File,
            3 => TargetKind::Other,
            _ => return Err(DecodeError::BadValue("target kind")),
        })
    }
}

/// Outcome carried by CHUNK_ACK (§4.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// The chunk hashed to the value in its trailer and is stored.
    Ok,
    /// The hash did not match: send the chunk again.
    BadHash,
    /// The file was already failed or aborted; the data was dropped.
    Dropped,
}

impl AckStatus {
    fn code(self) -> u8 {
        match self {
            AckStatus::Ok => 0,
            AckStatus::BadHash => 1,
            AckStatus::Dropped => 2,
        }
    }
    fn from_code(c: u8) -> Result<Self, DecodeError> {
        Ok(match c {
            0 => AckStatus::Ok,
            1 => AckStatus::BadHash,
            2 => AckStatus::Dropped,
            _ => return Err(DecodeError::BadValue("ack status")),
        })
    }
}

/// Every v1 frame (§4). `Chunk` is listed for completeness and for tests; the data
/// path streams chunk payloads with [`ChunkHead`] instead of buffering them.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        min_version: u16,
        max_version: u16,
        caps: u64,
        nonce: [u8; NONCE_LEN],
    },
    Challenge {
        version: u16,
        caps: u64,
        nonce: [u8; NONCE_LEN],
    },
    Auth {
        proof: [u8; NONCE_LEN],
        lanes: u16,
        chunk_size: u32,
        job_id: [u8; ID_LEN],
    },
    Welcome {
        proof: [u8; NONCE_LEN],
        session_id: [u8; ID_LEN],
        discard: bool,
    },
    Join {
        session_id: [u8; ID_LEN],
        lane: u16,
        mac: [u8; NONCE_LEN],
    },
    Joined {
        lane: u16,
    },
    Target {
        path: Vec<u8>,
    },
    TargetInfo {
        kind: TargetKind,
    },
    File(FileMeta),
    FileReady {
        id: u64,
    },
    FileEnd {
        id: u64,
        digest: [u8; HASH_LEN],
    },
    FileDone {
        id: u64,
    },
    FileFailed {
        id: u64,
        code: u16,
        message: String,
    },
    FileAbort {
        id: u64,
        code: u16,
        message: String,
    },
    Done {
        files: u64,
    },
    SessionDone {
        files: u64,
        bytes: u64,
    },
    /// `source`: what to send, under a daemon's root (only with [`crate::proto::CAP_PULL`]).
    Pull {
        target: Vec<u8>,
        kind: TargetKind,
        is_dir: bool,
        source: Option<Vec<u8>>,
    },
    FileHave {
        id: u64,
        chunks: Vec<(u32, [u8; HASH_LEN])>,
    },
    /// Delta (capability bit 3): hashes of chunks the receiver's old file holds.
    FileSums {
        id: u64,
        chunks: Vec<(u32, [u8; HASH_LEN])>,
    },
    /// Delta: chunks whose source equals what FILE_SUMS listed; they are not sent.
    FileSame {
        id: u64,
        chunks: Vec<u32>,
    },
    Notice {
        code: u16,
        message: String,
    },
    Chunk {
        head: ChunkHead,
        data: Vec<u8>,
        hash: [u8; HASH_LEN],
    },
    ChunkAck {
        id: u64,
        offset: u64,
        status: AckStatus,
    },
    Error {
        code: u16,
        message: String,
    },
    /// §4.22: list what is held under `root` (sync, capability bit 7).
    List {
        root: Vec<u8>,
        sums: bool,
    },
    /// §4.23: a batch of the listing; `mask` is the permission bits the
    /// receiver keeps of what it is sent.
    Listed {
        last: bool,
        mask: u32,
        entries: Vec<Listed>,
    },
    /// §4.24: remove these entries (after every file of the run arrived).
    Remove {
        paths: Vec<Vec<u8>>,
    },
    /// §4.24: the answer to one REMOVE.
    Removed {
        removed: u32,
        failed: u32,
        message: String,
    },
}

/// The fixed part of a CHUNK payload (§4.14): which bytes of which file follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHead {
    /// File the data belongs to.
    pub id: u64,
    /// Byte offset of the data in the file.
    pub offset: u64,
}

impl ChunkHead {
    /// Encodes the frame header and the chunk head for `data_len` bytes of data;
    /// the caller then sends the data and the 16-byte hash trailer.
    pub fn encode_prefix(&self, data_len: u32) -> [u8; HEADER_LEN + CHUNK_HEAD_LEN] {
        self.encode_prefix_flagged(0, data_len)
    }

    /// As [`ChunkHead::encode_prefix`], with CHUNK `flags` (e.g. [`CHUNK_COMPRESSED`]).
    pub fn encode_prefix_flagged(&self, flags: u8, data_len: u32) -> [u8; HEADER_LEN + CHUNK_HEAD_LEN] {
        let mut out = [0u8; HEADER_LEN + CHUNK_HEAD_LEN];
        let len = data_len + (CHUNK_HEAD_LEN + HASH_LEN) as u32;
        out[..HEADER_LEN].copy_from_slice(&Header { kind: kind::CHUNK, flags, len }.encode());
        out[8..16].copy_from_slice(&self.id.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out
    }

    /// Decodes the chunk head that follows a CHUNK header of payload length `frame_len`;
    /// returns the head and the number of data bytes that follow it.
    pub fn decode(b: &[u8; CHUNK_HEAD_LEN], frame_len: u32) -> Result<(ChunkHead, u32), DecodeError> {
        let data_len = frame_len.checked_sub((CHUNK_HEAD_LEN + HASH_LEN) as u32).ok_or(DecodeError::Short("CHUNK"))?;
        let mut r = Reader::new(b);
        let head = ChunkHead { id: r.u64()?, offset: r.u64()? };
        Ok((head, data_len))
    }
}

/// Outcome of [`decode`] on a buffer that may hold a partial frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame and how many bytes it took.
    Frame(Frame, usize),
    /// More bytes are needed; at least this many in total.
    Incomplete(usize),
}

/// Decodes one frame from the front of `buf` (§3).
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Decoded, DecodeError> {
    let Some(hb) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Decoded::Incomplete(HEADER_LEN));
    };
    let h = Header::decode(hb, limits)?;
    if h.kind == kind::CHUNK && h.flags != 0 {
        // A compressed CHUNK is only read by a lane, block by block.
        return Err(DecodeError::Flags(h.kind, h.flags));
    }
    let total = HEADER_LEN + h.len as usize;
    if buf.len() < total {
        return Ok(Decoded::Incomplete(total));
    }
    let frame = decode_flagged(h.kind, h.flags, &buf[HEADER_LEN..total])?;
    Ok(Decoded::Frame(frame, total))
}

/// Decodes the payload of a frame of type `kind` (§4). The payload must be exactly
/// the frame: trailing bytes are an error.
pub fn decode_body(k: u8, p: &[u8]) -> Result<Frame, DecodeError> {
    decode_flagged(k, 0, p)
}

/// As [`decode_body`], with the header's flags (checked by [`Header::decode`]):
/// FILE's [`FILE_OWNER`].
pub fn decode_flagged(k: u8, flags: u8, p: &[u8]) -> Result<Frame, DecodeError> {
    let mut r = Reader::new(p);
    let f = match k {
        kind::HELLO => {
            if r.array::<4>()? != MAGIC {
                return Err(DecodeError::BadMagic);
            }
            Frame::Hello { min_version: r.u16()?, max_version: r.u16()?, caps: r.u64()?, nonce: r.array()? }
        }
        kind::CHALLENGE => Frame::Challenge { version: r.u16()?, caps: r.u64()?, nonce: r.array()? },
        kind::AUTH => Frame::Auth { proof: r.array()?, lanes: r.u16()?, chunk_size: r.u32()?, job_id: r.array()? },
        kind::WELCOME => Frame::Welcome { proof: r.array()?, session_id: r.array()?, discard: r.bool()? },
        kind::JOIN => Frame::Join { session_id: r.array()?, lane: r.u16()?, mac: r.array()? },
        kind::JOINED => Frame::Joined { lane: r.u16()? },
        kind::TARGET => Frame::Target { path: r.bytes16(MAX_PATH_LEN)?.to_vec() },
        kind::TARGET_INFO => Frame::TargetInfo { kind: TargetKind::from_code(r.u8()?)? },
        kind::FILE => {
            let id = r.u64()?;
            let kind = EntryKind::from_code(r.u8()?)?;
            let mode = r.u32()?;
            let mtime_sec = r.u64()? as i64;
            let mtime_nsec = r.u32()?;
            if mtime_nsec >= 1_000_000_000 {
                return Err(DecodeError::BadValue("mtime nanoseconds"));
            }
            let size = r.u64()?;
            let path = r.bytes16(MAX_PATH_LEN)?.to_vec();
            let link = r.bytes16(MAX_PATH_LEN)?.to_vec();
            if kind != EntryKind::File && size != 0 {
                return Err(DecodeError::BadValue("size of a non-file entry"));
            }
            let hardlink = flags & FILE_HARDLINK != 0;
            if hardlink && (kind != EntryKind::File || size != 0 || link.is_empty()) {
                return Err(DecodeError::BadValue("a hard link is a file of size 0 naming its target"));
            }
            if kind != EntryKind::Symlink && !link.is_empty() && !hardlink {
                return Err(DecodeError::BadValue("link target of a non-symlink entry"));
            }
            let rdev = if kind.is_device() { r.u64()? } else { 0 };
            let owner = if flags & FILE_OWNER != 0 {
                let (uid, gid) = (r.u32()?, r.u32()?);
                let user = r.bytes16(MAX_OWNER_NAME)?.to_vec();
                let group = r.bytes16(MAX_OWNER_NAME)?.to_vec();
                Some(Owner { uid, gid, user, group })
            } else {
                None
            };
            let mut xattrs = Vec::new();
            if flags & FILE_XATTRS != 0 {
                let n = r.u16()? as usize;
                // Bounded by the frame: each takes at least 6 bytes.
                if n == 0 || n > r.b.len() / 6 {
                    return Err(DecodeError::BadValue("xattr count"));
                }
                for _ in 0..n {
                    let name = r.bytes16(MAX_XATTR_NAME)?.to_vec();
                    let len = r.u32()? as usize;
                    if name.is_empty() || len > MAX_XATTR_VALUE {
                        return Err(DecodeError::BadValue("xattr"));
                    }
                    xattrs.push((name, r.take(len)?.to_vec()));
                }
            }
            Frame::File(FileMeta {
                id,
                kind,
                mode,
                mtime_sec,
                mtime_nsec,
                size,
                path,
                link,
                owner,
                xattrs,
                rdev,
                hardlink,
            })
        }
        kind::FILE_READY => Frame::FileReady { id: r.u64()? },
        kind::FILE_END => Frame::FileEnd { id: r.u64()?, digest: r.array()? },
        kind::FILE_DONE => Frame::FileDone { id: r.u64()? },
        kind::FILE_FAILED => Frame::FileFailed { id: r.u64()?, code: r.u16()?, message: r.text()? },
        kind::FILE_ABORT => Frame::FileAbort { id: r.u64()?, code: r.u16()?, message: r.text()? },
        kind::DONE => Frame::Done { files: r.u64()? },
        kind::SESSION_DONE => Frame::SessionDone { files: r.u64()?, bytes: r.u64()? },
        kind::FILE_HAVE | kind::FILE_SUMS => {
            let id = r.u64()?;
            let n = r.u32()? as usize;
            // Bounded by the frame length, checked before this allocation.
            if n > r.b.len() / (4 + HASH_LEN) {
                return Err(DecodeError::Short("FILE_HAVE"));
            }
            let mut chunks = Vec::with_capacity(n);
            for _ in 0..n {
                chunks.push((r.u32()?, r.array()?));
            }
            if k == kind::FILE_HAVE {
                Frame::FileHave { id, chunks }
            } else {
                Frame::FileSums { id, chunks }
            }
        }
        kind::FILE_SAME => {
            let id = r.u64()?;
            let n = r.u32()? as usize;
            if n > r.b.len() / 4 {
                return Err(DecodeError::Short("FILE_SAME"));
            }
            let mut chunks = Vec::with_capacity(n);
            for _ in 0..n {
                chunks.push(r.u32()?);
            }
            Frame::FileSame { id, chunks }
        }
        kind::PULL => Frame::Pull {
            target: r.bytes16(MAX_PATH_LEN)?.to_vec(),
            kind: TargetKind::from_code(r.u8()?)?,
            is_dir: r.bool()?,
            source: if r.rest_len() > 0 { Some(r.bytes16(MAX_PATH_LEN)?.to_vec()) } else { None },
        },
        kind::CHUNK => {
            let head = ChunkHead { id: r.u64()?, offset: r.u64()? };
            let rest = r.rest();
            let split = rest.len().checked_sub(HASH_LEN).ok_or(DecodeError::Short("CHUNK"))?;
            let mut hash = [0u8; HASH_LEN];
            hash.copy_from_slice(&rest[split..]);
            Frame::Chunk { head, data: rest[..split].to_vec(), hash }
        }
        kind::CHUNK_ACK => Frame::ChunkAck { id: r.u64()?, offset: r.u64()?, status: AckStatus::from_code(r.u8()?)? },
        kind::ERROR => Frame::Error { code: r.u16()?, message: r.text()? },
        kind::NOTICE => Frame::Notice { code: r.u16()?, message: r.text()? },
        kind::LIST => Frame::List { root: r.bytes16(MAX_PATH_LEN)?.to_vec(), sums: r.bool()? },
        kind::LISTED => {
            let last = r.bool()?;
            let mask = r.u32()?;
            let n = r.u32()? as usize;
            // Bounded by the frame length (an entry takes at least 30 bytes).
            if n > r.b.len() / LISTED_MIN {
                return Err(DecodeError::Short("LISTED"));
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(listed_entry(&mut r)?);
            }
            Frame::Listed { last, mask, entries }
        }
        kind::REMOVE => {
            let n = r.u32()? as usize;
            if n > r.b.len() / 2 {
                return Err(DecodeError::Short("REMOVE"));
            }
            let mut paths = Vec::with_capacity(n);
            for _ in 0..n {
                paths.push(r.bytes16(MAX_PATH_LEN)?.to_vec());
            }
            Frame::Remove { paths }
        }
        kind::REMOVED => Frame::Removed { removed: r.u32()?, failed: r.u32()?, message: r.text()? },
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if !r.rest().is_empty() {
        return Err(DecodeError::Trailing(k));
    }
    Ok(f)
}

impl Frame {
    /// The frame type code.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => kind::HELLO,
            Frame::Challenge { .. } => kind::CHALLENGE,
            Frame::Auth { .. } => kind::AUTH,
            Frame::Welcome { .. } => kind::WELCOME,
            Frame::Join { .. } => kind::JOIN,
            Frame::Joined { .. } => kind::JOINED,
            Frame::Target { .. } => kind::TARGET,
            Frame::TargetInfo { .. } => kind::TARGET_INFO,
            Frame::File(_) => kind::FILE,
            Frame::FileReady { .. } => kind::FILE_READY,
            Frame::FileEnd { .. } => kind::FILE_END,
            Frame::FileDone { .. } => kind::FILE_DONE,
            Frame::FileFailed { .. } => kind::FILE_FAILED,
            Frame::FileAbort { .. } => kind::FILE_ABORT,
            Frame::Done { .. } => kind::DONE,
            Frame::SessionDone { .. } => kind::SESSION_DONE,
            Frame::Pull { .. } => kind::PULL,
            Frame::FileHave { .. } => kind::FILE_HAVE,
            Frame::FileSums { .. } => kind::FILE_SUMS,
            Frame::FileSame { .. } => kind::FILE_SAME,
            Frame::Chunk { .. } => kind::CHUNK,
            Frame::ChunkAck { .. } => kind::CHUNK_ACK,
            Frame::Error { .. } => kind::ERROR,
            Frame::Notice { .. } => kind::NOTICE,
            Frame::List { .. } => kind::LIST,
            Frame::Listed { .. } => kind::LISTED,
            Frame::Remove { .. } => kind::REMOVE,
            Frame::Removed { .. } => kind::REMOVED,
        }
    }

    /// Appends the encoded frame (header and payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        let w = out;
        match self {
            Frame::Hello { min_version, max_version, caps, nonce } => {
                w.extend_from_slice(&MAGIC);
                w.extend_from_slice(&min_version.to_be_bytes());
                w.extend_from_slice(&max_version.to_be_bytes());
                w.extend_from_slice(&caps.to_be_bytes());
                w.extend_from_slice(nonce);
            }
            Frame::Challenge { version, caps, nonce } => {
                w.extend_from_slice(&version.to_be_bytes());
                w.extend_from_slice(&caps.to_be_bytes());
                w.extend_from_slice(nonce);
            }
            Frame::Auth { proof, lanes, chunk_size, job_id } => {
                w.extend_from_slice(proof);
                w.extend_from_slice(&lanes.to_be_bytes());
                w.extend_from_slice(&chunk_size.to_be_bytes());
                w.extend_from_slice(job_id);
            }
            Frame::Welcome { proof, session_id, discard } => {
                w.extend_from_slice(proof);
                w.extend_from_slice(session_id);
                w.push(*discard as u8);
            }
            Frame::Join { session_id, lane, mac } => {
                w.extend_from_slice(session_id);
                w.extend_from_slice(&lane.to_be_bytes());
                w.extend_from_slice(mac);
            }
            Frame::Joined { lane } => w.extend_from_slice(&lane.to_be_bytes()),
            Frame::Target { path } => put_bytes16(w, path),
            Frame::TargetInfo { kind } => w.push(kind.code()),
            Frame::File(m) => {
                w.extend_from_slice(&m.id.to_be_bytes());
                w.push(m.kind.code());
                w.extend_from_slice(&m.mode.to_be_bytes());
                w.extend_from_slice(&(m.mtime_sec as u64).to_be_bytes());
                w.extend_from_slice(&m.mtime_nsec.to_be_bytes());
                w.extend_from_slice(&m.size.to_be_bytes());
                put_bytes16(w, &m.path);
                put_bytes16(w, &m.link);
                if m.kind.is_device() {
                    w.extend_from_slice(&m.rdev.to_be_bytes());
                }
                if let Some(o) = &m.owner {
                    w.extend_from_slice(&o.uid.to_be_bytes());
                    w.extend_from_slice(&o.gid.to_be_bytes());
                    put_bytes16(w, &o.user[..o.user.len().min(MAX_OWNER_NAME)]);
                    put_bytes16(w, &o.group[..o.group.len().min(MAX_OWNER_NAME)]);
                }
                if !m.xattrs.is_empty() {
                    w.extend_from_slice(&(m.xattrs.len() as u16).to_be_bytes());
                    for (name, value) in &m.xattrs {
                        put_bytes16(w, name);
                        w.extend_from_slice(&(value.len() as u32).to_be_bytes());
                        w.extend_from_slice(value);
                    }
                }
            }
            Frame::FileReady { id } | Frame::FileDone { id } => w.extend_from_slice(&id.to_be_bytes()),
            Frame::FileEnd { id, digest } => {
                w.extend_from_slice(&id.to_be_bytes());
                w.extend_from_slice(digest);
            }
            Frame::FileFailed { id, code, message } | Frame::FileAbort { id, code, message } => {
                w.extend_from_slice(&id.to_be_bytes());
                w.extend_from_slice(&code.to_be_bytes());
                put_bytes16(w, clip(message).as_bytes());
            }
            Frame::Done { files } => w.extend_from_slice(&files.to_be_bytes()),
            Frame::SessionDone { files, bytes } => {
                w.extend_from_slice(&files.to_be_bytes());
                w.extend_from_slice(&bytes.to_be_bytes());
            }
            Frame::FileSame { id, chunks } => {
                w.extend_from_slice(&id.to_be_bytes());
                w.extend_from_slice(&(chunks.len() as u32).to_be_bytes());
                for i in chunks {
                    w.extend_from_slice(&i.to_be_bytes());
                }
            }
            Frame::FileHave { id, chunks } | Frame::FileSums { id, chunks } => {
                w.extend_from_slice(&id.to_be_bytes());
                w.extend_from_slice(&(chunks.len() as u32).to_be_bytes());
                for (i, h) in chunks {
                    w.extend_from_slice(&i.to_be_bytes());
                    w.extend_from_slice(h);
                }
            }
            Frame::Pull { target, kind, is_dir, source } => {
                put_bytes16(w, target);
                w.push(kind.code());
                w.push(*is_dir as u8);
                if let Some(s) = source {
                    put_bytes16(w, s);
                }
            }
            Frame::Chunk { head, data, hash } => {
                w.extend_from_slice(&head.id.to_be_bytes());
                w.extend_from_slice(&head.offset.to_be_bytes());
                w.extend_from_slice(data);
                w.extend_from_slice(hash);
            }
            Frame::ChunkAck { id, offset, status } => {
                w.extend_from_slice(&id.to_be_bytes());
                w.extend_from_slice(&offset.to_be_bytes());
                w.push(status.code());
            }
            Frame::Error { code, message } | Frame::Notice { code, message } => {
                w.extend_from_slice(&code.to_be_bytes());
                put_bytes16(w, clip(message).as_bytes());
            }
            Frame::List { root, sums } => {
                put_bytes16(w, root);
                w.push(*sums as u8);
            }
            Frame::Listed { last, mask, entries } => {
                w.push(*last as u8);
                w.extend_from_slice(&mask.to_be_bytes());
                w.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for e in entries {
                    put_listed(w, e);
                }
            }
            Frame::Remove { paths } => {
                w.extend_from_slice(&(paths.len() as u32).to_be_bytes());
                for p in paths {
                    put_bytes16(w, p);
                }
            }
            Frame::Removed { removed, failed, message } => {
                w.extend_from_slice(&removed.to_be_bytes());
                w.extend_from_slice(&failed.to_be_bytes());
                put_bytes16(w, clip(message).as_bytes());
            }
        }
        let len = (w.len() - start - HEADER_LEN) as u32;
        let flags = match self {
            Frame::File(m) => {
                (if m.owner.is_some() { FILE_OWNER } else { 0 })
                    | (if m.xattrs.is_empty() { 0 } else { FILE_XATTRS })
                    | (if m.hardlink { FILE_HARDLINK } else { 0 })
            }
            _ => 0,
        };
        let h = Header { kind: self.kind(), flags, len };
        w[start..start + HEADER_LEN].copy_from_slice(&h.encode());
    }

    /// Encodes the frame into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// The smallest encoded LISTED entry: kind, flags, mode, mtime, size, two empty
/// byte strings (§4.23).
const LISTED_MIN: usize = 1 + 1 + 4 + 8 + 4 + 8 + 2 + 2;

/// Encoded size of one LISTED entry, for batching under the frame limit.
pub fn listed_len(e: &Listed) -> usize {
    LISTED_MIN + e.path.len() + e.link.len() + if e.sum.is_some() { HASH_LEN } else { 0 }
}

fn put_listed(w: &mut Vec<u8>, e: &Listed) {
    w.push(e.kind.code());
    w.push(e.sum.is_some() as u8);
    w.extend_from_slice(&e.mode.to_be_bytes());
    w.extend_from_slice(&(e.mtime_sec as u64).to_be_bytes());
    w.extend_from_slice(&e.mtime_nsec.to_be_bytes());
    w.extend_from_slice(&e.size.to_be_bytes());
    put_bytes16(w, &e.path);
    put_bytes16(w, &e.link);
    if let Some(h) = &e.sum {
        w.extend_from_slice(h);
    }
}

fn listed_entry(r: &mut Reader<'_>) -> Result<Listed, DecodeError> {
    let kind = EntryKind::from_code(r.u8()?)?;
    let has_sum = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError::BadValue("listed entry flags")),
    };
    let mode = r.u32()?;
    let mtime_sec = r.u64()? as i64;
    let mtime_nsec = r.u32()?;
    if mtime_nsec >= 1_000_000_000 {
        return Err(DecodeError::BadValue("mtime nanoseconds"));
    }
    let size = r.u64()?;
    let path = r.bytes16(MAX_PATH_LEN)?.to_vec();
    let link = r.bytes16(MAX_PATH_LEN)?.to_vec();
    if kind != EntryKind::File && (size != 0 || has_sum) {
        return Err(DecodeError::BadValue("size or sum of a non-file entry"));
    }
    if kind != EntryKind::Symlink && !link.is_empty() {
        return Err(DecodeError::BadValue("link target of a non-symlink entry"));
    }
    let sum = if has_sum { Some(r.array()?) } else { None };
    Ok(Listed { kind, mode, mtime_sec, mtime_nsec, size, path, link, sum })
}

/// Cuts a message to [`MAX_MESSAGE_LEN`] bytes on a character boundary.
fn clip(s: &str) -> &str {
    if s.len() <= MAX_MESSAGE_LEN {
        return s;
    }
    let mut end = MAX_MESSAGE_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_bytes16(w: &mut Vec<u8>, b: &[u8]) {
    // Callers keep paths under MAX_PATH_LEN and messages under MAX_MESSAGE_LEN.
    let n = b.len().min(u16::MAX as usize);
    w.extend_from_slice(&(n as u16).to_be_bytes());
    w.extend_from_slice(&b[..n]);
}

/// A bounds-checked cursor over a payload; every read returns `Short` past the end.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Short("field"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadValue("boolean")),
        }
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn bytes16(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(DecodeError::BadValue("length over limit"));
        }
        self.take(n)
    }
    fn text(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes16(MAX_MESSAGE_LEN)?;
        // Invalid UTF-8 is replaced, which can lengthen the text: clip it again so
        // a decoded frame always encodes back to a valid frame.
        Ok(clip(&String::from_utf8_lossy(b)).to_string())
    }
    fn rest_len(&self) -> usize {
        self.b.len()
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
}
