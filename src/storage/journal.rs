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
//!
//! A journal is authenticated: its header and every record carry a MAC under a
//! key only this receiver holds ([`use_key_file`]), and the header names the
//! partial file's inode. A journal someone else wrote (planted through the file
//! system, or copied from another partial file) is not resumed: the file is
//! received again from the start.

use crate::proto::frame::HASH_LEN;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use xxhash_rust::xxh3::Xxh3;

const MAGIC: &[u8; 4] = b"GFJ2";
/// MACs are HMAC-SHA256 cut to this length.
const MAC_LEN: usize = 16;
const RECORD: usize = 4 + HASH_LEN + MAC_LEN;

static KEY: std::sync::OnceLock<ring::hmac::Key> = std::sync::OnceLock::new();

/// Uses the 32-byte journal key kept at `path`, creating it (mode 0600) if it
/// does not exist. Call once, before any journal is opened; without it a key is
/// made up for this process alone, so journals of earlier runs are not trusted
/// (their files are sent again).
pub(crate) fn use_key_file(path: &std::path::Path) -> io::Result<()> {
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let k: [u8; 32] = crate::random::random();
        super::write_private_file(path, &k, false)?;
    }
    let k = std::fs::read(path)?;
    if k.len() != 32 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a 32-byte key", path.display())));
    }
    let _ = KEY.set(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k));
    Ok(())
}

fn key() -> &'static ring::hmac::Key {
    KEY.get_or_init(|| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &crate::random::random::<32>()))
}

fn mac(parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut c = ring::hmac::Context::with_key(key());
    for p in parts {
        c.update(p);
    }
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&c.sign().as_ref()[..MAC_LEN]);
    out
}

/// The partial file a journal belongs to: its device and inode.
fn inode_of(part: &File) -> io::Result<[u8; 16]> {
    use std::os::unix::fs::MetadataExt;
    let md = part.metadata()?;
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&md.dev().to_be_bytes());
    b[8..].copy_from_slice(&md.ino().to_be_bytes());
    Ok(b)
}

/// What a partial file is the partial of: journals with a different identity
/// are not resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
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
    pub(crate) fn file_names(&self) -> (Vec<u8>, Vec<u8>) {
        let mut h = Xxh3::new();
        h.update(&self.name);
        let tag = format!("{:016x}", h.digest());
        (format!(".gfast-{tag}.part").into_bytes(), format!(".gfast-{tag}.jrnl").into_bytes())
    }

    /// The header: magic, chunk size, size, mtime, name, the partial file's
    /// inode, and a MAC over all of it.
    fn header(&self, inode: &[u8; 16]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&self.chunk_size.to_be_bytes());
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&self.mtime_sec.to_be_bytes());
        v.extend_from_slice(&self.mtime_nsec.to_be_bytes());
        v.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.name);
        v.extend_from_slice(inode);
        let m = mac(&[&v]);
        v.extend_from_slice(&m);
        v
    }
}

/// Chunks a journal holds: (chunk index, hash).
pub(crate) type Held = Vec<(u32, [u8; HASH_LEN])>;

/// The chunk index of a seal record (never a real chunk: chunk indices are u32
/// and a file would need 2^32 chunks).
const SEALED: u32 = u32::MAX;

/// The hash of a retraction record (no chunk hashes to zero in practice).
const RETRACTED: [u8; HASH_LEN] = [0; HASH_LEN];

/// What a journal claims: chunks made durable before a seal, and chunks after
/// the last seal (or with no seal: a receiver that died), which need checking.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    /// Trusted: synced before the seal.
    pub sealed: Held,
    /// To be read back and checked ([`verify`]).
    pub unsealed: Held,
}

/// What [`Journal::open`] found.
pub(crate) enum Found {
    /// A journal of this very source: resume with these chunks.
    Resumable(Journal, Claims),
    /// A journal of an earlier version of the file (size or mtime differ).
    Other,
    /// No usable journal.
    Nothing,
}

