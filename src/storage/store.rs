//! The storage seam: what the receiving role needs from where files land
//! ([`Destination`], [`Incoming`]), and how it is configured ([`StoreConfig`]).
//! The engine talks to these traits only; today's implementations are the
//! confined local directory ([`LocalDir`]) and `--discard` ([`Discard`]). A
//! second local directory (a copy with no network), an object store or a shard
//! of a tree plug in here without touching the engine.

pub(crate) use super::dest::Given;
use super::dest::{self, DestError, DestRoot, Kept, Opened as DirOpened, TempFile};
use super::journal::{Held, Identity};
use super::pieces::{IoMode, PieceWriter};
use crate::proto::frame::{FileMeta, TargetKind, HASH_LEN};
use crate::proto::sync::Listed;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// How a destination writes (no process globals: each session carries its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreConfig {
    /// Make each file durable (fdatasync, then its directory) before it takes
    /// its final name (`--fsync`).
    pub durable: bool,
    /// How lanes write received pieces (`--io`).
    pub io: IoMode,
    /// A local copy keeps the source's holes (`--no-sparse` copies them as zeros).
    pub sparse: bool,
    /// A local copy gives entries the source's owner and group (as root; not
    /// with `--no-owner`).
    pub owners: bool,
    /// A local copy gives entries the source's extended attributes and ACLs (`-X`, `-A`).
    pub xattrs: bool,
    /// A local copy makes FIFOs, sockets and (as root) device nodes (`-D`).
    pub specials: bool,
    /// A local copy links files the source links (`-H`).
    pub hardlinks: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durable: false,
            io: IoMode::Pwrite,
            sparse: true,
            owners: false,
            xattrs: false,
            specials: false,
            hardlinks: false,
        }
    }
}

impl StoreConfig {
    /// A lane's writer of pieces of at most `piece` bytes.
    pub(crate) fn piece_writer(&self, piece: usize) -> PieceWriter {
        PieceWriter::new(piece, self.io)
    }
}

