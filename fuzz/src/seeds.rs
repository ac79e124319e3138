//! The seed corpus: small valid inputs of each target, built from the
//! dataplane's fixture helpers (frames), the repository's example and test
//! manifests, hickory-proto (DNS queries) and the generator's own frame
//! builder (stamps). `svcgate-fuzz-seeds` writes them to `fuzz/corpus/`;
//! the replay test runs both the files and these.

use std::path::Path;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use svcgate_dataplane::pktgen::flows::Flow;
use svcgate_dataplane::pktgen::frame::{FrameBuilder, Proto, Stamp};
use svcgate_dataplane::testing::*;
use svcgate_dataplane::wire::tcp::flags::{ACK, FIN, PSH, RST, SYN};

use crate::lab::{self, Lab, World, DNS_IP, EMPTY_IP, KEEP, SNATTED, SPREAD_IP, START_MS, UNRESOLVED_IP};
use crate::targets::frames::{setup, template};

/// One seed: target, file name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every seed of every target.
pub fn all(repo: &Path) -> Vec<Seed> {
    let mut v = Vec::new();
    v.extend(frame_pipeline().into_iter().map(|(n, b)| ("frame_pipeline", n, b)));
    v.extend(frame_sequence().into_iter().map(|(n, b)| ("frame_sequence", n, b)));
    v.extend(manifests(repo).into_iter().map(|(n, b)| ("manifest", n, b)));
    v.extend(dns_queries().into_iter().map(|(n, b)| ("dns_query", n, b)));
    v.extend(stamps().into_iter().map(|(n, b)| ("pktgen_stamp", n, b)));
    v
}

/// Adds `n` bytes of IPv4 options (NOPs) to an untagged frame, with the
/// header checksum fixed.
fn with_options(mut f: Vec<u8>, n: usize) -> Vec<u8> {
    f.splice(34..34, std::iter::repeat_n(1u8, n));
    f[14] = 0x45 + (n / 4) as u8;
    let total = u16::from_be_bytes([f[16], f[17]]) + n as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(&mut f);
    f
}

