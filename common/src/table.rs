//! The immutable table set that workers read.
//!
//! A [`ServiceTable`] is built whole, off to the side, from a [`DesiredState`],
//! then published by one pointer swap (the control plane's job). Workers only
//! ever read it, so nothing here is behind a lock. Every Service port becomes
//! one [`ServiceEntry`] with its backends and its Maglev table; every address
//! it is reachable on (ClusterIP, each node IP at the nodePort, each
//! LoadBalancer ingress IP, each externalIP) becomes one [`Frontend`] that
//! points at that entry.
//!
//! Entries are reference-counted and shared between generations: an Endpoints
//! change builds one new entry ([`ServiceTable::with_entries_replaced`]) and
//! reuses the frontend map and every other entry.
//!
//! # Families
//! The table has one half per address family ([`FamilyTable`]), each with
//! its own frontends and entries: a dual-stack Service port is two entries,
//! one over its IPv4 endpoints and one over its IPv6 ones, reached from the
//! frontends of that family only. Code generic over the family takes its
//! half with [`ServiceTable::family`].

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::family::{of_family, Addr, PerFamily};
use crate::maglev::{table_size_for, Maglev, MaglevBackend};
use crate::model::{
    BackendSpec, DesiredState, EndpointConditions, ForwardingMode, IpNet, Protocol, ServicePortSpec, ServiceSpec,
    ServiceType, SessionAffinity,
};

/// A frontend's lookup key: destination address, protocol and port, as the
/// dataplane reads them from the wire. `A` is the family's address type
/// (`IpAddr` in warnings, which name a key of either family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey<A = Ipv4Addr> {
    /// Destination address.
    pub addr: A,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
}

impl<A: Into<IpAddr> + Copy> FrontendKey<A> {
    /// The same key with the address as an `IpAddr`.
    pub fn to_ip(&self) -> FrontendKey<IpAddr> {
        FrontendKey { addr: self.addr.into(), protocol: self.protocol, port: self.port }
    }
}

impl<A: Into<IpAddr> + Copy> fmt::Display for FrontendKey<A> {
    /// `198.18.100.1:80/TCP`, `[2001:2::1]:80/TCP`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr.into() {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, self.protocol),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, self.protocol),
        }
    }
}

/// How a frontend is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrontendKind {
    /// The Service's cluster IP and `port`.
    ClusterIp,
    /// A node IP and the `nodePort`.
    NodePort,
    /// A LoadBalancer ingress IP (or legacy `loadBalancerIP`) and `port`.
    LoadBalancer,
    /// An `externalIPs` entry and `port`.
    ExternalIp,
}

/// Where a frontend leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frontend {
    /// How it is reached.
    pub kind: FrontendKind,
    /// Index of its [`ServiceEntry`] in [`ServiceTable::entries`].
    pub entry: u32,
}

/// One backend of a service entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend<A = Ipv4Addr> {
    /// Pod IP.
    pub addr: A,
    /// Target port.
    pub port: u16,
    /// Endpoint conditions.
    pub conditions: EndpointConditions,
    /// Maglev weight.
    pub weight: u16,
}

/// Which backends new flows go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveSet {
    /// The ready endpoints.
    Ready,
    /// No endpoint is ready, so the serving-and-terminating ones take new flows
    /// (Kubernetes' terminating-endpoint fallback, KEP-1669).
    TerminatingFallback,
    /// Nothing can take a new flow: the frontend rejects (TCP RST / ICMP port
    /// unreachable), as kube-proxy's REJECT rule does.
    Empty,
}

/// The identity of a service entry, for counters, logs and `svcgate status`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortId {
    /// `metadata.namespace`.
    pub namespace: Arc<str>,
    /// `metadata.name`.
    pub name: Arc<str>,
    /// Port name (may be empty).
    pub port_name: Arc<str>,
    /// Protocol.
    pub protocol: Protocol,
    /// Service port.
    pub port: u16,
}

impl ServicePortId {
    /// The identity of `port` of `svc`; shares the namespace and name strings
    /// of `sibling` (another port of the same Service) when given.
    pub fn of(svc: &ServiceSpec, port: &ServicePortSpec, sibling: Option<&ServicePortId>) -> Self {
        let (namespace, name) = match sibling {
            Some(s) if *s.namespace == *svc.namespace && *s.name == *svc.name => {
                (Arc::clone(&s.namespace), Arc::clone(&s.name))
            }
            _ => (Arc::from(svc.namespace.as_str()), Arc::from(svc.name.as_str())),
        };
        Self { namespace, name, port_name: Arc::from(port.name.as_str()), protocol: port.protocol, port: port.port }
    }

    /// FNV-1a over the identity, finished with fmix64: the same on every run.
    pub fn stable_hash(&self) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let parts: [&[u8]; 3] = [self.namespace.as_bytes(), self.name.as_bytes(), self.port_name.as_bytes()];
        for part in parts {
            for &b in part.iter().chain(std::iter::once(&0xff)) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h ^= (u64::from(self.protocol.number()) << 16) | u64::from(self.port);
        let h = crate::hash::fmix64(h);
        (h ^ (h >> 32)) as u32
    }
}

impl fmt::Display for ServicePortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port_name.is_empty() {
            write!(f, ":{}", self.port_name)?;
        }
        write!(f, " {}/{}", self.port, self.protocol)
    }
}

/// One port of one Service in one family: backends, Maglev table and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry<A: Addr = Ipv4Addr> {
    /// Which Service port this is.
    pub id: ServicePortId,
    /// A hash of `id` that is stable across generations and processes (keys
    /// ClientIP affinity records, which must survive table swaps).
    pub id_hash: u32,
    /// Backends sorted by (address, port), so the dataplane can find a flow's
    /// backend again after a table swap by binary search.
    pub backends: Box<[Backend<A>]>,
    /// Which backends take new flows.
    pub active: ActiveSet,
    /// Maglev table over the active backends; slot values index `backends`.
    /// Ports of one Service with the same endpoints share it (see
    /// [`ServiceEntry::new_like`]).
    pub maglev: Maglev,
    /// ClientIP affinity timeout in seconds, when set.
    pub affinity_timeout_secs: Option<u32>,
    /// `loadBalancerSourceRanges` of this family.
    pub source_ranges: Box<[A::Net]>,
    /// True when the Service lists source ranges (of any family): a source
    /// must then be in one of `source_ranges`, so a Service that lists
    /// ranges of the other family only lets no client of this one in (fail
    /// closed: a list meant to restrict never opens a family it forgot).
    pub source_restricted: bool,
    /// The Service's own forwarding mode; `None`: the gateway's.
    pub forwarding: Option<ForwardingMode>,
}

