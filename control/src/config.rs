//! The daemon's TOML config (`svcgate run --config FILE`).
//!
//! ```toml
//! manifests = "manifests"          # a directory, relative to this file; or:
//! # kube = true                    # watch the Kubernetes API instead
//! service_cidr = "198.18.128.0/20" # where Services without clusterIP get one; dual-stack:
//!                                  # ["198.18.128.0/20", "2001:2:0:8000::/112"] (the first
//!                                  # is the primary family, of Services without ipFamilies)
//! node_ips = ["198.18.0.2"]        # NodePorts open on these (IPv4 and IPv6)
//! admin_listen = "127.0.0.1:9901"  # /healthz /readyz /metrics /status
//! # service_proxy_name = "svcgate" # serve only Services labelled
//!                                  # service.kubernetes.io/service-proxy-name=svcgate
//!                                  # (unset: only Services without that label)
//! [dns]                            # cluster DNS (off unless addresses or service)
//! zone = "cluster.local"           # the cluster domain (default cluster.local)
//! ttl = 5                          # seconds, 0-3600 (default 5, CoreDNS's)
//! addresses = ["198.18.128.10"]    # the addresses DNS answers on (port 53; IPv6 ones
//!                                  # by the control-path server only, see DnsSettings)
//! service = "kube-system/kube-dns" # ...and the clusterIP of this Service
//! [announce]                       # announce VIPs over BGP through BIRD 2 (absent: no announcement)
//! bird_socket = "/run/bird/bird.ctl"
//! routes_file = "/etc/bird/svcgate-routes.conf"  # written by svcgate, included by bird.conf
//! kinds = ["loadbalancer", "external"]           # and/or "cluster" (never NodePorts)
//! withdraw_without_endpoints = true              # withdraw a VIP no endpoint can serve
//! drain_seconds = 10                             # SIGTERM: withdraw, forward this long, stop
//! via = "svcgate0q0"                             # the routes depend on this device (gone with svcgate)
//! [dataplane]                      # opaque here; the dataplane parses it
//! ```
//!
//! `[announce]` is described in [`crate::announce`] and docs/FLEET.md.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::cidr::ServiceCidrs;

/// The default admin address: localhost only.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// Where objects come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// A manifests directory, watched.
    Manifests(PathBuf),
    /// The Kubernetes API (kubeconfig or in-cluster).
    Kube,
}

/// The parsed config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The object source.
    pub source: SourceConfig,
    /// The service CIDRs: one, or one per family (the first is primary).
    pub service_cidr: ServiceCidrs,
    /// Node IPs, of either family: NodePorts of a Service open on the node
    /// IPs of the families it serves.
    pub node_ips: Vec<IpAddr>,
    /// The admin endpoint's address.
    pub admin_listen: SocketAddr,
    /// Serve only the Services whose `service.kubernetes.io/service-proxy-name`
    /// label has this value (KEP-2447); `None`: only Services without that
    /// label, as kube-proxy.
    pub service_proxy_name: Option<String>,
    /// The `[dns]` table: cluster DNS (off by default).
    pub dns: DnsSettings,
    /// The `[announce]` table: BGP announcement through BIRD (`None`: off).
    pub announce: Option<crate::announce::AnnounceSettings>,
    /// The `[dataplane]` table, untouched, for the dataplane to parse.
    pub dataplane: toml::Table,
}

/// The default cluster domain.
pub const DEFAULT_DNS_ZONE: &str = "cluster.local";
/// The default TTL of DNS answers, in seconds (CoreDNS's).
pub const DEFAULT_DNS_TTL: u32 = 5;
/// The largest TTL accepted (CoreDNS's `kubernetes` plugin caps it there).
pub const MAX_DNS_TTL: u32 = 3600;

