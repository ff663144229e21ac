//! Owners and groups (protocol-spec §4.7, capability bit 10): names looked up
//! once per id where files are read, ids once per name where they land (as
//! rsync does: by name, the number where the name is unknown), and applied
//! without following a link.

use crate::proto::frame::Owner;
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Names of the ids a sender meets, looked up once each.
#[derive(Default)]
pub(crate) struct Names {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
}

impl Names {
    /// Fills in the names of `o`'s ids (empty where the system has none).
    pub(crate) fn name(&mut self, o: &mut Owner) {
        o.user = self.users.entry(o.uid).or_insert_with(|| user_name(o.uid)).clone();
        o.group = self.groups.entry(o.gid).or_insert_with(|| group_name(o.gid)).clone();
    }
}

/// Ids of the names a receiver meets, looked up once each.
#[derive(Default)]
pub(crate) struct Ids {
    users: HashMap<Vec<u8>, Option<u32>>,
    groups: HashMap<Vec<u8>, Option<u32>>,
}

impl Ids {
    /// The ids to give an entry owned by `o` at the source: a name this system
    /// knows maps to its id here, else the source's number stands (rsync's
    /// rule); `numeric` ignores names.
    pub(crate) fn map(&mut self, o: &Owner, numeric: bool) -> (u32, u32) {
        if numeric {
            return (o.uid, o.gid);
        }
        let uid = cached(&mut self.users, &o.user, user_id);
        let gid = cached(&mut self.groups, &o.group, group_id);
        (uid.unwrap_or(o.uid), gid.unwrap_or(o.gid))
    }
}

/// The id of `name` (none for an empty one), looked up once; a hit allocates nothing.
fn cached(map: &mut HashMap<Vec<u8>, Option<u32>>, name: &[u8], look: fn(&[u8]) -> Option<u32>) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    if let Some(&id) = map.get(name) {
        return id;
    }
    let id = look(name);
    map.insert(name.to_vec(), id);
    id
}

/// This process may give files to anyone (it runs as root).
pub(crate) fn may_chown() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Gives `name` in `dir` (the directory itself when `name` is empty) to
/// `uid:gid`, never following a symlink.
pub(crate) fn chown_at(dir: BorrowedFd<'_>, name: &[u8], (uid, gid): (u32, u32)) -> io::Result<()> {
    let (c, flags) = if name.is_empty() {
        (CString::default(), libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
    } else {
        (CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?, libc::AT_SYMLINK_NOFOLLOW)
    };
    // SAFETY: a valid descriptor and a NUL-terminated name.
    let r = unsafe { libc::fchownat(dir.as_raw_fd(), c.as_ptr(), uid, gid, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives an open file to `uid:gid`.
pub(crate) fn fchown(file: &std::fs::File, (uid, gid): (u32, u32)) -> io::Result<()> {
    std::os::unix::fs::fchown(file, Some(uid), Some(gid))
}

fn user_name(uid: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 14];
    // SAFETY: getpwuid_r writes into `pw` and `buf`, both ours and sized.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() || pw.pw_name.is_null() {
        return Vec::new();
    }
    // SAFETY: the name points into `buf`, NUL-terminated by the lookup.
    unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }.to_bytes().to_vec()
}

fn group_name(gid: u32) -> Vec<u8> {
    // Groups list their members: room for large ones.
    let mut buf = vec![0u8; 1 << 16];
    // SAFETY: as for getpwuid_r.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    let r = unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() || gr.gr_name.is_null() {
        return Vec::new();
    }
    // SAFETY: as above.
    unsafe { std::ffi::CStr::from_ptr(gr.gr_name) }.to_bytes().to_vec()
}

fn user_id(name: &[u8]) -> Option<u32> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0u8; 1 << 14];
    // SAFETY: getpwnam_r writes into `pw` and `buf`, both ours and sized.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(pw.pw_uid)
}

fn group_id(name: &[u8]) -> Option<u32> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0u8; 1 << 16];
    // SAFETY: as for getpwnam_r.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    let r = unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(gr.gr_gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_map_both_ways_and_unknown_names_keep_the_number() {
        let mut names = Names::default();
        let mut o = Owner { uid: 0, gid: 0, ..Default::default() };
        names.name(&mut o);
        assert_eq!((o.user.as_slice(), o.group.as_slice()), (&b"root"[..], &b"root"[..]));
        let mut ids = Ids::default();
        assert_eq!(ids.map(&o, false), (0, 0));
        // A name this system knows wins over the source's number...
        let renumbered = Owner { uid: 4242, gid: 4343, user: b"root".to_vec(), group: b"root".to_vec() };
        assert_eq!(ids.map(&renumbered, false), (0, 0));
        assert_eq!(ids.map(&renumbered, true), (4242, 4343), "--numeric-ids");
        // ...and an unknown one, or none, keeps the number.
        let stranger = Owner { uid: 4242, gid: 4343, user: b"no-such-user-x".to_vec(), group: Vec::new() };
        assert_eq!(ids.map(&stranger, false), (4242, 4343));
        let mut nobody = Owner { uid: 4_000_000, gid: 4_000_000, ..Default::default() };
        names.name(&mut nobody);
        assert!(nobody.user.is_empty() && nobody.group.is_empty());
    }
}