/// A file being received (protocol-spec §5.6): written at offsets by the lanes,
/// then placed under its final name, discarded, or kept for a resume.
pub(crate) trait Incoming: Send + Sync {
    /// A chunk of `len` bytes at `offset` is about to arrive: the space for it
    /// may be reserved now (never ahead of the data, §5.6).
    fn reserve(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Writes the first `n` bytes of `pw`'s buffer at `offset` (with io_uring
    /// it completes at the lane's next [`PieceWriter::finish`]).
    fn write_piece(&self, pw: &mut PieceWriter, offset: u64, n: usize) -> io::Result<()>;
    /// `len` bytes at `offset` are zeros (a hole, §4.14): whatever an earlier
    /// write or a delta's seed left there goes, and no space is taken for it.
    fn zero(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Notes a chunk that was verified and written (the resume journal, §5.11).
    fn record(&self, idx: u32, hash: [u8; HASH_LEN]) -> io::Result<()>;
    /// A chunk the journal holds is about to be written again: its record is
    /// retracted, durably, first.
    fn retract(&self, idx: u32) -> io::Result<()>;
    /// Delta (§5.13): copies the whole chunks of the file now under the final
    /// name that lie within both sizes into this one; their indexes and hashes.
    fn seed_from_old(&self, new_size: u64, chunk_size: u64) -> Vec<(u32, [u8; HASH_LEN])>;
    /// Every chunk verified and the digest matched: gives it its owner, mode
    /// and mtime and puts it under its final name.
    fn place(&self, given: Given<'_>) -> io::Result<()>;
    /// A local copy (no network): copies `len` bytes of `src` from its start
    /// into this file, in the kernel where it can (copy_file_range, which
    /// clones extents on file systems that share them).
    fn copy_from(&self, src: &std::fs::File, len: u64) -> io::Result<()>;
    /// Removes what was written (the file failed or was aborted).
    fn discard(&self);
    /// The session let go: keeps what was written for a resume, if this
    /// destination can; where it was kept, for its expiry.
    fn keep(&self) -> Option<Kept>;
}

/// What an opened file may take over from earlier runs (protocol-spec §5.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Nothing: the file starts over.
    Fresh,
    /// A partial file and its journal, but not a file in place: sync (§5.15)
    /// announces only files that differ, whatever their size and mtime say
    /// (`--checksum`, a mode).
    Partials,
    /// Resume: a partial file, or the file in place (same size and mtime).
    All,
}

/// What [`Destination::open_file`] found.
pub(crate) enum Opened {
    /// Resume: the final name already holds this file (same size and mtime).
    InPlace,
    /// A file to write into, the chunks its journal already holds, and whether
    /// it belonged to an earlier version of the source.
    Partial(Box<dyn Incoming>, Held, bool),
}

/// Where a session's entries land. Paths are the components of a wire path
/// already checked by `proto::path::components`.
pub(crate) trait Destination: Send {
    /// What is at `comps` now (TARGET, §4.6).
    fn target_kind(&mut self, comps: &[&[u8]]) -> Result<TargetKind, DestError>;
    /// Creates (or keeps) a directory and its parents; true when the
    /// directory itself was created now.
    fn make_dir(&mut self, comps: &[&[u8]]) -> Result<bool, DestError>;
    /// Creates a symlink, replacing a file or link at the name, owned by
    /// `owner` (`None`: this end's user).
    fn make_symlink(
        &mut self,
        comps: &[&[u8]],
        meta: &FileMeta,
        owner: Option<(u32, u32)>,
        tag: &str,
    ) -> Result<(), DestError>;
    /// Makes `comps` a hard link to the file at `target` (§4.7, bit 13).
    fn make_hardlink(&mut self, comps: &[&[u8]], target: &[&[u8]], id: u64, tag: &str) -> Result<(), DestError>;
    /// Creates a FIFO, socket or device node (§4.7, capability bit 12),
    /// replacing a file or link at the name, and gives it what `given` says.
    fn make_special(&mut self, comps: &[&[u8]], meta: &FileMeta, given: Given<'_>, tag: &str) -> Result<(), DestError>;
    /// What is under `comps` (sync, §5.15), in listing order, the entry at
    /// `comps` itself first (with an empty path); nothing there lists nothing.
    fn list(
        &mut self,
        comps: &[&[u8]],
        sums: bool,
    ) -> Result<Box<dyn Iterator<Item = io::Result<Listed>> + Send>, DestError>;
    /// Removes the entry at `comps` (a directory only when it is empty), never
    /// following a symlink; nothing there is not an error.
    fn remove(&mut self, comps: &[&[u8]]) -> Result<(), DestError>;
    /// Opens a file to receive (§5.6, §5.11).
    fn open_file(&mut self, comps: &[&[u8]], ident: &Identity, reuse: Reuse) -> Result<Opened, DestError>;
    /// Gives a directory its owner, mode and mtime once its contents are complete.
    fn set_dir_meta(&mut self, comps: &[&[u8]], given: Given<'_>) -> io::Result<()>;
}

/// The local directory tree under a root, confined (see [`DestRoot`]).
pub(crate) struct LocalDir {
    root: DestRoot,
    cfg: StoreConfig,
}

impl LocalDir {
    /// Opens the root directory.
    pub(crate) fn open(path: &Path, cfg: StoreConfig) -> io::Result<LocalDir> {
        Ok(LocalDir { root: DestRoot::open(path)?, cfg })
    }

    /// Size and mtime of the regular file at `comps`, if there is one.
    pub(crate) fn stat(&mut self, comps: &[&[u8]]) -> Option<(u64, (i64, u32))> {
        self.root.stat_file(comps)
    }

    /// A local copy links what the source links.
    pub(crate) fn keeps_hardlinks(&self) -> bool {
        self.cfg.hardlinks
    }

    /// A local copy makes special files.
    pub(crate) fn keeps_specials(&self) -> bool {
        self.cfg.specials
    }

    /// A local copy carries extended attributes.
    pub(crate) fn keeps_xattrs(&self) -> bool {
        self.cfg.xattrs
    }

    /// The attributes a local copy gives an entry (read into its record by the walk).
    pub(crate) fn xattrs_of<'a>(&self, m: &'a FileMeta) -> Option<super::xattrs::Giving<'a>> {
        self.cfg.xattrs.then_some((&m.xattrs[..], super::xattrs::Policy::Permitted))
    }

    /// The ids a local copy gives an entry: the source's, when it keeps owners.
    pub(crate) fn owner_of(&self, m: &FileMeta) -> Option<(u32, u32)> {
        m.owner.as_ref().filter(|_| self.cfg.owners).map(|o| (o.uid, o.gid))
    }
}

impl Destination for LocalDir {
    fn target_kind(&mut self, comps: &[&[u8]]) -> Result<TargetKind, DestError> {
        self.root.target_kind(comps)
    }

    fn make_dir(&mut self, comps: &[&[u8]]) -> Result<bool, DestError> {
        let existed = self.root.target_kind(comps)? == TargetKind::Dir;
        self.root.make_dir(comps).map(|_| !existed)
    }

    fn make_symlink(
        &mut self,
        comps: &[&[u8]],
        meta: &FileMeta,
        owner: Option<(u32, u32)>,
        tag: &str,
    ) -> Result<(), DestError> {
        let temp = dest::temp_name(tag, meta.id);
        let given = Given { mode: None, mtime: (meta.mtime_sec, meta.mtime_nsec), owner, xattrs: None };
        self.root.make_symlink(comps, &meta.link, given, &temp)
    }

    fn make_hardlink(&mut self, comps: &[&[u8]], target: &[&[u8]], id: u64, tag: &str) -> Result<(), DestError> {
        self.root.make_hardlink(comps, target, &dest::temp_name(tag, id))
    }

    fn make_special(&mut self, comps: &[&[u8]], meta: &FileMeta, given: Given<'_>, tag: &str) -> Result<(), DestError> {
        let temp = dest::temp_name(tag, meta.id);
        self.root.make_special(comps, (meta.kind, meta.rdev), given, &temp)
    }

    fn list(
        &mut self,
        comps: &[&[u8]],
        sums: bool,
    ) -> Result<Box<dyn Iterator<Item = io::Result<Listed>> + Send>, DestError> {
        Ok(Box::new(self.root.list(comps, sums)?))
    }

    fn remove(&mut self, comps: &[&[u8]]) -> Result<(), DestError> {
        self.root.remove(comps)
    }

    fn open_file(&mut self, comps: &[&[u8]], ident: &Identity, reuse: Reuse) -> Result<Opened, DestError> {
        Ok(match self.root.open_partial(comps, ident, reuse)? {
            DirOpened::InPlace => Opened::InPlace,
            DirOpened::Partial(t, held, changed) => Opened::Partial(
                Box::new(LocalFile { t, durable: self.cfg.durable, sparse: self.cfg.sparse }),
                held,
                changed,
            ),
        })
    }

    fn set_dir_meta(&mut self, comps: &[&[u8]], given: Given<'_>) -> io::Result<()> {
        let fd = self.root.dir(comps, false).map_err(|e| io::Error::other(e.to_string()))?;
        dest::set_dir_meta(&fd, given)
    }
}

/// A file received into a [`LocalDir`]: its partial file and journal.
struct LocalFile {
    t: TempFile,
    durable: bool,
    sparse: bool,
}

impl Incoming for LocalFile {
    fn reserve(&self, offset: u64, len: u64) -> io::Result<()> {
        dest::reserve(&self.t.file, offset, len)
    }

    fn write_piece(&self, pw: &mut PieceWriter, offset: u64, n: usize) -> io::Result<()> {
        pw.write(&self.t.file, offset, n)
    }

    fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        super::holes::punch(&self.t.file, offset, len)
    }

    fn record(&self, idx: u32, hash: [u8; HASH_LEN]) -> io::Result<()> {
        match &self.t.journal {
            Some((j, _)) => j.lock().expect("journal").add(idx, hash),
            None => Ok(()),
        }
    }

    fn retract(&self, idx: u32) -> io::Result<()> {
        match &self.t.journal {
            Some((j, _)) => j.lock().expect("journal").retract(idx),
            None => Ok(()),
        }
    }

    fn seed_from_old(&self, new_size: u64, chunk_size: u64) -> Vec<(u32, [u8; HASH_LEN])> {
        dest::seed_from_old(&self.t.dir, &self.t.name, &self.t.file, new_size, chunk_size)
    }

    fn place(&self, given: Given<'_>) -> io::Result<()> {
        dest::finalize(&self.t, given, self.durable)
    }

    fn copy_from(&self, src: &std::fs::File, len: u64) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        // A file with as many blocks as bytes has no hole to look for (on tmpfs
        // the look walks every page).
        let dense = src.metadata().is_ok_and(|m| m.blocks().saturating_mul(512) >= len);
        let holes = if self.sparse && !dense && len > 0 { super::holes::holes(src, 0, len) } else { Vec::new() };
        if holes.is_empty() {
            return super::pieces::copy_range(src, &self.t.file, (0, len));
        }
        // Only the data moves; the holes are made holes here too (a partial
        // reused from earlier may hold data there), and the size is the source's
        // even where it ends in a hole.
        self.t.file.set_len(len)?;
        for &(a, b) in &holes {
            super::holes::punch(&self.t.file, a, b - a)?;
        }
        for (a, b) in super::holes::data_ranges(&holes, len) {
            super::pieces::copy_range(src, &self.t.file, (a, b - a))?;
        }
        Ok(())
    }

