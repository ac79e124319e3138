//! Control-plane metrics and the dataplane's counters, in Prometheus text.
//!
//! The dataplane's counters come through [`StatsSource`], a trait the
//! dataplane implements (workers keep per-worker counters; the source sums
//! them when asked). Until one is attached, [`NoStats`] reports nothing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use svcgate_common::model::Protocol;

/// Counters of one Service port (one table entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// `TCP` / `UDP`.
    pub protocol: String,
    /// Packets forwarded to this Service port's backends.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
}

impl PortStats {
    /// Counters for a Service port.
    pub fn new(namespace: &str, name: &str, port: u16, protocol: Protocol, packets: u64, bytes: u64) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            port,
            protocol: protocol.as_str().into(),
            packets,
            bytes,
        }
    }
}

/// A point-in-time sum of the dataplane's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Per Service port.
    pub ports: Vec<PortStats>,
    /// Dropped packets by reason (e.g. `no_backend`, `malformed`, `tx_full`).
    pub drops: Vec<(String, u64)>,
    /// Connection-tracking entries in use, summed over workers.
    pub conntrack_entries: u64,
    /// Connection-tracking events summed over workers: `new`, `picked_up`
    /// (of `new`: from a TCP segment other than a SYN), `expired`,
    /// `reclaimed_unassured` (flows nothing answered, reclaimed under
    /// pressure), `evicted_assured` (live flows pushed out of a full table).
    #[serde(default)]
    pub conntrack_events: Vec<(String, u64)>,
    /// New flows that found no SNAT port free toward their backend, by SNAT address.
    #[serde(default)]
    pub snat_ports_exhausted: Vec<(String, u64)>,
    /// UDP DNS queries to the DNS addresses as the workers' responder
    /// handled them, summed over workers: (verdict, reason, count), verdict
    /// `answered` (reason empty), `slow` (passed to the control-path
    /// server) or `drop`.
    #[serde(default)]
    pub dns_queries: Vec<(String, String, u64)>,
    /// What adopting the state directory did at start (`state_dir`):
    /// `files_adopted`, `files_refused`, `flows_adopted`, `flows_dropped`,
    /// `replies_adopted`, `replies_dropped`, `torn_slots`; empty without one.
    #[serde(default)]
    pub restart: Vec<(String, u64)>,
    /// One row per polling worker.
    pub workers: Vec<WorkerRow>,
    /// The TSC frequency the cycle figures count in, MHz (0: no dataplane).
    pub tsc_mhz: u64,
}

/// A polling worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    /// Frames received.
    pub rx: u64,
    /// Frames transmitted.
    pub tx: u64,
    /// Frames dropped (every reason) and passes that failed.
    pub dropped: u64,
    /// Share (0..=1) of the worker's time spent in poll rounds that found
    /// work (TSC cycles, not poll counts, so a short empty poll weighs
    /// what it costs).
    pub busy_ratio: f64,
    /// TSC cycles of busy rounds per received frame: the forwarding core's
    /// cost per packet, as testpmd's `--record-core-cycles` reports it.
    pub cycles_per_packet: f64,
    /// TSC cycles of busy rounds since start (for rates over a window:
    /// difference of two scrapes over difference of `rx`).
    pub busy_cycles: u64,
}

/// Where the dataplane's counters come from. Implemented by the dataplane;
/// called from the admin thread on each scrape, so it must be cheap and never
/// block the workers (sum per-worker relaxed atomics).
pub trait StatsSource: Send + Sync {
    /// The counters now.
    fn snapshot(&self) -> StatsSnapshot;
}

/// A source with no dataplane behind it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStats;

impl StatsSource for NoStats {
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot::default()
    }
}

/// Upper bounds of the sync latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A lock-free Prometheus histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the histogram in Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The control plane's own counters.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// Source change -> table published.
    pub sync_latency: Histogram,
    /// Full table builds.
    pub full_builds: AtomicU64,
    /// Endpoint-only (incremental) publishes.
    pub incremental_builds: AtomicU64,
    /// Syncs that changed nothing, so published nothing.
    pub noop_syncs: AtomicU64,
    /// DNS answer tables built and published (`[dns]` configured).
    pub dns_builds: AtomicU64,
}

