//! Micro-benchmarks of hot paths: key-group hashing and window assignment, each next to a
#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! baseline measured in the same run (std's SipHash, a plain division).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_core::state::{key_group_for, stable_hash};
use sluice_core::WindowAssigner;

fn hashing(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(|i| format!("key-{i}")).collect();
    let mut g = c.benchmark_group("hash_1024_string_keys");
    g.bench_function("stable_hash", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| stable_hash(black_box(k.as_str())))
                .fold(0u64, |a, h| a ^ h)
        })
    });
    g.bench_function("baseline_std_siphash", |b| {
        use std::hash::{BuildHasher, RandomState};
        let s = RandomState::new();
        b.iter(|| {
            keys.iter()
                .map(|k| s.hash_one(black_box(k.as_str())))
                .fold(0u64, |a, h| a ^ h)
        })
    });
    g.bench_function("key_group_u64", |b| {
        b.iter(|| (0..1024u64).map(|k| key_group_for(&black_box(k), 128).0).sum::<u32>())
    });
    g.finish();
}

fn windows(c: &mut Criterion) {
    let sliding = WindowAssigner::sliding(Duration::from_secs(10), Duration::from_secs(2));
    let tumbling = WindowAssigner::tumbling(Duration::from_secs(10));
    let mut g = c.benchmark_group("assign_1024_timestamps");
    g.bench_function("sliding_10s_2s", |b| {
        b.iter(|| {
            let mut n = 0i64;
            for t in 0..1024i64 {
                sliding.assign(black_box(t * 37), |w| n += w.start);
            }
            n
        })
    });
    g.bench_function("tumbling_10s", |b| {
        b.iter(|| {
            let mut n = 0i64;
            for t in 0..1024i64 {
                tumbling.assign(black_box(t * 37), |w| n += w.start);
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, hashing, windows);
criterion_main!(benches);
