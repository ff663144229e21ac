//! One push or pull, either way and to either kind of far end: check the
//! flags into a `TransferConfig`, announce the job, reach the far end (a daemon
//! as given, or the ssh bootstrap), run the engine, say the summary.

use super::args::{NetArgs, TransportArg};
use super::config::{Direction, Peer, Request, TransferConfig, Trust};
use super::{report, use_journal_key};
use crate::engine::client::{pull, push, PullDest, PushConfig};
use crate::engine::error::Error;
use crate::engine::ssh;
use crate::engine::stats::Stats;
use crate::storage::store::StoreConfig;
use crate::transport::tcp::Tuning;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

/// Runs the push or pull `req` asks for; `announce` says the job's id, once,
/// when the arguments are good and before anything remote starts.
pub(super) fn run(req: Request, stats: Arc<Stats>, job_id: [u8; 16], announce: &dyn Fn()) -> Result<(), Error> {
    if req.receives_here() {
        use_journal_key();
    }
    let cfg = TransferConfig::new(req)?;
    // Before an ssh login, which can take a while.
    announce();
    let list_only = cfg.sync.as_ref().and_then(|(p, _)| p.list.clone());
    if let (Peer::Local(dest), Direction::Push { sources }) = (&cfg.peer, &cfg.direction) {
        if let Some(show) = &list_only {
            return super::ls::local(dest, show);
        }
        return local(&cfg, sources, dest, stats);
    }
    let far = reach(&cfg)?;
    let engine = engine_config(&cfg, &far, job_id);
    // A listing prints to stdout as it arrives: no progress bar over it.
    let quiet = list_only.is_some();
    let res = with_progress_unless(quiet, &cfg.net, &stats, || match &cfg.direction {
        Direction::Push { .. } => push(&engine, stats.clone()).map(|s| (s.files, s.discard)),
        Direction::Pull { root, target, kind, is_dir, .. } => {
            let dest = PullDest { root, target: target.clone(), kind: *kind, is_dir: *is_dir };
            // A daemon sends the path under its root; a one-shot end what it was started with.
            let source = matches!(cfg.peer, Peer::Daemon(..)).then(|| far.path.clone());
            pull(&engine, dest, source, stats.clone()).map(|files| (files, false))
        }
    });
    if let Some(r) = far.bootstrap {
        r.finish();
    }
    if list_only.is_some() {
        return res.map(|_| ());
    }
    let dry = cfg.sync.as_ref().is_some_and(|(p, _)| p.dry_run);
    let res = res.map(|(files, discard)| {
        if !cfg.net.quiet && !cfg.net.json && !dry {
            eprintln!("{}", report::summary_line(&stats, files, discard));
        }
    });
    sync_report(&cfg, &stats);
    res
}

/// A copy into a local directory: no far end, no network.
fn local(
    cfg: &TransferConfig,
    sources: &[std::path::PathBuf],
    dest: &std::path::Path,
    stats: Arc<Stats>,
) -> Result<(), Error> {
    use crate::engine::local::{copy, LocalCopy};
    let lc = LocalCopy {
        sources,
        dest,
        workers: cfg.net.streams.map(usize::from).unwrap_or(LOCAL_WORKERS),
        sync: cfg.sync.as_ref().map(|(p, _)| p),
        store: StoreConfig {
            sparse: !cfg.net.no_sparse,
            owners: !cfg.net.no_owner && crate::storage::owners::may_chown(),
            xattrs: cfg.net.xattrs,
            specials: cfg.net.devices || cfg.sync.is_some(),
            hardlinks: cfg.net.hard_links,
            ..StoreConfig::default()
        },
    };
    let res = with_progress(&cfg.net, &stats, || copy(&lc, stats.clone()));
    let dry = cfg.sync.as_ref().is_some_and(|(p, _)| p.dry_run);
    let res = res.map(|files| {
        if !cfg.net.quiet && !cfg.net.json && !dry {
            eprintln!("{}", report::local_summary_line(&stats, files));
        }
    });
    sync_report(cfg, &stats);
    res
}

/// Files a local copy copies at once by default.
const LOCAL_WORKERS: usize = 4;

/// A sync's counts (and with --stats, rsync's block), on stderr.
fn sync_report(cfg: &TransferConfig, stats: &Stats) {
    let Some((plan, show_stats)) = &cfg.sync else { return };
    if cfg.net.json || cfg.net.quiet {
        return;
    }
    eprintln!("gfast: sync: {}", super::sync::summary(stats, plan.dry_run));
    if *show_stats {
        eprintln!("{}", super::sync::stats_block(stats));
    }
}

/// The far end, reached.
struct Reached {
    /// "host:port" to dial.
    server: String,
    /// The token and how the server's key is checked.
    trust: Trust,
    /// The far end's path: under a daemon's root, or the one-shot end's target.
    path: Vec<u8>,
    /// A push's destination names a directory.
    is_dir: bool,
    /// The ssh one-shot end, kept running until the transfer is over.
    bootstrap: Option<ssh::Remote>,
}

