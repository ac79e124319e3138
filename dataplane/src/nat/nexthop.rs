//! The next-hop table the caller provides: ports (interfaces), connected
//! prefixes, routes and neighbours, for both address families.
//!
//! The pipeline resolves a destination to a next hop only when a flow is
//! created (or after this table changes generation) and caches the hop's index
//! in the flow entry, so the per-packet cost is one array read. The caller
//! (the AF_XDP layer) builds a new `NextHops` from the kernel's neighbour and
//! route tables through netlink (ARP for IPv4, NDP for IPv6, both as the
//! kernel resolved them) and publishes it like the service tables.
//!
//! Routes and neighbours are kept per family, typed by the address
//! ([`FamilyHops<A>`]), and the methods are generic over [`Addr`]: an IPv6
//! lookup never sees an IPv4 entry and nothing is matched on the family per
//! lookup. The hops themselves (egress port and MACs) are family-free and
//! share one array, so a flow of either family caches a `u16` index.

use std::any::Any;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use svcgate_common::family::{Addr, PerFamily};
use svcgate_common::model::{IpNet, Ipv4Net, Ipv6Net};

/// One port (an interface svcgate forwards on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Interface name, for logs.
    pub name: String,
    /// Its MAC address: the source MAC of frames sent on it.
    pub mac: [u8; 6],
    /// Its addresses of both families with their prefixes (connected
    /// routes). The first of a family is the source of the ICMP/ICMPv6
    /// errors the gateway sends out of this port ([`NextHops::port_addr`]).
    pub addrs: Vec<IpNet>,
}

/// A resolved next hop: where a frame goes and the MACs it carries.
/// Aligned to 32 bytes (26 of them used) so that the fast path finds hop
/// `i` with a shift rather than a multiply by 26.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(align(32))]
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

/// The outcome of resolving a destination of family `A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution<A = Ipv4Addr> {
    /// Index of the hop in [`NextHops::hop`].
    Hop(u16),
    /// Routed out of `port` via `via`, whose MAC is not known yet.
    Unresolved {
        /// Egress port.
        port: u16,
        /// The neighbour to resolve (the destination or its gateway).
        via: A,
    },
    /// No connected prefix or route covers the destination.
    NoRoute,
}

/// A prefix of family `A` with its length (kept beside it: the generic
/// `A::Net` does not tell its length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prefix<A: Addr> {
    net: A::Net,
    len: u8,
}