impl<A: Addr> ServiceEntry<A> {
    /// Builds an entry from the backends and source ranges of family `A`
    /// (the others are left out): sorts the backends, chooses the active
    /// set and builds the Maglev table over it.
    pub fn new(
        id: ServicePortId,
        backends: &[BackendSpec],
        affinity: SessionAffinity,
        source_ranges: &[IpNet],
    ) -> Self {
        Self::new_like(id, backends, affinity, source_ranges, None)
    }

    /// [`ServiceEntry::new`], sharing `like`'s Maglev table (no build) when it
    /// is the table this entry would get: the same addresses, each once, in
    /// the same order with the same conditions and weights (the ports may
    /// differ: Maglev hashes a unique address alone). That is the case for
    /// the ports of a Service whose endpoints list each Pod once per port,
    /// so a change to a many-port Service builds one table.
    pub fn new_like(
        id: ServicePortId,
        backends: &[BackendSpec],
        affinity: SessionAffinity,
        source_ranges: &[IpNet],
        like: Option<&ServiceEntry<A>>,
    ) -> Self {
        let mut list: Vec<Backend<A>> = backends
            .iter()
            .filter_map(|b| {
                let addr = A::from_ip(b.addr)?;
                Some(Backend { addr, port: b.port, conditions: b.conditions, weight: b.weight.max(1) })
            })
            .collect();
        list.sort_by_key(|b| (b.addr, b.port));
        list.dedup_by_key(|b| (b.addr, b.port));

        let ready = |b: &Backend<A>| b.conditions.ready;
        let fallback = |b: &Backend<A>| b.conditions.serving && b.conditions.terminating;
        let active = if list.iter().any(ready) {
            ActiveSet::Ready
        } else if list.iter().any(fallback) {
            ActiveSet::TerminatingFallback
        } else {
            ActiveSet::Empty
        };
        let affinity_timeout_secs = match affinity {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout_secs } => Some(timeout_secs),
        };
        let shared = like.filter(|o| {
            o.backends.len() == list.len()
                && o.backends
                    .iter()
                    .zip(&list)
                    .all(|(x, y)| x.addr == y.addr && x.conditions == y.conditions && x.weight == y.weight)
                && list.windows(2).all(|w| w[0].addr != w[1].addr)
        });
        let maglev = match shared {
            Some(o) => o.maglev.clone(),
            None => Self::build_maglev(&list, active),
        };
        Self {
            id_hash: id.stable_hash(),
            id,
            backends: list.into_boxed_slice(),
            active,
            maglev,
            affinity_timeout_secs,
            source_ranges: source_ranges.iter().filter_map(|&n| A::from_net(n)).collect(),
            source_restricted: !source_ranges.is_empty(),
            forwarding: None,
        }
    }

    fn build_maglev(list: &[Backend<A>], active: ActiveSet) -> Maglev {
        let ready = |b: &Backend<A>| b.conditions.ready;
        let fallback = |b: &Backend<A>| b.conditions.serving && b.conditions.terminating;
        // Maglev over the active subset; map its indices back to `list`.
        let chosen: Vec<u16> = (0..list.len().min(usize::from(u16::MAX)))
            .filter(|&i| match active {
                ActiveSet::Ready => ready(&list[i]),
                ActiveSet::TerminatingFallback => fallback(&list[i]),
                ActiveSet::Empty => false,
            })
            .map(|i| i as u16)
            .collect();
        let mb: Vec<MaglevBackend> = chosen
            .iter()
            .map(|&i| {
                let b = &list[usize::from(i)];
                MaglevBackend { addr: b.addr.into(), port: b.port, weight: u32::from(b.weight) }
            })
            .collect();
        let sub = Maglev::build(&mb, table_size_for(mb.len()));
        if chosen.len() == list.len() {
            sub // every backend is active: the indices are the same
        } else {
            sub.remap(|i| chosen[usize::from(i)])
        }
    }

    /// Index of the backend with this address and port, if it is still listed.
    #[inline]
    pub fn find_backend(&self, addr: A, port: u16) -> Option<u16> {
        self.backends.binary_search_by_key(&(addr, port), |b| (b.addr, b.port)).ok().map(|i| i as u16)
    }

    /// True when `src` may use this entry's LoadBalancer frontends.
    #[inline]
    pub fn source_allowed(&self, src: A) -> bool {
        !self.source_restricted || self.source_ranges.iter().any(|n| A::net_contains(n, src))
    }
}

/// A problem the builder found and worked around; the rest of the table is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildWarning {
    /// Two Service ports claim one frontend; the first keeps it.
    #[error("{kind:?} frontend {key} of {loser} is already served by {owner}; {loser} does not get it")]
    FrontendClash {
        /// The contested frontend.
        key: FrontendKey<IpAddr>,
        /// How the loser wanted to be reached.
        kind: FrontendKind,
        /// The Service port that keeps it.
        owner: String,
        /// The Service port that does not get it.
        loser: String,
    },
    /// A NodePort or LoadBalancer Service port has no nodePort.
    #[error("{service} port {port}/{protocol} is of type {service_type} but has no nodePort; only its other frontends are served")]
    MissingNodePort {
        /// `namespace/name`.
        service: String,
        /// The port.
        port: u16,
        /// Its protocol.
        protocol: Protocol,
        /// The Service type.
        service_type: &'static str,
    },
}

/// One family's half of a table: its frontends and its entries.
#[derive(Debug)]
pub struct FamilyTable<A: Addr> {
    frontends: Arc<HashMap<FrontendKey<A>, Frontend, ahash::RandomState>>,
    entries: Arc<[Arc<ServiceEntry<A>>]>,
}

impl<A: Addr> Clone for FamilyTable<A> {
    fn clone(&self) -> Self {
        Self { frontends: Arc::clone(&self.frontends), entries: Arc::clone(&self.entries) }
    }
}

impl<A: Addr> Default for FamilyTable<A> {
    fn default() -> Self {
        Self { frontends: Arc::default(), entries: Arc::from(Vec::new()) }
    }
}

impl<A: Addr> FamilyTable<A> {
    /// The frontend for a destination, if it is a Service frontend.
    #[inline]
    pub fn frontend(&self, addr: A, protocol: Protocol, port: u16) -> Option<Frontend> {
        self.frontends.get(&FrontendKey { addr, protocol, port }).copied()
    }

