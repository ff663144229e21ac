//! The receiving role over connections this end dialed: the client of a pull.

use super::*;

/// What a pull received.
pub(crate) struct Received {
    /// Entries completed.
    pub files: u64,
    /// Data bytes of the completed files.
    pub bytes: u64,
    /// Bytes of compressed chunk bodies that came in.
    pub compressed: u64,
    /// Bytes that came in as holes (ZERO blocks, §4.14).
    pub holes: u64,
}

/// The receiving role over connections this end dialed (the client of a pull):
/// runs a lane loop per lane and the control loop until the sender closes.
/// Returns what was received.
pub(crate) fn receive_dialed(
    root: &std::path::Path,
    store: StoreConfig,
    w: crate::engine::send::Wired,
    timeout: std::time::Duration,
) -> Result<Received, Error> {
    let crate::engine::send::Wired { ctl, ctl_r, ctl_w, lanes, n, numeric_ids, .. } = w;
    let setup = Setup { mode: Mode::Receive, root: Some(root), store, verbose: false, keys: None };
    let s =
        Session::new(setup, &n, &ctl, ctl_w).map_err(|e| Error::Io(format!("cannot open '{}'", root.display()), e))?;
    // What a server sends gets no setuid, setgid or sticky bit here either.
    s.set_mode_mask(0o777);
    // Owners as rsync keeps them: only where this end may give files away.
    if store.owners {
        s.keep_owners(numeric_ids);
    }
    if crate::storage::owners::may_chown() {
        s.allow_devices();
    }
    if n.xattrs() {
        s.keep_xattrs(crate::storage::xattrs::Policy::Permitted);
    }
    // A server that stays connected but sends nothing is given up on after --timeout.
    let (silent, over) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let watch = {
        let (s, silent, over) = (s.clone(), silent.clone(), over.clone());
        std::thread::spawn(move || {
            while !over.load(Ordering::SeqCst) && !s.completed() && !s.has_failed() {
                std::thread::sleep(std::time::Duration::from_millis(250));
                if s.silent_for() > timeout && !s.completed() && !s.is_working() {
                    silent.store(true, Ordering::SeqCst);
                    s.fail(code::CANCELLED, "the client heard nothing for its --timeout");
                }
            }
        })
    };
    let mut handles = Vec::new();
    for (c, r, w) in lanes {
        s.state.lock().expect("state").lanes.push(c.closer().map_err(|e| Error::Io("socket".into(), e))?);
        let s2 = s.clone();
        handles.push(std::thread::spawn(move || {
            let res = s2.lane_loop(r, w);
            if res.is_err() && !s2.state.lock().expect("state").done {
                s2.fail(code::CANCELLED, "a data connection broke");
            }
            drop(c);
        }));
    }
    let res = s.clone().run_control(ctl_r);
    let done = s.completed();
    s.cleanup();
    for h in handles {
        let _ = h.join();
    }
    over.store(true, Ordering::SeqCst);
    let _ = watch.join();
    if silent.load(Ordering::SeqCst) && !done {
        return Err(Error::Silent(timeout.as_secs()));
    }
    let st = s.state.lock().expect("state");
    if st.failures.0 > 0 {
        for m in &st.failures.1 {
            say!("gfast: not transferred: {m}");
        }
        let (files, _) = st.rx.finished();
        return Err(Error::Incomplete {
            failed: st.failures.0,
            total: files + st.failures.0,
            first: st.failures.1.first().cloned().unwrap_or_default(),
        });
    }
    if let (false, Some((c, m))) = (done, s.peer_error.lock().expect("peer error").take()) {
        return Err(Error::Remote(c, m));
    }
    match (res, done) {
        (_, true) => {
            let (files, bytes) = st.rx.finished();
            let (compressed, holes) = (s.compressed_in.load(Ordering::Relaxed), s.holes_in.load(Ordering::Relaxed));
            Ok(Received { files, bytes, compressed, holes })
        }
        (Err(e), false) => Err(Error::PeerVanished(e.to_string())),
        (Ok(()), false) => Err(Error::PeerVanished("the sender closed the session before it was complete".into())),
    }
}
