//! Threads that connect the protocol core, the transport and the storage: the
//! daemon side (`server`, `session`) and the pushing side (`client`).

/// Writes one line to stderr and ignores failure: a one-shot end whose ssh
/// channel died has no stderr left, and a log line must not take it down.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

pub(crate) mod client;
pub(crate) mod error;
pub(crate) mod filter;
mod guard;
pub(crate) mod local;
pub(crate) mod oneshot;
pub(crate) mod send;
pub(crate) mod server;
mod session;
pub(crate) mod ssh;
pub(crate) mod stats;
mod wire;
