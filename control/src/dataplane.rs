//! Starting the AF_XDP dataplane from the config's `[dataplane]` table.
//!
//! ```toml
//! [dataplane]
//! interfaces = ["gw-c", "gw-p"]   # port order: clients, then Pods (one for one-arm)
//! queues = 1                      # RX queues per interface = workers
//! cores = [1]                     # pin worker q to cores[q % len]; [] = no pinning
//! xdp_mode = "auto"               # auto | native | generic
//! mode = "snat"                   # snat: masquerade; dnat: keep the client's address (Pods route back via the gateway)
//! snat_addrs = ["198.18.2.1"]     # masquerade addresses (replies come back to them), IPv4
//!                                 # and IPv6: a flow is masqueraded to one of its family
//!                                 # (at least one IPv4; no IPv6 one: IPv6 snat flows unserved)
//! snat_ports = [32768, 60999]     # inclusive; keep clear of 30000-32767 if an SNAT address is a node IP
//! conntrack_capacity = 1048576    # IPv4 flows per worker (64 B each, plus 80 B in the reply table)
//! conntrack_capacity6 = 65536     # IPv6 flows per worker (128 B each, plus 160 B), at most conntrack_capacity
//! busy_poll = false               # true: never nap when idle (DPDK style)
//! ring_size = 2048                # entries per AF_XDP ring (a power of two)
//! idle_spins = 4096               # empty polls in a row before an idle worker naps
//! idle_sleep_us = 50              # how long it naps (without busy_poll)
//! worker_rt_priority = 0          # 1..=99: SCHED_FIFO workers, the NAPI thread runs in their naps (copy mode)
//! conntrack_pressure_percent = 90 # past this share of conntrack_capacity, unassured flows are reclaimed first
//! state_dir = "/run/svcgate"       # flow and reply tables kept here (tmpfs), adopted by the next svcgate:
//!                                 # established flows survive a restart or upgrade (docs/RESTART.md);
//!                                 # unset (the default): anonymous memory, flows lost on restart
//!
//! [dataplane.timeouts]            # connection tracking, seconds (Linux's and kube-proxy's defaults)
//! tcp_syn = 60                    # TCP before the handshake completed
//! tcp_syn_pressure = 5            # the same, under pressure (a SYN flood)
//! tcp_established = 86400
//! tcp_closing = 120               # after a FIN from either side
//! tcp_rst = 10
//! udp = 30                        # UDP with no reply yet
//! udp_replied = 120
//! ```
//!
//! An empty `[dataplane]` table runs the control plane alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use svcgate_common::family::of_family;
use svcgate_common::model::ForwardingMode;
use svcgate_common::publish::Publisher;
use svcgate_common::table::ServiceTable;
use svcgate_dataplane::gateway::{Gateway, GatewayConfig, GatewayError, StatsHandle};
use svcgate_dataplane::nat::{Counters, DropReason, NatConfig, PassReason, Timeouts};
use svcgate_dataplane::privileges::{self, Cap, CapSet, PrivilegeError};
use svcgate_dataplane::xsk::{XdpMode, XskConfig};
use svcgate_dns::DnsTable;

use crate::metrics::{PortStats, StatsSnapshot, StatsSource, WorkerRow};

