//! The assembled dataplane: AF_XDP workers running the NAT pipeline.
//!
//! One worker per RX queue. A worker owns one AF_XDP socket per gateway
//! interface, all at its queue id and all on one UMEM, so a frame received on
//! the client interface is transmitted on the Pod interface without a copy
//! (two-arm), or back out of the same interface (one-arm). The worker's port
//! list is the interface list of [`GatewayConfig::interfaces`], in order, and
//! the NAT's next-hop table uses the same port numbers.
//!
//! Threads:
//! - workers (pinned): poll, `nat::Worker::process_batch`, transmit; at each
//!   batch boundary they pick up new service tables and next hops (RCU
//!   readers, one atomic load when nothing changed);
//! - the caller's control thread: publishes service tables and calls
//!   [`Gateway::maintain`] regularly, which follows table swaps in the XDP
//!   steering maps, re-reads the kernel's neighbours and routes, and asks the
//!   kernel to resolve neighbours the workers missed.
//!
//! Both families are wired the same way: the IPv6 frontends, dnat-mode
//! backends and SNAT addresses go into the program's IPv6 maps, IPv6
//! neighbours (as the kernel's NDP resolved them) and routes into the
//! next-hop table, and unresolved IPv6 neighbours are handed to the kernel
//! like IPv4 ones (the queue carries [`IpAddr`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use parking_lot::Mutex;
use svcgate_common::family::{Addr, IpFamily};
use svcgate_common::model::{ForwardingMode, IpNet};
use svcgate_common::publish::{Publisher, Reader};
use svcgate_common::table::ServiceTable;
use svcgate_dns::DnsTable;

use crate::dns_hook::{self, DnsCounters};
use crate::nat::{self, Counters, NatConfig, NextHops, PortInfo, ServiceCounter};
use crate::xsk::{
    self, BatchHandler, ExceptionPath, KernelNet, NeighState, Neighbour, PortConfig, Route, StatsSnapshot, Steering,
    WorkerConfig, WorkerStats, XdpMode, XskConfig, XskError, XskPorts,
};

/// How to run the dataplane.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Interfaces, in port order: `[clients, pods]` for two-arm, one for one-arm.
    pub interfaces: Vec<String>,
    /// RX queues used on every interface; one worker per queue.
    pub queues: u32,
    /// Cores to pin workers to (worker `q` on `cores[q % len]`); empty: not pinned.
    pub cores: Vec<usize>,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// NAT settings (SNAT addresses, ports, conntrack size); `workers` is
    /// overwritten with `queues`.
    pub nat: NatConfig,
    /// UMEM and ring sizes.
    pub xsk: XskConfig,
    /// Name of the TUN device frames passed to the kernel are written to.
    pub exception_device: Option<String>,
    /// Empty polls before a worker naps (0 with `idle_sleep` zero: busy poll).
    pub idle_spins: u32,
    /// How long an idle worker naps.
    pub idle_sleep: Duration,
    /// SCHED_FIFO priority of the workers (see [`WorkerConfig::rt_priority`]);
    /// 0: normal scheduling.
    pub worker_rt_priority: u8,
    /// Workers give up every capability before their first poll
    /// ([`WorkerConfig::drop_capabilities`]); `svcgate run` sets it.
    pub drop_capabilities: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            queues: 1,
            cores: Vec::new(),
            xdp_mode: XdpMode::Auto,
            nat: NatConfig::default(),
            xsk: XskConfig::default(),
            exception_device: Some("svcgate0".into()),
            idle_spins: 4096,
            idle_sleep: Duration::from_micros(50),
            worker_rt_priority: 0,
            drop_capabilities: false,
        }
    }
}