    fn discard(&self) {
        dest::discard(&self.t);
    }

    fn keep(&self) -> Option<Kept> {
        dest::keep(&self.t)
    }
}

/// `--discard`: every entry is taken and verified, nothing is written.
pub(crate) struct Discard;

/// A file received into [`Discard`].
struct Dropped;

impl Incoming for Dropped {
    fn reserve(&self, _: u64, _: u64) -> io::Result<()> {
        Ok(())
    }
    fn write_piece(&self, _: &mut PieceWriter, _: u64, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn zero(&self, _: u64, _: u64) -> io::Result<()> {
        Ok(())
    }
    fn record(&self, _: u32, _: [u8; HASH_LEN]) -> io::Result<()> {
        Ok(())
    }
    fn retract(&self, _: u32) -> io::Result<()> {
        Ok(())
    }
    fn copy_from(&self, _: &std::fs::File, _: u64) -> io::Result<()> {
        Ok(())
    }
    fn seed_from_old(&self, _: u64, _: u64) -> Vec<(u32, [u8; HASH_LEN])> {
        Vec::new()
    }
    fn place(&self, _: Given<'_>) -> io::Result<()> {
        Ok(())
    }
    fn discard(&self) {}
    fn keep(&self) -> Option<Kept> {
        None
    }
}

impl Destination for Discard {
    fn target_kind(&mut self, _: &[&[u8]]) -> Result<TargetKind, DestError> {
        Ok(TargetKind::Dir)
    }
    fn make_dir(&mut self, _: &[&[u8]]) -> Result<bool, DestError> {
        Ok(true)
    }
    fn list(&mut self, _: &[&[u8]], _: bool) -> Result<Box<dyn Iterator<Item = io::Result<Listed>> + Send>, DestError> {
        Ok(Box::new(std::iter::empty()))
    }

