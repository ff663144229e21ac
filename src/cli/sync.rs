//! `gfast sync`'s own flags → the engine's `SyncPlan`, and what a sync reports
//! (`--stats`, the summary's counts).

use super::args::SyncFlags;
use super::size::human;
use crate::engine::error::Error;
use crate::engine::filter::{Action, Filter};
use crate::engine::send::SyncPlan;
use crate::engine::stats::Stats;
use crate::proto::sync::Rules;
use std::ffi::OsString;
use std::path::PathBuf;

fn to_stdout(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn to_stderr(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The filter rules in the order they were given. clap keeps each flag's
/// values apart, so the order across `--exclude`, `--include`, `--filter` and
/// the `-from` files is read off the command line itself (clap has accepted
/// it already: each of these flags took the next word, or its `=` value).
fn filter_in_order(args: &[OsString]) -> Result<Filter, Error> {
    let mut f = Filter::default();
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if !matches!(flag.as_str(), "--exclude" | "--include" | "--filter" | "--exclude-from" | "--include-from") {
            continue;
        }
        let Some(v) = inline.or_else(|| it.next()) else { break };
        let r = match flag.as_str() {
            "--exclude" => f.add(Action::Exclude, &v),
            "--include" => f.add(Action::Include, &v),
            "--filter" => f.add_rule(&v),
            "--exclude-from" => f.add_file(Action::Exclude, &PathBuf::from(&v)),
            _ => f.add_file(Action::Include, &PathBuf::from(&v)),
        };
        r.map_err(Error::Usage)?;
    }
    Ok(f)
}

/// Checks the flags into a plan. `remote`: the destination is another host;
/// `json`: stdout carries the JSON report, so itemize lines go to stderr.
pub(super) fn plan(s: &SyncFlags, args: &[OsString], remote: bool, json: bool) -> Result<SyncPlan, Error> {
    if s.checksum && s.size_only {
        return Err(Error::Usage("--checksum and --size-only ask for different comparisons: pick one".into()));
    }
    let rules =
        Rules { checksum: s.checksum, size_only: s.size_only, ignore_existing: s.ignore_existing, update: s.update };
    let itemize: Option<fn(&str)> = match (s.itemize_changes || s.dry_run, json) {
        (false, _) => None,
        (true, false) => Some(to_stdout),
        (true, true) => Some(to_stderr),
    };
    Ok(SyncPlan {
        rules,
        delete: s.delete || s.delete_excluded,
        delete_excluded: s.delete_excluded,
        filter: filter_in_order(args)?,
        dry_run: s.dry_run,
        itemize,
        remote,
        list: None,
    })
}

/// The counts of a sync for the summary line.
pub(super) fn summary(stats: &Stats, dry_run: bool) -> String {
    let c = &stats.sync;
    let g = Stats::get;
    let verb = if dry_run { "would be " } else { "" };
    let mut line = format!(
        "{verb}{} created, {} updated, {} deleted, {} unchanged; {} to send",
        g(&c.created),
        g(&c.updated),
        g(&c.deleted),
        g(&c.unchanged),
        human(g(&c.bytes_to_send))
    );
    if g(&c.not_deleted) > 0 {
        line.push_str(&format!("; {} not deleted", g(&c.not_deleted)));
    }
    line
}

/// rsync's `--stats` block, as far as gfast counts the same things.
pub(super) fn stats_block(stats: &Stats) -> String {
    let c = &stats.sync;
    let g = Stats::get;
    let total = g(&c.bytes_to_send) + g(&c.bytes_unchanged);
    let literal = g(&stats.bytes_sent);
    let matched = g(&stats.bytes_resumed) + g(&stats.bytes_unchanged);
    let wire = match g(&stats.bytes_compressed) {
        0 => literal,
        z => z,
    };
    let speedup = if wire == 0 { 0.0 } else { total as f64 / wire as f64 };
    [
        format!("Number of files: {}", g(&c.considered)),
        format!("Number of created files: {}", g(&c.created)),
        format!("Number of deleted files: {}", g(&c.deleted)),
        format!(
            "Number of regular files transferred: {}",
            g(&stats.files_done).saturating_sub(g(&stats.files_in_place))
        ),
        format!("Total file size: {total} bytes"),
        format!("Total transferred file size: {} bytes", g(&c.bytes_to_send)),
        format!("Literal data: {literal} bytes"),
        format!("Matched data: {matched} bytes"),
        format!("Total bytes sent: {wire}"),
        format!("total size is {total}  speedup is {speedup:.2}"),
    ]
    .join("\n")
}