impl<A: Addr> Prefix<A> {
    #[inline]
    fn contains(&self, a: A) -> bool {
        A::net_contains(&self.net, a)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route<A: Addr> {
    prefix: Prefix<A>,
    via: A,
    /// The egress port when the route names it (a link-local gateway, the
    /// rule for IPv6 routes learnt from router advertisements, is on every
    /// link: its own address does not tell the port). `None`: the port of
    /// the connected prefix holding `via`.
    port: Option<u16>,
    /// The hop of the gateway, once its MAC is known: kept here when the
    /// route or the neighbour is added ([`NextHops::memo_routes`]), so that
    /// resolving a routed destination (a new flow to a Pod behind a
    /// router) takes no neighbour lookup.
    hop: Option<u16>,
}

/// The routes, connected prefixes and neighbours of one family.
#[derive(Debug, Clone)]
pub struct FamilyHops<A: Addr> {
    /// Connected prefixes of the ports, longest first: `(prefix, port)`.
    connected: Vec<(Prefix<A>, u16)>,
    /// Routes through a gateway, longest prefix first.
    routes: Vec<Route<A>>,
    /// `(port, neighbour)` to its hop's index.
    neighbours: HashMap<(u16, A), u16, ahash::RandomState>,
}

impl<A: Addr> Default for FamilyHops<A> {
    fn default() -> Self {
        Self { connected: Vec::new(), routes: Vec::new(), neighbours: HashMap::default() }
    }
}

impl<A: Addr> FamilyHops<A> {
    /// The port of the longest connected prefix holding `dst`.
    fn connected(&self, dst: A) -> Option<u16> {
        self.connected.iter().find(|(p, _)| p.contains(dst)).map(|&(_, port)| port)
    }
}

/// Both families' halves, picked by [`Addr::side`].
#[derive(Debug, Clone, Default)]
struct Families {
    v4: FamilyHops<Ipv4Addr>,
    v6: FamilyHops<Ipv6Addr>,
}

impl PerFamily for Families {
    type Of<A: Addr> = FamilyHops<A>;
    fn v4(&self) -> &FamilyHops<Ipv4Addr> {
        &self.v4
    }
    fn v6(&self) -> &FamilyHops<Ipv6Addr> {
        &self.v6
    }
    fn v4_mut(&mut self) -> &mut FamilyHops<Ipv4Addr> {
        &mut self.v4
    }
    fn v6_mut(&mut self) -> &mut FamilyHops<Ipv6Addr> {
        &mut self.v6
    }
}

/// The prefix length of `net`. `Addr::Net` is `Ipv4Net` or `Ipv6Net`, but
/// the trait does not expose the length, so it is read through the concrete
/// type (control path only: called when a route is added).
fn prefix_len<A: Addr>(net: &A::Net) -> u8 {
    let any: &dyn Any = net;
    any.downcast_ref::<Ipv4Net>()
        .map(Ipv4Net::prefix_len)
        .or_else(|| any.downcast_ref::<Ipv6Net>().map(Ipv6Net::prefix_len))
        .unwrap_or(0)
}

/// An immutable snapshot of ports, routes and neighbours.
#[derive(Debug, Clone, Default)]
pub struct NextHops {
    generation: u32,
    ports: Vec<PortInfo>,
    families: Families,
    hops: Vec<NextHop>,
}

impl NextHops {
    /// A table with these ports and nothing else; `generation` must change
    /// whenever a new table is published, so flows re-resolve their hops.
    pub fn new(generation: u32, ports: Vec<PortInfo>) -> Self {
        let mut me = Self { generation, ports, ..Self::default() };
        me.connect::<Ipv4Addr>();
        me.connect::<Ipv6Addr>();
        me
    }

    /// Fills family `A`'s connected prefixes from the ports, longest first
    /// (the first port wins a tie, as before).
    fn connect<A: Addr>(&mut self) {
        let mut connected: Vec<(Prefix<A>, u16)> = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            for n in &p.addrs {
                if let Some(net) = A::from_net(n.trunc()) {
                    connected.push((Prefix { net, len: n.prefix_len() }, i as u16));
                }
            }
        }
        connected.sort_by_key(|(p, _)| std::cmp::Reverse(p.len));
        A::side_mut(&mut self.families).connected = connected;
    }

    /// Adds a route for `net` via the gateway `via` (which must be on a
    /// connected prefix of some port). The family follows `via`.
    pub fn add_route<A: Addr>(&mut self, net: A::Net, via: A) -> &mut Self {
        self.push_route(net, via, None)
    }

    /// Adds a route for `net` via the gateway `via` out of `port`, whatever
    /// prefix `via` is on: for link-local gateways (`fe80::/10`), which
    /// every link has, and which the ports' prefixes leave out.
    pub fn add_route_on<A: Addr>(&mut self, net: A::Net, via: A, port: u16) -> &mut Self {
        self.push_route(net, via, Some(port))
    }

    fn push_route<A: Addr>(&mut self, net: A::Net, via: A, port: Option<u16>) -> &mut Self {
        let routes = &mut A::side_mut(&mut self.families).routes;
        routes.push(Route { prefix: Prefix { net, len: prefix_len::<A>(&net) }, via, port, hop: None });
        // Stable: among equal prefixes the first added wins, as before.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len));
        self.memo_routes::<A>();
        self
    }

    /// Sets each route's [`Route::hop`] from the neighbours known now.
    fn memo_routes<A: Addr>(&mut self) {
        let f = A::side_mut(&mut self.families);
        for i in 0..f.routes.len() {
            let r = f.routes[i];
            let port = r.port.or_else(|| f.connected(r.via));
            f.routes[i].hop = port.and_then(|p| f.neighbours.get(&(p, r.via)).copied());
        }
    }

    /// Adds (or replaces) the neighbour `ip` on `port` with its MAC (from
    /// ARP for IPv4, NDP for IPv6).
    pub fn add_neighbour<A: Addr>(&mut self, port: u16, ip: A, mac: [u8; 6]) -> &mut Self {
        let src_mac = self.ports.get(usize::from(port)).map_or([0; 6], |p| p.mac);
        let hop = NextHop::new(port, src_mac, mac);
        let neighbours = &mut A::side_mut(&mut self.families).neighbours;
        match neighbours.get(&(port, ip)) {
            Some(&i) => self.hops[usize::from(i)] = hop,
            None => {
                let i = self.hops.len() as u16;
                self.hops.push(hop);
                neighbours.insert((port, ip), i);
                self.memo_routes::<A>();
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

    /// The first address of family `A` of `port`, used as the source of the
    /// ICMP (ICMPv6) errors sent out of it.
    pub fn port_addr<A: Addr>(&self, port: u16) -> Option<A> {
        self.ports.get(usize::from(port))?.addrs.iter().find_map(|n| A::from_ip(n.addr()))
    }

    /// The hop at `idx` (from [`Resolution::Hop`]).
    #[inline(always)]
    pub fn hop(&self, idx: u16) -> Option<&NextHop> {
        self.hops.get(usize::from(idx))
    }

    /// Family `A`'s routes and neighbours.
    pub fn family<A: Addr>(&self) -> &FamilyHops<A> {
        A::side(&self.families)
    }

    /// Resolves `dst`: the longest connected prefix, else the longest route
    /// and its gateway's connected port; then the neighbour's MAC. Only
    /// prefixes and neighbours of `dst`'s family are looked at.
    pub fn resolve<A: Addr>(&self, dst: A) -> Resolution<A> {
        let f = self.family::<A>();
        let (port, via) = match f.connected(dst) {
            Some(p) => (p, dst),
            None => match f.routes.iter().find(|r| r.prefix.contains(dst)) {
                Some(Route { hop: Some(h), .. }) => return Resolution::Hop(*h),
                Some(r) => match r.port.or_else(|| f.connected(r.via)) {
                    Some(p) => (p, r.via),
                    None => return Resolution::NoRoute,
                },
                None => return Resolution::NoRoute,
            },
        };
        match f.neighbours.get(&(port, via)) {
            Some(&i) => Resolution::Hop(i),
            None => Resolution::Unresolved { port, via },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// Two ports, each with an IPv4 and an IPv6 prefix (dual-stack), a
    /// route per family through a router on the pods port, and neighbours.
    fn table() -> NextHops {
        let mut t = NextHops::new(
            1,
            vec![
                PortInfo {
                    name: "client".into(),
                    mac: [2, 0, 0, 0, 0, 1],
                    addrs: vec!["198.18.1.1/24".parse().unwrap(), "2001:2:0:1::1/64".parse().unwrap()],
                },
                PortInfo {
                    name: "pods".into(),
                    mac: [2, 0, 0, 0, 0, 2],
                    addrs: vec!["2001:2:0:2::1/64".parse().unwrap(), "198.18.2.1/24".parse().unwrap()],
                },
            ],
        );
        t.add_route("198.18.64.0/18".parse().unwrap(), v4("198.18.2.254"));
        t.add_neighbour(1, v4("198.18.2.10"), [2, 0, 0, 0, 2, 10]);
        t.add_neighbour(1, v4("198.18.2.254"), [2, 0, 0, 0, 2, 254]);
        t.add_route("2001:2:0:40::/58".parse().unwrap(), v6("2001:2:0:2::fe"));
        t.add_neighbour(1, v6("2001:2:0:2::a"), [2, 0, 0, 0, 6, 10]);
        t.add_neighbour(1, v6("2001:2:0:2::fe"), [2, 0, 0, 0, 6, 254]);
        t
    }

    #[test]
    fn connected_neighbour_resolves_with_port_mac() {
        let t = table();
        let Resolution::Hop(i) = t.resolve(v4("198.18.2.10")) else { panic!() };
        assert_eq!(t.hop(i), Some(&NextHop::new(1, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 2, 10])));
        assert_eq!(t.hop(i).unwrap().macs, [2, 0, 0, 0, 2, 10, 2, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn a_route_resolves_the_same_whichever_was_added_first() {
        // The route's remembered hop (`Route::hop`) must follow the
        // neighbour table in either order, and a gateway not yet known
        // stays unresolved.
        let gw = v4("198.18.2.254");
        let base = || NextHops::new(1, table().ports().to_vec());
        let mut route_first = base();
        route_first.add_route("198.19.0.0/16".parse().unwrap(), gw);
        assert!(matches!(route_first.resolve(v4("198.19.1.1")), Resolution::Unresolved { port: 1, .. }));
        route_first.add_neighbour(1, gw, [2, 0, 0, 0, 2, 254]);
        let mut neighbour_first = base();
        neighbour_first.add_neighbour(1, gw, [2, 0, 0, 0, 2, 254]);
        neighbour_first.add_route("198.19.0.0/16".parse().unwrap(), gw);
        for t in [&route_first, &neighbour_first] {
            let Resolution::Hop(i) = t.resolve(v4("198.19.1.1")) else { panic!("resolved") };
            assert_eq!(t.hop(i).unwrap().dst_mac, [2, 0, 0, 0, 2, 254]);
        }
        // A new MAC for the gateway replaces its hop in place.
        route_first.add_neighbour(1, gw, [2, 0, 0, 0, 2, 253]);
        let Resolution::Hop(i) = route_first.resolve(v4("198.19.1.1")) else { panic!("resolved") };
        assert_eq!(route_first.hop(i).unwrap().dst_mac, [2, 0, 0, 0, 2, 253]);
    }

    #[test]
    fn routed_destination_uses_gateway_mac() {
        let t = table();
        let Resolution::Hop(i) = t.resolve(v4("198.18.70.5")) else { panic!() };
        assert_eq!(t.hop(i).unwrap().dst_mac, [2, 0, 0, 0, 2, 254]);
    }

    #[test]
    fn unknown_neighbour_and_no_route() {
        let t = table();
        assert_eq!(t.resolve(v4("198.18.1.7")), Resolution::Unresolved { port: 0, via: v4("198.18.1.7") });
        assert_eq!(t.resolve(v4("198.19.9.9")), Resolution::NoRoute);
        assert_eq!(t.port_addr(1), Some(v4("198.18.2.1")));
    }

    #[test]
    fn ipv6_connected_and_routed() {
        let t = table();
        let Resolution::Hop(i) = t.resolve(v6("2001:2:0:2::a")) else { panic!() };
        assert_eq!(t.hop(i), Some(&NextHop::new(1, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 6, 10])));
        // 2001:2:0:40::/58 via the router's NDP-resolved MAC.
        let Resolution::Hop(i) = t.resolve(v6("2001:2:0:7f::9")) else { panic!() };
        assert_eq!(t.hop(i).unwrap().dst_mac, [2, 0, 0, 0, 6, 254]);
        assert_eq!(t.hop(i).unwrap().port, 1);
        // Outside the /58: no route (2001:2:0:80:: is the next /58).
        assert_eq!(t.resolve(v6("2001:2:0:80::1")), Resolution::NoRoute);
    }

    #[test]
    fn ipv6_unresolved_and_port_addresses() {
        let t = table();
        assert_eq!(t.resolve(v6("2001:2:0:1::9")), Resolution::Unresolved { port: 0, via: v6("2001:2:0:1::9") });
        // The first address of the family, whatever the order in the list.
        assert_eq!(t.port_addr::<Ipv6Addr>(0), Some(v6("2001:2:0:1::1")));
        assert_eq!(t.port_addr::<Ipv6Addr>(1), Some(v6("2001:2:0:2::1")));
        assert_eq!(t.port_addr::<Ipv4Addr>(1), Some(v4("198.18.2.1")));
        assert_eq!(t.port_addr::<Ipv6Addr>(2), None);
        // A routed destination whose gateway is not resolved yet.
        let mut u = NextHops::new(2, t.ports().to_vec());
        u.add_route("2001:2:1::/48".parse().unwrap(), v6("2001:2:0:2::fe"));
        assert_eq!(u.resolve(v6("2001:2:1::5")), Resolution::Unresolved { port: 1, via: v6("2001:2:0:2::fe") });
    }

    #[test]
    fn ipv6_longest_prefix_wins() {
        let mut t = table();
        t.add_route("::/0".parse().unwrap(), v6("2001:2:0:1::fe"));
        t.add_route("2001:2:0:40::/64".parse().unwrap(), v6("2001:2:0:1::fe"));
        t.add_neighbour(0, v6("2001:2:0:1::fe"), [2, 0, 0, 0, 1, 254]);
        // /64 beats /58 (added before it) and ::/0.
        let Resolution::Hop(i) = t.resolve(v6("2001:2:0:40::1")) else { panic!() };
        assert_eq!(t.hop(i).unwrap().port, 0);
        // /58 beats ::/0.
        let Resolution::Hop(i) = t.resolve(v6("2001:2:0:41::1")) else { panic!() };
        assert_eq!(t.hop(i).unwrap().port, 1);
        // ::/0 catches the rest; a connected /64 beats every route.
        let Resolution::Hop(i) = t.resolve(v6("2001:2:ff::1")) else { panic!() };
        assert_eq!(t.hop(i).unwrap().dst_mac, [2, 0, 0, 0, 1, 254]);
        assert!(matches!(t.resolve(v6("2001:2:0:2::a")), Resolution::Hop(_)));
    }

    #[test]
    fn ipv6_link_local_gateway_on_its_port() {
        let mut t = table();
        let gw = v6("fe80::1");
        // No port has fe80::/64 among its prefixes: only the pinned port
        // resolves it.
        t.add_route("2001:2:9::/48".parse().unwrap(), gw);
        assert_eq!(t.resolve(v6("2001:2:9::1")), Resolution::NoRoute);
        let mut t = table();
        t.add_route_on("2001:2:9::/48".parse().unwrap(), gw, 1);
        assert_eq!(t.resolve(v6("2001:2:9::1")), Resolution::Unresolved { port: 1, via: gw });
        // The same link-local address on the other port is another neighbour.
        t.add_neighbour(0, gw, [2, 0, 0, 0, 0xfe, 0]);
        assert!(matches!(t.resolve(v6("2001:2:9::1")), Resolution::Unresolved { .. }));
        t.add_neighbour(1, gw, [2, 0, 0, 0, 0xfe, 1]);
        let Resolution::Hop(i) = t.resolve(v6("2001:2:9::1")) else { panic!() };
        assert_eq!(t.hop(i).unwrap().dst_mac, [2, 0, 0, 0, 0xfe, 1]);
    }

    #[test]
    fn families_never_mix() {
        let t = table();
        // An IPv4-mapped address is an IPv6 address: no IPv4 prefix holds it.
        assert_eq!(t.resolve(v6("::ffff:198.18.2.10")), Resolution::NoRoute);
        // Same neighbour index space, distinct entries.
        let Resolution::Hop(a) = t.resolve(v4("198.18.2.10")) else { panic!() };
        let Resolution::Hop(b) = t.resolve(v6("2001:2:0:2::a")) else { panic!() };
        assert_ne!(a, b);
        // Replacing a neighbour keeps its hop index.
        let mut t = t;
        t.add_neighbour(1, v6("2001:2:0:2::a"), [2, 0, 0, 0, 6, 11]);
        assert_eq!(t.resolve(v6("2001:2:0:2::a")), Resolution::Hop(b));
        assert_eq!(t.hop(b).unwrap().dst_mac, [2, 0, 0, 0, 6, 11]);
        assert_eq!(prefix_len::<Ipv6Addr>(&"2001:2::/48".parse().unwrap()), 48);
        assert_eq!(prefix_len::<Ipv4Addr>(&"198.18.0.0/15".parse().unwrap()), 15);
    }
}
