//! Raw command-line flags (clap). Nothing outside `cli` sees these types.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// gfast moves files between two machines as fast as the network and the disks
/// allow, and verifies every chunk.
#[derive(Parser, Debug)]
#[command(name = "gfast", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Receive files: run the daemon on the destination machine.
    Serve(ServeArgs),
    /// Send files and directory trees: to a daemon (gfast://) or over ssh (host:path).
    Push(PushArgs),
    /// Fetch a file or tree from another machine: gfast pull [USER@]HOST:SRC DEST
    /// (ssh) or gfast pull gfast://HOST[:PORT]/SRC DEST (a daemon with --allow-pull).
    Pull(PullArgs),
    /// Keep a tree in sync like rsync -a: compare first, send only what differs.
    ///
    /// `gfast sync SRC/ DEST` puts the contents of SRC into DEST; `gfast sync SRC DEST`
    /// puts SRC itself inside DEST (rsync's trailing-slash rule). DEST is
    /// gfast://HOST[:PORT]/PATH (a daemon; one started with --allow-pull for
    /// --delete, --checksum and --dry-run), [USER@]HOST:PATH (ssh), or a local
    /// directory (both ends in this process, no network). A file is unchanged
    /// when its size and mtime match (rsync's quick check); --delete removes
    /// what the source no longer has, only after every file arrived, and never
    /// after a failure.
    #[command(mut_arg("streams", |a| a.short(None)))]
    Sync(SyncArgs),
    /// List what a destination holds, from the listing sync compares against.
    ///
    /// TARGET is gfast://HOST[:PORT]/PATH (a daemon started with --allow-pull),
    /// [USER@]HOST:PATH (ssh) or a local directory. One line per entry (a
    /// directory ends in /); -l adds type, mode, size and modification time
    /// (UTC); -R lists everything below; --json prints one JSON object a line.
    #[command(mut_arg("streams", |a| a.short(None)))]
    Ls(LsArgs),
    /// List push and pull jobs: id, state, bytes done / total, command.
    Jobs(JobsArgs),
    /// Run a job again where it stopped (what already arrived is not sent again).
    Resume(ResumeArgs),
    /// Find this machine's bottleneck: disk, hashing, TCP, TLS and gfast end to end.
    Bench(BenchArgs),
}

