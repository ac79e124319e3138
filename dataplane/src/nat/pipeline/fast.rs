//! The fast path for the common frame: an untagged IPv4 frame without
//! options, not a fragment, or an untagged IPv6 frame without extension
//! headers, TCP or UDP, that belongs to a flow this worker tracks and needs
//! nothing but its translation. Written once over [`FastFamily`], which
//! says where each family's fields are.
//!
//! Why a separate path: with a cache-resident flow table the established
//! path is bound by instructions, not memory. The general path reads every
//! field through the `wire` wrappers (each access bounds-checked against a
//! slice whose length the compiler does not know), branches on VLAN tags and
//! options, and counts each frame in several counters. The common frame has
//! every field at a fixed offset, so here:
//!
//! - [`parse_common`] views the first [`COMMON_LEN`] bytes as a fixed-size
//!   array (one length check, no per-field bounds checks), checks the same
//!   things `parse_general` checks and reads the 5-tuple with two wide loads
//!   ([`parse_common6`]: [`COMMON_LEN6`] bytes, five loads). What it
//!   returns stands for the very `Parsed` that `parse_general` would, or `None` for anything
//!   else (VLAN tag, options, fragment, other protocols, short or
//!   inconsistent lengths), which `parse_general` then handles as before.
//! - [`forward_established`] applies the flow's precomputed translation
//!   (address and port rewrite, checksum deltas with the TTL decrement folded
//!   in, the cached next hop's MACs) with fixed-offset stores, refreshes the
//!   flow's timestamp (and, for the ACK that completes a TCP handshake, its
//!   assured bit) and names the Service port entry to count the packet
//!   in ([`count`], or after the run: [`Pending`]). It declines, having
//!   changed nothing, whenever the general path has more to do: TCP SYN, FIN
//!   or RST (connection state), TTL 1 (ICMP time exceeded), a table or
//!   next-hop generation other than the flow's (revalidation), a hop index
//!   out of range, or a frame shorter than [`COMMON_LEN`].
//! - [`reply`] does the same for a backend's reply to a tracked flow (reply
//!   key found in the shared reverse table, hop toward the client cached),
//!   declining whatever `Worker::reply` would do more than translate.
//! - [`run`] takes frames of one family through these while it can, over
//!   the flow table borrowed once ([`FastTable`]: branch-free lookup of both
//!   candidate buckets), and stops at the first frame the general path (or
//!   the other family's run) must see, with the flow's slot if it found
//!   one (a new flow's frame is parsed and hashed again: cheaper than
//!   keeping that alive through every forwarded frame, see [`Stop`]).
//!   IPv6 has no header checksum to patch; in a large table its
//!   translation comes from the entry's first line, the service entry to
//!   count in from its frontend's record (`Flow::translation`, see
//!   `conntrack.rs`).
//! - The worker-wide counters (frames, bytes, forwarded, replies translated)
//!   of the frames taken here are summed through the run (frames and bytes
//!   in registers) and added once per batch ([`Tally`]).
//!
//! So every frame gets exactly the verdict, output bytes and counters the
//! general path gives it; the tests at the end of this file and
//! `tests/fast_path.rs` check that frame by frame.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::family::NatFamily;
use super::{client_state, Parsed, ServiceCounter, ASSURED};
use crate::nat::conntrack::{FastTable, Flow, FlowKey, FrontRec, KeyWords, WireAddr};
use crate::nat::nexthop::{NextHop, NextHops};
use crate::nat::reverse::{flags as rflags, ReverseTable};
use crate::nat::verdict::{Frame, Verdict};
use crate::wire::checksum::Delta;
use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::tcp::flags as tcpf;
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};

/// Bytes the IPv4 fast path reads and writes at fixed offsets: Ethernet
/// (14), IPv4 without options (20) and a TCP header without options (20).
/// Shorter frames (UDP with under 12 bytes of payload and no Ethernet
/// padding) take the general path.
pub(super) const COMMON_LEN: usize = 54;

/// The same for IPv6: Ethernet (14), the fixed IPv6 header with no
/// extension header (40) and a TCP header (20).
pub(super) const COMMON_LEN6: usize = 74;

