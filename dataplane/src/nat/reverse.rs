//! The reverse (reply) direction: SNAT port -> flow, shared by all workers.
//!
//! # How a reply finds its flow
//! A new flow is masqueraded to one of the gateway's SNAT addresses and a
//! port taken from the *creating worker's own slice* of the SNAT port range.
//! The backend's reply comes back to that address and port, but the NIC's RSS
//! hashes the translated tuple, so the reply may land on any RX queue, and an
//! XDP program can only hand a frame to the socket of the queue it arrived on.
//!
//! svcgate therefore makes the reverse entry readable by every worker: it
//! lives in one shared array indexed directly by (SNAT address, protocol,
//! port), so the reply path does no hashing at all, just one indexed load,
//! and any worker can translate any reply on the queue it arrived on. No
//! hand-off ring is needed, so a reply costs no extra queueing or copies.
//!
//! Each slot is written only by the worker that owns its port (the port names
//! the owner: worker `w` owns `[lo + w·span, lo + (w+1)·span)`), so there is
//! one writer per slot. Readers use a sequence lock built from atomics: the
//! writer makes the sequence odd, stores the words, makes it even; a reader
//! retries (once) or gives up if the sequence moved. No `unsafe`, no locks.
//! A reader that sees a recycled slot is caught by the validation the reply
//! path does anyway (the reply must come from the flow's backend address and
//! port).
//!
//! Fields that any worker updates (last reply time, TCP flags from the
//! backend) are separate atomics outside the sequence lock.

use std::net::Ipv4Addr;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// The reverse translation of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevFlow {
    /// The client's address (the reply's new destination).
    pub client: u32,
    /// The client's port.
    pub client_port: u16,
    /// The frontend address the client dialled (the reply's new source).
    pub frontend: u32,
    /// The frontend port.
    pub frontend_port: u16,
    /// The backend address the reply must come from.
    pub backend: u32,
    /// The backend port the reply must come from.
    pub backend_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// The flow's slot in the owner's forward table.
    pub owner_slot: u32,
}

/// Flags shared between directions.
pub mod flags {
    /// A reply was seen (UDP: "assured"; TCP: past SYN).
    pub const REPLIED: u8 = 0x01;
    /// The backend sent FIN.
    pub const FIN: u8 = 0x02;
    /// The backend sent RST.
    pub const RST: u8 = 0x04;
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot {
    seq: AtomicU32,
    last_seen: AtomicU32,
    flags: AtomicU8,
    /// Cached next hop toward the client: hop index | generation << 16.
    hop: AtomicU32,
    w0: AtomicU64,
    w1: AtomicU64,
    w2: AtomicU64,
}

/// The shared reverse table.
#[derive(Debug)]
pub struct ReverseTable {
    slots: Box<[Slot]>,
    addrs: Box<[u32]>,
    lo: u16,
    span: u16,
    workers: u16,
}

#[inline(always)]
const fn proto_index(proto: u8) -> usize {
    (proto == 17) as usize
}

/// The configuration error of a reverse table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReverseError {
    /// No SNAT address was given.
    #[error("at least one SNAT address is needed")]
    NoAddress,
    /// The port range leaves a worker fewer than 16 ports.
    #[error("SNAT port range {lo}-{hi} is too small for {workers} workers (each needs at least 16 ports)")]
    RangeTooSmall {
        /// First port.
        lo: u16,
        /// Last port.
        hi: u16,
        /// Worker count.
        workers: u16,
    },
}

impl ReverseTable {
    /// A table for these SNAT addresses and the port range `lo..=hi`, split
    /// evenly between `workers` workers.
    pub fn new(addrs: &[Ipv4Addr], lo: u16, hi: u16, workers: u16) -> Result<Self, ReverseError> {
        if addrs.is_empty() {
            return Err(ReverseError::NoAddress);
        }
        let workers = workers.max(1);
        let total = u32::from(hi.saturating_sub(lo)) + 1;
        let span = total / u32::from(workers);
        if hi < lo || span < 16 {
            return Err(ReverseError::RangeTooSmall { lo, hi, workers });
        }
        let n = addrs.len() * 2 * span as usize * usize::from(workers);
        Ok(Self {
            slots: (0..n).map(|_| Slot::default()).collect(),
            addrs: addrs.iter().map(|a| u32::from(*a)).collect(),
            lo,
            span: span as u16,
            workers,
        })
    }

    /// The SNAT addresses (big-endian `u32`).
    #[inline(always)]
    pub fn addrs(&self) -> &[u32] {
        &self.addrs
    }

