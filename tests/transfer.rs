//! Integration tests: the real `gfast` binary as two processes on loopback, over
//! TCP. The tests themselves are in suite/all.rs, shared with transfer_quic.rs.

mod hostile;
mod netem;
mod resume;
mod security;
mod ssh;
mod util;

include!("suite/all.rs");
