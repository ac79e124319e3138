//! Read-ahead for the new flows of a burst.
//!
//! A new flow reads a chain of lines that depend on each other: the
//! frontend, then its Service entry, then the Maglev slot the flow's hash
//! names, then that backend, then the reverse table's buckets for the
//! reply key, beside the flow table's lines for the insert. At 10k Services
//! each is a cache miss, and one flow after another they queue: about
//! seven misses per SYN. As the batch path does for established flows,
//! [`Worker::read_ahead_new`] walks the chain one step at a time for every
//! new flow of the burst, prefetching the next line of each, so that a
//! step's misses overlap; `new_flow` then finds its lines in the cache.
//! Beyond the reads, two chains of writes: the reverse slot each new
//! flow's claim will fill (found from the buckets once they are in), and,
//! in a full table, the oldest unassured flows each new flow reclaims first
//! (their entries, then their reverse slots). Measured in
//! docs/BENCHMARKS.md: each of these took a miss per new flow before.
//! The frontend and flow hash found in the first step are kept
//! ([`Ahead::frontend`]) and `new_flow` does not look them up again.
//!
//! Only a hint: it changes no state, and a prefetch that turns out wrong
//! (a frame that was a reply after all, a port taken) costs a line.

use std::net::Ipv4Addr;

use svcgate_common::hash::flow_hash;
use svcgate_common::model::{ForwardingMode, Protocol};
use svcgate_common::table::{Frontend, FrontendKind, ServiceEntry, ServiceTable};

use super::{first_port_candidate, Pre, Worker, NO_SLOT};
use crate::nat::conntrack::Probe;
use crate::xsk::prefetch;

/// A burst's frame that looks like a new flow: its frontend and its flow
/// hash, which `new_flow` then takes instead of looking them up again
/// ([`Ahead::frontend`]). `fe.entry == NONE`: not one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ahead {
    fe: Frontend,
    hash: u32,
    /// The reverse-table probe of the flow's first reply key candidate.
    reply: Option<Probe>,
}

const NONE: u32 = u32::MAX;

impl Ahead {
    pub(super) const EMPTY: Self =
        Self { fe: Frontend { kind: FrontendKind::ClusterIp, entry: NONE }, hash: 0, reply: None };

    /// The frontend and flow hash found for the frame, if it looked new.
    #[inline(always)]
    pub(super) fn frontend(&self) -> Option<(Frontend, u32)> {
        (self.fe.entry != NONE).then_some((self.fe, self.hash))
    }
}

impl Worker {
    /// Between the lookup passes and the decisions of a large-table burst
    /// (see `process_chunk`): prefetches, step by step across the burst,
    /// the lines the burst's new flows will read (see the module doc).
    /// A frame counts as new when its flow-table lookup found no candidate
    /// and it is not addressed to an SNAT port (a reply).
    #[inline(always)]
    pub(super) fn read_ahead_new(&mut self, t: &ServiceTable, n: usize) {
        let mut any = false;
        // Step 1: the frontend (looked up here, its misses overlapping as
        // far as the core reorders independent lookups), the entry behind
        // it, the Service's counters and the flow table's insert lines.
        for i in 0..n {
            self.ahead[i] = Ahead::EMPTY;
            let Pre::Parsed(p, probe, NO_SLOT) = &self.pre[i] else { continue };
            let k = p.key;
            if self.shared.reverse.is_snat(k.dst, k.dport) {
                continue;
            }
            let Some(proto) = Protocol::from_number(k.proto) else { continue };
            let Some(fe) = t.frontend(Ipv4Addr::from(k.dst), proto, k.dport) else { continue };
            let Some(svc) = t.v4().entry(fe.entry) else { continue };
            prefetch(svc as *const ServiceEntry);
            if let Some(c) = self.fams.v4.svc.get(fe.entry as usize) {
                prefetch(c);
            }
            self.fams.v4.ct.prefetch_insert(probe);
            self.ahead[i] = Ahead { fe, hash: flow_hash(k.src, k.dst, k.sport, k.dport, k.proto), reply: None };
            any = true;
        }
        if !any {
            return;
        }
        // Under pressure each new flow first reclaims the oldest unassured
        // flows (`reclaim_in`): their entries now, their reverse slots in
        // step 3. About one per new flow in a full table.
        let reclaims = if self.under_pressure::<Ipv4Addr>() { n } else { 0 };
        for i in 0..reclaims {
            let Some((slot, _)) = self.fams.v4.unassured.get(i) else { break };
            self.fams.v4.ct.prefetch_entry(slot as usize);
        }
        // Step 2: the Maglev slot (affinity Services pick by client, from
        // the worker's own affinity table).
        for a in &self.ahead[..n] {
            if let Some(svc) = Self::ahead_entry(t, a) {
                if let Some(s) = svc.maglev.slot_of(a.hash) {
                    prefetch(s);
                }
            }
        }
        // Step 3: the backend the slot names; the reclaimed flows' reverse slots.
        for i in 0..reclaims {
            let Some((slot, _)) = self.fams.v4.unassured.get(i) else { break };
            if let Some(e) = self.fams.v4.ct.entry(slot as usize).filter(|e| e.is_used()) {
                self.shared.reverse.prefetch_slot(e.rev_slot);
            }
        }
        for a in &self.ahead[..n] {
            if let Some(svc) = Self::ahead_entry(t, a) {
                if let Some(be) = svc.maglev.pick(a.hash).and_then(|b| svc.backends.get(usize::from(b))) {
                    prefetch(be);
                }
            }
        }
        // Step 4: the reverse table's buckets for the flow's first port
        // candidate toward that backend.
        let rev = &self.shared.reverse;
        let (id, mode) = (self.id, self.shared.config.mode);
        for (a, pre) in self.ahead[..n].iter_mut().zip(&self.pre[..n]) {
            let (Some(svc), Pre::Parsed(p, ..)) = (Self::ahead_entry(t, a), pre) else { continue };
            let Some(be) = svc.maglev.pick(a.hash).and_then(|b| svc.backends.get(usize::from(b))) else { continue };
            let k = p.key;
            let (addr, port) = if svc.forwarding.unwrap_or(mode) == ForwardingMode::Dnat {
                (k.src, k.sport)
            } else {
                (rev.addrs().first().copied().unwrap_or(0), first_port_candidate(rev.ports_of(id), k.sport))
            };
            let probe = rev.probe(&Self::reply_key(addr, port, u32::from(be.addr), be.port, k.proto));
            rev.prefetch(&probe);
            a.reply = Some(probe);
        }
        // Step 5: the reverse slot that key's insert will fill (written
        // into a line nothing else brings in).
        for a in &self.ahead[..n] {
            if let Some(probe) = &a.reply {
                rev.prefetch_free_slot(probe);
            }
        }
    }

    /// The Service entry of a frame the first step marked as a new flow
    /// whose backend comes from Maglev (not from client affinity).
    #[inline(always)]
    fn ahead_entry<'t>(t: &'t ServiceTable, a: &Ahead) -> Option<&'t ServiceEntry> {
        let (fe, _) = a.frontend()?;
        t.v4().entry(fe.entry).filter(|svc| svc.affinity_timeout_secs.is_none())
    }
}