/// Flags of `gfast serve`.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("sends").args(["send", "allow_pull", "read_only"]).multiple(true))]
pub(crate) struct ServeArgs {
    /// Directory everything is received into; nothing is ever written outside it.
    #[arg(long, value_name = "DIR", required_unless_present_any = ["discard", "oneshot"])]
    pub(crate) root: Option<PathBuf>,
    /// Serve exactly one session, then exit (started by `gfast push` through ssh):
    /// prints an offer line (port, one-time token, key fingerprint) on stdout and
    /// exits when the session ends, when stdin closes, or after --idle-timeout.
    #[arg(long, conflicts_with_all = ["root", "discard"])]
    pub(crate) oneshot: bool,
    /// With --oneshot: the destination path as typed after `host:` by the client.
    #[arg(long, value_name = "PATH", conflicts_with = "send")]
    pub(crate) dest: Option<PathBuf>,
    /// With --oneshot: send this file or tree to the client instead (its pull).
    #[arg(long, value_name = "PATH")]
    pub(crate) send: Option<PathBuf>,
    /// With --oneshot: give up when no session starts within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub(crate) idle_timeout: u64,
    /// Address and port to listen on (port 0 picks a free one and prints it).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:7447")]
    pub(crate) listen: String,
    /// File holding the shared token (created with a random token if missing).
    /// Without it, GFAST_TOKEN is used, or a token is made up and printed.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Receive and verify everything but write nothing (network benchmarking).
    #[arg(long)]
    pub(crate) discard: bool,
    /// Explicit socket buffer size (e.g. 4M); default: the kernel's autotuning.
    #[arg(long, value_name = "SIZE", value_parser = super::size::parse_size)]
    pub(crate) buffer: Option<u64>,
    /// Seconds a silent client is tolerated: a session in which nothing moved
    /// for this long is ended (also the TCP user timeout and QUIC idle timeout).
    #[arg(long, value_name = "SECS", default_value_t = 60, env = "GFAST_TIMEOUT")]
    pub(crate) timeout: u64,
    /// Most data streams one session may open.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub(crate) max_streams: u16,
    /// Most sessions served at once; a client past it is told the server is busy.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) max_sessions: u32,
    /// Partial files (kept for a resume) that were not written for this long are
    /// removed: at start (under --root) and while running. 0 keeps them forever.
    /// E.g. 3600, 90m, 12h, 7d.
    #[arg(long, value_name = "TIME", default_value = "7d", value_parser = super::size::parse_duration)]
    pub(crate) partial_ttl: std::time::Duration,
    /// Print a line per session.
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// The server's TLS key (PKCS#8; the certificate is kept beside it as .crt),
    /// created on first start. Default: ~/.config/gfast/server.key.
    #[arg(long, value_name = "FILE")]
    pub(crate) key_file: Option<PathBuf>,
    /// Also accept clients that use --no-encrypt (authentication still required).
    #[arg(long)]
    pub(crate) allow_no_encrypt: bool,
    /// Also let clients with the token pull files from under --root
    /// (`gfast pull gfast://HOST/PATH DEST`); never through a symlink.
    #[arg(long, conflicts_with_all = ["oneshot", "discard"])]
    pub(crate) allow_pull: bool,
    /// Give received files, directories and symlinks the owner and group the
    /// client sends (by name, else by number), and keep their setuid, setgid
    /// and sticky bits. Off by default: every entry is the daemon's user's and
    /// such bits are stripped, whatever a token holder sends. Needs root.
    #[arg(long, conflicts_with_all = ["oneshot", "discard"])]
    pub(crate) preserve_owner: bool,
    /// Make the device nodes clients send (off by default: each fails). FIFOs
    /// and sockets are made without it. Needs root.
    #[arg(long, conflicts_with_all = ["oneshot", "discard"])]
    pub(crate) allow_devices: bool,
    /// Serve pulls only: refuse every push (implies --allow-pull), e.g. to
    /// publish a dataset that clients with the token must not change.
    #[arg(long, conflicts_with_all = ["oneshot", "discard"])]
    pub(crate) read_only: bool,
    /// With --oneshot --send or --allow-pull: cap the sending rate of each pull in
    /// bits per second (as push --rate).
    #[arg(long, value_name = "BITS", value_parser = super::size::parse_rate, requires = "sends")]
    pub(crate) rate: Option<u64>,
    /// Make every received file durable before it takes its final name
    /// (fdatasync, then the directory): survives a power loss, costs a disk flush
    /// per file.
    #[arg(long)]
    pub(crate) fsync: bool,
    /// How received data is written: pwrite, or uring (io_uring; falls back to
    /// pwrite with a note where the kernel refuses it).
    #[arg(long, value_enum, value_name = "HOW", default_value = "pwrite")]
    pub(crate) io: IoArg,
}

/// Values of --transport.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransportArg {
    /// TCP connections (TLS on each unless --no-encrypt).
    Tcp,
    /// One QUIC connection (always encrypted).
    Quic,
}

/// Values of --io.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum IoArg {
    /// pwrite(2) (measured faster on the benchmark machine).
    Pwrite,
    /// io_uring (pwrite, with a note, where the kernel refuses it).
    Uring,
}

/// Flags of `gfast push`.
#[derive(Args, Debug)]
pub(crate) struct PushArgs {
    /// Transfer settings shared with pull.
    #[command(flatten)]
    pub(crate) net: NetArgs,
    /// Sources (files or directories), then the destination: gfast://HOST[:PORT]/PATH
    /// (a running daemon) or [USER@]HOST:PATH (ssh one-shot mode).
    #[arg(required = true, num_args = 2.., value_name = "SRC... DEST")]
    pub(crate) paths: Vec<OsString>,
    /// How to reach a daemon.
    #[command(flatten)]
    pub(crate) daemon: DaemonArgs,
}

