//! Kernel state over rtnetlink: interfaces, IPv4 and IPv6 addresses,
//! neighbours and routes (the raw material of the NAT's next-hop table),
//! neighbour resolution, and XDP attachment queries.
//!
//! Synchronous request/response on a `NETLINK_ROUTE` socket of the calling
//! thread's network namespace; control path only (never called per packet).
//!
//! IPv6 next hops come from the kernel's neighbour cache exactly as IPv4's
//! do: the kernel runs NDP (solicitations, advertisements, router discovery;
//! the XDP program never steers those to the workers) and svcgate only reads
//! the result (`RTM_GETNEIGH`/`RTM_GETROUTE` with family `AF_INET6`) or asks
//! for a resolution ([`resolve_neighbour`]). The per-family lists are typed
//! by their address ([`Neighbour<A>`], [`Route<A>`]); the lookups are generic
//! over [`Addr`] and pick their family's list.

use std::any::Any;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use svcgate_common::family::Addr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::XskError;

/// One interface as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Interface index.
    pub ifindex: u32,
    /// Name.
    pub name: String,
    /// MAC address (all zeroes when the link has none).
    pub mac: [u8; 6],
    /// IPv4 addresses with their prefix lengths.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// IPv6 addresses with their prefix lengths, link-local ones included;
    /// addresses still in duplicate address detection (tentative) or that
    /// failed it are left out: the kernel does not use them either.
    pub addrs6: Vec<(Ipv6Addr, u8)>,
}

impl Interface {
    /// The addresses of family `A` with their prefix lengths.
    pub fn addrs_of<A: Addr>(&self) -> impl Iterator<Item = (A, u8)> + '_ {
        let v4 = self.addrs.iter().map(|&(a, l)| (IpAddr::V4(a), l));
        let v6 = self.addrs6.iter().map(|&(a, l)| (IpAddr::V6(a), l));
        v4.chain(v6).filter_map(|(a, l)| Some((A::from_ip(a)?, l)))
    }
}

/// Neighbour cache state, simplified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighState {
    /// The MAC is known and usable (REACHABLE, STALE, DELAY, PROBE,
    /// PERMANENT, NOARP).
    Usable,
    /// Resolution in progress.
    Incomplete,
    /// Resolution failed.
    Failed,
    /// Anything else (NONE).
    Other,
}

/// One neighbour (ARP entry for IPv4, NDP entry for IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour<A = Ipv4Addr> {
    /// Interface index.
    pub ifindex: u32,
    /// Its address.
    pub ip: A,
    /// MAC, if known.
    pub mac: Option<[u8; 6]>,
    /// State.
    pub state: NeighState,
}

/// One unicast route of the main table. IPv6 routes learnt from router
/// advertisements usually have a link-local gateway: only `oif` tells its
/// link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<A = Ipv4Addr> {
    /// Destination prefix.
    pub dst: A,
    /// Prefix length.
    pub prefix_len: u8,
    /// Gateway, if not on-link.
    pub gateway: Option<A>,
    /// Output interface.
    pub oif: Option<u32>,
}

/// A snapshot of the kernel's view, which `gateway::next_hops_from_kernel` turns into the
/// NAT's next-hop table. Refresh by calling [`KernelNet::read`] again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelNet {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// IPv4 neighbours.
    pub neighbours: Vec<Neighbour>,
    /// IPv4 routes (main table, unicast).
    pub routes: Vec<Route>,
    /// IPv6 neighbours (the NDP cache).
    pub neighbours6: Vec<Neighbour<Ipv6Addr>>,
    /// IPv6 routes (main table, unicast; multipath routes are left out).
    pub routes6: Vec<Route<Ipv6Addr>>,
}

/// A neighbour cache entry of either family, as decoded.
type AnyNeighbour = Neighbour<IpAddr>;

/// Decodes one `RTM_NEWNEIGH` of either family; `None` for an entry without
/// a destination address.
fn decode_neighbour(n: &NeighbourMessage) -> Option<AnyNeighbour> {
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(IpAddr::V4(*v)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => ip = Some(IpAddr::V6(*v)),
            NeighbourAttribute::LinkLocalAddress(b) if b.len() == 6 => {
                let mut m = [0; 6];
                m.copy_from_slice(b);
                mac = Some(m);
            }
            _ => {}
        }
    }
    let state = match n.header.state {
        NeighbourState::Reachable
        | NeighbourState::Stale
        | NeighbourState::Delay
        | NeighbourState::Probe
        | NeighbourState::Permanent
        | NeighbourState::Noarp => NeighState::Usable,
        NeighbourState::Incomplete => NeighState::Incomplete,
        NeighbourState::Failed => NeighState::Failed,
        _ => NeighState::Other,
    };
    Some(Neighbour { ifindex: n.header.ifindex, ip: ip?, mac, state })
}

