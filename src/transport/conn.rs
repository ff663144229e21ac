//! A connection that may be TLS-protected, split into a reading and a writing half
//! that two threads can use at once.
//!
//! rustls keeps one state object per connection. Both halves share it behind a
//! mutex. The reading half never holds it across a socket read (it reads into its
//! own buffer first), so a blocked reader never stalls the writer; the writing
//! half holds it while it encrypts and writes. Only the writing half writes to the
//! socket, so TLS records cannot interleave; anything the reader's processing
//! queues for sending (a key update answer) goes out with the writer's next write.

use rustls::{ClientConfig, Connection, ServerConfig};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};

/// The first byte of a TLS handshake record; gfast frames never start with it.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// An established connection, plain or TLS.
pub struct Conn {
    tcp: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
}

/// Most plaintext encrypted per lock and per socket write.
const TLS_PIECE: usize = 256 << 10;

impl Conn {
    /// A plain TCP connection.
    pub fn plain(tcp: TcpStream) -> Self {
        Conn { tcp, tls: None }
    }

    /// Runs the client side of a TLS handshake on `tcp`.
    pub fn tls_client(tcp: TcpStream, cfg: Arc<ClientConfig>) -> io::Result<Self> {
        let mut c = rustls::ClientConnection::new(cfg, super::tls::server_name()).map_err(io::Error::other)?;
        c.set_buffer_limit(None);
        Self::handshake(tcp, c.into())
    }

    /// Runs the server side of a TLS handshake on `tcp`.
    pub fn tls_server(tcp: TcpStream, cfg: Arc<ServerConfig>) -> io::Result<Self> {
        let mut c = rustls::ServerConnection::new(cfg).map_err(io::Error::other)?;
        c.set_buffer_limit(None);
        Self::handshake(tcp, c.into())
    }

    fn handshake(mut tcp: TcpStream, mut c: Connection) -> io::Result<Self> {
        while c.is_handshaking() {
            c.complete_io(&mut tcp)?;
        }
        while c.wants_write() {
            c.write_tls(&mut tcp)?;
        }
        Ok(Conn { tcp, tls: Some(Arc::new(Mutex::new(c))) })
    }

    /// True when the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The underlying socket (for tuning, timeouts and shutdown).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The two halves; each may move to its own thread.
    pub fn split(&self) -> io::Result<(ConnReader, ConnWriter)> {
        Ok((
            ConnReader {
                tcp: self.tcp.try_clone()?,
                tls: self.tls.clone(),
                buf: vec![0u8; 64 << 10],
                start: 0,
                end: 0,
                eof: false,
            },
            ConnWriter { tcp: self.tcp.try_clone()?, tls: self.tls.clone(), out: Vec::new() },
        ))
    }

    /// Shuts the socket down (unblocks both halves).
    pub fn shutdown(&self, how: Shutdown) {
        let _ = self.tcp.shutdown(how);
    }
}

/// The reading half.
pub struct ConnReader {
    tcp: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Read for ConnReader {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else { return self.tcp.read(dst) };
        if dst.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let mut c = tls.lock().expect("tls lock");
                match c.reader().read(dst) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(unclean_close()),
                    Err(e) => return Err(e),
                }
                // rustls takes at most its plaintext limit at a time: feed what is
                // pending, process it, and hand out plaintext before feeding more.
                if self.start < self.end {
                    let mut data = &self.buf[self.start..self.end];
                    let before = data.len();
                    c.read_tls(&mut data)?;
                    self.start += before - data.len();
                    c.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    continue;
                }
                if self.eof {
                    return Err(unclean_close());
                }
            }
            match self.tcp.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    let _ = tls.lock().expect("tls lock").read_tls(&mut &[][..]);
                }
                Ok(n) => (self.start, self.end) = (0, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn unclean_close() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the peer closed the connection without a clean TLS close (it died, or rejected data tampered with on the way)",
    )
}

/// The writing half.
pub struct ConnWriter {
    tcp: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
    out: Vec<u8>,
}

impl ConnWriter {
    fn drain(&mut self, c: &mut Connection) -> io::Result<()> {
        while c.wants_write() {
            c.write_tls(&mut self.out)?;
        }
        Ok(())
    }
}

impl ConnWriter {
    /// Ends the sending direction cleanly: TLS close_notify (the peer reads a clean
    /// end of stream), or a TCP half-close for a plain connection.
    pub fn close_notify(&mut self) -> io::Result<()> {
        match self.tls.clone() {
            Some(tls) => {
                self.out.clear();
                {
                    let mut c = tls.lock().expect("tls lock");
                    c.send_close_notify();
                    self.drain(&mut c)?;
                }
                self.tcp.write_all(&self.out)
            }
            None => self.tcp.shutdown(Shutdown::Write),
        }
    }
}

impl Write for ConnWriter {
    fn write(&mut self, src: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.clone() else { return self.tcp.write(src) };
        let n = src.len().min(TLS_PIECE);
        // Records go from rustls' buffer straight to the socket (one copy fewer:
        // 1.62 -> 1.74 GB/s to --discard). The lock is held across this write; the
        // reading half only needs it after its own socket read, never across it.
        let mut c = tls.lock().expect("tls lock");
        c.writer().write_all(&src[..n])?;
        while c.wants_write() {
            c.write_tls(&mut self.tcp)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = self.tls.clone() {
            self.out.clear();
            self.drain(&mut tls.lock().expect("tls lock"))?;
            self.tcp.write_all(&self.out)?;
        }
        self.tcp.flush()
    }
}
