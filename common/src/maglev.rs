//! Maglev consistent hashing (Eisenbud et al., NSDI'16, section 3.4).
//!
//! Each backend derives a permutation of the `M` table slots from two hashes of
//! its *identity* (never its position in a list), so that the table is the same
//! on every gateway and after every rebuild, and a backend change moves few
//! flows. Backends then take turns claiming their next preferred free slot
//! until the table is full: each ends up with `floor(M/N)` or `ceil(M/N)` slots
//! (scaled by weight when weights differ).
//!
//! The identity hashed is the backend's *address* alone when no other backend
//! in the set has that address (the normal case: one Pod IP, one endpoint),
//! and address and port only for backends that share an address. So the ports
//! of one Service, whose endpoints are the same Pods at a different
//! targetPort each, get the same table: the control plane builds it once and
//! shares it (a 400-port Service costs one Maglev build per endpoint change,
//! not 400), and a flow to any port of the Service picks the same Pod.
//!
//! The turn order is the backends sorted by (address, port), so the table does
//! not depend on the order in which the control plane lists endpoints. Slot
//! values are indices into the slice passed to [`Maglev::build`].

use std::net::IpAddr;
use std::sync::Arc;

use crate::hash::fmix64;

/// Smallest table: with one backend it still gives a uniform spread of hashes.
pub const MIN_TABLE_SIZE: u32 = 251;
/// Largest table: 65537 is prime and keeps the table at 128 KiB (u16 slots).
pub const MAX_TABLE_SIZE: u32 = 65537;
/// Slots per backend the paper recommends for <= 1% imbalance.
pub const SLOTS_PER_BACKEND: u32 = 100;

const SEED_OFFSET: u64 = 0x6d61_676c_6576_0001;
const SEED_SKIP: u64 = 0x6d61_676c_6576_0002;
/// An unclaimed slot while building.
const FREE: u16 = u16::MAX;

/// A backend's identity and weight, as Maglev sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaglevBackend {
    /// Backend address (one table holds one family's backends, but nothing
    /// here depends on that).
    pub addr: IpAddr,
    /// Backend port.
    pub port: u16,
    /// Relative weight; 0 is treated as 1.
    pub weight: u32,
}

/// Marks an address-only hash input, so it never equals an address:port one.
const ADDRESS_ONLY: u64 = 1 << 48;
/// Marks an IPv6 hash input (bit 63), so it never equals an IPv4 one (which
/// fit in 49 bits).
const IPV6: u64 = 1 << 63;
/// Marks an IPv6 address-only hash input (bit 62).
const IPV6_ADDRESS_ONLY: u64 = 1 << 62;

impl MaglevBackend {
    /// Address and port: the sort key of the turn order and what duplicates
    /// are. For IPv4 it orders as the former `address << 16 | port`.
    fn identity(&self) -> (IpAddr, u16) {
        (self.addr, self.port)
    }

    /// What the permutation is derived from: the address alone when it is
    /// unique in the set, else address and port. An IPv4 input is the
    /// address (and port) itself, as before IPv6 existed, so IPv4 tables
    /// are the same as a gateway of an earlier version builds; an IPv6
    /// address is folded to 62 bits (fmix64 of each half) and tagged.
    fn hash_input(&self, address_unique: bool) -> u64 {
        match self.addr {
            IpAddr::V4(a) if address_unique => ADDRESS_ONLY | u64::from(u32::from(a)),
            IpAddr::V4(a) => (u64::from(u32::from(a)) << 16) | u64::from(self.port),
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let folded = fmix64((bits >> 64) as u64) ^ (bits as u64).rotate_left(29);
                let folded = fmix64(folded) & (IPV6_ADDRESS_ONLY - 1);
                if address_unique {
                    IPV6 | IPV6_ADDRESS_ONLY | folded
                } else {
                    IPV6 | (fmix64(folded ^ u64::from(self.port)) & (IPV6_ADDRESS_ONLY - 1))
                }
            }
        }
    }
}

