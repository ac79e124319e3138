//! Typed Kubernetes objects -> [`DesiredState`], as the API server and the
//! EndpointSlice controller would see them.
//!
//! - Defaults as the API server applies them: namespace `default`, type
//!   `ClusterIP`, protocol `TCP`, `targetPort` = `port`, sessionAffinity
//!   timeout 10800 s.
//! - IP families as the API server defines them (`spec.ipFamilies`,
//!   `spec.ipFamilyPolicy`, `spec.clusterIPs`; [`ServiceCidrs`] stands for
//!   kube-apiserver's `--service-cluster-ip-range`): `clusterIPs[0]` must be
//!   `clusterIP`, at most one address per family, families in `ipFamilies`
//!   order, the families of the given addresses inferred. No policy means
//!   `SingleStack` (a headless Service without selector: `RequireDualStack`).
//!   `SingleStack` gets one family (`ipFamilies[0]`, else the primary range's);
//!   `PreferDualStack` both when svcgate has a range of each, else one;
//!   `RequireDualStack` both, and [`LoadError::DualStackNotConfigured`] when
//!   svcgate would have to allocate from a family it has no range of. A
//!   headless Service gets families too (they pick the endpoints its name
//!   resolves to), and a selectorless one both, as the API server gives it.
//!   Objects of the API server ([`ResolveConfig::check_cluster_ip_range`]
//!   off) keep their `clusterIPs` as final: svcgate adds no family to them.
//! - Allocation: a Service without a clusterIP of one of its families gets one
//!   from that family's service CIDR, and a NodePort/LoadBalancer port
//!   without `nodePort` one from 30000-32767. Both are deterministic (a hash
//!   of the Service's name probing for a free slot; one allocator for both
//!   families) and sticky across reloads ([`Allocations`]). The network
//!   address, the first host (`.1`, `::1`, which the API server gives to the
//!   `kubernetes` Service) and IPv4's broadcast address are never allocated.
//! - Validation and conflicts the way the API server reports them: a second
//!   Service with a taken namespace/name, a clusterIP or nodePort already
//!   allocated, out-of-range ports, unknown enum values. The offending Service
//!   is not applied (as `kubectl apply` would fail for it); when it had a last
//!   good version (`previous`), that version keeps serving. The first Service
//!   to claim a name or a port keeps it: one already serving, then file order.
//! - Explicit clusterIPs outside the configured service CIDR are served as
//!   given, with a [`LoadWarning`]: in objects exported from a cluster, its
//!   API server allocated them from its own range. Two Services with one
//!   clusterIP are still an error.
//! - Services meant for another proxy are left alone ([`OtherProxy`]): the
//!   `service.kubernetes.io/service-proxy-name` label (KEP-2447) read as
//!   kube-proxy reads it when no [`ResolveConfig::service_proxy_name`] is
//!   set, else only the Services labelled with that name are served. Both
//!   sources (manifests and the API) resolve here, so both filter the same.
//! - Endpoints: for each Service, the EndpointSlices labelled
//!   `kubernetes.io/service-name` with its name, else its Endpoints object,
//!   else (with a selector) the Pods its selector matches, translated the way
//!   the EndpointSlice controller does (Ready -> ready; deletionTimestamp ->
//!   terminating, serving = Ready; named targetPorts resolved through the
//!   container ports; Succeeded/Failed Pods left out). A Service gets the
//!   endpoints of its own families only: EndpointSlices of those
//!   `addressType`s, Endpoints addresses and Pod `status.podIPs` (else
//!   `status.podIP`) of those families; an IPv4 frontend never leads to an
//!   IPv6 Pod (no NAT46). Slice and Endpoints ports are matched by the
//!   Service port's name (what the controller writes), or failing that by a
//!   named targetPort.
//! - For DNS ([`crate::names`]): headless Services also get their endpoints
//!   as DNS names them ([`Resolved::endpoint_names`]: address, hostname,
//!   readiness, whatever the ports), and `ExternalName` Services, served by
//!   nothing else, are kept with their target
//!   ([`Resolved::external_name_targets`]).

use std::collections::{BTreeMap, HashMap, HashSet};

/// A hash map with ahash (resolution hashes every object's name several
/// times; SipHash was a tenth of a full resolution's instructions).
pub type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
type FastSet<K> = HashSet<K, ahash::RandomState>;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use svcgate_common::family::IpFamily;
use svcgate_common::model::{
    BackendSpec, DesiredState, EndpointConditions, ForwardingMode, IpNet, Protocol, ServicePortSpec, ServiceSpec,
    ServiceType, SessionAffinity,
};

use crate::cidr::other_family;
pub use crate::cidr::ServiceCidrs;
use crate::error::{LoadError, LoadWarning};
use crate::manifest::{Object, Origin, Sourced};

/// The default NodePort range of the API server.
pub const NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;
/// Kubernetes' default ClientIP affinity timeout.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the proxy meant to serve a Service (KEP-2447).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// What resolution needs besides the objects.
#[derive(Debug, Clone)]
pub struct ResolveConfig {
    /// Where cluster IPs are allocated from: one range per family svcgate
    /// allocates in, the primary (default) family first.
    pub service_cidr: ServiceCidrs,
    /// The node IPs NodePorts open on, of either family.
    pub node_ips: Vec<IpAddr>,
    /// Valid node ports.
    pub node_port_range: RangeInclusive<u16>,
    /// Warn about explicit clusterIPs outside `service_cidr`
    /// ([`LoadWarning::ClusterIpOutsideServiceCidr`]); they are served either
    /// way, since in objects exported from a cluster that cluster's API server
    /// allocated them from its own range. Off for the kube source: every
    /// clusterIP there is the API server's, and svcgate's `service_cidr` need
    /// not be the cluster's. Off, a Service's `clusterIPs` are also final:
    /// the API server already applied its `ipFamilyPolicy` with the
    /// cluster's ranges, so svcgate adds no family of its own.
    pub check_cluster_ip_range: bool,
    /// The `service.kubernetes.io/service-proxy-name` value of the Services
    /// svcgate serves (KEP-2447). `None`: only Services without that label,
    /// as kube-proxy; `Some(name)`: only Services labelled with `name`, so
    /// that svcgate serves them beside the cluster's default proxy.
    pub service_proxy_name: Option<String>,
}

impl ResolveConfig {
    /// A config for manifests with the given service CIDRs and node IPs
    /// (`Ipv4Addr`, `Ipv6Addr` or `IpAddr`: callers of before dual-stack
    /// pass IPv4 ones unchanged).
    pub fn new<A: Into<IpAddr>>(service_cidr: ServiceCidrs, node_ips: Vec<A>) -> Self {
        Self {
            service_cidr,
            node_ips: node_ips.into_iter().map(Into::into).collect(),
            node_port_range: NODE_PORT_RANGE,
            check_cluster_ip_range: true,
            service_proxy_name: None,
        }
    }
}

/// Addresses and ports svcgate allocated, kept across reloads so a Service
/// keeps its clusterIPs (one per family) and nodePorts while it exists (as
/// in a cluster).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocations {
    cluster_ips: FastMap<(String, IpFamily), IpAddr>,
    node_ports: FastMap<(String, Protocol, u16), u16>,
}

