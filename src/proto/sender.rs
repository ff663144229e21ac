//! The sending side's state machine (protocol-spec §5.3–§5.6), free of I/O.
//!
//! The engine feeds it manifest entries, control frames from the receiver and the
//! outcome of every chunk it put on a lane; it answers with control frames to send
//! and chunks to send next. Chunks are handed out one at a time to whichever lane
//! asks, so a slow lane simply asks less often and never holds the others back.

use super::error::{code, ProtocolError};
use super::frame::{AckStatus, FileMeta, Frame, HASH_LEN};
use super::hash::file_digest;
use std::collections::{HashMap, VecDeque};

/// How many times one chunk is sent again after a hash mismatch before the file fails.
pub const MAX_CHUNK_RETRIES: u8 = 3;

/// One chunk a lane should read from the source and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkTask<S> {
    /// File id.
    pub id: u64,
    /// Offset of the chunk in the file.
    pub offset: u64,
    /// Number of data bytes.
    pub len: u32,
    /// The engine's handle of the source file.
    pub source: S,
    /// True when this is a retransmission.
    pub retry: bool,
    /// What the receiver says it holds here already. The lane hashes the
    /// source chunk first and, when it is the same, reports
    /// [`Sender::on_chunk_same`] instead of sending it.
    pub expect: Option<Expect>,
}

/// A chunk the receiver says it holds (its hash): checked against the source
/// before anything is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Delta (§5.13): the old file under the name holds it (FILE_SUMS); when
    /// equal, FILE_SAME tells the receiver to keep it.
    Old([u8; HASH_LEN]),
    /// Resume (§5.11): the partial file's journal holds it (FILE_HAVE); when
    /// equal nothing is said, the receiver counts it already. A journal whose
    /// chunk differs from this source (another client's interrupted push of a
    /// file with the same name, size and mtime) is simply overwritten.
    Resumed([u8; HASH_LEN]),
}

impl Expect {
    /// The hash the receiver holds.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        match self {
            Expect::Old(h) | Expect::Resumed(h) => *h,
        }
    }
}

/// A file that did not arrive, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Destination path (wire form).
    pub path: Vec<u8>,
    /// Error code (protocol-spec §7).
    pub code: u16,
    /// Human-readable reason.
    pub message: String,
}

/// Counters the sender keeps for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Entries announced so far.
    pub announced: u64,
    /// Entries the receiver confirmed with FILE_DONE.
    pub done: u64,
    /// Sum of sizes of all pushed files.
    pub bytes_total: u64,
    /// Data bytes of confirmed files.
    pub bytes_done: u64,
    /// Chunks sent again after a hash mismatch.
    pub retransmitted_chunks: u64,
    /// Data bytes the receiver already had (resume): not sent again.
    pub bytes_resumed: u64,
    /// Files the receiver already had in place (resume): not sent at all.
    pub files_in_place: u64,
    /// Data bytes the receiver's old files already held (delta): not sent.
    pub bytes_unchanged: u64,
}

struct FileTx<S> {
    meta: FileMeta,
    source: S,
    ready: bool,
    next_offset: u64,
    hashes: Vec<Option<[u8; HASH_LEN]>>,
    hashed: usize,
    retries: HashMap<u64, u8>,
    end_sent: bool,
    candidates: HashMap<u32, Expect>,
    /// Chunks FILE_HAVE listed that were sent anyway (the source differs): the
    /// receiver counts the journal's hash until the new chunk is verified, so
    /// FILE_END waits for their acknowledgement.
    resent_claims: std::collections::HashSet<u32>,
    /// Chunks FILE_HAVE listed.
    claimed: std::collections::HashSet<u32>,
}

/// Sender state machine; `S` is the engine's handle for a source file.
pub struct Sender<S> {
    chunk_size: u64,
    window: usize,
    next_id: u64,
    queued: VecDeque<(FileMeta, S)>,
    files: HashMap<u64, FileTx<S>>,
    ready: VecDeque<u64>,
    retries: VecDeque<(u64, u64)>,
    outbox: VecDeque<Frame>,
    input_closed: bool,
    done_sent: bool,
    failures: Vec<Failure>,
    /// Hard links are announced (bit 13): paths of the entries that failed, so
    /// a link to one goes as a file of its own instead (§4.7).
    failed_paths: Option<std::collections::HashSet<Vec<u8>>>,
    failed: u64,
    stats: SenderStats,
    resume: bool,
    early_done: bool,
    delta: bool,
    /// Sync (§5.15): entries to remove once every entry settled, in the order
    /// to remove them, and REMOVE frames not answered yet.
    removals: VecDeque<Vec<u8>>,
    removing: usize,
    removal: Removal,
}

