//! The receiving side: counts stamped frames per (generator, thread) stream.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::frame::Stamp;
use super::ring::{RxRing, RxRingConfig, RxRingStats};
use super::stats::{LatencyHist, SeqTracker};

/// Settings of one `rx` run.
#[derive(Debug, Clone)]
pub struct RxConfig {
    /// Interface index.
    pub ifindex: u32,
    /// Stop after this long (None: no limit).
    pub duration: Option<Duration>,
    /// Stop after this many stamped frames (0: no limit).
    pub count: u64,
    /// Ring geometry.
    pub ring: RxRingConfig,
}

/// Everything `rx` counted.
#[derive(Debug, Default, Clone)]
pub struct RxReport {
    /// Stamped frames received.
    pub packets: u64,
    /// Other frames seen on the interface.
    pub other: u64,
    /// Sum over the streams of [`SeqTracker::lost`].
    pub lost: u64,
    /// Sum of reordered frames.
    pub reordered: u64,
    /// Sum of duplicates.
    pub duplicates: u64,
    /// Streams (generator, thread) seen.
    pub streams: usize,
    /// Kernel receive time of the first and last stamped frame (ns).
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
    /// Latency samples.
    pub latency: LatencyHist,
    /// The ring's kernel counters (drops: ring full).
    pub ring: RxRingStats,
}

impl RxReport {
    /// Seconds from the first to the last stamped frame.
    pub fn seconds(&self) -> f64 {
        self.last_ns.saturating_sub(self.first_ns) as f64 / 1e9
    }

    /// Stamped frames per second over [`RxReport::seconds`].
    pub fn pps(&self) -> f64 {
        let s = self.seconds();
        if s > 0.0 {
            (self.packets.saturating_sub(1)) as f64 / s
        } else {
            0.0
        }
    }
}

impl fmt::Display for RxReport {
    /// The machine-readable result line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |ns: u64| ns as f64 / 1000.0;
        write!(
            f,
            "rx_packets={} rx_pps={:.0} lost={} reordered={} duplicates={} lat_p50_us={:.1} lat_p99_us={:.1} \
             lat_max_us={:.1} seconds={:.3} streams={} ring_drops={} other_packets={}",
            self.packets,
            self.pps(),
            self.lost,
            self.reordered,
            self.duplicates,
            us(self.latency.quantile(0.5)),
            us(self.latency.quantile(0.99)),
            us(self.latency.max()),
            self.seconds(),
            self.streams,
            self.ring.drops,
            self.other,
        )
    }
}

/// The per-frame accounting, separate from the socket for tests.
#[derive(Debug, Default)]
pub struct RxCounter {
    /// Per (generator, thread). ahash's map, not std's: its keys are fixed in
    /// the fuzz build (`svcgate_fuzz::init`), so the `pktgen_stamp` target
    /// takes the same edges for the same input (AFL stability).
    streams: HashMap<u16, SeqTracker, ahash::RandomState>,
    report: RxReport,
}

impl RxCounter {
    /// Accounts one received frame with its kernel receive time.
    pub fn frame(&mut self, data: &[u8], rx_ns: u64) {
        let Some(st) = Stamp::parse(data) else {
            self.report.other += 1;
            return;
        };
        let r = &mut self.report;
        if r.packets == 0 {
            r.first_ns = rx_ns;
        }
        r.packets += 1;
        r.last_ns = rx_ns;
        r.latency.record(st.ts_ns, rx_ns);
        self.streams.entry(u16::from(st.generator) << 8 | u16::from(st.thread)).or_default().record(st.seq);
    }

    /// Stamped frames so far.
    pub fn packets(&self) -> u64 {
        self.report.packets
    }

    /// The totals.
    pub fn report(&self) -> RxReport {
        let mut r = self.report.clone();
        r.streams = self.streams.len();
        for t in self.streams.values() {
            r.lost += t.lost;
            r.reordered += t.reordered;
            r.duplicates += t.duplicates;
        }
        r
    }
}

/// Receives until the duration, the count or `stop`; then reports. Calls
/// `ready` once the ring is bound (frames from then on are seen).
pub fn run(cfg: &RxConfig, stop: &AtomicBool, ready: impl FnOnce()) -> std::io::Result<RxReport> {
    let mut ring = RxRing::open(cfg.ifindex, cfg.ring)?;
    ring.stats()?; // reset the kernel counters
    ready();
    let start = Instant::now();
    let mut c = RxCounter::default();
    let mut ring_stats = RxRingStats::default();
    loop {
        ring.poll(100, |f| c.frame(f.data, f.ts_ns));
        if stop.load(Ordering::Relaxed)
            || cfg.duration.is_some_and(|d| start.elapsed() >= d)
            || (cfg.count > 0 && c.packets() >= cfg.count)
        {
            break;
        }
    }
    // Frames already in the ring count (blocks retire within retire_ms).
    let until = Instant::now() + Duration::from_millis(u64::from(cfg.ring.retire_ms) * 2 + 10);
    while Instant::now() < until && (cfg.count == 0 || c.packets() < cfg.count) {
        ring.poll(5, |f| c.frame(f.data, f.ts_ns));
    }
    let s = ring.stats()?;
    ring_stats.packets += s.packets;
    ring_stats.drops += s.drops;
    let mut r = c.report();
    r.ring = ring_stats;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktgen::flows::Flow;
    use crate::pktgen::frame::{FrameBuilder, Proto};

    #[test]
    fn counts_streams_loss_and_latency() {
        let fl = [Flow { src: 1, dst: 2, sport: 3, dport: 4 }];
        let b = FrameBuilder::new(Proto::Udp, [0; 6], [0; 6], &fl);
        let mut c = RxCounter::default();
        let mut buf = [0u8; 64];
        for thread in 0..2u8 {
            for seq in (0..100u32).filter(|s| thread == 0 || s % 10 != 0) {
                let n = b.write(&mut buf, 0, 64, &Stamp { generator: 9, thread, seq, ts_ns: 1_000_000 });
                c.frame(&buf[..n], 1_000_000 + 20_000);
            }
        }
        c.frame(&[0u8; 60], 0);
        let r = c.report();
        assert_eq!((r.packets, r.other, r.streams, r.lost, r.reordered, r.duplicates), (190, 1, 2, 10, 0, 0));
        let line = r.to_string();
        assert!(line.starts_with("rx_packets=190 "), "{line}");
        assert!(line.contains(" lat_p50_us=20.0 "), "{line}");
    }
}