/// Offsets in the IPv4 common frame.
mod off {
    pub const ETHERTYPE: usize = 12;
    pub const VER_IHL: usize = 14;
    pub const TOTAL_LEN: usize = 16;
    pub const FLG_OFF: usize = 20;
    pub const TTL: usize = 22;
    pub const PROTO: usize = 23;
    pub const IP_CSUM: usize = 24;
    pub const ADDRS: usize = 26;
    pub const PORTS: usize = 34;
    pub const UDP_LEN: usize = 38;
    pub const UDP_CSUM: usize = 40;
    pub const TCP_DOFF: usize = 46;
    pub const TCP_FLAGS: usize = 47;
    pub const TCP_CSUM: usize = 50;
}

/// Offsets in the IPv6 common frame.
mod off6 {
    pub const ETHERTYPE: usize = 12;
    pub const VERSION: usize = 14;
    pub const PAYLOAD_LEN: usize = 18;
    pub const NEXT_HEADER: usize = 20;
    pub const HOP_LIMIT: usize = 21;
    pub const SRC: usize = 22;
    pub const DST: usize = 38;
    pub const PORTS: usize = 54;
    pub const UDP_LEN: usize = 58;
    pub const UDP_CSUM: usize = 60;
    pub const TCP_DOFF: usize = 66;
    pub const TCP_FLAGS: usize = 67;
    pub const TCP_CSUM: usize = 70;
}

/// The IP header starts here in an untagged frame.
pub(super) const L3: usize = 14;
/// The L4 header starts here when the IPv4 header has no options.
const L4: usize = 34;
/// The L4 header starts here when the IPv6 header has no extension header.
pub(super) const L4_6: usize = 54;

#[inline(always)]
fn be16(h: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([h[at], h[at + 1]])
}

#[inline(always)]
fn put16(h: &mut [u8], at: usize, v: u16) {
    let [a, b] = v.to_be_bytes();
    h[at] = a;
    h[at + 1] = b;
}

/// The words of a family's flow key.
type Words<F> = <<F as NatFamily>::Raw as WireAddr>::Words;

/// What the fast path does differently per family: where the fields of
/// the common frame are. The decisions ([`forward_established`],
/// [`reply`], [`run`]) are written once over it.
pub(super) trait FastFamily: NatFamily {
    /// Where the L4 header of the common frame starts.
    const L4: usize;
    /// Classifies and reads the common frame (see the module doc). `Some`
    /// only when the family's general parser would return `Ok` with exactly
    /// [`Common::parsed`].
    fn parse_common(buf: &[u8], len: usize) -> Option<Common<Self>>;
    /// The flow key whose words are `w`.
    fn key(w: &Words<Self>) -> FlowKey<Self::Raw>;
    /// The translation written at fixed offsets, as the family's general
    /// rewrite writes it: MACs, TTL / hop limit - 1, addresses, ports and
    /// the checksums patched with the deltas (IPv4's `ip_delta` includes
    /// the TTL decrement; IPv6 has no header checksum). `false`, having
    /// changed nothing, when the frame is too short (the caller checked).
    #[allow(clippy::too_many_arguments)]
    fn write_translation(
        buf: &mut [u8],
        c: &Common<Self>,
        src: Self::Raw,
        dst: Self::Raw,
        sport: u16,
        dport: u16,
        ip_delta: Delta,
        l4_delta: Delta,
        hop: &NextHop,
    ) -> bool;
}

/// The common frame's fields the fast path needs: the key as
/// [`FlowKey::words`], the end of the IP packet, TTL (hop limit) and TCP
/// flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Common<F: FastFamily = Ipv4Addr> {
    /// The key's words (addresses, then ports and protocol).
    pub w: Words<F>,
    /// Ethernet header plus the IP packet's length.
    pub end: u16,
    /// TTL or hop limit.
    pub ttl: u8,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
}

impl<F: FastFamily> Common<F> {
    /// The IP protocol (the low byte of the key's last word, in both families).
    #[inline(always)]
    pub fn proto(&self) -> u8 {
        self.w.word(Words::<F>::LEN - 1) as u8
    }

    /// What the family's general parser returns for this frame.
    #[inline(always)]
    pub fn parsed(&self) -> Parsed<F::Raw> {
        Parsed {
            l3: L3 as u16,
            l4: F::L4 as u16,
            end: self.end,
            ttl: self.ttl,
            tcp_flags: self.tcp_flags,
            key: F::key(&self.w),
        }
    }

    /// The fast path's view of a frame the general parser parsed, when it
    /// is a common frame (untagged, no IPv4 options, no IPv6 extension
    /// header).
    #[inline(always)]
    pub fn of(p: &Parsed<F::Raw>) -> Option<Self> {
        (p.l4() == F::L4).then(|| Self::view(p))
    }