    /// Every frontend, for the XDP steering map and `svcgate status`.
    pub fn frontends(&self) -> impl Iterator<Item = (&FrontendKey<A>, &Frontend)> {
        self.frontends.iter()
    }

    /// The number of frontends.
    pub fn frontend_count(&self) -> usize {
        self.frontends.len()
    }

    /// The entry at `idx`.
    #[inline(always)]
    pub fn entry(&self, idx: u32) -> Option<&ServiceEntry<A>> {
        self.entries.get(idx as usize).map(|e| &**e)
    }

    /// Every entry, in index order.
    pub fn entries(&self) -> &[Arc<ServiceEntry<A>>] {
        &self.entries
    }

    /// This half with some entries replaced, sharing the frontend map and
    /// every other entry. Indices out of range are ignored.
    fn with_entries_replaced(&self, replaced: Vec<(u32, ServiceEntry<A>)>) -> Self {
        if replaced.is_empty() {
            return self.clone();
        }
        let mut entries: Vec<Arc<ServiceEntry<A>>> = self.entries.to_vec();
        for (idx, entry) in replaced {
            if let Some(slot) = entries.get_mut(idx as usize) {
                *slot = Arc::new(entry);
            }
        }
        Self { frontends: Arc::clone(&self.frontends), entries: Arc::from(entries) }
    }

    /// Builds this family's half: an entry per port of each Service with a
    /// cluster IP of the family, and that entry's frontends of the family.
    fn build(desired: &DesiredState, warnings: &mut Vec<BuildWarning>) -> Self {
        let mut frontends: HashMap<FrontendKey<A>, Frontend, ahash::RandomState> = HashMap::default();
        let mut entries: Vec<Arc<ServiceEntry<A>>> = Vec::new();
        // The entries (Maglev tables: most of the work) are built first, on
        // every core when there are many; the frontends then in order.
        let mut built = build_entries::<A>(desired).into_iter();
        for svc in desired.services.iter().filter(|s| serves::<A>(s)) {
            for port in &svc.ports {
                let idx = entries.len() as u32;
                let Some(entry) = built.next() else {
                    unreachable!("one entry per port of each Service with a cluster IP of the family")
                };
                let mut add = |addr: A, p: u16, kind: FrontendKind, warnings: &mut Vec<BuildWarning>| {
                    let key = FrontendKey { addr, protocol: port.protocol, port: p };
                    match frontends.get(&key) {
                        Some(f) if f.entry != idx => warnings.push(BuildWarning::FrontendClash {
                            key: key.to_ip(),
                            kind,
                            owner: entries_name(&entries, f.entry),
                            loser: entry.id.to_string(),
                        }),
                        Some(_) => {}
                        None => {
                            frontends.insert(key, Frontend { kind, entry: idx });
                        }
                    }
                };
                for ip in of_family::<A>(&svc.cluster_ips) {
                    add(ip, port.port, FrontendKind::ClusterIp, warnings);
                }
                for ip in of_family::<A>(&svc.external_ips) {
                    add(ip, port.port, FrontendKind::ExternalIp, warnings);
                }
                let wants_node_port = matches!(svc.service_type, ServiceType::NodePort | ServiceType::LoadBalancer);
                match port.node_port {
                    Some(np) if wants_node_port => {
                        for ip in of_family::<A>(&desired.node_ips) {
                            add(ip, np, FrontendKind::NodePort, warnings);
                        }
                    }
                    // Reported once, by the first family that serves the Service.
                    None if wants_node_port && first_family_of::<A>(svc) => {
                        warnings.push(BuildWarning::MissingNodePort {
                            service: svc.qualified_name(),
                            port: port.port,
                            protocol: port.protocol,
                            service_type: svc.service_type.as_str(),
                        })
                    }
                    _ => {}
                }
                if svc.service_type == ServiceType::LoadBalancer {
                    for ip in of_family::<A>(&svc.load_balancer_ips) {
                        add(ip, port.port, FrontendKind::LoadBalancer, warnings);
                    }
                }
                entries.push(entry);
            }
        }
        Self { frontends: Arc::new(frontends), entries: Arc::from(entries) }
    }
}

/// True when `svc` is served in family `A` (it has a cluster IP of it).
fn serves<A: Addr>(svc: &ServiceSpec) -> bool {
    svc.has_family(A::FAMILY)
}

/// True when `A` is the first family of `svc` that this builder visits
/// (IPv4, then IPv6), so that a per-Service warning is given once.
fn first_family_of<A: Addr>(svc: &ServiceSpec) -> bool {
    svc.cluster_ips.iter().map(crate::family::IpFamily::of).min() == Some(A::FAMILY)
}

/// Replacement entries for [`ServiceTable::with_entries_replaced`], per
/// family: `(index in that family's half, entry)`.
#[derive(Debug, Clone, Default)]
pub struct Replacements {
    /// IPv4 entries.
    pub v4: Vec<(u32, ServiceEntry<Ipv4Addr>)>,
    /// IPv6 entries.
    pub v6: Vec<(u32, ServiceEntry<Ipv6Addr>)>,
}

impl Replacements {
    /// The number of entries replaced.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True when nothing is replaced.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PerFamily for Replacements {
    type Of<A: Addr> = Vec<(u32, ServiceEntry<A>)>;
    fn v4(&self) -> &Self::Of<Ipv4Addr> {
        &self.v4
    }
    fn v6(&self) -> &Self::Of<Ipv6Addr> {
        &self.v6
    }
    fn v4_mut(&mut self) -> &mut Self::Of<Ipv4Addr> {
        &mut self.v4
    }
    fn v6_mut(&mut self) -> &mut Self::Of<Ipv6Addr> {
        &mut self.v6
    }
}

/// The complete, immutable lookup state of one generation.
#[derive(Debug, Clone, Default)]
pub struct ServiceTable {
    generation: u64,
    v4: FamilyTable<Ipv4Addr>,
    v6: FamilyTable<Ipv6Addr>,
}

impl PerFamily for ServiceTable {
    type Of<A: Addr> = FamilyTable<A>;
    fn v4(&self) -> &FamilyTable<Ipv4Addr> {
        &self.v4
    }
    fn v6(&self) -> &FamilyTable<Ipv6Addr> {
        &self.v6
    }
    fn v4_mut(&mut self) -> &mut FamilyTable<Ipv4Addr> {
        &mut self.v4
    }
    fn v6_mut(&mut self) -> &mut FamilyTable<Ipv6Addr> {
        &mut self.v6
    }
}