/// A Service named by `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The `[dns]` table: where and how svcgate answers cluster DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The cluster domain, lower-case, without a trailing dot.
    pub zone: String,
    /// TTL of every answer and of negative answers, in seconds.
    pub ttl: u32,
    /// The addresses DNS answers on (UDP and TCP port 53), of either family.
    /// The workers answer UDP queries in the frame only on the IPv4 ones (the
    /// in-frame hook parses IPv4 frames only; [`svcgate_dns::DnsTable::addresses`]
    /// keeps those); queries to an IPv6 address reach the kernel, and so the
    /// control-path server, which listens on every address here.
    pub addresses: Vec<IpAddr>,
    /// A Service whose clusterIP DNS also answers on (the manifests' own
    /// `kube-system/kube-dns`, the address Pods' resolv.conf names).
    pub service: Option<ServiceRef>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self { zone: DEFAULT_DNS_ZONE.into(), ttl: DEFAULT_DNS_TTL, addresses: Vec::new(), service: None }
    }
}

impl DnsSettings {
    /// DNS is served when there is an address to answer on.
    pub fn enabled(&self) -> bool {
        !self.addresses.is_empty() || self.service.is_some()
    }
}

/// A `[dns]` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsConfigError {
    /// `zone` is not a domain name.
    #[error("dns.zone: {zone:?} is not a domain name: {reason} (the default is \"cluster.local\")")]
    Zone {
        /// The value.
        zone: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `ttl` is out of range.
    #[error("dns.ttl: {ttl} is out of range: 0 to {MAX_DNS_TTL} seconds (the default is {DEFAULT_DNS_TTL})")]
    Ttl {
        /// The value.
        ttl: i64,
    },
    /// An entry of `addresses` is not an IP address.
    #[error("dns.addresses[{index}]: {value:?} is not an IP address (IPv4 or IPv6)")]
    Address {
        /// Its index.
        index: usize,
        /// The value.
        value: String,
    },
    /// `service` is not `namespace/name`.
    #[error(
        "dns.service: {value:?} is not \"namespace/name\" of a Service, like \"kube-system/kube-dns\" \
         (each part a DNS label: lower-case letters, digits and '-', at most 63)"
    )]
    Service {
        /// The value.
        value: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    zone: Option<String>,
    ttl: Option<i64>,
    #[serde(default)]
    addresses: Vec<String>,
    service: Option<String>,
}

impl RawDns {
    fn check(self) -> Result<DnsSettings, DnsConfigError> {
        let zone = match self.zone {
            None => DEFAULT_DNS_ZONE.to_string(),
            Some(z) => parse_zone(&z)?,
        };
        let ttl = match self.ttl {
            None => DEFAULT_DNS_TTL,
            Some(t) => u32::try_from(t).ok().filter(|t| *t <= MAX_DNS_TTL).ok_or(DnsConfigError::Ttl { ttl: t })?,
        };
        let mut addresses = Vec::new();
        for (index, value) in self.addresses.into_iter().enumerate() {
            match value.parse::<IpAddr>() {
                Ok(a) => addresses.push(a),
                Err(_) => return Err(DnsConfigError::Address { index, value }),
            }
        }
        let service = match self.service {
            None => None,
            Some(value) => match value.split_once('/') {
                Some((ns, name)) if dns_label(ns) && dns_label(name) => {
                    Some(ServiceRef { namespace: ns.to_string(), name: name.to_string() })
                }
                _ => return Err(DnsConfigError::Service { value }),
            },
        };
        Ok(DnsSettings { zone, ttl, addresses, service })
    }
}

