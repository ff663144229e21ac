//! A sending lane: chunks read, hashed and sent, and their acknowledgements
//! (protocol-spec §4.14, §4.15, §5.4).

use super::*;

/// A lane's unacknowledged chunks, each with when it went out.
pub(super) type Inflight = Mutex<LaneWindow<Instant>>;

pub(super) fn lane_writer(sh: &Shared, lane: usize, w: ConnWriter, inflight: &Inflight) {
    let owned = w.takes_owned();
    let mut w = BufWriter::with_capacity(256 << 10, w);
    let mut piece = vec![0u8; PIECE];
    let mut cur: Option<(u64, Box<dyn SourceFile>)> = None;
    let mut squeeze = sh.compress.then(Squeeze::new);
    loop {
        let task = {
            let mut g = sh.lock();
            loop {
                if sh.stopped() || g.is_finished() {
                    let clean = !sh.stopped();
                    drop(g);
                    if w.flush().is_ok() && clean {
                        let _ = w.get_mut().close_notify();
                    }
                    return;
                }
                let busy = inflight.lock().expect("inflight").is_full();
                if !busy {
                    if let Some(t) = g.next_chunk() {
                        break t;
                    }
                }
                // Nothing to send right now: push out what is buffered before sleeping.
                drop(g);
                if let Err(e) = w.flush() {
                    return sh.fail_lane(Error::PeerVanished(e.to_string()));
                }
                g = sh.lock();
                if sh.stopped() || g.is_finished() || (!busy && g.has_chunk()) {
                    continue;
                }
                g = sh.lanes_cv.wait_timeout(g, Duration::from_millis(50)).expect("cv").0;
            }
        };
        if task.retry {
            sh.stats.retransmitted.fetch_add(1, Relaxed);
        }
        if let Some(expect) = task.expect {
            // The receiver holds this chunk (delta: its old file; resume: its
            // journal) if the source hashes the same; then nothing is sent
            // (delta: FILE_SAME says so, in order, before FILE_END). Otherwise,
            // or if the source cannot be read here, it is sent.
            if cur.as_ref().map(|c| c.0) != Some(task.id) {
                cur = sh.open_source(&task.source).ok().map(|f| (task.id, f));
            }
            let hashed = cur.as_ref().and_then(|(_, f)| f.hash_range(task.offset, task.len as usize, &mut piece));
            sh.keep_alive();
            if hashed == Some(expect.hash()) {
                let mut g = sh.lock();
                if g.on_chunk_same(task.id, task.offset, expect) {
                    match expect {
                        Expect::Old(_) => sh.stats.bytes_unchanged.fetch_add(task.len as u64, Relaxed),
                        Expect::Resumed(_) => sh.stats.bytes_resumed.fetch_add(task.len as u64, Relaxed),
                    };
                }
                sh.wake_after(&g);
                continue;
            }
        }
        inflight.lock().expect("inflight").sent(task.id, task.offset, task.len, Instant::now());
        // Read, hash and send the chunk piece by piece. If the source fails mid-chunk
        // the frame is completed with zeros and a hash that cannot match, and the
        // file is aborted: the receiver never keeps those bytes.
        let mut read_err: Option<std::io::Error> = None;
        if cur.as_ref().map(|c| c.0) != Some(task.id) {
            match sh.open_source(&task.source) {
                Ok(f) => cur = Some((task.id, f)),
                Err(e) => {
                    cur = None;
                    read_err = Some(e);
                }
            }
        }
        let head = ChunkHead { id: task.id, offset: task.offset };
        let corrupt = sh.corrupt_every > 0
            && !task.retry
            && (sh.first_sendings.fetch_add(1, Relaxed) + 1) % sh.corrupt_every == 0;
        // Holes (§4.14, bit 9): a chunk with a whole 64 KiB cell of hole goes as
        // blocks, its holes described and not sent. One lseek per chunk finds
        // that a chunk has none.
        let spans = match (&read_err, &cur) {
            (None, Some((_, f))) if sh.sparse && task.len as usize >= SPARSE_GRAIN => {
                let rel = |(a, b): (u64, u64)| ((a - task.offset) as usize, (b - task.offset) as usize);
                let holes: Vec<(usize, usize)> = f.holes(task.offset, task.len as u64).into_iter().map(rel).collect();
                if holes.is_empty() {
                    None
                } else {
                    sparse_layout(&holes, task.len as usize)
                }
            }
            _ => None,
        };
        let holed = spans.as_ref().map(|spans| Holed { head, len: task.len as usize, spans, corrupt });
        let hash = if let (Some(c), None, Some((_, f))) = (&holed, &squeeze, &cur) {
            sh.stats.mark_first_byte();
            match send_stored_sparse(&mut w, &mut piece, f.as_ref(), c) {
                Ok((hash, err, data)) => {
                    read_err = err;
                    sh.stats.add_sent(lane, data);
                    sh.stats.bytes_holes.fetch_add(task.len as u64 - data, Relaxed);
                    hash
                }
                Err(e) => return sh.fail_lane(Error::PeerVanished(e.to_string())),
            }
        } else if let Some(z) = squeeze.as_mut() {
            // Compressed: the blocks are made first, since the frame's length leads it.
            let src = if read_err.is_none() { cur.as_ref().map(|c| c.1.as_ref()) } else { None };
            let at = (task.id, task.offset, task.len as usize);
            let (hash, err, raw) = match (&holed, src) {
                (Some(c), Some(src)) => z.assemble_sparse(&mut piece, src, c),
                _ => {
                    let (hash, err) = z.assemble(&mut piece, src, at, corrupt);
                    (hash, err, task.len as u64)
                }
            };
            sh.stats.bytes_holes.fetch_add(task.len as u64 - raw, Relaxed);
            read_err = read_err.or(err);
            let body = z.enc.body();
            let wire = body.len() as u64;
            sh.stats.mark_first_byte();
            let sent = w.write_all(&head.encode_prefix_flagged(CHUNK_COMPRESSED, body.len() as u32)).and_then(|_| {
                if owned {
                    // QUIC keeps what it is given until it is acknowledged: a copy
                    // of the compressed bytes, so the body buffer is kept for the next.
                    let body = bytes::Bytes::copy_from_slice(body);
                    w.flush().and_then(|_| w.get_mut().write_owned(body))
                } else {
                    w.write_all(body)
                }
            });
            if let Err(e) = sent.and_then(|_| w.write_all(&hash)) {
                return sh.fail_lane(Error::PeerVanished(e.to_string()));
            }
            sh.stats.add_sent(lane, raw);
            sh.stats.bytes_compressed.fetch_add(wire, Relaxed);
            hash
        } else {
            if let Err(e) = w.write_all(&head.encode_prefix(task.len)) {
                return sh.fail_lane(Error::PeerVanished(e.to_string()));
            }
            let mut hasher = ChunkHasher::new();
            let mut done = 0usize;
            while done < task.len as usize {
                let n = (task.len as usize - done).min(PIECE);
                if owned {
                    // QUIC keeps what it is given until it is acknowledged: read into a
                    // fresh buffer and hand it over instead of having it copied.
                    let mut b = match (&read_err, &cur) {
                        (None, Some((_, f))) => match f.read_owned(n, task.offset + done as u64) {
                            Ok(b) => b,
                            Err(e) => {
                                read_err = Some(e);
                                bytes::BytesMut::zeroed(n)
                            }
                        },
                        _ => bytes::BytesMut::zeroed(n),
                    };
                    hasher.update(&b);
                    if corrupt && done == 0 {
                        b[0] ^= 1;
                    }
                    sh.stats.mark_first_byte();
                    if let Err(e) = w.flush().and_then(|_| w.get_mut().write_owned(b.freeze())) {
                        return sh.fail_lane(Error::PeerVanished(e.to_string()));
                    }
                    sh.stats.add_sent(lane, n as u64);
                    done += n;
                    continue;
                }
                let buf = &mut piece[..n];
                if read_err.is_none() {
                    if let Some((_, f)) = &cur {
                        if let Err(e) = f.read_exact_at(buf, task.offset + done as u64) {
                            read_err = Some(e);
                        }
                    }
                }
                if read_err.is_some() {
                    buf.fill(0);
                }
                hasher.update(buf);
                if corrupt && done == 0 {
                    buf[0] ^= 1;
                }
                sh.stats.mark_first_byte();
                if let Err(e) = w.write_all(buf) {
                    return sh.fail_lane(Error::PeerVanished(e.to_string()));
                }
                sh.stats.add_sent(lane, n as u64);
                done += n;
            }
            let mut hash = hasher.finish();
            if read_err.is_some() {
                hash[0] ^= 0xff;
            }
            if let Err(e) = w.write_all(&hash) {
                return sh.fail_lane(Error::PeerVanished(e.to_string()));
            }
            hash
        };
        let mut g = sh.lock();
        match read_err {
            None => g.on_chunk_sent(task.id, task.offset, hash),
            Some(e) => {
                let msg = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "source file shrank while it was being sent".to_string()
                } else {
                    format!("cannot read source: {e}")
                };
                say!("gfast: {}: {msg}", task.source.display());
                let c = if e.kind() == std::io::ErrorKind::UnexpectedEof { code::SOURCE_CHANGED } else { code::IO };
                g.on_source_error(task.id, c, msg);
                cur = None;
            }
        }
        sh.wake_after(&g);
    }
}

