//! Sync (capability bit 7, protocol-spec §5.15), free of I/O: the order both
//! ends list a tree in, the merge of the sender's walk with the receiver's
//! listing, and the decision per entry (send it, leave it, delete it), with the
//! one-line account of each decision in rsync's itemize format.
//!
//! Both listings are depth-first with the entries of a directory in byte order
//! of their names, which is the order [`cmp_paths`] defines (a directory right
//! before its contents). The merge holds only what one side has listed ahead
//! of the other, so memory does not grow with the tree.

use super::frame::{EntryKind, FileMeta, HASH_LEN};
use std::cmp::Ordering;
use std::collections::VecDeque;

/// One entry of a receiver's listing (LISTED, §4.23). `path` is relative to the
/// listed root (empty: the root itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// What is there.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds part.
    pub mtime_nsec: u32,
    /// Size in bytes (0 unless a regular file).
    pub size: u64,
    /// Path relative to the listed root, components joined by `/`.
    pub path: Vec<u8>,
    /// Symlink target (empty unless a symlink).
    pub link: Vec<u8>,
    /// xxh3-128 of the whole file's contents, when the listing was asked with sums.
    pub sum: Option<[u8; HASH_LEN]>,
}

/// Compares two relative paths in listing order: component by component, each
/// by its bytes, so a directory sorts right before everything inside it.
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// Why a listing cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeError {
    /// The receiver listed an entry that does not sort after the one before it.
    OutOfOrder(Vec<u8>),
    /// The listing went on after its last batch.
    AfterEnd,
}

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MergeError::OutOfOrder(p) => {
                write!(f, "the receiver's listing is out of order at '{}'", String::from_utf8_lossy(p))
            }
            MergeError::AfterEnd => write!(f, "the receiver's listing went on after its end"),
        }
    }
}

/// What the merge found for one entry of the sender's walk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Matched {
    /// Entries the receiver holds that sort before this one and that the
    /// sender does not have: candidates for deletion.
    pub gone: Vec<Listed>,
    /// The receiver's entry under the same path, if any.
    pub existing: Option<Listed>,
}

/// The merge of one root's walk (fed in order through [`Merge::step`]) with the
/// receiver's listing of that root (fed in batches through [`Merge::feed`]).
#[derive(Debug, Default)]
pub struct Merge {
    theirs: VecDeque<Listed>,
    gone: Vec<Listed>,
    ended: bool,
    last_fed: Option<Vec<u8>>,
    last_step: Option<Vec<u8>>,
}

impl Merge {
    /// A merge waiting for its listing.
    pub fn new() -> Self {
        Merge::default()
    }

    /// Adds a batch of the receiver's listing; `last` when the listing of this
    /// root is complete.
    pub fn feed(&mut self, batch: Vec<Listed>, last: bool) -> Result<(), MergeError> {
        if self.ended {
            return Err(MergeError::AfterEnd);
        }
        for e in batch {
            if let Some(prev) = &self.last_fed {
                if cmp_paths(prev, &e.path) != Ordering::Less {
                    return Err(MergeError::OutOfOrder(e.path));
                }
            }
            self.last_fed = Some(e.path.clone());
            self.theirs.push_back(e);
        }
        self.ended = last;
        Ok(())
    }

    /// True when the listing of this root is complete.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Entries buffered from the listing, not merged yet.
    pub fn buffered(&self) -> usize {
        self.theirs.len()
    }

    /// Matches the sender's next entry, `path` (relative to the root, sorting
    /// after the previous one), against the listing. `None`: more of the
    /// listing is needed first; call again after [`Merge::feed`].
    pub fn step(&mut self, path: &[u8]) -> Option<Matched> {
        debug_assert!(self.last_step.as_deref().is_none_or(|p| cmp_paths(p, path) == Ordering::Less));
        loop {
            let Some(front) = self.theirs.front() else {
                if !self.ended {
                    return None;
                }
                break;
            };
            match cmp_paths(&front.path, path) {
                Ordering::Less => {
                    let e = self.theirs.pop_front().expect("front");
                    self.gone.push(e);
                }
                Ordering::Equal => {
                    let e = self.theirs.pop_front();
                    self.last_step = Some(path.to_vec());
                    return Some(Matched { gone: std::mem::take(&mut self.gone), existing: e });
                }
                Ordering::Greater => break,
            }
        }
        self.last_step = Some(path.to_vec());
        Some(Matched { gone: std::mem::take(&mut self.gone), existing: None })
    }

    /// Once the walk of this root is over: the rest of the listing (all gone).
    /// `None` while the listing is still coming.
    pub fn finish(&mut self) -> Option<Vec<Listed>> {
        if !self.ended {
            return None;
        }
        let mut rest = std::mem::take(&mut self.gone);
        rest.extend(self.theirs.drain(..));
        Some(rest)
    }
}

