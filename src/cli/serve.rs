//! `gfast serve`: the daemon, and the one-shot end that ssh starts.

use super::args::ServeArgs;
use super::{
    buffer_cap_warning, config_dir, env_token, new_token, raise_fd_limit, read_token, store_config, use_journal_key,
};
use crate::engine::error::Error;
use crate::engine::oneshot;
use crate::engine::server::{ServeConfig, Server};
use crate::transport::tcp::{KernelLimits, Tuning};
use crate::transport::tls::Identity;
use std::io::Write;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn serve(a: ServeArgs) -> Result<(), Error> {
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
    if a.preserve_owner {
        match crate::storage::owners::may_chown() {
            true => eprintln!(
                "gfast serve: --preserve-owner: files get the owners clients send, setuid and setgid bits included"
            ),
            false => eprintln!("gfast serve: --preserve-owner: not running as root, so files stay this user's"),
        }
    }
    if a.allow_devices {
        match crate::storage::owners::may_chown() {
            true => eprintln!("gfast serve: --allow-devices: device nodes clients send are made"),
            false => eprintln!("gfast serve: --allow-devices: not running as root, so device nodes cannot be made"),
        }
    }
    let cfg = ServeConfig {
        preserve_owner: a.preserve_owner,
        allow_devices: a.allow_devices,
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
        preserve_owner: false,
        allow_devices: false,
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
