//! What the pipeline does differently for IPv4 and IPv6.
//!
//! The decisions (established, new flow, reply, revalidation, reclaim) are
//! written once, generic over [`NatFamily`], and run for both families;
//! this file holds what a family changes: how a frame is parsed, how the
//! addresses are rewritten and the checksums patched, how a RST or an ICMP
//! error is built, which hashes place a flow, and which half of each table
//! (flow table, reverse table, Service table, next hops) is the family's.
//! A frame is served in its own family only: no NAT46/64.
//!
//! IPv6 against IPv4: no header checksum (the hop limit is decremented
//! without a delta), 16-byte addresses in the L4 pseudo-header deltas, a
//! UDP checksum of 0 is invalid (dropped as malformed, never forwarded),
//! extension headers walked to the transport header (`wire::ipv6::walk`),
//! ICMPv6 errors quoting as much as fits in 1280 bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use svcgate_common::family::Addr;
use svcgate_common::hash::flow_hash;

use super::{FamilyState, Fams, Parsed, Shared};
use crate::nat::conntrack::{Flow, FlowEntry, FlowEntry6, FlowKey, FlowMeta, WireAddr};
use crate::nat::nexthop::{NextHop, NextHops, Resolution};
use crate::nat::reverse::ReverseTable;
use crate::nat::verdict::{DropReason, PassReason, Verdict};
use crate::wire::checksum::{self, Delta};
use crate::wire::ethernet::{EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::icmp::{self, Icmpv4Packet};
use crate::wire::icmpv6;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::{ExtError, Ipv6Packet};
use crate::wire::tcp::{flags as tcpf, TcpPacket};
use crate::wire::udp::UdpPacket;
use crate::wire::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// The ICMP errors the pipeline sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IcmpError {
    /// Hop limit / TTL exceeded in transit.
    TimeExceeded,
    /// Port unreachable (a UDP frontend with no endpoint).
    PortUnreachable,
}

/// An address family as the pipeline serves it.
pub(super) trait NatFamily: Addr {
    /// The address as the pipeline carries it (`u32`, `u128`).
    type Raw: WireAddr<Addr = Self>;
    /// The flow-table entry.
    type Entry: Flow<Raw = Self::Raw> + std::ops::Deref<Target = FlowMeta> + std::ops::DerefMut;

    /// The worker's state for this family.
    fn state(f: &Fams) -> &FamilyState<Self>;
    /// The worker's state for this family, to change.
    fn state_mut(f: &mut Fams) -> &mut FamilyState<Self>;
    /// This family's reverse table.
    fn reverse(s: &Shared) -> &ReverseTable<Self::Raw>;

    /// The address of an integer.
    fn addr(r: Self::Raw) -> Self;
    /// Maglev's flow hash of a 5-tuple (fixed constants: every gateway of a
    /// fleet picks the same backend).
    fn flow_hash(k: &FlowKey<Self::Raw>) -> u32;
    /// The address folded to 32 bits for the hashes keyed by one address
    /// (ClientIP affinity, the hop cache): itself for IPv4.
    fn fold32(r: Self::Raw) -> u32;
    /// The checksum deltas of rewriting `k`'s tuple to (src, dst, sport,
    /// dport): the IPv4 header's (TTL decrement included; none for IPv6)
    /// and the L4 checksum's.
    fn deltas(k: &FlowKey<Self::Raw>, src: Self::Raw, dst: Self::Raw, sport: u16, dport: u16) -> (Delta, Delta);
    /// Rewrites a parsed frame's addresses, ports, TTL / hop limit and MACs
    /// in place, patching the checksums with the deltas. `false` when the
    /// frame cannot be forwarded as it is (an IPv6 UDP checksum of 0).
    #[allow(clippy::too_many_arguments)]
    fn rewrite(
        buf: &mut [u8],
        p: &Parsed<Self::Raw>,
        src: Self::Raw,
        dst: Self::Raw,
        sport: u16,
        dport: u16,
        ip_delta: Delta,
        l4_delta: Delta,
        hop: &NextHop,
    ) -> bool;
    /// Turns a TCP segment into a RST answering it; the new length.
    fn build_rst(buf: &mut [u8], p: &Parsed<Self::Raw>) -> Option<usize>;
    /// Turns the frame into an ICMP error about it from `src`; the new length.
    fn build_icmp_error(buf: &mut [u8], p: &Parsed<Self::Raw>, kind: IcmpError, src: Self) -> Option<usize>;
    /// The next hop toward `dst`.
    #[inline]
    fn resolve(hops: &NextHops, dst: Self) -> Resolution<Self> {
        hops.resolve(dst)
    }
    /// The address of `port`, the source of the ICMP errors sent from it.
    fn port_addr(hops: &NextHops, port: u16) -> Option<Self> {
        hops.port_addr(port)
    }
}

