//! The per-frame NAT pipeline: one [`Worker`] per polling thread.
//!
//! `Worker::process_batch` takes a burst of frames and decides each one's
//! [`Verdict`], rewriting it in place. Per frame:
//!
//! 1. Parse Ethernet (one 802.1Q tag kept as is), IPv4 or IPv6 (extension
//!    headers walked), TCP/UDP ports. Neither IP family, not TCP/UDP, or a
//!    fragment -> the kernel (svcgate does not reassemble; see
//!    [`PassReason::Fragment`]). IPv4 options are carried through unchanged
//!    and counted. Truncated or inconsistent headers -> drop. Steps 2-4 are
//!    the same for both families (`family`: what differs), each in its own
//!    tables.
//! 2. A frame to an SNAT address and port in the SNAT range is a *reply*:
//!    its 5-tuple is looked up in the shared [`ReverseTable`] (any worker can
//!    do it, see `reverse`; the key holds the backend, so only the flow's
//!    backend matches), then source is rewritten to the frontend the client
//!    dialled and destination to the client.
//! 3. Otherwise look the 5-tuple up in this worker's [`FlowTable`]. A hit is
//!    an established flow: revalidate against the current table generation
//!    once per swap (backend still listed? else TCP gets a RST and UDP is
//!    re-picked), then DNAT+SNAT with the checksum deltas precomputed at flow
//!    creation, TTL−1, MACs from the cached next hop.
//! 4. A miss to a frontend is a new flow (TCP on a SYN, or on an ACK of a
//!    connection whose entry is gone: picked up, as Linux conntrack does):
//!    source ranges, reject when no endpoint can serve (TCP RST / ICMP port
//!    unreachable, like kube-proxy's REJECT), Maglev pick (or ClientIP
//!    affinity), an SNAT address and port from this worker's slice that is
//!    free *toward that backend* (ports are unique per backend, as in
//!    Linux's NAT; the client's own port first), both directions entered,
//!    then as in 3. Anything else goes to the kernel.
//!
//! Under pressure (the flow table nearly full, or no port free toward a
//! backend) flows that were never assured (a SYN nothing answered, UDP with
//! no reply) are reclaimed first, oldest first, and their SYN timeout
//! shortens; assured flows are evicted only when none is left (see
//! [`Worker::reclaim`]).
//!
//! The common case of 1 and 3 (an untagged IPv4 frame without options of a
//! tracked flow, or a reply to one, that needs only its translation) takes
//! a fast path (`fast`) with the same results at half the instructions;
//! every other frame (IPv6 among them) takes the general path described here.
//!
//! Nothing here allocates, locks or logs per packet; all tables are sized when
//! the worker is created. The batch path reads every frame's hash buckets,
//! then every candidate entry, before processing any frame, so that at 1M
//! flows the cache misses of a burst overlap instead of queueing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use svcgate_common::family::IpFamily;
use svcgate_common::hash::client_hash;
use svcgate_common::model::{ForwardingMode, Protocol};
use svcgate_common::table::{ActiveSet, FrontendKind, ServiceEntry, ServicePortId, ServiceTable};

use super::conntrack::{
    Flow, FlowEntry, FlowEntry6, FlowKey, FlowMeta, FlowTable, FrontRec, Inserted, KeyHasher, Probe, Standing,
    WireAddr, NO_FRONT, SNAT_CLIENT,
};
use super::nexthop::{NextHops, Resolution};
use super::restart;
use super::reverse::{flags as rflags, Claim, RevFlow, ReverseError, ReverseTable};
use super::verdict::{DropReason, Frame, PassReason, Verdict};
use crate::wire::tcp::flags as tcpf;
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};

mod ahead;
mod family;
mod fast;

use ahead::Ahead;
#[cfg(test)]
use family::deltas;
use family::{parse_general, IcmpError, NatFamily};

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
    /// TCP before the handshake completed (Linux: syn_sent 120 s).
    pub tcp_syn_ms: u32,
    /// TCP before the handshake completed, while the flow table is under
    /// pressure (see [`NatConfig::pressure_percent`]): a SYN flood's flows
    /// go after this, a legitimate client's retransmitted SYN refreshes its flow.
    pub tcp_syn_pressure_ms: u32,
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
            tcp_syn_pressure_ms: 5_000,
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
    /// How flows reach backends unless their Service says otherwise
    /// (`ServiceEntry::forwarding`): masqueraded to an SNAT address
    /// (`snat`), or with the client's address kept (`dnat`, the Pods' route
    /// back to clients through the gateway).
    pub mode: ForwardingMode,
    /// Addresses flows are masqueraded to; replies come back to them.
    pub snat_addrs: Vec<Ipv4Addr>,
    /// IPv6 addresses flows of IPv6 frontends are masqueraded to (a family's
    /// flows are masqueraded to an address of that family: no NAT46). Empty:
    /// IPv6 Services in snat mode are not served.
    pub snat_addrs6: Vec<Ipv6Addr>,
    /// SNAT port range, inclusive. The default, Linux's ephemeral range
    /// 32768-60999, stays clear of the NodePort range 30000-32767, so an SNAT
    /// address may also be a node IP.
    pub snat_ports: (u16, u16),
    /// Number of workers sharing the port range.
    pub workers: u16,
    /// IPv4 flows each worker tracks (default 1M).
    pub conntrack_capacity: usize,
    /// IPv6 flows each worker tracks (default 64k, and never more than
    /// `conntrack_capacity`: an IPv6 entry is two cache lines, and most
    /// gateways carry fewer IPv6 flows; raise it for an IPv6-heavy gateway).
    pub conntrack_capacity6: usize,
    /// ClientIP affinity records per worker (rounded up to a power of two).
    pub affinity_slots: usize,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// A worker is under pressure once its flow table holds this share
    /// (percent) of its capacity: each new flow then first reclaims up to
    /// two of the oldest flows that were never assured, and the SYN timeout
    /// is [`Timeouts::tcp_syn_pressure_ms`].
    pub pressure_percent: u8,
    /// Seeds of the flow and reverse tables' hash. `None` (the default and
    /// what the daemon uses): drawn at random for each table when it is
    /// created, so that nobody outside the process can aim flows at one
    /// bucket ([`KeyHasher`]). Fixed only where a run must be reproducible
    /// (fuzzing, fixtures).
    pub hash_seeds: Option<[u64; 2]>,
    /// Where the flow and reverse tables live so that they outlive the
    /// process (`nat::restart`): files mapped shared in this directory
    /// (tmpfs, e.g. /run/svcgate), adopted by the next process when their
    /// layout matches. `None` (the default): anonymous memory, gone with
    /// the process. Only [`Shared::open`] reads it.
    pub state_dir: Option<std::path::PathBuf>,
}

impl NatConfig {
    /// The IPv6 flow capacity of a worker: `conntrack_capacity6`, at most
    /// `conntrack_capacity`.
    pub fn capacity6(&self) -> usize {
        self.conntrack_capacity6.min(self.conntrack_capacity)
    }

    /// The hasher of a new flow or reverse table under this configuration.
    pub fn key_hasher(&self) -> KeyHasher {
        match self.hash_seeds {
            Some([a, b]) => KeyHasher::with_seeds(a, b),
            None => KeyHasher::random(),
        }
    }
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            mode: ForwardingMode::Snat,
            snat_addrs: Vec::new(),
            snat_addrs6: Vec::new(),
            snat_ports: (32768, 60999),
            workers: 1,
            conntrack_capacity: 1 << 20,
            conntrack_capacity6: 1 << 16,
            affinity_slots: 1 << 16,
            timeouts: Timeouts::default(),
            pressure_percent: 90,
            hash_seeds: None,
            state_dir: None,
        }
    }
}

/// A worker's flow tables, IPv4 and IPv6.
type WorkerTables = (FlowTable<FlowEntry>, FlowTable<FlowEntry6>);

/// State shared by all workers: the reverse tables and the configuration.
#[derive(Debug)]
pub struct Shared {
    /// IPv4 reply 5-tuple -> flow.
    pub reverse: ReverseTable,
    /// IPv6 reply 5-tuple -> flow.
    pub reverse6: ReverseTable<u128>,
    /// The configuration.
    pub config: NatConfig,
    /// `CLOCK_MONOTONIC` (ms, see `shm::monotonic_ms`) at the workers'
    /// clock zero: when this state was created, or when the state files
    /// adopted from an earlier process were (so that their flows' times
    /// stay meaningful).
    pub clock_epoch_ms: u64,
    /// What adopting the state directory did (with a `state_dir`).
    pub restart: Option<restart::RestartReport>,
    /// Flow tables opened from the state directory, per worker, until
    /// [`Worker::new`] takes its own.
    adopted: parking_lot::Mutex<Vec<Option<WorkerTables>>>,
}

impl Shared {
    /// [`Shared::new`], with the tables in `config.state_dir` when it is
    /// set: adopted from an earlier process where their layout matches,
    /// created clean where not (see `nat::restart`); fails when the
    /// directory or a file cannot be used at all (or is another svcgate's).
    pub fn open(config: NatConfig) -> Result<Arc<Self>, restart::StateError> {
        let Some(dir) = config.state_dir.clone() else {
            return Ok(Self::new(config)?);
        };
        let workers = config.workers.max(1);
        let r = restart::open(&dir, &config, workers)?;
        Ok(Arc::new(Self {
            reverse: r.reverse,
            reverse6: r.reverse6,
            config,
            clock_epoch_ms: r.epoch_ms,
            restart: Some(r.report),
            adopted: parking_lot::Mutex::new(r.flows.into_iter().map(Some).collect()),
        }))
    }

    /// The milliseconds since the workers' clock zero: the clock every
    /// worker stamps its flows with.
    pub fn now_ms(&self) -> u32 {
        crate::shm::monotonic_ms().wrapping_sub(self.clock_epoch_ms) as u32
    }

