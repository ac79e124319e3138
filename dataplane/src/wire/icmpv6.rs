//! ICMPv6 messages (RFC 4443): the 8-byte header and the rest of the buffer,
//! and [`build_error`], which turns an offending IPv6 packet into the ICMPv6
//! error about it, in place.
//!
//! Unlike ICMPv4, the checksum covers the IPv6 pseudo-header as well
//! (RFC 4443 section 2.3), so [`Icmpv6Packet::verify_checksum`] and
//! [`Icmpv6Packet::fill_checksum`] take the addresses. Wrap exactly the
//! ICMPv6 message (the IPv6 payload after any extension headers).
//!
//! Neighbor Discovery (RFC 4861, types 133 to 137) and Multicast Listener
//! Discovery (130 to 132, 143) are link-local business of the host:
//! [`leave_to_kernel`] says which types the dataplane passes to the kernel
//! untouched.

use super::ipv6::{self, Ipv6Packet};
use super::{checksum, read_u16, read_u32, write_u16, write_u32, Error, Result, IPPROTO_ICMPV6};

/// Length of the ICMPv6 header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// What an error built by [`build_error`] adds in front of the invoking
/// packet: its own IPv6 header and the ICMPv6 header.
pub const ERROR_OVERHEAD: usize = ipv6::HEADER_LEN + HEADER_LEN;

/// The most of the invoking packet an error quotes: the error must not
/// exceed the IPv6 minimum MTU (RFC 4443 section 2.4 (c)).
pub const MAX_QUOTE: usize = ipv6::MIN_MTU - ERROR_OVERHEAD;

/// Message types.
pub mod kind {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (the MTU is the rest of the header).
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem (the pointer is the rest of the header).
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Multicast listener query (MLD, RFC 2710).
    pub const MLD_QUERY: u8 = 130;
    /// Multicast listener report (MLDv1).
    pub const MLD_REPORT: u8 = 131;
    /// Multicast listener done (MLDv1).
    pub const MLD_DONE: u8 = 132;
    /// Router solicitation (NDP).
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement (NDP).
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbor solicitation (NDP).
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor advertisement (NDP).
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Redirect (NDP).
    pub const REDIRECT: u8 = 137;
    /// Version 2 multicast listener report (MLDv2, RFC 3810).
    pub const MLDV2_REPORT: u8 = 143;
}

/// Message codes, meaningful with the type noted on each.
pub mod code {
    /// `DEST_UNREACHABLE`: no route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// `DEST_UNREACHABLE`: communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// `DEST_UNREACHABLE`: beyond the scope of the source address.
    pub const BEYOND_SCOPE: u8 = 2;
    /// `DEST_UNREACHABLE`: address unreachable.
    pub const ADDR_UNREACHABLE: u8 = 3;
    /// `DEST_UNREACHABLE`: port unreachable.
    pub const PORT_UNREACHABLE: u8 = 4;
    /// `DEST_UNREACHABLE`: reject route to destination.
    pub const REJECT_ROUTE: u8 = 6;
    /// `TIME_EXCEEDED`: hop limit exceeded in transit.
    pub const HOP_LIMIT_EXCEEDED: u8 = 0;
    /// `TIME_EXCEEDED`: fragment reassembly time exceeded.
    pub const REASSEMBLY_EXCEEDED: u8 = 1;
    /// `PARAM_PROBLEM`: erroneous header field.
    pub const ERRONEOUS_HEADER: u8 = 0;
    /// `PARAM_PROBLEM`: unrecognized next header type.
    pub const UNRECOGNIZED_NEXT_HEADER: u8 = 1;
    /// `PARAM_PROBLEM`: unrecognized IPv6 option.
    pub const UNRECOGNIZED_OPTION: u8 = 2;
}

/// Whether a message type is an error (types 0 to 127, RFC 4443 section
/// 2.1) rather than an informational message.
#[inline]
pub fn is_error(msg_type: u8) -> bool {
    msg_type < 128
}

