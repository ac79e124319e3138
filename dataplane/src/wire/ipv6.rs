//! IPv6 packets (RFC 8200): the fixed 40-byte header, and a bounded walk over
//! the extension headers to the upper-layer header.
//!
//! ```text
//!  0       4               12      16              24              32
//! +-------+---------------+-------------------------------------------+
//! |version| traffic class |               flow label                  |
//! +-------+---------------+-------+---------------+-------------------+
//! |        payload length         |  next header  |    hop limit      |
//! +-------------------------------+---------------+-------------------+
//! |                   source address (16 bytes)                       |
//! |                 destination address (16 bytes)                    |
//! +--------------------------------------------------------------------
//! ```
//!
//! The payload length counts everything after the fixed header, extension
//! headers included. Jumbograms (RFC 2675: payload length 0 and a Jumbo
//! Payload option) are not supported: their payload reads as empty, so the
//! walk reports any extension header of theirs as [`ExtError::Truncated`].
//! They cannot occur on an Ethernet link anyway.
//!
//! There is no header checksum. The pseudo-header sum for TCP, UDP and
//! ICMPv6 is [`checksum::pseudo_header_sum_v6`](super::checksum::pseudo_header_sum_v6).
//!
//! # Extension headers
//!
//! [`Ipv6Packet::upper_layer`] (or [`walk`] over any slice) follows the
//! next-header chain through Hop-by-Hop Options (0), Routing (43), Fragment
//! (44) and Destination Options (60) and stops at the first other value:
//!
//! - an upper-layer protocol (TCP, UDP, ICMPv6 or any other): `Ok`, with its
//!   offset from the start of the IPv6 header;
//! - a header the walk does not look past: ESP (50), AH (51), No Next Header
//!   (59), Mobility (135), HIP (139), Shim6 (140), or the experimental 253
//!   and 254: [`ExtError::Opaque`], to be passed to the kernel;
//! - a Fragment header whose offset is not zero: the walk stops there,
//!   because what follows is the middle of the original payload, not a
//!   header. [`UpperLayer::fragment`] describes every Fragment header walked.
//!
//! The walk visits at most [`MAX_EXT_HEADERS`] extension headers. It also
//! reports [`UpperLayer::segments_left`]: a packet still on a source route
//! has the final destination in its Routing header, and that, not the
//! destination address, is in its TCP/UDP/ICMPv6 pseudo-header.

use std::net::Ipv6Addr;

use super::{clamped, clamped_mut, read_u16, read_u32, write_u16, write_u32, Error, Result};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// The IPv6 minimum link MTU (RFC 8200 section 5): every link carries a
/// 1280-byte packet, so ICMPv6 errors are cut to this size.
pub const MIN_MTU: usize = 1280;

/// The most extension headers [`walk`] visits before giving up with
/// [`ExtError::TooMany`].
///
/// RFC 8200 section 4.1 lets each extension header occur once, except
/// Destination Options twice, so a well-formed packet has at most five of
/// the four kinds the walk follows (Hop-by-Hop, Destination Options,
/// Routing, Fragment, Destination Options). Eight leaves room for senders
/// that repeat a header and still bounds the work one packet can cost: each
/// header is at least 8 bytes, so without a bound a 1500-byte packet could
/// make the worker follow about 180 of them.
pub const MAX_EXT_HEADERS: usize = 8;

/// Next header values, as far as the walk treats them differently.
pub mod next_header {
    /// Hop-by-Hop Options (only directly after the fixed header).
    pub const HOP_BY_HOP: u8 = 0;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// Routing.
    pub const ROUTING: u8 = 43;
    /// Fragment.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating Security Payload.
    pub const ESP: u8 = 50;
    /// Authentication Header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// No Next Header: nothing follows.
    pub const NO_NEXT_HEADER: u8 = 59;
    /// Destination Options.
    pub const DEST_OPTS: u8 = 60;
    /// Mobility.
    pub const MOBILITY: u8 = 135;
    /// Host Identity Protocol.
    pub const HIP: u8 = 139;
    /// Shim6.
    pub const SHIM6: u8 = 140;
    /// Experimentation and testing (RFC 3692).
    pub const EXPERIMENT1: u8 = 253;
    /// Experimentation and testing (RFC 3692).
    pub const EXPERIMENT2: u8 = 254;
}

mod field {
    use crate::wire::{Field, Rest};

    /// Version (4 bits), traffic class (8 bits), flow label (20 bits).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
    pub const PAYLOAD: Rest = 40..;
}

/// Offsets inside one extension header.
mod ext_field {
    use crate::wire::Field;

