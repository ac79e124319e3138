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

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::maglev::{table_size_for, Maglev, MaglevBackend};
use crate::model::{
    BackendSpec, DesiredState, EndpointConditions, Ipv4Net, Protocol, ServicePortSpec, ServiceSpec, ServiceType,
    SessionAffinity,
};

/// A frontend's lookup key: destination address, protocol and port, as the
/// dataplane reads them from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    /// Destination address.
    pub addr: Ipv4Addr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
}

impl fmt::Display for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.protocol)
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
pub struct Backend {
    /// Pod IP.
    pub addr: Ipv4Addr,
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

/// One port of one Service: backends, Maglev table and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Which Service port this is.
    pub id: ServicePortId,
    /// A hash of `id` that is stable across generations and processes (keys
    /// ClientIP affinity records, which must survive table swaps).
    pub id_hash: u32,
    /// Backends sorted by (address, port), so the dataplane can find a flow's
    /// backend again after a table swap by binary search.
    pub backends: Box<[Backend]>,
    /// Which backends take new flows.
    pub active: ActiveSet,
    /// Maglev table over the active backends; slot values index `backends`.
    pub maglev: Maglev,
    /// ClientIP affinity timeout in seconds, when set.
    pub affinity_timeout_secs: Option<u32>,
    /// `loadBalancerSourceRanges`; empty allows every source.
    pub source_ranges: Box<[Ipv4Net]>,
}

impl ServiceEntry {
    /// Builds an entry: sorts the backends, chooses the active set and builds
    /// the Maglev table over it.
    pub fn new(
        id: ServicePortId,
        backends: &[BackendSpec],
        affinity: SessionAffinity,
        source_ranges: &[Ipv4Net],
    ) -> Self {
        let mut list: Vec<Backend> = backends
            .iter()
            .map(|b| Backend { addr: b.addr, port: b.port, conditions: b.conditions, weight: b.weight.max(1) })
            .collect();
        list.sort_by_key(|b| (b.addr, b.port));
        list.dedup_by_key(|b| (b.addr, b.port));

        let ready = |b: &Backend| b.conditions.ready;
        let fallback = |b: &Backend| b.conditions.serving && b.conditions.terminating;
        let active = if list.iter().any(ready) {
            ActiveSet::Ready
        } else if list.iter().any(fallback) {
            ActiveSet::TerminatingFallback
        } else {
            ActiveSet::Empty
        };
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
                MaglevBackend { addr: b.addr, port: b.port, weight: u32::from(b.weight) }
            })
            .collect();
        let sub = Maglev::build(&mb, table_size_for(mb.len()));
        let maglev = sub.remap(|i| chosen[usize::from(i)]);
        let affinity_timeout_secs = match affinity {
            SessionAffinity::None => None,
            SessionAffinity::ClientIp { timeout_secs } => Some(timeout_secs),
        };
        Self {
            id_hash: id.stable_hash(),
            id,
            backends: list.into_boxed_slice(),
            active,
            maglev,
            affinity_timeout_secs,
            source_ranges: source_ranges.to_vec().into_boxed_slice(),
        }
    }

    /// Index of the backend with this address and port, if it is still listed.
    #[inline]
    pub fn find_backend(&self, addr: Ipv4Addr, port: u16) -> Option<u16> {
        self.backends.binary_search_by_key(&(addr, port), |b| (b.addr, b.port)).ok().map(|i| i as u16)
    }

    /// True when `src` may use this entry's LoadBalancer frontends.
    #[inline]
    pub fn source_allowed(&self, src: Ipv4Addr) -> bool {
        self.source_ranges.is_empty() || self.source_ranges.iter().any(|n| n.contains(&src))
    }
}