/// Whether a message type is Neighbor Discovery (router and neighbor
/// solicitation and advertisement, redirect).
#[inline]
pub fn is_neighbor_discovery(msg_type: u8) -> bool {
    (kind::ROUTER_SOLICIT..=kind::REDIRECT).contains(&msg_type)
}

/// Whether a message type is Multicast Listener Discovery (v1 or v2).
#[inline]
pub fn is_multicast_listener(msg_type: u8) -> bool {
    matches!(msg_type, kind::MLD_QUERY | kind::MLD_REPORT | kind::MLD_DONE | kind::MLDV2_REPORT)
}

/// Whether the dataplane should pass a message of this type to the kernel
/// without looking further: Neighbor Discovery and Multicast Listener
/// Discovery, which the host's own stack answers.
#[inline]
pub fn leave_to_kernel(msg_type: u8) -> bool {
    is_neighbor_discovery(msg_type) || is_multicast_listener(msg_type)
}

mod field {
    use crate::wire::{Field, Rest};

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST_OF_HEADER: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const PAYLOAD: Rest = 8..;
}

/// A read/write wrapper around an ICMPv6 message buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wrap a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wrap a buffer and [`check_len`](Self::check_len) it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if the buffer is shorter than 8 bytes.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type (see [`kind`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The message code (see [`code`]).
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Bytes 4..8 as one big-endian word: the MTU of a packet too big, the
    /// pointer of a parameter problem, unused (0) in the other errors.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST_OF_HEADER)
    }

    /// The identifier of an echo request or reply.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// The sequence number of an echo request or reply.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Everything after the 8-byte header: for an error, as much of the
    /// invoking packet as the sender quoted, from its IPv6 header on.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }

    /// Whether the checksum over the pseudo-header (`src`, `dst`, the buffer
    /// length, next header 58) and the whole buffer is correct.
    #[inline]
    pub fn verify_checksum(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        checksum::verify_v6(src, dst, IPPROTO_ICMPV6, self.buffer.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Set the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Set the message code.
    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Set bytes 4..8.
    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST_OF_HEADER, value);
    }

    /// Set the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, value);
    }

    /// Set the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO, value);
    }

    /// Compute and write the checksum over the pseudo-header and the whole
    /// buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let c = checksum::checksum_v6(src, dst, IPPROTO_ICMPV6, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Everything after the 8-byte header, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// Whether RFC 4443 section 2.4 (e) lets a node answer `invoking` (an IPv6
