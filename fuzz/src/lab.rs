//! The in-memory lab the frame targets run in: the Services, table
//! variants and next hops (built once per process), workers with the fast
//! path on and off, and the checks every verdict must pass.
//!
//! Addresses are the dataplane's lab ones (`svcgate_dataplane::testing`),
//! all in 198.18.0.0/15 and 2001:2::/48: web, spread and keep are
//! dual-stack, so IPv6 frames meet tracked flows, the fast path and the
//! reverse table as IPv4 ones do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use svcgate_common::model::{
    BackendSpec, DesiredState, ForwardingMode, Ipv4Net, Ipv6Net, Protocol, ServiceSpec, ServiceType, SessionAffinity,
};
use svcgate_common::table::ServiceTable;
use svcgate_dataplane::nat::{Counters, DropReason, Frame, NatConfig, NextHops, PassReason, Shared, Verdict, Worker};
use svcgate_dataplane::testing::*;

/// The SNAT port range of the lab: 64 ports, 32 per worker with two
/// workers, so that port exhaustion is reachable in a short sequence.
pub const SNAT_PORTS: (u16, u16) = (32768, 32768 + 63);
/// A small flow table: pressure and eviction are reachable.
pub const SMALL_CT: usize = 64;
/// A flow table over the pipeline's cache-resident size (16 Ki slots), so
/// the batch path's read-ahead passes run.
pub const LARGE_CT: usize = 16 * 1024;
/// The clock at the start of every run (ms).
pub const START_MS: u32 = 1_000;

/// The dnat-mode Service's address.
pub const KEEP: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 17);
/// The Service that asks for snat explicitly.
pub const SNATTED: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 18);
/// The DNS Service.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 11);
/// A Service without endpoints (TCP 80, UDP 81).
pub const EMPTY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 12);
/// A Service with ten backends (TCP and UDP 80).
pub const SPREAD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 13);
/// A ClientIP-affinity Service (TCP 80).
pub const STICKY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 14);
/// A Service with a ready and a terminating backend (TCP and UDP 80).
pub const DRAIN_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 15);
/// A Service whose backend has no known MAC.
pub const UNRESOLVED_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 16);
/// spread's IPv6 clusterIP.
pub const SPREAD_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0, 0x13);
/// keep's IPv6 clusterIP.
pub const KEEP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0, 0x17);
/// A second IPv6 client on the clients' link.
pub const CLIENT6_2: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x11);

