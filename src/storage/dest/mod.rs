//! The destination tree, confined to a root directory.
//!
//! Every path is resolved one component at a time with `openat(O_NOFOLLOW)` from an
//! open descriptor of the root, so `..`, absolute paths and symlinks can never lead
//! outside it, and paths longer than PATH_MAX work. Files are written under a
//! temporary name in their final directory and renamed into place only when
//! complete, so a final name never shows a partial or wrong file.

use super::journal::{Found, Held, Identity, Journal};
use super::pieces::SharedFile;
use crate::proto::frame::TargetKind;

use crate::proto::path::show;
use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a destination operation failed.
#[derive(Debug)]
pub(crate) enum DestError {
    /// The path leads through something gfast will not follow or replace.
    Refused(String),
    /// The file system said no.
    Io(String, io::Error),
    /// Another session is writing the same file.
    Busy(String),
}

impl DestError {
    /// True when the file system is out of space or quota: no later file can succeed.
    pub(crate) fn is_no_space(&self) -> bool {
        matches!(self, DestError::Io(_, e) if e.kind() == io::ErrorKind::StorageFull
            || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

impl fmt::Display for DestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestError::Refused(m) | DestError::Busy(m) => write!(f, "{m}"),
            DestError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

/// Keep at most this many directory descriptors open per session.
const DIR_CACHE_MAX: usize = 256;

/// A confined destination root with a small cache of open directories.
pub(crate) struct DestRoot {
    root: Arc<OwnedFd>,
    cache: HashMap<Vec<u8>, Arc<OwnedFd>>,
    /// Directories this root made (one session's): nothing of an earlier run
    /// can be in them, so a file there needs no look for its partial. Cleared
    /// with the cache (then the look is made again).
    made: std::collections::HashSet<Vec<u8>>,
    /// The root's path, for what must be found again later (expiring partials).
    path: std::path::PathBuf,
}

/// Files larger than this are checked against the free space when announced.
const SPACE_CHECKED_FROM: u64 = 64 << 10;

fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

fn openat(dir: &OwnedFd, name: &[u8], flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: `c` is a valid NUL-terminated string and `dir` an open descriptor.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lstat_at(dir: &OwnedFd, name: &[u8]) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptor, valid C string, and `st` is written by the kernel on success.
    let r = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so the struct is initialised.
    Ok(unsafe { st.assume_init() })
}

fn kind_of(st: &libc::stat) -> TargetKind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => TargetKind::Dir,
        libc::S_IFREG => TargetKind::File,
        _ => TargetKind::Other,
    }
}

fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

impl DestRoot {
    /// Opens the root directory (the root itself may be reached through a symlink).
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let c = cstr(path.as_os_str().as_bytes())?;
        // SAFETY: valid C string; the result is checked below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let root = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(DestRoot { root, cache: HashMap::new(), made: Default::default(), path: path.to_path_buf() })
    }

