//! The control loop of a receiving session: announcements, file ends, aborts,
//! DONE, and settling each file (protocol-spec §5.3-§5.7).

use super::*;

impl Session {
    /// Runs the control loop until the client closes the connection.
    pub(crate) fn run_control(self: Arc<Self>, mut r: BufReader<ConnReader>) -> Result<(), WireError> {
        let mut buf = Vec::new();
        let limits = Limits::control();
        loop {
            let f = match read_frame(&mut r, &limits, &mut buf) {
                Ok(f) => {
                    self.heard();
                    f
                }
                Err(WireError::Closed) if self.state.lock().expect("state").done => return Ok(()),
                Err(WireError::Decode(e)) => {
                    self.fail(code::PROTOCOL, &format!("malformed frame: {e}"));
                    return Err(WireError::Decode(e));
                }
                Err(e) => {
                    self.fail(code::CANCELLED, "control connection broke");
                    return Err(e);
                }
            };
            if let Err(e) = self.on_control(f) {
                return Err(WireError::Io(io::Error::other(e)));
            }
            if r.buffer().is_empty() {
                self.flush_control()?;
            }
        }
    }

    /// Handles one control frame; an `Err` has already been reported to the client.
    pub(super) fn on_control(&self, f: Frame) -> Result<(), String> {
        let res = match f {
            Frame::Target { path } => self.on_target(&path),
            Frame::File(meta) => self.on_file(meta),
            Frame::FileEnd { id, digest } => {
                let next = self.state.lock().expect("state").rx.on_file_end(id, digest);
                next.map_err(Fatal::Protocol).and_then(|n| self.settle(n))
            }
            Frame::FileAbort { id, message, .. } => {
                let mut st = self.state.lock().expect("state");
                let path = st.rx.handle(id).map(|o| show(&o.meta.path)).unwrap_or_default();
                record(&mut st.failures, &format!("{path}: sender gave up: {message}"));
                match st.rx.on_file_abort(id) {
                    Ok(Some(of)) => {
                        of.file.discard();
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(Fatal::Protocol(e)),
                }
            }
            Frame::Done { files } => {
                let r = self.state.lock().expect("state").rx.on_done(files);
                r.map_err(Fatal::Protocol).and_then(|_| self.maybe_finish())
            }
            Frame::FileSame { id, ref chunks } => {
                let next = self.state.lock().expect("state").rx.on_file_same(id, chunks);
                next.map_err(Fatal::Protocol).and_then(|n| self.settle(n))
            }
            Frame::List { ref root, sums } if self.n.sync() => self.on_list(root, sums),
            Frame::Remove { ref paths } if self.n.sync() => self.on_remove(paths),
            Frame::Error { code, message } => Err(Fatal::Peer(code, message)),
            Frame::Notice { .. } => Ok(()),
            Frame::Pull { .. } => Err(Fatal::Code(
                code::PROTOCOL,
                "this end receives files: a pull asks for the pull capability first (protocol-spec §5.9)".into(),
            )),
            _ => Err(Fatal::Protocol(ProtocolError::Unexpected("frame on the control connection"))),
        };
        // DONE may come before the last entries settle (early DONE, §4.13); an
        // entry settled by this frame (created, in place, aborted) may be the last.
        let res = res.and_then(|_| self.maybe_finish());
        res.map_err(|e| {
            let (c, m) = match &e {
                Fatal::Protocol(p) => (code::PROTOCOL, p.to_string()),
                Fatal::Code(c, m) => (*c, m.clone()),
                Fatal::Peer(c, m) => {
                    *self.peer_error.lock().expect("peer error") = Some((*c, m.clone()));
                    (*c, format!("the other end ended the session: {m}"))
                }
            };
            self.fail(c, &m);
            m
        })
    }

    pub(super) fn on_target(&self, path: &[u8]) -> Result<(), Fatal> {
        let comps = components(path).map_err(|e| Fatal::Code(code::PATH_REFUSED, e.to_string()))?;
        let kind = {
            let mut st = self.state.lock().expect("state");
            st.dest.target_kind(&comps).map_err(|e| Fatal::Code(code::PATH_REFUSED, e.to_string()))?
        };
        self.queue_control(&Frame::TargetInfo { kind }).map_err(io_fatal)
    }

    pub(super) fn on_file(&self, meta: FileMeta) -> Result<(), Fatal> {
        let mut seed = None;
        let mut guard = self.state.lock().expect("state");
        let st = &mut *guard;
        if meta.owner.is_some() && !self.n.owners() {
            return Err(Fatal::Protocol(ProtocolError::Unexpected("FILE with an owner without capability bit 10")));
        }
        if meta.hardlink && !self.n.hardlinks() {
            return Err(Fatal::Protocol(ProtocolError::Unexpected("a hard link without capability bit 13")));
        }
        if meta.kind.is_special() && !self.n.specials() {
            return Err(Fatal::Protocol(ProtocolError::Unexpected("a special file without capability bit 12")));
        }
        if !meta.xattrs.is_empty() && !self.n.xattrs() {
            return Err(Fatal::Protocol(ProtocolError::Unexpected("FILE with xattrs without capability bit 11")));
        }
        st.rx.on_file(&meta).map_err(Fatal::Protocol)?;
        let id = meta.id;
        let replies = {
            let d = &mut st.dest;
            {
                let comps = components(&meta.path).map_err(Fatal::Protocol)?;
                // A daemon (which masks modes) sets metadata only on directories
                // this session created: a token holder must not open up, or
                // lock, a directory that was there before (and repeats of one
                // directory cost no memory).
                let daemon = self.mode_mask.load(Ordering::Relaxed) != 0o7777;
                let mut remember_dir = false;
                let res = match meta.kind {
                    _ if meta.hardlink => components(&meta.link)
                        .map_err(|e| DestError::Refused(format!("{}: link target: {e}", show(&meta.path))))
                        .and_then(|target| d.make_hardlink(&comps, &target, meta.id, &self.tag))
                        .map(|_| None),
                    EntryKind::Dir => d.make_dir(&comps).map(|created| {
                        remember_dir = created || !daemon;
                        None
                    }),
                    EntryKind::Symlink => d.make_symlink(&comps, &meta, self.owner_of(&meta), &self.tag).map(|_| None),
                    k if k.is_device() && !self.devices.load(Ordering::Relaxed) => Err(DestError::Refused(format!(
                        "{}: device nodes are not made here (they need root, and on a daemon serve --allow-devices)",
                        show(&meta.path)
                    ))),
                    EntryKind::Fifo | EntryKind::Socket | EntryKind::CharDev | EntryKind::BlockDev => {
                        let given = Given {
                            mode: Some(meta.mode & self.mode_mask.load(Ordering::Relaxed)),
                            mtime: (meta.mtime_sec, meta.mtime_nsec),
                            owner: self.owner_of(&meta),
                            xattrs: None,
                        };
                        d.make_special(&comps, &meta, given, &self.tag).map(|_| None)
                    }
                    EntryKind::File => {
                        let ident = Identity {
                            name: comps.last().map(|n| n.to_vec()).unwrap_or_default(),
                            size: meta.size,
                            mtime_sec: meta.mtime_sec,
                            mtime_nsec: meta.mtime_nsec,
                            chunk_size: self.chunk_size,
                        };
                        // Local work the peer waits for (a journal's read-back, a
                        // busy partial's 5 s): not its silence. Writes to the peer
                        // are never counted so: a peer that stops reading is silent.
                        let _working = Working::new(&self.working);
                        d.open_file(&comps, &ident, self.reuse()).map(Some)
                    }
                };
                match res {
                    Ok(Some(Opened::Partial(file, have, changed))) => {
                        let file: IncomingRef = file.into();
                        let mut out = Vec::new();
                        if changed {
                            let message = format!(
                                "{} changed since the interrupted transfer: sending it again from the start",
                                show(&meta.path)
                            );
                            out.push(Frame::Notice { code: code::SOURCE_CHANGED, message });
                        }
                        if have.is_empty() && self.n.delta() && meta.size > 0 {
                            // Delta: what the file under its name holds goes into the
                            // new one first (below, outside the session's lock: the
                            // file is not ready, so no lane touches it meanwhile).
                            seed = Some((id, file.clone(), meta.size));
                            st.rx.attach(id, OpenFile { file, meta });
                            out
                        } else {
                            st.rx.attach(id, OpenFile { file, meta });
                            out.extend(st.rx.on_resumed(id, &have));
                            out
                        }
                    }
                    Ok(Some(Opened::InPlace)) => vec![st.rx.on_created(id)],
                    Ok(None) => {
                        if remember_dir {
                            st.dirs.push((meta, true));
                        } else if self.n.sync() && st.dirs_seen.insert(meta.path.clone()) {
                            // Sync: a directory that was there before gets its time
                            // (its contents changed it), not its mode.
                            st.dirs.push((meta, false));
                        }
                        vec![st.rx.on_created(id)]
                    }
                    Err(e) if e.is_no_space() => return Err(Fatal::Code(code::NO_SPACE, e.to_string())),
                    Err(e) => {
                        record(&mut st.failures, &e.to_string());
                        let c = match &e {
                            DestError::Refused(_) => code::PATH_REFUSED,
                            DestError::Busy(_) => code::BUSY,
                            DestError::Io(_, io) if io.kind() == io::ErrorKind::PermissionDenied => code::PERMISSION,
                            DestError::Io(..) => code::IO,
                        };
                        vec![st.rx.on_failed(id, c, e.to_string())]
                    }
                }
            }
        };
        drop(guard);
        let mut replies = replies;
        if let Some((id, file, size)) = seed {
            let sums = {
                let _working = Working::new(&self.working);
                file.seed_from_old(size, self.chunk_size)
            };
            // The peer waited on this end's copy: that was not its silence.
            self.heard();
            replies.extend(self.state.lock().expect("state").rx.on_seeded(id, &sums));
        }
        for r in &replies {
            self.queue_control(r).map_err(io_fatal)?;
        }
        Ok(())
    }

    /// Carries out what the receiver decided for a file.
    pub(super) fn settle(&self, next: Next) -> Result<(), Fatal> {
        // The control queue is held from the file's last state change until its
        // answer is queued, and maybe_finish takes it first as well: SESSION_DONE
        // can never overtake a FILE_DONE or FILE_FAILED (the sender stops reading
        // at SESSION_DONE). Lock order: control, then state.
        let mut ctl = self.control.lock().expect("control");
        let reply = match next {
            Next::Wait => return Ok(()),
            Next::Fail(frame) => {
                let mut st = self.state.lock().expect("state");
                if let Frame::FileFailed { id, ref message, .. } = frame {
                    if let Some(of) = st.rx.take_handle(id) {
                        of.file.discard();
                    }
                    st.rx.forget(id);
                    record(&mut st.failures, message);
                }
                frame
            }
            Next::Finalize(id) => {
                let of = self.state.lock().expect("state").rx.take_handle(id);
                let res = match &of {
                    Some(OpenFile { file, meta }) => {
                        let mode = meta.mode & self.mode_mask.load(Ordering::Relaxed);
                        let _working = Working::new(&self.working);
                        let given = Given {
                            mode: Some(mode),
                            mtime: (meta.mtime_sec, meta.mtime_nsec),
                            owner: self.owner_of(meta),
                            xattrs: self.xattrs_of(meta),
                        };
                        file.place(given).map_err(|e| {
                            file.discard();
                            format!("cannot put {} in place: {e}", show(&meta.path))
                        })
                    }
                    _ => Ok(()),
                };
                let mut st = self.state.lock().expect("state");
                match res {
                    Ok(()) => st.rx.on_finalized(id),
                    Err(m) => {
                        record(&mut st.failures, &m);
                        st.rx.on_failed(id, code::IO, m)
                    }
                }
            }
        };
        {
            self.heard();
            let (w, scratch) = ctl.as_mut().ok_or_else(taken).map_err(io_fatal)?;
            write_frame(w, &reply, scratch).map_err(io_fatal)?;
        }
        drop(ctl);
        self.maybe_finish()
    }

    /// When DONE arrived and every entry settled: directory metadata, then SESSION_DONE.
    pub(super) fn maybe_finish(&self) -> Result<(), Fatal> {
        // See settle: the control queue first, so no file's answer is in flight.
        let mut ctl = self.control.lock().expect("control");
        let mut st = self.state.lock().expect("state");
        if st.done || !st.rx.is_complete() {
            return Ok(());
        }
        st.done = true;
        let dirs = std::mem::take(&mut st.dirs);
        // Deepest first, so setting a parent's mtime comes after its children changed it.
        for (m, set_mode) in dirs.iter().rev() {
            let Ok(comps) = components(&m.path) else { continue };
            let mode = set_mode.then(|| m.mode & self.mode_mask.load(Ordering::Relaxed));
            // A directory's owner is set where its mode is (a daemon: only on those it made).
            let owner = set_mode.then(|| self.owner_of(m)).flatten();
            let xattrs = set_mode.then(|| self.xattrs_of(m)).flatten();
            let given = Given { mode, mtime: (m.mtime_sec, m.mtime_nsec), owner, xattrs };
            if let Err(e) = st.dest.set_dir_meta(&comps, given) {
                say!("gfast serve: cannot set metadata of {}: {e}", show(&m.path));
            }
        }
        let (files, bytes) = st.rx.finished();
        drop(st);
        if self.verbose {
            say!("gfast serve: session {} done: {files} entries, {bytes} bytes", self.tag);
        }
        let (w, scratch) = ctl.as_mut().ok_or_else(taken).map_err(io_fatal)?;
        write_frame(w, &Frame::SessionDone { files, bytes }, scratch).and_then(|_| w.flush()).map_err(io_fatal)
    }
}
