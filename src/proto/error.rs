//! Typed errors of the protocol core.

use std::fmt;

/// Why a byte sequence is not a valid v1 frame (protocol-spec §3, §4).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The reserved header bytes were not zero.
    Reserved,
    /// Flags were set that v1 does not define for this frame type.
    Flags(u8, u8),
    /// The length field exceeds the limit for this frame type.
    TooLong {
        /// Frame type.
        kind: u8,
        /// Claimed payload length.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// A frame type v1 does not define.
    UnknownKind(u8),
    /// The payload ended before a field.
    Short(&'static str),
    /// The payload had bytes after the last field of a frame of this type.
    Trailing(u8),
    /// A field held a value outside its range.
    BadValue(&'static str),
    /// HELLO did not start with the magic `GFST`: the peer does not speak gfast.
    BadMagic,
    /// A frame type that is not legal in the connection's state: anything but
    /// the handshake before AUTH succeeded, or CHUNK outside a data lane (§3.3).
    NotInHandshake(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Reserved => write!(f, "reserved header bytes are not zero"),
            DecodeError::Flags(k, fl) => write!(f, "frame 0x{k:02x} has undefined flags 0x{fl:02x}"),
            DecodeError::TooLong { kind, len, max } => {
                write!(f, "frame 0x{kind:02x} claims {len} bytes, over the limit of {max}")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown frame type 0x{k:02x}"),
            DecodeError::Short(what) => write!(f, "frame too short ({what})"),
            DecodeError::Trailing(k) => write!(f, "frame 0x{k:02x} has trailing bytes"),
            DecodeError::BadValue(what) => write!(f, "invalid {what}"),
            DecodeError::BadMagic => write!(f, "peer does not speak the gfast protocol (bad magic)"),
            DecodeError::NotInHandshake(k) => {
                write!(f, "frame 0x{k:02x} is not allowed in this state of the connection")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A well-formed frame that breaks the protocol's rules for the current state
/// (protocol-spec §6). The session that receives it ends with ERROR code PROTOCOL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame type that is not allowed at this point.
    Unexpected(&'static str),
    /// A file id that was never announced, or announced out of order.
    UnknownFile(u64),
    /// A file id announced twice or not strictly increasing.
    FileIdOrder(u64),
    /// A chunk whose offset or length does not fit the file and chunk size.
    BadChunk {
        /// File id.
        id: u64,
        /// Claimed offset.
        offset: u64,
        /// Claimed data length.
        len: u64,
    },
    /// A chunk for a file that is not ready for data.
    NotReady(u64),
    /// A CHUNK_ACK that does not match the oldest chunk in flight on its lane.
    AckOrder,
    /// A negotiated value outside its allowed range.
    Negotiation(&'static str),
    /// An invalid path in a FILE or TARGET frame.
    BadPath(String),
    /// A FILE while the window of unsettled entries was full (§5.3).
    Window,
    /// A FILE whose size needs more chunks than a chunk index can count (2^32 - 1).
    TooManyChunks(u64),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Unexpected(w) => write!(f, "unexpected {w}"),
            ProtocolError::UnknownFile(id) => write!(f, "unknown file id {id}"),
            ProtocolError::FileIdOrder(id) => write!(f, "file id {id} out of order"),
            ProtocolError::BadChunk { id, offset, len } => {
                write!(f, "chunk of file {id} at offset {offset} with {len} bytes does not fit the file")
            }
            ProtocolError::NotReady(id) => write!(f, "chunk for file {id} before FILE_READY"),
            ProtocolError::AckOrder => write!(f, "acknowledgement out of order"),
            ProtocolError::Negotiation(w) => write!(f, "invalid {w} in negotiation"),
            ProtocolError::BadPath(p) => write!(f, "invalid path: {p}"),
            ProtocolError::Window => {
                write!(f, "FILE beyond the window of unsettled entries (§5.3)")
            }
            ProtocolError::TooManyChunks(size) => {
                write!(f, "a file of {size} bytes needs more chunks than a session can count: use larger chunks")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Error codes carried in ERROR, FILE_FAILED and FILE_ABORT (protocol-spec §7).
#[allow(missing_docs)]
pub mod code {
    /// NOTICE only: a keepalive, no error (§4.19).
    pub const KEEPALIVE: u16 = 0;
    pub const AUTH_FAILED: u16 = 1;
    pub const VERSION: u16 = 2;
    pub const PROTOCOL: u16 = 3;
    pub const PATH_REFUSED: u16 = 4;
    pub const IO: u16 = 5;
    pub const NO_SPACE: u16 = 6;
    pub const NOT_FOUND: u16 = 7;
    pub const BUSY: u16 = 8;
    pub const SOURCE_CHANGED: u16 = 9;
    pub const INTEGRITY: u16 = 10;
    pub const EXISTS: u16 = 11;
    pub const PERMISSION: u16 = 12;
    pub const CANCELLED: u16 = 13;
    pub const INTERNAL: u16 = 14;
}
