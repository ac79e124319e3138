//! The per-frame NAT pipeline: one [`Worker`] per polling thread.
//!
//! `Worker::process_batch` takes a burst of frames and decides each one's
//! [`Verdict`], rewriting it in place. Per frame:
//!
//! 1. Parse Ethernet (one 802.1Q tag kept as is), IPv4, TCP/UDP ports. Not
//!    IPv4, not TCP/UDP, or a fragment -> the kernel (svcgate does not
//!    reassemble; see [`PassReason::Fragment`]). IPv4 options are carried
//!    through unchanged and counted. Truncated or inconsistent headers -> drop.
//! 2. A frame to an SNAT address and port in the SNAT range is a *reply*:
//!    one indexed read of the shared [`ReverseTable`] (any worker can do it,
//!    see `reverse`), check that it comes from the flow's backend, rewrite
//!    source to the frontend the client dialled and destination to the client.
//! 3. Otherwise look the 5-tuple up in this worker's [`FlowTable`]. A hit is
//!    an established flow: revalidate against the current table generation
//!    once per swap (backend still listed? else TCP gets a RST and UDP is
//!    re-picked), then DNAT+SNAT with the checksum deltas precomputed at flow
//!    creation, TTL−1, MACs from the cached next hop.
//! 4. A miss to a frontend is a new flow (TCP only on a SYN): source ranges,
//!    reject when no endpoint can serve (TCP RST / ICMP port unreachable, like
//!    kube-proxy's REJECT), Maglev pick (or ClientIP affinity), an SNAT port
//!    from this worker's slice, both directions entered, then as in 3.
//!    Anything else goes to the kernel.
//!
//! The common case of 1 and 3 (an untagged IPv4 frame without options of a
//! tracked flow, or a reply to one, that needs only its translation) takes
//! a fast path (`fast`) with the same results at half the instructions;
//! every other frame takes the general path described here.
//!
//! Nothing here allocates, locks or logs per packet; all tables are sized when
//! the worker is created. The batch path reads every frame's hash buckets,
//! then every candidate entry, before processing any frame, so that at 1M
//! flows the cache misses of a burst overlap instead of queueing.

use std::net::Ipv4Addr;
use std::sync::Arc;

use svcgate_common::hash::{client_hash, flow_hash};
use svcgate_common::model::Protocol;
use svcgate_common::table::{ActiveSet, FrontendKind, ServiceEntry, ServicePortId, ServiceTable};

use super::conntrack::{FlowEntry, FlowKey, FlowTable, Inserted, Probe};
use super::nexthop::{NextHop, NextHops, Resolution};
use super::reverse::{flags as rflags, RevFlow, ReverseError, ReverseTable};
use super::verdict::{DropReason, Frame, PassReason, Verdict};
use crate::wire::checksum::Delta;
use crate::wire::ethernet::{EthernetFrame, ETHERTYPE_IPV4};
use crate::wire::icmp::{self, Icmpv4Packet};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::{flags as tcpf, TcpPacket};
use crate::wire::udp::UdpPacket;
use crate::wire::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

mod fast;

/// Flow tables up to this many slots (64 bytes each: 1 MiB) fit in a core's
/// L2 cache here; for them the batch path takes each frame through in one
/// pass, without the read-ahead passes.
const CACHE_RESIDENT_SLOTS: usize = 16 * 1024;

/// The most frames `process_batch` handles at once (larger slices are
/// processed in chunks of this size).
pub const MAX_BATCH: usize = 64;

/// Connection-tracking timeouts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP before the backend answered (Linux: syn_sent 120 s).
    pub tcp_syn_ms: u32,
    /// Established TCP (kube-proxy sets 86400 s).
    pub tcp_established_ms: u32,
    /// TCP after a FIN from either side (Linux: fin_wait / time_wait 120 s).
    pub tcp_closing_ms: u32,
    /// TCP after a RST (Linux: close 10 s).
    pub tcp_rst_ms: u32,
    /// UDP with no reply yet (Linux: udp_timeout 30 s).
    pub udp_ms: u32,
    /// UDP after a reply (Linux: udp_timeout_stream 120 s).
    pub udp_replied_ms: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_syn_ms: 60_000,
            tcp_established_ms: 86_400_000,
            tcp_closing_ms: 120_000,
            tcp_rst_ms: 10_000,
            udp_ms: 30_000,
            udp_replied_ms: 120_000,
        }
    }
}

/// The pipeline's configuration, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// Addresses flows are masqueraded to; replies come back to them.
    pub snat_addrs: Vec<Ipv4Addr>,
    /// SNAT port range, inclusive. The default, Linux's ephemeral range
    /// 32768-60999, stays clear of the NodePort range 30000-32767, so an SNAT
    /// address may also be a node IP.
    pub snat_ports: (u16, u16),
    /// Number of workers sharing the port range.
    pub workers: u16,
    /// Flows each worker tracks (default 1M).
    pub conntrack_capacity: usize,
    /// ClientIP affinity records per worker (rounded up to a power of two).
    pub affinity_slots: usize,
    /// Timeouts.
    pub timeouts: Timeouts,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            snat_addrs: Vec::new(),
            snat_ports: (32768, 60999),
            workers: 1,
            conntrack_capacity: 1 << 20,
            affinity_slots: 1 << 16,
            timeouts: Timeouts::default(),
        }
    }
}

/// State shared by all workers: the reverse table and the configuration.
#[derive(Debug)]
pub struct Shared {
    /// SNAT port -> flow.
    pub reverse: ReverseTable,
    /// The configuration.
    pub config: NatConfig,
}

impl Shared {
    /// Builds the shared state; fails on an unusable SNAT configuration.
    pub fn new(config: NatConfig) -> Result<Arc<Self>, ReverseError> {
        let reverse = ReverseTable::new(&config.snat_addrs, config.snat_ports.0, config.snat_ports.1, config.workers)?;
        Ok(Arc::new(Self { reverse, config }))
    }
}

