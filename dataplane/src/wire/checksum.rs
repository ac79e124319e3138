//! The Internet checksum: the RFC 1071 full sum and RFC 1624 incremental updates.
//!
//! A full checksum is `!fold(sum(data))` with the checksum field zeroed, plus
//! the pseudo-header sum for TCP and UDP. A packet verifies if the checksum
//! over all of it, checksum field included, is zero.
//!
//! NAT rewrites a few 16- or 32-bit fields and patches the checksum with
//! RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`. A [`Delta`] accumulates the
//! `~m + m'` terms, so one flow's adjustment (address and port rewrites, for the
//! IP header and for the TCP/UDP pseudo-header) is computed once and applied to
//! every packet.
//!
//! # Incremental update equals full recompute
//!
//! A full recompute of non-zero data never yields `0xffff`. The folded sum of
//! a positive integer lies in `1..=0xffff`, so its complement lies in
//! `0..=0xfffe`. A sum that is `0 (mod 0xffff)` therefore gives checksum
//! `0x0000`, never the equivalent `0xffff`. Equation 3 with an end-around-carry
//! fold always lands on that same representative, because
//! `~HC + sum(~m + m')` is a positive integer whenever the delta is non-empty.
//! So [`Delta::apply`] gives exactly the fully recomputed value, bit for bit,
//! even when the old checksum was the non-canonical `0xffff`. Equation 2 of
//! RFC 1624, `HC' = HC - ~m - m'`, does not give this guarantee. The property
//! tests in this module check the equality for IPv4 headers, TCP and UDP,
//! starting both from canonical checksums and from the non-canonical `0xffff`.
//! The tests need only one precondition: the old checksum verifies, and
//! `0x0000` and `0xffff` both verify when the sum is `0 (mod 0xffff)`.
//!
//! An empty delta ([`Delta::new`]) leaves every checksum unchanged.
//!
//! UDP has one extra rule. A transmitted checksum of `0` means "none" and must
//! stay `0`, and a computed `0` is sent as `0xffff`. [`Delta::apply_udp`]
//! follows both rules.
//!
//! # IPv6
//!
//! IPv6 has no header checksum, so NAT66 patches only the TCP, UDP and ICMPv6
//! checksums, whose pseudo-header (RFC 8200 section 8.1) holds both 128-bit
//! addresses: [`pseudo_header_sum_v6`] for a full sum, [`Delta::add128`] and
//! [`Delta::add_addr`] for an address rewrite. Over IPv6 the UDP checksum is
//! mandatory: a computed `0` is sent as `0xffff` (as over IPv4), but a
//! *received* `0` is invalid and the packet must be dropped, not forwarded
//! with `0`. [`Delta::apply_udp6`] returns `None` for it.

use std::net::Ipv4Addr;

/// Ones-complement partial sum of `data` as big-endian 16-bit words, not folded
/// and not complemented. An odd trailing byte is padded with a zero byte.
///
/// The result is congruent to the true sum modulo `0xffff` and is zero only if
/// every byte of `data` is zero.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // A u64 accumulator cannot overflow for any slice that fits in memory:
    // 2^63 / 0xffff words is far beyond any buffer.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    // Fold 64 -> 32 keeping the value mod 0xffff (2^32 = 1 mod 0xffff).
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Add two partial sums with end-around carry, so that the result stays
/// congruent modulo `0xffff` even if the `u32` addition overflows.
#[inline]
pub const fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + carry as u32
}

