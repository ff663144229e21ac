//! The command line: flags → validated configuration → engine; errors → one line and
//! an exit code. The engine never sees clap types.

mod args;
mod bench;
mod report;
pub mod size;
pub mod url;

use crate::engine::client::{pull, push, PullDest, PushConfig};
use crate::engine::error::Error;
use crate::engine::server::{random, ServeConfig, Server};
use crate::engine::stats::Stats;
use crate::engine::{oneshot, ssh};
use crate::proto::frame::{MAX_CHUNK_SIZE, MAX_COMPRESSED_CHUNK, MIN_CHUNK_SIZE};
use crate::storage::jobs;
use crate::storage::store::StoreConfig;
use crate::transport::tcp::{KernelLimits, Tuning};
use crate::transport::tls::{Fingerprint, Identity};
use args::{Cli, Cmd, NetArgs, PullArgs, PushArgs, ServeArgs};
use clap::Parser;
use std::io::{IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let cli = Cli::parse();
    let res = dispatch(cli, args, None);
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: a one-shot end whose ssh channel died has no stderr.
            let _ = writeln!(std::io::stderr(), "gfast: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch(cli: Cli, args: Vec<std::ffi::OsString>, job_id: Option<[u8; 16]>) -> Result<(), Error> {
    match cli.cmd {
        Cmd::Serve(a) => serve(a),
        Cmd::Push(a) => {
            let out = (a.net.json, a.net.quiet, a.net.buffer.is_some());
            run_job(out, args, job_id, |st, id, announce| push_inner(a, st, id, announce))
        }
        Cmd::Pull(a) => {
            let out = (a.net.json, a.net.quiet, a.net.buffer.is_some());
            run_job(out, args, job_id, |st, id, announce| pull_inner(a, st, id, announce))
        }
        Cmd::Jobs(a) => jobs_cmd(a),
        Cmd::Resume(a) => resume_cmd(a),
        Cmd::Bench(a) => bench::run(&a.dir, a.size),
    }
}

/// The job store: `GFAST_JOBS_DIR` (empty: none), else `$XDG_STATE_HOME/gfast/jobs`
/// or `~/.local/state/gfast/jobs`.
fn job_store() -> Option<jobs::Store> {
    if let Some(d) = std::env::var_os("GFAST_JOBS_DIR") {
        return (!d.is_empty()).then(|| jobs::Store::new(PathBuf::from(d)));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(jobs::Store::new(base.join("gfast/jobs")))
}

fn jobs_cmd(a: args::JobsArgs) -> Result<(), Error> {
    let store = job_store().ok_or_else(|| Error::Usage("no job store (GFAST_JOBS_DIR is empty)".into()))?;
    if a.prune {
        println!("removed {} finished job(s)", store.prune());
        return Ok(());
    }
    for j in store.list() {
        let cmd: Vec<String> = j.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        println!(
            "{}  {:<7}  {} / {}  {}",
            &j.id[..16],
            j.state,
            size::human(j.bytes_done),
            size::human(j.bytes_total),
            cmd.join(" ")
        );
    }
    Ok(())
}

fn resume_cmd(a: args::ResumeArgs) -> Result<(), Error> {
    let store = job_store().ok_or_else(|| Error::Usage("no job store (GFAST_JOBS_DIR is empty)".into()))?;
    let job = store.find(&a.id).map_err(Error::Usage)?;
    let mut args = job.args.clone();
    if !args.iter().any(|x| x == "--resume") {
        args.push("--resume".into());
    }
    let cli = Cli::try_parse_from(std::iter::once(std::ffi::OsString::from("gfast")).chain(args.iter().cloned()))
        .map_err(|e| Error::Usage(format!("job {} cannot be run again: {e}", job.id)))?;
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&job.id[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    dispatch(cli, args, Some(id))
}

fn read_token(path: &Path) -> Result<Vec<u8>, Error> {
    let t =
        std::fs::read(path).map_err(|e| Error::Usage(format!("cannot read token file '{}': {e}", path.display())))?;
    let t = t.trim_ascii().to_vec();
    if t.is_empty() {
        return Err(Error::Usage(format!("token file '{}' is empty", path.display())));
    }
    // Like ssh with a private key, but a warning: the token still works.
    if let Ok(md) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = md.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "gfast: warning: token file '{}' can be read by other users (mode {mode:04o}): chmod 600 it",
                path.display()
            );
        }
    }
    Ok(t)
}

