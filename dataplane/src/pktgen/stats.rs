//! Receive-side accounting: per-stream sequence tracking (loss, reordering,
//! duplicates) and a latency histogram.

/// Sequence numbers remembered behind the highest one seen, to tell a late
/// frame (reordered) from a second copy (duplicate).
pub const WINDOW: u32 = 8192;

/// Sequence accounting of one (generator, thread) stream, whose sequence
/// starts at 0 and increments by one per frame (wrapping at 2^32, compared
/// with serial-number arithmetic).
///
/// - `seq == next`: in order.
/// - `seq > next`: the frames in between are counted lost (for now).
/// - `seq < next`, not seen before: reordered; it was counted lost, so lost
///   goes down by one. Further back than [`WINDOW`] it cannot be checked and
///   is taken as reordered too.
/// - `seq < next`, seen before: duplicate.
///
/// Frames lost after the last one received cannot be seen here; compare
/// `received` with the sender's count for those.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    next: u32,
    seen: Vec<u64>,
    /// Frames received (duplicates included).
    pub received: u64,
    /// Gaps not (yet) filled by late frames.
    pub lost: u64,
    /// Frames that arrived after a later one.
    pub reordered: u64,
    /// Frames received more than once.
    pub duplicates: u64,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker { next: 0, seen: vec![0; (WINDOW / 64) as usize], received: 0, lost: 0, reordered: 0, duplicates: 0 }
    }
}

impl SeqTracker {
    fn bit(&mut self, seq: u32) -> (&mut u64, u64) {
        let i = seq % WINDOW;
        (&mut self.seen[(i / 64) as usize], 1u64 << (i % 64))
    }

    /// Accounts frame `seq`.
    pub fn record(&mut self, seq: u32) {
        self.received += 1;
        let d = seq.wrapping_sub(self.next) as i32;
        if d >= 0 {
            // In order or ahead: forget the slots the window slides over.
            let gap = d as u32;
            self.lost += u64::from(gap);
            if gap >= WINDOW {
                self.seen.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in 0..gap {
                    let (w, m) = self.bit(self.next.wrapping_add(s));
                    *w &= !m;
                }
            }
            let (w, m) = self.bit(seq);
            *w |= m;
            self.next = seq.wrapping_add(1);
        } else if d.unsigned_abs() <= WINDOW {
            let (w, m) = self.bit(seq);
            if *w & m != 0 {
                self.duplicates += 1;
            } else {
                *w |= m;
                self.reordered += 1;
                self.lost = self.lost.saturating_sub(1);
            }
        } else {
            self.reordered += 1;
            self.lost = self.lost.saturating_sub(1);
        }
    }
}

/// Latency histogram in nanoseconds, log-linear (32 sub-buckets per power of
/// two: about 3% resolution), exact below 64 ns; exact maximum.
#[derive(Debug, Clone)]
pub struct LatencyHist {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
    /// Samples whose receive time was before their send time (clock skew
    /// between stamping points); counted as 0.
    pub negative: u64,
}

const SUB: u32 = 32;

impl Default for LatencyHist {
    fn default() -> Self {
        LatencyHist { buckets: vec![0; 64 + 58 * SUB as usize + SUB as usize], count: 0, max: 0, negative: 0 }
    }
}

fn bucket(v: u64) -> usize {
    if v < 64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= 6
    let sub = (v >> (e - 5)) & u64::from(SUB - 1);
    64 + ((e - 6) * SUB) as usize + sub as usize
}

fn bucket_low(b: usize) -> u64 {
    if b < 64 {
        return b as u64;
    }
    let e = (b - 64) as u32 / SUB + 6;
    let sub = (b - 64) as u64 % u64::from(SUB);
    (1u64 << e) | (sub << (e - 5))
}

impl LatencyHist {
    /// Records one sample: receive time minus send time.
    pub fn record(&mut self, tx_ns: u64, rx_ns: u64) {
        let v = match rx_ns.checked_sub(tx_ns) {
            Some(v) => v,
            None => {
                self.negative += 1;
                0
            }
        };
        self.buckets[bucket(v)] += 1;
        self.count += 1;
        self.max = self.max.max(v);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest sample (ns).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `q`-quantile (0..=1) in ns: the lower bound of its bucket, at most
    /// the maximum (the 1-quantile is the maximum); 0 without samples.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == self.count {
            return self.max;
        }
        let mut acc = 0;
        for (b, &c) in self.buckets.iter().enumerate() {
            acc += c;
            if acc >= rank {
                return bucket_low(b).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream() {
        let mut t = SeqTracker::default();
        (0..10_000).for_each(|s| t.record(s));
        assert_eq!((t.received, t.lost, t.reordered, t.duplicates), (10_000, 0, 0, 0));
    }

    #[test]
    fn loss_reorder_duplicates() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 2, 5, 6, 3, 7, 7, 3, 10] {
            t.record(s);
        }
        // 4, 8, 9 missing; 3 late; 7 and 3 again.
        assert_eq!((t.received, t.lost, t.reordered, t.duplicates), (10, 3, 1, 2));
        // Loss before the first frame counts (sequences start at 0).
        let mut t = SeqTracker::default();
        t.record(5);
        assert_eq!(t.lost, 5);
        // A huge jump clears the window; a very late frame is still
        // reordered, not a duplicate.
        let mut t = SeqTracker::default();
        t.record(0);
        t.record(100_000);
        t.record(1);
        assert_eq!((t.lost, t.reordered, t.duplicates), (99_998, 1, 0));
    }

    #[test]
    fn sequence_wraps() {
        let mut t = SeqTracker { next: u32::MAX - 2, ..Default::default() };
        for s in [u32::MAX - 2, u32::MAX - 1, u32::MAX, 0, 1, 3, 2] {
            t.record(s);
        }
        assert_eq!((t.received, t.lost, t.reordered, t.duplicates), (7, 0, 1, 0));
    }

    #[test]
    fn latency_quantiles() {
        let mut h = LatencyHist::default();
        assert_eq!(h.quantile(0.5), 0);
        for v in 1..=1000u64 {
            h.record(0, v * 1000);
        }
        h.record(10, 5);
        assert_eq!(h.negative, 1);
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.04, "p50 {p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.04, "p99 {p99}");
        assert_eq!(h.max(), 1_000_000);
        assert_eq!(h.quantile(1.0), 1_000_000);
        for v in [0u64, 1, 63, 64, 65, 1000, 1 << 40, u64::MAX] {
            let b = bucket(v);
            assert!(bucket_low(b) <= v && b < h.buckets.len(), "{v}");
        }
    }
}