    /// The index of `addr` among the SNAT addresses.
    #[inline(always)]
    pub fn addr_index(&self, addr: u32) -> Option<usize> {
        self.addrs.iter().position(|&a| a == addr)
    }

    /// The ports worker `w` owns.
    pub fn ports_of(&self, w: u16) -> std::ops::RangeInclusive<u16> {
        let start = self.lo + w * self.span;
        start..=start + (self.span - 1)
    }

    /// The whole SNAT port range in use, `(lo, hi)` inclusive.
    pub fn port_range(&self) -> (u16, u16) {
        let hi = u32::from(self.lo) + u32::from(self.workers) * u32::from(self.span) - 1;
        (self.lo, hi as u16)
    }

    /// The worker that owns `port`, if it is in the range.
    #[inline(always)]
    pub fn owner_of(&self, port: u16) -> Option<u16> {
        let off = port.checked_sub(self.lo)?;
        let w = off / self.span;
        (w < self.workers).then_some(w)
    }

    /// The slot index of (SNAT address index, protocol, port); `port` must be
    /// in the range (see [`ReverseTable::owner_of`]). Only the range is
    /// indexed, so the table costs 64 bytes per address, protocol and port of
    /// the range (3.6 MiB per address with the default range).
    #[inline(always)]
    pub fn index(&self, addr_idx: usize, proto: u8, port: u16) -> u32 {
        let nports = usize::from(self.span) * usize::from(self.workers);
        ((addr_idx * 2 + proto_index(proto)) * nports + usize::from(port.wrapping_sub(self.lo))) as u32
    }