    /// Builds the shared state in anonymous memory (`config.state_dir` is
    /// not read: see [`Shared::open`]); fails on an unusable SNAT
    /// configuration. An IPv4 SNAT address is required; IPv6 ones are not
    /// (without one, IPv6 Services are served in dnat mode only).
    pub fn new(config: NatConfig) -> Result<Arc<Self>, ReverseError> {
        let workers = usize::from(config.workers.max(1));
        let (lo, hi) = config.snat_ports;
        let flows = config.conntrack_capacity.saturating_mul(workers);
        let reverse =
            ReverseTable::with_hasher(&config.snat_addrs, lo, hi, config.workers, flows, config.key_hasher())?;
        let flows6 = config.capacity6().saturating_mul(workers);
        let reverse6 = ReverseTable::without_addrs_check(
            &config.snat_addrs6,
            lo,
            hi,
            config.workers,
            flows6,
            config.key_hasher(),
        )?;
        Ok(Arc::new(Self {
            reverse,
            reverse6,
            config,
            clock_epoch_ms: crate::shm::monotonic_ms(),
            restart: None,
            adopted: parking_lot::Mutex::new(Vec::new()),
        }))
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
    /// Assured flows evicted while still live because the table was full
    /// and no unassured flow was left to reclaim.
    pub evicted: u64,
    /// Flows that were never assured (no reply, or a handshake never
    /// completed), reclaimed under pressure before their timeout.
    pub reclaimed: u64,
    /// Flows removed after their timeout.
    pub expired: u64,
    /// New flows entered from a TCP segment other than a SYN (a connection
    /// in progress whose entry was gone; counted in `new_flows` too).
    pub picked_up: u64,
    /// New flows that found no SNAT port free toward their backend, by
    /// SNAT address (in [`NatConfig::snat_addrs`] order): each address had
    /// every port of the worker's slice in use toward that backend.
    pub ports_exhausted: Vec<u64>,
    /// As `ports_exhausted`, by IPv6 SNAT address (in
    /// [`NatConfig::snat_addrs6`] order).
    pub ports_exhausted6: Vec<u64>,
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
struct AffinitySlot<R> {
    client: R,
    service: u32,
    backend_addr: R,
    backend_port: u16,
    last_seen: u32,
}

/// A parsed frame: offsets and the 5-tuple (addresses as `u32` for IPv4,
/// `u128` for IPv6). Kept small (u16 offsets): the batch path writes and
/// rereads one per frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Parsed<R = u32> {
    l3: u16,
    l4: u16,
    end: u16,
    /// TTL, or the IPv6 hop limit.
    ttl: u8,
    tcp_flags: u8,
    key: FlowKey<R>,
}

impl<R> Parsed<R> {
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
    /// IPv6, parsed, with its buckets and candidate: entry `n` of
    /// `Worker::pre6` (kept apart so that IPv4's entries stay small).
    V6(u8),
}

/// How many IPv6 frames ahead of its decision a burst's frame has its
/// frontend record prefetched (`Worker::decide_all`). Measured (criterion,
/// `established6/1M`, with the backend records this once was): prefetching
/// every frame's record in a pass before the decisions left them to cost
/// 10-15 ns per frame against none at all; 3 frames ahead, 8 ns more than 8.
const FRONT_AHEAD: usize = 8;

/// An IPv6 frame of a large-table burst between the passes: its key as
/// words and the fields the fast path reads ([`fast::Common`]), where its
/// headers start, its buckets and the candidate slot of pass 2 (`NO_SLOT`:
/// none). Words rather than a [`Parsed`], whose 16-byte addresses each
/// step converted to words again (some 40 instructions per frame,
/// callgrind).
#[derive(Debug, Clone, Copy)]
struct Pre6 {
    c: fast::Common<Ipv6Addr>,
    l3: u16,
    l4: u16,
    probe: Probe,
    candidate: u32,
}

impl Pre6 {
    const EMPTY: Self = Self {
        c: fast::Common { w: [0; 5], end: 0, ttl: 0, tcp_flags: 0 },
        l3: 0,
        l4: 0,
        probe: Probe { b1: 0, b2: 0, sig: 0 },
        candidate: NO_SLOT,
    };

    /// What `parse6` returned for the frame.
    #[inline(always)]
    fn parsed(&self) -> Parsed<u128> {
        Parsed { l3: self.l3, l4: self.l4, ..self.c.parsed() }
    }

    /// The frame as the fast path takes it, when it is a common frame
    /// (as `fast::Common::of` tells: its L4 header where the common frame's is).
    #[inline(always)]
    fn common(&self) -> Option<&fast::Common<Ipv6Addr>> {
        (usize::from(self.l4) == fast::L4_6).then_some(&self.c)
    }
}

const UNRESOLVED_RING: usize = 16;

/// A flow's state bit (beside the client's FIN, SYN and RST in
/// [`FlowEntry::state`]): the flow is *assured*, as Linux conntrack's
/// IPS_ASSURED: TCP once the client acknowledged the backend's answer (the
/// handshake completed), UDP once the backend replied (read from the
/// reverse table's flags, since a UDP reply may be a flow's last packet).
/// Only unassured flows are reclaimed before their timeout.
pub const ASSURED: u8 = 0x80;

/// Port candidates a new flow tries (SNAT address × port, from the worker's
/// cursor) before its backend counts as exhausted and an unassured flow to
/// it is reclaimed instead. Bounds a new flow's cost when a backend's ports
/// are nearly all taken (under a SYN flood, every new flow).
const PORT_TRIES: u32 = 256;

/// Unassured flows a new flow examines, oldest first, for one to the same
/// backend to reclaim when no port toward it is free.
const RECLAIM_SCAN: usize = 256;

/// A worker's unassured flows in the order they were created: (forward
/// slot, ticket) per entry. Entries go stale when their flow is assured or
/// removed (checked when they come up: the slot must still hold a flow with
/// that ticket). Fixed size (the flow capacity, at most 2^24 so a ticket
/// is never queued twice); when full, the oldest entry is dropped, and its
/// flow, if still unassured, just waits for its timeout.
struct Unassured {
    ring: Box<[(u32, u32)]>,
    head: usize,
    len: usize,
    next_ticket: u32,
}

/// Tickets are 24 bits (three bytes of [`FlowEntry::ticket`]).
const TICKET_MASK: u32 = (1 << 24) - 1;
/// A queued entry removed out of order.
const TOMBSTONE: u32 = u32::MAX;

impl Unassured {
    fn new(capacity: usize) -> Self {
        let n = capacity.clamp(16, 1 << 24).next_power_of_two().min(1 << 24);
        Self { ring: vec![(TOMBSTONE, 0); n].into_boxed_slice(), head: 0, len: 0, next_ticket: 0 }
    }

    /// Queues the flow in `slot`; returns its ticket.
    fn push(&mut self, slot: usize) -> [u8; 3] {
        let ticket = self.next_ticket;
        self.next_ticket = (ticket + 1) & TICKET_MASK;
        let mask = self.ring.len() - 1;
        if self.len == self.ring.len() {
            self.head = (self.head + 1) & mask;
            self.len -= 1;
        }
        self.ring[(self.head + self.len) & mask] = (slot as u32, ticket);
        self.len += 1;
        let [a, b, c, _] = ticket.to_le_bytes();
        [a, b, c]
    }

    /// Takes the oldest entry.
    fn pop(&mut self) -> Option<(u32, u32)> {
        if self.len == 0 {
            return None;
        }
        let e = self.ring[self.head];
        self.head = (self.head + 1) & (self.ring.len() - 1);
        self.len -= 1;
        Some(e)
    }

    /// The `i`-th oldest entry.
    fn get(&self, i: usize) -> Option<(u32, u32)> {
        (i < self.len).then(|| self.ring[(self.head + i) & (self.ring.len() - 1)])
    }

    /// Marks the `i`-th oldest entry removed.
    fn tombstone(&mut self, i: usize) {
        if i < self.len {
            let mask = self.ring.len() - 1;
            self.ring[(self.head + i) & mask] = (TOMBSTONE, 0);
        }
    }
}

fn ticket_of(e: &FlowMeta) -> u32 {
    u32::from_le_bytes([e.ticket[0], e.ticket[1], e.ticket[2], 0])
}
/// Entries of the per-worker next-hop cache (a power of two).
const HOP_CACHE: usize = 16 * 1024;

/// A worker's state for one address family: its flow table and what goes
/// with it.
struct FamilyState<F: NatFamily> {
    ct: FlowTable<F::Entry>,
    /// Per-Service-entry counters (of this family's half) of the
    /// generation `Worker::stats_table` holds.
    svc: Vec<ServiceCounter>,
    /// Where the SNAT port search goes on when the client's own port is
    /// taken toward the backend, as an index into this worker's (port ×
    /// address) tuples: it only moves forward, so such a port is reused
    /// toward the same backend as late as possible after its flow ended,
    /// and consecutive flows spread over the SNAT addresses.
    port_cursor: u32,
    /// Unassured flows, oldest first: what pressure reclaims.
    unassured: Unassured,
    /// The flow-table size at which the worker is under pressure.
    pressure_len: usize,
    affinity: Box<[AffinitySlot<F::Raw>]>,
    /// Direct-mapped cache of resolved next hops: (address, next-hop
    /// generation, hop). Spares new flows the route and neighbour lookup.
    hop_cache: Box<[(F::Raw, u32, u16)]>,
    /// Where the entry's key is not all in its first line
    /// (`Flow::BY_FRONT`, IPv6): every frontend address of every service
    /// entry of the table generation `Worker::stats_table` holds, entry by
    /// entry, each address once; built at each table swap. Empty otherwise.
    fronts: Vec<FrontRec<F::Raw>>,
    /// The index in `fronts` of each service entry's first frontend, and
    /// the number of records after the last.
    front_base: Vec<u32>,
}

impl<F: NatFamily> FamilyState<F> {
    /// `ct`: the table adopted from the state directory, if any.
    fn new(cfg: &NatConfig, capacity: usize, affinity_slots: usize, ct: Option<FlowTable<F::Entry>>) -> Self {
        let aff = affinity_slots.max(1).next_power_of_two();
        Self {
            ct: ct.unwrap_or_else(|| FlowTable::with_capacity_and_hasher(capacity, cfg.key_hasher())),
            svc: Vec::new(),
            port_cursor: 0,
            unassured: Unassured::new(capacity),
            pressure_len: capacity.saturating_mul(usize::from(cfg.pressure_percent.min(100))) / 100,
            affinity: vec![AffinitySlot::default(); aff].into_boxed_slice(),
            hop_cache: vec![(F::Raw::default(), u32::MAX, 0); HOP_CACHE].into_boxed_slice(),
            fronts: Vec::new(),
            front_base: Vec::new(),
        }
    }

