//! IPv4 packets (RFC 791).
//!
//! Options are not parsed. [`Ipv4Packet::has_options`] reports them and
//! [`Ipv4Packet::header_len`] skips them. The fragment offset is given in
//! bytes, not in 8-byte units.

use std::net::Ipv4Addr;

use super::{checksum, clamped, clamped_mut, read_u16, read_u32, write_u16, write_u32, Error, Result};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    use crate::wire::Field;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A read/write wrapper around an IPv4 packet buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wrap a buffer and [`check_len`](Self::check_len) it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check, in this order:
    /// - the buffer holds 20 bytes, else `Truncated`;
    /// - the version is 4, else `Malformed`;
    /// - IHL is at least 5, else `Malformed`;
    /// - the header fits in the buffer, else `Truncated`;
    /// - the total length covers the header, else `Malformed`;
    /// - the total length fits in the buffer, else `Truncated`.
    ///
    /// The buffer may be longer than the total length (Ethernet padding).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN byte (formerly TOS).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length of header and payload.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    fn flg_off(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF)
    }

    /// The Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flg_off() & FLAG_DF != 0
    }

    /// The More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flg_off() & FLAG_MF != 0
    }

    /// The fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flg_off() & OFFSET_MASK) << 3
    }

    /// Whether this is a fragment: More Fragments is set or the offset is
    /// not zero.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flg_off() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The payload protocol (see `IPPROTO_*`).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_u32())
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_u32())
    }

    /// The source address as `u32::from_be_bytes`.
    #[inline]
    pub fn src_u32(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// The destination address as `u32::from_be_bytes`.
    #[inline]
    pub fn dst_u32(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// Whether the header carries options (IHL > 5).
    #[inline]
    pub fn has_options(&self) -> bool {
        self.header_len() > HEADER_LEN
    }

    /// Whether the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let data = self.buffer.as_ref();
        checksum::checksum(clamped(data, 0, self.header_len())) == 0
    }

    /// The payload: bytes `header_len..total_len`. Clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        clamped(self.buffer.as_ref(), start, end)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Set the version and the header length in bytes (a multiple of 4,
    /// 20..=60; the low two bits are dropped).
    #[inline]
    pub fn set_version_ihl(&mut self, version: u8, header_len_bytes: usize) {
        let ihl = ((header_len_bytes / 4) & 0x0f) as u8;
        self.buffer.as_mut()[field::VER_IHL] = (version << 4) | ihl;
    }

    /// Set the DSCP and ECN byte.
    #[inline]
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Set the total length.
    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Set the identification field.
    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    /// Set the flags and the fragment offset in bytes (a multiple of 8; the
    /// low three bits are dropped).
    #[inline]
    pub fn set_flags_frag(&mut self, dont_frag: bool, more_frags: bool, offset_bytes: u16) {
        let mut v = (offset_bytes >> 3) & OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        write_u16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Set the time to live.
    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Set the payload protocol.
    #[inline]
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    /// Set the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Set the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.set_src_u32(u32::from(addr));
    }

    /// Set the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.set_dst_u32(u32::from(addr));
    }

    /// Set the source address from its `u32::from_be_bytes` form.
    #[inline]
    pub fn set_src_u32(&mut self, addr: u32) {
        write_u32(self.buffer.as_mut(), field::SRC_ADDR, addr);
    }

    /// Set source and destination together (they are adjacent on the
    /// wire: one 8-byte store on the NAT fast path).
    #[inline]
    pub fn set_addrs_u32(&mut self, src: u32, dst: u32) {
        let both = (u64::from(src) << 32) | u64::from(dst);
        self.buffer.as_mut()[field::SRC_ADDR.start..field::DST_ADDR.end].copy_from_slice(&both.to_be_bytes());
    }

    /// Set the destination address from its `u32::from_be_bytes` form.
    #[inline]
    pub fn set_dst_u32(&mut self, addr: u32) {
        write_u32(self.buffer.as_mut(), field::DST_ADDR, addr);
    }

    /// Compute and write the header checksum (over `header_len` bytes).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let c = checksum::checksum(clamped(self.buffer.as_ref(), 0, header_len));
        self.set_checksum(c);
    }

    /// The payload, mutably: bytes `header_len..total_len`, clamped to the
    /// buffer.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        clamped_mut(self.buffer.as_mut(), start, end)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::{IPPROTO_ICMP, IPPROTO_UDP};
    use proptest::prelude::*;

    // A UDP datagram 10.0.0.1 -> 10.0.0.2, ident 0x1234, DF, TTL 64, with a
    // checksum computed by hand (and checked against etherparse below).
    static PACKET: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, // ver/ihl, dscp/ecn, total length 24
        0x12, 0x34, 0x40, 0x00, // ident, DF, offset 0
        0x40, 0x11, 0x14, 0x9f, // ttl 64, UDP, checksum
        0x0a, 0x00, 0x00, 0x01, // src
        0x0a, 0x00, 0x00, 0x02, // dst
        0xde, 0xad, 0xbe, 0xef, // payload
    ];

    // 24-byte header (one NOP/NOP/NOP/EOL option word), a fragment at offset
    // 1480 with MF set, ICMP, dscp_ecn 0xb8, plus 2 bytes of Ethernet padding
    // past total_len.
    static PACKET_OPTS: [u8; 30] = [
        0x46, 0xb8, 0x00, 0x1c, // ver 4 ihl 6, dscp/ecn, total length 28
        0xab, 0xcd, 0x20, 0xb9, // ident, MF, offset 185*8 = 1480
        0x01, 0x01, 0x00, 0x00, // ttl 1, ICMP, checksum (filled in test)
        0xc0, 0xa8, 0x01, 0x02, // src 192.168.1.2
        0xac, 0x10, 0x00, 0x09, // dst 172.16.0.9
        0x01, 0x01, 0x01, 0x00, // options
        0x11, 0x22, 0x33, 0x44, // payload
        0x00, 0x00, // padding
    ];

    #[test]
    fn deconstruct() {
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IPPROTO_UDP);
        assert_eq!(p.checksum(), 0x149f);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.src_u32(), 0x0a00_0001);
        assert_eq!(p.dst_u32(), 0x0a00_0002);
        assert!(!p.has_options());
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn deconstruct_options_fragment_padding() {
        let mut buf = PACKET_OPTS;
        Ipv4Packet::new_unchecked(&mut buf[..]).fill_checksum();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert!(p.has_options());
        assert_eq!(p.dscp_ecn(), 0xb8);
        assert!(!p.dont_frag());
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment());
        assert_eq!(p.protocol(), IPPROTO_ICMP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(172, 16, 0, 9));
        assert!(p.verify_checksum());
        // payload stops at total_len, not at the end of the buffer
        assert_eq!(p.payload(), &[0x11, 0x22, 0x33, 0x44]);
        // a last fragment (offset only) is still a fragment
        let mut buf2 = buf;
        Ipv4Packet::new_unchecked(&mut buf2[..]).set_flags_frag(false, false, 8);
        assert!(Ipv4Packet::new_unchecked(&buf2[..]).is_fragment());
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 24];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_ihl(4, 20);
        p.set_dscp_ecn(0);
        p.set_total_len(24);
        p.set_ident(0x1234);
        p.set_flags_frag(true, false, 0);
        p.set_ttl(64);
        p.set_protocol(IPPROTO_UDP);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_u32(0x0a00_0002);
        p.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        p.fill_checksum();
        assert_eq!(buf, PACKET);

        let mut buf = [0u8; 30];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_ihl(4, 24);
        p.set_dscp_ecn(0xb8);
        p.set_total_len(28);
        p.set_ident(0xabcd);
        p.set_flags_frag(false, true, 1480);
        p.set_ttl(1);
        p.set_protocol(IPPROTO_ICMP);
        p.set_src_u32(0xc0a8_0102);
        p.set_dst_addr(Ipv4Addr::new(172, 16, 0, 9));
        p.payload_mut().copy_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        p.set_checksum(0);
        let p = p.into_inner();
        p[20..24].copy_from_slice(&[1, 1, 1, 0]);
        assert_eq!(buf, PACKET_OPTS);
    }

    #[test]
    fn bad_checksum() {
        let mut buf = PACKET;
        buf[8] = 63; // ttl changed, checksum not
        assert!(!Ipv4Packet::new_checked(&buf[..]).unwrap().verify_checksum());
    }

    #[test]
    fn check_len_errors() {
        for n in 0..20 {
            assert_eq!(Ipv4Packet::new_checked(&PACKET[..n]), Err(Error::Truncated));
        }
        // total_len 24 but only 23 bytes
        assert_eq!(Ipv4Packet::new_checked(&PACKET[..23]), Err(Error::Truncated));
        let with = |i: usize, v: u8| {
            let mut b = PACKET;
            b[i] = v;
            Ipv4Packet::new_checked(b).map(|_| ())
        };
        assert_eq!(with(0, 0x65), Err(Error::Malformed)); // version 6
        assert_eq!(with(0, 0x44), Err(Error::Malformed)); // ihl 4
        assert_eq!(with(0, 0x40), Err(Error::Malformed)); // ihl 0
        assert_eq!(with(0, 0x46), Ok(())); // 24-byte header, empty payload
        assert_eq!(with(0, 0x47), Err(Error::Truncated)); // 28-byte header, 24-byte buffer
        assert_eq!(with(3, 19), Err(Error::Malformed)); // total_len < header_len
        assert_eq!(with(3, 25), Err(Error::Truncated)); // total_len > buffer
        assert_eq!(with(3, 20), Ok(())); // empty payload
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{PacketBuilder, SlicedPacket};
        let payload: Vec<u8> = (0..37).collect();
        let mut out = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 17).udp(5353, 53).write(&mut out, &payload).unwrap();
        let theirs = SlicedPacket::from_ip(&out).unwrap();
        let h = match theirs.net.unwrap() {
            etherparse::NetSlice::Ipv4(s) => s.header().to_header(),
            _ => unreachable!(),
        };
        let p = Ipv4Packet::new_checked(&out[..]).unwrap();
        assert_eq!(p.header_len(), h.header_len());
        assert_eq!(p.total_len(), h.total_len);
        assert_eq!(p.ident(), h.identification);
        assert_eq!(p.dont_frag(), h.dont_fragment);
        assert_eq!(p.more_frags(), h.more_fragments);
        assert_eq!(p.frag_offset(), h.fragment_offset.value() * 8);
        assert_eq!(p.ttl(), h.time_to_live);
        assert_eq!(p.protocol(), h.protocol.0);
        assert_eq!(p.checksum(), h.header_checksum);
        assert_eq!(p.src_addr().octets(), h.source);
        assert_eq!(p.dst_addr().octets(), h.destination);
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), h.calc_header_checksum());
        assert_eq!(p.payload().len(), 8 + payload.len());

        // Our fixture's checksum agrees with etherparse's computation.
        let (h, _) = etherparse::Ipv4Header::from_slice(&PACKET).unwrap();
        assert_eq!(h.calc_header_checksum(), 0x149f);
    }

    fn check_no_panic(data: &mut [u8]) {
        if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
            let _ = (p.version(), p.header_len(), p.dscp_ecn(), p.total_len(), p.ident());
            let _ = (p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment());
            let _ = (p.ttl(), p.protocol(), p.checksum(), p.src_addr(), p.dst_addr());
            let _ = (p.has_options(), p.verify_checksum());
            assert_eq!(p.payload().len(), usize::from(p.total_len()) - p.header_len());
        }
        if let Ok(mut p) = Ipv4Packet::new_checked(&mut data[..]) {
            p.set_ttl(1);
            p.set_src_u32(1);
            p.fill_checksum();
            assert!(p.verify_checksum());
            // Even an inconsistent length field cannot make accessors panic.
            p.set_version_ihl(4, 60);
            p.set_total_len(u16::MAX);
            let _ = (p.payload().len(), p.verify_checksum());
            let _ = p.payload_mut();
            p.fill_checksum();
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..80)) {
            check_no_panic(&mut data);
            // Also with a plausible first byte, so that more inputs get past check_len.
            if !data.is_empty() {
                data[0] = 0x45;
                check_no_panic(&mut data);
            }
            if data.len() >= 4 {
                let n = data.len() as u16;
                data[2..4].copy_from_slice(&n.to_be_bytes());
                data[0] = 0x40 | (data[0] & 0x0f);
                check_no_panic(&mut data);
            }
        }

        #[test]
        fn truncations_never_panic(n in 0usize..30) {
            let mut b = PACKET_OPTS;
            check_no_panic(&mut b[..n]);
            let mut b = PACKET;
            check_no_panic(&mut b[..n.min(24)]);
        }
    }
}
