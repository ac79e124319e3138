//! The daemon's TOML config (`svcgate run --config FILE`).
//!
//! ```toml
//! manifests = "manifests"          # a directory, relative to this file; or:
//! # kube = true                    # watch the Kubernetes API instead
//! service_cidr = "198.18.128.0/20" # where Services without clusterIP get one
//! node_ips = ["198.18.0.2"]        # NodePorts open on these
//! admin_listen = "127.0.0.1:9901"  # /healthz /readyz /metrics /status
//! # service_proxy_name = "svcgate" # serve only Services labelled
//!                                  # service.kubernetes.io/service-proxy-name=svcgate
//!                                  # (unset: only Services without that label)
//! [dataplane]                      # opaque here; the dataplane parses it
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use svcgate_common::model::Ipv4Net;

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
    /// The service CIDR.
    pub service_cidr: Ipv4Net,
    /// Node IPs.
    pub node_ips: Vec<Ipv4Addr>,
    /// The admin endpoint's address.
    pub admin_listen: SocketAddr,
    /// Serve only the Services whose `service.kubernetes.io/service-proxy-name`
    /// label has this value (KEP-2447); `None`: only Services without that
    /// label, as kube-proxy.
    pub service_proxy_name: Option<String>,
    /// The `[dataplane]` table, untouched, for the dataplane to parse.
    pub dataplane: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    manifests: Option<PathBuf>,
    #[serde(default)]
    kube: bool,
    service_cidr: String,
    #[serde(default)]
    node_ips: Vec<String>,
    admin_listen: Option<String>,
    service_proxy_name: Option<String>,
    #[serde(default)]
    dataplane: toml::Table,
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
        let service_cidr: Ipv4Net = raw.service_cidr.parse().map_err(|_| {
            invalid("service_cidr", format!("{:?} is not an IPv4 CIDR like 198.18.128.0/20", raw.service_cidr))
        })?;
        let mut node_ips = Vec::new();
        for (i, s) in raw.node_ips.iter().enumerate() {
            node_ips.push(
                s.parse().map_err(|_| invalid(&format!("node_ips[{i}]"), format!("{s:?} is not an IPv4 address")))?,
            );
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
        Ok(Self {
            source,
            service_cidr: service_cidr.trunc(),
            node_ips,
            admin_listen,
            service_proxy_name: raw.service_proxy_name,
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
        assert_eq!(c.node_ips, vec![Ipv4Addr::new(198, 18, 1, 1)]);
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
