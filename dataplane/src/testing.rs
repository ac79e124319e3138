//! A lab in memory for fixture tests and benches (feature `testing`).
//!
//! Two ports: port 0 faces the clients (198.18.1.0/24, the gateway is
//! 198.18.1.1, which is also the node IP for NodePorts), port 1 faces the Pods
//! (198.18.2.0/24, the gateway is 198.18.2.1, which is also the SNAT address).
//! Every address is in 198.18.0.0/15. Frames are built with etherparse, an
//! implementation independent of `wire`, so fixtures check our rewrite against
//! a separately computed frame, checksums included.
//!
//! The same lab in IPv6, in 2001:2::/48 (RFC 5180): clients on
//! 2001:2:0:1::/64 (the gateway is 2001:2:0:1::1, also the IPv6 node IP),
//! Pods on 2001:2:0:2::/64 (the gateway is 2001:2:0:2::1, also the IPv6
//! SNAT address). [`Pkt`] builds frames of either family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpNumber, Ipv4Header, Ipv6Header, PacketBuilder, SingleVlanHeader, TcpHeader};
use svcgate_common::model::{
    BackendSpec, EndpointConditions, Protocol, ServicePortSpec, ServiceSpec, ServiceType, SessionAffinity,
};

use crate::nat::{NatConfig, NextHops, PortInfo, Timeouts};

/// Gateway MAC on the client port (0).
pub const GW_CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Gateway MAC on the Pod port (1).
pub const GW_POD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The client's MAC.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x0a];
/// The client.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
/// A second client on the same segment.
pub const CLIENT2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
/// A client on a routed network, outside any source range of the fixtures.
pub const FAR_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 5);
/// The client-side router for `FAR_CLIENT`.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
/// The router's MAC.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0xfe];
/// The gateway's client-side address, also the node IP.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The gateway's Pod-side address, also the SNAT address.
pub const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// A ClusterIP.
pub const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 10);
/// A LoadBalancer ingress IP.
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);
/// An externalIP.
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 200);
/// A Pod address with no known MAC.
pub const UNRESOLVED_POD: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 99);
/// Number of backends with a known MAC.
pub const BACKENDS: u8 = 32;
/// The IPv6 client (same MAC as [`CLIENT`]).
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x10);
/// The gateway's IPv6 client-side address, also the IPv6 node IP.
pub const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
/// The gateway's IPv6 Pod-side address, also the IPv6 SNAT address.
pub const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1);
/// An IPv6 ClusterIP.
pub const CLUSTER_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0, 0x10);
/// The client-side IPv6 router, toward [`FAR_NET6`] (same MAC as [`ROUTER`]).
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0xfe);
/// A routed IPv6 client network behind [`ROUTER6`] (2001:2:0:40::/64).
pub const FAR_NET6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x40, 0, 0, 0, 0);
/// An IPv6 LoadBalancer ingress IP.
pub const LB_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x9000, 0, 0, 0, 0x100);

/// Backend `i`'s IPv6 address (2001:2:0:2::10 + i; the same MAC as its
/// IPv4 address: one Pod of two families).
pub fn backend6(i: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x10 + u16::from(i))
}

/// Backend `i`'s address (198.18.2.10 + i).
pub fn backend(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 2, 10 + i)
}

/// Backend `i`'s MAC.
pub fn backend_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x02, 10 + i]
}

/// The index of a backend address, if it is one of the lab's.
pub fn backend_index(a: Ipv4Addr) -> Option<u8> {
    let o = a.octets();
    (o[..3] == [198, 18, 2] && o[3] >= 10 && o[3] < 10 + BACKENDS).then(|| o[3] - 10)
}

/// A ready IPv6 backend spec on `port`.
pub fn ready6(i: u8, port: u16) -> BackendSpec {
    BackendSpec { addr: backend6(i).into(), port, conditions: EndpointConditions::READY, weight: 1 }
}

/// A ready backend spec on `port`.
pub fn ready(i: u8, port: u16) -> BackendSpec {
    BackendSpec { addr: backend(i).into(), port, conditions: EndpointConditions::READY, weight: 1 }
}

