//! TCP segments (RFC 9293). Options are not parsed; [`TcpPacket::header_len`]
//! skips them.
//!
//! The wrapper's buffer is the whole segment: wrap exactly the IPv4 payload
//! (`Ipv4Packet::payload`), because the checksum covers the whole buffer.

use std::net::Ipv4Addr;

use super::{checksum, clamped, read_u16, read_u32, write_u16, write_u16_pair, write_u32, Error, Result, IPPROTO_TCP};

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// The low eight flag bits, as returned by [`TcpPacket::flags`].
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN-Echo.
    pub const ECE: u8 = 0x40;
    /// Congestion Window Reduced.
    pub const CWR: u8 = 0x80;
}

mod field {
    use crate::wire::{Field, Rest};

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset (high nibble), reserved bits and NS (low bit).
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const OPTIONS: Rest = 20..;
}

/// A read/write wrapper around a TCP segment buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wrap a buffer and [`check_len`](Self::check_len) it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if the buffer is shorter than 20 bytes or than the data
    /// offset; `Malformed` if the data offset is below 5 words.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The low eight flag bits (see [`flags`]). NS is not included.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Window size.
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_ptr(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The option bytes (`20..header_len`), clamped to the buffer.
    #[inline]
    pub fn options(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), field::OPTIONS.start, self.header_len())
    }

    /// The payload (`header_len..`), clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        clamped(data, self.header_len(), data.len())
    }

    /// Whether the checksum over the whole buffer, with the pseudo-header for
    /// `src` and `dst`, is correct.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = self.buffer.as_ref();
        let s =
            checksum::add(checksum::pseudo_header_sum(src, dst, IPPROTO_TCP, data.len() as u16), checksum::sum(data));
        !checksum::fold(s) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Set the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    /// Set the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, value);
    }

    /// Set the header length in bytes (a multiple of 4, 20..=60; the low two
    /// bits are dropped). Keeps the reserved bits and NS.
    #[inline]
    pub fn set_header_len(&mut self, bytes: usize) {
        let data = self.buffer.as_mut();
        let words = ((bytes / 4) & 0x0f) as u8;
        data[field::DATA_OFF] = (data[field::DATA_OFF] & 0x0f) | (words << 4);
    }

    /// Set the low eight flag bits. Keeps NS.
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Set the window size.
    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WIN_SIZE, value);
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Set the urgent pointer.
    #[inline]
    pub fn set_urgent_ptr(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, value);
    }

    /// Compute and write the checksum over the whole buffer with the
    /// pseudo-header for `src` and `dst`.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let s =
            checksum::add(checksum::pseudo_header_sum(src, dst, IPPROTO_TCP, data.len() as u16), checksum::sum(data));
        self.set_checksum(!checksum::fold(s));
    }

    /// The payload, mutably, clamped to the buffer.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let data = self.buffer.as_mut();
        let len = data.len();
        super::clamped_mut(data, start, len)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    // SYN+ACK 49152 -> 80 with an MSS option and 3 bytes of payload.
    static SEGMENT: [u8; 27] = [
        0xc0, 0x00, 0x00, 0x50, // ports
        0x01, 0x02, 0x03, 0x04, // seq
        0x05, 0x06, 0x07, 0x08, // ack
        0x60, 0x12, 0xfa, 0xf0, // data offset 6, SYN|ACK, window
        0xf4, 0x58, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        b'a', b'b', b'c',
    ];

    #[test]
    fn deconstruct() {
        let p = TcpPacket::new_checked(&SEGMENT[..]).unwrap();
        assert_eq!(p.src_port(), 49152);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x0102_0304);
        assert_eq!(p.ack_number(), 0x0506_0708);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), flags::SYN | flags::ACK);
        assert_eq!(p.window_len(), 0xfaf0);
        assert_eq!(p.checksum(), 0xf458);
        assert_eq!(p.urgent_ptr(), 0);
        assert_eq!(p.options(), &[2, 4, 5, 0xb4]);
        assert_eq!(p.payload(), b"abc");
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 27];
        let mut p = TcpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(49152);
        p.set_dst_port(80);
        p.set_seq_number(0x0102_0304);
        p.set_ack_number(0x0506_0708);
        p.set_header_len(24);
        p.set_flags(flags::SYN | flags::ACK);
        p.set_window_len(0xfaf0);
        p.set_urgent_ptr(0);
        p.payload_mut().copy_from_slice(b"abc");
        let b = p.into_inner();
        b[20..24].copy_from_slice(&[2, 4, 5, 0xb4]);
        let mut p = TcpPacket::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum(SRC, DST);
        assert_eq!(buf, SEGMENT);
    }

    #[test]
    fn set_header_len_keeps_ns() {
        let mut buf = SEGMENT;
        buf[12] |= 0x01; // NS
        let mut p = TcpPacket::new_unchecked(&mut buf[..]);
        p.set_header_len(20);
        p.set_flags(flags::FIN);
        assert_eq!(buf[12], 0x51);
        assert_eq!(buf[13], 0x01);
    }

    #[test]
    fn check_len_errors() {
        for n in 0..24 {
            assert_eq!(TcpPacket::new_checked(&SEGMENT[..n]), Err(Error::Truncated));
        }
        assert!(TcpPacket::new_checked(&SEGMENT[..24]).is_ok());
        let mut b = SEGMENT;
        b[12] = 0x40; // data offset 4
        assert_eq!(TcpPacket::new_checked(&b[..]), Err(Error::Malformed));
        b[12] = 0xf0; // 60 bytes > 27
        assert_eq!(TcpPacket::new_checked(&b[..]), Err(Error::Truncated));
    }

    #[test]
    fn etherparse_cross_check() {
        use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
        let payload: Vec<u8> = (0..33).collect(); // odd length
        let mut out = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64)
            .tcp(40000, 443, 0xdead_beef, 1024)
            .ack(0x1234_5678)
            .psh()
            .options_raw(&[1, 1, 1, 1, 2, 4, 5, 0xb4])
            .unwrap()
            .write(&mut out, &payload)
            .unwrap();
        let theirs = SlicedPacket::from_ip(&out).unwrap();
        let t = match theirs.transport.unwrap() {
            TransportSlice::Tcp(t) => t,
            _ => unreachable!(),
        };
        let ip = crate::wire::ipv4::Ipv4Packet::new_checked(&out[..]).unwrap();
        let p = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(p.src_port(), t.source_port());
        assert_eq!(p.dst_port(), t.destination_port());
        assert_eq!(p.seq_number(), t.sequence_number());
        assert_eq!(p.ack_number(), t.acknowledgment_number());
        assert_eq!(p.header_len(), t.header_len());
        assert_eq!(p.flags(), flags::ACK | flags::PSH);
        assert_eq!(p.window_len(), t.window_size());
        assert_eq!(p.checksum(), t.checksum());
        assert_eq!(p.urgent_ptr(), t.urgent_pointer());
        assert_eq!(p.options(), t.options());
        assert_eq!(p.payload(), &payload[..]);
        assert!(p.verify_checksum(ip.src_addr(), ip.dst_addr()));

        // Our fill agrees with etherparse's.
        let mut seg = ip.payload().to_vec();
        let mut ours = TcpPacket::new_unchecked(&mut seg[..]);
        ours.set_checksum(0xabcd);
        ours.fill_checksum(ip.src_addr(), ip.dst_addr());
        assert_eq!(ours.checksum(), t.checksum());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = TcpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.flags());
                let _ = (p.window_len(), p.checksum(), p.urgent_ptr(), p.options());
                prop_assert_eq!(p.payload().len() + p.header_len(), data.len());
                let _ = p.verify_checksum(SRC, DST);
            }
            if let Ok(mut p) = TcpPacket::new_checked(&mut data[..]) {
                p.fill_checksum(SRC, DST);
                prop_assert!(p.verify_checksum(SRC, DST));
                p.set_header_len(60);
                let _ = (p.payload().len(), p.options().len(), p.payload_mut().len());
            }
        }

        #[test]
        fn truncations_never_panic(n in 0usize..=27) {
            let b = &SEGMENT[..n];
            if let Ok(p) = TcpPacket::new_checked(b) {
                prop_assert!(n >= 24);
                let _ = (p.payload(), p.options(), p.verify_checksum(SRC, DST));
            }
        }
    }
}
