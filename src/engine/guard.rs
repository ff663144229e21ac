//! What keeps a daemon on a shared network serving its users while others try
//! to starve it (protocol-spec §5.14): limits on connections that have not
//! authenticated yet (in all and per source address), an absolute deadline for
//! each one's handshake, and a growing delay for addresses that keep failing
//! authentication, with their log lines summarised.

use crate::transport::conn::Closer;
use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections that have not finished their handshake, in all: each holds a
/// thread until it does.
pub(crate) const MAX_PENDING: usize = 512;
/// ... and from one source address (IPv6: one /64).
pub(crate) const MAX_PENDING_PER_SOURCE: usize = 32;
/// Time from accept to an authenticated session or a verified JOIN, TLS
/// included: a peer that drips one byte at a time is cut off at this deadline.
pub(crate) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(15);
/// Failed authentications an address may make before it has to wait.
const FREE_FAILURES: u32 = 5;
/// The wait after each further failure doubles from one second up to this
/// (an answer is held back at most [`MAX_ANSWER_DELAY`] of it).
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// An address whose last failure is this old starts with a clean slate.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Addresses remembered at most (the oldest are forgotten first).
const MAX_TRACKED: usize = 65_536;
/// At most one log line per address per this long; the rest are counted.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The longest a wrong token's answer is held back: under the handshake
/// deadline, so a held connection is answered before it is cut.
pub(crate) const MAX_ANSWER_DELAY: Duration = Duration::from_secs(10);

/// Where failed authentications are counted: IPv4 by address, IPv6 by /48 (a
/// site's prefix: rotating through its /64s gains nothing).
fn throttle_key(ip: IpAddr) -> IpAddr {
    match source_of(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The address a limit counts against: IPv4 as it is, IPv6 by its /64 (one
/// host usually holds a whole /64).
pub(crate) fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

struct Waiting {
    source: IpAddr,
    deadline: Instant,
    closer: Closer,
}

/// Connections in their handshake: counted, and cut at their deadline.
#[derive(Default)]
pub(crate) struct Gate {
    inner: Mutex<GateInner>,
}

#[derive(Default)]
struct GateInner {
    per_source: HashMap<IpAddr, usize>,
    waiting: HashMap<u64, Waiting>,
    next: u64,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// [`MAX_PENDING`] handshakes are under way.
    All,
    /// [`MAX_PENDING_PER_SOURCE`] from this address.
    Source,
}

/// An admitted connection's place at the gate; released when dropped (the
/// handshake ended, one way or the other).
pub(crate) struct Pass {
    gate: Arc<Gate>,
    id: u64,
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.gate.release(self.id);
    }
}

impl Gate {
    /// Admits a connection from `ip` whose handshake `closer` can cut, or says
    /// why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, closer: Closer) -> Result<Pass, Full> {
        let source = source_of(ip);
        let mut g = self.inner.lock().expect("gate");
        if g.waiting.len() >= MAX_PENDING {
            return Err(Full::All);
        }
        let n = g.per_source.entry(source).or_insert(0);
        if *n >= MAX_PENDING_PER_SOURCE {
            return Err(Full::Source);
        }
        *n += 1;
        let id = g.next;
        g.next += 1;
        g.waiting.insert(id, Waiting { source, deadline: Instant::now() + HANDSHAKE_DEADLINE, closer });
        Ok(Pass { gate: self.clone(), id })
    }

    fn release(&self, id: u64) {
        let mut g = self.inner.lock().expect("gate");
        if let Some(w) = g.waiting.remove(&id) {
            if let Some(n) = g.per_source.get_mut(&w.source) {
                *n -= 1;
                if *n == 0 {
                    g.per_source.remove(&w.source);
                }
            }
        }
    }

    /// Cuts every handshake past its deadline; returns how many. Their threads
    /// then fail their read and release their pass.
    pub(crate) fn cut_overdue(&self, now: Instant) -> usize {
        let g = self.inner.lock().expect("gate");
        let mut n = 0;
        for w in g.waiting.values().filter(|w| w.deadline <= now) {
            w.closer.shutdown(Shutdown::Both);
            n += 1;
        }
        n
    }

    /// Handshakes under way.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.inner.lock().expect("gate").waiting.len()
    }
}

