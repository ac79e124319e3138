//! The next-hop table the caller provides: ports (interfaces), connected
//! prefixes, routes and neighbours.
//!
//! The pipeline resolves a destination to a next hop only when a flow is
//! created (or after this table changes generation) and caches the hop's index
//! in the flow entry, so the per-packet cost is one array read. The caller
//! (the AF_XDP layer) builds a new `NextHops` from the kernel's neighbour and
//! route tables through netlink and publishes it like the service tables.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use svcgate_common::model::Ipv4Net;

/// One port (an interface svcgate forwards on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Interface name, for logs.
    pub name: String,
    /// Its MAC address: the source MAC of frames sent on it.
    pub mac: [u8; 6],
    /// Its IPv4 addresses with their prefixes (connected routes).
    pub addrs: Vec<Ipv4Net>,
}

/// A resolved next hop: where a frame goes and the MACs it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// Egress port.
    pub port: u16,
    /// Source MAC (the port's).
    pub src_mac: [u8; 6],
    /// Destination MAC (the neighbour's).
    pub dst_mac: [u8; 6],
    /// Destination then source MAC, as the Ethernet header starts: written
    /// with one copy on the fast path.
    pub macs: [u8; 12],
}

impl NextHop {
    /// A hop out of `port` from `src_mac` to `dst_mac`.
    pub fn new(port: u16, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Self {
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&dst_mac);
        macs[6..].copy_from_slice(&src_mac);
        Self { port, src_mac, dst_mac, macs }
    }
}

/// The outcome of resolving a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Index of the hop in [`NextHops::hop`].
    Hop(u16),
    /// Routed out of `port` via `via`, whose MAC is not known yet.
    Unresolved {
        /// Egress port.
        port: u16,
        /// The neighbour to resolve (the destination or its gateway).
        via: Ipv4Addr,
    },
    /// No connected prefix or route covers the destination.
    NoRoute,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    net: Ipv4Net,
    via: Ipv4Addr,
}

/// An immutable snapshot of ports, routes and neighbours.
#[derive(Debug, Clone, Default)]
pub struct NextHops {
    generation: u32,
    ports: Vec<PortInfo>,
    routes: Vec<Route>,
    neighbours: HashMap<(u16, Ipv4Addr), u16, ahash::RandomState>,
    hops: Vec<NextHop>,
}

impl NextHops {
    /// A table with these ports and nothing else; `generation` must change
    /// whenever a new table is published, so flows re-resolve their hops.
    pub fn new(generation: u32, ports: Vec<PortInfo>) -> Self {
        Self { generation, ports, ..Self::default() }
    }

    /// Adds a route for `net` via the gateway `via` (which must be on a
    /// connected prefix of some port).
    pub fn add_route(&mut self, net: Ipv4Net, via: Ipv4Addr) -> &mut Self {
        self.routes.push(Route { net, via });
        self.routes.sort_by_key(|r| std::cmp::Reverse(r.net.prefix_len()));
        self
    }

    /// Adds (or replaces) the neighbour `ip` on `port` with its MAC.
    pub fn add_neighbour(&mut self, port: u16, ip: Ipv4Addr, mac: [u8; 6]) -> &mut Self {
        let src_mac = self.ports.get(usize::from(port)).map_or([0; 6], |p| p.mac);
        let hop = NextHop::new(port, src_mac, mac);
        match self.neighbours.get(&(port, ip)) {
            Some(&i) => self.hops[usize::from(i)] = hop,
            None => {
                let i = self.hops.len() as u16;
                self.hops.push(hop);
                self.neighbours.insert((port, ip), i);
            }
        }
        self
    }

    /// The generation number.
    #[inline(always)]
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The ports.
    pub fn ports(&self) -> &[PortInfo] {
        &self.ports
    }

    /// The first address of `port`, used as the source of ICMP errors.
    pub fn port_addr(&self, port: u16) -> Option<Ipv4Addr> {
        self.ports.get(usize::from(port)).and_then(|p| p.addrs.first()).map(|n| n.addr())
    }

    /// The hop at `idx` (from [`Resolution::Hop`]).
    #[inline(always)]
    pub fn hop(&self, idx: u16) -> Option<&NextHop> {
        self.hops.get(usize::from(idx))
    }

    fn connected(&self, dst: Ipv4Addr) -> Option<u16> {
        let mut best: Option<(u8, u16)> = None;
        for (i, p) in self.ports.iter().enumerate() {
            for n in &p.addrs {
                if n.contains(&dst) && best.is_none_or(|(len, _)| n.prefix_len() > len) {
                    best = Some((n.prefix_len(), i as u16));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Resolves `dst`: the longest connected prefix, else the longest route
    /// and its gateway's connected port; then the neighbour's MAC.
    pub fn resolve(&self, dst: Ipv4Addr) -> Resolution {
        let (port, via) = match self.connected(dst) {
            Some(p) => (p, dst),
            None => match self.routes.iter().find(|r| r.net.contains(&dst)) {
                Some(r) => match self.connected(r.via) {
                    Some(p) => (p, r.via),
                    None => return Resolution::NoRoute,
                },
                None => return Resolution::NoRoute,
            },
        };
        match self.neighbours.get(&(port, via)) {
            Some(&i) => Resolution::Hop(i),
            None => Resolution::Unresolved { port, via },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> NextHops {
        let mut t = NextHops::new(
            1,
            vec![
                PortInfo {
                    name: "client".into(),
                    mac: [2, 0, 0, 0, 0, 1],
                    addrs: vec!["198.18.1.1/24".parse().unwrap()],
                },
                PortInfo {
                    name: "pods".into(),
                    mac: [2, 0, 0, 0, 0, 2],
                    addrs: vec!["198.18.2.1/24".parse().unwrap()],
                },
            ],
        );
        t.add_route("198.18.64.0/18".parse().unwrap(), "198.18.2.254".parse().unwrap());
        t.add_neighbour(1, "198.18.2.10".parse().unwrap(), [2, 0, 0, 0, 2, 10]);
        t.add_neighbour(1, "198.18.2.254".parse().unwrap(), [2, 0, 0, 0, 2, 254]);
        t
    }

    #[test]
    fn connected_neighbour_resolves_with_port_mac() {
        let t = table();
        let Resolution::Hop(i) = t.resolve("198.18.2.10".parse().unwrap()) else { panic!() };
        assert_eq!(t.hop(i), Some(&NextHop::new(1, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 2, 10])));
        assert_eq!(t.hop(i).unwrap().macs, [2, 0, 0, 0, 2, 10, 2, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn routed_destination_uses_gateway_mac() {
        let t = table();
        let Resolution::Hop(i) = t.resolve("198.18.70.5".parse().unwrap()) else { panic!() };
        assert_eq!(t.hop(i).unwrap().dst_mac, [2, 0, 0, 0, 2, 254]);
    }

    #[test]
    fn unknown_neighbour_and_no_route() {
        let t = table();
        assert_eq!(
            t.resolve("198.18.1.7".parse().unwrap()),
            Resolution::Unresolved { port: 0, via: "198.18.1.7".parse().unwrap() }
        );
        assert_eq!(t.resolve("198.19.9.9".parse().unwrap()), Resolution::NoRoute);
        assert_eq!(t.port_addr(1), Some("198.18.2.1".parse().unwrap()));
    }
}
