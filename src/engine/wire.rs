//! Frames on a connection, as the engine's threads use them beyond the codec:
//! turning a peer away with ERROR.

use crate::proto::frame::Frame;
use crate::transport::conn::Conn;
use crate::transport::framed::{write_frame, WireError};
use std::io::Write;

/// Sends ERROR `code` with `message`, flushes, and closes the sending side;
/// returns the error the refusing thread ends with.
pub(crate) fn refuse(conn: &Conn, w: &mut impl Write, code: u16, message: &str) -> Result<(), WireError> {
    let mut scratch = Vec::new();
    let _ = write_frame(w, &Frame::Error { code, message: message.into() }, &mut scratch);
    let _ = w.flush();
    conn.shutdown(std::net::Shutdown::Write);
    Err(WireError::Io(std::io::Error::other(format!("refused: {message}"))))
}