/// Flags of `gfast sync`.
#[derive(Args, Debug)]
pub(crate) struct SyncArgs {
    /// Transfer settings shared with push (-n is --dry-run here, as in rsync:
    /// say --streams).
    #[command(flatten)]
    pub(crate) net: NetArgs,
    /// Sources, then the destination (see above).
    #[arg(required = true, num_args = 2.., value_name = "SRC... DEST")]
    pub(crate) paths: Vec<OsString>,
    /// How to reach a daemon.
    #[command(flatten)]
    pub(crate) daemon: DaemonArgs,
    /// What to compare and what to do.
    #[command(flatten)]
    pub(crate) sync: SyncFlags,
}

/// What `gfast sync` compares and does.
#[derive(Args, Debug)]
pub(crate) struct SyncFlags {
    /// Accepted for rsync's habit: gfast sync always keeps modes, times,
    /// symlinks, holes, special files (-D), and owners where the receiver is root.
    #[arg(short = 'a', long)]
    pub(crate) archive: bool,
    /// Compare whole-file checksums (xxh3-128, computed on both ends) instead of size and mtime.
    #[arg(short = 'c', long)]
    pub(crate) checksum: bool,
    /// A file is unchanged when its size matches, whatever its mtime.
    #[arg(long)]
    pub(crate) size_only: bool,
    /// Never replace a file that exists at the destination.
    #[arg(long)]
    pub(crate) ignore_existing: bool,
    /// Leave files that are newer at the destination.
    #[arg(short = 'u', long)]
    pub(crate) update: bool,
    /// Remove what is at the destination and not in the source (inside the synced
    /// tree only, after every file arrived; a run with a failure removes nothing).
    #[arg(long)]
    pub(crate) delete: bool,
    /// Remove excluded entries at the destination too (implies --delete).
    #[arg(long)]
    pub(crate) delete_excluded: bool,
    /// Leave out what matches PATTERN (rsync-style glob; in order with --include and --filter).
    #[arg(long, value_name = "PATTERN")]
    pub(crate) exclude: Vec<String>,
    /// Keep what matches PATTERN even if a later --exclude matches it.
    #[arg(long, value_name = "PATTERN")]
    pub(crate) include: Vec<String>,
    /// Exclude patterns from FILE, one per line (# and ; start comments).
    #[arg(long, value_name = "FILE")]
    pub(crate) exclude_from: Vec<PathBuf>,
    /// Include patterns from FILE, one per line.
    #[arg(long, value_name = "FILE")]
    pub(crate) include_from: Vec<PathBuf>,
    /// A filter rule: '- PATTERN' (exclude) or '+ PATTERN' (include).
    #[arg(long, value_name = "RULE")]
    pub(crate) filter: Vec<String>,
    /// Show what would change, change nothing.
    #[arg(short = 'n', long)]
    pub(crate) dry_run: bool,
    /// One line per changed entry, in rsync's itemize format (>f.st......, cd+++++++++, *deleting).
    #[arg(short = 'i', long)]
    pub(crate) itemize_changes: bool,
    /// Counts at the end, like rsync --stats.
    #[arg(long)]
    pub(crate) stats: bool,
}

/// Flags for talking to a daemon (gfast://), shared by push and pull.
#[derive(Args, Debug)]
pub(crate) struct DaemonArgs {
    /// File holding the shared token (else GFAST_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Move data unencrypted (the server must allow it); the token still authenticates.
    #[arg(long)]
    pub(crate) no_encrypt: bool,
    /// Insist on this server key (sha256:HEX, as `gfast serve` prints it) instead of
    /// trusting the key on first use.
    #[arg(long, value_name = "FP")]
    pub(crate) fingerprint: Option<String>,
}

