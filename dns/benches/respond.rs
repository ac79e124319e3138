//! The responder and the table build, at the control-plane bench's scale
//! (10k Services; here 9k with cluster IPs and 1k headless with 10 endpoints).
//!
//! - `respond/hit`: A queries for Service names (the query is copied back into
//!   the buffer before each call: that copy is in the figure);
//! - `respond/nxdomain`: the names a Pod's search list tries first for an
//!   outside name (`www.example.com.default.svc.cluster.local`);
//! - `respond/headless`: A queries for headless Services (10 records each);
//! - `build/10k`: `DnsTable::build` of the whole view; `build/zone_only/10k`:
//!   the records alone, before encoding.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use svcgate_dns::{respond_in_place, DnsConfig, DnsEndpoint, DnsService, DnsTable, DnsView, Outcome, Protocol, Zone};

const SERVICES: u32 = 10_000;
const HEADLESS_EVERY: u32 = 10;

fn addr(base: [u8; 4], i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) + i)
}

fn view() -> DnsView {
    let services = (0..SERVICES)
        .map(|i| {
            let name = format!("svc-{i}");
            if i % HEADLESS_EVERY == 0 {
                let mut s = DnsService::headless("default", &name).with_port("web", Protocol::Tcp, 80);
                for e in 0..10 {
                    let mut ep = DnsEndpoint::ready(IpAddr::V4(addr([198, 18, 0, 0], i * 10 + e)));
                    ep.hostname = Some(format!("{name}-{e}"));
                    ep.ports.push(("web".into(), 8080));
                    s.endpoints.push(ep);
                }
                s
            } else {
                DnsService::cluster_ip("default", &name, addr([198, 19, 0, 0], i)).with_port("http", Protocol::Tcp, 80)
            }
        })
        .collect();
    DnsView { services }
}

fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn bench(c: &mut Criterion) {
    let view = view();
    let table = DnsTable::build(&view, &DnsConfig::default());
    eprintln!("dns table: {} names, about {} KiB", table.len(), table.heap_bytes() / 1024);
    let sets = [
        ("hit", (1..=64).map(|i| query(&format!("svc-{}.default.svc.cluster.local", i * 151 + 1))).collect::<Vec<_>>()),
        ("nxdomain", (0..64).map(|i| query(&format!("www{i}.example.com.default.svc.cluster.local"))).collect()),
        ("headless", (0..64).map(|i| query(&format!("svc-{}.default.svc.cluster.local", i * 150))).collect()),
    ];
    let mut g = c.benchmark_group("respond");
    g.throughput(Throughput::Elements(64));
    for (name, queries) in &sets {
        let mut buf = [0u8; 1500];
        g.bench_function(*name, |b| {
            b.iter(|| {
                for q in queries {
                    buf[..q.len()].copy_from_slice(q);
                    let out = respond_in_place(&table, &mut buf, q.len(), 512);
                    debug_assert!(matches!(out, Outcome::Answered { .. }));
                    black_box(out);
                }
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.bench_function("10k", |b| b.iter(|| DnsTable::build(black_box(&view), &DnsConfig::default())));
    g.bench_function("zone_only/10k", |b| b.iter(|| Zone::build(black_box(&view), &DnsConfig::default())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