fn fix_ip_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    f[24..26].copy_from_slice(&[0, 0]);
    let mut sum = 0u32;
    for w in f[14..14 + ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Frames for `frame_pipeline` (without the control byte): new flows to
/// every frontend kind, packets of the setup's flows (the fast path's
/// cases), the backends' answers to them, and what goes to the kernel or is
/// dropped.
fn frames(dnat: bool) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, f: Vec<u8>| v.push((name.to_owned(), f));
    let syn = Pkt::new(CLIENT, CLUSTER_IP, tcp(41000, 8080, SYN));
    add("syn-clusterip", syn.build());
    add("syn-nodeport", Pkt::new(CLIENT, NODE_IP, tcp(41000, 30120, SYN)).build());
    add("syn-lb", Pkt::new(CLIENT, LB_IP, tcp(41000, 8080, SYN)).build());
    add("syn-external", Pkt::new(CLIENT, EXTERNAL_IP, tcp(41000, 8080, SYN)).build());
    add("syn-source-range", Pkt { src_mac: ROUTER_MAC, ..Pkt::new(FAR_CLIENT, LB_IP, tcp(41000, 8080, SYN)) }.build());
    add("syn-no-endpoints", Pkt::new(CLIENT, EMPTY_IP, tcp(41000, 80, SYN)).build());
    add("udp-no-endpoints", Pkt::new(CLIENT, EMPTY_IP, udp(41000, 81)).build());
    add("syn-unresolved", Pkt::new(CLIENT, UNRESOLVED_IP, tcp(41000, 80, SYN)).build());
    add("syn-keep", Pkt::new(CLIENT2, KEEP, tcp(41000, 80, SYN)).build());
    add("syn-snatted", Pkt::new(CLIENT2, SNATTED, tcp(41000, 443, SYN)).build());
    add("udp-spread", Pkt::new(CLIENT, SPREAD_IP, udp(41000, 80)).build());
    add("ack-no-flow", Pkt::new(CLIENT, CLUSTER_IP, tcp(41000, 8080, ACK)).build());
    add("syn-vlan", Pkt { vlan: Some(7), ..syn.clone() }.build());
    add("syn-ttl1", Pkt { ttl: 1, ..syn.clone() }.build());
    add("syn-ttl0", Pkt { ttl: 0, ..syn.clone() }.build());
    add("syn-options", with_options(syn.build(), 8));
    let mut frag = syn.build();
    frag[20] = 0x20; // MF
    fix_ip_checksum(&mut frag);
    add("fragment", frag);
    let mut icmp = Pkt::new(CLIENT, CLUSTER_IP, udp(1, 2)).build();
    icmp[23] = 1;
    fix_ip_checksum(&mut icmp);
    add("icmp", icmp);
    let mut arp = syn.build();
    arp.truncate(42);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    add("arp", arp);
    add("not-service", Pkt::new(CLIENT, std::net::Ipv4Addr::new(198, 18, 9, 9), udp(1, 2)).build());
    // IPv6: the dual-stack Services' IPv6 halves, and what goes to the
    // kernel or is dropped.
    let syn6 = Pkt::new(CLIENT6, CLUSTER_IP6, tcp(41000, 8080, SYN));
    add("v6-syn-clusterip", syn6.build());
    add("v6-syn-nodeport", Pkt::new(CLIENT6, NODE_IP6, tcp(41000, 30120, SYN)).build());
    add("v6-syn-lb", Pkt::new(CLIENT6, LB_IP6, tcp(41000, 8080, SYN)).build());
    add("v6-syn-keep", Pkt::new(CLIENT6, lab::KEEP6, tcp(41000, 80, SYN)).build());
    add("v6-udp-spread", Pkt::new(CLIENT6, lab::SPREAD_IP6, udp(41000, 80)).build());
    add("v6-ack-no-flow", Pkt::new(CLIENT6, CLUSTER_IP6, tcp(41000, 8080, ACK)).build());
    add("v6-syn-hop1", Pkt { ttl: 1, ..syn6.clone() }.build());
    add("v6-syn-vlan", Pkt { vlan: Some(7), ..syn6.clone() }.build());
    let mut zero = Pkt::new(CLIENT6, lab::SPREAD_IP6, udp(41000, 80)).build();
    zero[60..62].copy_from_slice(&[0, 0]);
    add("v6-udp-zero-checksum", zero);
    // A destination options header (8 bytes, PadN) before TCP.
    let mut dopt = syn6.build();
    dopt.splice(54..54, [6u8, 0, 1, 4, 0, 0, 0, 0]);
    dopt[20] = 60;
    let plen = u16::from_be_bytes([dopt[18], dopt[19]]) + 8;
    dopt[18..20].copy_from_slice(&plen.to_be_bytes());
    add("v6-dest-options", dopt);
    let mut frag6 = syn6.build();
    frag6.splice(54..54, [6u8, 0, 0, 1, 0, 0, 0, 1]);
    frag6[20] = 44;
    let plen = u16::from_be_bytes([frag6[18], frag6[19]]) + 8;
    frag6[18..20].copy_from_slice(&plen.to_be_bytes());
    add("v6-fragment", frag6);
    let mut ns = Pkt::new(CLIENT6, NODE_IP6, udp(1, 2)).build();
    ns[20] = 58; // ICMPv6 (neighbour discovery is the kernel's)
    add("v6-icmpv6", ns);
    let mut short6 = syn6.build();
    short6.truncate(60);
    add("v6-truncated", short6);
    add(
        "v6-to-snat-no-flow",
        Pkt { src_mac: backend_mac(0), dst_mac: GW_POD_MAC, ..Pkt::new(backend6(0), SNAT6, tcp(80, 33000, ACK)) }
            .build(),
    );
    add(
        "to-snat-no-flow",
        Pkt { src_mac: backend_mac(0), dst_mac: GW_POD_MAC, ..Pkt::new(backend(0), SNAT, tcp(80, 33000, ACK)) }.build(),
    );
    // Packets of the setup's flows, and the backends' answers.
    let table = Lab::get().table(0, 1);
    let hops = lab::hops(0, 1);
    let mode =
        if dnat { svcgate_common::model::ForwardingMode::Dnat } else { svcgate_common::model::ForwardingMode::Snat };
    let mut w = World::new(lab::config(mode, 1, lab::SMALL_CT), true);
    let forwarded = setup(&mut w, &table, &hops, START_MS);
    for (i, p) in crate::targets::frames::setup_packets().into_iter().enumerate() {
        let l4 = match p.l4() {
            L4::Tcp { sport, dport, .. } => tcp(sport, dport, ACK | PSH),
            u => u,
        };
        add(&format!("flow{i}-data"), p.with(l4, Some(vec![0x5a; 100])));
        if let L4::Tcp { sport, dport, .. } = p.l4() {
            add(&format!("flow{i}-fin"), p.with(tcp(sport, dport, FIN | ACK), None));
            add(&format!("flow{i}-rst"), p.with(tcp(sport, dport, RST), None));
        }
    }
    for (i, f) in forwarded.iter().enumerate() {
        if let Some(a) = lab::answer_to(f, ACK | PSH) {
            add(&format!("answer{i}"), a);
        }
        if let Some(a) = lab::answer_to(f, FIN | ACK) {
            add(&format!("answer{i}-fin"), a);
        }
    }
    v
}

