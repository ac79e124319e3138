//! The polling worker: one thread, pinned to one core, owning one
//! [`XskPorts`] (its sockets and UMEM) and one [`BatchHandler`].
//!
//! The loop, modelled on DPDK l3fwd's `lpm_main_loop`:
//!
//! 1. for each port: burst-receive up to [`BATCH`] frames;
//! 2. hand them to the handler as one `&mut [Frame]`;
//! 3. dispatch the verdicts: Forward and Reply descriptors are queued per
//!    egress port and enqueued on that port's TX ring in one commit with at
//!    most one kick; Pass frames go to the [`ExceptionPath`]; Drop and Pass
//!    chunks return to the free stack;
//! 4. reap completion rings, re-kick TX rings with unsent entries, top up the
//!    fill rings;
//! 5. on a poll that received nothing: count it, call `handler.idle()`,
//!    yield the core every few empty polls (so a kernel thread sharing it,
//!    such as the NAPI thread feeding our RX ring, runs at once), and after
//!    `idle_spins` empty polls in a row sleep `idle_sleep` (zero: never).
//!
//! With `rt_priority` the worker runs SCHED_FIFO: a NAPI thread sharing its
//! core (AF_XDP copy mode) then runs only in its naps, and it naps at least
//! every 10 ms whatever the load (see [`WorkerConfig::rt_priority`]).
//!
//! Nothing in the loop allocates, locks or logs. Counters are single-writer
//! atomics (relaxed load + store), readable from any thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xdpilone::xdp::XdpDesc;

use super::umem::{tsc, XskPorts, BATCH};
use super::{ExceptionPath, XskError};
use crate::nat::{DropReason, Frame, PassReason, Verdict};

