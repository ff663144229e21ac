//! What a destination holds, for sync (protocol-spec §5.15): a listing in
//! listing order (depth first, names in byte order), and removal of entries.
//! Both work on directory descriptors, never through a symlink: a link is
//! listed and removed as a link, never followed.

use super::{cstr, lstat_at, openat, DestError, DestRoot};
use crate::proto::frame::{EntryKind, HASH_LEN};
use crate::proto::path::{is_reserved, show};
use crate::proto::sync::Listed;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};

/// One directory being listed: its descriptor, its path relative to the
/// listed root, and the names still to list, in order.
struct Level {
    dir: OwnedFd,
    rel: Vec<u8>,
    names: std::vec::IntoIter<Vec<u8>>,
}

/// A listing of one root, entry by entry (memory grows with the depth and the
/// widest directory, not with the tree).
pub(crate) struct Listing {
    first: Option<Listed>,
    stack: Vec<Level>,
    sums: bool,
    /// A directory that could not be read: reported once, then the walk goes on.
    pending_error: Option<io::Error>,
}

/// The names in directory `dir` (not `.`, `..` nor gfast's own `.gfast-*`), sorted by bytes.
pub(crate) fn names_of(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    // SAFETY: dup of a valid descriptor; fdopendir takes the new one over and
    // closedir releases it.
    let fd = unsafe { libc::dup(dir.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor of a directory.
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so the descriptor is still ours.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    // A dup shares the offset: start from the beginning whoever read it before.
    // SAFETY: `d` is a valid directory stream.
    unsafe { libc::rewinddir(d) };
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; readdir returns null at the end or on error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `d` is a valid directory stream.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error().unwrap_or(0) == 0 { Ok(()) } else { Err(e) };
        }
        // SAFETY: readdir returned an entry whose name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name == b"." || name == b".." || is_reserved(name) {
            continue;
        }
        names.push(name.to_vec());
    };
    // SAFETY: `d` is valid and closed once.
    unsafe { libc::closedir(d) };
    result?;
    names.sort_unstable();
    Ok(names)
}

fn kind_of_mode(m: libc::mode_t) -> Option<EntryKind> {
    match m & libc::S_IFMT {
        libc::S_IFREG => Some(EntryKind::File),
        libc::S_IFDIR => Some(EntryKind::Dir),
        libc::S_IFLNK => Some(EntryKind::Symlink),
        libc::S_IFIFO => Some(EntryKind::Fifo),
        libc::S_IFSOCK => Some(EntryKind::Socket),
        libc::S_IFCHR => Some(EntryKind::CharDev),
        libc::S_IFBLK => Some(EntryKind::BlockDev),
        _ => None,
    }
}

fn read_link_at(dir: &OwnedFd, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid descriptor, C string and buffer of the given length.
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The xxh3-128 of a whole file's contents (sync's `--checksum`, §4.23).
pub(crate) fn whole_sum(mut f: impl Read) -> io::Result<[u8; HASH_LEN]> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.digest128().to_be_bytes())
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut v = Vec::with_capacity(a.len() + 1 + b.len());
    v.extend_from_slice(a);
    v.push(b'/');
    v.extend_from_slice(b);
    v
}

/// The listed entry for `name` in `dir` (`rel`: its path under the listed
/// root), or `None` for what sync does not carry (devices, fifos, sockets).
fn entry(dir: &OwnedFd, name: &[u8], st: &libc::stat, rel: Vec<u8>, sums: bool) -> io::Result<Option<Listed>> {
    let Some(kind) = kind_of_mode(st.st_mode) else { return Ok(None) };
    let link = if kind == EntryKind::Symlink { read_link_at(dir, name)? } else { Vec::new() };
    let sum = if sums && kind == EntryKind::File {
        // Not blocking on a fifo swapped in since the lstat, and still a regular file.
        let fd = openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0)?;
        if fstat(&fd)?.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(None);
        }
        Some(whole_sum(File::from(fd))?)
    } else {
        None
    };
    Ok(Some(Listed {
        kind,
        mode: st.st_mode & 0o7777,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        size: if kind == EntryKind::File { st.st_size as u64 } else { 0 },
        path: rel,
        link,
        sum,
    }))
}

impl Listing {
    fn empty() -> Listing {
        Listing { first: None, stack: Vec::new(), sums: false, pending_error: None }
    }

    fn descend(&mut self, dir: OwnedFd, rel: Vec<u8>) {
        match names_of(&dir) {
            Ok(names) => self.stack.push(Level { dir, rel, names: names.into_iter() }),
            Err(e) => self.pending_error = Some(io::Error::new(e.kind(), format!("cannot list {}: {e}", show(&rel)))),
        }
    }
}

impl Iterator for Listing {
    type Item = io::Result<Listed>;

