//! A push's or pull's flags → one checked `TransferConfig`, complete before
//! anything remote starts (the ssh one-shot end, once started, adds only its
//! offer: where to dial, its token and its key).

use super::args::{DaemonArgs, LsArgs, NetArgs, PullArgs, PushArgs, SyncArgs, TransportArg};
use super::remote::{self, NotRemote, Remote};
use super::{buffer_cap_warning, env_token, known_hosts_path, raise_fd_limit, read_token, size, store_config, url};
use crate::engine::error::Error;
use crate::engine::send::SyncPlan;
use crate::engine::ssh::SshTarget;
use crate::proto::frame::{TargetKind, MAX_CHUNK_SIZE, MAX_COMPRESSED_CHUNK, MIN_CHUNK_SIZE};
use crate::storage::store::StoreConfig;
use crate::transport::tcp::KernelLimits;
use crate::transport::tls::Fingerprint;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A push or a pull as the command line gave it, not checked yet.
pub(super) struct Request {
    /// Which way, with its local side as typed.
    way: Way,
    /// The remote argument: a push's destination, a pull's source.
    remote: OsString,
    /// The transfer flags.
    net: NetArgs,
    /// How to reach a daemon.
    daemon: DaemonArgs,
    /// A sync's plan, and whether `--stats` was asked.
    sync: Option<(SyncPlan, bool)>,
}

/// The local side of a request, as typed.
enum Way {
    Push { sources: Vec<OsString> },
    Pull { dest: PathBuf, store: StoreConfig },
}

impl Request {
    /// `gfast push SRC... DEST`.
    pub(super) fn push(a: PushArgs) -> Request {
        let mut sources = a.paths;
        let remote = sources.pop().expect("clap requires two paths");
        Request { way: Way::Push { sources }, remote, net: a.net, daemon: a.daemon, sync: None }
    }

    /// `gfast sync SRC... DEST`; `args` is the command line (the order of the
    /// filter rules is read off it).
    pub(super) fn sync(a: SyncArgs, args: &[OsString]) -> Result<Request, Error> {
        let mut sources = a.paths;
        let dest = sources.pop().expect("clap requires two paths");
        let dest_local = matches!(remote::parse(&dest), Err(NotRemote::Local));
        if let Some(s) = sources.iter().find(|s| remote::parse(s).is_ok()) {
            let what = if dest_local {
                format!(
                    "'{}': syncing from a remote source into a local directory is not built yet: `gfast pull --resume` skips files already in place",
                    s.to_string_lossy()
                )
            } else {
                format!("'{}': sources are local paths; the last argument is the destination", s.to_string_lossy())
            };
            return Err(Error::Usage(what));
        }
        let plan = super::sync::plan(&a.sync, args, !dest_local, a.net.json)?;
        Ok(Request {
            way: Way::Push { sources },
            remote: dest,
            net: a.net,
            daemon: a.daemon,
            sync: Some((plan, a.sync.stats)),
        })
    }

    /// `gfast ls TARGET`: a sync with no sources that shows the destination's
    /// listing and changes nothing.
    pub(super) fn ls(a: LsArgs) -> Request {
        let plan = SyncPlan {
            rules: Default::default(),
            delete: false,
            delete_excluded: false,
            filter: Default::default(),
            dry_run: true,
            itemize: None,
            remote: true,
            list: Some(super::ls::shower(a.long, a.recursive, a.net.json, base_name(&a.target))),
        };
        Request {
            way: Way::Push { sources: Vec::new() },
            remote: a.target,
            net: a.net,
            daemon: a.daemon,
            sync: Some((plan, false)),
        }
    }

    /// `gfast pull SRC DEST`.
    pub(super) fn pull(a: PullArgs) -> Request {
        let store = store_config(a.io, a.fsync);
        Request { way: Way::Pull { dest: a.dest, store }, remote: a.src, net: a.net, daemon: a.daemon, sync: None }
    }

    /// The transfer flags.
    pub(super) fn net(&self) -> &NetArgs {
        &self.net
    }

    /// Files land on this machine.
    pub(super) fn receives_here(&self) -> bool {
        matches!(self.way, Way::Pull { .. })
    }
}

