//! gfast: move files between two machines as fast as the network and the disks
//! allow, verified chunk by chunk.
//!
//! Layers, from the wire up: [`proto`] (sans-I/O protocol core), [`transport`]
//! (tuned TCP lanes), [`storage`] (source walking, confined destination writes),
//! [`engine`] (threads that join the three), [`cli`] (flags, reports, exit codes).

pub mod cli;
pub(crate) mod engine;
pub mod proto;
pub(crate) mod random;
pub(crate) mod storage;
pub mod transport;
