//! The receiving side's state machine (protocol-spec §5.3–§5.6), free of I/O.
//!
//! It checks every announcement and chunk against what was negotiated, keeps which
//! chunks of each file verified, and says when a file may be put in place: only
//! after every chunk verified, FILE_END arrived and the whole-file digest matches.

use super::error::{code, ProtocolError};
use super::frame::{AckStatus, EntryKind, FileMeta, Frame, HASH_LEN};
use super::hash::file_digest;
use super::path::components;
use std::collections::{BTreeMap, HashMap};

/// What to do with a chunk whose head was just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPlan {
    /// Verify the data and store it at the offset.
    Store,
    /// The file was aborted or failed: read and drop the data, ack `Dropped`.
    Drop,
}

/// What the engine must do next for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing yet.
    Wait,
    /// Every chunk verified and the digest matched: put the file in place, then
    /// call [`Receiver::on_finalized`].
    Finalize(u64),
    /// The file cannot be completed: discard its temporary data and send this frame.
    Fail(Frame),
}

struct FileRx<H> {
    /// The engine's handle of the file being written (see [`Receiver::attach`]).
    handle: Option<H>,
    size: u64,
    ready: bool,
    /// Chunks of the file, by index: memory grows with the chunks that arrived,
    /// never with the size a peer announced.
    nchunks: u64,
    verified: BTreeMap<u32, [u8; HASH_LEN]>,
    end: Option<[u8; HASH_LEN]>,
    finalizing: bool,
    /// Delta: hashes of the chunks seeded from the old file, until the sender
    /// confirms them (FILE_SAME) or sends them.
    candidates: HashMap<u32, [u8; HASH_LEN]>,
}

/// Receiver state machine for one session; `H` is the engine's handle of a
/// file being written, kept with the file's state (one map, as [`Sender`]'s
/// source handles).
///
/// [`Sender`]: super::sender::Sender
pub struct Receiver<H = ()> {
    chunk_size: u64,
    next_id: u64,
    files: HashMap<u64, FileRx<H>>,
    done: Option<u64>,
    announced: u64,
    finished: u64,
    bytes_finished: u64,
    sync: bool,
    window: usize,
}

impl<H> Receiver<H> {
    /// The session negotiated sync (§5.15): a directory entry may name the
    /// root itself (its time is set at the end).
    pub fn set_sync(&mut self, on: bool) {
        self.sync = on;
    }

    /// W of the session (§5.3): [`super::FILE_WINDOW`] unless bit 8 widened it.
    pub fn set_window(&mut self, w: usize) {
        self.window = w;
    }

    /// A receiver for the negotiated chunk size.
    pub fn new(chunk_size: u64) -> Self {
        assert!(chunk_size > 0);
        Receiver {
            chunk_size,
            next_id: 0,
            files: HashMap::new(),
            done: None,
            announced: 0,
            finished: 0,
            bytes_finished: 0,
            sync: false,
            window: super::FILE_WINDOW,
        }
    }

    /// Registers a FILE announcement (§5.3): ids strictly increase, paths are valid.
    /// The engine then creates the entry and calls `on_opened`, `on_created` or `on_failed`.
    pub fn on_file(&mut self, meta: &FileMeta) -> Result<(), ProtocolError> {
        if self.done.is_some() {
            return Err(ProtocolError::Unexpected("FILE after DONE"));
        }
        if meta.id < self.next_id {
            return Err(ProtocolError::FileIdOrder(meta.id));
        }
        let comps = components(&meta.path)?;
        if comps.is_empty() && !(self.sync && meta.kind == EntryKind::Dir) {
            return Err(ProtocolError::BadPath("an entry cannot name the root itself".into()));
        }
        if self.files.len() >= self.window {
            return Err(ProtocolError::Window);
        }
        let n = if meta.kind == EntryKind::File { meta.size.div_ceil(self.chunk_size) } else { 0 };
        // Chunk indexes are u32 and u32::MAX marks a journal's seal (§5.11).
        if n >= u64::from(u32::MAX) {
            return Err(ProtocolError::TooManyChunks(meta.size));
        }
        // The last id a u64 holds cannot be followed by another: refusing it keeps
        // ids strictly increasing (a wrapped next id would let ids repeat).
        self.next_id = meta.id.checked_add(1).ok_or(ProtocolError::FileIdOrder(meta.id))?;
        self.announced += 1;
        self.files.insert(
            meta.id,
            FileRx {
                handle: None,
                size: meta.size,
                ready: false,
                nchunks: n,
                verified: BTreeMap::new(),
                end: None,
                finalizing: false,
                candidates: HashMap::new(),
            },
        );
        Ok(())
    }

