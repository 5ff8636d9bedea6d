//! The DNS cache under churn: one miss-then-insert cycle on a cache with
//! room to spare, against the same cycle on a full cache where every insert
//! evicts (CLOCK), and lookups that hit in a full cache. The issue asks that
//! a full cache under churn costs what an empty one does.
//!
//! `cargo bench -p ward-actors --bench cache`

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ward_actors::dns::answer::{CachedAnswer, TtlPolicy};
use ward_actors::dns::cache::{Cache, Lookup};

const ENTRIES: usize = 100_000;

/// A cache key for name number `i` (qtype A, class IN, no DO/CD).
fn key(i: u64) -> Vec<u8> {
    let label = format!("n{i}");
    let mut k = vec![0, 1, 0, 1, 0, label.len() as u8];
    k.extend_from_slice(label.as_bytes());
    k.extend_from_slice(b"\x05bench\x04test\x00");
    k
}

/// One canonical answer, shared by every key (the cache never looks inside).
fn answer() -> Arc<CachedAnswer> {
    let query =
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x04test\x00\x00\x01\x00\x01";
    let mut response = query.to_vec();
    response[2] = 0x81;
    response[3] = 0x80;
    response[7] = 1;
    response.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 10, 0, 0, 1]);
    let accepted = CachedAnswer::from_upstream(
        &response,
        &query[12..],
        &TtlPolicy::default(),
        Instant::now(),
    )
    .expect("a valid answer");
    Arc::new(accepted.answer)
}

fn filled(capacity: usize, entries: u64, answer: &Arc<CachedAnswer>) -> Cache {
    let cache = Cache::new(capacity, 0);
    let now = Instant::now();
    for i in 0..entries {
        cache.insert(&key(i), answer.clone(), now);
    }
    cache
}

fn churn(c: &mut Criterion) {
    let answer = answer();
    let mut group = c.benchmark_group("cache");
    group.throughput(Throughput::Elements(1));
    let now = Instant::now();
    for (label, capacity) in [
        ("miss+insert, room to spare", 100 * ENTRIES),
        ("miss+insert, full, evicting", ENTRIES),
    ] {
        let cache = filled(capacity, ENTRIES as u64, &answer);
        let mut next = ENTRIES as u64;
        group.bench_function(label, |b| {
            b.iter_batched(
                || {
                    next += 1;
                    key(next)
                },
                |k| {
                    assert!(matches!(cache.lookup(&k, now), Lookup::Miss));
                    cache.insert(&k, answer.clone(), now);
                },
                BatchSize::SmallInput,
            )
        });
    }
    // Shards fill unevenly, so a full cache holds most keys, not all: hit
    // the ones it holds.
    let cache = filled(ENTRIES, ENTRIES as u64, &answer);
    let held: Vec<Vec<u8>> = (0..ENTRIES as u64)
        .map(key)
        .filter(|k| matches!(cache.lookup(k, now), Lookup::Fresh(_)))
        .collect();
    let mut i = 0usize;
    group.bench_function("hit, full", |b| {
        b.iter_batched(
            || {
                i = (i + 7919) % held.len();
                held[i].clone()
            },
            |k| assert!(matches!(cache.lookup(&k, now), Lookup::Fresh(_))),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, churn);
criterion_main!(benches);
