//! Daemon URLs: `gfast://HOST[:PORT]/PATH` (a push's destination, a pull's source).

/// Default daemon port.
pub const DEFAULT_PORT: u16 = 7447;

/// A parsed `gfast://` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct Remote {
    /// "host:port" to connect to.
    pub server: String,
    /// Path under the server's root without leading or trailing slashes.
    pub path: Vec<u8>,
    /// The path ended with `/` (or was empty): it names a directory.
    pub is_dir: bool,
}

/// Parses `gfast://HOST[:PORT]/PATH`; `None` if `arg` does not start with
/// `gfast://`, else the URL or what is wrong with it.
pub fn parse(arg: &[u8]) -> Option<Result<Remote, String>> {
    let rest = arg.strip_prefix(b"gfast://")?;
    Some(parse_rest(arg, rest))
}

fn parse_rest(b: &[u8], rest: &[u8]) -> Result<Remote, String> {
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

    #[test]
    fn forms() {
        let r = parse(b"gfast://h:9/in/").unwrap().unwrap();
        assert_eq!(r, Remote { server: "h:9".into(), path: b"in".to_vec(), is_dir: true });
        let r = parse(b"gfast://h/a/b").unwrap().unwrap();
        assert_eq!(r, Remote { server: "h:7447".into(), path: b"a/b".to_vec(), is_dir: false });
        let r = parse(b"gfast://[::1]:5").unwrap().unwrap();
        assert_eq!(r, Remote { server: "[::1]:5".into(), path: vec![], is_dir: true });
        assert!(parse(b"host:/x").is_none());
        assert!(parse(b"./dir").is_none());
        assert!(parse(b"gfast://h:x/").unwrap().is_err());
        assert!(parse(b"gfast:///p").unwrap().is_err());
    }
}