/// Fold a partial sum to 16 bits with end-around carry. The result is not
/// complemented. It is `0` only for a zero sum.
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    // Two steps suffice for any u32 (no loop on the hot path): the first
    // leaves at most 0x1fffe, the second at most 0xffff.
    let s = (sum & 0xffff) + (sum >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The Internet checksum of `data`: `!fold(sum(data))`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Partial sum of the TCP/UDP IPv4 pseudo-header: source, destination,
/// zero + protocol, and the TCP/UDP length.
#[inline]
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(protocol) + u32::from(len)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source,
/// destination, the upper-layer packet length as a 32-bit word, three zero
/// bytes and the next header (the upper-layer protocol, not that of an
/// extension header).
///
/// `len` is the length of the TCP/UDP/ICMPv6 message itself: the IPv6
/// payload length minus the extension headers before it.
#[inline]
pub fn pseudo_header_sum_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u32 {
    let mut acc = u32::from(next_header) + (len >> 16) + (len & 0xffff);
    // 16 words of at most 0xffff plus the above stay far below 2^32.
    for w in src.chunks_exact(2).chain(dst.chunks_exact(2)) {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    acc
}

/// The full checksum of an upper-layer message over IPv6: `!fold` of the
/// pseudo-header sum and of `data`, whose checksum field the caller has
/// zeroed. `data.len()` is the upper-layer length of the pseudo-header.
///
/// For UDP, send a result of `0` as `0xffff` (see [`udp6_checksum`]).
#[inline]
pub fn checksum_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, data: &[u8]) -> u16 {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    !fold(add(pseudo_header_sum_v6(src, dst, next_header, len), sum(data)))
}

/// [`checksum_v6`] for UDP (protocol 17): a computed `0` becomes `0xffff`,
/// since `0` is not a valid UDP checksum over IPv6.
#[inline]
pub fn udp6_checksum(src: &[u8; 16], dst: &[u8; 16], data: &[u8]) -> u16 {
    match checksum_v6(src, dst, crate::wire::IPPROTO_UDP, data) {
        0 => 0xffff,
        c => c,
    }
}

/// Whether an upper-layer message over IPv6 verifies: the sum over the
/// pseudo-header and all of `data`, checksum field included, folds to
/// `0xffff`. A UDP checksum of `0` never verifies over IPv6; check that
/// separately, since `data` with a zero checksum field may still sum right.
#[inline]
pub fn verify_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, data: &[u8]) -> bool {
    checksum_v6(src, dst, next_header, data) == 0
}

/// An accumulated RFC 1624 adjustment (the sum of `~old + new` words), computed
/// once per flow and applied to many packets.
///
/// The inner value is kept folded to 16 bits (a `u16`: a flow entry holds
/// one in two bytes). It is `0` only for an empty delta; any added word
/// pair makes it non-zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct Delta(u16);

impl Delta {
    /// The empty adjustment: [`apply`](Self::apply) leaves a checksum unchanged.
    #[inline]
    pub const fn new() -> Self {
        Delta(0)
    }

    /// Account for a 16-bit field changing from `old` to `new`.
    #[inline(always)]
    #[must_use]
    pub const fn add16(self, old: u16, new: u16) -> Self {
        Delta(fold(self.0 as u32 + (!old) as u32 + new as u32))
    }

    /// Account for a 32-bit field (an IPv4 address, a sequence number)
    /// changing from `old` to `new`.
    #[inline]
    #[must_use]
    pub const fn add32(self, old: u32, new: u32) -> Self {
        // The two 16-bit word pairs at once: a sum of 32-bit words folds to
        // the sum of their 16-bit halves (2^16 is 1 in ones' complement),
        // and both sums are 0 only when every word is, so the value is the
        // one two `add16`s give, in a third of the instructions.
        let x = self.0 as u64 + (!old) as u64 + new as u64;
        let s = (x & 0xffff_ffff) + (x >> 32);
        Delta(fold(((s & 0xffff_ffff) + (s >> 32)) as u32))
    }

    /// Account for a 128-bit field (an IPv6 address as
    /// `u128::from_be_bytes`) changing from `old` to `new`: eight 16-bit
    /// words.
    #[inline]
    #[must_use]
    pub const fn add128(self, old: u128, new: u128) -> Self {
        let (o, n) = (old.to_be_bytes(), new.to_be_bytes());
        let mut d = self;
        let mut i = 0;
        while i < 16 {
            d = d.add16(u16::from_be_bytes([o[i], o[i + 1]]), u16::from_be_bytes([n[i], n[i + 1]]));
            i += 2;
        }
        d
    }

    /// Account for an IPv6 address, in wire order, changing from `old` to
    /// `new`. The same as [`add128`](Self::add128) on the addresses'
    /// `u128::from_be_bytes`.
    #[inline]
    #[must_use]
    pub const fn add_addr(self, old: &[u8; 16], new: &[u8; 16]) -> Self {
        let mut d = self;
        let mut i = 0;
        while i < 16 {
            d = d.add16(u16::from_be_bytes([old[i], old[i + 1]]), u16::from_be_bytes([new[i], new[i + 1]]));
            i += 2;
        }
        d
    }