impl NatFamily for Ipv4Addr {
    type Raw = u32;
    type Entry = FlowEntry;

    #[inline(always)]
    fn state(f: &Fams) -> &FamilyState<Self> {
        &f.v4
    }

    #[inline(always)]
    fn state_mut(f: &mut Fams) -> &mut FamilyState<Self> {
        &mut f.v4
    }

    #[inline(always)]
    fn reverse(s: &Shared) -> &ReverseTable<u32> {
        &s.reverse
    }

    #[inline(always)]
    fn addr(r: u32) -> Self {
        Ipv4Addr::from(r)
    }

    #[inline(always)]
    fn flow_hash(k: &FlowKey) -> u32 {
        flow_hash(k.src, k.dst, k.sport, k.dport, k.proto)
    }

    #[inline(always)]
    fn fold32(r: u32) -> u32 {
        r
    }

    #[inline(always)]
    fn deltas(k: &FlowKey, src: u32, dst: u32, sport: u16, dport: u16) -> (Delta, Delta) {
        deltas(k, src, dst, sport, dport)
    }

    #[inline(always)]
    fn rewrite(
        buf: &mut [u8],
        p: &Parsed,
        src: u32,
        dst: u32,
        sport: u16,
        dport: u16,
        ip_delta: Delta,
        l4_delta: Delta,
        hop: &NextHop,
    ) -> bool {
        rewrite(buf, p, src, dst, sport, dport, ip_delta, l4_delta, hop);
        true
    }

    fn build_rst(buf: &mut [u8], p: &Parsed) -> Option<usize> {
        build_rst(buf, p)
    }

    fn build_icmp_error(buf: &mut [u8], p: &Parsed, kind: IcmpError, src: Self) -> Option<usize> {
        let (t, c) = match kind {
            IcmpError::TimeExceeded => (icmp::kind::TIME_EXCEEDED, icmp::code::TTL_EXCEEDED),
            IcmpError::PortUnreachable => (icmp::kind::DEST_UNREACHABLE, icmp::code::PORT_UNREACHABLE),
        };
        build_icmp_error(buf, p, t, c, src)
    }
}

impl NatFamily for Ipv6Addr {
    type Raw = u128;
    type Entry = FlowEntry6;

    #[inline(always)]
    fn state(f: &Fams) -> &FamilyState<Self> {
        &f.v6
    }

    #[inline(always)]
    fn state_mut(f: &mut Fams) -> &mut FamilyState<Self> {
        &mut f.v6
    }

    #[inline(always)]
    fn reverse(s: &Shared) -> &ReverseTable<u128> {
        &s.reverse6
    }

    #[inline(always)]
    fn addr(r: u128) -> Self {
        Ipv6Addr::from(r)
    }

    /// The IPv4 flow hash of each address folded to 32 bits (the xor of its
    /// four words): as fixed as the IPv4 one, so gateways agree.
    #[inline(always)]
    fn flow_hash(k: &FlowKey<u128>) -> u32 {
        flow_hash(fold(k.src), fold(k.dst), k.sport, k.dport, k.proto)
    }

