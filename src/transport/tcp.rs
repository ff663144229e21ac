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
    /// Cap on the session's sending rate, bits per second, shared by its lanes.
    pub rate: Option<u64>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { buffer: None, congestion: Some("bbr".into()), timeout: Duration::from_secs(60), rate: None }
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

/// Caps what the kernel sends on `stream` at `bytes_per_sec` (SO_MAX_PACING_RATE;
/// TCP paces by itself, no fq qdisc needed).
pub fn set_pacing(stream: &TcpStream, bytes_per_sec: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let v: u64 = bytes_per_sec.max(1);
    // SAFETY: a u64 option value of the right size for the kernel to read.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            &v as *const u64 as *const libc::c_void,
            std::mem::size_of::<u64>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

/// What the kernel says about one TCP connection (Linux TCP_INFO).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpStats {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// Segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// Bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// Time the connection had data to send, microseconds.
    pub busy_us: u64,
    /// Time sending was limited by the receiver's window, microseconds.
    pub rwnd_limited_us: u64,
    /// Time sending was limited by the local send buffer, microseconds.
    pub sndbuf_limited_us: u64,
    /// The pacing cap in bytes per second (`u64::MAX`: none).
    pub max_pacing_rate: u64,
}

/// The leading part of Linux's `struct tcp_info` (uapi/linux/tcp.h), up to
/// `tcpi_sndbuf_limited` (kernel 4.10 and later).
#[repr(C)]
#[derive(Default)]
struct RawTcpInfo {
    u8s: [u8; 8],
    u32s_a: [u32; 13],
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    u32s_b: [u32; 4],
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    u64s_a: [u64; 4],
    u32s_c: [u32; 6],
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
}

/// Reads TCP_INFO; `None` where the kernel does not provide these fields.
pub fn tcp_stats(stream: &TcpStream) -> Option<TcpStats> {
    use std::os::fd::AsRawFd;
    let mut raw = RawTcpInfo::default();
    let mut len = std::mem::size_of::<RawTcpInfo>() as libc::socklen_t;
    // SAFETY: a buffer of `len` bytes for the kernel to fill; it reports how much it wrote.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut raw as *mut RawTcpInfo as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 || (len as usize) < std::mem::size_of::<RawTcpInfo>() {
        return None;
    }
    Some(TcpStats {
        rtt_us: raw.rtt,
        total_retrans: raw.total_retrans,
        bytes_acked: raw.u64s_a[2],
        busy_us: raw.busy_time,
        rwnd_limited_us: raw.rwnd_limited,
        sndbuf_limited_us: raw.sndbuf_limited,
        max_pacing_rate: raw.u64s_a[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_info_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<RawTcpInfo>(), 192);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        use std::io::{Read, Write};
        (&c).write_all(&[1u8; 100_000]).unwrap();
        let mut b = vec![0u8; 100_000];
        s.read_exact(&mut b).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let st = tcp_stats(&c).expect("TCP_INFO with busy and limited times");
        assert!(st.rtt_us > 0 && st.rtt_us < 1_000_000, "{st:?}");
        // bytes_acked sits right before the fields we read last: a wrong layout shows here.
        assert!((100_000..=100_002).contains(&st.bytes_acked), "{st:?}");
        assert!(st.busy_us < 60_000_000 && st.sndbuf_limited_us <= st.busy_us.max(1) * 2, "{st:?}");
        assert_eq!(st.max_pacing_rate, u64::MAX, "no cap unless asked");
        set_pacing(&c, 12_345_678).unwrap();
        assert_eq!(tcp_stats(&c).unwrap().max_pacing_rate, 12_345_678);
    }
}