/// An open journal for one partial file.
pub(crate) struct Journal {
    file: File,
    /// The header's MAC: every record's MAC covers it, binding the record to
    /// this journal and partial file.
    head_mac: [u8; MAC_LEN],
    /// Records written so far (each record's MAC covers its position).
    records: u64,
}

impl Journal {
    /// Starts a fresh journal of the partial file `part` (the journal file given
    /// must be empty or truncated).
    pub(crate) fn create(mut file: File, id: &Identity, part: &File) -> io::Result<Journal> {
        let h = id.header(&inode_of(part)?);
        file.write_all(&h)?;
        Ok(Journal { file, head_mac: tail_mac(&h), records: 0 })
    }

    /// Reads an existing journal of the partial file `part`. A torn last record
    /// (a crash mid-append) is ignored, and so is everything from the first
    /// record whose MAC does not verify.
    pub(crate) fn open(mut file: File, id: &Identity, part: &File) -> io::Result<Found> {
        let want = id.header(&inode_of(part)?);
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        if buf.len() < want.len() || buf[..want.len()] != want[..] {
            // Same name, other size, mtime or chunk size: the source changed (or
            // the journal is not this receiver's: either way, start over).
            let other = buf.len() >= 4 && &buf[..4] == MAGIC;
            return Ok(if other { Found::Other } else { Found::Nothing });
        }
        let head_mac = tail_mac(&want);
        let nchunks = id.size.div_ceil(id.chunk_size);
        let mut have = Vec::new();
        let mut durable = 0;
        let mut records = 0u64;
        for r in buf[want.len()..].chunks_exact(RECORD) {
            if r[4 + HASH_LEN..] != record_mac(&head_mac, records, &r[..4 + HASH_LEN]) {
                break;
            }
            records += 1;
            let idx = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
            if idx == SEALED {
                durable = have.len();
                continue;
            }
            if idx as u64 >= nchunks {
                return Ok(Found::Nothing);
            }
            let mut h = [0u8; HASH_LEN];
            h.copy_from_slice(&r[4..4 + HASH_LEN]);
            have.push((idx, h));
        }
        let good = want.len() + records as usize * RECORD;
        if good < buf.len() {
            file.set_len(good as u64)?;
        }
        // A chunk written again (the sender found the journal's differed from
        // its source) has a later record: the last one of each chunk counts.
        let mut last = std::collections::HashMap::new();
        for (pos, &(idx, h)) in have.iter().enumerate() {
            last.insert(idx, (pos, h));
        }
        // A retraction (a zero hash, see [`Journal::retract`]) ends a chunk's claim.
        let mut claims = Claims::default();
        for (pos, &(idx, h)) in have.iter().enumerate() {
            if h != RETRACTED && last.get(&idx).is_some_and(|&(p, _)| p == pos) {
                if pos < durable {
                    claims.sealed.push((idx, h))
                } else {
                    claims.unsealed.push((idx, h))
                }
            }
        }
        Ok(Found::Resumable(Journal { file, head_mac, records }, claims))
    }

    /// Seals the journal when a session lets go of a partial file in an orderly
    /// way: the data is synced, then a seal record says every record before it
    /// is durable, so a resume trusts them without reading them back.
    pub(crate) fn seal(&mut self, data: &File) -> io::Result<()> {
        data.sync_data()?;
        self.add(SEALED, [0; HASH_LEN])?;
        self.file.sync_data()
    }

    /// Retracts a chunk's earlier record before the chunk is written again:
    /// appended and synced first, so neither a later seal nor a crash can leave
    /// the old record vouching for data that is being overwritten.
    pub(crate) fn retract(&mut self, idx: u32) -> io::Result<()> {
        self.add(idx, RETRACTED)?;
        self.file.sync_data()
    }