/// A terminating-but-serving backend spec on `port`.
pub fn terminating(i: u8, port: u16) -> BackendSpec {
    BackendSpec { addr: backend(i).into(), port, conditions: EndpointConditions::TERMINATING_SERVING, weight: 1 }
}

/// The gateway's two ports in the lab, dual-stack: 0 toward the clients
/// (198.18.1.1/24, 2001:2:0:1::1/64), 1 toward the Pods (198.18.2.1/24,
/// 2001:2:0:2::1/64).
pub fn lab_ports() -> Vec<PortInfo> {
    vec![
        PortInfo {
            name: "clients".into(),
            mac: GW_CLIENT_MAC,
            addrs: vec!["198.18.1.1/24".parse().unwrap(), "2001:2:0:1::1/64".parse().unwrap()],
        },
        PortInfo {
            name: "pods".into(),
            mac: GW_POD_MAC,
            addrs: vec!["198.18.2.1/24".parse().unwrap(), "2001:2:0:2::1/64".parse().unwrap()],
        },
    ]
}

/// The lab's next-hop table (generation `gen`).
pub fn next_hops(gen: u32) -> NextHops {
    let mut h = NextHops::new(gen, lab_ports());
    h.add_route("198.18.64.0/18".parse().unwrap(), ROUTER);
    h.add_neighbour(0, CLIENT, CLIENT_MAC);
    h.add_neighbour(0, CLIENT2, [0x02, 0, 0, 0, 0x01, 0x0b]);
    h.add_neighbour(0, ROUTER, ROUTER_MAC);
    for i in 0..BACKENDS {
        h.add_neighbour(1, backend(i), backend_mac(i));
        h.add_neighbour(1, backend6(i), backend_mac(i));
    }
    h.add_neighbour(0, CLIENT6, CLIENT_MAC);
    h.add_route("2001:2:0:40::/64".parse().unwrap(), ROUTER6);
    h.add_neighbour(0, ROUTER6, ROUTER_MAC);
    h
}

/// The lab's NAT configuration: SNAT to 198.18.2.1, default port range.
pub fn nat_config(workers: u16, conntrack_capacity: usize) -> NatConfig {
    NatConfig {
        snat_addrs: vec![SNAT],
        snat_addrs6: vec![SNAT6],
        workers,
        conntrack_capacity,
        timeouts: Timeouts::default(),
        ..NatConfig::default()
    }
}

/// A Service port with these backends.
pub fn port(
    name: &str,
    protocol: Protocol,
    port: u16,
    node_port: Option<u16>,
    backends: Vec<BackendSpec>,
) -> ServicePortSpec {
    ServicePortSpec { name: name.into(), protocol, port, node_port, backends }
}

/// A ClusterIP Service `default/<name>` (headless with `None`), no
/// affinity, source ranges or external addresses, the gateway's forwarding mode.
pub fn svc(name: &str, cluster_ip: Option<Ipv4Addr>, ports: Vec<ServicePortSpec>) -> ServiceSpec {
    ServiceSpec {
        namespace: "default".into(),
        name: name.into(),
        service_type: ServiceType::ClusterIp,
        cluster_ips: cluster_ip.into_iter().map(Into::into).collect(),
        external_ips: vec![],
        load_balancer_ips: vec![],
        source_ranges: vec![],
        affinity: SessionAffinity::None,
        ports,
        forwarding: None,
    }
}

/// L4 part of a test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP with ports, sequence numbers and flags (`wire::tcp::flags`).
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
        /// Flags.
        flags: u8,
    },
    /// UDP with ports.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
}

/// A test packet of either family (`A`: `Ipv4Addr` or `Ipv6Addr`), built
/// with etherparse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkt<A = Ipv4Addr> {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// One 802.1Q tag, if any.
    pub vlan: Option<u16>,
    /// Source address.
    pub src: A,
    /// Destination address.
    pub dst: A,
    /// TTL (IPv6: hop limit).
    pub ttl: u8,
    /// IP identification (IPv4 only).
    pub ident: u16,
    /// L4 header.
    pub l4: L4,
    /// Payload.
    pub payload: Vec<u8>,
}

