//! The NAT pipeline targets.
//!
//! Both run every frame through two identical worlds (same configuration,
//! same frames, same batches, same clock), one with the fast path on and
//! one with it off (`Worker::set_fast_path`), and require byte-identical
//! buffers, identical verdicts, counters, flow counts and per-Service
//! counters: the fast path must change nothing but speed. Every frame's
//! result also passes [`check_outcome`](crate::lab::check_outcome) and
//! every worker's counters add up ([`check_counters`](crate::lab::check_counters)).
//!
//! # `frame_pipeline`: `[control] [frame...]`
//!
//! The control byte: bit 0 the ingress port (0 clients, 1 Pods); bits 1-2
//! the buffer's room (the frame's length exactly, +64 bytes, 2048, 9000: a
//! RST or ICMP error may need more than the frame); bit 3 the gateway's mode
//! (`NatConfig::mode` snat or dnat; Services with their own forwarding mode
//! keep it). Before the frame, each world opens a few flows (web, dns, the
//! dnat and snat Services, spread, sticky) with handshakes and answers, so
//! that the frame can hit tracked flows and the reverse table (the fast
//! path's cases) as well as new ones.
//!
//! # `frame_sequence`: `[header] [op...]`
//!
//! The header: bit 0 a large flow table (the batch path's read-ahead passes),
//! bit 1 dnat gateway mode, bit 2 the clock starts 10 s before it wraps. Two
//! workers (two RX queues) share one reverse table in each world. Ops, one
//! byte each and their operands:
//!
//! | op | operands | what |
//! |---|---|---|
//! | `0x00-0x3f` | length, frame | a frame: bit 0 worker, bit 1 ingress port; bit 5 queues it in the worker's pending batch instead of running it alone. Length: one byte < 0xf0, else `(b & 0x0f) << 8 \| next` |
//! | `0x40-0x5f` | | advance the clock by 2^(op & 31) ms |
//! | `0x60-0x67` | | publish table variant op & 3 (next generation) |
//! | `0x68-0x6f` | | publish next-hop variant op & 3 (next generation) |
//! | `0x70-0x7f` | | `maintain` on worker op & 1, 2^((op >> 1) & 7) buckets |
//! | `0x80-0x8f` | | `reclaim(op & 7)` on worker (op >> 3) & 1 |
//! | `0x90-0x9f` | 3 bytes | a well-formed client packet: frontend, client and port, TCP flags (see `template`); bit 0 worker, bit 1 queued |
//! | `0xa0-0xaf` | 2 bytes | a backend's answer to one of the last frames forwarded toward a Pod; bit 0 worker, bit 1 queued |
//! | `0xb0-0xff` | | run the pending batches |
//!
//! A run stops after 256 ops or 1024 frames.

use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};

use svcgate_common::model::ForwardingMode;
use svcgate_common::table::{ServicePortId, ServiceTable};
use svcgate_dataplane::nat::{NextHops, ServiceCounter, Verdict};
use svcgate_dataplane::testing::*;
use svcgate_dataplane::wire::tcp::flags::{ACK, FIN, PSH, RST, SYN};

use crate::lab::{self, Lab, Outcome, World, DNS_IP, KEEP, SMALL_CT, SNATTED, SPREAD_IP, START_MS, STICKY_IP};

/// A client packet of either family.
#[derive(Debug, Clone)]
pub enum AnyPkt {
    /// IPv4.
    V4(Pkt),
    /// IPv6.
    V6(Pkt<Ipv6Addr>),
}

impl AnyPkt {
    /// The L4 header.
    pub fn l4(&self) -> L4 {
        match self {
            Self::V4(p) => p.l4,
            Self::V6(p) => p.l4,
        }
    }

    /// The same packet with another L4 header and payload, built.
    pub fn with(&self, l4: L4, payload: Option<Vec<u8>>) -> Vec<u8> {
        match self {
            Self::V4(p) => Pkt { l4, payload: payload.unwrap_or_else(|| p.payload.clone()), ..p.clone() }.build(),
            Self::V6(p) => Pkt { l4, payload: payload.unwrap_or_else(|| p.payload.clone()), ..p.clone() }.build(),
        }
    }