/// The `[dataplane]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// Gateway interfaces in port order.
    pub interfaces: Vec<String>,
    /// RX queues (workers).
    #[serde(default = "one")]
    pub queues: u32,
    /// Cores to pin workers to.
    #[serde(default)]
    pub cores: Vec<usize>,
    /// `auto`, `native` or `generic`.
    #[serde(default = "auto")]
    pub xdp_mode: String,
    /// `snat` or `dnat`: the forwarding mode of Services without the
    /// `svcgate.io/forwarding-mode` annotation.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// SNAT addresses of both families: the IPv4 ones become
    /// `NatConfig::snat_addrs`, the IPv6 ones `NatConfig::snat_addrs6` (a
    /// flow is masqueraded to an address of its own family, never NAT46).
    pub snat_addrs: Vec<IpAddr>,
    /// SNAT port range, inclusive.
    #[serde(default = "default_ports")]
    pub snat_ports: [u16; 2],
    /// IPv4 flows tracked per worker.
    #[serde(default = "default_capacity")]
    pub conntrack_capacity: usize,
    /// IPv6 flows tracked per worker (at most `conntrack_capacity`).
    #[serde(default = "default_capacity6")]
    pub conntrack_capacity6: usize,
    /// Never nap when idle.
    #[serde(default)]
    pub busy_poll: bool,
    /// Empty polls in a row before an idle worker naps (without busy_poll).
    #[serde(default = "default_idle_spins")]
    pub idle_spins: u32,
    /// How long an idle worker naps, in microseconds (without busy_poll).
    #[serde(default = "default_idle_sleep_us")]
    pub idle_sleep_us: u64,
    /// SCHED_FIFO priority of the workers (1..=99; 0: normal scheduling).
    #[serde(default)]
    pub worker_rt_priority: u8,
    /// Entries per AF_XDP ring (RX, TX, fill, completion; a power of two).
    #[serde(default = "default_ring_size")]
    pub ring_size: u32,
    /// Share (percent) of `conntrack_capacity` past which a worker is
    /// under pressure (see `NatConfig::pressure_percent`).
    #[serde(default = "default_pressure")]
    pub conntrack_pressure_percent: u8,
    /// Connection-tracking timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Where the flow and reply tables live so that the next svcgate
    /// (restarted, or upgraded to a binary with the same table layout)
    /// adopts them: a directory on tmpfs, e.g. `/run/svcgate`. Unset: the
    /// tables are anonymous memory and established flows end with the
    /// process (see docs/RESTART.md).
    #[serde(default)]
    pub state_dir: Option<std::path::PathBuf>,
}

/// `[dataplane.timeouts]`, in seconds; each key defaults to
/// [`Timeouts::default`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP before the handshake completed.
    pub tcp_syn: Option<u32>,
    /// TCP before the handshake completed, under pressure.
    pub tcp_syn_pressure: Option<u32>,
    /// Established TCP.
    pub tcp_established: Option<u32>,
    /// TCP after a FIN.
    pub tcp_closing: Option<u32>,
    /// TCP after a RST.
    pub tcp_rst: Option<u32>,
    /// UDP with no reply yet.
    pub udp: Option<u32>,
    /// UDP after a reply.
    pub udp_replied: Option<u32>,
}

impl TimeoutsConfig {
    /// The timeouts in milliseconds, defaults where unset.
    fn to_timeouts(&self) -> Result<Timeouts, DataplaneError> {
        let d = Timeouts::default();
        let ms = |key: &str, v: Option<u32>, default: u32| match v {
            None => Ok(default),
            Some(0) => Err(DataplaneError::Config(format!("timeouts.{key}: must be at least 1 second"))),
            Some(s) => s
                .checked_mul(1000)
                .ok_or_else(|| DataplaneError::Config(format!("timeouts.{key}: {s} s is more than 49 days"))),
        };
        Ok(Timeouts {
            tcp_syn_ms: ms("tcp_syn", self.tcp_syn, d.tcp_syn_ms)?,
            tcp_syn_pressure_ms: ms("tcp_syn_pressure", self.tcp_syn_pressure, d.tcp_syn_pressure_ms)?,
            tcp_established_ms: ms("tcp_established", self.tcp_established, d.tcp_established_ms)?,
            tcp_closing_ms: ms("tcp_closing", self.tcp_closing, d.tcp_closing_ms)?,
            tcp_rst_ms: ms("tcp_rst", self.tcp_rst, d.tcp_rst_ms)?,
            udp_ms: ms("udp", self.udp, d.udp_ms)?,
            udp_replied_ms: ms("udp_replied", self.udp_replied, d.udp_replied_ms)?,
        })
    }
}

