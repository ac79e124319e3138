//! Errors of the control plane's sources, worded like the API server's.
//!
//! Every variant names where the problem is (file and line, or the API) and the
//! object and field, so a user can fix it without reading svcgate's code. They
//! are all recoverable: the object (or document) in question is skipped, or
//! keeps its last good state, and everything else applies.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use svcgate_common::family::IpFamily;
use svcgate_common::model::IpNet;

use crate::cidr::ServiceCidrs;
use crate::origin::Origin;

/// Something a manifest or API object got wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A file is larger than [`crate::manifest::MAX_MANIFEST_BYTES`]: not
    /// read at all (bounded memory whatever lands in the directory).
    #[error(
        "{path}: {size} bytes is more than the {limit} a manifest file may have; not read (split it into several files)"
    )]
    TooLarge {
        /// The file.
        path: String,
        /// Its size (at least this much, when it grew while read).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Directories that lead back into themselves (a symlink to a parent).
    #[error("{path}: a symbolic link loop back to {target}; not followed")]
    Loop {
        /// The directory entry that closes the loop.
        path: String,
        /// The directory it leads back to.
        target: String,
    },
    /// A document is not valid YAML.
    #[error("{path}:{line}: not valid YAML: {message}; the document is not applied")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line in the file (0 when unknown).
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A document is YAML but does not decode as its kind (a wrong type, a
    /// missing required field).
    #[error("{origin}: {kind} {name}: {message}; the object is not applied")]
    Decode {
        /// File and line of the offending field, when known.
        origin: Origin,
        /// `kind`.
        kind: String,
        /// `metadata.name`.
        name: String,
        /// The decoder's message, starting with the field path.
        message: String,
    },
    /// A field has a value the API server (or svcgate) does not accept.
    #[error("{origin}: {kind} \"{name}\" is invalid: {field}: {reason}")]
    Invalid {
        /// Where the object is.
        origin: Origin,
        /// `kind`.
        kind: String,
        /// `namespace/name`.
        name: String,
        /// The field path, e.g. `spec.ports[0].nodePort`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A second Service with a namespace/name already taken.
    #[error(
        "{origin}: Service \"{name}\" already exists (defined first at {first}): metadata.name must be unique \
         in its namespace; this one is not applied, the first keeps the name"
    )]
    DuplicateService {
        /// Where the second one is.
        origin: Origin,
        /// `namespace/name`.
        name: String,
        /// Where the first one is.
        first: Origin,
    },
    /// A nodePort another Service holds.
    #[error(
        "{origin}: Service \"{name}\" is invalid: {field}: Invalid value: {node_port}: provided port is already \
         allocated (to Service \"{owner}\"); the Service is not applied"
    )]
    NodePortAllocated {
        /// Where the object is.
        origin: Origin,
        /// `namespace/name`.
        name: String,
        /// e.g. `spec.ports[0].nodePort`.
        field: String,
        /// The port.
        node_port: u16,
        /// The Service that has it.
        owner: String,
    },
    /// A clusterIP another Service holds (each family's addresses are
    /// allocated on their own: a Service's IPv6 address may clash while its
    /// IPv4 one does not).
    #[error(
        "{origin}: Service \"{name}\" is invalid: {field}: Invalid value: \"{ip}\": provided IP is already \
         allocated (to Service \"{owner}\"); the Service is not applied"
    )]
    ClusterIpAllocated {
        /// Where the object is.
        origin: Origin,
        /// `namespace/name`.
        name: String,
        /// `spec.clusterIP` (the primary address) or `spec.clusterIPs[1]`
        /// (a Service has at most two).
        field: &'static str,
        /// The address.
        ip: IpAddr,
        /// The Service that has it.
        owner: String,
    },
    /// An allocator ran out (cluster IPs or node ports).
    #[error("{origin}: Service \"{name}\": {field}: cannot allocate: {what} is full; the Service is not applied")]
    RangeFull {
        /// Where the object is.
        origin: Origin,
        /// `namespace/name`.
        name: String,
        /// `spec.clusterIP` or `spec.ports[i].nodePort`.
        field: String,
        /// The range, e.g. `service CIDR 198.18.128.0/20`.
        what: String,
    },
    /// `ipFamilyPolicy: RequireDualStack` on a gateway with a service CIDR of
    /// one family only, for a Service whose `clusterIPs` do not already give
    /// the other family's address: svcgate cannot allocate it. The API
    /// server's check ("this cluster is not configured for dual-stack
    /// services"), with what to change in svcgate.toml.
    #[error(
        "{origin}: Service \"{name}\" is invalid: spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": \
         svcgate is not configured for dual-stack Services: service_cidr {service_cidr} has no {missing} range \
         (set service_cidr = [\"<IPv4 CIDR>\", \"<IPv6 CIDR>\"], or give both spec.clusterIPs, or use \
         PreferDualStack); the Service is not applied"
    )]
    DualStackNotConfigured {
        /// Where the object is.
        origin: Origin,
        /// `namespace/name`.
        name: String,
        /// The family svcgate has no range of.
        missing: IpFamily,
        /// svcgate's ranges.
        service_cidr: ServiceCidrs,
    },
    /// A Service asks for a family (`spec.ipFamilies[i]`) svcgate has no
    /// service CIDR of, without giving that family's clusterIP (the API
    /// server's "not configured on this cluster").
    #[error(
        "{origin}: Service \"{name}\" is invalid: spec.ipFamilies[{index}]: Invalid value: \"{family}\": not configured on this \
         gateway: service_cidr {service_cidr} has no {family} range to allocate from (add one: service_cidr = \
         [\"<IPv4 CIDR>\", \"<IPv6 CIDR>\"], or give the address in spec.clusterIPs); the Service is not applied"
    )]
    FamilyNotConfigured {
        /// Where the object is.
        origin: Origin,
        /// `namespace/name`.
        name: String,
        /// Its index in `spec.ipFamilies` (the families as settled: a
        /// family PreferDualStack or RequireDualStack adds is the second).
        index: usize,
        /// The family.
        family: IpFamily,
        /// svcgate's ranges.
        service_cidr: ServiceCidrs,
    },
    /// Two Service ports claim one frontend (address, protocol, port).
    #[error("{0}")]
    Frontend(#[from] svcgate_common::table::BuildWarning),
}