    #[inline(always)]
    fn fold32(r: u128) -> u32 {
        fold(r)
    }

    #[inline(always)]
    fn deltas(k: &FlowKey<u128>, src: u128, dst: u128, sport: u16, dport: u16) -> (Delta, Delta) {
        let l4 = Delta::new().add128(k.src, src).add128(k.dst, dst).add16(k.sport, sport).add16(k.dport, dport);
        (Delta::new(), l4)
    }

    #[inline(always)]
    fn rewrite(
        buf: &mut [u8],
        p: &Parsed<u128>,
        src: u128,
        dst: u128,
        sport: u16,
        dport: u16,
        _ip_delta: Delta,
        l4_delta: Delta,
        hop: &NextHop,
    ) -> bool {
        let seg = &mut buf[p.l4()..p.end()];
        if p.key.proto == IPPROTO_TCP {
            let mut t = TcpPacket::new_unchecked(seg);
            let c = l4_delta.apply(t.checksum());
            t.set_ports(sport, dport);
            t.set_checksum(c);
        } else {
            let mut u = UdpPacket::new_unchecked(seg);
            // A UDP checksum of 0 is invalid over IPv6 (parse drops it).
            let Some(c) = l4_delta.apply_udp6(u.checksum()) else { return false };
            u.set_ports(sport, dport);
            u.set_checksum(c);
        }
        let mut ip = Ipv6Packet::new_unchecked(&mut buf[p.l3()..]);
        ip.set_hop_limit(p.ttl - 1);
        ip.set_src_u128(src);
        ip.set_dst_u128(dst);
        EthernetFrame::new_unchecked(&mut buf[..p.l3()]).set_addrs(&hop.macs);
        true
    }

    /// As IPv4's (RFC 9293 3.10.7.1), in a 40-byte IPv6 header with no
    /// extension headers (the RST does not repeat the segment's).
    fn build_rst(buf: &mut [u8], p: &Parsed<u128>) -> Option<usize> {
        let rst = rst_answering(buf, p)?;
        let new_len = p.l3() + 40 + 20;
        if buf.len() < new_len {
            return None;
        }
        swap_macs(buf, p.l3());
        let (src, dst) = (p.key.dst.to_be_bytes(), p.key.src.to_be_bytes());
        write_ipv6(&mut buf[p.l3()..p.l3() + 40], 20, IPPROTO_TCP, &src, &dst);
        write_rst(&mut buf[p.l3() + 40..new_len], p, rst);
        let c = checksum::checksum_v6(&src, &dst, IPPROTO_TCP, &buf[p.l3() + 40..new_len]);
        TcpPacket::new_unchecked(&mut buf[p.l3() + 40..new_len]).set_checksum(c);
        Some(new_len)
    }

    fn build_icmp_error(buf: &mut [u8], p: &Parsed<u128>, kind: IcmpError, src: Self) -> Option<usize> {
        let (t, c) = match kind {
            IcmpError::TimeExceeded => (icmpv6::kind::TIME_EXCEEDED, icmpv6::code::HOP_LIMIT_EXCEEDED),
            IcmpError::PortUnreachable => (icmpv6::kind::DEST_UNREACHABLE, icmpv6::code::PORT_UNREACHABLE),
        };
        let n = icmpv6::build_error(&mut buf[p.l3()..], t, c, 0, &src.octets(), 64)?;
        swap_macs(buf, p.l3());
        Some(p.l3() + n)
    }
}

/// An IPv6 address folded to 32 bits for the IPv4 hashes.
#[inline(always)]
const fn fold(a: u128) -> u32 {
    (a >> 96) as u32 ^ (a >> 64) as u32 ^ (a >> 32) as u32 ^ a as u32
}