fn one() -> u32 {
    1
}
fn auto() -> String {
    "auto".into()
}
fn default_ports() -> [u16; 2] {
    [32768, 60999]
}
fn default_idle_sleep_us() -> u64 {
    GatewayConfig::default().idle_sleep.as_micros() as u64
}
fn default_idle_spins() -> u32 {
    GatewayConfig::default().idle_spins
}
fn default_ring_size() -> u32 {
    XskConfig::default().ring_size
}
fn default_capacity() -> usize {
    1 << 20
}
fn default_capacity6() -> usize {
    svcgate_dataplane::nat::NatConfig::default().conntrack_capacity6
}
fn default_mode() -> String {
    ForwardingMode::default().as_str().into()
}
fn default_pressure() -> u8 {
    NatConfig::default().pressure_percent
}

/// Why the dataplane could not start.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The `[dataplane]` table is malformed.
    #[error("config [dataplane]: {0}")]
    Config(String),
    /// The gateway failed to start.
    #[error("dataplane: {0}")]
    Gateway(#[from] GatewayError),
    /// A thread could not give up its capabilities after start-up.
    #[error("dataplane: {0}")]
    Privileges(#[from] PrivilegeError),
}

impl DataplaneConfig {
    /// Parses `[dataplane]`; `Ok(None)` when the table is empty.
    pub fn from_table(t: &toml::Table) -> Result<Option<Self>, DataplaneError> {
        if t.is_empty() {
            return Ok(None);
        }
        let c: Self =
            t.clone().try_into().map_err(|e: toml::de::Error| DataplaneError::Config(e.message().to_string()))?;
        if c.worker_rt_priority > 99 {
            return Err(DataplaneError::Config(format!(
                "worker_rt_priority: {} is not in 0..=99",
                c.worker_rt_priority
            )));
        }
        if c.worker_rt_priority > 0 && (c.busy_poll || c.idle_sleep_us == 0) {
            return Err(DataplaneError::Config(
                "worker_rt_priority needs busy_poll = false and idle_sleep_us > 0: a real-time worker that never \
                 naps starves the kernel threads on its core"
                    .into(),
            ));
        }
        // The IPv4 pipeline needs an address to masquerade to, as before
        // dual-stack; an IPv6 one is optional (without one, IPv6 Services
        // are served in dnat mode only).
        if c.snat_addrs4().is_empty() {
            return Err(DataplaneError::Config(
                "snat_addrs: at least one IPv4 address is needed (IPv6 ones masquerade IPv6 flows only)".into(),
            ));
        }
        if !(1..=100).contains(&c.conntrack_pressure_percent) {
            return Err(DataplaneError::Config(format!(
                "conntrack_pressure_percent: {} is not in 1..=100",
                c.conntrack_pressure_percent
            )));
        }
        c.timeouts.to_timeouts()?;
        c.forwarding_mode()?;
        Ok(Some(c))
    }

    /// The IPv4 SNAT addresses, in order.
    pub fn snat_addrs4(&self) -> Vec<Ipv4Addr> {
        of_family::<Ipv4Addr>(&self.snat_addrs).collect()
    }

    /// The IPv6 SNAT addresses, in order.
    pub fn snat_addrs6(&self) -> Vec<Ipv6Addr> {
        of_family::<Ipv6Addr>(&self.snat_addrs).collect()
    }

    fn forwarding_mode(&self) -> Result<ForwardingMode, DataplaneError> {
        ForwardingMode::parse(&self.mode)
            .ok_or_else(|| DataplaneError::Config(format!("mode: {:?} is not snat or dnat", self.mode)))
    }

    fn gateway_config(&self) -> Result<GatewayConfig, DataplaneError> {
        let xdp_mode = match self.xdp_mode.as_str() {
            "auto" => XdpMode::Auto,
            "native" => XdpMode::Native,
            "generic" => XdpMode::Generic,
            other => return Err(DataplaneError::Config(format!("xdp_mode: {other:?} is not auto, native or generic"))),
        };
        Ok(GatewayConfig {
            interfaces: self.interfaces.clone(),
            queues: self.queues,
            cores: self.cores.clone(),
            xdp_mode,
            nat: NatConfig {
                mode: self.forwarding_mode()?,
                snat_addrs: self.snat_addrs4(),
                snat_addrs6: self.snat_addrs6(),
                snat_ports: (self.snat_ports[0], self.snat_ports[1]),
                conntrack_capacity: self.conntrack_capacity,
                conntrack_capacity6: self.conntrack_capacity6,
                pressure_percent: self.conntrack_pressure_percent,
                timeouts: self.timeouts.to_timeouts()?,
                state_dir: self.state_dir.clone(),
                ..NatConfig::default()
            },
            idle_sleep: if self.busy_poll { Duration::ZERO } else { Duration::from_micros(self.idle_sleep_us) },
            // Two UMEM frames per ring entry and port: a full fill ring, and
            // as many again in flight on the RX and TX rings.
            worker_rt_priority: self.worker_rt_priority,
            idle_spins: self.idle_spins,
            xsk: XskConfig { ring_size: self.ring_size, frames_per_port: 2 * self.ring_size, ..XskConfig::default() },
            // Least privilege once up (see `svcgate_dataplane::privileges`).
            drop_capabilities: true,
            ..GatewayConfig::default()
        })
    }
}

/// A rate-limited warning (at most one every [`DryPools::EVERY`]) when new
/// flows found no SNAT port free toward their backend: the workers count,
/// the housekeeping thread logs.
#[derive(Debug, Default)]
struct DryPools {
    seen: Vec<u64>,
    last_warning: Option<std::time::Instant>,
}

impl DryPools {
    const EVERY: Duration = Duration::from_secs(10);

    fn check(&mut self, stats: &StatsHandle) {
        if self.last_warning.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        let exhausted = stats.ports_exhausted(&stats.nat_stats());
        let now: Vec<u64> = exhausted.iter().map(|&(_, n)| n).collect();
        for (i, (addr, _)) in exhausted.iter().enumerate() {
            let new = now[i].saturating_sub(self.seen.get(i).copied().unwrap_or(0));
            if new > 0 {
                tracing::warn!(
                    snat_addr = %addr,
                    new_flows_dropped = new,
                    "SNAT ports exhausted toward some backends: add snat_addrs or widen snat_ports"
                );
                self.last_warning = Some(std::time::Instant::now());
            }
        }
        self.seen = now;
    }
}

/// What the housekeeping thread keeps once the dataplane is up:
/// `CAP_NET_ADMIN`, to ask the kernel to resolve the neighbours the
/// workers miss. Map updates go through descriptors opened at start-up and
/// need no capability. Every other thread keeps none.
pub const HOUSEKEEPING_CAPS: CapSet = CapSet(1 << Cap::NET_ADMIN.0);

/// Gives up the capabilities of the calling thread (the daemon's main
/// thread, once the dataplane is up and before it starts any other
/// thread, so that those inherit nothing): all of them, or all but
/// `CAP_NET_BIND_SERVICE` when `bind_dns` (cluster DNS's control-path
/// server binds port 53 from the async runtime's threads, later).
pub fn drop_capabilities(bind_dns: bool) -> Result<privileges::Restricted, PrivilegeError> {
    privileges::restrict_thread(if bind_dns { CapSet::of(&[Cap::NET_BIND_SERVICE]) } else { CapSet::EMPTY })
}

/// The running dataplane and its housekeeping thread.
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: StatsHandle,
    /// What adopting the state directory did, as metric rows.
    restart: Vec<(String, u64)>,
}