    /// The fields of `p` the fast path reads, whatever its headers (the
    /// large-table burst keeps every IPv6 frame so, `Pre6`).
    #[inline(always)]
    pub fn view(p: &Parsed<F::Raw>) -> Self {
        Self { w: F::Raw::key_words(&p.key), end: p.end, ttl: p.ttl, tcp_flags: p.tcp_flags }
    }
}

impl FastFamily for Ipv4Addr {
    const L4: usize = L4;

    #[inline(always)]
    fn parse_common(buf: &[u8], len: usize) -> Option<Common> {
        parse_common(buf, len)
    }

    #[inline(always)]
    fn key(&(k0, k1): &(u64, u64)) -> FlowKey {
        FlowKey {
            src: (k0 >> 32) as u32,
            dst: k0 as u32,
            sport: (k1 >> 32) as u16,
            dport: (k1 >> 16) as u16,
            proto: k1 as u8,
        }
    }

    #[inline(always)]
    fn write_translation(
        buf: &mut [u8],
        c: &Common,
        src: u32,
        dst: u32,
        sport: u16,
        dport: u16,
        ip_delta: Delta,
        l4_delta: Delta,
        hop: &NextHop,
    ) -> bool {
        let Some(h) = buf.get_mut(..COMMON_LEN).and_then(|h| <&mut [u8; COMMON_LEN]>::try_from(h).ok()) else {
            return false;
        };
        h[..12].copy_from_slice(&hop.macs);
        let ip_csum = ip_delta.apply(be16(h, off::IP_CSUM));
        h[off::TTL] = c.ttl - 1;
        put16(h, off::IP_CSUM, ip_csum);
        let addrs = u64::from(src) << 32 | u64::from(dst);
        let ports = u32::from(sport) << 16 | u32::from(dport);
        h[off::ADDRS..off::ADDRS + 8].copy_from_slice(&addrs.to_be_bytes());
        h[off::PORTS..off::PORTS + 4].copy_from_slice(&ports.to_be_bytes());
        if c.proto() == IPPROTO_TCP {
            let csum = l4_delta.apply(be16(h, off::TCP_CSUM));
            put16(h, off::TCP_CSUM, csum);
        } else {
            let csum = l4_delta.apply_udp(be16(h, off::UDP_CSUM));
            put16(h, off::UDP_CSUM, csum);
        }
        true
    }
}

impl FastFamily for Ipv6Addr {
    const L4: usize = L4_6;

    #[inline(always)]
    fn parse_common(buf: &[u8], len: usize) -> Option<Common<Self>> {
        parse_common6(buf, len)
    }

    #[inline(always)]
    fn key(&[s0, s1, d0, d1, p]: &[u64; 5]) -> FlowKey<u128> {
        FlowKey {
            src: u128::from(s0) << 64 | u128::from(s1),
            dst: u128::from(d0) << 64 | u128::from(d1),
            sport: (p >> 32) as u16,
            dport: (p >> 16) as u16,
            proto: p as u8,
        }
    }

    #[inline(always)]
    fn write_translation(
        buf: &mut [u8],
        c: &Common<Self>,
        src: u128,
        dst: u128,
        sport: u16,
        dport: u16,
        _ip_delta: Delta,
        l4_delta: Delta,
        hop: &NextHop,
    ) -> bool {
        let Some(h) = buf.get_mut(..COMMON_LEN6).and_then(|h| <&mut [u8; COMMON_LEN6]>::try_from(h).ok()) else {
            return false;
        };
        h[..12].copy_from_slice(&hop.macs);
        h[off6::HOP_LIMIT] = c.ttl - 1;
        h[off6::SRC..off6::SRC + 16].copy_from_slice(&src.to_be_bytes());
        h[off6::DST..off6::DST + 16].copy_from_slice(&dst.to_be_bytes());
        let ports = u32::from(sport) << 16 | u32::from(dport);
        h[off6::PORTS..off6::PORTS + 4].copy_from_slice(&ports.to_be_bytes());
        if c.proto() == IPPROTO_TCP {
            let csum = l4_delta.apply(be16(h, off6::TCP_CSUM));
            put16(h, off6::TCP_CSUM, csum);
        } else {
            // Not 0 (`parse_common6` declines it): as `apply_udp6`.
            let csum = l4_delta.apply_udp(be16(h, off6::UDP_CSUM));
            put16(h, off6::UDP_CSUM, csum);
        }
        true
    }
}

