//! Sync on the receiving side (protocol-spec §5.15): listing what is held
//! under a root (LIST → LISTED) and removing entries (REMOVE → REMOVED).

use super::*;
use crate::proto::frame::listed_len;

/// A LISTED frame is cut at this many bytes of entries (well under the 1 MiB
/// control frame limit) or this many entries, so the sender merges as the
/// listing arrives.
const LISTED_BYTES: usize = 256 << 10;
const LISTED_ENTRIES: usize = 4096;
/// Entries a REMOVE may name (§4.24).
pub(crate) const REMOVE_MAX: usize = 4096;
/// Unreadable places under a listed root told to the sender, at most.
const LIST_NOTICES: usize = 20;

impl Session {
    /// LIST: streams what the destination holds under `root`, in listing order.
    pub(super) fn on_list(&self, root: &[u8], sums: bool) -> Result<(), Fatal> {
        let comps = components(root).map_err(|e| Fatal::Code(code::PATH_REFUSED, e.to_string()))?;
        // Reading the tree is local work the peer waits for, not its silence;
        // writing to the peer is not (a peer that stops reading is silent).
        let mut listing = {
            let _working = Working::new(&self.working);
            self.state.lock().expect("state").dest.list(&comps, sums).map_err(|e| {
                let c = if matches!(e, DestError::Refused(_)) { code::PATH_REFUSED } else { code::IO };
                Fatal::Code(c, e.to_string())
            })?
        };
        let mask = self.mode_mask.load(Ordering::Relaxed) & 0o7777;
        let (mut batch, mut bytes, mut told) = (Vec::new(), 0, 0);
        loop {
            let next = {
                let _working = Working::new(&self.working);
                listing.next()
            };
            let Some(item) = next else { break };
            match item {
                // A peer without bit 12 cannot read these kinds (§4.23).
                Ok(e) if e.kind.is_special() && !self.n.specials() => {}
                Ok(e) => {
                    bytes += listed_len(&e);
                    batch.push(e);
                    if bytes >= LISTED_BYTES || batch.len() >= LISTED_ENTRIES {
                        let entries = std::mem::take(&mut batch);
                        self.send_control(&Frame::Listed { last: false, mask, entries }).map_err(io_fatal)?;
                        bytes = 0;
                    }
                }
                Err(e) if told < LIST_NOTICES => {
                    told += 1;
                    let message = format!("listing the destination: {e}");
                    self.queue_control(&Frame::Notice { code: code::IO, message }).map_err(io_fatal)?;
                }
                Err(_) => {}
            }
        }
        self.send_control(&Frame::Listed { last: true, mask, entries: batch }).map_err(io_fatal)
    }

    /// REMOVE: removes each entry (a directory only when empty), never through
    /// a symlink, and says how many went.
    pub(super) fn on_remove(&self, paths: &[Vec<u8>]) -> Result<(), Fatal> {
        if paths.len() > REMOVE_MAX {
            return Err(Fatal::Protocol(ProtocolError::Unexpected("REMOVE naming more than 4,096 entries")));
        }
        let _working = Working::new(&self.working);
        let (mut removed, mut failed, mut message) = (0u32, 0u32, String::new());
        {
            let mut st = self.state.lock().expect("state");
            for p in paths {
                let res = match components(p) {
                    Ok(c) if c.is_empty() => Err("the root is never removed".to_string()),
                    Ok(c) => st.dest.remove(&c).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match res {
                    Ok(()) => removed += 1,
                    Err(m) => {
                        failed += 1;
                        if message.is_empty() {
                            message = m;
                        }
                    }
                }
            }
        }
        if self.verbose && failed > 0 {
            say!("gfast serve: session {}: {failed} entries not removed: {message}", self.tag);
        }
        self.queue_control(&Frame::Removed { removed, failed, message }).map_err(io_fatal)
    }
}
