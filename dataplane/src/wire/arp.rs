//! ARP packets (RFC 826), for Ethernet and IPv4 only.
//!
//! ```text
//!  0       2       4    5    6       8      14     18     24     28
//! | htype | ptype |hlen|plen| oper  | sha  | spa  | tha  | tpa  |
//! |   1   | 0x0800|  6 |  4 |       |      |      |      |      |
//! ```
//!
//! [`ArpPacket::check_len`] rejects any other hardware or protocol type, so
//! the fixed offsets above always apply after `new_checked`.

use std::net::Ipv4Addr;

use super::{read_mac, read_u16, read_u32, write_u16, write_u32, Error, Result};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Hardware type: Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Protocol type: IPv4.
pub const PTYPE_IPV4: u16 = 0x0800;

/// Operation codes.
pub mod operation {
    /// ARP request.
    pub const REQUEST: u16 = 1;
    /// ARP reply.
    pub const REPLY: u16 = 2;
}

mod field {
    use crate::wire::Field;

    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// A read/write wrapper around an Ethernet/IPv4 ARP packet buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wrap a buffer and [`check_len`](Self::check_len) it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if the buffer is shorter than 28 bytes; `Malformed` unless
    /// htype is 1, ptype 0x0800, hlen 6 and plen 4. Longer buffers
    /// (Ethernet padding) are fine.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != PTYPE_IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 = Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (0x0800 = IPv4).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE)
    }

    /// Hardware address length (6).
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length (4).
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation: 1 request, 2 reply (see [`operation`]).
    #[inline]
    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    #[inline]
    pub fn sender_hw_addr(&self) -> [u8; 6] {
        read_mac(self.buffer.as_ref(), field::SHA)
    }

    /// Sender protocol address.
    #[inline]
    pub fn sender_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.buffer.as_ref(), field::SPA))
    }

    /// Target hardware address.
    #[inline]
    pub fn target_hw_addr(&self) -> [u8; 6] {
        read_mac(self.buffer.as_ref(), field::THA)
    }

    /// Target protocol address.
    #[inline]
    pub fn target_proto_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_u32(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Write htype 1, ptype 0x0800, hlen 6, plen 4.
    #[inline]
    pub fn set_fixed_header(&mut self) {
        let data = self.buffer.as_mut();
        write_u16(data, field::HTYPE, HTYPE_ETHERNET);
        write_u16(data, field::PTYPE, PTYPE_IPV4);
        data[field::HLEN] = 6;
        data[field::PLEN] = 4;
    }

    /// Set the operation.
    #[inline]
    pub fn set_operation(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::OPER, value);
    }

    /// Set the sender hardware address.
    #[inline]
    pub fn set_sender_hw_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr);
    }

    /// Set the sender protocol address.
    #[inline]
    pub fn set_sender_proto_addr(&mut self, addr: Ipv4Addr) {
        write_u32(self.buffer.as_mut(), field::SPA, u32::from(addr));
    }

    /// Set the target hardware address.
    #[inline]
    pub fn set_target_hw_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr);
    }

    /// Set the target protocol address.
    #[inline]
    pub fn set_target_proto_addr(&mut self, addr: Ipv4Addr) {
        write_u32(self.buffer.as_mut(), field::TPA, u32::from(addr));
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    // Who has 10.0.0.2? Tell 10.0.0.1 (02:00:00:00:00:01).
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // fixed header, request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // sha
        0x0a, 0x00, 0x00, 0x01, // spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha
        0x0a, 0x00, 0x00, 0x02, // tpa
    ];

    #[test]
    fn deconstruct() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), 0x0800);
        assert_eq!(p.hardware_len(), 6);
        assert_eq!(p.protocol_len(), 4);
        assert_eq!(p.operation(), operation::REQUEST);
        assert_eq!(p.sender_hw_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.target_hw_addr(), [0; 6]);
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn construct() {
        let mut buf = [0xffu8; 28];
        let mut p = ArpPacket::new_unchecked(&mut buf[..]);
        p.set_fixed_header();
        p.set_operation(operation::REQUEST);
        p.set_sender_hw_addr([2, 0, 0, 0, 0, 1]);
        p.set_sender_proto_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_target_hw_addr([0; 6]);
        p.set_target_proto_addr(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn reply_in_place() {
        // Turn the request into a reply the way a responder would.
        let mut buf = REQUEST;
        let mut p = ArpPacket::new_checked(&mut buf[..]).unwrap();
        let (sha, spa, tpa) = (p.sender_hw_addr(), p.sender_proto_addr(), p.target_proto_addr());
        p.set_operation(operation::REPLY);
        p.set_target_hw_addr(sha);
        p.set_target_proto_addr(spa);
        p.set_sender_hw_addr([2, 0, 0, 0, 0, 2]);
        p.set_sender_proto_addr(tpa);
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), operation::REPLY);
        assert_eq!(p.target_hw_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(p.sender_proto_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn check_len_errors() {
        for n in 0..28 {
            assert_eq!(ArpPacket::new_checked(&REQUEST[..n]), Err(Error::Truncated));
        }
        for (i, v) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[i] = v;
            assert_eq!(ArpPacket::new_checked(&b[..]), Err(Error::Malformed), "byte {i}");
        }
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST);
        assert!(ArpPacket::new_checked(&padded[..]).is_ok());
    }

    // etherparse 0.16 has no ARP support, so there is no cross-check here.
    // An ARP frame is checked through the Ethernet wrapper instead.
    #[test]
    fn inside_ethernet() {
        use crate::wire::ethernet::{EthernetFrame, ETHERTYPE_ARP};
        let mut frame = [0u8; 60]; // minimum frame, padded
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        frame[14..42].copy_from_slice(&REQUEST);
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.ethertype(), ETHERTYPE_ARP);
        let p = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(p.sender_hw_addr(), eth.src_addr());
        assert_eq!(p.target_proto_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if data.len() >= 6 {
                data[..6].copy_from_slice(&REQUEST[..6]);
            }
            if let Ok(mut p) = ArpPacket::new_checked(&mut data[..]) {
                let _ = (p.operation(), p.sender_hw_addr(), p.sender_proto_addr());
                let _ = (p.target_hw_addr(), p.target_proto_addr());
                p.set_operation(2);
                p.set_fixed_header();
                p.set_target_proto_addr(Ipv4Addr::LOCALHOST);
            }
        }
    }
}
