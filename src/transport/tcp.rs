//! Tuned TCP sockets for the control connection and the data lanes.

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How lanes are tuned (protocol-independent).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Explicit SO_SNDBUF/SO_RCVBUF; `None` keeps the kernel's autotuning, which on
    /// Linux may grow past net.core.{r,w}mem_max up to tcp_{r,w}mem's maximum.
    pub buffer: Option<usize>,
    /// Congestion control to ask for; silently left as is when the kernel lacks it.
    pub congestion: Option<String>,
    /// How long unacknowledged data or a silent peer is tolerated before the
    /// connection is declared dead (TCP_USER_TIMEOUT and keepalive).
    pub timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { buffer: None, congestion: Some("bbr".into()), timeout: Duration::from_secs(60) }
    }
}

/// What the kernel actually granted on one socket.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// SO_SNDBUF as read back.
    pub send_buffer: usize,
    /// SO_RCVBUF as read back.
    pub recv_buffer: usize,
    /// Congestion control in use.
    pub congestion: String,
}

/// Applies `t` to a connected stream: no Nagle delay (acks and small files must not
/// wait), keepalive and a user timeout so a vanished peer is noticed, the requested
/// congestion control and buffers.
pub fn tune(stream: &TcpStream, t: &Tuning) -> io::Result<Applied> {
    let s = SockRef::from(stream);
    s.set_tcp_nodelay(true)?;
    let idle = (t.timeout / 4).max(Duration::from_secs(1));
    let ka = TcpKeepalive::new().with_time(idle).with_interval(idle / 4 + Duration::from_secs(1)).with_retries(4);
    s.set_tcp_keepalive(&ka)?;
    s.set_tcp_user_timeout(Some(t.timeout))?;
    if let Some(cc) = &t.congestion {
        // The kernel may not offer it (module missing, not allowed in a namespace).
        let _ = s.set_tcp_congestion(cc.as_bytes());
    }
    if let Some(b) = t.buffer {
        s.set_send_buffer_size(b)?;
        s.set_recv_buffer_size(b)?;
    }
    let congestion = s.tcp_congestion().map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
    Ok(Applied { send_buffer: s.send_buffer_size()?, recv_buffer: s.recv_buffer_size()?, congestion })
}

/// Connects to `target` ("host:port"), trying every resolved address in turn.
pub fn connect(target: &str, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = target.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name resolved to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Listens on `addr` with SO_REUSEADDR, so a restarted daemon can bind at once.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The kernel's socket buffer limits, for reports and advice.
#[derive(Debug, Clone, Default)]
pub struct KernelLimits {
    /// net.core.rmem_max: the cap on an explicit SO_RCVBUF.
    pub rmem_max: u64,
    /// net.core.wmem_max: the cap on an explicit SO_SNDBUF.
    pub wmem_max: u64,
    /// net.ipv4.tcp_rmem maximum: the cap on receive autotuning.
    pub tcp_rmem_max: u64,
    /// net.ipv4.tcp_wmem maximum: the cap on send autotuning.
    pub tcp_wmem_max: u64,
}

impl KernelLimits {
    /// Reads the limits from /proc; missing values stay 0.
    pub fn read() -> Self {
        let one = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let last = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.split_whitespace().last().and_then(|v| v.parse().ok()))
                .unwrap_or(0)
        };
        KernelLimits {
            rmem_max: one("/proc/sys/net/core/rmem_max"),
            wmem_max: one("/proc/sys/net/core/wmem_max"),
            tcp_rmem_max: last("/proc/sys/net/ipv4/tcp_rmem"),
            tcp_wmem_max: last("/proc/sys/net/ipv4/tcp_wmem"),
        }
    }
}
