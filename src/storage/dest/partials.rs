//! Partial files kept for a resume, and their expiry (`serve --partial-ttl`,
//! protocol-spec §5.11, §5.14).

use super::*;

/// Lets go of a partial file that a resume may continue: syncs it and seals its
/// journal, so the resume trusts what arrived without reading it back. Returns
/// where it was kept, for its expiry ([`Kept::expire`]).
pub(crate) fn keep(t: &TempFile) -> Option<Kept> {
    let (j, jname) = t.journal.as_ref()?;
    let _ = j.lock().expect("journal").seal(&t.file);
    let (root, dir) = t.place.clone();
    Some(Kept { root, dir, part: t.temp.clone(), journal: jname.clone(), at: std::time::Instant::now() })
}

/// A partial file and its journal left for a resume: where to find them
/// again (no descriptor is held: a token holder could otherwise pin one per
/// directory for as long as the partials are kept).
pub(crate) struct Kept {
    root: std::path::PathBuf,
    dir: Vec<u8>,
    part: Vec<u8>,
    journal: Vec<u8>,
    at: std::time::Instant,
}

impl Kept {
    /// Removes the partial file and its journal if neither was written for
    /// `ttl` and no session holds the partial file now. Returns true when they
    /// are gone (or were already, or cannot be reached any more).
    pub(crate) fn expire(&self, ttl: Duration) -> bool {
        if self.at.elapsed() < ttl {
            return false; // not due: nothing to look at yet
        }
        let Ok(mut root) = DestRoot::open(&self.root) else { return true };
        let comps: Vec<&[u8]> = self.dir.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        let Ok(dir) = root.dir(&comps, false) else { return true };
        expire_pair(&dir, &self.part, &self.journal, ttl)
    }
}

fn older_than(st: &libc::stat, ttl: Duration) -> bool {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    now.saturating_sub(st.st_mtime) >= ttl.as_secs() as i64
}

fn expire_pair(dir: &OwnedFd, part: &[u8], journal: &[u8], ttl: Duration) -> bool {
    let Ok(fd) = openat(dir, part, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0) else {
        if lstat_at(dir, journal).is_ok_and(|st| older_than(&st, ttl)) {
            remove_temp(dir, journal);
        }
        return lstat_at(dir, journal).is_err();
    };
    // SAFETY: valid descriptor; a non-blocking exclusive advisory lock, released on close.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false; // a session writes it right now
    }
    let fresh = |name: &[u8]| lstat_at(dir, name).is_ok_and(|st| !older_than(&st, ttl));
    if fresh(part) || fresh(journal) {
        return false;
    }
    remove_temp(dir, journal);
    remove_temp(dir, part);
    true
}

/// Removes, under `root`, the partial files and journals (`.gfast-*.part`,
/// `.gfast-*.jrnl`) that were not written for `ttl`: what a daemon that was
/// stopped left behind. Directories are opened without following symlinks.
/// Returns how many files went.
pub(crate) fn sweep_partials(root: &Path, ttl: Duration) -> io::Result<u64> {
    let mut root = DestRoot::open(root)?;
    // Relative paths, not descriptors: a wide tree must not use up descriptors.
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    let mut removed = 0;
    while let Some(rel) = stack.pop() {
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        let Ok(dir) = root.dir(&comps, false) else { continue };
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else { continue };
        let mut parts = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().into_encoded_bytes();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push([&rel[..], if rel.is_empty() { b"" } else { b"/" }, &name].concat());
            } else if ft.is_file() && crate::proto::path::is_reserved(&name) {
                parts.push(name);
            }
        }
        for name in &parts {
            if let Some(stem) = name.strip_suffix(b".part") {
                let journal = [stem, b".jrnl"].concat();
                if expire_pair(&dir, name, &journal, ttl) {
                    removed += 1;
                }
            } else if name.ends_with(b".jrnl") {
                let part = [&name[..name.len() - 5], b".part"].concat();
                if lstat_at(&dir, &part).is_err() && lstat_at(&dir, name).is_ok_and(|st| older_than(&st, ttl)) {
                    remove_temp(&dir, name);
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}
