//! The fast path changes nothing but speed: two workers, one with the fast
//! path and one without (`Worker::set_fast_path(false)`), get the same random
//! mix of frames in the same batches, and must produce byte-identical frames,
//! identical verdicts, counters, per-Service counters and flow counts.
//!
//! The mix is mostly what the fast path takes (established TCP and UDP, and
//! backend replies) with everything it must leave to the general path
//! interleaved in the same batches: new flows, VLAN-tagged frames, IPv4
//! options, fragments, TTL 1 and 0, TCP SYN/FIN/RST on tracked flows,
//! unknown flows, non-Service traffic, replies from the wrong backend,
//! truncated, short and corrupted frames, and table and next-hop generation
//! swaps (stale flows are revalidated: a removed TCP backend gets a RST, UDP
//! moves). IPv6 frames (new flows, established traffic, replies, truncated)
//! are mixed in: the general path takes them in both workers, between the
//! IPv4 frames of the same batches. Run with a cache-resident table (one
//! pass) and a large one (the read-ahead passes).

use std::net::{Ipv4Addr, Ipv6Addr};

use svcgate_common::model::{DesiredState, Protocol, ServicePortSpec, ServiceSpec, ServiceType, SessionAffinity};
use svcgate_common::table::ServiceTable;
use svcgate_dataplane::nat::{Frame, NextHops, Shared, Verdict, Worker};
use svcgate_dataplane::testing::*;
use svcgate_dataplane::wire::tcp::flags::{ACK, FIN, PSH, RST, SYN};

fn services(gen: u64, drop_backend: bool) -> ServiceTable {
    let keep = |i: &u8| !drop_backend || (*i != 1 && *i != 5);
    let spec = ServiceSpec {
        namespace: "default".into(),
        name: "mix".into(),
        service_type: ServiceType::ClusterIp,
        cluster_ips: vec![CLUSTER_IP.into(), CLUSTER_IP6.into()],
        external_ips: vec![],
        load_balancer_ips: vec![],
        source_ranges: vec![],
        affinity: SessionAffinity::None,
        ports: vec![
            ServicePortSpec {
                name: "t".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                backends: (0..4).filter(keep).flat_map(|i| [ready(i, 8080), ready6(i, 8080)]).collect(),
            },
            ServicePortSpec {
                name: "u".into(),
                protocol: Protocol::Udp,
                port: 53,
                node_port: None,
                backends: (4..8).filter(keep).flat_map(|i| [ready(i, 5353), ready6(i, 5353)]).collect(),
            },
        ],
        forwarding: None,
    };
    // The generation without two backends also has a Service before the
    // mix: every service entry and frontend record index moves with it,
    // which a flow's cached indices must follow.
    let extra = drop_backend.then(|| ServiceSpec {
        name: "before".into(),
        cluster_ips: vec![
            Ipv4Addr::new(198, 18, 128, 99).into(),
            Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0, 0x99).into(),
        ],
        ports: vec![ServicePortSpec {
            name: "t".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
            backends: vec![ready(9, 8080), ready6(9, 8080)],
        }],
        ..spec.clone()
    });
    let services = extra.into_iter().chain([spec]).collect();
    let (t, warnings) = ServiceTable::build(&DesiredState { node_ips: vec![], services }, gen);
    assert!(warnings.is_empty(), "{warnings:?}");
    t
}

/// A flow the mix opened: the client side, and once seen forwarded, the
/// backend and SNAT port its replies use.
#[derive(Debug, Clone, Copy)]
struct Flow {
    client: Ipv4Addr,
    sport: u16,
    udp: bool,
    reply: Option<(Ipv4Addr, u16, u16)>,
}

impl Flow {
    fn pkt(&self, flags: u8) -> Pkt {
        let l4 = if self.udp { udp(self.sport, 53) } else { tcp(self.sport, 80, flags) };
        Pkt { src_mac: ROUTER_MAC, ..Pkt::new(self.client, CLUSTER_IP, l4) }
    }
}

/// An IPv6 flow the mix opened (from the routed client network), and once
/// seen forwarded, its backend and SNAT port.
#[derive(Debug, Clone, Copy)]
struct Flow6 {
    client: Ipv6Addr,
    sport: u16,
    udp: bool,
    reply: Option<(Ipv6Addr, u16, u16)>,
}

