//! The protocol core, free of I/O: frames, authentication, and the sender and
//! receiver state machines. No sockets, files or clocks in here; the engine
//! drives it (see `protocol-spec/`).

pub mod auth;
pub mod chunk;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod hash;
pub mod lane;
pub mod path;
pub mod receiver;
pub mod sender;
pub mod sync;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod vectors;

/// The protocol version this build speaks (protocol-spec §2).
pub const VERSION: u16 = 1;
/// Capability bit: compressed chunks (protocol-spec §2.2, §4.14). Offered by a
/// client that wants the session's chunks compressed, whichever way they flow.
pub const CAP_COMPRESS: u64 = 1 << 1;
/// Capability bit: delta (protocol-spec §2.2, §5.13): the receiver lists the
/// chunks of the file it already has under the name, and the sender sends only
/// those that differ.
pub const CAP_DELTA: u64 = 1 << 3;
/// Capability bit: resume (protocol-spec §2.2, §5.11).
pub const CAP_RESUME: u64 = 1 << 2;
/// Capability bit: DONE once every entry is announced, before all are settled
/// (protocol-spec §2.2, §4.13): one round trip fewer at the end of a session.
pub const CAP_EARLY_DONE: u64 = 1 << 5;
/// Capability bit: pull from a daemon. The client will send PULL naming a source
/// under the daemon's root, and the session runs from the server to the client
/// (protocol-spec §2.2, §4.17, §5.9).
pub const CAP_PULL: u64 = 1 << 6;
/// Capability bit: sync (protocol-spec §2.2, §5.15): the sender asks the
/// receiver what it holds (LIST, LISTED) and may have entries removed (REMOVE).
pub const CAP_SYNC: u64 = 1 << 7;
/// Capability bit: the wide window (protocol-spec §2.2, §5.3): W is
/// [`FILE_WINDOW_WIDE`] instead of [`FILE_WINDOW`]. Offered and accepted by an end
/// whose descriptor limit holds that many open files several times over.
pub const CAP_WIDE_WINDOW: u64 = 1 << 8;
/// Capability bit: holes (protocol-spec §2.2, §4.14): a compressed CHUNK may
/// describe a run of zeros with a ZERO block instead of carrying it, whether
/// or not bit 1 was accepted; the receiver leaves a hole there.
pub const CAP_SPARSE: u64 = 1 << 9;
/// Capability bit: owners (protocol-spec §2.2, §4.7): a FILE may carry the
/// source's owner and group, by number and by name (FILE flag bit 0).
pub const CAP_OWNERS: u64 = 1 << 10;
/// Capability bit: extended attributes, ACLs among them (protocol-spec §2.2,
/// §4.7): a FILE may carry its entry's xattrs (FILE flag bit 1).
pub const CAP_XATTRS: u64 = 1 << 11;
/// Capability bit: special files (protocol-spec §2.2, §4.7): FILE kinds 3 to
/// 6, FIFOs, sockets and device nodes.
pub const CAP_SPECIALS: u64 = 1 << 12;
/// Capability bit: hard links (protocol-spec §2.2, §4.7): a FILE may name an
/// earlier, settled entry to link to (FILE flag bit 2).
pub const CAP_HARDLINKS: u64 = 1 << 13;
/// Capability bits this build understands (protocol-spec §2.2).
pub const CAPS: u64 = CAP_COMPRESS
    | CAP_DELTA
    | CAP_RESUME
    | CAP_EARLY_DONE
    | CAP_PULL
    | CAP_SYNC
    | CAP_WIDE_WINDOW
    | CAP_SPARSE
    | CAP_OWNERS
    | CAP_XATTRS
    | CAP_SPECIALS
    | CAP_HARDLINKS;
/// Most chunks listed in one FILE_HAVE frame (fits the control frame limit).
pub const MAX_HAVE_PER_FRAME: usize = 50_000;
/// Most entries announced and not yet settled (W of protocol-spec §5.3): the
/// sender keeps to it, and a receiver treats a FILE beyond it as a protocol error.
pub const FILE_WINDOW: usize = 1024;
/// W with capability bit 8 (§5.3): on a long link an entry is unsettled for two
/// round trips (FILE to FILE_READY, CHUNK and FILE_END to FILE_DONE), so W / (2 x
/// RTT) bounds the rate of small files: 10,000 files/s at 1024 and 50 ms.
pub const FILE_WINDOW_WIDE: usize = 4096;
/// The descriptor limit an end needs before it offers or accepts bit 8: four
/// wide windows of open files.
pub const WIDE_WINDOW_FDS: u64 = 4 * FILE_WINDOW_WIDE as u64;