    /// Opens the directory named by `comps` (all components), creating missing ones
    /// with mode 0755 when `create` is set. Symlinks and non-directories are refused.
    pub(crate) fn dir(&mut self, comps: &[&[u8]], create: bool) -> Result<Arc<OwnedFd>, DestError> {
        if comps.is_empty() {
            return Ok(self.root.clone());
        }
        let key = comps.join(&b'/');
        if let Some(d) = self.cache.get(&key) {
            return Ok(d.clone());
        }
        let parent = self.dir(&comps[..comps.len() - 1], create)?;
        let name = comps[comps.len() - 1];
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let mut made = false;
        let fd = match openat(&parent, name, flags, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                let c = cstr(name).map_err(|e| DestError::Io(show(&key), e))?;
                // SAFETY: valid descriptor and C string.
                let r = unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o755) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(DestError::Io(format!("cannot create directory {}", show(&key)), e));
                    }
                } else {
                    made = true;
                }
                openat(&parent, name, flags, 0).map_err(|e| self.explain(&parent, name, &key, e))?
            }
            Err(e) => return Err(self.explain(&parent, name, &key, e)),
        };
        if self.cache.len() >= DIR_CACHE_MAX {
            self.cache.clear();
            self.made.clear();
        }
        if made {
            self.made.insert(key.clone());
        }
        let fd = Arc::new(fd);
        self.cache.insert(key, fd.clone());
        Ok(fd)
    }

    fn explain(&self, parent: &OwnedFd, name: &[u8], key: &[u8], e: io::Error) -> DestError {
        match lstat_at(parent, name) {
            Ok(st) if is_symlink(&st) => {
                DestError::Refused(format!("{} is a symlink; gfast does not follow symlinks under --root", show(key)))
            }
            Ok(st) if kind_of(&st) != TargetKind::Dir => {
                DestError::Refused(format!("{} is not a directory", show(key)))
            }
            _ => DestError::Io(format!("cannot open directory {}", show(key)), e),
        }
    }

    /// What is at `comps` now, without following a final symlink.
    pub(crate) fn target_kind(&mut self, comps: &[&[u8]]) -> Result<TargetKind, DestError> {
        let Some((name, parent)) = comps.split_last() else { return Ok(TargetKind::Dir) };
        let pd = match self.dir(parent, false) {
            Ok(d) => d,
            Err(DestError::Io(_, e)) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(TargetKind::Missing),
            Err(e) => return Err(e),
        };
        match lstat_at(&pd, name) {
            Ok(st) if is_symlink(&st) => Err(DestError::Refused(format!(
                "{} is a symlink; gfast does not follow symlinks under --root",
                show(&comps.join(&b'/'))
            ))),
            Ok(st) => Ok(kind_of(&st)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(TargetKind::Missing),
            Err(e) => Err(DestError::Io(format!("cannot inspect {}", show(&comps.join(&b'/'))), e)),
        }
    }

    /// Creates (or keeps) the directory `comps` and its parents.
    pub(crate) fn make_dir(&mut self, comps: &[&[u8]]) -> Result<Arc<OwnedFd>, DestError> {
        self.dir(comps, true)
    }

    /// Creates a symlink at `comps` pointing at `target`, replacing a file or link
    /// that is there, atomically (made under a temporary name, then renamed);
    /// the link itself gets `mtime` (a link's own time, as rsync -a keeps it).
    pub(crate) fn make_symlink(
        &mut self,
        comps: &[&[u8]],
        target: &[u8],
        given: Given<'_>,
        temp: &[u8],
    ) -> Result<(), DestError> {
        let mtime = given.mtime;
        let (name, parent) = comps.split_last().ok_or_else(|| DestError::Refused("empty path".into()))?;
        let dir = self.dir(parent, true)?;
        let tmp = temp;
        let ct = cstr(target).map_err(|e| DestError::Io("symlink target".into(), e))?;
        let cn = cstr(tmp).map_err(|e| DestError::Io("temporary name".into(), e))?;
        // SAFETY: valid C strings and descriptor.
        if unsafe { libc::symlinkat(ct.as_ptr(), dir.as_raw_fd(), cn.as_ptr()) } < 0 {
            let e = io::Error::last_os_error();
            return Err(DestError::Io(format!("cannot create symlink {}", show(&comps.join(&b'/'))), e));
        }
        let ts = [
            libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
            libc::timespec { tv_sec: mtime.0 as libc::time_t, tv_nsec: mtime.1 as libc::c_long },
        ];
        // Best effort: a file system that cannot time a link still gets the link.
        // SAFETY: valid descriptor, C string and a two-element timespec array.
        unsafe { libc::utimensat(dir.as_raw_fd(), cn.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
        if let Some(ids) = given.owner {
            if let Err(e) = super::owners::chown_at(dir.as_fd(), tmp, ids) {
                remove_temp(&dir, tmp);
                return Err(DestError::Io(format!("cannot give symlink {} its owner", show(&comps.join(&b'/'))), e));
            }
        }
        rename_into_place(&dir, tmp, name).map_err(|e| {
            remove_temp(&dir, tmp);
            DestError::Io(format!("cannot put symlink {} in place", show(&comps.join(&b'/'))), e)
        })
    }

    /// Size and mtime of the regular file at `comps` (never through a symlink).
    pub(crate) fn stat_file(&mut self, comps: &[&[u8]]) -> Option<(u64, (i64, u32))> {
        let (name, parent) = comps.split_last()?;
        let dir = self.dir(parent, false).ok()?;
        let st = lstat_at(&dir, name).ok()?;
        (st.st_mode & libc::S_IFMT == libc::S_IFREG)
            .then_some((st.st_size as u64, (st.st_mtime, st.st_mtime_nsec.clamp(0, 999_999_999) as u32)))
    }

    /// Makes `comps` a hard link to the regular file at `target` (both under
    /// the root, never through a symlink), through a temporary name and a
    /// rename; a name that is that file already is left as it is.
    pub(crate) fn make_hardlink(&mut self, comps: &[&[u8]], target: &[&[u8]], temp: &[u8]) -> Result<(), DestError> {
        let shown = || show(&comps.join(&b'/'));
        let (tname, tparent) = target.split_last().ok_or_else(|| DestError::Refused("empty link target".into()))?;
        let tdir = self.dir(tparent, false)?;
        let st = lstat_at(&tdir, tname)
            .map_err(|e| DestError::Io(format!("cannot link {} to {}", shown(), show(&target.join(&b'/'))), e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(DestError::Refused(format!("{}: its link target is not a regular file", shown())));
        }
        let (name, parent) = comps.split_last().ok_or_else(|| DestError::Refused("empty path".into()))?;
        let dir = self.dir(parent, true)?;
        if lstat_at(&dir, name).is_ok_and(|n| n.st_ino == st.st_ino && n.st_dev == st.st_dev) {
            return Ok(());
        }
        let (ct, cn) = (
            cstr(tname).map_err(|e| DestError::Io("link target".into(), e))?,
            cstr(temp).map_err(|e| DestError::Io("temporary name".into(), e))?,
        );
        // SAFETY: valid descriptors and C strings; flags 0: a symlink is not followed.
        if unsafe { libc::linkat(tdir.as_raw_fd(), ct.as_ptr(), dir.as_raw_fd(), cn.as_ptr(), 0) } < 0 {
            return Err(DestError::Io(format!("cannot link {}", shown()), io::Error::last_os_error()));
        }
        rename_into_place(&dir, temp, name).map_err(|e| {
            remove_temp(&dir, temp);
            DestError::Io(format!("cannot put the link {} in place", shown()), e)
        })
    }

    /// Creates a FIFO, socket or device node (`kind`, `mode`, `rdev`) under a
    /// temporary name, gives it its time, owner and mode, and renames it into
    /// place, replacing a file or link there.
    pub(crate) fn make_special(
        &mut self,
        comps: &[&[u8]],
        (kind, rdev): (crate::proto::frame::EntryKind, u64),
        given: Given<'_>,
        temp: &[u8],
    ) -> Result<(), DestError> {
        use crate::proto::frame::EntryKind;
        let shown = || show(&comps.join(&b'/'));
        let (name, parent) = comps.split_last().ok_or_else(|| DestError::Refused("empty path".into()))?;
        let dir = self.dir(parent, true)?;
        let fmt = match kind {
            EntryKind::Fifo => libc::S_IFIFO,
            EntryKind::Socket => libc::S_IFSOCK,
            EntryKind::CharDev => libc::S_IFCHR,
            EntryKind::BlockDev => libc::S_IFBLK,
            _ => return Err(DestError::Refused(format!("{} is not a special file", shown()))),
        };
        let cn = cstr(temp).map_err(|e| DestError::Io("temporary name".into(), e))?;
        let mode = given.mode.unwrap_or(0o600) & 0o7777;
        // SAFETY: valid C string and descriptor.
        if unsafe { libc::mknodat(dir.as_raw_fd(), cn.as_ptr(), fmt | (mode & 0o777), rdev as libc::dev_t) } < 0 {
            return Err(DestError::Io(format!("cannot create {}", shown()), io::Error::last_os_error()));
        }
        let fail = |what: &str, e: io::Error| {
            remove_temp(&dir, temp);
            DestError::Io(format!("cannot {what} {}", shown()), e)
        };
        if let Some(ids) = given.owner {
            super::owners::chown_at(dir.as_fd(), temp, ids).map_err(|e| fail("give its owner to", e))?;
        }
        // After the owner (which clears setuid and setgid), the whole mode.
        // SAFETY: valid descriptor and C string; the name is a node this call made.
        if unsafe { libc::fchmodat(dir.as_raw_fd(), cn.as_ptr(), mode as libc::mode_t, 0) } < 0 {
            return Err(fail("set the mode of", io::Error::last_os_error()));
        }
        let ts = [
            libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
            libc::timespec { tv_sec: given.mtime.0 as libc::time_t, tv_nsec: given.mtime.1 as libc::c_long },
        ];
        // SAFETY: valid descriptor, C string and a two-element timespec array.
        unsafe { libc::utimensat(dir.as_raw_fd(), cn.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
        rename_into_place(&dir, temp, name).map_err(|e| fail("put in place", e))
    }

    /// Drops the descriptors kept of directory `key` and everything below it
    /// (it is about to be removed).
    pub(crate) fn forget_dirs(&mut self, key: &[u8]) {
        let gone = |k: &[u8]| k == key || (k.starts_with(key) && k.get(key.len()) == Some(&b'/'));
        self.cache.retain(|k, _| !gone(k));
        self.made.retain(|k| !gone(k));
    }
}

/// The temporary name of file `id` of the session tagged `tag` (protocol-spec §5.6),
/// used when the resumable name is busy: short and fixed in length.
pub(crate) fn temp_name(tag: &str, id: u64) -> Vec<u8> {
    format!(".gfast-{tag}-{id}.part").into_bytes()
}

/// A file being received: its partial file in its final directory.
pub(crate) struct TempFile {
    /// The open file, shared by the lanes that write chunks into it.
    pub file: Arc<SharedFile>,
    /// The directory it lives in (and will be renamed in).
    pub dir: Arc<OwnedFd>,
    /// Temporary name.
    pub temp: Vec<u8>,
    /// Final name (last path component).
    pub name: Vec<u8>,
    /// The root, and the directory's path under it (to find it again later
    /// without holding its descriptor).
    pub place: (std::path::PathBuf, Vec<u8>),
    /// The chunk journal and its name.
    pub journal: Option<(Arc<Mutex<Journal>>, Vec<u8>)>,
    /// An anonymous file (O_TMPFILE): it gets the name `temp` only when complete.
    pub anon: bool,
}

/// Delta (protocol-spec §5.13): copies into `file` the whole chunks of the file
/// now under `name` in `dir` that lie within both that file and the new size (on the
/// grid of `chunk_size`), and returns their indexes and hashes. Best effort: no old regular file, or an error on the way,
/// ends the list there (those chunks are simply sent).
pub(crate) fn seed_from_old(
    dir: &OwnedFd,
    name: &[u8],
    file: &SharedFile,
    new_size: u64,
    chunk_size: u64,
) -> Vec<(u32, [u8; crate::proto::frame::HASH_LEN])> {
    use crate::proto::hash::ChunkHasher;
    use std::os::unix::fs::FileExt;
    let mut sums = Vec::new();
    // Only a regular file is opened (a device node or FIFO never is).
    if !lstat_at(dir, name).is_ok_and(|st| kind_of(&st) == TargetKind::File) {
        return sums;
    }
    let Ok(fd) = openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0) else { return sums };
    let old = File::from(fd);
    let old_size = match old.metadata() {
        Ok(m) if m.is_file() => m.len(),
        _ => return sums,
    };
    let mut buf = vec![0u8; (1 << 20).min(chunk_size as usize)];
    let mut off = 0u64;
    while off < new_size {
        // Whole chunks only: a short one would let the sender, who picks the
        // announced size, learn the hash of an old file's first bytes (and so
        // the bytes, a few at a time). The last, short chunk is always sent.
        let len = (new_size - off).min(chunk_size);
        if len < chunk_size || off + len > old_size {
            break;
        }
        let mut h = ChunkHasher::new();
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            if old.read_exact_at(&mut buf[..n], off + done).is_err() || file.write_at(&buf[..n], off + done).is_err() {
                return sums;
            }
            h.update(&buf[..n]);
            done += n as u64;
        }
        sums.push(((off / chunk_size) as u32, h.finish()));
        off += len;
    }
    sums
}

/// What [`DestRoot::open_partial`] found at the destination.
pub(crate) enum Opened {
    /// Resume: the final name already holds this file (same size and mtime).
    InPlace,
    /// A partial file to write into, with the chunks its journal already holds,
    /// and whether it had belonged to an earlier version of the source.
    Partial(TempFile, Held, bool),
}

impl DestRoot {
    /// Opens the partial file for an entry at `comps` (protocol-spec §5.11): the
    /// resumable `.gfast-<H>.part` with its journal, under an advisory lock so no
    /// two sessions write it (a session still holding it gets 5 s to let go, then
    /// the file fails as busy). With `resume`, a file already in place is reported
    /// as such and an existing journal's chunks are kept; without it the partial
    /// starts over. Refuses when a directory stands at the final name.
    pub(crate) fn open_partial(
        &mut self,
        comps: &[&[u8]],
        ident: &Identity,
        reuse: crate::storage::store::Reuse,
    ) -> Result<Opened, DestError> {
        use crate::storage::store::Reuse;
        let resume = reuse != Reuse::Fresh;
        let (name, parent) = comps.split_last().ok_or_else(|| DestError::Refused("empty path".into()))?;
        let dir = self.dir(parent, true)?;
        let shown = || show(&comps.join(&b'/'));
        // A directory this session made holds only what this session put there:
        // no file under the name, no partial of an earlier run (a name taken
        // meanwhile by another session is found when the file is put in place).
        let fresh = !parent.is_empty() && self.made.contains(&parent.join(&b'/'));
        if let Some(st) = (!fresh).then(|| lstat_at(&dir, name).ok()).flatten() {
            if kind_of(&st) == TargetKind::Dir {
                return Err(DestError::Refused(format!("{} is a directory; not replacing it with a file", shown())));
            }
            let same = kind_of(&st) == TargetKind::File
                && st.st_size as u64 == ident.size
                && st.st_mtime == ident.mtime_sec
                && st.st_mtime_nsec == ident.mtime_nsec as i64;
            if reuse == Reuse::All && same {
                remove_stale_partial(&dir, ident);
                return Ok(Opened::InPlace);
            }
        }
        let io_err = |e| DestError::Io(format!("cannot create {}", shown()), e);
        // Nothing is reserved ahead of the data (a FILE of a few bytes must not
        // take gigabytes of disk): an announced size that cannot fit is refused
        // now, and the space is taken as the data arrives.
        check_space(&dir, ident.size)
            .map_err(|e| DestError::Io(format!("{} announces {} bytes", shown(), ident.size), e))?;
        // A file of one chunk resumes all or nothing: write it into an anonymous
        // file that gets a name only when complete, so a crash leaves nothing
        // behind and no journal or lock is needed (on tmpfs 29.6k -> 49k small
        // files/s against the journaled path).
        if ident.size <= ident.chunk_size {
            // A journal under this name belongs to an earlier, larger version;
            // none is in a directory this session made.
            let look = resume && !fresh;
            let changed = look && lstat_at(&dir, &ident.file_names().1).is_ok();
            if look {
                remove_stale_partial(&dir, ident);
            }
            if let Ok(fd) = openat(&dir, b".", libc::O_TMPFILE | libc::O_WRONLY, 0o600) {
                let file = File::from(fd);
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
                let temp = format!(".gfast-{}-{n}.link", PID.get_or_init(std::process::id)).into_bytes();
                let t = TempFile {
                    file: Arc::new(SharedFile::new(file)),
                    dir,
                    temp,
                    name: name.to_vec(),
                    place: (self.path.clone(), parent.join(&b'/')),
                    journal: None,
                    anon: true,
                };
                return Ok(Opened::Partial(t, Vec::new(), changed));
            }
            // No O_TMPFILE on this file system: the journaled path below.
        }
        let (part, jname) = ident.file_names();
        // A session that just lost its client may still hold the lock for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Some(o) = own_partial(&dir, &part, &jname, ident, resume).map_err(io_err)? {
                let journal = Some((Arc::new(Mutex::new(o.journal)), jname));
                let t = TempFile {
                    file: Arc::new(SharedFile::new(o.file)),
                    dir,
                    temp: part,
                    name: name.to_vec(),
                    place: (self.path.clone(), parent.join(&b'/')),
                    journal,
                    anon: false,
                };
                return Ok(Opened::Partial(t, o.have, o.changed));
            }
            if std::time::Instant::now() > deadline {
                return Err(DestError::Busy(format!("another session is writing {} right now", shown())));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The file is in place: a partial file and journal still named after it are
/// left over (a session that lost its client raced another that finished the
/// file, or a receiver died between removing the journal and the rename). They
/// go, unless a live session holds the partial file's lock.
fn remove_stale_partial(dir: &OwnedFd, ident: &Identity) {
    let (part, jname) = ident.file_names();
    match openat(dir, &part, libc::O_RDONLY | libc::O_NOFOLLOW, 0) {
        Ok(fd) => {
            // SAFETY: valid descriptor; a non-blocking exclusive advisory lock.
            if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                remove_temp(dir, &jname);
                remove_temp(dir, &part);
            }
        }
        Err(_) => remove_temp(dir, &jname),
    }
}

/// Opens (or creates) the shared partial file and takes its lock; `None` when
/// another session holds it. Resumes its journal when asked and it matches, else
/// starts both over.
fn own_partial(dir: &OwnedFd, part: &[u8], jname: &[u8], ident: &Identity, resume: bool) -> io::Result<Option<Owned>> {
    let fd = openat(dir, part, libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW, 0o600)?;
    // SAFETY: valid descriptor; a non-blocking exclusive advisory lock.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(None) } else { Err(e) };
    }
    let file = File::from(fd);
    // The holder we waited for may have renamed this inode into place (or removed
    // it) between our open and our lock: then it is no longer the partial file,
    // and must not be touched. Try again with whatever the name holds now.
    let ours = file.metadata()?;
    match lstat_at(dir, part) {
        Ok(st)
            if st.st_ino == std::os::unix::fs::MetadataExt::ino(&ours)
                && st.st_dev == std::os::unix::fs::MetadataExt::dev(&ours) => {}
        _ => return Ok(None),
    }
    let jfd = openat(dir, jname, libc::O_RDWR | libc::O_CREAT | libc::O_APPEND | libc::O_NOFOLLOW, 0o600)?;
    let jfile = File::from(jfd);
    let mut changed = false;
    if resume {
        match Journal::open(jfile.try_clone()?, ident, &file)? {
            Found::Resumable(j, claims) if file.metadata()?.len() == ident.size => {
                let unsealed = claims.unsealed.len();
                let mut have = claims.sealed;
                let verified = super::journal::verify(&file, ident, claims.unsealed)?;
                let dropped = unsealed - verified.len();
                have.extend(verified);
                if dropped == 0 {
                    return Ok(Some(Owned { file, journal: j, have, changed: false }));
                }
                // Claims that did not verify leave the journal: a later seal must
                // never vouch for them (the chunks may be rewritten, e.g. by delta).
                drop(j);
                jfile.set_len(0)?;
                let mut j = Journal::create(jfile, ident, &file)?;
                for &(i, h) in &have {
                    j.add(i, h)?;
                }
                return Ok(Some(Owned { file, journal: j, have, changed: false }));
            }
            Found::Other => changed = true,
            _ => {}
        }
    }
    file.set_len(0)?;
    file.set_len(ident.size)?;
    jfile.set_len(0)?;
    let journal = Journal::create(jfile, ident, &file)?;
    Ok(Some(Owned { file, journal, have: Vec::new(), changed }))
}

/// A partial file this session owns (holds the lock of).
struct Owned {
    file: File,
    journal: Journal,
    have: Held,
    /// An earlier version's partial was there: the source changed since.
    changed: bool,
}

/// Allocates `len` bytes at `offset` of `file` as a chunk arrives: one extent
/// per chunk instead of blocks found write by write (2 GiB to ext4 over
/// loopback, `--no-encrypt`: see benches/README.md "Preallocation"). A file
/// system that cannot allocate ahead is left to its writes; a full one says so.
pub(crate) fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: valid descriptor; mode 0 allocates within the size already set.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset as libc::off_t, len as libc::off_t) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            return Err(e);
        }
    }
    Ok(())
}

