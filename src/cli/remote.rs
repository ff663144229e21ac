//! The far end of a push or pull, as typed: `gfast://HOST[:PORT]/PATH` (a daemon)
//! or `[USER@]HOST:PATH` (ssh one-shot mode), parsed in one place.

use super::url;
use crate::engine::ssh::SshTarget;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// A push's destination or a pull's source.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Remote {
    /// A running daemon.
    Daemon(url::Remote),
    /// A host to start `gfast serve --oneshot` on through ssh.
    Ssh(SshTarget),
}

/// Why an argument names no remote.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotRemote {
    /// `gfast:/HOST/PATH`: a gfast URL with one slash, not ssh to a host named gfast.
    OneSlash,
    /// Neither form: a local path.
    Local,
    /// A `gfast://` URL that does not parse; the message says what is wrong.
    BadUrl(String),
}

/// Parses a destination or source argument.
pub(crate) fn parse(arg: &OsStr) -> Result<Remote, NotRemote> {
    let b = arg.as_bytes();
    if let Some(u) = url::parse(b) {
        return u.map(Remote::Daemon).map_err(NotRemote::BadUrl);
    }
    match ssh_target(b) {
        Some(t) => Ok(Remote::Ssh(t)),
        None if b.starts_with(b"gfast:/") => Err(NotRemote::OneSlash),
        None => Err(NotRemote::Local),
    }
}

impl NotRemote {
    /// The line that refuses `arg` as a push's destination.
    pub(crate) fn for_push(&self, arg: &OsStr) -> String {
        let s = arg.to_string_lossy();
        match self {
            NotRemote::OneSlash => format!("'{s}' is not a gfast URL: write two slashes, gfast://HOST[:PORT]/PATH"),
            NotRemote::Local => {
                format!(
                    "'{s}': the last argument must be the destination: gfast://HOST[:PORT]/PATH or [USER@]HOST:PATH"
                )
            }
            NotRemote::BadUrl(m) => m.clone(),
        }
    }

    /// The line that refuses `arg` as a pull's source.
    pub(crate) fn for_pull(&self, arg: &OsStr) -> String {
        match self {
            NotRemote::OneSlash | NotRemote::Local => format!(
                "'{}': pull takes a remote source: [USER@]HOST:PATH (ssh) or gfast://HOST[:PORT]/PATH (a daemon)",
                arg.to_string_lossy()
            ),
            NotRemote::BadUrl(m) => m.clone(),
        }
    }
}

/// Parses `[user@]host:path` or `[user@][v6addr]:path`; `None` if `arg` is not
/// of that form (a local path has a `/` before any `:`).
fn ssh_target(arg: &[u8]) -> Option<SshTarget> {
    let (login_part, path) = if let Some(open) = arg.iter().position(|&c| c == b'[') {
        let close = arg.iter().position(|&c| c == b']')?;
        if close < open || arg.get(close + 1) != Some(&b':') {
            return None;
        }
        let user = &arg[..open];
        let host = &arg[open + 1..close];
        let mut login = user.to_vec();
        login.extend_from_slice(host);
        (login, arg[close + 2..].to_vec())
    } else {
        let colon = arg.iter().position(|&c| c == b':')?;
        // `gfast:/host/path` is a mistyped gfast:// URL, not a host named gfast.
        if &arg[..colon] == b"gfast" && arg.get(colon + 1) == Some(&b'/') {
            return None;
        }
        if arg[..colon].contains(&b'/') || colon == 0 {
            return None;
        }
        (arg[..colon].to_vec(), arg[colon + 1..].to_vec())
    };
    let login = String::from_utf8(login_part).ok()?;
    let host = login.rsplit('@').next()?.to_string();
    if host.is_empty() {
        return None;
    }
    Some(SshTarget { login, host, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(arg: &str) -> Option<SshTarget> {
        match parse(OsStr::new(arg)) {
            Ok(Remote::Ssh(t)) => Some(t),
            _ => None,
        }
    }

    #[test]
    fn targets() {
        let t = ssh("alice@h:/data/x/").unwrap();
        assert_eq!((t.login.as_str(), t.host.as_str(), &t.path[..]), ("alice@h", "h", &b"/data/x/"[..]));
        let t = ssh("h:rel").unwrap();
        assert_eq!((t.login.as_str(), &t.path[..]), ("h", &b"rel"[..]));
        let t = ssh("[::1]:/tmp").unwrap();
        assert_eq!((t.login.as_str(), t.host.as_str(), &t.path[..]), ("::1", "::1", &b"/tmp"[..]));
        assert_eq!(parse(OsStr::new("./a:b")), Err(NotRemote::Local));
        assert_eq!(parse(OsStr::new("/abs/path")), Err(NotRemote::Local));
        assert_eq!(parse(OsStr::new(":x")), Err(NotRemote::Local));
        // The typo rule: one slash is a gfast URL mistyped, never ssh to "gfast".
        let typo = OsStr::new("gfast:/h/x");
        assert_eq!(parse(typo), Err(NotRemote::OneSlash));
        assert!(NotRemote::OneSlash.for_push(typo).contains("two slashes"));
        assert!(NotRemote::Local.for_push(OsStr::new("host/x")).contains("HOST:PATH"));
        assert!(matches!(parse(OsStr::new("gfast://h/x")), Ok(Remote::Daemon(_))));
        assert!(matches!(parse(OsStr::new("gfast://h:x/")), Err(NotRemote::BadUrl(_))));
    }
}