/// When a file counts as unchanged (rsync's quick check and its variants).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Compare whole-file checksums, not size and mtime (`--checksum`).
    pub checksum: bool,
    /// Same size is enough (`--size-only`).
    pub size_only: bool,
    /// A file that exists at the destination is never sent (`--ignore-existing`).
    pub ignore_existing: bool,
    /// A file newer at the destination is not sent (`--update`).
    pub update: bool,
}

/// What differs between a source entry and the receiver's entry, rsync's
/// itemize columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Diff {
    /// The checksums differ (`c`; only with [`Rules::checksum`]).
    pub sum: bool,
    /// The sizes differ, or a symlink's target (`s`).
    pub size: bool,
    /// The modification times differ (`t`).
    pub time: bool,
    /// The permission bits differ (`p`).
    pub perms: bool,
}

/// The decision for one source entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing at the destination: created.
    Create,
    /// Something else of another kind is there: replaced.
    Replace,
    /// The destination's entry differs: sent again.
    Update(Diff),
    /// Only a directory's metadata differs (nothing is transferred for it).
    Touch(Diff),
    /// Left as it is.
    Same,
}

impl Change {
    /// True when the entry is announced to the receiver.
    pub fn sends(self) -> bool {
        !matches!(self, Change::Same)
    }
}

/// Decides what happens to `src` given the receiver's entry under its path.
/// `mask` is the permission bits the receiver keeps of what it is sent (it
/// applies its umask); `src_sum` the source's whole-file checksum, when
/// [`Rules::checksum`] asked for it and the sizes are equal.
pub fn decide(
    src: &FileMeta,
    src_sum: Option<[u8; HASH_LEN]>,
    dst: Option<&Listed>,
    rules: &Rules,
    mask: u32,
) -> Change {
    let Some(d) = dst else { return Change::Create };
    if d.kind != src.kind {
        return Change::Replace;
    }
    let diff = Diff {
        sum: false,
        size: match src.kind {
            EntryKind::File => d.size != src.size,
            EntryKind::Symlink => d.link != src.link,
            // A device's number is not listed (§4.23): devices compare by kind, time and mode.
            EntryKind::Dir | EntryKind::Fifo | EntryKind::Socket | EntryKind::CharDev | EntryKind::BlockDev => false,
        },
        time: d.mtime_sec != src.mtime_sec || d.mtime_nsec != src.mtime_nsec,
        perms: d.mode & 0o7777 != src.mode & mask & 0o7777,
    };
    match src.kind {
        EntryKind::Dir => {
            // A receiver keeps the modes of directories it did not create
            // (§5.15): only the time is compared, and nothing is transferred.
            if diff.time {
                Change::Touch(Diff { perms: false, ..diff })
            } else {
                Change::Same
            }
        }
        EntryKind::Symlink => {
            if diff.size {
                Change::Update(Diff { time: false, perms: false, ..diff })
            } else {
                Change::Same
            }
        }
        // Made again when its time or mode differs.
        EntryKind::Fifo | EntryKind::Socket | EntryKind::CharDev | EntryKind::BlockDev => {
            if diff.time || diff.perms {
                Change::Update(Diff { size: false, sum: false, ..diff })
            } else {
                Change::Same
            }
        }
        EntryKind::File => {
            if rules.ignore_existing {
                return Change::Same;
            }
            let newer_there = (d.mtime_sec, d.mtime_nsec) > (src.mtime_sec, src.mtime_nsec);
            if rules.update && newer_there {
                return Change::Same;
            }
            let same = if rules.checksum {
                !diff.size && src_sum.is_some() && d.sum == src_sum
            } else if rules.size_only {
                !diff.size
            } else {
                !diff.size && !diff.time
            };
            if same {
                if diff.perms && !rules.checksum && !rules.size_only {
                    // Only the mode differs: the file goes again (gfast sets
                    // modes when it places a file).
                    return Change::Update(Diff { sum: false, size: false, time: false, perms: true });
                }
                return Change::Same;
            }
            let sum = rules.checksum && !diff.size;
            Change::Update(Diff { sum, ..diff })
        }
    }
}

fn kind_letter(k: EntryKind) -> char {
    match k {
        EntryKind::File => 'f',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'L',
        EntryKind::Fifo | EntryKind::Socket => 'S',
        EntryKind::CharDev | EntryKind::BlockDev => 'D',
    }
}