/// A daemon as the flags say; over ssh, starts the one-shot end and takes its offer.
fn reach(cfg: &TransferConfig) -> Result<Reached, Error> {
    let (t, role, rate) = match (&cfg.peer, &cfg.direction) {
        (Peer::Daemon(url, trust), _) => {
            return Ok(Reached {
                server: url.server.clone(),
                trust: trust.clone(),
                path: url.path.clone(),
                is_dir: url.is_dir,
                bootstrap: None,
            })
        }
        (Peer::Ssh(t), Direction::Push { .. }) => (t, ssh::RemoteRole::Receive, None),
        (Peer::Ssh(t), Direction::Pull { .. }) => (t, ssh::RemoteRole::Send, cfg.net.rate),
        (Peer::Local(_), _) => unreachable!("a local destination is copied without a far end"),
    };
    let r = ssh::start(&ssh::split_words(&cfg.net.ssh), &cfg.net.remote_cmd, t, role, rate)?;
    let o = r.offer.clone();
    let server = route(&cfg.net, &r)?;
    Ok(Reached {
        server,
        trust: Trust {
            token: o.token.into_bytes(),
            encrypt: true,
            fingerprint: Some(o.fingerprint),
            known_hosts: None,
        },
        is_dir: t.path.is_empty() || t.path.ends_with(b"/") || o.target.is_empty(),
        path: o.target,
        bootstrap: Some(r),
    })
}

/// What the engine is given: the flags, the far end, and which way.
fn engine_config(cfg: &TransferConfig, far: &Reached, job_id: [u8; 16]) -> PushConfig {
    let n = &cfg.net;
    let (sources, dest, dest_is_dir, store) = match &cfg.direction {
        Direction::Push { sources } => (sources.clone(), far.path.clone(), far.is_dir, StoreConfig::default()),
        Direction::Pull { store, .. } => {
            let owners = !n.no_owner && crate::storage::owners::may_chown();
            (Vec::new(), Vec::new(), false, StoreConfig { owners, ..*store })
        }
    };
    PushConfig {
        sources,
        server: far.server.clone(),
        dest,
        dest_is_dir,
        token: far.trust.token.clone(),
        lanes: n.streams.unwrap_or(0),
        chunk_size: n.chunk_size as u32,
        tuning: Tuning {
            buffer: n.buffer.map(|b| b as usize),
            timeout: Duration::from_secs(n.timeout.max(1)),
            rate: n.rate,
            ..Tuning::default()
        },
        job_id,
        encrypt: far.trust.encrypt,
        fingerprint: far.trust.fingerprint,
        known_hosts: far.trust.known_hosts.clone(),
        notice: |m| eprintln!("gfast: {m}"),
        resume: n.resume,
        compress: n.compress,
        sparse: !n.no_sparse,
        owners: !n.no_owner,
        numeric_ids: n.numeric_ids,
        xattrs: n.xattrs,
        specials: n.devices || cfg.sync.is_some(),
        hardlinks: n.hard_links,
        delta: n.delta,
        quic: n.transport == TransportArg::Quic,
        store,
        sync: cfg.sync.as_ref().map(|(p, _)| p.clone()),
    }
}

/// ssh mode: the address to dial, directly or, when asked or when a direct
/// connection fails, through an ssh tunnel (announced in one line).
fn route(n: &NetArgs, r: &ssh::Remote) -> Result<String, Error> {
    if n.transport == TransportArg::Quic {
        // UDP has no connect to probe: the QUIC handshake tells.
        return Ok(r.server.clone());
    }
    if !n.tunnel {
        match crate::transport::tcp::connect(&r.server, Duration::from_secs(3)) {
            Ok(_) => return Ok(r.server.clone()),
            Err(e) if !n.quiet => {
                eprintln!(
                    "gfast: cannot connect directly to {} ({e}); falling back to the ssh tunnel (slower)",
                    r.server
                )
            }
            Err(_) => {}
        }
    }
    r.tunnel()
}

/// Runs `f` with a progress bar when stderr is a terminal and output is not quieted.
fn with_progress<T>(n: &NetArgs, stats: &Arc<Stats>, f: impl FnOnce() -> T) -> T {
    with_progress_unless(false, n, stats, f)
}

fn with_progress_unless<T>(quiet: bool, n: &NetArgs, stats: &Arc<Stats>, f: impl FnOnce() -> T) -> T {
    let show = !quiet && !n.quiet && !n.json && std::io::stderr().is_terminal();
    let bar = show.then(|| report::Progress::start(stats.clone()));
    let r = f();
    if let Some(b) = bar {
        b.finish();
    }
    r
}
