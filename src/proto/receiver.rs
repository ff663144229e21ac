//! The receiving side's state machine (protocol-spec §5.3–§5.6), free of I/O.
//!
//! It checks every announcement and chunk against what was negotiated, keeps which
//! chunks of each file verified, and says when a file may be put in place: only
//! after every chunk verified, FILE_END arrived and the whole-file digest matches.

use super::error::{code, ProtocolError};
use super::frame::{AckStatus, EntryKind, FileMeta, Frame, HASH_LEN};
use super::hash::file_digest;
use super::path::components;
use std::collections::HashMap;

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

struct FileRx {
    size: u64,
    ready: bool,
    verified: Vec<Option<[u8; HASH_LEN]>>,
    nverified: usize,
    end: Option<[u8; HASH_LEN]>,
    finalizing: bool,
    /// Delta: hashes of the chunks seeded from the old file, until the sender
    /// confirms them (FILE_SAME) or sends them.
    candidates: HashMap<u32, [u8; HASH_LEN]>,
}

/// Receiver state machine for one session.
pub struct Receiver {
    chunk_size: u64,
    next_id: u64,
    files: HashMap<u64, FileRx>,
    done: Option<u64>,
    announced: u64,
    finished: u64,
    bytes_finished: u64,
}

impl Receiver {
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
        if comps.is_empty() {
            return Err(ProtocolError::BadPath("an entry cannot name the root itself".into()));
        }
        self.next_id = meta.id + 1;
        self.announced += 1;
        let n = if meta.kind == EntryKind::File { meta.size.div_ceil(self.chunk_size) as usize } else { 0 };
        self.files.insert(
            meta.id,
            FileRx {
                size: meta.size,
                ready: false,
                verified: vec![None; n],
                nverified: 0,
                end: None,
                finalizing: false,
                candidates: HashMap::new(),
            },
        );
        Ok(())
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
                if let Some(slot) = f.verified.get_mut(idx as usize) {
                    if slot.is_none() {
                        f.nverified += 1;
                        *slot = Some(h);
                        kept.push((idx, h));
                    }
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
            let n = f.verified.len();
            f.candidates = sums.iter().copied().filter(|&(i, _)| (i as usize) < n).collect();
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
            let slot = &mut f.verified[*i as usize];
            if slot.is_some() {
                return Err(ProtocolError::Unexpected("FILE_SAME for a chunk that was sent"));
            }
            f.nverified += 1;
            *slot = Some(h);
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

    /// Records the outcome of a stored chunk's verification; returns the ack status
    /// and whether the file can now be finalized.
    pub fn on_chunk_checked(&mut self, id: u64, offset: u64, hash: [u8; HASH_LEN], ok: bool) -> (AckStatus, Next) {
        let Some(f) = self.files.get_mut(&id) else { return (AckStatus::Dropped, Next::Wait) };
        if !ok {
            return (AckStatus::BadHash, Next::Wait);
        }
        let idx = (offset / self.chunk_size) as usize;
        if let Some(slot) = f.verified.get_mut(idx) {
            if slot.is_none() {
                f.nverified += 1;
            }
            *slot = Some(hash);
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

    /// Handles FILE_ABORT: returns true if the file was still open, so the engine
    /// must discard its temporary data.
    pub fn on_file_abort(&mut self, id: u64) -> Result<bool, ProtocolError> {
        if id >= self.next_id {
            return Err(ProtocolError::UnknownFile(id));
        }
        Ok(self.files.remove(&id).is_some())
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
        if f.finalizing || f.nverified < f.verified.len() {
            return Next::Wait;
        }
        let digest = file_digest(f.verified.iter().map(|h| h.as_ref().expect("all verified")));
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