    pub const NXT_HDR: usize = 0;
    /// Hop-by-Hop, Routing, Destination Options: the length in 8-byte units,
    /// not counting the first 8 bytes.
    pub const LENGTH: usize = 1;
    /// Fragment: offset (13 bits, in 8-byte units), 2 reserved bits, M flag.
    pub const FRAG_OFF_M: Field = 2..4;
    pub const FRAG_IDENT: Field = 4..8;
    /// Routing: the number of route segments still to visit.
    pub const SEGMENTS_LEFT: usize = 3;
}

/// Length of a Fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

const FLOW_LABEL_MASK: u32 = 0x000f_ffff;
const FRAG_OFFSET_MASK: u16 = 0xfff8;
const FRAG_MORE: u16 = 0x0001;

/// A read/write wrapper around an IPv6 packet buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wrap a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wrap a buffer and [`check_len`](Self::check_len) it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check, in this order:
    /// - the buffer holds 40 bytes, else `Truncated`;
    /// - the version is 6, else `Malformed`;
    /// - the payload length fits in the buffer, else `Truncated`.
    ///
    /// The buffer may be longer than 40 + payload length (Ethernet padding).
    /// Extension headers are not checked here: [`upper_layer`](Self::upper_layer)
    /// checks them.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Malformed);
        }
        if self.total_len() > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn ver_tc_flow(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW)
    }

    /// The version field (6).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// The traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// The 20-bit flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & FLOW_LABEL_MASK
    }

    /// The payload length: everything after the fixed header, extension
    /// headers included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The length of the whole packet: 40 + payload length.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// The next header of the fixed header: the first extension header or
    /// the upper-layer protocol.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// The hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }

    /// The source address in wire order.
    #[inline]
    pub fn src_bytes(&self) -> [u8; 16] {
        read_addr(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    /// The destination address in wire order.
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 16] {
        read_addr(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// The source address as `u128::from_be_bytes`.
    #[inline]
    pub fn src_u128(&self) -> u128 {
        u128::from_be_bytes(self.src_bytes())
    }

    /// The destination address as `u128::from_be_bytes`.
    #[inline]
    pub fn dst_u128(&self) -> u128 {
        u128::from_be_bytes(self.dst_bytes())
    }

    /// The payload: bytes `40..40 + payload length`, extension headers
    /// included. Clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), field::PAYLOAD.start, self.total_len())
    }

    /// Walk the extension headers to the upper-layer header (see [`walk`]).
    /// Never panics, even on an unchecked buffer: a buffer shorter than the
    /// fixed header is `Truncated`. Only bytes below
    /// `min(40 + payload length, buffer length)` are read.
    #[inline]
    pub fn upper_layer(&self) -> core::result::Result<UpperLayer, ExtError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(ExtError::Truncated);
        }
        walk(self.next_header(), clamped(data, 0, self.total_len()), HEADER_LEN)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    #[inline]
    fn set_ver_tc_flow(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW, value);
    }

    /// Set the version (the low 4 bits of `version`), keeping traffic class
    /// and flow label.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let v = (self.ver_tc_flow() & 0x0fff_ffff) | (u32::from(version & 0x0f) << 28);
        self.set_ver_tc_flow(v);
    }

    /// Set the traffic class, keeping version and flow label.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let v = (self.ver_tc_flow() & 0xf00f_ffff) | (u32::from(tc) << 20);
        self.set_ver_tc_flow(v);
    }

    /// Set the flow label (its low 20 bits), keeping version and traffic
    /// class.
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let v = (self.ver_tc_flow() & !FLOW_LABEL_MASK) | (label & FLOW_LABEL_MASK);
        self.set_ver_tc_flow(v);
    }

    /// Set the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Set the next header of the fixed header.
    #[inline]
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = value;
    }

    /// Set the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Set the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.set_src_bytes(&addr.octets());
    }

    /// Set the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.set_dst_bytes(&addr.octets());
    }

    /// Set the source address from wire order.
    #[inline]
    pub fn set_src_bytes(&mut self, addr: &[u8; 16]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(addr);
    }

    /// Set the destination address from wire order.
    #[inline]
    pub fn set_dst_bytes(&mut self, addr: &[u8; 16]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(addr);
    }

    /// Set the source address from its `u128::from_be_bytes` form.
    #[inline]
    pub fn set_src_u128(&mut self, addr: u128) {
        self.set_src_bytes(&addr.to_be_bytes());
    }

    /// Set the destination address from its `u128::from_be_bytes` form.
    #[inline]
    pub fn set_dst_u128(&mut self, addr: u128) {
        self.set_dst_bytes(&addr.to_be_bytes());
    }

    /// Set source and destination together (they are adjacent on the wire:
    /// one 32-byte copy on the NAT fast path).
    #[inline]
    pub fn set_addrs_bytes(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        let mut both = [0u8; 32];
        both[..16].copy_from_slice(src);
        both[16..].copy_from_slice(dst);
        self.buffer.as_mut()[field::SRC_ADDR.start..field::DST_ADDR.end].copy_from_slice(&both);
    }

    /// The payload, mutably: bytes `40..40 + payload length`, clamped to
    /// the buffer.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        clamped_mut(self.buffer.as_mut(), field::PAYLOAD.start, end)
    }
}

