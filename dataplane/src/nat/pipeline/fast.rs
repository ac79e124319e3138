//! The fast path for the common frame: an untagged IPv4 frame without
//! options, not a fragment, TCP or UDP, that belongs to a flow this worker
//! tracks and needs nothing but its translation.
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
//!   things `parse` checks and reads the 5-tuple with two wide loads. What it
//!   returns stands for the very `Parsed` that `parse` would, or `None` for anything
//!   else (VLAN tag, options, fragment, other protocols, short or
//!   inconsistent lengths), which `parse` then handles as before.
//! - [`forward_established`] applies the flow's precomputed translation
//!   (address and port rewrite, checksum deltas with the TTL decrement folded
//!   in, the cached next hop's MACs) with fixed-offset stores, refreshes the
//!   flow's timestamp (and, for the ACK that completes a TCP handshake, its
//!   assured bit) and counts the Service's packet. It declines, having
//!   changed nothing, whenever the general path has more to do: TCP SYN, FIN
//!   or RST (connection state), TTL 1 (ICMP time exceeded), a table or
//!   next-hop generation other than the flow's (revalidation), a hop index
//!   out of range, or a frame shorter than [`COMMON_LEN`].
//! - [`reply`] does the same for a backend's reply to a tracked flow (reply
//!   key found in the shared reverse table, hop toward the client cached),
//!   declining whatever `Worker::reply` would do more than translate.
//! - [`run`] takes frames through these while it can, over the flow table
//!   borrowed once ([`FastTable`]: branch-free lookup of both candidate
//!   buckets), and stops at the first frame the general path must see, with
//!   the parse and lookup it did, so nothing is done twice.
//! - The worker-wide counters (frames, bytes, forwarded, replies translated)
//!   of the frames taken here are added once per batch ([`Tally`]).
//!
//! So every frame gets exactly the verdict, output bytes and counters the
//! general path gives it; the tests at the end of this file and
//! `tests/fast_path.rs` check that frame by frame.

use super::family::deltas;
use super::{client_state, Parsed, ServiceCounter, ASSURED};
use crate::nat::conntrack::{FastTable, FlowEntry, FlowKey, Probe};
use crate::nat::nexthop::{NextHop, NextHops};
use crate::nat::reverse::{flags as rflags, ReverseTable};
use crate::nat::verdict::{Frame, Verdict};
use crate::wire::checksum::Delta;
use crate::wire::ethernet::ETHERTYPE_IPV4;
use crate::wire::tcp::flags as tcpf;
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};

/// Bytes the fast path reads and writes at fixed offsets: Ethernet (14),
/// IPv4 without options (20) and a TCP header without options (20). Shorter
/// frames (UDP with under 12 bytes of payload and no Ethernet padding) take
/// the general path.
pub(super) const COMMON_LEN: usize = 54;

/// Offsets in the common frame.
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

/// The IPv4 header starts here in an untagged frame.
const L3: usize = 14;
/// The L4 header starts here when the IPv4 header has no options.
const L4: usize = 34;

#[inline(always)]
fn be16(h: &[u8; COMMON_LEN], at: usize) -> u16 {
    u16::from_be_bytes([h[at], h[at + 1]])
}

#[inline(always)]
fn put16(h: &mut [u8; COMMON_LEN], at: usize, v: u16) {
    let [a, b] = v.to_be_bytes();
    h[at] = a;
    h[at + 1] = b;
}

/// The common frame's fields the fast path needs: the key as
/// [`FlowKey::words`], the end of the IPv4 packet, TTL and TCP flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Common {
    /// Source and destination address.
    pub k0: u64,
    /// Ports and protocol.
    pub k1: u64,
    /// Ethernet header plus the IPv4 total length.
    pub end: u16,
    /// TTL.
    pub ttl: u8,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
}

impl Common {
    /// The IP protocol.
    #[inline(always)]
    pub fn proto(&self) -> u8 {
        self.k1 as u8
    }