/// Escapes a Prometheus label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes one `# HELP`/`# TYPE` header.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A per-worker Prometheus series: name, type, help, value of one worker.
type WorkerSeries = (&'static str, &'static str, &'static str, fn(&WorkerRow) -> String);

/// Writes the dataplane's counters.
pub fn render_stats(out: &mut String, s: &StatsSnapshot) {
    header(out, "svcgate_service_packets_total", "counter", "Packets forwarded per Service port.");
    for p in &s.ports {
        let _ = writeln!(
            out,
            "svcgate_service_packets_total{{namespace=\"{}\",service=\"{}\",port=\"{}\",protocol=\"{}\"}} {}",
            label(&p.namespace),
            label(&p.name),
            p.port,
            p.protocol,
            p.packets
        );
    }
    header(out, "svcgate_service_bytes_total", "counter", "Bytes forwarded per Service port.");
    for p in &s.ports {
        let _ = writeln!(
            out,
            "svcgate_service_bytes_total{{namespace=\"{}\",service=\"{}\",port=\"{}\",protocol=\"{}\"}} {}",
            label(&p.namespace),
            label(&p.name),
            p.port,
            p.protocol,
            p.bytes
        );
    }
    header(out, "svcgate_drops_total", "counter", "Packets dropped, by reason.");
    for (reason, n) in &s.drops {
        let _ = writeln!(out, "svcgate_drops_total{{reason=\"{}\"}} {n}", label(reason));
    }
    header(out, "svcgate_conntrack_entries", "gauge", "Connection-tracking entries in use.");
    let _ = writeln!(out, "svcgate_conntrack_entries {}", s.conntrack_entries);
    header(
        out,
        "svcgate_conntrack_events_total",
        "counter",
        "Flows entered (picked_up: of them, from a TCP segment other than a SYN), expired, reclaimed before any answer (under pressure) and evicted while assured.",
    );
    for (event, n) in &s.conntrack_events {
        let _ = writeln!(out, "svcgate_conntrack_events_total{{event=\"{}\"}} {n}", label(event));
    }
    header(
        out,
        "svcgate_snat_ports_exhausted_total",
        "counter",
        "New flows that found no SNAT port free toward their backend, by SNAT address.",
    );
    for (addr, n) in &s.snat_ports_exhausted {
        let _ = writeln!(out, "svcgate_snat_ports_exhausted_total{{snat_addr=\"{}\"}} {n}", label(addr));
    }
    if !s.restart.is_empty() {
        header(
            out,
            "svcgate_state_restart",
            "gauge",
            "What adopting the state directory did at start: state files adopted and refused (started clean), flows and reply slots taken over and dropped, torn slots.",
        );
        for (what, n) in &s.restart {
            let _ = writeln!(out, "svcgate_state_restart{{what=\"{}\"}} {n}", label(what));
        }
    }
    if !s.dns_queries.is_empty() {
        header(
            out,
            "svcgate_dns_queries_total",
            "counter",
            "UDP DNS queries handled by the workers: answered, slow (passed to the control-path server) or drop, by reason.",
        );
        for (verdict, reason, n) in &s.dns_queries {
            let _ = writeln!(
                out,
                "svcgate_dns_queries_total{{verdict=\"{}\",reason=\"{}\"}} {n}",
                label(verdict),
                label(reason)
            );
        }
    }
    let per_worker: [WorkerSeries; 4] = [
        ("svcgate_worker_busy_ratio", "gauge", "Share of the worker's time in polls that found work.", |w| {
            w.busy_ratio.to_string()
        }),
        ("svcgate_worker_cycles_per_packet", "gauge", "TSC cycles of busy polls per received packet.", |w| {
            w.cycles_per_packet.to_string()
        }),
        ("svcgate_worker_busy_cycles_total", "counter", "TSC cycles of polls that found work, per worker.", |w| {
            w.busy_cycles.to_string()
        }),
        ("svcgate_worker_rx_packets_total", "counter", "Packets received, per worker.", |w| w.rx.to_string()),
    ];
    for (name, kind, help, value) in per_worker {
        header(out, name, kind, help);
        for (i, w) in s.workers.iter().enumerate() {
            let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", value(w));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut s = String::new();
        h.render(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"0.0001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.005\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"5\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count 3\n"));
    }
}