    fn next(&mut self) -> Option<io::Result<Listed>> {
        if let Some(f) = self.first.take() {
            return Some(Ok(f));
        }
        if let Some(e) = self.pending_error.take() {
            return Some(Err(e));
        }
        loop {
            let level = self.stack.last_mut()?;
            let Some(name) = level.names.next() else {
                self.stack.pop();
                continue;
            };
            let rel = join(&level.rel, &name);
            let st = match lstat_at(&level.dir, &name) {
                Ok(st) => st,
                // Gone since the directory was read.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Some(Err(io::Error::new(e.kind(), format!("cannot inspect {}: {e}", show(&rel))))),
            };
            let e = match entry(&level.dir, &name, &st, rel.clone(), self.sums) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(e) => return Some(Err(io::Error::new(e.kind(), format!("cannot read {}: {e}", show(&rel))))),
            };
            if e.kind == EntryKind::Dir {
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                match openat(&level.dir, &name, flags, 0) {
                    Ok(fd) => self.descend(fd, rel),
                    Err(err) => {
                        self.pending_error =
                            Some(io::Error::new(err.kind(), format!("cannot open {}: {err}", show(&rel))))
                    }
                }
            }
            return Some(Ok(e));
        }
    }
}

impl DestRoot {
    /// Lists what is under `comps` (the root itself first, with an empty path),
    /// without following a symlink anywhere; nothing there is an empty listing.
    pub(crate) fn list(&mut self, comps: &[&[u8]], sums: bool) -> Result<Listing, DestError> {
        let shown = || show(&comps.join(&b'/'));
        let Some((name, parent)) = comps.split_last() else {
            // The root itself.
            let root = self.dir(&[], false)?;
            let st = fstat(&root).map_err(|e| DestError::Io(format!("cannot inspect {}", shown()), e))?;
            let fd = openat(&root, b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(|e| DestError::Io("cannot open the root".into(), e))?;
            let mut l = Listing { sums, ..Listing::empty() };
            l.first = Some(Listed {
                kind: EntryKind::Dir,
                mode: st.st_mode & 0o7777,
                mtime_sec: st.st_mtime,
                mtime_nsec: st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
                size: 0,
                path: Vec::new(),
                link: Vec::new(),
                sum: None,
            });
            l.descend(fd, Vec::new());
            return Ok(l);
        };
        let pd = match self.dir(parent, false) {
            Ok(d) => d,
            Err(DestError::Io(_, e)) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Listing::empty()),
            Err(e) => return Err(e),
        };
        let st = match lstat_at(&pd, name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Listing::empty()),
            Err(e) => return Err(DestError::Io(format!("cannot inspect {}", shown()), e)),
        };
        let first = entry(&pd, name, &st, Vec::new(), sums)
            .map_err(|e| DestError::Io(format!("cannot read {}", shown()), e))?;
        let mut l = Listing { sums, ..Listing::empty() };
        if let Some(f) = &first {
            if f.kind == EntryKind::Dir {
                let fd = openat(&pd, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
                    .map_err(|e| DestError::Io(format!("cannot open {}", shown()), e))?;
                l.descend(fd, Vec::new());
            }
        }
        l.first = first;
        Ok(l)
    }

    /// Removes the entry at `comps`: a file or a symlink (the link itself), or
    /// an empty directory (gfast's own leftovers in it go with it). Nothing
    /// there is not an error.
    pub(crate) fn remove(&mut self, comps: &[&[u8]]) -> Result<(), DestError> {
        let shown = || show(&comps.join(&b'/'));
        let (name, parent) =
            comps.split_last().ok_or_else(|| DestError::Refused("the root is never removed".into()))?;
        let pd = match self.dir(parent, false) {
            Ok(d) => d,
            Err(DestError::Io(_, e)) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        let st = match lstat_at(&pd, name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(DestError::Io(format!("cannot inspect {}", shown()), e)),
        };
        let c = cstr(name).map_err(|e| DestError::Io(shown(), e))?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir {
            // Descriptors kept of it or below it would outlive it.
            let key = comps.join(&b'/');
            self.forget_dirs(&key);
            // Partial files an interrupted transfer left inside go too, when
            // nothing else is there (else the directory stays, and with it what a
            // resume needs).
            if let Ok(fd) = openat(&pd, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
                if names_of(&fd).is_ok_and(|n| n.is_empty()) {
                    remove_reserved(&fd);
                }
            }
        }
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid descriptor and C string.
        if unsafe { libc::unlinkat(pd.as_raw_fd(), c.as_ptr(), flags) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(());
            }
            let what = if e.raw_os_error() == Some(libc::ENOTEMPTY) {
                format!("cannot delete non-empty directory {} (it holds excluded entries)", shown())
            } else {
                format!("cannot delete {}", shown())
            };
            return Err(DestError::Io(what, e));
        }
        Ok(())
    }
}

/// Removes gfast's partial files and journals (`.gfast-*`) directly in `dir`.
fn remove_reserved(dir: &OwnedFd) {
    // SAFETY: dup of a valid descriptor, taken over by fdopendir.
    let fd = unsafe { libc::dup(dir.as_raw_fd()) };
    if fd < 0 {
        return;
    }
    // SAFETY: a fresh descriptor.
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        // SAFETY: still ours.
        unsafe { libc::close(fd) };
        return;
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: valid stream.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: a NUL-terminated name.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if is_reserved(name) {
            names.push(name.to_vec());
        }
    }
    // SAFETY: closed once.
    unsafe { libc::closedir(d) };
    // A partial file a live session holds (its lock) keeps them all.
    for n in &names {
        if let Ok(fd) = openat(dir, n, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0) {
            // SAFETY: valid descriptor; a non-blocking exclusive advisory lock.
            if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
                return;
            }
        }
    }
    for n in names {
        super::remove_temp(dir, &n);
    }
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptor; `st` is written on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded.
    Ok(unsafe { st.assume_init() })
}
