//! QUIC (quinn + rustls): one connection per session, one bidirectional stream
//! for the control channel and one per data lane. The protocol above does not
//! change; blocking threads drive the streams through a small tokio runtime.
//!
//! A clean end is an application close with code 0: readers of the peer see it
//! as end of stream, as with a TCP FIN. Anything else (idle timeout, reset, a
//! crypto failure) is an error.

use super::tcp::KernelLimits;
use rustls::{ClientConfig, ServerConfig};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// ALPN of gfast over QUIC (required by QUIC's TLS).
const ALPN: &[u8] = b"gfast/1";
/// Application close code of a finished session.
pub const CLOSE_DONE: u32 = 0;
/// Application close code of an aborted session.
pub const CLOSE_ABORT: u32 = 1;
/// Largest UDP payload tried by path MTU discovery, on a path whose interface
/// allows it (loopback; see [`mtu_ceiling`]). Measured on loopback, 2 GiB to
/// --discard: 8952 bytes 0.79 GB/s, 16000 1.14-1.29, 65000 1.37-1.51 (per packet
/// costs dominate: crypto set-up, ACKs, syscalls); RSS unchanged.
const MTU_UPPER: u16 = 65000;
/// Data a connection may hold unacknowledged (quinn keeps it in memory): at
/// least this, more on long fast paths (see [`govern_send_window`]).
const MIN_SEND_WINDOW: u64 = 16 << 20;
const MAX_SEND_WINDOW: u64 = 256 << 20;
/// UDP socket buffers asked for (SO_RCVBUFFORCE when allowed, else capped by
/// net.core.rmem_max / wmem_max).
const UDP_BUFFER: usize = 32 << 20;

/// The runtime that drives every QUIC endpoint of the process.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gfast-quic")
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Transport settings: receive windows large enough for a fast long link (flow
/// control only caps; memory is used as data is in flight), a send window that
/// [`govern_send_window`] then follows, BBR, keepalive and idle timeout from
/// --timeout, MTU discovery up to `mtu_upper`.
fn transport(timeout: Duration, max_streams: u32, mtu_upper: u16, receive_window: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(max_streams))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .stream_receive_window(quinn::VarInt::from_u32(32 << 20))
        .receive_window(quinn::VarInt::from_u32(receive_window))
        .send_window(MIN_SEND_WINDOW)
        .keep_alive_interval(Some((timeout / 4).max(Duration::from_secs(1))))
        .max_idle_timeout(quinn::IdleTimeout::try_from(timeout).ok())
        // BBR: on the emulated 1 Gbit/s 100 ms 0.1 %-loss link quinn's cubic
        // moved 30 Mbit/s, BBR 757.
        .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(mtu_upper);
    t.mtu_discovery_config(Some(mtu));
    // Segmentation offload is off: with datagrams above ~1.5 KB quinn's GSO
    // batches were lost on loopback (MTU discovery then fell back to 1200 bytes:
    // 0.56 GB/s); without it, 16 KB datagrams moved 1.04 GB/s.
    t.enable_segmentation_offload(false);
    Arc::new(t)
}

/// The largest UDP payload the interface towards `peer` can carry (its MTU less
/// the IP and UDP headers), at most [`MTU_UPPER`]; [`MTU_UPPER`] when the kernel
/// does not say. Path MTU discovery then never probes past the first hop's
/// limit: each probe that is too large is tried three times, a probe timeout
/// apart, while the data goes in small datagrams (from 1,200 bytes). On the
/// emulated 1 Gbit/s 100 ms 0.1 %-loss link (MTU 9000), 1 GiB from the first
/// byte: ceiling 65,000 781-800 Mbit/s, 16,000 824-827, 8,972 829-855.
fn mtu_ceiling(peer: SocketAddr) -> u16 {
    use std::os::fd::AsRawFd;
    let probe = || -> io::Result<u16> {
        let local: SocketAddr = if peer.is_ipv6() { "[::]:0".parse() } else { "0.0.0.0:0".parse() }.expect("addr");
        let s = UdpSocket::bind(local)?;
        s.connect(peer)?;
        let (level, opt, headers) = if peer.is_ipv6() {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU, 40 + 8)
        } else {
            (libc::IPPROTO_IP, libc::IP_MTU, 20 + 8)
        };
        let mut mtu: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int option read into an int of the stated length.
        let r = unsafe {
            libc::getsockopt(s.as_raw_fd(), level, opt, &mut mtu as *mut libc::c_int as *mut libc::c_void, &mut len)
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((mtu - headers).clamp(1200, i32::from(MTU_UPPER)) as u16)
    };
    probe().unwrap_or(MTU_UPPER)
}