impl Flow6 {
    fn pkt(&self, flags: u8) -> Pkt<Ipv6Addr> {
        let l4 = if self.udp { udp(self.sport, 53) } else { tcp(self.sport, 80, flags) };
        Pkt { src_mac: ROUTER_MAC, ..Pkt::new(self.client, CLUSTER_IP6, l4) }
    }
}

/// One IPv6 frame of the mix.
fn frame6(rng: &mut XorShift, flows: &mut Vec<Flow6>) -> (Vec<u8>, u16) {
    if flows.is_empty() || rng.below(4) == 0 {
        let fl = Flow6 {
            client: Ipv6Addr::from(u128::from(FAR_NET6) + u128::from(rng.below(4000))),
            sport: 1024 + rng.below(60000) as u16,
            udp: rng.below(3) == 0,
            reply: None,
        };
        if !flows.iter().any(|f| f.client == fl.client && f.sport == fl.sport && f.udp == fl.udp) {
            flows.push(fl);
        }
        return (fl.pkt(SYN).build(), 0);
    }
    let fl = flows[rng.below(flows.len() as u64) as usize];
    match (rng.below(10), fl.reply) {
        (0..=3, Some((b, bport, snat_port))) => {
            let l4 = if fl.udp {
                udp(bport, snat_port)
            } else {
                tcp(bport, snat_port, [ACK, ACK, FIN | ACK][rng.below(3) as usize])
            };
            (Pkt { src_mac: backend_mac(0), dst_mac: GW_POD_MAC, ..Pkt::new(b, SNAT6, l4) }.build(), 1)
        }
        (4, _) => {
            let mut f = fl.pkt(ACK).build();
            f.truncate(rng.below(f.len() as u64) as usize);
            (f, 0)
        }
        (5, _) => (Pkt { ttl: rng.below(2) as u8, ..fl.pkt(ACK) }.build(), 0),
        _ => {
            let mut p = fl.pkt(if rng.below(2) == 0 { ACK } else { ACK | PSH });
            p.payload = vec![0x5a; rng.below(200) as usize];
            (p.build(), 0)
        }
    }
}

/// Adds `n` bytes of IPv4 options (NOPs) to an untagged frame.
fn with_options(mut f: Vec<u8>, n: usize) -> Vec<u8> {
    f.splice(34..34, std::iter::repeat_n(1u8, n));
    f[14] = 0x45 + (n / 4) as u8;
    let total = u16::from_be_bytes([f[16], f[17]]) + n as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let mut sum = 0u32;
    for w in f[14..34 + n].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f
}

