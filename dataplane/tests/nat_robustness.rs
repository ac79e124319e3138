//! The hot path never panics: every truncation of a valid frame, every
//! single-byte corruption and random bytes end in a counted verdict.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use svcgate_common::model::{DesiredState, Protocol, ServicePortSpec, ServiceSpec, ServiceType, SessionAffinity};
use svcgate_common::table::ServiceTable;
use svcgate_dataplane::nat::{Frame, Shared, Verdict, Worker};
use svcgate_dataplane::testing::*;
use svcgate_dataplane::wire::tcp::flags::{ACK, SYN};

fn lab() -> (Worker, ServiceTable, svcgate_dataplane::nat::NextHops) {
    let ports = vec![
        ServicePortSpec {
            name: "t".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: Some(30080),
            backends: vec![ready(0, 8080)],
        },
        ServicePortSpec {
            name: "u".into(),
            protocol: Protocol::Udp,
            port: 53,
            node_port: None,
            backends: vec![ready(1, 53)],
        },
        ServicePortSpec { name: "e".into(), protocol: Protocol::Udp, port: 99, node_port: None, backends: vec![] },
    ];
    let desired = DesiredState {
        node_ips: vec![NODE_IP.into()],
        services: vec![ServiceSpec {
            namespace: "default".into(),
            name: "s".into(),
            service_type: ServiceType::NodePort,
            cluster_ips: vec![CLUSTER_IP.into()],
            external_ips: vec![],
            load_balancer_ips: vec![],
            source_ranges: vec![],
            affinity: SessionAffinity::None,
            ports,
            forwarding: None,
        }],
    };
    let shared = Shared::new(nat_config(1, 1024)).unwrap();
    (Worker::new(0, shared), ServiceTable::build(&desired, 1).0, next_hops(1))
}

fn samples() -> Vec<Vec<u8>> {
    let syn = Pkt::new(CLIENT, CLUSTER_IP, tcp(40000, 80, SYN));
    let reply =
        Pkt { src_mac: backend_mac(0), dst_mac: GW_POD_MAC, ..Pkt::new(backend(0), SNAT, tcp(8080, 32768, SYN | ACK)) };
    vec![
        syn.build(),
        Pkt { vlan: Some(7), ..syn.clone() }.build(),
        Pkt::new(CLIENT, CLUSTER_IP, udp(5000, 53)).build(),
        Pkt::new(CLIENT, CLUSTER_IP, udp(5000, 99)).build(),
        Pkt { ttl: 1, ..syn.clone() }.build(),
        Pkt::new(CLIENT, NODE_IP, tcp(1, 30080, SYN)).build(),
        reply.build(),
        Pkt::new(CLIENT, Ipv4Addr::new(198, 18, 9, 9), udp(1, 2)).build(),
    ]
}

/// Runs `bytes` with a buffer of `cap` bytes; checks the verdict is sane.
fn run(w: &mut Worker, t: &ServiceTable, h: &svcgate_dataplane::nat::NextHops, bytes: &[u8], cap: usize) -> Verdict {
    let mut buf = vec![0u8; cap.max(bytes.len())];
    buf[..bytes.len()].copy_from_slice(bytes);
    let mut f = Frame::new(&mut buf, bytes.len(), 0);
    w.process(t, h, &mut f, 5);
    if let Verdict::Reply { len } = f.verdict {
        assert!(usize::from(len) <= f.buf.len());
    }
    f.verdict
}

#[test]
fn every_truncation_is_dropped_or_passed() {
    let (mut w, t, h) = lab();
    for s in samples() {
        // Established state for the reply sample's flow.
        run(&mut w, &t, &h, &samples()[0], 2048);
        for len in 0..s.len() {
            let v = run(&mut w, &t, &h, &s[..len], 2048);
            // Cutting the Ethernet padding-free frame short always breaks the
            // IPv4 total length, so nothing truncated is ever forwarded.
            assert!(matches!(v, Verdict::Drop(_) | Verdict::Pass(_)), "len {len} of {s:02x?}: {v:?}");
        }
    }
    let c = w.counters();
    assert_eq!(c.rx, c.forwarded + c.replied + c.pass.iter().sum::<u64>() + c.drop.iter().sum::<u64>());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), cap in 0usize..300) {
        let (mut w, t, h) = lab();
        run(&mut w, &t, &h, &bytes, cap);
        let c = w.counters();
        prop_assert_eq!(c.rx, 1);
    }

    #[test]
    fn corrupted_frames_never_panic(which in 0usize..8, pos in 0usize..80, val in any::<u8>(), cap in 0usize..128) {
        let (mut w, t, h) = lab();
        let mut s = samples()[which].clone();
        let p = pos % s.len();
        s[p] = val;
        run(&mut w, &t, &h, &s, cap);
        prop_assert_eq!(w.counters().rx, 1);
    }
}
