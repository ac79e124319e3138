//! Zero-copy packet wrappers and checksums, in the style of smoltcp's `wire`.
//!
//! Each protocol has a wrapper, for example [`ipv4::Ipv4Packet<T>`], over any
//! buffer `T: AsRef<[u8]>`: a `&[u8]`, a `&mut [u8]` borrowed from a UMEM
//! frame, or a `Vec<u8>` in tests. A wrapper holds only the buffer. Its
//! accessors read and write the header fields in place and never copy or
//! allocate.
//!
//! # Contract
//!
//! - `new_unchecked(buffer)` wraps the buffer and checks nothing. Accessors may
//!   panic if the buffer is too short for the field they touch.
//! - `check_len(&self)` checks that the buffer holds every fixed field and that
//!   the length fields (header length, total length) agree with the buffer. It
//!   returns [`Error::Truncated`] if the buffer is too short and
//!   [`Error::Malformed`] if a field is impossible, such as an IPv4 header length
//!   below 20 bytes.
//! - `new_checked(buffer)` is `new_unchecked` followed by `check_len`. After it
//!   succeeds, no getter and no setter can panic. Payload accessors clamp their
//!   range to the buffer. If a setter later writes a length field that
//!   disagrees with the buffer (for example `set_total_len`), the accessors
//!   still do not panic, but run `check_len` again before you trust the payload
//!   bounds.
//! - Getters need `T: AsRef<[u8]>`. Setters need
//!   `T: AsRef<[u8]> + AsMut<[u8]>`.
//! - Each protocol lists its field offsets as byte ranges in a private
//!   `mod field`. Fields are read with `from_be_bytes` at those offsets and
//!   written with `to_be_bytes`. Buffers are never cast to `#[repr(C)]`
//!   structs: UMEM frames have no alignment guarantee, and offsets keep the code
//!   free of `unsafe`.
//!
//! Checksums live in [`checksum`]. It provides the RFC 1071 full sum and
//! RFC 1624 incremental updates ([`checksum::Delta`]), which the NAT path uses to
//! patch checksums after rewriting addresses and ports.
//!
//! Only Ethernet II (with at most one 802.1Q tag), ARP for Ethernet/IPv4, IPv4,
//! IPv6 (the fixed header, and a bounded walk over the Hop-by-Hop, Routing,
//! Fragment and Destination Options headers to the upper layer), TCP, UDP,
//! ICMPv4 and ICMPv6 are covered. QinQ, IPv4 option parsing, the contents of
//! IPv6 options, and IPv6 ESP/AH/Mobility headers are not.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

use core::fmt;

/// Why a buffer was rejected by a `check_len` / `new_checked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer is shorter than the header, or than a length field claims.
    Truncated,
    /// A field holds an impossible or unsupported value.
    Malformed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated packet"),
            Error::Malformed => f.write_str("malformed packet"),
        }
    }
}

impl std::error::Error for Error {}

/// The result type of the checked constructors.
pub type Result<T> = core::result::Result<T, Error>;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 next header of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// Field offsets, as in smoltcp: a single byte is a `usize`, a multi-byte field
/// is a `Range<usize>`, an open tail is a `RangeFrom<usize>`.
pub(crate) type Field = core::ops::Range<usize>;
pub(crate) type Rest = core::ops::RangeFrom<usize>;

/// `&data[start..end]`, clamped so that it cannot panic whatever the length
/// fields say.
#[inline]
pub(crate) fn clamped(data: &[u8], start: usize, end: usize) -> &[u8] {
    let end = end.min(data.len());
    let start = start.min(end);
    &data[start..end]
}

/// Mutable twin of [`clamped`].
#[inline]
pub(crate) fn clamped_mut(data: &mut [u8], start: usize, end: usize) -> &mut [u8] {
    let end = end.min(data.len());
    let start = start.min(end);
    &mut data[start..end]
}

#[inline]
pub(crate) fn read_u16(data: &[u8], field: Field) -> u16 {
    let b = &data[field];
    u16::from_be_bytes([b[0], b[1]])
}

#[inline]
pub(crate) fn read_u32(data: &[u8], field: Field) -> u32 {
    let b = &data[field];
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
pub(crate) fn read_mac(data: &[u8], field: Field) -> [u8; 6] {
    let b = &data[field];
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

#[inline]
pub(crate) fn write_u16(data: &mut [u8], field: Field, value: u16) {
    data[field].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn write_u32(data: &mut [u8], field: Field, value: u32) {
    data[field].copy_from_slice(&value.to_be_bytes());
}

/// Writes two adjacent big-endian u16 fields (e.g. a source and destination
/// port) starting at `at` with one 4-byte store.
#[inline]
pub(crate) fn write_u16_pair(data: &mut [u8], at: usize, first: u16, second: u16) {
    let both = (u32::from(first) << 16) | u32::from(second);
    data[at..at + 4].copy_from_slice(&both.to_be_bytes());
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn error_display() {
        assert_eq!(Error::Truncated.to_string(), "truncated packet");
        assert_eq!(Error::Malformed.to_string(), "malformed packet");
        let e: Box<dyn std::error::Error> = Box::new(Error::Malformed);
        assert_eq!(e.to_string(), "malformed packet");
    }

    #[test]
    fn clamped_never_panics() {
        let d = [1u8, 2, 3];
        assert_eq!(clamped(&d, 1, 2), &[2]);
        assert_eq!(clamped(&d, 2, 10), &[3]);
        assert_eq!(clamped(&d, 5, 10), &[] as &[u8]);
        assert_eq!(clamped(&d, 3, 1), &[] as &[u8]);
    }
}
