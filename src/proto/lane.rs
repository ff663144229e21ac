//! A lane seen from the sending side (protocol-spec §4.15, §5.4): which chunks
//! it carries unacknowledged, when it may take another, and the rule that its
//! acknowledgements come in the order its chunks went out.

use super::error::ProtocolError;
use std::collections::VecDeque;

/// Most chunks a lane has unacknowledged (§5.4): their acks (about 60 bytes
/// each in TLS) always fit the peer's socket buffer, so the peer never blocks
/// writing acks while this lane blocks writing data.
pub const MAX_UNACKED_CHUNKS: usize = 1024;

/// Bytes a lane may have unacknowledged with chunks of `chunk_size` (§5.4).
pub const fn max_unacked_bytes(chunk_size: u64) -> u64 {
    2 * chunk_size + (4 << 20)
}

/// The chunks a lane sent and that are not acknowledged yet, oldest first,
/// each with the engine's `T` (say, when it went out).
#[derive(Debug)]
pub struct LaneWindow<T> {
    sent: VecDeque<(u64, u64, u32, T)>,
    bytes: u64,
    max_bytes: u64,
}

impl<T> LaneWindow<T> {
    /// An empty window for a session with chunks of `chunk_size`.
    pub fn new(chunk_size: u64) -> Self {
        LaneWindow { sent: VecDeque::new(), bytes: 0, max_bytes: max_unacked_bytes(chunk_size) }
    }

    /// True when the lane must not take another chunk now.
    pub fn is_full(&self) -> bool {
        self.sent.len() >= MAX_UNACKED_CHUNKS || self.bytes >= self.max_bytes
    }

    /// A chunk of `len` bytes went out.
    pub fn sent(&mut self, id: u64, offset: u64, len: u32, tag: T) {
        self.sent.push_back((id, offset, len, tag));
        self.bytes += u64::from(len);
    }

    /// CHUNK_ACK for `(id, offset)`: it must acknowledge the oldest chunk in
    /// flight (§4.15). Returns that chunk's tag.
    pub fn on_ack(&mut self, id: u64, offset: u64) -> Result<T, ProtocolError> {
        match self.sent.front() {
            Some(&(i, o, _, _)) if i == id && o == offset => {}
            _ => return Err(ProtocolError::AckOrder),
        }
        let (_, _, len, tag) = self.sent.pop_front().expect("checked above");
        self.bytes -= u64::from(len);
        Ok(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_come_in_order_and_the_window_fills() {
        let mut w = LaneWindow::new(1 << 20);
        assert!(!w.is_full());
        w.sent(1, 0, 1 << 20, 'a');
        w.sent(1, 1 << 20, 1 << 20, 'b');
        assert!(!w.is_full());
        w.sent(2, 0, 4 << 20, 'c');
        assert!(w.is_full(), "2 x chunk + 4 MiB unacknowledged");
        assert_eq!(w.on_ack(1, 1 << 20), Err(ProtocolError::AckOrder), "not the oldest");
        assert_eq!(w.on_ack(1, 0), Ok('a'));
        assert_eq!(w.on_ack(1, 1 << 20), Ok('b'));
        assert!(!w.is_full());
        assert_eq!(w.on_ack(2, 0), Ok('c'));
        assert_eq!(w.on_ack(2, 0), Err(ProtocolError::AckOrder), "nothing in flight");
        let mut many = LaneWindow::new(1 << 30);
        for i in 0..MAX_UNACKED_CHUNKS as u64 {
            many.sent(i, 0, 1, ());
        }
        assert!(many.is_full(), "at most {MAX_UNACKED_CHUNKS} chunks");
    }
}