/// The Services of table variant `v` (0-3). 0 and 3 are the same Services
/// (3 is a rebuild, as after an unrelated change); 1 removes and moves
/// backends under live flows; 2 drops Services and leaves only terminating
/// endpoints where there were ready ones.
pub fn desired(v: u8) -> DesiredState {
    let web_backends = if v == 1 { vec![] } else { vec![ready(0, 80), ready6(0, 80)] };
    let spread: Vec<BackendSpec> =
        (2..12).filter(|i| v != 1 || *i % 3 != 0).flat_map(|i| [ready(i, 80), ready6(i, 80)]).collect();
    let drain =
        if v == 2 { vec![terminating(16, 80), terminating(17, 80)] } else { vec![ready(16, 80), terminating(17, 80)] };
    let keep_backend = if v == 1 { 23 } else { 20 };
    let web = ServiceSpec {
        service_type: ServiceType::LoadBalancer,
        cluster_ips: vec![CLUSTER_IP.into(), CLUSTER_IP6.into()],
        external_ips: vec![EXTERNAL_IP.into()],
        load_balancer_ips: vec![LB_IP.into(), LB_IP6.into()],
        source_ranges: vec![
            "198.18.1.0/24".parse::<Ipv4Net>().expect("a CIDR").into(),
            "2001:2:0:1::/64".parse::<Ipv6Net>().expect("a CIDR").into(),
        ],
        ..svc("web", Some(CLUSTER_IP), vec![port("http", Protocol::Tcp, 8080, Some(30120), web_backends)])
    };
    let sticky = ServiceSpec {
        affinity: SessionAffinity::ClientIp { timeout_secs: 10800 },
        ..svc(
            "sticky",
            Some(STICKY_IP),
            vec![port("", Protocol::Tcp, 80, None, (12..16).map(|i| ready(i, 80)).collect())],
        )
    };
    let keep = ServiceSpec {
        forwarding: Some(ForwardingMode::Dnat),
        cluster_ips: vec![KEEP.into(), KEEP6.into()],
        ..svc(
            "keep",
            Some(KEEP),
            vec![
                port("t", Protocol::Tcp, 80, None, vec![ready(keep_backend, 80), ready6(keep_backend, 80)]),
                port("u", Protocol::Udp, 81, None, vec![ready(keep_backend, 81), ready6(keep_backend, 81)]),
            ],
        )
    };
    let snatted = ServiceSpec {
        forwarding: Some(ForwardingMode::Snat),
        ..svc(
            "snatted",
            Some(SNATTED),
            vec![port("https", Protocol::Tcp, 443, None, vec![ready(21, 8443), ready(22, 8443)])],
        )
    };
    let mut services = vec![
        web,
        svc("dns", Some(DNS_IP), vec![port("dns", Protocol::Udp, 53, None, vec![ready(1, 5353)])]),
        svc(
            "empty",
            Some(EMPTY_IP),
            vec![port("t", Protocol::Tcp, 80, None, vec![]), port("u", Protocol::Udp, 81, None, vec![])],
        ),
        ServiceSpec {
            cluster_ips: vec![SPREAD_IP.into(), SPREAD_IP6.into()],
            ..svc(
                "spread",
                Some(SPREAD_IP),
                vec![port("t", Protocol::Tcp, 80, None, spread.clone()), port("u", Protocol::Udp, 80, None, spread)],
            )
        },
        sticky,
        svc(
            "drain",
            Some(DRAIN_IP),
            vec![port("t", Protocol::Tcp, 80, None, drain.clone()), port("u", Protocol::Udp, 80, None, drain)],
        ),
        svc(
            "unresolved",
            Some(UNRESOLVED_IP),
            vec![port("", Protocol::Tcp, 80, None, vec![BackendSpec { addr: UNRESOLVED_POD.into(), ..ready(0, 80) }])],
        ),
        keep,
        snatted,
    ];
    if v == 2 {
        services.retain(|s| s.name != "web" && s.name != "keep");
    }
    DesiredState { node_ips: vec![NODE_IP.into(), NODE_IP6.into()], services }
}

/// The next hops of variant `v` (0-3): 0 is the lab's; 1 forgets backend
/// 0's and the client's MACs; 2 drops the route to the far clients; 3 is 0
/// again (a new generation with the same content).
pub fn hops(v: u8, generation: u32) -> NextHops {
    let mut h = next_hops(generation);
    if v == 1 || v == 2 {
        // Rebuild without some entries: start from the ports only.
        let ports = h.ports().to_vec();
        h = NextHops::new(generation, ports);
        if v == 1 {
            h.add_route("198.18.64.0/18".parse().expect("a CIDR"), ROUTER);
            h.add_route("2001:2:0:40::/64".parse().expect("a CIDR"), ROUTER6);
        }
        h.add_neighbour(0, CLIENT2, [0x02, 0, 0, 0, 0x01, 0x0b]);
        h.add_neighbour(0, ROUTER, ROUTER_MAC);
        h.add_neighbour(0, ROUTER6, ROUTER_MAC);
        if v == 2 {
            h.add_neighbour(0, CLIENT, CLIENT_MAC);
            h.add_neighbour(0, CLIENT6, CLIENT_MAC);
        }
        for i in 0..BACKENDS {
            if v == 2 || i != 0 {
                h.add_neighbour(1, backend(i), backend_mac(i));
                h.add_neighbour(1, backend6(i), backend_mac(i));
            }
        }
    }
    // The second IPv6 client, as CLIENT2 is IPv4's: known in every variant.
    h.add_neighbour(0, CLIENT6_2, [0x02, 0, 0, 0, 0x01, 0x0b]);
    h
}