/// Writes a 40-byte IPv6 header (no extension headers, hop limit 64).
fn write_ipv6(hdr: &mut [u8], payload_len: u16, next_header: u8, src: &[u8; 16], dst: &[u8; 16]) {
    let mut ip = Ipv6Packet::new_unchecked(hdr);
    ip.set_version(6);
    ip.set_traffic_class(0);
    ip.set_flow_label(0);
    ip.set_payload_len(payload_len);
    ip.set_next_header(next_header);
    ip.set_hop_limit(64);
    ip.set_addrs_bytes(src, dst);
}

/// Parses an IPv6 frame whose Ethernet header ends at `l3`: the extension
/// headers walked to TCP or UDP, whose ports are read. Fragments,
/// extension headers it does not take through, and other protocols
/// (ICMPv6: neighbour discovery is the kernel's) go to the kernel;
/// truncated or inconsistent headers, and UDP with a zero checksum, are
/// dropped.
pub(super) fn parse6(frame: &[u8], l3: usize) -> Result<Parsed<u128>, Verdict> {
    let malformed = Verdict::Drop(DropReason::Malformed);
    let ip = Ipv6Packet::new_checked(frame.get(l3..).ok_or(malformed)?).map_err(|_| malformed)?;
    let ul = match ip.upper_layer() {
        Ok(ul) => ul,
        Err(ExtError::Opaque(_)) | Err(ExtError::TooMany) => return Err(Verdict::Pass(PassReason::Ipv6Extension)),
        Err(ExtError::Truncated) | Err(ExtError::Misplaced(_)) => return Err(malformed),
    };
    if ul.fragment.is_some() {
        return Err(Verdict::Pass(PassReason::Fragment));
    }
    if ul.protocol != IPPROTO_TCP && ul.protocol != IPPROTO_UDP {
        return Err(Verdict::Pass(PassReason::NotTcpUdp));
    }
    if ul.segments_left != 0 {
        return Err(Verdict::Pass(PassReason::Ipv6Extension));
    }
    let l4 = l3 + ul.offset;
    let end = l3 + ip.total_len();
    let seg = frame.get(l4..end).ok_or(malformed)?;
    let (sport, dport, tcp_flags) = if ul.protocol == IPPROTO_TCP {
        let t = TcpPacket::new_checked(seg).map_err(|_| malformed)?;
        (t.src_port(), t.dst_port(), t.flags())
    } else {
        let u = UdpPacket::new_checked(seg).map_err(|_| malformed)?;
        if u.checksum() == 0 {
            return Err(malformed);
        }
        (u.src_port(), u.dst_port(), 0)
    };
    let (Ok(l3), Ok(l4), Ok(end)) = (u16::try_from(l3), u16::try_from(l4), u16::try_from(end)) else {
        return Err(malformed);
    };
    Ok(Parsed {
        l3,
        l4,
        end,
        key: FlowKey { src: ip.src_u128(), dst: ip.dst_u128(), sport, dport, proto: ul.protocol },
        ttl: ip.hop_limit(),
        tcp_flags,
    })
}

/// True when the frame (Ethernet header ending at `l3`) is IPv6.
#[inline]
pub(super) fn is_ipv6(frame: &[u8]) -> Option<usize> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    (eth.ethertype() == ETHERTYPE_IPV6).then(|| eth.header_len())
}

// IPv4's wire work (`impl NatFamily for Ipv4Addr` calls these; the fast
// path shares `deltas`).

