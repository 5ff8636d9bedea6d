//! Writes the seed corpus of the `shadowsocks` fuzz target: replies sealed
//! for every method with the fuzzer's keys, cut and damaged copies, and
//! sealed-reply inputs (`fuzzing::seeds`). Each file is named by a hash of
//! its bytes, so running it again adds only new seeds.
//!
//! `cargo run -p ward-actors --example shadowsocks_seeds [DIR]`
//! (DIR: fuzz/corpus/shadowsocks by default).

use std::path::PathBuf;

use ward_actors::dialer::shadowsocks::fuzzing;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/shadowsocks"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir)?;
    let seeds = fuzzing::seeds();
    for seed in &seeds {
        std::fs::write(dir.join(format!("{:016x}", fnv1a(seed))), seed)?;
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
    Ok(())
}

/// FNV-1a, 64 bits: a stable name for a seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
