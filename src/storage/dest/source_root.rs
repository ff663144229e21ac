//! The read-only root of a daemon that serves pulls (protocol-spec §5.9).

use super::*;

/// A read-only root for a daemon that serves pulls: files under it are opened
/// without ever passing through a symlink or leaving it, whatever changed in the
/// tree since it was walked.
pub(crate) struct SourceRoot {
    dir: OwnedFd,
    path: std::path::PathBuf,
}

impl SourceRoot {
    /// Opens the root directory (the root itself may be reached through a symlink).
    pub(crate) fn open(path: &Path) -> io::Result<SourceRoot> {
        let dir = File::open(path)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        Ok(SourceRoot { dir: dir.into(), path: path.to_path_buf() })
    }

    /// Opens `path` (under the root) to read: openat2 with RESOLVE_BENEATH and
    /// RESOLVE_NO_SYMLINKS, or, where the kernel lacks it (before 5.6) or a
    /// seccomp filter refuses it, one component at a time with O_NOFOLLOW.
    pub(crate) fn open_file(&self, path: &Path) -> io::Result<File> {
        let rel = path.strip_prefix(&self.path).map_err(|_| io::Error::other("source outside the served root"))?;
        let c = cstr(rel.as_os_str().as_bytes())?;
        // SAFETY: open_how is plain data; all-zero is valid (and what unset fields must be).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        // O_NONBLOCK: a FIFO swapped in after the walk must not block the open.
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
        // SAFETY: valid descriptor, NUL-terminated path and an open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
                c.as_ptr(),
                &how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: openat2 returned a new descriptor that nothing else owns.
            return regular(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }));
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) {
            return Err(e);
        }
        self.open_by_components(path)
    }

    /// The fallback of [`SourceRoot::open_file`]: each directory opened with
    /// O_NOFOLLOW from the one before, then the file.
    fn open_by_components(&self, path: &Path) -> io::Result<File> {
        let rel = path.strip_prefix(&self.path).map_err(|_| io::Error::other("source outside the served root"))?;
        let comps: Vec<&[u8]> = rel.as_os_str().as_bytes().split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        if comps.contains(&&b".."[..]) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "'..' in a source path"));
        }
        let Some((name, parents)) = comps.split_last() else {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "the root is a directory"));
        };
        let mut dir = openat(&self.dir, b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        for p in parents {
            dir = openat(&dir, p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        }
        regular(File::from(openat(&dir, name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0)?))
    }
}

/// Keeps `f` only if it is a regular file, and makes its reads blocking again.
fn regular(f: File) -> io::Result<File> {
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file (it changed since it was listed)"));
    }
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

#[cfg(test)]
mod source_root_tests {
    use super::SourceRoot;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_under_the_root_and_never_through_a_symlink() {
        let base = std::env::temp_dir().join(format!("gfast-srcroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"inside").unwrap();
        std::fs::write(base.join("secret"), b"outside").unwrap();
        symlink(base.join("secret"), root.join("link")).unwrap();
        symlink(&base, root.join("dirlink")).unwrap();
        let fifo = std::ffi::CString::new(root.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let r = SourceRoot::open(&root).unwrap();
        for open in [SourceRoot::open_file, SourceRoot::open_by_components] {
            let mut s = String::new();
            open(&r, &root.join("d/f")).unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, "inside");
            assert!(open(&r, &root.join("link")).is_err(), "a symlink to a file outside was followed");
            assert!(open(&r, &root.join("dirlink/secret")).is_err(), "a symlinked directory was followed");
            assert!(open(&r, &root.join("d/../../secret")).is_err(), "'..' left the root");
            assert!(open(&r, &base.join("secret")).is_err(), "a path outside the root was opened");
            // A FIFO (say, swapped in after the walk) is refused at once, not waited on.
            let t = std::time::Instant::now();
            assert!(open(&r, &root.join("fifo")).is_err(), "a FIFO was opened as a file");
            assert!(t.elapsed() < std::time::Duration::from_secs(5));
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
