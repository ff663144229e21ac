//! Byte pipes that know no frame semantics: tuned TCP sockets and frame I/O on them.
//! QUIC and TLS will live here too.

pub mod conn;
pub mod framed;
pub mod tcp;
pub mod tls;
