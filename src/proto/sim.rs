//! Drives a `Sender` and a `Receiver` through an in-process simulated pair: frames are
//! encoded and decoded, lanes deliver in an order chosen by a seeded generator, and
//! chunk data can be corrupted in flight. Deterministic for a given seed.

use super::error::code;
use super::frame::{decode, Decoded, EntryKind, FileMeta, Frame, Limits};
use super::hash::chunk_hash;
use super::receiver::{ChunkPlan, Next, Receiver};
use super::sender::Sender;
use std::collections::{HashMap, VecDeque};

/// A seeded xorshift generator for the protocol tests.
pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn wire(f: &Frame) -> Frame {
    let bytes = f.to_vec();
    match decode(&bytes, &Limits::default()).expect("valid frame") {
        Decoded::Frame(g, n) => {
            assert_eq!(n, bytes.len());
            g
        }
        Decoded::Incomplete(_) => panic!("incomplete"),
    }
}

struct Outcome {
    stored: HashMap<Vec<u8>, Vec<u8>>,
    failures: Vec<(Vec<u8>, u16)>,
    retransmitted: u64,
}

/// Runs a whole session. `corrupt(rng, id, retry)` says whether to corrupt a chunk of `id`.
fn run(
    files: &[(&[u8], Vec<u8>)],
    chunk: u64,
    lanes: usize,
    seed: u64,
    corrupt: &dyn Fn(&mut Rng, u64, bool) -> bool,
) -> Outcome {
    let mut rng = Rng(seed | 1);
    let mut tx: Sender<usize> = Sender::new(chunk, 3);
    // Half the seeds run with early DONE (sent once all is announced).
    tx.set_early_done(seed % 2 == 0);
    let mut rx: Receiver = Receiver::new(chunk);
    for (i, (path, data)) in files.iter().enumerate() {
        let meta = FileMeta {
            id: 0,
            kind: EntryKind::File,
            mode: 0o644,
            mtime_sec: 1,
            mtime_nsec: 2,
            size: data.len() as u64,
            path: path.to_vec(),
            link: vec![],
            owner: None,
            xattrs: Vec::new(),
            rdev: 0,
            hardlink: false,
        };
        tx.push(meta, i);
    }
    tx.close_input();
    let mut c2s: VecDeque<Frame> = VecDeque::new();
    let mut s2c: VecDeque<Frame> = VecDeque::new();
    let mut lane_q: Vec<VecDeque<Frame>> = vec![VecDeque::new(); lanes];
    let mut ack_q: Vec<VecDeque<Frame>> = vec![VecDeque::new(); lanes];
    let mut temp: HashMap<u64, (Vec<u8>, Vec<u8>)> = HashMap::new();
    let mut stored = HashMap::new();
    let mut finished_rx = false;
    for _step in 0..1_000_000 {
        if tx.is_finished() && finished_rx {
            break;
        }
        match rng.below(4) {
            0 => {
                while let Some(f) = tx.poll_frame() {
                    c2s.push_back(wire(&f));
                }
            }
            1 => {
                let lane = rng.below(lanes as u64) as usize;
                if lane_q[lane].len() < 4 {
                    if let Some(t) = tx.next_chunk() {
                        let d = &files[t.source].1[t.offset as usize..(t.offset + t.len as u64) as usize];
                        let hash = chunk_hash(d);
                        tx.on_chunk_sent(t.id, t.offset, hash);
                        let mut data = d.to_vec();
                        if !data.is_empty() && corrupt(&mut rng, t.id, t.retry) {
                            data[0] ^= 1;
                        }
                        let head = super::frame::ChunkHead { id: t.id, offset: t.offset };
                        lane_q[lane].push_back(wire(&Frame::Chunk { head, data, hash }));
                    }
                }
            }
            2 => {
                // Receiver: one control frame, or one chunk from a random lane.
                if let Some(f) = c2s.pop_front() {
                    match f {
                        Frame::File(m) => {
                            rx.on_file(&m).unwrap();
                            temp.insert(m.id, (m.path.clone(), vec![0u8; m.size as usize]));
                            s2c.push_back(wire(&rx.on_opened(m.id)));
                        }
                        Frame::FileEnd { id, digest } => match rx.on_file_end(id, digest).unwrap() {
                            Next::Finalize(id) => {
                                let (p, d) = temp.remove(&id).unwrap();
                                stored.insert(p, d);
                                s2c.push_back(wire(&rx.on_finalized(id)));
                            }
                            Next::Fail(fr) => {
                                if let Frame::FileFailed { id, .. } = fr {
                                    rx.forget(id);
                                }
                                s2c.push_back(wire(&fr));
                            }
                            Next::Wait => {}
                        },
                        Frame::FileAbort { id, .. } => {
                            rx.on_file_abort(id).unwrap();
                            temp.remove(&id);
                        }
                        Frame::Done { files } => rx.on_done(files).unwrap(),
                        other => panic!("unexpected {other:?}"),
                    }
                    finished_rx = rx.is_complete();
                } else {
                    let lane = rng.below(lanes as u64) as usize;
                    if let Some(Frame::Chunk { head, data, hash }) = lane_q[lane].pop_front() {
                        let plan = rx.on_chunk_head(head.id, head.offset, data.len() as u64).unwrap();
                        let ok = plan == ChunkPlan::Store && chunk_hash(&data) == hash;
                        if ok {
                            let (_, buf) = temp.get_mut(&head.id).unwrap();
                            buf[head.offset as usize..head.offset as usize + data.len()].copy_from_slice(&data);
                        }
                        let (status, next) = rx.on_chunk_checked(head.id, head.offset, hash, ok);
                        ack_q[lane].push_back(wire(&Frame::ChunkAck { id: head.id, offset: head.offset, status }));
                        match next {
                            Next::Finalize(id) => {
                                let (p, d) = temp.remove(&id).unwrap();
                                stored.insert(p, d);
                                s2c.push_back(wire(&rx.on_finalized(id)));
                            }
                            Next::Fail(fr) => {
                                if let Frame::FileFailed { id, .. } = fr {
                                    rx.forget(id);
                                }
                                s2c.push_back(wire(&fr));
                            }
                            Next::Wait => {}
                        }
                        finished_rx = rx.is_complete();
                    }
                }
            }
            _ => {
                if let Some(f) = s2c.pop_front() {
                    tx.on_frame(&f).unwrap();
                }
                let lane = rng.below(lanes as u64) as usize;
                if let Some(Frame::ChunkAck { id, offset, status }) = ack_q[lane].pop_front() {
                    tx.on_chunk_ack(id, offset, status);
                }
            }
        }
    }
    assert!(tx.is_finished() && finished_rx, "session did not settle (seed {seed})");
    let failures = tx.failures().iter().map(|f| (f.path.clone(), f.code)).collect();
    Outcome { stored, failures, retransmitted: tx.stats().retransmitted_chunks }
}

