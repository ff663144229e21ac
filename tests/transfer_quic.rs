//! The integration suite (suite/all.rs) again, with every push and pull over
//! `--transport quic` (util::quic() is true in this binary; tests that only make
//! sense over TCP say so and skip).

mod hostile;
mod netem;
mod resume;
mod security;
mod ssh;
mod util;

include!("suite/all.rs");