    /// Keeps the engine's handle `h` with open file `id` (it goes when the file
    /// settles: take it first to act on it).
    pub fn attach(&mut self, id: u64, h: H) {
        if let Some(f) = self.files.get_mut(&id) {
            f.handle = Some(h);
        }
    }

    /// The engine's handle of open file `id`.
    pub fn handle(&self, id: u64) -> Option<&H> {
        self.files.get(&id).and_then(|f| f.handle.as_ref())
    }

    /// Takes the engine's handle of file `id` (to place or discard the file).
    pub fn take_handle(&mut self, id: u64) -> Option<H> {
        self.files.get_mut(&id).and_then(|f| f.handle.take())
    }

    /// Takes every handle still held (the session ends: keep or discard them).
    pub fn take_handles(&mut self) -> Vec<H> {
        self.files.values_mut().filter_map(|f| f.handle.take()).collect()
    }

    /// The engine opened the temporary file: the answer is FILE_READY.
    pub fn on_opened(&mut self, id: u64) -> Frame {
        if let Some(f) = self.files.get_mut(&id) {
            f.ready = true;
        }
        Frame::FileReady { id }
    }

    /// Resume (protocol-spec §5.11): the engine found a partial file whose journal
    /// holds these verified chunks. They count as verified; the answer is FILE_HAVE
    /// (as many as needed) and then FILE_READY.
    pub fn on_resumed(&mut self, id: u64, have: &[(u32, [u8; HASH_LEN])]) -> Vec<Frame> {
        let mut out = Vec::new();
        if let Some(f) = self.files.get_mut(&id) {
            let mut kept = Vec::new();
            for &(idx, h) in have {
                if u64::from(idx) < f.nchunks && !f.verified.contains_key(&idx) {
                    f.verified.insert(idx, h);
                    kept.push((idx, h));
                }
            }
            for part in kept.chunks(super::MAX_HAVE_PER_FRAME) {
                out.push(Frame::FileHave { id, chunks: part.to_vec() });
            }
        }
        out.push(self.on_opened(id));
        out
    }

    /// Delta (protocol-spec §5.13): the engine seeded the temporary file with the
    /// chunks of the old file listed in `sums`. They are not verified yet: the
    /// answer is FILE_SUMS (as many as needed) and then FILE_READY.
    pub fn on_seeded(&mut self, id: u64, sums: &[(u32, [u8; HASH_LEN])]) -> Vec<Frame> {
        let mut out = Vec::new();
        if let Some(f) = self.files.get_mut(&id) {
            let n = f.nchunks;
            f.candidates = sums.iter().copied().filter(|&(i, _)| u64::from(i) < n).collect();
            let mut listed: Vec<_> = f.candidates.iter().map(|(&i, &h)| (i, h)).collect();
            listed.sort_unstable_by_key(|c| c.0);
            for part in listed.chunks(super::MAX_HAVE_PER_FRAME) {
                out.push(Frame::FileSums { id, chunks: part.to_vec() });
            }
        }
        out.push(self.on_opened(id));
        out
    }

    /// Delta: the sender found these seeded chunks equal to its source; they
    /// count as verified with the hashes listed in FILE_SUMS.
    pub fn on_file_same(&mut self, id: u64, chunks: &[u32]) -> Result<Next, ProtocolError> {
        let Some(f) = self.files.get_mut(&id) else {
            return if id < self.next_id { Ok(Next::Wait) } else { Err(ProtocolError::UnknownFile(id)) };
        };
        for i in chunks {
            let h =
                f.candidates.remove(i).ok_or(ProtocolError::Unexpected("FILE_SAME for a chunk not in FILE_SUMS"))?;
            if f.verified.insert(*i, h).is_some() {
                return Err(ProtocolError::Unexpected("FILE_SAME for a chunk that was sent"));
            }
        }
        Ok(self.check_complete(id))
    }