impl<A: Copy + Into<IpAddr>> Pkt<A> {
    /// A client-to-gateway packet of `l4` from `src` to `dst`.
    pub fn new(src: A, dst: A, l4: L4) -> Self {
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: GW_CLIENT_MAC,
            vlan: None,
            src,
            dst,
            ttl: 64,
            ident: 0x1234,
            l4,
            payload: b"svcgate".to_vec(),
        }
    }

    /// Builds the frame bytes.
    pub fn build(&self) -> Vec<u8> {
        let ip = match (self.src.into(), self.dst.into()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let mut ip = Ipv4Header::new(0, self.ttl, IpNumber::TCP, src.octets(), dst.octets()).unwrap();
                ip.identification = self.ident;
                ip.dont_fragment = true;
                etherparse::IpHeaders::Ipv4(ip, Default::default())
            }
            (src, dst) => {
                let (IpAddr::V6(src), IpAddr::V6(dst)) = (src, dst) else { panic!("a packet of one family") };
                let ip = Ipv6Header {
                    hop_limit: self.ttl,
                    source: src.octets(),
                    destination: dst.octets(),
                    ..Default::default()
                };
                etherparse::IpHeaders::Ipv6(ip, Default::default())
            }
        };
        let b = PacketBuilder::ethernet2(self.src_mac, self.dst_mac).ip(ip);
        let mut out = Vec::new();
        match self.l4 {
            L4::Tcp { sport, dport, seq, ack, flags } => {
                let mut t = TcpHeader::new(sport, dport, seq, 64240);
                t.acknowledgment_number = ack;
                t.fin = flags & 0x01 != 0;
                t.syn = flags & 0x02 != 0;
                t.rst = flags & 0x04 != 0;
                t.psh = flags & 0x08 != 0;
                t.ack = flags & 0x10 != 0;
                b.tcp_header(t).write(&mut out, &self.payload).unwrap();
            }
            L4::Udp { sport, dport } => {
                b.udp(sport, dport).write(&mut out, &self.payload).unwrap();
            }
        }
        if let Some(id) = self.vlan {
            // One 802.1Q tag between the MACs and the EtherType.
            let tag = SingleVlanHeader { vlan_id: etherparse::VlanId::try_new(id).unwrap(), ..Default::default() };
            let mut tagged = out[..12].to_vec();
            tagged.extend_from_slice(&[0x81, 0x00]);
            tagged.extend_from_slice(&tag.to_bytes()[..2]);
            tagged.extend_from_slice(&out[12..]);
            out = tagged;
        }
        out
    }

    /// The same packet with other addresses, ports and MACs, TTL one lower:
    /// what a forwarded packet should look like.
    #[allow(clippy::too_many_arguments)]
    pub fn translated(&self, src: A, sport: u16, dst: A, dport: u16, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Self {
        let l4 = match self.l4 {
            L4::Tcp { seq, ack, flags, .. } => L4::Tcp { sport, dport, seq, ack, flags },
            L4::Udp { .. } => L4::Udp { sport, dport },
        };
        Self { src_mac, dst_mac, src, dst, ttl: self.ttl - 1, l4, ..self.clone() }
    }
}

/// A TCP segment's L4 part.
pub fn tcp(sport: u16, dport: u16, flags: u8) -> L4 {
    L4::Tcp { sport, dport, seq: 1000, ack: if flags & 0x10 != 0 { 5000 } else { 0 }, flags }
}

/// A UDP datagram's L4 part.
pub fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp { sport, dport }
}

/// A small xorshift (13, 7, 17): repeatable pseudo-random choices for tests
/// and benches, at no measurable cost per draw.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next value (the seed must not be zero). Inlined across crates:
    /// the benches draw one per frame inside their timed loops.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (modulo, slightly uneven; fine for test mixes).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