/// What a worker runs on each batch. The NAT pipeline implements it; tests
/// use small forwarders.
pub trait BatchHandler: Send {
    /// Decide a verdict for every frame (and rewrite frames in place).
    /// `Verdict::Forward { port }` indexes the worker's ports, in the order
    /// given to [`XskPorts::new`].
    fn handle_batch(&mut self, frames: &mut [Frame<'_>]);
    /// Called on a poll that received nothing (housekeeping, expiry, table
    /// generation pick-up). Keep it short.
    fn idle(&mut self) {}
}

impl<H: BatchHandler + ?Sized> BatchHandler for Box<H> {
    fn handle_batch(&mut self, frames: &mut [Frame<'_>]) {
        (**self).handle_batch(frames)
    }
    fn idle(&mut self) {
        (**self).idle()
    }
}

/// Per-worker counters, written by the worker only.
#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerStats {
    /// Frames received.
    pub rx: AtomicU64,
    /// Frames enqueued for transmission (Forward + Reply).
    pub tx: AtomicU64,
    /// Frames dropped because the egress TX ring was full.
    pub tx_ring_full: AtomicU64,
    /// Frames dropped because the verdict named a port the worker lacks or
    /// a reply length that does not fit the chunk.
    pub bad_verdict: AtomicU64,
    /// Frames passed to the kernel, by reason.
    pub passes: [AtomicU64; PassReason::COUNT],
    /// Of those, frames the exception path could not inject (dropped).
    pub pass_failed: AtomicU64,
    /// Frames dropped by the handler, by reason.
    pub drops: [AtomicU64; DropReason::COUNT],
    /// Polls (over all ports) that received nothing.
    pub empty_polls: AtomicU64,
    /// Bursts that received something.
    pub busy_polls: AtomicU64,
    /// TSC cycles of the poll rounds that received something, from the first
    /// RX burst through TX commit, kicks and ring refills, as testpmd's
    /// `--record-core-cycles` counts them: divide by `rx` for cycles per
    /// packet ([`StatsSnapshot::cycles_per_packet`]).
    pub busy_cycles: AtomicU64,
    /// TSC cycles of every poll round, busy or not (idle sleeps included):
    /// the denominator of the busy ratio.
    pub loop_cycles: AtomicU64,
    /// Frames the kernel reported sent (completion ring).
    pub completed: AtomicU64,
}

/// A plain copy of [`WorkerStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`WorkerStats::rx`].
    pub rx: u64,
    /// See [`WorkerStats::tx`].
    pub tx: u64,
    /// See [`WorkerStats::tx_ring_full`].
    pub tx_ring_full: u64,
    /// See [`WorkerStats::bad_verdict`].
    pub bad_verdict: u64,
    /// Passes by reason, in [`PassReason::ALL`] order.
    pub passes: [u64; PassReason::COUNT],
    /// See [`WorkerStats::pass_failed`].
    pub pass_failed: u64,
    /// Drops by reason, in [`DropReason::ALL`] order.
    pub drops: [u64; DropReason::COUNT],
    /// See [`WorkerStats::empty_polls`].
    pub empty_polls: u64,
    /// See [`WorkerStats::busy_polls`].
    pub busy_polls: u64,
    /// See [`WorkerStats::busy_cycles`].
    pub busy_cycles: u64,
    /// See [`WorkerStats::loop_cycles`].
    pub loop_cycles: u64,
    /// See [`WorkerStats::completed`].
    pub completed: u64,
}

impl StatsSnapshot {
    /// Sum of passes.
    pub fn passed(&self) -> u64 {
        self.passes.iter().sum()
    }
    /// Sum of drops of every kind (handler, TX ring full, bad verdicts,
    /// failed injections).
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum::<u64>() + self.tx_ring_full + self.bad_verdict + self.pass_failed
    }
    /// Busy TSC cycles per received frame (0 before the first frame): the
    /// forwarding core's cost per packet, comparable with testpmd's "CPU
    /// cycles/packet".
    pub fn cycles_per_packet(&self) -> f64 {
        if self.rx == 0 {
            0.0
        } else {
            self.busy_cycles as f64 / self.rx as f64
        }
    }
    /// Share (0..=1) of the loop's time spent in rounds that found work.
    pub fn busy_ratio(&self) -> f64 {
        if self.loop_cycles == 0 {
            0.0
        } else {
            (self.busy_cycles as f64 / self.loop_cycles as f64).min(1.0)
        }
    }
    /// Passes for `r`.
    pub fn pass(&self, r: PassReason) -> u64 {
        self.passes[r as usize]
    }
    /// Drops for `r`.
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
}

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    // Single writer: a relaxed load + store is enough and cheaper than an
    // atomic read-modify-write; readers see a recent value, never a torn one.
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl Default for WorkerStats {
    fn default() -> Self {
        let z = || AtomicU64::new(0);
        Self {
            rx: z(),
            tx: z(),
            tx_ring_full: z(),
            bad_verdict: z(),
            passes: std::array::from_fn(|_| z()),
            pass_failed: z(),
            drops: std::array::from_fn(|_| z()),
            empty_polls: z(),
            busy_polls: z(),
            busy_cycles: z(),
            loop_cycles: z(),
            completed: z(),
        }
    }
}

impl WorkerStats {
    /// Reads every counter (relaxed; not one atomic snapshot).
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            rx: r(&self.rx),
            tx: r(&self.tx),
            tx_ring_full: r(&self.tx_ring_full),
            bad_verdict: r(&self.bad_verdict),
            passes: std::array::from_fn(|i| r(&self.passes[i])),
            pass_failed: r(&self.pass_failed),
            drops: std::array::from_fn(|i| r(&self.drops[i])),
            empty_polls: r(&self.empty_polls),
            busy_polls: r(&self.busy_polls),
            busy_cycles: r(&self.busy_cycles),
            loop_cycles: r(&self.loop_cycles),
            completed: r(&self.completed),
        }
    }
}