    fn remove(&mut self, _: &[&[u8]]) -> Result<(), DestError> {
        Ok(())
    }

    fn make_symlink(&mut self, _: &[&[u8]], _: &FileMeta, _: Option<(u32, u32)>, _: &str) -> Result<(), DestError> {
        Ok(())
    }
    fn make_special(&mut self, _: &[&[u8]], _: &FileMeta, _: Given<'_>, _: &str) -> Result<(), DestError> {
        Ok(())
    }
    fn make_hardlink(&mut self, _: &[&[u8]], _: &[&[u8]], _: u64, _: &str) -> Result<(), DestError> {
        Ok(())
    }
    fn open_file(&mut self, _: &[&[u8]], _: &Identity, _: Reuse) -> Result<Opened, DestError> {
        Ok(Opened::Partial(Box::new(Dropped), Vec::new(), false))
    }
    fn set_dir_meta(&mut self, _: &[&[u8]], _: Given<'_>) -> io::Result<()> {
        Ok(())
    }
}

/// Opens the destination for a receiving session: the directory at `root`, or
/// nothing at all (`None`: `--discard`).
pub(crate) fn open(root: Option<&Path>, cfg: StoreConfig) -> io::Result<Box<dyn Destination>> {
    Ok(match root {
        Some(r) => Box::new(LocalDir::open(r, cfg)?),
        None => Box::new(Discard),
    })
}

/// A shared handle on a file being received (the lanes and the control
/// thread hold it at once).
pub(crate) type IncomingRef = Arc<dyn Incoming>;

/// A source file open for reading (the sending role reads chunks through it).
pub(crate) trait SourceFile: Send + Sync {
    /// Fills `buf` from `offset`; an end of file before it is full is
    /// `UnexpectedEof` (the source shrank).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Reads `n` bytes at `offset` into a new buffer (QUIC keeps what it is
    /// given until acknowledged, so each piece gets its own).
    fn read_owned(&self, n: usize, offset: u64) -> io::Result<bytes::BytesMut> {
        let mut b = bytes::BytesMut::zeroed(n);
        self.read_exact_at(&mut b, offset)?;
        Ok(b)
    }

    /// The holes of `len` bytes from `offset` (absolute ranges, in order),
    /// where the source can tell; none where it cannot.
    fn holes(&self, _offset: u64, _len: u64) -> Vec<(u64, u64)> {
        Vec::new()
    }

