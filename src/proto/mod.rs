//! The protocol core, free of I/O: frames, authentication, and the sender and
//! receiver state machines. No sockets, files or clocks in here; the engine
//! drives it (see `protocol-spec/`).

pub mod auth;
pub mod error;
pub mod frame;
pub mod hash;
pub mod path;
pub mod receiver;
pub mod sender;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod vectors;

/// The protocol version this build speaks (protocol-spec §2).
pub const VERSION: u16 = 1;
/// Capability bits this build offers; v1 defines none (protocol-spec §2.2).
pub const CAPS: u64 = 0;
