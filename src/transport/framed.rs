//! Reading and writing whole frames on a byte stream.

use crate::proto::error::DecodeError;
use crate::proto::frame::{decode_flagged, Frame, Header, Limits, HEADER_LEN};
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

/// Reads one whole frame. The length is checked against `limits` first, and the
/// body is read into `buf` as it arrives: the buffer never grows from a length
/// the peer announced, only with bytes it actually sent (§3.3). `buf` is reused
/// between calls.
pub fn read_frame(r: &mut impl Read, limits: &Limits, buf: &mut Vec<u8>) -> Result<Frame, WireError> {
    let h = read_header(r, limits)?;
    if h.kind == crate::proto::frame::kind::CHUNK && h.flags != 0 {
        // Only a lane's reader takes compressed chunks, block by block.
        return Err(WireError::Decode(crate::proto::error::DecodeError::Flags(h.kind, h.flags)));
    }
    read_body(r, h.len as usize, buf)?;
    decode_flagged(h.kind, h.flags, buf).map_err(WireError::Decode)
}

/// True when `r` holds a whole frame in its buffer already: reading it takes no
/// system call and cannot block (a reader drains such frames under one lock).
pub fn frame_buffered<R>(r: &std::io::BufReader<R>) -> bool {
    let b = r.buffer();
    b.len() >= HEADER_LEN && b.len() - HEADER_LEN >= u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize
}

/// Reads exactly `len` bytes into `buf`, growing it by at most 64 KiB ahead of
/// what has arrived.
fn read_body(r: &mut impl Read, len: usize, buf: &mut Vec<u8>) -> Result<(), WireError> {
    const STEP: usize = 64 << 10;
    buf.clear();
    while buf.len() < len {
        let have = buf.len();
        let want = (len - have).min(STEP);
        buf.resize(have + want, 0);
        match r.read(&mut buf[have..]) {
            Ok(0) => return Err(WireError::Io(eof_is_error(io::ErrorKind::UnexpectedEof.into()))),
            Ok(n) => buf.truncate(have + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(have),
            Err(e) => return Err(WireError::Io(e)),
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::kind;

    #[test]
    fn a_frame_body_is_read_as_it_arrives() {
        // A header that announces 1 MiB followed by 10 bytes: the reader fails at
        // the end of the stream with a buffer that holds what arrived, not 1 MiB.
        let mut bytes = Header { kind: kind::FILE, flags: 0, len: 1 << 20 }.encode().to_vec();
        bytes.extend_from_slice(&[0u8; 10]);
        let mut buf = Vec::new();
        let r = read_frame(&mut &bytes[..], &Limits::control(), &mut buf);
        assert!(r.is_err());
        // At most one 64 KiB step ahead of what arrived (twice that in capacity).
        assert!(buf.capacity() <= 2 * ((64 << 10) + 10), "the buffer grew to {} bytes", buf.capacity());
    }
}