/// Scheduling knobs of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Thread name.
    pub name: String,
    /// Core to pin to (`core_affinity` id); `None`: not pinned.
    pub core: Option<usize>,
    /// Empty polls in a row before sleeping.
    pub idle_spins: u32,
    /// Sleep after `idle_spins` empty polls; zero: never sleep (pure
    /// DPDK-style busy polling).
    pub idle_sleep: Duration,
    /// Real-time (SCHED_FIFO) priority of the worker thread, 1..=99; 0:
    /// normal scheduling. Where the kernel half of the receive path runs in
    /// a NAPI thread on the worker's core (AF_XDP copy mode: veth, drivers
    /// without zero-copy), that thread then runs only while the worker naps
    /// (`idle_sleep`, which must not be zero): the worker drains its rings
    /// without being preempted, and under overload the kernel stops at the
    /// device's queue, before it copies a frame into the UMEM, instead of
    /// copying frames only to drop them on a full RX ring (receive livelock,
    /// Mogul and Ramakrishnan 1997). Needs CAP_SYS_NICE.
    pub rt_priority: u8,
    /// Give up every capability once pinned and scheduled, before the
    /// first poll (see [`crate::privileges`]): a worker's sockets, UMEM and
    /// TUN device need none.
    pub drop_capabilities: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: "svcgate-xsk".into(),
            core: None,
            idle_spins: 4096,
            idle_sleep: Duration::from_micros(50),
            rt_priority: 0,
            drop_capabilities: false,
        }
    }
}

/// Empty polls in a row between two `sched_yield`s of an idle worker (a
/// power of two).
const YIELD_EVERY: u32 = 8;

/// A worker: ports, handler, counters, stop flag.
pub struct Worker<H> {
    ports: XskPorts,
    handler: H,
    stats: Arc<WorkerStats>,
    stop: Arc<AtomicBool>,
    exception: Option<ExceptionPath>,
    cfg: WorkerConfig,
}

impl<H> std::fmt::Debug for Worker<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("ports", &self.ports).field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// Per-egress-port TX staging of one burst.
struct Staged {
    descs: [XdpDesc; BATCH],
    n: usize,
}