impl Running {
    /// The counters, for the admin endpoint.
    pub fn stats(&self) -> Arc<dyn StatsSource> {
        Arc::new(GatewayStats(self.stats.clone(), self.restart.clone()))
    }

    /// Stops the workers and detaches XDP.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the gateway reading tables from `tables` (and, with `dns`, the
/// workers answering UDP DNS queries from those tables); a thread follows
/// table swaps in the steering maps and refreshes next hops every 100 ms.
pub fn start(
    cfg: &DataplaneConfig,
    tables: Arc<Publisher<ServiceTable>>,
    dns: Option<Arc<Publisher<DnsTable>>>,
) -> Result<Running, DataplaneError> {
    let gw = Gateway::start_with_dns(cfg.gateway_config()?, &tables, dns.as_deref())?;
    let restart = gw.restart_report().map(|r| log_restart(cfg, r)).unwrap_or_default();
    for (ifname, mode) in gw.xdp_modes() {
        tracing::info!(%ifname, mode, "XDP steering attached");
    }
    let stats = gw.stats_handle();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = {
        let stop = Arc::clone(&stop);
        let stats = stats.clone();
        std::thread::Builder::new()
            .name("svcgate-dp-maint".into())
            .spawn(move || {
                let mut gw = gw;
                // The one capability left at run time: asking the kernel to
                // resolve a neighbour (RTM_NEWNEIGH).
                let dropped = privileges::restrict_thread(HOUSEKEEPING_CAPS);
                let ok = dropped.is_ok();
                let _ = ready_tx.send(dropped);
                if !ok {
                    gw.shutdown();
                    return;
                }
                let mut dry = DryPools::default();
                while !stop.load(Ordering::Relaxed) {
                    let t = tables.current();
                    if let Err(e) = gw.maintain(&t) {
                        tracing::warn!("dataplane housekeeping: {e}");
                    }
                    dry.check(&stats);
                    nap_until_new_table(&stop, &tables, t.generation(), Duration::from_millis(100));
                }
                gw.shutdown();
            })
            .map_err(|e| DataplaneError::Config(format!("cannot start the housekeeping thread: {e}")))?
    };
    match ready_rx.recv() {
        Ok(Ok(r)) => {
            tracing::info!(kept = ?r.now.permitted, bounding_trimmed = r.bounding_trimmed, "housekeeping thread capabilities");
        }
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e.into());
        }
        Err(_) => {
            let _ = thread.join();
            return Err(DataplaneError::Config("the housekeeping thread exited at start".into()));
        }
    }
    Ok(Running { stop, thread: Some(thread), stats, restart })
}

