//! Fuzzes the Shadowsocks client's decoders: TCP response streams and UDP
//! replies of every method, raw and sealed-then-damaged.
//! `cargo +nightly fuzz run shadowsocks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ward_actors::dialer::shadowsocks::fuzzing::shadowsocks(data);
});