fn env_token() -> Option<Vec<u8>> {
    std::env::var_os("GFAST_TOKEN").map(|v| v.as_encoded_bytes().trim_ascii().to_vec()).filter(|t| !t.is_empty())
}

fn new_token() -> String {
    random::<24>().iter().map(|b| format!("{b:02x}")).collect()
}

/// How received files are written: `--io` and `--fsync`.
fn store_config(io: args::IoArg, fsync: bool) -> StoreConfig {
    use crate::storage::pieces::IoMode;
    let io = match io {
        args::IoArg::Uring => IoMode::Uring,
        args::IoArg::Pwrite => IoMode::Pwrite,
    };
    StoreConfig { durable: fsync, io }
}

fn serve(a: ServeArgs) -> Result<(), Error> {
    if a.oneshot {
        return serve_oneshot(a);
    }
    let root = match a.root {
        Some(r) => r,
        None => PathBuf::from("/nonexistent-gfast-discard-root"),
    };
    if !a.discard {
        let md = std::fs::metadata(&root)
            .map_err(|e| Error::Usage(format!("--root '{}': {e} (create it first)", root.display())))?;
        if !md.is_dir() {
            return Err(Error::Usage(format!("--root '{}' is not a directory", root.display())));
        }
    }
    let token = match (&a.token_file, env_token()) {
        (Some(f), _) if f.exists() => read_token(f)?,
        (Some(f), _) => {
            let t = format!("{}\n", new_token());
            let created = crate::storage::write_private_file(f, t.as_bytes(), false)
                .map_err(|e| Error::Usage(format!("cannot create token file '{}': {e}", f.display())))?;
            if created {
                eprintln!("gfast serve: created a new token in {}", f.display());
            }
            // Read back: another daemon may have created it first.
            read_token(f)?
        }
        (None, Some(t)) => t,
        (None, None) => {
            let t = new_token();
            eprintln!("gfast serve: no --token-file or GFAST_TOKEN given; this run's token is {t}");
            t.into_bytes()
        }
    };
    let addr = a
        .listen
        .to_socket_addrs()
        .map_err(|e| Error::Usage(format!("--listen '{}': {e}", a.listen)))?
        .next()
        .ok_or_else(|| Error::Usage(format!("--listen '{}' resolves to no address", a.listen)))?;
    let listener = Server::bind(addr).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (is another gfast serve running? pick a free --listen port)"
        } else {
            ""
        };
        Error::Usage(format!("cannot listen on {addr}: {e}{hint}"))
    })?;
    let local = listener.local_addr().map_err(|e| Error::Io("listener".into(), e))?;
    raise_fd_limit();
    if let Some(w) = a.buffer.and_then(|b| buffer_cap_warning(b, &KernelLimits::read())) {
        eprintln!("gfast serve: warning: {w}");
    }
    let key_file = match a.key_file {
        Some(k) => k,
        None => {
            config_dir().ok_or_else(|| Error::Usage("no home directory: pass --key-file".into()))?.join("server.key")
        }
    };
    let (id, created) = Identity::load_or_create(&key_file)
        .map_err(|e| Error::Usage(format!("cannot load or create the key '{}': {e}", key_file.display())))?;
    eprintln!(
        "gfast serve: {} key {} ({})",
        if created { "created" } else { "using" },
        id.fingerprint,
        key_file.display()
    );
    let tls = id.server_config().map_err(|e| Error::Io("TLS setup".into(), e))?;
    let jkey = key_file.with_file_name("journal.key");
    if let Err(e) = crate::storage::journal::use_key_file(&jkey) {
        eprintln!(
            "gfast serve: warning: cannot load or create the journal key '{}': {e}; \
             partial files left by earlier runs will be received again from the start",
            jkey.display()
        );
    }
    let cfg = ServeConfig {
        tls,
        allow_plain: a.allow_no_encrypt,
        allow_pull: a.allow_pull || a.read_only,
        read_only: a.read_only,
        oneshot: false,
        send: None,
        root,
        token,
        discard: a.discard,
        tuning: Tuning {
            buffer: a.buffer.map(|b| b as usize),
            timeout: Duration::from_secs(a.timeout.max(1)),
            rate: a.rate,
            ..Tuning::default()
        },
        max_lanes: a.max_streams.max(1),
        verbose: a.verbose,
        max_sessions: a.max_sessions as usize,
        partial_ttl: (!a.partial_ttl.is_zero()).then_some(a.partial_ttl),
        store: store_config(a.io, a.fsync),
    };
    let discard = cfg.discard;
    let server = Server::new(cfg);
    start_quic(&server, local, "gfast serve");
    println!("gfast serve: listening on {local}, key {}", id.fingerprint);
    let _ = std::io::stdout().flush();
    if discard {
        eprintln!("gfast serve: --discard: data is received and verified, nothing is written");
    }
    server.run(listener).map_err(|e| Error::Io("accepting connections".into(), e))
}

