//! Maglev consistent hashing (Eisenbud et al., NSDI'16, section 3.4).
//!
//! Each backend derives a permutation of the `M` table slots from two hashes of
//! its *identity* (address and port, never its position in a list), so that the
//! table is the same on every gateway and after every rebuild, and a backend
//! change moves few flows. Backends then take turns claiming their next
//! preferred free slot until the table is full: each ends up with `floor(M/N)`
//! or `ceil(M/N)` slots (scaled by weight when weights differ).
//!
//! The turn order is the backends sorted by identity, so the table does not
//! depend on the order in which the control plane lists endpoints. Slot values
//! are indices into the slice passed to [`Maglev::build`].

use std::net::Ipv4Addr;

use crate::hash::fmix64;

/// Smallest table: with one backend it still gives a uniform spread of hashes.
pub const MIN_TABLE_SIZE: u32 = 251;
/// Largest table: 65537 is prime and keeps the table at 128 KiB (u16 slots).
pub const MAX_TABLE_SIZE: u32 = 65537;
/// Slots per backend the paper recommends for <= 1% imbalance.
pub const SLOTS_PER_BACKEND: u32 = 100;

const SEED_OFFSET: u64 = 0x6d61_676c_6576_0001;
const SEED_SKIP: u64 = 0x6d61_676c_6576_0002;

/// A backend's identity and weight, as Maglev sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaglevBackend {
    /// Backend address.
    pub addr: Ipv4Addr,
    /// Backend port.
    pub port: u16,
    /// Relative weight; 0 is treated as 1.
    pub weight: u32,
}

impl MaglevBackend {
    fn identity(&self) -> u64 {
        (u64::from(u32::from(self.addr)) << 16) | u64::from(self.port)
    }
}

/// A built Maglev lookup table: slot -> backend index.
#[derive(Clone, PartialEq, Eq)]
pub struct Maglev {
    slots: Box<[u16]>,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev").field("size", &self.slots.len()).finish()
    }
}

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
    let want = u32::try_from(n)
        .unwrap_or(u32::MAX)
        .saturating_mul(SLOTS_PER_BACKEND)
        .clamp(MIN_TABLE_SIZE, MAX_TABLE_SIZE);
    (want..=MAX_TABLE_SIZE).find(|&m| is_prime(m)).unwrap_or(MAX_TABLE_SIZE)
}

impl Maglev {
    /// A table with no backends: every lookup misses.
    pub fn empty() -> Self {
        Self { slots: Box::new([]) }
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
        let mut offset = Vec::with_capacity(n);
        let mut skip = Vec::with_capacity(n);
        let mut weight = Vec::with_capacity(n);
        for &i in &order {
            let b = &backends[usize::from(i)];
            let id = b.identity();
            offset.push(fmix64(id ^ SEED_OFFSET) % m64);
            skip.push(fmix64(id ^ SEED_SKIP) % (m64 - 1) + 1);
            weight.push(u64::from(b.weight.max(1)));
        }
        let wmax = weight.iter().copied().max().unwrap_or(1);

        const FREE: u16 = u16::MAX;
        let mut slots = vec![FREE; m as usize];
        let mut next = vec![0u64; n];
        let mut filled = 0u32;
        let mut round = 0u64;
        'fill: loop {
            for k in 0..n {
                // Weighted turns: backend k claims a slot in this round when
                // its cumulative share floor(round*w/wmax) steps up.
                let turns = ((round + 1) * weight[k]) / wmax - (round * weight[k]) / wmax;
                for _ in 0..turns {
                    let slot = loop {
                        let c = (offset[k] + next[k] * skip[k]) % m64;
                        next[k] += 1;
                        if slots[c as usize] == FREE {
                            break c as usize;
                        }
                    };
                    slots[slot] = order[k];
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
            round += 1;
        }
        Self { slots: slots.into_boxed_slice() }
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

    /// The same table with every slot value passed through `f`, e.g. to map
    /// indices into a subset back to indices into the full backend list.
    pub fn remap(&self, f: impl Fn(u16) -> u16) -> Self {
        Self { slots: self.slots.iter().map(|&s| f(s)).collect() }
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