fn frame_pipeline() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for (dnat, tag) in [(false, "snat"), (true, "dnat")] {
        for (name, f) in frames(dnat) {
            let from_pods = name.starts_with("answer") || name.starts_with("to-snat");
            let ctl = u8::from(from_pods) | 2 << 1 | u8::from(dnat) << 3;
            let mut b = vec![ctl];
            b.extend_from_slice(&f);
            v.push((format!("{tag}-{name}"), b));
        }
    }
    // The tightest buffer: a reject that cannot be built.
    let mut b = vec![0u8];
    b.extend_from_slice(&Pkt::new(CLIENT, EMPTY_IP, tcp(41000, 80, SYN)).build());
    v.push(("snat-no-room-for-reply".into(), b));
    v
}

/// Op bytes of a raw frame (see `frame_sequence`).
fn raw(op: u8, f: &[u8]) -> Vec<u8> {
    let mut v = vec![op];
    if f.len() < 0xf0 {
        v.push(f.len() as u8);
    } else {
        v.push(0xf0 | (f.len() >> 8) as u8);
        v.push(f.len() as u8);
    }
    v.extend_from_slice(f);
    v
}

fn frame_sequence() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    // A TCP handshake and data through worker 0, answers on worker 1
    // (templates: frontend 0 = web, client 0, flags SYN / ACK / ACK|PSH).
    let handshake: Vec<u8> = [
        vec![0x90, 0, 0, 0x02],
        vec![0xa1, 0, 0],
        vec![0x90, 0, 0, 0x10],
        vec![0x90, 0, 0, 0x18],
        vec![0xa1, 0, 2],
        vec![0x90, 0, 0, 0x11],
        vec![0xa1, 0, 3],
    ]
    .concat();
    for header in [0u8, 1, 2, 4] {
        v.push((format!("handshake-h{header}"), [vec![header], handshake.clone()].concat()));
    }
    // The same in IPv6 (template bit 5: frontend 0 of FRONTENDS6 = web's
    // IPv6 clusterIP), and keep's IPv6 half in dnat mode.
    let mut handshake6 = handshake.clone();
    let mut i = 0;
    while i < handshake6.len() {
        // 0x90 ops carry 3 operand bytes, 0xa1 ones 2.
        if handshake6[i] & 0xf0 == 0x90 {
            handshake6[i + 1] |= 0x20;
            i += 4;
        } else {
            i += 3;
        }
    }
    for header in [0u8, 1, 2] {
        v.push((format!("v6-handshake-h{header}"), [vec![header], handshake6.clone()].concat()));
    }
    let keep6 =
        [vec![2u8, 0x90, 0x25, 0, 0x02, 0xa1, 0, 0, 0x90, 0x25, 0, 0x10, 0x90, 0x25, 0, 0x18, 0xa1, 0, 2]].concat();
    v.push(("v6-keep-dnat".into(), keep6));
    // Many flows in batches on both workers, then the table changes under
    // them, time passes and maintenance runs.
    let mut many = vec![0u8];
    for i in 0..40u8 {
        many.extend_from_slice(&[0x92 | (i & 1), i % 16, i * 4 + (i & 3), 0x02]);
    }
    many.push(0xb0);
    for i in 0..8u8 {
        many.extend_from_slice(&[0xa0 | (i & 1), i, 0]);
    }
    // Variant 1 takes web's backend (its flows get a RST) and moves others;
    // variant 3 brings them back; then a next-hop swap. (Variant 2, which
    // removes Services, comes last: a tracked flow's packet after its
    // frontend is removed is an open finding, see docs/FUZZING.md.)
    many.extend_from_slice(&[0x61, 0x90, 0, 0, 0x10, 0x63, 0x69, 0x90, 0, 0, 0x10]);
    many.extend_from_slice(&[0x50, 0x7f, 0x7e, 0x5b, 0x71, 0x81, 0x8f, 0x62]);
    v.push(("churn".into(), many.clone()));
    many[0] = 1;
    v.push(("churn-large".into(), many.clone()));
    many[0] = 2;
    v.push(("churn-dnat".into(), many));
    // Raw frames: UDP to dns and its answer, in one batch with a VLAN frame.
    let q = Pkt::new(CLIENT, DNS_IP, udp(5000, 53)).build();
    let vl = Pkt { vlan: Some(9), ..Pkt::new(CLIENT, SPREAD_IP, udp(5001, 80)) }.build();
    let seq =
        [vec![0u8], raw(0x20, &q), raw(0x20, &vl), vec![0xb0, 0xa0, 0, 0], raw(0x00, &with_options(q.clone(), 4))]
            .concat();
    v.push(("raw-udp".into(), seq));
    // SYN flood on a small table, then a legit handshake.
    let mut flood = vec![0u8];
    for i in 0..80u8 {
        flood.extend_from_slice(&[0x92, 7, i, 0x02]);
    }
    flood.extend_from_slice(&handshake);
    v.push(("syn-flood".into(), flood));
    v
}