/// Sleeps up to `max`, waking early (within 5 ms) when a table other than
/// generation `seen` is published or `stop` is set: a new Service's
/// frontends are steered to the workers without waiting out the nap, and
/// after a start (a restart: the first table is published once the
/// dataplane runs) the adopted flows' frontends come back at once.
fn nap_until_new_table(stop: &AtomicBool, tables: &Publisher<ServiceTable>, seen: u64, max: Duration) {
    const SLICE: Duration = Duration::from_millis(5);
    let t0 = std::time::Instant::now();
    while t0.elapsed() < max && !stop.load(Ordering::Relaxed) && tables.current().generation() == seen {
        std::thread::sleep(SLICE);
    }
}

/// Logs what adopting the state directory did: each refused file as an
/// error (its table started clean), then one line of counts; returns the
/// counts as metric rows (`svcgate_state_restart`).
fn log_restart(cfg: &DataplaneConfig, r: &svcgate_dataplane::nat::restart::RestartReport) -> Vec<(String, u64)> {
    for why in &r.refused {
        tracing::error!("state file refused: {why}");
    }
    tracing::info!(
        state_dir = ?cfg.state_dir,
        files_adopted = r.files_adopted,
        files_refused = r.refused.len(),
        flows_adopted = r.flows_adopted,
        flows_dropped = r.flows_dropped,
        replies_adopted = r.replies_adopted,
        replies_dropped = r.replies_dropped,
        torn_slots = r.torn,
        "state directory opened"
    );
    [
        ("files_adopted", r.files_adopted),
        ("files_refused", r.refused.len()),
        ("flows_adopted", r.flows_adopted),
        ("flows_dropped", r.flows_dropped),
        ("replies_adopted", r.replies_adopted),
        ("replies_dropped", r.replies_dropped),
        ("torn_slots", r.torn),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v as u64))
    .collect()
}