/// Something svcgate accepts and serves as it is, but a user may want to
/// know about: shown by `svcgate validate` (without failing it), in
/// `/status` and `svcgate status`, and logged when it first appears.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadWarning {
    /// An explicit clusterIP outside svcgate's `service_cidr` of its family
    /// (or of a family svcgate has no range of): in objects exported from a
    /// cluster, that cluster's API server allocated it from its own range, so
    /// it is served as given (clashes are still errors).
    #[error(
        "{origin}: Service \"{name}\": spec.clusterIP {ip} is outside svcgate's service_cidr {}; \
         served as given (the cluster's API server allocated it, not svcgate; set service_cidr to the \
         cluster's range to silence this)",
        shown_cidr(.service_cidr, .ip)
    )]
    ClusterIpOutsideServiceCidr {
        /// Where the object is.
        origin: Origin,
        /// `namespace/name`.
        name: String,
        /// The address.
        ip: IpAddr,
        /// svcgate's configured range of the address's family; `None` when
        /// svcgate has none of that family.
        service_cidr: Option<IpNet>,
    },
}

/// How a warning names svcgate's range of `ip`'s family.
fn shown_cidr(cidr: &Option<IpNet>, ip: &IpAddr) -> String {
    match cidr {
        Some(n) => n.to_string(),
        None => format!("(which has no {} range)", IpFamily::of(ip)),
    }
}

impl LoadError {
    /// A read error for `path`.
    pub fn read(path: &Path, e: std::io::Error) -> Self {
        Self::Read { path: path.display().to_string(), source: Arc::new(e) }
    }
}