/// What is built once per process.
#[derive(Debug)]
pub struct Lab {
    /// Table variants 0-3 (generation 1; a run republishes them with its own
    /// increasing generations).
    pub tables: Vec<ServiceTable>,
}

impl Lab {
    /// The process's lab.
    pub fn get() -> &'static Lab {
        static LAB: OnceLock<Lab> = OnceLock::new();
        LAB.get_or_init(|| Lab {
            tables: (0..4)
                .map(|v| {
                    let (t, warnings) = ServiceTable::build(&desired(v), 1);
                    assert!(warnings.is_empty(), "{warnings:?}");
                    t
                })
                .collect(),
        })
    }

    /// Variant `v` published as generation `generation`.
    pub fn table(&self, v: u8, generation: u64) -> ServiceTable {
        self.tables[usize::from(v & 3)].with_entries_replaced(generation, Default::default())
    }
}

/// The NAT configuration of a run.
pub fn config(mode: ForwardingMode, workers: u16, conntrack_capacity: usize) -> NatConfig {
    NatConfig {
        mode,
        snat_ports: SNAT_PORTS,
        affinity_slots: 64,
        // Fixed: a crash must replay with the same table layout (the daemon
        // draws its seeds at random).
        hash_seeds: Some([0x636f_6e6e_ffff_ffff, 0x7472_6b31_9e37_795b]),
        ..nat_config(workers, conntrack_capacity)
    }
}

/// Workers sharing one reverse table.
#[derive(Debug)]
pub struct World {
    /// The workers (index = RX queue).
    pub workers: Vec<Worker>,
    /// The verdicts each worker returned, counted here.
    pub tallies: Vec<Tally>,
}

/// Verdicts counted by the harness, to hold the worker's counters against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Frames.
    pub frames: u64,
    /// `Forward` verdicts.
    pub forwarded: u64,
    /// `Reply` verdicts.
    pub replied: u64,
    /// `Pass` verdicts by reason.
    pub pass: [u64; PassReason::COUNT],
    /// `Drop` verdicts by reason.
    pub drop: [u64; DropReason::COUNT],
}

impl Tally {
    fn count(&mut self, v: Verdict) {
        self.frames += 1;
        match v {
            Verdict::Forward { .. } => self.forwarded += 1,
            Verdict::Reply { .. } => self.replied += 1,
            Verdict::Pass(r) => self.pass[r as usize] += 1,
            Verdict::Drop(r) => self.drop[r as usize] += 1,
        }
    }
}

/// One frame's result: its verdict and the whole buffer after processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// `Frame::len` after processing.
    pub len: usize,
    /// The buffer after processing.
    pub buf: Vec<u8>,
}

impl Outcome {
    /// The frame to transmit (forwarded or reply) or hand on.
    pub fn frame(&self) -> &[u8] {
        match self.verdict {
            Verdict::Reply { len } => &self.buf[..usize::from(len).min(self.buf.len())],
            _ => &self.buf[..self.len.min(self.buf.len())],
        }
    }
}

impl World {
    /// `workers` workers with the fast path on or off.
    pub fn new(cfg: NatConfig, fast_path: bool) -> Self {
        let workers = cfg.workers;
        let shared = Shared::new(cfg).expect("the lab's SNAT configuration is valid");
        let workers: Vec<Worker> = (0..workers)
            .map(|i| {
                let mut w = Worker::new(i, Arc::clone(&shared));
                w.set_fast_path(fast_path);
                w
            })
            .collect();
        let tallies = vec![Tally::default(); workers.len()];
        Self { workers, tallies }
    }