/// A UDP socket with large buffers; returns it and a note when the kernel capped them.
fn udp_socket(addr: SocketAddr) -> io::Result<(UdpSocket, Option<String>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    for (force, normal) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        if !set_int(&s, force, UDP_BUFFER) {
            let _ = set_int(&s, normal, UDP_BUFFER);
        }
    }
    s.bind(&addr.into())?;
    // Linux reports twice what was granted.
    let got = s.recv_buffer_size()? / 2;
    let note = (got < UDP_BUFFER / 2).then(|| {
        let k = KernelLimits::read();
        format!(
            "the UDP receive buffer is capped at {} KiB by net.core.rmem_max ({}); for QUIC on fast links raise it: \
             sysctl -w net.core.rmem_max={UDP_BUFFER} net.core.wmem_max={UDP_BUFFER}",
            got >> 10,
            k.rmem_max
        )
    });
    Ok((s.into(), note))
}

fn set_int(s: &socket2::Socket, opt: libc::c_int, v: usize) -> bool {
    use std::os::fd::AsRawFd;
    let v = v as libc::c_int;
    // SAFETY: an int option on a valid socket.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

fn endpoint(sock: UdpSocket, server: Option<quinn::ServerConfig>) -> io::Result<quinn::Endpoint> {
    let _g = rt().enter();
    let mut cfg = quinn::EndpointConfig::default();
    // Lets MTU discovery climb past Ethernet's 1500 on paths that allow it.
    cfg.max_udp_payload_size(MTU_UPPER).map_err(io::Error::other)?;
    quinn::Endpoint::new(cfg, server, sock, Arc::new(quinn::TokioRuntime))
}

/// The listening side: a UDP endpoint presenting the server's TLS identity.
pub struct Listener {
    /// The endpoint (accepts connections).
    pub endpoint: quinn::Endpoint,
    /// A note when a kernel limit caps the UDP buffers.
    pub note: Option<String>,
    config: quinn::ServerConfig,
    timeout: Duration,
    max_streams: u32,
}

impl Listener {
    /// The settings for a connection from `peer`: the listener's, with path MTU
    /// discovery bounded by the interface towards that peer.
    pub fn config_for(&self, peer: SocketAddr) -> Arc<quinn::ServerConfig> {
        let mut c = self.config.clone();
        c.transport_config(transport(self.timeout, self.max_streams, mtu_ceiling(peer), PRE_AUTH_RECEIVE_WINDOW));
        Arc::new(c)
    }
}

/// A connection's receive window (all its streams together) once a session
/// authenticated on it: room for a fast long link (flow control only caps).
const RECEIVE_WINDOW: u32 = 256 << 20;
/// ... and before: a peer without the token makes the server buffer at most
/// this much per connection, however many streams it opens (protocol-spec §5.14).
const PRE_AUTH_RECEIVE_WINDOW: u32 = 1 << 20;

/// A session authenticated on `conn`: its streams get the full receive window.
pub fn authenticated(conn: &quinn::Connection) {
    conn.set_receive_window(quinn::VarInt::from_u32(RECEIVE_WINDOW));
}

/// Closes `conn` with application error `code` and `reason` (one line the
/// peer's QUIC stack reports).
pub fn refuse(conn: &quinn::Connection, code: u16, reason: &str) {
    conn.close(quinn::VarInt::from_u32(u32::from(code)), reason.as_bytes());
}

/// Listens for QUIC on `addr` (UDP).
pub fn listen(addr: SocketAddr, tls: &Arc<ServerConfig>, timeout: Duration, max_streams: u32) -> io::Result<Listener> {
    let mut c = (**tls).clone();
    c.alpn_protocols = vec![ALPN.to_vec()];
    c.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(c).map_err(io::Error::other)?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    sc.transport_config(transport(timeout, max_streams, MTU_UPPER, PRE_AUTH_RECEIVE_WINDOW));
    // QUIC handshakes run before the daemon's gate sees a connection: bound
    // them like the gate's handshakes (512), and what they may buffer.
    sc.max_incoming(512).incoming_buffer_size_total(64 << 20);
    let (sock, note) = udp_socket(addr)?;
    Ok(Listener { endpoint: endpoint(sock, Some(sc.clone()))?, note, config: sc, timeout, max_streams })
}

/// A client connection and the endpoint it lives on.
#[derive(Clone)]
pub struct Client {
    /// The endpoint (kept until the connection is closed).
    pub endpoint: quinn::Endpoint,
    /// The connection.
    pub conn: quinn::Connection,
    /// A note when a kernel limit caps the UDP buffers.
    pub note: Option<String>,
}

/// Connects to `target` ("host:port", UDP) with the client TLS configuration `tls`.
pub fn connect(target: &str, tls: &Arc<ClientConfig>, timeout: Duration) -> io::Result<Client> {
    let addr = target
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host name resolved to no address"))?;
    let local: SocketAddr = if addr.is_ipv6() { "[::]:0".parse() } else { "0.0.0.0:0".parse() }.expect("addr");
    let (sock, note) = udp_socket(local)?;
    let mut c = (**tls).clone();
    c.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(c).map_err(io::Error::other)?;
    let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
    cc.transport_config(transport(timeout, 1024, mtu_ceiling(addr), RECEIVE_WINDOW));
    let ep = endpoint(sock, None)?;
    let connecting = {
        let _g = rt().enter();
        ep.connect_with(cc, addr, "gfast").map_err(io::Error::other)?
    };
    let conn = rt().block_on(async {
        // Like a TCP connect timeout; UDP gets no "connection refused".
        let wait = timeout.min(Duration::from_secs(10));
        match tokio::time::timeout(wait, connecting).await {
            Ok(r) => r.map_err(conn_err),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no QUIC answer within {} s (UDP blocked on the way?)", wait.as_secs()),
            )),
        }
    })?;
    govern_send_window(&conn);
    Ok(Client { endpoint: ep, conn, note })
}