    /// The frame.
    pub fn build(&self) -> Vec<u8> {
        match self {
            Self::V4(p) => p.build(),
            Self::V6(p) => p.build(),
        }
    }
}

/// The client packets `frame_pipeline` opens flows with before its frame,
/// IPv4 and IPv6.
pub fn setup_packets() -> Vec<AnyPkt> {
    vec![
        AnyPkt::V4(Pkt::new(CLIENT, CLUSTER_IP, tcp(40000, 8080, SYN))),
        AnyPkt::V4(Pkt::new(CLIENT, DNS_IP, udp(5000, 53))),
        AnyPkt::V4(Pkt::new(CLIENT, KEEP, tcp(40001, 80, SYN))),
        AnyPkt::V4(Pkt::new(CLIENT, SNATTED, tcp(40002, 443, SYN))),
        AnyPkt::V4(Pkt::new(CLIENT2, SPREAD_IP, udp(5001, 80))),
        AnyPkt::V4(Pkt::new(CLIENT, STICKY_IP, tcp(40003, 80, SYN))),
        AnyPkt::V6(Pkt::new(CLIENT6, CLUSTER_IP6, tcp(40004, 8080, SYN))),
        AnyPkt::V6(Pkt::new(CLIENT6, lab::KEEP6, tcp(40005, 80, SYN))),
        AnyPkt::V6(Pkt::new(lab::CLIENT6_2, lab::SPREAD_IP6, udp(5002, 80))),
    ]
}

/// Opens the setup flows on worker 0 of `w` (SYN, the backend's SYN-ACK,
/// the client's ACK; UDP query and answer). Returns the frames forwarded
/// toward the backends.
pub fn setup(w: &mut World, t: &ServiceTable, h: &NextHops, now: u32) -> Vec<Vec<u8>> {
    let mut forwarded = Vec::new();
    for p in setup_packets() {
        let out = w.run(0, t, h, &[(p.build(), 0)], 2048, now).remove(0);
        if !matches!(out.verdict, Verdict::Forward { .. }) {
            continue;
        }
        let fwd = out.frame().to_vec();
        if let Some(answer) = lab::answer_to(&fwd, SYN | ACK) {
            w.run(0, t, h, &[(answer, 1)], 2048, now);
        }
        if let L4::Tcp { sport, dport, .. } = p.l4() {
            w.run(0, t, h, &[(p.with(tcp(sport, dport, ACK), None), 0)], 2048, now);
        }
        forwarded.push(fwd);
    }
    forwarded
}

fn mode_of(bit: bool) -> ForwardingMode {
    if bit {
        ForwardingMode::Dnat
    } else {
        ForwardingMode::Snat
    }
}

/// Both worlds must agree on everything they can be asked.
fn compare_worlds(a: &World, b: &World) {
    for (x, y) in a.workers.iter().zip(&b.workers) {
        assert_eq!(x.counters(), y.counters(), "fast path counters differ from the general path's");
        assert_eq!(x.flows(), y.flows(), "fast path flow count differs");
        let (cx, cy) = (x.service_counters(), y.service_counters());
        if (cx.len(), digest(&cx)) != (cy.len(), digest(&cy)) {
            let sorted = |v: &[(ServicePortId, ServiceCounter)]| {
                let mut v: Vec<String> = v.iter().map(|(id, c)| format!("{id:?} {c:?}")).collect();
                v.sort();
                v
            };
            assert_eq!(sorted(&cx), sorted(&cy), "fast path per-Service counters differ");
        }
    }
}