    /// Runs `frames` ((bytes, ingress port)) as one batch through worker
    /// `w`, each in a buffer of `cap` bytes (at least its length).
    pub fn run(
        &mut self,
        w: usize,
        table: &ServiceTable,
        hops: &NextHops,
        frames: &[(Vec<u8>, u16)],
        cap: usize,
        now: u32,
    ) -> Vec<Outcome> {
        let mut bufs: Vec<Vec<u8>> = frames
            .iter()
            .map(|(f, _)| {
                let mut b = vec![0u8; cap.max(f.len())];
                b[..f.len()].copy_from_slice(f);
                b
            })
            .collect();
        let mut batch: Vec<Frame<'_>> =
            bufs.iter_mut().zip(frames).map(|(b, (f, port))| Frame::new(b, f.len(), *port)).collect();
        self.workers[w].process_batch(table, hops, &mut batch, now);
        let verdicts: Vec<(Verdict, usize)> = batch.iter().map(|f| (f.verdict, f.len)).collect();
        drop(batch);
        let out: Vec<Outcome> =
            verdicts.into_iter().zip(bufs).map(|((verdict, len), buf)| Outcome { verdict, len, buf }).collect();
        for ((input, _), o) in frames.iter().zip(&out) {
            check_outcome(input, o, hops);
            self.tallies[w].count(o.verdict);
        }
        check_counters(self.workers[w].counters(), &self.tallies[w]);
        out
    }
}

/// Every frame received ends in exactly one verdict, and the worker's
/// counters are the verdicts it returned. (A RST for a flow whose backend
/// is gone is counted both as a reply and as a `backend_gone` drop.)
pub fn check_counters(c: &Counters, t: &Tally) {
    assert_eq!(c.rx, t.frames, "frames received: {c:?}");
    assert_eq!((c.forwarded, c.replied, c.pass), (t.forwarded, t.replied, t.pass), "verdict counters: {c:?} {t:?}");
    for r in DropReason::ALL {
        let (counted, seen) = (c.drop[*r as usize], t.drop[*r as usize]);
        if *r == DropReason::BackendGone {
            assert!(counted >= seen && counted - seen <= t.replied, "backend_gone counter: {c:?} {t:?}");
        } else {
            assert_eq!(counted, seen, "{} drops: {c:?} {t:?}", r.as_str());
        }
    }
}