    /// The hash of `len` bytes at `offset`, read through `buf`; `None` when
    /// they cannot be read.
    fn hash_range(&self, offset: u64, len: usize, buf: &mut [u8]) -> Option<[u8; HASH_LEN]> {
        let mut h = crate::proto::hash::ChunkHasher::new();
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len());
            self.read_exact_at(&mut buf[..n], offset + done as u64).ok()?;
            h.update(&buf[..n]);
            done += n;
        }
        Some(h.finish())
    }
}

/// What a source looks like now: size and mtime (to tell whether it changed
/// while it was sent, protocol-spec §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
}

/// Where a sending session's files come from. Today the local tree; a second
/// local directory, an object store or a shard plug in here.
pub(crate) trait Source: Send + Sync {
    /// The entries under `roots` (local path, destination path), depth first.
    fn walk(
        &self,
        roots: Vec<(std::path::PathBuf, Vec<u8>)>,
        prune: Option<super::walk::Prune>,
    ) -> Box<dyn Iterator<Item = super::walk::Walked> + Send>;
    /// Opens a file the walk listed.
    fn open(&self, path: &Path) -> io::Result<Box<dyn SourceFile>>;
    /// The file's size and mtime now.
    fn stamp(&self, path: &Path) -> io::Result<Stamp>;
}

/// The local file system: a client's sources (command-line roots followed if
/// they are symlinks, as `cp -r` does), or a daemon's root it serves pulls
/// from (every file opened under it, never through a symlink; its own partial
/// files left out).
pub(crate) struct LocalTree {
    served: Option<super::dest::SourceRoot>,
}

impl LocalTree {
    /// A client's sources.
    pub(crate) fn client() -> LocalTree {
        LocalTree { served: None }
    }

    /// What a daemon serves from under `root`.
    pub(crate) fn served(root: super::dest::SourceRoot) -> LocalTree {
        LocalTree { served: Some(root) }
    }
}

impl Source for LocalTree {
    fn walk(
        &self,
        roots: Vec<(std::path::PathBuf, Vec<u8>)>,
        prune: Option<super::walk::Prune>,
    ) -> Box<dyn Iterator<Item = super::walk::Walked> + Send> {
        match self.served {
            Some(_) => Box::new(super::walk::Walker::serving(roots).with_prune(prune)),
            None => Box::new(super::walk::Walker::new(roots).with_prune(prune)),
        }
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn SourceFile>> {
        let f = match &self.served {
            Some(root) => root.open_file(path)?,
            None => std::fs::File::open(path)?,
        };
        Ok(Box::new(LocalSourceFile(f, std::sync::Mutex::new(None))))
    }

    fn stamp(&self, path: &Path) -> io::Result<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Stamp { size: m.len(), mtime_sec: m.mtime(), mtime_nsec: m.mtime_nsec().clamp(0, 999_999_999) as u32 })
    }
}

/// A local file open for reading, and a range known to hold no hole (once
/// looked at): on tmpfs SEEK_HOLE walks every page up to the hole it finds, so
/// asking it per chunk of a dense file cost the whole rest of the file each
/// time (a 2 GiB push ran at half speed). A file with as many blocks as bytes
/// is not asked at all.
struct LocalSourceFile(std::fs::File, std::sync::Mutex<Option<(u64, u64)>>);

impl SourceFile for LocalSourceFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn holes(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut g = self.1.lock().expect("holes");
        let known = g.get_or_insert_with(|| match self.0.metadata() {
            Ok(m) if m.blocks().saturating_mul(512) >= m.len() => (0, u64::MAX),
            _ => (0, 0),
        });
        if offset >= known.0 && offset.saturating_add(len) <= known.1 {
            return Vec::new();
        }
        let (found, clear) = super::holes::holes_from(&self.0, offset, len);
        *known = (offset, clear);
        found
    }

    fn read_owned(&self, n: usize, off: u64) -> io::Result<bytes::BytesMut> {
        use std::os::fd::AsRawFd;
        let mut b = bytes::BytesMut::with_capacity(n);
        let mut got = 0;
        while got < n {
            let spare = &mut b.spare_capacity_mut()[got..n];
            // SAFETY: pread writes at most spare.len() bytes into memory we own.
            let r = unsafe {
                libc::pread(self.0.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), (off + got as u64) as i64)
            };
            match r {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                r if r > 0 => got += r as usize,
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        // SAFETY: the first n bytes were written by pread above (never initialised twice).
        unsafe { b.set_len(n) };
        Ok(b)
    }
}