/// An order-independent digest of per-Service counters. The worker returns
/// them in the order of a std `HashMap`, whose keys differ per map: a sort
/// took different edges for the same input (AFL instability); a sum of
/// per-entry hashes takes the same ones in any order.
fn digest(v: &[(ServicePortId, ServiceCounter)]) -> u64 {
    v.iter().fold(0u64, |acc, (id, c)| {
        let mut h = std::hash::DefaultHasher::new();
        id.hash(&mut h);
        (c.packets, c.bytes).hash(&mut h);
        acc.wrapping_add(h.finish())
    })
}

/// Any bytes as one frame, against a worker with flows open; see the module
/// documentation.
pub fn frame_pipeline(data: &[u8]) {
    let Some((&ctl, frame)) = data.split_first() else { return };
    let lab = Lab::get();
    let table = lab.table(0, 1);
    let hops = lab::hops(0, 1);
    let cfg = lab::config(mode_of(ctl & 0x08 != 0), 1, SMALL_CT);
    let mut fast = World::new(cfg.clone(), true);
    let mut general = World::new(cfg, false);
    let a = setup(&mut fast, &table, &hops, START_MS);
    let b = setup(&mut general, &table, &hops, START_MS);
    assert_eq!(a, b, "fast path changed the setup flows");
    let in_port = u16::from(ctl & 1);
    let cap = match (ctl >> 1) & 3 {
        0 => frame.len(),
        1 => frame.len() + 64,
        2 => 2048,
        _ => 9000,
    };
    let input = [(frame.to_vec(), in_port)];
    let now = START_MS + 10;
    let x = fast.run(0, &table, &hops, &input, cap, now);
    let y = general.run(0, &table, &hops, &input, cap, now);
    assert_eq!(x, y, "fast path output differs from the general path's");
    compare_worlds(&fast, &general);
}

/// A cursor over the input.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        b
    }
}

/// Frontends the client-packet template picks from: every kind of the
/// lab's Services, plus addresses and ports that are none.
const FRONTENDS: [(Ipv4Addr, bool, u16); 16] = [
    (CLUSTER_IP, true, 8080),
    (NODE_IP, true, 30120),
    (LB_IP, true, 8080),
    (EXTERNAL_IP, true, 8080),
    (DNS_IP, false, 53),
    (lab::EMPTY_IP, true, 80),
    (lab::EMPTY_IP, false, 81),
    (SPREAD_IP, true, 80),
    (SPREAD_IP, false, 80),
    (STICKY_IP, true, 80),
    (lab::DRAIN_IP, true, 80),
    (lab::DRAIN_IP, false, 80),
    (lab::UNRESOLVED_IP, true, 80),
    (KEEP, true, 80),
    (KEEP, false, 81),
    (SNATTED, true, 443),
];

/// The IPv6 frontends the template picks from (`f` bit 5): the dual-stack
/// Services' IPv6 halves, and IPv6 addresses and ports that are none.
const FRONTENDS6: [(Ipv6Addr, bool, u16); 16] = [
    (CLUSTER_IP6, true, 8080),
    (NODE_IP6, true, 30120),
    (LB_IP6, true, 8080),
    (lab::SPREAD_IP6, true, 80),
    (lab::SPREAD_IP6, false, 80),
    (lab::KEEP6, true, 80),
    (lab::KEEP6, false, 81),
    (CLUSTER_IP6, false, 8080),
    (NODE_IP6, true, 30121),
    (lab::SPREAD_IP6, true, 81),
    (Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0, 0x99), true, 80),
    (Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0, 0x99), false, 80),
    (SNAT6, true, 33000),
    (LB_IP6, false, 8080),
    (lab::KEEP6, true, 81),
    (CLUSTER_IP6, true, 80),
];

