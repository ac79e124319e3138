//! RCU-style publication of table generations.
//!
//! The control thread builds a complete new value beside the old one and
//! publishes it with one atomic pointer swap ([`arc_swap::ArcSwap`]). Workers
//! never lock: at each batch boundary they compare one atomic generation
//! counter with the one they hold ([`Reader::refresh`]) and only on a change
//! take a new `Arc`. A worker keeps using its `Arc` for the whole batch, so a
//! generation is freed exactly when the last worker has moved past it (the
//! `Arc`'s count reaching zero is the quiescent point). Why arc-swap rather than
//! crossbeam-epoch or a hand-written QSBR: the reader side is one relaxed load
//! per batch either way, and arc-swap needs no `unsafe` in this crate and no
//! per-worker registration.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

struct Shared<T> {
    current: ArcSwap<T>,
    /// Bumped after every swap; the cheap thing readers poll.
    version: AtomicU64,
    /// The version each reader last took, for "has every worker moved on?".
    seen: parking_lot::Mutex<Vec<Arc<AtomicU64>>>,
}

/// The control thread's end: publishes new generations.
pub struct Publisher<T> {
    shared: Arc<Shared<T>>,
}

/// A worker's end: a cached `Arc` refreshed at batch boundaries.
pub struct Reader<T> {
    shared: Arc<Shared<T>>,
    cached: Arc<T>,
    version: u64,
    seen: Arc<AtomicU64>,
}

impl<T> fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher").field("version", &self.shared.version.load(Ordering::Relaxed)).finish()
    }
}

impl<T> fmt::Debug for Reader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader").field("version", &self.version).finish()
    }
}

impl<T> Publisher<T> {
    /// Starts with `initial` as version 0.
    pub fn new(initial: T) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(initial),
                version: AtomicU64::new(0),
                seen: parking_lot::Mutex::new(Vec::new()),
            }),
        }
    }

    /// Publishes `next`; readers pick it up at their next refresh. Returns the
    /// new version number.
    pub fn publish(&self, next: T) -> u64 {
        self.shared.current.store(Arc::new(next));
        self.shared.version.fetch_add(1, Ordering::Release) + 1
    }

    /// The value most recently published.
    pub fn current(&self) -> Arc<T> {
        self.shared.current.load_full()
    }

    /// The current version number.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// True when every reader has refreshed to at least `version` (readers
    /// that were dropped do not count). Used to measure how long a change
    /// takes to go live.
    pub fn all_readers_at(&self, version: u64) -> bool {
        let mut seen = self.shared.seen.lock();
        seen.retain(|s| Arc::strong_count(s) > 1);
        seen.iter().all(|s| s.load(Ordering::Acquire) >= version)
    }

    /// A new reader, holding the current value.
    pub fn reader(&self) -> Reader<T> {
        let version = self.shared.version.load(Ordering::Acquire);
        let cached = self.shared.current.load_full();
        let seen = Arc::new(AtomicU64::new(version));
        self.shared.seen.lock().push(Arc::clone(&seen));
        Reader { shared: Arc::clone(&self.shared), cached, version, seen }
    }
}

impl<T> Reader<T> {
    /// Call at a batch boundary: takes the newest value if one was published
    /// since the last call. One atomic load when nothing changed.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        let v = self.shared.version.load(Ordering::Acquire);
        if v == self.version {
            return false;
        }
        self.cached = self.shared.current.load_full();
        self.version = v;
        self.seen.store(v, Ordering::Release);
        true
    }

    /// The value this reader holds (stable until the next `refresh`).
    #[inline(always)]
    pub fn get(&self) -> &T {
        &self.cached
    }

    /// The version this reader holds.
    pub fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_new_generation_only_after_refresh() {
        let p = Publisher::new(1u32);
        let mut r = p.reader();
        assert_eq!(*r.get(), 1);
        let v = p.publish(2);
        assert_eq!(*r.get(), 1, "no change mid-batch");
        assert!(!p.all_readers_at(v));
        assert!(r.refresh());
        assert_eq!(*r.get(), 2);
        assert!(p.all_readers_at(v));
        assert!(!r.refresh());
    }

    #[test]
    fn old_generation_freed_when_last_reader_moves_on() {
        let p = Publisher::new(vec![0u8; 16]);
        let mut a = p.reader();
        let mut b = p.reader();
        let weak = Arc::downgrade(&a.cached);
        p.publish(vec![1u8; 16]);
        a.refresh();
        assert!(weak.upgrade().is_some(), "b still holds generation 0");
        b.refresh();
        assert!(weak.upgrade().is_none(), "freed once every reader moved on");
    }

    #[test]
    fn dropped_readers_do_not_block() {
        let p = Publisher::new(0u8);
        let r = p.reader();
        let v = p.publish(1);
        drop(r);
        assert!(p.all_readers_at(v));
    }
}
