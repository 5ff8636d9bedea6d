//! Fuzzes the frames of a Trojan UDP association: decoding, writing back,
//! partial frames. `cargo +nightly fuzz run trojan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ward_actors::dialer::trojan::fuzzing::udp_frames(data);
});
