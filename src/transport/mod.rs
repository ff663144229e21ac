//! Byte pipes that know no frame semantics: tuned TCP sockets, TLS, QUIC streams,
//! and frame I/O on them.

pub mod conn;
pub mod framed;
pub mod quic;
pub mod record;
pub mod tcp;
pub mod tls;
