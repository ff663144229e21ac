//! Fuzz target for the compressed CHUNK body (protocol-spec §4.14): arbitrary
//! bytes must never panic the block reader nor make it produce more than the
//! raw length the body states (at most the chunk size).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    const MAX_RAW: usize = 16 << 20;
    if let Ok(Some(raw)) = gfast::proto::chunk::decode_body(data, MAX_RAW, gfast::proto::chunk::BlockRules::ALL) {
        let stated = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        assert_eq!(raw.len(), stated);
        assert!(raw.len() <= MAX_RAW);
    }
});