/// The last name of a target as typed (`gfast://h/a/b` → `b`, `host:f` → `f`).
fn base_name(target: &OsString) -> String {
    let t = target.to_string_lossy();
    let t = t.trim_end_matches('/');
    let cut = t.rfind('/').or_else(|| t.rfind(':')).map(|i| i + 1).unwrap_or(0);
    match &t[cut..] {
        "" => ".".to_string(),
        b => b.to_string(),
    }
}

/// Which way the data flows, with its local side checked.
pub(super) enum Direction {
    /// These local files and trees go to the remote.
    Push { sources: Vec<PathBuf> },
    /// The remote's file or tree lands here.
    Pull {
        /// The local directory everything is confined to.
        root: PathBuf,
        /// The path under `root` (may be empty).
        target: Vec<u8>,
        /// What is at `target` now.
        kind: TargetKind,
        /// The destination names a directory.
        is_dir: bool,
        /// How received files are written.
        store: StoreConfig,
    },
}

/// The far end, with what it takes to reach it.
pub(super) enum Peer {
    /// A running daemon, and how to trust it.
    Daemon(url::Remote, Trust),
    /// ssh one-shot mode: the remote end, once started, offers its own token and key.
    Ssh(SshTarget),
    /// A local directory: both ends in this process.
    Local(PathBuf),
}

/// How a session proves who each end is.
#[derive(Clone)]
pub(super) struct Trust {
    /// Shared token.
    pub(super) token: Vec<u8>,
    /// TLS on every connection.
    pub(super) encrypt: bool,
    /// The server key to insist on.
    pub(super) fingerprint: Option<Fingerprint>,
    /// Where server keys are remembered (trust on first use); `None` disables it.
    pub(super) known_hosts: Option<PathBuf>,
}

/// A checked push or pull.
pub(super) struct TransferConfig {
    /// Which way, and the local side.
    pub(super) direction: Direction,
    /// The far end.
    pub(super) peer: Peer,
    /// The transfer flags, checked.
    pub(super) net: NetArgs,
    /// A sync's plan, and whether `--stats` was asked.
    pub(super) sync: Option<(SyncPlan, bool)>,
}

impl TransferConfig {
    /// Checks `req`, raises the descriptor limit and warns of a capped
    /// `--buffer`. The first error found is the one reported, in this order:
    /// a pull's source that is not remote; the transfer flags; the daemon
    /// flags; a push's sources, or a pull's local destination; a push's
    /// destination that is not remote, or a `gfast://` URL that does not
    /// parse; a daemon's token.
    pub(super) fn new(req: Request) -> Result<TransferConfig, Error> {
        let Request { way, remote: arg, net, daemon, sync } = req;
        let remote = remote::parse(&arg);
        if let (Way::Push { sources }, Err(NotRemote::Local)) = (&way, &remote) {
            check_net(&net)?;
            for s in sources {
                std::fs::metadata(s).map_err(|e| Error::Source(PathBuf::from(s), e))?;
            }
            let direction = Direction::Push { sources: sources.iter().map(PathBuf::from).collect() };
            return Ok(TransferConfig { direction, peer: Peer::Local(PathBuf::from(&arg)), net, sync });
        }
        if let (Way::Pull { .. }, Err(e @ (NotRemote::OneSlash | NotRemote::Local))) = (&way, &remote) {
            return Err(Error::Usage(e.for_pull(&arg)));
        }
        let via_ssh = matches!(remote, Ok(Remote::Ssh(_)));
        check_net(&net)?;
        let pin = check_daemon(&daemon, &net, via_ssh)?;
        let direction = match way {
            Way::Push { sources } => {
                // Check the sources before starting anything remote.
                for s in &sources {
                    std::fs::metadata(s).map_err(|e| Error::Source(PathBuf::from(s), e))?;
                }
                Direction::Push { sources: sources.into_iter().map(PathBuf::from).collect() }
            }
            Way::Pull { dest, store } => {
                if !via_ssh && net.rate.is_some() {
                    return Err(Error::Usage(
                        "--rate paces the sending side: a daemon paces its pulls with its own --rate; drop it here"
                            .into(),
                    ));
                }
                pull_dest(dest, store)?
            }
        };
        let peer = match remote.map_err(|e| Error::Usage(e.for_push(&arg)))? {
            Remote::Daemon(url) => {
                let trust = daemon_trust(&daemon, pin)?;
                Peer::Daemon(url, trust)
            }
            Remote::Ssh(t) => Peer::Ssh(t),
        };
        Ok(TransferConfig { direction, peer, net, sync })
    }
}