    /// The engine created a directory or symlink: the entry is done.
    pub fn on_created(&mut self, id: u64) -> Frame {
        self.files.remove(&id);
        self.finished += 1;
        Frame::FileDone { id }
    }

    /// The engine could not complete an open file: the answer is FILE_FAILED,
    /// once it is queued the engine calls [`Receiver::forget`] (until then the
    /// file keeps the session from completing, so SESSION_DONE cannot pass it).
    pub fn failing(&mut self, id: u64, code: u16, message: String) -> Frame {
        if let Some(f) = self.files.get_mut(&id) {
            f.finalizing = true;
        }
        Frame::FileFailed { id, code, message }
    }

    /// A failed file's FILE_FAILED is queued: it no longer counts as open.
    pub fn forget(&mut self, id: u64) {
        self.files.remove(&id);
    }

    /// The engine could not create or complete the entry: the answer is FILE_FAILED.
    pub fn on_failed(&mut self, id: u64, code: u16, message: String) -> Frame {
        self.files.remove(&id);
        Frame::FileFailed { id, code, message }
    }

    /// Checks a chunk head against the file and the chunk grid (§5.4).
    pub fn on_chunk_head(&self, id: u64, offset: u64, len: u64) -> Result<ChunkPlan, ProtocolError> {
        let Some(f) = self.files.get(&id) else {
            return if id < self.next_id { Ok(ChunkPlan::Drop) } else { Err(ProtocolError::UnknownFile(id)) };
        };
        if !f.ready {
            return Err(ProtocolError::NotReady(id));
        }
        let expected = f.size.saturating_sub(offset).min(self.chunk_size);
        if offset % self.chunk_size != 0 || offset >= f.size || len != expected {
            return Err(ProtocolError::BadChunk { id, offset, len });
        }
        Ok(ChunkPlan::Store)
    }

    /// A chunk is about to be written over a chunk that counted as verified
    /// (its resumed copy differed from the sender's source, §4.18): it no
    /// longer counts until the new one verifies. True when it had counted, so
    /// the engine first retracts the journal's record of it.
    pub fn reclaim(&mut self, id: u64, offset: u64) -> bool {
        let idx = offset / self.chunk_size;
        match (self.files.get_mut(&id), u32::try_from(idx)) {
            (Some(f), Ok(i)) => f.verified.remove(&i).is_some(),
            _ => false,
        }
    }

    /// Records the outcome of a stored chunk's verification; returns the ack status
    /// and whether the file can now be finalized.
    pub fn on_chunk_checked(&mut self, id: u64, offset: u64, hash: [u8; HASH_LEN], ok: bool) -> (AckStatus, Next) {
        let Some(f) = self.files.get_mut(&id) else { return (AckStatus::Dropped, Next::Wait) };
        if !ok {
            return (AckStatus::BadHash, Next::Wait);
        }
        let idx = offset / self.chunk_size;
        if idx < f.nchunks {
            f.verified.insert(idx as u32, hash);
        }
        (AckStatus::Ok, self.check_complete(id))
    }

    /// Handles FILE_END with the sender's whole-file digest.
    pub fn on_file_end(&mut self, id: u64, digest: [u8; HASH_LEN]) -> Result<Next, ProtocolError> {
        let Some(f) = self.files.get_mut(&id) else {
            return if id < self.next_id { Ok(Next::Wait) } else { Err(ProtocolError::UnknownFile(id)) };
        };
        if f.end.is_some() || !f.ready {
            return Err(ProtocolError::Unexpected("FILE_END"));
        }
        f.end = Some(digest);
        Ok(self.check_complete(id))
    }

    /// Handles FILE_ABORT: returns the file's handle if it was still open, so
    /// the engine discards its temporary data.
    pub fn on_file_abort(&mut self, id: u64) -> Result<Option<H>, ProtocolError> {
        if id >= self.next_id {
            return Err(ProtocolError::UnknownFile(id));
        }
        Ok(self.files.remove(&id).and_then(|f| f.handle))
    }