/// Decodes one `RTM_NEWROUTE` of either family: `None` unless it is a
/// unicast route of the main table (`RT_TABLE_MAIN` = 254) with one next
/// hop.
fn decode_route(r: &RouteMessage) -> Option<Route<IpAddr>> {
    if r.header.kind != RouteType::Unicast {
        return None; // local, broadcast, multicast, unreachable...
    }
    let unspecified = match r.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut route =
        Route { dst: unspecified, prefix_len: r.header.destination_prefix_length, gateway: None, oif: None };
    let mut table = u32::from(r.header.table);
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => route.dst = IpAddr::V4(*d),
            RouteAttribute::Destination(RouteAddress::Inet6(d)) => route.dst = IpAddr::V6(*d),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.gateway = Some(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => route.gateway = Some(IpAddr::V6(*g)),
            RouteAttribute::Oif(o) => route.oif = Some(*o),
            RouteAttribute::Table(t) => table = *t,
            // ECMP: several gateways, none of which is "the" next hop; the
            // kernel still forwards what the workers pass to it.
            RouteAttribute::MultiPath(_) => return None,
            _ => {}
        }
    }
    (table == 254).then_some(route)
}

impl<A: Addr> Neighbour<A> {
    fn narrow(n: AnyNeighbour) -> Option<Self> {
        Some(Neighbour { ifindex: n.ifindex, ip: A::from_ip(n.ip)?, mac: n.mac, state: n.state })
    }
}

impl<A: Addr> Route<A> {
    fn narrow(r: Route<IpAddr>) -> Option<Self> {
        let gateway = match r.gateway {
            Some(g) => Some(A::from_ip(g)?),
            None => None,
        };
        Some(Route { dst: A::from_ip(r.dst)?, prefix_len: r.prefix_len, gateway, oif: r.oif })
    }
}

/// The list of `T<A>` among an IPv4 and an IPv6 list. The two fields keep
/// their IPv4-era names (`neighbours`, `routes`), so they cannot be one
/// `PerFamily` value; `Addr` being implemented by `Ipv4Addr` and `Ipv6Addr`
/// only, one of the two downcasts always succeeds.
fn of_family<'a, L4: Any, L6: Any, TA: Any>(v4: &'a L4, v6: &'a L6) -> &'a [TA] {
    let (v4, v6): (&dyn Any, &dyn Any) = (v4, v6);
    v4.downcast_ref::<Vec<TA>>().or_else(|| v6.downcast_ref::<Vec<TA>>()).map_or(&[], Vec::as_slice)
}

/// True when `ip`'s first `len` bits equal `net`'s (both of one family).
fn prefix_matches<A: Addr>(net: A, len: u8, ip: A) -> bool {
    let bits = if A::FAMILY == svcgate_common::family::IpFamily::V4 { 32 } else { 128 };
    let len = u32::from(len).min(bits);
    if len == 0 {
        return true;
    }
    // Both widened to 128 bits, right-aligned: compare the top `len` of `bits`.
    let shift = bits - len;
    (net.to_bits128() >> shift) == (ip.to_bits128() >> shift)
}