/// Flags of `gfast ls`.
#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    /// What to list: gfast://HOST[:PORT]/PATH, [USER@]HOST:PATH or a local directory.
    #[arg(value_name = "TARGET")]
    pub(crate) target: OsString,
    /// Long format: type and mode, size, modification time, then the name.
    #[arg(short = 'l', long)]
    pub(crate) long: bool,
    /// Everything below TARGET, not only what is directly in it.
    #[arg(short = 'R', long)]
    pub(crate) recursive: bool,
    /// How to reach the far end (shared with push).
    #[command(flatten)]
    pub(crate) net: NetArgs,
    /// How to reach a daemon.
    #[command(flatten)]
    pub(crate) daemon: DaemonArgs,
}

/// Flags of `gfast pull`.
#[derive(Args, Debug)]
pub(crate) struct PullArgs {
    /// The remote source: [USER@]HOST:PATH (ssh; relative paths start at the
    /// remote home) or gfast://HOST[:PORT]/PATH (a daemon started with --allow-pull;
    /// the path is under its root).
    #[arg(value_name = "SRC")]
    pub(crate) src: OsString,
    /// Local destination (a directory to put it in, or a new name).
    #[arg(value_name = "DEST")]
    pub(crate) dest: PathBuf,
    /// Make every received file durable before it takes its final name (as serve --fsync).
    #[arg(long)]
    pub(crate) fsync: bool,
    /// How received data is written: pwrite or uring (as for serve).
    #[arg(long, value_enum, value_name = "HOW", default_value = "pwrite")]
    pub(crate) io: IoArg,
    /// Transfer settings shared with push.
    #[command(flatten)]
    pub(crate) net: NetArgs,
    /// How to reach a daemon.
    #[command(flatten)]
    pub(crate) daemon: DaemonArgs,
}