    /// The engine put the file in place: the answer is FILE_DONE.
    pub fn on_finalized(&mut self, id: u64) -> Frame {
        if let Some(f) = self.files.remove(&id) {
            self.finished += 1;
            self.bytes_finished += f.size;
        }
        Frame::FileDone { id }
    }

    /// Handles DONE: the sender announced `files` entries in all.
    pub fn on_done(&mut self, files: u64) -> Result<(), ProtocolError> {
        if self.done.is_some() || files != self.announced {
            return Err(ProtocolError::Unexpected("DONE with a wrong file count"));
        }
        self.done = Some(files);
        Ok(())
    }

    /// True once DONE arrived and no entry is open.
    pub fn is_complete(&self) -> bool {
        self.done.is_some() && self.files.is_empty()
    }

    /// Entries completed and data bytes of completed files.
    pub fn finished(&self) -> (u64, u64) {
        (self.finished, self.bytes_finished)
    }

    /// Ids of the entries still open (to clean up after a failed session).
    pub fn open_ids(&self) -> Vec<u64> {
        self.files.keys().copied().collect()
    }

    fn check_complete(&mut self, id: u64) -> Next {
        let Some(f) = self.files.get_mut(&id) else { return Next::Wait };
        let Some(end) = f.end else { return Next::Wait };
        if f.finalizing || (f.verified.len() as u64) < f.nchunks {
            return Next::Wait;
        }
        // Every index below nchunks is present, so the map's order is the file's.
        let digest = file_digest(f.verified.values());
        if digest != end {
            // Still listed until the engine has queued the FILE_FAILED
            // ([`Receiver::forget`]): the session cannot end before it goes out.
            f.finalizing = true;
            let message = "whole-file digest does not match the sender's".to_string();
            return Next::Fail(Frame::FileFailed { id, code: code::INTEGRITY, message });
        }
        f.finalizing = true;
        Next::Finalize(id)
    }
}

