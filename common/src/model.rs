//! The desired state: what the control plane wants the dataplane to serve.
//!
//! This is a plain model with no Kubernetes types, so `common` stays free of
//! API crates and the dataplane can be tested without them. The control plane
//! translates Services, Endpoints, EndpointSlices and Pods into it, resolving
//! named `targetPort`s and endpoint conditions on the way; the table builder
//! ([`crate::table`]) turns it into the immutable lookup structures that workers read.

use std::fmt;
use std::net::IpAddr;

pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use crate::family::IpFamily;

/// An L4 protocol a Service port can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp = 6,
    /// UDP (IP protocol 17).
    Udp = 17,
}

impl Protocol {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The protocol for an IP protocol number, if svcgate serves it.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            _ => None,
        }
    }

    /// The name Kubernetes uses (`TCP`, `UDP`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Service `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServiceType {
    /// Reachable on the cluster IP only.
    #[default]
    ClusterIp,
    /// Also on every node IP at `nodePort`.
    NodePort,
    /// Also on the load balancer's ingress IPs (and node ports).
    LoadBalancer,
}

impl ServiceType {
    /// The name `kubectl get svc` prints.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIp => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// `spec.sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionAffinity {
    /// Each new flow is placed by its 5-tuple.
    #[default]
    None,
    /// New flows from one client IP go to the same backend while the client
    /// was seen within `timeout_secs` (Kubernetes' default is 10800).
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds`.
        timeout_secs: u32,
    },
}

/// How a Service's flows reach their backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ForwardingMode {
    /// Masquerade: the source becomes one of the gateway's SNAT addresses,
    /// so replies come back to the gateway whatever the Pods' routes. The
    /// Pod sees the gateway's address.
    #[default]
    Snat,
    /// Destination NAT only: the Pod sees the client's address; its route
    /// back to clients must go through the gateway, which translates the
    /// replies from its connection tracking.
    Dnat,
}

impl ForwardingMode {
    /// The name used in the config and the annotation.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Snat => "snat",
            Self::Dnat => "dnat",
        }
    }

    /// The mode named `s` (`snat`, `dnat`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "snat" => Some(Self::Snat),
            "dnat" => Some(Self::Dnat),
            _ => None,
        }
    }
}

/// The conditions of one endpoint, as in an EndpointSlice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointConditions {
    /// Ready for new traffic.
    pub ready: bool,
    /// Able to serve (may be true while terminating).
    pub serving: bool,
    /// Being deleted.
    pub terminating: bool,
}

impl EndpointConditions {
    /// A plain ready endpoint.
    pub const READY: Self = Self { ready: true, serving: true, terminating: false };
    /// A terminating endpoint that still serves.
    pub const TERMINATING_SERVING: Self = Self { ready: false, serving: true, terminating: true };
    /// Neither ready nor serving.
    pub const NOT_READY: Self = Self { ready: false, serving: false, terminating: false };
}

/// One backend of one Service port: the Pod's address and resolved target port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    /// Pod IP, of either family (an EndpointSlice's `addressType`): each
    /// family's frontends lead to the backends of that family only.
    pub addr: IpAddr,
    /// Resolved `targetPort` (named ports already looked up).
    pub port: u16,
    /// Endpoint conditions.
    pub conditions: EndpointConditions,
    /// Relative Maglev weight; 0 is treated as 1.
    pub weight: u16,
}

/// One port of a Service, with the backends that serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortSpec {
    /// Port name (may be empty when the Service has one port).
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port clients dial on the VIP, external and LoadBalancer IPs.
    pub port: u16,
    /// The node port, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// The endpoints, target ports resolved.
    pub backends: Vec<BackendSpec>,
}

/// One Service as the dataplane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// `spec.clusterIPs`: one address per family the Service has
    /// (`spec.ipFamilies`), the primary family first; empty for a headless
    /// Service, which gets no frontends.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`, of either family.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` and the legacy `spec.loadBalancerIP`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`; empty means every source is allowed
    /// (per family: a family with no range listed is open).
    pub source_ranges: Vec<IpNet>,
    /// `spec.sessionAffinity`.
    pub affinity: SessionAffinity,
    /// `spec.ports`, each with its backends.
    pub ports: Vec<ServicePortSpec>,
    /// The forwarding mode this Service asks for (the
    /// `svcgate.io/forwarding-mode` annotation); `None`: the gateway's.
    pub forwarding: Option<ForwardingMode>,
}

impl ServiceSpec {
    /// `namespace/name`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// A headless Service (`clusterIP: None`): DNS names only, no frontends.
    pub fn is_headless(&self) -> bool {
        self.cluster_ips.is_empty()
    }

    /// The primary cluster IP (`spec.clusterIP`).
    pub fn cluster_ip(&self) -> Option<IpAddr> {
        self.cluster_ips.first().copied()
    }

    /// True when the Service is served in `family`: it has a cluster IP of it.
    pub fn has_family(&self, family: IpFamily) -> bool {
        self.cluster_ips.iter().any(|ip| IpFamily::of(ip) == family)
    }
}

/// Everything the dataplane should serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// The node IPs on which NodePorts are opened, of either family.
    pub node_ips: Vec<IpAddr>,
    /// The Services.
    pub services: Vec<ServiceSpec>,
}