impl<H: BatchHandler + 'static> Worker<H> {
    /// A worker over `ports`. It stops when `stop` becomes true.
    pub fn new(
        ports: XskPorts,
        handler: H,
        stop: Arc<AtomicBool>,
        exception: Option<ExceptionPath>,
        cfg: WorkerConfig,
    ) -> Self {
        Self { ports, handler, stats: Arc::new(WorkerStats::default()), stop, exception, cfg }
    }

    /// The counters (share with a stats reader before `spawn`).
    pub fn stats(&self) -> Arc<WorkerStats> {
        Arc::clone(&self.stats)
    }

    /// The ports (e.g. to register their sockets with [`super::Steering`]).
    pub fn ports(&self) -> &XskPorts {
        &self.ports
    }

    /// Runs the loop on a new thread; the thread returns the handler.
    /// Fails if the thread cannot be created or made real-time.
    pub fn spawn(self) -> Result<JoinHandle<H>, XskError> {
        let name = self.cfg.name.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let ready = enter_thread(&self.cfg);
                let ok = ready.is_ok();
                let _ = ready_tx.send(ready);
                if ok {
                    self.run_loop()
                } else {
                    self.handler
                }
            })
            .map_err(|source| XskError::Spawn { name: name.clone(), source })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(source)) => {
                let _ = handle.join();
                Err(XskError::Spawn { name, source })
            }
            // The thread ended before reporting: a panic, which join reports.
            Err(_) => {
                let _ = handle.join();
                Err(XskError::Spawn { name, source: std::io::Error::other("worker thread exited at start") })
            }
        }
    }

    /// The loop, on the worker's thread, until the stop flag is set;
    /// returns the handler.
    fn run_loop(mut self) -> H {
        let nports = self.ports.len();
        let mut staged: Vec<Staged> =
            (0..nports).map(|_| Staged { descs: [XdpDesc::default(); BATCH], n: 0 }).collect();
        let mut descs = [XdpDesc::default(); BATCH];
        let mut verdicts = [Verdict::Drop(DropReason::Malformed); BATCH];
        let mut lens = [0u32; BATCH];
        let frame_size = u64::from(self.ports.frame_size());
        let mut spins = 0u32;
        let st = &*self.stats;
        // The end of the previous round: the loop's cycles run from end to
        // end (idle work, yields and naps included); a busy round's cycles
        // run from its own start (so they never include the idle work of
        // the round before, which would charge a yield's wait to packets).
        let mut last_end = tsc();
        // A real-time worker naps at least every 10 ms. On veth its rings
        // always run dry (the NAPI thread cannot run while it does), but on
        // a NIC whose receive runs in softirq, input at line rate could keep
        // it busy for good and the core from every other thread on it
        // (kworkers, RCU).
        let rt_guard = (self.cfg.rt_priority > 0).then(|| tsc_hz() / 100);
        let mut last_nap = last_end;

        while !self.stop.load(Ordering::Relaxed) {
            let round_start = tsc();
            let mut got = 0usize;
            for p in 0..nports {
                let n = self.ports.rx_burst(p, &mut descs);
                if n == 0 {
                    continue;
                }
                got += n;
                let handler = &mut self.handler;
                self.ports.with_frames(p as u16, &descs[..n], |frames| {
                    handler.handle_batch(frames);
                    for (i, f) in frames.iter().enumerate() {
                        verdicts[i] = if f.buf.is_empty() { Verdict::Drop(DropReason::Malformed) } else { f.verdict };
                        lens[i] = u32::try_from(f.len.min(f.buf.len())).unwrap_or(0);
                    }
                });
                for i in 0..n {
                    let d = descs[i];
                    let room = frame_size - (d.addr & (frame_size - 1));
                    match verdicts[i] {
                        Verdict::Forward { port } if usize::from(port) < nports && lens[i] > 0 => {
                            let s = &mut staged[usize::from(port)];
                            s.descs[s.n] = XdpDesc { addr: d.addr, len: lens[i], options: 0 };
                            s.n += 1;
                        }
                        Verdict::Reply { len } if len > 0 && u64::from(len) <= room => {
                            let s = &mut staged[p];
                            s.descs[s.n] = XdpDesc { addr: d.addr, len: u32::from(len), options: 0 };
                            s.n += 1;
                        }
                        Verdict::Forward { .. } | Verdict::Reply { .. } => {
                            bump(&st.bad_verdict, 1);
                            self.ports.recycle(d.addr);
                        }
                        Verdict::Pass(r) => {
                            bump(&st.passes[r as usize], 1);
                            let ok = match &self.exception {
                                Some(x) => x.inject(self.ports.bytes(&d)).is_ok(),
                                None => false,
                            };
                            if !ok {
                                bump(&st.pass_failed, 1);
                            }
                            self.ports.recycle(d.addr);
                        }
                        Verdict::Drop(r) => {
                            bump(&st.drops[r as usize], 1);
                            self.ports.recycle(d.addr);
                        }
                    }
                }
                let mut sent = 0;
                for (q, s) in staged.iter_mut().enumerate() {
                    if s.n > 0 {
                        let k = self.ports.transmit(q, &s.descs[..s.n]);
                        sent += k;
                        bump(&st.tx_ring_full, (s.n - k) as u64);
                        s.n = 0;
                    }
                }
                bump(&st.rx, n as u64);
                bump(&st.tx, sent as u64);
                bump(&st.busy_polls, 1);
            }
            let done = self.ports.reap_and_refill();
            if done > 0 {
                bump(&st.completed, done as u64);
            }
            let now = tsc();
            bump(&st.loop_cycles, now.wrapping_sub(last_end));
            last_end = now;
            if got > 0 {
                bump(&st.busy_cycles, now.wrapping_sub(round_start));
            }
            if got == 0 {
                bump(&st.empty_polls, 1);
                self.handler.idle();
                spins = spins.saturating_add(1);
                if spins >= self.cfg.idle_spins && !self.cfg.idle_sleep.is_zero() {
                    std::thread::sleep(self.cfg.idle_sleep);
                    last_nap = tsc();
                } else if spins & (YIELD_EVERY - 1) == 0 {
                    // Let a runnable thread on this core have it (a no-op
                    // syscall when there is none). On veth, and on any NIC
                    // without AF_XDP zero-copy, the kernel half of the
                    // receive path (XDP, the copy into the UMEM) runs in a
                    // NAPI thread that may share this core: every cycle spent
                    // spinning on an empty ring is one it cannot use.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            } else {
                spins = 0;
                if rt_guard.is_some_and(|g| now.wrapping_sub(last_nap) > g) {
                    std::thread::sleep(self.cfg.idle_sleep);
                    last_nap = tsc();
                }
            }
        }
        self.handler
    }
}