impl KernelNet {
    /// Dumps links, addresses, neighbours and routes.
    pub fn read() -> Result<Self, XskError> {
        let mut nl = Netlink::open()?;
        let mut me = KernelNet::default();
        for m in nl.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), "dump links")? {
            if let RouteNetlinkMessage::NewLink(l) = m {
                let mut iface = Interface {
                    ifindex: l.header.index,
                    name: String::new(),
                    mac: [0; 6],
                    addrs: vec![],
                    addrs6: vec![],
                };
                for a in l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => iface.name = n,
                        LinkAttribute::Address(b) if b.len() == 6 => iface.mac.copy_from_slice(&b),
                        _ => {}
                    }
                }
                me.interfaces.push(iface);
            }
        }
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut am = AddressMessage::default();
            am.header.family = family;
            for m in nl.dump(RouteNetlinkMessage::GetAddress(am), "dump addresses")? {
                if let RouteNetlinkMessage::NewAddress(a) = m {
                    // IFA_LOCAL is the address of a point-to-point link's own
                    // end; IFA_ADDRESS otherwise (and always for IPv6).
                    let local = a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    });
                    let ip = local.or_else(|| {
                        a.attributes.iter().find_map(|x| match x {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    });
                    let unusable = AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed;
                    let Some(i) = me.interfaces.iter_mut().find(|i| i.ifindex == a.header.index) else { continue };
                    match ip {
                        Some(IpAddr::V4(ip)) => i.addrs.push((ip, a.header.prefix_len)),
                        Some(IpAddr::V6(ip)) if !a.header.flags.intersects(unusable) => {
                            i.addrs6.push((ip, a.header.prefix_len))
                        }
                        _ => {}
                    }
                }
            }
        }
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut nm = NeighbourMessage::default();
            nm.header.family = family;
            for m in nl.dump(RouteNetlinkMessage::GetNeighbour(nm), "dump neighbours")? {
                if let RouteNetlinkMessage::NewNeighbour(n) = m {
                    me.push_neighbour(decode_neighbour(&n));
                }
            }
        }
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut rm = RouteMessage::default();
            rm.header.address_family = family;
            for m in nl.dump(RouteNetlinkMessage::GetRoute(rm), "dump routes")? {
                if let RouteNetlinkMessage::NewRoute(r) = m {
                    me.push_route(decode_route(&r));
                }
            }
        }
        Ok(me)
    }

    /// Files a decoded neighbour under its family.
    fn push_neighbour(&mut self, n: Option<AnyNeighbour>) {
        let Some(n) = n else { return };
        match n.ip {
            IpAddr::V4(_) => self.neighbours.extend(Neighbour::narrow(n)),
            IpAddr::V6(_) => self.neighbours6.extend(Neighbour::narrow(n)),
        }
    }

    /// Files a decoded route under its family.
    fn push_route(&mut self, r: Option<Route<IpAddr>>) {
        let Some(r) = r else { return };
        match r.dst {
            IpAddr::V4(_) => self.routes.extend(Route::narrow(r)),
            IpAddr::V6(_) => self.routes6.extend(Route::narrow(r)),
        }
    }

    /// The neighbours of family `A`: `neighbours` or `neighbours6`.
    pub fn neighbours_of<A: Addr>(&self) -> &[Neighbour<A>] {
        of_family(&self.neighbours, &self.neighbours6)
    }

    /// The routes of family `A`: `routes` or `routes6`.
    pub fn routes_of<A: Addr>(&self) -> &[Route<A>] {
        of_family(&self.routes, &self.routes6)
    }

    /// The interface named `name`.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The usable MAC of neighbour `ip` (either family) on `ifindex`.
    pub fn neighbour_mac<A: Addr>(&self, ifindex: u32, ip: A) -> Option<[u8; 6]> {
        self.neighbours_of::<A>()
            .iter()
            .find(|n| n.ifindex == ifindex && n.ip == ip && n.state == NeighState::Usable)
            .and_then(|n| n.mac)
    }

    /// Longest-prefix match among the routes of `dst`'s family: `(oif, next
    /// hop)`; the next hop is the gateway, or `dst` itself for an on-link
    /// route.
    pub fn route<A: Addr>(&self, dst: A) -> Option<(u32, A)> {
        self.routes_of::<A>()
            .iter()
            .filter(|r| prefix_matches(r.dst, r.prefix_len, dst))
            .max_by_key(|r| r.prefix_len)
            .and_then(|r| Some((r.oif?, r.gateway.unwrap_or(dst))))
    }
}

/// Asks the kernel to resolve `ip` (either family) on `ifindex` without
/// sending any data to it: an `RTM_NEWNEIGH` with `NTF_USE` (`ip neigh
/// replace IP dev X use`), which creates the entry if needed and starts
/// resolution like a packet would: ARP for IPv4, an NDP neighbour
/// solicitation for IPv6 (the kernel's `neigh_event_send` is the same for
/// both tables). Needs `CAP_NET_ADMIN`.
pub fn resolve_neighbour<A: Addr>(ifindex: u32, ip: A) -> Result<(), XskError> {
    let mut nl = Netlink::open()?;
    nl.ack(
        RouteNetlinkMessage::NewNeighbour(resolve_request(ifindex, ip.into())),
        NLM_F_CREATE | NLM_F_REPLACE,
        "resolve neighbour",
    )
}

