//! `kubectl get svc` / `kubectl get endpoints`-style tables.
//!
//! Rows are plain serialisable structs so the daemon's `/status` can carry them
//! and `svcgate status` prints them with the same code as `svcgate validate`;
//! so is [`SourceStatus`], the source's part of `/status`. The controller
//! imports from here, never the other way round.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use svcgate_common::model::{DesiredState, ServiceSpec, ServiceType};

/// One line of `kubectl get svc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRow {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer`.
    #[serde(rename = "type")]
    pub service_type: String,
    /// The cluster IP, or `None` for a headless Service.
    pub cluster_ip: String,
    /// LoadBalancer and external IPs, `<pending>` or `<none>`.
    pub external_ip: String,
    /// e.g. `8080:30120/TCP,53/UDP`.
    pub ports: String,
}

/// One line of `kubectl get endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsRow {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Ready `ip:port` endpoints (`[ip]:port` for IPv6), kubectl-style
    /// (three, then `+ N more...`).
    pub endpoints: String,
    /// Every ready `ip:port`.
    pub ready: Vec<String>,
    /// Endpoints known but not ready (not in kubectl's column).
    pub not_ready: Vec<String>,
}

/// The DNS names of one Service (`svcgate status` with `[dns]` on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRow {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `svc.ns.svc.<zone>` first, then a headless Service's per-endpoint names.
    pub names: Vec<String>,
    /// What the Service's name answers: its cluster IP, its ready endpoints
    /// (headless; `<none>`), or `CNAME target` (ExternalName).
    pub records: String,
}

/// The DNS table of `svcgate status`: one line per name, the Service's own
/// name with what it answers, its per-endpoint names below it.
pub fn dns_table(rows: &[DnsRow]) -> String {
    let mut body = Vec::new();
    for r in rows {
        for (i, n) in r.names.iter().enumerate() {
            let answers = if i == 0 { r.records.clone() } else { String::new() };
            body.push(vec![n.clone(), answers]);
        }
    }
    format_table(&["DNS NAME", "ANSWERS"], &body)
}

/// The `kubectl get svc` row of a Service.
pub fn service_row(s: &ServiceSpec) -> ServiceRow {
    // Both families' addresses, comma-separated, as `kubectl get svc -o wide`.
    let cluster_ip = if s.is_headless() {
        "None".to_string()
    } else {
        s.cluster_ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    };
    let mut ext: Vec<String> = Vec::new();
    if s.service_type == ServiceType::LoadBalancer {
        ext.extend(s.load_balancer_ips.iter().map(|ip| ip.to_string()));
    }
    ext.extend(s.external_ips.iter().map(|ip| ip.to_string()));
    let external_ip = if !ext.is_empty() {
        ext.join(",")
    } else if s.service_type == ServiceType::LoadBalancer {
        "<pending>".to_string()
    } else {
        "<none>".to_string()
    };
    let ports = if s.ports.is_empty() {
        "<none>".to_string()
    } else {
        s.ports
            .iter()
            .map(|p| match p.node_port {
                Some(np) => format!("{}:{}/{}", p.port, np, p.protocol),
                None => format!("{}/{}", p.port, p.protocol),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    ServiceRow {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        service_type: s.service_type.as_str().to_string(),
        cluster_ip,
        external_ip,
        ports,
    }
}

/// The `kubectl get endpoints` row of a Service.
pub fn endpoints_row(s: &ServiceSpec) -> EndpointsRow {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for p in &s.ports {
        for b in &p.backends {
            // `[2001:2::1]:80` for IPv6, as kubectl joins host and port.
            let e = std::net::SocketAddr::new(b.addr, b.port).to_string();
            let list = if b.conditions.ready { &mut ready } else { &mut not_ready };
            if !list.contains(&e) {
                list.push(e);
            }
        }
    }
    let endpoints = if ready.is_empty() {
        "<none>".to_string()
    } else if ready.len() > 3 {
        format!("{} + {} more...", ready[..3].join(","), ready.len() - 3)
    } else {
        ready.join(",")
    };
    EndpointsRow { namespace: s.namespace.clone(), name: s.name.clone(), endpoints, ready, not_ready }
}

/// Rows for every Service, sorted by namespace and name as kubectl sorts them.
pub fn rows(desired: &DesiredState) -> (Vec<ServiceRow>, Vec<EndpointsRow>) {
    let mut svcs: Vec<&ServiceSpec> = desired.services.iter().collect();
    svcs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    (svcs.iter().map(|s| service_row(s)).collect(), svcs.iter().map(|s| endpoints_row(s)).collect())
}

/// Left-aligned columns separated by three spaces, like kubectl's tabwriter.
pub fn format_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}   ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

fn with_namespace(all_default: bool, ns: &str, mut cells: Vec<String>) -> Vec<String> {
    if !all_default {
        cells.insert(0, ns.to_string());
    }
    cells
}

/// The `kubectl get svc` table (with a NAMESPACE column when not all are in `default`).
pub fn services_table(rows: &[ServiceRow]) -> String {
    let all_default = rows.iter().all(|r| r.namespace == "default");
    let mut header = vec!["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"];
    if !all_default {
        header.insert(0, "NAMESPACE");
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            with_namespace(
                all_default,
                &r.namespace,
                vec![
                    r.name.clone(),
                    r.service_type.clone(),
                    r.cluster_ip.clone(),
                    r.external_ip.clone(),
                    r.ports.clone(),
                ],
            )
        })
        .collect();
    format_table(&header, &body)
}

/// The `kubectl get endpoints` table.
pub fn endpoints_table(rows: &[EndpointsRow]) -> String {
    let all_default = rows.iter().all(|r| r.namespace == "default");
    let mut header = vec!["NAME", "ENDPOINTS"];
    if !all_default {
        header.insert(0, "NAMESPACE");
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| with_namespace(all_default, &r.namespace, vec![r.name.clone(), r.endpoints.clone()]))
        .collect();
    format_table(&header, &body)
}

/// Errors a source met while fetching objects (the kube source's watch and
/// list errors, HTTP 410 Gone included), each retried with backoff while the
/// last good tables keep serving. Not the objects' own errors
/// ([`crate::controller::ControlStatus::errors`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Errors since the start.
    pub errors_total: u64,
    /// The last one, naming the kind (`Services` or `EndpointSlices`).
    pub last_error: Option<String>,
    /// Unix time of the last one, in milliseconds (0: none).
    pub last_error_unix_ms: u64,
    /// The kinds (`Services`, `EndpointSlices`) whose last watch or list
    /// ended in an error and that have received nothing since: the source
    /// retries them with backoff, and the tables served may be stale.
    pub retrying: Vec<String>,
}