#[inline(never)]
pub(super) fn parse_general(buf: &[u8], len: usize) -> Result<Parsed, Verdict> {
    let frame = buf.get(..len).ok_or(Verdict::Drop(DropReason::Malformed))?;
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Verdict::Drop(DropReason::Malformed))?;
    if eth.ethertype() != ETHERTYPE_IPV4 {
        return Err(Verdict::Pass(PassReason::NotIp));
    }
    let l3 = eth.header_len();
    let ip = Ipv4Packet::new_checked(&frame[l3..]).map_err(|_| Verdict::Drop(DropReason::Malformed))?;
    let proto = ip.protocol();
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Err(Verdict::Pass(PassReason::NotTcpUdp));
    }
    if ip.is_fragment() {
        return Err(Verdict::Pass(PassReason::Fragment));
    }
    let l4 = l3 + ip.header_len();
    let end = l3 + usize::from(ip.total_len());
    let seg = &frame[l4..end];
    let (sport, dport, tcp_flags) = if proto == IPPROTO_TCP {
        let t = TcpPacket::new_checked(seg).map_err(|_| Verdict::Drop(DropReason::Malformed))?;
        (t.src_port(), t.dst_port(), t.flags())
    } else {
        let u = UdpPacket::new_checked(seg).map_err(|_| Verdict::Drop(DropReason::Malformed))?;
        (u.src_port(), u.dst_port(), 0)
    };
    // Frames are at most a UMEM chunk (4 KiB), so offsets fit in u16.
    let (Ok(l3), Ok(l4), Ok(end)) = (u16::try_from(l3), u16::try_from(l4), u16::try_from(end)) else {
        return Err(Verdict::Drop(DropReason::Malformed));
    };
    Ok(Parsed {
        l3,
        l4,
        end,
        key: FlowKey { src: ip.src_u32(), dst: ip.dst_u32(), sport, dport, proto },
        ttl: ip.ttl(),
        tcp_flags,
    })
}

/// Rewrites addresses, ports, TTL and MACs of a parsed frame in place:
/// three block writes (MAC pair, address pair, port pair), the TTL, and two
/// checksum updates with precomputed deltas.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn rewrite(
    buf: &mut [u8],
    p: &Parsed,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    ip_delta: Delta,
    l4_delta: Delta,
    hop: &NextHop,
) {
    EthernetFrame::new_unchecked(&mut buf[..p.l3()]).set_addrs(&hop.macs);
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[p.l3()..p.l4()]);
        // `ip_delta` already holds the TTL decrement (see `deltas`).
        let c = ip_delta.apply(ip.checksum());
        ip.set_ttl(p.ttl - 1);
        ip.set_addrs_u32(src, dst);
        ip.set_checksum(c);
    }
    let seg = &mut buf[p.l4()..p.end()];
    if p.key.proto == IPPROTO_TCP {
        let mut t = TcpPacket::new_unchecked(seg);
        let c = l4_delta.apply(t.checksum());
        t.set_ports(sport, dport);
        t.set_checksum(c);
    } else {
        let mut u = UdpPacket::new_unchecked(seg);
        let c = l4_delta.apply_udp(u.checksum());
        u.set_ports(sport, dport);
        u.set_checksum(c);
    }
}

/// Decrementing the TTL lowers the IPv4 header word (TTL, protocol) by
/// 0x0100 whatever its value (TTL >= 1, so no borrow), so its checksum
/// adjustment is a constant (RFC 1141) that can be folded into each flow's
/// precomputed delta.
const TTL_DECREMENT: Delta = Delta::new().add16(0x0100, 0x0000);

/// The checksum deltas of rewriting (src, dst, sport, dport) from `k`'s
/// tuple: the IPv4 header's (TTL decrement included) and the L4 checksum's
/// (pseudo-header addresses and ports).
#[inline(always)]
pub(super) fn deltas(k: &FlowKey, src: u32, dst: u32, sport: u16, dport: u16) -> (Delta, Delta) {
    let addrs = Delta::new().add32(k.src, src).add32(k.dst, dst);
    let l4 = addrs.add16(k.sport, sport).add16(k.dport, dport);
    (addrs.combine(TTL_DECREMENT), l4)
}