/// Transfer flags of push and pull.
#[derive(Args, Debug)]
pub(crate) struct NetArgs {
    /// Number of parallel data streams (TCP connections, or QUIC streams).
    /// Default: from the handshake's round trip: 4 on a LAN (QUIC: 2), 8 to 32 on
    /// longer paths (more as the round trip grows).
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) streams: Option<u16>,
    /// Chunk size: files are cut into chunks of this size, each hashed and verified
    /// (64K to 1G; accepts K, M, G suffixes).
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = super::size::parse_size)]
    pub(crate) chunk_size: u64,
    /// Compress chunks with zstd on the way (the sending side compresses, in a
    /// push or a pull; a block that does not shrink goes as it is). Worth it on
    /// links slower than about 0.5 GB/s per stream for data that compresses.
    #[arg(short = 'z', long)]
    pub(crate) compress: bool,
    /// Send only what changed: for each file that already exists under its name
    /// at the destination, the receiver hashes the chunks it holds and the sender
    /// sends only the chunks that differ (a fixed chunk grid: an insertion moves
    /// everything after it).
    #[arg(long)]
    pub(crate) delta: bool,
    /// Keep holes: the holes of sparse files are found (SEEK_DATA/SEEK_HOLE),
    /// never travel, and stay holes at the destination. On by default, unlike
    /// rsync, which needs -S for it; -S is accepted. Unlike rsync -S, zeros that
    /// are data at the source stay data.
    #[arg(short = 'S', long, overrides_with = "no_sparse")]
    pub(crate) sparse: bool,
    /// Send holes as zeros and write them out (no sparse handling).
    #[arg(long, overrides_with = "sparse")]
    pub(crate) no_sparse: bool,
    /// Do not keep owners and groups. By default they are kept wherever the
    /// receiving end runs as root (as rsync -a does; elsewhere files are the
    /// receiving user's); a daemon keeps them only with serve --preserve-owner.
    /// Owner and group are one switch here (rsync's --no-o and --no-g are not split).
    #[arg(long)]
    pub(crate) no_owner: bool,
    /// Owners and groups by number, not mapped by name.
    #[arg(long)]
    pub(crate) numeric_ids: bool,
    /// Keep extended attributes and POSIX ACLs (rsync -X, -A; one switch here:
    /// ACLs travel as their system.posix_acl_* attributes, ids as numbers). A
    /// daemon gives user.* attributes only, unless serve --preserve-owner.
    #[arg(short = 'X', long, visible_alias = "acls", visible_short_alias = 'A')]
    pub(crate) xattrs: bool,
    /// Send FIFOs, sockets and device nodes (rsync -D: --specials --devices,
    /// one switch here; on by default for sync, as part of -a); a device is
    /// made only where the receiver is root, on a daemon with serve
    /// --allow-devices. Without it they are skipped and reported.
    #[arg(short = 'D', long, visible_alias = "specials")]
    pub(crate) devices: bool,
    /// Keep hard links (rsync -H): a file with several names at the source is
    /// sent once, and its other names are linked to it at the destination
    /// (after every other entry, so the first name is in place).
    #[arg(short = 'H', long)]
    pub(crate) hard_links: bool,
    /// Print one JSON object with the job's statistics on stdout at the end.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress bar and no summary line.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Explicit socket buffer size (e.g. 4M); default: the kernel's autotuning.
    #[arg(long, value_name = "SIZE", value_parser = super::size::parse_size)]
    pub(crate) buffer: Option<u64>,
    /// Seconds a silent or unresponsive server is tolerated before giving up
    /// (over QUIC also how soon a vanished server is noticed).
    #[arg(long, value_name = "SECS", default_value_t = 60, env = "GFAST_TIMEOUT")]
    pub(crate) timeout: u64,
    /// ssh command for [USER@]HOST:PATH destinations, with its options
    /// (e.g. "ssh -p 2222 -i key"); ~/.ssh/config applies as usual.
    #[arg(short = 'e', long, value_name = "CMD", default_value = "ssh")]
    pub(crate) ssh: String,
    /// Resume what an earlier run to the same destination left: files already in
    /// place (same size and mtime) are skipped, partial files continue where
    /// they stopped.
    #[arg(long)]
    pub(crate) resume: bool,
    /// ssh mode: carry the data through the ssh connection instead of direct
    /// connections (slower; for firewalls). Without it, gfast falls back to the
    /// tunnel by itself when a direct connection fails.
    #[arg(long)]
    pub(crate) tunnel: bool,
    /// The gfast command on the remote host.
    #[arg(long, value_name = "CMD", default_value = "gfast")]
    pub(crate) remote_cmd: String,
    /// Transport: tcp (many tuned TCP connections) or quic (one QUIC connection,
    /// a stream per lane, on the same port number over UDP).
    #[arg(long, value_enum, value_name = "T", default_value = "tcp", env = "GFAST_TRANSPORT")]
    pub(crate) transport: TransportArg,
    /// Cap the sending rate, in bits per second (e.g. 800M, 2.5G): the kernel
    /// paces every data stream at its share (SO_MAX_PACING_RATE), so many streams
    /// do not overrun a slower receiver or link.
    #[arg(long, value_name = "BITS", value_parser = super::size::parse_rate)]
    pub(crate) rate: Option<u64>,
}

/// Flags of `gfast jobs`.
#[derive(Args, Debug)]
pub(crate) struct JobsArgs {
    /// Remove finished jobs from the list.
    #[arg(long)]
    pub(crate) prune: bool,
}

/// Flags of `gfast resume`.
#[derive(Args, Debug)]
pub(crate) struct ResumeArgs {
    /// The job id (or its first characters), as `gfast jobs` shows it.
    #[arg(value_name = "ID")]
    pub(crate) id: String,
}

/// Flags of `gfast bench`.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Directory on the disk to measure (a temporary file is written there).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Bytes per stage (accepts K, M, G).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = super::size::parse_size)]
    pub(crate) size: u64,
}