fn sample_files(seed: u64) -> Vec<(&'static [u8], Vec<u8>)> {
    let mut rng = Rng(seed);
    let names: [&'static [u8]; 6] = [b"a", b"dir/b", b"dir/sub/c", b"empty", b"odd \n\xff", b"big"];
    let sizes = [1usize, 4096, 10_000, 0, 777, 100_003];
    names.iter().zip(sizes).map(|(n, s)| (*n, (0..s).map(|_| rng.next() as u8).collect())).collect()
}

#[test]
fn early_done_goes_out_once_all_is_announced_and_the_end_waits_for_every_file() {
    let meta = |size| FileMeta {
        id: 0,
        kind: EntryKind::File,
        mode: 0o644,
        mtime_sec: 1,
        mtime_nsec: 2,
        size,
        path: b"f".to_vec(),
        link: vec![],
        owner: None,
        xattrs: Vec::new(),
        rdev: 0,
        hardlink: false,
    };
    for early in [false, true] {
        let mut tx: Sender<()> = Sender::new(4096, 8);
        tx.set_early_done(early);
        tx.push(meta(10), ());
        tx.close_input();
        assert!(matches!(tx.poll_frame(), Some(Frame::File(_))));
        // Not settled yet: DONE only when negotiated.
        let next = tx.poll_frame();
        assert_eq!(matches!(next, Some(Frame::Done { files: 1 })), early, "early {early}: {next:?}");
        assert!(!tx.is_finished(), "early {early}: a file is still open");
        tx.on_frame(&Frame::FileReady { id: 0 }).unwrap();
        let t = tx.next_chunk().unwrap();
        tx.on_chunk_sent(t.id, t.offset, [7; 16]);
        tx.on_chunk_ack(t.id, t.offset, super::frame::AckStatus::Ok);
        assert!(matches!(tx.poll_frame(), Some(Frame::FileEnd { id: 0, .. })));
        assert!(!tx.is_finished());
        tx.on_frame(&Frame::FileDone { id: 0 }).unwrap();
        if !early {
            assert!(matches!(tx.poll_frame(), Some(Frame::Done { files: 1 })));
        }
        assert!(tx.poll_frame().is_none());
        assert!(tx.is_finished(), "early {early}: settled and DONE sent");
    }
}

#[test]
fn clean_sessions_deliver_every_file_exactly() {
    for seed in 1..40 {
        let files = sample_files(seed);
        let out = run(&files, 4096, 1 + (seed % 5) as usize, seed, &|_, _, _| false);
        assert!(out.failures.is_empty(), "seed {seed}: {:?}", out.failures);
        assert_eq!(out.retransmitted, 0);
        for (p, d) in &files {
            assert_eq!(out.stored.get(*p), Some(d), "seed {seed}: {}", String::from_utf8_lossy(p));
        }
    }
}

#[test]
fn corrupted_chunks_are_resent_and_files_still_arrive_intact() {
    for seed in 1..40 {
        let files = sample_files(seed);
        let out = run(&files, 4096, 3, seed, &|rng, _, retry| !retry && rng.below(5) == 0);
        assert!(out.failures.is_empty(), "seed {seed}: {:?}", out.failures);
        for (p, d) in &files {
            assert_eq!(out.stored.get(*p), Some(d), "seed {seed}");
        }
        assert!(out.retransmitted > 0, "seed {seed}: corruption was injected, so something was resent");
    }
}

#[test]
fn a_file_that_never_verifies_fails_loudly_and_is_never_stored() {
    let files = sample_files(7);
    // File id 5 is "big": corrupt every one of its chunks.
    let out = run(&files, 4096, 2, 7, &|_, id, _| id == 5);
    assert_eq!(out.failures, vec![(b"big".to_vec(), code::INTEGRITY)]);
    assert!(!out.stored.contains_key(&b"big"[..]));
    assert_eq!(out.stored.len(), files.len() - 1);
}

/// Announces one file of `size` bytes (id 0, chunks of 4096) from `tx` to a new
/// receiver; returns the receiver and the announcement.
fn announce_one(tx: &mut Sender<()>, size: u64) -> (Receiver, FileMeta) {
    let mut rx: Receiver = Receiver::new(4096);
    let meta = FileMeta {
        id: 0,
        kind: EntryKind::File,
        mode: 0o600,
        mtime_sec: 5,
        mtime_nsec: 0,
        size,
        path: b"f".to_vec(),
        link: vec![],
        owner: None,
        xattrs: Vec::new(),
        rdev: 0,
        hardlink: false,
    };
    tx.push(meta, ());
    tx.close_input();
    let Some(Frame::File(m)) = tx.poll_frame().map(|f| wire(&f)) else { panic!("FILE first") };
    rx.on_file(&m).unwrap();
    (rx, m)
}

#[test]
fn a_resumed_file_sends_only_the_missing_chunks() {
    let data: Vec<u8> = (0..10 * 4096 + 100).map(|i| (i * 31 % 251) as u8).collect();
    let mut tx: Sender<()> = Sender::new(4096, 8);
    tx.set_resume(true);
    let (mut rx, _) = announce_one(&mut tx, data.len() as u64);
    // The receiver's journal holds chunks 0, 1, 2, 5 and 10 (the short last
    // one) of this source, and chunk 7 of something else (another client's
    // interrupted push of a file with the same name, size and mtime).
    let mut have: Vec<(u32, [u8; 16])> = [0u32, 1, 2, 5, 10]
        .iter()
        .map(|&i| (i, chunk_hash(&data[i as usize * 4096..((i as usize + 1) * 4096).min(data.len())])))
        .collect();
    have.push((7, chunk_hash(b"not this source's chunk 7")));
    for f in rx.on_resumed(0, &have) {
        tx.on_frame(&wire(&f)).unwrap();
    }
    let mut sent = Vec::new();
    let mut next = Next::Wait;
    let mut late_ack = None;
    while let Some(t) = tx.next_chunk() {
        let d = &data[t.offset as usize..(t.offset + t.len as u64) as usize];
        // The sender checks what the journal claims against its source.
        if let Some(e) = t.expect.filter(|e| e.hash() == chunk_hash(d)) {
            assert!(tx.on_chunk_same(t.id, t.offset, e));
            continue;
        }
        tx.on_chunk_sent(t.id, t.offset, chunk_hash(d));
        assert_eq!(rx.on_chunk_head(t.id, t.offset, t.len as u64), Ok(ChunkPlan::Store));
        // Over a chunk the journal held: it no longer counts until it verifies.
        assert_eq!(rx.reclaim(t.id, t.offset), t.offset == 7 * 4096);
        let (status, n) = rx.on_chunk_checked(t.id, t.offset, chunk_hash(d), true);
        if n != Next::Wait {
            next = n;
        }
        sent.push(t.offset / 4096);
        if t.offset == 7 * 4096 {
            late_ack = Some((t.id, t.offset, status)); // acknowledged last, below
        } else {
            tx.on_chunk_ack(t.id, t.offset, status);
        }
    }
    assert_eq!(sent, vec![3, 4, 6, 7, 8, 9], "only the missing chunks and the foreign one are sent");
    // Every chunk is sent, but FILE_END waits for the resent claimed chunk's ack
    // (the receiver counted the journal's hash for it until then).
    let mut held = Vec::new();
    while let Some(f) = tx.poll_frame() {
        assert!(!matches!(f, Frame::FileEnd { .. }), "FILE_END overtook the resent chunk");
        held.push(f);
    }
    let (id, off, status) = late_ack.expect("chunk 7 was sent");
    tx.on_chunk_ack(id, off, status);
    assert_eq!(tx.stats().bytes_resumed, 4 * 4096 + 100, "what the journal held of this source");
    while let Some(f) = tx.poll_frame() {
        if let Frame::FileEnd { id, digest } = wire(&f) {
            next = rx.on_file_end(id, digest).unwrap();
        }
    }
    assert_eq!(next, Next::Finalize(0), "the whole-file digest matches");
    assert_eq!(tx.stats().bytes_resumed, 4 * 4096 + 100);
}

#[test]
fn delta_sends_only_changed_chunks_and_the_digest_covers_the_kept_ones() {
    let old: Vec<u8> = (0..8 * 4096 + 50).map(|i| (i * 7 % 253) as u8).collect();
    let mut new = old.clone();
    new[3 * 4096 + 9] ^= 1; // chunk 3 changed
    new.extend_from_slice(&[9u8; 5000]); // the short last chunk grows, and one more
    let mut tx: Sender<()> = Sender::new(4096, 8);
    tx.set_delta(true);
    let (mut rx, m) = announce_one(&mut tx, new.len() as u64);
    // The receiver seeds the chunks that lie within both sizes: 0..=7 (chunk 8 of
    // the new file is longer than what the old one holds there).
    let sums: Vec<(u32, [u8; 16])> =
        (0u32..8).map(|i| (i, chunk_hash(&old[i as usize * 4096..(i as usize + 1) * 4096]))).collect();
    for f in rx.on_seeded(0, &sums) {
        tx.on_frame(&wire(&f)).unwrap();
    }
    let (mut sent, mut same) = (Vec::new(), Vec::new());
    let mut next = Next::Wait;
    while let Some(t) = tx.next_chunk() {
        let d = &new[t.offset as usize..(t.offset + t.len as u64) as usize];
        let h = chunk_hash(d);
        if t.expect.map(|e| e.hash()) == Some(h) {
            tx.on_chunk_same(t.id, t.offset, t.expect.expect("checked"));
            same.push(t.offset / 4096);
            continue;
        }
        tx.on_chunk_sent(t.id, t.offset, h);
        let (_, n) = rx.on_chunk_checked(t.id, t.offset, h, true);
        if n != Next::Wait {
            next = n;
        }
        sent.push(t.offset / 4096);
    }
    assert_eq!(sent, vec![3, 8, 9]);
    assert_eq!(same, vec![0, 1, 2, 4, 5, 6, 7]);
    // FILE_SAME frames reach the receiver before FILE_END, in order.
    let mut saw_same = false;
    while let Some(f) = tx.poll_frame() {
        match wire(&f) {
            Frame::FileSame { id, chunks } => {
                saw_same = true;
                next = rx.on_file_same(id, &chunks).unwrap();
            }
            Frame::FileEnd { id, digest } => {
                assert!(saw_same);
                next = rx.on_file_end(id, digest).unwrap();
            }
            _ => {}
        }
    }
    assert_eq!(next, Next::Finalize(0), "the whole-file digest matches");
    assert_eq!(tx.stats().bytes_unchanged, 7 * 4096);
    // A FILE_SAME for a chunk the receiver never listed is a protocol error.
    let mut rx2: Receiver = Receiver::new(4096);
    rx2.on_file(&m).unwrap();
    rx2.on_seeded(0, &sums[..2]);
    assert!(rx2.on_file_same(0, &[5]).is_err());
}
