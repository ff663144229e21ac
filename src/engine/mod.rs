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

/// The soft descriptor limit (u64::MAX when unlimited, 0 when it cannot be read).
fn fd_limit() -> u64 {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a valid struct pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 0;
    }
    if rl.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        rl.rlim_cur
    }
}

/// This process may hold wide windows of open files (capability bit 8, §5.3).
pub(crate) fn wide_window_fits() -> bool {
    fd_limit() >= crate::proto::WIDE_WINDOW_FDS
}