    /// Notes a chunk that was verified and written (one whole-record append).
    pub(crate) fn add(&mut self, idx: u32, hash: [u8; HASH_LEN]) -> io::Result<()> {
        let mut rec = [0u8; RECORD];
        rec[..4].copy_from_slice(&idx.to_be_bytes());
        rec[4..4 + HASH_LEN].copy_from_slice(&hash);
        let m = record_mac(&self.head_mac, self.records, &rec[..4 + HASH_LEN]);
        rec[4 + HASH_LEN..].copy_from_slice(&m);
        self.file.write_all(&rec)?;
        self.records += 1;
        Ok(())
    }
}

fn tail_mac(header: &[u8]) -> [u8; MAC_LEN] {
    let mut m = [0u8; MAC_LEN];
    m.copy_from_slice(&header[header.len() - MAC_LEN..]);
    m
}

/// A record's MAC: over the header's MAC, the record's position and its body,
/// so a record can be neither moved (a seal placed later) nor copied from
/// another journal.
fn record_mac(head_mac: &[u8; MAC_LEN], position: u64, body: &[u8]) -> [u8; MAC_LEN] {
    mac(&[head_mac, &position.to_be_bytes(), body])
}

/// Keeps only the chunks whose data in `part` still hashes as recorded.
pub(crate) fn verify(part: &File, id: &Identity, held: Held) -> io::Result<Held> {
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
        let data = File::create(&dp).unwrap();
        let mut j = Journal::create(open(), &id(), &data).unwrap();
        j.add(3, [3; 16]).unwrap();
        j.add(1, [1; 16]).unwrap();
        let held = |f: Found| match f {
            Found::Resumable(_, c) => {
                assert!(c.sealed.is_empty(), "no seal yet");
                c.unsealed
            }
            _ => panic!("resumable"),
        };
        assert_eq!(held(Journal::open(open(), &id(), &data).unwrap()), vec![(3, [3; 16]), (1, [1; 16])]);
        // A torn record is cut off.
        open().write_all(&[0, 0, 0]).unwrap();
        assert_eq!(held(Journal::open(open(), &id(), &data).unwrap()).len(), 2);
        // Sealed records are trusted; later ones are not.
        let mut j2 = match Journal::open(open(), &id(), &data).unwrap() {
            Found::Resumable(j, _) => j,
            _ => panic!("resumable"),
        };
        j2.seal(&data).unwrap();
        j2.add(5, [5; 16]).unwrap();
        match Journal::open(open(), &id(), &data).unwrap() {
            Found::Resumable(_, c) => {
                assert_eq!(c.sealed, vec![(3, [3; 16]), (1, [1; 16])]);
                assert_eq!(c.unsealed, vec![(5, [5; 16])]);
            }
            _ => panic!("resumable"),
        }
        // A changed source (same name) is recognised, and not resumed.
        let other = Identity { mtime_sec: 9, ..id() };
        assert!(matches!(Journal::open(open(), &other, &data).unwrap(), Found::Other));
        assert_eq!(id().file_names(), other.file_names());
        // A journal is bound to its partial file: another inode does not resume it.
        let elsewhere = File::create(dir.join("other")).unwrap();
        assert!(matches!(Journal::open(open(), &id(), &elsewhere).unwrap(), Found::Other));
        // A record that was tampered with ends what is trusted: a seal copied
        // to the end would vouch for the records before it.
        let before = std::fs::read(&jp).unwrap();
        let mut moved = before.clone();
        let seal_at = before.len() - 2 * RECORD;
        moved.extend_from_slice(&before[seal_at..seal_at + RECORD]);
        std::fs::write(&jp, &moved).unwrap();
        match Journal::open(open(), &id(), &data).unwrap() {
            Found::Resumable(_, c) => assert_eq!(c.unsealed, vec![(5, [5; 16])], "the moved seal was not trusted"),
            _ => panic!("resumable"),
        }
        let mut forged = before.clone();
        let n = forged.len();
        forged[n - RECORD + 5] ^= 1; // the last record's hash
        std::fs::write(&jp, &forged).unwrap();
        match Journal::open(open(), &id(), &data).unwrap() {
            Found::Resumable(_, c) => assert!(c.unsealed.is_empty(), "a forged record was trusted"),
            _ => panic!("resumable"),
        }
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