/// Why the dataplane could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No interface was configured.
    #[error("no gateway interface configured (dataplane.interfaces)")]
    NoInterface,
    /// The SNAT configuration is unusable.
    #[error("SNAT configuration: {0}")]
    Snat(#[from] nat::ReverseError),
    /// The state directory (`NatConfig::state_dir`) cannot be used.
    #[error(transparent)]
    State(#[from] nat::restart::StateError),
    /// An AF_XDP or XDP operation failed.
    #[error(transparent)]
    Xsk(#[from] XskError),
    /// A gateway interface has no MAC address.
    #[error("interface {name} has no MAC address (AF_XDP needs an Ethernet device)")]
    NoMac {
        /// The interface.
        name: String,
    },
}

/// NAT counters a worker exports, copied at most every 100 ms.
#[derive(Debug, Clone, Default)]
pub struct NatSnapshot {
    /// The pipeline's counters.
    pub counters: Counters,
    /// Flows tracked.
    pub flows: usize,
    /// Per-Service-port packets and bytes, client to backend.
    pub services: Vec<(svcgate_common::table::ServicePortId, ServiceCounter)>,
    /// UDP DNS queries answered, passed to the control-path server or
    /// dropped by this worker.
    pub dns: DnsCounters,
}

/// The counters of a running gateway, readable from any thread without
/// disturbing the workers (relaxed atomics, and NAT snapshots the workers
/// copy out at most every 100 ms).
#[derive(Debug, Clone)]
pub struct StatsHandle {
    workers: Vec<Arc<WorkerStats>>,
    nat: Vec<Arc<Mutex<NatSnapshot>>>,
    snat_addrs: Vec<Ipv4Addr>,
    snat_addrs6: Vec<Ipv6Addr>,
}

impl StatsHandle {
    /// The SNAT addresses, in the order of [`nat::Counters::ports_exhausted`].
    pub fn snat_addrs(&self) -> &[Ipv4Addr] {
        &self.snat_addrs
    }

    /// Every SNAT address of both families, with the new flows that found
    /// no port toward their backend on it, summed over the workers (`nat`:
    /// their snapshots).
    pub fn ports_exhausted(&self, nat: &[NatSnapshot]) -> Vec<(IpAddr, u64)> {
        let sum = |get: &dyn Fn(&nat::Counters) -> Option<u64>| nat.iter().filter_map(|n| get(&n.counters)).sum();
        let v4 =
            self.snat_addrs.iter().enumerate().map(|(i, &a)| (a.into(), sum(&|c| c.ports_exhausted.get(i).copied())));
        let v6 =
            self.snat_addrs6.iter().enumerate().map(|(i, &a)| (a.into(), sum(&|c| c.ports_exhausted6.get(i).copied())));
        v4.chain(v6).collect()
    }

    /// The AF_XDP counters of every worker.
    pub fn worker_stats(&self) -> Vec<StatsSnapshot> {
        self.workers.iter().map(|s| s.snapshot()).collect()
    }

    /// The NAT counters of every worker.
    pub fn nat_stats(&self) -> Vec<NatSnapshot> {
        self.nat.iter().map(|s| s.lock().clone()).collect()
    }
}

/// The NAT pipeline as an AF_XDP batch handler.
struct NatHandler {
    nat: nat::Worker,
    tables: Reader<ServiceTable>,
    hops: Reader<NextHops>,
    /// The cluster DNS answer table, when the gateway answers DNS.
    dns: Option<Reader<DnsTable>>,
    dns_counters: DnsCounters,
    /// The workers' clock (`nat::Shared::now_ms`: CLOCK_MONOTONIC from the
    /// tables' epoch, which outlives the process with a state directory).
    shared: Arc<nat::Shared>,
    /// Neighbours the workers missed, of both families, for the control
    /// thread to have the kernel resolve.
    unresolved: Arc<ArrayQueue<IpAddr>>,
    export: Arc<Mutex<NatSnapshot>>,
    last_export: u32,
    /// Flow-table buckets to sweep for expired flows per millisecond, so
    /// that the whole table is swept every [`SWEEP_PERIOD_MS`] whatever the
    /// poll rate: sweeping a fixed amount per empty poll had a busy-polling
    /// worker stream through the whole table (256 MiB at 4M flows) over and
    /// over, evicting the hot flows from the caches.
    sweep_per_ms: usize,
    last_sweep: u32,
}

/// One full expiry sweep of the flow table takes this long (the shortest
/// timeout is several seconds, so a flow outlives its timeout by at most this).
const SWEEP_PERIOD_MS: usize = 2000;

impl NatHandler {
    fn now_ms(&self) -> u32 {
        self.shared.now_ms()
    }

    /// Copies the counters out for metrics, at most every 100 ms; never
    /// waits for the lock (a reader holding it just delays the copy).
    fn export(&mut self, now: u32) {
        if now.wrapping_sub(self.last_export) < 100 {
            return;
        }
        if let Some(mut s) = self.export.try_lock() {
            s.counters.clone_from(self.nat.counters());
            s.flows = self.nat.flows();
            s.services = self.nat.service_counters();
            s.dns.clone_from(&self.dns_counters);
            self.last_export = now;
        }
    }
}

impl BatchHandler for NatHandler {
    fn handle_batch(&mut self, frames: &mut [nat::Frame<'_>]) {
        self.tables.refresh();
        self.hops.refresh();
        let now = self.now_ms();
        let (nat, tables, hops) = (&mut self.nat, self.tables.get(), self.hops.get());
        match &mut self.dns {
            // One load of the DNS table per burst, as for the service table.
            Some(dns) => {
                dns.refresh();
                dns_hook::split_batch(dns.get(), frames, &mut self.dns_counters, |run| {
                    nat.process_batch(tables, hops, run, now)
                });
            }
            None => nat.process_batch(tables, hops, frames, now),
        }
        // `.into()`: the pipeline's list is IPv4 today; an IPv6 (or IpAddr)
        // list drains into the same queue.
        for ip in self.nat.take_unresolved() {
            let _ = self.unresolved.push(ip); // full: the next miss asks again
        }
        self.export(now);
    }

    fn idle(&mut self) {
        self.tables.refresh();
        self.hops.refresh();
        if let Some(dns) = &mut self.dns {
            dns.refresh();
        }
        let now = self.now_ms();
        let elapsed = now.wrapping_sub(self.last_sweep).min(50) as usize;
        if elapsed > 0 {
            self.last_sweep = now;
            self.nat.maintain(now, self.sweep_per_ms * elapsed);
        }
        self.export(now);
    }
}

/// The running dataplane.
pub struct Gateway {
    cfg: GatewayConfig,
    steering: Vec<Steering>,
    workers: Vec<JoinHandle<NatHandler>>,
    stats: Vec<Arc<WorkerStats>>,
    nat_stats: Vec<Arc<Mutex<NatSnapshot>>>,
    stop: Arc<AtomicBool>,
    hops: Publisher<NextHops>,
    hops_gen: u32,
    kernel: KernelNet,
    unresolved: Arc<ArrayQueue<IpAddr>>,
    steered_gen: Option<u64>,
    /// The DNS tables, to steer their addresses' UDP/53 to the workers.
    dns: Option<Reader<DnsTable>>,
    steered_dns: Vec<Ipv4Addr>,
    steered_dns6: Vec<Ipv6Addr>,
    /// What adopting the state directory did, when there is one.
    restart: Option<nat::restart::RestartReport>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("interfaces", &self.cfg.interfaces)
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// True for an IPv6 link-local unicast address (`fe80::/10`).
fn is_link_local6(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// A port's addresses as next-hop prefixes: every IPv4 address, and the IPv6
/// ones but link-local: every link has `fe80::/64`, so it tells no port
/// apart (routes through a link-local gateway carry their port instead), and
/// an ICMPv6 error must not come from a link-local source.
fn port_nets(i: &xsk::Interface) -> Vec<IpNet> {
    let v4 = i.addrs.iter().filter_map(|&(a, len)| IpNet::new(a.into(), len).ok());
    let v6 =
        i.addrs6.iter().filter(|(a, _)| !is_link_local6(*a)).filter_map(|&(a, len)| IpNet::new(a.into(), len).ok());
    v4.chain(v6).collect()
}

/// Loads family `A`'s routes and usable neighbours on our ports into `h`.
/// IPv4 routes resolve their gateway through the ports' prefixes, as
/// always; IPv6 routes keep the kernel's output interface, because their
/// gateway is usually link-local (learnt from router advertisements).
fn load_family<A: Addr>(
    h: &mut NextHops,
    routes: &[Route<A>],
    neighbours: &[Neighbour<A>],
    port_of: impl Fn(u32) -> Option<u16>,
) {
    for r in routes {
        let (Some(gw), Some(port)) = (r.gateway, r.oif.and_then(&port_of)) else { continue };
        let Some(net) = IpNet::new(r.dst.into(), r.prefix_len).ok().and_then(A::from_net) else { continue };
        match A::FAMILY {
            IpFamily::V4 => h.add_route(net, gw),
            IpFamily::V6 => h.add_route_on(net, gw, port),
        };
    }
    for n in neighbours {
        if let (Some(port), Some(mac), NeighState::Usable) = (port_of(n.ifindex), n.mac, n.state) {
            h.add_neighbour(port, n.ip, mac);
        }
    }
}

/// Builds the NAT next-hop table from the kernel's view: our interfaces in
/// port order, the routes through them, the usable neighbours on them, of
/// both families.
pub fn next_hops_from_kernel(k: &KernelNet, interfaces: &[String], generation: u32) -> NextHops {
    let ifs: Vec<Option<&xsk::Interface>> = interfaces.iter().map(|n| k.interface(n)).collect();
    let ports = ifs
        .iter()
        .zip(interfaces)
        .map(|(i, name)| PortInfo {
            name: name.clone(),
            mac: i.map_or([0; 6], |i| i.mac),
            addrs: i.map_or_else(Vec::new, port_nets),
        })
        .collect();
    let mut h = NextHops::new(generation, ports);
    let port_of = |ifindex: u32| ifs.iter().position(|i| i.is_some_and(|i| i.ifindex == ifindex)).map(|p| p as u16);
    load_family(&mut h, &k.routes, &k.neighbours, port_of);
    load_family(&mut h, &k.routes6, &k.neighbours6, port_of);
    h
}

/// What the steering maps of every interface hold for one table generation.
#[derive(Debug, Default, PartialEq, Eq)]
struct SteeringLists {
    frontends: Vec<(Ipv4Addr, u8, u16)>,
    sources: Vec<(Ipv4Addr, u8, u16)>,
    frontends6: Vec<(Ipv6Addr, u8, u16)>,
    sources6: Vec<(Ipv6Addr, u8, u16)>,
}

impl SteeringLists {
    /// The lists for table `t` under the gateway's default forwarding
    /// `mode`, with the workers answering UDP DNS queries to `dns_addrs`
    /// and the daemon's server those to `dns_addrs6`.
    fn of(t: &ServiceTable, mode: ForwardingMode, dns_addrs: &[Ipv4Addr], dns_addrs6: &[Ipv6Addr]) -> Self {
        // UDP/53 of a DNS address goes to the workers, TCP/53 to the kernel's
        // DNS server, even when the address is a Service's (kube-dns).
        let udp = svcgate_common::model::Protocol::Udp.number();
        let frontends = t
            .v4()
            .frontends()
            .map(|(k, _)| (k.addr, k.protocol.number(), k.port))
            .filter(|(a, _, port)| !(*port == dns_hook::DNS_PORT && dns_addrs.contains(a)))
            .chain(dns_addrs.iter().map(|&a| (a, udp, dns_hook::DNS_PORT)))
            .collect();
        // IPv6: the workers answer no DNS (their hook parses IPv4), so
        // port 53 of an IPv6 DNS address, even a Service's (a dual-stack
        // kube-dns), is left to the kernel, where the daemon's server listens.
        let frontends6 = t
            .v6()
            .frontends()
            .map(|(k, _)| (k.addr, k.protocol.number(), k.port))
            .filter(|(a, _, port)| !(*port == dns_hook::DNS_PORT && dns_addrs6.contains(a)))
            .collect();
        // Replies in dnat mode are addressed to clients: steered by source.
        Self {
            frontends,
            sources: dnat_sources::<Ipv4Addr>(t, mode),
            frontends6,
            sources6: dnat_sources::<Ipv6Addr>(t, mode),
        }
    }
}

/// The backends of family `A` of the Services forwarded in dnat mode (by
/// their own setting, else the gateway's `mode`): their replies keep the
/// client's address as destination, so the program steers them by source.
fn dnat_sources<A: Addr>(t: &ServiceTable, mode: ForwardingMode) -> Vec<(A, u8, u16)> {
    t.family::<A>()
        .entries()
        .iter()
        .filter(|e| e.forwarding.unwrap_or(mode) == ForwardingMode::Dnat)
        .flat_map(|e| e.backends.iter().map(|b| (b.addr, e.id.protocol.number(), b.port)))
        .collect()
}

impl Gateway {
    /// Attaches the steering program to every interface, opens the sockets
    /// and starts one pinned worker per queue, reading service tables from
    /// `tables`.
    pub fn start(cfg: GatewayConfig, tables: &Publisher<ServiceTable>) -> Result<Self, GatewayError> {
        Self::start_with_dns(cfg, tables, None)
    }

    /// [`Gateway::start`], with the workers also answering UDP queries to
    /// the addresses of the published DNS tables (see [`dns_hook`]): their
    /// UDP port 53 is steered to the workers like a frontend, whatever the
    /// service table holds.
    pub fn start_with_dns(
        mut cfg: GatewayConfig,
        tables: &Publisher<ServiceTable>,
        dns: Option<&Publisher<DnsTable>>,
    ) -> Result<Self, GatewayError> {
        if cfg.interfaces.is_empty() {
            return Err(GatewayError::NoInterface);
        }
        cfg.nat.workers = cfg.queues.max(1) as u16;
        // With a state directory: the tables an earlier svcgate left there
        // are adopted (see nat::restart); the caller reads `shared.restart`
        // through `Gateway::restart_report`.
        let shared = nat::Shared::open(cfg.nat.clone())?;
        let kernel = KernelNet::read()?;
        for name in &cfg.interfaces {
            match kernel.interface(name) {
                None => return Err(XskError::UnknownInterface { name: name.clone() }.into()),
                Some(i) if i.mac == [0; 6] => return Err(GatewayError::NoMac { name: name.clone() }),
                Some(_) => {}
            }
        }
        let hops = Publisher::new(next_hops_from_kernel(&kernel, &cfg.interfaces, 1));
        let mut steering = Vec::new();
        for name in &cfg.interfaces {
            let mut s = Steering::attach(name, cfg.xdp_mode)?;
            let (lo, hi) = shared.reverse.port_range();
            s.set_snat(&cfg.nat.snat_addrs, lo, hi)?;
            s.set_snat6(&cfg.nat.snat_addrs6)?;
            steering.push(s);
        }
        // Built before the workers: if one of them fails to start, dropping
        // `gw` stops and joins those already running (and detaches).
        let mut gw = Self {
            cfg,
            steering,
            workers: Vec::new(),
            stats: Vec::new(),
            nat_stats: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            hops,
            hops_gen: 1,
            kernel,
            unresolved: Arc::new(ArrayQueue::new(256)),
            steered_gen: None,
            dns: dns.map(Publisher::reader),
            steered_dns: Vec::new(),
            steered_dns6: Vec::new(),
            restart: shared.restart.clone(),
        };
        let cfg = gw.cfg.clone();
        for q in 0..cfg.queues.max(1) {
            let ports: Vec<PortConfig> = cfg.interfaces.iter().map(|n| PortConfig::new(n.clone(), q)).collect();
            let xp = XskPorts::new(&cfg.xsk, &ports)?;
            for (i, s) in gw.steering.iter_mut().enumerate() {
                let (_, queue, fd) = xp.socket(i);
                s.register_socket(queue, fd)?;
            }
            let export = Arc::new(Mutex::new(NatSnapshot::default()));
            let nat = nat::Worker::new(q as u16, Arc::clone(&shared));
            let sweep_per_ms = nat.flow_buckets().div_ceil(SWEEP_PERIOD_MS).max(1);
            let handler = NatHandler {
                nat,
                tables: tables.reader(),
                hops: gw.hops.reader(),
                dns: dns.map(Publisher::reader),
                dns_counters: DnsCounters::default(),
                shared: Arc::clone(&shared),
                unresolved: Arc::clone(&gw.unresolved),
                export: Arc::clone(&export),
                last_export: 0,
                sweep_per_ms,
                last_sweep: 0,
            };
            let exception = match &cfg.exception_device {
                Some(name) => Some(ExceptionPath::create(&format!("{name}q{q}"))?),
                None => None,
            };
            let wcfg = WorkerConfig {
                name: format!("svcgate-q{q}"),
                core: (!cfg.cores.is_empty()).then(|| cfg.cores[q as usize % cfg.cores.len()]),
                idle_spins: cfg.idle_spins,
                idle_sleep: cfg.idle_sleep,
                rt_priority: cfg.worker_rt_priority,
                drop_capabilities: cfg.drop_capabilities,
            };
            let w = xsk::Worker::new(xp, handler, Arc::clone(&gw.stop), exception, wcfg);
            gw.stats.push(w.stats());
            gw.nat_stats.push(export);
            gw.workers.push(w.spawn()?);
        }
        gw.sync_steering(&tables.current())?;
        Ok(gw)
    }

    /// What adopting the state directory did (files adopted and refused,
    /// flows taken over and dropped); `None` without a state directory.
    pub fn restart_report(&self) -> Option<&nat::restart::RestartReport> {
        self.restart.as_ref()
    }

    /// Puts the frontends of `t`, and UDP port 53 of the DNS addresses, into
    /// every interface's steering map (once per table generation or change
    /// of DNS addresses).
    pub fn sync_steering(&mut self, t: &ServiceTable) -> Result<(), XskError> {
        let (dns_addrs, dns_addrs6): (&[Ipv4Addr], &[Ipv6Addr]) = match &mut self.dns {
            Some(dns) => {
                dns.refresh();
                (dns.get().addresses(), dns.get().addresses6())
            }
            None => (&[], &[]),
        };
        if self.steered_gen == Some(t.generation()) && self.steered_dns == dns_addrs && self.steered_dns6 == dns_addrs6
        {
            return Ok(());
        }
        let lists = SteeringLists::of(t, self.cfg.nat.mode, dns_addrs, dns_addrs6);
        let (dns_addrs, dns_addrs6) = (dns_addrs.to_vec(), dns_addrs6.to_vec());
        for s in &mut self.steering {
            s.set_frontends(&lists.frontends)?;
            s.set_sources(&lists.sources)?;
            s.set_frontends6(&lists.frontends6)?;
            s.set_sources6(&lists.sources6)?;
        }
        self.steered_gen = Some(t.generation());
        self.steered_dns = dns_addrs;
        self.steered_dns6 = dns_addrs6;
        Ok(())
    }

    /// Regular housekeeping from the control thread: follows table swaps in
    /// the steering maps, asks the kernel to resolve the neighbours workers
    /// missed (ARP or NDP, by family), and republishes next hops when the
    /// kernel's view changed.
    pub fn maintain(&mut self, t: &ServiceTable) -> Result<(), XskError> {
        self.sync_steering(t)?;
        let h = self.hops.current();
        while let Some(ip) = self.unresolved.pop() {
            // A failed request is retried when a worker misses again.
            match ip {
                IpAddr::V4(ip) => self.resolve_missed(&h, ip),
                IpAddr::V6(ip) => self.resolve_missed(&h, ip),
            }
        }
        let k = KernelNet::read()?;
        if k != self.kernel {
            self.kernel = k;
            self.hops_gen = self.hops_gen.wrapping_add(1);
            self.hops.publish(next_hops_from_kernel(&self.kernel, &self.cfg.interfaces, self.hops_gen));
        }
        Ok(())
    }

    /// Asks the kernel to resolve the neighbour `ip`, a worker's miss, on
    /// the port the next-hop table routes it out of (if it still does).
    fn resolve_missed<A: Addr>(&self, h: &NextHops, ip: A) {
        if let nat::Resolution::Unresolved { port, .. } = h.resolve(ip) {
            let name = &self.cfg.interfaces[usize::from(port)];
            if let Some(i) = self.kernel.interface(name) {
                let _ = xsk::resolve_neighbour(i.ifindex, ip);
            }
        }
    }

    /// The AF_XDP counters of every worker.
    pub fn worker_stats(&self) -> Vec<StatsSnapshot> {
        self.stats_handle().worker_stats()
    }

    /// The NAT counters of every worker (as of their last export).
    pub fn nat_stats(&self) -> Vec<NatSnapshot> {
        self.stats_handle().nat_stats()
    }

    /// A handle to the counters that another thread (the admin endpoint) can keep.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            workers: self.stats.clone(),
            nat: self.nat_stats.clone(),
            snat_addrs: self.cfg.nat.snat_addrs.clone(),
            snat_addrs6: self.cfg.nat.snat_addrs6.clone(),
        }
    }

    /// The XDP mode in use on each interface.
    pub fn xdp_modes(&self) -> Vec<(String, &'static str)> {
        self.steering.iter().map(|s| (s.ifname().to_string(), s.mode())).collect()
    }

    /// Stops the workers, waits for them and detaches the program.
    pub fn shutdown(mut self) {
        self.stop_workers();
        // Dropping `self` detaches the steering programs.
    }

    fn stop_workers(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Gateway {
    /// A Gateway dropped without [`Gateway::shutdown`] (a failed start, a
    /// panicking caller) stops and joins its workers too; the steering
    /// programs are detached after them, when the fields drop.
    fn drop(&mut self) {
        self.stop_workers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svcgate_common::model::{
        BackendSpec, DesiredState, EndpointConditions, Protocol, ServicePortSpec, ServiceSpec, ServiceType,
        SessionAffinity,
    };

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn backend(addr: IpAddr) -> BackendSpec {
        BackendSpec { addr, port: 8080, conditions: EndpointConditions::READY, weight: 1 }
    }

    /// A dual-stack ClusterIP Service (`web`, snat) and an IPv6-only one in
    /// dnat mode (`direct`), on a dual-stack node.
    fn table() -> ServiceTable {
        let svc = |name: &str, cluster_ips: Vec<IpAddr>, backends: Vec<BackendSpec>, forwarding| ServiceSpec {
            namespace: "default".into(),
            name: String::from(name),
            service_type: ServiceType::ClusterIp,
            cluster_ips,
            external_ips: vec![],
            load_balancer_ips: vec![],
            source_ranges: vec![],
            affinity: SessionAffinity::None,
            ports: vec![ServicePortSpec {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                backends,
            }],
            forwarding,
        };
        let web = svc(
            "web",
            vec![v4("198.19.0.10").into(), v6("2001:2:0:64::10").into()],
            vec![backend(v4("198.18.2.11").into()), backend(v6("2001:2:0:2::11").into())],
            Some(ForwardingMode::Snat),
        );
        let direct = svc(
            "direct",
            vec![v6("2001:2:0:64::20").into()],
            vec![backend(v6("2001:2:0:2::21").into()), backend(v6("2001:2:0:2::22").into())],
            Some(ForwardingMode::Dnat),
        );
        let st = DesiredState { node_ips: vec![v4("198.18.1.1").into()], services: vec![web, direct] };
        let (t, warnings) = ServiceTable::build(&st, 1);
        assert!(warnings.is_empty(), "{warnings:?}");
        t
    }

    #[test]
    fn steering_lists_per_family() {
        let mut l = SteeringLists::of(&table(), ForwardingMode::Snat, &[], &[]);
        l.frontends6.sort();
        l.sources6.sort();
        assert_eq!(l.frontends, vec![(v4("198.19.0.10"), 6, 80)]);
        assert_eq!(l.frontends6, vec![(v6("2001:2:0:64::10"), 6, 80), (v6("2001:2:0:64::20"), 6, 80)]);
        // Only the dnat-mode Service's backends, of their family.
        assert!(l.sources.is_empty());
        assert_eq!(l.sources6, vec![(v6("2001:2:0:2::21"), 6, 8080), (v6("2001:2:0:2::22"), 6, 8080)]);
        // DNS steering stays IPv4.
        let l = SteeringLists::of(&table(), ForwardingMode::Snat, &[v4("198.19.0.53")], &[]);
        assert!(l.frontends.contains(&(v4("198.19.0.53"), 17, 53)));
        assert_eq!(l.frontends6.len(), 2);
        // A dual-stack kube-dns: UDP/53 of its IPv4 address to the workers,
        // of its IPv6 address to the kernel (the daemon's server); its other
        // ports are frontends as any Service's.
        let dns = |port: u16, protocol| ServicePortSpec {
            name: String::new(),
            protocol,
            port,
            node_port: None,
            backends: vec![backend(v6("2001:2:0:2::53").into())],
        };
        let kube_dns = ServiceSpec {
            namespace: "kube-system".into(),
            name: "kube-dns".into(),
            service_type: ServiceType::ClusterIp,
            cluster_ips: vec![v4("198.19.0.53").into(), v6("2001:2:0:64::53").into()],
            external_ips: vec![],
            load_balancer_ips: vec![],
            source_ranges: vec![],
            affinity: SessionAffinity::None,
            ports: vec![dns(53, Protocol::Udp), dns(9153, Protocol::Tcp)],
            forwarding: None,
        };
        let (t, _) = ServiceTable::build(&DesiredState { node_ips: vec![], services: vec![kube_dns] }, 1);
        let l = SteeringLists::of(&t, ForwardingMode::Snat, &[v4("198.19.0.53")], &[v6("2001:2:0:64::53")]);
        assert!(l.frontends.contains(&(v4("198.19.0.53"), 17, 53)));
        assert_eq!(l.frontends6, vec![(v6("2001:2:0:64::53"), 6, 9153)]);
    }

    fn usable<A>(ifindex: u32, ip: A, mac: [u8; 6]) -> Neighbour<A> {
        Neighbour { ifindex, ip, mac: Some(mac), state: NeighState::Usable }
    }

    fn kernel() -> KernelNet {
        let iface =
            |ifindex, name: &str, mac, addrs, addrs6| xsk::Interface { ifindex, name: name.into(), mac, addrs, addrs6 };
        KernelNet {
            interfaces: vec![
                iface(1, "lo", [0; 6], vec![(v4("127.0.0.1"), 8)], vec![(v6("::1"), 128)]),
                iface(
                    2,
                    "g0",
                    [2, 0, 0, 0, 0, 1],
                    vec![(v4("198.18.1.1"), 24)],
                    vec![(v6("fe80::1:1"), 64), (v6("2001:2:0:1::1"), 64)],
                ),
                iface(3, "g1", [2, 0, 0, 0, 0, 2], vec![(v4("198.18.2.1"), 24)], vec![(v6("2001:2:0:2::1"), 64)]),
            ],
            neighbours: vec![usable(3, v4("198.18.2.11"), [2, 0, 0, 0, 2, 11])],
            routes: vec![],
            neighbours6: vec![
                usable(3, v6("2001:2:0:2::11"), [2, 0, 0, 0, 6, 11]),
                usable(2, v6("fe80::ff"), [2, 0, 0, 0, 0xfe, 0xff]),
                Neighbour { ifindex: 3, ip: v6("2001:2:0:2::12"), mac: None, state: NeighState::Incomplete },
            ],
            routes6: vec![
                // The default route an RA gives: a link-local gateway.
                Route { dst: Ipv6Addr::UNSPECIFIED, prefix_len: 0, gateway: Some(v6("fe80::ff")), oif: Some(2) },
                Route { dst: v6("2001:2:0:2::"), prefix_len: 64, gateway: None, oif: Some(3) },
                // Through an interface that is not a port: left out.
                Route { dst: v6("2001:2:5::"), prefix_len: 48, gateway: Some(v6("fe80::9")), oif: Some(1) },
            ],
        }
    }

    #[test]
    fn ipv6_next_hops_from_kernel() {
        let h = next_hops_from_kernel(&kernel(), &["g0".into(), "g1".into()], 7);
        assert_eq!(h.generation(), 7);
        // No link-local prefix on the ports; the global one is the ICMPv6 source.
        assert_eq!(
            h.ports()[0].addrs,
            vec!["198.18.1.1/24".parse::<IpNet>().unwrap(), "2001:2:0:1::1/64".parse().unwrap()]
        );
        assert_eq!(h.port_addr::<Ipv6Addr>(0), Some(v6("2001:2:0:1::1")));
        assert_eq!(h.port_addr::<Ipv6Addr>(1), Some(v6("2001:2:0:2::1")));
        // A connected backend resolved by NDP.
        let nat::Resolution::Hop(i) = h.resolve(v6("2001:2:0:2::11")) else { panic!() };
        assert_eq!((h.hop(i).unwrap().port, h.hop(i).unwrap().dst_mac), (1, [2, 0, 0, 0, 6, 11]));
        // INCOMPLETE is not a hop: the worker passes, the gateway asks again.
        assert_eq!(h.resolve(v6("2001:2:0:2::12")), nat::Resolution::Unresolved { port: 1, via: v6("2001:2:0:2::12") });
        // A far client through the link-local default router, out of g0.
        let nat::Resolution::Hop(i) = h.resolve(v6("2001:2:ff::7")) else { panic!() };
        assert_eq!((h.hop(i).unwrap().port, h.hop(i).unwrap().dst_mac), (0, [2, 0, 0, 0, 0xfe, 0xff]));
        // IPv4 as before.
        let nat::Resolution::Hop(i) = h.resolve(v4("198.18.2.11")) else { panic!() };
        assert_eq!(h.hop(i).unwrap().port, 1);
        assert_eq!(h.resolve(v4("198.18.9.9")), nat::Resolution::NoRoute);
    }
}
