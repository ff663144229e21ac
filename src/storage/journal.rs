//! The chunk journal kept next to a partial file (protocol-spec §5.11): which
//! chunks are verified and durable, so an interrupted transfer resumes exactly.
//!
//! Records are appended only after the data they describe was flushed with
//! `fdatasync`, in groups, so the journal never claims data that is not on disk.

use crate::proto::frame::HASH_LEN;
use std::fs::File;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::Xxh3;

const MAGIC: &[u8; 4] = b"GFJ1";
const RECORD: usize = 4 + HASH_LEN;
/// Commit a group once this much verified data is pending…
const GROUP_BYTES: u64 = 32 << 20;
/// …or once the oldest pending record is this old.
const GROUP_AGE: Duration = Duration::from_millis(200);

/// What a partial file is the partial of: journals with a different identity
/// are not resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Final name (last path component).
    pub name: Vec<u8>,
    /// Source size.
    pub size: u64,
    /// Source mtime, seconds.
    pub mtime_sec: i64,
    /// Source mtime, nanoseconds.
    pub mtime_nsec: u32,
    /// Session chunk size.
    pub chunk_size: u64,
}

impl Identity {
    /// The partial file's and the journal's names: `.gfast-<H>.part` and `.jrnl`.
    pub fn file_names(&self) -> (Vec<u8>, Vec<u8>) {
        let mut h = Xxh3::new();
        h.update(&self.name);
        h.update(&self.size.to_be_bytes());
        h.update(&self.mtime_sec.to_be_bytes());
        h.update(&self.mtime_nsec.to_be_bytes());
        h.update(&self.chunk_size.to_be_bytes());
        let tag = format!("{:016x}", h.digest());
        (format!(".gfast-{tag}.part").into_bytes(), format!(".gfast-{tag}.jrnl").into_bytes())
    }

    fn header(&self) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&self.chunk_size.to_be_bytes());
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.mtime_sec.to_be_bytes());
        v.extend_from_slice(&self.mtime_nsec.to_be_bytes());
        v.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.name);
        v
    }
}

/// Chunks a journal holds: (chunk index, hash).
pub type Held = Vec<(u32, [u8; HASH_LEN])>;

/// An open journal for one partial file.
pub struct Journal {
    file: File,
    pending: Vec<(u32, [u8; HASH_LEN])>,
    pending_bytes: u64,
    since: Option<Instant>,
}

impl Journal {
    /// Starts a fresh journal (the file given must be empty or truncated).
    pub fn create(mut file: File, id: &Identity) -> io::Result<Journal> {
        file.write_all(&id.header())?;
        file.sync_data()?;
        Ok(Journal { file, pending: Vec::new(), pending_bytes: 0, since: None })
    }

    /// Reads an existing journal; `None` when it belongs to another identity or is
    /// damaged in its header. A torn last record (a crash mid-append) is ignored.
    pub fn open(mut file: File, id: &Identity) -> io::Result<Option<(Journal, Held)>> {
        let want = id.header();
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        if buf.len() < want.len() || buf[..want.len()] != want[..] {
            return Ok(None);
        }
        let nchunks = id.size.div_ceil(id.chunk_size);
        let mut have = Vec::new();
        for r in buf[want.len()..].chunks_exact(RECORD) {
            let idx = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
            if idx as u64 >= nchunks {
                return Ok(None);
            }
            let mut h = [0u8; HASH_LEN];
            h.copy_from_slice(&r[4..]);
            have.push((idx, h));
        }
        let good = want.len() + have.len() * RECORD;
        if good < buf.len() {
            file.set_len(good as u64)?;
        }
        Ok(Some((Journal { file, pending: Vec::new(), pending_bytes: 0, since: None }, have)))
    }

    /// Notes a verified chunk of `len` bytes; commits the group when it is due.
    pub fn add(&mut self, idx: u32, hash: [u8; HASH_LEN], len: u64, data: &File) -> io::Result<()> {
        self.pending.push((idx, hash));
        self.pending_bytes += len;
        let since = *self.since.get_or_insert_with(Instant::now);
        if self.pending_bytes >= GROUP_BYTES || since.elapsed() >= GROUP_AGE {
            self.commit(data)?;
        }
        Ok(())
    }

    /// Makes the data durable, then records it.
    pub fn commit(&mut self, data: &File) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        data.sync_data()?;
        let mut rec = Vec::with_capacity(self.pending.len() * RECORD);
        for (i, h) in self.pending.drain(..) {
            rec.extend_from_slice(&i.to_be_bytes());
            rec.extend_from_slice(&h);
        }
        // Appends (the file is opened with O_APPEND) of whole records.
        self.file.write_all(&rec)?;
        self.file.sync_data()?;
        self.pending_bytes = 0;
        self.since = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn id() -> Identity {
        Identity { name: b"f".to_vec(), size: 10 << 20, mtime_sec: 7, mtime_nsec: 8, chunk_size: 1 << 20 }
    }

    #[test]
    fn records_survive_reopening_and_torn_tails_are_dropped() {
        let dir = std::env::temp_dir().join(format!("gfast-jrnl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (jp, dp) = (dir.join("j"), dir.join("d"));
        let data = File::create(&dp).unwrap();
        let open = || OpenOptions::new().read(true).append(true).create(true).open(&jp).unwrap();
        let mut j = Journal::create(open(), &id()).unwrap();
        j.add(3, [3; 16], 1 << 20, &data).unwrap();
        j.add(1, [1; 16], 1 << 20, &data).unwrap();
        j.commit(&data).unwrap();
        let (_, have) = Journal::open(open(), &id()).unwrap().unwrap();
        assert_eq!(have, vec![(3, [3; 16]), (1, [1; 16])]);
        // A torn record is cut off.
        open().write_all(&[0, 0, 0]).unwrap();
        let (_, have) = Journal::open(open(), &id()).unwrap().unwrap();
        assert_eq!(have.len(), 2);
        // Another identity does not resume this journal.
        let other = Identity { mtime_sec: 9, ..id() };
        assert!(Journal::open(open(), &other).unwrap().is_none());
        assert_ne!(id().file_names(), other.file_names());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