/// A well-formed client packet from three operand bytes: `f` picks the
/// frontend (low 4 bits) and, in bit 4, a frontend port one off (no
/// Service), in bit 5 an IPv6 frontend instead (`FRONTENDS6`); `c` picks
/// the client (low 2 bits: the lab client, a second one, a routed one, one
/// outside every route, of the frontend's family) and the source port
/// (40000 + the rest); `g` gives the TCP flags (FIN SYN RST PSH ACK in bits
/// 0-4), bit 5 an 802.1Q tag, bit 6 TTL 1, bit 7 a payload of 600 bytes.
pub fn template(f: u8, c: u8, g: u8) -> Vec<u8> {
    let sport = 40000 + u16::from(c >> 2);
    let flags =
        [FIN, SYN, RST, PSH, ACK].iter().enumerate().fold(0, |a, (i, f)| a | if g >> i & 1 != 0 { *f } else { 0 });
    let l4 = |is_tcp: bool, dport: u16| {
        let dport = if f & 0x10 != 0 { dport.wrapping_add(1) } else { dport };
        if is_tcp {
            tcp(sport, dport, flags)
        } else {
            udp(sport, dport)
        }
    };
    if f & 0x20 != 0 {
        let (dst, is_tcp, dport) = FRONTENDS6[usize::from(f & 15)];
        let client = match c & 3 {
            0 => CLIENT6,
            1 => lab::CLIENT6_2,
            2 => Ipv6Addr::from(u128::from(FAR_NET6) + 5),
            _ => Ipv6Addr::new(0x2001, 2, 0, 0xc8, 0, 0, 0, 7),
        };
        let mut p = Pkt::new(client, dst, l4(is_tcp, dport));
        if matches!(c & 3, 2 | 3) {
            p.src_mac = ROUTER_MAC;
        }
        shape(&mut p.vlan, &mut p.ttl, &mut p.payload, g);
        return p.build();
    }
    let (dst, is_tcp, dport) = FRONTENDS[usize::from(f & 15)];
    let client = match c & 3 {
        0 => CLIENT,
        1 => CLIENT2,
        2 => FAR_CLIENT,
        _ => Ipv4Addr::new(198, 18, 200, 7),
    };
    let mut p = Pkt::new(client, dst, l4(is_tcp, dport));
    if matches!(c & 3, 2 | 3) {
        p.src_mac = ROUTER_MAC;
    }
    shape(&mut p.vlan, &mut p.ttl, &mut p.payload, g);
    p.build()
}

/// `template`'s `g` bits 5-7: an 802.1Q tag, TTL (hop limit) 1, 600 bytes.
fn shape(vlan: &mut Option<u16>, ttl: &mut u8, payload: &mut Vec<u8>, g: u8) {
    if g & 0x20 != 0 {
        *vlan = Some(100);
    }
    if g & 0x40 != 0 {
        *ttl = 1;
    }
    if g & 0x80 != 0 {
        *payload = vec![0x5a; 600];
    }
}

struct Sequence {
    worlds: [World; 2],
    table: ServiceTable,
    hops: NextHops,
    generation: u64,
    hop_generation: u32,
    now: u32,
    pending: [Vec<(Vec<u8>, u16)>; 2],
    /// The last frames forwarded toward Pods (port 1), for answers.
    forwarded: Vec<Vec<u8>>,
    frames: usize,
}

impl Sequence {
    fn flush(&mut self, w: usize) {
        if self.pending[w].is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending[w]);
        self.run(w, &batch);
    }

    fn flush_all(&mut self) {
        self.flush(0);
        self.flush(1);
    }

    fn run(&mut self, w: usize, batch: &[(Vec<u8>, u16)]) {
        let [a, b] = &mut self.worlds;
        let x: Vec<Outcome> = a.run(w, &self.table, &self.hops, batch, 2048, self.now);
        let y = b.run(w, &self.table, &self.hops, batch, 2048, self.now);
        assert_eq!(x, y, "fast path output differs from the general path's");
        for o in x {
            if o.verdict == (Verdict::Forward { port: 1 }) {
                if self.forwarded.len() == 8 {
                    self.forwarded.remove(0);
                }
                self.forwarded.push(o.frame().to_vec());
            }
        }
    }

    fn frame(&mut self, w: usize, frame: Vec<u8>, in_port: u16, queued: bool) {
        self.frames += 1;
        if queued {
            self.pending[w].push((frame, in_port));
        } else {
            self.flush(w);
            self.run(w, &[(frame, in_port)]);
        }
    }
}