/// The result of one resolution.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// What to serve; Services in priority order.
    pub desired: DesiredState,
    /// Where each Service of `desired.services` came from (same index).
    pub origins: Vec<Origin>,
    /// The Service objects applied, by `namespace/name`: the next resolution's
    /// `previous`.
    pub applied: FastMap<String, Sourced>,
    /// Allocations to pass to the next resolution.
    pub allocations: Allocations,
    /// Problems; each affected only the object it names.
    pub errors: Vec<LoadError>,
    /// Things accepted as they are that a user may want to know about (of
    /// the Services applied only).
    pub warnings: Vec<LoadWarning>,
    /// Services left to another proxy by their
    /// `service.kubernetes.io/service-proxy-name` label (or the lack of it).
    pub other_proxy: Vec<OtherProxy>,
    /// `ExternalName` Services: accepted, nothing to serve.
    pub external_names: Vec<String>,
    /// The same `ExternalName` Services with their `spec.externalName`, for
    /// DNS (a CNAME each).
    pub external_name_targets: Vec<ExternalNameSpec>,
    /// The endpoints of each headless Service as DNS names them (same index
    /// as `desired.services`; empty for Services with a cluster IP, whose
    /// names resolve to it): address, hostname, readiness, whatever the ports.
    pub endpoint_names: Vec<Vec<NamedEndpoint>>,
    /// What re-deriving each Service's backends needs (same index as
    /// `desired.services`), for [`backends_from_slices`].
    pub plans: Vec<EndpointPlan>,
}

/// An `ExternalName` Service: DNS only, a CNAME to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalNameSpec {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.externalName` (empty when unset).
    pub target: String,
}

/// One endpoint of a headless Service, as DNS names it: the address, the
/// hostname the EndpointSlice controller would write (EndpointSlice
/// `endpoints[].hostname`, Endpoints `addresses[].hostname`, or Pod
/// `spec.hostname` when its `spec.subdomain` is the Service's name), and
/// readiness as the backends get it (`publishNotReadyAddresses` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedEndpoint {
    /// The endpoint's address (an A or AAAA record).
    pub addr: IpAddr,
    /// Its hostname, if it has one.
    pub hostname: Option<String>,
    /// Ready (or published anyway).
    pub ready: bool,
}

/// A Service svcgate leaves alone: its `service.kubernetes.io/service-proxy-name`
/// label does not name svcgate's [`ResolveConfig::service_proxy_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherProxy {
    /// Where it is.
    pub origin: Origin,
    /// `namespace/name`.
    pub name: String,
    /// The label's value; `None` when the Service has no such label (and
    /// svcgate is configured to serve only the Services labelled with its name).
    pub proxy: Option<String>,
}

impl std::fmt::Display for OtherProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.proxy {
            Some(p) => write!(
                f,
                "{}: Service \"{}\" is labelled {SERVICE_PROXY_NAME_LABEL}={p:?}: left to that proxy \
                 (svcgate serves only Services labelled with its service_proxy_name, or without the label \
                 when that is unset)",
                self.origin, self.name
            ),
            None => write!(
                f,
                "{}: Service \"{}\" has no {SERVICE_PROXY_NAME_LABEL} label: left to the cluster's default \
                 proxy (svcgate serves only Services labelled with its service_proxy_name)",
                self.origin, self.name
            ),
        }
    }
}

/// The proxy-name label of a Service when svcgate must leave it alone
/// (`Err(label value)`), as kube-proxy and KEP-2447 read it: with no
/// configured name, every Service that carries the label (whatever its
/// value, empty included) belongs to another proxy; with a name, every
/// Service not labelled with exactly that name does.
pub fn check_proxy_name(cfg: &ResolveConfig, svc: &Service) -> Result<(), Option<String>> {
    let label = svc.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_PROXY_NAME_LABEL));
    if label.map(String::as_str) == cfg.service_proxy_name.as_deref() {
        Ok(())
    } else {
        Err(label.cloned())
    }
}

/// What deriving one Service's backends needs: its name, selector, ports
/// and IP families. Lets an EndpointSlice change be applied to that Service
/// alone ([`backends_from_slices`]) with the same result a full [`resolve`]
/// gives.
#[derive(Debug, Clone)]
pub struct EndpointPlan {
    namespace: String,
    name: String,
    selector: BTreeMap<String, String>,
    publish_not_ready: bool,
    ports: Vec<DraftPort>,
    /// The Service's families: only endpoints of these are kept (an
    /// EndpointSlice's `addressType`, an address's family).
    families: Vec<IpFamily>,
}

impl EndpointPlan {
    /// `metadata.namespace` of the Service.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `metadata.name` of the Service.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Service's IP families, primary first.
    pub fn families(&self) -> &[IpFamily] {
        &self.families
    }

    /// True when the Service serves this EndpointSlice's `addressType`
    /// (`IPv4`, `IPv6`; never `FQDN`).
    fn serves_slice(&self, es: &EndpointSlice) -> bool {
        IpFamily::parse(&es.address_type).is_some_and(|f| self.families.contains(&f))
    }

    /// `s` as an address of one of the Service's families.
    fn addr(&self, s: &str) -> Option<IpAddr> {
        s.parse::<IpAddr>().ok().filter(|ip| self.families.contains(&IpFamily::of(ip)))
    }
}

/// The endpoints of a headless Service as DNS names them, from these
/// EndpointSlices (labelled with its name): what [`resolve`] puts in
/// [`Resolved::endpoint_names`] for it from the same slices. Every endpoint
/// counts, whatever the ports (a headless Service may have none); an address
/// in several slices counts once. Slices of both `addressType`s count when
/// the Service has both families (A and AAAA records).
pub fn endpoint_names_from_slices(plan: &EndpointPlan, slices: &[&EndpointSlice]) -> Vec<NamedEndpoint> {
    let mut out: Vec<NamedEndpoint> = Vec::new();
    for es in slices.iter().filter(|es| plan.serves_slice(es)) {
        for e in &es.endpoints {
            let Some(addr) = e.addresses.first().and_then(|a| plan.addr(a)) else {
                continue;
            };
            // nil ready means "unknown": consumers treat it as ready.
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true) || plan.publish_not_ready;
            push_named(&mut out, NamedEndpoint { addr, hostname: e.hostname.clone().filter(|h| !h.is_empty()), ready });
        }
    }
    out
}

/// Adds an endpoint unless its address is there already (the first wins).
fn push_named(out: &mut Vec<NamedEndpoint>, e: NamedEndpoint) {
    if !out.iter().any(|o| o.addr == e.addr) {
        out.push(e);
    }
}