/// Per-worker counters. Plain integers: only the owning worker writes them;
/// the polling loop exports snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames seen.
    pub rx: u64,
    /// Bytes seen.
    pub rx_bytes: u64,
    /// Frames forwarded (both directions).
    pub forwarded: u64,
    /// Replies built in place (RST, ICMP errors).
    pub replied: u64,
    /// Replies from backends translated back to clients.
    pub reverse_translated: u64,
    /// New flows entered in connection tracking.
    pub new_flows: u64,
    /// Flows evicted while still live because the table was full.
    pub evicted: u64,
    /// Flows removed after their timeout.
    pub expired: u64,
    /// Frames with IPv4 options, forwarded with the options intact.
    pub ip_options: u64,
    /// Frames passed to the kernel, by reason.
    pub pass: [u64; PassReason::COUNT],
    /// Frames dropped, by reason.
    pub drop: [u64; DropReason::COUNT],
}

impl Counters {
    #[inline(always)]
    fn count(&mut self, v: Verdict) {
        match v {
            Verdict::Forward { .. } => self.forwarded += 1,
            Verdict::Reply { .. } => self.replied += 1,
            Verdict::Pass(r) => self.pass[r as usize] += 1,
            Verdict::Drop(r) => self.drop[r as usize] += 1,
        }
    }
}

/// Packets and bytes one worker sent to one Service port (client to backend).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounter {
    /// Packets.
    pub packets: u64,
    /// Bytes (frame length).
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct AffinitySlot {
    client: u32,
    service: u32,
    backend_addr: u32,
    backend_port: u16,
    last_seen: u32,
}

/// A parsed frame: offsets and the 5-tuple. Kept small (u16 offsets): the
/// batch path writes and rereads one per frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Parsed {
    l3: u16,
    l4: u16,
    end: u16,
    ttl: u8,
    tcp_flags: u8,
    key: FlowKey,
}

impl Parsed {
    #[inline(always)]
    fn l3(&self) -> usize {
        usize::from(self.l3)
    }
    #[inline(always)]
    fn l4(&self) -> usize {
        usize::from(self.l4)
    }
    #[inline(always)]
    fn end(&self) -> usize {
        usize::from(self.end)
    }
}

/// No candidate slot.
const NO_SLOT: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
enum Pre {
    Done(Verdict),
    /// Parsed, with its buckets and the candidate slot of pass 2 (`NO_SLOT`:
    /// none).
    Parsed(Parsed, Probe, u32),
}

const UNRESOLVED_RING: usize = 16;
/// Entries of the per-worker next-hop cache (a power of two).
const HOP_CACHE: usize = 16 * 1024;

/// One worker's pipeline state. Create one per polling thread.
pub struct Worker {
    id: u16,
    shared: Arc<Shared>,
    ct: FlowTable,
    counters: Counters,
    /// Per-Service-entry counters of the generation `stats_table` holds.
    svc: Vec<ServiceCounter>,
    stats_table: ServiceTable,
    /// Counters folded from earlier generations.
    svc_totals: std::collections::HashMap<ServicePortId, ServiceCounter>,
    /// Free SNAT slots (reverse-table indices) of this worker, TCP and UDP:
    /// FIFO, so a port is reused as late as possible after its flow ended
    /// (late packets of the old flow then meet no flow rather than a new
    /// one). Sized at start to every owned slot: never reallocates.
    free_ports: [std::collections::VecDeque<u32>; 2],
    affinity: Box<[AffinitySlot]>,
    unresolved: [Ipv4Addr; UNRESOLVED_RING],
    /// Direct-mapped cache of resolved next hops: (address, next-hop
    /// generation, hop). Spares new flows the route and neighbour lookup.
    hop_cache: Box<[(u32, u32, u16)]>,
    unresolved_len: usize,
    pre: [Pre; MAX_BATCH],
    /// Whether the fast path (see `fast`) takes the frames it can (always,
    /// except in tests comparing it with the general path).
    fast_path: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).field("flows", &self.ct.len()).finish()
    }
}

/// Parses a frame: the common frame through the fast path's fixed offsets
/// (see `fast`), anything else through the `wire` wrappers.
#[inline(always)]
fn parse(buf: &[u8], len: usize) -> Result<Parsed, Verdict> {
    match fast::parse_common(buf, len) {
        Some(c) => Ok(c.parsed()),
        None => parse_general(buf, len),
    }
}

#[inline(never)]
fn parse_general(buf: &[u8], len: usize) -> Result<Parsed, Verdict> {
    let frame = buf.get(..len).ok_or(Verdict::Drop(DropReason::Malformed))?;
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Verdict::Drop(DropReason::Malformed))?;
    if eth.ethertype() != ETHERTYPE_IPV4 {
        return Err(Verdict::Pass(PassReason::NotIpv4));
    }
    let l3 = eth.header_len();
    let ip = Ipv4Packet::new_checked(&frame[l3..]).map_err(|_| Verdict::Drop(DropReason::Malformed))?;
    let proto = ip.protocol();
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Err(Verdict::Pass(PassReason::NotTcpUdp));
    }
    if ip.is_fragment() {
        return Err(Verdict::Pass(PassReason::Fragment));
    }
    let l4 = l3 + ip.header_len();
    let end = l3 + usize::from(ip.total_len());
    let seg = &frame[l4..end];
    let (sport, dport, tcp_flags) = if proto == IPPROTO_TCP {
        let t = TcpPacket::new_checked(seg).map_err(|_| Verdict::Drop(DropReason::Malformed))?;
        (t.src_port(), t.dst_port(), t.flags())
    } else {
        let u = UdpPacket::new_checked(seg).map_err(|_| Verdict::Drop(DropReason::Malformed))?;
        (u.src_port(), u.dst_port(), 0)
    };
    // Frames are at most a UMEM chunk (4 KiB), so offsets fit in u16.
    let (Ok(l3), Ok(l4), Ok(end)) = (u16::try_from(l3), u16::try_from(l4), u16::try_from(end)) else {
        return Err(Verdict::Drop(DropReason::Malformed));
    };
    Ok(Parsed {
        l3,
        l4,
        end,
        key: FlowKey { src: ip.src_u32(), dst: ip.dst_u32(), sport, dport, proto },
        ttl: ip.ttl(),
        tcp_flags,
    })
}