/// Keeps the send window (what quinn holds unacknowledged) at 1.5 times the
/// bandwidth-delay product actually delivered, re-measured four times a second.
/// quinn's BBR lets its congestion window run far past the path (and quinn
/// paces from that window): on an emulated 1 Gbit/s 100 ms link with 0.1 % loss
/// and a 1-BDP queue, half of all packets sent were lost to queue overflow with
/// a fixed 256 MiB window, ~3 % with 2 x BDP. With 1.5 x BDP, 1 GiB from the
/// first byte, interleaved with 2 x: that link 904-910 vs 882-906 Mbit/s with
/// 0.1 % of packets lost (the random loss) vs 2.3 %; 500 Mbit/s 200 ms 440-466
/// vs 417-427 with none lost vs 15-23 %; 2 Gbit/s 100 ms 1,493-1,669 vs
/// 1,436-1,605, none lost vs 2-5 %.
pub fn govern_send_window(conn: &quinn::Connection) {
    let conn = conn.clone();
    conn.set_send_window(MIN_SEND_WINDOW);
    rt().spawn(async move {
        let delivered = |c: &quinn::Connection| {
            let s = c.stats();
            s.udp_tx.bytes.saturating_sub(s.path.lost_bytes)
        };
        let (mut t0, mut d0) = (tokio::time::Instant::now(), delivered(&conn));
        while conn.close_reason().is_none() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (t1, d1) = (tokio::time::Instant::now(), delivered(&conn));
            let rate = d1.saturating_sub(d0) as f64 / (t1 - t0).as_secs_f64().max(1e-3);
            let w = 1.5 * rate * conn.min_rtt().as_secs_f64();
            conn.set_send_window((w as u64).clamp(MIN_SEND_WINDOW, MAX_SEND_WINDOW));
            (t0, d0) = (t1, d1);
        }
    });
}

impl Client {
    /// Ends the connection (code 0 when the session completed, else 1) and gives
    /// the endpoint a moment to send the close (half a round trip, 25-250 ms).
    /// Not the whole draining period (three probe timeouts), which cost a 1-byte
    /// push over a 100 ms path 0.5 s: everything was confirmed before the close,
    /// and a peer that misses it stops waiting on its own (the server after 5 s).
    pub fn close(&self, completed: bool) {
        let (code, why): (u32, &[u8]) = if completed { (CLOSE_DONE, b"done") } else { (CLOSE_ABORT, b"aborted") };
        let wait = (self.conn.rtt() / 2).clamp(Duration::from_millis(25), Duration::from_millis(250));
        self.conn.close(quinn::VarInt::from_u32(code), why);
        let ep = self.endpoint.clone();
        rt().block_on(async move {
            let _ = tokio::time::timeout(wait, ep.wait_idle()).await;
        });
    }
}

/// Waits (up to `max`) until the peer closes `conn`.
pub fn wait_closed(conn: &quinn::Connection, max: Duration) {
    rt().block_on(async {
        let _ = tokio::time::timeout(max, conn.closed()).await;
    });
}