    /// Both adjustments at once.
    #[inline]
    #[must_use]
    pub const fn combine(self, other: Delta) -> Self {
        Delta(fold(self.0 as u32 + other.0 as u32))
    }

    /// Apply to a checksum field with RFC 1624 equation 3:
    /// `HC' = ~(~HC + sum(~m + m'))`.
    #[inline(always)]
    #[must_use]
    pub const fn apply(self, csum: u16) -> u16 {
        // The delta is kept folded (every constructor folds), so the sum is
        // at most 0x1fffe and one end-around-carry step folds it: the
        // result is `fold`'s, in three instructions fewer per checksum.
        let s = (!csum) as u32 + self.0 as u32;
        !((s & 0xffff) + (s >> 16)) as u16
    }

    /// Apply to a UDP checksum field. `0` (no checksum) stays `0`, and a
    /// result of `0` is sent as `0xffff`.
    #[inline(always)]
    #[must_use]
    pub const fn apply_udp(self, csum: u16) -> u16 {
        if csum == 0 {
            return 0;
        }
        match self.apply(csum) {
            0 => 0xffff,
            c => c,
        }
    }

    /// Apply to a UDP checksum over IPv6. A received `0` is invalid there
    /// (RFC 8200 section 8.1): `None`, and the caller drops the packet (or
    /// recomputes the full checksum with [`udp6_checksum`] if it chooses to
    /// repair it). Otherwise as [`apply_udp`](Self::apply_udp): a result of
    /// `0` is sent as `0xffff`.
    #[inline(always)]
    #[must_use]
    pub const fn apply_udp6(self, csum: u16) -> Option<u16> {
        if csum == 0 {
            return None;
        }
        Some(self.apply_udp(csum))
    }
}

/// Patch `csum` for one 16-bit field changing from `old` to `new`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    Delta::new().add16(old, new).apply(csum)
}