/// A built Maglev lookup table: slot -> backend index.
///
/// The slots are reference-counted: a clone shares them (the ports of one
/// Service with the same endpoints share one table).
#[derive(Clone, PartialEq, Eq)]
pub struct Maglev {
    slots: Arc<[u16]>,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev").field("size", &self.slots.len()).finish()
    }
}

// `u32::is_multiple_of` needs Rust 1.87; the workspace declares rust-version 1.80.
#[allow(clippy::manual_is_multiple_of)]
fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The table size for `n` backends: the smallest prime >= 100·n, clamped to
/// [`MIN_TABLE_SIZE`]..=[`MAX_TABLE_SIZE`]. Above 655 backends the 1% balance
/// bound no longer holds (the table is capped at 65537 slots).
pub fn table_size_for(n: usize) -> u32 {
    let want =
        u32::try_from(n).unwrap_or(u32::MAX).saturating_mul(SLOTS_PER_BACKEND).clamp(MIN_TABLE_SIZE, MAX_TABLE_SIZE);
    (want..=MAX_TABLE_SIZE).find(|&m| is_prime(m)).unwrap_or(MAX_TABLE_SIZE)
}

impl Maglev {
    /// A table with no backends: every lookup misses.
    pub fn empty() -> Self {
        Self { slots: Arc::new([]) }
    }