/// [`endpoint_names_from_slices`] for every source: the Service's slices,
/// else its Endpoints, else the Pods its selector matches.
fn endpoint_names(plan: &EndpointPlan, index: &EndpointIndex<'_>) -> Vec<NamedEndpoint> {
    let key = (plan.namespace.clone(), plan.name.clone());
    if let Some(slices) = index.slices.get(&key) {
        return endpoint_names_from_slices(plan, slices);
    }
    let mut out = Vec::new();
    if let Some(ep) = index.endpoints.get(&key) {
        for subset in ep.subsets.iter().flatten() {
            let lists = [(subset.addresses.as_ref(), true), (subset.not_ready_addresses.as_ref(), false)];
            for (list, ready) in lists {
                for a in list.into_iter().flatten() {
                    let Some(addr) = plan.addr(&a.ip) else {
                        continue;
                    };
                    let hostname = a.hostname.clone().filter(|h| !h.is_empty());
                    push_named(&mut out, NamedEndpoint { addr, hostname, ready: ready || plan.publish_not_ready });
                }
            }
        }
        return out;
    }
    if plan.selector.is_empty() {
        return out;
    }
    for pod in index.pods.get(&plan.namespace).into_iter().flatten() {
        let labels = pod.metadata.labels.as_ref();
        if !plan.selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
            continue;
        }
        let Some((addrs, conditions)) = pod_addresses(pod, plan) else {
            continue;
        };
        // The EndpointSlice controller names the endpoint only when the Pod's
        // subdomain is this Service.
        let spec = pod.spec.as_ref();
        let hostname = spec
            .filter(|s| s.subdomain.as_deref() == Some(plan.name.as_str()))
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty());
        for addr in addrs {
            push_named(&mut out, NamedEndpoint { addr, hostname: hostname.clone(), ready: conditions.ready });
        }
    }
    out
}

/// The backends of each port of a Service (in `spec.ports` order) that has
/// these EndpointSlices (labelled with its name, in object order, at least
/// one): what [`resolve`] derives for it from the same slices.
///
/// Each slice's ports and endpoints are read once (a name -> port map, the
/// parsed addresses), so a Service with many ports costs O(ports x endpoints)
/// rather than [`backends_for`]'s O(ports^2); the result is the same.
pub fn backends_from_slices(plan: &EndpointPlan, slices: &[&EndpointSlice]) -> Vec<Vec<BackendSpec>> {
    struct Read<'a> {
        ports: FastMap<(&'a str, &'a str), Option<i32>>,
        endpoints: Vec<(IpAddr, EndpointConditions)>,
    }
    let read: Vec<Read<'_>> = slices
        .iter()
        .filter(|es| plan.serves_slice(es))
        .map(|es| {
            let mut ports =
                FastMap::with_capacity_and_hasher(es.ports.as_ref().map_or(0, Vec::len), Default::default());
            for ep in es.ports.iter().flatten() {
                // The first port with a name and protocol wins, as in `match_port`.
                ports
                    .entry((ep.name.as_deref().unwrap_or(""), ep.protocol.as_deref().unwrap_or("TCP")))
                    .or_insert(ep.port);
            }
            let endpoints = es
                .endpoints
                .iter()
                .filter_map(|e| {
                    let addr = plan.addr(e.addresses.first()?)?;
                    let c = e.conditions.clone().unwrap_or_default();
                    // nil ready means "unknown": consumers treat it as ready.
                    let ready = c.ready.unwrap_or(true);
                    Some((
                        addr,
                        EndpointConditions {
                            ready: ready || plan.publish_not_ready,
                            serving: c.serving.unwrap_or(ready),
                            terminating: c.terminating.unwrap_or(false),
                        },
                    ))
                })
                .collect();
            Read { ports, endpoints }
        })
        .collect();
    plan.ports
        .iter()
        .map(|p| {
            let proto = p.protocol.as_str();
            let mut out = Vec::new();
            for r in &read {
                let by = |want: &str| {
                    r.ports
                        .get(&(want, proto))
                        .copied()
                        .flatten()
                        .and_then(|x| u16::try_from(x).ok())
                        .filter(|x| *x != 0)
                };
                let port = by(&p.name).or_else(|| match &p.target {
                    Target::Name(n) => by(n),
                    Target::Number(_) => None,
                });
                let Some(port) = port else {
                    continue;
                };
                out.extend(r.endpoints.iter().map(|&(addr, conditions)| BackendSpec {
                    addr,
                    port,
                    conditions,
                    weight: 1,
                }));
            }
            out
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone)]
struct DraftPort {
    name: String,
    protocol: Protocol,
    port: u16,
    target: Target,
    node_port: Option<u16>,
}

#[derive(Debug, Clone)]
struct Draft {
    key: String,
    namespace: String,
    name: String,
    origin: Origin,
    source: Sourced,
    service_type: ServiceType,
    headless: bool,
    /// The Service's families, primary first (headless ones too).
    families: Vec<IpFamily>,
    /// The clusterIP of each family (same index as `families`), `None` to
    /// allocate; empty when headless.
    cluster_ips: Vec<Option<IpAddr>>,
    external_ips: Vec<IpAddr>,
    lb_ips: Vec<IpAddr>,
    source_ranges: Vec<IpNet>,
    affinity: SessionAffinity,
    selector: BTreeMap<String, String>,
    publish_not_ready: bool,
    wants_node_ports: bool,
    ports: Vec<DraftPort>,
    forwarding: Option<ForwardingMode>,
    warnings: Vec<LoadWarning>,
}

/// The annotation a Service sets to pick its own forwarding mode (`snat` or
/// `dnat`) instead of the gateway's `mode`.
pub const FORWARDING_ANNOTATION: &str = "svcgate.io/forwarding-mode";

enum Validated {
    Draft(Box<Draft>),
    ExternalName(ExternalNameSpec),
}

/// `namespace/name` of an object's metadata, with the default namespace.
fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    let ns = meta.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".to_string());
    (ns, meta.name.clone().unwrap_or_default())
}

struct Checker<'a> {
    origin: &'a Origin,
    kind: &'static str,
    name: String,
    errors: Vec<LoadError>,
}

impl Checker<'_> {
    fn err(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(LoadError::Invalid {
            origin: self.origin.clone(),
            kind: self.kind.into(),
            name: self.name.clone(),
            field: field.into(),
            reason: reason.into(),
        });
    }
}

fn parse_protocol(c: &mut Checker<'_>, field: &str, p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => {
            c.err(field, "Unsupported value: \"SCTP\": svcgate serves TCP and UDP only");
            None
        }
        other => {
            c.err(field, format!("Unsupported value: {other:?}: supported values: \"TCP\", \"UDP\""));
            None
        }
    }
}

fn port_in_range(c: &mut Checker<'_>, field: &str, v: i32) -> Option<u16> {
    match u16::try_from(v) {
        Ok(p) if p != 0 => Some(p),
        _ => {
            c.err(field, format!("Invalid value: {v}: must be between 1 and 65535, inclusive"));
            None
        }
    }
}

/// IANA_SVC_NAME: at most 15 characters of [a-z0-9-], at least one letter, no
/// leading, trailing or doubled hyphen.
fn valid_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn parse_ip(c: &mut Checker<'_>, field: &str, s: &str) -> Option<IpAddr> {
    match s.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            c.err(field, format!("Invalid value: {s:?}: must be a valid IP address (IPv4 or IPv6)"));
            None
        }
    }
}

