//! The sending side: one TX ring per thread, each thread pinned to a CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::flows::FlowPicker;
use super::frame::{FrameBuilder, Sizes, Stamp, FCS};
use super::ring::{TxRing, TxRingConfig};

/// Settings of one `tx` run.
#[derive(Debug, Clone)]
pub struct TxConfig {
    /// Interface index.
    pub ifindex: u32,
    /// Frame sizes.
    pub sizes: Sizes,
    /// Total frames over all threads (0: no limit).
    pub count: u64,
    /// Time limit (None: none).
    pub duration: Option<Duration>,
    /// Total rate limit in frames per second over all threads (0: none).
    pub rate: u64,
    /// Frames written per kick.
    pub burst: usize,
    /// Number of sending threads.
    pub threads: usize,
    /// CPUs to pin the threads to (thread i on `cpus[i % len]`); empty: none.
    pub cpus: Vec<usize>,
    /// Generator id in the stamps.
    pub generator: u8,
    /// TX ring slots per thread.
    pub ring_frames: usize,
    /// `SO_SNDBUFFORCE` bytes per socket (0: default buffer).
    pub sndbuf: usize,
    /// Thread i sends only flows `[i*n/threads, (i+1)*n/threads)` instead of
    /// all of them (with n = threads: one flow per thread).
    pub split_flows: bool,
    /// Frames copied into the skb's linear area (see [`TxRingConfig::linear`]).
    pub linear: bool,
}

/// What one thread did.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxThreadStats {
    /// Frames handed to the kernel.
    pub packets: u64,
    /// Those of them carrying the stamp (all but TCP SYNs under 76 bytes).
    pub stamped: u64,
    /// Bytes of those frames (with FCS).
    pub bytes: u64,
    /// Frames the kernel rejected as malformed.
    pub wrong_format: u64,
    /// From the first frame to the ring drained.
    pub elapsed: Duration,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Share `i` of `total` split over `n` parts (the first parts get the rest).
fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n as u64;
    total / n + u64::from((i as u64) < total % n)
}

fn thread_main(
    cfg: &TxConfig,
    builder: &FrameBuilder,
    thread: usize,
    stop: &AtomicBool,
) -> std::io::Result<TxThreadStats> {
    let ring_cfg = TxRingConfig {
        max_frame: cfg.sizes.max() - FCS,
        frames: cfg.ring_frames,
        sndbuf: cfg.sndbuf,
        linear: cfg.linear,
    };
    let mut ring = TxRing::open(cfg.ifindex, ring_cfg)?;
    let limit = if cfg.count == 0 { u64::MAX } else { share(cfg.count, cfg.threads, thread) };
    let rate = share(cfg.rate, cfg.threads, thread);
    if cfg.rate > 0 && rate == 0 {
        return Ok(TxThreadStats::default());
    }
    let (lo, hi) = if cfg.split_flows {
        let n = builder.flows();
        (thread * n / cfg.threads, (thread + 1) * n / cfg.threads)
    } else {
        (0, builder.flows())
    };
    if hi <= lo {
        return Err(std::io::Error::other(format!("thread {thread} has no flows (fewer flows than threads)")));
    }
    let mut picker = FlowPicker::new(hi - lo, thread as u64);
    let burst = cfg.burst.clamp(1, ring.len());
    let (mut sent, mut bytes, mut seq, mut stamped) = (0u64, 0u64, 0u32, 0u64);
    let start = Instant::now();
    while sent < limit && !stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed();
        if cfg.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        let mut want = (burst as u64).min(limit - sent);
        if rate > 0 {
            let due = (elapsed.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
            if due <= sent {
                let next = Duration::from_nanos(((sent + 1) as u128 * 1_000_000_000 / u128::from(rate)) as u64);
                let wait = next.saturating_sub(elapsed);
                if wait > Duration::from_micros(100) {
                    std::thread::sleep(wait - Duration::from_micros(50));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            want = want.min(due - sent);
        }
        // One timestamp per burst: the stamp is the time the burst was
        // written, a few hundred ns before its last frame at most.
        let ts_ns = now_ns();
        let mut n = 0u64;
        while n < want {
            let size = cfg.sizes.nth(sent + n);
            let flow = lo + picker.next_index();
            let stamp = Stamp { generator: cfg.generator, thread: thread as u8, seq, ts_ns };
            if !ring.try_push(|buf| builder.write(buf, flow, size, &stamp)) {
                break;
            }
            // Sequence numbers count stamped frames only (see frame.rs).
            let st = builder.stamps(size);
            seq = seq.wrapping_add(u32::from(st));
            stamped += u64::from(st);
            bytes += size as u64;
            n += 1;
        }
        sent += n;
        ring.kick()?;
        if n < want {
            // Ring full: the kernel still owns the next slot.
            ring.wait_writable(1);
        }
    }
    // Drain: every marked slot sent and released (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(2);
    while ring.in_flight() > 0 && Instant::now() < deadline {
        ring.kick()?;
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(TxThreadStats { packets: sent, stamped, bytes, wrong_format: ring.wrong_format, elapsed: start.elapsed() })
}

/// Runs `cfg.threads` senders of `builder`'s frames until the count, the
/// duration or `stop`; returns each thread's result.
pub fn run(cfg: &TxConfig, builder: Arc<FrameBuilder>, stop: Arc<AtomicBool>) -> Vec<std::io::Result<TxThreadStats>> {
    let handles: Vec<_> = (0..cfg.threads)
        .map(|t| {
            let (cfg, builder, stop) = (cfg.clone(), builder.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("pktgen-tx{t}"))
                .spawn(move || {
                    if !cfg.cpus.is_empty() {
                        let cpu = cfg.cpus[t % cfg.cpus.len()];
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                            return Err(std::io::Error::other(format!("cannot pin thread {t} to cpu {cpu}")));
                        }
                    }
                    thread_main(&cfg, &builder, t, &stop)
                })
                .expect("spawn tx thread")
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("tx thread panicked")))).collect()
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up() {
        for (total, n) in [(10u64, 3usize), (0, 4), (7, 7), (1_000_001, 2)] {
            assert_eq!((0..n).map(|i| share(total, n, i)).sum::<u64>(), total);
        }
    }
}