struct GatewayStats(StatsHandle, Vec<(String, u64)>);

/// The workers' DNS counters, summed, as (verdict, reason, count) rows;
/// reasons that never occurred are left out, `answered` always shown.
fn dns_rows(nat: &[svcgate_dataplane::gateway::NatSnapshot]) -> Vec<(String, String, u64)> {
    let mut sum = svcgate_dataplane::dns_hook::DnsCounters::default();
    for n in nat {
        sum.add(&n.dns);
    }
    let mut rows = vec![("answered".to_string(), String::new(), sum.answered)];
    for (r, n) in svcgate_dns::SlowReason::ALL.iter().zip(sum.slow) {
        if n > 0 {
            rows.push(("slow".into(), r.as_str().into(), n));
        }
    }
    for (r, n) in svcgate_dns::DropReason::ALL.iter().zip(sum.dropped) {
        if n > 0 {
            rows.push(("drop".into(), r.as_str().into(), n));
        }
    }
    if sum.bad_frame > 0 {
        rows.push(("drop".into(), "bad_frame".into(), sum.bad_frame));
    }
    rows
}

impl StatsSource for GatewayStats {
    fn snapshot(&self) -> StatsSnapshot {
        let nat = self.0.nat_stats();
        let workers = self.0.worker_stats();
        let mut ports: std::collections::BTreeMap<(String, String, u16, String), (u64, u64)> = Default::default();
        for n in &nat {
            for (id, c) in &n.services {
                let e = ports
                    .entry((id.namespace.to_string(), id.name.to_string(), id.port, id.protocol.to_string()))
                    .or_default();
                e.0 += c.packets;
                e.1 += c.bytes;
            }
        }
        let mut drops: Vec<(String, u64)> = DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), workers.iter().map(|w| w.drop_count(*r)).sum()))
            .collect();
        // The worker's own drops, beside the handler's: a full TX ring, a
        // verdict naming a port the worker lacks, a pass the exception path
        // could not inject.
        drops.extend([
            ("tx_ring_full".to_string(), workers.iter().map(|w| w.tx_ring_full).sum()),
            ("bad_verdict".to_string(), workers.iter().map(|w| w.bad_verdict).sum()),
            ("pass_failed".to_string(), workers.iter().map(|w| w.pass_failed).sum()),
        ]);
        drops.extend(
            PassReason::ALL.iter().map(|r| (format!("pass_{}", r.as_str()), workers.iter().map(|w| w.pass(*r)).sum())),
        );
        StatsSnapshot {
            ports: ports
                .into_iter()
                .map(|((namespace, name, port, protocol), (packets, bytes))| PortStats {
                    namespace,
                    name,
                    port,
                    protocol,
                    packets,
                    bytes,
                })
                .collect(),
            drops,
            conntrack_entries: nat.iter().map(|n| n.flows as u64).sum(),
            dns_queries: dns_rows(&nat),
            conntrack_events: [
                ("new", (|c: &Counters| c.new_flows) as fn(&Counters) -> u64),
                ("picked_up", |c| c.picked_up),
                ("expired", |c| c.expired),
                ("reclaimed_unassured", |c| c.reclaimed),
                ("evicted_assured", |c| c.evicted),
            ]
            .into_iter()
            .map(|(event, get)| (event.to_string(), nat.iter().map(|n| get(&n.counters)).sum()))
            .collect(),
            snat_ports_exhausted: self.0.ports_exhausted(&nat).into_iter().map(|(a, n)| (a.to_string(), n)).collect(),
            workers: workers
                .iter()
                .map(|w| WorkerRow {
                    rx: w.rx,
                    tx: w.tx,
                    dropped: w.dropped(),
                    busy_ratio: w.busy_ratio(),
                    cycles_per_packet: w.cycles_per_packet(),
                    busy_cycles: w.busy_cycles,
                })
                .collect(),
            tsc_mhz: svcgate_dataplane::xsk::tsc_hz() / 1_000_000,
            restart: self.1.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn state_dir_is_opt_in() {
        let base = "interfaces = [\"a\"]\nsnat_addrs = [\"198.18.3.1\"]\n";
        let c = DataplaneConfig::from_table(&table(base)).unwrap().unwrap();
        assert_eq!(c.gateway_config().unwrap().nat.state_dir, None);
        let c = DataplaneConfig::from_table(&table(&format!("{base}state_dir = \"/run/svcgate\"\n"))).unwrap().unwrap();
        assert_eq!(c.gateway_config().unwrap().nat.state_dir.as_deref(), Some(std::path::Path::new("/run/svcgate")));
    }

    #[test]
    fn timeouts_and_pressure_are_configurable_and_checked() {
        let base = "interfaces = [\"a\"]\nsnat_addrs = [\"198.18.3.1\"]\n";
        let c = DataplaneConfig::from_table(&table(&format!(
            "{base}conntrack_pressure_percent = 75\n[timeouts]\ntcp_closing = 10\ntcp_syn_pressure = 2\n"
        )))
        .unwrap()
        .unwrap();
        let g = c.gateway_config().unwrap();
        assert_eq!(g.nat.pressure_percent, 75);
        assert_eq!(g.nat.mode, ForwardingMode::Snat);
        let dnat = DataplaneConfig::from_table(&table(&format!("mode = \"dnat\"\n{base}"))).unwrap().unwrap();
        assert_eq!(dnat.gateway_config().unwrap().nat.mode, ForwardingMode::Dnat);
        assert_eq!(g.nat.timeouts.tcp_closing_ms, 10_000);
        assert_eq!(g.nat.timeouts.tcp_syn_pressure_ms, 2_000);
        assert_eq!(g.nat.timeouts.tcp_syn_ms, Timeouts::default().tcp_syn_ms);
        for (bad, why) in [
            ("conntrack_pressure_percent = 0\n", "conntrack_pressure_percent"),
            ("[timeouts]\nudp = 0\n", "timeouts.udp"),
            ("[timeouts]\ntcp_fin = 3\n", "unknown field"),
            ("mode = \"dsr\"\n", "mode: \"dsr\" is not snat or dnat"),
        ] {
            let e = DataplaneConfig::from_table(&table(&format!("{base}{bad}"))).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn empty_table_means_no_dataplane() {
        assert!(DataplaneConfig::from_table(&toml::Table::new()).unwrap().is_none());
    }

    #[test]
    fn bundled_example_dataplane_parses_with_defaults() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/svcgate.toml");
        let t: toml::Table = std::fs::read_to_string(p).unwrap().parse().unwrap();
        let c = DataplaneConfig::from_table(t["dataplane"].as_table().unwrap()).unwrap().unwrap();
        assert_eq!(c.interfaces, ["g0", "g1"]);
        assert_eq!(c.snat_addrs, [IpAddr::from([198, 18, 3, 1]), "2001:2:0:3::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.snat_ports, [32768, 60999]);
        let g = c.gateway_config().unwrap();
        assert_eq!(g.nat.snat_ports, (32768, 60999));
        assert_eq!(g.nat.timeouts, Timeouts::default());
        assert_eq!(g.nat.pressure_percent, 90);
        assert_eq!(g.queues, 1);
        assert_eq!((g.worker_rt_priority, g.idle_spins, g.idle_sleep), (0, 4096, Duration::from_micros(50)));
        assert_eq!((g.xsk.ring_size, g.xsk.frames_per_port), (2048, 4096));
    }

    #[test]
    fn scheduling_and_ring_knobs_reach_the_gateway() {
        let base = "interfaces = [\"g0\"]\nsnat_addrs = [\"198.18.3.1\"]\n";
        let c = DataplaneConfig::from_table(&table(&format!(
            "{base}busy_poll = false\nworker_rt_priority = 10\nidle_spins = 8\nidle_sleep_us = 500\nring_size = 8192"
        )))
        .unwrap()
        .unwrap();
        let g = c.gateway_config().unwrap();
        assert_eq!((g.worker_rt_priority, g.idle_spins, g.idle_sleep), (10, 8, Duration::from_micros(500)));
        assert_eq!((g.xsk.ring_size, g.xsk.frames_per_port), (8192, 16384));
        // A real-time worker that never naps would starve the NAPI thread.
        for bad in ["busy_poll = true\nworker_rt_priority = 10", "idle_sleep_us = 0\nworker_rt_priority = 10"] {
            let e = DataplaneConfig::from_table(&table(&format!("{base}{bad}"))).unwrap_err();
            assert!(e.to_string().contains("worker_rt_priority needs busy_poll = false"), "{e}");
        }
        let e = DataplaneConfig::from_table(&table(&format!("{base}worker_rt_priority = 100"))).unwrap_err();
        assert!(e.to_string().contains("0..=99"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = DataplaneConfig::from_table(&table("interfaces = [\"g0\"]\nsnat_addrs = []")).unwrap_err();
        assert!(e.to_string().contains("snat_addrs"), "{e}");
        let e = DataplaneConfig::from_table(&table("interfaces = [\"g0\"]\nsnat_addrs = [\"x\"]")).unwrap_err();
        assert!(e.to_string().contains("config [dataplane]"), "{e}");
        let e = DataplaneConfig::from_table(&table("interfaces = [\"g0\"]\nsnat_addrs = [\"198.18.3.1\"]\nqueue = 2"))
            .unwrap_err();
        assert!(e.to_string().contains("queue"), "unknown keys are refused: {e}");
        let c = DataplaneConfig::from_table(&table(
            "interfaces = [\"g0\"]\nsnat_addrs = [\"198.18.3.1\"]\nxdp_mode = \"fast\"",
        ))
        .unwrap()
        .unwrap();
        assert!(c.gateway_config().unwrap_err().to_string().contains("xdp_mode"));
    }

    #[test]
    fn snat_addrs_of_both_families_reach_their_halves() {
        let c = DataplaneConfig::from_table(&table(
            "interfaces = [\"g0\"]\nsnat_addrs = [\"2001:2::3:1\", \"198.18.3.1\", \"198.18.3.2\", \"2001:2::3:2\"]",
        ))
        .unwrap()
        .unwrap();
        let g = c.gateway_config().unwrap();
        assert_eq!(g.nat.snat_addrs, [Ipv4Addr::new(198, 18, 3, 1), Ipv4Addr::new(198, 18, 3, 2)]);
        let v6: Vec<Ipv6Addr> = ["2001:2::3:1", "2001:2::3:2"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(g.nat.snat_addrs6, v6);
        // IPv4 only, as before: no IPv6 masquerade address.
        let c = DataplaneConfig::from_table(&table("interfaces = [\"g0\"]\nsnat_addrs = [\"198.18.3.1\"]"))
            .unwrap()
            .unwrap();
        assert!(c.gateway_config().unwrap().nat.snat_addrs6.is_empty());
        // The IPv4 pipeline still needs one of its family.
        let e = DataplaneConfig::from_table(&table("interfaces = [\"g0\"]\nsnat_addrs = [\"2001:2::3:1\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("snat_addrs: at least one IPv4 address"), "{e}");
    }
}
