//! Exit codes: where an error becomes the process's status. README "Exit codes"
//! lists them; a test below holds the two together.

use crate::engine::error::Error;
use crate::proto::error::code;

/// Every entry arrived and verified.
pub(crate) const OK: u8 = 0;
/// The session failed (server error, protocol error, connection lost).
pub(crate) const FAILED: u8 = 1;
/// Bad input: usage, an unreadable or missing source, a path refused.
pub(crate) const BAD_INPUT: u8 = 2;
/// The server was unreachable, silent (no answer to the handshake) or busy.
pub(crate) const UNREACHABLE: u8 = 3;
/// Authentication was refused.
pub(crate) const AUTH: u8 = 4;
/// The session ended but some entries did not arrive.
pub(crate) const INCOMPLETE: u8 = 5;

/// The exit code for `e`.
pub(crate) fn code(e: &Error) -> u8 {
    match e {
        Error::Usage(_) | Error::Source(..) => BAD_INPUT,
        Error::Connect(..) | Error::NoAnswer(..) => UNREACHABLE,
        Error::Remote(c, _) if *c == code::BUSY => UNREACHABLE,
        Error::Auth(_) => AUTH,
        Error::Remote(c, _) if *c == code::AUTH_FAILED => AUTH,
        Error::Remote(c, _) if *c == code::PATH_REFUSED || *c == code::NOT_FOUND => BAD_INPUT,
        Error::Incomplete { .. } => INCOMPLETE,
        Error::Remote(..) | Error::Protocol(_) | Error::PeerVanished(_) | Error::Silent(_) | Error::Io(..) => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    /// README's paragraph, as `(code, meaning)` in the order listed.
    fn readme_codes() -> Vec<(u8, String)> {
        let readme = include_str!("../../README.md");
        let (_, after) = readme.split_once("### Exit codes\n").expect("README has an \"Exit codes\" section");
        let para = after.split("\n\n").next().unwrap_or_default();
        let para = para.split_whitespace().collect::<Vec<_>>().join(" ");
        para.split(" · ")
            .map(|item| {
                let (n, meaning) = item.split_once(' ').expect("a code, then its meaning");
                (n.parse().unwrap_or_else(|_| panic!("'{n}' is not an exit code")), meaning.to_string())
            })
            .collect()
    }

    #[test]
    fn codes_are_readmes() {
        let io = || io::Error::other("x");
        let listed = readme_codes();
        let cases = [
            (OK, "every entry arrived and verified", vec![]),
            (
                FAILED,
                "the session failed (server error, protocol error, connection lost)",
                vec![
                    Error::Remote(code::INTERNAL, "x".into()),
                    Error::Remote(code::PERMISSION, "x".into()),
                    Error::Remote(0, "x".into()),
                    Error::Protocol("x".into()),
                    Error::PeerVanished("x".into()),
                    Error::Silent(60),
                    Error::Io("x".into(), io()),
                ],
            ),
            (
                BAD_INPUT,
                "bad input (usage, unreadable or missing source, path refused)",
                vec![
                    Error::Usage("x".into()),
                    Error::Source("x".into(), io()),
                    Error::Remote(code::PATH_REFUSED, "x".into()),
                    Error::Remote(code::NOT_FOUND, "x".into()),
                ],
            ),
            (
                UNREACHABLE,
                "server unreachable, silent (no answer to the handshake within `--timeout`) or busy",
                vec![
                    Error::Connect("h".into(), io()),
                    Error::NoAnswer("h".into(), 60),
                    Error::Remote(code::BUSY, "x".into()),
                ],
            ),
            (
                AUTH,
                "authentication refused",
                vec![Error::Auth("x".into()), Error::Remote(code::AUTH_FAILED, "x".into())],
            ),
            (
                INCOMPLETE,
                "the session ended but some entries did not arrive",
                vec![Error::Incomplete { failed: 1, total: 2, first: "x".into() }],
            ),
        ];
        let codes: Vec<u8> = listed.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, cases.iter().map(|(c, ..)| *c).collect::<Vec<_>>(), "README lists exactly these codes");
        for ((c, meaning, errors), (_, readme)) in cases.iter().zip(&listed) {
            assert!(readme.starts_with(meaning), "README says {c} is '{readme}', this file '{meaning}'");
            for e in errors {
                assert_eq!(code(e), *c, "{e:?}");
            }
        }
    }
}
