//! The hook on frames built by etherparse; responses checked by etherparse
//! (checksums) and at the DNS message's fixed offsets.

use std::net::Ipv4Addr;

use etherparse::{SlicedPacket, TransportSlice};
use proptest::prelude::*;
use svcgate_dns::{DnsConfig, DnsService, DnsTable, DnsView, Protocol, SlowReason};

use super::*;
use crate::testing::{tcp, udp, Pkt, CLIENT, CLIENT_MAC, CLUSTER_IP, GW_CLIENT_MAC};

const DNS: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 53);

fn table(addresses: &[Ipv4Addr]) -> DnsTable {
    let view = DnsView {
        services: vec![DnsService::cluster_ip("default", "nginx", CLUSTER_IP).with_port("http", Protocol::Tcp, 8080)],
    };
    let config = DnsConfig { nameservers: addresses.iter().map(|a| (*a).into()).collect(), ..DnsConfig::default() };
    DnsTable::build(&view, &config)
}

/// A query for `name` (dotted, no trailing dot) of type `qtype`, ID 0x1234, RD.
fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0]);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

fn frame(dst: Ipv4Addr, l4: crate::testing::L4, payload: Vec<u8>) -> Vec<u8> {
    let mut p = Pkt::new(CLIENT, dst, l4);
    p.payload = payload;
    let mut f = p.build();
    f.resize(4096, 0); // a UMEM chunk: room for the response
    f
}

fn len_of(dst: Ipv4Addr, l4: crate::testing::L4, payload: &[u8]) -> usize {
    let mut p = Pkt::new(CLIENT, dst, l4);
    p.payload = payload.to_vec();
    p.build().len()
}

/// Runs one frame through `split_batch`; returns the verdict, the frame's
/// bytes and whether the NAT saw it.
fn run(t: &DnsTable, mut buf: Vec<u8>, len: usize, c: &mut DnsCounters) -> (Verdict, Vec<u8>, bool) {
    let mut nat_saw = false;
    let mut frames = [Frame::new(&mut buf, len, 0)];
    split_batch(t, &mut frames, c, |run| {
        nat_saw = true;
        for f in run {
            f.verdict = Verdict::Forward { port: 1 };
        }
    });
    let (v, l) = (frames[0].verdict, frames[0].len);
    buf.truncate(l);
    (v, buf, nat_saw)
}

#[test]
fn a_query_is_answered_in_its_frame() {
    let t = table(&[DNS]);
    let q = query("Nginx.default.svc.cluster.local", 1);
    let len = len_of(DNS, udp(40000, 53), &q);
    let mut c = DnsCounters::default();
    let (v, out, nat_saw) = run(&t, frame(DNS, udp(40000, 53), q.clone()), len, &mut c);
    assert!(!nat_saw);
    assert_eq!(v, Verdict::Reply { len: out.len() as u16 });
    assert_eq!(c.answered, 1);

    let p = SlicedPacket::from_ethernet(&out).unwrap();
    let eth = p.link.unwrap().to_header().unwrap();
    let eth = eth.ethernet2().unwrap();
    assert_eq!((eth.source, eth.destination), (GW_CLIENT_MAC, CLIENT_MAC));
    let etherparse::NetSlice::Ipv4(ip) = p.net.unwrap() else { panic!("not IPv4") };
    let iph = ip.header().to_header();
    assert_eq!((iph.source, iph.destination), (DNS.octets(), CLIENT.octets()));
    assert_eq!(iph.header_checksum, iph.calc_header_checksum(), "IPv4 header checksum");
    assert_eq!(usize::from(iph.total_len), out.len() - 14);
    let TransportSlice::Udp(u) = p.transport.unwrap() else { panic!("not UDP") };
    assert_eq!((u.source_port(), u.destination_port()), (53, 40000));
    let uh = u.to_header();
    let payload = u.payload();
    assert_eq!(uh.checksum, uh.calc_checksum_ipv4(&iph, payload).unwrap(), "UDP checksum");
    assert_ne!(uh.checksum, 0);
    // The DNS response: ID, QR AA RD, NOERROR, one answer, the question as
    // sent (letter case kept), and the ClusterIP as the answer's RDATA.
    assert_eq!(&payload[..4], [0x12, 0x34, 0x85, 0x00]);
    assert_eq!(&payload[6..8], [0, 1]);
    assert_eq!(&payload[12..q.len()], &q[12..]);
    assert_eq!(&payload[payload.len() - 4..], CLUSTER_IP.octets());
}

#[test]
fn other_frames_reach_the_nat_in_order_around_queries() {
    let t = table(&[DNS]);
    let q = query("nginx.default.svc.cluster.local", 1);
    let dns_len = len_of(DNS, udp(40000, 53), &q);
    let other = |dst, l4| (frame(dst, l4, b"svcgate".to_vec()), len_of(dst, l4, b"svcgate"));
    let mut bufs = [
        other(CLUSTER_IP, tcp(40000, 8080, 0x02)),
        (frame(DNS, udp(40001, 53), q.clone()), dns_len),
        other(CLUSTER_IP, udp(40002, 8080)),
        other(DNS, tcp(40003, 53, 0x02)), // TCP/53: the kernel's, via the NAT's pass
        (frame(DNS, udp(40004, 53), q.clone()), dns_len),
    ];
    let mut frames: Vec<Frame<'_>> = bufs.iter_mut().map(|(b, l)| Frame::new(b, *l, 0)).collect();
    let mut runs = Vec::new();
    let mut c = DnsCounters::default();
    split_batch(&t, &mut frames, &mut c, |run| {
        runs.push(run.len());
        for f in run {
            f.verdict = Verdict::Forward { port: 1 };
        }
    });
    assert_eq!(runs, [1, 2]);
    let kinds: Vec<bool> = frames.iter().map(|f| matches!(f.verdict, Verdict::Reply { .. })).collect();
    assert_eq!(kinds, [false, true, false, false, true]);
    assert_eq!(c.answered, 2);
}

