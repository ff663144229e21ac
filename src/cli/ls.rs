//! `gfast ls`: what a destination holds, one line per entry, from the same
//! listing `gfast sync` compares against (protocol-spec §4.22 for a far end).

use crate::engine::error::Error;
use crate::engine::send::ListShow;
use crate::proto::frame::EntryKind;
use crate::proto::sync::{rsync_name, Listed};
use crate::storage::dest::DestRoot;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// How each entry is shown: `long` (-l), `recursive` (-R), `json` (one
/// object a line). The listed root itself (an empty path) is shown only when
/// it is not a directory: `gfast ls host:file` shows that file.
/// `base`: the target's last name, shown for that file.
pub(super) fn shower(long: bool, recursive: bool, json: bool, base: String) -> ListShow {
    ListShow(Arc::new(move |e: &Listed, mask: u32| {
        if e.path.is_empty() && e.kind == EntryKind::Dir {
            return;
        }
        let named;
        let e = if e.path.is_empty() {
            named = Listed { path: base.clone().into_bytes(), ..e.clone() };
            &named
        } else {
            e
        };
        if !recursive && e.path.contains(&b'/') {
            return;
        }
        let line = if json { json_line(e, mask) } else { text_line(e, mask, long) };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }))
}

/// A local directory: the same listing, read here.
pub(super) fn local(dir: &Path, show_entry: &ListShow) -> Result<(), Error> {
    let shown = dir.display().to_string();
    let cannot = |e: &dyn std::fmt::Display| Error::Usage(format!("cannot list '{shown}': {e}"));
    let md = std::fs::symlink_metadata(dir).map_err(|e| cannot(&e))?;
    // A directory is opened itself; anything else is listed from its parent,
    // as the one entry there (a symlink is shown, not followed).
    let (at, name) = match (md.is_dir(), dir.parent(), dir.file_name()) {
        (false, Some(p), Some(n)) => (if p.as_os_str().is_empty() { Path::new(".") } else { p }, Some(n)),
        _ => (dir, None),
    };
    let mut root = DestRoot::open(at).map_err(|e| cannot(&e))?;
    let comps: Vec<&[u8]> = name.iter().map(|n| n.as_bytes()).collect();
    let listing = root.list(&comps, false).map_err(|e| cannot(&e))?;
    let (mut failed, mut first) = (0u64, None);
    for item in listing {
        match item {
            Ok(e) => (show_entry.0)(&e, 0o7777),
            Err(e) => {
                failed += 1;
                eprintln!("gfast: cannot read part of '{shown}': {e}");
                first.get_or_insert(e);
            }
        }
    }
    match first {
        None => Ok(()),
        Some(e) => Err(Error::Io(format!("listing '{shown}' ({failed} places could not be read; the first)"), e)),
    }
}

fn name_of(e: &Listed) -> String {
    let mut n = if e.path.is_empty() { ".".to_string() } else { rsync_name(&e.path) };
    if e.kind == EntryKind::Dir {
        n.push('/');
    }
    n
}

fn type_char(k: EntryKind) -> char {
    match k {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Fifo => 'p',
        EntryKind::Socket => 's',
        EntryKind::CharDev => 'c',
        EntryKind::BlockDev => 'b',
        EntryKind::File => '-',
    }
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Fifo => "fifo",
        EntryKind::Socket => "socket",
        EntryKind::CharDev => "char-device",
        EntryKind::BlockDev => "block-device",
        EntryKind::File => "file",
    }
}

/// `rwxr-xr-x` with setuid, setgid and sticky shown as ls does.
fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for (shift, special, on, off) in [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S'), (0, 0o1000, 't', 'T')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => on,
            (true, false) => off,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Seconds since the epoch → `YYYY-MM-DD HH:MM:SS` in UTC (days to a civil
/// date: the proleptic Gregorian calendar's 400-year cycle).
fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn text_line(e: &Listed, mask: u32, long: bool) -> String {
    let name = name_of(e);
    if !long {
        return name;
    }
    let mode = if e.kind == EntryKind::Symlink { "rwxrwxrwx".to_string() } else { mode_string(e.mode & mask) };
    let mut line = format!("{}{mode} {:>15} {} {name}", type_char(e.kind), e.size, utc(e.mtime_sec));
    if e.kind == EntryKind::Symlink {
        line.push_str(" -> ");
        line.push_str(&rsync_name(&e.link));
    }
    line
}

fn json_line(e: &Listed, mask: u32) -> String {
    let mut v = serde_json::json!({
        "path": if e.path.is_empty() { ".".to_string() } else { rsync_name(&e.path) },
        "type": kind_name(e.kind),
        "size": e.size,
        "mode": format!("{:04o}", e.mode & mask),
        "mtime": e.mtime_sec,
        "mtime_nsec": e.mtime_nsec,
    });
    if e.kind == EntryKind::Symlink {
        v["link"] = rsync_name(&e.link).into();
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_modes_and_lines_read_as_ls_would() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_233_393), "2026-12-02 17:43:13");
        assert_eq!(utc(-1), "1969-12-31 23:59:59");
        assert_eq!(mode_string(0o755), "rwxr-xr-x");
        assert_eq!(mode_string(0o4644), "rwSr--r--");
        assert_eq!(mode_string(0o1777), "rwxrwxrwt");
        let e = Listed {
            kind: EntryKind::File,
            mode: 0o644,
            mtime_sec: 0,
            mtime_nsec: 0,
            size: 4096,
            path: b"d/f".to_vec(),
            link: Vec::new(),
            sum: None,
        };
        assert_eq!(text_line(&e, 0o7777, false), "d/f");
        assert_eq!(text_line(&e, 0o7777, true), "-rw-r--r--            4096 1970-01-01 00:00:00 d/f");
        let j: serde_json::Value = serde_json::from_str(&json_line(&e, 0o7777)).unwrap();
        assert_eq!(
            (j["path"].as_str(), j["type"].as_str(), j["size"].as_u64()),
            (Some("d/f"), Some("file"), Some(4096))
        );
    }
}