/// An io::Error for a connection failure, keeping its cause readable.
pub fn conn_err(e: quinn::ConnectionError) -> io::Error {
    use quinn::ConnectionError as C;
    let kind = match &e {
        C::TimedOut => io::ErrorKind::TimedOut,
        C::ApplicationClosed(_) | C::ConnectionClosed(_) | C::Reset | C::LocallyClosed => {
            io::ErrorKind::ConnectionAborted
        }
        C::TransportError(_) => io::ErrorKind::InvalidData,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// One bidirectional stream with its connection: a gfast connection over QUIC.
pub struct Stream {
    /// The QUIC connection the stream belongs to.
    pub conn: quinn::Connection,
    /// The sending half (shared with the closer).
    pub send: Arc<Mutex<quinn::SendStream>>,
    /// The receiving half, until the reader takes it.
    pub recv: Mutex<Option<quinn::RecvStream>>,
    /// Set to end blocked reads and writes (shutdown).
    pub cancel: tokio::sync::watch::Sender<bool>,
}

impl Stream {
    /// Wraps an opened or accepted stream.
    pub fn new(conn: quinn::Connection, send: quinn::SendStream, recv: quinn::RecvStream) -> Stream {
        Stream {
            conn,
            send: Arc::new(Mutex::new(send)),
            recv: Mutex::new(Some(recv)),
            cancel: tokio::sync::watch::channel(false).0,
        }
    }

    /// Opens a new stream on `conn`.
    pub fn open(conn: &quinn::Connection) -> io::Result<Stream> {
        let (s, r) = rt().block_on(conn.open_bi()).map_err(conn_err)?;
        Ok(Stream::new(conn.clone(), s, r))
    }
}

/// Reads from a QUIC stream, blocking; end of stream (and a clean close of the
/// connection) reads as 0.
pub fn read(
    recv: &mut quinn::RecvStream,
    cancel: &mut tokio::sync::watch::Receiver<bool>,
    timeout: Option<Duration>,
    dst: &mut [u8],
) -> io::Result<usize> {
    let r = rt().block_on(async {
        let read = async {
            tokio::select! {
                r = recv.read(dst) => Some(r),
                _ = cancel.wait_for(|c| *c) => None,
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, read).await.map_err(|_| ()),
            None => Ok(read.await),
        }
    });
    match r {
        Err(()) => Err(io::Error::new(io::ErrorKind::WouldBlock, "read timed out")),
        Ok(None) => Ok(0),
        Ok(Some(Ok(Some(n)))) => Ok(n),
        Ok(Some(Ok(None))) => Ok(0),
        Ok(Some(Err(e))) => read_err(e),
    }
}

fn read_err(e: quinn::ReadError) -> io::Result<usize> {
    use quinn::{ConnectionError as C, ReadError as R};
    match e {
        R::ConnectionLost(C::ApplicationClosed(c)) if c.error_code == quinn::VarInt::from_u32(CLOSE_DONE) => Ok(0),
        R::ClosedStream => Ok(0),
        R::ConnectionLost(c) => Err(conn_err(c)),
        R::Reset(code) => {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, format!("stream reset by the peer ({code})")))
        }
        e => Err(io::Error::other(e)),
    }
}

/// Writes all of `data`, blocking; quinn keeps the buffer until it is
/// acknowledged (a borrowed slice is copied into one first, as quinn's own
/// `write` would).
pub fn write_all_owned(
    send: &Mutex<quinn::SendStream>,
    cancel: &mut tokio::sync::watch::Receiver<bool>,
    data: bytes::Bytes,
) -> io::Result<()> {
    let mut s = send.lock().expect("quic send");
    let r = rt().block_on(async {
        tokio::select! {
            r = s.write_chunk(data) => Some(r),
            _ = cancel.wait_for(|c| *c) => None,
        }
    });
    match r {
        None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "connection shut down")),
        Some(Ok(())) => Ok(()),
        Some(Err(quinn::WriteError::ConnectionLost(c))) => Err(conn_err(c)),
        Some(Err(e)) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e)),
    }
}

/// Finishes the sending half and waits (up to `max`) until the peer has it all.
pub fn finish(send: &Mutex<quinn::SendStream>, max: Duration) -> io::Result<()> {
    let mut s = send.lock().expect("quic send");
    if s.finish().is_err() {
        return Ok(()); // already finished or reset
    }
    rt().block_on(async {
        let _ = tokio::time::timeout(max, s.stopped()).await;
    });
    Ok(())
}

/// What the congestion controller and loss recovery saw on a connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuicStats {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// Current path MTU (UDP payload).
    pub mtu: u16,
}

/// Reads the statistics of `conn`.
pub fn stats(conn: &quinn::Connection) -> QuicStats {
    let p = conn.stats().path;
    QuicStats {
        rtt_us: p.rtt.as_micros() as u64,
        cwnd: p.cwnd,
        lost_packets: p.lost_packets,
        sent_packets: p.sent_packets,
        mtu: p.current_mtu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mtu_ceiling_follows_the_interface_towards_the_peer() {
        // Loopback's MTU (65,536 on Linux) allows the largest datagrams tried.
        assert_eq!(mtu_ceiling("127.0.0.1:9".parse().unwrap()), MTU_UPPER);
    }
}
