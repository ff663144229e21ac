//! ssh one-shot mode: the offer a one-shot receiver prints on its standard output
//! (read by the client through ssh), and how it turns the path typed on the
//! client's command line into a root and a target under it.

use crate::transport::tls::Fingerprint;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The tag that starts the offer line.
pub(crate) const OFFER_TAG: &str = "GFAST-ONESHOT";
/// The tag of the line a one-shot receiver prints when it cannot start.
pub(crate) const REFUSAL_TAG: &str = "GFAST-ONESHOT-ERROR";

/// What a one-shot receiver tells the client over ssh: where to connect, the
/// one-time token, the fingerprint of its ephemeral key, and the target path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offer {
    /// The address the ssh connection reached on the receiver (from SSH_CONNECTION), if known.
    pub host: Option<String>,
    /// The port it listens on for this session only.
    pub port: u16,
    /// One-time token.
    pub token: String,
    /// Fingerprint of its ephemeral TLS certificate.
    pub fingerprint: Fingerprint,
    /// Target path under its root (may be empty: the root itself).
    pub target: Vec<u8>,
    /// The address it actually listens on, as seen from its own host (the end
    /// point of an ssh tunnel); `None` for all addresses.
    pub bind: Option<String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl Offer {
    /// One line: `GFAST-ONESHOT 1 port=P token=T fp=sha256:H target=HEX host=H|- bind=B|-`.
    pub(crate) fn to_line(&self) -> String {
        format!(
            "{OFFER_TAG} 1 port={} token={} fp={} target={} host={} bind={}",
            self.port,
            self.token,
            self.fingerprint,
            hex(&self.target),
            self.host.as_deref().unwrap_or("-"),
            self.bind.as_deref().unwrap_or("-")
        )
    }

    /// Parses an offer line; `None` if it is not one (ssh may print other lines).
    pub(crate) fn parse(line: &str) -> Option<Offer> {
        let mut it = line.split_whitespace();
        if it.next()? != OFFER_TAG || it.next()? != "1" {
            return None;
        }
        let (mut port, mut token, mut fp, mut target, mut host) = (None, None, None, None, None);
        let mut bind = None;
        for kv in it {
            let (k, v) = kv.split_once('=')?;
            match k {
                "port" => port = v.parse().ok(),
                "token" => token = Some(v.to_string()),
                "fp" => fp = Fingerprint::parse(v),
                "target" => target = unhex(v),
                "host" => host = Some((v != "-").then(|| v.to_string())),
                "bind" => bind = (v != "-").then(|| v.to_string()),
                _ => {}
            }
        }
        Some(Offer { host: host?, port: port?, token: token?, fingerprint: fp?, target: target?, bind })
    }
}

/// Splits the destination typed after `host:` into the directory that becomes the
/// one-shot receiver's root and the target under it. Like scp, the parent of the
/// target must exist; a path ending in `/`, or naming an existing directory, is
/// the directory the sources land in. Symlinks in the typed part are followed
/// (the user named them); nothing below the root is.
pub(crate) fn split_dest(path: &Path) -> io::Result<(PathBuf, Vec<u8>)> {
    let p = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    if p.is_dir() {
        return Ok((p.canonicalize()?, Vec::new()));
    }
    let name = p.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let root = parent.canonicalize().map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
    if !root.is_dir() {
        return Err(io::Error::new(io::ErrorKind::NotADirectory, format!("{} is not a directory", parent.display())));
    }
    Ok((root, name.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_round_trip() {
        let o = Offer {
            host: Some("10.1.2.3".into()),
            port: 4567,
            token: "abcd".into(),
            fingerprint: Fingerprint::of(b"x"),
            target: b"a b\n".to_vec(),
            bind: Some("10.1.2.3".into()),
        };
        assert_eq!(Offer::parse(&o.to_line()), Some(o.clone()));
        let none = Offer { host: None, target: vec![], bind: None, ..o };
        assert_eq!(Offer::parse(&none.to_line()), Some(none));
        assert_eq!(Offer::parse("Welcome to host"), None);
        assert_eq!(Offer::parse("GFAST-ONESHOT 1 port=x"), None);
    }

    #[test]
    fn dest_splitting_follows_scp() {
        let base = std::env::temp_dir().join(format!("gfast-split-{}", std::process::id()));
        std::fs::create_dir_all(base.join("d")).unwrap();
        let canon = base.canonicalize().unwrap();
        assert_eq!(split_dest(&base.join("d")).unwrap(), (canon.join("d"), vec![]));
        assert_eq!(split_dest(&base.join("new")).unwrap(), (canon.clone(), b"new".to_vec()));
        assert_eq!(split_dest(Path::new(&format!("{}/new/", base.display()))).unwrap(), (canon, b"new".to_vec()));
        assert!(split_dest(&base.join("missing/deeper")).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
