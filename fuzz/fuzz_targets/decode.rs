//! Fuzz target for the frame decoder (protocol-spec §3, §4): arbitrary bytes must
//! never panic it, never make it allocate past its limits, and every frame it
//! accepts must encode back to bytes that decode to the same frame. Decoded
//! in the handshake state (before AUTH, protocol-spec §3.3), only handshake
//! frames of at most 4 KiB are accepted.
#![no_main]

use gfast::proto::frame::{decode, is_handshake_kind, Decoded, Limits, HEADER_LEN, MAX_HANDSHAKE_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_control: 64 << 10, max_chunk: 64 << 10, handshake: false };
    let mut rest = data;
    while let Ok(Decoded::Frame(frame, used)) = decode(rest, &limits) {
        assert!(used <= rest.len());
        let again = frame.to_vec();
        match decode(&again, &Limits::default()) {
            Ok(Decoded::Frame(g, n)) => {
                assert_eq!(n, again.len());
                assert_eq!(g, frame);
            }
            other => panic!("re-encoded frame did not decode: {other:?}"),
        }
        rest = &rest[used..];
    }
    let mut rest = data;
    while let Ok(Decoded::Frame(frame, used)) = decode(rest, &Limits::handshake()) {
        assert!(used - HEADER_LEN <= MAX_HANDSHAKE_PAYLOAD as usize);
        assert!(is_handshake_kind(frame.to_vec()[0]), "{frame:?} accepted before AUTH");
        rest = &rest[used..];
    }
});
