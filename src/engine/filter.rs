//! Sync's filters, rsync-style: `--exclude`, `--include`, `--filter "- PAT"`,
//! `--exclude-from FILE`, in the order given, the first rule that matches an
//! entry deciding. Patterns are globs (globset): `*` and `?` stay within one
//! path component, `**` crosses them; a leading `/` anchors a pattern at the
//! top of the transfer, a trailing `/` matches directories only, and a pattern
//! without a leading `/` matches at any depth (`*.o` matches `a/b.o`,
//! `build/*.o` matches `x/build/a.o`); `dir/***` matches `dir` and all in it.
//! An excluded directory is not entered. Paths are relative to the
//! destination named on the command line (for `sync src dest/`, `src/a`; for
//! `sync src/ dest/`, `a`), as rsync matches them.

use globset::{GlobBuilder, GlobMatcher};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What a rule does to the entries it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Keep the entry (`--include`, `+`).
    Include,
    /// Leave the entry out (`--exclude`, `-`).
    Exclude,
}

#[derive(Debug, Clone)]
struct Rule {
    action: Action,
    globs: Vec<GlobMatcher>,
    dir_only: bool,
}

/// An ordered list of include and exclude rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    rules: Vec<Rule>,
}

impl Filter {
    /// No rules: nothing is left out.
    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Adds one pattern with its action; the error says what is wrong with it.
    pub(crate) fn add(&mut self, action: Action, pattern: &str) -> Result<(), String> {
        let mut p = pattern.trim_end_matches(['\r', '\n']);
        if p.is_empty() {
            return Err("an empty filter pattern matches nothing: drop it".into());
        }
        let mut dir_only = false;
        if p.len() > 1 && p.ends_with('/') {
            dir_only = true;
            p = &p[..p.len() - 1];
        }
        let anchored = p.starts_with('/');
        if anchored {
            p = &p[1..];
        }
        let mut sources = Vec::new();
        if let Some(base) = p.strip_suffix("/***") {
            sources.push(base.to_string());
            sources.push(format!("{base}/**"));
        } else {
            sources.push(p.to_string());
        }
        let mut globs = Vec::new();
        for s in sources {
            let g = if anchored { s } else { format!("**/{s}") };
            let m = GlobBuilder::new(&g)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("bad filter pattern '{pattern}': {e}"))?
                .compile_matcher();
            globs.push(m);
        }
        self.rules.push(Rule { action, globs, dir_only });
        Ok(())
    }

    /// Adds a `--filter` rule: `- PATTERN` or `exclude PATTERN`, `+ PATTERN`
    /// or `include PATTERN`.
    pub(crate) fn add_rule(&mut self, rule: &str) -> Result<(), String> {
        let (action, pat) = if let Some(p) = rule.strip_prefix("- ").or_else(|| rule.strip_prefix("exclude ")) {
            (Action::Exclude, p)
        } else if let Some(p) = rule.strip_prefix("+ ").or_else(|| rule.strip_prefix("include ")) {
            (Action::Include, p)
        } else {
            return Err(format!(
                "--filter '{rule}': gfast takes '- PATTERN' (exclude) and '+ PATTERN' (include) rules; merge files and other rsync rule kinds are not supported"
            ));
        };
        self.add(action, pat)
    }

    /// Adds the patterns of a file, one per line (`--exclude-from`,
    /// `--include-from`); empty lines and lines starting with `#` or `;` are
    /// skipped. `-` reads standard input.
    pub(crate) fn add_file(&mut self, action: Action, path: &Path) -> Result<(), String> {
        let text = if path == Path::new("-") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
        } else {
            std::fs::read_to_string(path)
        }
        .map_err(|e| format!("cannot read filter file '{}': {e}", path.display()))?;
        for line in text.lines() {
            if line.trim().is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            self.add(action, line)?;
        }
        Ok(())
    }

    /// True when the entry at `path` (relative to the destination named on
    /// the command line; empty: the top of the transfer, never left out) is
    /// left out.
    pub(crate) fn excluded(&self, path: &[u8], is_dir: bool) -> bool {
        if path.is_empty() {
            return false;
        }
        let p = Path::new(OsStr::from_bytes(path));
        for r in &self.rules {
            if r.dir_only && !is_dir {
                continue;
            }
            if r.globs.iter().any(|g| g.is_match(p)) {
                return r.action == Action::Exclude;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(rules: &[(Action, &str)]) -> Filter {
        let mut f = Filter::default();
        for (a, p) in rules {
            f.add(*a, p).unwrap();
        }
        f
    }

    #[test]
    fn patterns_match_as_rsync_does() {
        let x = f(&[(Action::Exclude, "*.o")]);
        assert!(x.excluded(b"a.o", false));
        assert!(x.excluded(b"d/e/a.o", false));
        assert!(!x.excluded(b"a.c", false));
        // Anchored: only at the top.
        let x = f(&[(Action::Exclude, "/build")]);
        assert!(x.excluded(b"build", true));
        assert!(!x.excluded(b"src/build", true));
        // A slash inside: matched against the end of the path, whole components.
        let x = f(&[(Action::Exclude, "cache/*.tmp")]);
        assert!(x.excluded(b"cache/a.tmp", false));
        assert!(x.excluded(b"x/cache/a.tmp", false));
        assert!(!x.excluded(b"cache/sub/a.tmp", false));
        assert!(!x.excluded(b"xcache/a.tmp", false));
        // Directories only.
        let x = f(&[(Action::Exclude, "tmp/")]);
        assert!(x.excluded(b"a/tmp", true));
        assert!(!x.excluded(b"a/tmp", false));
        // ** crosses components; *** takes the directory and all in it.
        let x = f(&[(Action::Exclude, "/logs/**/*.gz")]);
        assert!(x.excluded(b"logs/2026/11/a.gz", false));
        let x = f(&[(Action::Exclude, "/keep/***")]);
        assert!(x.excluded(b"keep", true));
        assert!(x.excluded(b"keep/a/b", false));
        assert!(!x.excluded(b"keeper", false));
        // The top of the transfer is never left out.
        assert!(!f(&[(Action::Exclude, "*")]).excluded(b"", true));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let x = f(&[(Action::Include, "important.log"), (Action::Exclude, "*.log")]);
        assert!(!x.excluded(b"d/important.log", false));
        assert!(x.excluded(b"d/other.log", false));
        let x = f(&[(Action::Exclude, "*.log"), (Action::Include, "important.log")]);
        assert!(x.excluded(b"d/important.log", false));
        // rsync's idiom: everything below dir, nothing else.
        let x = f(&[(Action::Include, "/dir/***"), (Action::Exclude, "*")]);
        assert!(!x.excluded(b"dir/a/b", false));
        assert!(x.excluded(b"other", false));
    }

    #[test]
    fn filter_rules_and_files() {
        let mut x = Filter::default();
        x.add_rule("- *.bak").unwrap();
        x.add_rule("+ keep.bak").unwrap();
        assert!(x.excluded(b"keep.bak", false));
        assert!(x.add_rule(": .rsync-filter").unwrap_err().contains("not supported"));
        assert!(x.add(Action::Exclude, "a[").unwrap_err().contains("bad filter pattern"));
        let dir = std::env::temp_dir().join(format!("gfast-filter-{}", std::process::id()));
        std::fs::write(&dir, "# comment\n\n*.tmp\n; also\nscratch/\n").unwrap();
        let mut y = Filter::default();
        y.add_file(Action::Exclude, &dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert!(y.excluded(b"a/b.tmp", false));
        assert!(y.excluded(b"scratch", true));
        assert!(!y.excluded(b"# comment", false));
        assert!(y
            .add_file(Action::Exclude, Path::new("/nonexistent-gfast-filter"))
            .unwrap_err()
            .contains("cannot read"));
    }
}