/// packet, from its header on) with an ICMPv6 error of this type and code.
/// No, if:
///
/// - `invoking` is not a valid IPv6 packet (`Ipv6Packet::check_len`);
/// - its source does not name one node: unspecified (`::`) or multicast
///   (e.6);
/// - its destination is multicast, unless the error is a packet too big or
///   a parameter problem about an unrecognized option (e.3);
/// - it is itself an ICMPv6 error or a redirect (e.1, e.2). A fragment that
///   is not the first does not show its upper layer and is not held
///   against this rule.
///
/// Not checked here, and left to the caller: a link-layer multicast or
/// broadcast destination (e.4), and the rate limit of section 2.4 (f).
pub fn error_allowed(invoking: &[u8], msg_type: u8, code: u8) -> bool {
    let Ok(ip) = Ipv6Packet::new_checked(invoking) else {
        return false;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if src.is_unspecified() || src.is_multicast() {
        return false;
    }
    let multicast_ok =
        msg_type == kind::PACKET_TOO_BIG || (msg_type == kind::PARAM_PROBLEM && code == code::UNRECOGNIZED_OPTION);
    if dst.is_multicast() && !multicast_ok {
        return false;
    }
    match ip.upper_layer() {
        Ok(ul) if ul.protocol == IPPROTO_ICMPV6 && ul.fragment.is_none_or(|f| f.is_first()) => {
            // A message too short to show its type is not answered either.
            invoking.get(ul.offset).is_some_and(|&t| !is_error(t) && t != kind::REDIRECT)
        }
        _ => true,
    }
}

/// Turns the IPv6 packet at the start of `packet` into an ICMPv6 error about
/// it, in place, and returns the length of the error packet (from its IPv6
/// header on).
///
/// The error goes from `src` to the invoking packet's source, with hop
/// limit `hop_limit`, and quotes as much of the invoking packet as fits in
/// the IPv6 minimum MTU of 1280 bytes ([`MAX_QUOTE`], RFC 4443 section 2.4
/// (c)) and in `packet`. `rest_of_header` is the MTU of a packet too big,
/// the pointer of a parameter problem, and 0 for the other errors. Traffic
/// class and flow label are 0.
///
/// `packet` may be longer than the invoking packet (the rest of a UMEM
/// frame): the invoking packet's length comes from its payload length. The
/// error needs [`ERROR_OVERHEAD`] bytes more than what it quotes; if
/// `packet` is too short for that, the quote is cut further, but never
/// below the invoking packet's first 48 bytes (its IPv6 header and 8 more,
/// or all of it if it is shorter): `None` then, and `None` if `packet` does
/// not start with a valid IPv6 packet. On `None`, `packet` is unchanged.
///
/// It does not decide whether an error may be sent: see [`error_allowed`].
/// The caller rewrites the link-layer header (swaps the MACs) itself.
pub fn build_error(
    packet: &mut [u8],
    msg_type: u8,
    code: u8,
    rest_of_header: u32,
    src: &[u8; 16],
    hop_limit: u8,
) -> Option<usize> {
    let (total, dst) = {
        let ip = Ipv6Packet::new_checked(&*packet).ok()?;
        (ip.total_len(), ip.src_bytes())
    };
    let room = packet.len().checked_sub(ERROR_OVERHEAD)?;
    let quote = total.min(MAX_QUOTE).min(room);
    if quote < total.min(ERROR_OVERHEAD) {
        return None;
    }
    let icmp_len = HEADER_LEN + quote;
    let payload_len = u16::try_from(icmp_len).ok()?;
    let new_len = ipv6::HEADER_LEN + icmp_len;
    packet.copy_within(..quote, ERROR_OVERHEAD);
    {
        let mut ip = Ipv6Packet::new_unchecked(&mut packet[..ipv6::HEADER_LEN]);
        ip.set_version(6);
        ip.set_traffic_class(0);
        ip.set_flow_label(0);
        ip.set_payload_len(payload_len);
        ip.set_next_header(IPPROTO_ICMPV6);
        ip.set_hop_limit(hop_limit);
        ip.set_addrs_bytes(src, &dst);
    }
    let mut m = Icmpv6Packet::new_unchecked(&mut packet[ipv6::HEADER_LEN..new_len]);
    m.set_msg_type(msg_type);
    m.set_msg_code(code);
    m.set_rest_of_header(rest_of_header);
    m.fill_checksum(src, &dst);
    Some(new_len)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ipv6::next_header;
    use etherparse::{Icmpv6Slice, Icmpv6Type, Ipv6Slice, PacketBuilder};
    use proptest::prelude::*;

    const CLIENT: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11];
    const VIP: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x01];
    const GATEWAY: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];

    /// An echo request from CLIENT to VIP, checksum computed by etherparse.
    fn echo() -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv6(CLIENT, VIP, 64).icmpv6_echo_request(0x1234, 1).write(&mut out, b"ping").unwrap();
        out[40..].to_vec()
    }

    #[test]
    fn deconstruct() {
        let bytes = echo();
        let p = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.msg_type(), kind::ECHO_REQUEST);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.checksum(), Icmpv6Slice::from_slice(&bytes).unwrap().checksum());
        assert_eq!(p.rest_of_header(), 0x1234_0001);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 1);
        assert_eq!(p.payload(), b"ping");
        assert!(p.verify_checksum(&CLIENT, &VIP));
        // (Swapped addresses sum the same: the checksum cannot tell.)
        assert!(p.verify_checksum(&VIP, &CLIENT));
        assert!(!p.verify_checksum(&CLIENT, &GATEWAY));
        assert_eq!(p.into_inner(), &bytes[..]);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 12];
        let mut p = Icmpv6Packet::new_unchecked(&mut buf[..]);
        p.set_msg_type(kind::ECHO_REQUEST);
        p.set_msg_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq_no(1);
        p.payload_mut().copy_from_slice(b"ping");
        p.set_checksum(0xdead); // overwritten
        p.fill_checksum(&CLIENT, &VIP);
        assert_eq!(&buf[..], &echo()[..]);

        let mut buf2 = [0u8; 12];
        let mut p = Icmpv6Packet::new_unchecked(&mut buf2[..]);
        p.set_msg_type(kind::ECHO_REQUEST);
        p.set_rest_of_header(0x1234_0001);
        p.payload_mut().copy_from_slice(b"ping");
        p.set_checksum(u16::from_be_bytes([buf[2], buf[3]]));
        assert_eq!(buf2, buf);
    }

    #[test]
    fn truncated() {
        let bytes = echo();
        for n in 0..HEADER_LEN {
            assert_eq!(Icmpv6Packet::new_checked(&bytes[..n]), Err(Error::Truncated));
        }
        let p = Icmpv6Packet::new_checked(&bytes[..8]).unwrap();
        assert!(p.payload().is_empty());
        assert!(!p.verify_checksum(&CLIENT, &VIP));
    }

    #[test]
    fn type_classes() {
        for t in 0..=255u8 {
            assert_eq!(is_error(t), t < 128);
            assert_eq!(is_neighbor_discovery(t), (133..=137).contains(&t));
            assert_eq!(is_multicast_listener(t), matches!(t, 130..=132 | 143));
            assert_eq!(leave_to_kernel(t), is_neighbor_discovery(t) || is_multicast_listener(t));
        }
        assert!(is_error(kind::DEST_UNREACHABLE) && is_error(kind::PACKET_TOO_BIG));
        assert!(is_error(kind::TIME_EXCEEDED) && is_error(kind::PARAM_PROBLEM));
        assert!(!leave_to_kernel(kind::ECHO_REQUEST) && !leave_to_kernel(kind::ECHO_REPLY));
        assert!(leave_to_kernel(kind::NEIGHBOR_SOLICIT) && leave_to_kernel(kind::ROUTER_ADVERT));
        assert!(leave_to_kernel(kind::REDIRECT) && leave_to_kernel(kind::MLDV2_REPORT));
        assert_eq!(MAX_QUOTE, 1232);
    }

    #[test]
    fn etherparse_cross_check() {
        let payload = b"abcdefghijklmnopq"; // odd length
        let mut out = Vec::new();
        PacketBuilder::ipv6(CLIENT, VIP, 64).icmpv6_echo_reply(0xbeef, 7).write(&mut out, payload).unwrap();
        let theirs = Icmpv6Slice::from_slice(&out[40..]).unwrap();
        let p = Icmpv6Packet::new_checked(&out[40..]).unwrap();
        assert_eq!(p.msg_type(), theirs.type_u8());
        assert_eq!(p.msg_code(), theirs.code_u8());
        assert_eq!(p.checksum(), theirs.checksum());
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0xbeef, 7));
        assert_eq!(p.payload(), payload);
        assert!(p.verify_checksum(&CLIENT, &VIP));
        assert!(theirs.is_checksum_valid(CLIENT, VIP));
    }

    // ---------------------------------------------------------------------
    // build_error

    /// A UDP packet from CLIENT to VIP with `n` bytes of payload, in a
    /// buffer of `room` bytes (at least the packet).
    fn udp_packet(n: usize, room: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..n).map(|i| u8::try_from(i % 256).unwrap()).collect();
        let mut out = Vec::new();
        PacketBuilder::ipv6(CLIENT, VIP, 61).udp(40000, 53).write(&mut out, &payload).unwrap();
        assert!(room >= out.len());
        out.resize(room, 0xee);
        out
    }

    /// Check an error built from `original` with etherparse, and return
    /// what it quotes.
    fn check_error(out: &[u8], len: usize, msg_type: Icmpv6Type, hop_limit: u8) -> Vec<u8> {
        assert!(len <= ipv6::MIN_MTU);
        let ip = Ipv6Slice::from_slice(&out[..len]).unwrap();
        let h = ip.header();
        assert_eq!(h.source(), GATEWAY);
        assert_eq!(h.destination(), CLIENT);
        assert_eq!(h.hop_limit(), hop_limit);
        assert_eq!((h.traffic_class(), h.flow_label().value()), (0, 0));
        assert_eq!(h.next_header(), etherparse::IpNumber::IPV6_ICMP);
        assert_eq!(usize::from(h.payload_length()), len - 40);
        assert!(ip.extensions().is_empty());
        let icmp = Icmpv6Slice::from_slice(ip.payload().payload).unwrap();
        assert!(icmp.is_checksum_valid(GATEWAY, CLIENT));
        assert_eq!(icmp.icmp_type(), msg_type);
        // Ours agrees.
        let ours = Icmpv6Packet::new_checked(&out[40..len]).unwrap();
        assert!(ours.verify_checksum(&GATEWAY, &CLIENT));
        ours.payload().to_vec()
    }

    #[test]
    fn error_about_a_short_packet_quotes_all_of_it() {
        let original = udp_packet(20, 1514);
        let total = 40 + 8 + 20;
        let mut buf = original.clone();
        let len = build_error(&mut buf, kind::DEST_UNREACHABLE, code::PORT_UNREACHABLE, 0, &GATEWAY, 64).unwrap();
        assert_eq!(len, ERROR_OVERHEAD + total);
        let quoted = check_error(
            &buf,
            len,
            Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port),
            64,
        );
        assert_eq!(quoted, &original[..total]);
        // Bytes past the error are left alone.
        assert!(buf[len..].iter().all(|&b| b == 0xee));
    }

    #[test]
    fn error_about_a_large_packet_is_cut_to_1280() {
        for n in [1232 - 48, 1232 - 47, 1400, 1452, 4000] {
            let original = udp_packet(n, 48 + 8 + n + 100);
            let total = 48 + n;
            let mut buf = original.clone();
            let len = build_error(&mut buf, kind::TIME_EXCEEDED, code::HOP_LIMIT_EXCEEDED, 0, &GATEWAY, 255).unwrap();
            assert_eq!(len, (ERROR_OVERHEAD + total).min(1280));
            let quoted = check_error(
                &buf,
                len,
                Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded),
                255,
            );
            assert_eq!(quoted, &original[..total.min(MAX_QUOTE)]);
        }
    }

    #[test]
    fn packet_too_big_carries_the_mtu() {
        let original = udp_packet(1452, 1600);
        let mut buf = original.clone();
        let len = build_error(&mut buf, kind::PACKET_TOO_BIG, 0, 1400, &GATEWAY, 64).unwrap();
        assert_eq!(len, 1280);
        let quoted = check_error(&buf, len, Icmpv6Type::PacketTooBig { mtu: 1400 }, 64);
        assert_eq!(quoted, &original[..MAX_QUOTE]);
    }

    #[test]
    fn error_in_a_tight_buffer() {
        // The buffer holds just the packet: the quote gives up its last 48
        // bytes so that the error fits.
        let original = udp_packet(100, 148);
        let mut buf = original.clone();
        let len = build_error(&mut buf, kind::DEST_UNREACHABLE, code::PORT_UNREACHABLE, 0, &GATEWAY, 64).unwrap();
        assert_eq!(len, 148);
        let quoted = check_error(
            &buf,
            len,
            Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port),
            64,
        );
        assert_eq!(quoted, &original[..100]);

        // Not below 48 bytes of the invoking packet: a 48-byte packet needs
        // a 96-byte buffer.
        let original = udp_packet(0, 48);
        for room in [48, 95] {
            let mut buf = original.clone();
            buf.resize(room, 0);
            let before = buf.clone();
            assert_eq!(build_error(&mut buf, kind::DEST_UNREACHABLE, 4, 0, &GATEWAY, 64), None);
            assert_eq!(buf, before, "unchanged on None");
        }
        let mut buf = original.clone();
        buf.resize(96, 0);
        assert_eq!(build_error(&mut buf, kind::DEST_UNREACHABLE, 4, 0, &GATEWAY, 64), Some(96));
        assert_eq!(&buf[48..], &original[..]);
    }

    #[test]
    fn no_error_about_an_invalid_packet() {
        let original = udp_packet(20, 200);
        for cut in [0, 39, 40, 67] {
            // Shorter than its payload length says (or than a header).
            let mut buf = original[..cut].to_vec();
            assert_eq!(build_error(&mut buf, 1, 4, 0, &GATEWAY, 64), None);
        }
        let mut buf = original.clone();
        buf[0] = 0x45;
        assert_eq!(build_error(&mut buf, 1, 4, 0, &GATEWAY, 64), None);
    }

    #[test]
    fn error_allowed_rules() {
        let udp = udp_packet(20, 68);
        assert!(error_allowed(&udp, kind::DEST_UNREACHABLE, code::PORT_UNREACHABLE));
        assert!(!error_allowed(&udp[..60], kind::DEST_UNREACHABLE, code::PORT_UNREACHABLE));

        let with = |f: &dyn Fn(&mut Ipv6Packet<&mut [u8]>)| {
            let mut b = udp.clone();
            f(&mut Ipv6Packet::new_unchecked(&mut b[..]));
            b
        };
        // e.6: the source must name one node.
        let b = with(&|p| p.set_src_bytes(&[0; 16]));
        assert!(!error_allowed(&b, kind::DEST_UNREACHABLE, 4));
        let b = with(&|p| p.set_src_addr("ff02::1".parse().unwrap()));
        assert!(!error_allowed(&b, kind::PACKET_TOO_BIG, 0));
        // e.3: a multicast destination only for packet too big and
        // unrecognized options.
        let b = with(&|p| p.set_dst_addr("ff05::1:3".parse().unwrap()));
        assert!(!error_allowed(&b, kind::DEST_UNREACHABLE, 4));
        assert!(!error_allowed(&b, kind::TIME_EXCEEDED, 0));
        assert!(!error_allowed(&b, kind::PARAM_PROBLEM, code::ERRONEOUS_HEADER));
        assert!(error_allowed(&b, kind::PACKET_TOO_BIG, 0));
        assert!(error_allowed(&b, kind::PARAM_PROBLEM, code::UNRECOGNIZED_OPTION));

        // e.1, e.2: not about an ICMPv6 error or a redirect; informational
        // messages are fine.
        let icmp = |t: u8| {
            let mut out = Vec::new();
            PacketBuilder::ipv6(CLIENT, VIP, 64).icmpv6_raw(t, 0, [0; 4]).write(&mut out, &[1, 2, 3, 4]).unwrap();
            out
        };
        for t in [kind::DEST_UNREACHABLE, kind::PACKET_TOO_BIG, kind::TIME_EXCEEDED, kind::PARAM_PROBLEM, 100, 127] {
            assert!(!error_allowed(&icmp(t), kind::TIME_EXCEEDED, 0), "type {t}");
        }
        assert!(!error_allowed(&icmp(kind::REDIRECT), kind::TIME_EXCEEDED, 0));
        for t in [kind::ECHO_REQUEST, kind::ECHO_REPLY, 200] {
            assert!(error_allowed(&icmp(t), kind::TIME_EXCEEDED, 0), "type {t}");
        }
        // ICMPv6 without even a type byte: not answered.
        let mut bare = icmp(kind::ECHO_REQUEST)[..40].to_vec();
        bare[4..6].copy_from_slice(&[0, 0]);
        assert!(!error_allowed(&bare, kind::TIME_EXCEEDED, 0));
        // A later fragment does not show its upper layer: allowed. The first
        // fragment of an ICMPv6 error does, and is not.
        let frag = |off_m: [u8; 2]| {
            let e = icmp(kind::DEST_UNREACHABLE);
            let mut b = e[..40].to_vec();
            b[6] = next_header::FRAGMENT;
            b.extend_from_slice(&[next_header::ICMPV6, 0, off_m[0], off_m[1], 0, 0, 0, 9]);
            b.extend_from_slice(&e[40..]);
            let pl = u16::try_from(b.len() - 40).unwrap();
            b[4..6].copy_from_slice(&pl.to_be_bytes());
            b
        };
        assert!(!error_allowed(&frag([0, 1]), kind::TIME_EXCEEDED, code::REASSEMBLY_EXCEEDED));
        assert!(error_allowed(&frag([0, 0x11]), kind::TIME_EXCEEDED, code::REASSEMBLY_EXCEEDED));
        // Extension headers the walk does not pass do not forbid an error.
        let b = with(&|p| p.set_next_header(next_header::ESP));
        assert!(error_allowed(&b, kind::DEST_UNREACHABLE, 4));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Icmpv6Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.rest_of_header());
                let _ = (p.echo_ident(), p.echo_seq_no(), p.verify_checksum(&CLIENT, &VIP));
                prop_assert_eq!(p.payload().len() + HEADER_LEN, data.len());
            }
            if let Ok(mut p) = Icmpv6Packet::new_checked(&mut data[..]) {
                p.fill_checksum(&GATEWAY, &CLIENT);
                prop_assert!(p.verify_checksum(&GATEWAY, &CLIENT));
            }
        }

        /// Random buffers, half of them made into an IPv6 header whose
        /// payload length fits: `build_error` and `error_allowed` never
        /// panic, and every error built parses with etherparse, verifies,
        /// and fits in 1280 bytes.
        #[test]
        fn build_error_never_panics(
            fix in any::<bool>(),
            mut data in proptest::collection::vec(any::<u8>(), 0..1600),
            extra in 0usize..200,
            msg in any::<(u8, u8, u32, u8)>(),
        ) {
            let (msg_type, code, rest, hop_limit) = msg;
            if fix && data.len() >= 40 {
                data[0] = 0x60 | (data[0] & 0x0f);
                let pl = u16::try_from(data.len() - 40).unwrap();
                data[4..6].copy_from_slice(&pl.to_be_bytes());
            }
            let _ = error_allowed(&data, msg_type, code);
            let original = data.clone();
            data.resize(data.len() + extra, 0);
            match build_error(&mut data, msg_type, code, rest, &GATEWAY, hop_limit) {
                None => prop_assert_eq!(&data[..original.len()], &original[..]),
                Some(len) => {
                    prop_assert!(len <= ipv6::MIN_MTU);
                    let ip = Ipv6Slice::from_slice(&data[..len]).unwrap();
                    prop_assert_eq!(&ip.header().destination()[..], &original[8..24]);
                    let icmp = Icmpv6Slice::from_slice(ip.payload().payload).unwrap();
                    prop_assert!(icmp.is_checksum_valid(GATEWAY, ip.header().destination()));
                    prop_assert_eq!((icmp.type_u8(), icmp.code_u8()), (msg_type, code));
                    let quoted = &data[ERROR_OVERHEAD..len];
                    prop_assert_eq!(quoted, &original[..quoted.len()]);
                }
            }
        }
    }
}