    /// What `parse` returns for this frame.
    #[inline(always)]
    pub fn parsed(&self) -> Parsed {
        Parsed {
            l3: L3 as u16,
            l4: L4 as u16,
            end: self.end,
            ttl: self.ttl,
            tcp_flags: self.tcp_flags,
            key: FlowKey {
                src: (self.k0 >> 32) as u32,
                dst: self.k0 as u32,
                sport: (self.k1 >> 32) as u16,
                dport: (self.k1 >> 16) as u16,
                proto: self.k1 as u8,
            },
        }
    }

    /// The fast path's view of a frame `parse` parsed, when it is a common
    /// frame (untagged, no IPv4 options).
    #[inline(always)]
    pub fn of(p: &Parsed) -> Option<Self> {
        let (k0, k1) = p.key.words();
        (p.l4() == L4).then_some(Self { k0, k1, end: p.end, ttl: p.ttl, tcp_flags: p.tcp_flags })
    }
}

/// Classifies and reads the common frame (see the module doc). `Some` only
/// when `parse` would return `Ok` with exactly [`Common::parsed`].
#[inline(always)]
pub(super) fn parse_common(buf: &[u8], len: usize) -> Option<Common> {
    // `parse` keeps offsets in u16; a longer frame is its business.
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
        k0: addrs,
        k1: u64::from(ports) << 16 | u64::from(proto),
        end: L3 as u16 + total,
        ttl: h[off::TTL],
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
/// written at fixed offsets. Returns the egress port, or `None`, having
/// changed nothing, when the general path must take the frame (see the
/// module doc). `gens` are the service-table and next-hop generations.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn forward_established(
    ct: &mut FastTable<'_>,
    svc: &mut [ServiceCounter],
    rev: &ReverseTable,
    hops: &NextHops,
    gens: (u32, u32),
    f: &mut Frame<'_>,
    c: &Common,
    slot: usize,
    now: u32,
) -> Option<u16> {
    // SYN, FIN and RST change the connection's state (UDP has no flags);
    // TTL 1 gets an ICMP error.
    if c.ttl <= 1 || c.tcp_flags & (tcpf::SYN | tcpf::FIN | tcpf::RST) != 0 {
        return None;
    }
    let h: &mut [u8; COMMON_LEN] = f.buf.get_mut(..COMMON_LEN)?.try_into().ok()?;
    let e = ct.entry_mut(slot)?;
    if e.table_gen != gens.0 || e.hop_gen != gens.1 {
        return None;
    }
    let hop = hops.hop(e.hop)?;
    // Committed: from here on the frame is forwarded.
    e.last_seen = now;
    if e.state & ASSURED == 0 {
        assure(e, c, rev);
    }
    let addrs = u64::from(e.snat_addr) << 32 | u64::from(e.backend_addr);
    let ports = u32::from(e.snat_port) << 16 | u32::from(e.backend_port);
    rewrite(h, c, addrs, ports, e.ip_delta, e.l4_delta, hop);
    if let Some(c) = svc.get_mut(e.entry as usize) {
        c.packets += 1;
        c.bytes += f.len as u64;
    }
    Some(hop.port)
}

/// A packet of a flow not yet assured: the TCP ACK that completes the
/// handshake assures it. Out of line: once assured, a flow never comes here.
#[cold]
#[inline(never)]
fn assure(e: &mut FlowEntry, c: &Common, rev: &ReverseTable) {
    if c.proto() == IPPROTO_TCP {
        e.state |= client_state(c.tcp_flags, rev.reply_state(e.rev_slot).1);
    }
}

