//! UDP datagrams (RFC 768).
//!
//! The datagram ends at the length field, not at the end of the buffer, so
//! the wrapper may be given an IPv4 payload with trailing bytes. A checksum of
//! `0` means "none" and always verifies. A computed checksum of `0` is sent as
//! `0xffff`.

use std::net::Ipv4Addr;

use super::{checksum, clamped, clamped_mut, read_u16, write_u16, write_u16_pair, Error, Result, IPPROTO_UDP};

/// Length of a UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// A read/write wrapper around a UDP datagram buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wrap a buffer and [`check_len`](Self::check_len) it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if the buffer is shorter than 8 bytes or than the length
    /// field; `Malformed` if the length field is below 8.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let buffer_len = self.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > buffer_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header plus payload.
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The checksum field (`0` = none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload (`8..len`), clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), HEADER_LEN, usize::from(self.len()))
    }

    #[inline]
    fn compute_sum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let len = self.len();
        let data = clamped(self.buffer.as_ref(), 0, usize::from(len));
        checksum::add(checksum::pseudo_header_sum(src, dst, IPPROTO_UDP, len), checksum::sum(data))
    }

    /// Whether the checksum is correct for `src` and `dst`. A zero checksum
    /// (none) verifies.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || !checksum::fold(self.compute_sum(src, dst)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Set the source port.
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    /// Set source and destination ports together (adjacent on the wire:
    /// one 4-byte store on the NAT fast path).
    #[inline]
    pub fn set_ports(&mut self, src: u16, dst: u16) {
        write_u16_pair(self.buffer.as_mut(), field::SRC_PORT.start, src, dst);
    }

    /// Set the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    /// Set the length field.
    #[inline]
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Compute and write the checksum over `len` bytes with the pseudo-header
    /// for `src` and `dst`. A computed `0` is written as `0xffff`.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = match !checksum::fold(self.compute_sum(src, dst)) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }

    /// The payload, mutably, clamped to the buffer.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        clamped_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    // 12345 -> 53, 4 bytes of payload, plus 2 trailing bytes beyond `len`.
    static DATAGRAM: [u8; 14] = [
        0x30, 0x39, 0x00, 0x35, // ports
        0x00, 0x0c, 0x1d, 0xc8, // length 12, checksum
        0xde, 0xad, 0xbe, 0xef, // payload
        0xff, 0xff, // trailing junk, not part of the datagram
    ];

    #[test]
    fn deconstruct() {
        let p = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(p.src_port(), 12345);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 12);
        assert_eq!(p.checksum(), 0x1dc8);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(DST, DST));
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 14];
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(12345);
        p.set_dst_port(53);
        p.set_len(12);
        p.set_checksum(0xffff);
        p.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        p.fill_checksum(SRC, DST);
        buf[12..].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(buf, DATAGRAM);
    }

    #[test]
    fn zero_checksum_is_none() {
        let mut buf = DATAGRAM;
        buf[6..8].copy_from_slice(&[0, 0]);
        buf[8] = 0; // payload changed; with no checksum it still verifies
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Make the datagram sum to 0xffff by choosing the last payload word.
        let mut buf = [0u8; 12];
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_len(12);
        let s = checksum::fold(p.compute_sum(SRC, DST));
        buf[10..12].copy_from_slice(&(!s).to_be_bytes());
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        p.fill_checksum(SRC, DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn check_len_errors() {
        for n in 0..12 {
            assert_eq!(UdpPacket::new_checked(&DATAGRAM[..n]), Err(Error::Truncated));
        }
        assert!(UdpPacket::new_checked(&DATAGRAM[..12]).is_ok());
        let mut b = DATAGRAM;
        b[5] = 7;
        assert_eq!(UdpPacket::new_checked(&b[..]), Err(Error::Malformed));
        b[5] = 8;
        assert_eq!(UdpPacket::new_checked(&b[..]).unwrap().payload(), &[] as &[u8]);
        b[5] = 15;
        assert_eq!(UdpPacket::new_checked(&b[..]), Err(Error::Truncated));
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
        for n in [0usize, 1, 2, 17, 100] {
            let payload: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            let mut out = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv4([203, 0, 113, 9], [10, 96, 0, 10], 64)
                .udp(33000, 53)
                .write(&mut out, &payload)
                .unwrap();
            let theirs = SlicedPacket::from_ethernet(&out).unwrap();
            let u = match theirs.transport.unwrap() {
                TransportSlice::Udp(u) => u,
                _ => unreachable!(),
            };
            let eth = crate::wire::ethernet::EthernetFrame::new_checked(&out[..]).unwrap();
            let ip = crate::wire::ipv4::Ipv4Packet::new_checked(eth.payload()).unwrap();
            let p = UdpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(p.src_port(), u.source_port());
            assert_eq!(p.dst_port(), u.destination_port());
            assert_eq!(p.len(), u.length());
            assert_eq!(p.checksum(), u.checksum());
            assert_eq!(p.payload(), &payload[..]);
            assert!(p.verify_checksum(ip.src_addr(), ip.dst_addr()));
            let mut d = ip.payload().to_vec();
            let mut ours = UdpPacket::new_unchecked(&mut d[..]);
            ours.fill_checksum(ip.src_addr(), ip.dst_addr());
            assert_eq!(ours.checksum(), u.checksum());
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..40), fix_len in any::<bool>()) {
            if fix_len && data.len() >= 6 {
                let n = data.len() as u16;
                data[4..6].copy_from_slice(&n.to_be_bytes());
            }
            if let Ok(p) = UdpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.checksum(), p.verify_checksum(SRC, DST));
                prop_assert_eq!(p.payload().len() + HEADER_LEN, usize::from(p.len()));
            }
            if let Ok(mut p) = UdpPacket::new_checked(&mut data[..]) {
                p.fill_checksum(SRC, DST);
                prop_assert!(p.verify_checksum(SRC, DST));
                prop_assert_ne!(p.checksum(), 0);
                p.set_len(u16::MAX);
                let _ = (p.payload().len(), p.payload_mut().len(), p.verify_checksum(SRC, DST));
                p.set_len(0);
                let _ = (p.payload().len(), p.payload_mut().len());
                p.fill_checksum(SRC, DST);
            }
        }

        #[test]
        fn truncations_never_panic(n in 0usize..=14) {
            if let Ok(p) = UdpPacket::new_checked(&DATAGRAM[..n]) {
                prop_assert!(n >= 12);
                prop_assert!(p.verify_checksum(SRC, DST));
            }
        }
    }
}