/// A problem the builder found and worked around; the rest of the table is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildWarning {
    /// Two Service ports claim one frontend; the first keeps it.
    #[error("{kind:?} frontend {key} of {loser} is already served by {owner}; {loser} does not get it")]
    FrontendClash {
        /// The contested frontend.
        key: FrontendKey,
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

/// The complete, immutable lookup state of one generation.
#[derive(Debug, Clone)]
pub struct ServiceTable {
    generation: u64,
    frontends: Arc<HashMap<FrontendKey, Frontend, ahash::RandomState>>,
    entries: Arc<[Arc<ServiceEntry>]>,
}

impl Default for ServiceTable {
    fn default() -> Self {
        Self::empty()
    }
}

impl ServiceTable {
    /// A table that serves nothing (generation 0).
    pub fn empty() -> Self {
        Self { generation: 0, frontends: Arc::default(), entries: Arc::from(Vec::new()) }
    }

    /// Builds a whole table. Clashes are resolved first come, first served in
    /// the order of `desired.services` and reported; nothing here fails.
    pub fn build(desired: &DesiredState, generation: u64) -> (Self, Vec<BuildWarning>) {
        let mut frontends: HashMap<FrontendKey, Frontend, ahash::RandomState> = HashMap::default();
        let mut entries: Vec<Arc<ServiceEntry>> = Vec::new();
        let mut warnings = Vec::new();
        for svc in &desired.services {
            let Some(cluster_ip) = svc.cluster_ip else {
                continue; // headless: DNS only, nothing to program
            };
            for port in &svc.ports {
                let idx = entries.len() as u32;
                let id = port_id(svc, port);
                let entry = Arc::new(ServiceEntry::new(id, &port.backends, svc.affinity, &svc.source_ranges));
                let mut add = |addr: Ipv4Addr, p: u16, kind: FrontendKind, warnings: &mut Vec<BuildWarning>| {
                    let key = FrontendKey { addr, protocol: port.protocol, port: p };
                    match frontends.get(&key) {
                        Some(f) if f.entry != idx => warnings.push(BuildWarning::FrontendClash {
                            key,
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
                add(cluster_ip, port.port, FrontendKind::ClusterIp, &mut warnings);
                for &ip in &svc.external_ips {
                    add(ip, port.port, FrontendKind::ExternalIp, &mut warnings);
                }
                let wants_node_port = matches!(svc.service_type, ServiceType::NodePort | ServiceType::LoadBalancer);
                match port.node_port {
                    Some(np) if wants_node_port => {
                        for &ip in &desired.node_ips {
                            add(ip, np, FrontendKind::NodePort, &mut warnings);
                        }
                    }
                    None if wants_node_port => warnings.push(BuildWarning::MissingNodePort {
                        service: svc.qualified_name(),
                        port: port.port,
                        protocol: port.protocol,
                        service_type: svc.service_type.as_str(),
                    }),
                    _ => {}
                }
                if svc.service_type == ServiceType::LoadBalancer {
                    for &ip in &svc.load_balancer_ips {
                        add(ip, port.port, FrontendKind::LoadBalancer, &mut warnings);
                    }
                }
                entries.push(entry);
            }
        }
        (Self { generation, frontends: Arc::new(frontends), entries: Arc::from(entries) }, warnings)
    }

    /// A new generation with some entries replaced (e.g. after an Endpoints
    /// change) that shares the frontend map and every other entry.
    ///
    /// Indices out of range are ignored. The frontends of a replaced entry stay
    /// as they were, so only backends and policy may change this way; a change
    /// of ports or addresses needs [`ServiceTable::build`].
    pub fn with_entries_replaced(&self, generation: u64, replaced: impl IntoIterator<Item = (u32, ServiceEntry)>) -> Self {
        let mut entries: Vec<Arc<ServiceEntry>> = self.entries.to_vec();
        for (idx, entry) in replaced {
            if let Some(slot) = entries.get_mut(idx as usize) {
                *slot = Arc::new(entry);
            }
        }
        Self { generation, frontends: Arc::clone(&self.frontends), entries: Arc::from(entries) }
    }

    /// The generation number the control plane gave this table.
    #[inline(always)]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The frontend for a destination, if it is a Service frontend.
    #[inline]
    pub fn frontend(&self, addr: Ipv4Addr, protocol: Protocol, port: u16) -> Option<Frontend> {
        self.frontends.get(&FrontendKey { addr, protocol, port }).copied()
    }

    /// Every frontend, for the XDP steering map and `svcgate status`.
    pub fn frontends(&self) -> impl Iterator<Item = (&FrontendKey, &Frontend)> {
        self.frontends.iter()
    }

    /// The number of frontends.
    pub fn frontend_count(&self) -> usize {
        self.frontends.len()
    }

    /// The entry at `idx`.
    #[inline(always)]
    pub fn entry(&self, idx: u32) -> Option<&ServiceEntry> {
        self.entries.get(idx as usize).map(|e| &**e)
    }

    /// Every entry, in index order.
    pub fn entries(&self) -> &[Arc<ServiceEntry>] {
        &self.entries
    }
}

fn port_id(svc: &ServiceSpec, port: &ServicePortSpec) -> ServicePortId {
    ServicePortId {
        namespace: Arc::from(svc.namespace.as_str()),
        name: Arc::from(svc.name.as_str()),
        port_name: Arc::from(port.name.as_str()),
        protocol: port.protocol,
        port: port.port,
    }
}

fn entries_name(entries: &[Arc<ServiceEntry>], idx: u32) -> String {
    entries.get(idx as usize).map(|e| e.id.to_string()).unwrap_or_default()
}
