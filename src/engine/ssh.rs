//! The client side of ssh one-shot mode: start `gfast serve --oneshot` on the
//! remote through ssh, read its offer, and stop it when the push is over.

use super::error::Error;
use super::oneshot::{Offer, OFFER_TAG, REFUSAL_TAG};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where to start the one-shot end: a `[user@]host:path` argument, as the CLI
/// parsed it (`cli/remote.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshTarget {
    /// What ssh is given: `user@host` or `host` (IPv6 without brackets).
    pub login: String,
    /// The host alone, for connecting the data lanes when the remote cannot say.
    pub host: String,
    /// The remote path (relative paths are relative to the remote home).
    pub path: Vec<u8>,
}

/// Quotes a word for the remote shell that ssh hands the command to.
fn shell_quote(b: &[u8]) -> Vec<u8> {
    let mut q = b"'".to_vec();
    for &c in b {
        if c == b'\'' {
            q.extend_from_slice(b"'\\''");
        } else {
            q.push(c);
        }
    }
    q.push(b'\'');
    q
}

/// Splits an `--ssh` command line into words (single and double quotes group).
pub(crate) fn split_words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for ch in s.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(ch);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A one-shot receiver running behind ssh.
pub(crate) struct Remote {
    child: Child,
    stdin: Option<ChildStdin>,
    ssh: Vec<String>,
    login: String,
    control_path: std::path::PathBuf,
    /// What it offered.
    pub offer: Offer,
    /// "host:port" the lanes connect to.
    pub server: String,
}

/// How long the remote may take to print its offer (ssh login included).
const OFFER_TIMEOUT: Duration = Duration::from_secs(60);

/// What the remote end does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RemoteRole {
    /// Receive into the path (push).
    Receive,
    /// Send the path (pull).
    Send,
}