/// A cluster domain as `dns.zone` (or `svcgate dns export --zone`) gives it:
/// lower-cased, without its trailing dot.
pub fn parse_zone(z: &str) -> Result<String, DnsConfigError> {
    use svcgate_dns::zone::{DomainName, NameError};
    let trimmed = z.strip_suffix('.').unwrap_or(z).to_ascii_lowercase();
    let reason = match DomainName::from_dotted(&trimmed) {
        _ if trimmed.is_empty() => Some("empty (the root is not a cluster domain)"),
        Ok(_) => None,
        Err(NameError::EmptyLabel) => Some("an empty label"),
        Err(NameError::LongLabel) => Some("a label over 63 bytes"),
        Err(NameError::LongName) => Some("over 255 bytes"),
        Err(NameError::BadByte) => Some("only letters, digits, '-' and '_' may make a label"),
    };
    match reason {
        Some(reason) => Err(DnsConfigError::Zone { zone: z.to_string(), reason }),
        None => Ok(trimmed),
    }
}

/// An RFC 1123 label, as Kubernetes names namespaces and Services.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    manifests: Option<PathBuf>,
    #[serde(default)]
    kube: bool,
    service_cidr: OneOrMore,
    #[serde(default)]
    node_ips: Vec<String>,
    admin_listen: Option<String>,
    service_proxy_name: Option<String>,
    #[serde(default)]
    dns: RawDns,
    announce: Option<crate::announce::RawAnnounce>,
    #[serde(default)]
    dataplane: toml::Table,
}

/// `service_cidr`: one CIDR (the form of svcgate before dual-stack, and
/// kube-apiserver's comma-separated `v4,v6` string), or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMore {
    One(String),
    More(Vec<String>),
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read the config: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Not valid TOML, or an unknown or mistyped key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message (with line and column).
        message: String,
    },
    /// A value is wrong.
    #[error("{path}: {field}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The key.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A `[dns]` value is wrong.
    #[error("{path}: {source}")]
    Dns {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        #[source]
        source: DnsConfigError,
    },
    /// An `[announce]` value is wrong.
    #[error("{path}: {source}")]
    Announce {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        #[source]
        source: crate::announce::AnnounceConfigError,
    },
}

impl Config {
    /// Reads and checks a config file; a relative `manifests` is taken
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), source: Arc::new(e) })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` names it and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let raw: Raw =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: p.clone(), message: e.to_string() })?;
        let invalid =
            |field: &str, reason: String| ConfigError::Invalid { path: p.clone(), field: field.into(), reason };
        let source = match (raw.manifests, raw.kube) {
            (Some(_), true) => {
                return Err(invalid("manifests", "set either `manifests` or `kube = true`, not both".into()))
            }
            (None, false) => {
                return Err(invalid("manifests", "missing: set `manifests = \"DIR\"` or `kube = true`".into()))
            }
            (None, true) => SourceConfig::Kube,
            (Some(dir), false) => {
                let base = path.parent().unwrap_or(Path::new("."));
                SourceConfig::Manifests(if dir.is_relative() { base.join(dir) } else { dir })
            }
        };
        let service_cidr = match &raw.service_cidr {
            OneOrMore::One(s) => s.parse::<ServiceCidrs>(),
            OneOrMore::More(list) => ServiceCidrs::from_list(list),
        }
        .map_err(|e| invalid("service_cidr", e.to_string()))?;
        let mut node_ips = Vec::new();
        for (i, s) in raw.node_ips.iter().enumerate() {
            node_ips.push(s.parse().map_err(|_| {
                invalid(&format!("node_ips[{i}]"), format!("{s:?} is not an IP address (IPv4 or IPv6)"))
            })?);
        }
        let admin = raw.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN);
        let admin_listen = admin
            .parse()
            .map_err(|_| invalid("admin_listen", format!("{admin:?} is not an address:port like {DEFAULT_ADMIN}")))?;
        if let Some(name) = &raw.service_proxy_name {
            if !valid_label_value(name) {
                return Err(invalid(
                    "service_proxy_name",
                    format!(
                        "{name:?} is not a label value: 1-63 characters of [A-Za-z0-9-_.], starting and ending \
                         with a letter or digit (leave the key out to serve the Services without the label)"
                    ),
                ));
            }
        }
        let dns = raw.dns.check().map_err(|source| ConfigError::Dns { path: p.clone(), source })?;
        let announce = match raw.announce {
            None => None,
            Some(a) => Some(
                a.check(path.parent().unwrap_or(Path::new(".")))
                    .map_err(|source| ConfigError::Announce { path: p.clone(), source })?,
            ),
        };
        Ok(Self {
            source,
            service_cidr,
            node_ips,
            admin_listen,
            service_proxy_name: raw.service_proxy_name,
            dns,
            announce,
            dataplane: raw.dataplane,
        })
    }
}

