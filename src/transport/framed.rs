//! Reading and writing whole frames on a byte stream.

use crate::proto::error::DecodeError;
use crate::proto::frame::{decode_body, Frame, Header, Limits, HEADER_LEN};
use std::fmt;
use std::io::{self, Read, Write};

/// Why no frame could be read.
#[derive(Debug)]
pub enum WireError {
    /// The peer closed the connection cleanly between frames.
    Closed,
    /// The connection failed (reset, timeout, …).
    Io(io::Error),
    /// The bytes were not a valid frame.
    Decode(DecodeError),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Closed => write!(f, "connection closed by peer"),
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Decode(e) => write!(f, "malformed frame: {e}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else {
            WireError::Io(e)
        }
    }
}

/// Reads a frame header; a clean EOF before its first byte is `Closed`.
pub fn read_header(r: &mut impl Read, limits: &Limits) -> Result<Header, WireError> {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut hb[got..]) {
            Ok(0) if got == 0 => return Err(WireError::Closed),
            Ok(0) => return Err(WireError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::Io(e)),
        }
    }
    Header::decode(&hb, limits).map_err(WireError::Decode)
}

/// Reads one whole frame. The length is checked against `limits` before the body
/// buffer grows; `buf` is reused between calls.
pub fn read_frame(r: &mut impl Read, limits: &Limits, buf: &mut Vec<u8>) -> Result<Frame, WireError> {
    let h = read_header(r, limits)?;
    if h.flags != 0 {
        // Only a lane's reader takes compressed chunks, block by block.
        return Err(WireError::Decode(crate::proto::error::DecodeError::Flags(h.kind, h.flags)));
    }
    buf.clear();
    buf.resize(h.len as usize, 0);
    r.read_exact(buf).map_err(|e| WireError::Io(eof_is_error(e)))?;
    decode_body(h.kind, buf).map_err(WireError::Decode)
}

/// Writes one frame (not flushed).
pub fn write_frame(w: &mut impl Write, f: &Frame, scratch: &mut Vec<u8>) -> io::Result<()> {
    scratch.clear();
    f.encode(scratch);
    w.write_all(scratch)
}

/// An EOF inside a frame is a broken connection, not a clean close.
pub fn eof_is_error(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed in the middle of a frame")
    } else {
        e
    }
}