/// The translation written at fixed offsets, as `pipeline::rewrite` writes
/// it: MACs, TTL - 1, addresses (`src << 32 | dst`), ports
/// (`sport << 16 | dport`) and both checksums patched with the deltas
/// (`ip_delta` includes the TTL decrement).
#[inline(always)]
fn rewrite(
    h: &mut [u8; COMMON_LEN],
    c: &Common,
    addrs: u64,
    ports: u32,
    ip_delta: Delta,
    l4_delta: Delta,
    hop: &NextHop,
) {
    h[..12].copy_from_slice(&hop.macs);
    let ip_csum = ip_delta.apply(be16(h, off::IP_CSUM));
    h[off::TTL] = c.ttl - 1;
    put16(h, off::IP_CSUM, ip_csum);
    h[off::ADDRS..off::ADDRS + 8].copy_from_slice(&addrs.to_be_bytes());
    h[off::PORTS..off::PORTS + 4].copy_from_slice(&ports.to_be_bytes());
    if c.proto() == IPPROTO_TCP {
        put16(h, off::TCP_CSUM, l4_delta.apply(be16(h, off::TCP_CSUM)));
    } else {
        put16(h, off::UDP_CSUM, l4_delta.apply_udp(be16(h, off::UDP_CSUM)));
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
pub(super) fn reply(
    rev: &ReverseTable,
    dnat: bool,
    hops: &NextHops,
    f: &mut Frame<'_>,
    c: &Common,
    now: u32,
) -> Option<u16> {
    let p = c.parsed();
    let k = &p.key;
    if c.ttl <= 1 || !(dnat || rev.is_snat(k.dst, k.dport)) {
        return None;
    }
    let (idx, fl) = rev.find(k)?;
    let hop = hops.hop(rev.cached_hop(idx, hops.generation())?)?;
    let h: &mut [u8; COMMON_LEN] = f.buf.get_mut(..COMMON_LEN)?.try_into().ok()?;
    // Committed.
    let mut fl_flags = rflags::REPLIED;
    if c.tcp_flags & tcpf::FIN != 0 {
        fl_flags |= rflags::FIN;
    }
    if c.tcp_flags & tcpf::RST != 0 {
        fl_flags |= rflags::RST;
    }
    rev.touch(idx, now, fl_flags);
    let (ip_delta, l4_delta) = deltas(k, fl.frontend, fl.client, fl.frontend_port, fl.client_port);
    let addrs = u64::from(fl.frontend) << 32 | u64::from(fl.client);
    let ports = u32::from(fl.frontend_port) << 16 | u32::from(fl.client_port);
    rewrite(h, c, addrs, ports, ip_delta, l4_delta, hop);
    Some(hop.port)
}

/// Where [`run`] stopped.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stop {
    /// Every frame was forwarded.
    Done,
    /// Frame `at` is not a common frame: the general path parses it.
    Uncommon {
        /// Its index.
        at: usize,
    },
    /// Frame `at` is a common frame the fast path did not forward (no flow,
    /// or more to do than a translation): the general path decides it from
    /// this parse and lookup.
    Decide {
        /// Its index.
        at: usize,
        /// The frame's fields.
        c: Common,
        /// Its probe.
        probe: Probe,
        /// The slot of its flow, if tracked.
        slot: Option<usize>,
    },
}

/// Forwards frames from the start of `frames` while they are common frames
/// of established flows, or replies to them, needing only their
/// translation; stops at the first other one, untouched, for the general
/// path. The table stays borrowed for
/// the whole run. Not inlined: on its own it keeps its state in registers
/// (inlined into the batch loop, beside the general path, it spilled about
/// 25 values per frame to the stack).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub(super) fn run(
    ct: &mut FastTable<'_>,
    svc: &mut [ServiceCounter],
    rev: &ReverseTable,
    dnat: bool,
    hops: &NextHops,
    gens: (u32, u32),
    frames: &mut [Frame<'_>],
    now: u32,
    tally: &mut Tally,
) -> Stop {
    for (at, f) in frames.iter_mut().enumerate() {
        let Some(c) = parse_common(f.buf, f.len) else {
            return Stop::Uncommon { at };
        };
        let probe = ct.probe(&(c.k0, c.k1));
        let slot = ct.find(&(c.k0, c.k1), &probe);
        let port = match slot {
            Some(s) => forward_established(ct, svc, rev, hops, gens, f, &c, s, now),
            None => {
                let port = reply(rev, dnat, hops, f, &c, now);
                tally.replies += u64::from(port.is_some());
                port
            }
        };
        let Some(port) = port else {
            return Stop::Decide { at, c, probe, slot };
        };
        f.verdict = Verdict::Forward { port };
        tally.frames += 1;
        tally.bytes += f.len as u64;
    }
    Stop::Done
}

#[cfg(test)]
mod tests {
    use super::super::parse_general;
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

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