/// Where the removals of a sync stand (§5.15).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    /// Entries removed, as the receiver counted.
    pub removed: u64,
    /// Entries the receiver could not remove, and the first reason.
    pub failed: u64,
    /// The first reason the receiver gave for one it could not remove.
    pub message: String,
    /// Entries left alone because a file of the run failed (nothing is
    /// deleted after a failure).
    pub skipped: u64,
}

/// Most entries one REMOVE names (§4.24).
pub const REMOVE_BATCH: usize = 4096;
/// A REMOVE is cut once its paths take this many bytes (§4.24): with paths of
/// up to 32 KiB it stays under the 1 MiB control frame limit.
pub const REMOVE_BYTES: usize = 256 << 10;

/// Keep at most this many failures with their reasons; the rest are only counted.
const MAX_FAILURES_KEPT: usize = 1000;

impl<S: Clone> Sender<S> {
    /// A sender for chunks of `chunk_size` bytes that keeps at most `window` files
    /// announced and not yet confirmed.
    pub fn new(chunk_size: u64, window: usize) -> Self {
        assert!(chunk_size > 0 && window > 0);
        Sender {
            chunk_size,
            window,
            next_id: 0,
            queued: VecDeque::new(),
            files: HashMap::new(),
            ready: VecDeque::new(),
            retries: VecDeque::new(),
            outbox: VecDeque::new(),
            input_closed: false,
            done_sent: false,
            failures: Vec::new(),
            failed_paths: None,
            failed: 0,
            stats: SenderStats::default(),
            resume: false,
            early_done: false,
            delta: false,
            removals: VecDeque::new(),
            removing: 0,
            removal: Removal::default(),
        }
    }

    /// Sync (§5.15): asks the receiver what it holds under `root` (LIST).
    pub fn request_listing(&mut self, root: Vec<u8>, sums: bool) {
        self.outbox.push_back(Frame::List { root, sums });
    }

    /// Sync (§5.15): entries to remove once every entry of the session settled
    /// without a failure, in the order given (contents before their
    /// directory). DONE then waits for their REMOVED answers.
    pub fn set_removals(&mut self, paths: Vec<Vec<u8>>) {
        if !paths.is_empty() {
            self.early_done = false;
        }
        self.removals.extend(paths);
    }

    /// What the removals came to.
    pub fn removal(&self) -> &Removal {
        &self.removal
    }

    /// The session negotiated resume (protocol-spec §5.11): the receiver may answer
    /// an announcement with FILE_HAVE, or with FILE_DONE when the file is in place.
    pub fn set_resume(&mut self, on: bool) {
        self.resume = on;
    }

    /// The session negotiated delta (protocol-spec §5.13): the receiver may
    /// answer an announcement with FILE_SUMS.
    pub fn set_delta(&mut self, on: bool) {
        self.delta = on;
    }

    /// The session negotiated early DONE (protocol-spec §4.13): DONE goes out once
    /// every entry is announced, not once every entry is settled.
    pub fn set_early_done(&mut self, on: bool) {
        self.early_done = on;
    }

    /// Adds an entry to the manifest; its `id` is assigned here and returned.
    pub fn push(&mut self, mut meta: FileMeta, source: S) -> u64 {
        meta.id = self.next_id;
        self.next_id += 1;
        self.stats.bytes_total += meta.size;
        self.queued.push_back((meta, source));
        self.next_id - 1
    }

    /// Hard links will be pushed (entries with `hardlink` set, their target's
    /// path in `link` and their real size): each is announced once every entry
    /// that carries data before it settled, so its target is in place; a link
    /// whose target failed goes as a file of its own (§4.7).
    pub fn with_hardlinks(&mut self) {
        self.failed_paths = Some(Default::default());
    }

    /// No more entries will be pushed.
    pub fn close_input(&mut self) {
        self.input_closed = true;
    }