/// Where a pull lands here, with the same rules as a one-shot receiver.
fn pull_dest(dest: PathBuf, store: StoreConfig) -> Result<Direction, Error> {
    let (root, target) = crate::engine::oneshot::split_dest(&dest)
        .map_err(|e| Error::Usage(format!("cannot use '{}' as destination: {e}", dest.display())))?;
    let comps = crate::proto::path::components(&target).map_err(|e| Error::Usage(e.to_string()))?;
    let kind = crate::storage::dest::DestRoot::open(&root)
        .map_err(|e| Error::Usage(format!("cannot open '{}': {e}", root.display())))?
        .target_kind(&comps)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let is_dir = target.is_empty() || dest.as_os_str().as_bytes().ends_with(b"/");
    Ok(Direction::Pull { root, target, kind, is_dir, store })
}

/// Checks the transfer flags shared by push and pull; then raises the
/// descriptor limit and warns of a `--buffer` the kernel caps.
fn check_net(n: &NetArgs) -> Result<(), Error> {
    if !(MIN_CHUNK_SIZE as u64..=MAX_CHUNK_SIZE as u64).contains(&n.chunk_size) {
        return Err(Error::Usage(format!("--chunk-size {} is out of range: use 64K to 1G", size::human(n.chunk_size))));
    }
    if n.compress && n.chunk_size > MAX_COMPRESSED_CHUNK as u64 {
        return Err(Error::Usage(format!(
            "--compress holds a whole compressed chunk per stream in memory: use --chunk-size {}M or less",
            MAX_COMPRESSED_CHUNK >> 20
        )));
    }
    if n.transport == TransportArg::Quic {
        let clash = if n.tunnel {
            Some("--tunnel: an ssh tunnel carries TCP only")
        } else if n.rate.is_some() {
            Some("--rate: pacing applies to TCP streams")
        } else if n.buffer.is_some() {
            Some("--buffer: it sizes TCP sockets")
        } else {
            None
        };
        if let Some(c) = clash {
            return Err(Error::Usage(format!("{c}; drop it or use --transport tcp")));
        }
    }
    raise_fd_limit();
    if let Some(w) = n.buffer.and_then(|b| buffer_cap_warning(b, &KernelLimits::read())) {
        eprintln!("gfast: warning: {w}");
    }
    Ok(())
}

/// Checks the daemon flags against the rest; returns the pinned key, if any.
fn check_daemon(d: &DaemonArgs, n: &NetArgs, via_ssh: bool) -> Result<Option<Fingerprint>, Error> {
    let fingerprint = match &d.fingerprint {
        Some(f) => Some(Fingerprint::parse(f).ok_or_else(|| {
            Error::Usage(format!("--fingerprint '{f}': expected sha256: and 64 hex digits, as gfast serve prints"))
        })?),
        None => None,
    };
    if d.no_encrypt && fingerprint.is_some() {
        return Err(Error::Usage("--fingerprint pins a TLS key: it cannot go with --no-encrypt".into()));
    }
    if d.no_encrypt && n.transport == TransportArg::Quic {
        return Err(Error::Usage("--no-encrypt: QUIC always encrypts; use --transport tcp for clear data".into()));
    }
    if d.no_encrypt && via_ssh {
        return Err(Error::Usage("--no-encrypt is for daemons (gfast://); ssh one-shot mode always encrypts".into()));
    }
    Ok(fingerprint)
}

/// How to trust the daemon: the token (`--token-file`, else GFAST_TOKEN), and its key.
fn daemon_trust(d: &DaemonArgs, fingerprint: Option<Fingerprint>) -> Result<Trust, Error> {
    let token = match (&d.token_file, env_token()) {
        (Some(f), _) => read_token(f)?,
        (None, Some(t)) => t,
        (None, None) => {
            return Err(Error::Usage(
                "no token: pass --token-file FILE or set GFAST_TOKEN (the server prints or stores it)".into(),
            ))
        }
    };
    Ok(Trust { token, encrypt: !d.no_encrypt, fingerprint, known_hosts: known_hosts_path() })
}
