//! A fixed workload for instruction-count profiling of the established-flow
//! path (criterion times are noisy on shared machines; callgrind counts are
//! not):
//!
//! ```sh
//! cargo build --release -p svcgate-dataplane --features testing --example nat_profile
//! valgrind --tool=callgrind target/release/examples/nat_profile 1000 2000
//! ```
//!
//! Arguments: tracked flows (spread over 1000 Services x 10 endpoints),
//! batches of 64 frames to run after set-up, and a mode (see `main`). Prints instructions are left to
//! callgrind; the program prints the verdict counts so the work is checked.

use std::net::{Ipv4Addr, Ipv6Addr};

use svcgate_common::model::{BackendSpec, DesiredState, EndpointConditions, Protocol, ServicePortSpec, ServiceSpec};
use svcgate_common::table::ServiceTable;
use svcgate_dataplane::nat::{Frame, NatConfig, NextHops, Shared, Worker};
use svcgate_dataplane::testing::{lab_ports, tcp, Pkt, GW_POD_MAC, ROUTER, ROUTER6, ROUTER_MAC};

const SERVICES: u32 = 1000;

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + i)
}

/// Service `i`'s IPv6 clusterIP (mode 5).
fn vip6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0, 0)) + u128::from(i))
}

fn frame(i: u32, flags: u8) -> Vec<u8> {
    let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 64, 0)) + i % 16_000);
    let sport = 1024 + (i / 16_000) as u16;
    Pkt { src_mac: ROUTER_MAC, ..Pkt::new(client, vip(i % SERVICES), tcp(sport, 80, flags)) }.build()
}

