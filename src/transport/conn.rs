//! A connection that may be TLS-protected, split into a reading and a writing half
//! that two threads can use at once.
//!
//! TLS: rustls runs the handshake, then each half seals or opens its own
//! direction's records (see `record`), so the halves share no lock on the data
//! path. Only the writing half writes to the socket, so records never interleave;
//! a key update the peer asks for is answered by the writer's next write.

use super::quic;
use super::record::{self, RecordReader, RecordWriter};
use rustls::{ClientConfig, ServerConfig};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The first byte of a TLS handshake record; gfast frames never start with it.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// An established connection: TCP (plain or TLS) or one QUIC stream.
pub struct Conn {
    kind: Kind,
    /// Read timeout of a QUIC stream (TCP keeps it in the socket).
    quic_timeout: Arc<Mutex<Option<Duration>>>,
}

/// A TLS connection's two halves until `split` hands them out.
type TlsHalves = Box<(RecordReader, RecordWriter)>;

enum Kind {
    Tcp { tcp: TcpStream, tls: Option<Mutex<Option<TlsHalves>>> },
    Quic(Arc<quic::Stream>),
}

/// Most plaintext encrypted per socket write.
const TLS_PIECE: usize = 256 << 10;

impl Conn {
    fn tcp_kind(tcp: TcpStream, tls: Option<(RecordReader, RecordWriter)>) -> Self {
        Conn { kind: Kind::Tcp { tcp, tls: tls.map(|h| Mutex::new(Some(Box::new(h)))) }, quic_timeout: Arc::default() }
    }

    /// A plain TCP connection.
    pub fn plain(tcp: TcpStream) -> Self {
        Self::tcp_kind(tcp, None)
    }

    /// A QUIC stream (encrypted by QUIC itself).
    pub fn quic(stream: quic::Stream) -> Self {
        Conn { kind: Kind::Quic(Arc::new(stream)), quic_timeout: Arc::default() }
    }

    /// Runs the client side of a TLS handshake on `tcp`.
    pub fn tls_client(mut tcp: TcpStream, cfg: Arc<ClientConfig>) -> io::Result<Self> {
        let halves = record::client(&mut tcp, cfg)?;
        Ok(Self::tcp_kind(tcp, Some(halves)))
    }

    /// Runs the server side of a TLS handshake on `tcp`.
    pub fn tls_server(mut tcp: TcpStream, cfg: Arc<ServerConfig>) -> io::Result<Self> {
        let halves = record::server(&mut tcp, cfg)?;
        Ok(Self::tcp_kind(tcp, Some(halves)))
    }

    /// True when the connection is encrypted (TLS, or QUIC).
    pub fn is_tls(&self) -> bool {
        match &self.kind {
            Kind::Tcp { tls, .. } => tls.is_some(),
            Kind::Quic(_) => true,
        }
    }

    /// The TCP socket (for tuning and statistics); `None` over QUIC.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match &self.kind {
            Kind::Tcp { tcp, .. } => Some(tcp),
            Kind::Quic(_) => None,
        }
    }

    /// The QUIC connection this stream belongs to; `None` over TCP.
    pub fn quic_conn(&self) -> Option<&quinn::Connection> {
        match &self.kind {
            Kind::Tcp { .. } => None,
            Kind::Quic(s) => Some(&s.conn),
        }
    }

    /// Sets how long a read may wait (`None`: forever); a read that waited that
    /// long fails with `WouldBlock`, as a TCP socket's.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.kind {
            Kind::Tcp { tcp, .. } => tcp.set_read_timeout(t),
            Kind::Quic(_) => {
                *self.quic_timeout.lock().expect("timeout") = t;
                Ok(())
            }
        }
    }

    /// A handle that shuts this connection down from any thread.
    pub fn closer(&self) -> io::Result<Closer> {
        Ok(match &self.kind {
            Kind::Tcp { tcp, .. } => Closer::Tcp(tcp.try_clone()?),
            Kind::Quic(s) => Closer::Quic(s.clone()),
        })
    }

    /// The two halves; each may move to its own thread. A TLS connection or a
    /// QUIC stream splits once.
    pub fn split(&self) -> io::Result<(ConnReader, ConnWriter)> {
        match &self.kind {
            Kind::Tcp { tcp, tls } => {
                let (r, w) = match tls {
                    Some(h) => {
                        let h = h.lock().expect("tls halves").take();
                        let (r, w) = *h.ok_or_else(|| io::Error::other("this TLS connection was split already"))?;
                        (Some(Box::new(r)), Some(Box::new(w)))
                    }
                    None => (None, None),
                };
                Ok((
                    ConnReader { kind: ReaderKind::Tcp { tcp: tcp.try_clone()?, tls: r } },
                    ConnWriter { kind: WriterKind::Tcp { tcp: tcp.try_clone()?, tls: w } },
                ))
            }
            Kind::Quic(s) => {
                let recv = s
                    .recv
                    .lock()
                    .expect("quic recv")
                    .take()
                    .ok_or_else(|| io::Error::other("this QUIC stream was split already"))?;
                Ok((
                    ConnReader {
                        kind: ReaderKind::Quic {
                            recv,
                            cancel: s.cancel.subscribe(),
                            timeout: self.quic_timeout.clone(),
                        },
                    },
                    ConnWriter { kind: WriterKind::Quic { stream: s.clone(), cancel: s.cancel.subscribe() } },
                ))
            }
        }
    }

    /// Shuts the connection down (unblocks both halves).
    pub fn shutdown(&self, how: Shutdown) {
        match &self.kind {
            Kind::Tcp { tcp, .. } => {
                let _ = tcp.shutdown(how);
            }
            Kind::Quic(s) => Closer::Quic(s.clone()).shutdown(how),
        }
    }
}