/// The Internet checksum of `b` folded (0xffff when `b` holds a valid
/// checksum field).
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u64;
    for p in parts {
        let mut it = p.chunks_exact(2);
        for w in &mut it {
            sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [x] = it.remainder() {
            sum += u64::from(*x) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The IPv4 packet of a frame (one optional 802.1Q tag), if its header is
/// whole and its total length fits the frame.
#[derive(Debug, Clone, Copy)]
pub struct Ip<'a> {
    /// The IPv4 header.
    pub header: &'a [u8],
    /// The payload (to the total length; Ethernet padding excluded).
    pub payload: &'a [u8],
}

impl<'a> Ip<'a> {
    /// Parses the frame's IPv4 part.
    pub fn of(frame: &'a [u8]) -> Option<Self> {
        let l3 = match frame.get(12..14)? {
            [0x08, 0x00] => 14,
            [0x81, 0x00] if frame.get(16..18)? == [0x08, 0x00] => 18,
            _ => return None,
        };
        let ip = frame.get(l3..)?;
        let (v, ihl) = (ip.first()? >> 4, usize::from(ip.first()? & 0x0f) * 4);
        let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
        if v != 4 || ihl < 20 || total < ihl || total > ip.len() {
            return None;
        }
        Some(Self { header: &ip[..ihl], payload: &ip[ihl..total] })
    }

    /// Whether the header checksum is valid.
    pub fn header_ok(&self) -> bool {
        ones_sum(&[self.header]) == 0xffff
    }

    /// A fragment (MF set or an offset).
    pub fn is_fragment(&self) -> bool {
        u16::from_be_bytes([self.header[6], self.header[7]]) & 0x3fff != 0
    }

    /// Protocol.
    pub fn proto(&self) -> u8 {
        self.header[9]
    }

    /// TTL.
    pub fn ttl(&self) -> u8 {
        self.header[8]
    }

    /// The L4 checksum field, for TCP and UDP with a whole header.
    pub fn l4_checksum(&self) -> Option<u16> {
        let at = match self.proto() {
            6 if self.payload.len() >= 20 => 16,
            17 if self.payload.len() >= 8 => 6,
            _ => return None,
        };
        Some(u16::from_be_bytes([self.payload[at], self.payload[at + 1]]))
    }

    /// Whether the TCP/UDP checksum (with the pseudo-header) is valid; None
    /// for other protocols or a short L4 header.
    pub fn l4_ok(&self) -> Option<bool> {
        self.l4_checksum()?;
        let len = (self.payload.len() as u16).to_be_bytes();
        let pseudo = [0, self.proto(), len[0], len[1]];
        Some(ones_sum(&[&self.header[12..20], &pseudo, self.payload]) == 0xffff)
    }

    /// Whether an ICMP message's checksum is valid.
    pub fn icmp_ok(&self) -> bool {
        ones_sum(&[self.payload]) == 0xffff
    }
}

/// The IPv6 packet of a frame (one optional 802.1Q tag), if its fixed
/// header is whole and its payload length fits the frame; extension
/// headers (hop-by-hop, routing, fragment, destination options, at most 8)
/// walked to the upper layer.
#[derive(Debug, Clone, Copy)]
pub struct Ip6<'a> {
    /// The fixed header.
    pub header: &'a [u8],
    /// The upper-layer protocol and its bytes (after the extension headers;
    /// `None` when the walk failed or a fragment header was met).
    pub upper: Option<(u8, &'a [u8])>,
}

impl<'a> Ip6<'a> {
    /// Parses the frame's IPv6 part.
    pub fn of(frame: &'a [u8]) -> Option<Self> {
        let l3 = match frame.get(12..14)? {
            [0x86, 0xdd] => 14,
            [0x81, 0x00] if frame.get(16..18)? == [0x86, 0xdd] => 18,
            _ => return None,
        };
        let ip = frame.get(l3..)?;
        let plen = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
        if ip.first()? >> 4 != 6 || ip.len() < 40 + plen {
            return None;
        }
        let (mut nh, mut rest) = (ip[6], &ip[40..40 + plen]);
        let mut upper = None;
        for _ in 0..8 {
            match nh {
                0 | 43 | 60 => {
                    let len = (usize::from(*rest.get(1).unwrap_or(&255)) + 1) * 8;
                    let Some(next) = rest.first().copied().filter(|_| rest.len() >= len) else { break };
                    (nh, rest) = (next, &rest[len..]);
                }
                44 => break,
                _ => {
                    upper = Some((nh, rest));
                    break;
                }
            }
        }
        Some(Self { header: &ip[..40], upper })
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.header[7]
    }

    /// The upper-layer checksum field at `at`, for TCP (16), UDP (6) and
    /// ICMPv6 (2) with a whole header.
    pub fn l4_checksum(&self) -> Option<u16> {
        let (nh, p) = self.upper?;
        let at = match nh {
            6 if p.len() >= 20 => 16,
            17 if p.len() >= 8 => 6,
            58 if p.len() >= 4 => 2,
            _ => return None,
        };
        Some(u16::from_be_bytes([p[at], p[at + 1]]))
    }

    /// Whether the TCP/UDP/ICMPv6 checksum (with the IPv6 pseudo-header) is
    /// valid; None for other protocols or a short header.
    pub fn l4_ok(&self) -> Option<bool> {
        self.l4_checksum()?;
        let (nh, p) = self.upper?;
        let len = (p.len() as u32).to_be_bytes();
        Some(ones_sum(&[&self.header[8..40], &len, &[0, 0, 0, nh], p]) == 0xffff)
    }
}

/// The checks on one frame's result against its input:
///
/// - a forwarded frame keeps its length, leaves on a known port, has its
///   TTL decremented, and keeps valid IPv4 and TCP/UDP checksums valid (the
///   incremental updates of RFC 1624); a UDP checksum of zero (none) stays
///   zero and a present one never becomes zero;
/// - a reply (TCP RST, ICMP error) fits its buffer and carries valid
///   checksums;
/// - a frame passed to the kernel is unchanged.
pub fn check_outcome(input: &[u8], o: &Outcome, hops: &NextHops) {
    if Ip::of(input).is_none() {
        if let Some(i) = Ip6::of(input) {
            return check_outcome6(input, &i, o, hops);
        }
    }
    match o.verdict {
        Verdict::Forward { port } => {
            assert!(usize::from(port) < hops.ports().len(), "forwarded to unknown port {port}");
            assert_eq!(o.len, input.len(), "a forwarded frame changed length");
            let (Some(i), Some(out)) = (Ip::of(input), Ip::of(o.frame())) else {
                panic!("forwarded a frame without a whole IPv4 header: {input:02x?}");
            };
            assert_eq!(out.ttl(), i.ttl().wrapping_sub(1), "TTL not decremented by one");
            assert!(i.ttl() > 1, "forwarded a frame whose TTL expires here");
            if i.header_ok() {
                assert!(
                    out.header_ok(),
                    "IPv4 header checksum broken by the rewrite: {input:02x?} -> {:02x?}",
                    o.frame()
                );
            }
            if i.proto() == 17 && i.l4_checksum() == Some(0) {
                assert_eq!(out.l4_checksum(), Some(0), "UDP without checksum got one");
            } else if i.l4_ok() == Some(true) && !i.is_fragment() {
                assert_eq!(
                    out.l4_ok(),
                    Some(true),
                    "L4 checksum broken by the rewrite: {input:02x?} -> {:02x?}",
                    o.frame()
                );
                if i.proto() == 17 {
                    assert_ne!(out.l4_checksum(), Some(0), "a UDP checksum became 0 (= none)");
                }
            }
        }
        Verdict::Reply { len } => {
            assert!(usize::from(len) <= o.buf.len(), "reply longer than its buffer");
            let Some(out) = Ip::of(o.frame()) else { panic!("a reply without an IPv4 header: {:02x?}", o.frame()) };
            assert!(out.header_ok(), "reply with a bad IPv4 checksum: {:02x?}", o.frame());
            match out.proto() {
                1 => assert!(out.icmp_ok(), "ICMP reply with a bad checksum: {:02x?}", o.frame()),
                6 => assert_eq!(out.l4_ok(), Some(true), "RST with a bad checksum: {:02x?}", o.frame()),
                p => panic!("reply of protocol {p}"),
            }
        }
        Verdict::Pass(_) => {
            assert_eq!(&o.buf[..input.len()], input, "a frame passed to the kernel was changed ({:?})", o.verdict);
        }
        Verdict::Drop(_) => {}
    }
}

/// [`check_outcome`] for an IPv6 input: the same rules, with the hop limit
/// for the TTL, no header checksum, a UDP checksum of 0 never forwarded
/// (invalid over IPv6), and replies that are a TCP RST or an ICMPv6 error
/// with valid checksums.
fn check_outcome6(input: &[u8], i: &Ip6<'_>, o: &Outcome, hops: &NextHops) {
    match o.verdict {
        Verdict::Forward { port } => {
            assert!(usize::from(port) < hops.ports().len(), "forwarded to unknown port {port}");
            assert_eq!(o.len, input.len(), "a forwarded frame changed length");
            let Some(out) = Ip6::of(o.frame()) else {
                panic!("forwarded an IPv6 frame into one without a whole IPv6 header: {:02x?}", o.frame());
            };
            assert_eq!(out.hop_limit(), i.hop_limit().wrapping_sub(1), "hop limit not decremented by one");
            assert!(i.hop_limit() > 1, "forwarded a frame whose hop limit expires here");
            let udp = matches!(i.upper, Some((17, _)));
            assert!(!(udp && i.l4_checksum() == Some(0)), "forwarded IPv6 UDP without a checksum");
            if i.l4_ok() == Some(true) {
                assert_eq!(
                    out.l4_ok(),
                    Some(true),
                    "L4 checksum broken by the IPv6 rewrite: {input:02x?} -> {:02x?}",
                    o.frame()
                );
                if udp {
                    assert_ne!(out.l4_checksum(), Some(0), "an IPv6 UDP checksum became 0");
                }
            }
        }
        Verdict::Reply { len } => {
            assert!(usize::from(len) <= o.buf.len(), "reply longer than its buffer");
            assert!(usize::from(len) <= 14 + 4 + 1280, "an IPv6 reply over the minimum MTU");
            let Some(out) = Ip6::of(o.frame()) else { panic!("a reply without an IPv6 header: {:02x?}", o.frame()) };
            match out.upper {
                Some((6 | 58, _)) => {
                    assert_eq!(out.l4_ok(), Some(true), "IPv6 reply with a bad checksum: {:02x?}", o.frame())
                }
                u => panic!("IPv6 reply of protocol {:?}", u.map(|(p, _)| p)),
            }
        }
        Verdict::Pass(_) => {
            assert_eq!(&o.buf[..input.len()], input, "a frame passed to the kernel was changed ({:?})", o.verdict);
        }
        Verdict::Drop(_) => {}
    }
}

/// The 5-tuple of an untagged TCP/UDP frame, IPv4 without options or IPv6
/// without extension headers: (src, dst, sport, dport, proto).
pub fn tuple(frame: &[u8]) -> Option<(IpAddr, IpAddr, u16, u16, u8)> {
    let p = |i: usize| u16::from_be_bytes([frame[i], frame[i + 1]]);
    if frame.len() >= 38 && frame[12..14] == [0x08, 0x00] && frame[14] == 0x45 {
        let a = |i: usize| IpAddr::from([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
        return Some((a(26), a(30), p(34), p(36), frame[23]));
    }
    if frame.len() >= 58 && frame[12..14] == [0x86, 0xdd] && matches!(frame[20], 6 | 17) {
        let a = |i: usize| IpAddr::from(<[u8; 16]>::try_from(&frame[i..i + 16]).unwrap_or_default());
        return Some((a(22), a(38), p(54), p(56), frame[20]));
    }
    None
}

/// Where the source port's low byte is in an answer built by [`answer_to`].
pub fn sport_low_byte(frame: &[u8]) -> usize {
    if frame.get(12..14) == Some(&[0x86, 0xdd]) {
        55
    } else {
        35
    }
}

/// The backend's answer to a frame the gateway forwarded to it: addresses
/// and ports swapped, from the backend's MAC to the gateway's Pod side, with
/// TCP `flags`.
pub fn answer_to(forwarded: &[u8], flags: u8) -> Option<Vec<u8>> {
    let (src, dst, sport, dport, proto) = tuple(forwarded)?;
    let mac: [u8; 6] = forwarded[0..6].try_into().ok()?;
    let l4 = if proto == 6 {
        L4::Tcp { sport: dport, dport: sport, seq: 5000, ack: 1001, flags }
    } else {
        udp(dport, sport)
    };
    Some(match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            Pkt { src_mac: mac, dst_mac: GW_POD_MAC, ..Pkt::new(dst, src, l4) }.build()
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            Pkt { src_mac: mac, dst_mac: GW_POD_MAC, ..Pkt::new(dst, src, l4) }.build()
        }
        _ => return None,
    })
}