/// Classifies and reads the IPv4 common frame (see the module doc). `Some`
/// only when `parse_general` would return `Ok` with exactly [`Common::parsed`].
#[inline(always)]
pub(super) fn parse_common(buf: &[u8], len: usize) -> Option<Common> {
    // `Parsed` keeps offsets in u16; a longer frame is `parse_general`'s business.
    if len > usize::from(u16::MAX) {
        return None;
    }
    let h: &[u8; COMMON_LEN] = buf.get(..len)?.get(..COMMON_LEN)?.try_into().ok()?;
    // Untagged IPv4, version 4 and IHL 5 (no options).
    if be16(h, off::ETHERTYPE) != ETHERTYPE_IPV4 || h[off::VER_IHL] != 0x45 {
        return None;
    }
    let total = be16(h, off::TOTAL_LEN);
    // The total length fits in the frame (len >= COMMON_LEN: no underflow).
    if usize::from(total) > len - L3 {
        return None;
    }
    // Not a fragment: MF clear and offset 0 (DF may be set).
    if be16(h, off::FLG_OFF) & 0x3fff != 0 {
        return None;
    }
    let proto = h[off::PROTO];
    let tcp_flags = if proto == IPPROTO_TCP {
        // The segment holds a TCP header, whose data offset is at least 5
        // words and within the segment.
        let doff = u16::from(h[off::TCP_DOFF] >> 4) * 4;
        if total < 40 || doff < 20 || doff > total - 20 {
            return None;
        }
        h[off::TCP_FLAGS]
    } else if proto == IPPROTO_UDP {
        // The segment holds a UDP header whose length is at least 8 and
        // within the segment.
        let ulen = be16(h, off::UDP_LEN);
        if total < 28 || ulen < 8 || ulen > total - 20 {
            return None;
        }
        0
    } else {
        return None;
    };
    // Source and destination in one load, both ports in another: the key's
    // words as the flow table stores them.
    let Ok(addrs) = <[u8; 8]>::try_from(&h[off::ADDRS..off::ADDRS + 8]) else { return None };
    let addrs = u64::from_be_bytes(addrs);
    let Ok(ports) = <[u8; 4]>::try_from(&h[off::PORTS..off::PORTS + 4]) else { return None };
    let ports = u32::from_be_bytes(ports);
    Some(Common {
        w: (addrs, u64::from(ports) << 16 | u64::from(proto)),
        end: L3 as u16 + total,
        ttl: h[off::TTL],
        tcp_flags,
    })
}

/// Classifies and reads the IPv6 common frame: untagged, version 6, TCP or
/// UDP right after the fixed header (no extension header), lengths
/// consistent, and for UDP a checksum other than 0 (invalid over IPv6:
/// `parse6` drops it). `Some` only when `parse6` would return `Ok` with
/// exactly [`Common::parsed`].
#[inline(always)]
pub(super) fn parse_common6(buf: &[u8], len: usize) -> Option<Common<Ipv6Addr>> {
    if len > usize::from(u16::MAX) {
        return None;
    }
    let h: &[u8; COMMON_LEN6] = buf.get(..len)?.get(..COMMON_LEN6)?.try_into().ok()?;
    if be16(h, off6::ETHERTYPE) != ETHERTYPE_IPV6 || h[off6::VERSION] >> 4 != 6 {
        return None;
    }
    let payload = be16(h, off6::PAYLOAD_LEN);
    // The payload fits in the frame (len >= COMMON_LEN6: no underflow).
    if usize::from(payload) > len - L3 - 40 {
        return None;
    }
    let proto = h[off6::NEXT_HEADER];
    let tcp_flags = if proto == IPPROTO_TCP {
        let doff = u16::from(h[off6::TCP_DOFF] >> 4) * 4;
        if payload < 20 || doff < 20 || doff > payload {
            return None;
        }
        h[off6::TCP_FLAGS]
    } else if proto == IPPROTO_UDP {
        let ulen = be16(h, off6::UDP_LEN);
        if payload < 8 || ulen < 8 || ulen > payload || be16(h, off6::UDP_CSUM) == 0 {
            return None;
        }
        0
    } else {
        return None;
    };
    let word = |at: usize| u64::from_be_bytes(h[at..at + 8].try_into().unwrap_or_default());
    let Ok(ports) = <[u8; 4]>::try_from(&h[off6::PORTS..off6::PORTS + 4]) else { return None };
    let ports = u64::from(u32::from_be_bytes(ports));
    Some(Common {
        w: [word(off6::SRC), word(off6::SRC + 8), word(off6::DST), word(off6::DST + 8), ports << 16 | u64::from(proto)],
        end: (L3 + 40) as u16 + payload,
        ttl: h[off6::HOP_LIMIT],
        tcp_flags,
    })
}

