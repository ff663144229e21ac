//! Holes in files: found with `SEEK_DATA`/`SEEK_HOLE`, made with
//! `fallocate(PUNCH_HOLE)`, so a sparse file stays sparse wherever it goes
//! (protocol-spec §4.14, capability bit 9).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// The holes of `file` within `len` bytes from `offset`, as absolute ranges in
/// order. A file system that cannot tell reports none (all data), as does a
/// file that changes under the look (the sender's size and mtime check then
/// fails the file, protocol-spec §5.5).
pub(crate) fn holes(file: &File, offset: u64, len: u64) -> Vec<(u64, u64)> {
    holes_from(file, offset, len).0
}

/// As [`holes`], and where the first hole at or after `offset` starts (its
/// end when there is none within the range: no hole before it either way).
pub(crate) fn holes_from(file: &File, offset: u64, len: u64) -> (Vec<(u64, u64)>, u64) {
    let fd = file.as_raw_fd();
    let mut clear = offset;
    let end = offset.saturating_add(len);
    let mut out = Vec::new();
    let mut at = offset;
    while at < end {
        // SAFETY: lseek on a descriptor we own; reads go by pread, so moving
        // the file offset does not disturb them.
        let h = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_HOLE) };
        if h < 0 {
            break;
        }
        if at == offset {
            clear = h as u64;
        }
        if h as u64 >= end {
            break;
        }
        let h = h as u64;
        // SAFETY: as above.
        let d = unsafe { libc::lseek(fd, h as libc::off_t, libc::SEEK_DATA) };
        let d = if d >= 0 {
            d as u64
        } else if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
            // No data after the hole: it runs to the end of the file.
            end
        } else {
            break;
        };
        let d = d.min(end);
        if d <= h {
            break;
        }
        out.push((h, d));
        at = d;
    }
    (out, clear)
}

/// Makes `len` bytes at `offset` of `file` a hole (zeros, no space taken),
/// keeping its size. A file system that cannot punch holes gets zeros written.
pub(crate) fn punch(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: valid descriptor; the range is the caller's.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) {
        return Err(e);
    }
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// The data ranges of `len` bytes from 0 given their `holes` (as [`holes`]
/// returns them): what a local copy moves.
pub(crate) fn data_ranges(holes: &[(u64, u64)], len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(a, b) in holes {
        if a > at {
            out.push((at, a));
        }
        at = b;
    }
    if at < len {
        out.push((at, len));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn holes_are_found_and_punched() {
        let p = std::env::temp_dir().join(format!("gfast-holes-{}", std::process::id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        let mib = 1u64 << 20;
        f.set_len(16 * mib).unwrap();
        f.write_all_at(&[1u8; 4096], 4 * mib).unwrap();
        f.write_all_at(&[2u8; 4096], 8 * mib).unwrap();
        let hs = holes(&f, 0, 16 * mib);
        if hs.is_empty() {
            eprintln!("skipped: this file system does not report holes");
            return;
        }
        // Holes around each written block (file systems round data to blocks).
        assert_eq!(hs[0].0, 0);
        assert!(hs[0].1 <= 4 * mib && hs[0].1 > 3 * mib, "{hs:?}");
        assert_eq!(hs.last().unwrap().1, 16 * mib, "the tail is a hole: {hs:?}");
        assert_eq!(hs.len(), 3, "{hs:?}");
        // A window inside one hole is all hole; one inside data has none.
        assert_eq!(holes(&f, mib, mib), vec![(mib, 2 * mib)]);
        assert!(holes(&f, 4 * mib, 4096).is_empty());
        let data = data_ranges(&hs, 16 * mib);
        assert_eq!(data.len(), 2);
        assert!(data[0].0 <= 4 * mib && data[0].1 >= 4 * mib + 4096);
        // Punching takes the data out and keeps the size.
        punch(&f, 4 * mib, 4096).unwrap();
        let mut b = [9u8; 4096];
        f.read_exact_at(&mut b, 4 * mib).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(f.metadata().unwrap().len(), 16 * mib);
        assert!(f.metadata().unwrap().blocks() * 512 <= 64 << 10, "one block of data is left");
        std::fs::remove_file(&p).unwrap();
    }
}