/// Also listens for QUIC on the TCP port's number (UDP); says so when it cannot,
/// or when a kernel limit caps its buffers.
fn start_quic(server: &Arc<Server>, local: std::net::SocketAddr, who: &str) {
    match server.start_quic(local) {
        Ok(None) => {}
        Ok(Some(note)) => eprintln!("{who}: {note}"),
        Err(e) => eprintln!("{who}: QUIC unavailable on UDP {local} ({e}); serving TCP only"),
    }
}

/// `gfast serve --oneshot`: one session for a client that started us over ssh.
/// The key that authenticates resume journals of a receiving client or
/// one-shot end (the daemon keeps its own beside its --key-file). Without one,
/// partial files of earlier runs are received again from the start.
fn use_journal_key() {
    if let Some(d) = config_dir() {
        let _ = crate::storage::journal::use_key_file(&d.join("journal.key"));
    }
}

fn serve_oneshot(a: ServeArgs) -> Result<(), Error> {
    use_journal_key();
    let refuse = |m: String| {
        println!("{} {m}", oneshot::REFUSAL_TAG);
        let _ = std::io::stdout().flush();
        Err(Error::Usage(m))
    };
    let (root, target, send) = match (a.dest, a.send) {
        (Some(dest), None) => match oneshot::split_dest(&dest) {
            Ok((root, target)) => (root, target, None),
            Err(e) => return refuse(format!("cannot use '{}' as destination: {e}", dest.display())),
        },
        (None, Some(src)) => match std::fs::metadata(&src) {
            Ok(_) => (PathBuf::from("/"), Vec::new(), Some(src)),
            Err(e) => return refuse(format!("cannot read source '{}': {e}", src.display())),
        },
        _ => return Err(Error::Usage("--oneshot needs --dest PATH (receive) or --send PATH (send)".into())),
    };
    let id = Identity::ephemeral().map_err(|e| Error::Io("creating a key".into(), e))?;
    let token = new_token();
    // Listen where the ssh connection arrived, so the lanes take the same path.
    // GFAST_ADVERTISE names another address for the client (a host behind NAT).
    let arrived = std::env::var("SSH_CONNECTION").ok().and_then(|v| v.split_whitespace().nth(2).map(String::from));
    let ip: std::net::IpAddr = arrived.as_deref().and_then(|h| h.parse().ok()).unwrap_or([0, 0, 0, 0].into());
    let host = std::env::var("GFAST_ADVERTISE").ok().filter(|h| !h.is_empty()).or(arrived);
    let listener = Server::bind((ip, 0).into()).map_err(|e| Error::Io(format!("cannot listen on {ip}"), e))?;
    let port = listener.local_addr().map_err(|e| Error::Io("listener".into(), e))?.port();
    raise_fd_limit();
    let cfg = ServeConfig {
        root,
        token: token.clone().into_bytes(),
        discard: false,
        tuning: Tuning {
            buffer: a.buffer.map(|b| b as usize),
            rate: a.rate,
            timeout: Duration::from_secs(a.timeout.max(1)),
            ..Tuning::default()
        },
        max_lanes: a.max_streams.max(1),
        verbose: a.verbose,
        tls: id.server_config().map_err(|e| Error::Io("TLS setup".into(), e))?,
        allow_plain: false,
        allow_pull: false,
        read_only: false,
        oneshot: true,
        send,
        max_sessions: 1,
        partial_ttl: None,
        store: store_config(a.io, a.fsync),
    };
    let server = Server::new(cfg);
    start_quic(&server, (ip, port).into(), "gfast serve --oneshot");
    let bind = (!ip.is_unspecified()).then(|| ip.to_string());
    let offer = oneshot::Offer { host, port, token, fingerprint: id.fingerprint, target, bind };
    println!("{}", offer.to_line());
    let _ = std::io::stdout().flush();
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let c2 = closed.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        c2.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    if server.run_oneshot(listener, Duration::from_secs(a.idle_timeout), &closed) {
        Ok(())
    } else {
        Err(Error::Remote(0, "the one-shot session did not complete".into()))
    }
}