/// Frames forwarded by the fast path in one batch, counted into the
/// worker's counters once at the end of the batch.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tally {
    /// Frames.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// How many of them were replies translated back to clients.
    pub replies: u64,
}

/// Forwards a packet of the established flow in `slot` (whose key the caller
/// matched against `c`'s): the translation cached in the flow entry,
/// written at fixed offsets. Returns the egress port and the Service port
/// entry whose counters the packet goes to, or `None`, having changed
/// nothing, when the general path must take the frame (see the module
/// doc). `gens` are the service-table and next-hop generations.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn forward_established<F: FastFamily>(
    ct: &mut FastTable<'_, F::Entry>,
    fronts: Option<&[FrontRec<F::Raw>]>,
    rev: &ReverseTable<F::Raw>,
    hops: &NextHops,
    gens: (u32, u32),
    f: &mut Frame<'_>,
    c: &Common<F>,
    slot: usize,
    now: u32,
) -> Option<(u16, u32)> {
    // SYN, FIN and RST change the connection's state (UDP has no flags);
    // TTL 1 gets an ICMP error.
    if c.ttl <= 1 || c.tcp_flags & (tcpf::SYN | tcpf::FIN | tcpf::RST) != 0 {
        return None;
    }
    let e = ct.entry_mut(slot)?;
    if !e.is_current(gens) {
        return None;
    }
    let hop = hops.hop(e.hop)?;
    let tr = match fronts {
        Some(fronts) => e.translation(fronts, rev.addrs())?,
        None => e.own_translation(),
    };
    if !F::write_translation(f.buf, c, tr.src, tr.dst, e.snat_port, tr.dport, e.ip_delta, e.l4_delta, hop) {
        return None;
    }
    // Committed: the frame is forwarded.
    e.last_seen = now;
    if e.state & ASSURED == 0 {
        assure::<F>(e, c, rev);
    }
    Some((hop.port, tr.entry))
}

/// Counts a frame of `len` bytes forwarded to the Service port entry
/// `entry` (see [`forward_established`]).
#[inline(always)]
pub(super) fn count(svc: &mut [ServiceCounter], entry: u32, len: usize) {
    if let Some(c) = svc.get_mut(entry as usize) {
        c.packets += 1;
        c.bytes += len as u64;
    }
}

/// The Service counts of the frames [`run`] forwarded, added up to
/// [`Pending::CAP`] frames at a time. Why not one by one: with the
/// counters of thousands of Services out of L1 (as the flow entries), each
/// frame's add waits for its counter's line at the head of the
/// reorder buffer; a tight loop of adds has many of those misses in flight
/// at once. Measured (criterion, `established/1k`, 1,000 flows of 10k
/// Services, three runs each, side by side): 17.5-18.4 ns per frame
/// counting each as it is forwarded, 16.7-17.4 ns counting here, and
/// 14.6-15.1 ns with no Service counts at all. A prefetch of each counter
/// when its frame is pushed measured slower (17.8-17.9 ns).
struct Pending {
    /// Service port entry and frame length of each frame not yet counted.
    frames: [(u32, u32); Pending::CAP],
    /// How many.
    n: usize,
}

impl Pending {
    const CAP: usize = 64;

    #[inline(always)]
    fn new() -> Self {
        Self { frames: [(0, 0); Self::CAP], n: 0 }
    }

    #[inline(always)]
    fn push(&mut self, svc: &mut [ServiceCounter], entry: u32, len: usize) {
        if self.n == Self::CAP {
            self.flush(svc);
        }
        if let Some(p) = self.frames.get_mut(self.n) {
            *p = (entry, len as u32);
            self.n += 1;
        }
    }

    #[inline(always)]
    fn flush(&mut self, svc: &mut [ServiceCounter]) {
        Self::add(&self.frames[..self.n.min(Self::CAP)], svc);
        self.n = 0;
    }

    /// Out of line, and over the array alone, so that `n` can stay in a
    /// register of the run.
    #[inline(never)]
    fn add(frames: &[(u32, u32)], svc: &mut [ServiceCounter]) {
        for &(entry, len) in frames {
            count(svc, entry, len as usize);
        }
    }
}

