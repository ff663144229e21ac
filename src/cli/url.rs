//! Destinations: `gfast://HOST[:PORT]/PATH`.

use std::os::unix::ffi::OsStrExt;

/// Default daemon port.
pub const DEFAULT_PORT: u16 = 7447;

/// A parsed `gfast://` destination.
#[derive(Debug, PartialEq, Eq)]
pub struct Remote {
    /// "host:port" to connect to.
    pub server: String,
    /// Path under the server's root without leading or trailing slashes.
    pub path: Vec<u8>,
    /// The path ended with `/` (or was empty): it names a directory.
    pub is_dir: bool,
}

/// Parses a destination argument; the error says what form is expected.
pub fn parse_remote(arg: &std::ffi::OsStr) -> Result<Remote, String> {
    let b = arg.as_bytes();
    let Some(rest) = b.strip_prefix(b"gfast://") else {
        let s = String::from_utf8_lossy(b);
        if b.starts_with(b"gfast:/") {
            return Err(format!("'{s}' is not a gfast URL: write two slashes, gfast://HOST[:PORT]/PATH"));
        }
        return Err(format!(
            "'{s}': the last argument must be the destination: gfast://HOST[:PORT]/PATH or [USER@]HOST:PATH"
        ));
    };
    let slash = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
    let (auth, path) = rest.split_at(slash);
    let auth = std::str::from_utf8(auth).map_err(|_| "host name is not UTF-8".to_string())?;
    if auth.is_empty() {
        return Err(format!("'{}' has no host: use gfast://HOST[:PORT]/PATH", String::from_utf8_lossy(b)));
    }
    let server = if let Some(v6) = auth.strip_prefix('[') {
        let (host, port) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
        let port = match port.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| format!("bad port '{p}'"))?,
            None if port.is_empty() => DEFAULT_PORT,
            None => return Err(format!("unexpected '{port}' after the host")),
        };
        format!("[{host}]:{port}")
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => {
                let port = p.parse::<u16>().map_err(|_| format!("bad port '{p}'"))?;
                format!("{h}:{port}")
            }
            None => format!("{auth}:{DEFAULT_PORT}"),
        }
    };
    let path = path.strip_prefix(b"/").unwrap_or(path);
    let is_dir = path.is_empty() || path.ends_with(b"/");
    let mut p = path.to_vec();
    while p.last() == Some(&b'/') {
        p.pop();
    }
    Ok(Remote { server, path: p, is_dir })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn forms() {
        let r = parse_remote(OsStr::new("gfast://h:9/in/")).unwrap();
        assert_eq!(r, Remote { server: "h:9".into(), path: b"in".to_vec(), is_dir: true });
        let r = parse_remote(OsStr::new("gfast://h/a/b")).unwrap();
        assert_eq!(r, Remote { server: "h:7447".into(), path: b"a/b".to_vec(), is_dir: false });
        let r = parse_remote(OsStr::new("gfast://[::1]:5")).unwrap();
        assert_eq!(r, Remote { server: "[::1]:5".into(), path: vec![], is_dir: true });
        assert!(parse_remote(OsStr::new("host:/x")).unwrap_err().contains("HOST:PATH"));
        assert!(parse_remote(OsStr::new("./dir")).is_err());
        assert!(parse_remote(OsStr::new("gfast://h:x/")).is_err());
        assert!(parse_remote(OsStr::new("gfast:///p")).is_err());
    }
}
