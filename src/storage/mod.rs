//! Files on disk: walking the sources, and the confined destination tree with
//! temporary files renamed into place.

pub(crate) mod dest;
pub(crate) mod holes;
pub(crate) mod jobs;
pub(crate) mod journal;
pub(crate) mod owners;
pub(crate) mod pieces;
pub(crate) mod store;
pub(crate) mod walk;
pub(crate) mod xattrs;

/// Writes a small private file (mode 0600) whole or not at all: under a
/// temporary name, synced, then put at `path`, replacing what is there when
/// `replace` is set, else only if nothing is (two processes creating the same
/// file agree on the first one). Returns false when `path` existed and was kept.
pub(crate) fn write_private_file(path: &std::path::Path, data: &[u8], replace: bool) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}-{seq}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let written = f.write_all(data).and_then(|_| f.sync_all());
    let placed = written.and_then(|_| match replace {
        true => std::fs::rename(&tmp, path).map(|_| true),
        false => match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            // A file system without hard links: create it exclusively in place.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EOPNOTSUPP)) => {
                match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                    Ok(mut f) => f.write_all(data).and_then(|_| f.sync_all()).map(|_| true),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        },
    });
    let _ = std::fs::remove_file(&tmp);
    placed
}

#[cfg(test)]
mod tests {
    #[test]
    fn creators_racing_for_one_private_file_agree_on_the_first() {
        let dir = std::env::temp_dir().join(format!("gfast-wpf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("token");
        let created: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8u8)
                .map(|i| {
                    let p = &p;
                    s.spawn(move || super::write_private_file(p, &[b'a' + i; 32], false).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
        let got = std::fs::read(&p).unwrap();
        assert!(got.len() == 32 && got.iter().all(|b| *b == got[0]), "one writer's bytes, whole");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        // Replacing: the new content, whole; no temporary file is left.
        assert!(super::write_private_file(&p, b"new", true).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