/// Turns a TCP segment into a RST answering it (RFC 9293 3.10.7.1), sent
/// from the address and port it was addressed to. Returns the new length.
fn build_rst(buf: &mut [u8], p: &Parsed) -> Option<usize> {
    let rst = rst_answering(buf, p)?;
    let new_len = p.l3() + 40;
    if buf.len() < new_len {
        return None;
    }
    swap_macs(buf, p.l3());
    let (src, dst) = (Ipv4Addr::from(p.key.dst), Ipv4Addr::from(p.key.src));
    write_ipv4(&mut buf[p.l3()..p.l3() + 20], 40, IPPROTO_TCP, src, dst);
    write_rst(&mut buf[p.l3() + 20..new_len], p, rst);
    TcpPacket::new_unchecked(&mut buf[p.l3() + 20..new_len]).fill_checksum(src, dst);
    Some(new_len)
}

/// The sequence number, acknowledgment number and flags of the RST that
/// answers the TCP segment of `p` (RFC 9293 3.10.7.1): the segment's
/// acknowledgment as sequence number when it has one, else sequence 0 and
/// an acknowledgment of everything it carried (SYN and FIN count one).
fn rst_answering<R>(buf: &[u8], p: &Parsed<R>) -> Option<(u32, u32, u8)> {
    let t = TcpPacket::new_checked(&buf[p.l4()..p.end()]).ok()?;
    if t.flags() & tcpf::ACK != 0 {
        return Some((t.ack_number(), 0, tcpf::RST));
    }
    let mut seg_len = t.payload().len() as u32;
    if t.flags() & tcpf::SYN != 0 {
        seg_len += 1;
    }
    if t.flags() & tcpf::FIN != 0 {
        seg_len += 1;
    }
    Some((0, t.seq_number().wrapping_add(seg_len), tcpf::RST | tcpf::ACK))
}

/// Writes, over the 20 bytes of `seg`, the RST header answering `p` with
/// `(seq, ack, flags)` from [`rst_answering`]; the checksum is the caller's
/// (it covers the family's pseudo-header).
fn write_rst<R>(seg: &mut [u8], p: &Parsed<R>, (seq, ack, flags): (u32, u32, u8)) {
    let mut t = TcpPacket::new_unchecked(seg);
    t.set_src_port(p.key.dport);
    t.set_dst_port(p.key.sport);
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    t.set_flags(flags);
    t.set_header_len(20);
    t.set_window_len(0);
    t.set_urgent_ptr(0);
    t.set_checksum(0);
}

/// Turns the frame into an ICMP error about it (RFC 792: the original IP
/// header and the first 8 bytes of its payload), from `src` to its sender.
fn build_icmp_error(buf: &mut [u8], p: &Parsed, msg_type: u8, code: u8, src: Ipv4Addr) -> Option<usize> {
    let quote = (p.l4() - p.l3() + 8).min(p.end() - p.l3());
    let new_total = 20 + icmp::HEADER_LEN + quote;
    let new_len = p.l3() + new_total;
    if buf.len() < new_len {
        return None;
    }
    buf.copy_within(p.l3()..p.l3() + quote, p.l3() + 28);
    swap_macs(buf, p.l3());
    write_ipv4(&mut buf[p.l3()..p.l3() + 20], new_total as u16, IPPROTO_ICMP, src, Ipv4Addr::from(p.key.src));
    let mut m = Icmpv4Packet::new_unchecked(&mut buf[p.l3() + 20..new_len]);
    m.set_msg_type(msg_type);
    m.set_msg_code(code);
    m.set_rest_of_header(0);
    m.fill_checksum();
    Some(new_len)
}

pub(super) fn swap_macs(buf: &mut [u8], l3: usize) {
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..l3]);
    let (s, d) = (eth.src_addr(), eth.dst_addr());
    eth.set_dst_addr(s);
    eth.set_src_addr(d);
}

fn write_ipv4(hdr: &mut [u8], total: u16, proto: u8, src: Ipv4Addr, dst: Ipv4Addr) {
    let mut ip = Ipv4Packet::new_unchecked(hdr);
    ip.set_version_ihl(4, 20);
    ip.set_dscp_ecn(0);
    ip.set_total_len(total);
    ip.set_ident(0);
    ip.set_flags_frag(true, false, 0);
    ip.set_ttl(64);
    ip.set_protocol(proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
}