/// Pins the calling thread (best effort: a core id past the machine's
/// count leaves it unpinned) and makes it real-time if asked to.
fn enter_thread(cfg: &WorkerConfig) -> std::io::Result<()> {
    if let Some(id) = cfg.core {
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    if cfg.rt_priority > 0 {
        if cfg.idle_sleep.is_zero() {
            // A real-time thread that never sleeps would starve every
            // other thread on its core, the NAPI thread feeding it too.
            return Err(std::io::Error::other("a real-time worker needs a non-zero idle_sleep"));
        }
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy, ThreadPriority,
            ThreadPriorityValue, ThreadSchedulePolicy,
        };
        let prio = ThreadPriorityValue::try_from(cfg.rt_priority)
            .map_err(|e| std::io::Error::other(format!("rt_priority {}: {e}", cfg.rt_priority)))?;
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Crossplatform(prio),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .map_err(|e| std::io::Error::other(format!("SCHED_FIFO priority {}: {e:?}", cfg.rt_priority)))?;
    }
    if cfg.drop_capabilities {
        crate::privileges::restrict_thread(crate::privileges::CapSet::EMPTY).map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// The TSC's frequency in Hz, measured once against the monotonic clock over
/// 20 ms (to turn [`WorkerStats::busy_cycles`] into time; the TSC of these
/// CPUs is constant and non-stop, so it ticks at this rate in every P-state).
pub fn tsc_hz() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        let (t0, c0) = (Instant::now(), tsc());
        std::thread::sleep(Duration::from_millis(20));
        let (ns, c) = (t0.elapsed().as_nanos().max(1), tsc().wrapping_sub(c0));
        (u128::from(c) * 1_000_000_000 / ns) as u64
    })
}

/// Sets `stop` on SIGINT and SIGTERM (the flag the workers poll).
pub fn stop_on_signals(stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(stop))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_per_packet_and_busy_ratio_come_from_tsc_counters() {
        let s = StatsSnapshot { rx: 4, busy_cycles: 1000, loop_cycles: 4000, ..Default::default() };
        assert_eq!(s.cycles_per_packet(), 250.0);
        assert_eq!(s.busy_ratio(), 0.25);
        let idle = StatsSnapshot::default();
        assert_eq!((idle.cycles_per_packet(), idle.busy_ratio()), (0.0, 0.0));
    }

    #[test]
    fn a_real_time_worker_must_nap() {
        let cfg = WorkerConfig { rt_priority: 10, idle_sleep: Duration::ZERO, ..Default::default() };
        let e = std::thread::spawn(move || enter_thread(&cfg)).join().unwrap().unwrap_err();
        assert!(e.to_string().contains("idle_sleep"), "{e}");
        let normal = WorkerConfig { idle_sleep: Duration::ZERO, ..Default::default() };
        std::thread::spawn(move || enter_thread(&normal)).join().unwrap().unwrap();
    }

    #[test]
    fn rt_priority_makes_the_thread_sched_fifo() {
        let cfg = WorkerConfig { rt_priority: 3, ..Default::default() };
        let got = std::thread::spawn(move || {
            enter_thread(&cfg).map(|()| std::fs::read_to_string("/proc/thread-self/sched").unwrap_or_default())
        })
        .join()
        .unwrap();
        match got {
            // /proc/<tid>/sched: "policy : 1" is SCHED_FIFO, "prio : 96" is 99 - 3.
            Ok(sched) => {
                let field = |k: &str| {
                    sched
                        .lines()
                        .find(|l| l.starts_with(k))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|v| v.trim().to_string())
                };
                assert_eq!(field("policy").as_deref(), Some("1"), "{sched}");
                assert_eq!(field("prio").as_deref(), Some("96"), "{sched}");
            }
            // Without CAP_SYS_NICE the kernel refuses, and says so.
            Err(e) => {
                let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
                let euid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2));
                assert_ne!(euid, Some("0"), "root could not set SCHED_FIFO: {e}");
                assert!(e.to_string().contains("SCHED_FIFO"), "{e}");
            }
        }
    }

    #[test]
    fn tsc_ticks_at_the_calibrated_rate() {
        let hz = tsc_hz();
        // Any CPU this runs on counts between 100 MHz and 10 GHz.
        assert!((100_000_000..10_000_000_000).contains(&hz), "{hz}");
        let (a, b) = (tsc(), tsc());
        assert!(b >= a);
    }
}
