//! Token authentication (protocol-spec §5.2): challenge-response with HMAC-SHA256.
//!
//! The token never crosses the wire. Both nonces are inputs, so the computation is
//! deterministic and testable; the engine draws them from the system's CSPRNG.

use super::frame::{ID_LEN, NONCE_LEN};
use ring::hmac;

/// Keys derived from the shared token and the two nonces of one session.
#[derive(Clone)]
pub struct SessionKeys {
    key: hmac::Key,
}

impl SessionKeys {
    /// Derives the session key `K = HMAC(token, "gfast/1 session" || cn || sn)` (§5.2).
    pub fn derive(token: &[u8], client_nonce: &[u8; NONCE_LEN], server_nonce: &[u8; NONCE_LEN]) -> Self {
        let tk = hmac::Key::new(hmac::HMAC_SHA256, token);
        let mut ctx = hmac::Context::with_key(&tk);
        ctx.update(b"gfast/1 session");
        ctx.update(client_nonce);
        ctx.update(server_nonce);
        let k = ctx.sign();
        SessionKeys { key: hmac::Key::new(hmac::HMAC_SHA256, k.as_ref()) }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; NONCE_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; NONCE_LEN];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn verify(&self, parts: &[&[u8]], tag: &[u8; NONCE_LEN]) -> bool {
        let mut msg = Vec::new();
        for p in parts {
            msg.extend_from_slice(p);
        }
        hmac::verify(&self.key, &msg, tag).is_ok()
    }

    /// The client's proof in AUTH.
    pub fn client_proof(&self) -> [u8; NONCE_LEN] {
        self.mac(&[b"client"])
    }

    /// Checks the client's proof in constant time.
    pub fn verify_client(&self, proof: &[u8; NONCE_LEN]) -> bool {
        self.verify(&[b"client"], proof)
    }

    /// The server's proof in WELCOME (mutual authentication).
    pub fn server_proof(&self) -> [u8; NONCE_LEN] {
        self.mac(&[b"server"])
    }

    /// Checks the server's proof in constant time.
    pub fn verify_server(&self, proof: &[u8; NONCE_LEN]) -> bool {
        self.verify(&[b"server"], proof)
    }

    /// The MAC a data connection presents in JOIN for `lane`.
    pub fn join_mac(&self, session_id: &[u8; ID_LEN], lane: u16) -> [u8; NONCE_LEN] {
        self.mac(&[b"join", session_id, &lane.to_be_bytes()])
    }

    /// Checks a JOIN MAC in constant time.
    pub fn verify_join(&self, session_id: &[u8; ID_LEN], lane: u16, mac: &[u8; NONCE_LEN]) -> bool {
        self.verify(&[b"join", session_id, &lane.to_be_bytes()], mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_token() {
        let (cn, sn) = ([1u8; 32], [2u8; 32]);
        let a = SessionKeys::derive(b"secret", &cn, &sn);
        let b = SessionKeys::derive(b"secret", &cn, &sn);
        let wrong = SessionKeys::derive(b"Secret", &cn, &sn);
        assert!(b.verify_client(&a.client_proof()));
        assert!(!wrong.verify_client(&a.client_proof()));
        assert!(a.verify_server(&b.server_proof()));
        assert!(!a.verify_server(&b.client_proof()), "client and server proofs must differ");
        let sid = [9u8; 16];
        assert!(b.verify_join(&sid, 3, &a.join_mac(&sid, 3)));
        assert!(!b.verify_join(&sid, 4, &a.join_mac(&sid, 3)));
        assert!(!wrong.verify_join(&sid, 3, &a.join_mac(&sid, 3)));
    }

    #[test]
    fn fresh_nonces_give_fresh_proofs() {
        let a = SessionKeys::derive(b"t", &[1u8; 32], &[2u8; 32]);
        let b = SessionKeys::derive(b"t", &[1u8; 32], &[3u8; 32]);
        assert_ne!(a.client_proof(), b.client_proof());
        assert!(!b.verify_client(&a.client_proof()), "a replayed proof must not verify");
    }
}