pub(super) fn ack_reader(sh: &Shared, lane: usize, mut r: BufReader<ConnReader>, inflight: &Inflight, joined: bool) {
    let mut buf = Vec::new();
    let limits = Limits::lane(0); // acknowledgements only: no CHUNK comes back
                                  // A client's lanes send behind JOIN without waiting: JOINED comes first here.
    let mut joined = joined;
    // Reused for every run of acks (no allocation per ack on the data path).
    let (mut acks, mut taken) = (Vec::with_capacity(256), Vec::with_capacity(256));
    loop {
        let f = match read_frame(&mut r, &limits, &mut buf) {
            Ok(f) => f,
            // The session ended (the lanes' readers are shut down then).
            Err(_) if sh.session_done.load(SeqCst) => return,
            Err(e @ (WireError::Closed | WireError::Io(_))) => return sh.fail_lane(wire_err(e)),
            Err(e) => return sh.fail(wire_err(e)),
        };
        if !joined {
            match f {
                Frame::Joined { lane: l } if l as usize == lane => {
                    joined = true;
                    continue;
                }
                // Refused: when the session already ended on the server (say the
                // destination is full), the control connection says why.
                Frame::Error { code, message } => return sh.fail_lane(Error::Remote(code, message)),
                _ => return sh.fail(Error::Protocol("expected JOINED".into())),
            }
        }
        // Acks of small files come in runs: every one already buffered is taken
        // under the same locks, with one wake-up at the end.
        acks.clear();
        acks.push(f);
        while acks.len() < 256 && frame_buffered(&r) {
            match read_frame(&mut r, &limits, &mut buf) {
                Ok(f) => acks.push(f),
                Err(e) => return sh.fail(wire_err(e)),
            }
        }
        let mut was_full = false;
        taken.clear();
        {
            let mut inf = inflight.lock().expect("inflight");
            for f in acks.drain(..) {
                let Frame::ChunkAck { id, offset, status } = f else {
                    drop(inf);
                    return sh.fail(match f {
                        Frame::Error { code, message } => Error::Remote(code, message),
                        _ => Error::Protocol("unexpected frame on a data lane".into()),
                    });
                };
                was_full |= inf.is_full();
                match inf.on_ack(id, offset) {
                    Ok(t) => sh.stats.record_rtt(t.elapsed()),
                    Err(e) => {
                        drop(inf);
                        return sh.fail(Error::Protocol(e.to_string()));
                    }
                }
                taken.push((id, offset, status));
            }
        }
        let mut g = sh.lock();
        for &(id, offset, status) in &taken {
            g.on_chunk_ack(id, offset, status);
        }
        // This lane's window had no room: its writer may be asleep on it.
        if was_full {
            sh.wake_all();
        } else {
            sh.wake_after(&g);
        }
    }
}