/// A Kubernetes label value that is not empty: at most 63 characters of
/// `[A-Za-z0-9-_.]`, beginning and ending with a letter or digit.
fn valid_label_value(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/svcgate.toml");
        let c = Config::load(&p).unwrap();
        assert!(matches!(&c.source, SourceConfig::Manifests(d) if d.ends_with("manifests")));
        assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN);
        assert_eq!(c.node_ips, vec![IpAddr::from([198, 18, 1, 1]), "2001:2:0:1::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("kube = true\nservice_cidr = \"x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().starts_with("c.toml: service_cidr:"), "{e}");
        let e = Config::parse("kube = true\nservice_cidr = \"198.18.0.0/16\"\nbogus = 1\n", Path::new("c.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::parse("service_cidr = \"198.18.0.0/16\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("manifests"), "{e}");
        let c = Config::parse(
            "kube = true\nservice_cidr = \"198.18.0.0/16\"\n[dataplane]\nqueues = 2\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.source, SourceConfig::Kube);
        assert_eq!(c.service_proxy_name, None);
        assert_eq!(c.dataplane.get("queues").and_then(|v| v.as_integer()), Some(2));
    }

    #[test]
    fn service_cidr_is_one_or_one_per_family() {
        let parse = |v: &str| Config::parse(&format!("kube = true\nservice_cidr = {v}\n"), Path::new("c.toml"));
        // The form of before dual-stack.
        let c = parse("\"198.18.128.0/20\"").unwrap();
        assert_eq!(c.service_cidr.to_string(), "198.18.128.0/20");
        assert!(!c.service_cidr.is_dual_stack());
        // A list, the primary first; or kube-apiserver's comma-separated form.
        for v in ["[\"2001:2:0:8000::/112\", \"198.18.128.0/20\"]", "\"2001:2:0:8000::/112,198.18.128.0/20\""] {
            let c = parse(v).unwrap();
            assert_eq!(c.service_cidr.primary_family(), svcgate_common::family::IpFamily::V6, "{v}");
            assert_eq!(c.service_cidr.to_string(), "2001:2:0:8000::/112,198.18.128.0/20");
        }
        for (v, why) in [
            ("[]", "no CIDR given"),
            ("[\"198.18.0.0/16\", \"198.19.0.0/16\"]", "are both IPv4"),
            ("[\"198.18.0.0/16\", \"2001:2::/64\", \"2001:2:1::/64\"]", "3 CIDRs given"),
            ("\"2001:2::/129\"", "is not a CIDR"),
        ] {
            let e = parse(v).unwrap_err().to_string();
            assert!(e.starts_with("c.toml: service_cidr: ") && e.contains(why), "{v}: {e}");
        }
        let c = Config::parse(
            "kube = true\nservice_cidr = \"198.18.0.0/16\"\nnode_ips = [\"198.18.0.2\", \"2001:2::2\"]\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.node_ips, vec![IpAddr::from([198, 18, 0, 2]), "2001:2::2".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn dns_defaults_to_off() {
        let c = Config::parse("kube = true\nservice_cidr = \"198.18.0.0/16\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(c.dns, DnsSettings::default());
        assert!(!c.dns.enabled());
        assert_eq!((c.dns.zone.as_str(), c.dns.ttl), ("cluster.local", 5));
    }

    #[test]
    fn dns_table_parses_and_checks() {
        let base = "kube = true\nservice_cidr = \"198.18.0.0/16\"\n[dns]\n";
        let c = Config::parse(
            &format!(
                "{base}zone = \"Example.Test.\"\nttl = 30\naddresses = [\"198.18.128.10\"]\n\
                 service = \"kube-system/kube-dns\"\n"
            ),
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(c.dns.enabled());
        assert_eq!(c.dns.zone, "example.test");
        assert_eq!(c.dns.ttl, 30);
        assert_eq!(c.dns.addresses, vec![IpAddr::from([198, 18, 128, 10])]);
        assert_eq!(c.dns.service.as_ref().map(ToString::to_string).as_deref(), Some("kube-system/kube-dns"));
        let err = |body: &str| match Config::parse(&format!("{base}{body}\n"), Path::new("c.toml")) {
            Err(ConfigError::Dns { source, .. }) => source,
            other => panic!("{body}: {other:?}"),
        };
        assert!(matches!(err("zone = \"a..b\""), DnsConfigError::Zone { reason: "an empty label", .. }));
        assert!(matches!(err("zone = \"\""), DnsConfigError::Zone { .. }));
        assert!(matches!(err("zone = \"a b\""), DnsConfigError::Zone { .. }));
        assert_eq!(err("ttl = -1"), DnsConfigError::Ttl { ttl: -1 });
        assert_eq!(err("ttl = 3601"), DnsConfigError::Ttl { ttl: 3601 });
        assert_eq!(
            err("addresses = [\"198.18.0.1\", \"2001:2::53\", \"x\"]"),
            DnsConfigError::Address { index: 2, value: "x".into() }
        );
        for bad in ["kube-dns", "kube-system/", "/kube-dns", "Kube-System/kube-dns", "a/b/c"] {
            assert_eq!(err(&format!("service = {bad:?}")), DnsConfigError::Service { value: bad.into() });
        }
        let e = Config::parse(&format!("{base}ttl = 9999\n"), Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().starts_with("c.toml: dns.ttl: 9999 is out of range"), "{e}");
        let e = Config::parse(&format!("{base}bogus = 1\n"), Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn announce_is_off_unless_configured() {
        let base = "kube = true\nservice_cidr = \"198.18.0.0/16\"\n";
        assert!(Config::parse(base, Path::new("/etc/svcgate/c.toml")).unwrap().announce.is_none());
        let c = Config::parse(
            &format!("{base}[announce]\nbird_socket = \"bird.ctl\"\nkinds = [\"cluster\"]\ndrain_seconds = 3\n"),
            Path::new("/etc/svcgate/c.toml"),
        )
        .unwrap();
        let a = c.announce.unwrap();
        assert_eq!(a.bird_socket, Path::new("/etc/svcgate/bird.ctl"));
        assert!(a.kinds.cluster && !a.kinds.loadbalancer);
        assert_eq!(a.drain, std::time::Duration::from_secs(3));
        let e = Config::parse(&format!("{base}[announce]\nkinds = [\"nodeport\"]\n"), Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().starts_with("c.toml: announce.kinds[0]: \"nodeport\""), "{e}");
        let e = Config::parse(&format!("{base}[announce]\nbgp = 1\n"), Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("bgp"), "{e}");
    }

    #[test]
    fn service_proxy_name_is_a_label_value() {
        let base = "kube = true\nservice_cidr = \"198.18.0.0/16\"\n";
        let c = Config::parse(&format!("{base}service_proxy_name = \"svcgate\"\n"), Path::new("c.toml")).unwrap();
        assert_eq!(c.service_proxy_name.as_deref(), Some("svcgate"));
        for bad in ["", "-x", "a b", &"x".repeat(64)] {
            let e = Config::parse(&format!("{base}service_proxy_name = {bad:?}\n"), Path::new("c.toml")).unwrap_err();
            assert!(e.to_string().starts_with("c.toml: service_proxy_name:"), "{e}");
        }
    }
}
