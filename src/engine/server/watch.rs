//! The daemon's watchdog, and the words for connections turned away at the
//! gate (protocol-spec §5.14).

use super::*;

/// What a connection turned away at the gate is told.
pub(super) fn busy_message(full: Full) -> &'static str {
    match full {
        Full::All => "server busy: too many connections are starting at once; try again in a moment",
        Full::Source => {
            "server busy: too many connections from your address are starting at once; try again in a moment"
        }
    }
}

/// Tells a connection the gate did not admit why, in one plain ERROR frame
/// (a TLS client recognises it in place of the server's hello), and closes it.
pub(super) fn turn_away(stream: &TcpStream, full: Full) {
    let _ = stream.set_nonblocking(true);
    let mut w = stream;
    let _ =
        write_frame(&mut w, &Frame::Error { code: code::BUSY, message: busy_message(full).into() }, &mut Vec::new());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// True when more than [`FD_SHARE_IN_USE`] of the descriptor limit is open.
pub(super) fn fds_nearly_exhausted() -> bool {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a valid struct pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        return false;
    }
    let open = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    open as f64 > rl.rlim_cur as f64 * FD_SHARE_IN_USE
}

/// The daemon's watchdog, four times a second: cuts handshakes past their
/// deadline, ends receiving sessions whose client was silent past --timeout,
/// and once a minute summarises failed authentications and expires partial
/// files nobody resumed.
pub(super) fn watch(server: std::sync::Weak<Server>) {
    let mut last_minute = Instant::now();
    let mut last_expiry = Instant::now();
    // Sessions being ended, and when their connections are cut if that is stuck.
    let mut ending: HashMap<[u8; 16], Instant> = HashMap::new();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let Some(me) = server.upgrade() else { return };
        let now = Instant::now();
        me.gate.cut_overdue(now);
        let timeout = me.cfg.tuning.timeout;
        let live: Vec<_> = me.sessions.lock().expect("sessions").iter().map(|(id, s)| (*id, s.clone())).collect();
        ending.retain(|id, _| live.iter().any(|(i, _)| i == id));
        for (id, s) in live {
            if let Some(cut_at) = ending.get(&id) {
                if now >= *cut_at {
                    s.cut();
                }
                continue;
            }
            if !s.is_receiving() || s.has_failed() || s.is_working() || s.silent_for() <= timeout {
                continue;
            }
            let m = format!("the client sent nothing for {} s (the server's --timeout)", timeout.as_secs());
            say!("gfast serve: session {}: {m}: ended", s.tag);
            // Ending it writes and takes locks: in its own thread, so this one
            // never waits on a session; cut outright if that is stuck.
            ending.insert(id, now + Duration::from_secs(5));
            std::thread::spawn(move || s.abort_with(code::CANCELLED, &m));
        }
        if now.duration_since(last_minute) >= Duration::from_secs(60) {
            last_minute = now;
            for line in me.throttle.tidy(now) {
                say!("gfast serve: {line}");
            }
        }
        if let Some(ttl) = me.cfg.partial_ttl {
            // Checked once a minute, or twice per TTL when it is shorter, in its
            // own thread: finding partials again walks paths, and this thread
            // must keep cutting handshakes meanwhile.
            let due =
                now.duration_since(last_expiry) >= (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
            if due && !me.expiring.swap(true, Ordering::SeqCst) {
                last_expiry = now;
                let me = me.clone();
                std::thread::spawn(move || {
                    let mut kept = std::mem::take(&mut *me.kept.lock().expect("kept"));
                    kept.retain(|k| !k.expire(ttl));
                    me.kept.lock().expect("kept").extend(kept);
                    me.expiring.store(false, Ordering::SeqCst);
                });
            }
        }
    }
}
