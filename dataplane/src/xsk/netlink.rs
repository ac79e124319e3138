//! Kernel state over rtnetlink: interfaces, IPv4 addresses, neighbours and
//! routes (the raw material of the NAT's next-hop table), neighbour
//! resolution, and XDP attachment queries.
//!
//! Synchronous request/response on a `NETLINK_ROUTE` socket of the calling
//! thread's network namespace; control path only (never called per packet).

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
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

/// One IPv4 neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface index.
    pub ifindex: u32,
    /// IPv4 address.
    pub ip: Ipv4Addr,
    /// MAC, if known.
    pub mac: Option<[u8; 6]>,
    /// State.
    pub state: NeighState,
}

/// One IPv4 unicast route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub dst: Ipv4Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Gateway, if not on-link.
    pub gateway: Option<Ipv4Addr>,
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
}

impl KernelNet {
    /// Dumps links, addresses, neighbours and routes.
    pub fn read() -> Result<Self, XskError> {
        let mut nl = Netlink::open()?;
        let mut me = KernelNet::default();
        for m in nl.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), "dump links")? {
            if let RouteNetlinkMessage::NewLink(l) = m {
                let mut iface = Interface { ifindex: l.header.index, name: String::new(), mac: [0; 6], addrs: vec![] };
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
        let mut am = AddressMessage::default();
        am.header.family = AddressFamily::Inet;
        for m in nl.dump(RouteNetlinkMessage::GetAddress(am), "dump addresses")? {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                let ip = a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                let ip = ip.or_else(|| {
                    a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    })
                });
                if let (Some(ip), Some(i)) = (ip, me.interfaces.iter_mut().find(|i| i.ifindex == a.header.index)) {
                    i.addrs.push((ip, a.header.prefix_len));
                }
            }
        }
        let mut nm = NeighbourMessage::default();
        nm.header.family = AddressFamily::Inet;
        for m in nl.dump(RouteNetlinkMessage::GetNeighbour(nm), "dump neighbours")? {
            if let RouteNetlinkMessage::NewNeighbour(n) = m {
                let mut ip = None;
                let mut mac = None;
                for a in &n.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(*v),
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
                if let Some(ip) = ip {
                    me.neighbours.push(Neighbour { ifindex: n.header.ifindex, ip, mac, state });
                }
            }
        }
        let mut rm = RouteMessage::default();
        rm.header.address_family = AddressFamily::Inet;
        for m in nl.dump(RouteNetlinkMessage::GetRoute(rm), "dump routes")? {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                // RT_TABLE_MAIN = 254; unicast only (skip local/broadcast).
                if r.header.kind != RouteType::Unicast {
                    continue;
                }
                let mut route = Route {
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix_len: r.header.destination_prefix_length,
                    gateway: None,
                    oif: None,
                };
                let mut table = u32::from(r.header.table);
                for a in r.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => route.dst = d,
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => route.gateway = Some(g),
                        RouteAttribute::Oif(o) => route.oif = Some(o),
                        RouteAttribute::Table(t) => table = t,
                        _ => {}
                    }
                }
                if table == 254 {
                    me.routes.push(route);
                }
            }
        }
        Ok(me)
    }

    /// The interface named `name`.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The usable MAC of neighbour `ip` on `ifindex`.
    pub fn neighbour_mac(&self, ifindex: u32, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.neighbours
            .iter()
            .find(|n| n.ifindex == ifindex && n.ip == ip && n.state == NeighState::Usable)
            .and_then(|n| n.mac)
    }

    /// Longest-prefix match: `(oif, next hop)` for `dst`; the next hop is the
    /// gateway, or `dst` itself for an on-link route.
    pub fn route(&self, dst: Ipv4Addr) -> Option<(u32, Ipv4Addr)> {
        let d = u32::from(dst);
        self.routes
            .iter()
            .filter(|r| {
                let mask = if r.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(r.prefix_len.min(32))) };
                d & mask == u32::from(r.dst) & mask
            })
            .max_by_key(|r| r.prefix_len)
            .and_then(|r| Some((r.oif?, r.gateway.unwrap_or(dst))))
    }
}

/// Asks the kernel to resolve `ip` on `ifindex` without sending any data to
/// it: an `RTM_NEWNEIGH` with `NTF_USE` (`ip neigh replace IP dev X use`),
/// which creates the entry if needed and starts ARP like a packet would.
pub fn resolve_neighbour(ifindex: u32, ip: Ipv4Addr) -> Result<(), XskError> {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = ifindex;
    m.header.flags = NeighbourFlags::Use;
    m.header.state = NeighbourState::None;
    m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    let mut nl = Netlink::open()?;
    nl.ack(RouteNetlinkMessage::NewNeighbour(m), NLM_F_CREATE | NLM_F_REPLACE, "resolve neighbour")
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
