//! Fuzz target for the receiving side's state machine (protocol-spec §5.3-§5.6,
//! §5.11, §5.13): arbitrary frame sequences, decoded with the session's
//! limits, must never panic it nor let it hold more entries than the window.
//! The driver is `gfast::proto::receiver::drive_with_frames`; a seeded test
//! runs it on every `cargo nextest run`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gfast::proto::receiver::drive_with_frames(data);
});