/// Patch `csum` for one 32-bit field changing from `old` to `new`.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    Delta::new().add32(old, new).apply(csum)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::{ipv4, tcp, udp, IPPROTO_UDP};
    use proptest::prelude::*;

    // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0x0002_ddf0);
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
    }

    /// `Delta(start).add32(old, new)` against the two `add16`s it stands for.
    fn add32_by16(start: u32, old: u32, new: u32) -> (Delta, Delta) {
        let d = Delta(start as u16);
        (d.add32(old, new), d.add16((old >> 16) as u16, (new >> 16) as u16).add16(old as u16, new as u16))
    }

    #[test]
    fn add32_is_two_add16s_at_the_edges() {
        let edges = [0, 1, 0xffff, 0x1_0000, 0xffff_0000, 0x0000_ffff, 0xffff_fffe, 0xffff_ffff];
        for &old in &edges {
            for &new in &edges {
                for start in [0u32, 1, 0xfffe, 0xffff] {
                    let (one, two) = add32_by16(start, old, new);
                    assert_eq!(one, two, "start {start:#x} old {old:#x} new {new:#x}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100_000))]
        #[test]
        fn add32_is_two_add16s(start in 0u32..=0xffff, old in any::<u32>(), new in any::<u32>()) {
            let (one, two) = add32_by16(start, old, new);
            prop_assert_eq!(one, two);
        }
    }

    #[test]
    fn fold_carries() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(fold(0xffff_ffff), 0xffff);
    }

    #[test]
    fn sum_large_buffer() {
        // Buffers larger than any IPv4 packet still sum correctly modulo 0xffff.
        let data = vec![0xffu8; 1 << 17];
        assert_eq!(fold(sum(&data)), 0xffff);
        let data = vec![0x01u8; (1 << 17) + 1];
        let reference: u64 = data.chunks(2).map(|c| u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0))).sum();
        assert_eq!(u64::from(fold(sum(&data))), (reference - 1) % 0xffff + 1);
    }

    #[test]
    fn pseudo_header() {
        let s = pseudo_header_sum(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, 0x20);
        assert_eq!(s, 0xc0a8 + 0x0001 + 0x0a00 + 0x0002 + 17 + 0x20);
    }

    #[test]
    fn delta_basics() {
        assert_eq!(Delta::new(), Delta::default());
        assert_eq!(Delta::new().apply(0x1234), 0x1234);
        assert_eq!(Delta::new().apply(0xffff), 0xffff);
        assert_eq!(Delta::new().apply(0), 0);
        assert_ne!(Delta::new().add16(7, 7), Delta::new());
        // RFC 1624 section 4 example: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
        // Equation 2 would give 0xffff here; equation 3 gives 0x0000.
        assert_eq!(update16(0x0000, 0x3285, 0x5555), 0xdd2f);
        let d = Delta::new().add16(1, 2).combine(Delta::new().add32(3, 0x0004_0005));
        let e = Delta::new().add16(1, 2).add32(3, 0x0004_0005);
        assert_eq!(d.apply(0x4321), e.apply(0x4321));
        assert_eq!(update32(0x4321, 3, 0x0004_0005), Delta::new().add32(3, 0x0004_0005).apply(0x4321));
        // const-evaluable
        const D: Delta = Delta::new().add32(0x0a00_0001, 0x0a00_0002);
        assert_eq!(D.apply(0x1000), update32(0x1000, 0x0a00_0001, 0x0a00_0002));
    }

    #[test]
    fn apply_udp_rules() {
        let d = Delta::new().add16(0x1111, 0x2222);
        assert_eq!(d.apply_udp(0), 0);
        // ~(~HC + D) == 0  <=>  ~HC + D folds to 0xffff  <=>  ~HC = ~D (mod 0xffff)
        let d_val = fold(0xffff - 0x1111 + 0x2222);
        let hc = d_val; // ~HC = !d_val, so ~HC + D = 0xffff
        assert_eq!(d.apply(hc), 0);
        assert_eq!(d.apply_udp(hc), 0xffff);
    }

    // ---------------------------------------------------------------------
    // Property tests: incremental update == full recompute.

    /// A random IPv4 header (options included) with a correct checksum.
    fn arb_ipv4_header() -> impl Strategy<Value = Vec<u8>> {
        (0usize..=10, any::<[u8; 20]>(), proptest::collection::vec(any::<u8>(), 40)).prop_map(
            |(opt_words, fixed, opts)| {
                let hlen = 20 + 4 * opt_words;
                let mut buf = fixed.to_vec();
                buf.extend_from_slice(&opts[..4 * opt_words]);
                let mut p = ipv4::Ipv4Packet::new_unchecked(&mut buf[..]);
                p.set_version_ihl(4, hlen);
                p.set_total_len(hlen as u16);
                p.fill_checksum();
                buf
            },
        )
    }

    /// A random TCP or UDP segment with a correct checksum, and its addresses.
    #[derive(Debug, Clone)]
    struct Seg {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        bytes: Vec<u8>,
    }

    fn arb_tcp() -> impl Strategy<Value = Seg> {
        (any::<u32>(), any::<u32>(), any::<[u8; 20]>(), 0usize..=10, proptest::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(s, d, fixed, opt_words, rest)| {
                let hlen = 20 + 4 * opt_words;
                let mut bytes = fixed.to_vec();
                bytes.extend_from_slice(&rest);
                while bytes.len() < hlen {
                    bytes.push(0);
                }
                let (src, dst) = (Ipv4Addr::from(s), Ipv4Addr::from(d));
                let mut p = tcp::TcpPacket::new_unchecked(&mut bytes[..]);
                p.set_header_len(hlen);
                p.fill_checksum(src, dst);
                Seg { src, dst, bytes }
            })
    }

    fn arb_udp() -> impl Strategy<Value = Seg> {
        (any::<u32>(), any::<u32>(), any::<[u8; 8]>(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(
            |(s, d, fixed, rest)| {
                let mut bytes = fixed.to_vec();
                bytes.extend_from_slice(&rest);
                let (src, dst) = (Ipv4Addr::from(s), Ipv4Addr::from(d));
                let len = bytes.len() as u16;
                let mut p = udp::UdpPacket::new_unchecked(&mut bytes[..]);
                p.set_len(len);
                p.fill_checksum(src, dst);
                Seg { src, dst, bytes }
            },
        )
    }

    /// The TCP checksum a full recompute gives.
    fn tcp_full(src: Ipv4Addr, dst: Ipv4Addr, bytes: &[u8]) -> u16 {
        let mut b = bytes.to_vec();
        let mut p = tcp::TcpPacket::new_unchecked(&mut b[..]);
        p.fill_checksum(src, dst);
        p.checksum()
    }

    fn udp_full(src: Ipv4Addr, dst: Ipv4Addr, bytes: &[u8]) -> u16 {
        let mut b = bytes.to_vec();
        let mut p = udp::UdpPacket::new_unchecked(&mut b[..]);
        p.fill_checksum(src, dst);
        p.checksum()
    }

    proptest! {
        #[test]
        fn full_checksum_never_ffff(data in proptest::collection::vec(any::<u8>(), 1..100)) {
            prop_assume!(data.iter().any(|&b| b != 0));
            prop_assert_ne!(checksum(&data), 0xffff);
        }

        #[test]
        fn ipv4_rewrite_u16(
            hdr in arb_ipv4_header(),
            // Any 16-bit word except version/IHL (word 0) and the checksum (word 5).
            word in proptest::sample::select(vec![1usize, 2, 3, 4, 6, 7, 8, 9]),
            new in any::<u16>(),
        ) {
            let mut b = hdr.clone();
            let off = 2 * word;
            let old = u16::from_be_bytes([b[off], b[off + 1]]);
            b[off..off + 2].copy_from_slice(&new.to_be_bytes());
            let mut p = ipv4::Ipv4Packet::new_unchecked(&mut b[..]);
            let inc = update16(p.checksum(), old, new);
            let via_delta = Delta::new().add16(old, new).apply(p.checksum());
            p.fill_checksum();
            prop_assert_eq!(inc, p.checksum());
            prop_assert_eq!(via_delta, p.checksum());
        }

        #[test]
        fn ipv4_rewrite_addrs(hdr in arb_ipv4_header(), ns in any::<u32>(), nd in any::<u32>(), ttl in any::<u8>()) {
            let mut b = hdr.clone();
            let mut p = ipv4::Ipv4Packet::new_unchecked(&mut b[..]);
            let (os, od, ottl) = (p.src_u32(), p.dst_u32(), p.ttl());
            let old_csum = p.checksum();
            let old_ttl_word = u16::from_be_bytes([ottl, p.protocol()]);
            p.set_src_u32(ns);
            p.set_dst_u32(nd);
            p.set_ttl(ttl);
            let new_ttl_word = u16::from_be_bytes([ttl, p.protocol()]);
            let d = Delta::new().add32(os, ns).add32(od, nd).add16(old_ttl_word, new_ttl_word);
            let two = update32(update32(old_csum, os, ns), od, nd);
            let two = update16(two, old_ttl_word, new_ttl_word);
            p.fill_checksum();
            prop_assert_eq!(d.apply(old_csum), p.checksum());
            prop_assert_eq!(two, p.checksum());
            prop_assert!(p.verify_checksum());
        }

        /// Start from the non-canonical (but valid) checksum 0xffff: choose the
        /// ident so that the full checksum computes to 0x0000, store 0xffff
        /// instead, then rewrite TTL and destination incrementally.
        #[test]
        fn ipv4_noncanonical_ffff_start(hdr in arb_ipv4_header(), ttl in any::<u8>(), nd in any::<u32>()) {
            let mut b = hdr.clone();
            let mut p = ipv4::Ipv4Packet::new_unchecked(&mut b[..]);
            p.set_ident(0);
            p.set_checksum(0);
            let hl = p.header_len();
            let s = fold(sum(&p.into_inner()[..hl]));
            let mut p = ipv4::Ipv4Packet::new_unchecked(&mut b[..]);
            p.set_ident(!s);
            p.fill_checksum();
            prop_assert_eq!(p.checksum(), 0x0000);
            p.set_checksum(0xffff);
            prop_assert!(p.verify_checksum());

            let old_word = u16::from_be_bytes([p.ttl(), p.protocol()]);
            let new_word = u16::from_be_bytes([ttl, p.protocol()]);
            let d = Delta::new().add16(old_word, new_word).add32(p.dst_u32(), nd);
            let inc = d.apply(p.checksum());
            p.set_ttl(ttl);
            p.set_dst_u32(nd);
            p.fill_checksum();
            prop_assert_eq!(inc, p.checksum());
        }

        #[test]
        fn tcp_rewrite_port_and_addr(seg in arb_tcp(), sport in any::<u16>(), dport in any::<u16>(), ns in any::<u32>(), nd in any::<u32>()) {
            let Seg { src, dst, mut bytes } = seg;
            let (ns, nd) = (Ipv4Addr::from(ns), Ipv4Addr::from(nd));
            let mut p = tcp::TcpPacket::new_unchecked(&mut bytes[..]);
            prop_assert!(p.verify_checksum(src, dst));
            let old = p.checksum();
            let d = Delta::new()
                .add16(p.src_port(), sport)
                .add16(p.dst_port(), dport);
            let addrs = Delta::new().add32(src.into(), ns.into()).add32(dst.into(), nd.into());
            let stepwise = update32(update32(update16(update16(old, p.src_port(), sport), p.dst_port(), dport), src.into(), ns.into()), dst.into(), nd.into());
            p.set_src_port(sport);
            p.set_dst_port(dport);
            let inc = d.combine(addrs).apply(old);
            p.set_checksum(inc);
            prop_assert!(p.verify_checksum(ns, nd));
            prop_assert_eq!(inc, tcp_full(ns, nd, &bytes));
            prop_assert_eq!(stepwise, inc);
        }

        #[test]
        fn tcp_rewrite_seq(seg in arb_tcp(), seq in any::<u32>()) {
            let Seg { src, dst, mut bytes } = seg;
            let mut p = tcp::TcpPacket::new_unchecked(&mut bytes[..]);
            let old = p.checksum();
            let inc = update32(old, p.seq_number(), seq);
            p.set_seq_number(seq);
            p.set_checksum(inc);
            prop_assert_eq!(inc, tcp_full(src, dst, &bytes));
        }

        #[test]
        fn udp_rewrite_port_and_addr(seg in arb_udp(), sport in any::<u16>(), ns in any::<u32>()) {
            let Seg { src, dst, mut bytes } = seg;
            let ns = Ipv4Addr::from(ns);
            let mut p = udp::UdpPacket::new_unchecked(&mut bytes[..]);
            prop_assert!(p.verify_checksum(src, dst));
            prop_assert_ne!(p.checksum(), 0);
            let old = p.checksum();
            let d = Delta::new().add16(p.src_port(), sport).add32(src.into(), ns.into());
            p.set_src_port(sport);
            let inc = d.apply_udp(old);
            p.set_checksum(inc);
            prop_assert!(p.verify_checksum(ns, dst));
            prop_assert_eq!(inc, udp_full(ns, dst, &bytes));
        }

        #[test]
        fn udp_zero_checksum_stays_zero(seg in arb_udp(), sport in any::<u16>(), ns in any::<u32>()) {
            let Seg { src, mut bytes, .. } = seg;
            let mut p = udp::UdpPacket::new_unchecked(&mut bytes[..]);
            p.set_checksum(0);
            let d = Delta::new().add16(p.src_port(), sport).add32(src.into(), ns);
            prop_assert_eq!(d.apply_udp(p.checksum()), 0);
        }

        /// Drive the UDP checksum to the "computed 0 is sent as 0xffff" case
        /// on purpose: choose the last payload word so that the packet with
        /// the *new* port sums to 0xffff, then rewrite the port incrementally.
        #[test]
        fn udp_computed_zero_is_ffff(seg in arb_udp(), old_port in any::<u16>(), new_port in any::<u16>()) {
            let Seg { src, dst, mut bytes } = seg;
            if bytes.len() % 2 == 1 { bytes.push(0); }
            if bytes.len() < 10 { bytes.resize(10, 0); }
            let len = bytes.len();
            {
                let mut p = udp::UdpPacket::new_unchecked(&mut bytes[..]);
                p.set_len(len as u16);
                p.set_src_port(new_port);
                p.set_checksum(0);
            }
            bytes[len - 2..].copy_from_slice(&[0, 0]);
            let s = fold(add(pseudo_header_sum(src, dst, IPPROTO_UDP, len as u16), sum(&bytes)));
            bytes[len - 2..].copy_from_slice(&(!s).to_be_bytes()); // s + !s = 0xffff
            prop_assert_eq!(udp_full(src, dst, &bytes), 0xffff);

            let mut p = udp::UdpPacket::new_unchecked(&mut bytes[..]);
            p.set_src_port(old_port);
            p.fill_checksum(src, dst);
            let old = p.checksum();
            let inc = Delta::new().add16(old_port, new_port).apply_udp(old);
            p.set_src_port(new_port);
            p.set_checksum(inc);
            prop_assert_eq!(inc, 0xffff);
            prop_assert!(p.verify_checksum(src, dst));
        }
    }

    // ---------------------------------------------------------------------
    // IPv6: pseudo-header sums and 128-bit deltas, checked against
    // etherparse's own checksum calculation.

    mod v6 {
        use super::super::*;
        use crate::wire::{ipv6, IPPROTO_TCP, IPPROTO_UDP};
        use etherparse::{PacketBuilder, TcpHeader, UdpHeader};
        use proptest::prelude::*;

        #[test]
        fn pseudo_header_v6() {
            let mut src = [0u8; 16];
            src[0] = 0x20;
            src[1] = 0x01;
            src[15] = 0x01;
            let mut dst = [0u8; 16];
            dst[14] = 0xab;
            dst[15] = 0xcd;
            let s = pseudo_header_sum_v6(&src, &dst, 6, 0x0001_0020);
            assert_eq!(s, 0x2001 + 0x0001 + 0xabcd + 0x0001 + 0x0020 + 6);
            // The sum of the pseudo-header as the bytes RFC 8200 lays out.
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&src);
            bytes.extend_from_slice(&dst);
            bytes.extend_from_slice(&0x0001_0020u32.to_be_bytes());
            bytes.extend_from_slice(&[0, 0, 0, 6]);
            assert_eq!(fold(s), fold(sum(&bytes)));
            // Largest values: no overflow.
            let m = pseudo_header_sum_v6(&[0xff; 16], &[0xff; 16], 0xff, u32::MAX);
            let mut bytes = [0xff; 40];
            bytes[36..39].copy_from_slice(&[0, 0, 0]);
            assert_eq!(fold(m), fold(sum(&bytes)));
        }

        #[test]
        fn add128_is_add_addr() {
            let (a, b) = ([0x12u8; 16], [0xfeu8; 16]);
            let d1 = Delta::new().add_addr(&a, &b);
            let d2 = Delta::new().add128(u128::from_be_bytes(a), u128::from_be_bytes(b));
            assert_eq!(d1, d2);
            assert_ne!(d1, Delta::new());
            // A 128-bit delta is eight 16-bit ones, and four 32-bit ones.
            let mut d3 = Delta::new();
            for i in (0..16).step_by(4) {
                let o = u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
                let n = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                d3 = d3.add32(o, n);
            }
            assert_eq!(d1.apply(0x1234), d3.apply(0x1234));
            const D: Delta = Delta::new().add128(1, 2);
            assert_eq!(D.apply(0x1000), update16(0x1000, 1, 2));
        }

        #[test]
        fn apply_udp6_rules() {
            let d = Delta::new().add16(0x1111, 0x2222);
            assert_eq!(d.apply_udp6(0), None);
            assert_eq!(d.apply_udp6(0x1234), Some(d.apply_udp(0x1234)));
            // The value whose update computes to 0 is sent as 0xffff.
            let hc = fold(0xffff - 0x1111 + 0x2222);
            assert_eq!(d.apply(hc), 0);
            assert_eq!(d.apply_udp6(hc), Some(0xffff));
        }

        /// A checksum field whose full sum comes to zero: `udp6_checksum`
        /// sends `0xffff`, never `0`.
        #[test]
        fn udp6_computed_zero_is_ffff() {
            let (src, dst) = ([0u8; 16], [0u8; 16]);
            // UDP header with ports 0, length 10, checksum 0, and a payload
            // word that makes the whole sum 0xffff.
            let mut seg = vec![0, 0, 0, 0, 0, 10, 0, 0, 0, 0];
            let s = fold(add(pseudo_header_sum_v6(&src, &dst, IPPROTO_UDP, 10), sum(&seg)));
            seg[8..10].copy_from_slice(&(!s).to_be_bytes());
            assert_eq!(checksum_v6(&src, &dst, IPPROTO_UDP, &seg), 0);
            assert_eq!(udp6_checksum(&src, &dst, &seg), 0xffff);
            seg[6..8].copy_from_slice(&0xffffu16.to_be_bytes());
            assert!(verify_v6(&src, &dst, IPPROTO_UDP, &seg));
            let (h, payload) = UdpHeader::from_slice(&seg).unwrap();
            assert_eq!(h.calc_checksum_ipv6_raw(src, dst, payload).unwrap(), 0xffff);
        }

        /// An IPv6 TCP or UDP packet built by etherparse, and where its
        /// segment starts.
        fn build(tcp: bool, src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
            let b = PacketBuilder::ipv6(src, dst, 64);
            let mut out = Vec::new();
            if tcp {
                b.tcp(sport, dport, 0x0102_0304, 4096).ack(0x0a0b_0c0d).write(&mut out, payload).unwrap();
            } else {
                b.udp(sport, dport).write(&mut out, payload).unwrap();
            }
            out
        }

        /// etherparse's checksum of the segment `seg` between `src` and `dst`.
        fn theirs(tcp: bool, src: [u8; 16], dst: [u8; 16], seg: &[u8]) -> u16 {
            if tcp {
                let (h, payload) = TcpHeader::from_slice(seg).unwrap();
                h.calc_checksum_ipv6_raw(src, dst, payload).unwrap()
            } else {
                let (h, payload) = UdpHeader::from_slice(seg).unwrap();
                h.calc_checksum_ipv6_raw(src, dst, payload).unwrap()
            }
        }

        fn csum_at(tcp: bool) -> core::ops::Range<usize> {
            if tcp {
                16..18
            } else {
                6..8
            }
        }

        proptest! {
            /// The full checksum and the pseudo-header agree with etherparse.
            #[test]
            fn full_checksum_matches_etherparse(
                tcp in any::<bool>(),
                src in any::<[u8; 16]>(),
                dst in any::<[u8; 16]>(),
                sport in any::<u16>(),
                dport in any::<u16>(),
                payload in proptest::collection::vec(any::<u8>(), 0..300),
            ) {
                let out = build(tcp, src, dst, sport, dport, &payload);
                let ip = ipv6::Ipv6Packet::new_checked(&out[..]).unwrap();
                let proto = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
                let seg = ip.payload();
                let at = csum_at(tcp);
                let sent = u16::from_be_bytes([seg[at.start], seg[at.start + 1]]);
                prop_assert!(verify_v6(&src, &dst, proto, seg));
                let mut zeroed = seg.to_vec();
                zeroed[at].copy_from_slice(&[0, 0]);
                let ours = if tcp { checksum_v6(&src, &dst, proto, &zeroed) } else { udp6_checksum(&src, &dst, &zeroed) };
                prop_assert_eq!(ours, sent);
                prop_assert_eq!(ours, theirs(tcp, src, dst, seg));
            }

            /// NAT66: rewrite both addresses and both ports, patch the
            /// checksum with one Delta, and get what etherparse computes
            /// for the rewritten packet.
            #[test]
            fn nat66_rewrite_matches_etherparse(
                tcp in any::<bool>(),
                src in any::<[u8; 16]>(),
                dst in any::<[u8; 16]>(),
                ns in any::<[u8; 16]>(),
                nd in any::<[u8; 16]>(),
                ports in any::<[u16; 4]>(),
                only_dst in any::<bool>(),
                payload in proptest::collection::vec(any::<u8>(), 0..300),
            ) {
                let [sport, dport, nsport, ndport] = ports;
                let ns = if only_dst { src } else { ns };
                let mut out = build(tcp, src, dst, sport, dport, &payload);
                let at = csum_at(tcp);
                let old = u16::from_be_bytes([out[40 + at.start], out[40 + at.start + 1]]);
                let d = Delta::new()
                    .add_addr(&src, &ns)
                    .add128(u128::from_be_bytes(dst), u128::from_be_bytes(nd))
                    .add16(sport, nsport)
                    .add16(dport, ndport);
                let new = if tcp { d.apply(old) } else { d.apply_udp6(old).unwrap() };
                {
                    let mut ip = ipv6::Ipv6Packet::new_checked(&mut out[..]).unwrap();
                    ip.set_addrs_bytes(&ns, &nd);
                    let seg = ip.payload_mut();
                    seg[0..2].copy_from_slice(&nsport.to_be_bytes());
                    seg[2..4].copy_from_slice(&ndport.to_be_bytes());
                    seg[at].copy_from_slice(&new.to_be_bytes());
                }
                let seg = &out[40..];
                prop_assert_eq!(new, theirs(tcp, ns, nd, seg));
                let proto = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
                prop_assert!(verify_v6(&ns, &nd, proto, seg));
                if !tcp {
                    prop_assert_ne!(new, 0);
                }
            }
        }
    }
}