    /// Every slot index worker `w` owns for `proto`, addresses interleaved
    /// (consecutive allocations spread over the SNAT addresses).
    pub fn owned_slots(&self, w: u16, proto: u8) -> impl Iterator<Item = u32> + '_ {
        let ports = self.ports_of(w);
        let naddr = self.addrs.len();
        ports.flat_map(move |port| (0..naddr).map(move |ai| self.index(ai, proto, port)))
    }

    /// The SNAT address (big-endian `u32`) and port of slot `idx`.
    #[inline]
    pub fn addr_port_of(&self, idx: u32) -> (u32, u16) {
        let nports = u32::from(self.span) * u32::from(self.workers);
        let port = self.lo.wrapping_add((idx % nports) as u16);
        let ai = (idx / nports / 2) as usize;
        (self.addrs.get(ai).copied().unwrap_or(0), port)
    }

    /// Writes a flow into `idx`. Only the owner of the port may call this.
    pub fn publish(&self, idx: u32, f: &RevFlow, now: u32) {
        let Some(s) = self.slots.get(idx as usize) else { return };
        let seq = s.seq.load(Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        s.w0.store((u64::from(f.client) << 32) | u64::from(f.frontend), Ordering::Relaxed);
        s.w1.store(
            (u64::from(f.backend) << 32) | (u64::from(f.client_port) << 16) | u64::from(f.frontend_port),
            Ordering::Relaxed,
        );
        s.w2.store(
            (u64::from(f.backend_port) << 48) | (u64::from(f.proto) << 32) | u64::from(f.owner_slot),
            Ordering::Relaxed,
        );
        s.last_seen.store(now, Ordering::Relaxed);
        s.flags.store(0, Ordering::Relaxed);
        s.hop.store(u32::MAX, Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Points `idx` at a new forward-table slot (after the owner's table moved
    /// the flow). Only the owner of the port may call this.
    pub fn set_owner_slot(&self, idx: u32, owner_slot: u32) {
        let Some(s) = self.slots.get(idx as usize) else { return };
        let seq = s.seq.load(Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let w2 = s.w2.load(Ordering::Relaxed);
        s.w2.store((w2 & !0xffff_ffff) | u64::from(owner_slot), Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Frees `idx`. Only the owner of the port may call this.
    pub fn clear(&self, idx: u32) {
        let Some(s) = self.slots.get(idx as usize) else { return };
        let seq = s.seq.load(Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        s.w2.store(0, Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Reads the flow in `idx`, if the slot is in use and was read consistently.
    #[inline]
    pub fn read(&self, idx: u32) -> Option<RevFlow> {
        let s = self.slots.get(idx as usize)?;
        for _ in 0..2 {
            let s1 = s.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                continue;
            }
            let w0 = s.w0.load(Ordering::Relaxed);
            let w1 = s.w1.load(Ordering::Relaxed);
            let w2 = s.w2.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if s.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            let proto = (w2 >> 32) as u8;
            if proto == 0 {
                return None;
            }
            return Some(RevFlow {
                client: (w0 >> 32) as u32,
                frontend: w0 as u32,
                backend: (w1 >> 32) as u32,
                client_port: (w1 >> 16) as u16,
                frontend_port: w1 as u16,
                backend_port: (w2 >> 48) as u16,
                proto,
                owner_slot: w2 as u32,
            });
        }
        None
    }

    /// Records a reply at `now` with TCP-ish `flags`; any worker may call this.
    #[inline(always)]
    pub fn touch(&self, idx: u32, now: u32, new_flags: u8) {
        if let Some(s) = self.slots.get(idx as usize) {
            if s.last_seen.load(Ordering::Relaxed) != now {
                s.last_seen.store(now, Ordering::Relaxed);
            }
            let cur = s.flags.load(Ordering::Relaxed);
            if cur | new_flags != cur {
                s.flags.fetch_or(new_flags, Ordering::Relaxed);
            }
        }
    }

    /// Last reply time and flags of `idx`.
    #[inline]
    pub fn reply_state(&self, idx: u32) -> (u32, u8) {
        self.slots
            .get(idx as usize)
            .map_or((0, 0), |s| (s.last_seen.load(Ordering::Relaxed), s.flags.load(Ordering::Relaxed)))
    }

    /// The cached next hop toward the client, if resolved in hop generation `gen`.
    #[inline(always)]
    pub fn cached_hop(&self, idx: u32, gen: u32) -> Option<u16> {
        let v = self.slots.get(idx as usize)?.hop.load(Ordering::Relaxed);
        (v != u32::MAX && v >> 16 == gen & 0xffff).then_some(v as u16)
    }

    /// Caches the next hop toward the client; any worker may call this (a
    /// racing store writes an equally valid value).
    #[inline]
    pub fn cache_hop(&self, idx: u32, gen: u32, hop: u16) {
        if let Some(s) = self.slots.get(idx as usize) {
            s.hop.store(((gen & 0xffff) << 16) | u32::from(hop), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn flow(i: u32) -> RevFlow {
        RevFlow {
            client: i,
            client_port: i as u16,
            frontend: !i,
            frontend_port: 80,
            backend: i.wrapping_mul(3),
            backend_port: 8080,
            proto: 6,
            owner_slot: i,
        }
    }

    #[test]
    fn ports_split_between_workers() {
        let t = ReverseTable::new(&["198.18.9.1".parse().unwrap()], 1024, 65535, 2).unwrap();
        assert_eq!(t.ports_of(0), 1024..=33279);
        assert_eq!(t.ports_of(1), 33280..=65535);
        assert_eq!(t.port_range(), (1024, 65535));
        assert_eq!(t.owner_of(1024), Some(0));
        assert_eq!(t.owner_of(33279), Some(0));
        assert_eq!(t.owner_of(33280), Some(1));
        assert_eq!(t.owner_of(80), None);
        assert!(matches!(ReverseTable::new(&[], 1, 2, 1), Err(ReverseError::NoAddress)));
        assert!(ReverseTable::new(&["198.18.9.1".parse().unwrap()], 1000, 1010, 1).is_err());
    }

    #[test]
    fn publish_read_clear() {
        let t = ReverseTable::new(&["198.18.9.1".parse().unwrap()], 1024, 65535, 1).unwrap();
        let idx = t.index(0, 17, 5000);
        assert_eq!(t.read(idx), None);
        let f = RevFlow { proto: 17, ..flow(7) };
        t.publish(idx, &f, 42);
        assert_eq!(t.read(idx), Some(f));
        assert_eq!(t.read(t.index(0, 6, 5000)), None, "TCP and UDP are separate");
        t.touch(idx, 50, flags::REPLIED);
        assert_eq!(t.reply_state(idx), (50, flags::REPLIED));
        t.clear(idx);
        assert_eq!(t.read(idx), None);
    }

    #[test]
    fn readers_never_see_torn_flows() {
        let t = Arc::new(ReverseTable::new(&["198.18.9.1".parse().unwrap()], 1024, 65535, 1).unwrap());
        let idx = t.index(0, 6, 2000);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (t, stop) = (Arc::clone(&t), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut seen = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(f) = t.read(idx) {
                        // Every field derives from one i: a torn read breaks this.
                        assert_eq!(f, flow(f.client), "torn read");
                        seen += 1;
                    }
                }
                seen
            })
        };
        for i in 1..200_000u32 {
            t.publish(idx, &flow(i), i);
            if i % 7 == 0 {
                t.clear(idx);
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }
}