/// Mode 5's frame `i`: the IPv6 twin of [`frame`].
fn frame6(i: u32, flags: u8) -> Vec<u8> {
    let client = Ipv6Addr::from(u128::from(Ipv6Addr::new(0x2001, 2, 0, 0x40, 0, 0, 0, 0)) + u128::from(i % 16_000));
    let sport = 1024 + (i / 16_000) as u16;
    Pkt { src_mac: ROUTER_MAC, ..Pkt::new(client, vip6(i % SERVICES), tcp(sport, 80, flags)) }.build()
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u32>().expect("a number"));
    let flows = args.next().unwrap_or(1000);
    let batches = args.next().unwrap_or(2000);
    // A third argument 1 runs the baseline (parse + MAC swap) instead; 2
    // sends SYNs of new flows (flows time out after 1 s of the batch clock);
    // 3 sends the backends' replies to the tracked flows (as `reply/1k`);
    // 4 runs mode 0 through the workers' DNS hook with a DNS address
    // configured (none of the frames DNS): the hook's cost to other traffic;
    // 5 runs mode 0 in IPv6 (the Services are dual-stack in every mode).
    let mode = args.next().unwrap_or(0);
    // A fourth argument: the flow-table capacity (default: the flows). Mode
    // 2 with room to spare (`1000 3000 2 200000`) is `new_flow`'s steady
    // state without pressure; with the default it runs at capacity, every
    // new flow reclaiming an old one.
    let capacity = args.next().unwrap_or(flows) as usize;
    let dns = (mode == 4).then(|| {
        let config = svcgate_dns::DnsConfig {
            nameservers: vec![Ipv4Addr::new(198, 18, 127, 53).into()],
            ..svcgate_dns::DnsConfig::default()
        };
        svcgate_dns::DnsTable::build(&svcgate_dns::DnsView::default(), &config)
    });
    let baseline = mode == 1;
    let new_flows = mode == 2;
    let replies = mode == 3;
    let v6 = mode == 5;
    let frame = if v6 { frame6 } else { frame };
    let services = (0..SERVICES)
        .map(|s| ServiceSpec {
            namespace: "p".into(),
            name: format!("s{s}"),
            service_type: Default::default(),
            cluster_ips: vec![vip(s).into(), vip6(s).into()],
            external_ips: vec![],
            load_balancer_ips: vec![],
            source_ranges: vec![],
            affinity: Default::default(),
            ports: vec![ServicePortSpec {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                backends: (0..10)
                    .map(|e| BackendSpec {
                        addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + s * 10 + e).into(),
                        port: 8080,
                        conditions: EndpointConditions::READY,
                        weight: 1,
                    })
                    .chain((0..10).map(|e| {
                        BackendSpec {
                            addr: Ipv6Addr::from(
                                u128::from(Ipv6Addr::new(0x2001, 2, 0, 0x4000, 0, 0, 0, 0)) + u128::from(s * 10 + e),
                            )
                            .into(),
                            port: 8080,
                            conditions: EndpointConditions::READY,
                            weight: 1,
                        }
                    }))
                    .collect(),
            }],
            forwarding: None,
        })
        .collect();
    let table = ServiceTable::build(&DesiredState { node_ips: vec![], services }, 1).0;
    let mut hops = NextHops::new(1, lab_ports());
    hops.add_route("198.18.64.0/18".parse().unwrap(), ROUTER);
    hops.add_route("198.19.0.0/16".parse().unwrap(), "198.18.2.254".parse::<std::net::Ipv4Addr>().unwrap());
    hops.add_neighbour(0, ROUTER, ROUTER_MAC);
    hops.add_neighbour(1, "198.18.2.254".parse::<std::net::Ipv4Addr>().unwrap(), [2, 0, 0, 0, 2, 254]);
    let pod_router6: Ipv6Addr = "2001:2:0:2::fe".parse().unwrap();
    hops.add_route("2001:2:0:40::/64".parse().unwrap(), ROUTER6);
    hops.add_route("2001:2:0:4000::/64".parse().unwrap(), pod_router6);
    hops.add_neighbour(0, ROUTER6, ROUTER_MAC);
    hops.add_neighbour(1, pod_router6, [2, 0, 0, 0, 2, 254]);
    let cfg = NatConfig {
        snat_addrs: (0..flows / 28_000 + 1)
            .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 3, 0)) + i))
            .collect(),
        snat_addrs6: (0..flows / 28_000 + 1).map(|i| Ipv6Addr::new(0x2001, 2, 0, 3, 0, 0, 0, 1 + i as u16)).collect(),
        conntrack_capacity: capacity,
        conntrack_capacity6: capacity,
        // The set-up fills the table with SYN-only (never assured) flows:
        // no pressure reclaim before it is full.
        pressure_percent: 100,
        // Fixed seeds: the same table layout, so the same counts, every run.
        hash_seeds: Some([0x5eed_0001_2345_6789, 0x5eed_0002_3456_789a]),
        ..NatConfig::default()
    };
    let mut cfg = cfg;
    if new_flows {
        cfg.timeouts.tcp_syn_ms = 1_000;
    }
    let mut w = Worker::new(0, Shared::new(cfg).unwrap());
    let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 2048]).collect();
    let run = |w: &mut Worker, bufs: &mut Vec<Vec<u8>>, ids: &[u32], flags: u8| {
        let mut frames: Vec<Frame<'_>> = bufs
            .iter_mut()
            .zip(ids)
            .map(|(b, &i)| {
                let f = frame(i, flags);
                b[..f.len()].copy_from_slice(&f);
                Frame::new(b.as_mut_slice(), f.len(), 0)
            })
            .collect();
        w.process_batch(&table, &hops, &mut frames, 1);
    };
    // Reply templates, from each translated SYN: backend -> SNAT address and port.
    let mut reply_templates = Vec::new();
    for start in (0..flows).step_by(64) {
        let ids: Vec<u32> = (start..(start + 64).min(flows)).collect();
        run(&mut w, &mut bufs, &ids, 0x02);
        // The backends answer (SYN-ACK), so the first measured ACK of each
        // flow completes its handshake, as in real traffic; `reply/1k`'s
        // frames are the backends' next segments (ACK).
        let answer = if v6 { answer_to6 } else { answer_to };
        let answers: Vec<Vec<u8>> = bufs[..ids.len()].iter().map(|out| answer(out, 0x12)).collect();
        if replies {
            reply_templates.extend(bufs[..ids.len()].iter().map(|out| answer_to(out, 0x10)));
        }
        if !new_flows {
            let mut frames: Vec<Frame<'_>> = bufs
                .iter_mut()
                .zip(&answers)
                .map(|(b, a)| {
                    b[..a.len()].copy_from_slice(a);
                    Frame::new(b.as_mut_slice(), a.len(), 1)
                })
                .collect();
            w.process_batch(&table, &hops, &mut frames, 1);
        }
    }
    let setup = w.counters().forwarded;
    let mut x = 0x9e37_79b9u32;
    let templates: Vec<Vec<u8>> = if replies { reply_templates } else { (0..flows).map(|i| frame(i, 0x10)).collect() };
    if new_flows {
        let template = frame(0, 0x02);
        let mut n = flows;
        for b in 0..batches {
            let mut frames: Vec<Frame<'_>> = bufs
                .iter_mut()
                .map(|buf| {
                    n = n.wrapping_add(1);
                    buf[..template.len()].copy_from_slice(&template);
                    let client = u32::from(Ipv4Addr::new(198, 18, 64, 0)) + n % 16_000;
                    buf[26..30].copy_from_slice(&client.to_be_bytes());
                    buf[30..34].copy_from_slice(&vip(n.wrapping_mul(7919) % SERVICES).octets());
                    buf[34..36].copy_from_slice(&(((n / 16_000) % 60_000) as u16 + 1024).to_be_bytes());
                    Frame::new(buf.as_mut_slice(), template.len(), 0)
                })
                .collect();
            process_at(&mut w, &table, &hops, &mut frames, 2 + b);
        }
        let c = w.counters();
        println!("new flows {}, expired {}, evicted {}, drops {:?}", c.new_flows, c.expired, c.evicted, c.drop);
        return;
    }
    for _ in 0..batches {
        let mut frames: Vec<Frame<'_>> = bufs
            .iter_mut()
            .map(|b| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let t = &templates[(x % flows) as usize];
                b[..t.len()].copy_from_slice(t);
                Frame::new(b.as_mut_slice(), t.len(), 0)
            })
            .collect();
        if baseline {
            parse_and_swap(&mut frames);
        } else if let Some(dns) = &dns {
            process_dns(&mut w, &table, &hops, dns, &mut frames);
        } else {
            process(&mut w, &table, &hops, &mut frames);
        }
    }
    let c = w.counters();
    println!(
        "setup forwarded {setup}, measured forwarded {} (replies translated {}), drops {:?}",
        c.forwarded - setup,
        c.reverse_translated,
        c.drop
    );
}

