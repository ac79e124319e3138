//! Maglev benches: table build across sizes and the per-packet `pick`.
//!
//! The NSDI'16 paper reports 1.8 ms to build a 65537-slot table for 100
//! backends; `build/N=100/M=65537` is the comparable figure.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use svcgate_common::hash::flow_hash;
use svcgate_common::maglev::{table_size_for, Maglev, MaglevBackend, MAX_TABLE_SIZE};

/// `n` distinct backends in 198.18.0.0/15, weight 1.
fn backends(n: u32) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| MaglevBackend { addr: Ipv4Addr::from(0xc612_0000 + 0x100 + i).into(), port: 8080, weight: 1 })
        .collect()
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    for (n, m) in
        [(100, MAX_TABLE_SIZE), (10, table_size_for(10)), (100, table_size_for(100)), (1000, table_size_for(1000))]
    {
        let list = backends(n);
        g.throughput(Throughput::Elements(u64::from(m)));
        g.bench_with_input(BenchmarkId::new(format!("N={n}"), format!("M={m}")), &list, |b, list| {
            b.iter(|| Maglev::build(black_box(list), black_box(m)))
        });
    }
    g.finish();
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_pick");
    // A batch of 64 flow hashes, as a worker sees per RX burst.
    let hashes: Vec<u32> =
        (0..64u32).map(|i| flow_hash(0xc612_0000 | i, 0xc612_6401, 40000 + i as u16, 80, 6)).collect();
    g.throughput(Throughput::Elements(hashes.len() as u64));
    for n in [10, 1000] {
        let m = table_size_for(n as usize);
        let table = Maglev::build(&backends(n), m);
        g.bench_function(BenchmarkId::new(format!("N={n}"), format!("M={m}")), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for &h in black_box(&hashes) {
                    acc = acc.wrapping_add(u32::from(table.pick(h).unwrap_or(0)));
                }
                acc
            })
        });
    }
    g.finish();
}

criterion_group!(benches, build, pick);
criterion_main!(benches);