    /// Builds the table of size `size` (use [`table_size_for`]; must be prime
    /// for the permutations to cover every slot, and is forced up to the next
    /// prime otherwise). Returns an empty table when `backends` is empty. At
    /// most `u16::MAX` backends are used; further ones get no slots.
    pub fn build(backends: &[MaglevBackend], size: u32) -> Self {
        if backends.is_empty() {
            return Self::empty();
        }
        let m = if is_prime(size) { size } else { (size..).find(|&x| is_prime(x)).unwrap_or(MAX_TABLE_SIZE) };
        let m64 = u64::from(m);
        // Turn order by identity, so the input order does not matter.
        let mut order: Vec<u16> = (0..backends.len().min(usize::from(u16::MAX))).map(|i| i as u16).collect();
        order.sort_by_key(|&i| (backends[usize::from(i)].identity(), usize::from(i)));
        order.dedup_by_key(|i| backends[usize::from(*i)].identity());

        let n = order.len();
        let addr_of = |k: usize| backends[usize::from(order[k])].addr;
        let mut skip = Vec::with_capacity(n);
        let mut weight = Vec::with_capacity(n);
        // Each backend's current position in its permutation
        // (offset + j*skip) mod M, advanced by adding `skip` and subtracting
        // M when it wraps: no multiply or divide per probe.
        let mut pos = Vec::with_capacity(n);
        for k in 0..n {
            let b = &backends[usize::from(order[k])];
            // `order` is sorted by address first: a shared address has a neighbour.
            let unique = (k == 0 || addr_of(k - 1) != b.addr) && (k + 1 == n || addr_of(k + 1) != b.addr);
            let id = b.hash_input(unique);
            pos.push(fmix64(id ^ SEED_OFFSET) % m64);
            skip.push(fmix64(id ^ SEED_SKIP) % (m64 - 1) + 1);
            weight.push(u64::from(b.weight.max(1)));
        }
        let wmax = weight.iter().copied().max().unwrap_or(1);

        // Collected straight into its final allocation (a TrustedLen iterator).
        let mut table: Arc<[u16]> = (0..m).map(|_| FREE).collect();
        let Some(slots) = Arc::get_mut(&mut table) else { unreachable!("a new Arc is unique") };
        /// Claims `b`'s next preferred free slot: `b` is (position, skip,
        /// backend index), positions and skips < M <= 65537.
        #[inline(always)]
        fn claim(b: &mut (u32, u32, u16), m: u32, slots: &mut [u16]) {
            loop {
                let c = b.0;
                b.0 += b.1;
                if b.0 >= m {
                    b.0 -= m;
                }
                if let Some(slot @ &mut FREE) = slots.get_mut(c as usize) {
                    *slot = b.2;
                    return;
                }
            }
        }
        let mut walk: Vec<(u32, u32, u16)> = (0..n).map(|k| (pos[k] as u32, skip[k] as u32, order[k])).collect();
        let mut filled = 0u32;
        if weight.iter().all(|&w| w == wmax) {
            // Equal weights (the usual case): one turn each per round.
            'equal: loop {
                for b in &mut walk {
                    claim(b, m, slots);
                    filled += 1;
                    if filled == m {
                        break 'equal;
                    }
                }
            }
        } else {
            let mut round = 0u64;
            'fill: loop {
                for k in 0..n {
                    // Weighted turns: backend k claims a slot in this round when
                    // its cumulative share floor(round*w/wmax) steps up.
                    let turns = ((round + 1) * weight[k]) / wmax - (round * weight[k]) / wmax;
                    for _ in 0..turns {
                        claim(&mut walk[k], m, slots);
                        filled += 1;
                        if filled == m {
                            break 'fill;
                        }
                    }
                }
                round += 1;
            }
        }
        Self { slots: table }
    }

    /// The backend index for a flow hash, or `None` for an empty table.
    #[inline(always)]
    pub fn pick(&self, hash: u32) -> Option<u16> {
        let len = self.slots.len();
        if len == 0 {
            return None;
        }
        // Lemire's multiply-shift range reduction: a multiply instead of a divide.
        let idx = ((u64::from(hash) * len as u64) >> 32) as usize;
        self.slots.get(idx).copied()
    }

    /// The slot [`Self::pick`] reads for `hash`, for a read-ahead to
    /// prefetch (`None` for an empty table).
    #[inline(always)]
    pub fn slot_of(&self, hash: u32) -> Option<&u16> {
        let idx = ((u64::from(hash) * self.slots.len() as u64) >> 32) as usize;
        self.slots.get(idx)
    }

    /// The same table with every slot value passed through `f`, e.g. to map
    /// indices into a subset back to indices into the full backend list.
    pub fn remap(&self, f: impl Fn(u16) -> u16) -> Self {
        Self { slots: self.slots.iter().map(|&s| f(s)).collect() }
    }

    /// True when both share the same slots (one allocation).
    pub fn shares_slots_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.slots, &other.slots)
    }

    /// Table size (0 when empty).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the table has no backends.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slots, for tests and `svcgate status`.
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// `198.18.0.0/15` (RFC 2544) + `i`, as every address in this project's tests.
    fn addr(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (i & 0x1_ffff)))
    }

    fn backend(i: u32, port: u16, weight: u32) -> MaglevBackend {
        MaglevBackend { addr: addr(i), port, weight }
    }

    /// `n` distinct backends, weight 1, in no particular order.
    fn backends(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<MaglevBackend>> {
        prop::collection::btree_set((0u32..0x2_0000, 1u16..=u16::MAX), n)
            .prop_map(|set| set.into_iter().map(|(a, p)| backend(a, p, 1)).collect::<Vec<_>>())
            .prop_shuffle()
    }

    fn id(b: &MaglevBackend) -> (IpAddr, u16) {
        (b.addr, b.port)
    }

    /// The table as backend identities, slot by slot.
    fn identities(table: &Maglev, list: &[MaglevBackend]) -> Vec<(IpAddr, u16)> {
        table.slots().iter().map(|&s| id(&list[usize::from(s)])).collect()
    }

    fn counts(table: &Maglev, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &s in table.slots() {
            c[usize::from(s)] += 1;
        }
        c
    }

    /// Slots that a backend present in both tables held before and that now go
    /// to a different backend: the flows a change broke needlessly.
    fn survivor_churn(
        before: &[(IpAddr, u16)],
        after: &[(IpAddr, u16)],
        both: &BTreeSet<(IpAddr, u16)>,
    ) -> (usize, usize) {
        let mut held = 0;
        let mut moved = 0;
        for (b, a) in before.iter().zip(after) {
            if both.contains(b) {
                held += 1;
                moved += usize::from(a != b);
            }
        }
        (moved, held)
    }

    #[test]
    fn empty_input_gives_empty_table() {
        for size in [0, 1, 251, 65537] {
            let t = Maglev::build(&[], size);
            assert!(t.is_empty());
            assert_eq!(t.len(), 0);
            assert_eq!(t.pick(0), None);
            assert_eq!(t.pick(u32::MAX), None);
        }
        assert_eq!(Maglev::empty().pick(12345), None);
    }

    proptest! {
        #[test]
        fn no_holes_and_balanced(list in backends(1..=200)) {
            let m = table_size_for(list.len());
            let t = Maglev::build(&list, m);
            prop_assert_eq!(t.len(), m as usize);
            prop_assert!(t.slots().iter().all(|&s| usize::from(s) < list.len()));
            let n = list.len();
            let (lo, hi) = (m as usize / n, (m as usize).div_ceil(n));
            for (i, c) in counts(&t, n).into_iter().enumerate() {
                prop_assert!((lo..=hi).contains(&c), "backend {} has {} slots, want {}..={}", i, c, lo, hi);
            }
        }

        #[test]
        fn pick_always_hits_a_backend(list in backends(1..=50), hashes in prop::collection::vec(any::<u32>(), 64)) {
            let t = Maglev::build(&list, table_size_for(list.len()));
            for h in hashes.into_iter().chain([0, u32::MAX]) {
                let b = t.pick(h);
                prop_assert!(matches!(b, Some(i) if usize::from(i) < list.len()));
            }
        }

        #[test]
        fn same_set_in_any_order_gives_same_table(list in backends(1..=200), seed in any::<u64>()) {
            let m = table_size_for(list.len());
            let mut other = list.clone();
            // A Fisher-Yates shuffle driven by `seed`.
            let mut s = seed;
            for i in (1..other.len()).rev() {
                s = crate::hash::fmix64(s.wrapping_add(0x9e37_79b9_7f4a_7c15));
                other.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let a = identities(&Maglev::build(&list, m), &list);
            let b = identities(&Maglev::build(&other, m), &other);
            prop_assert_eq!(a, b);
        }
    }

    /// Removes `list[victim]` from a table of size `table_size_for(list.len())`.
    /// Returns (survivors' slots that moved, survivors' slots before, slots
    /// still on the removed backend, balance after is floor/ceil).
    fn remove_one(list: &[MaglevBackend], victim: usize) -> (usize, usize, usize, bool) {
        let m = table_size_for(list.len());
        let gone = id(&list[victim]);
        let rest: Vec<_> = list.iter().copied().filter(|b| id(b) != gone).collect();
        let before = identities(&Maglev::build(list, m), list);
        let after_table = Maglev::build(&rest, m);
        let after = identities(&after_table, &rest);
        let both: BTreeSet<_> = rest.iter().map(id).collect();
        let (moved, held) = survivor_churn(&before, &after, &both);
        let (lo, hi) = (m as usize / rest.len(), (m as usize).div_ceil(rest.len()));
        let balanced = counts(&after_table, rest.len()).iter().all(|c| (lo..=hi).contains(c));
        (moved, held, after.iter().filter(|&&a| a == gone).count(), balanced)
    }

    /// Adds `extra` to a table of size `table_size_for(list.len())`. Returns
    /// (old backends' slots that moved to another old backend, old backends'
    /// slots before, slots the new backend took).
    fn add_one(list: &[MaglevBackend], extra: MaglevBackend) -> (usize, usize, usize) {
        let m = table_size_for(list.len());
        let mut more = list.to_vec();
        more.push(extra);
        let before = identities(&Maglev::build(list, m), list);
        let after = identities(&Maglev::build(&more, m), &more);
        let old: BTreeSet<_> = list.iter().map(id).collect();
        let mut moved = 0;
        let mut taken = 0;
        for (b, a) in before.iter().zip(&after) {
            if *a == id(&extra) {
                taken += 1;
            } else {
                moved += usize::from(a != b);
            }
        }
        debug_assert!(after.iter().all(|a| *a == id(&extra) || old.contains(a)));
        (moved, before.len(), taken)
    }

    /// A deterministic sweep of `per_n` random backend sets for each N in `ns`.
    fn sweep(ns: std::ops::RangeInclusive<usize>, per_n: usize) -> Vec<Vec<MaglevBackend>> {
        let mut s = 1u64;
        let mut out = Vec::new();
        for n in ns {
            for _ in 0..per_n {
                let mut set = BTreeSet::new();
                while set.len() < n {
                    s = crate::hash::fmix64(s.wrapping_add(0x9e37_79b9_7f4a_7c15));
                    set.insert(((s as u32) & 0x1_ffff, (s >> 32) as u16 | 1));
                }
                out.push(set.into_iter().map(|(a, p)| backend(a, p, 1)).collect());
            }
        }
        out
    }

    proptest! {
        #[test]
        fn removal_moves_every_slot_of_the_removed_backend(list in backends(2..=100), victim in any::<prop::sample::Index>()) {
            let (_, _, left, balanced) = remove_one(&list, victim.index(list.len()));
            prop_assert_eq!(left, 0, "the removed backend still holds slots");
            prop_assert!(balanced, "survivors are not floor/ceil balanced");
        }

        #[test]
        fn addition_gives_the_new_backend_its_share(list in backends(1..=99), a in 0u32..0x2_0000, p in 1u16..=u16::MAX) {
            prop_assume!(!list.iter().any(|b| id(b) == (addr(a), p)));
            let m = table_size_for(list.len()) as usize;
            let n = list.len() + 1;
            let (_, _, taken) = add_one(&list, backend(a, p, 1));
            prop_assert!((m / n..=m.div_ceil(n)).contains(&taken), "new backend took {} of {} slots", taken, m);
        }
    }

    // Disruption of the backends that stay, when one of N (2..=100) leaves at
    // M = table_size_for(N), counted slot by slot over the surviving
    // backends' slots.
    //
    // The brief for this module asked for <= 1% per change. Maglev does not
    // give that at M ~ 100N, and it is not an implementation defect: the paper's
    // M >= 100N bound is about *balance* (floor/ceil(M/N) slots each); it
    // makes no disruption bound, and its evaluation only shows disruption
    // shrinking as M grows. When a backend leaves, every survivor walks its
    // permutation with fewer collisions, reaches later preferences in earlier
    // rounds and takes slots another survivor held: a cascade inherent in the
    // round-robin fill. An independent model (Python, same fill, offsets and
    // skips drawn from a PRNG instead of fmix64) moved a mean of 1.7-2.9% of
    // the survivors' slots at M ~ 100N, up to 28% for N = 3, falling to ~0.7%
    // at M ~ 1000N and ~0.2% at M ~ 10000N (about 22%/sqrt(M/N)). This
    // implementation measures the same (sweep of 990 sets: mean 2.1%, p90
    // 2.7%, max 11% at N = 4; >1% in 98% of cases), so the hashes add no
    // disruption of their own. Raising M to ~1000N would break the table
    // memory budget (64 MiB at 10k Services x 10 endpoints) and N > 65 cannot
    // get it under the 65537 cap. So: the 1% bound is asserted where it holds
    // (Cilium's case, M ~ 340N), and the sweep guards the measured behaviour
    // at M ~ 100N against regressions (bad hashes, broken turn order).

    /// Cilium's `TestBackendRemoval` case: 3 backends at M = 1021 (about
    /// 340 slots per backend), one removed; the survivors' slots that change
    /// must stay under 1% of the table. This holds; the sweep at M ~ 100N
    /// below does not reach 1% and guards what Maglev measures there instead.
    #[test]
    fn removal_disruption_cilium_case() {
        let list: Vec<MaglevBackend> = (0..3u8)
            .map(|i| MaglevBackend { addr: Ipv4Addr::new(198, 18, 0, 10 + i).into(), port: 80, weight: 1 })
            .collect();
        for gone in 0..3 {
            let before = Maglev::build(&list, 1021);
            let rest: Vec<MaglevBackend> =
                list.iter().enumerate().filter(|&(i, _)| i != gone).map(|(_, b)| *b).collect();
            let after = Maglev::build(&rest, 1021);
            let id = |t: &Maglev, l: &[MaglevBackend], s: usize| l[usize::from(t.slots()[s])];
            let mut changed = 0;
            for s in 0..1021 {
                let b = id(&before, &list, s);
                if b != list[gone] {
                    if id(&after, &rest, s) != b {
                        changed += 1;
                    }
                } else {
                    assert_ne!(id(&after, &rest, s), list[gone]);
                }
            }
            assert!(changed * 100 < 1021, "removing backend {gone}: {changed} of 1021 slots of survivors moved");
        }
    }

    /// The measured behaviour of Maglev at M ~ 100N, as a regression guard.
    #[test]
    fn survivor_disruption_matches_maglev_at_100_slots_per_backend() {
        let mut removal = Vec::new();
        let mut addition = Vec::new();
        for (k, list) in sweep(2..=100, 4).into_iter().enumerate() {
            let (moved, held, left, _) = remove_one(&list, k % list.len());
            assert_eq!(left, 0);
            removal.push(moved as f64 / held as f64);
            let (moved, held, _) = add_one(&list[1..], list[0]);
            addition.push(moved as f64 / held as f64);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        // Measured: removal mean 2.1%; the independent model 1.7-2.9%.
        assert!(mean(&removal) < 0.025, "mean survivor churn on removal {:.2}%", mean(&removal) * 100.0);
        assert!(mean(&addition) < 0.025, "mean churn of old backends on addition {:.2}%", mean(&addition) * 100.0);
        // No change ever reshuffles a large part of the table.
        let worst = removal.iter().chain(&addition).copied().fold(0.0, f64::max);
        assert!(worst < 0.15, "worst churn {:.2}%", worst * 100.0);
        println!(
            "removal mean {:.2}% addition mean {:.2}% worst {:.2}%",
            mean(&removal) * 100.0,
            mean(&addition) * 100.0,
            worst * 100.0
        );
    }

    proptest! {
        /// Each backend's slots are within 2 of its exact weighted share
        /// M * w / sum(w) (the weighted turns give w turns per max-weight
        /// rounds; the last, partial round costs at most one slot).
        #[test]
        fn weights_scale_slots(list in backends(2..=100), heavy in prop::collection::vec(any::<bool>(), 100)) {
            let list: Vec<_> = list.into_iter().zip(heavy).map(|(b, h)| MaglevBackend { weight: 1 + u32::from(h), ..b }).collect();
            let m = table_size_for(list.len());
            let total: u32 = list.iter().map(|b| b.weight).sum();
            let t = Maglev::build(&list, m);
            for (b, c) in list.iter().zip(counts(&t, list.len())) {
                let share = f64::from(m) * f64::from(b.weight) / f64::from(total);
                prop_assert!((c as f64 - share).abs() <= 2.0, "weight {} got {} slots, share {:.1}", b.weight, c, share);
            }
        }

        #[test]
        fn weight_zero_is_weight_one(list in backends(1..=50), zero in prop::collection::vec(any::<bool>(), 50)) {
            let zeroed: Vec<_> = list.iter().zip(zero).map(|(b, z)| MaglevBackend { weight: u32::from(!z), ..*b }).collect();
            let m = table_size_for(list.len());
            prop_assert_eq!(Maglev::build(&zeroed, m), Maglev::build(&list, m));
        }
    }

    #[test]
    fn weight_two_gets_twice_the_slots() {
        let list = [backend(1, 80, 1), backend(2, 80, 2), backend(3, 80, 1), backend(4, 80, 4)];
        let t = Maglev::build(&list, table_size_for(100));
        let c = counts(&t, list.len());
        // M = 10007, sum of weights 8: shares 1250.9, 2501.8, 1250.9, 5003.5.
        assert_eq!(c.iter().sum::<usize>(), 10007);
        for (b, &got) in list.iter().zip(&c) {
            let share = 10007.0 * f64::from(b.weight) / 8.0;
            assert!((got as f64 - share).abs() <= 2.0, "{b:?}: {got} slots, share {share}");
        }
        let ratio = c[1] as f64 / c[0] as f64;
        assert!((1.99..=2.01).contains(&ratio), "weight 2 / weight 1 = {ratio}");
    }

    #[allow(clippy::manual_is_multiple_of)] // rust-version 1.80, see is_prime
    fn is_prime_slow(n: u32) -> bool {
        n >= 2 && (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0)
    }

    #[test]
    fn table_size_is_the_smallest_prime_at_or_above_100n_within_bounds() {
        for n in 0..=700usize {
            let m = table_size_for(n);
            assert!(is_prime_slow(m), "n={n}: {m} is not prime");
            assert!((MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&m), "n={n}: {m} out of bounds");
            let want = (n as u32 * 100).clamp(MIN_TABLE_SIZE, MAX_TABLE_SIZE);
            assert!(m >= want, "n={n}: {m} < {want}");
            assert!((want..m).all(|x| !is_prime_slow(x)), "n={n}: a smaller prime than {m} fits");
        }
        // Clamped at both ends.
        assert_eq!(table_size_for(0), 251);
        assert_eq!(table_size_for(1), 251);
        assert_eq!(table_size_for(2), 251);
        assert_eq!(table_size_for(3), 307);
        assert_eq!(table_size_for(100), 10007);
        assert_eq!(table_size_for(655), 65519);
        assert_eq!(table_size_for(656), 65537);
        assert_eq!(table_size_for(usize::MAX), 65537);
    }

    #[test]
    fn non_prime_size_is_raised_to_the_next_prime() {
        let list = [backend(1, 80, 1), backend(2, 80, 1)];
        assert_eq!(Maglev::build(&list, 250).len(), 251);
        assert_eq!(Maglev::build(&list, 251).len(), 251);
        assert_eq!(Maglev::build(&list, 0).len(), 2);
    }

    #[test]
    fn remap_maps_every_slot() {
        let list = [backend(1, 80, 1), backend(2, 80, 1)];
        let t = Maglev::build(&list, 251);
        let r = t.remap(|i| i + 10);
        assert!(t.slots().iter().zip(r.slots()).all(|(a, b)| a + 10 == *b));
    }

    /// The first 32 slots of a fixed table. Every gateway must compute exactly
    /// this (ECMP across gateways relies on it), so a change here is a
    /// flow-reshuffling upgrade. The values were computed by this code and
    /// cross-checked against an independent Python re-implementation of the
    /// same algorithm (fmix64 offset/skip of the tagged address, as each
    /// address is unique here; (address, port)-sorted turns), which gave the
    /// same slots and the same 84/84/83 split. Regenerated when the hash input
    /// became the address alone (so a Service's ports share one table).
    #[test]
    fn golden_table() {
        let list = [
            MaglevBackend { addr: Ipv4Addr::new(198, 18, 0, 10).into(), port: 80, weight: 1 },
            MaglevBackend { addr: Ipv4Addr::new(198, 18, 0, 11).into(), port: 80, weight: 1 },
            MaglevBackend { addr: Ipv4Addr::new(198, 18, 0, 12).into(), port: 80, weight: 1 },
        ];
        let t = Maglev::build(&list, 251);
        assert_eq!(t.len(), 251);
        #[rustfmt::skip]
        let golden: [u16; 32] = [
            2, 2, 2, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 2,
            2, 2, 0, 2, 2, 2, 0, 2, 0, 0, 2, 0, 0, 0, 2, 2,
        ];
        assert_eq!(&t.slots()[..32], &golden);
        assert_eq!(counts(&t, 3), [84, 84, 83]);
        // Listed in another order, the same identities land in the same slots.
        let shuffled = [list[2], list[0], list[1]];
        assert_eq!(identities(&Maglev::build(&shuffled, 251), &shuffled), identities(&t, &list));
        // pick: Lemire reduction, hash 0 -> slot 0, u32::MAX -> the last slot.
        assert_eq!(t.pick(0), Some(golden[0]));
        assert_eq!(t.pick(u32::MAX), t.slots().last().copied());
        assert_eq!(t.pick(1 << 27), Some(t.slots()[(251u64 << 27 >> 32) as usize]));
    }

    /// IPv6 backends (2001:2::/48, RFC 5180) get a balanced table that does
    /// not depend on their order, whose hash inputs never equal an IPv4
    /// one's, and in which two ports of one address are two backends.
    #[test]
    fn ipv6_backends() {
        let v6 = |i: u16, port| MaglevBackend {
            addr: IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10 + i)),
            port,
            weight: 1,
        };
        let list: Vec<_> = (0..3).map(|i| v6(i, 80)).collect();
        let t = Maglev::build(&list, 251);
        let mut c = counts(&t, 3);
        c.sort_unstable();
        assert_eq!(c, [83, 84, 84]);
        let shuffled = [list[1], list[2], list[0]];
        assert_eq!(identities(&Maglev::build(&shuffled, 251), &shuffled), identities(&t, &list));
        let inputs: BTreeSet<u64> = list
            .iter()
            .flat_map(|b| [b.hash_input(true), b.hash_input(false)])
            .chain((0..3).flat_map(|i| [backend(i, 80, 1).hash_input(true), backend(i, 80, 1).hash_input(false)]))
            .collect();
        assert_eq!(inputs.len(), 12);
        let shared = [v6(0, 80), v6(0, 443)];
        let mut c = counts(&Maglev::build(&shared, 251), 2);
        c.sort_unstable();
        assert_eq!(c, [125, 126]);
    }

    proptest! {
        /// With one backend per address, the ports do not change the table:
        /// the ports of a Service (same Pods, a targetPort each) share it.
        #[test]
        fn unique_addresses_ignore_ports(list in backends(1..=100), ports in prop::collection::vec(1u16..=u16::MAX, 100)) {
            let mut seen = BTreeSet::new();
            let list: Vec<_> = list.into_iter().filter(|b| seen.insert(b.addr)).collect();
            let other: Vec<_> = list.iter().zip(ports).map(|(b, p)| MaglevBackend { port: p, ..*b }).collect();
            let m = table_size_for(list.len());
            prop_assert_eq!(Maglev::build(&list, m), Maglev::build(&other, m));
        }
    }

    /// Backends sharing an address are told apart by port (both get slots);
    /// the backends with an address of their own keep their address-only
    /// permutations.
    #[test]
    fn shared_address_is_told_apart_by_port() {
        let list = [backend(1, 80, 1), backend(1, 81, 1), backend(2, 80, 1), backend(3, 80, 1)];
        let t = Maglev::build(&list, 401);
        assert!(counts(&t, 4).iter().all(|&c| (100..=101).contains(&c)), "{:?}", counts(&t, 4));
        let moved = [backend(1, 80, 1), backend(1, 81, 1), backend(2, 9000, 1), backend(3, 9001, 1)];
        assert_eq!(Maglev::build(&moved, 401), t);
    }
}