/// Refuses a file of `size` bytes that cannot fit in the free space of the file
/// system holding `dir` (what an unprivileged user may still write), so a full
/// disk shows at the announcement, not midway through the data.
fn check_space(dir: &OwnedFd, size: u64) -> io::Result<()> {
    // A small file needs no look ahead: its first write finds a full disk as
    // surely (ENOSPC, the session's NO_SPACE), and asking the file system for
    // every one of 20,000 small files is one system call of twelve.
    if size <= SPACE_CHECKED_FROM {
        return Ok(());
    }
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid descriptor; `st` is written by the kernel on success.
    if unsafe { libc::fstatvfs(dir.as_raw_fd(), st.as_mut_ptr()) } < 0 {
        return Ok(()); // cannot tell: the writes will say
    }
    // SAFETY: fstatvfs succeeded.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    if size > free {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("only {free} bytes are free there (No space left on device)"),
        ));
    }
    Ok(())
}

/// Removes a partial file and its journal (it will not be resumed).
pub(crate) fn discard(t: &TempFile) {
    remove_temp(&t.dir, &t.temp);
    if let Some((_, j)) = &t.journal {
        remove_temp(&t.dir, j);
    }
}

/// Sets mode and mtime on the temporary file and renames it over the final name
/// (`durable`, `--fsync`: its data synced first, the directory after; off by
/// default, like rsync and cp). `mode` is
/// applied as given: the caller has masked it (a daemon strips setuid, setgid
/// and sticky bits and applies its umask). The name renamed is checked to still
/// be the verified inode, so nothing else can be put in place under its name.
/// What a complete entry is given (protocol-spec §5.6): its mode (`None`:
/// left as it is), mtime, and owner and group (`None`: this end's user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Given<'a> {
    /// Permission bits.
    pub mode: Option<u32>,
    /// Modification time: seconds, nanoseconds.
    pub mtime: (i64, u32),
    /// User and group ids.
    pub owner: Option<(u32, u32)>,
    /// Extended attributes to give, and which of them (none: nothing given).
    pub xattrs: Option<super::xattrs::Giving<'a>>,
}