/// The `RTM_NEWNEIGH` body of [`resolve_neighbour`].
fn resolve_request(ifindex: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.ifindex = ifindex;
    m.header.flags = NeighbourFlags::Use;
    m.header.state = NeighbourState::None;
    let (family, dst) = match ip {
        IpAddr::V4(v) => (AddressFamily::Inet, NeighbourAddress::Inet(v)),
        IpAddr::V6(v) => (AddressFamily::Inet6, NeighbourAddress::Inet6(v)),
    };
    m.header.family = family;
    m.attributes.push(NeighbourAttribute::Destination(dst));
    m
}

/// Which XDP program (id) is attached to `ifindex`, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpAttachment {
    /// Program id.
    pub prog_id: u32,
    /// "native", "generic", "offload" or "multi".
    pub mode: &'static str,
}

/// The XDP program attached to `ifindex`, if any.
pub fn xdp_attachment(ifindex: u32) -> Result<Option<XdpAttachment>, XskError> {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    let mut nl = Netlink::open()?;
    let replies = nl.request(RouteNetlinkMessage::GetLink(m), 0, "get link")?;
    for r in replies {
        if let RouteNetlinkMessage::NewLink(l) = r {
            for a in l.attributes {
                if let LinkAttribute::Xdp(x) = a {
                    let mut mode = None;
                    let mut id = 0;
                    for e in x {
                        match e {
                            LinkXdp::Attached(XdpAttached::None) => return Ok(None),
                            LinkXdp::Attached(XdpAttached::Driver) => mode = Some("native"),
                            LinkXdp::Attached(XdpAttached::SocketBuffer) => mode = Some("generic"),
                            LinkXdp::Attached(XdpAttached::Hardware) => mode = Some("offload"),
                            LinkXdp::Attached(_) => mode = Some("multi"),
                            LinkXdp::ProgId(p) => id = p,
                            _ => {}
                        }
                    }
                    return Ok(mode.map(|mode| XdpAttachment { prog_id: id, mode }));
                }
            }
        }
    }
    Ok(None)
}

/// Detaches a netlink-attached (non-link) XDP program of the given mode flags
/// (`XDP_FLAGS_SKB_MODE` = 2, `XDP_FLAGS_DRV_MODE` = 4) from `ifindex`: what
/// `ip link set dev X xdp off` does. Programs attached through a BPF link
/// cannot be removed this way (and die with their owner process anyway).
pub fn xdp_detach_legacy(ifindex: u32, mode_flags: u32) -> Result<(), XskError> {
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    m.attributes.push(LinkAttribute::Xdp(vec![LinkXdp::Fd(-1), LinkXdp::Flags(mode_flags)]));
    let mut nl = Netlink::open()?;
    nl.ack(RouteNetlinkMessage::SetLink(m), 0, "detach XDP")
}

/// A tiny synchronous rtnetlink client.
struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    fn open() -> Result<Self, XskError> {
        let err = |source| XskError::Netlink { op: "open socket", source };
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(err)?;
        sock.bind_auto().map_err(err)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        Ok(Self { sock, seq: 0, buf: vec![0; 1 << 16] })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &'static str) -> Result<u32, XskError> {
        self.seq += 1;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | flags;
        hdr.sequence_number = self.seq;
        let mut nm = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        nm.finalize();
        let mut out = vec![0; nm.buffer_len()];
        nm.serialize(&mut out);
        self.sock.send(&out, 0).map_err(|source| XskError::Netlink { op, source })?;
        Ok(self.seq)
    }

    /// Sends and collects replies until DONE / ACK / a single non-multipart reply.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &'static str,
    ) -> Result<Vec<RouteNetlinkMessage>, XskError> {
        let seq = self.send(msg, flags, op)?;
        let mut out = Vec::new();
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0).map_err(|source| XskError::Netlink { op, source })?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n]).map_err(|e| {
                    XskError::Netlink { op, source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()) }
                })?;
                let len = m.header.length as usize;
                let multipart = m.header.flags & netlink_packet_core::NLM_F_MULTIPART != 0;
                if m.header.sequence_number == seq {
                    match m.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(out),
                                Some(c) => {
                                    Err(XskError::Netlink { op, source: io::Error::from_raw_os_error(-c.get()) })
                                }
                            };
                        }
                        NetlinkPayload::InnerMessage(i) => {
                            out.push(i);
                            if !multipart && flags & NLM_F_ACK == 0 {
                                return Ok(out);
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len.next_multiple_of(4);
            }
        }
    }

    fn dump(&mut self, msg: RouteNetlinkMessage, op: &'static str) -> Result<Vec<RouteNetlinkMessage>, XskError> {
        self.request(msg, NLM_F_DUMP, op)
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &'static str) -> Result<(), XskError> {
        self.request(msg, flags | NLM_F_ACK, op).map(|_| ())
    }
}