    /// Entries pushed but not yet announced (the engine bounds this to bound memory).
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// The next control frame to send, if any: FILE_END and FILE_ABORT first, then
    /// FILE announcements while the window allows, then DONE once all is settled
    /// (with early DONE: once all is announced).
    pub fn poll_frame(&mut self) -> Option<Frame> {
        if let Some(f) = self.outbox.pop_front() {
            return Some(f);
        }
        let link_waits =
            self.queued.front().is_some_and(|(m, _)| m.hardlink) && self.files.values().any(|f| f.meta.carries_data());
        if self.files.len() < self.window && !link_waits {
            if let Some((mut meta, source)) = self.queued.pop_front() {
                if meta.hardlink {
                    if self.failed_paths.as_ref().is_some_and(|fp| fp.contains(&meta.link)) {
                        (meta.hardlink, meta.link) = (false, Vec::new());
                    } else {
                        self.stats.bytes_total -= meta.size;
                        meta.size = 0;
                    }
                }
                let n = meta.size.div_ceil(self.chunk_size) as usize;
                let frame = Frame::File(meta.clone());
                self.stats.announced += 1;
                self.files.insert(
                    meta.id,
                    FileTx {
                        meta,
                        source,
                        ready: false,
                        next_offset: 0,
                        hashes: vec![None; n],
                        hashed: 0,
                        retries: HashMap::new(),
                        end_sent: false,
                        candidates: HashMap::new(),
                        resent_claims: Default::default(),
                        claimed: Default::default(),
                    },
                );
                return Some(frame);
            }
        }
        let all_settled = self.input_closed && self.queued.is_empty() && self.files.is_empty();
        if all_settled && !self.removals.is_empty() {
            if self.failed > 0 {
                // A run with failures deletes nothing (rsync's --delete-after).
                self.removal.skipped += self.removals.len() as u64;
                self.removals.clear();
            } else {
                // Cut by count and by bytes, well inside the control frame limit.
                let (mut n, mut bytes) = (0, 0);
                while n < self.removals.len().min(REMOVE_BATCH) && (n == 0 || bytes < REMOVE_BYTES) {
                    bytes += 2 + self.removals[n].len();
                    n += 1;
                }
                let paths: Vec<Vec<u8>> = self.removals.drain(..n).collect();
                self.removing += 1;
                return Some(Frame::Remove { paths });
            }
        }
        if self.removing > 0 {
            return None;
        }
        let settled = self.files.is_empty() || self.early_done;
        if self.input_closed && self.queued.is_empty() && settled && !self.done_sent {
            self.done_sent = true;
            return Some(Frame::Done { files: self.stats.announced });
        }
        None
    }