    /// Rebuilds `fronts` and `front_base` for table `t` (a table swap),
    /// where the family's entries check their destination through them.
    fn build_fronts(&mut self, t: &ServiceTable) {
        if !<F::Entry as Flow>::BY_FRONT {
            return;
        }
        let half = t.family::<F>();
        let mut all: Vec<(u32, F::Raw)> = half.frontends().map(|(k, fe)| (fe.entry, F::Raw::of(k.addr))).collect();
        // A Service port's frontends share an address across protocols
        // (and NodePorts across ports of one entry): one record each.
        all.sort_unstable();
        all.dedup();
        self.fronts.clear();
        self.front_base.clear();
        let mut next = all.iter().peekable();
        for entry in 0..half.entries().len() as u32 {
            self.front_base.push(self.fronts.len() as u32);
            while let Some(&&(_, addr)) = next.peek().filter(|(e, _)| *e == entry) {
                self.fronts.push(FrontRec { addr, entry });
                next.next();
            }
        }
        self.front_base.push(self.fronts.len() as u32);
    }

    /// Prefetches the frontend record of the flow in `slot` (`NO_SLOT`:
    /// none), where the family uses them.
    #[inline(always)]
    fn prefetch_front(&self, slot: u32) {
        if <F::Entry as Flow>::BY_FRONT && slot != NO_SLOT {
            if let Some(r) = self.ct.entry(slot as usize).and_then(|e| self.fronts.get(usize::from(e.front))) {
                crate::xsk::prefetch(r);
            }
        }
    }

    /// The record of address `dst` of service entry `entry` in the current
    /// generation: [`NO_FRONT`] if there is none (or the family keeps
    /// none), or if it is beyond the first 65535 (the entry's key is then
    /// checked against its second line).
    fn front_of(&self, entry: u32, dst: F::Raw) -> u16 {
        if !<F::Entry as Flow>::BY_FRONT {
            return NO_FRONT;
        }
        let range = match (self.front_base.get(entry as usize), self.front_base.get(entry as usize + 1)) {
            (Some(&a), Some(&b)) => a as usize..b as usize,
            _ => 0..0,
        };
        let at = self.fronts.get(range.clone()).and_then(|fs| fs.iter().position(|f| f.addr == dst));
        at.map_or(NO_FRONT, |i| u16::try_from(range.start + i).unwrap_or(NO_FRONT))
    }

    /// Points a flow validated in the current generation (service entry
    /// `e.entry`, frontend address `dst`) at its frontend's record.
    fn bind_front(&self, e: &mut F::Entry, dst: F::Raw) {
        e.front = self.front_of(e.entry, dst);
    }
}

/// [`FlowMeta::snat`] for a flow whose new source is `snat`: its index
/// among the family's SNAT addresses `addrs`, [`SNAT_CLIENT`] for the
/// client's own, else one no translation resolves (the general path then
/// takes the flow's packets).
fn snat_index<R: PartialEq>(addrs: &[R], snat: &R, client: &R) -> u8 {
    match addrs.iter().position(|a| a == snat) {
        Some(i) if i < usize::from(SNAT_CLIENT) => i as u8,
        _ if snat == client => SNAT_CLIENT,
        _ => SNAT_CLIENT - 1,
    }
}

/// A worker's state per family.
struct Fams {
    v4: FamilyState<Ipv4Addr>,
    v6: FamilyState<Ipv6Addr>,
}

/// One worker's pipeline state. Create one per polling thread.
pub struct Worker {
    id: u16,
    shared: Arc<Shared>,
    /// Flow tables and what goes with them, per family.
    fams: Fams,
    counters: Counters,
    stats_table: ServiceTable,
    /// Counters folded from earlier generations. (ahash: its keys come from
    /// a random source the fuzz harness fixes, so that an input takes the
    /// same path on every run, which AFL's coverage feedback needs.)
    svc_totals: std::collections::HashMap<ServicePortId, ServiceCounter, ahash::RandomState>,
    /// Whether some Service of the current table is forwarded in dnat mode:
    /// then a frame that matches no flow and is not to an SNAT address may
    /// still be a reply (addressed to the client), looked up by its 5-tuple.
    dnat_active: bool,
    unresolved: [IpAddr; UNRESOLVED_RING],
    unresolved_len: usize,
    pre: [Pre; MAX_BATCH],
    /// The IPv6 frames of a large-table burst (`Pre::V6`): the first `n6`.
    pre6: [Pre6; MAX_BATCH],
    n6: usize,
    /// The new flows of a large-table burst, for their read-ahead (`ahead`).
    ahead: [Ahead; MAX_BATCH],
    /// The read-ahead's findings for the frame being decided (IPv4, large
    /// tables), which `new_flow` takes instead of looking up again; empty
    /// otherwise.
    hint: Ahead,
    /// Whether the fast path (see `fast`) takes the frames it can (always,
    /// except in tests comparing it with the general path).
    fast_path: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).field("flows", &self.flows()).finish()
    }
}

/// A frame that is neither family's common frame, parsed by the `wire`
/// wrappers, or its verdict.
enum Uncommon {
    V4(Parsed),
    V6(Parsed<u128>),
    Done(Verdict),
}

/// Parses a frame that is neither family's common frame (`fast`): IPv4,
/// else IPv6, through the `wire` wrappers.
#[inline(never)]
fn parse_uncommon(buf: &[u8], len: usize) -> Uncommon {
    match parse_general(buf, len) {
        Ok(p) => Uncommon::V4(p),
        Err(Verdict::Pass(PassReason::NotIp)) => {
            let frame = &buf[..len.min(buf.len())];
            match family::is_ipv6(frame).map(|l3| family::parse6(frame, l3)) {
                Some(Ok(p)) => Uncommon::V6(p),
                Some(Err(v)) => Uncommon::Done(v),
                None => Uncommon::Done(Verdict::Pass(PassReason::NotIp)),
            }
        }
        Err(v) => Uncommon::Done(v),
    }
}

/// What a resident flow is worth to a new flow that needs its slot:
/// expired (idle in both directions for longer than its protocol and state
/// allow), unassured, or live.
fn standing<F: NatFamily>(shared: &Shared, e: &F::Entry, now: u32, pressure: bool) -> Standing {
    let (rlast, rflags) = F::reverse(shared).reply_state(e.rev_slot);
    let idle = now.wrapping_sub(e.last_seen).min(now.wrapping_sub(rlast));
    let assured = is_assured(e.proto(), e.state, rflags);
    if idle > timeout_of(&shared.config.timeouts, e.proto(), e.state, rflags, assured, pressure) {
        Standing::Expired
    } else if assured {
        Standing::Live
    } else {
        Standing::Unassured
    }
}

/// True when a flow has expired (see [`standing`]).
fn flow_expired<F: NatFamily>(shared: &Shared, e: &F::Entry, now: u32, pressure: bool) -> bool {
    standing::<F>(shared, e, now, pressure) == Standing::Expired
}

/// Whether a flow is assured (see [`ASSURED`]): TCP by its own state bit,
/// UDP by a reply.
#[inline(always)]
fn is_assured(proto: u8, fwd_state: u8, rev_flags: u8) -> bool {
    if proto == IPPROTO_UDP {
        rev_flags & rflags::REPLIED != 0
    } else {
        fwd_state & ASSURED != 0
    }
}

/// The idle timeout of a flow in this protocol and state.
fn timeout_of(to: &Timeouts, proto: u8, fwd_state: u8, rev_flags: u8, assured: bool, pressure: bool) -> u32 {
    if proto == IPPROTO_UDP {
        return if rev_flags & rflags::REPLIED != 0 { to.udp_replied_ms } else { to.udp_ms };
    }
    if (fwd_state & tcpf::RST) | (rev_flags & rflags::RST) != 0 {
        to.tcp_rst_ms
    } else if (fwd_state & tcpf::FIN) | (rev_flags & rflags::FIN) != 0 {
        to.tcp_closing_ms
    } else if !assured {
        if pressure {
            to.tcp_syn_pressure_ms.min(to.tcp_syn_ms)
        } else {
            to.tcp_syn_ms
        }
    } else {
        to.tcp_established_ms
    }
}

/// The TCP state bits a client's segment adds to its flow: FIN, SYN and
/// RST as seen, and [`ASSURED`] for an ACK without SYN once the backend
/// has answered (`rev_flags`), i.e. the handshake's last step.
#[inline(always)]
fn client_state(tcp_flags: u8, rev_flags: u8) -> u8 {
    let mut st = tcp_flags & (tcpf::FIN | tcpf::RST | tcpf::SYN);
    if tcp_flags & (tcpf::ACK | tcpf::SYN) == tcpf::ACK && rev_flags & rflags::REPLIED != 0 {
        st |= ASSURED;
    }
    st
}

/// The port a new flow from `client_port` tries first in a worker's slice
/// `ports` (on the first SNAT address): the client's own, folded into the
/// slice when outside it (see `Worker::enter_reply`).
#[inline(always)]
fn first_port_candidate(ports: std::ops::RangeInclusive<u16>, client_port: u16) -> u16 {
    let span = u32::from(*ports.end() - *ports.start()) + 1;
    *ports.start() + (u32::from(client_port.wrapping_sub(*ports.start())) % span) as u16
}