#[test]
fn without_addresses_nothing_is_looked_at() {
    let t = table(&[]);
    let q = query("nginx.default.svc.cluster.local", 1);
    let len = len_of(DNS, udp(40000, 53), &q);
    let mut c = DnsCounters::default();
    let (v, _, nat_saw) = run(&t, frame(DNS, udp(40000, 53), q), len, &mut c);
    assert!(nat_saw);
    assert_eq!(v, Verdict::Forward { port: 1 });
    assert_eq!(c, DnsCounters::default());
}

#[test]
fn only_udp_53_to_a_dns_address_untagged_is_matched() {
    let addrs = [DNS];
    let q = query("nginx.default.svc.cluster.local", 1);
    let matched = |dst, l4, vlan: Option<u16>| {
        let mut p = Pkt::new(CLIENT, dst, l4);
        p.payload = q.clone();
        p.vlan = vlan;
        let f = p.build();
        is_query(&f, f.len(), &addrs)
    };
    assert!(matched(DNS, udp(40000, 53), None));
    assert!(!matched(DNS, tcp(40000, 53, 0x02), None));
    assert!(!matched(DNS, udp(40000, 54), None));
    assert!(!matched(CLUSTER_IP, udp(40000, 53), None));
    assert!(!matched(DNS, udp(40000, 53), Some(7)));
    // Too short for the headers: not a query, not a panic.
    let f = frame(DNS, udp(40000, 53), q.clone());
    assert!(!is_query(&f, 41, &addrs));
    assert!(!is_query(&f[..20], 60, &addrs));
}

#[test]
fn slow_queries_go_to_the_kernel_unchanged() {
    let t = table(&[DNS]);
    let mut c = DnsCounters::default();
    // ANY, and a name outside the zone.
    for (name, qtype, reason) in
        [("nginx.default.svc.cluster.local", 255, SlowReason::QueryType), ("example.org", 1, SlowReason::OutOfZone)]
    {
        let q = query(name, qtype);
        let len = len_of(DNS, udp(40000, 53), &q);
        let f = frame(DNS, udp(40000, 53), q);
        let (v, out, nat_saw) = run(&t, f.clone(), len, &mut c);
        assert!(!nat_saw);
        assert_eq!(v, Verdict::Pass(PassReason::DnsSlow));
        assert_eq!(out, f[..len], "{name}: frame unchanged");
        assert_eq!(c.slow[reason as usize], 1, "{name}");
    }
    assert_eq!(c.answered, 0);
}

#[test]
fn responses_and_bad_frames_are_counted_drops() {
    let t = table(&[DNS]);
    let mut c = DnsCounters::default();
    // A response (QR set) is not answered: no loops between responders.
    let mut r = query("nginx.default.svc.cluster.local", 1);
    r[2] |= 0x80;
    let len = len_of(DNS, udp(40000, 53), &r);
    let (v, _, _) = run(&t, frame(DNS, udp(40000, 53), r), len, &mut c);
    assert_eq!(v, Verdict::Drop(DropReason::DnsQuery));
    assert_eq!(c.dropped[svcgate_dns::DropReason::NotQuery as usize], 1);

    // A wrong UDP checksum.
    let q = query("nginx.default.svc.cluster.local", 1);
    let len = len_of(DNS, udp(40000, 53), &q);
    let mut f = frame(DNS, udp(40000, 53), q.clone());
    f[40] ^= 0x01;
    let (v, _, _) = run(&t, f, len, &mut c);
    assert_eq!(v, Verdict::Drop(DropReason::DnsQuery));
    // A wrong IPv4 header checksum.
    let mut f = frame(DNS, udp(40000, 53), q.clone());
    f[24] ^= 0x01;
    let (v, _, _) = run(&t, f, len, &mut c);
    assert_eq!(v, Verdict::Drop(DropReason::DnsQuery));
    // An IPv4 total length past the frame.
    let mut f = frame(DNS, udp(40000, 53), q);
    f[17] = f[17].wrapping_add(40);
    let (v, _, _) = run(&t, f, len, &mut c);
    assert_eq!(v, Verdict::Drop(DropReason::DnsQuery));
    assert_eq!(c.bad_frame, 3);
    assert_eq!(c.answered, 0);
}

proptest! {
    /// Any payload to the DNS address: a verdict, never a panic; a response
    /// carries valid checksums and fits the frame.
    #[test]
    fn any_payload_gets_a_verdict(payload in proptest::collection::vec(any::<u8>(), 0..600), sport in 1u16..) {
        let t = table(&[DNS]);
        let len = len_of(DNS, udp(sport, 53), &payload);
        let mut c = DnsCounters::default();
        let (v, out, nat_saw) = run(&t, frame(DNS, udp(sport, 53), payload), len, &mut c);
        prop_assert!(!nat_saw);
        match v {
            Verdict::Reply { len } => {
                prop_assert_eq!(usize::from(len), out.len());
                let p = SlicedPacket::from_ethernet(&out).unwrap();
                let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!("not IPv4") };
                let iph = ip.header().to_header();
                prop_assert_eq!(iph.header_checksum, iph.calc_header_checksum());
                let Some(TransportSlice::Udp(u)) = p.transport else { panic!("not UDP") };
                prop_assert_eq!(u.to_header().checksum, u.to_header().calc_checksum_ipv4(&iph, u.payload()).unwrap());
            }
            Verdict::Pass(PassReason::DnsSlow) | Verdict::Drop(DropReason::DnsQuery) => {}
            other => prop_assert!(false, "unexpected verdict {:?}", other),
        }
    }
}