    /// Handles a file-level control frame from the receiver: FILE_READY, FILE_DONE
    /// or FILE_FAILED. Other frames are the engine's business.
    pub fn on_frame(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        match *frame {
            Frame::FileReady { id } => {
                let f = self.files.get_mut(&id).ok_or(ProtocolError::UnknownFile(id))?;
                if f.ready || !f.meta.carries_data() {
                    return Err(ProtocolError::Unexpected("FILE_READY"));
                }
                f.ready = true;
                if f.hashed == f.hashes.len() {
                    // Empty, or every chunk already at the receiver (resume).
                    self.maybe_end(id);
                } else {
                    self.ready.push_back(id);
                }
                Ok(())
            }
            Frame::FileDone { id } => {
                let f = self.files.get(&id).ok_or(ProtocolError::UnknownFile(id))?;
                let in_place = f.meta.carries_data() && !f.ready;
                if in_place && !self.resume {
                    return Err(ProtocolError::Unexpected("FILE_DONE for a file never made ready"));
                }
                if !in_place && f.meta.carries_data() && f.hashed < f.hashes.len() {
                    return Err(ProtocolError::Unexpected("FILE_DONE before all chunks were sent"));
                }
                let f = self.files.remove(&id).expect("checked above");
                if in_place {
                    self.stats.files_in_place += 1;
                }
                self.stats.done += 1;
                self.stats.bytes_done += f.meta.size;
                Ok(())
            }
            Frame::FileHave { id, ref chunks } => {
                let cs = self.chunk_size;
                let f = self.files.get_mut(&id).ok_or(ProtocolError::UnknownFile(id))?;
                if !self.resume || f.ready || !f.meta.carries_data() {
                    return Err(ProtocolError::Unexpected("FILE_HAVE"));
                }
                // Not trusted yet: each is hashed from the source before it is
                // skipped (see [`Expect::Resumed`]).
                for &(idx, hash) in chunks {
                    if idx as usize >= f.hashes.len() {
                        return Err(ProtocolError::BadChunk { id, offset: idx as u64 * cs, len: 0 });
                    }
                    f.candidates.insert(idx, Expect::Resumed(hash));
                    f.claimed.insert(idx);
                }
                Ok(())
            }
            Frame::FileSums { id, ref chunks } => {
                let f = self.files.get_mut(&id).ok_or(ProtocolError::UnknownFile(id))?;
                if !self.delta || f.ready || !f.meta.carries_data() {
                    return Err(ProtocolError::Unexpected("FILE_SUMS"));
                }
                for &(idx, hash) in chunks {
                    if idx as usize >= f.hashes.len() {
                        return Err(ProtocolError::BadChunk { id, offset: idx as u64 * self.chunk_size, len: 0 });
                    }
                    f.candidates.insert(idx, Expect::Old(hash));
                }
                Ok(())
            }
            Frame::Removed { removed, failed, ref message } => {
                if self.removing == 0 {
                    return Err(ProtocolError::Unexpected("REMOVED without a REMOVE"));
                }
                self.removing -= 1;
                self.removal.removed += u64::from(removed);
                self.removal.failed += u64::from(failed);
                if self.removal.message.is_empty() {
                    self.removal.message = message.clone();
                }
                Ok(())
            }
            Frame::FileFailed { id, code, ref message } => {
                // A FILE_FAILED may cross our own FILE_ABORT: then the file is gone already.
                if let Some(f) = self.files.remove(&id) {
                    self.record_failure(f.meta.path, code, message.clone());
                } else if id >= self.next_id {
                    return Err(ProtocolError::UnknownFile(id));
                }
                Ok(())
            }
            _ => Err(ProtocolError::Unexpected("control frame")),
        }
    }

    /// The next chunk to send on whichever lane asks: retransmissions first, then
    /// chunks of ready files in announcement order.
    pub fn next_chunk(&mut self) -> Option<ChunkTask<S>> {
        while let Some((id, offset)) = self.retries.pop_front() {
            if let Some(f) = self.files.get(&id) {
                let len = (f.meta.size - offset).min(self.chunk_size) as u32;
                return Some(ChunkTask { id, offset, len, source: f.source.clone(), retry: true, expect: None });
            }
        }
        while let Some(&id) = self.ready.front() {
            let Some(f) = self.files.get_mut(&id) else {
                self.ready.pop_front();
                continue;
            };
            // Skip what the receiver already has (resume).
            while f.next_offset < f.meta.size && f.hashes[(f.next_offset / self.chunk_size) as usize].is_some() {
                f.next_offset += self.chunk_size;
            }
            if f.next_offset >= f.meta.size {
                self.ready.pop_front();
                continue;
            }
            let offset = f.next_offset;
            let len = (f.meta.size - offset).min(self.chunk_size);
            f.next_offset += len;
            if f.next_offset >= f.meta.size {
                self.ready.pop_front();
            }
            let expect = f.candidates.remove(&((offset / self.chunk_size) as u32));
            return Some(ChunkTask { id, offset, len: len as u32, source: f.source.clone(), retry: false, expect });
        }
        None
    }

    /// True when [`Sender::next_chunk`] would return a chunk.
    pub fn has_chunk(&self) -> bool {
        !self.retries.is_empty() || !self.ready.is_empty()
    }

    /// Records the hash of a chunk a lane has sent. If a retransmission hashes
    /// differently from the first sending, the source changed under us and the file
    /// is aborted.
    pub fn on_chunk_sent(&mut self, id: u64, offset: u64, hash: [u8; HASH_LEN]) {
        let Some(f) = self.files.get_mut(&id) else { return };
        let idx = (offset / self.chunk_size) as usize;
        let Some(slot) = f.hashes.get_mut(idx) else { return };
        match slot {
            None => {
                *slot = Some(hash);
                f.hashed += 1;
                if f.claimed.contains(&(idx as u32)) {
                    f.resent_claims.insert(idx as u32);
                }
                self.maybe_end(id);
            }
            Some(prev) if *prev != hash => {
                let msg = "source file changed while it was being sent".to_string();
                self.abort(id, code::SOURCE_CHANGED, msg);
            }
            Some(_) => {}
        }
    }