/// The field of a Service's `i`th clusterIP (of at most two) in errors:
/// `spec.clusterIP` for the primary, as the API server names it.
fn cluster_ip_field(i: usize) -> &'static str {
    if i == 0 {
        "spec.clusterIP"
    } else {
        "spec.clusterIPs[1]"
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FamilyPolicy {
    /// `SingleStack`.
    Single,
    /// `PreferDualStack`.
    PreferDual,
    /// `RequireDualStack`.
    RequireDual,
}

/// A Service's clusterIPs and families as the API server settles them.
struct Addressing {
    headless: bool,
    families: Vec<IpFamily>,
    cluster_ips: Vec<Option<IpAddr>>,
}

/// Validates `clusterIP`, `clusterIPs`, `ipFamilies` and `ipFamilyPolicy`
/// and settles the Service's families (primary first) and the clusterIP of
/// each (`None`: to allocate), the way kube-apiserver's validation and
/// `initIPFamilyFields` do, with svcgate's [`ServiceCidrs`] as the
/// cluster's ranges. Explicit addresses outside svcgate's range of their
/// family are served as given, with a warning (see the module doc).
fn addressing(
    c: &mut Checker<'_>,
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    cfg: &ResolveConfig,
    warnings: &mut Vec<LoadWarning>,
) -> Addressing {
    let policy = match spec.ip_family_policy.as_deref() {
        None | Some("") => None,
        Some("SingleStack") => Some(FamilyPolicy::Single),
        Some("PreferDualStack") => Some(FamilyPolicy::PreferDual),
        Some("RequireDualStack") => Some(FamilyPolicy::RequireDual),
        Some(other) => {
            c.err(
                "spec.ipFamilyPolicy",
                format!(
                    "Unsupported value: {other:?}: supported values: \"PreferDualStack\", \"RequireDualStack\", \
                     \"SingleStack\""
                ),
            );
            None
        }
    };
    let raw_families = spec.ip_families.as_deref().unwrap_or_default();
    if raw_families.len() > 2 {
        c.err("spec.ipFamilies", format!("Too many: {}: must have at most 2 items", raw_families.len()));
    }
    let mut families: Vec<IpFamily> = Vec::new();
    for (i, s) in raw_families.iter().enumerate().take(2) {
        match IpFamily::parse(s) {
            Some(f) if families.contains(&f) => {
                c.err(format!("spec.ipFamilies[{i}]"), format!("Duplicate value: {s:?}"))
            }
            Some(f) => families.push(f),
            None => c.err(
                format!("spec.ipFamilies[{i}]"),
                format!("Unsupported value: {s:?}: supported values: \"IPv4\", \"IPv6\""),
            ),
        }
    }

    // clusterIPs, with clusterIP its first entry (the API's v1 conversion
    // fills either from the other).
    let primary = spec.cluster_ip.as_deref().filter(|s| !s.is_empty());
    let listed: Vec<&str> = spec.cluster_ips.iter().flatten().map(String::as_str).collect();
    if let (Some(a), Some(b)) = (primary, listed.first()) {
        if a != *b {
            c.err("spec.clusterIPs[0]", format!("Invalid value: {b:?}: must be the same as spec.clusterIP ({a:?})"));
        }
    }
    let from_list = !listed.is_empty();
    let list: Vec<&str> = if from_list { listed } else { primary.into_iter().collect() };
    let headless = list.first() == Some(&"None");
    if list.len() > 2 {
        c.err("spec.clusterIPs", format!("Too many: {}: must have at most 2 items", list.len()));
    }
    let field =
        |i: usize| if i == 0 && !from_list { "spec.clusterIP".to_string() } else { format!("spec.clusterIPs[{i}]") };
    let mut given: Vec<IpAddr> = Vec::new();
    for (i, s) in list.iter().enumerate().take(2) {
        if headless {
            if i > 0 {
                c.err(field(i), format!("Invalid value: {s:?}: must not be set when spec.clusterIPs[0] is 'None'"));
            }
            continue;
        }
        if *s == "None" {
            c.err(field(i), "Invalid value: \"None\": only spec.clusterIPs[0] may be 'None'");
            continue;
        }
        if let Some(ip) = parse_ip(c, &field(i), s) {
            if given.iter().any(|g| IpFamily::of(g) == IpFamily::of(&ip)) {
                c.err(field(i), format!("Invalid value: {s:?}: may specify no more than one IP for each IP family"));
            } else {
                given.push(ip);
            }
        }
    }
    let selectorless = spec.selector.as_ref().is_none_or(BTreeMap::is_empty);
    let policy =
        policy.unwrap_or(if headless && selectorless { FamilyPolicy::RequireDual } else { FamilyPolicy::Single });
    if policy == FamilyPolicy::Single {
        if given.len() == 2 {
            c.err(
                "spec.ipFamilyPolicy",
                "Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple \
                 cluster IPs are specified",
            );
        }
        if families.len() == 2 {
            c.err(
                "spec.ipFamilyPolicy",
                "Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP \
                 families are specified",
            );
        }
    }
    // ipFamilies[i] is the family of clusterIPs[i]; the given addresses'
    // families are inferred when ipFamilies leaves them out.
    for (i, ip) in given.iter().enumerate() {
        let f = IpFamily::of(ip);
        match families.get(i) {
            Some(&want) if want != f => c.err(
                format!("spec.ipFamilies[{i}]"),
                format!("Invalid value: \"{want}\": does not match the family of {} {ip} ({f})", field(i)),
            ),
            Some(_) => {}
            None if !families.contains(&f) => families.push(f),
            None => {}
        }
    }
    let api_final = !cfg.check_cluster_ip_range;
    if headless {
        // No address to allocate: the families pick the endpoints.
        if families.is_empty() {
            families.push(cfg.service_cidr.primary_family());
        }
        let wants_two = match policy {
            FamilyPolicy::Single => false,
            FamilyPolicy::RequireDual => true,
            FamilyPolicy::PreferDual => selectorless || cfg.service_cidr.is_dual_stack(),
        };
        // The API server's families of a headless Service are final too.
        let settled = api_final && !raw_families.is_empty();
        if families.len() == 1 && wants_two && !settled {
            families.push(other_family(families[0]));
        }
        return Addressing { headless, families, cluster_ips: Vec::new() };
    }
    if api_final && !given.is_empty() {
        let families = given.iter().map(IpFamily::of).collect();
        return Addressing { headless, families, cluster_ips: given.into_iter().map(Some).collect() };
    }
    if families.is_empty() {
        families.push(cfg.service_cidr.primary_family());
    }
    if families.len() == 1 && policy != FamilyPolicy::Single {
        let other = other_family(families[0]);
        // PreferDualStack takes the second family only where svcgate can
        // allocate it; RequireDualStack always (an error below if it cannot).
        if policy == FamilyPolicy::RequireDual || cfg.service_cidr.get(other).is_some() {
            families.push(other);
        }
    }
    let mut reported_dual = false;
    for (i, &f) in families.iter().enumerate() {
        let cidr = cfg.service_cidr.get(f);
        match given.get(i) {
            Some(ip) => {
                if cfg.check_cluster_ip_range && !cidr.is_some_and(|n| n.contains(ip)) {
                    warnings.push(LoadWarning::ClusterIpOutsideServiceCidr {
                        origin: c.origin.clone(),
                        name: c.name.clone(),
                        ip: *ip,
                        service_cidr: cidr,
                    });
                }
            }
            None if cidr.is_some() => {}
            None if policy == FamilyPolicy::RequireDual => {
                if !reported_dual {
                    reported_dual = true;
                    c.errors.push(LoadError::DualStackNotConfigured {
                        origin: c.origin.clone(),
                        name: c.name.clone(),
                        missing: f,
                        service_cidr: cfg.service_cidr,
                    });
                }
            }
            None => c.errors.push(LoadError::FamilyNotConfigured {
                origin: c.origin.clone(),
                name: c.name.clone(),
                index: i,
                family: f,
                service_cidr: cfg.service_cidr,
            }),
        }
    }
    let cluster_ips = (0..families.len()).map(|i| given.get(i).copied()).collect();
    Addressing { headless, families, cluster_ips }
}

fn validate_service(sourced: &Sourced, svc: &Service, cfg: &ResolveConfig) -> Result<Validated, Vec<LoadError>> {
    let (namespace, name) = key_of(&svc.metadata);
    let key = format!("{namespace}/{name}");
    let mut c = Checker { origin: &sourced.origin, kind: "Service", name: key.clone(), errors: Vec::new() };
    if name.is_empty() {
        c.err("metadata.name", "Required value: name or generateName is required");
        return Err(c.errors);
    }
    let spec = svc.spec.clone().unwrap_or_default();
    let service_type = match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" | "" => ServiceType::ClusterIp,
        "NodePort" => ServiceType::NodePort,
        "LoadBalancer" => ServiceType::LoadBalancer,
        "ExternalName" => {
            let target = spec.external_name.clone().unwrap_or_default();
            return Ok(Validated::ExternalName(ExternalNameSpec { namespace, name, target }));
        }
        other => {
            c.err(
                "spec.type",
                format!(
                    "Unsupported value: {other:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                ),
            );
            ServiceType::ClusterIp
        }
    };
    let mut warnings = Vec::new();
    let Addressing { headless, families, cluster_ips } = addressing(&mut c, &spec, cfg, &mut warnings);
    if headless && service_type != ServiceType::ClusterIp {
        c.err(
            "spec.clusterIP",
            format!("Invalid value: \"None\": may not be set to 'None' for {} services", service_type.as_str()),
        );
    }
    let wants_node_ports = match service_type {
        ServiceType::NodePort => true,
        ServiceType::LoadBalancer => spec.allocate_load_balancer_node_ports.unwrap_or(true),
        ServiceType::ClusterIp => false,
    };

    let raw_ports = spec.ports.clone().unwrap_or_default();
    if raw_ports.is_empty() && !headless {
        c.err("spec.ports", "Required value: a Service needs at least one port");
    }
    let mut ports = Vec::new();
    let mut names = FastSet::default();
    let mut seen = FastSet::default();
    for (i, p) in raw_ports.iter().enumerate() {
        let f = |s: &str| format!("spec.ports[{i}].{s}");
        let pname = p.name.clone().unwrap_or_default();
        if raw_ports.len() > 1 && pname.is_empty() {
            c.err(f("name"), "Required value: every port of a multi-port Service needs a name");
        } else if !pname.is_empty() && !valid_port_name(&pname) {
            c.err(
                f("name"),
                format!(
                    "Invalid value: {pname:?}: must be at most 15 lowercase letters, digits and '-', with a letter"
                ),
            );
        } else if !pname.is_empty() && !names.insert(pname.clone()) {
            c.err(f("name"), format!("Duplicate value: {pname:?}"));
        }
        let protocol = parse_protocol(&mut c, &f("protocol"), p.protocol.as_deref());
        let port = port_in_range(&mut c, &f("port"), p.port);
        let target = match &p.target_port {
            None | Some(IntOrString::Int(0)) => port.map(Target::Number),
            Some(IntOrString::String(s)) if s.is_empty() => port.map(Target::Number),
            Some(IntOrString::Int(n)) => port_in_range(&mut c, &f("targetPort"), *n).map(Target::Number),
            Some(IntOrString::String(s)) => {
                if valid_port_name(s) {
                    Some(Target::Name(s.clone()))
                } else {
                    c.err(
                        f("targetPort"),
                        format!(
                            "Invalid value: {s:?}: must be a number 1-65535 or a port name (at most 15 lowercase letters, digits and '-', with a letter)"
                        ),
                    );
                    None
                }
            }
        };
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(n) if !wants_node_ports => {
                c.err(
                    f("nodePort"),
                    format!(
                        "Forbidden: may not be used when `type` is '{}'{}",
                        service_type.as_str(),
                        if service_type == ServiceType::LoadBalancer {
                            " and allocateLoadBalancerNodePorts is false"
                        } else {
                            ""
                        }
                    ),
                );
                let _ = n;
                None
            }
            Some(n) => match u16::try_from(n) {
                Ok(np) if cfg.node_port_range.contains(&np) => Some(np),
                _ => {
                    c.err(
                        f("nodePort"),
                        format!(
                            "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                            cfg.node_port_range.start(),
                            cfg.node_port_range.end()
                        ),
                    );
                    None
                }
            },
        };
        if let (Some(protocol), Some(port)) = (protocol, port) {
            if !seen.insert((protocol, port)) {
                c.err(format!("spec.ports[{i}]"), format!("Duplicate value: {port}/{protocol}"));
            }
            if let Some(target) = target {
                ports.push(DraftPort { name: pname, protocol, port, target, node_port });
            }
        }
    }
    // Within one Service a nodePort may repeat only across protocols.
    let mut np_seen = FastSet::default();
    for (i, p) in ports.iter().enumerate() {
        if let Some(np) = p.node_port {
            if !np_seen.insert((np, p.protocol)) {
                c.err(format!("spec.ports[{i}].nodePort"), format!("Duplicate value: {np}"));
            }
        }
    }

    let mut external_ips = Vec::new();
    for (i, s) in spec.external_ips.iter().flatten().enumerate() {
        if let Some(ip) = parse_ip(&mut c, &format!("spec.externalIPs[{i}]"), s) {
            external_ips.push(ip);
        }
    }
    let mut lb_ips = Vec::new();
    if service_type == ServiceType::LoadBalancer {
        let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
        for (i, ing) in ingress.into_iter().flatten().enumerate() {
            if let Some(s) = ing.ip.as_deref() {
                if let Some(ip) = parse_ip(&mut c, &format!("status.loadBalancer.ingress[{i}].ip"), s) {
                    lb_ips.push(ip);
                }
            }
        }
        if let Some(s) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()) {
            if let Some(ip) = parse_ip(&mut c, "spec.loadBalancerIP", s) {
                if !lb_ips.contains(&ip) {
                    lb_ips.push(ip);
                }
            }
        }
    }
    // Ranges of both families: each family's frontends check their own
    // (a family the list does not mention is closed once the list is not
    // empty; see `svcgate_common::table`).
    let mut source_ranges = Vec::new();
    for (i, s) in spec.load_balancer_source_ranges.iter().flatten().enumerate() {
        let s = s.trim();
        match s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)) {
            Ok(n) => source_ranges.push(n.trunc()),
            Err(_) => c.err(
                format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("Invalid value: {s:?}: must be a CIDR like 198.18.0.0/15 or 2001:2::/48"),
            ),
        }
    }
    let affinity = match spec.session_affinity.as_deref().unwrap_or("None") {
        "None" | "" => SessionAffinity::None,
        "ClientIP" => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|a| a.client_ip.as_ref())
                .and_then(|a| a.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT as i32);
            if !(1..=86400).contains(&t) {
                c.err(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!("Invalid value: {t}: must be greater than 0 and less than 86400"),
                );
            }
            SessionAffinity::ClientIp { timeout_secs: t.clamp(1, 86400) as u32 }
        }
        other => {
            c.err(
                "spec.sessionAffinity",
                format!("Unsupported value: {other:?}: supported values: \"ClientIP\", \"None\""),
            );
            SessionAffinity::None
        }
    };
    let forwarding = match svc.metadata.annotations.as_ref().and_then(|a| a.get(FORWARDING_ANNOTATION)) {
        None => None,
        Some(v) => match ForwardingMode::parse(v) {
            Some(m) => Some(m),
            None => {
                c.err(
                    format!("metadata.annotations[{FORWARDING_ANNOTATION}]"),
                    format!("Unsupported value: {v:?}: supported values: \"dnat\", \"snat\""),
                );
                None
            }
        },
    };
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Validated::Draft(Box::new(Draft {
        key,
        namespace,
        name,
        origin: sourced.origin.clone(),
        source: sourced.clone(),
        service_type,
        headless,
        families,
        cluster_ips,
        external_ips,
        lb_ips,
        source_ranges,
        affinity,
        selector: spec.selector.clone().unwrap_or_default(),
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        wants_node_ports,
        ports,
        forwarding,
        warnings,
    })))
}

