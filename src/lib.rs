//! gfast: move files between two machines as fast as the network and the disks
//! allow, verified chunk by chunk.
//!
//! Layers, from the wire up: [`proto`] (sans-I/O protocol core), [`transport`]
//! (tuned TCP lanes), [`storage`] (source walking, confined destination writes),
//! [`engine`] (threads that join the three), [`cli`] (flags, reports, exit codes).

pub mod cli;
pub mod engine;
pub mod proto;
pub mod random;
pub mod storage;
pub mod transport;
