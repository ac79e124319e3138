//! The input: the Services the names are computed from, and the zone settings.
//!
//! These are plain types with no Kubernetes API crates, filled by the control
//! plane from the same objects its `DesiredState` comes from. Endpoint
//! conditions are already reduced to `ready` (an EndpointSlice endpoint with
//! `conditions.ready`; the EndpointSlice controller sets it for
//! `publishNotReadyAddresses` Services anyway, the flag here covers sources
//! that do not).

use std::net::{IpAddr, Ipv4Addr};

pub use svcgate_common::model::Protocol;

/// The zone and answer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The cluster domain, without a trailing dot (`cluster.local`).
    pub zone: String,
    /// TTL of every record and of negative answers (the SOA minimum), in
    /// seconds. CoreDNS's default is 5.
    pub ttl: u32,
    /// The SOA serial. The control plane may bump it with each table
    /// generation so that exported zone files differ.
    pub serial: u32,
    /// The addresses of `ns.dns.<zone>`, the name the apex NS and SOA point
    /// to: the addresses svcgate answers DNS on. Empty: the NS record has no
    /// address records.
    pub nameservers: Vec<IpAddr>,
    /// The UDP payload size advertised in the OPT record of EDNS answers
    /// (1232 as the DNS flag day 2020 recommends).
    pub udp_payload_size: u16,
    /// ExternalName Services whose target lies outside the zone: `true`
    /// hands queries other than CNAME to the slow path, the place to resolve
    /// the target upstream as CoreDNS does (stub resolvers do not chase a
    /// lone CNAME), though the daemon's server answers them with the CNAME
    /// alone today (control/src/dns_server.rs); `false` has the table answer
    /// them with the CNAME alone, as an authoritative server does.
    pub external_names_upstream: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            zone: "cluster.local".to_owned(),
            ttl: 5,
            serial: 1,
            nameservers: Vec::new(),
            udp_payload_size: 1232,
            external_names_upstream: true,
        }
    }
}

/// What a Service is, for DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsServiceKind {
    /// A Service with cluster IPs (ClusterIP, NodePort, LoadBalancer): the
    /// name resolves to them. One per IP family when dual-stack.
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the name resolves to the endpoints.
    Headless,
    /// `type: ExternalName`: the name is a CNAME to this DNS name.
    ExternalName(String),
}

/// A port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPort {
    /// Port name; empty for an unnamed port (no SRV record of its own).
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The Service port.
    pub port: u16,
}

/// An endpoint of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEndpoint {
    /// The Pod's address.
    pub addr: IpAddr,
    /// The endpoint's `hostname` (Pod `spec.hostname` with `spec.subdomain`
    /// naming the Service); `None` gets the dashed address instead
    /// (`198-18-1-2`), as CoreDNS names such endpoints.
    pub hostname: Option<String>,
    /// Ready for traffic.
    pub ready: bool,
    /// The endpoint's port numbers by Service port name: the SRV targets of
    /// headless Services carry these.
    pub ports: Vec<(String, u16)>,
}

impl DnsEndpoint {
    /// A ready endpoint with no hostname and no ports.
    pub fn ready(addr: impl Into<IpAddr>) -> Self {
        Self { addr: addr.into(), hostname: None, ready: true, ports: Vec::new() }
    }
}

/// A Service, for DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsService {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// ClusterIP, headless or ExternalName.
    pub kind: DnsServiceKind,
    /// `spec.ports`.
    pub ports: Vec<DnsPort>,
    /// `spec.publishNotReadyAddresses`: not-ready endpoints get records too.
    pub publish_not_ready_addresses: bool,
    /// The endpoints (only headless Services use them).
    pub endpoints: Vec<DnsEndpoint>,
}

impl DnsService {
    /// A ClusterIP Service with one IPv4 cluster IP and no ports.
    pub fn cluster_ip(namespace: &str, name: &str, ip: Ipv4Addr) -> Self {
        Self::new(namespace, name, DnsServiceKind::ClusterIp(vec![IpAddr::V4(ip)]))
    }

    /// A headless Service with no ports and no endpoints.
    pub fn headless(namespace: &str, name: &str) -> Self {
        Self::new(namespace, name, DnsServiceKind::Headless)
    }

    /// An ExternalName Service.
    pub fn external_name(namespace: &str, name: &str, target: &str) -> Self {
        Self::new(namespace, name, DnsServiceKind::ExternalName(target.to_owned()))
    }

    fn new(namespace: &str, name: &str, kind: DnsServiceKind) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kind,
            ports: Vec::new(),
            publish_not_ready_addresses: false,
            endpoints: Vec::new(),
        }
    }

    /// Add a port (builder style, for tests and examples).
    pub fn with_port(mut self, name: &str, protocol: Protocol, port: u16) -> Self {
        self.ports.push(DnsPort { name: name.to_owned(), protocol, port });
        self
    }

    /// Add an endpoint (builder style).
    pub fn with_endpoint(mut self, endpoint: DnsEndpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }
}

/// Everything the names are computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsView {
    /// The Services.
    pub services: Vec<DnsService>,
}