/// FNV-1a: stable across builds and machines, unlike the std hasher.
fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    svcgate_common::hash::fmix64(h)
}

/// A free address of `cidr` (either family) for the Service `key`: the
/// slot its name hashes to, or the next free one after it. The same name
/// gets the same address while the slot is free, whatever else changes.
/// Probing stops after `used.len() + 1` slots: one of those is free, so
/// even an IPv6 range of 2^64 addresses costs no more than the IPv4 one.
fn allocate_ip(key: &str, cidr: IpNet, used: &FastMap<IpAddr, String>) -> Option<IpAddr> {
    let (first, count) = crate::cidr::allocatable(cidr);
    if count == 0 {
        return None;
    }
    let start = u128::from(stable_hash(key)) % count;
    let probes = count.min(used.len() as u128 + 1);
    (0..probes).map(|i| crate::cidr::nth(cidr, first + (start + i) % count)).find(|ip| !used.contains_key(ip))
}

fn allocate_node_port(key: &str, range: &RangeInclusive<u16>, used: &FastMap<u16, String>) -> Option<u16> {
    let first = u32::from(*range.start());
    let count = u32::from(*range.end()).checked_sub(first)? + 1;
    let start = (stable_hash(key) % u64::from(count)) as u32;
    (0..count).map(|i| (first + (start + i) % count) as u16).find(|p| !used.contains_key(p))
}