/// Rewrites addresses, ports, TTL and MACs of a parsed frame in place:
/// three block writes (MAC pair, address pair, port pair), the TTL, and two
/// checksum updates with precomputed deltas.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rewrite(
    buf: &mut [u8],
    p: &Parsed,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    ip_delta: Delta,
    l4_delta: Delta,
    hop: &NextHop,
) {
    EthernetFrame::new_unchecked(&mut buf[..p.l3()]).set_addrs(&hop.macs);
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut buf[p.l3()..p.l4()]);
        // `ip_delta` already holds the TTL decrement (see `deltas`).
        let c = ip_delta.apply(ip.checksum());
        ip.set_ttl(p.ttl - 1);
        ip.set_addrs_u32(src, dst);
        ip.set_checksum(c);
    }
    let seg = &mut buf[p.l4()..p.end()];
    if p.key.proto == IPPROTO_TCP {
        let mut t = TcpPacket::new_unchecked(seg);
        let c = l4_delta.apply(t.checksum());
        t.set_ports(sport, dport);
        t.set_checksum(c);
    } else {
        let mut u = UdpPacket::new_unchecked(seg);
        let c = l4_delta.apply_udp(u.checksum());
        u.set_ports(sport, dport);
        u.set_checksum(c);
    }
}

/// Decrementing the TTL lowers the IPv4 header word (TTL, protocol) by
/// 0x0100 whatever its value (TTL >= 1, so no borrow), so its checksum
/// adjustment is a constant (RFC 1141) that can be folded into each flow's
/// precomputed delta.
const TTL_DECREMENT: Delta = Delta::new().add16(0x0100, 0x0000);

/// The checksum deltas of rewriting (src, dst, sport, dport) from `k`'s
/// tuple: the IPv4 header's (TTL decrement included) and the L4 checksum's
/// (pseudo-header addresses and ports).
#[inline(always)]
fn deltas(k: &FlowKey, src: u32, dst: u32, sport: u16, dport: u16) -> (Delta, Delta) {
    let addrs = Delta::new().add32(k.src, src).add32(k.dst, dst);
    let l4 = addrs.add16(k.sport, sport).add16(k.dport, dport);
    (addrs.combine(TTL_DECREMENT), l4)
}

/// Turns a TCP segment into a RST answering it (RFC 9293 3.10.7.1), sent
/// from the address and port it was addressed to. Returns the new length.
fn build_rst(buf: &mut [u8], p: &Parsed) -> Option<usize> {
    let (seq, ack, has_ack, seg_len) = {
        let t = TcpPacket::new_checked(&buf[p.l4()..p.end()]).ok()?;
        let mut seg_len = t.payload().len() as u32;
        if t.flags() & tcpf::SYN != 0 {
            seg_len += 1;
        }
        if t.flags() & tcpf::FIN != 0 {
            seg_len += 1;
        }
        (t.seq_number(), t.ack_number(), t.flags() & tcpf::ACK != 0, seg_len)
    };
    let new_len = p.l3() + 40;
    if buf.len() < new_len {
        return None;
    }
    swap_macs(buf, p.l3());
    let (src, dst) = (Ipv4Addr::from(p.key.dst), Ipv4Addr::from(p.key.src));
    write_ipv4(&mut buf[p.l3()..p.l3() + 20], 40, IPPROTO_TCP, src, dst);
    let mut t = TcpPacket::new_unchecked(&mut buf[p.l3() + 20..new_len]);
    t.set_src_port(p.key.dport);
    t.set_dst_port(p.key.sport);
    if has_ack {
        t.set_seq_number(ack);
        t.set_ack_number(0);
        t.set_flags(tcpf::RST);
    } else {
        t.set_seq_number(0);
        t.set_ack_number(seq.wrapping_add(seg_len));
        t.set_flags(tcpf::RST | tcpf::ACK);
    }
    t.set_header_len(20);
    t.set_window_len(0);
    t.set_urgent_ptr(0);
    t.fill_checksum(src, dst);
    Some(new_len)
}

/// Turns the frame into an ICMP error about it (RFC 792: the original IP
/// header and the first 8 bytes of its payload), from `src` to its sender.
fn build_icmp_error(buf: &mut [u8], p: &Parsed, msg_type: u8, code: u8, src: Ipv4Addr) -> Option<usize> {
    let quote = (p.l4() - p.l3() + 8).min(p.end() - p.l3());
    let new_total = 20 + icmp::HEADER_LEN + quote;
    let new_len = p.l3() + new_total;
    if buf.len() < new_len {
        return None;
    }
    buf.copy_within(p.l3()..p.l3() + quote, p.l3() + 28);
    swap_macs(buf, p.l3());
    write_ipv4(&mut buf[p.l3()..p.l3() + 20], new_total as u16, IPPROTO_ICMP, src, Ipv4Addr::from(p.key.src));
    let mut m = Icmpv4Packet::new_unchecked(&mut buf[p.l3() + 20..new_len]);
    m.set_msg_type(msg_type);
    m.set_msg_code(code);
    m.set_rest_of_header(0);
    m.fill_checksum();
    Some(new_len)
}

fn swap_macs(buf: &mut [u8], l3: usize) {
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..l3]);
    let (s, d) = (eth.src_addr(), eth.dst_addr());
    eth.set_dst_addr(s);
    eth.set_src_addr(d);
}