/// `$XDG_CONFIG_HOME/gfast` or `~/.config/gfast`.
fn config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("gfast"))
}

/// Where server keys are remembered: `GFAST_KNOWN_HOSTS`, else the config directory.
fn known_hosts_path() -> Option<PathBuf> {
    std::env::var_os("GFAST_KNOWN_HOSTS").map(PathBuf::from).or_else(|| config_dir().map(|d| d.join("known_hosts")))
}

/// Many files in flight need many descriptors: lift the soft limit to the hard one.
fn raise_fd_limit() {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// An explicit buffer is capped by net.core.{r,w}mem_max: say so and what to raise.
fn buffer_cap_warning(b: u64, k: &KernelLimits) -> Option<String> {
    let cap = k.rmem_max.min(k.wmem_max);
    (cap > 0 && b > cap).then(|| {
        format!(
            "--buffer {} is capped by the kernel at {} (net.core.rmem_max/wmem_max); raise both with \
             `sysctl -w net.core.rmem_max={b} net.core.wmem_max={b}`, or drop --buffer to let autotuning \
             grow up to tcp_rmem/tcp_wmem ({} / {})",
            size::human(b),
            size::human(cap),
            size::human(k.tcp_rmem_max),
            size::human(k.tcp_wmem_max)
        )
    })
}

/// Runs a push or pull job with fresh counters and a job id, and prints the
/// `--json` report at the end, on success and on failure alike.
fn run_job(
    (json, quiet, explicit_buffer): (bool, bool, bool),
    args: Vec<std::ffi::OsString>,
    job_id: Option<[u8; 16]>,
    job: impl FnOnce(Arc<Stats>, [u8; 16], &dyn Fn()) -> Result<(), Error>,
) -> Result<(), Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = Arc::new(Stats::new(256));
    let job_id_given = job_id;
    let job_id = job_id.unwrap_or_else(random::<16>);
    let store = job_store();
    let mut record = jobs::Job::new(&job_id, args);
    let saved = store.as_ref().is_some_and(|st| st.save(&record, jobs::State::Running).is_ok());
    // Said once the arguments are checked, just before the transfer starts (a
    // job refused for its arguments is removed, so it has no id to resume).
    let id = record.id.clone();
    let announced = std::cell::Cell::new(false);
    let announce = || {
        announced.set(true);
        if saved && !quiet && !json {
            eprintln!("gfast: job {id} (resume with: gfast resume {})", &id[..12]);
        }
    };
    let res = job(stats.clone(), job_id, &announce);
    let fresh = job_id_given.is_none();
    let refused = matches!(res, Err(Error::Usage(_))) || (res.is_err() && !announced.get());
    if let (Some(st), true, true) = (&store, fresh, refused) {
        // Bad arguments, or stopped before the transfer: there is nothing to resume.
        st.remove(&record.id);
    } else if let Some(st) = &store {
        record.bytes_total = stats.bytes_total.load(Relaxed);
        record.bytes_done = stats.bytes_done.load(Relaxed);
        record.error = res.as_ref().err().map(|e| e.to_string());
        let state = if res.is_ok() { jobs::State::Done } else { jobs::State::Failed };
        let _ = st.save(&record, state);
    }
    let limits = KernelLimits::read();
    // Advice on limits only after a success: a failure's one line is its error.
    if let (true, false, false, Some(a)) =
        (res.is_ok(), json, quiet, report::limit_advice(&stats, &limits, explicit_buffer))
    {
        eprintln!("gfast: note: {a}");
    }
    if json {
        let v = report::json(&job_id, &stats, res.as_ref().err(), &limits);
        println!("{v}");
    }
    res
}

