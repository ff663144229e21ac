//! The command line: flags → validated configuration → engine; errors → one line and
//! an exit code. The engine never sees clap types.

mod args;
mod bench;
mod config;
mod exit;
mod ls;
mod remote;
mod report;
mod serve;
pub mod size;
mod sync;
mod transfer;
pub mod url;

use crate::engine::error::Error;
use crate::engine::server::random;
use crate::engine::stats::Stats;
use crate::storage::jobs;
use crate::storage::store::StoreConfig;
use crate::transport::tcp::KernelLimits;
use args::{Cli, Cmd};
use clap::Parser;
use config::Request;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let cli = Cli::parse();
    let res = dispatch(cli, args, None);
    match res {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            // Not eprintln!: a one-shot end whose ssh channel died has no stderr.
            let _ = writeln!(std::io::stderr(), "gfast: error: {e}");
            ExitCode::from(exit::code(&e))
        }
    }
}

fn dispatch(cli: Cli, args: Vec<std::ffi::OsString>, job_id: Option<[u8; 16]>) -> Result<(), Error> {
    match cli.cmd {
        Cmd::Serve(a) => serve::serve(a),
        Cmd::Push(a) => run_job(Request::push(a), args, job_id),
        Cmd::Pull(a) => run_job(Request::pull(a), args, job_id),
        Cmd::Sync(a) => {
            let req = Request::sync(a, &args)?;
            run_job(req, args, job_id)
        }
        Cmd::Ls(a) => {
            // Not a job: nothing to resume, no report but the listing.
            let stats = Arc::new(Stats::new(256));
            transfer::run(Request::ls(a), stats, random::<16>(), &|| {})
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
    StoreConfig { durable: fsync, io, ..StoreConfig::default() }
}

/// Runs a push or pull job with fresh counters and a job id, and prints the
/// `--json` report at the end, on success and on failure alike.
fn run_job(req: Request, args: Vec<std::ffi::OsString>, job_id: Option<[u8; 16]>) -> Result<(), Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let (json, quiet, explicit_buffer) = (req.net().json, req.net().quiet, req.net().buffer.is_some());
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
    let res = transfer::run(req, stats.clone(), job_id, &announce);
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

/// The key that authenticates resume journals of a receiving client or
/// one-shot end (the daemon keeps its own beside its --key-file). Without one,
/// partial files of earlier runs are received again from the start.
fn use_journal_key() {
    if let Some(d) = config_dir() {
        let _ = crate::storage::journal::use_key_file(&d.join("journal.key"));
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
