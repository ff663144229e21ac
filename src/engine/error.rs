//! The engine's error type: one variant per thing a user can act on.

use crate::proto::error::code;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a push or a daemon failed. `Display` is one line that says what to do;
/// the CLI maps each to an exit code (`cli/exit.rs`).
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum Error {
    /// The command line or its combination with the destination makes no sense.
    Usage(String),
    /// A source could not be read before the transfer started.
    Source(PathBuf, io::Error),
    /// The server could not be reached.
    Connect(String, io::Error),
    /// Authentication failed (wrong token, or a server that cannot prove it has it).
    Auth(String),
    /// The server refused with an ERROR frame.
    Remote(u16, String),
    /// The peer broke the protocol.
    Protocol(String),
    /// The connection broke in the middle of the session.
    PeerVanished(String),
    /// The server did not answer the handshake within --timeout.
    NoAnswer(String, u64),
    /// The server stayed connected but sent nothing for --timeout seconds.
    Silent(u64),
    /// A local I/O failure.
    Io(String, io::Error),
    /// The session ended but some files did not arrive.
    Incomplete {
        /// How many entries failed.
        failed: u64,
        /// How many entries the job covered.
        total: u64,
        /// The first failure, rendered.
        first: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "{m}"),
            Error::Source(p, e) => write!(f, "cannot read source '{}': {e}", p.display()),
            Error::Connect(t, e) => {
                write!(f, "cannot reach {t}: {e} (is `gfast serve` running there, and the port open?)")
            }
            Error::Auth(m) => write!(f, "{m}"),
            Error::Remote(c, m) if *c == code::AUTH_FAILED && m == "wrong token" => {
                write!(f, "server refused the token: {m} (check --token-file or GFAST_TOKEN)")
            }
            Error::Remote(c, m) if *c == code::AUTH_FAILED => write!(f, "server refused the connection: {m}"),
            Error::Remote(c, m) if *c == code::NO_SPACE => {
                write!(f, "destination is full: {m} (free space on the server, then run the push again)")
            }
            Error::Remote(c, m) if *c == code::BUSY => write!(f, "{m}"),
            Error::Silent(secs) => write!(
                f,
                "the server sent nothing for {secs} s (--timeout): the transfer stopped; run it again with --resume"
            ),
            Error::Remote(_, m) => write!(f, "server: {m}"),
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
            Error::PeerVanished(m) => write!(f, "connection to the server lost mid-transfer: {m}"),
            Error::NoAnswer(t, secs) => write!(
                f,
                "{t} did not answer the handshake within {secs} s (is it a gfast server? on a slow link raise --timeout)"
            ),
            Error::Io(w, e) => write!(f, "{w}: {e}"),
            Error::Incomplete { failed, total, first } => {
                write!(f, "{failed} of {total} entries did not arrive (first: {first}); fix the cause and push again")
            }
        }
    }
}

impl std::error::Error for Error {}