/// Checks the transfer flags shared by push and pull.
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
    if n.transport == args::TransportArg::Quic {
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

/// The connection settings of a push or pull; the caller fills in where to.
fn base_config(n: &NetArgs, job_id: [u8; 16]) -> PushConfig {
    PushConfig {
        sources: Vec::new(),
        server: String::new(),
        dest: Vec::new(),
        dest_is_dir: false,
        token: Vec::new(),
        lanes: n.streams.unwrap_or(0),
        chunk_size: n.chunk_size as u32,
        tuning: Tuning {
            buffer: n.buffer.map(|b| b as usize),
            timeout: Duration::from_secs(n.timeout.max(1)),
            rate: n.rate,
            ..Tuning::default()
        },
        job_id,
        encrypt: true,
        fingerprint: None,
        known_hosts: None,
        notice: |m| eprintln!("gfast: {m}"),
        resume: n.resume,
        compress: n.compress,
        delta: n.delta,
        quic: n.transport == args::TransportArg::Quic,
        store: StoreConfig::default(),
    }
}

/// ssh mode: the address to dial, directly or, when asked or when a direct
/// connection fails, through an ssh tunnel (announced in one line).
fn route(n: &NetArgs, r: &ssh::Remote) -> Result<String, Error> {
    if n.transport == args::TransportArg::Quic {
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
    let show = !n.quiet && !n.json && std::io::stderr().is_terminal();
    let bar = show.then(|| report::Progress::start(stats.clone()));
    let r = f();
    if let Some(b) = bar {
        b.finish();
    }
    r
}

/// Checks the daemon flags against the rest; returns the pinned key, if any.
fn check_daemon(d: &args::DaemonArgs, n: &NetArgs, via_ssh: bool) -> Result<Option<Fingerprint>, Error> {
    let fingerprint = match &d.fingerprint {
        Some(f) => Some(Fingerprint::parse(f).ok_or_else(|| {
            Error::Usage(format!("--fingerprint '{f}': expected sha256: and 64 hex digits, as gfast serve prints"))
        })?),
        None => None,
    };
    if d.no_encrypt && fingerprint.is_some() {
        return Err(Error::Usage("--fingerprint pins a TLS key: it cannot go with --no-encrypt".into()));
    }
    if d.no_encrypt && n.transport == args::TransportArg::Quic {
        return Err(Error::Usage("--no-encrypt: QUIC always encrypts; use --transport tcp for clear data".into()));
    }
    if d.no_encrypt && via_ssh {
        return Err(Error::Usage("--no-encrypt is for daemons (gfast://); ssh one-shot mode always encrypts".into()));
    }
    Ok(fingerprint)
}

/// Fills in how to reach and trust the daemon at `remote`.
fn daemon_config(
    d: &args::DaemonArgs,
    fingerprint: Option<Fingerprint>,
    remote: url::Remote,
    cfg: &mut PushConfig,
) -> Result<(), Error> {
    cfg.token = match (&d.token_file, env_token()) {
        (Some(f), _) => read_token(f)?,
        (None, Some(t)) => t,
        (None, None) => {
            return Err(Error::Usage(
                "no token: pass --token-file FILE or set GFAST_TOKEN (the server prints or stores it)".into(),
            ))
        }
    };
    cfg.server = remote.server;
    cfg.encrypt = !d.no_encrypt;
    cfg.fingerprint = fingerprint;
    cfg.known_hosts = known_hosts_path();
    Ok(())
}

fn push_inner(a: PushArgs, stats: Arc<Stats>, job_id: [u8; 16], announce: &dyn Fn()) -> Result<(), Error> {
    let mut paths = a.paths;
    let dest = paths.pop().expect("clap requires two paths");
    let via_ssh = if dest.as_encoded_bytes().starts_with(b"gfast://") {
        None
    } else {
        use std::os::unix::ffi::OsStrExt;
        ssh::SshTarget::parse(dest.as_bytes())
    };
    check_net(&a.net)?;
    let fingerprint = check_daemon(&a.daemon, &a.net, via_ssh.is_some())?;
    // Check the sources before starting anything remote.
    for s in &paths {
        std::fs::metadata(s).map_err(|e| Error::Source(PathBuf::from(s), e))?;
    }
    let mut cfg = base_config(&a.net, job_id);
    cfg.sources = paths.into_iter().map(PathBuf::from).collect();
    let mut remote_proc = None;
    if via_ssh.is_some() {
        // The ssh login can take a while: the job's id comes first.
        announce();
    }
    match &via_ssh {
        Some(t) => {
            let r = ssh::start(&ssh::split_words(&a.net.ssh), &a.net.remote_cmd, t, ssh::RemoteRole::Receive, None)?;
            let o = r.offer.clone();
            cfg.dest_is_dir = t.path.is_empty() || t.path.ends_with(b"/") || o.target.is_empty();
            cfg.server = route(&a.net, &r)?;
            cfg.dest = o.target;
            cfg.token = o.token.into_bytes();
            cfg.fingerprint = Some(o.fingerprint);
            remote_proc = Some(r);
        }
        None => {
            let remote = url::parse_remote(&dest).map_err(Error::Usage)?;
            cfg.dest = remote.path.clone();
            cfg.dest_is_dir = remote.is_dir;
            daemon_config(&a.daemon, fingerprint, remote, &mut cfg)?;
        }
    }
    if via_ssh.is_none() {
        announce();
    }
    let res = with_progress(&a.net, &stats, || push(&cfg, stats.clone()));
    if let Some(r) = remote_proc {
        r.finish();
    }
    let summary = res?;
    if !a.net.quiet && !a.net.json {
        eprintln!("{}", report::summary_line(&stats, summary.files, summary.discard));
    }
    Ok(())
}

fn pull_inner(a: PullArgs, stats: Arc<Stats>, job_id: [u8; 16], announce: &dyn Fn()) -> Result<(), Error> {
    use_journal_key();
    let store = store_config(a.io, a.fsync);
    use std::os::unix::ffi::OsStrExt;
    let from_daemon = a.src.as_bytes().starts_with(b"gfast://");
    let via_ssh = match from_daemon {
        true => None,
        false => Some(ssh::SshTarget::parse(a.src.as_bytes()).ok_or_else(|| {
            Error::Usage(format!(
                "'{}': pull takes a remote source: [USER@]HOST:PATH (ssh) or gfast://HOST[:PORT]/PATH (a daemon)",
                a.src.to_string_lossy()
            ))
        })?),
    };
    check_net(&a.net)?;
    let fingerprint = check_daemon(&a.daemon, &a.net, via_ssh.is_some())?;
    if from_daemon && a.net.rate.is_some() {
        return Err(Error::Usage(
            "--rate paces the sending side: a daemon paces its pulls with its own --rate; drop it here".into(),
        ));
    }
    // Where it lands here, with the same rules as a one-shot receiver.
    let (root, target) = oneshot::split_dest(&a.dest)
        .map_err(|e| Error::Usage(format!("cannot use '{}' as destination: {e}", a.dest.display())))?;
    let comps = crate::proto::path::components(&target).map_err(|e| Error::Usage(e.to_string()))?;
    let kind = crate::storage::dest::DestRoot::open(&root)
        .map_err(|e| Error::Usage(format!("cannot open '{}': {e}", root.display())))?
        .target_kind(&comps)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let is_dir = target.is_empty() || a.dest.as_os_str().as_bytes().ends_with(b"/");
    let mut cfg = base_config(&a.net, job_id);
    cfg.store = store;
    if via_ssh.is_some() {
        announce();
    }
    let (source, remote_proc) = match &via_ssh {
        Some(t) => {
            let r = ssh::start(&ssh::split_words(&a.net.ssh), &a.net.remote_cmd, t, ssh::RemoteRole::Send, a.net.rate)?;
            cfg.server = route(&a.net, &r)?;
            cfg.token = r.offer.token.clone().into_bytes();
            cfg.fingerprint = Some(r.offer.fingerprint);
            (None, Some(r))
        }
        None => {
            let remote = url::parse_remote(&a.src).map_err(Error::Usage)?;
            let source = remote.path.clone();
            daemon_config(&a.daemon, fingerprint, remote, &mut cfg)?;
            (Some(source), None)
        }
    };
    let dest = PullDest { root: &root, target, kind, is_dir };
    if via_ssh.is_none() {
        announce();
    }
    let res = with_progress(&a.net, &stats, || pull(&cfg, dest, source, stats.clone()));
    if let Some(r) = remote_proc {
        r.finish();
    }
    let files = res?;
    if !a.net.quiet && !a.net.json {
        eprintln!("{}", report::summary_line(&stats, files, false));
    }
    Ok(())
}