/// Endpoint sources, indexed.
#[derive(Default)]
struct EndpointIndex<'a> {
    slices: FastMap<(String, String), Vec<&'a EndpointSlice>>,
    endpoints: FastMap<(String, String), &'a Endpoints>,
    pods: FastMap<String, Vec<&'a Pod>>,
}

/// Resolves objects (in priority order: file order) into the desired state.
///
/// `previous` is the last resolution's [`Resolved::applied`]: those Services
/// win name and port clashes, and stand in for a new version that is invalid.
/// `allocations` is the last resolution's [`Resolved::allocations`].
pub fn resolve(
    objects: &[Sourced],
    cfg: &ResolveConfig,
    previous: &FastMap<String, Sourced>,
    allocations: &Allocations,
) -> Resolved {
    let mut out = Resolved::default();
    let mut index = EndpointIndex::default();
    let mut seen_objects: FastMap<(&'static str, String, String), Origin> = FastMap::default();
    seen_objects.reserve(objects.len());
    let mut services: Vec<(&Sourced, &Service)> = Vec::new();
    for s in objects {
        let (kind, meta) = match &s.object {
            Object::Service(o) => (s.object.kind(), &o.metadata),
            Object::Endpoints(o) => (s.object.kind(), &o.metadata),
            Object::EndpointSlice(o) => (s.object.kind(), &o.metadata),
            Object::Pod(o) => (s.object.kind(), &o.metadata),
        };
        let (ns, name) = key_of(meta);
        if let Object::Service(svc) = &s.object {
            if let Err(proxy) = check_proxy_name(cfg, svc) {
                tracing::debug!(service = %format!("{ns}/{name}"), origin = %s.origin, proxy = ?proxy,
                    "left to another proxy by its service-proxy-name label");
                out.other_proxy.push(OtherProxy { origin: s.origin.clone(), name: format!("{ns}/{name}"), proxy });
                continue;
            }
            services.push((s, svc));
            continue;
        }
        if name.is_empty() {
            out.errors.push(LoadError::Invalid {
                origin: s.origin.clone(),
                kind: kind.into(),
                name: format!("{ns}/"),
                field: "metadata.name".into(),
                reason: "Required value: name or generateName is required".into(),
            });
            continue;
        }
        if let Some(first) = seen_objects.get(&(kind, ns.clone(), name.clone())) {
            out.errors.push(LoadError::Invalid {
                origin: s.origin.clone(),
                kind: kind.into(),
                name: format!("{ns}/{name}"),
                field: "metadata.name".into(),
                reason: format!("Duplicate value: already defined at {first}; this one is not applied"),
            });
            continue;
        }
        seen_objects.insert((kind, ns.clone(), name.clone()), s.origin.clone());
        match &s.object {
            Object::EndpointSlice(es) => {
                if let Some(svc) = es.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                    index.slices.entry((ns, svc.clone())).or_default().push(es);
                }
            }
            Object::Endpoints(ep) => {
                index.endpoints.insert((ns, name), ep);
            }
            Object::Pod(p) => index.pods.entry(ns).or_default().push(p),
            Object::Service(_) => {}
        }
    }

    // Services already applied keep their names and ports: they go first.
    let was_applied = |s: &Sourced| -> bool {
        let Object::Service(svc) = &s.object else {
            return false;
        };
        let (ns, name) = key_of(&svc.metadata);
        previous.get(&format!("{ns}/{name}")).is_some_and(|p| p.origin.path == s.origin.path)
    };
    services.sort_by_key(|(s, _)| !was_applied(s));

    // 1. Validate; first come keeps the name.
    let mut drafts: Vec<Draft> = Vec::new();
    let mut names: FastMap<String, Origin> = FastMap::default();
    for (sourced, svc) in services {
        let validated = match validate_service(sourced, svc, cfg) {
            Ok(v) => Some(v),
            Err(errs) => {
                out.errors.extend(errs);
                let (ns, name) = key_of(&svc.metadata);
                let key = format!("{ns}/{name}");
                // The last good version keeps serving, if it came from the same place.
                match previous.get(&key).filter(|p| p.origin.path == sourced.origin.path && p != &sourced) {
                    Some(prev) => match &prev.object {
                        Object::Service(psvc) => match validate_service(prev, psvc, cfg) {
                            Ok(v) => {
                                tracing::warn!(service = %key, origin = %prev.origin,
                                    "the new version is invalid; the last good version keeps serving");
                                Some(v)
                            }
                            Err(_) => None,
                        },
                        _ => None,
                    },
                    None => None,
                }
            }
        };
        match validated {
            None => {}
            Some(Validated::ExternalName(spec)) => {
                let key = format!("{}/{}", spec.namespace, spec.name);
                tracing::info!(service = %key, "ExternalName Service: DNS only, nothing for svcgate to serve");
                out.external_names.push(key);
                out.external_name_targets.push(spec);
            }
            Some(Validated::Draft(d)) => {
                if let Some(first) = names.get(&d.key) {
                    out.errors.push(LoadError::DuplicateService {
                        origin: d.origin.clone(),
                        name: d.key.clone(),
                        first: first.clone(),
                    });
                    // Kept (with no key) only to report its port clashes too:
                    // the next thing the user would hit.
                    drafts.push(Draft { key: String::new(), ..*d });
                } else {
                    names.insert(d.key.clone(), d.origin.clone());
                    drafts.push(*d);
                }
            }
        }
    }

    // 2. Sticky allocations of Services still here are reserved up front
    //    (per family: a Service may give one family's address and have the
    //    other allocated).
    let mut used_ips: FastMap<IpAddr, String> = FastMap::default();
    let mut used_ports: FastMap<u16, String> = FastMap::default();
    for d in drafts.iter().filter(|d| !d.key.is_empty()) {
        for (f, ip) in d.families.iter().zip(&d.cluster_ips) {
            if ip.is_none() {
                if let Some(ip) = allocations.cluster_ips.get(&(d.key.clone(), *f)) {
                    used_ips.insert(*ip, d.key.clone());
                }
            }
        }
        for p in d.ports.iter().filter(|p| p.node_port.is_none() && d.wants_node_ports) {
            if let Some(np) = allocations.node_ports.get(&(d.key.clone(), p.protocol, p.port)) {
                used_ports.insert(*np, d.key.clone());
            }
        }
    }
    // 3. Explicit clusterIPs and nodePorts, first come first served.
    let mut accepted: Vec<Draft> = Vec::new();
    for d in drafts {
        let shown = if d.key.is_empty() { format!("{}/{}", d.namespace, d.name) } else { d.key.clone() };
        let mut errs = Vec::new();
        for (i, ip) in d.cluster_ips.iter().enumerate() {
            let Some(ip) = ip else { continue };
            if let Some(owner) = used_ips.get(ip).filter(|o| **o != d.key) {
                errs.push(LoadError::ClusterIpAllocated {
                    origin: d.origin.clone(),
                    name: shown.clone(),
                    field: cluster_ip_field(i),
                    ip: *ip,
                    owner: owner.clone(),
                });
            }
        }
        for (i, p) in d.ports.iter().enumerate() {
            if let Some(np) = p.node_port {
                if let Some(owner) = used_ports.get(&np).filter(|o| **o != d.key) {
                    errs.push(LoadError::NodePortAllocated {
                        origin: d.origin.clone(),
                        name: shown.clone(),
                        field: format!("spec.ports[{i}].nodePort"),
                        node_port: np,
                        owner: owner.clone(),
                    });
                }
            }
        }
        if d.key.is_empty() {
            out.errors.extend(errs); // a duplicate name: already rejected
            continue;
        }
        if !errs.is_empty() {
            out.errors.extend(errs);
            continue;
        }
        for ip in d.cluster_ips.iter().flatten() {
            used_ips.insert(*ip, d.key.clone());
        }
        for p in &d.ports {
            if let Some(np) = p.node_port {
                used_ports.insert(np, d.key.clone());
            }
        }
        accepted.push(d);
    }
    // 4. Allocate what was left unset.
    let mut final_drafts = Vec::new();
    for mut d in accepted {
        let mut ok = true;
        for i in 0..d.cluster_ips.len() {
            if d.cluster_ips[i].is_some() {
                continue;
            }
            let family = d.families[i];
            // Validation made sure svcgate has a range of every family it
            // must allocate in.
            let Some(cidr) = cfg.service_cidr.get(family) else {
                ok = false;
                continue;
            };
            let akey = (d.key.clone(), family);
            let ip = allocations
                .cluster_ips
                .get(&akey)
                .copied()
                .filter(|ip| used_ips.get(ip) == Some(&d.key) && cidr.contains(ip))
                .or_else(|| allocate_ip(&d.key, cidr, &used_ips));
            match ip {
                Some(ip) => {
                    used_ips.insert(ip, d.key.clone());
                    out.allocations.cluster_ips.insert(akey, ip);
                    d.cluster_ips[i] = Some(ip);
                }
                None => {
                    out.errors.push(LoadError::RangeFull {
                        origin: d.origin.clone(),
                        name: d.key.clone(),
                        field: cluster_ip_field(i).into(),
                        what: format!("service CIDR {cidr}"),
                    });
                    ok = false;
                }
            }
        }
        if d.wants_node_ports {
            for i in 0..d.ports.len() {
                if d.ports[i].node_port.is_some() {
                    continue;
                }
                let akey = (d.key.clone(), d.ports[i].protocol, d.ports[i].port);
                let np =
                    allocations.node_ports.get(&akey).copied().filter(|np| used_ports.get(np) == Some(&d.key)).or_else(
                        || {
                            let hk = format!("{}/{}/{}", d.key, d.ports[i].port, d.ports[i].protocol);
                            allocate_node_port(&hk, &cfg.node_port_range, &used_ports)
                        },
                    );
                match np {
                    Some(np) => {
                        used_ports.insert(np, d.key.clone());
                        out.allocations.node_ports.insert(akey, np);
                        d.ports[i].node_port = Some(np);
                    }
                    None => {
                        out.errors.push(LoadError::RangeFull {
                            origin: d.origin.clone(),
                            name: d.key.clone(),
                            field: format!("spec.ports[{i}].nodePort"),
                            what: format!(
                                "node port range {}-{}",
                                cfg.node_port_range.start(),
                                cfg.node_port_range.end()
                            ),
                        });
                        ok = false;
                    }
                }
            }
        }
        if ok {
            final_drafts.push(d);
        }
    }

    // 5. Endpoints.
    out.desired.node_ips = cfg.node_ips.clone();
    for mut d in final_drafts {
        out.warnings.append(&mut d.warnings);
        let plan = EndpointPlan {
            namespace: d.namespace.clone(),
            name: d.name.clone(),
            selector: d.selector.clone(),
            publish_not_ready: d.publish_not_ready,
            ports: d.ports.clone(),
            families: d.families.clone(),
        };
        let ports = d
            .ports
            .iter()
            .map(|p| ServicePortSpec {
                name: p.name.clone(),
                protocol: p.protocol,
                port: p.port,
                node_port: if d.wants_node_ports { p.node_port } else { None },
                backends: backends_for(&plan, p, &index),
            })
            .collect();
        out.desired.services.push(ServiceSpec {
            namespace: d.namespace.clone(),
            name: d.name.clone(),
            service_type: d.service_type,
            cluster_ips: if d.headless { vec![] } else { d.cluster_ips.iter().flatten().copied().collect() },
            external_ips: d.external_ips.clone(),
            load_balancer_ips: d.lb_ips.clone(),
            source_ranges: d.source_ranges.clone(),
            affinity: d.affinity,
            ports,
            forwarding: d.forwarding,
        });
        out.origins.push(d.origin.clone());
        out.applied.insert(d.key, d.source);
        out.endpoint_names.push(if d.headless { endpoint_names(&plan, &index) } else { Vec::new() });
        out.plans.push(plan);
    }
    out
}