#[derive(Debug, Clone)]
struct Failures {
    count: u32,
    last: Instant,
    /// No HELLO from this address is answered before this.
    until: Instant,
    /// Log lines not printed since the last one, and when that was.
    unlogged: u64,
    logged: Option<Instant>,
}

/// Wrong answers being held back at once, from one address and in all: past
/// either, a new HELLO from a crowded address is refused before its token is
/// tested (so held-back answers cannot pile up threads).
pub(crate) const MAX_HELD_PER_SOURCE: u32 = 8;
const MAX_HELD: u32 = 64;

/// Failed authentications by source address.
#[derive(Default)]
pub(crate) struct Throttle {
    by_source: Mutex<HashMap<IpAddr, Failures>>,
    /// Wrong answers held back now, by address and in all.
    held: Mutex<(HashMap<IpAddr, u32>, u32)>,
}

/// A wrong answer being held back (released when dropped).
pub(crate) struct Held<'a> {
    throttle: &'a Throttle,
    key: IpAddr,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut g = self.throttle.held.lock().expect("held");
        if let Some(n) = g.0.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                g.0.remove(&self.key);
            }
        }
        g.1 -= 1;
    }
}

impl Throttle {
    /// How long the next wrong answer to `ip` would be held back, if at all.
    #[cfg(test)]
    fn wait_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let g = self.by_source.lock().expect("throttle");
        g.get(&throttle_key(ip)).and_then(|f| f.until.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    /// Notes a failed authentication from `ip`. Returns the log line to print
    /// now, if any (at most one per address per minute, counting the rest),
    /// and how long to hold back the answer: nothing for the first few, then
    /// 1 s doubling up to [`MAX_ANSWER_DELAY`]. A right token is never held back:
    /// the token is checked first, so guessing cannot lock its holder out.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant, what: &str) -> (Option<String>, Duration) {
        let mut g = self.by_source.lock().expect("throttle");
        if g.len() >= MAX_TRACKED {
            let oldest = g.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k);
            if let Some(k) = oldest {
                g.remove(&k);
            }
        }
        let f = g.entry(throttle_key(ip)).or_insert(Failures {
            count: 0,
            last: now,
            until: now,
            unlogged: 0,
            logged: None,
        });
        if now.duration_since(f.last) > FORGET_AFTER {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        f.until = now + backoff(f.count);
        let delay = backoff(f.count.saturating_sub(1)).min(MAX_ANSWER_DELAY);
        let line = match f.logged {
            Some(t) if now.duration_since(t) < LOG_EVERY => {
                f.unlogged += 1;
                None
            }
            _ => {
                let more = std::mem::take(&mut f.unlogged);
                f.logged = Some(now);
                let wait = backoff(f.count);
                let mut line = format!("{what} ({} failed in a row", f.count);
                if more > 0 {
                    line.push_str(&format!("; {more} more since the last line"));
                }
                if !wait.is_zero() {
                    let w = wait.min(MAX_ANSWER_DELAY).as_secs();
                    line.push_str(&format!("; each further wrong token answered after {w} s or more"));
                }
                line.push(')');
                Some(line)
            }
        };
        (line, delay)
    }

    /// True when `ip` (or everyone) has as many wrong answers held back as
    /// allowed: its next HELLO is refused without testing the token.
    pub(crate) fn is_crowded(&self, ip: IpAddr) -> bool {
        let g = self.held.lock().expect("held");
        g.0.get(&throttle_key(ip)).copied().unwrap_or(0) >= MAX_HELD_PER_SOURCE || g.1 >= MAX_HELD
    }

    /// Counts a wrong answer to `ip` held back until the guard drops.
    pub(crate) fn hold(&self, ip: IpAddr) -> Held<'_> {
        let key = throttle_key(ip);
        let mut g = self.held.lock().expect("held");
        *g.0.entry(key).or_insert(0) += 1;
        g.1 += 1;
        Held { throttle: self, key }
    }

    /// Forgets addresses quiet for long; returns the summary lines of those
    /// with failures not yet logged.
    pub(crate) fn tidy(&self, now: Instant) -> Vec<String> {
        let mut g = self.by_source.lock().expect("throttle");
        let mut lines = Vec::new();
        for (ip, f) in g.iter_mut() {
            if f.unlogged > 0 && f.logged.is_some_and(|t| now.duration_since(t) >= LOG_EVERY) {
                lines.push(format!("{} more failed authentications from {ip} in the last minute", f.unlogged));
                f.unlogged = 0;
                f.logged = Some(now);
            }
        }
        g.retain(|_, f| now.duration_since(f.last) <= FORGET_AFTER);
        lines
    }
}