/// The backend's segment with TCP `flags` answering a SYN as the worker
/// forwarded it (`out`): backend -> SNAT address and port.
fn answer_to(out: &[u8], flags: u8) -> Vec<u8> {
    let backend = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    let snat = Ipv4Addr::new(out[26], out[27], out[28], out[29]);
    let (sp, bp) = (u16::from_be_bytes([out[34], out[35]]), u16::from_be_bytes([out[36], out[37]]));
    Pkt { src_mac: [2, 0, 0, 0, 2, 254], dst_mac: GW_POD_MAC, ..Pkt::new(backend, snat, tcp(bp, sp, flags)) }.build()
}

/// [`answer_to`] in IPv6.
fn answer_to6(out: &[u8], flags: u8) -> Vec<u8> {
    let v6 = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap());
    let (snat, backend) = (v6(&out[22..38]), v6(&out[38..54]));
    let (sp, bp) = (u16::from_be_bytes([out[54], out[55]]), u16::from_be_bytes([out[56], out[57]]));
    Pkt { src_mac: [2, 0, 0, 0, 2, 254], dst_mac: GW_POD_MAC, ..Pkt::new(backend, snat, tcp(bp, sp, flags)) }.build()
}

/// The baseline of benches/nat.rs: parse with the wire wrappers, swap MACs.
#[inline(never)]
fn parse_and_swap(frames: &mut [Frame<'_>]) {
    use svcgate_dataplane::wire::{ethernet::EthernetFrame, ipv4::Ipv4Packet, tcp::TcpPacket};
    for f in frames.iter_mut() {
        let len = f.len;
        let Ok(eth) = EthernetFrame::new_checked(&f.buf[..len]) else { continue };
        let l3 = eth.header_len();
        let Ok(ip) = Ipv4Packet::new_checked(&f.buf[l3..len]) else { continue };
        let l4 = l3 + ip.header_len();
        let end = l3 + usize::from(ip.total_len());
        let Ok(t) = TcpPacket::new_checked(&f.buf[l4..end]) else { continue };
        std::hint::black_box((ip.src_u32(), ip.dst_u32(), t.src_port(), t.dst_port()));
        let mut eth = EthernetFrame::new_unchecked(&mut f.buf[..l3]);
        let (s, d) = (eth.src_addr(), eth.dst_addr());
        eth.set_src_addr(d);
        eth.set_dst_addr(s);
    }
}

/// New-flow batches, at batch clock `now` (ms).
#[inline(never)]
fn process_at(w: &mut Worker, t: &ServiceTable, h: &NextHops, frames: &mut [Frame<'_>], now: u32) {
    w.process_batch(t, h, frames, now);
}

/// The measured call, in its own function so callgrind reports it apart.
#[inline(never)]
fn process(w: &mut Worker, t: &ServiceTable, h: &NextHops, frames: &mut [Frame<'_>]) {
    w.process_batch(t, h, frames, 2);
}

/// Mode 4's measured call: the DNS hook in front of the NAT, as the
/// gateway's workers run it.
#[inline(never)]
fn process_dns(w: &mut Worker, t: &ServiceTable, h: &NextHops, dns: &svcgate_dns::DnsTable, frames: &mut [Frame<'_>]) {
    let mut counters = svcgate_dataplane::dns_hook::DnsCounters::default();
    svcgate_dataplane::dns_hook::split_batch(dns, frames, &mut counters, |run| w.process_batch(t, h, run, 2));
    assert_eq!(counters.answered, 0);
}
