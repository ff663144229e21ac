//! TLS 1.3 (rustls, ring provider) with pinned self-signed certificates.
//!
//! There is no certificate authority: the server has a self-signed certificate
//! and the client pins the SHA-256 of it (protocol-spec §5.8): given over ssh in
//! one-shot mode, trusted on first use and remembered for a daemon, or named
//! with `--fingerprint`.

use crate::storage::write_private_file;
use ring::digest::{digest, SHA256};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(cert_der: &[u8]) -> Self {
        let mut f = [0u8; 32];
        f.copy_from_slice(digest(&SHA256, cert_der).as_ref());
        Fingerprint(f)
    }

    /// Parses `sha256:HEX` (64 hex digits; the prefix is optional).
    pub fn parse(s: &str) -> Option<Self> {
        let h = s.trim().strip_prefix("sha256:").unwrap_or(s.trim());
        if h.len() != 64 {
            return None;
        }
        let mut f = [0u8; 32];
        for (i, b) in f.iter_mut().enumerate() {
            *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Fingerprint(f))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A server's certificate and private key.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    /// The certificate's fingerprint, which clients pin.
    pub fingerprint: Fingerprint,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Identity {
    /// A fresh self-signed identity (ECDSA P-256), for one-shot servers.
    pub fn ephemeral() -> io::Result<Self> {
        let ck = rcgen::generate_simple_self_signed(vec!["gfast".to_string()]).map_err(io::Error::other)?;
        let cert = ck.cert.der().clone();
        Ok(Identity { fingerprint: Fingerprint::of(&cert), cert, key: ck.signing_key.serialize_der() })
    }

    /// Loads the identity kept at `key_path` (PKCS#8 key) and `key_path.crt` (DER
    /// certificate), or creates both (mode 0600) if the key does not exist yet.
    /// Returns the identity and whether it was just created.
    pub fn load_or_create(key_path: &Path) -> io::Result<(Self, bool)> {
        let cert_path = key_path.with_extension("crt");
        if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let load = || -> io::Result<Self> {
            let key = std::fs::read(key_path)?;
            let cert = CertificateDer::from(std::fs::read(&cert_path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{e} reading {} (the key's certificate; remove the key to make a new pair)",
                        cert_path.display()
                    ),
                )
            })?);
            Ok(Identity { fingerprint: Fingerprint::of(&cert), cert, key })
        };
        // An existing key is only read (it may sit in a read-only place). The key
        // is put in place after its certificate, so a key means a whole pair.
        if key_path.exists() {
            return Ok((load()?, false));
        }
        // Daemons started together with one key path agree on one key: creation
        // holds a lock beside it, and a start that dies midway leaves no key.
        let lock = {
            use std::os::unix::fs::OpenOptionsExt;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create(true).truncate(false).mode(0o600).open(key_path.with_extension("lock"))?
        };
        // SAFETY: flock on a descriptor we own; released when `lock` is closed.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if key_path.exists() {
            return Ok((load()?, false));
        }
        let id = Identity::ephemeral()?;
        write_private_file(&cert_path, &id.cert, true)?;
        write_private_file(key_path, &id.key, true)?;
        Ok((id, true))
    }

    /// A rustls server configuration presenting this identity: TLS 1.3 only, no
    /// session tickets (nothing but key updates after the handshake, see `record`).
    pub fn server_config(&self) -> io::Result<Arc<ServerConfig>> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .map_err(io::Error::other)?;
        cfg.send_tls13_tickets = 0;
        // The record layer is driven by `record` once the handshake is done.
        cfg.enable_secret_extraction = true;
        Ok(Arc::new(cfg))
    }
}

/// Accepts exactly one certificate fingerprint, or (trust on first use) any, and
/// remembers which one it saw. Handshake signatures are always verified.
#[derive(Debug)]
pub struct PinVerifier {
    expected: Option<Fingerprint>,
    seen: Mutex<Option<Fingerprint>>,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    /// The fingerprint of the certificate the server presented, once connected.
    pub fn seen(&self) -> Option<Fingerprint> {
        *self.seen.lock().expect("pin lock")
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of(end_entity);
        *self.seen.lock().expect("pin lock") = Some(fp);
        match self.expected {
            Some(e) if e != fp => Err(rustls::Error::General(format!("server key {fp} is not the pinned {e}"))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration that pins `expected` (or trusts on first use when `None`).
pub fn client_config(expected: Option<Fingerprint>) -> io::Result<(Arc<ClientConfig>, Arc<PinVerifier>)> {
    let verifier = Arc::new(PinVerifier { expected, seen: Mutex::new(None), provider: provider() });
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    cfg.enable_secret_extraction = true;
    Ok((Arc::new(cfg), verifier))
}

/// The name the client asks for; certificates are pinned, not matched by name.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("gfast").expect("valid name")
}

/// The key remembered for `server` ("host:port") in a known-hosts file: lines of
/// `host:port sha256:HEX`. A missing or unreadable file knows nothing.
pub fn known_host(path: &Path, server: &str) -> Option<Fingerprint> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().filter_map(|l| l.split_once(' ')).find(|(h, _)| *h == server).and_then(|(_, f)| Fingerprint::parse(f))
}

/// Remembers `fp` for `server`, appending to the file (created 0600 with its directory).
pub fn remember_host(path: &Path, server: &str, fp: Fingerprint) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
    writeln!(f, "{server} {fp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemons_starting_together_share_one_new_key() {
        let dir = std::env::temp_dir().join(format!("gfast-keyrace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = dir.join("server.key");
        // A certificate left by a start that died before its key: replaced.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(key.with_extension("crt"), b"stale").unwrap();
        let got: Vec<(String, bool)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let key = &key;
                    s.spawn(move || {
                        let (id, created) = Identity::load_or_create(key).unwrap();
                        (id.fingerprint.to_string(), created)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got.iter().filter(|g| g.1).count(), 1, "{got:?}");
        assert!(got.iter().all(|g| g.0 == got[0].0), "{got:?}");
        let (again, created) = Identity::load_or_create(&key).unwrap();
        assert!(!created);
        assert_eq!(again.fingerprint.to_string(), got[0].0);
        assert!(again.server_config().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprints_print_and_parse() {
        let f = Fingerprint::of(b"abc");
        let s = f.to_string();
        assert!(s.starts_with("sha256:ba7816bf"));
        assert_eq!(Fingerprint::parse(&s), Some(f));
        assert_eq!(Fingerprint::parse(&s[7..]), Some(f));
        assert_eq!(Fingerprint::parse("sha256:zz"), None);
    }

    #[test]
    fn known_hosts_round_trip() {
        let dir = std::env::temp_dir().join(format!("gfast-kh-{}", std::process::id()));
        let p = dir.join("sub/known_hosts");
        let (a, b) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));
        assert_eq!(known_host(&p, "h:1"), None);
        remember_host(&p, "h:1", a).unwrap();
        remember_host(&p, "h:2", b).unwrap();
        assert_eq!(known_host(&p, "h:1"), Some(a));
        assert_eq!(known_host(&p, "h:2"), Some(b));
        assert_eq!(known_host(&p, "h:3"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