#[inline]
fn read_addr(data: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&data[at..at + 16]);
    a
}

/// A Fragment header met by the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The fragment offset in bytes (a multiple of 8).
    pub offset: u16,
    /// The M (more fragments) flag.
    pub more: bool,
    /// The identification.
    pub ident: u32,
    /// Where the Fragment header starts, from the start of the IPv6 header.
    pub header_at: usize,
}

impl Fragment {
    /// The first fragment (offset 0): it holds the upper-layer header.
    #[inline]
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }

    /// An atomic fragment (RFC 6946): offset 0 and no more fragments, i.e.
    /// a whole packet that merely carries a Fragment header.
    #[inline]
    pub fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more
    }
}

/// Where the extension-header walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol: the next header of the last extension
    /// header walked (or of the fixed header if there was none).
    pub protocol: u8,
    /// The offset of the upper-layer header from the start of the IPv6
    /// header. For a fragment that is not the first (see `fragment`) this is
    /// the start of the fragment's data, not of a header.
    pub offset: usize,
    /// The Fragment header, if the packet carries one. Only a first fragment
    /// (`offset` 0) holds the upper-layer header; the walk stops at the
    /// Fragment header of any other.
    pub fragment: Option<Fragment>,
    /// The largest Segments Left of the Routing headers walked; 0 if there
    /// was none. When it is not 0, the destination address is an
    /// intermediate hop, and the TCP/UDP/ICMPv6 pseudo-header holds the
    /// final destination instead (RFC 8200 section 8.1), which is in the
    /// Routing header: rewriting the destination address and patching the
    /// checksum with its delta would then be wrong.
    pub segments_left: u8,
}

impl UpperLayer {
    /// Whether this packet is a fragment that is not atomic: some of the
    /// original packet is in other packets. The NAT passes those to the
    /// kernel (it cannot rewrite what it does not see).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.fragment.is_some_and(|f| !f.is_atomic())
    }
}

/// Why the walk did not reach an upper-layer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtError {
    /// An extension header (its fixed part or its declared length) runs past
    /// the payload length or the buffer.
    Truncated,
    /// A next header the walk does not look past (ESP, AH, No Next Header,
    /// Mobility, HIP, Shim6, 253, 254): leave the packet to the kernel.
    Opaque(u8),
    /// More than [`MAX_EXT_HEADERS`] extension headers.
    TooMany,
    /// A Hop-by-Hop header anywhere but directly after the fixed header
    /// (RFC 8200 section 4.1; a host answers it with a Parameter Problem),
    /// or a second Fragment header.
    Misplaced(u8),
}

impl core::fmt::Display for ExtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ExtError::Truncated => f.write_str("truncated IPv6 extension header"),
            ExtError::Opaque(nh) => write!(f, "IPv6 next header {nh} not walked"),
            ExtError::TooMany => write!(f, "more than {MAX_EXT_HEADERS} IPv6 extension headers"),
            ExtError::Misplaced(nh) => write!(f, "misplaced IPv6 extension header {nh}"),
        }
    }
}

impl std::error::Error for ExtError {}

/// Whether the walk stops at `nh` and reports it as [`ExtError::Opaque`].
#[inline]
pub fn is_opaque(nh: u8) -> bool {
    use next_header::*;
    matches!(nh, ESP | AH | NO_NEXT_HEADER | MOBILITY | HIP | SHIM6 | EXPERIMENT1 | EXPERIMENT2)
}