/// One frame of the mix, and whether it is a fast-path candidate.
fn frame(rng: &mut XorShift, flows: &mut Vec<Flow>) -> (Vec<u8>, u16) {
    let known = |rng: &mut XorShift, flows: &Vec<Flow>| flows[rng.below(flows.len() as u64) as usize];
    let kind = if flows.is_empty() { 0 } else { rng.below(100) };
    match kind {
        // New flows (TCP SYN, or UDP).
        0..=7 => {
            let udp = rng.below(3) == 0;
            let fl = Flow {
                client: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 64, 0)) + rng.below(4000) as u32),
                sport: 1024 + rng.below(60000) as u16,
                udp,
                reply: None,
            };
            if !flows.iter().any(|f| f.client == fl.client && f.sport == fl.sport && f.udp == fl.udp) {
                flows.push(fl);
            }
            (fl.pkt(SYN).build(), 0)
        }
        // Established traffic, with payloads of various sizes.
        8..=54 => {
            let fl = known(rng, flows);
            let mut p = fl.pkt(if rng.below(2) == 0 { ACK } else { ACK | PSH });
            p.payload = vec![0x5a; rng.below(200) as usize];
            (p.build(), 0)
        }
        // Replies from the backends.
        55..=74 => {
            let fl = known(rng, flows);
            let Some((b, bport, snat_port)) = fl.reply else { return (fl.pkt(ACK).build(), 0) };
            let l4 = if fl.udp {
                udp(bport, snat_port)
            } else {
                let flags = [ACK, ACK, ACK, SYN | ACK, FIN | ACK, RST][rng.below(6) as usize];
                tcp(bport, snat_port, flags)
            };
            let mut p = Pkt { src_mac: backend_mac(0), dst_mac: GW_POD_MAC, ..Pkt::new(b, SNAT, l4) };
            if rng.below(10) == 0 {
                // From the wrong backend port.
                p.l4 = if fl.udp { udp(bport + 1, snat_port) } else { tcp(bport + 1, snat_port, ACK) };
            }
            if rng.below(20) == 0 {
                p.ttl = 1;
            }
            (p.build(), 1)
        }
        // TCP FIN, RST, SYN (on a closed flow: a new connection) of tracked flows.
        75..=78 => {
            let fl = known(rng, flows);
            (fl.pkt([FIN | ACK, RST, SYN, RST | ACK][rng.below(4) as usize]).build(), 0)
        }
        // VLAN-tagged.
        79..=80 => {
            let fl = known(rng, flows);
            (Pkt { vlan: Some(100), ..fl.pkt(ACK) }.build(), 0)
        }
        // IPv4 options.
        81..=82 => {
            let fl = known(rng, flows);
            (with_options(fl.pkt(ACK).build(), 4 * (1 + rng.below(3) as usize)), 0)
        }
        // A fragment (MF set or an offset).
        83 => {
            let mut f = known(rng, flows).pkt(ACK).build();
            f[20] |= if rng.below(2) == 0 { 0x20 } else { 0 };
            f[21] |= 1;
            (f, 0)
        }
        // TTL 1 or 0.
        84..=85 => (Pkt { ttl: rng.below(2) as u8, ..known(rng, flows).pkt(ACK) }.build(), 0),
        // Unknown flow (TCP without SYN) and non-Service traffic.
        86..=88 => {
            let mut p = known(rng, flows).pkt(ACK);
            p.l4 = tcp(1 + rng.below(1000) as u16, 80, ACK);
            if rng.below(2) == 0 {
                p.dst = Ipv4Addr::new(198, 18, 1, 77);
            }
            (p.build(), 0)
        }
        // UDP, some with a short payload (under the fast path's 54 bytes), some
        // with a zero UDP checksum.
        89..=90 => {
            let fl = Flow { udp: true, ..known(rng, flows) };
            let mut p = fl.pkt(0);
            p.payload = vec![7; rng.below(40) as usize];
            let mut f = p.build();
            if rng.below(2) == 0 {
                f[40..42].copy_from_slice(&[0, 0]);
            }
            (f, 0)
        }
        // Truncated.
        91..=93 => {
            let mut f = known(rng, flows).pkt(ACK).build();
            f.truncate(rng.below(f.len() as u64) as usize);
            (f, 0)
        }
        // Corrupted header bytes.
        _ => {
            let mut f = known(rng, flows).pkt(ACK).build();
            for _ in 0..1 + rng.below(3) {
                let at = 12 + rng.below(50) as usize;
                let len = f.len();
                f[at % len] ^= 1 << rng.below(8);
            }
            (f, 0)
        }
    }
}

struct Side {
    worker: Worker,
}

impl Side {
    fn new(capacity: usize, fast: bool) -> Self {
        let mut worker = Worker::new(0, Shared::new(nat_config(1, capacity)).unwrap());
        worker.set_fast_path(fast);
        Self { worker }
    }

    /// Runs one batch; returns each frame's verdict and output bytes (the
    /// whole buffer, so that stray writes show).
    fn run(&mut self, t: &ServiceTable, h: &NextHops, batch: &[(Vec<u8>, u16)], now: u32) -> Vec<(Verdict, Vec<u8>)> {
        let mut bufs: Vec<Vec<u8>> = batch
            .iter()
            .map(|(f, _)| {
                let mut b = vec![0xa5u8; 256 + f.len()];
                b[..f.len()].copy_from_slice(f);
                b
            })
            .collect();
        let mut frames: Vec<Frame<'_>> =
            bufs.iter_mut().zip(batch).map(|(b, (f, port))| Frame::new(b.as_mut_slice(), f.len(), *port)).collect();
        self.worker.process_batch(t, h, &mut frames, now);
        let out: Vec<(Verdict, usize)> = frames.iter().map(|f| (f.verdict, f.len)).collect();
        drop(frames);
        out.into_iter().zip(bufs).map(|((v, len), b)| (v, if len <= b.len() { b } else { b[..0].to_vec() })).collect()
    }
}

