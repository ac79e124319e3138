//! A zero-copy DNS message wrapper (RFC 1035 4.1), in the style of the
//! dataplane's `wire` modules and smoltcp.
//!
//! [`DnsPacket`] wraps any `T: AsRef<[u8]>` holding a DNS message (a UDP
//! payload). `new_unchecked` checks nothing; `check_len` checks that the
//! 12-byte header is there; `new_checked` does both, after which no header
//! getter or setter can panic. Setters need `AsMut<[u8]>`. The variable
//! parts (the question, an OPT record) are read by [`DnsPacket::question`]
//! and [`DnsPacket::opt`], which bounds-check every byte they read and return
//! an error, never panic, on any input.

/// Length of the header.
pub const HEADER_LEN: usize = 12;
/// Longest name in wire format.
pub const MAX_NAME_LEN: usize = 255;
/// Record type OPT (RFC 6891).
pub const TYPE_OPT: u16 = 41;
/// Class IN.
pub const CLASS_IN: u16 = 1;

type Field = core::ops::Range<usize>;

mod field {
    use super::Field;

    pub const ID: Field = 0..2;
    pub const FLAGS: Field = 2..4;
    pub const QDCOUNT: Field = 4..6;
    pub const ANCOUNT: Field = 6..8;
    pub const NSCOUNT: Field = 8..10;
    pub const ARCOUNT: Field = 10..12;
}

/// Header flag bits (the second 16-bit word).
pub mod flags {
    /// A response.
    pub const QR: u16 = 0x8000;
    /// The opcode's four bits.
    pub const OPCODE: u16 = 0x7800;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Checking disabled (RFC 4035: copied into the response).
    pub const CD: u16 = 0x0010;
    /// The response code's four bits.
    pub const RCODE: u16 = 0x000f;
}

/// Why the variable part of a message was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The message ends inside a field.
    Truncated,
    /// A label type other than a plain label or a pointer, a name over 255
    /// bytes, or an option running past its record.
    Malformed,
    /// A compression pointer in the question name.
    Compressed,
    /// The additional record is not an OPT record at the root.
    NotOpt,
    /// EDNS version other than 0.
    EdnsVersion,
    /// An EDNS option other than the ones ignored (COOKIE, PADDING).
    EdnsOption,
}

/// The question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    /// Length of the name in wire format.
    pub name_len: usize,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// Offset just past the question.
    pub end: usize,
}

/// An OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    /// The requestor's UDP payload size (the CLASS field).
    pub udp_size: u16,
    /// Offset just past the record.
    pub end: usize,
}

/// A read/write wrapper around a DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPacket<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