fn active_backend<F: NatFamily>(svc: &ServiceEntry<F>, addr: F::Raw, port: u16) -> bool {
    svc.find_backend(F::addr(addr), port).is_some_and(|i| {
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
    /// With a state directory ([`Shared::open`]) its flow tables are the
    /// ones mapped from there for worker `id`.
    pub fn new(id: u16, shared: Arc<Shared>) -> Self {
        let cfg = &shared.config;
        let (ct4, ct6) = shared.adopted.lock().get_mut(usize::from(id)).and_then(Option::take).unzip();
        Self {
            id,
            fams: Fams {
                v4: FamilyState::new(cfg, cfg.conntrack_capacity, cfg.affinity_slots, ct4),
                // No more IPv6 affinity records than IPv6 flows.
                v6: FamilyState::new(cfg, cfg.capacity6(), cfg.affinity_slots.min(cfg.capacity6()), ct6),
            },
            counters: Counters {
                ports_exhausted: vec![0; cfg.snat_addrs.len()],
                ports_exhausted6: vec![0; cfg.snat_addrs6.len()],
                ..Counters::default()
            },
            stats_table: ServiceTable::empty(),
            svc_totals: Default::default(),
            dnat_active: cfg.mode == ForwardingMode::Dnat,
            unresolved: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); UNRESOLVED_RING],
            unresolved_len: 0,
            pre: [Pre::Done(Verdict::Drop(DropReason::Malformed)); MAX_BATCH],
            pre6: [Pre6::EMPTY; MAX_BATCH],
            n6: 0,
            ahead: [Ahead::EMPTY; MAX_BATCH],
            hint: Ahead::EMPTY,
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

    /// Flows currently tracked by this worker (both families).
    pub fn flows(&self) -> usize {
        self.fams.v4.ct.len() + self.fams.v6.ct.len()
    }

    /// IPv6 flows currently tracked by this worker.
    pub fn flows6(&self) -> usize {
        self.fams.v6.ct.len()
    }

    /// Buckets of the IPv4 flow table, the unit of [`Self::maintain`]'s
    /// sweep (which walks the IPv6 table in proportion).
    pub fn flow_buckets(&self) -> usize {
        self.fams.v4.ct.buckets()
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Per-Service packet and byte counts so far (client to backend), by
    /// Service port.
    pub fn service_counters(&self) -> Vec<(ServicePortId, ServiceCounter)> {
        let mut all = self.svc_totals.clone();
        let v4 = self.stats_table.v4().entries().iter().map(|e| &e.id).zip(&self.fams.v4.svc);
        let v6 = self.stats_table.v6().entries().iter().map(|e| &e.id).zip(&self.fams.v6.svc);
        for (id, c) in v4.chain(v6) {
            let t = all.entry(id.clone()).or_default();
            t.packets += c.packets;
            t.bytes += c.bytes;
        }
        all.into_iter().collect()
    }

    /// Neighbours whose MAC a frame needed and did not find (the caller asks
    /// the kernel to resolve them), of either family; drains the list.
    pub fn take_unresolved(&mut self) -> impl Iterator<Item = IpAddr> + '_ {
        let n = std::mem::take(&mut self.unresolved_len);
        self.unresolved[..n].iter().copied()
    }

    fn note_unresolved(&mut self, via: IpAddr) {
        if !self.unresolved[..self.unresolved_len].contains(&via) && self.unresolved_len < UNRESOLVED_RING {
            self.unresolved[self.unresolved_len] = via;
            self.unresolved_len += 1;
        }
    }

    /// Called at a batch boundary: on a new table generation, folds the
    /// per-Service counters of the old one and sizes them for the new one.
    /// (Allocates, but only once per table swap.)
    fn sync(&mut self, t: &ServiceTable) {
        if t.generation() == self.stats_table.generation()
            && self.fams.v4.svc.len() == t.v4().entries().len()
            && self.fams.v6.svc.len() == t.v6().entries().len()
        {
            return;
        }
        let old = &self.stats_table;
        let v4 = old.v4().entries().iter().map(|e| &e.id).zip(&self.fams.v4.svc);
        let v6 = old.v6().entries().iter().map(|e| &e.id).zip(&self.fams.v6.svc);
        for (id, c) in v4.chain(v6) {
            if c.packets > 0 {
                let t = self.svc_totals.entry(id.clone()).or_default();
                t.packets += c.packets;
                t.bytes += c.bytes;
            }
        }
        for (svc, n) in
            [(&mut self.fams.v4.svc, t.v4().entries().len()), (&mut self.fams.v6.svc, t.v6().entries().len())]
        {
            svc.clear();
            svc.resize(n, ServiceCounter::default());
        }
        self.fams.v4.build_fronts(t);
        self.fams.v6.build_fronts(t);
        self.stats_table = t.clone();
        let mode = self.shared.config.mode;
        let dnat = |f: Option<ForwardingMode>| f.unwrap_or(mode) == ForwardingMode::Dnat;
        self.dnat_active =
            t.v4().entries().iter().any(|e| dnat(e.forwarding)) || t.v6().entries().iter().any(|e| dnat(e.forwarding));
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
        if self.fams.v4.ct.slots() <= CACHE_RESIDENT_SLOTS {
            // The whole flow table fits in the core's caches: reading ahead
            // buys nothing (measured: 7.9x the baseline in one pass against
            // 9.0x with a separate lookup pass), so each frame goes through
            // in one pass.
            let gens = (t.generation() as u32, hops.generation());
            let mut tally = fast::Tally::default();
            let mut i = 0;
            while i < frames.len() {
                // The fast path takes frames until one needs the general
                // path: IPv4's run first, and where it meets a frame that
                // is not IPv4's common frame, IPv6's from there.
                let (at, v) = match self.fast_run::<Ipv4Addr>(hops, gens, &mut frames[i..], now, &mut tally) {
                    fast::Stop::Done => break,
                    fast::Stop::Decide { at, slot } => {
                        (at, self.decide_stopped::<Ipv4Addr>(t, hops, &mut frames[i + at], slot, now))
                    }
                    fast::Stop::Uncommon { at } => {
                        i += at;
                        match self.fast_run::<Ipv6Addr>(hops, gens, &mut frames[i..], now, &mut tally) {
                            fast::Stop::Done => break,
                            // An IPv4 frame again: IPv4's run takes it.
                            fast::Stop::Uncommon { at } if at > 0 => {
                                i += at;
                                continue;
                            }
                            fast::Stop::Uncommon { .. } => (0, self.decide_general(t, hops, &mut frames[i], now)),
                            fast::Stop::Decide { at, slot } => {
                                (at, self.decide_stopped::<Ipv6Addr>(t, hops, &mut frames[i + at], slot, now))
                            }
                        }
                    }
                };
                self.finish(&mut frames[i + at], v);
                i += at + 1;
            }
            self.add_tally(&tally);
            return;
        }
        let n = frames.len();
        // Pass 1: parse, hash, prefetch each frame's bucket. Each family's
        // common frame by its fixed offsets first (IPv4's, then IPv6's,
        // written in place), anything else through the `wire` wrappers.
        let (ct, ct6) = (&self.fams.v4.ct, &self.fams.v6.ct);
        let v4 = |p: Parsed| {
            let probe = ct.probe(&p.key);
            ct.prefetch_bucket(&probe);
            Pre::Parsed(p, probe, NO_SLOT)
        };
        let mut n6 = 0;
        for (f, pre) in frames.iter().zip(self.pre.iter_mut()) {
            if let Some(c) = fast::parse_common(f.buf, f.len) {
                *pre = v4(c.parsed());
                continue;
            }
            // Not with bursts of at most MAX_BATCH frames.
            let Some(e) = self.pre6.get_mut(n6) else {
                *pre = Pre::Done(Verdict::Drop(DropReason::Malformed));
                continue;
            };
            if let Some(c) = fast::parse_common6(f.buf, f.len) {
                (e.c, e.l3, e.l4) = (c, fast::L3 as u16, fast::L4_6 as u16);
            } else {
                match parse_uncommon(f.buf, f.len) {
                    Uncommon::V4(p) => {
                        *pre = v4(p);
                        continue;
                    }
                    Uncommon::V6(p) => {
                        (e.c, e.l3, e.l4) = (fast::Common::view(&p), p.l3, p.l4);
                    }
                    Uncommon::Done(v) => {
                        *pre = Pre::Done(v);
                        continue;
                    }
                }
            }
            e.probe = ct6.probe_words(&e.c.w);
            ct6.prefetch_bucket(&e.probe);
            e.candidate = NO_SLOT;
            *pre = Pre::V6(n6 as u8);
            n6 += 1;
        }
        self.n6 = n6;
        // Pass 2: match signatures, prefetch the candidate entries.
        for pre in self.pre[..n].iter_mut() {
            if let Pre::Parsed(_, probe, candidate) = pre {
                *candidate = ct.prefetch_candidate(probe).map_or(NO_SLOT, |s| s as u32);
            }
        }
        for e in &mut self.pre6[..self.n6] {
            e.candidate = ct6.prefetch_candidate(&e.probe).map_or(NO_SLOT, |s| s as u32);
        }
        // Pass 2b: read ahead for the new flows (`ahead`).
        self.read_ahead_new(t, n);
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

    /// One frame through the general path: parsed by the `wire` wrappers
    /// (IPv4, else IPv6), looked up, decided (not yet finished).
    #[inline]
    fn decide_general(&mut self, t: &ServiceTable, hops: &NextHops, f: &mut Frame<'_>, now: u32) -> Verdict {
        match parse_general(f.buf, f.len) {
            Ok(p) => self.lookup_and_decide::<Ipv4Addr>(t, hops, f, &p, now),
            Err(Verdict::Pass(PassReason::NotIp)) => self.decide_other(t, hops, f, now),
            Err(v) => v,
        }
    }

    /// A frame that is not IPv4: IPv6 through the same decisions, anything
    /// else to the kernel.
    #[cold]
    fn decide_other(&mut self, t: &ServiceTable, hops: &NextHops, f: &mut Frame<'_>, now: u32) -> Verdict {
        let frame = &f.buf[..f.len.min(f.buf.len())];
        let Some(l3) = family::is_ipv6(frame) else {
            return Verdict::Pass(PassReason::NotIp);
        };
        match family::parse6(frame, l3) {
            Ok(p) => self.lookup_and_decide::<Ipv6Addr>(t, hops, f, &p, now),
            Err(v) => v,
        }
    }

    /// Looks a parsed frame up in its family's flow table and decides it.
    #[inline(always)]
    fn lookup_and_decide<F: NatFamily>(
        &mut self,
        t: &ServiceTable,
        hops: &NextHops,
        f: &mut Frame<'_>,
        p: &Parsed<F::Raw>,
        now: u32,
    ) -> Verdict {
        let ct = &F::state(&self.fams).ct;
        let probe = ct.probe(&p.key);
        let slot = ct.find(&p.key, &probe);
        self.decide::<F>(t, hops, f, p, &probe, slot, now)
    }

    /// The last pass of a burst: decide and rewrite each frame from what
    /// the earlier passes found.
    #[inline(always)]
    fn decide_all(&mut self, t: &ServiceTable, hops: &NextHops, frames: &mut [Frame<'_>], now: u32) {
        let gens = (t.generation() as u32, hops.generation());
        let mut tally = fast::Tally::default();
        // An IPv6 key's destination is checked against its frontend's
        // record, which the entry names (`FlowEntry6`): prefetched
        // `FRONT_AHEAD` IPv6 frames ahead of their decision, when the
        // entry's line (prefetched in pass 2) is in and the record has time
        // to come.
        for e in &self.pre6[..self.n6.min(FRONT_AHEAD)] {
            self.fams.v6.prefetch_front(e.candidate);
        }
        for (i, f) in frames.iter_mut().enumerate() {
            let v = match self.pre[i] {
                Pre::Done(v) => v,
                Pre::V6(k) => {
                    if let Some(ahead) = self.pre6[..self.n6].get(usize::from(k) + FRONT_AHEAD) {
                        self.fams.v6.prefetch_front(ahead.candidate);
                    }
                    // By reference (the fast path borrows only the tables
                    // beside it): a copy of the 72 bytes cost ten
                    // instructions per frame.
                    let Some(e) = self.pre6.get(usize::from(k)) else { continue };
                    let candidate = (e.candidate != NO_SLOT).then_some(e.candidate as usize);
                    let v6 = &self.fams.v6;
                    let slot = v6.ct.check_words(&e.c.w, &e.probe, candidate, &v6.fronts, gens.0);
                    if let Some(c) = e.common() {
                        let fams = &mut self.fams;
                        if let Some(port) =
                            Self::fast_forward(fams, &self.shared, hops, gens, f, c, slot, now, &mut tally)
                        {
                            f.verdict = Verdict::Forward { port };
                            continue;
                        }
                    }
                    let (p, probe) = (e.parsed(), e.probe);
                    self.decide::<Ipv6Addr>(t, hops, f, &p, &probe, slot, now)
                }
                Pre::Parsed(p, probe, candidate) => {
                    let candidate = (candidate != NO_SLOT).then_some(candidate as usize);
                    let slot = self.fams.v4.ct.check(&p.key, &probe, candidate);
                    if let Some(c) = fast::Common::<Ipv4Addr>::of(&p) {
                        if let Some(port) =
                            Self::fast_forward(&mut self.fams, &self.shared, hops, gens, f, &c, slot, now, &mut tally)
                        {
                            f.verdict = Verdict::Forward { port };
                            continue;
                        }
                    }
                    // What the read-ahead found for a new flow, for
                    // `new_flow` (cleared after: only this frame's).
                    self.hint = self.ahead[i];
                    let v = self.decide::<Ipv4Addr>(t, hops, f, &p, &probe, slot, now);
                    self.hint = Ahead::EMPTY;
                    v
                }
            };
            self.finish(f, v);
        }
        self.add_tally(&tally);
    }

    /// Decides the frame `fast::run` of family `F` stopped at
    /// (`Stop::Decide`): a common frame of `F` whose flow, if tracked, is in
    /// `slot`. Parsed and hashed again here, which is cheaper than the run
    /// keeping its parse and probe alive through every frame it forwards.
    #[inline(never)]
    fn decide_stopped<F: fast::FastFamily>(
        &mut self,
        t: &ServiceTable,
        hops: &NextHops,
        f: &mut Frame<'_>,
        slot: Option<usize>,
        now: u32,
    ) -> Verdict {
        match F::parse_common(f.buf, f.len) {
            Some(c) => {
                let probe = F::state(&self.fams).ct.probe_words(&c.w);
                self.decide::<F>(t, hops, f, &c.parsed(), &probe, slot, now)
            }
            // Not after the run has parsed it; the general path if it were.
            None => self.decide_general(t, hops, f, now),
        }
    }

    /// The fast path's run over `frames` in family `F`'s tables (see
    /// `fast::run`).
    #[inline(always)]
    fn fast_run<F: fast::FastFamily>(
        &mut self,
        hops: &NextHops,
        gens: (u32, u32),
        frames: &mut [Frame<'_>],
        now: u32,
        tally: &mut fast::Tally,
    ) -> fast::Stop {
        let rev = F::reverse(&self.shared);
        let dnat = self.dnat_active;
        let st = F::state_mut(&mut self.fams);
        fast::run::<F>(&mut st.ct.fast(), &mut st.svc, rev, dnat, hops, gens, frames, now, tally)
    }

    /// The established-flow fast path (see `fast`): `Some(port)` when it
    /// forwarded the frame, counted in `tally`; `None` when nothing was done
    /// and the frame goes to `decide`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn fast_forward<F: fast::FastFamily>(
        fams: &mut Fams,
        shared: &Shared,
        hops: &NextHops,
        gens: (u32, u32),
        f: &mut Frame<'_>,
        c: &fast::Common<F>,
        slot: Option<usize>,
        now: u32,
        tally: &mut fast::Tally,
    ) -> Option<u16> {
        let rev = F::reverse(shared);
        let st = F::state_mut(fams);
        let fronts = Some(&st.fronts[..]);
        let (port, entry) = fast::forward_established(&mut st.ct.fast(), fronts, rev, hops, gens, f, c, slot?, now)?;
        fast::count(&mut st.svc, entry, f.len);
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
    fn decide<F: NatFamily>(
        &mut self,
        t: &ServiceTable,
        hops: &NextHops,
        f: &mut Frame<'_>,
        p: &Parsed<F::Raw>,
        probe: &Probe,
        slot: Option<usize>,
        now: u32,
    ) -> Verdict {
        if F::FAMILY == IpFamily::V4 && p.l4() - p.l3() > 20 {
            self.counters.ip_options += 1;
        }
        if let Some(slot) = slot {
            if let Some(v) = self.established::<F>(t, hops, f, p, slot, now) {
                return v;
            }
        }
        let rev = F::reverse(&self.shared);
        if rev.is_snat(p.key.dst, p.key.dport) {
            return match rev.find(&p.key) {
                Some((idx, fl)) => self.reply::<F>(hops, f, p, idx, &fl, now),
                None => Verdict::Pass(PassReason::SnatNoFlow),
            };
        }
        if self.dnat_active {
            // A reply of a dnat-mode flow is addressed to the client itself.
            if let Some((idx, fl)) = rev.find(&p.key) {
                return self.reply::<F>(hops, f, p, idx, &fl, now);
            }
        }
        self.new_flow::<F>(t, hops, f, p, probe, now)
    }

    /// Removes a flow from both directions.
    fn forget<F: NatFamily>(&mut self, slot: usize) {
        let ct = &mut F::state_mut(&mut self.fams).ct;
        let Some(rev_slot) = ct.entry(slot).filter(|e| e.is_used()).map(|e| e.rev_slot) else { return };
        ct.clear(slot);
        F::reverse(&self.shared).remove(rev_slot);
    }

    /// Frees the reverse slot, and with it the SNAT port toward the
    /// backend, of a flow that left the table.
    fn release<F: NatFamily>(&mut self, old: &F::Entry) {
        F::reverse(&self.shared).remove(old.rev_slot);
    }

    /// True when the family's flow table holds its pressure share of the capacity.
    #[inline(always)]
    fn under_pressure<F: NatFamily>(&self) -> bool {
        let st = F::state(&self.fams);
        st.ct.len() >= st.pressure_len
    }

    /// The reply key of a flow from `(snat, snat_port)` to `(backend, backend_port)`.
    #[inline(always)]
    fn reply_key<R>(snat: R, snat_port: u16, backend: R, backend_port: u16, proto: u8) -> FlowKey<R> {
        FlowKey { src: backend, dst: snat, sport: backend_port, dport: snat_port, proto }
    }

    /// The queued unassured flow `(slot, ticket)`, if it is still in its
    /// slot and still unassured.
    fn still_unassured<F: NatFamily>(&self, (slot, ticket): (u32, u32), now: u32) -> Option<&F::Entry> {
        let e = F::state(&self.fams).ct.entry(slot as usize).filter(|e| e.is_used() && ticket_of(e) == ticket)?;
        (standing::<F>(&self.shared, e, now, true) != Standing::Live).then_some(e)
    }

    /// Under pressure, before a new flow is entered: reclaims up to `n` of
    /// the oldest unassured IPv4 flows (looking at no more than `4 * n`
    /// queued entries, so a queue full of stale entries costs a bounded
    /// amount per new flow). Returns how many were reclaimed.
    pub fn reclaim(&mut self, n: usize, now: u32) -> usize {
        self.reclaim_in::<Ipv4Addr>(n, now)
    }

    /// [`Self::reclaim`] in family `F`.
    fn reclaim_in<F: NatFamily>(&mut self, n: usize, now: u32) -> usize {
        let mut done = 0;
        for _ in 0..4 * n {
            if done == n {
                break;
            }
            let Some(q) = F::state_mut(&mut self.fams).unassured.pop() else { break };
            if self.still_unassured::<F>(q, now).is_some() {
                self.forget::<F>(q.0 as usize);
                self.counters.reclaimed += 1;
                done += 1;
            }
        }
        done
    }

    /// No port is free toward `(backend, backend_port)`: reclaims the oldest
    /// unassured flow to that backend among the [`RECLAIM_SCAN`] oldest
    /// queued, and returns its SNAT address and port, now free toward it.
    fn reclaim_toward<F: NatFamily>(
        &mut self,
        proto: u8,
        backend: F::Raw,
        backend_port: u16,
        now: u32,
    ) -> Option<(F::Raw, u16)> {
        for i in 0..RECLAIM_SCAN {
            let q = F::state(&self.fams).unassured.get(i)?;
            if q.0 == TOMBSTONE {
                continue;
            }
            let Some(&e) = self.still_unassured::<F>(q, now) else { continue };
            if e.backend_addr() == backend && e.backend_port == backend_port && e.proto() == proto {
                F::state_mut(&mut self.fams).unassured.tombstone(i);
                self.forget::<F>(q.0 as usize);
                self.counters.reclaimed += 1;
                return Some((e.snat_addr(), e.snat_port));
            }
        }
        None
    }

    /// Expires idle flows in the next `buckets` buckets of the IPv4 table
    /// (and a share of the IPv6 table in proportion to its size); call on
    /// idle polls. Returns how many were removed.
    pub fn maintain(&mut self, now_ms: u32, buckets: usize) -> usize {
        let v4 = self.fams.v4.ct.buckets().max(1);
        let share6 = (buckets.saturating_mul(self.fams.v6.ct.buckets()) / v4).max(1);
        let total = self.maintain_in::<Ipv4Addr>(now_ms, buckets) + self.maintain_in::<Ipv6Addr>(now_ms, share6);
        self.counters.expired += total as u64;
        total
    }

    /// [`Self::maintain`] in family `F`: how many were removed.
    fn maintain_in<F: NatFamily>(&mut self, now_ms: u32, buckets: usize) -> usize {
        let mut gone = [F::Entry::default(); 64];
        let mut total = 0;
        let mut left = buckets;
        let pressure = self.under_pressure::<F>();
        while left > 0 {
            let step = left.min(8);
            left -= step;
            let mut n = 0;
            let shared = &self.shared;
            let removed = F::state_mut(&mut self.fams).ct.sweep(
                step,
                |e| flow_expired::<F>(shared, e, now_ms, pressure),
                |_, e| {
                    // 8 buckets of 8 slots: never more than 64.
                    if n < gone.len() {
                        gone[n] = *e;
                        n += 1;
                    }
                },
            );
            for e in &gone[..n] {
                self.release::<F>(e);
            }
            total += removed;
        }
        total
    }

    /// Resolves the next hop toward `dst` (through the worker's cache),
    /// noting unresolved neighbours.
    fn hop_to<F: NatFamily>(&mut self, hops: &NextHops, dst: F::Raw) -> Result<u16, Verdict> {
        let i = (client_hash(F::fold32(dst)) as usize) & (HOP_CACHE - 1);
        let (ip, gen, hop) = F::state(&self.fams).hop_cache[i];
        if ip == dst && gen == hops.generation() {
            return Ok(hop);
        }
        match F::resolve(hops, F::addr(dst)) {
            Resolution::Hop(h) => {
                F::state_mut(&mut self.fams).hop_cache[i] = (dst, hops.generation(), h);
                Ok(h)
            }
            Resolution::Unresolved { via, .. } => {
                self.note_unresolved(via.into());
                Err(match F::FAMILY {
                    IpFamily::V4 => Verdict::Pass(PassReason::UnknownNextHop),
                    IpFamily::V6 => Verdict::Drop(DropReason::UnknownNextHop6),
                })
            }
            Resolution::NoRoute => Err(Verdict::Drop(DropReason::NoRoute)),
        }
    }

    /// TTL expiry: ICMP time exceeded from the ingress port's address, or a
    /// counted drop when the port has none.
    fn time_exceeded<F: NatFamily>(&self, hops: &NextHops, f: &mut Frame<'_>, p: &Parsed<F::Raw>) -> Verdict {
        let Some(src) = F::port_addr(hops, f.in_port) else {
            return Verdict::Drop(DropReason::TtlExpired);
        };
        match F::build_icmp_error(f.buf, p, IcmpError::TimeExceeded, src) {
            Some(len) => Verdict::Reply { len: len as u16 },
            None => Verdict::Drop(DropReason::NoRoomForReply),
        }
    }

    /// A reject like kube-proxy's: TCP RST, or ICMP port unreachable from the
    /// frontend address for UDP.
    fn reject<F: NatFamily>(f: &mut Frame<'_>, p: &Parsed<F::Raw>) -> Verdict {
        let len = if p.key.proto == IPPROTO_TCP {
            F::build_rst(f.buf, p)
        } else {
            F::build_icmp_error(f.buf, p, IcmpError::PortUnreachable, F::addr(p.key.dst))
        };
        match len {
            Some(len) => Verdict::Reply { len: len as u16 },
            None => Verdict::Drop(DropReason::NoRoomForReply),
        }
    }

    /// A packet of a tracked flow. `None` when the flow is gone and the frame
    /// should be handled as a new one.
    #[inline(always)]
    fn established<F: NatFamily>(
        &mut self,
        t: &ServiceTable,
        hops: &NextHops,
        f: &mut Frame<'_>,
        p: &Parsed<F::Raw>,
        slot: usize,
        now: u32,
    ) -> Option<Verdict> {
        let gens = (t.generation() as u32, hops.generation());
        let e = F::state(&self.fams).ct.entry(slot)?;
        let is_tcp = p.key.proto == IPPROTO_TCP;
        // A fresh SYN on a closed or closing flow starts a new connection.
        if is_tcp && p.tcp_flags & (tcpf::SYN | tcpf::ACK) == tcpf::SYN && e.state & (tcpf::FIN | tcpf::RST) != 0 {
            self.forget::<F>(slot);
            return None;
        }
        if !e.is_current(gens) {
            if let Some(v) = self.revalidate::<F>(t, hops, f, p, slot, now) {
                return Some(v);
            }
            // Revalidation may have forgotten the flow (its frontend or its
            // UDP backends gone): the frame is then a new one, not a packet
            // of the zeroed slot.
            if !F::state(&self.fams).ct.entry(slot).is_some_and(|e| e.is_used()) {
                return None;
            }
        }
        if p.ttl <= 1 {
            return Some(self.time_exceeded::<F>(hops, f, p));
        }
        let rev = F::reverse(&self.shared);
        let st = F::state_mut(&mut self.fams);
        let e = st.ct.entry_mut(slot)?;
        let rev_flags = if is_tcp && e.state & ASSURED == 0 { rev.reply_state(e.rev_slot).1 } else { 0 };
        e.last_seen = now;
        if is_tcp {
            e.state |= client_state(p.tcp_flags, rev_flags);
        }
        let e = &*e;
        let hop = hops.hop(e.hop)?;
        let (src, dst) = (e.snat_addr(), e.backend_addr());
        if !F::rewrite(f.buf, p, src, dst, e.snat_port, e.backend_port, e.ip_delta, e.l4_delta, hop) {
            return Some(Verdict::Drop(DropReason::Malformed));
        }
        let port = hop.port;
        if let Some(c) = st.svc.get_mut(e.entry as usize) {
            c.packets += 1;
            c.bytes += f.len as u64;
        }
        Some(Verdict::Forward { port })
    }

    /// After a table or next-hop swap: finds the flow's backend in the new
    /// table. Returns a verdict when the flow cannot continue as it was.
    #[cold]
    fn revalidate<F: NatFamily>(
        &mut self,
        t: &ServiceTable,
        hops: &NextHops,
        f: &mut Frame<'_>,
        p: &Parsed<F::Raw>,
        slot: usize,
        now: u32,
    ) -> Option<Verdict> {
        let e = *F::state(&self.fams).ct.entry(slot)?;
        if t.generation() == 0 && e.table_gen == restart::STALE_GEN {
            // Adopted from an earlier process, and no table yet (generation
            // 0 is the empty table before the first publication): keep the
            // flow until there is one to revalidate it in.
            return Some(Verdict::Drop(DropReason::NotSynced));
        }
        let proto = Protocol::from_number(p.key.proto)?;
        let half = t.family::<F>();
        let found = half
            .frontend(F::addr(p.key.dst), proto, p.key.dport)
            .and_then(|fe| half.entry(fe.entry).map(|svc| (fe.entry, svc)));
        let mut e2 = e;
        match found {
            Some((idx, svc)) => match svc.find_backend(F::addr(e.backend_addr()), e.backend_port) {
                Some(b) => {
                    e2.entry = idx;
                    e2.backend = b;
                }
                None if p.key.proto == IPPROTO_UDP && svc.active != ActiveSet::Empty => {
                    // UDP has no stream to break: move the flow to a live
                    // backend, with an SNAT port free toward it.
                    let hash = F::flow_hash(&p.key);
                    let b = self.pick_backend::<F>(svc, &p.key, hash, now)?;
                    let backend = svc.backends[usize::from(b)];
                    let baddr = F::Raw::of(backend.addr);
                    // The flow's own SNAT port if it is free toward the new
                    // backend (in dnat mode, else the client's own), else another.
                    let dnat = svc.forwarding.unwrap_or(self.shared.config.mode) == ForwardingMode::Dnat;
                    let own = [(e.snat_addr(), e.snat_port), (p.key.src, p.key.sport)];
                    let keep = if dnat { &own[..] } else { &own[..1] };
                    let back = RevFlow::of(&p.key);
                    let entered =
                        self.enter_reply::<F>(p.key.proto, baddr, backend.port, &back, keep, p.key.sport, dnat, now);
                    let (rev_slot, snat, sport) = match entered {
                        Ok(entered) => entered,
                        Err(why) => {
                            self.forget::<F>(slot);
                            return Some(Verdict::Drop(why));
                        }
                    };
                    F::reverse(&self.shared).remove(e.rev_slot);
                    let (ip_d, l4_d) = F::deltas(&p.key, snat, baddr, sport, backend.port);
                    e2.set_addrs(snat, baddr);
                    *e2 = FlowMeta {
                        snat: snat_index(F::reverse(&self.shared).addrs(), &snat, &p.key.src),
                        snat_port: sport,
                        backend_port: backend.port,
                        backend: b,
                        entry: idx,
                        ip_delta: ip_d,
                        l4_delta: l4_d,
                        rev_slot,
                        hop_gen: hops.generation().wrapping_add(1), // force re-resolution below
                        ..*e
                    };
                }
                None if p.key.proto == IPPROTO_TCP => {
                    // Never move a TCP stream silently: tell the client.
                    self.forget::<F>(slot);
                    return Some(match F::build_rst(f.buf, p) {
                        Some(len) => {
                            // Counted as a reply (the RST) and as a backend-gone event.
                            self.counters.drop[DropReason::BackendGone as usize] += 1;
                            Verdict::Reply { len: len as u16 }
                        }
                        None => Verdict::Drop(DropReason::BackendGone),
                    });
                }
                None => {
                    self.forget::<F>(slot);
                    return None;
                }
            },
            None => {
                // The frontend is gone: forget the flow; the frame is then
                // handled as new (and passed to the kernel).
                self.forget::<F>(slot);
                return None;
            }
        }
        e2.table_gen = t.generation() as u32;
        F::state(&self.fams).bind_front(&mut e2, p.key.dst);
        if e2.hop_gen != hops.generation() {
            match self.hop_to::<F>(hops, e2.backend_addr()) {
                Ok(h) => {
                    e2.hop = h;
                    e2.hop_gen = hops.generation();
                }
                Err(v) => {
                    *F::state_mut(&mut self.fams).ct.entry_mut(slot)? = e2;
                    return Some(v);
                }
            }
        }
        *F::state_mut(&mut self.fams).ct.entry_mut(slot)? = e2;
        None
    }

    /// Chooses a backend for a new flow: ClientIP affinity if set, else Maglev
    /// over the 5-tuple hash.
    /// `hash` is the flow's [`flow_hash`].
    fn pick_backend<F: NatFamily>(
        &mut self,
        svc: &ServiceEntry<F>,
        k: &FlowKey<F::Raw>,
        hash: u32,
        now: u32,
    ) -> Option<u16> {
        let Some(timeout_s) = svc.affinity_timeout_secs else {
            return svc.maglev.pick(hash);
        };
        let sid = svc.id_hash;
        let affinity = &mut F::state_mut(&mut self.fams).affinity;
        let mask = affinity.len() - 1;
        let i = (client_hash(F::fold32(k.src) ^ sid) as usize) & mask;
        let slot = affinity[i];
        let timeout_ms = timeout_s.saturating_mul(1000);
        if slot.client == k.src
            && slot.service == sid
            && now.wrapping_sub(slot.last_seen) <= timeout_ms
            && active_backend::<F>(svc, slot.backend_addr, slot.backend_port)
        {
            affinity[i].last_seen = now;
            return svc.find_backend(F::addr(slot.backend_addr), slot.backend_port);
        }
        // Deterministic by client address, so every worker and every gateway
        // starts from the same choice.
        let b = svc.maglev.pick(client_hash(F::fold32(k.src)))?;
        let be = &svc.backends[usize::from(b)];
        affinity[i] = AffinitySlot {
            client: k.src,
            service: sid,
            backend_addr: F::Raw::of(be.addr),
            backend_port: be.port,
            last_seen: now,
        };
        Some(b)
    }

    /// Takes an SNAT address and port for a flow to `(backend, backend_port)`
    /// and enters its reply key, translating back to `back`: `keep` (the
    /// flow's own address and port, when it has one worth keeping) if its
    /// key is free, else one of this worker's slice: first the client's own
    /// port (`client_port`, folded into the slice when outside it), as
    /// Linux's NAT keeps a source port that is free, then candidates from
    /// the worker's cursor on (at most [`PORT_TRIES`] in all), the first
    /// whose key is free and fits in the reverse table;
    /// failing that, the address and port of the oldest unassured flow to
    /// that backend, reclaimed ([`Self::reclaim_toward`]). Only this worker
    /// allocates from its slice, so a key found free stays free until this
    /// worker enters it. Returns the reverse slot, the address and the port.
    ///
    /// In dnat mode the "SNAT address" is the client's own, and so is the
    /// port when its key is free (the caller keeps it); when the client's
    /// port already reaches this backend (through another frontend), the
    /// port is remapped from
    /// the worker's slice, as Linux's NAT remaps a clashing tuple. (The
    /// client's own port is not from this worker's slice: two workers could
    /// enter the same key at the same instant only for two such clashing
    /// flows created together; the second would then find the first's
    /// translation for its replies.)
    #[allow(clippy::too_many_arguments)]
    fn enter_reply<F: NatFamily>(
        &mut self,
        proto: u8,
        backend: F::Raw,
        backend_port: u16,
        back: &RevFlow<F::Raw>,
        keep: &[(F::Raw, u16)],
        client_port: u16,
        dnat: bool,
        now: u32,
    ) -> Result<(u32, F::Raw, u16), DropReason> {
        let rev = F::reverse(&self.shared);
        for &(addr, port) in keep {
            let key = Self::reply_key(addr, port, backend, backend_port, proto);
            if let Claim::Entered(idx) = rev.claim(&key, back, now) {
                return Ok((idx, addr, port));
            }
        }
        let addrs: &[F::Raw] = if dnat { std::slice::from_ref(&back.client) } else { rev.addrs() };
        if addrs.is_empty() {
            // An IPv6 Service in snat mode on a gateway without an IPv6 SNAT address.
            return Err(DropReason::NoSnatAddress);
        }
        let port_cursor = F::state(&self.fams).port_cursor;
        let ports = rev.ports_of(self.id);
        let first = u32::from(*ports.start());
        let naddr = addrs.len() as u32;
        let tuples = (u32::from(*ports.end()) - first + 1) * naddr;
        let mut full = false;
        // The client's port first: a flow picked up after losing its
        // entry gets the same port again (while it is free toward the
        // backend), so the backend's connection goes on. Then the cursor,
        // which spreads the rest over the slice.
        let hinted = (u32::from(first_port_candidate(ports.clone(), client_port)) - first) * naddr;
        for i in 0..PORT_TRIES.min(tuples) {
            let t = if i == 0 { hinted } else { (port_cursor + i - 1) % tuples };
            let (addr, port) = (addrs[(t % naddr) as usize], (first + t / naddr) as u16);
            let key = Self::reply_key(addr, port, backend, backend_port, proto);
            match rev.claim(&key, back, now) {
                Claim::Entered(idx) => {
                    if i > 0 {
                        F::state_mut(&mut self.fams).port_cursor = (t + 1) % tuples;
                    }
                    return Ok((idx, addr, port));
                }
                Claim::Taken => {}
                // Both buckets of this key full (rare: 25% headroom): the
                // next port's key has other buckets.
                Claim::Full => full = true,
            }
        }
        if dnat {
            return Err(DropReason::PortsExhausted);
        }
        if let Some((addr, port)) = self.reclaim_toward::<F>(proto, backend, backend_port, now) {
            let key = Self::reply_key(addr, port, backend, backend_port, proto);
            return match F::reverse(&self.shared).insert(&key, back, now) {
                Some(idx) => Ok((idx, addr, port)),
                None => Err(DropReason::ReplyTableFull),
            };
        }
        if full {
            return Err(DropReason::ReplyTableFull);
        }
        let exhausted = if F::FAMILY == IpFamily::V4 {
            &mut self.counters.ports_exhausted
        } else {
            &mut self.counters.ports_exhausted6
        };
        for c in exhausted.iter_mut() {
            *c += 1;
        }
        Err(DropReason::PortsExhausted)
    }

    fn new_flow<F: NatFamily>(
        &mut self,
        t: &ServiceTable,
        hops: &NextHops,
        f: &mut Frame<'_>,
        p: &Parsed<F::Raw>,
        probe: &Probe,
        now: u32,
    ) -> Verdict {
        let k = p.key;
        let Some(proto) = Protocol::from_number(k.proto) else {
            return Verdict::Pass(PassReason::NotTcpUdp);
        };
        let half = t.family::<F>();
        // The burst's read-ahead looked the frontend up and hashed the flow
        // already (IPv4 in large tables), else here.
        let (fe, hash) = match self.hint.frontend() {
            Some(found) if F::FAMILY == IpFamily::V4 => found,
            _ => match half.frontend(F::addr(k.dst), proto, k.dport) {
                Some(fe) => (fe, F::flow_hash(&k)),
                None => return Verdict::Pass(PassReason::NotService),
            },
        };
        let Some(svc) = half.entry(fe.entry) else {
            return Verdict::Pass(PassReason::NotService);
        };
        if fe.kind == FrontendKind::LoadBalancer && !svc.source_allowed(F::addr(k.src)) {
            return Verdict::Drop(DropReason::SourceRange);
        }
        // TCP: a SYN opens a flow; so does a segment of a connection in
        // progress whose entry is gone (reclaimed under pressure before the
        // client's late ACK came, expired, or held by another gateway or a
        // previous process), as Linux conntrack picks one up
        // (`nf_conntrack_tcp_loose`): it goes to the backend the same hash
        // picks, from the port its hash names (see `enter_reply`), so the
        // backend's connection goes on. A RST, or a SYN with ACK, opens
        // nothing.
        let mut pickup = false;
        if k.proto == IPPROTO_TCP {
            match p.tcp_flags & (tcpf::SYN | tcpf::ACK | tcpf::RST) {
                tcpf::SYN => {}
                tcpf::ACK => pickup = true,
                _ => return Verdict::Drop(DropReason::TcpNoFlow),
            }
        }
        if svc.active == ActiveSet::Empty {
            return Self::reject::<F>(f, p);
        }
        if p.ttl <= 1 {
            return self.time_exceeded::<F>(hops, f, p);
        }
        let Some(b) = self.pick_backend::<F>(svc, &k, hash, now) else {
            return Self::reject::<F>(f, p);
        };
        let backend = svc.backends[usize::from(b)];
        let baddr = F::Raw::of(backend.addr);
        let hop_idx = match self.hop_to::<F>(hops, baddr) {
            Ok(h) => h,
            Err(v) => return v,
        };
        let Some(hop) = hops.hop(hop_idx).copied() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let pressure = self.under_pressure::<F>();
        if pressure {
            self.reclaim_in::<F>(2, now);
        }
        let dnat = svc.forwarding.unwrap_or(self.shared.config.mode) == ForwardingMode::Dnat;
        // In dnat mode the client's own address and port, if free toward the backend.
        let own = [(k.src, k.sport)];
        let keep = if dnat { &own[..] } else { &[] };
        let (rev_idx, snat_addr, snat_port) =
            match self.enter_reply::<F>(k.proto, baddr, backend.port, &RevFlow::of(&k), keep, k.sport, dnat, now) {
                Ok(entered) => entered,
                Err(why) => return Verdict::Drop(why),
            };
        let shared = &self.shared;
        let st = F::state_mut(&mut self.fams);
        let ins = st.ct.insert(&k, probe, now, |e| standing::<F>(shared, e, now, pressure));
        // A displaced entry keeps its reverse slot; the unassured queue
        // loses track of it (its ticket no longer matches its old slot).
        let _ = st.ct.take_moved();
        if let Inserted::Replaced { old, standing, .. } = ins {
            self.release::<F>(&old);
            match standing {
                Standing::Expired => self.counters.expired += 1,
                Standing::Unassured => self.counters.reclaimed += 1,
                Standing::Live => self.counters.evicted += 1,
            }
        }
        let slot = ins.slot();
        let st = F::state_mut(&mut self.fams);
        let ticket = st.unassured.push(slot);
        let (ip_delta, l4_delta) = F::deltas(&k, snat_addr, baddr, snat_port, backend.port);
        let snat = snat_index(F::reverse(&self.shared).addrs(), &snat_addr, &k.src);
        let front = st.front_of(fe.entry, k.dst);
        if let Some(e) = st.ct.entry_mut(slot) {
            e.set_addrs(snat_addr, baddr);
            e.front = front;
            e.snat = snat;
            e.snat_port = snat_port;
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
            e.ticket = ticket;
        }
        self.counters.new_flows += 1;
        self.counters.picked_up += u64::from(pickup);
        if !F::rewrite(f.buf, p, snat_addr, baddr, snat_port, backend.port, ip_delta, l4_delta, &hop) {
            return Verdict::Drop(DropReason::Malformed);
        }
        if let Some(c) = st.svc.get_mut(fe.entry as usize) {
            c.packets += 1;
            c.bytes += f.len as u64;
        }
        Verdict::Forward { port: hop.port }
    }

    /// A reply from a backend whose 5-tuple is the reply key in `idx`,
    /// holding `fl`: translate back to what the client dialled. Works on any
    /// worker (see `reverse`).
    fn reply<F: NatFamily>(
        &mut self,
        hops: &NextHops,
        f: &mut Frame<'_>,
        p: &Parsed<F::Raw>,
        idx: u32,
        fl: &RevFlow<F::Raw>,
        now: u32,
    ) -> Verdict {
        let k = p.key;
        if p.ttl <= 1 {
            return self.time_exceeded::<F>(hops, f, p);
        }
        let hop_idx = match F::reverse(&self.shared).cached_hop(idx, hops.generation()) {
            Some(h) => h,
            None => match self.hop_to::<F>(hops, fl.client) {
                Ok(h) => {
                    F::reverse(&self.shared).cache_hop(idx, hops.generation(), h);
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
        F::reverse(&self.shared).touch(idx, now, fl_flags);
        let (ip_delta, l4_delta) = F::deltas(&k, fl.frontend, fl.client, fl.frontend_port, fl.client_port);
        if !F::rewrite(f.buf, p, fl.frontend, fl.client, fl.frontend_port, fl.client_port, ip_delta, l4_delta, &hop) {
            return Verdict::Drop(DropReason::Malformed);
        }
        self.counters.reverse_translated += 1;
        Verdict::Forward { port: hop.port }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::Ipv4Packet;
    use proptest::prelude::*;

    #[test]
    fn snat_index_names_the_address_the_client_or_none() {
        let addrs = [10u32, 11, 12];
        assert_eq!(snat_index(&addrs, &12, &99), 2);
        assert_eq!(snat_index(&addrs, &99, &99), SNAT_CLIENT);
        // Neither: an index no translation resolves.
        assert_eq!(snat_index(&addrs, &50, &99), SNAT_CLIENT - 1);
        let many: Vec<u32> = (0..300).collect();
        assert_eq!(snat_index(&many, &299, &1000), SNAT_CLIENT - 1);
    }

    /// A dual-stack LoadBalancer Service with two ports, an externalIP and
    /// NodePorts on two node IPs per family: each IPv6 service entry gets
    /// one record per address it is reached at, and `front_of` names the
    /// record of the very address.
    #[test]
    fn front_records_name_each_entry_and_address() {
        use svcgate_common::model::{
            BackendSpec, DesiredState, EndpointConditions, ServicePortSpec, ServiceSpec, ServiceType, SessionAffinity,
        };
        let v6 = |x: u16| Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0, x);
        let backend = |i: u16| BackendSpec {
            addr: Ipv6Addr::new(0x2001, 2, 0, 0x4000, 0, 0, 0, i).into(),
            port: 8080,
            conditions: EndpointConditions::READY,
            weight: 1,
        };
        let port = |name: &str, protocol, port, node_port| ServicePortSpec {
            name: name.into(),
            protocol,
            port,
            node_port: Some(node_port),
            backends: vec![backend(1), backend(2)],
        };
        let spec = ServiceSpec {
            namespace: "t".into(),
            name: "lb".into(),
            service_type: ServiceType::LoadBalancer,
            cluster_ips: vec![Ipv4Addr::new(198, 18, 128, 1).into(), v6(1).into()],
            external_ips: vec![v6(2).into()],
            load_balancer_ips: vec![v6(3).into()],
            source_ranges: vec![],
            affinity: SessionAffinity::None,
            ports: vec![port("a", Protocol::Tcp, 80, 30080), port("b", Protocol::Udp, 53, 30053)],
            forwarding: None,
        };
        let nodes = [v6(0x100), v6(0x101)];
        let node_ips = [Ipv4Addr::new(198, 18, 1, 1).into(), nodes[0].into(), nodes[1].into()];
        let state = DesiredState { node_ips: node_ips.to_vec(), services: vec![spec] };
        let (t, warnings) = ServiceTable::build(&state, 1);
        assert!(warnings.is_empty(), "{warnings:?}");
        let mut st = FamilyState::<Ipv6Addr>::new(&NatConfig::default(), 1024, 1, None);
        st.build_fronts(&t);
        let half = t.v6();
        assert_eq!(st.front_base.len(), half.entries().len() + 1);
        let mut seen = 0;
        for (k, fe) in half.frontends() {
            let at = st.front_of(fe.entry, u128::from(k.addr));
            let rec = st.fronts[usize::from(at)];
            assert_eq!((rec.addr, rec.entry), (u128::from(k.addr), fe.entry), "{k:?}");
            seen += 1;
        }
        // ClusterIP, externalIP, LoadBalancer IP and two node IPs, per port.
        assert_eq!(seen, 2 * 5);
        assert_eq!(st.fronts.len(), 2 * 5, "one record per entry and address");
        // An address the entry is not reached at, or an entry out of range.
        assert_eq!(st.front_of(0, u128::from(v6(9))), NO_FRONT);
        assert_eq!(st.front_of(7, u128::from(v6(1))), NO_FRONT);
        // IPv4 keeps none.
        let mut st4 = FamilyState::<Ipv4Addr>::new(&NatConfig::default(), 1024, 1, None);
        st4.build_fronts(&t);
        assert!(st4.fronts.is_empty());
        assert_eq!(st4.front_of(0, u32::from(Ipv4Addr::new(198, 18, 128, 1))), NO_FRONT);
    }

    #[test]
    fn unassured_queue_keeps_creation_order_and_drops_its_oldest_when_full() {
        let mut q = Unassured::new(16);
        let tickets: Vec<[u8; 3]> = (0..16).map(|slot| q.push(slot)).collect();
        assert_eq!(tickets[0], [0, 0, 0]);
        assert_eq!(tickets[15], [15, 0, 0]);
        q.tombstone(1);
        assert_eq!(q.get(1), Some((TOMBSTONE, 0)));
        // Full: the 17th push drops the oldest entry (slot 0).
        q.push(100);
        assert_eq!(q.pop(), Some((TOMBSTONE, 0)), "slot 0 was dropped; slot 1 is a tombstone");
        assert_eq!(q.pop(), Some((2, 2)));
        assert_eq!(q.get(13), Some((100, 16)));
        assert_eq!(q.get(14), None);
        // Tickets wrap at 24 bits.
        q.next_ticket = TICKET_MASK;
        assert_eq!(q.push(7), [0xff, 0xff, 0xff]);
        assert_eq!(q.push(8), [0, 0, 0]);
    }

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