/// The lines `svcgate status` prints about the source's own errors (watch and
/// list errors, retried with backoff); none when it met none.
pub fn source_lines(s: &SourceStatus, now_unix_ms: u64) -> Vec<String> {
    let Some(last) = &s.last_error else {
        return Vec::new();
    };
    let ago = now_unix_ms.saturating_sub(s.last_error_unix_ms) as f64 / 1000.0;
    let state = if s.retrying.is_empty() {
        "recovered".to_string()
    } else {
        format!("retrying {} with backoff; the last good tables keep serving", s.retrying.join(" and "))
    };
    vec![format!("source: {} watch/list error(s), {state}; last {ago:.1}s ago: {last}", s.errors_total)]
}

/// Every Maglev table of `table`, one line per Service port and family:
/// `<family> <ns>/<name> <port>/<proto> frontends=<addr:port kind,...>
/// backends=<n> slots=<m> fnv64=<digest>`, the digest taken over each slot's
/// backend `address:port` (not its index), in slot order; with `slots`, the
/// slots themselves on the following lines. Two gateways with the same
/// desired state must print the same bytes (`svcgate debug maglev`;
/// control/tests/agreement.rs runs it in separate processes).
pub fn maglev_dump(table: &svcgate_common::table::ServiceTable, slots: bool) -> String {
    use svcgate_common::family::Addr;
    use svcgate_common::table::FamilyTable;
    fn fnv(h: &mut u64, bytes: &[u8]) {
        for b in bytes {
            *h ^= u64::from(*b);
            *h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn half<A: Addr + std::fmt::Display>(out: &mut String, fam: &str, t: &FamilyTable<A>, slots: bool) {
        let mut lines: Vec<(String, String)> = Vec::new();
        for (i, e) in t.entries().iter().enumerate() {
            let mut fronts: Vec<String> = t
                .frontends()
                .filter(|(_, f)| f.entry as usize == i)
                .map(|(k, f)| format!("{}:{}:{:?}", k.addr, k.port, f.kind))
                .collect();
            fronts.sort();
            let names: Vec<String> = e
                .maglev
                .slots()
                .iter()
                .map(|&b| match e.backends.get(usize::from(b)) {
                    Some(be) => format!("{}:{}", be.addr, be.port),
                    None => format!("?{b}"),
                })
                .collect();
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            for n in &names {
                fnv(&mut h, n.as_bytes());
                fnv(&mut h, b"\n");
            }
            let mut l = format!(
                "{fam} {}/{} {}/{} frontends={} backends={} slots={} fnv64={h:016x}\n",
                e.id.namespace,
                e.id.name,
                e.id.port,
                e.id.protocol.as_str(),
                fronts.join(","),
                e.backends.len(),
                names.len()
            );
            if slots {
                for chunk in names.chunks(8) {
                    let _ = writeln!(l, "  {}", chunk.join(" "));
                }
            }
            let key = format!("{}/{} {}/{}", e.id.namespace, e.id.name, e.id.port, e.id.protocol.as_str());
            lines.push((key, l));
        }
        // Entry order is the build's; the dump's order is by name.
        lines.sort();
        for (_, l) in lines {
            out.push_str(&l);
        }
    }
    let mut out = String::new();
    half(&mut out, "ipv4", table.v4(), slots);
    half(&mut out, "ipv6", table.v6(), slots);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_errors_are_shown_with_their_state() {
        assert!(source_lines(&SourceStatus::default(), 5_000).is_empty());
        let mut s = SourceStatus {
            errors_total: 3,
            last_error: Some("kube source: Services watch error: 410 Gone".into()),
            last_error_unix_ms: 1_000,
            retrying: vec!["Services".into()],
        };
        assert_eq!(
            source_lines(&s, 3_500),
            vec![
                "source: 3 watch/list error(s), retrying Services with backoff; the last good tables keep serving; \
                 last 2.5s ago: kube source: Services watch error: 410 Gone"
            ]
        );
        s.retrying.clear();
        assert!(source_lines(&s, 3_500)[0].starts_with("source: 3 watch/list error(s), recovered; last 2.5s ago"));
    }

    #[test]
    fn table_pads_like_kubectl() {
        let t = format_table(&["NAME", "TYPE"], &[vec!["nginx-headless".into(), "ClusterIP".into()]]);
        assert_eq!(t, "NAME             TYPE\nnginx-headless   ClusterIP\n");
    }
}