impl ServiceTable {
    /// A table that serves nothing (generation 0).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a whole table. Clashes are resolved first come, first served in
    /// the order of `desired.services` and reported; nothing here fails.
    pub fn build(desired: &DesiredState, generation: u64) -> (Self, Vec<BuildWarning>) {
        let mut warnings = Vec::new();
        let v4 = FamilyTable::build(desired, &mut warnings);
        let v6 = FamilyTable::build(desired, &mut warnings);
        (Self { generation, v4, v6 }, warnings)
    }

    /// A new generation with some entries replaced (e.g. after an Endpoints
    /// change) that shares the frontend maps and every other entry.
    ///
    /// Indices out of range are ignored. The frontends of a replaced entry stay
    /// as they were, so only backends and policy may change this way; a change
    /// of ports or addresses needs [`ServiceTable::build`].
    pub fn with_entries_replaced(&self, generation: u64, replaced: Replacements) -> Self {
        Self {
            generation,
            v4: self.v4.with_entries_replaced(replaced.v4),
            v6: self.v6.with_entries_replaced(replaced.v6),
        }
    }

    /// The generation number the control plane gave this table.
    #[inline(always)]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The half of family `A` (`table.family::<Ipv6Addr>()`).
    #[inline(always)]
    pub fn family<A: Addr>(&self) -> &FamilyTable<A> {
        A::side(self)
    }

    /// The IPv4 half.
    #[inline(always)]
    pub fn v4(&self) -> &FamilyTable<Ipv4Addr> {
        &self.v4
    }

    /// The IPv6 half.
    #[inline(always)]
    pub fn v6(&self) -> &FamilyTable<Ipv6Addr> {
        &self.v6
    }

    /// The frontend for a destination of either family.
    #[inline]
    pub fn frontend<A: Addr>(&self, addr: A, protocol: Protocol, port: u16) -> Option<Frontend> {
        A::side(self).frontend(addr, protocol, port)
    }

    /// The number of frontends of both families.
    pub fn frontend_count(&self) -> usize {
        self.v4.frontend_count() + self.v6.frontend_count()
    }

    /// The number of entries of both families.
    pub fn entry_count(&self) -> usize {
        self.v4.entries.len() + self.v6.entries.len()
    }
}

/// The entries of family `A` of some ports of one Service (`(index, port)`
/// pairs, in order), each sharing the previous one's Maglev table and
/// identity strings where it can ([`ServiceEntry::new_like`]): one Maglev
/// build for all the ports of a Service with the same endpoints.
pub fn service_entries<'a, A: Addr>(
    svc: &ServiceSpec,
    ports: impl IntoIterator<Item = (usize, &'a ServicePortSpec)>,
) -> Vec<(usize, ServiceEntry<A>)> {
    let ports = ports.into_iter();
    let mut out: Vec<(usize, ServiceEntry<A>)> = Vec::with_capacity(ports.size_hint().0);
    for (j, port) in ports {
        let like = out.last().map(|(_, e)| e);
        let id = ServicePortId::of(svc, port, like.map(|e| &e.id));
        let mut entry = ServiceEntry::new_like(id, &port.backends, svc.affinity, &svc.source_ranges, like);
        entry.forwarding = svc.forwarding;
        out.push((j, entry));
    }
    out
}