/// The index of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Result<u32, XskError> {
    let net = KernelNet::read()?;
    net.interface(name).map(|i| i.ifindex).ok_or_else(|| XskError::UnknownInterface { name: name.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> RouteNetlinkMessage {
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).unwrap();
        assert_eq!(m.header.length as usize, bytes.len());
        match m.payload {
            NetlinkPayload::InnerMessage(i) => i,
            other => panic!("{other:?}"),
        }
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// An NDP cache entry as the kernel dumps it (`ip -6 neigh`:
    /// 2001:2:0:2::a dev #3 lladdr 02:00:00:00:06:0a REACHABLE).
    #[rustfmt::skip]
    const NEIGH6: [u8; 60] = [
        60, 0, 0, 0, 28, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr: RTM_NEWNEIGH, NLM_F_MULTI
        10, 0, 0, 0, 3, 0, 0, 0, 0x02, 0, 0, 1,           // ndmsg: AF_INET6, ifindex 3, NUD_REACHABLE, type unicast
        20, 0, 1, 0, 0x20, 0x01, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x0a, // NDA_DST
        10, 0, 2, 0, 2, 0, 0, 0, 6, 0x0a, 0, 0,           // NDA_LLADDR (padded)
    ];

    /// An IPv6 route through a link-local gateway (`ip -6 route`:
    /// 2001:2:9::/48 via fe80::1 dev #3 table main).
    #[rustfmt::skip]
    const ROUTE6: [u8; 84] = [
        84, 0, 0, 0, 24, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr: RTM_NEWROUTE
        10, 48, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0,           // rtmsg: AF_INET6 /48, main, boot, universe, unicast
        8, 0, 15, 0, 254, 0, 0, 0,                        // RTA_TABLE 254
        20, 0, 1, 0, 0x20, 0x01, 0, 2, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // RTA_DST
        20, 0, 5, 0, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // RTA_GATEWAY
        8, 0, 4, 0, 3, 0, 0, 0,                           // RTA_OIF 3
    ];

    #[test]
    fn decodes_an_ndp_neighbour() {
        let RouteNetlinkMessage::NewNeighbour(n) = parse(&NEIGH6) else { panic!() };
        let mut k = KernelNet::default();
        k.push_neighbour(decode_neighbour(&n));
        assert!(k.neighbours.is_empty());
        assert_eq!(
            k.neighbours6,
            vec![Neighbour {
                ifindex: 3,
                ip: v6("2001:2:0:2::a"),
                mac: Some([2, 0, 0, 0, 6, 10]),
                state: NeighState::Usable
            }]
        );
        assert_eq!(k.neighbour_mac(3, v6("2001:2:0:2::a")), Some([2, 0, 0, 0, 6, 10]));
        assert_eq!(k.neighbour_mac(4, v6("2001:2:0:2::a")), None);
        // An IPv4 lookup never sees it.
        assert_eq!(k.neighbour_mac(3, Ipv4Addr::new(198, 18, 2, 10)), None);
        // The same entry INCOMPLETE (resolution under way) has no usable MAC.
        let mut inc = NEIGH6;
        inc[24] = 0x01; // NUD_INCOMPLETE
        let RouteNetlinkMessage::NewNeighbour(n) = parse(&inc) else { panic!() };
        assert_eq!(decode_neighbour(&n).unwrap().state, NeighState::Incomplete);
    }

    #[test]
    fn decodes_an_ipv6_route_and_matches_longest_prefix() {
        let RouteNetlinkMessage::NewRoute(r) = parse(&ROUTE6) else { panic!() };
        let mut k = KernelNet::default();
        k.push_route(decode_route(&r));
        let gw = v6("fe80::1");
        assert_eq!(k.routes6, vec![Route { dst: v6("2001:2:9::"), prefix_len: 48, gateway: Some(gw), oif: Some(3) }]);
        assert!(k.routes.is_empty());
        // A connected /64 of another link inside it, and a default route.
        k.routes6.push(Route { dst: v6("2001:2:9:1::"), prefix_len: 64, gateway: None, oif: Some(4) });
        k.routes6.push(Route { dst: Ipv6Addr::UNSPECIFIED, prefix_len: 0, gateway: Some(v6("fe80::2")), oif: Some(5) });
        assert_eq!(k.route(v6("2001:2:9::5")), Some((3, gw)));
        assert_eq!(k.route(v6("2001:2:9:1::5")), Some((4, v6("2001:2:9:1::5"))));
        assert_eq!(k.route(v6("2001:2:a::1")), Some((5, v6("fe80::2"))));
        assert_eq!(k.route(Ipv4Addr::new(198, 18, 0, 1)), None);
        // Another table (local, 255) is not the main one.
        let mut local = ROUTE6;
        local[20] = 255; // rtm_table
        local[32] = 255; // RTA_TABLE
        let RouteNetlinkMessage::NewRoute(r) = parse(&local) else { panic!() };
        assert_eq!(decode_route(&r), None);
    }

    #[test]
    fn interface_addresses_by_family() {
        let i = Interface {
            ifindex: 3,
            name: "g1".into(),
            mac: [2, 0, 0, 0, 0, 2],
            addrs: vec![(Ipv4Addr::new(198, 18, 2, 1), 24)],
            addrs6: vec![(v6("fe80::2"), 64), (v6("2001:2:0:2::1"), 64)],
        };
        assert_eq!(i.addrs_of::<Ipv4Addr>().collect::<Vec<_>>(), vec![(Ipv4Addr::new(198, 18, 2, 1), 24)]);
        assert_eq!(i.addrs_of::<Ipv6Addr>().collect::<Vec<_>>(), vec![(v6("fe80::2"), 64), (v6("2001:2:0:2::1"), 64)]);
    }

    #[test]
    fn ipv4_prefix_matching_unchanged() {
        let mut k = KernelNet::default();
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        k.routes.push(Route { dst: a("198.18.0.0"), prefix_len: 15, gateway: Some(a("198.18.9.254")), oif: Some(2) });
        k.routes.push(Route { dst: a("198.18.9.0"), prefix_len: 24, gateway: None, oif: Some(2) });
        assert_eq!(k.route(a("198.18.9.7")), Some((2, a("198.18.9.7"))));
        assert_eq!(k.route(a("198.19.1.1")), Some((2, a("198.18.9.254"))));
        assert_eq!(k.route(a("198.20.0.1")), None);
    }

    /// `resolve_neighbour` for IPv6 sends what `ip -6 neigh replace ADDR dev
    /// X use` does: family AF_INET6, state NUD_NONE, flags NTF_USE, NDA_DST
    /// of 16 bytes.
    #[test]
    fn encodes_an_ipv6_resolution_request() {
        let m = resolve_request(7, v6("2001:2:0:2::a").into());
        let mut nm =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(RouteNetlinkMessage::NewNeighbour(m)));
        nm.finalize();
        let mut out = vec![0; nm.buffer_len()];
        nm.serialize(&mut out);
        assert_eq!(out.len(), 16 + 12 + 20);
        assert_eq!(&out[4..6], &28u16.to_ne_bytes()); // RTM_NEWNEIGH
        let nd = &out[16..28];
        assert_eq!(nd[0], 10); // AF_INET6
        assert_eq!(&nd[4..8], &7i32.to_ne_bytes()); // ifindex
        assert_eq!(&nd[8..10], &0u16.to_ne_bytes()); // NUD_NONE
        assert_eq!(nd[10], 0x01); // NTF_USE
        assert_eq!(&out[28..32], &[20, 0, 1, 0]); // NDA_DST, 16 bytes
        assert_eq!(&out[32..48], &v6("2001:2:0:2::a").octets());
        // IPv4 unchanged: AF_INET, 4-byte NDA_DST.
        let m = resolve_request(7, Ipv4Addr::new(198, 18, 9, 2).into());
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert_eq!(
            m.attributes,
            vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(198, 18, 9, 2)))]
        );
    }
}