/// Operations on two workers sharing state; see the module documentation.
pub fn frame_sequence(data: &[u8]) {
    let mut input = Input { data };
    let Some(header) = input.byte() else { return };
    let lab = Lab::get();
    let capacity = if header & 1 != 0 { lab::LARGE_CT } else { SMALL_CT };
    let cfg = lab::config(mode_of(header & 2 != 0), 2, capacity);
    let mut s = Sequence {
        worlds: [World::new(cfg.clone(), true), World::new(cfg, false)],
        table: lab.table(0, 1),
        hops: lab::hops(0, 1),
        generation: 1,
        hop_generation: 1,
        now: if header & 4 != 0 { u32::MAX - 10_000 } else { START_MS },
        pending: [Vec::new(), Vec::new()],
        forwarded: Vec::new(),
        frames: 0,
    };
    let mut ops = 0;
    while let Some(op) = input.byte() {
        ops += 1;
        if ops > 256 || s.frames > 1024 {
            break;
        }
        let w = usize::from(op & 1);
        match op {
            0x00..=0x3f => {
                let Some(l) = input.byte() else { break };
                let len = if l < 0xf0 {
                    usize::from(l)
                } else {
                    usize::from(l & 0x0f) << 8 | usize::from(input.byte().unwrap_or(0))
                };
                let frame = input.bytes(len).to_vec();
                s.frame(w, frame, u16::from(op >> 1 & 1), op & 0x20 != 0);
            }
            0x40..=0x5f => {
                s.flush_all();
                s.now = s.now.wrapping_add(1u32 << (op & 31));
            }
            0x60..=0x67 => {
                s.flush_all();
                s.generation += 1;
                s.table = lab.table(op & 3, s.generation);
            }
            0x68..=0x6f => {
                s.flush_all();
                s.hop_generation += 1;
                s.hops = lab::hops(op & 3, s.hop_generation);
            }
            0x70..=0x7f => {
                s.flush_all();
                let buckets = 1usize << (op >> 1 & 7);
                let [a, b] = &mut s.worlds;
                let x = a.workers[w].maintain(s.now, buckets);
                let y = b.workers[w].maintain(s.now, buckets);
                assert_eq!(x, y, "maintain expired a different number of flows with the fast path");
            }
            0x80..=0x8f => {
                s.flush_all();
                let w = usize::from(op >> 3 & 1);
                let [a, b] = &mut s.worlds;
                let x = a.workers[w].reclaim(usize::from(op & 7), s.now);
                let y = b.workers[w].reclaim(usize::from(op & 7), s.now);
                assert_eq!(x, y, "reclaim removed a different number of flows with the fast path");
            }
            0x90..=0x9f => {
                let b = input.bytes(3);
                let [f, c, g] = [0, 1, 2].map(|i| b.get(i).copied().unwrap_or(0));
                s.frame(w, template(f, c, g), 0, op & 2 != 0);
            }
            0xa0..=0xaf => {
                let b = input.bytes(2);
                let [which, g] = [0, 1].map(|i| b.get(i).copied().unwrap_or(0));
                if s.forwarded.is_empty() {
                    continue;
                }
                let fwd = &s.forwarded[usize::from(which) % s.forwarded.len()];
                let flags = [SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, SYN, 0][usize::from(g & 7)];
                let Some(mut answer) = lab::answer_to(fwd, flags) else { continue };
                if g & 0x08 != 0 {
                    // From the wrong backend port.
                    answer[lab::sport_low_byte(fwd)] ^= 0x01;
                }
                s.frame(w, answer, 1, op & 2 != 0);
            }
            0xb0..=0xff => s.flush_all(),
        }
    }
    s.flush_all();
    for world in &s.worlds {
        for (w, t) in world.workers.iter().zip(&world.tallies) {
            lab::check_counters(w.counters(), t);
        }
    }
    compare_worlds(&s.worlds[0], &s.worlds[1]);
}