/// Finds the endpoint port for a Service port among (name, port, protocol).
fn match_port<'a>(ports: impl Iterator<Item = (&'a str, Option<i32>, &'a str)> + Clone, p: &DraftPort) -> Option<u16> {
    let proto = p.protocol.as_str();
    let by = |want: &str| {
        ports
            .clone()
            .find(|(n, _, pr)| *n == want && *pr == proto)
            .and_then(|(_, port, _)| port)
            .and_then(|x| u16::try_from(x).ok())
            .filter(|x| *x != 0)
    };
    by(&p.name).or_else(|| match &p.target {
        Target::Name(n) => by(n),
        Target::Number(_) => None,
    })
}

fn backends_for(d: &EndpointPlan, p: &DraftPort, index: &EndpointIndex<'_>) -> Vec<BackendSpec> {
    let key = (d.namespace.clone(), d.name.clone());
    let mut out = Vec::new();
    if let Some(slices) = index.slices.get(&key) {
        for es in slices.iter().filter(|es| d.serves_slice(es)) {
            let ports = es
                .ports
                .iter()
                .flatten()
                .map(|ep| (ep.name.as_deref().unwrap_or(""), ep.port, ep.protocol.as_deref().unwrap_or("TCP")));
            let Some(port) = match_port(ports, p) else {
                continue;
            };
            for e in &es.endpoints {
                let Some(addr) = e.addresses.first().and_then(|a| d.addr(a)) else {
                    continue;
                };
                let c = e.conditions.clone().unwrap_or_default();
                // nil ready means "unknown": consumers treat it as ready.
                let ready = c.ready.unwrap_or(true);
                let conditions = EndpointConditions {
                    ready: ready || d.publish_not_ready,
                    serving: c.serving.unwrap_or(ready),
                    terminating: c.terminating.unwrap_or(false),
                };
                out.push(BackendSpec { addr, port, conditions, weight: 1 });
            }
        }
        return out;
    }
    if let Some(ep) = index.endpoints.get(&key) {
        for subset in ep.subsets.iter().flatten() {
            let ports =
                subset.ports.iter().flatten().map(|ep| {
                    (ep.name.as_deref().unwrap_or(""), Some(ep.port), ep.protocol.as_deref().unwrap_or("TCP"))
                });
            let Some(port) = match_port(ports, p) else {
                continue;
            };
            let lists = [(subset.addresses.as_ref(), true), (subset.not_ready_addresses.as_ref(), false)];
            for (list, ready) in lists {
                for a in list.into_iter().flatten() {
                    let Some(addr) = d.addr(&a.ip) else {
                        continue;
                    };
                    let conditions = if ready || d.publish_not_ready {
                        EndpointConditions::READY
                    } else {
                        EndpointConditions::NOT_READY
                    };
                    out.push(BackendSpec { addr, port, conditions, weight: 1 });
                }
            }
        }
        return out;
    }
    if d.selector.is_empty() {
        return out; // no selector: endpoints are the user's to write
    }
    for pod in index.pods.get(&d.namespace).into_iter().flatten() {
        let labels = pod.metadata.labels.as_ref();
        if !d.selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
            continue;
        }
        pod_backends(pod, p, d, &mut out);
    }
    out
}