/// Starts `REMOTE_CMD serve --oneshot --dest|--send PATH` through `ssh` and waits
/// for the offer. `rate` (bits per second) caps a remote sender.
pub(crate) fn start(
    ssh: &[String],
    remote_cmd: &str,
    t: &SshTarget,
    role: RemoteRole,
    rate: Option<u64>,
) -> Result<Remote, Error> {
    let (prog, args) = ssh.split_first().ok_or_else(|| Error::Usage("--ssh is empty".into()))?;
    let mut cmd_line = remote_cmd.as_bytes().to_vec();
    if let (RemoteRole::Send, Some(r)) = (role, rate) {
        cmd_line.extend_from_slice(format!(" serve --rate {r}").as_bytes());
        cmd_line.extend_from_slice(b" --oneshot --send ");
    } else {
        cmd_line.extend_from_slice(match role {
            RemoteRole::Receive => b" serve --oneshot --dest ",
            RemoteRole::Send => b" serve --oneshot --send ",
        });
    }
    cmd_line.extend_from_slice(&shell_quote(if t.path.is_empty() { b"." } else { &t.path }));
    // A control socket lets a tunnel be added to this very ssh connection later.
    let control_path = std::env::temp_dir().join(format!(
        "gfast-ssh-{}-{:08x}.sock",
        std::process::id(),
        u32::from_be_bytes(super::server::random::<4>())
    ));
    let mut child = Command::new(prog)
        .args(args)
        .arg("-o")
        .arg("ControlMaster=yes")
        .arg("-o")
        .arg(format!("ControlPath={}", control_path.display()))
        .arg("-o")
        .arg("ControlPersist=no")
        .arg(&t.login)
        .arg("--")
        .arg(std::ffi::OsStr::from_bytes(&cmd_line))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Usage(format!("cannot run '{prog}': {e} (install OpenSSH or point --ssh at it)")))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // ssh's own messages: kept (the last few) to explain a failure.
    let errs: Arc<Mutex<Vec<String>>> = Arc::default();
    let e2 = errs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut g = e2.lock().expect("ssh stderr");
            if g.len() >= 20 {
                g.remove(0);
            }
            g.push(line);
        }
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) if line.starts_with(REFUSAL_TAG) || line.starts_with(OFFER_TAG) => {
                    let _ = tx.send(Some(line.trim().to_string()));
                    // Keep draining so the remote never blocks on a full pipe.
                    let _ = std::io::copy(&mut r.take(u64::MAX), &mut std::io::sink());
                    return;
                }
                Ok(_) => {}
            }
        }
    });
    let got = rx.recv_timeout(OFFER_TIMEOUT).ok().flatten();
    let last_err = || errs.lock().expect("ssh stderr").iter().rev().find(|l| !l.trim().is_empty()).cloned();
    match got {
        Some(line) if line.starts_with(REFUSAL_TAG) => {
            let _ = child.kill();
            let _ = child.wait();
            let msg = line[REFUSAL_TAG.len()..].trim().to_string();
            Err(Error::Usage(format!("{}: {msg}", t.login)))
        }
        Some(line) => {
            let offer =
                Offer::parse(&line).ok_or_else(|| Error::Protocol(format!("bad offer from the remote: {line}")))?;
            let host = offer.host.clone().unwrap_or_else(|| t.host.clone());
            let server =
                if host.contains(':') { format!("[{host}]:{}", offer.port) } else { format!("{host}:{}", offer.port) };
            Ok(Remote { child, stdin, offer, server, ssh: ssh.to_vec(), login: t.login.clone(), control_path })
        }
        None => {
            // ssh ended (or hung) without an offer: say why.
            let deadline = Instant::now() + Duration::from_secs(5);
            let status = loop {
                if let Ok(Some(s)) = child.try_wait() {
                    break Some(s);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            std::thread::sleep(Duration::from_millis(50));
            let why = last_err().unwrap_or_else(|| "no message".into());
            Err(match status.and_then(|s| s.code()) {
                Some(127) | Some(126) => Error::Usage(format!(
                    "'{remote_cmd}' is not runnable on {} ({why}): install gfast there or pass --remote-cmd /path/to/gfast",
                    t.login
                )),
                Some(255) => Error::Connect(t.login.clone(), std::io::Error::other(format!("ssh failed: {why}"))),
                Some(c) => Error::Remote(0, format!("remote gfast exited with status {c} before offering a session: {why}")),
                None => Error::Remote(0, format!("no offer from {} within {}s: {why}", t.login, OFFER_TIMEOUT.as_secs())),
            })
        }
    }
}

impl Remote {
    /// Carries the session through the ssh connection itself (for when direct
    /// connections are blocked): forwards a free local port to the receiver's
    /// port on the remote host, and returns the local "host:port" to dial.
    pub(crate) fn tunnel(&self) -> Result<String, Error> {
        let local = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::Io("choosing a local port".into(), e))?
            .port();
        let far = self.offer.bind.clone().unwrap_or_else(|| "127.0.0.1".into());
        let far = if far.contains(':') { format!("[{far}]") } else { far };
        let (prog, args) = self.ssh.split_first().expect("checked in start");
        let out = Command::new(prog)
            .args(args)
            .arg("-S")
            .arg(&self.control_path)
            .args(["-O", "forward", "-L"])
            .arg(format!("127.0.0.1:{local}:{far}:{}", self.offer.port))
            .arg(&self.login)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Io("running ssh -O forward".into(), e))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(Error::Connect(self.login.clone(), std::io::Error::other(format!("ssh tunnel failed: {why}"))));
        }
        Ok(format!("127.0.0.1:{local}"))
    }

    /// Closes the ssh channel, which ends the remote end, and reaps ssh.
    pub(crate) fn finish(self) {
        drop(self);
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_words() {
        assert_eq!(shell_quote(b"it's"), b"'it'\\''s'".to_vec());
        assert_eq!(
            split_words("ssh -p 2222 -i 'my key' -o \"A B\""),
            ["ssh", "-p", "2222", "-i", "my key", "-o", "A B"]
        );
    }
}