/// Walk the extension headers of an IPv6 packet to its upper-layer header.
///
/// `packet` starts at the IPv6 header and ends at the end of the packet (or
/// of what there is of it, for a packet quoted in an ICMPv6 error); `first`
/// is the fixed header's next header and `offset` where the first extension
/// header would start (40, [`HEADER_LEN`]). Reads only `packet`, allocates
/// nothing, and never panics.
///
/// On `Ok`, the upper-layer header starts at `offset` but may be truncated:
/// the caller checks it with its own wrapper.
pub fn walk(first: u8, packet: &[u8], offset: usize) -> core::result::Result<UpperLayer, ExtError> {
    use next_header::*;
    let (mut nh, mut at) = (first, offset);
    let mut fragment: Option<Fragment> = None;
    let mut segments_left = 0u8;
    for walked in 0..=MAX_EXT_HEADERS {
        match nh {
            HOP_BY_HOP | ROUTING | DEST_OPTS | FRAGMENT => {}
            other if is_opaque(other) => return Err(ExtError::Opaque(other)),
            other => return Ok(UpperLayer { protocol: other, offset: at, fragment, segments_left }),
        }
        if walked == MAX_EXT_HEADERS {
            return Err(ExtError::TooMany);
        }
        if nh == HOP_BY_HOP && at != offset {
            return Err(ExtError::Misplaced(nh));
        }
        // The next header byte and, for all but Fragment, the length byte.
        let Some(head) = at.checked_add(2).and_then(|end| packet.get(at..end)) else {
            return Err(ExtError::Truncated);
        };
        let this = nh;
        nh = head[ext_field::NXT_HDR];
        let len = if this == FRAGMENT { FRAGMENT_HEADER_LEN } else { (usize::from(head[ext_field::LENGTH]) + 1) * 8 };
        let Some(hdr) = at.checked_add(len).and_then(|end| packet.get(at..end)) else {
            return Err(ExtError::Truncated);
        };
        if this == ROUTING {
            // A Routing header is at least 8 bytes long.
            segments_left = segments_left.max(hdr[ext_field::SEGMENTS_LEFT]);
        }
        if this == FRAGMENT {
            if fragment.is_some() {
                return Err(ExtError::Misplaced(this));
            }
            let off_m = read_u16(hdr, ext_field::FRAG_OFF_M);
            let f = Fragment {
                offset: off_m & FRAG_OFFSET_MASK,
                more: off_m & FRAG_MORE != 0,
                ident: read_u32(hdr, ext_field::FRAG_IDENT),
                header_at: at,
            };
            fragment = Some(f);
            if !f.is_first() {
                return Ok(UpperLayer { protocol: nh, offset: at + len, fragment, segments_left });
            }
        }
        at += len;
    }
    // The loop returns on its last round (walked == MAX_EXT_HEADERS).
    Err(ExtError::TooMany)
}

#[cfg(test)]
mod test {
    use super::next_header::*;
    use super::*;
    use proptest::prelude::*;

    const SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    static PACKET: [u8; 52] = [
        0x6a, 0xb1, 0x23, 0x45, // version 6, traffic class 0xab, flow label 0x12345
        0x00, 0x0c, 0x11, 0x40, // payload length 12, next header UDP, hop limit 64
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // source
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // destination
        0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, // UDP header (checksum not filled)
        0xaa, 0xbb, 0xcc, 0xdd, // UDP payload
    ];