/// One Pod as an endpoint of one Service port, the way the EndpointSlice
/// controller sees it: a backend per address of the Service's families (the
/// controller writes one EndpointSlice per family).
fn pod_backends(pod: &Pod, p: &DraftPort, plan: &EndpointPlan, out: &mut Vec<BackendSpec>) {
    let Some((addrs, conditions)) = pod_addresses(pod, plan) else {
        return;
    };
    let Some(port) = pod_port(pod, p) else {
        return;
    };
    out.extend(addrs.into_iter().map(|addr| BackendSpec { addr, port, conditions, weight: 1 }));
}

/// The Pod's port of a Service port: the number, or the named container port.
fn pod_port(pod: &Pod, p: &DraftPort) -> Option<u16> {
    let port = match &p.target {
        Target::Number(n) => *n,
        Target::Name(name) => {
            let spec = pod.spec.as_ref()?;
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| {
                    cp.name.as_deref() == Some(name.as_str())
                        && cp.protocol.as_deref().unwrap_or("TCP") == p.protocol.as_str()
                })
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .filter(|x| *x != 0)?
        }
    };
    Some(port)
}

/// A Pod's addresses of the Service's families (`status.podIPs`, one per
/// family, else `status.podIP`; the first of each family, in the order of
/// the Service's families) and its endpoint conditions, the way the
/// EndpointSlice controller sees it; `None` for Pods that are no endpoint
/// (Succeeded, Failed, no address of the Service's families). At most two
/// addresses, in an array: this runs per Pod and port of every selector
/// Service, and allocates nothing.
fn pod_addresses(pod: &Pod, plan: &EndpointPlan) -> Option<(impl Iterator<Item = IpAddr> + Clone, EndpointConditions)> {
    let publish_not_ready = plan.publish_not_ready;
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let listed = || {
        status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.pod_ip.as_deref())
            .filter_map(|s| s.parse::<IpAddr>().ok())
    };
    let mut addrs: [Option<IpAddr>; 2] = [None; 2];
    for (slot, f) in addrs.iter_mut().zip(&plan.families) {
        *slot = listed().find(|ip| IpFamily::of(ip) == *f);
    }
    if addrs.iter().all(Option::is_none) {
        return None;
    }
    let pod_ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let conditions = EndpointConditions {
        ready: (pod_ready || publish_not_ready) && !terminating,
        serving: pod_ready || publish_not_ready,
        terminating,
    };
    Some((addrs.into_iter().flatten(), conditions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_skips_reserved_addresses() {
        // Every address `allocate_ip` hands out of `cidr`, sorted.
        let all = |cidr: &str| {
            let cidr: IpNet = cidr.parse().unwrap();
            let mut used = FastMap::default();
            let mut got = Vec::new();
            while let Some(ip) = allocate_ip("x", cidr, &used) {
                used.insert(ip, "x".to_string());
                got.push(ip);
            }
            got.sort();
            got
        };
        let want: Vec<IpAddr> = (2..=6).map(|i| IpAddr::from([198, 18, 128, i])).collect();
        assert_eq!(all("198.18.128.0/29"), want);
        assert_eq!(allocate_ip("x", "198.18.0.0/30".parse().unwrap(), &FastMap::default()), None);
        // IPv6: no broadcast address; the network and ::1 are still left out.
        let want: Vec<IpAddr> = (2..=7).map(|i| format!("2001:2:0:8000::{i}").parse().unwrap()).collect();
        assert_eq!(all("2001:2:0:8000::/125"), want);
    }

    #[test]
    fn allocation_is_deterministic() {
        for cidr in ["198.18.128.0/20", "2001:2:0:8000::/112", "2001:2::/64"] {
            let cidr: IpNet = cidr.parse().unwrap();
            let a = allocate_ip("default/nginx", cidr, &FastMap::default());
            let b = allocate_ip("default/nginx", cidr, &FastMap::default());
            assert_eq!(a, b);
            assert!(cidr.contains(&a.unwrap()));
        }
        // The IPv4 allocator is the one of before dual-stack: the same name
        // keeps the same address across the upgrade (slot = hash mod the
        // 4093 allocatable addresses of a /20, from .2).
        let slot = (stable_hash("default/nginx") % 4093) as u32 + 2;
        assert_eq!(
            allocate_ip("default/nginx", "198.18.128.0/20".parse().unwrap(), &FastMap::default()),
            Some(IpAddr::from(std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 128, 0)) + slot)))
        );
    }

    #[test]
    fn port_names() {
        assert!(valid_port_name("http"));
        assert!(valid_port_name("service0"));
        assert!(!valid_port_name("80"));
        assert!(!valid_port_name("HTTP"));
        assert!(!valid_port_name("a--b"));
        assert!(!valid_port_name("this-name-is-too-long"));
    }
}