pub(crate) fn finalize(t: &TempFile, given: Given<'_>, durable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (mtime_sec, mtime_nsec) = given.mtime;
    // The owner first: a change of owner clears setuid and setgid bits.
    if let Some(ids) = given.owner {
        super::owners::fchown(&t.file, ids)?;
    }
    // Before the mode: an ACL sets the group bits, the mode then its mask.
    if let Some((xs, policy)) = given.xattrs {
        super::xattrs::apply(&t.file, xs, policy)?;
    }
    if let Some(mode) = given.mode {
        t.file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    t.file.set_modified(to_system_time(mtime_sec, mtime_nsec))?;
    if durable {
        t.file.sync_data()?;
    }
    // Journal first: a crash in between leaves a complete partial file without a
    // journal (sent again), never a journal without its partial file.
    if let Some((_, j)) = &t.journal {
        remove_temp(&t.dir, j);
    }
    if t.anon {
        // A new name: the complete file is linked there directly, so a receiver
        // killed here leaves nothing behind. Replacing a file goes through a
        // temporary name and a rename, which is atomic for readers but can
        // leave that name if the process dies in between.
        match link_anonymous(&t.file, &t.dir, &t.name) {
            Ok(()) => return sync_dir(&t.dir, durable),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        link_anonymous(&t.file, &t.dir, &t.temp)?;
    }
    if !names_inode(&t.dir, &t.temp, &t.file)? {
        return Err(io::Error::other("its partial file was replaced by something else meanwhile"));
    }
    rename_into_place(&t.dir, &t.temp, &t.name).inspect_err(|_| {
        if t.anon {
            remove_temp(&t.dir, &t.temp);
        }
    })?;
    sync_dir(&t.dir, durable)
}

/// True when `name` in `dir` is the very inode `file` has open.
fn names_inode(dir: &OwnedFd, name: &[u8], file: &SharedFile) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let md = file.metadata()?;
    Ok(lstat_at(dir, name).is_ok_and(|st| st.st_ino == md.ino() && st.st_dev == md.dev()))
}

/// With `durable`, makes the directory's entries durable (fsync).
fn sync_dir(dir: &OwnedFd, durable: bool) -> io::Result<()> {
    // SAFETY: valid directory descriptor.
    if durable && unsafe { libc::fsync(dir.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives an anonymous (O_TMPFILE) file the name `name` in `dir`.
fn link_anonymous(file: &File, dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptors and C strings; AT_EMPTY_PATH links the descriptor itself.
    let r = unsafe { libc::linkat(file.as_raw_fd(), c"".as_ptr(), dir.as_raw_fd(), c.as_ptr(), libc::AT_EMPTY_PATH) };
    if r == 0 {
        return Ok(());
    }
    // Without CAP_DAC_READ_SEARCH, AT_EMPTY_PATH is refused: go through /proc.
    let p = cstr(format!("/proc/self/fd/{}", file.as_raw_fd()).as_bytes())?;
    // SAFETY: as above; the /proc link resolves to the open file.
    let r = unsafe { libc::linkat(libc::AT_FDCWD, p.as_ptr(), dir.as_raw_fd(), c.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes a temporary file, ignoring errors (used on failure paths).
pub(crate) fn remove_temp(dir: &OwnedFd, temp: &[u8]) {
    if let Ok(c) = cstr(temp) {
        // SAFETY: valid descriptor and C string.
        unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    }
}

fn rename_into_place(dir: &OwnedFd, from: &[u8], to: &[u8]) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: valid descriptor and C strings.
    if unsafe { libc::renameat(dir.as_raw_fd(), f.as_ptr(), dir.as_raw_fd(), t.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets mode (unless `None`) and mtime of an existing directory (applied after its contents).
pub(crate) fn set_dir_meta(dir: &OwnedFd, given: Given<'_>) -> io::Result<()> {
    let (mtime_sec, mtime_nsec) = given.mtime;
    if let Some(ids) = given.owner {
        super::owners::chown_at(dir.as_fd(), b"", ids)?;
    }
    if let Some((xs, policy)) = given.xattrs.filter(|(xs, _)| !xs.is_empty()) {
        super::xattrs::apply(&File::from(dir.try_clone()?), xs, policy)?;
    }
    if let Some(mode) = given.mode {
        // SAFETY: valid descriptor.
        if unsafe { libc::fchmod(dir.as_raw_fd(), (mode & 0o7777) as libc::mode_t) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let ts = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: mtime_sec as libc::time_t, tv_nsec: mtime_nsec as libc::c_long },
    ];
    // SAFETY: valid descriptor and a two-element timespec array.
    if unsafe { libc::futimens(dir.as_raw_fd(), ts.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Converts seconds and nanoseconds since the epoch, negative seconds included.
pub(crate) fn to_system_time(sec: i64, nsec: u32) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

mod listing;
mod partials;
mod source_root;

pub(crate) use listing::whole_sum;

pub(crate) use partials::{keep, sweep_partials, Kept};
pub(crate) use source_root::SourceRoot;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::Reuse;

    fn ident(name: &[u8], size: u64) -> Identity {
        Identity { name: name.to_vec(), size, mtime_sec: 1_700_000_000, mtime_nsec: 0, chunk_size: 1 << 20 }
    }

    fn put(root: &mut DestRoot, comps: &[&[u8]], data: &[u8], reuse: Reuse) -> io::Result<()> {
        let Opened::Partial(t, _, _) = root.open_partial(comps, &ident(comps[comps.len() - 1], 3), reuse).unwrap()
        else {
            panic!("expected a partial file");
        };
        t.file.write_at(data, 0).unwrap();
        finalize(&t, Given { mode: Some(0o644), mtime: (1_700_000_000, 0), owner: None, xattrs: None }, false)
    }

    #[test]
    fn a_directory_this_session_made_skips_the_looks_and_loses_nothing() {
        let base = std::env::temp_dir().join(format!("gfast-dest-made-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let mut a = DestRoot::open(&base).unwrap();
        put(&mut a, &[b"d", b"f"], b"one", Reuse::Partials).unwrap();
        assert!(a.made.contains(b"d".as_slice()), "d was made by this session");
        assert_eq!(std::fs::read(base.join("d/f")).unwrap(), b"one");
        // Another session puts a file under a name in the same directory while
        // this one writes it: the verified file still takes the name whole.
        let Opened::Partial(t, _, _) = a.open_partial(&[b"d", b"g"], &ident(b"g", 3), Reuse::Partials).unwrap() else {
            panic!("expected a partial file");
        };
        std::fs::write(base.join("d/g"), b"other").unwrap();
        t.file.write_at(b"two", 0).unwrap();
        finalize(&t, Given { mode: Some(0o644), mtime: (1_700_000_000, 0), owner: None, xattrs: None }, false).unwrap();
        assert_eq!(std::fs::read(base.join("d/g")).unwrap(), b"two");
        // A directory made under the name meanwhile is never replaced by a file.
        let Opened::Partial(t, _, _) = a.open_partial(&[b"d", b"h"], &ident(b"h", 3), Reuse::Partials).unwrap() else {
            panic!("expected a partial file");
        };
        std::fs::create_dir(base.join("d/h")).unwrap();
        std::fs::write(base.join("d/h/keep"), b"k").unwrap();
        t.file.write_at(b"tri", 0).unwrap();
        assert!(finalize(&t, Given { mode: Some(0o644), mtime: (1_700_000_000, 0), owner: None, xattrs: None }, false)
            .is_err());
        assert_eq!(std::fs::read(base.join("d/h/keep")).unwrap(), b"k");
        // A new session did not make d: it looks, and refuses a file over a directory.
        let mut b = DestRoot::open(&base).unwrap();
        let r = b.open_partial(&[b"d", b"h"], &ident(b"h", 3), Reuse::Partials);
        assert!(matches!(r, Err(DestError::Refused(_))), "{:?}", r.err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