/// A packet of a flow not yet assured: the TCP ACK that completes the
/// handshake assures it. Out of line: once assured, a flow never comes here.
#[cold]
#[inline(never)]
fn assure<F: FastFamily>(e: &mut F::Entry, c: &Common<F>, rev: &ReverseTable<F::Raw>) {
    if c.proto() == IPPROTO_TCP {
        e.state |= client_state(c.tcp_flags, rev.reply_state(e.rev_slot).1);
    }
}

/// Translates a backend's reply (a common frame that matched no forward
/// flow) back to the client, as `Worker::reply` does, when its 5-tuple is
/// a reply key of the shared reverse table and the hop toward the client
/// is cached for this next-hop generation. Returns the egress port, or
/// `None`, having changed nothing, for the general path (not to an SNAT
/// address and port while no Service is in dnat mode, no such flow, TTL 1,
/// hop not cached).
#[inline(always)]
pub(super) fn reply<F: FastFamily>(
    rev: &ReverseTable<F::Raw>,
    dnat: bool,
    hops: &NextHops,
    f: &mut Frame<'_>,
    c: &Common<F>,
    now: u32,
) -> Option<u16> {
    let k = F::key(&c.w);
    if c.ttl <= 1 || !(dnat || rev.is_snat(k.dst, k.dport)) {
        return None;
    }
    let (idx, fl) = rev.find(&k)?;
    let hop = hops.hop(rev.cached_hop(idx, hops.generation())?)?;
    let (ip_delta, l4_delta) = F::deltas(&k, fl.frontend, fl.client, fl.frontend_port, fl.client_port);
    if !F::write_translation(
        f.buf,
        c,
        fl.frontend,
        fl.client,
        fl.frontend_port,
        fl.client_port,
        ip_delta,
        l4_delta,
        hop,
    ) {
        return None;
    }
    // Committed.
    let mut fl_flags = rflags::REPLIED;
    if c.tcp_flags & tcpf::FIN != 0 {
        fl_flags |= rflags::FIN;
    }
    if c.tcp_flags & tcpf::RST != 0 {
        fl_flags |= rflags::RST;
    }
    rev.touch(idx, now, fl_flags);
    Some(hop.port)
}

/// Where [`run`] stopped.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stop {
    /// Every frame was forwarded.
    Done,
    /// Frame `at` is not a common frame of the family: the general path
    /// (or the other family's run) parses it.
    Uncommon {
        /// Its index.
        at: usize,
    },
    /// Frame `at` is a common frame the fast path did not forward (no flow,
    /// or more to do than a translation): the general path decides it
    /// from this lookup. Not from this parse and probe: kept alive to the
    /// end of each frame for this, they cost every forwarded frame spills
    /// to the stack (4% of the established path's instructions), more than
    /// a new flow pays to parse and hash its frame again.
    Decide {
        /// Its index.
        at: usize,
        /// The slot of its flow, if tracked.
        slot: Option<usize>,
    },
}

/// Forwards frames from the start of `frames` while they are common frames
/// of the family `F` of established flows, or replies to them, needing
/// only their translation; stops at the first other one, untouched, for
/// the general path. The table stays borrowed for the whole run. Not
/// inlined: on its own it keeps its state in registers (inlined into the
/// batch loop, beside the general path, it spilled about 25 values per
/// frame to the stack).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub(super) fn run<F: FastFamily>(
    ct: &mut FastTable<'_, F::Entry>,
    svc: &mut [ServiceCounter],
    rev: &ReverseTable<F::Raw>,
    dnat: bool,
    hops: &NextHops,
    gens: (u32, u32),
    frames: &mut [Frame<'_>],
    now: u32,
    tally: &mut Tally,
) -> Stop {
    // Bytes are summed in a register and the frames taken are the index
    // the run stops at: both reach `tally` once, at the end. Replies (none
    // on most runs) go to `tally` as they come: one register fewer
    // measured one instruction less per frame.
    let mut bytes = 0u64;
    let mut pending = Pending::new();
    let mut stop = Stop::Done;
    let mut taken = frames.len();
    for (at, f) in frames.iter_mut().enumerate() {
        let Some(c) = F::parse_common(f.buf, f.len) else {
            (stop, taken) = (Stop::Uncommon { at }, at);
            break;
        };
        let probe = ct.probe(&c.w);
        let slot = ct.find(&c.w, &probe);
        let port = match slot {
            // The entry's own translation: the table is cache-resident
            // here (see `Flow::own_translation`).
            Some(s) => forward_established(ct, None, rev, hops, gens, f, &c, s, now).map(|(port, entry)| {
                pending.push(svc, entry, f.len);
                port
            }),
            None => {
                let port = reply(rev, dnat, hops, f, &c, now);
                tally.replies += u64::from(port.is_some());
                port
            }
        };
        let Some(port) = port else {
            (stop, taken) = (Stop::Decide { at, slot }, at);
            break;
        };
        f.verdict = Verdict::Forward { port };
        bytes += f.len as u64;
    }
    tally.frames += taken as u64;
    tally.bytes += bytes;
    pending.flush(svc);
    stop
}