    #[test]
    fn deconstruct() {
        let p = Ipv6Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xab);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 12);
        assert_eq!(p.total_len(), 52);
        assert_eq!(p.next_header(), UDP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.src_bytes(), SRC);
        assert_eq!(p.dst_bytes(), DST);
        assert_eq!(p.src_u128(), 0x2001_0db8_0000_0000_0000_0000_0000_0001);
        assert_eq!(p.dst_u128(), 0x2001_0db8_0000_0000_0000_0000_0000_0002);
        assert_eq!(p.payload(), &PACKET[40..]);
        assert_eq!(p.upper_layer(), Ok(UpperLayer { protocol: UDP, offset: 40, fragment: None, segments_left: 0 }));
        assert_eq!(p.into_inner(), &PACKET[..]);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 52];
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.set_version(6);
        p.set_traffic_class(0xab);
        p.set_flow_label(0x12345);
        p.set_payload_len(12);
        p.set_next_header(UDP);
        p.set_hop_limit(64);
        p.set_src_addr(Ipv6Addr::from(SRC));
        p.set_dst_addr(Ipv6Addr::from(DST));
        p.payload_mut().copy_from_slice(&PACKET[40..]);
        assert_eq!(buf, PACKET);

        // The other address setters write the same bytes.
        let mut buf2 = PACKET;
        let mut p = Ipv6Packet::new_unchecked(&mut buf2[..]);
        p.set_addrs_bytes(&DST, &SRC);
        assert_eq!((p.src_bytes(), p.dst_bytes()), (DST, SRC));
        p.set_src_bytes(&SRC);
        p.set_dst_u128(u128::from_be_bytes(DST));
        assert_eq!(buf2, PACKET);
        let mut p = Ipv6Packet::new_unchecked(&mut buf2[..]);
        p.set_src_u128(7);
        p.set_dst_bytes(&[0xff; 16]);
        assert_eq!(p.src_addr(), Ipv6Addr::from(7u128));
        assert_eq!(p.dst_u128(), u128::MAX);
    }

    #[test]
    fn setters_keep_the_other_bits() {
        let mut buf = PACKET;
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.set_flow_label(0xfff_ffff); // high bits dropped
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0xab, 0xf_ffff));
        p.set_traffic_class(0x5c);
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0x5c, 0xf_ffff));
        p.set_version(0xf4); // high bits dropped
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (4, 0x5c, 0xf_ffff));
        p.set_version(6);
        p.set_flow_label(0);
        p.set_traffic_class(0);
        assert_eq!(&buf[..4], &[0x60, 0, 0, 0]);
    }

    #[test]
    fn check_len() {
        for n in 0..HEADER_LEN {
            assert_eq!(Ipv6Packet::new_checked(&PACKET[..n]), Err(Error::Truncated));
        }
        // The payload length claims 12 bytes.
        for n in HEADER_LEN..PACKET.len() {
            assert_eq!(Ipv6Packet::new_checked(&PACKET[..n]), Err(Error::Truncated));
        }
        // Ethernet padding after the packet is allowed and not payload.
        let mut padded = PACKET.to_vec();
        padded.extend_from_slice(&[0; 6]);
        let p = Ipv6Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &PACKET[40..]);

        for version in [0u8, 4, 5, 7, 15] {
            let mut b = PACKET;
            b[0] = (version << 4) | (b[0] & 0x0f);
            assert_eq!(Ipv6Packet::new_checked(&b[..]), Err(Error::Malformed));
            // Version is checked before the length.
            assert_eq!(Ipv6Packet::new_checked(&b[..41]), Err(Error::Malformed));
        }

        // A header alone with payload length 0.
        let mut b = PACKET;
        b[4..6].copy_from_slice(&[0, 0]);
        let p = Ipv6Packet::new_checked(&b[..40]).unwrap();
        assert!(p.payload().is_empty());
        assert_eq!(p.upper_layer().unwrap().offset, 40);

        // A later set_payload_len that disagrees with the buffer: accessors
        // clamp instead of panicking, and check_len reports it.
        let mut b = PACKET;
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        p.set_payload_len(0xffff);
        assert_eq!(p.payload().len(), 12);
        assert_eq!(p.payload_mut().len(), 12);
        assert_eq!(p.check_len(), Err(Error::Truncated));
    }

    #[test]
    fn upper_layer_on_short_unchecked_buffer() {
        for n in 0..HEADER_LEN {
            assert_eq!(Ipv6Packet::new_unchecked(&PACKET[..n]).upper_layer(), Err(ExtError::Truncated));
        }
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{Ipv6FlowLabel, Ipv6Header, PacketBuilder};
        let payload = b"hello, six";
        let mut out = Vec::new();
        let mut header = Ipv6Header {
            traffic_class: 0x2e,
            flow_label: Ipv6FlowLabel::try_new(0xbeef5).unwrap(),
            payload_length: 0,
            next_header: etherparse::IpNumber::TCP,
            hop_limit: 17,
            source: SRC,
            destination: DST,
        };
        header.set_payload_length(20 + payload.len()).unwrap();
        PacketBuilder::ip(etherparse::IpHeaders::Ipv6(header.clone(), Default::default()))
            .tcp(1234, 443, 7, 1000)
            .write(&mut out, payload)
            .unwrap();
        let theirs = etherparse::Ipv6HeaderSlice::from_slice(&out).unwrap();
        let p = Ipv6Packet::new_checked(&out[..]).unwrap();
        assert_eq!(p.version(), theirs.version());
        assert_eq!(p.traffic_class(), theirs.traffic_class());
        assert_eq!(p.flow_label(), theirs.flow_label().value());
        assert_eq!(p.payload_len(), theirs.payload_length());
        assert_eq!(p.next_header(), theirs.next_header().0);
        assert_eq!(p.hop_limit(), theirs.hop_limit());
        assert_eq!(p.src_addr(), theirs.source_addr());
        assert_eq!(p.dst_addr(), theirs.destination_addr());
        assert_eq!(p.payload().len(), 20 + payload.len());

        // Our setters produce the header etherparse would write.
        let mut buf = [0u8; 40];
        let mut q = Ipv6Packet::new_unchecked(&mut buf[..]);
        q.set_version(6);
        q.set_traffic_class(0x2e);
        q.set_flow_label(0xbeef5);
        q.set_payload_len(p.payload_len());
        q.set_next_header(TCP);
        q.set_hop_limit(17);
        q.set_addrs_bytes(&SRC, &DST);
        assert_eq!(&buf[..], &header.to_bytes()[..]);
    }

    // ---------------------------------------------------------------------
    // Extension headers.

    /// One extension header of `kind` followed by `next`: `len` bytes (a
    /// multiple of 8; Fragment headers are 8), filled with a pattern.
    fn ext(kind: u8, next: u8, len: usize) -> Vec<u8> {
        let mut h: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap() | 0x80).collect();
        h[0] = next;
        if kind == FRAGMENT {
            assert_eq!(len, FRAGMENT_HEADER_LEN);
            h[2..4].copy_from_slice(&[0, 0]); // offset 0, M clear
        } else {
            h[1] = u8::try_from(len / 8 - 1).unwrap();
        }
        h
    }

    /// An IPv6 packet whose fixed header names `chain[0].0`, with the
    /// extension headers `chain` (kind, length) and then `upper` and 12 bytes
    /// of upper-layer data.
    fn packet(chain: &[(u8, usize)], upper: u8) -> Vec<u8> {
        let mut b = PACKET[..40].to_vec();
        b[6] = chain.first().map_or(upper, |c| c.0);
        for (i, &(kind, len)) in chain.iter().enumerate() {
            let next = chain.get(i + 1).map_or(upper, |c| c.0);
            b.extend_from_slice(&ext(kind, next, len));
        }
        b.extend_from_slice(&PACKET[40..]);
        let pl = u16::try_from(b.len() - 40).unwrap();
        b[4..6].copy_from_slice(&pl.to_be_bytes());
        b
    }

    fn upper_of(b: &[u8]) -> core::result::Result<UpperLayer, ExtError> {
        Ipv6Packet::new_checked(b).unwrap().upper_layer()
    }

    #[test]
    fn walk_chains() {
        let full = [(HOP_BY_HOP, 8), (DEST_OPTS, 16), (ROUTING, 24), (FRAGMENT, 8), (DEST_OPTS, 8)];
        let b = packet(&full, TCP);
        let ul = upper_of(&b).unwrap();
        assert_eq!((ul.protocol, ul.offset), (TCP, 40 + 8 + 16 + 24 + 8 + 8));
        let f = ul.fragment.unwrap();
        assert_eq!(f, Fragment { offset: 0, more: false, ident: 0x8485_8687, header_at: 40 + 48 });
        assert!(f.is_first() && f.is_atomic() && !ul.is_fragment());

        for chain in [
            &[(HOP_BY_HOP, 8)][..],
            &[(DEST_OPTS, 8)][..],
            &[(ROUTING, 8)][..],
            &[(FRAGMENT, 8)][..],
            &[(HOP_BY_HOP, 2048), (ROUTING, 8)][..], // the largest header: length byte 255
            &[(HOP_BY_HOP, 8), (DEST_OPTS, 8), (ROUTING, 8)][..],
        ] {
            for upper in [TCP, UDP, ICMPV6, 47 /* GRE: any other protocol */] {
                let b = packet(chain, upper);
                let ul = upper_of(&b).unwrap();
                assert_eq!(ul.protocol, upper);
                assert_eq!(ul.offset, 40 + chain.iter().map(|c| c.1).sum::<usize>());
                assert_eq!(ul.offset, b.len() - 12);
                assert_eq!(ul.fragment.is_some(), chain.iter().any(|c| c.0 == FRAGMENT));
            }
        }
    }

    #[test]
    fn walk_matches_etherparse() {
        use etherparse::{
            IpFragOffset, IpHeaders, IpNumber, Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader,
            Ipv6RoutingExtensions, PacketBuilder,
        };
        let opts = |n: usize| Ipv6RawExtHeader::new_raw(IpNumber(0), &vec![0x01; n]).unwrap();
        for (hbh, dst, routing, frag, fin) in [
            (true, true, true, true, true),
            (true, false, false, false, false),
            (false, true, false, true, false),
            (false, false, true, false, true),
            (false, false, false, false, false),
        ] {
            let exts = Ipv6Extensions {
                hop_by_hop_options: hbh.then(|| opts(6)),
                destination_options: dst.then(|| opts(14)),
                routing: routing.then(|| Ipv6RoutingExtensions {
                    routing: opts(22),
                    final_destination_options: fin.then(|| opts(6)),
                }),
                // An atomic fragment only: etherparse 0.16 writes the offset
                // and the M flag at the wrong bits (etherparse issue #150,
                // fixed in 0.20), so it cannot check them; `walk_fragments`
                // checks them against hand-written RFC 8200 bytes.
                fragment: frag.then(|| Ipv6FragmentHeader::new(IpNumber(0), IpFragOffset::ZERO, false, 0xdead_beef)),
                auth: None,
            };
            let header = Ipv6Header { hop_limit: 9, source: SRC, destination: DST, ..Default::default() };
            let mut out = Vec::new();
            PacketBuilder::ip(IpHeaders::Ipv6(header, exts.clone())).udp(5353, 53).write(&mut out, b"query").unwrap();
            let theirs = etherparse::Ipv6Slice::from_slice(&out).unwrap();
            let ul = upper_of(&out).unwrap();
            assert_eq!(ul.protocol, UDP);
            assert_eq!(ul.offset, 40 + exts.header_len());
            assert_eq!(ul.offset, out.len() - theirs.payload().payload.len());
            assert_eq!(ul.is_fragment(), theirs.is_payload_fragmented());
            // The options bytes are 0x01: routing type 1, segments left 1.
            assert_eq!(ul.segments_left, u8::from(routing));
            if frag {
                let f = ul.fragment.unwrap();
                assert_eq!((f.offset, f.more, f.ident), (0, false, 0xdead_beef));
            }
        }
    }

    #[test]
    fn walk_fragments() {
        // A first fragment: walked through to the transport header.
        let mut b = packet(&[(HOP_BY_HOP, 8), (FRAGMENT, 8), (DEST_OPTS, 8)], UDP);
        b[48 + 2..48 + 4].copy_from_slice(&[0x00, 0x01]); // offset 0, M
        let ul = upper_of(&b).unwrap();
        assert_eq!((ul.protocol, ul.offset), (UDP, 64));
        assert!(ul.is_fragment());
        let f = ul.fragment.unwrap();
        assert!(f.is_first() && !f.is_atomic() && f.more);
        assert_eq!(f.header_at, 48);

        // A later fragment: the walk stops after the Fragment header, and
        // the protocol is the Fragment header's next header.
        for (off_m, offset, more) in [([0x05, 0x39], 0x0538, true), ([0xff, 0xf8], 0xfff8, false)] {
            let mut b = packet(&[(FRAGMENT, 8), (DEST_OPTS, 8)], TCP);
            b[42..44].copy_from_slice(&off_m);
            let ul = upper_of(&b).unwrap();
            assert_eq!((ul.protocol, ul.offset), (DEST_OPTS, 48));
            let f = ul.fragment.unwrap();
            assert_eq!((f.offset, f.more), (offset, more));
            assert!(!f.is_first() && !f.is_atomic() && ul.is_fragment());
        }
        // The two reserved bits do not count as offset or M.
        let mut b = packet(&[(FRAGMENT, 8)], TCP);
        b[42..44].copy_from_slice(&[0x00, 0x06]);
        assert!(!upper_of(&b).unwrap().is_fragment());
        // A later fragment of an ESP packet is still a fragment, not Opaque.
        let mut b = packet(&[(FRAGMENT, 8)], ESP);
        b[42..44].copy_from_slice(&[0x01, 0x00]);
        assert_eq!(upper_of(&b).unwrap().protocol, ESP);

        // Two Fragment headers.
        let b = packet(&[(FRAGMENT, 8), (FRAGMENT, 8)], TCP);
        assert_eq!(upper_of(&b), Err(ExtError::Misplaced(FRAGMENT)));
    }

    #[test]
    fn walk_stops_at_opaque_headers() {
        for nh in [ESP, AH, NO_NEXT_HEADER, MOBILITY, HIP, SHIM6, EXPERIMENT1, EXPERIMENT2] {
            assert!(is_opaque(nh));
            assert_eq!(upper_of(&packet(&[], nh)), Err(ExtError::Opaque(nh)));
            assert_eq!(upper_of(&packet(&[(HOP_BY_HOP, 8), (ROUTING, 8)], nh)), Err(ExtError::Opaque(nh)));
            // AH could be skipped, but the walk does not: NAT breaks AH anyway.
            assert_eq!(upper_of(&packet(&[(DEST_OPTS, 8), (nh, 8)], TCP)), Err(ExtError::Opaque(nh)));
        }
        for nh in [TCP, UDP, ICMPV6, HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTS, 4, 41, 47, 132, 255] {
            assert!(!is_opaque(nh));
        }
    }

    #[test]
    fn walk_reports_segments_left() {
        let b = packet(&[(HOP_BY_HOP, 8), (ROUTING, 24)], TCP);
        // The pattern of `ext` leaves 0x83 at byte 3 of the Routing header.
        assert_eq!(upper_of(&b).unwrap().segments_left, 0x83);
        let mut b = b;
        b[48 + 3] = 0;
        assert_eq!(upper_of(&b).unwrap().segments_left, 0);
        let b = packet(&[(DEST_OPTS, 8)], TCP);
        assert_eq!(upper_of(&b).unwrap().segments_left, 0);
    }

    #[test]
    fn walk_hop_by_hop_only_first() {
        assert_eq!(upper_of(&packet(&[(HOP_BY_HOP, 8)], TCP)).unwrap().offset, 48);
        for chain in [&[(DEST_OPTS, 8), (HOP_BY_HOP, 8)][..], &[(HOP_BY_HOP, 8), (HOP_BY_HOP, 8)][..]] {
            assert_eq!(upper_of(&packet(chain, TCP)), Err(ExtError::Misplaced(HOP_BY_HOP)));
        }
    }

    #[test]
    fn walk_limit() {
        let chain = vec![(DEST_OPTS, 8); MAX_EXT_HEADERS];
        let ul = upper_of(&packet(&chain, TCP)).unwrap();
        assert_eq!(ul.offset, 40 + 8 * MAX_EXT_HEADERS);
        let chain = vec![(DEST_OPTS, 8); MAX_EXT_HEADERS + 1];
        assert_eq!(upper_of(&packet(&chain, TCP)), Err(ExtError::TooMany));
        let chain = vec![(ROUTING, 8); 100];
        assert_eq!(upper_of(&packet(&chain, TCP)), Err(ExtError::TooMany));
    }

    /// Cut the packet at every length: through the payload length (the
    /// buffer stays whole), and through the buffer (the payload length
    /// stays as it was). Inside the extension headers the walk says
    /// `Truncated`; from the transport header on it succeeds.
    #[test]
    fn walk_truncated_at_each_position() {
        let chain = [(HOP_BY_HOP, 16), (DEST_OPTS, 8), (ROUTING, 8), (FRAGMENT, 8), (DEST_OPTS, 24)];
        let b = packet(&chain, TCP);
        let transport = b.len() - 12;
        for cut in HEADER_LEN..b.len() {
            let mut short = b.clone();
            let pl = u16::try_from(cut - 40).unwrap();
            short[4..6].copy_from_slice(&pl.to_be_bytes());
            let by_len = Ipv6Packet::new_checked(&short[..]).unwrap().upper_layer();
            let by_buffer = Ipv6Packet::new_unchecked(&b[..cut]).upper_layer();
            if cut < transport {
                assert_eq!(by_len, Err(ExtError::Truncated), "cut at {cut}");
                assert_eq!(by_buffer, Err(ExtError::Truncated), "cut at {cut}");
            } else {
                assert_eq!(by_len.unwrap().offset, transport);
                assert_eq!(by_buffer.unwrap().offset, transport);
            }
        }
    }

    #[test]
    fn walk_over_a_slice() {
        // `walk` on a bare slice, as for a packet quoted in an ICMPv6 error.
        let b = packet(&[(HOP_BY_HOP, 8), (DEST_OPTS, 8)], UDP);
        assert_eq!(walk(HOP_BY_HOP, &b, 40).unwrap().offset, 56);
        assert_eq!(walk(HOP_BY_HOP, &b[..50], 40), Err(ExtError::Truncated));
        assert_eq!(walk(UDP, &[], 40), Ok(UpperLayer { protocol: UDP, offset: 40, fragment: None, segments_left: 0 }));
        assert_eq!(walk(ROUTING, &[], usize::MAX - 1), Err(ExtError::Truncated));
    }

    #[test]
    fn ext_error_display() {
        assert_eq!(ExtError::Truncated.to_string(), "truncated IPv6 extension header");
        assert_eq!(ExtError::Opaque(50).to_string(), "IPv6 next header 50 not walked");
        assert_eq!(ExtError::TooMany.to_string(), "more than 8 IPv6 extension headers");
        let e: Box<dyn std::error::Error> = Box::new(ExtError::Misplaced(0));
        assert_eq!(e.to_string(), "misplaced IPv6 extension header 0");
    }

    /// Random bytes, or random bytes made into an IPv6 header whose payload
    /// length matches, so that the walk sees random extension chains.
    fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
        (any::<bool>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(fix, first, mut b)| {
            if fix && b.len() >= HEADER_LEN {
                b[0] = 0x60 | (b[0] & 0x0f);
                let pl = u16::try_from(b.len() - HEADER_LEN).unwrap();
                b[4..6].copy_from_slice(&pl.to_be_bytes());
                // Walkable headers more often than not.
                b[6] = [HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTS, first][usize::from(first % 5)];
                let mut at = HEADER_LEN;
                while at + 2 <= b.len() {
                    b[at] = [ROUTING, FRAGMENT, DEST_OPTS, TCP, b[at]][usize::from(b[at] % 5)];
                    b[at + 1] %= 3;
                    at += (usize::from(b[at + 1]) + 1) * 8;
                }
            }
            b
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(mut data in arb_packet()) {
            let _ = Ipv6Packet::new_unchecked(&data[..]).upper_layer();
            if let Ok(p) = Ipv6Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.traffic_class(), p.flow_label(), p.next_header(), p.hop_limit());
                let _ = (p.src_addr(), p.dst_addr(), p.src_u128(), p.dst_u128());
                prop_assert_eq!(p.payload().len() + HEADER_LEN, p.total_len());
                match p.upper_layer() {
                    Ok(ul) => {
                        prop_assert!(ul.offset <= p.total_len());
                        prop_assert!(!matches!(ul.protocol, HOP_BY_HOP | ROUTING | DEST_OPTS) || ul.is_fragment());
                    }
                    Err(ExtError::Opaque(nh)) => prop_assert!(is_opaque(nh)),
                    Err(_) => {}
                }
            }
            if let Ok(mut p) = Ipv6Packet::new_checked(&mut data[..]) {
                p.set_flow_label(1);
                p.set_traffic_class(2);
                p.set_addrs_bytes(&SRC, &DST);
                let _ = p.payload_mut();
                prop_assert!(p.check_len().is_ok());
            }
        }
    }
}