/// The rsync itemize line for a change (`YXcstpoguax name`), or `None` when
/// the entry is unchanged. `remote`: the files go to another host (rsync's `<`
/// "sent"), not into a local directory (`>`). Names of directories end in `/`;
/// symlinks show `-> target`.
pub fn itemize(change: Change, m: &FileMeta, name: &str, remote: bool) -> Option<String> {
    let x = kind_letter(m.kind);
    let transfer = if remote { '<' } else { '>' };
    let code = match change {
        Change::Same => return None,
        Change::Create | Change::Replace => {
            let y = if m.kind == EntryKind::File { transfer } else { 'c' };
            format!("{y}{x}+++++++++")
        }
        Change::Update(d) | Change::Touch(d) => {
            let y = match (m.kind, change) {
                (EntryKind::File, _) => transfer,
                (EntryKind::Symlink, _) => 'c',
                (k, _) if k.is_special() => 'c',
                _ => '.',
            };
            let f = |on: bool, c: char| if on { c } else { '.' };
            format!("{y}{x}{}{}{}{}.....", f(d.sum, 'c'), f(d.size, 's'), f(d.time, 't'), f(d.perms, 'p'))
        }
    };
    let mut line = format!("{code} {name}");
    match m.kind {
        EntryKind::Dir if !name.ends_with('/') => line.push('/'),
        EntryKind::Symlink => {
            line.push_str(" -> ");
            line.push_str(&String::from_utf8_lossy(&m.link));
        }
        _ => {}
    }
    Some(line)
}

/// A name as rsync prints it in itemize lines: as it is, with bytes that are
/// not printable UTF-8 written `\#ooo` (octal).
pub fn rsync_name(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for chunk in path.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch.is_control() {
                let mut b = [0u8; 4];
                for byte in ch.encode_utf8(&mut b).bytes() {
                    out.push_str(&format!("\\#{byte:03o}"));
                }
            } else {
                out.push(ch);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\#{byte:03o}"));
        }
    }
    out
}