#[cfg(test)]
mod tests {
    use super::super::family::parse6;
    use super::super::parse_general;
    use super::*;
    use proptest::prelude::*;

    /// Deferred Service counts add up to what counting each frame gives,
    /// past `Pending::CAP` frames (a flush on the way) and for an entry
    /// out of range (not counted, as `count`).
    #[test]
    fn pending_counts_match_counting_each_frame() {
        let mut each = vec![ServiceCounter::default(); 5];
        let mut deferred = each.clone();
        let mut pending = Pending::new();
        for i in 0..(2 * Pending::CAP as u32 + 7) {
            let (entry, len) = (i * 7 % 6, 60 + i as usize);
            count(&mut each, entry, len);
            pending.push(&mut deferred, entry, len);
        }
        pending.flush(&mut deferred);
        assert_eq!(deferred, each);
        assert_eq!(each.iter().map(|c| c.packets).sum::<u64>(), 2 * Pending::CAP as u64 + 7 - 22);
    }

    /// An untagged IPv4 frame (IHL 5) with a TCP (20-byte header) or UDP
    /// header and `payload` bytes, lengths consistent; checksums are not
    /// needed by the parsers.
    fn frame(proto: u8, payload: usize) -> Vec<u8> {
        let l4 = if proto == IPPROTO_UDP { 8 } else { 20 };
        let total = 20 + l4 + payload;
        let mut f = vec![0u8; 14 + total];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
        f[20] = 0x40; // DF
        f[22] = 64;
        f[23] = proto;
        f[26..34].copy_from_slice(&[198, 18, 1, 10, 198, 18, 128, 10]);
        f[34..38].copy_from_slice(&[0xc0, 0x01, 0, 80]);
        if proto == IPPROTO_UDP {
            f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        } else {
            f[46] = 0x50;
            f[47] = tcpf::ACK;
        }
        f
    }