/// One entry per port of each Service with a cluster IP of family `A`, in
/// table order. Above a few thousand entries the work is split over the
/// available cores (scoped threads, contiguous runs of whole Services,
/// joined in order: the same result).
fn build_entries<A: Addr>(desired: &DesiredState) -> Vec<Arc<ServiceEntry<A>>> {
    let services: Vec<&ServiceSpec> = desired.services.iter().filter(|s| serves::<A>(s)).collect();
    let total: usize = services.iter().map(|s| s.ports.len()).sum();
    let run = |part: &[&ServiceSpec]| {
        let mut out = Vec::with_capacity(part.iter().map(|s| s.ports.len()).sum());
        for svc in part {
            out.extend(service_entries::<A>(svc, svc.ports.iter().enumerate()).into_iter().map(|(_, e)| Arc::new(e)));
        }
        out
    };
    const PARALLEL_FROM: usize = 2048;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if total < PARALLEL_FROM || threads < 2 {
        return run(&services);
    }
    // Cut at Service boundaries into runs of about total/threads ports.
    let per = total.div_ceil(threads);
    let mut cuts = vec![0usize];
    let mut acc = 0;
    for (i, s) in services.iter().enumerate() {
        acc += s.ports.len();
        if acc >= per * cuts.len() && i + 1 < services.len() {
            cuts.push(i + 1);
        }
    }
    cuts.push(services.len());
    let parts: Vec<&[&ServiceSpec]> = cuts.windows(2).map(|w| &services[w[0]..w[1]]).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts[1..].iter().map(|&p| scope.spawn(move || run(p))).collect();
        let mut out = run(parts[0]);
        out.reserve(total - out.len());
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

fn entries_name<A: Addr>(entries: &[Arc<ServiceEntry<A>>], idx: u32) -> String {
    entries.get(idx as usize).map(|e| e.id.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendSpec, EndpointConditions, ServicePortSpec, ServiceSpec};

    fn ip(last: u16) -> Ipv4Addr {
        // 198.18.0.0/15 only (RFC 2544), as everywhere in this project's tests.
        Ipv4Addr::new(198, 18, (last >> 8) as u8, last as u8)
    }

    fn be(last: u16, port: u16, conditions: EndpointConditions) -> BackendSpec {
        BackendSpec { addr: ip(last).into(), port, conditions, weight: 1 }
    }

    fn port(protocol: Protocol, port: u16, node_port: Option<u16>, backends: Vec<BackendSpec>) -> ServicePortSpec {
        ServicePortSpec { name: String::new(), protocol, port, node_port, backends }
    }

    fn svc(
        name: &str,
        service_type: ServiceType,
        cluster_ip: Option<Ipv4Addr>,
        ports: Vec<ServicePortSpec>,
    ) -> ServiceSpec {
        ServiceSpec {
            namespace: "default".into(),
            name: name.into(),
            service_type,
            cluster_ips: cluster_ip.into_iter().map(IpAddr::from).collect(),
            external_ips: vec![],
            load_balancer_ips: vec![],
            source_ranges: vec![],
            affinity: SessionAffinity::None,
            ports,
            forwarding: None,
        }
    }

    fn ready(n: u16) -> Vec<BackendSpec> {
        (0..n).map(|i| be(0x100 + i, 8080, EndpointConditions::READY)).collect()
    }

    fn key(addr: Ipv4Addr, protocol: Protocol, port: u16) -> FrontendKey {
        FrontendKey { addr, protocol, port }
    }

    fn sorted_frontends(t: &ServiceTable) -> Vec<(FrontendKey, Frontend)> {
        let mut v: Vec<_> = t.v4().frontends().map(|(k, f)| (*k, *f)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    const NODES: [u16; 2] = [0x0201, 0x0202];

    fn state(services: Vec<ServiceSpec>) -> DesiredState {
        DesiredState { node_ips: NODES.iter().map(|&n| ip(n).into()).collect(), services }
    }

    #[test]
    fn every_frontend_kind_gets_its_key() {
        let mut lb = svc(
            "web",
            ServiceType::LoadBalancer,
            Some(ip(0x6401)),
            vec![port(Protocol::Tcp, 80, Some(30080), ready(3)), port(Protocol::Udp, 53, Some(30053), ready(2))],
        );
        lb.external_ips = vec![ip(0x6501).into()];
        lb.load_balancer_ips = vec![ip(0x6601).into(), ip(0x6602).into()];
        let (t, warnings) = ServiceTable::build(&state(vec![lb]), 7);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(t.generation(), 7);
        assert_eq!(t.v4().entries().len(), 2);

        let mut want = Vec::new();
        for (entry, proto, p, np) in [(0, Protocol::Tcp, 80, 30080), (1, Protocol::Udp, 53, 30053)] {
            want.push((key(ip(0x6401), proto, p), Frontend { kind: FrontendKind::ClusterIp, entry }));
            want.push((key(ip(0x6501), proto, p), Frontend { kind: FrontendKind::ExternalIp, entry }));
            for n in NODES {
                want.push((key(ip(n), proto, np), Frontend { kind: FrontendKind::NodePort, entry }));
            }
            for l in [0x6601, 0x6602] {
                want.push((key(ip(l), proto, p), Frontend { kind: FrontendKind::LoadBalancer, entry }));
            }
        }
        want.sort_by_key(|(k, _)| *k);
        assert_eq!(sorted_frontends(&t), want);
        assert_eq!(t.frontend_count(), 12);
        // Lookups by wire fields; the protocol is part of the key.
        assert_eq!(t.frontend(ip(0x6401), Protocol::Tcp, 80).map(|f| f.entry), Some(0));
        assert_eq!(t.frontend(ip(0x6401), Protocol::Udp, 80), None);
        assert_eq!(t.frontend(ip(0x6401), Protocol::Tcp, 30080), None);
        assert_eq!(t.frontend(ip(NODES[1]), Protocol::Udp, 30053).map(|f| f.kind), Some(FrontendKind::NodePort));
        assert_eq!(t.v4().entry(0).map(|e| e.id.to_string()).as_deref(), Some("default/web 80/TCP"));
        assert_eq!(t.v4().entry(1).map(|e| e.id.port), Some(53));
        assert!(t.v4().entry(2).is_none());
    }

    #[test]
    fn node_ports_and_load_balancer_ips_only_for_their_types() {
        // A ClusterIP Service with a stray nodePort and LoadBalancer IPs, and a
        // NodePort Service with LoadBalancer IPs: neither gets LoadBalancer
        // frontends, and only the NodePort one gets node ports.
        let mut cip =
            svc("a", ServiceType::ClusterIp, Some(ip(0x6401)), vec![port(Protocol::Tcp, 80, Some(30001), ready(1))]);
        cip.load_balancer_ips = vec![ip(0x6601).into()];
        let mut np =
            svc("b", ServiceType::NodePort, Some(ip(0x6402)), vec![port(Protocol::Tcp, 80, Some(30002), ready(1))]);
        np.load_balancer_ips = vec![ip(0x6602).into()];
        let (t, warnings) = ServiceTable::build(&state(vec![cip, np]), 1);
        assert!(warnings.is_empty(), "{warnings:?}");
        let kinds: Vec<_> = sorted_frontends(&t).into_iter().map(|(k, f)| (k.addr, k.port, f.kind, f.entry)).collect();
        assert_eq!(
            kinds,
            vec![
                (ip(NODES[0]), 30002, FrontendKind::NodePort, 1),
                (ip(NODES[1]), 30002, FrontendKind::NodePort, 1),
                (ip(0x6401), 80, FrontendKind::ClusterIp, 0),
                (ip(0x6402), 80, FrontendKind::ClusterIp, 1),
            ]
        );
    }

    #[test]
    fn headless_service_gets_no_frontends() {
        let mut headless = svc("db", ServiceType::ClusterIp, None, vec![port(Protocol::Tcp, 5432, None, ready(3))]);
        headless.external_ips = vec![ip(0x6501).into()];
        let after = svc("web", ServiceType::ClusterIp, Some(ip(0x6401)), vec![port(Protocol::Tcp, 80, None, ready(1))]);
        let (t, warnings) = ServiceTable::build(&state(vec![headless, after]), 1);
        assert!(warnings.is_empty());
        assert_eq!(t.v4().entries().len(), 1);
        assert_eq!(t.frontend_count(), 1);
        // The next Service's frontend points at the right entry.
        let f = t.frontend(ip(0x6401), Protocol::Tcp, 80).unwrap();
        assert_eq!(&*t.v4().entry(f.entry).unwrap().id.name, "web");
        assert_eq!(t.frontend(ip(0x6501), Protocol::Tcp, 5432), None);
    }

    #[test]
    fn clash_keeps_the_first_and_the_loser_keeps_its_other_frontends() {
        let first = svc("a", ServiceType::ClusterIp, Some(ip(0x6401)), vec![port(Protocol::Tcp, 80, None, ready(1))]);
        // b claims a's cluster IP as an externalIP; c wants b's nodePort.
        let mut second =
            svc("b", ServiceType::NodePort, Some(ip(0x6402)), vec![port(Protocol::Tcp, 80, Some(30080), ready(2))]);
        second.external_ips = vec![ip(0x6401).into(), ip(0x6501).into()];
        let third =
            svc("c", ServiceType::NodePort, Some(ip(0x6403)), vec![port(Protocol::Tcp, 81, Some(30080), ready(1))]);
        let (t, warnings) = ServiceTable::build(&state(vec![first, second, third]), 1);
        assert_eq!(
            warnings,
            vec![
                BuildWarning::FrontendClash {
                    key: key(ip(0x6401), Protocol::Tcp, 80).to_ip(),
                    kind: FrontendKind::ExternalIp,
                    owner: "default/a 80/TCP".into(),
                    loser: "default/b 80/TCP".into(),
                },
                BuildWarning::FrontendClash {
                    key: key(ip(NODES[0]), Protocol::Tcp, 30080).to_ip(),
                    kind: FrontendKind::NodePort,
                    owner: "default/b 80/TCP".into(),
                    loser: "default/c 81/TCP".into(),
                },
                BuildWarning::FrontendClash {
                    key: key(ip(NODES[1]), Protocol::Tcp, 30080).to_ip(),
                    kind: FrontendKind::NodePort,
                    owner: "default/b 80/TCP".into(),
                    loser: "default/c 81/TCP".into(),
                },
            ]
        );
        assert_eq!(
            warnings[0].to_string(),
            "ExternalIp frontend 198.18.100.1:80/TCP of default/b 80/TCP is already served by default/a 80/TCP; \
             default/b 80/TCP does not get it"
        );
        let at = |a, p| t.frontend(a, Protocol::Tcp, p);
        assert_eq!(at(ip(0x6401), 80), Some(Frontend { kind: FrontendKind::ClusterIp, entry: 0 }));
        // The losers keep running on their other frontends.
        assert_eq!(at(ip(0x6402), 80), Some(Frontend { kind: FrontendKind::ClusterIp, entry: 1 }));
        assert_eq!(at(ip(0x6501), 80), Some(Frontend { kind: FrontendKind::ExternalIp, entry: 1 }));
        assert_eq!(at(ip(NODES[0]), 30080), Some(Frontend { kind: FrontendKind::NodePort, entry: 1 }));
        assert_eq!(at(ip(0x6403), 81), Some(Frontend { kind: FrontendKind::ClusterIp, entry: 2 }));
        assert_eq!(t.v4().entries().len(), 3);
        assert_eq!(t.v4().entry(1).unwrap().backends.len(), 2);
    }

    #[test]
    fn same_service_repeating_its_own_frontend_is_no_clash() {
        let mut s = svc("a", ServiceType::ClusterIp, Some(ip(0x6401)), vec![port(Protocol::Tcp, 80, None, ready(1))]);
        s.external_ips = vec![ip(0x6401).into(), ip(0x6501).into(), ip(0x6501).into()];
        let (t, warnings) = ServiceTable::build(&state(vec![s]), 1);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(t.frontend_count(), 2);
        assert_eq!(t.frontend(ip(0x6401), Protocol::Tcp, 80).map(|f| f.kind), Some(FrontendKind::ClusterIp));
    }

    #[test]
    fn missing_node_port_is_reported_and_other_frontends_served() {
        let np = svc("np", ServiceType::NodePort, Some(ip(0x6401)), vec![port(Protocol::Udp, 53, None, ready(1))]);
        let mut lb =
            svc("lb", ServiceType::LoadBalancer, Some(ip(0x6402)), vec![port(Protocol::Tcp, 443, None, ready(1))]);
        lb.load_balancer_ips = vec![ip(0x6601).into()];
        let cip = svc("cip", ServiceType::ClusterIp, Some(ip(0x6403)), vec![port(Protocol::Tcp, 80, None, ready(1))]);
        let (t, warnings) = ServiceTable::build(&state(vec![np, lb, cip]), 1);
        assert_eq!(
            warnings,
            vec![
                BuildWarning::MissingNodePort {
                    service: "default/np".into(),
                    port: 53,
                    protocol: Protocol::Udp,
                    service_type: "NodePort",
                },
                BuildWarning::MissingNodePort {
                    service: "default/lb".into(),
                    port: 443,
                    protocol: Protocol::Tcp,
                    service_type: "LoadBalancer",
                },
            ]
        );
        assert!(warnings[1]
            .to_string()
            .contains("default/lb port 443/TCP is of type LoadBalancer but has no nodePort"));
        assert!(t.frontend(ip(0x6401), Protocol::Udp, 53).is_some());
        assert_eq!(t.frontend(ip(0x6601), Protocol::Tcp, 443).map(|f| f.kind), Some(FrontendKind::LoadBalancer));
        assert_eq!(t.frontend_count(), 4);
    }

    fn entry(backends: &[BackendSpec]) -> ServiceEntry {
        let id = ServicePortId {
            namespace: "default".into(),
            name: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
        };
        ServiceEntry::new(id, backends, SessionAffinity::None, &[])
    }

    /// The backends (by address) the Maglev table sends new flows to.
    fn picked(e: &ServiceEntry) -> Vec<Ipv4Addr> {
        let mut v: Vec<_> = e.maglev.slots().iter().map(|&s| e.backends[usize::from(s)].addr).collect();
        v.sort();
        v.dedup();
        v
    }

    const TS: EndpointConditions = EndpointConditions::TERMINATING_SERVING;
    const NR: EndpointConditions = EndpointConditions::NOT_READY;
    const RD: EndpointConditions = EndpointConditions::READY;
    /// Terminating and no longer serving.
    const TN: EndpointConditions = EndpointConditions { ready: false, serving: false, terminating: true };

    #[test]
    fn active_set_ready_uses_only_ready_backends() {
        let e = entry(&[be(5, 80, TS), be(4, 80, RD), be(3, 80, NR), be(2, 80, RD), be(1, 80, TN)]);
        assert_eq!(e.active, ActiveSet::Ready);
        assert_eq!(e.backends.len(), 5);
        assert_eq!(picked(&e), vec![ip(2), ip(4)]);
        assert_eq!(e.maglev.len(), 251);
        // Same slots as a table built over the ready backends alone.
        let alone = entry(&[be(2, 80, RD), be(4, 80, RD)]);
        let ids =
            |e: &ServiceEntry| e.maglev.slots().iter().map(|&s| e.backends[usize::from(s)].addr).collect::<Vec<_>>();
        assert_eq!(ids(&e), ids(&alone));
    }

    #[test]
    fn active_set_falls_back_to_serving_terminating_backends() {
        let e = entry(&[be(1, 80, NR), be(2, 80, TS), be(3, 80, TN), be(4, 80, TS)]);
        assert_eq!(e.active, ActiveSet::TerminatingFallback);
        assert_eq!(picked(&e), vec![ip(2), ip(4)]);
    }

    #[test]
    fn active_set_empty_rejects() {
        for list in [vec![], vec![be(1, 80, NR), be(2, 80, TN)]] {
            let e = entry(&list);
            assert_eq!(e.active, ActiveSet::Empty);
            assert!(e.maglev.is_empty());
            assert_eq!(e.maglev.pick(0x1234_5678), None);
            assert_eq!(e.backends.len(), list.len());
        }
    }

    #[test]
    fn backends_sorted_deduplicated_and_found() {
        let mut zero = be(2, 443, RD);
        zero.weight = 0;
        let e = entry(&[be(3, 80, RD), zero, be(1, 8080, RD), be(2, 80, RD), be(3, 80, NR), be(1, 80, RD)]);
        let list: Vec<_> = e.backends.iter().map(|b| (b.addr, b.port)).collect();
        assert_eq!(list, vec![(ip(1), 80), (ip(1), 8080), (ip(2), 80), (ip(2), 443), (ip(3), 80)]);
        // A duplicate keeps its first listing (ready), and weight 0 becomes 1.
        assert_eq!(e.backends[4].conditions, RD);
        assert_eq!(e.backends[3].weight, 1);
        for (i, &(a, p)) in list.iter().enumerate() {
            assert_eq!(e.find_backend(a, p), Some(i as u16));
        }
        assert_eq!(e.find_backend(ip(2), 81), None);
        assert_eq!(e.find_backend(ip(9), 80), None);
        // Every slot indexes the sorted list.
        assert!(e.maglev.slots().iter().all(|&s| usize::from(s) < e.backends.len()));
    }

    #[test]
    fn source_ranges() {
        let open = entry(&[be(1, 80, RD)]);
        assert!(open.source_allowed(ip(7)));
        assert!(open.source_allowed(Ipv4Addr::new(198, 19, 255, 1)));

        let ranges: Vec<IpNet> = vec!["198.18.0.0/24".parse().unwrap(), "198.19.0.128/25".parse().unwrap()];
        let id = open.id.clone();
        let closed = ServiceEntry::new(id, &[be(1, 80, RD)], SessionAffinity::ClientIp { timeout_secs: 60 }, &ranges);
        assert!(closed.source_allowed(Ipv4Addr::new(198, 18, 0, 200)));
        assert!(closed.source_allowed(Ipv4Addr::new(198, 19, 0, 128)));
        assert!(!closed.source_allowed(Ipv4Addr::new(198, 19, 0, 127)));
        assert!(!closed.source_allowed(Ipv4Addr::new(198, 18, 1, 0)));
        assert_eq!(closed.affinity_timeout_secs, Some(60));
        assert_eq!(open.affinity_timeout_secs, None);
    }

    #[test]
    fn service_source_ranges_reach_the_entry() {
        let mut s =
            svc("a", ServiceType::LoadBalancer, Some(ip(0x6401)), vec![port(Protocol::Tcp, 80, Some(30080), ready(1))]);
        s.source_ranges = vec!["198.18.0.0/24".parse().unwrap()];
        let (t, _) = ServiceTable::build(&state(vec![s]), 1);
        let e = t.v4().entry(0).unwrap();
        assert!(e.source_allowed(ip(5)));
        assert!(!e.source_allowed(ip(0x0105)));
    }

    fn ip6(last: u16) -> Ipv6Addr {
        // 2001:2::/48 only (RFC 5180), as everywhere in this project's tests.
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, last)
    }

    #[test]
    fn dual_stack_service_gets_an_entry_and_frontends_per_family() {
        // A dual-stack LoadBalancer (IPv6 primary) with Pods of both families,
        // an IPv6-only one, and an IPv4 one: each family's frontends lead to
        // that family's endpoints only.
        let mut backends = ready(2);
        backends.extend([0x10, 0x11, 0x12].map(|l| BackendSpec {
            addr: ip6(l).into(),
            port: 8080,
            conditions: RD,
            weight: 1,
        }));
        let mut dual =
            svc("dual", ServiceType::LoadBalancer, None, vec![port(Protocol::Tcp, 80, Some(30080), backends)]);
        dual.cluster_ips = vec![ip6(0x6401).into(), ip(0x6401).into()];
        dual.load_balancer_ips = vec![ip(0x6601).into(), ip6(0x6601).into()];
        dual.source_ranges = vec!["198.18.0.0/24".parse().unwrap()];
        let mut only6 = svc("only6", ServiceType::ClusterIp, None, vec![port(Protocol::Udp, 53, None, vec![])]);
        only6.cluster_ips = vec![ip6(0x6402).into()];
        let only4 =
            svc("only4", ServiceType::ClusterIp, Some(ip(0x6403)), vec![port(Protocol::Tcp, 80, None, ready(1))]);
        let mut st = state(vec![dual, only6, only4]);
        st.node_ips.push(ip6(0x0201).into());
        let (t, warnings) = ServiceTable::build(&st, 1);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!((t.v4().entries().len(), t.v6().entries().len()), (2, 2));
        assert_eq!(t.entry_count(), 4);
        // IPv4: ClusterIP, LB, two node ports of dual; only4's ClusterIP.
        assert_eq!(t.v4().frontend_count(), 5);
        // IPv6: ClusterIP, LB, one node port of dual; only6's ClusterIP.
        assert_eq!(t.v6().frontend_count(), 4);
        assert_eq!(t.frontend_count(), 9);
        let e4 = t.v4().entry(t.frontend(ip(0x6601), Protocol::Tcp, 80).unwrap().entry).unwrap();
        let e6 = t.v6().entry(t.frontend(ip6(0x6601), Protocol::Tcp, 80).unwrap().entry).unwrap();
        assert_eq!(e4.id, e6.id);
        assert_eq!(e4.backends.len(), 2);
        assert_eq!(e6.backends.iter().map(|b| b.addr).collect::<Vec<_>>(), vec![ip6(0x10), ip6(0x11), ip6(0x12)]);
        assert_eq!(e6.maglev.len(), 307);
        assert_eq!(t.frontend(ip6(0x0201), Protocol::Tcp, 30080).map(|f| f.kind), Some(FrontendKind::NodePort));
        // The source ranges are IPv4 only: IPv4 clients in them pass, and
        // the IPv6 family, which the list does not mention, is closed.
        assert!(e4.source_allowed(ip(7)));
        assert!(!e4.source_allowed(ip(0x0107)));
        assert!(!e6.source_allowed(ip6(7)));
        let generic = t.family::<Ipv6Addr>().frontend(ip6(0x6402), Protocol::Udp, 53).unwrap();
        assert_eq!(t.v6().entry(generic.entry).unwrap().active, ActiveSet::Empty);
        // A clash between the families is impossible: their keys differ.
        assert_eq!(FrontendKey { addr: ip6(1), protocol: Protocol::Tcp, port: 80 }.to_string(), "[2001:2::1]:80/TCP");
    }

    #[test]
    fn replacing_entries_shares_the_rest() {
        let services = (0..3u16)
            .map(|i| {
                let name = format!("s{i}");
                svc(&name, ServiceType::ClusterIp, Some(ip(0x6400 + i)), vec![port(Protocol::Tcp, 80, None, ready(2))])
            })
            .collect();
        let (old, _) = ServiceTable::build(&state(services), 1);
        let replacement =
            ServiceEntry::new(old.v4().entry(1).unwrap().id.clone(), &ready(5), SessionAffinity::None, &[]);
        let new = old.with_entries_replaced(
            2,
            Replacements { v4: vec![(1, replacement.clone()), (99, replacement.clone())], v6: vec![] },
        );
        assert_eq!(new.generation(), 2);
        assert_eq!(old.generation(), 1);
        assert!(Arc::ptr_eq(&old.v4.frontends, &new.v4.frontends));
        assert_eq!(new.v4().entries().len(), 3);
        assert!(Arc::ptr_eq(&old.v4().entries()[0], &new.v4().entries()[0]));
        assert!(Arc::ptr_eq(&old.v4().entries()[2], &new.v4().entries()[2]));
        assert!(!Arc::ptr_eq(&old.v4().entries()[1], &new.v4().entries()[1]));
        assert_eq!(*new.v4().entries()[1], replacement);
        // The old generation is untouched.
        assert_eq!(old.v4().entry(1).unwrap().backends.len(), 2);
        assert_eq!(new.v4().entry(1).unwrap().backends.len(), 5);
        assert_eq!(new.frontend(ip(0x6401), Protocol::Tcp, 80).map(|f| f.entry), Some(1));
    }

    #[test]
    fn large_tables_are_built_in_parallel_in_table_order() {
        // Above PARALLEL_FROM entries; a headless Service and a two-port one
        // in between, so chunk boundaries fall inside Services.
        let services: Vec<ServiceSpec> = (0..3000u16)
            .map(|i| {
                let name = format!("s{i}");
                let cip = if i == 1500 { None } else { Some(ip(0x1000 + i)) };
                let mut ports = vec![port(Protocol::Tcp, 80, None, ready(1 + i % 7))];
                if i % 3 == 0 {
                    ports.push(port(Protocol::Udp, 53, None, ready(2)));
                }
                svc(&name, ServiceType::ClusterIp, cip, ports)
            })
            .collect();
        let (t, warnings) = ServiceTable::build(&state(services.clone()), 1);
        assert!(warnings.is_empty());
        let mut idx = 0usize;
        for s in services.iter().filter(|s| !s.is_headless()) {
            for p in &s.ports {
                let e = &t.v4().entries()[idx];
                assert_eq!((&*e.id.name, e.id.port, e.id.protocol), (s.name.as_str(), p.port, p.protocol));
                let alone = ServiceEntry::new(e.id.clone(), &p.backends, s.affinity, &s.source_ranges);
                assert_eq!(**e, alone);
                let f = t.frontend(Ipv4Addr::from_ip(s.cluster_ips[0]).unwrap(), p.protocol, p.port).unwrap();
                assert_eq!(f.entry as usize, idx);
                idx += 1;
            }
        }
        assert_eq!(idx, t.v4().entries().len());
    }

    #[test]
    fn ports_of_a_service_share_one_maglev_table_and_pick_the_same_pod() {
        // Three Pods (one not ready) at a targetPort per Service port, plus a
        // port whose endpoints differ and one where a Pod is listed twice.
        let pods = [(1, RD), (2, NR), (3, RD)];
        let at = |tp: u16| pods.iter().map(|&(a, c)| be(a, tp, c)).collect::<Vec<_>>();
        let mut ports: Vec<ServicePortSpec> =
            (0..6).map(|j| port(Protocol::Tcp, 1000 + j, None, at(8000 + j))).collect();
        ports.push(port(Protocol::Tcp, 2000, None, vec![be(1, 80, RD), be(3, 80, RD), be(4, 80, RD)]));
        ports.push(port(Protocol::Udp, 2001, None, vec![be(1, 80, RD), be(1, 81, RD), be(3, 80, RD)]));
        let s = svc("many", ServiceType::ClusterIp, Some(ip(0x6401)), ports);
        let (t, _) = ServiceTable::build(&state(vec![s.clone()]), 1);
        let e = t.v4().entries();
        for j in 1..6 {
            assert!(e[j].maglev.shares_slots_with(&e[0].maglev), "port {j}");
            assert!(Arc::ptr_eq(&e[j].id.name, &e[0].id.name));
            // Same table as built alone, so sharing changes nothing.
            let alone = ServiceEntry::new(e[j].id.clone(), &s.ports[j].backends, s.affinity, &s.source_ranges);
            assert_eq!(*e[j], alone);
        }
        assert!(!e[6].maglev.shares_slots_with(&e[0].maglev));
        assert!(!e[7].maglev.shares_slots_with(&e[6].maglev));
        // Every flow hash picks the same Pod on every port.
        for h in (0..u32::MAX - 9999).step_by(9_999_991) {
            let pod = |x: &ServiceEntry| x.maglev.pick(h).map(|i| x.backends[usize::from(i)].addr);
            assert!(pod(&e[0]).is_some());
            assert!((1..6).all(|j| pod(&e[j]) == pod(&e[0])));
        }
        // An endpoint change to one Service port rebuilt alone gives the same table.
        let mut changed = s.clone();
        for p in &mut changed.ports[..6] {
            p.backends[1].conditions = RD;
        }
        let built = service_entries(&changed, changed.ports.iter().enumerate().take(6));
        assert!(built.iter().all(|(_, x)| x.maglev.shares_slots_with(&built[0].1.maglev)));
        assert_eq!(picked(&built[3].1), vec![ip(1), ip(2), ip(3)]);
    }

    #[test]
    fn empty_table() {
        let t = ServiceTable::default();
        assert_eq!(t.generation(), 0);
        assert_eq!(t.frontend_count(), 0);
        assert!(t.v4().entries().is_empty());
        assert_eq!(t.frontend(ip(1), Protocol::Tcp, 80), None);
    }
}