/// The wait after the `n`-th failure in a row: none for the first few (a
/// mistyped token), then 1 s, doubling up to five minutes.
fn backoff(n: u32) -> Duration {
    if n < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (n - FREE_FAILURES).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};

    #[test]
    fn failures_back_off_per_address_and_logs_are_summarised() {
        let t = Throttle::default();
        let now = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        let mut lines = 0;
        for i in 0..FREE_FAILURES {
            assert!(t.wait_for(a, now).is_none(), "failure {i} is free");
            let (line, delay) = t.failed(a, now, "wrong token");
            lines += line.is_some() as usize;
            assert_eq!(delay, Duration::ZERO, "failure {i} is answered at once");
        }
        assert_eq!(lines, 1, "one line a minute per address");
        assert_eq!(t.wait_for(a, now), Some(Duration::from_secs(1)), "after the free ones, a wait");
        assert_eq!(t.failed(a, now, "wrong token").1, Duration::from_secs(1));
        assert_eq!(t.wait_for(a, now), Some(Duration::from_secs(2)));
        assert_eq!(t.failed(a, now, "wrong token").1, Duration::from_secs(2));
        for _ in 0..40 {
            t.failed(a, now, "wrong token");
        }
        assert_eq!(t.wait_for(a, now), Some(MAX_BACKOFF));
        assert_eq!(t.failed(a, now, "wrong token").1, MAX_ANSWER_DELAY, "an answer waits at most this");
        assert!(t.wait_for(b, now).is_none(), "another address is not slowed");
        let later = now + LOG_EVERY;
        let summary = t.tidy(later);
        assert_eq!(summary.len(), 1);
        assert!(summary[0].starts_with("47 more failed"), "{summary:?}");
        // IPv6 is counted by /48: rotating through /64s gains nothing.
        let v6a: IpAddr = "::1".parse::<Ipv6Addr>().unwrap().into();
        let v6b: IpAddr = "0:0:0:ffff::1".parse::<Ipv6Addr>().unwrap().into();
        assert_eq!(throttle_key(v6a), throttle_key(v6b));
    }

    #[test]
    fn the_gate_counts_per_source_and_cuts_overdue_handshakes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let gate = Arc::new(Gate::default());
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut passes = Vec::new();
        let mut socks = Vec::new();
        for _ in 0..MAX_PENDING_PER_SOURCE {
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            passes.push(gate.admit(ip, Closer::Tcp(s.try_clone().unwrap())).unwrap());
            socks.push((c, s));
        }
        let (c, s) = (TcpStream::connect(l.local_addr().unwrap()).unwrap(), l.accept().unwrap().0);
        assert_eq!(gate.admit(ip, Closer::Tcp(s.try_clone().unwrap())).err(), Some(Full::Source));
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
        let p = gate.admit(other, Closer::Tcp(s.try_clone().unwrap())).unwrap();
        drop(p);
        assert_eq!(gate.pending(), MAX_PENDING_PER_SOURCE);
        passes.pop();
        assert!(gate.admit(ip, Closer::Tcp(s.try_clone().unwrap())).is_ok(), "a released place is free again");
        assert_eq!(gate.cut_overdue(Instant::now()), 0);
        assert_eq!(gate.cut_overdue(Instant::now() + HANDSHAKE_DEADLINE), MAX_PENDING_PER_SOURCE - 1);
        // The cut sockets read EOF at once.
        use std::io::Read;
        let mut b = [0u8; 1];
        assert_eq!(socks[0].1.read(&mut b).unwrap(), 0);
        drop((c, s));
        // IPv6 counts by /64; mapped IPv4 as IPv4.
        let v6a: IpAddr = Ipv6Addr::LOCALHOST.into();
        let v6b: IpAddr = "::2".parse::<Ipv6Addr>().unwrap().into();
        assert_eq!(source_of(v6a), source_of(v6b), "one /64");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().into();
        assert_eq!(source_of(mapped), ip);
    }
}