    /// An untagged IPv6 frame (no extension header) with a TCP (20-byte
    /// header) or UDP header and `payload` bytes, lengths consistent, the
    /// UDP checksum not 0.
    fn frame6(proto: u8, payload: usize) -> Vec<u8> {
        let l4 = if proto == IPPROTO_UDP { 8 } else { 20 };
        let mut f = vec![0u8; 14 + 40 + l4 + payload];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&((l4 + payload) as u16).to_be_bytes());
        f[20] = proto;
        f[21] = 64;
        f[22..38].copy_from_slice(&Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x10).octets());
        f[38..54].copy_from_slice(&Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0, 0x10).octets());
        f[54..58].copy_from_slice(&[0xc0, 0x01, 0, 80]);
        if proto == IPPROTO_UDP {
            f[58..60].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
            f[60..62].copy_from_slice(&[0x12, 0x34]);
        } else {
            f[66] = 0x50;
            f[67] = tcpf::ACK;
        }
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// The same for IPv6: `parse_common6` declines or agrees with `parse6`.
        #[test]
        fn parse_common6_agrees_with_parse6(
            udp in any::<bool>(),
            payload in 0usize..40,
            edits in proptest::collection::vec((12usize..80, any::<u8>()), 0..4),
            cut in 0usize..8,
            extra in 0usize..4,
        ) {
            let proto = if udp { IPPROTO_UDP } else { IPPROTO_TCP };
            let mut f = frame6(proto, payload);
            let clean = edits.is_empty() && cut == 0;
            for &(at, v) in &edits {
                if let Some(b) = f.get_mut(at) {
                    *b = if v & 1 == 0 { b.wrapping_add(v >> 7).wrapping_sub((v >> 6) & 1) } else { v };
                }
            }
            let len = f.len().saturating_sub(cut);
            f.resize(f.len() + extra, 0xee);
            let frame = &f[..len];
            let general = match super::super::family::is_ipv6(frame) {
                Some(l3) => parse6(frame, l3),
                None => Err(Verdict::Pass(crate::nat::verdict::PassReason::NotIp)),
            };
            match parse_common6(&f, len) {
                Some(c) => prop_assert_eq!(Ok(c.parsed()), general),
                None => prop_assert!(
                    !clean || len < COMMON_LEN6,
                    "a clean common frame of {} bytes declined", len
                ),
            }
        }

        /// Whatever the bytes, `parse_common` either declines or returns
        /// exactly what the general parser returns; and it takes the
        /// well-formed common frames.
        #[test]
        fn parse_common_agrees_with_parse(
            udp in any::<bool>(),
            payload in 0usize..40,
            edits in proptest::collection::vec((12usize..60, any::<u8>()), 0..4),
            cut in 0usize..8,
            extra in 0usize..4,
        ) {
            let proto = if udp { IPPROTO_UDP } else { IPPROTO_TCP };
            let mut f = frame(proto, payload);
            let clean = edits.is_empty() && cut == 0;
            for &(at, v) in &edits {
                if let Some(b) = f.get_mut(at) {
                    // Mostly nudge the interesting fields by one, sometimes anything.
                    *b = if v & 1 == 0 { b.wrapping_add(v >> 7).wrapping_sub((v >> 6) & 1) } else { v };
                }
            }
            let len = f.len().saturating_sub(cut);
            // A buffer longer than the frame (as a UMEM chunk is).
            f.resize(f.len() + extra, 0xee);
            let general = parse_general(&f, len);
            match parse_common(&f, len) {
                Some(c) => prop_assert_eq!(Ok(c.parsed()), general),
                None => prop_assert!(
                    !clean || len < COMMON_LEN,
                    "a clean common frame of {} bytes declined", len
                ),
            }
        }
    }

    #[test]
    fn parse_common6_declines_the_unusual() {
        let base = frame6(IPPROTO_TCP, 10);
        let len = base.len();
        assert!(parse_common6(&base, len).is_some());
        type Edit = fn(&mut Vec<u8>);
        let cases: [(&str, Edit); 6] = [
            ("VLAN tag", |f| f[12..14].copy_from_slice(&[0x81, 0x00])),
            ("version 4", |f| f[14] = 0x40),
            ("hop-by-hop options", |f| f[20] = 0),
            ("fragment header", |f| f[20] = 44),
            ("TCP data offset 4", |f| f[66] = 0x40),
            ("payload beyond the frame", |f| f[19] = f[19].wrapping_add(1)),
        ];
        for (what, edit) in cases {
            let mut f = base.clone();
            edit(&mut f);
            assert!(parse_common6(&f, len).is_none(), "{what}");
        }
        assert!(parse_common6(&base, len - 1).is_none(), "truncated");
        let mut zero = frame6(IPPROTO_UDP, 20);
        zero[60..62].copy_from_slice(&[0, 0]);
        assert!(parse_common6(&zero, zero.len()).is_none(), "UDP checksum 0 is the general path's (a drop)");
    }

    #[test]
    fn parse_common_declines_the_unusual() {
        let base = frame(IPPROTO_TCP, 10);
        let len = base.len();
        assert!(parse_common(&base, len).is_some());
        type Edit = fn(&mut Vec<u8>);
        let cases: [(&str, Edit); 7] = [
            ("VLAN tag", |f| f[12..14].copy_from_slice(&[0x81, 0x00])),
            ("IP options", |f| f[14] = 0x46),
            ("more fragments", |f| f[20] |= 0x20),
            ("fragment offset", |f| f[21] = 1),
            ("ICMP", |f| f[23] = 1),
            ("TCP data offset 4", |f| f[46] = 0x40),
            ("total length beyond the frame", |f| f[17] = f[17].wrapping_add(1)),
        ];
        for (what, edit) in cases {
            let mut f = base.clone();
            edit(&mut f);
            assert!(parse_common(&f, len).is_none(), "{what}");
        }
        assert!(parse_common(&base, len - 1).is_none(), "truncated");
        let short_udp = frame(IPPROTO_UDP, 4);
        assert!(short_udp.len() < COMMON_LEN);
        assert!(parse_common(&short_udp, short_udp.len()).is_none());
        assert!(parse_general(&short_udp, short_udp.len()).is_ok(), "the general path takes it");
    }
}
