//! Ethernet II frames, optionally with one 802.1Q VLAN tag.
//!
//! ```text
//!  0      6      12         14         16         18
//! +------+------+----------+----------+----------+---------
//! | dst  | src  | 0x8100   | TCI      | type     | payload   (tagged)
//! | dst  | src  | type     | payload ...                     (untagged)
//! ```
//!
//! [`EthernetFrame::ethertype`] and [`EthernetFrame::set_ethertype`] address the
//! *inner* ethertype, the one after the tag if there is one, so callers need not
//! care whether the frame is tagged. Stacked tags (QinQ, 0x88a8) are not
//! parsed: such a frame reports the outer ethertype.

use super::{read_mac, read_u16, write_u16, Error, Field, Result};

/// IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// An 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet II header with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;

mod field {
    use crate::wire::Field;

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    /// The ethertype of an untagged frame, or the TPID (0x8100) of a tagged one.
    pub const ETHERTYPE: Field = 12..14;
    /// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub const VLAN_TCI: Field = 14..16;
    /// The ethertype after the tag.
    pub const VLAN_ETHERTYPE: Field = 16..18;
}

const VID_MASK: u16 = 0x0fff;

/// A read/write wrapper around an Ethernet II frame buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wrap a buffer without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wrap a buffer and [`check_len`](Self::check_len) it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// `Err(Truncated)` if the buffer is shorter than 14 bytes, or than 18 if
    /// the outer ethertype is 0x8100.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if read_u16(data, field::ETHERTYPE) == ETHERTYPE_VLAN && data.len() < VLAN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        read_mac(self.buffer.as_ref(), field::DESTINATION)
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        read_mac(self.buffer.as_ref(), field::SOURCE)
    }

    /// The outer ethertype: 0x8100 for a tagged frame.
    #[inline]
    pub fn outer_ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Whether one 802.1Q tag follows the source address.
    #[inline]
    pub fn is_vlan_tagged(&self) -> bool {
        self.outer_ethertype() == ETHERTYPE_VLAN
    }

    /// The 12-bit VLAN ID when one 802.1Q tag is present.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        if self.is_vlan_tagged() {
            Some(read_u16(self.buffer.as_ref(), field::VLAN_TCI) & VID_MASK)
        } else {
            None
        }
    }

    /// The inner ethertype (after one 802.1Q tag if present).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let data = self.buffer.as_ref();
        if self.is_vlan_tagged() {
            read_u16(data, field::VLAN_ETHERTYPE)
        } else {
            read_u16(data, field::ETHERTYPE)
        }
    }

    /// 14, or 18 with a VLAN tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.is_vlan_tagged() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Everything after the header (including any Ethernet padding).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let start = self.header_len();
        &self.buffer.as_ref()[start..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Set the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr);
    }

    /// Set the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr);
    }

    /// Set destination and source MACs together from one 12-byte block
    /// (destination first, as on the wire).
    #[inline]
    pub fn set_addrs(&mut self, dst_then_src: &[u8; 12]) {
        self.buffer.as_mut()[field::DESTINATION.start..field::SOURCE.end].copy_from_slice(dst_then_src);
    }

    /// Set the inner ethertype: after the tag if the frame is tagged.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        let f: Field = if self.is_vlan_tagged() { field::VLAN_ETHERTYPE } else { field::ETHERTYPE };
        write_u16(self.buffer.as_mut(), f, ethertype);
    }

    /// Set the 12-bit VLAN ID of a tagged frame, keeping PCP and DEI. Does
    /// nothing on an untagged frame (it cannot grow the buffer).
    #[inline]
    pub fn set_vlan_id(&mut self, vid: u16) {
        if self.is_vlan_tagged() {
            let data = self.buffer.as_mut();
            let tci = (read_u16(data, field::VLAN_TCI) & !VID_MASK) | (vid & VID_MASK);
            write_u16(data, field::VLAN_TCI, tci);
        }
    }

    /// Everything after the header, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    static FRAME: [u8; 18] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, // dst
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, // src
        0x08, 0x00, // IPv4
        0xaa, 0xbb, 0xcc, 0xdd, // payload
    ];

    static VLAN_FRAME: [u8; 22] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, // dst
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, // src
        0x81, 0x00, // 802.1Q
        0xa0, 0x2a, // PCP 5, DEI 0, VID 42
        0x08, 0x06, // ARP
        0xaa, 0xbb, 0xcc, 0xdd, // payload
    ];

    #[test]
    fn deconstruct() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src_addr(), [0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.outer_ethertype(), ETHERTYPE_IPV4);
        assert!(!f.is_vlan_tagged());
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.header_len(), HEADER_LEN);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn deconstruct_vlan() {
        let f = EthernetFrame::new_checked(&VLAN_FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.vlan_id(), Some(42));
        assert_eq!(f.outer_ethertype(), ETHERTYPE_VLAN);
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.header_len(), VLAN_HEADER_LEN);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 18];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        f.set_dst_addr([1, 2, 3, 4, 5, 6]);
        f.set_src_addr([0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
        f.set_ethertype(ETHERTYPE_IPV4);
        f.set_vlan_id(7); // untagged: no effect
        f.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn construct_vlan() {
        let mut buf = [0u8; 22];
        buf[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        buf[14] = 0xa0; // PCP 5
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst_addr([1, 2, 3, 4, 5, 6]);
        f.set_src_addr([0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
        f.set_vlan_id(0xf02a); // high bits ignored
        f.set_ethertype(ETHERTYPE_ARP);
        f.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(buf, VLAN_FRAME);
    }

    #[test]
    fn truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(EthernetFrame::new_checked(&FRAME[..n]), Err(Error::Truncated));
        }
        assert!(EthernetFrame::new_checked(&FRAME[..14]).is_ok());
        for n in 0..VLAN_HEADER_LEN {
            assert_eq!(EthernetFrame::new_checked(&VLAN_FRAME[..n]), Err(Error::Truncated));
        }
        let f = EthernetFrame::new_checked(&VLAN_FRAME[..18]).unwrap();
        assert!(f.payload().is_empty());
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{PacketBuilder, SlicedPacket, VlanId};
        let payload = [1u8, 2, 3, 4, 5];
        for vlan in [None, Some(100u16)] {
            let mut out = Vec::new();
            let src = [2, 0, 0, 0, 0, 1];
            let dst = [2, 0, 0, 0, 0, 2];
            let b = PacketBuilder::ethernet2(src, dst);
            match vlan {
                None => b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1, 2).write(&mut out, &payload),
                Some(v) => b
                    .single_vlan(VlanId::try_new(v).unwrap())
                    .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                    .udp(1, 2)
                    .write(&mut out, &payload),
            }
            .unwrap();
            let theirs = SlicedPacket::from_ethernet(&out).unwrap();
            let f = EthernetFrame::new_checked(&out[..]).unwrap();
            let eth = match theirs.link.unwrap() {
                etherparse::LinkSlice::Ethernet2(e) => e,
                _ => unreachable!(),
            };
            assert_eq!(f.src_addr(), eth.source());
            assert_eq!(f.dst_addr(), eth.destination());
            assert_eq!(f.vlan_id(), vlan);
            assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
            assert_eq!(f.header_len(), if vlan.is_some() { 18 } else { 14 });
            assert_eq!(f.payload().len(), 20 + 8 + payload.len());
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(f) = EthernetFrame::new_checked(&data[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.vlan_id(), f.ethertype());
                prop_assert!(f.payload().len() + f.header_len() == data.len());
            }
            let mut data = data;
            if let Ok(mut f) = EthernetFrame::new_checked(&mut data[..]) {
                f.set_dst_addr([0; 6]);
                f.set_src_addr([0; 6]);
                f.set_ethertype(0x1234);
                f.set_vlan_id(3);
                let _ = f.payload_mut();
            }
        }
    }
}
