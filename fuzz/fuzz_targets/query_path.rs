//! Fuzzes the DNS query path: parsing, cache keys, answers, and the
//! resolver's on-the-spot decisions. `cargo +nightly fuzz run query_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ward_actors::dns::fuzzing::query_path(data);
});