/// Shuts a connection down from another thread than the ones using it.
pub enum Closer {
    /// A TCP socket (a clone of the connection's descriptor).
    Tcp(TcpStream),
    /// A QUIC stream.
    Quic(Arc<quic::Stream>),
    /// A whole QUIC connection (closed, whatever `how`).
    QuicConn(quinn::Connection),
}

impl Closer {
    /// TCP: shutdown(2). QUIC: `Write` finishes the stream; `Read` and `Both`
    /// also end blocked reads and writes at once.
    pub fn shutdown(&self, how: Shutdown) {
        match self {
            Closer::Tcp(t) => {
                let _ = t.shutdown(how);
            }
            // CANCELLED (protocol-spec §7): not the clean end of a session.
            Closer::QuicConn(c) => quic::refuse(c, 13, "closed by the server: the handshake took too long"),
            Closer::Quic(s) => {
                if how != Shutdown::Write {
                    s.cancel.send_replace(true);
                }
                if how != Shutdown::Read {
                    // A writer busy in a write holds the lock: it is ending anyway.
                    if let Ok(mut w) = s.send.try_lock() {
                        let _ = w.finish();
                    }
                }
            }
        }
    }
}

/// The reading half.
pub struct ConnReader {
    kind: ReaderKind,
}

enum ReaderKind {
    Tcp { tcp: TcpStream, tls: Option<Box<RecordReader>> },
    Quic { recv: quinn::RecvStream, cancel: tokio::sync::watch::Receiver<bool>, timeout: Arc<Mutex<Option<Duration>>> },
}

impl Read for ConnReader {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        match &mut self.kind {
            ReaderKind::Quic { recv, cancel, timeout } => {
                let t = *timeout.lock().expect("timeout");
                quic::read(recv, cancel, t, dst)
            }
            ReaderKind::Tcp { tcp, tls: None } => tcp.read(dst),
            ReaderKind::Tcp { tcp, tls: Some(r) } => r.read(tcp, dst),
        }
    }
}

/// The writing half.
pub struct ConnWriter {
    kind: WriterKind,
}

enum WriterKind {
    Tcp { tcp: TcpStream, tls: Option<Box<RecordWriter>> },
    Quic { stream: Arc<quic::Stream>, cancel: tokio::sync::watch::Receiver<bool> },
}

impl ConnWriter {
    /// True when [`ConnWriter::write_owned`] avoids a copy (a QUIC stream).
    pub fn takes_owned(&self) -> bool {
        matches!(self.kind, WriterKind::Quic { .. })
    }

    /// Writes all of `data`; a QUIC stream keeps the buffer itself (no copy).
    pub fn write_owned(&mut self, data: bytes::Bytes) -> io::Result<()> {
        match &mut self.kind {
            WriterKind::Quic { stream, cancel } => quic::write_all_owned(&stream.send, cancel, data),
            WriterKind::Tcp { .. } => self.write_all(&data),
        }
    }

    /// Ends the sending direction cleanly: TLS close_notify (the peer reads a clean
    /// end of stream), a TCP half-close for a plain connection, or a QUIC stream
    /// finished and acknowledged.
    pub fn close_notify(&mut self) -> io::Result<()> {
        match &mut self.kind {
            WriterKind::Tcp { tcp, tls: Some(w) } => w.close_notify(tcp),
            WriterKind::Tcp { tcp, tls: None } => tcp.shutdown(Shutdown::Write),
            WriterKind::Quic { stream, .. } => quic::finish(&stream.send, Duration::from_secs(5)),
        }
    }
}

impl Write for ConnWriter {
    fn write(&mut self, src: &[u8]) -> io::Result<usize> {
        match &mut self.kind {
            WriterKind::Quic { stream, cancel } => {
                quic::write_all_owned(&stream.send, cancel, bytes::Bytes::copy_from_slice(src)).map(|_| src.len())
            }
            WriterKind::Tcp { tcp, tls: None } => tcp.write(src),
            WriterKind::Tcp { tcp, tls: Some(w) } => {
                let n = src.len().min(TLS_PIECE);
                w.write_all(tcp, &src[..n])?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.kind {
            WriterKind::Quic { .. } => Ok(()),
            WriterKind::Tcp { tcp, .. } => tcp.flush(),
        }
    }
}
