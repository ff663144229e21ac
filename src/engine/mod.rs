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

pub mod client;
pub mod error;
mod guard;
pub mod oneshot;
pub mod send;
pub mod server;
mod session;
pub mod ssh;
pub mod stats;
mod wire;