    /// Delta: a lane found the source chunk equal to what the receiver's old
    /// file holds (its hash is `hash`): it is not sent, and FILE_SAME tells the
    /// receiver to keep it.
    /// Returns whether it counted (false: the file is gone, say aborted).
    pub fn on_chunk_same(&mut self, id: u64, offset: u64, expect: Expect) -> bool {
        let cs = self.chunk_size;
        let Some(f) = self.files.get_mut(&id) else { return false };
        let idx = (offset / cs) as usize;
        let Some(slot) = f.hashes.get_mut(idx) else { return false };
        if slot.is_some() {
            return false;
        }
        *slot = Some(expect.hash());
        f.hashed += 1;
        let len = (f.meta.size - offset).min(cs);
        match expect {
            Expect::Old(_) => {
                self.stats.bytes_unchanged += len;
                self.outbox.push_back(Frame::FileSame { id, chunks: vec![idx as u32] });
            }
            Expect::Resumed(_) => self.stats.bytes_resumed += len,
        }
        self.maybe_end(id);
        true
    }

    /// Handles CHUNK_ACK. A bad hash schedules the chunk again, up to
    /// [`MAX_CHUNK_RETRIES`] times; past that the file fails loudly.
    pub fn on_chunk_ack(&mut self, id: u64, offset: u64, status: AckStatus) {
        let cs = self.chunk_size;
        let Some(f) = self.files.get_mut(&id) else { return };
        if status != AckStatus::BadHash {
            if status == AckStatus::Ok && f.resent_claims.remove(&((offset / cs) as u32)) {
                self.maybe_end(id);
            }
            return;
        }
        let n = f.retries.entry(offset).or_insert(0);
        *n += 1;
        if *n > MAX_CHUNK_RETRIES {
            let msg = format!("chunk at offset {offset} failed verification {} times", *n);
            self.abort(id, code::INTEGRITY, msg);
        } else {
            self.stats.retransmitted_chunks += 1;
            self.retries.push_back((id, offset));
        }
    }

    /// Queues a keepalive (NOTICE `KEEPALIVE`, §4.19): this end is busy, not gone.
    pub fn keep_alive(&mut self) {
        self.outbox.push_back(Frame::Notice { code: code::KEEPALIVE, message: String::new() });
    }

    /// An announced entry still open: its manifest record and source handle.
    pub fn open_file(&self, id: u64) -> Option<(&FileMeta, &S)> {
        self.files.get(&id).map(|f| (&f.meta, &f.source))
    }

    /// The engine could not read a source file: abort it at the receiver.
    pub fn on_source_error(&mut self, id: u64, code: u16, message: String) {
        self.abort(id, code, message);
    }

    /// True when every entry is settled and DONE has been handed out.
    pub fn is_finished(&self) -> bool {
        self.done_sent && self.outbox.is_empty() && self.files.is_empty() && self.removing == 0
    }

    /// Files that failed, with their reasons (the first 1000).
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// How many files failed in all.
    pub fn failed_count(&self) -> u64 {
        self.failed
    }

    /// Counters for reports.
    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    fn maybe_end(&mut self, id: u64) {
        let Some(f) = self.files.get_mut(&id) else { return };
        if f.end_sent || f.hashed < f.hashes.len() || !f.resent_claims.is_empty() {
            return;
        }
        f.end_sent = true;
        let digest = file_digest(f.hashes.iter().map(|h| h.as_ref().expect("all chunks hashed")));
        self.outbox.push_back(Frame::FileEnd { id, digest });
    }

    fn abort(&mut self, id: u64, code: u16, message: String) {
        if let Some(f) = self.files.remove(&id) {
            self.outbox.push_back(Frame::FileAbort { id, code, message: message.clone() });
            self.record_failure(f.meta.path, code, message);
        }
    }

    fn record_failure(&mut self, path: Vec<u8>, code: u16, message: String) {
        self.failed += 1;
        if let Some(fp) = &mut self.failed_paths {
            fp.insert(path.clone());
        }
        if self.failures.len() < MAX_FAILURES_KEPT {
            self.failures.push(Failure { path, code, message });
        }
    }
}