fn compare(capacity: usize, seed: u64, rounds: usize) {
    let mut rng = XorShift(seed);
    let mut fast = Side::new(capacity, true);
    let mut general = Side::new(capacity, false);
    let mut flows: Vec<Flow> = Vec::new();
    let mut flows6: Vec<Flow6> = Vec::new();
    let (mut t, mut h) = (services(1, false), next_hops(1));
    let mut now = 1_000u32;
    let mut forwarded_fast_candidates = 0u64;
    let mut forwarded6 = 0u64;
    for round in 0..rounds {
        // Swaps under live flows: a table generation without two backends,
        // then back; a next-hop generation.
        match round {
            r if r == rounds / 3 => t = services(2, true),
            r if r == rounds / 2 => h = next_hops(2),
            r if r == 2 * rounds / 3 => t = services(3, false),
            _ => {}
        }
        let n = 1 + rng.below(64) as usize;
        let batch: Vec<(Vec<u8>, u16)> = (0..n)
            .map(|_| if rng.below(8) == 0 { frame6(&mut rng, &mut flows6) } else { frame(&mut rng, &mut flows) })
            .collect();
        let a = fast.run(&t, &h, &batch, now);
        let b = general.run(&t, &h, &batch, now);
        for (i, ((va, fa), (vb, fb))) in a.iter().zip(&b).enumerate() {
            assert_eq!(va, vb, "round {round} frame {i}: verdict\n input {:02x?}", batch[i].0);
            assert_eq!(fa, fb, "round {round} frame {i}: bytes ({va:?})\n input {:02x?}", batch[i].0);
        }
        assert_eq!(fast.worker.counters(), general.worker.counters(), "round {round}: counters");
        assert_eq!(fast.worker.flows(), general.worker.flows(), "round {round}: flows");
        assert_eq!(
            fast.worker.take_unresolved().collect::<Vec<_>>(),
            general.worker.take_unresolved().collect::<Vec<_>>()
        );
        // Learn the replies' addresses from the forwarded first packets.
        for ((input, _), (v, out)) in batch.iter().zip(&a) {
            if let (Verdict::Forward { port: 1 }, true) = (v, input.len() >= 38 && input[12..14] == [8, 0]) {
                let client = Ipv4Addr::new(input[26], input[27], input[28], input[29]);
                let sport = u16::from_be_bytes([input[34], input[35]]);
                let backend = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
                let bport = u16::from_be_bytes([out[36], out[37]]);
                let snat_port = u16::from_be_bytes([out[34], out[35]]);
                let udp = input[23] == 17;
                for f in flows.iter_mut().filter(|f| f.client == client && f.sport == sport && f.udp == udp) {
                    f.reply = Some((backend, bport, snat_port));
                }
                forwarded_fast_candidates += 1;
            }
            if let (Verdict::Forward { port: 1 }, true) = (v, input.len() >= 58 && input[12..14] == [0x86, 0xdd]) {
                let v6 = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap());
                let (client, sport) = (v6(&input[22..38]), u16::from_be_bytes([input[54], input[55]]));
                let (backend, bport) = (v6(&out[38..54]), u16::from_be_bytes([out[56], out[57]]));
                let snat_port = u16::from_be_bytes([out[54], out[55]]);
                let udp = input[20] == 17;
                for f in flows6.iter_mut().filter(|f| f.client == client && f.sport == sport && f.udp == udp) {
                    f.reply = Some((backend, bport, snat_port));
                }
                forwarded6 += 1;
            }
        }
        now += 1 + rng.below(50) as u32;
        if rng.below(50) == 0 {
            // Time passes: some flows expire.
            now += 20_000 + rng.below(100_000) as u32;
            assert_eq!(fast.worker.maintain(now, 1 << 20), general.worker.maintain(now, 1 << 20));
        }
    }
    let mut sa = fast.worker.service_counters();
    let mut sb = general.worker.service_counters();
    sa.sort_by(|x, y| format!("{:?}", x.0).cmp(&format!("{:?}", y.0)));
    sb.sort_by(|x, y| format!("{:?}", x.0).cmp(&format!("{:?}", y.0)));
    assert_eq!(sa, sb, "per-Service counters");
    let c = fast.worker.counters();
    assert!(c.reverse_translated > 100 && forwarded_fast_candidates > 1000, "the mix exercised the fast path: {c:?}");
    assert!(forwarded6 > 100 && fast.worker.flows6() > 0, "the mix exercised IPv6: {forwarded6} forwarded");
    assert!(c.ip_options > 0 && c.pass.iter().sum::<u64>() > 0 && c.drop.iter().sum::<u64>() > 0 && c.replied > 0);
}

#[test]
fn fast_path_equals_general_path_cache_resident_table() {
    for seed in 1..=4 {
        compare(4096, 0x9e37_79b9_7f4a_7c15 ^ seed, 400);
    }
}

#[test]
fn fast_path_equals_general_path_large_table() {
    compare(100_000, 0x1234_5678_9abc_def1, 400);
}
