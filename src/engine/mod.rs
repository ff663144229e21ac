//! Threads that connect the protocol core, the transport and the storage: the
//! daemon side (`server`, `session`) and the pushing side (`client`).

pub mod client;
pub mod error;
pub mod oneshot;
pub mod send;
pub mod server;
mod session;
pub mod ssh;
pub mod stats;
