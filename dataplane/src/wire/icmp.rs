//! ICMPv4 messages (RFC 792): the 8-byte header and the rest of the buffer.
//!
//! The checksum covers the whole buffer, so wrap exactly the IPv4 payload.
//! For error messages (destination unreachable, time exceeded) the payload is
//! the offending packet's IPv4 header plus at least 8 bytes of its payload.
//! Wrap it with `Ipv4Packet::new_unchecked` and read the fixed fields you need,
//! since the inner total length usually exceeds the quoted bytes.

use super::{checksum, read_u16, read_u32, write_u16, write_u32, Error, Result};

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// Message types.
pub mod kind {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
}

/// Message codes, meaningful with the type noted on each.
pub mod code {
    /// `DEST_UNREACHABLE`: host unreachable.
    pub const HOST_UNREACHABLE: u8 = 1;
    /// `DEST_UNREACHABLE`: port unreachable.
    pub const PORT_UNREACHABLE: u8 = 3;
    /// `DEST_UNREACHABLE`: fragmentation needed and DF set (the next-hop MTU
    /// is in the low 16 bits of the rest of the header).
    pub const FRAG_NEEDED: u8 = 4;
    /// `TIME_EXCEEDED`: TTL exceeded in transit.
    pub const TTL_EXCEEDED: u8 = 0;
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

/// A read/write wrapper around an ICMPv4 message buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wrap a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
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

    /// Bytes 4..8 as one big-endian word.
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

    /// Everything after the 8-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }

    /// Whether the checksum over the whole buffer is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
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

    /// Compute and write the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Everything after the 8-byte header, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    static ECHO: [u8; 12] = [
        0x08, 0x00, 0x06, 0xfa, // echo request, code 0, checksum
        0x12, 0x34, 0x00, 0x01, // ident, seq
        b'p', b'i', b'n', b'g',
    ];

    #[test]
    fn deconstruct() {
        let p = Icmpv4Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(p.msg_type(), kind::ECHO_REQUEST);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.checksum(), 0x06fa);
        assert_eq!(p.rest_of_header(), 0x1234_0001);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 1);
        assert_eq!(p.payload(), b"ping");
        assert!(p.verify_checksum());
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 12];
        let mut p = Icmpv4Packet::new_unchecked(&mut buf[..]);
        p.set_msg_type(kind::ECHO_REQUEST);
        p.set_msg_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq_no(1);
        p.payload_mut().copy_from_slice(b"ping");
        p.fill_checksum();
        assert_eq!(buf, ECHO);

        let mut buf2 = [0u8; 12];
        let mut p = Icmpv4Packet::new_unchecked(&mut buf2[..]);
        p.set_msg_type(kind::ECHO_REQUEST);
        p.set_rest_of_header(0x1234_0001);
        p.payload_mut().copy_from_slice(b"ping");
        p.set_checksum(0x06fa);
        assert_eq!(buf2, ECHO);
    }

    #[test]
    fn frag_needed() {
        let mut buf = [0u8; 8 + 28];
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_msg_type(kind::DEST_UNREACHABLE);
        p.set_msg_code(code::FRAG_NEEDED);
        p.set_rest_of_header(1400);
        p.fill_checksum();
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.rest_of_header() & 0xffff, 1400);
        assert_eq!(p.payload().len(), 28);
    }

    #[test]
    fn truncated() {
        for n in 0..8 {
            assert_eq!(Icmpv4Packet::new_checked(&ECHO[..n]), Err(Error::Truncated));
        }
        let p = Icmpv4Packet::new_checked(&ECHO[..8]).unwrap();
        assert!(p.payload().is_empty());
        assert!(!p.verify_checksum());
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
        let payload = b"abcdefghijklmnopq"; // odd length
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(0xbeef, 7)
            .write(&mut out, payload)
            .unwrap();
        let theirs = SlicedPacket::from_ip(&out).unwrap();
        let i = match theirs.transport.unwrap() {
            TransportSlice::Icmpv4(i) => i,
            _ => unreachable!(),
        };
        let ip = crate::wire::ipv4::Ipv4Packet::new_checked(&out[..]).unwrap();
        let p = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(p.msg_type(), i.type_u8());
        assert_eq!(p.msg_code(), i.code_u8());
        assert_eq!(p.checksum(), i.checksum());
        assert_eq!(p.echo_ident(), 0xbeef);
        assert_eq!(p.echo_seq_no(), 7);
        assert_eq!(p.payload(), payload);
        assert!(p.verify_checksum());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Icmpv4Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.rest_of_header());
                let _ = (p.echo_ident(), p.echo_seq_no(), p.verify_checksum());
                prop_assert_eq!(p.payload().len() + HEADER_LEN, data.len());
            }
            if let Ok(mut p) = Icmpv4Packet::new_checked(&mut data[..]) {
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
            }
        }
    }
}