fn manifests(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let dirs = ["examples/manifests", "control/tests/fixtures/docs", "control/tests/fixtures/cluster"];
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(repo.join(d)) else { continue };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for p in files {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "yaml" | "yml" | "json") {
                continue;
            }
            let Ok(b) = std::fs::read(&p) else { continue };
            // Seeds stay small: AFL mutates small files much faster.
            if b.len() > 24 * 1024 {
                continue;
            }
            let name = format!(
                "{}-{}",
                d.rsplit('/').next().unwrap_or(d),
                p.file_name().and_then(|n| n.to_str()).unwrap_or("x")
            );
            v.push((name, b));
        }
    }
    v.push(("list.json".into(), br#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"clusterIP":"198.18.128.5","ports":[{"port":80,"targetPort":"http"}]}}]}"#.to_vec()));
    v
}

fn dns_queries() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let names = [
        ("nginx.default.svc.cluster.local.", RecordType::A),
        ("Nginx.Default.SVC.cluster.local.", RecordType::A),
        ("nginx.default.svc.cluster.local.", RecordType::AAAA),
        ("_http._tcp.nginx.default.svc.cluster.local.", RecordType::SRV),
        ("pg.db.svc.cluster.local.", RecordType::A),
        ("pg-0.pg.db.svc.cluster.local.", RecordType::A),
        ("_pg._tcp.pg.db.svc.cluster.local.", RecordType::SRV),
        ("ext.default.svc.cluster.local.", RecordType::CNAME),
        ("1.128.18.198.in-addr.arpa.", RecordType::PTR),
        ("missing.default.svc.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::SOA),
        ("cluster.local.", RecordType::NS),
        ("example.org.", RecordType::A),
        ("1-2-3-4.default.pod.cluster.local.", RecordType::A),
        ("kube-dns.kube-system.svc.cluster.local.", RecordType::ANY),
    ];
    for (i, (name, rtype)) in names.iter().enumerate() {
        for edns in [None, Some(1232u16), Some(512)] {
            if edns.is_some() && i % 3 != 0 {
                continue;
            }
            let mut m = Message::query();
            m.metadata.id = 0x1234 + i as u16;
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(Name::from_ascii(name).expect("a name"), *rtype));
            if let Some(size) = edns {
                let mut e = Edns::new();
                e.set_max_payload(size);
                m.set_edns(e);
            }
            let q = m.to_vec().expect("encodes");
            let sizes = if edns.is_some() { 0b1000_0010 } else { 0b1000_0000 };
            v.push((
                format!("q{i}-{rtype}-{}", edns.map_or("plain".into(), |s| format!("edns{s}"))),
                [vec![sizes], q].concat(),
            ));
        }
    }
    // Small room: truncated answers.
    if let Some((_, q)) = v.iter().find(|(n, _)| n.starts_with("q6-")) {
        let mut q = q.clone();
        q[0] = 0b1000_0111;
        v.push(("q6-small-room".into(), q));
    }
    v
}

fn stamps() -> Vec<(String, Vec<u8>)> {
    let flow = Flow { src: 0xc612_010a, dst: 0xc612_800a, sport: 1024, dport: 9 };
    let stamp = Stamp { generator: 1, thread: 2, seq: 3, ts_ns: 1_699_999_999_999_000_000 };
    let mut v = Vec::new();
    for (proto, size, name) in [
        (Proto::Udp, 64, "udp64"),
        (Proto::Udp, 594, "udp594"),
        (Proto::TcpSyn, 76, "syn76"),
        (Proto::TcpSyn, 64, "syn64-unstamped"),
    ] {
        let b = FrameBuilder::new(proto, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], &[flow]);
        let mut buf = vec![0u8; 1518];
        let n = b.write(&mut buf, 0, size, &stamp);
        buf.truncate(n);
        v.push((name.to_owned(), buf));
    }
    v.push(("not-stamped".into(), template(0, 0, 0x02)));
    v
}
