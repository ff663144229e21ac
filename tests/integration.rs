//! Integration tests: the real `gfast` binary as processes on loopback. Every
//! test runs over TCP and over QUIC (`name::tcp`, `name::quic`; see
//! `both_transports!` in util/mod.rs), except the few that mean something over
//! one transport only, which say why.

#[macro_use]
mod util;

mod hostile;
mod meta;
mod netem;
mod resume;
mod security;
mod ssh;
mod suite;
mod sync;