fn write_ipv4(hdr: &mut [u8], total: u16, proto: u8, src: Ipv4Addr, dst: Ipv4Addr) {
    let mut ip = Ipv4Packet::new_unchecked(hdr);
    ip.set_version_ihl(4, 20);
    ip.set_dscp_ecn(0);
    ip.set_total_len(total);
    ip.set_ident(0);
    ip.set_flags_frag(true, false, 0);
    ip.set_ttl(64);
    ip.set_protocol(proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
}

/// True when a flow has been idle in both directions for longer than its
/// protocol and state allow.
fn flow_expired(shared: &Shared, e: &FlowEntry, now: u32) -> bool {
    let (rlast, rflags) = shared.reverse.reply_state(e.rev_slot);
    let idle = now.wrapping_sub(e.last_seen).min(now.wrapping_sub(rlast));
    idle > timeout_of(&shared.config.timeouts, e.k1 as u8, e.state, rflags)
}

/// The idle timeout of a flow in this protocol and state.
fn timeout_of(to: &Timeouts, proto: u8, fwd_state: u8, rev_flags: u8) -> u32 {
    if proto == IPPROTO_UDP {
        return if rev_flags & rflags::REPLIED != 0 { to.udp_replied_ms } else { to.udp_ms };
    }
    if (fwd_state & tcpf::RST) | (rev_flags & rflags::RST) != 0 {
        to.tcp_rst_ms
    } else if (fwd_state & tcpf::FIN) | (rev_flags & rflags::FIN) != 0 {
        to.tcp_closing_ms
    } else if rev_flags & rflags::REPLIED == 0 {
        to.tcp_syn_ms
    } else {
        to.tcp_established_ms
    }
}

fn active_backend(svc: &ServiceEntry, addr: u32, port: u16) -> bool {
    svc.find_backend(Ipv4Addr::from(addr), port).is_some_and(|i| {
        let c = svc.backends[usize::from(i)].conditions;
        match svc.active {
            ActiveSet::Ready => c.ready,
            ActiveSet::TerminatingFallback => c.serving && c.terminating,
            ActiveSet::Empty => false,
        }
    })
}

impl Worker {
    /// Worker `id` (0-based, < `config.workers`), with its own flow table.
    pub fn new(id: u16, shared: Arc<Shared>) -> Self {
        let cfg = &shared.config;
        let aff = cfg.affinity_slots.max(1).next_power_of_two();
        Self {
            id,
            ct: FlowTable::with_capacity(cfg.conntrack_capacity),
            counters: Counters::default(),
            svc: Vec::new(),
            stats_table: ServiceTable::empty(),
            svc_totals: Default::default(),
            free_ports: [IPPROTO_TCP, IPPROTO_UDP].map(|p| shared.reverse.owned_slots(id, p).collect()),
            affinity: vec![AffinitySlot::default(); aff].into_boxed_slice(),
            unresolved: [Ipv4Addr::UNSPECIFIED; UNRESOLVED_RING],
            unresolved_len: 0,
            hop_cache: vec![(0, u32::MAX, 0); HOP_CACHE].into_boxed_slice(),
            pre: [Pre::Done(Verdict::Drop(DropReason::Malformed)); MAX_BATCH],
            fast_path: true,
            shared,
        }
    }

    /// Turns the fast path off (or on again), so that tests can compare its
    /// output with the general path's, frame by frame.
    #[cfg(any(test, feature = "testing"))]
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    /// This worker's id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Flows currently tracked by this worker.
    pub fn flows(&self) -> usize {
        self.ct.len()
    }

    /// Buckets of the flow table, the unit of [`Self::maintain`]'s sweep.
    pub fn flow_buckets(&self) -> usize {
        self.ct.buckets()
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Per-Service packet and byte counts so far (client to backend), by
    /// Service port.
    pub fn service_counters(&self) -> Vec<(ServicePortId, ServiceCounter)> {
        let mut all = self.svc_totals.clone();
        for (e, c) in self.stats_table.entries().iter().zip(&self.svc) {
            let t = all.entry(e.id.clone()).or_default();
            t.packets += c.packets;
            t.bytes += c.bytes;
        }
        all.into_iter().collect()
    }

    /// Neighbours whose MAC a frame needed and did not find (the caller asks
    /// the kernel to resolve them); drains the list.
    pub fn take_unresolved(&mut self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let n = std::mem::take(&mut self.unresolved_len);
        self.unresolved[..n].iter().copied()
    }

    fn note_unresolved(&mut self, via: Ipv4Addr) {
        if !self.unresolved[..self.unresolved_len].contains(&via) && self.unresolved_len < UNRESOLVED_RING {
            self.unresolved[self.unresolved_len] = via;
            self.unresolved_len += 1;
        }
    }

    /// Called at a batch boundary: on a new table generation, folds the
    /// per-Service counters of the old one and sizes them for the new one.
    /// (Allocates, but only once per table swap.)
    fn sync(&mut self, t: &ServiceTable) {
        if t.generation() == self.stats_table.generation() && self.svc.len() == t.entries().len() {
            return;
        }
        for (e, c) in self.stats_table.entries().iter().zip(&self.svc) {
            if c.packets > 0 {
                let t = self.svc_totals.entry(e.id.clone()).or_default();
                t.packets += c.packets;
                t.bytes += c.bytes;
            }
        }
        self.svc.clear();
        self.svc.resize(t.entries().len(), ServiceCounter::default());
        self.stats_table = t.clone();
    }

    /// Processes one frame (a batch of one).
    pub fn process(&mut self, t: &ServiceTable, hops: &NextHops, frame: &mut Frame<'_>, now_ms: u32) {
        self.process_batch(t, hops, std::slice::from_mut(frame), now_ms);
    }

    /// Processes a burst of frames, setting each one's verdict and rewriting
    /// it in place. `now_ms` is the worker's millisecond clock (wrapping).
    pub fn process_batch(&mut self, t: &ServiceTable, hops: &NextHops, frames: &mut [Frame<'_>], now_ms: u32) {
        self.sync(t);
        for chunk in frames.chunks_mut(MAX_BATCH) {
            self.process_chunk(t, hops, chunk, now_ms);
        }
    }

    fn process_chunk(&mut self, t: &ServiceTable, hops: &NextHops, frames: &mut [Frame<'_>], now: u32) {
        if !self.fast_path {
            return self.process_chunk_general(t, hops, frames, now);
        }
        if self.ct.slots() <= CACHE_RESIDENT_SLOTS {
            // The whole flow table fits in the core's caches: reading ahead
            // buys nothing (measured: 7.9x the baseline in one pass against
            // 9.0x with a separate lookup pass), so each frame goes through
            // in one pass.
            let gens = (t.generation() as u32, hops.generation());
            let mut tally = fast::Tally::default();
            let mut i = 0;
            while i < frames.len() {
                // The fast path takes frames until one needs the general path.
                let rev = &self.shared.reverse;
                let stop =
                    fast::run(&mut self.ct.fast(), &mut self.svc, rev, hops, gens, &mut frames[i..], now, &mut tally);
                let (at, v) = match stop {
                    fast::Stop::Done => break,
                    fast::Stop::Uncommon { at } => (at, self.decide_general(t, hops, &mut frames[i + at], now)),
                    fast::Stop::Decide { at, c, probe, slot } => {
                        (at, self.decide(t, hops, &mut frames[i + at], &c.parsed(), &probe, slot, now))
                    }
                };
                self.finish(&mut frames[i + at], v);
                i += at + 1;
            }
            self.add_tally(&tally);
            return;
        }
        let n = frames.len();
        // Pass 1: parse, hash, prefetch each frame's bucket.
        for (f, pre) in frames.iter().zip(self.pre.iter_mut()) {
            *pre = match parse(f.buf, f.len) {
                Ok(p) => {
                    let probe = self.ct.probe(p.key.hash());
                    self.ct.prefetch_bucket(&probe);
                    Pre::Parsed(p, probe, NO_SLOT)
                }
                Err(v) => Pre::Done(v),
            };
        }
        // Pass 2: match signatures, prefetch the candidate entries.
        for pre in self.pre[..n].iter_mut() {
            if let Pre::Parsed(_, probe, candidate) = pre {
                *candidate = self.ct.prefetch_candidate(probe).map_or(NO_SLOT, |s| s as u32);
            }
        }
        // Pass 3: look up (the lines are in by now), decide and rewrite.
        self.decide_all(t, hops, frames, now);
    }

    /// A burst without the fast path: each frame parsed through the `wire`
    /// wrappers, looked up and decided by the general path, in one pass.
    #[cold]
    fn process_chunk_general(&mut self, t: &ServiceTable, hops: &NextHops, frames: &mut [Frame<'_>], now: u32) {
        for f in frames.iter_mut() {
            let v = self.decide_general(t, hops, f, now);
            self.finish(f, v);
        }
    }

    /// One frame through the general path: parsed by the `wire` wrappers,
    /// looked up, decided (not yet finished).
    #[inline]
    fn decide_general(&mut self, t: &ServiceTable, hops: &NextHops, f: &mut Frame<'_>, now: u32) -> Verdict {
        match parse_general(f.buf, f.len) {
            Ok(p) => {
                let probe = self.ct.probe(p.key.hash());
                let slot = self.ct.find(&p.key, &probe);
                self.decide(t, hops, f, &p, &probe, slot, now)
            }
            Err(v) => v,
        }
    }

    /// The last pass of a burst: decide and rewrite each frame from what
    /// the earlier passes found.
    #[inline(always)]
    fn decide_all(&mut self, t: &ServiceTable, hops: &NextHops, frames: &mut [Frame<'_>], now: u32) {
        let gens = (t.generation() as u32, hops.generation());
        let mut tally = fast::Tally::default();
        for (i, f) in frames.iter_mut().enumerate() {
            let v = match self.pre[i] {
                Pre::Done(v) => v,
                Pre::Parsed(p, probe, candidate) => {
                    let candidate = (candidate != NO_SLOT).then_some(candidate as usize);
                    let slot = self.ct.check(&p.key, &probe, candidate);
                    if let Some(c) = fast::Common::of(&p) {
                        if let Some(port) = self.fast_forward(hops, gens, f, &c, slot, now, &mut tally) {
                            f.verdict = Verdict::Forward { port };
                            continue;
                        }
                    }
                    self.decide(t, hops, f, &p, &probe, slot, now)
                }
            };
            self.finish(f, v);
        }
        self.add_tally(&tally);
    }

    /// The established-flow fast path (see `fast`): `Some(port)` when it
    /// forwarded the frame, counted in `tally`; `None` when nothing was done
    /// and the frame goes to `decide`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn fast_forward(
        &mut self,
        hops: &NextHops,
        gens: (u32, u32),
        f: &mut Frame<'_>,
        c: &fast::Common,
        slot: Option<usize>,
        now: u32,
        tally: &mut fast::Tally,
    ) -> Option<u16> {
        let port = fast::forward_established(&mut self.ct.fast(), &mut self.svc, hops, gens, f, c, slot?, now)?;
        tally.frames += 1;
        tally.bytes += f.len as u64;
        Some(port)
    }

    /// Counts the frames the fast path forwarded in a batch, as `finish`
    /// would have one by one.
    #[inline(always)]
    fn add_tally(&mut self, tally: &fast::Tally) {
        self.counters.rx += tally.frames;
        self.counters.rx_bytes += tally.bytes;
        self.counters.forwarded += tally.frames;
        self.counters.reverse_translated += tally.replies;
    }

    /// Records a frame's verdict (and a reply's new length) and counts it.
    #[inline(always)]
    fn finish(&mut self, f: &mut Frame<'_>, v: Verdict) {
        self.counters.rx += 1;
        self.counters.rx_bytes += f.len as u64;
        if let Verdict::Reply { len } = v {
            f.len = usize::from(len);
        }
        f.verdict = v;
        self.counters.count(v);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn decide(
        &mut self,
        t: &ServiceTable,
        hops: &NextHops,
        f: &mut Frame<'_>,
        p: &Parsed,
        probe: &Probe,
        slot: Option<usize>,
        now: u32,
    ) -> Verdict {
        if p.l4() - p.l3() > 20 {
            self.counters.ip_options += 1;
        }
        if let Some(slot) = slot {
            if let Some(v) = self.established(t, hops, f, p, slot, now) {
                return v;
            }
        }
        let reply_slot = {
            let rev = &self.shared.reverse;
            rev.addr_index(p.key.dst)
                .filter(|_| rev.owner_of(p.key.dport).is_some())
                .map(|ai| rev.index(ai, p.key.proto, p.key.dport))
        };
        match reply_slot {
            Some(idx) => self.reply(hops, f, p, idx, now),
            None => self.new_flow(t, hops, f, p, probe, now),
        }
    }

    /// Removes a flow from both directions.
    fn forget(&mut self, slot: usize) {
        if let Some(old) = self.ct.remove(slot) {
            self.release(&old);
        }
    }

    /// Frees the reverse slot and SNAT port of a flow that left the table.
    fn release(&mut self, old: &FlowEntry) {
        self.shared.reverse.clear(old.rev_slot);
        self.free_ports[usize::from(old.k1 as u8 == IPPROTO_UDP)].push_back(old.rev_slot);
    }

    /// Expires idle flows in the next `buckets` buckets; call on idle polls.
    /// Returns how many were removed.
    pub fn maintain(&mut self, now_ms: u32, buckets: usize) -> usize {
        let mut gone = [FlowEntry::default(); 64];
        let mut total = 0;
        let mut left = buckets;
        while left > 0 {
            let step = left.min(8);
            left -= step;
            let mut n = 0;
            let removed = self.ct.sweep(
                step,
                |e| flow_expired(&self.shared, e, now_ms),
                |_, e| {
                    // 8 buckets of 8 slots: never more than 64.
                    if n < gone.len() {
                        gone[n] = *e;
                        n += 1;
                    }
                },
            );
            for e in &gone[..n] {
                self.release(e);
            }
            total += removed;
        }
        self.counters.expired += total as u64;
        total
    }

    /// Resolves the next hop toward `dst` (through the worker's cache),
    /// noting unresolved neighbours.
    fn hop_to(&mut self, hops: &NextHops, dst: u32) -> Result<u16, Verdict> {
        let i = (client_hash(dst) as usize) & (HOP_CACHE - 1);
        let (ip, gen, hop) = self.hop_cache[i];
        if ip == dst && gen == hops.generation() {
            return Ok(hop);
        }
        match hops.resolve(Ipv4Addr::from(dst)) {
            Resolution::Hop(h) => {
                self.hop_cache[i] = (dst, hops.generation(), h);
                Ok(h)
            }
            Resolution::Unresolved { via, .. } => {
                self.note_unresolved(via);
                Err(Verdict::Pass(PassReason::UnknownNextHop))
            }
            Resolution::NoRoute => Err(Verdict::Drop(DropReason::NoRoute)),
        }
    }

    /// TTL expiry: ICMP time exceeded from the ingress port's address, or a
    /// counted drop when the port has none.
    fn time_exceeded(&self, hops: &NextHops, f: &mut Frame<'_>, p: &Parsed) -> Verdict {
        let Some(src) = hops.port_addr(f.in_port) else {
            return Verdict::Drop(DropReason::TtlExpired);
        };
        match build_icmp_error(f.buf, p, icmp::kind::TIME_EXCEEDED, icmp::code::TTL_EXCEEDED, src) {
            Some(len) => Verdict::Reply { len: len as u16 },
            None => Verdict::Drop(DropReason::NoRoomForReply),
        }
    }

    /// A reject like kube-proxy's: TCP RST, or ICMP port unreachable from the
    /// frontend address for UDP.
    fn reject(f: &mut Frame<'_>, p: &Parsed) -> Verdict {
        let len = if p.key.proto == IPPROTO_TCP {
            build_rst(f.buf, p)
        } else {
            build_icmp_error(
                f.buf,
                p,
                icmp::kind::DEST_UNREACHABLE,
                icmp::code::PORT_UNREACHABLE,
                Ipv4Addr::from(p.key.dst),
            )
        };
        match len {
            Some(len) => Verdict::Reply { len: len as u16 },
            None => Verdict::Drop(DropReason::NoRoomForReply),
        }
    }

    /// A packet of a tracked flow. `None` when the flow is gone and the frame
    /// should be handled as a new one.
    #[inline(always)]
    fn established(
        &mut self,
        t: &ServiceTable,
        hops: &NextHops,
        f: &mut Frame<'_>,
        p: &Parsed,
        slot: usize,
        now: u32,
    ) -> Option<Verdict> {
        let gen = t.generation() as u32;
        let hop_gen = hops.generation();
        let e = self.ct.entry(slot)?;
        let is_tcp = p.key.proto == IPPROTO_TCP;
        // A fresh SYN on a closed or closing flow starts a new connection.
        if is_tcp && p.tcp_flags & (tcpf::SYN | tcpf::ACK) == tcpf::SYN && e.state & (tcpf::FIN | tcpf::RST) != 0 {
            self.forget(slot);
            return None;
        }
        if e.table_gen != gen || e.hop_gen != hop_gen {
            if let Some(v) = self.revalidate(t, hops, f, p, slot, now) {
                return Some(v);
            }
        }
        if p.ttl <= 1 {
            return Some(self.time_exceeded(hops, f, p));
        }
        let e = self.ct.entry_mut(slot)?;
        e.last_seen = now;
        e.state |= p.tcp_flags & (tcpf::FIN | tcpf::RST | tcpf::SYN);
        let e = &*e;
        let hop = hops.hop(e.hop)?;
        rewrite(f.buf, p, e.snat_addr, e.backend_addr, e.snat_port, e.backend_port, e.ip_delta, e.l4_delta, hop);
        let port = hop.port;
        if let Some(c) = self.svc.get_mut(e.entry as usize) {
            c.packets += 1;
            c.bytes += f.len as u64;
        }
        Some(Verdict::Forward { port })
    }

    /// After a table or next-hop swap: finds the flow's backend in the new
    /// table. Returns a verdict when the flow cannot continue as it was.
    #[cold]
    fn revalidate(
        &mut self,
        t: &ServiceTable,
        hops: &NextHops,
        f: &mut Frame<'_>,
        p: &Parsed,
        slot: usize,
        now: u32,
    ) -> Option<Verdict> {
        let e = *self.ct.entry(slot)?;
        let proto = Protocol::from_number(p.key.proto)?;
        let found = t
            .frontend(Ipv4Addr::from(p.key.dst), proto, p.key.dport)
            .and_then(|fe| t.entry(fe.entry).map(|svc| (fe.entry, svc)));
        let mut e2 = e;
        match found {
            Some((idx, svc)) => match svc.find_backend(Ipv4Addr::from(e.backend_addr), e.backend_port) {
                Some(b) => {
                    e2.entry = idx;
                    e2.backend = b;
                }
                None if p.key.proto == IPPROTO_UDP && svc.active != ActiveSet::Empty => {
                    // UDP has no stream to break: move the flow to a live backend.
                    let b = self.pick_backend(svc, &p.key, now)?;
                    let backend = &svc.backends[usize::from(b)];
                    let baddr = u32::from(backend.addr);
                    let (ip_d, l4_d) = deltas(&p.key, e.snat_addr, baddr, e.snat_port, backend.port);
                    e2 = FlowEntry {
                        backend_addr: baddr,
                        backend_port: backend.port,
                        backend: b,
                        entry: idx,
                        ip_delta: ip_d,
                        l4_delta: l4_d,
                        hop_gen: hops.generation().wrapping_add(1), // force re-resolution below
                        ..e
                    };
                    self.shared.reverse.publish(
                        e.rev_slot,
                        &RevFlow {
                            client: p.key.src,
                            client_port: p.key.sport,
                            frontend: p.key.dst,
                            frontend_port: p.key.dport,
                            backend: baddr,
                            backend_port: backend.port,
                            proto: p.key.proto,
                            owner_slot: slot as u32,
                        },
                        now,
                    );
                }
                None if p.key.proto == IPPROTO_TCP => {
                    // Never move a TCP stream silently: tell the client.
                    self.forget(slot);
                    return Some(match build_rst(f.buf, p) {
                        Some(len) => {
                            // Counted as a reply (the RST) and as a backend-gone event.
                            self.counters.drop[DropReason::BackendGone as usize] += 1;
                            Verdict::Reply { len: len as u16 }
                        }
                        None => Verdict::Drop(DropReason::BackendGone),
                    });
                }
                None => {
                    self.forget(slot);
                    return None;
                }
            },
            None => {
                // The frontend is gone: forget the flow; the frame is then
                // handled as new (and passed to the kernel).
                self.forget(slot);
                return None;
            }
        }
        e2.table_gen = t.generation() as u32;
        if e2.hop_gen != hops.generation() {
            match self.hop_to(hops, e2.backend_addr) {
                Ok(h) => {
                    e2.hop = h;
                    e2.hop_gen = hops.generation();
                }
                Err(v) => {
                    *self.ct.entry_mut(slot)? = e2;
                    return Some(v);
                }
            }
        }
        *self.ct.entry_mut(slot)? = e2;
        None
    }

    /// Chooses a backend for a new flow: ClientIP affinity if set, else Maglev
    /// over the 5-tuple hash.
    fn pick_backend(&mut self, svc: &ServiceEntry, k: &FlowKey, now: u32) -> Option<u16> {
        let Some(timeout_s) = svc.affinity_timeout_secs else {
            return svc.maglev.pick(flow_hash(k.src, k.dst, k.sport, k.dport, k.proto));
        };
        let sid = svc.id_hash;
        let mask = self.affinity.len() - 1;
        let i = (client_hash(k.src ^ sid) as usize) & mask;
        let slot = self.affinity[i];
        let timeout_ms = timeout_s.saturating_mul(1000);
        if slot.client == k.src
            && slot.service == sid
            && now.wrapping_sub(slot.last_seen) <= timeout_ms
            && active_backend(svc, slot.backend_addr, slot.backend_port)
        {
            self.affinity[i].last_seen = now;
            return svc.find_backend(Ipv4Addr::from(slot.backend_addr), slot.backend_port);
        }
        // Deterministic by client address, so every worker and every gateway
        // starts from the same choice.
        let b = svc.maglev.pick(client_hash(k.src))?;
        let be = &svc.backends[usize::from(b)];
        self.affinity[i] = AffinitySlot {
            client: k.src,
            service: sid,
            backend_addr: u32::from(be.addr),
            backend_port: be.port,
            last_seen: now,
        };
        Some(b)
    }

    /// Takes a free SNAT port from this worker's slice: the oldest freed
    /// one. When none is free, expired flows are swept out first (up to 1024
    /// buckets). Returns the reverse-table index and the address and port.
    fn alloc_port(&mut self, proto: u8, now: u32) -> Option<(u32, u32, u16)> {
        let q = usize::from(proto == IPPROTO_UDP);
        if self.free_ports[q].is_empty() {
            self.maintain(now, 1024);
        }
        let idx = self.free_ports[q].pop_front()?;
        let (addr, port) = self.shared.reverse.addr_port_of(idx);
        Some((idx, addr, port))
    }

    fn new_flow(
        &mut self,
        t: &ServiceTable,
        hops: &NextHops,
        f: &mut Frame<'_>,
        p: &Parsed,
        probe: &Probe,
        now: u32,
    ) -> Verdict {
        let k = p.key;
        let Some(proto) = Protocol::from_number(k.proto) else {
            return Verdict::Pass(PassReason::NotTcpUdp);
        };
        let Some(fe) = t.frontend(Ipv4Addr::from(k.dst), proto, k.dport) else {
            return Verdict::Pass(PassReason::NotService);
        };
        let Some(svc) = t.entry(fe.entry) else {
            return Verdict::Pass(PassReason::NotService);
        };
        if fe.kind == FrontendKind::LoadBalancer && !svc.source_allowed(Ipv4Addr::from(k.src)) {
            return Verdict::Drop(DropReason::SourceRange);
        }
        if k.proto == IPPROTO_TCP && p.tcp_flags & (tcpf::SYN | tcpf::ACK | tcpf::RST) != tcpf::SYN {
            return Verdict::Drop(DropReason::TcpNoFlow);
        }
        if svc.active == ActiveSet::Empty {
            return Self::reject(f, p);
        }
        if p.ttl <= 1 {
            return self.time_exceeded(hops, f, p);
        }
        let Some(b) = self.pick_backend(svc, &k, now) else {
            return Self::reject(f, p);
        };
        let backend = svc.backends[usize::from(b)];
        let baddr = u32::from(backend.addr);
        let hop_idx = match self.hop_to(hops, baddr) {
            Ok(h) => h,
            Err(v) => return v,
        };
        let Some(hop) = hops.hop(hop_idx).copied() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some((rev_idx, snat_addr, snat_port)) = self.alloc_port(k.proto, now) else {
            return Verdict::Drop(DropReason::PortsExhausted);
        };
        let ins = self.ct.insert(&k, probe, now, |e| flow_expired(&self.shared, e, now));
        if let Some((_, to)) = self.ct.take_moved() {
            if let Some(e) = self.ct.entry(to) {
                self.shared.reverse.set_owner_slot(e.rev_slot, to as u32);
            }
        }
        if let Inserted::Replaced { old, expired, .. } = ins {
            self.release(&old);
            if expired {
                self.counters.expired += 1;
            } else {
                self.counters.evicted += 1;
            }
        }
        let slot = ins.slot();
        let (ip_delta, l4_delta) = deltas(&k, snat_addr, baddr, snat_port, backend.port);
        if let Some(e) = self.ct.entry_mut(slot) {
            e.snat_addr = snat_addr;
            e.snat_port = snat_port;
            e.backend_addr = baddr;
            e.backend_port = backend.port;
            e.hop = hop_idx;
            e.backend = b;
            e.ip_delta = ip_delta;
            e.l4_delta = l4_delta;
            e.table_gen = t.generation() as u32;
            e.hop_gen = hops.generation();
            e.entry = fe.entry;
            e.rev_slot = rev_idx;
            e.state = p.tcp_flags & (tcpf::SYN | tcpf::FIN | tcpf::RST);
        }
        self.shared.reverse.publish(
            rev_idx,
            &RevFlow {
                client: k.src,
                client_port: k.sport,
                frontend: k.dst,
                frontend_port: k.dport,
                backend: baddr,
                backend_port: backend.port,
                proto: k.proto,
                owner_slot: slot as u32,
            },
            now,
        );
        self.counters.new_flows += 1;
        rewrite(f.buf, p, snat_addr, baddr, snat_port, backend.port, ip_delta, l4_delta, &hop);
        if let Some(c) = self.svc.get_mut(fe.entry as usize) {
            c.packets += 1;
            c.bytes += f.len as u64;
        }
        Verdict::Forward { port: hop.port }
    }

    /// A reply from a backend to an SNAT address and port: translate back to
    /// what the client dialled. Works on any worker (see `reverse`).
    fn reply(&mut self, hops: &NextHops, f: &mut Frame<'_>, p: &Parsed, idx: u32, now: u32) -> Verdict {
        let k = p.key;
        let Some(fl) = self.shared.reverse.read(idx) else {
            return Verdict::Pass(PassReason::SnatNoFlow);
        };
        if fl.backend != k.src || fl.backend_port != k.sport || fl.proto != k.proto {
            return Verdict::Pass(PassReason::SnatNoFlow);
        }
        if p.ttl <= 1 {
            return self.time_exceeded(hops, f, p);
        }
        let hop_idx = match self.shared.reverse.cached_hop(idx, hops.generation()) {
            Some(h) => h,
            None => match self.hop_to(hops, fl.client) {
                Ok(h) => {
                    self.shared.reverse.cache_hop(idx, hops.generation(), h);
                    h
                }
                Err(v) => return v,
            },
        };
        let Some(hop) = hops.hop(hop_idx).copied() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let mut fl_flags = rflags::REPLIED;
        if p.tcp_flags & tcpf::FIN != 0 {
            fl_flags |= rflags::FIN;
        }
        if p.tcp_flags & tcpf::RST != 0 {
            fl_flags |= rflags::RST;
        }
        self.shared.reverse.touch(idx, now, fl_flags);
        let (ip_delta, l4_delta) = deltas(&k, fl.frontend, fl.client, fl.frontend_port, fl.client_port);
        rewrite(f.buf, p, fl.frontend, fl.client, fl.frontend_port, fl.client_port, ip_delta, l4_delta, &hop);
        self.counters.reverse_translated += 1;
        Verdict::Forward { port: hop.port }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The per-flow IPv4 delta (addresses and the constant TTL
        /// decrement) gives exactly the checksum a full recompute gives.
        #[test]
        fn ip_delta_with_ttl_equals_full_recompute(
            hdr in proptest::collection::vec(any::<u8>(), 20),
            ttl in 2u8..=255,
            src in any::<u32>(),
            dst in any::<u32>(),
        ) {
            let mut h = hdr.clone();
            h[0] = 0x45;
            h[8] = ttl;
            let mut ip = Ipv4Packet::new_unchecked(&mut h[..]);
            ip.fill_checksum();
            let key = FlowKey { src: ip.src_u32(), dst: ip.dst_u32(), sport: 1, dport: 2, proto: ip.protocol() };
            let (ip_delta, _) = deltas(&key, src, dst, 1, 2);
            let incremental = ip_delta.apply(ip.checksum());
            ip.set_src_u32(src);
            ip.set_dst_u32(dst);
            ip.set_ttl(ttl - 1);
            ip.fill_checksum();
            prop_assert_eq!(incremental, ip.checksum());
        }
    }
}