/// Feeds the frames decoded from `data` to a fresh [`Receiver`] the way the
/// engine does, answering each FILE as opened and each chunk as verified when
/// its first data byte is odd. Whatever the sequence, the state machine must
/// return errors, never panic, and never hold more entries than the window.
/// Shared by the fuzz target `receiver` and a seeded test that runs in CI.
#[doc(hidden)]
pub fn drive_with_frames(data: &[u8]) {
    use super::frame::{decode, Decoded, Limits};
    let Some((&c, mut rest)) = data.split_first() else { return };
    let chunk = super::frame::MIN_CHUNK_SIZE as u64 * (1 + u64::from(c % 4));
    let mut rx: Receiver = Receiver::new(chunk);
    let limits = Limits { max_control: 64 << 10, max_chunk: 1 << 20, handshake: false };
    while let Ok(Decoded::Frame(f, used)) = decode(rest, &limits) {
        rest = &rest[used..];
        let res = match f {
            Frame::File(meta) => rx.on_file(&meta).map(|_| {
                let _ = rx.on_opened(meta.id);
            }),
            Frame::FileEnd { id, digest } => rx.on_file_end(id, digest).map(|_| ()),
            Frame::FileAbort { id, .. } => rx.on_file_abort(id).map(|_| ()),
            Frame::FileSame { id, chunks } => rx.on_file_same(id, &chunks).map(|_| ()),
            Frame::FileHave { id, chunks } => {
                let _ = rx.on_resumed(id, &chunks);
                Ok(())
            }
            Frame::FileSums { id, chunks } => {
                let _ = rx.on_seeded(id, &chunks);
                Ok(())
            }
            Frame::Done { files } => rx.on_done(files),
            Frame::Chunk { head, data, hash } => {
                rx.on_chunk_head(head.id, head.offset, data.len() as u64).map(|plan| {
                    let ok = plan == ChunkPlan::Store && data.first().is_some_and(|b| b & 1 == 1);
                    let _ = rx.on_chunk_checked(head.id, head.offset, hash, ok);
                })
            }
            _ => Ok(()),
        };
        assert!(rx.files.len() <= rx.window, "more open entries than the window");
        if res.is_err() {
            return; // the engine ends the session here
        }
        let _ = rx.is_complete();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::ChunkHead;

    fn meta(id: u64, size: u64) -> FileMeta {
        FileMeta {
            id,
            kind: EntryKind::File,
            mode: 0o644,
            mtime_sec: 0,
            mtime_nsec: 0,
            size,
            path: format!("f{id}").into_bytes(),
            link: Vec::new(),
            owner: None,
            xattrs: Vec::new(),
            rdev: 0,
            hardlink: false,
        }
    }

    #[test]
    fn announced_sizes_cost_no_memory_and_absurd_ones_are_refused() {
        let mut rx: Receiver = Receiver::new(64 << 10);
        assert_eq!(rx.on_file(&meta(0, u64::MAX)), Err(ProtocolError::TooManyChunks(u64::MAX)));
        // 1 TiB of 64 KiB chunks: 16 M chunks, tracked only as they arrive.
        rx.on_file(&meta(1, 1 << 40)).unwrap();
        rx.on_opened(1);
        assert!(rx.files[&1].verified.is_empty());
        let (s, _) = rx.on_chunk_checked(1, 64 << 10, [1; HASH_LEN], true);
        assert_eq!(s, AckStatus::Ok);
        assert_eq!(rx.files[&1].verified.len(), 1);
    }

    #[test]
    fn file_ids_never_repeat_not_even_at_the_end_of_u64() {
        let mut rx: Receiver = Receiver::new(64 << 10);
        assert_eq!(rx.on_file(&meta(u64::MAX, 10)), Err(ProtocolError::FileIdOrder(u64::MAX)));
        rx.on_file(&meta(u64::MAX - 1, 10)).unwrap();
        assert!(rx.on_file(&meta(u64::MAX - 1, 10)).is_err(), "the same id twice");
        assert!(rx.on_file(&meta(3, 10)).is_err(), "a smaller id");
    }

    #[test]
    fn a_file_beyond_the_window_is_a_protocol_error() {
        let mut rx: Receiver = Receiver::new(64 << 10);
        for id in 0..crate::proto::FILE_WINDOW as u64 {
            rx.on_file(&meta(id, 10)).unwrap();
        }
        assert_eq!(rx.on_file(&meta(5000, 10)), Err(ProtocolError::Window));
        // A settled entry frees its place.
        rx.on_file_abort(0).unwrap();
        rx.on_file(&meta(5001, 10)).unwrap();
    }

    #[test]
    fn the_wide_window_holds_four_times_as_many() {
        let mut rx: Receiver = Receiver::new(64 << 10);
        rx.set_window(crate::proto::FILE_WINDOW_WIDE);
        for id in 0..crate::proto::FILE_WINDOW_WIDE as u64 {
            rx.on_file(&meta(id, 10)).unwrap();
        }
        assert_eq!(rx.on_file(&meta(9000, 10)), Err(ProtocolError::Window));
    }

    #[test]
    fn arbitrary_frame_sequences_never_panic_the_receiver() {
        // Seeded random sequences of valid frames in random order, plus raw
        // noise: the same driver as the fuzz target `receiver`.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..400 {
            let mut bytes = vec![(next() % 4) as u8];
            for _ in 0..(next() % 40) {
                let id = next() % 6;
                let f = match next() % 8 {
                    0 | 1 => Frame::File(meta(id, next() % (1 << 20))),
                    2 => Frame::FileEnd { id, digest: [(next() % 3) as u8; HASH_LEN] },
                    3 => Frame::FileAbort { id, code: 5, message: "x".into() },
                    4 => Frame::FileSame { id, chunks: vec![(next() % 20) as u32] },
                    5 => Frame::FileHave { id, chunks: vec![((next() % 20) as u32, [0; HASH_LEN])] },
                    6 => Frame::Done { files: next() % 6 },
                    _ => {
                        let offset = (next() % 20) * (64 << 10);
                        let data = vec![(next() % 2) as u8; (next() % 4096) as usize];
                        Frame::Chunk { head: ChunkHead { id, offset }, data, hash: [0; HASH_LEN] }
                    }
                };
                bytes.extend_from_slice(&f.to_vec());
            }
            if round % 10 == 0 {
                let n = bytes.len();
                bytes[n / 2] ^= next() as u8;
            }
            drive_with_frames(&bytes);
        }
    }
}