impl<T: AsRef<[u8]>> DnsPacket<T> {
    /// Wrap a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wrap a buffer and [`check_len`](Self::check_len) it.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if the buffer is shorter than the header.
    #[inline]
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn field(&self, f: Field) -> u16 {
        let b = &self.buffer.as_ref()[f];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// ID.
    #[inline]
    pub fn id(&self) -> u16 {
        self.field(field::ID)
    }

    /// The flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode).
    #[inline]
    pub fn flags(&self) -> u16 {
        self.field(field::FLAGS)
    }

    /// The opcode (0 = QUERY).
    #[inline]
    pub fn opcode(&self) -> u8 {
        ((self.flags() & flags::OPCODE) >> 11) as u8
    }

    /// The response code's low four bits.
    #[inline]
    pub fn rcode(&self) -> u8 {
        (self.flags() & flags::RCODE) as u8
    }

    /// QDCOUNT.
    #[inline]
    pub fn qdcount(&self) -> u16 {
        self.field(field::QDCOUNT)
    }

    /// ANCOUNT.
    #[inline]
    pub fn ancount(&self) -> u16 {
        self.field(field::ANCOUNT)
    }

    /// NSCOUNT.
    #[inline]
    pub fn nscount(&self) -> u16 {
        self.field(field::NSCOUNT)
    }

    /// ARCOUNT.
    #[inline]
    pub fn arcount(&self) -> u16 {
        self.field(field::ARCOUNT)
    }

    /// Read the question at offset 12, writing its name lower-cased to
    /// `lower[..name_len]`. A compression pointer is [`ParseError::Compressed`]:
    /// the question is the first name of a message, so a pointer can only
    /// point into the header or forward, and the answer bytes of the table
    /// need the name spelled out.
    pub fn question(&self, lower: &mut [u8; MAX_NAME_LEN]) -> Result<Question, ParseError> {
        let b = self.buffer.as_ref();
        let mut at = HEADER_LEN;
        let mut out = 0;
        loop {
            let len = *b.get(at).ok_or(ParseError::Truncated)?;
            match len & 0xc0 {
                0x00 => {}
                0xc0 => return Err(ParseError::Compressed),
                _ => return Err(ParseError::Malformed),
            }
            let len = usize::from(len);
            if out + 1 + len > MAX_NAME_LEN {
                return Err(ParseError::Malformed);
            }
            let label = b.get(at..at + 1 + len).ok_or(ParseError::Truncated)?;
            for (dst, src) in lower[out..out + 1 + len].iter_mut().zip(label) {
                *dst = src.to_ascii_lowercase();
            }
            out += 1 + len;
            at += 1 + len;
            if len == 0 {
                break;
            }
        }
        let qtype = read_u16(b, at).ok_or(ParseError::Truncated)?;
        let qclass = read_u16(b, at + 2).ok_or(ParseError::Truncated)?;
        Ok(Question { name_len: out, qtype, qclass, end: at + 4 })
    }

    /// Read an OPT record at `at` (RFC 6891): the root name, type 41, the
    /// payload size, version 0. Options are walked and bounds-checked:
    /// COOKIE (RFC 7873 5.2: a server without cookies ignores it) and
    /// PADDING (RFC 7830) are ignored, any other is [`ParseError::EdnsOption`].
    pub fn opt(&self, at: usize) -> Result<Opt, ParseError> {
        const COOKIE: u16 = 10;
        const PADDING: u16 = 12;
        let b = self.buffer.as_ref();
        if *b.get(at).ok_or(ParseError::Truncated)? != 0 {
            return Err(ParseError::NotOpt);
        }
        if read_u16(b, at + 1).ok_or(ParseError::Truncated)? != TYPE_OPT {
            return Err(ParseError::NotOpt);
        }
        let udp_size = read_u16(b, at + 3).ok_or(ParseError::Truncated)?;
        // TTL: extended rcode, version, flags (DO is ignored: no DNSSEC here).
        let version = *b.get(at + 6).ok_or(ParseError::Truncated)?;
        let rdlen = usize::from(read_u16(b, at + 9).ok_or(ParseError::Truncated)?);
        let start = at + 11;
        let end = start + rdlen;
        if end > b.len() {
            return Err(ParseError::Truncated);
        }
        if version != 0 {
            return Err(ParseError::EdnsVersion);
        }
        let mut o = start;
        while o < end {
            let code = read_u16(b, o).filter(|_| o + 4 <= end).ok_or(ParseError::Malformed)?;
            let len = usize::from(read_u16(b, o + 2).ok_or(ParseError::Malformed)?);
            o += 4 + len;
            if o > end {
                return Err(ParseError::Malformed);
            }
            if code != COOKIE && code != PADDING {
                return Err(ParseError::EdnsOption);
            }
        }
        Ok(Opt { udp_size, end })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DnsPacket<T> {
    #[inline]
    fn set_field(&mut self, f: Field, value: u16) {
        self.buffer.as_mut()[f].copy_from_slice(&value.to_be_bytes());
    }

    /// Set the flags word.
    #[inline]
    pub fn set_flags(&mut self, value: u16) {
        self.set_field(field::FLAGS, value);
    }

    /// Set QDCOUNT.
    #[inline]
    pub fn set_qdcount(&mut self, value: u16) {
        self.set_field(field::QDCOUNT, value);
    }

    /// Set ANCOUNT, NSCOUNT and ARCOUNT.
    #[inline]
    pub fn set_record_counts(&mut self, [an, ns, ar]: [u16; 3]) {
        self.set_field(field::ANCOUNT, an);
        self.set_field(field::NSCOUNT, ns);
        self.set_field(field::ARCOUNT, ar);
    }
}

/// Whether a query type is a meta type or one the table never answers from
/// a single name (ANY, AXFR, IXFR, MAILA, MAILB, OPT, TSIG, TKEY), or 0.
#[inline]
pub fn is_meta_qtype(qtype: u16) -> bool {
    qtype == 0 || qtype == TYPE_OPT || (128..=255).contains(&qtype)
}

/// The OPT record of our responses: root name, type 41, our payload size,
/// extended rcode 0, version 0, no flags, no options.
#[inline]
pub fn opt_record(udp_size: u16) -> [u8; 11] {
    let t = TYPE_OPT.to_be_bytes();
    let s = udp_size.to_be_bytes();
    [0, t[0], t[1], s[0], s[1], 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    // ID 0xbeef, RD, one question `Ab.c` A IN, one OPT (size 1232, COOKIE).
    static QUERY: [u8; 46] = [
        0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
        0x02, b'A', b'b', 0x01, b'c', 0x00, 0x00, 0x01, 0x00, 0x01, //
        0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, //
        0x00, 0x0a, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0xff,
    ];

    #[test]
    fn deconstruct() {
        let p = DnsPacket::new_checked(&QUERY[..45]).unwrap();
        assert_eq!((p.id(), p.flags(), p.opcode(), p.rcode()), (0xbeef, 0x0100, 0, 0));
        assert_eq!((p.qdcount(), p.ancount(), p.nscount(), p.arcount()), (1, 0, 0, 1));
        let mut lower = [0; MAX_NAME_LEN];
        let q = p.question(&mut lower).unwrap();
        assert_eq!(q, Question { name_len: 6, qtype: 1, qclass: 1, end: 22 });
        assert_eq!(&lower[..6], b"\x02ab\x01c\x00");
        assert_eq!(p.opt(q.end), Ok(Opt { udp_size: 1232, end: 45 }));
    }

    #[test]
    fn impossible_lengths() {
        assert_eq!(DnsPacket::new_checked(&QUERY[..11]), Err(ParseError::Truncated));
        let mut lower = [0; MAX_NAME_LEN];
        for cut in 12..22 {
            let p = DnsPacket::new_checked(&QUERY[..cut]).unwrap();
            assert_eq!(p.question(&mut lower), Err(ParseError::Truncated), "cut at {cut}");
        }
        for cut in 22..45 {
            assert_eq!(DnsPacket::new_checked(&QUERY[..cut]).unwrap().opt(22), Err(ParseError::Truncated), "{cut}");
        }
        // An option longer than the record.
        let mut q = QUERY;
        q[36] = 9;
        assert_eq!(DnsPacket::new_checked(&q[..45]).unwrap().opt(22), Err(ParseError::Malformed));
        // Three bytes of option header.
        let mut q = QUERY;
        q[32] = 3;
        assert_eq!(DnsPacket::new_checked(&q[..36]).unwrap().opt(22), Err(ParseError::Malformed));
    }

    #[test]
    fn question_errors() {
        let mut lower = [0; MAX_NAME_LEN];
        let mut q = QUERY;
        q[15] = 0xc0;
        assert_eq!(DnsPacket::new_checked(&q[..]).unwrap().question(&mut lower), Err(ParseError::Compressed));
        q[15] = 0x41;
        assert_eq!(DnsPacket::new_checked(&q[..]).unwrap().question(&mut lower), Err(ParseError::Malformed));
        // 4 labels of 63 bytes: 256 bytes with the root.
        let mut long = vec![0u8; 12];
        for _ in 0..4 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(DnsPacket::new_checked(&long[..]).unwrap().question(&mut lower), Err(ParseError::Malformed));
        // 3 labels of 63 and one of 61: 255 bytes with the root, the longest name.
        long[12 + 3 * 64] = 61;
        long.drain(12 + 3 * 64 + 1..12 + 3 * 64 + 3);
        assert_eq!(DnsPacket::new_checked(&long[..]).unwrap().question(&mut lower).unwrap().name_len, 255);
    }

    #[test]
    fn opt_errors() {
        let p = |q: &[u8]| DnsPacket::new_checked(q.to_vec()).unwrap().opt(22);
        let mut q = QUERY;
        q[23] = 0;
        q[24] = 0xfa; // TSIG
        assert_eq!(p(&q[..45]), Err(ParseError::NotOpt));
        let mut q = QUERY;
        q[28] = 1;
        assert_eq!(p(&q[..45]), Err(ParseError::EdnsVersion));
        let mut q = QUERY;
        q[34] = 8; // ECS
        assert_eq!(p(&q[..45]), Err(ParseError::EdnsOption));
        let mut q = QUERY;
        q[22] = 1;
        assert_eq!(p(&q[..45]), Err(ParseError::NotOpt));
    }

    #[test]
    fn construct() {
        let mut p = DnsPacket::new_checked(QUERY.to_vec()).unwrap();
        p.set_flags(flags::QR | flags::AA | flags::RD | 3);
        p.set_qdcount(1);
        p.set_record_counts([1, 2, 3]);
        let b = p.into_inner();
        assert_eq!(&b[..12], &[0xbe, 0xef, 0x85, 0x03, 0, 1, 0, 1, 0, 2, 0, 3]);
        assert_eq!(opt_record(1232), [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert!(is_meta_qtype(255) && is_meta_qtype(252) && is_meta_qtype(41) && !is_meta_qtype(1));
    }
}