/// The rsync itemize line for an entry deleted at the destination.
pub fn itemize_delete(kind: EntryKind, name: &str) -> String {
    let slash = if kind == EntryKind::Dir && !name.ends_with('/') { "/" } else { "" };
    format!("*deleting   {name}{slash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(path: &str, kind: EntryKind) -> Listed {
        Listed {
            kind,
            mode: 0o644,
            mtime_sec: 100,
            mtime_nsec: 5,
            size: if kind == EntryKind::File { 10 } else { 0 },
            path: path.as_bytes().to_vec(),
            link: Vec::new(),
            sum: None,
        }
    }

    fn m(path: &str, kind: EntryKind) -> FileMeta {
        FileMeta {
            id: 0,
            kind,
            mode: 0o644,
            mtime_sec: 100,
            mtime_nsec: 5,
            size: if kind == EntryKind::File { 10 } else { 0 },
            path: path.as_bytes().to_vec(),
            link: Vec::new(),
            owner: None,
            xattrs: Vec::new(),
            rdev: 0,
            hardlink: false,
        }
    }

    #[test]
    fn a_directory_sorts_right_before_its_contents() {
        let mut v = vec!["a.b", "a/z", "a", "", "a/b/c", "b", "a/b", "a-b", "a/b.x"];
        v.sort_by(|x, y| cmp_paths(x.as_bytes(), y.as_bytes()));
        assert_eq!(v, vec!["", "a", "a/b", "a/b/c", "a/b.x", "a/z", "a-b", "a.b", "b"]);
        assert_eq!(cmp_paths(b"", b""), Ordering::Equal);
        assert_eq!(cmp_paths(b"x", b""), Ordering::Greater);
    }

    #[test]
    fn the_merge_pairs_entries_and_reports_what_is_gone() {
        let mut mg = Merge::new();
        // Nothing listed yet: the walk waits.
        assert_eq!(mg.step(b""), None);
        mg.feed(vec![l("", EntryKind::Dir), l("a", EntryKind::File), l("old", EntryKind::Dir)], false).unwrap();
        let r = mg.step(b"").unwrap();
        assert!(r.gone.is_empty());
        assert_eq!(r.existing.unwrap().kind, EntryKind::Dir);
        assert_eq!(mg.step(b"a").unwrap().existing.map(|e| e.path), Some(b"a".to_vec()));
        // "b" sorts before "old": not there; the listing may hold more before "b".
        let r = mg.step(b"b").unwrap();
        assert_eq!(r.existing, None);
        assert!(r.gone.is_empty());
        // "p" sorts after "old": the listing must go on first.
        assert_eq!(mg.step(b"p"), None);
        mg.feed(vec![l("old/x", EntryKind::File), l("p", EntryKind::File), l("q", EntryKind::File)], true).unwrap();
        let r = mg.step(b"p").unwrap();
        let gone: Vec<_> = r.gone.iter().map(|e| e.path.clone()).collect();
        assert_eq!(gone, vec![b"old".to_vec(), b"old/x".to_vec()]);
        assert!(r.existing.is_some());
        let rest = mg.finish().unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].path, b"q");
    }

    #[test]
    fn a_listing_out_of_order_is_refused() {
        let mut mg = Merge::new();
        assert!(matches!(
            mg.feed(vec![l("b", EntryKind::File), l("a", EntryKind::File)], false),
            Err(MergeError::OutOfOrder(_))
        ));
        let mut mg = Merge::new();
        mg.feed(vec![l("a", EntryKind::File)], true).unwrap();
        assert_eq!(mg.feed(vec![], true), Err(MergeError::AfterEnd));
        let mut mg = Merge::new();
        assert!(mg.feed(vec![l("a", EntryKind::File), l("a", EntryKind::File)], true).is_err());
    }

    #[test]
    fn the_quick_check_and_its_variants() {
        let r = Rules::default();
        let src = m("f", EntryKind::File);
        let mut dst = l("f", EntryKind::File);
        assert_eq!(decide(&src, None, None, &r, 0o7777), Change::Create);
        assert_eq!(decide(&src, None, Some(&dst), &r, 0o7777), Change::Same);
        dst.mtime_nsec = 6;
        let c = decide(&src, None, Some(&dst), &r, 0o7777);
        assert_eq!(c, Change::Update(Diff { time: true, ..Diff::default() }));
        assert_eq!(itemize(c, &src, "f", true).unwrap(), "<f..t...... f");
        // --update: newer at the destination is left alone.
        assert_eq!(decide(&src, None, Some(&dst), &Rules { update: true, ..r }, 0o7777), Change::Same);
        // --size-only: the time does not count.
        assert_eq!(decide(&src, None, Some(&dst), &Rules { size_only: true, ..r }, 0o7777), Change::Same);
        dst.size = 11;
        let c = decide(&src, None, Some(&dst), &r, 0o7777);
        assert_eq!(itemize(c, &src, "f", false).unwrap(), ">f.st...... f");
        assert_eq!(decide(&src, None, Some(&dst), &Rules { ignore_existing: true, ..r }, 0o7777), Change::Same);
        // --checksum: equal sizes compare sums; times do not count.
        let ck = Rules { checksum: true, ..r };
        dst.size = 10;
        dst.sum = Some([1; 16]);
        assert_eq!(decide(&src, Some([1; 16]), Some(&dst), &ck, 0o7777), Change::Same);
        let c = decide(&src, Some([2; 16]), Some(&dst), &ck, 0o7777);
        assert_eq!(itemize(c, &src, "f", true).unwrap(), "<fc.t...... f");
        // The receiver's mask: 0o664 sent under umask 022 lands 0o644, equal.
        let mut s2 = src.clone();
        s2.mode = 0o664;
        dst.sum = None;
        dst.mtime_nsec = 5;
        assert_eq!(decide(&s2, None, Some(&dst), &r, 0o755), Change::Same);
        let c = decide(&s2, None, Some(&dst), &r, 0o7777);
        assert_eq!(itemize(c, &s2, "f", true).unwrap(), "<f...p..... f");
    }

    #[test]
    fn kinds_directories_and_links() {
        let r = Rules::default();
        let d = m("d", EntryKind::Dir);
        assert_eq!(itemize(decide(&d, None, None, &r, 0o7777), &d, "d", true).unwrap(), "cd+++++++++ d/");
        let mut ld = l("d", EntryKind::Dir);
        ld.mode = 0o700;
        // A directory's mode is not compared; its time is, and nothing is sent.
        assert_eq!(decide(&d, None, Some(&ld), &r, 0o7777), Change::Same);
        ld.mtime_sec = 1;
        let c = decide(&d, None, Some(&ld), &r, 0o7777);
        assert_eq!(itemize(c, &d, "d", true).unwrap(), ".d..t...... d/");
        let f = m("d", EntryKind::File);
        assert_eq!(decide(&f, None, Some(&ld), &r, 0o7777), Change::Replace);
        let mut s = m("s", EntryKind::Symlink);
        s.link = b"t1".to_vec();
        let mut ls = l("s", EntryKind::Symlink);
        ls.link = b"t1".to_vec();
        ls.mtime_sec = 7;
        assert_eq!(decide(&s, None, Some(&ls), &r, 0o7777), Change::Same);
        ls.link = b"t2".to_vec();
        let c = decide(&s, None, Some(&ls), &r, 0o7777);
        assert_eq!(itemize(c, &s, "s", true).unwrap(), "cL.s....... s -> t1");
        assert_eq!(itemize_delete(EntryKind::Dir, "old"), "*deleting   old/");
        assert_eq!(itemize_delete(EntryKind::File, "a/b"), "*deleting   a/b");
        assert_eq!(rsync_name(b"caf\xc3\xa9 x"), "caf\u{e9} x");
        assert_eq!(rsync_name(b"a\nb\xff"), "a\\#012b\\#377");
    }
}
