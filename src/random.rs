//! Random bytes from the operating system's CSPRNG (nonces, session ids,
//! tokens, keys): one place, used by every layer.

/// `N` bytes from the operating system's CSPRNG.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).expect("the system random generator failed");
    b
}
