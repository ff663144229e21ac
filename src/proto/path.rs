//! Relative wire paths (protocol-spec §3.4): validation and splitting into components.

use super::error::ProtocolError;
use super::frame::MAX_PATH_LEN;

/// Longest single path component, in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;

/// Names that begin with this are gfast's own (partial files, journals,
/// temporary links; §3.4, §5.6): no path on the wire may name one.
pub const RESERVED_PREFIX: &[u8] = b".gfast-";

/// True when a path component is in gfast's reserved namespace.
pub fn is_reserved(component: &[u8]) -> bool {
    component.starts_with(RESERVED_PREFIX)
}

/// Splits a wire path into its components and checks the rules of §3.4: relative,
/// no empty, `.` or `..` component, no NUL, each component at most 255 bytes.
/// The empty path names the root itself and yields no components.
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>, ProtocolError> {
    if path.len() > MAX_PATH_LEN {
        return Err(ProtocolError::BadPath("path longer than 32 KiB".into()));
    }
    if path.is_empty() {
        return Ok(Vec::new());
    }
    if path[0] == b'/' {
        return Err(ProtocolError::BadPath(format!("absolute path {}", show(path))));
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" => return Err(ProtocolError::BadPath(format!("empty component in {}", show(path)))),
            b"." | b".." => return Err(ProtocolError::BadPath(format!("'.' or '..' component in {}", show(path)))),
            _ if c.contains(&0) => return Err(ProtocolError::BadPath("NUL byte in path".into())),
            _ if c.len() > MAX_COMPONENT_LEN => {
                return Err(ProtocolError::BadPath("path component longer than 255 bytes".into()))
            }
            _ if is_reserved(c) => {
                return Err(ProtocolError::BadPath(format!(
                    "{} is reserved: names starting with '.gfast-' are gfast's temporary files",
                    show(c)
                )))
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Renders a path for messages: lossy UTF-8 with control characters escaped.
pub fn show(path: &[u8]) -> String {
    let s = String::from_utf8_lossy(path);
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        if ch.is_control() {
            out.extend(ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_odd_names() {
        assert_eq!(components(b"a/b c/\xff\n").unwrap(), vec![&b"a"[..], b"b c", b"\xff\n"]);
        assert!(components(b"").unwrap().is_empty());
        assert_eq!(components(b"..a/b..").unwrap().len(), 2);
    }

    #[test]
    fn refuses_escapes_and_malformed_paths() {
        for bad in [&b"/etc/passwd"[..], b"../x", b"a/../../x", b"a//b", b"a/", b"./a", b"a/\0b"] {
            assert!(components(bad).is_err(), "{:?} must be refused", String::from_utf8_lossy(bad));
        }
        assert!(components(&[b'a'; 256]).is_err());
        for reserved in [&b".gfast-7c660a1adea13c66.part"[..], b"a/.gfast-x.jrnl", b".gfast-/b", b"d/.gfast-1-2.link"] {
            assert!(components(reserved).is_err(), "{:?} is gfast's namespace", String::from_utf8_lossy(reserved));
        }
        assert!(components(b"a/.gfast/x.gfast-").is_ok(), "only the prefix '.gfast-' is reserved");
        assert!(components(&vec![b'a'; MAX_PATH_LEN + 1]).is_err());
    }

    #[test]
    fn show_escapes_control_characters() {
        assert_eq!(show(b"a\nb"), "'a\\nb'");
    }
}
