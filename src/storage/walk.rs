//! Walks the sources depth-first and yields manifest entries, one at a time, so
//! memory does not grow with the size of the tree (only with its depth and its
//! widest directory). The entries of a directory come in byte order of their
//! names: the listing order of sync (protocol-spec §5.15), which a receiver's
//! listing is merged with.

use crate::proto::frame::{EntryKind, FileMeta};
use crate::proto::path::is_reserved;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;

/// One entry to send: its manifest record (id not yet assigned) and where it is read from.
#[derive(Debug)]
pub(crate) struct Item {
    /// The manifest record; `meta.path` is the destination path under the server's root.
    pub meta: FileMeta,
    /// The local path of the source.
    pub source: PathBuf,
    /// A regular file with more than one name: its device and inode (`-H`).
    pub inode: Option<(u64, u64)>,
}

/// A source that could not be read; the walk goes on without it.
#[derive(Debug)]
pub(crate) struct WalkError {
    /// The local path.
    pub path: PathBuf,
    /// What went wrong.
    pub error: io::Error,
}

/// One step of a walk: an entry, or a source that could not be read.
pub(crate) type Walked = Result<Item, WalkError>;

/// Leaves an entry out of a walk (and, for a directory, everything in it):
/// given its destination path and whether it is a directory, true to leave it
/// out. Sync's filters (`--exclude`, `--include`).
pub(crate) type Prune = Arc<dyn Fn(&[u8], bool) -> bool + Send + Sync>;

/// The names in a directory, sorted by their bytes.
type Names = std::vec::IntoIter<OsString>;

/// Depth-first walker over several roots. Command-line roots are followed if they
/// are symlinks (as `cp -r` does); links inside a tree are sent as links.
pub(crate) struct Walker {
    roots: VecDeque<(PathBuf, Vec<u8>)>,
    stack: Vec<(Names, PathBuf, Vec<u8>)>,
    prune: Option<Prune>,
    /// A directory whose listing broke off: reported after the names read.
    pending: Option<WalkError>,
    /// Skip names in gfast's namespace without a word (a daemon serving a pull:
    /// they are its own partial files); otherwise each is reported.
    quiet_reserved: bool,
}

/// Builds the manifest record for `md` at destination path `dest`.
pub(crate) fn meta_of(md: &Metadata, dest: Vec<u8>, link: Vec<u8>) -> Option<FileMeta> {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_socket() {
        EntryKind::Socket
    } else if ft.is_char_device() {
        EntryKind::CharDev
    } else if ft.is_block_device() {
        EntryKind::BlockDev
    } else {
        return None;
    };
    Some(FileMeta {
        id: 0,
        kind,
        mode: md.mode() & 0o7777,
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        size: if kind == EntryKind::File { md.len() } else { 0 },
        path: dest,
        link,
        // Names are looked up by the sender, once per id, if the session keeps owners.
        owner: Some(crate::proto::frame::Owner { uid: md.uid(), gid: md.gid(), ..Default::default() }),
        // Read by the sender if the session carries them (bit 11).
        xattrs: Vec::new(),
        rdev: if kind.is_device() { md.rdev() } else { 0 },
        hardlink: false,
    })
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
    p.extend_from_slice(prefix);
    if !prefix.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl Walker {
    /// A walker over `(local path, destination path)` pairs, in order.
    pub(crate) fn new(roots: Vec<(PathBuf, Vec<u8>)>) -> Self {
        Walker { roots: roots.into(), stack: Vec::new(), quiet_reserved: false, prune: None, pending: None }
    }

    /// Leaves out what `prune` says (and the contents of a directory it leaves out).
    pub(crate) fn with_prune(mut self, prune: Option<Prune>) -> Self {
        self.prune = prune;
        self
    }

    /// A walker of a tree that gfast itself writes into (a daemon's root): its
    /// partial files and journals (`.gfast-*`) are left out silently.
    pub(crate) fn serving(roots: Vec<(PathBuf, Vec<u8>)>) -> Self {
        Walker { roots: roots.into(), stack: Vec::new(), quiet_reserved: true, prune: None, pending: None }
    }

    fn entry(&mut self, path: PathBuf, dest: Vec<u8>, md: Metadata) -> Option<Result<Item, WalkError>> {
        if let Some(p) = &self.prune {
            if p(&dest, md.is_dir()) {
                return None;
            }
        }
        if dest.rsplit(|&b| b == b'/').next().is_some_and(is_reserved) {
            let what = "names starting with '.gfast-' are reserved for gfast's temporary files: rename it to send it";
            return Some(Err(WalkError { path, error: io::Error::new(io::ErrorKind::InvalidInput, what) }));
        }
        let link = if md.file_type().is_symlink() {
            match fs::read_link(&path) {
                Ok(t) => t.into_os_string().into_vec(),
                Err(error) => return Some(Err(WalkError { path, error })),
            }
        } else {
            Vec::new()
        };
        let ft = md.file_type();
        let Some(meta) = meta_of(&md, dest.clone(), link) else {
            let what = if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device() {
                "special file (fifo, socket or device) skipped"
            } else {
                "unsupported file type"
            };
            return Some(Err(WalkError { path, error: io::Error::new(io::ErrorKind::Unsupported, what) }));
        };
        if meta.kind == EntryKind::Dir {
            match fs::read_dir(&path) {
                Ok(rd) => {
                    let mut names = Vec::new();
                    for de in rd {
                        match de {
                            Ok(de) => names.push(de.file_name()),
                            Err(error) => {
                                self.pending = Some(WalkError { path: path.clone(), error });
                                break;
                            }
                        }
                    }
                    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                    self.stack.push((names.into_iter(), path.clone(), dest))
                }
                Err(error) => return Some(Err(WalkError { path, error })),
            }
        }
        let inode = (meta.kind == EntryKind::File && md.nlink() > 1).then(|| (md.dev(), md.ino()));
        Some(Ok(Item { meta, source: path, inode }))
    }
}

use std::os::unix::ffi::OsStringExt;

impl Iterator for Walker {
    type Item = Result<Item, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.pending.take() {
                return Some(Err(e));
            }
            if let Some((names, dir, dest)) = self.stack.last_mut() {
                let Some(name) = names.next() else {
                    self.stack.pop();
                    continue;
                };
                if self.quiet_reserved && is_reserved(name.as_bytes()) {
                    continue;
                }
                let path = dir.join(&name);
                let d = join(dest, name.as_bytes());
                let r = match fs::symlink_metadata(&path) {
                    Ok(md) => self.entry(path, d, md),
                    // Gone since its directory was read.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(error) => Some(Err(WalkError { path, error })),
                };
                match r {
                    Some(r) => return Some(r),
                    None => continue,
                }
            }
            let (path, dest) = self.roots.pop_front()?;
            let r = match fs::metadata(&path) {
                Ok(md) => self.entry(path, dest, md),
                Err(error) => Some(Err(WalkError { path, error })),
            };
            if let Some(r) = r {
                return Some(r);
            }
        }
    }
}
