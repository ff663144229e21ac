//! Extended attributes, POSIX ACLs among them (`system.posix_acl_access`,
//! `system.posix_acl_default`): read where files are read, given where they
//! land (protocol-spec §4.7, capability bit 11). Through the `xattr` crate.

use crate::proto::frame::{MAX_XATTR_NAME, MAX_XATTR_VALUE};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One entry's attributes: names and values.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Attributes to give an entry, and which of them.
pub(crate) type Giving<'a> = (&'a [(Vec<u8>, Vec<u8>)], Policy);

/// Most attribute bytes one entry carries (a FILE frame holds at most 1 MiB).
pub(crate) const MAX_PER_ENTRY: usize = 256 << 10;

/// Which attributes a receiving end gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// `user.*` only: a daemon (its token holders' files are its user's).
    User,
    /// What this process may set: everything as root, else `user.*` and ACLs.
    Permitted,
}

impl Policy {
    /// Whether this end gives attribute `name`.
    pub(crate) fn allows(self, name: &[u8]) -> bool {
        let user = name.starts_with(b"user.");
        let acl = name == b"system.posix_acl_access" || name == b"system.posix_acl_default";
        match self {
            Policy::User => user,
            Policy::Permitted => user || acl || super::owners::may_chown(),
        }
    }
}

/// The attributes of `path` itself (a symlink's own, which Linux keeps none of
/// for users). Err: more than [`MAX_PER_ENTRY`] bytes, or they cannot be read.
pub(crate) fn read(path: &Path) -> io::Result<Xattrs> {
    let mut out = Vec::new();
    let mut total = 0;
    let names = match xattr::list(path) {
        Ok(n) => n,
        // A file system without them has none.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        let n = name.as_bytes();
        if n.len() > MAX_XATTR_NAME {
            continue;
        }
        let Some(value) = xattr::get(path, &name)? else { continue };
        if value.len() > MAX_XATTR_VALUE {
            continue;
        }
        total += n.len() + value.len() + 6;
        if total > MAX_PER_ENTRY {
            return Err(io::Error::other(format!("its extended attributes exceed {} KiB", MAX_PER_ENTRY >> 10)));
        }
        out.push((n.to_vec(), value));
    }
    Ok(out)
}

/// Gives `file` the attributes `policy` allows of `xs`.
pub(crate) fn apply(file: &std::fs::File, xs: &[(Vec<u8>, Vec<u8>)], policy: Policy) -> io::Result<()> {
    use xattr::FileExt;
    for (name, value) in xs.iter().filter(|(n, _)| policy.allows(n)) {
        file.set_xattr(std::ffi::OsStr::from_bytes(name), value)
            .map_err(|e| io::Error::new(e.kind(), format!("xattr {}: {e}", String::from_utf8_lossy(name))))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_and_given_by_policy() {
        let p = std::env::temp_dir().join(format!("gfast-xattrs-{}", std::process::id()));
        let q = p.with_extension("copy");
        std::fs::write(&p, b"x").unwrap();
        if let Err(e) = xattr::set(&p, "user.gfast", b"value") {
            eprintln!("skipped: this file system keeps no user xattrs ({e})");
            let _ = std::fs::remove_file(&p);
            return;
        }
        let xs = read(&p).unwrap();
        assert!(xs.contains(&(b"user.gfast".to_vec(), b"value".to_vec())), "{xs:?}");
        let f = std::fs::File::create(&q).unwrap();
        apply(&f, &xs, Policy::User).unwrap();
        assert_eq!(xattr::get(&q, "user.gfast").unwrap().as_deref(), Some(&b"value"[..]));
        assert!(Policy::User.allows(b"user.a") && !Policy::User.allows(b"trusted.a"));
        assert!(!Policy::User.allows(b"system.posix_acl_access"));
        assert!(Policy::Permitted.allows(b"system.posix_acl_default"));
        let _ = (std::fs::remove_file(&p), std::fs::remove_file(&q));
    }
}
