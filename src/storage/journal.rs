//! The chunk journal kept next to a partial file (protocol-spec §5.11): which
//! chunks were verified and written, so an interrupted transfer resumes exactly.
//!
//! A record is appended once its chunk's data is written (not yet synced). When a
//! session lets go of a partial file in an orderly way (its client vanished, the
//! link broke), it syncs the data and appends a seal: records before a seal are
//! trusted on resume. Records after the last seal (the receiver itself died) are
//! a claim, not a proof: each is read back and hashed before it is offered (see
//! [`verify`]). So there is no sync on the data path, no re-read after a broken
//! link, and after a crash or power loss nothing unverified is ever kept.

use crate::proto::frame::HASH_LEN;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use xxhash_rust::xxh3::Xxh3;

const MAGIC: &[u8; 4] = b"GFJ1";
const RECORD: usize = 4 + HASH_LEN;

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
    /// The partial file's and the journal's names: `.gfast-<H>.part` and `.jrnl`,
    /// H from the final name alone, so a changed source finds (and replaces) the
    /// partial file of its earlier version.
    pub fn file_names(&self) -> (Vec<u8>, Vec<u8>) {
        let mut h = Xxh3::new();
        h.update(&self.name);
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

/// The chunk index of a seal record (never a real chunk: chunk indices are u32
/// and a file would need 2^32 chunks).
const SEALED: u32 = u32::MAX;

/// What a journal claims: chunks made durable before a seal, and chunks after
/// the last seal (or with no seal: a receiver that died), which need checking.
#[derive(Debug, Default)]
pub struct Claims {
    /// Trusted: synced before the seal.
    pub sealed: Held,
    /// To be read back and checked ([`verify`]).
    pub unsealed: Held,
}

/// What [`Journal::open`] found.
pub enum Found {
    /// A journal of this very source: resume with these chunks.
    Resumable(Journal, Claims),
    /// A journal of an earlier version of the file (size or mtime differ).
    Other,
    /// No usable journal.
    Nothing,
}

/// An open journal for one partial file.
pub struct Journal {
    file: File,
}

impl Journal {
    /// Starts a fresh journal (the file given must be empty or truncated).
    pub fn create(mut file: File, id: &Identity) -> io::Result<Journal> {
        file.write_all(&id.header())?;
        Ok(Journal { file })
    }

    /// Reads an existing journal. A torn last record (a crash mid-append) is ignored.
    pub fn open(mut file: File, id: &Identity) -> io::Result<Found> {
        let want = id.header();
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        if buf.len() < want.len() || buf[..want.len()] != want[..] {
            // Same name, other size, mtime or chunk size: the source changed.
            let other = buf.len() >= 4 && &buf[..4] == MAGIC;
            return Ok(if other { Found::Other } else { Found::Nothing });
        }
        let nchunks = id.size.div_ceil(id.chunk_size);
        let mut have = Vec::new();
        let mut durable = 0;
        for r in buf[want.len()..].chunks_exact(RECORD) {
            let idx = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
            if idx == SEALED {
                durable = have.len();
                continue;
            }
            if idx as u64 >= nchunks {
                return Ok(Found::Nothing);
            }
            let mut h = [0u8; HASH_LEN];
            h.copy_from_slice(&r[4..]);
            have.push((idx, h));
        }
        let good = want.len() + (buf.len() - want.len()) / RECORD * RECORD;
        if good < buf.len() {
            file.set_len(good as u64)?;
        }
        Ok(Found::Resumable(
            Journal { file },
            Claims { sealed: have[..durable].to_vec(), unsealed: have[durable..].to_vec() },
        ))
    }

    /// Seals the journal when a session lets go of a partial file in an orderly
    /// way: the data is synced, then a seal record says every record before it
    /// is durable, so a resume trusts them without reading them back.
    pub fn seal(&mut self, data: &File) -> io::Result<()> {
        data.sync_data()?;
        self.add(SEALED, [0; HASH_LEN])?;
        self.file.sync_data()
    }

    /// Notes a chunk that was verified and written (one whole-record append).
    pub fn add(&mut self, idx: u32, hash: [u8; HASH_LEN]) -> io::Result<()> {
        let mut rec = [0u8; RECORD];
        rec[..4].copy_from_slice(&idx.to_be_bytes());
        rec[4..].copy_from_slice(&hash);
        self.file.write_all(&rec)
    }
}

/// Keeps only the chunks whose data in `part` still hashes as recorded.
pub fn verify(part: &File, id: &Identity, held: Held) -> io::Result<Held> {
    let mut buf = vec![0u8; 1 << 20];
    let mut good = Vec::with_capacity(held.len());
    for (idx, want) in held {
        let off = idx as u64 * id.chunk_size;
        let len = id.size.saturating_sub(off).min(id.chunk_size);
        let mut h = crate::proto::hash::ChunkHasher::new();
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            part.read_exact_at(&mut buf[..n], off + done)?;
            h.update(&buf[..n]);
            done += n as u64;
        }
        if h.finish() == want {
            good.push((idx, want));
        }
    }
    Ok(good)
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
        let open = || OpenOptions::new().read(true).append(true).create(true).open(&jp).unwrap();
        let mut j = Journal::create(open(), &id()).unwrap();
        j.add(3, [3; 16]).unwrap();
        j.add(1, [1; 16]).unwrap();
        let held = |f: Found| match f {
            Found::Resumable(_, c) => {
                assert!(c.sealed.is_empty(), "no seal yet");
                c.unsealed
            }
            _ => panic!("resumable"),
        };
        assert_eq!(held(Journal::open(open(), &id()).unwrap()), vec![(3, [3; 16]), (1, [1; 16])]);
        // A torn record is cut off.
        open().write_all(&[0, 0, 0]).unwrap();
        assert_eq!(held(Journal::open(open(), &id()).unwrap()).len(), 2);
        // Sealed records are trusted; later ones are not.
        let mut j2 = match Journal::open(open(), &id()).unwrap() {
            Found::Resumable(j, _) => j,
            _ => panic!("resumable"),
        };
        let data = File::create(&dp).unwrap();
        j2.seal(&data).unwrap();
        j2.add(5, [5; 16]).unwrap();
        match Journal::open(open(), &id()).unwrap() {
            Found::Resumable(_, c) => {
                assert_eq!(c.sealed, vec![(3, [3; 16]), (1, [1; 16])]);
                assert_eq!(c.unsealed, vec![(5, [5; 16])]);
            }
            _ => panic!("resumable"),
        }
        // A changed source (same name) is recognised, and not resumed.
        let other = Identity { mtime_sec: 9, ..id() };
        assert!(matches!(Journal::open(open(), &other).unwrap(), Found::Other));
        assert_eq!(id().file_names(), other.file_names());
        // Only chunks whose data still matches survive verification.
        let part = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&dp).unwrap();
        part.set_len(10 << 20).unwrap();
        let chunk = vec![7u8; 1 << 20];
        part.write_all_at(&chunk, 1 << 20).unwrap();
        let good = crate::proto::hash::chunk_hash(&chunk);
        let zero = crate::proto::hash::chunk_hash(&[0u8; 1 << 20]);
        let kept = verify(&part, &id(), vec![(1, good), (2, good), (4, zero)]).unwrap();
        assert_eq!(kept, vec![(1, good), (4, zero)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
