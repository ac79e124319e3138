//! Names (cluster DNS): the [`DnsView`] of the `svcgate-dns` crate, computed
//! from the same resolution the [`ServiceTable`](svcgate_common::table::ServiceTable)
//! comes from.
//!
//! What goes in:
//! - every Service svcgate serves ([`DesiredState::services`]): with a
//!   cluster IP, its name resolves to it; headless (`clusterIP: None`), to
//!   its endpoints ([`Resolved::endpoint_names`]: EndpointSlice
//!   `endpoints[].hostname`, Endpoints `addresses[].hostname`, or for Pods
//!   the manifests mode selects itself, Pod `spec.hostname` when
//!   `spec.subdomain` is the Service's name, as the EndpointSlice controller
//!   writes it), with the endpoint's port for each named Service port (SRV);
//! - the `ExternalName` Services ([`Resolved::external_name_targets`]), each
//!   a CNAME to its `spec.externalName` (one without it is left out);
//! - `publishNotReadyAddresses` is already folded into each endpoint's
//!   `ready`, as resolution folds it into the backends' conditions (the
//!   view's flag stays false).
//!
//! Both families, as the Kubernetes DNS specification asks of a dual-stack
//! cluster: a Service's name has an A record per IPv4 cluster IP and an AAAA
//! per IPv6 one (NODATA for the type of a family it lacks), a headless
//! Service's names the A/AAAA of its endpoints of its families, and every
//! such address a PTR (`in-addr.arpa`, or nibbles under `ip6.arpa`). The
//! records themselves are the `svcgate-dns` crate's ([`svcgate_dns::zone`]).
//!
//! Not named: Services left to another proxy by their
//! `service.kubernetes.io/service-proxy-name` label (svcgate does not resolve
//! them: no cluster IP to give), Services rejected as invalid.
//!
//! # When the table is built
//!
//! [`DnsTable::build`] encodes every answer (the dns crate's author measured
//! about a second at 10k Services), so the controller
//! ([`crate::controller`]) builds it only when DNS is configured and only
//! when the [`DnsView`] (or the addresses it answers on) changed:
//! - after every full resolution, once the ServiceTable is published (the
//!   dataplane's table never waits for the DNS one);
//! - on the EndpointSlice fast path, only when a changed slice belongs to a
//!   headless Service: the records of Services with a cluster IP do not
//!   depend on their endpoints (their SRV records name the Service), so the
//!   common case, a Deployment's Pods moving behind a ClusterIP, never pays
//!   for a DNS build.
//!
//! Comparing views costs a walk over the Services, far less than a build, and
//! skips the builds after changes DNS does not see (a nodePort, a source
//! range, the backends of a ClusterIP Service).

use std::net::IpAddr;

use svcgate_common::model::DesiredState;
use svcgate_dns::{DnsConfig, DnsEndpoint, DnsPort, DnsService, DnsServiceKind, DnsTable, DnsView};

use crate::config::DnsSettings;
use crate::display::DnsRow;
use crate::resolve::{ExternalNameSpec, NamedEndpoint, Resolved};

/// The DNS view of a resolution.
pub fn view_of(resolved: &Resolved) -> DnsView {
    dns_view(&resolved.desired, &resolved.endpoint_names, &resolved.external_name_targets)
}

/// The DNS view of a desired state: `endpoint_names` has the same index as
/// `desired.services` (missing entries count as no endpoints).
pub fn dns_view(
    desired: &DesiredState,
    endpoint_names: &[Vec<NamedEndpoint>],
    external: &[ExternalNameSpec],
) -> DnsView {
    let mut services = Vec::with_capacity(desired.services.len() + external.len());
    for (i, svc) in desired.services.iter().enumerate() {
        let ports = svc.ports.iter().map(|p| DnsPort { name: p.name.clone(), protocol: p.protocol, port: p.port });
        let (kind, endpoints) = match svc.is_headless() {
            false => (DnsServiceKind::ClusterIp(svc.cluster_ips.clone()), Vec::new()),
            true => {
                let endpoints = endpoint_names
                    .get(i)
                    .into_iter()
                    .flatten()
                    .map(|e| DnsEndpoint {
                        addr: e.addr,
                        hostname: e.hostname.clone(),
                        ready: e.ready,
                        // The endpoint's port of each named Service port.
                        ports: svc
                            .ports
                            .iter()
                            .filter(|p| !p.name.is_empty())
                            .filter_map(|p| {
                                let b = p.backends.iter().find(|b| b.addr == e.addr)?;
                                Some((p.name.clone(), b.port))
                            })
                            .collect(),
                    })
                    .collect();
                (DnsServiceKind::Headless, endpoints)
            }
        };
        services.push(DnsService {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            kind,
            ports: ports.collect(),
            publish_not_ready_addresses: false,
            endpoints,
        });
    }
    for x in external.iter().filter(|x| !x.target.is_empty()) {
        services.push(DnsService::external_name(&x.namespace, &x.name, &x.target));
    }
    DnsView { services }
}

/// The addresses DNS answers on: the configured ones, then the cluster IPs
/// of the configured Service (both of a dual-stack kube-dns, as Pods of
/// either family name it in resolv.conf). `Err` names a configured Service
/// that has no cluster IP in `desired` (missing, rejected, headless), with
/// the addresses found anyway.
///
/// The workers answer in the frame on the IPv4 ones only (the in-frame hook
/// parses IPv4; [`DnsTable::addresses`] keeps those); the control-path server
/// answers on all of them.
pub fn dns_addresses(settings: &DnsSettings, desired: &DesiredState) -> Result<Vec<IpAddr>, (Vec<IpAddr>, String)> {
    let mut out = settings.addresses.clone();
    let Some(want) = &settings.service else {
        return Ok(out);
    };
    let found = desired.services.iter().find(|s| s.namespace == want.namespace && s.name == want.name);
    match found.filter(|s| !s.is_headless()) {
        Some(s) => {
            for ip in &s.cluster_ips {
                if !out.contains(ip) {
                    out.push(*ip);
                }
            }
            Ok(out)
        }
        None => {
            let why = match found {
                Some(_) => "is headless (no clusterIP)",
                None => "is not among the Services served",
            };
            let shown = if out.is_empty() {
                "DNS answers on no address".to_string()
            } else {
                format!("DNS answers on dns.addresses only ({})", join(&out))
            };
            Err((out, format!("dns.service: Service \"{want}\" {why}: {shown}")))
        }
    }
}

fn join(addrs: &[IpAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The `svcgate-dns` config of these settings answering on `addresses`.
pub fn dns_config(settings: &DnsSettings, addresses: &[IpAddr], serial: u32) -> DnsConfig {
    DnsConfig {
        zone: settings.zone.clone(),
        ttl: settings.ttl,
        serial,
        nameservers: addresses.to_vec(),
        ..DnsConfig::default()
    }
}

/// Builds the answer table (logging the records left out).
pub fn build_table(view: &DnsView, config: &DnsConfig) -> DnsTable {
    let table = DnsTable::build(view, config);
    for s in table.skipped() {
        tracing::warn!("dns: left out: {s}");
    }
    table
}

/// The names of each Service, sorted by namespace and name, for `svcgate
/// status`: `svc.ns.svc.<zone>`, and for a headless Service the name of each
/// endpoint that has records (`host.svc.ns.svc.<zone>`).
pub fn dns_rows(view: &DnsView, zone: &str) -> Vec<DnsRow> {
    let mut rows: Vec<DnsRow> = view
        .services
        .iter()
        .map(|s| {
            let name = format!("{}.{}.svc.{zone}", s.name, s.namespace);
            let (records, mut names) = match &s.kind {
                DnsServiceKind::ClusterIp(ips) => (join_ips(ips), Vec::new()),
                DnsServiceKind::ExternalName(target) => (format!("CNAME {target}"), Vec::new()),
                DnsServiceKind::Headless => {
                    let live: Vec<&DnsEndpoint> =
                        s.endpoints.iter().filter(|e| e.ready || s.publish_not_ready_addresses).collect();
                    let ips: Vec<IpAddr> = live.iter().map(|e| e.addr).collect();
                    let names = live
                        .iter()
                        .map(|e| {
                            let host = e.hostname.clone().unwrap_or_else(|| svcgate_dns::zone::dashed(e.addr));
                            format!("{host}.{name}")
                        })
                        .collect();
                    (if ips.is_empty() { "<none>".to_string() } else { join_ips(&ips) }, names)
                }
            };
            names.insert(0, name);
            DnsRow { namespace: s.namespace.clone(), name: s.name.clone(), names, records }
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use std::net::Ipv4Addr;

    use svcgate_dns::zone::{rtype, DomainName, Rdata};
    use svcgate_dns::{respond_in_place, Outcome, Zone};

    use super::*;
    use crate::manifest::parse_str;
    use crate::resolve::{resolve, Allocations, ResolveConfig};

    /// A StatefulSet's shape: a headless Service and Pods with hostname and
    /// subdomain, plus what else names endpoints.
    const MANIFESTS: &str = "
apiVersion: v1
kind: Service
metadata: {name: nginx-headless}
spec:
  clusterIP: None
  selector: {app: nginx}
  ports: [{name: web, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: 198.18.128.20
  selector: {app: nginx}
  ports: [{name: service0, port: 8080, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: prod}
spec:
  type: ExternalName
  externalName: db.example.test
---
apiVersion: v1
kind: Pod
metadata: {name: nginx-0, labels: {app: nginx}}
spec: {hostname: nginx-0, subdomain: nginx-headless, containers: [{name: c, image: nginx}]}
status: {phase: Running, podIP: 198.18.3.10, conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: nginx-1, labels: {app: nginx}}
spec: {hostname: nginx-1, subdomain: nginx-headless, containers: [{name: c, image: nginx}]}
status: {phase: Running, podIP: 198.18.3.11, conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: nginx}}
spec: {hostname: other, subdomain: another-service, containers: [{name: c, image: nginx}]}
status: {phase: Running, podIP: 198.18.3.12, conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: starting, labels: {app: nginx}}
spec: {hostname: starting, subdomain: nginx-headless, containers: [{name: c, image: nginx}]}
status: {phase: Pending, podIP: 198.18.3.13}
";

    fn resolved(text: &str) -> Resolved {
        let parsed = parse_str(Path::new("t.yaml"), text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let cfg = ResolveConfig::new("198.18.128.0/20".parse().unwrap(), Vec::<IpAddr>::new());
        let r = resolve(&parsed.objects, &cfg, &Default::default(), &Allocations::default());
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        r
    }

    fn name(s: &str) -> DomainName {
        DomainName::from_dotted(s).unwrap()
    }

    fn a_records(zone: &Zone, n: &str) -> Vec<Ipv4Addr> {
        let Some(set) = zone.get(&name(n), rtype::A) else {
            return Vec::new();
        };
        set.data.iter().filter_map(|d| if let Rdata::A(a) = d { Some(*a) } else { None }).collect()
    }

    #[test]
    fn statefulset_pods_get_their_own_names() {
        let r = resolved(MANIFESTS);
        let view = view_of(&r);
        let zone = Zone::build(&view, &DnsConfig::default());
        let ip = |d: u8| Ipv4Addr::new(198, 18, 3, d);
        assert_eq!(a_records(&zone, "nginx-0.nginx-headless.default.svc.cluster.local"), vec![ip(10)]);
        assert_eq!(a_records(&zone, "nginx-1.nginx-headless.default.svc.cluster.local"), vec![ip(11)]);
        // The Service's name: every ready endpoint (not the Pending one).
        assert_eq!(a_records(&zone, "nginx-headless.default.svc.cluster.local"), vec![ip(10), ip(11), ip(12)]);
        // A hostname counts only under the Service its subdomain names: that
        // Pod gets the dashed name instead.
        assert!(a_records(&zone, "other.nginx-headless.default.svc.cluster.local").is_empty());
        assert_eq!(a_records(&zone, "198-18-3-12.nginx-headless.default.svc.cluster.local"), vec![ip(12)]);
        assert!(a_records(&zone, "starting.nginx-headless.default.svc.cluster.local").is_empty());
        // SRV per endpoint for the named port, targetPort 80 (the Service port).
        let srv = zone.get(&name("_web._tcp.nginx-headless.default.svc.cluster.local"), rtype::SRV).unwrap();
        assert_eq!(srv.data.len(), 3);
        assert!(srv.data.iter().any(|d| matches!(d, Rdata::Srv { port: 80, target, .. }
            if *target == name("nginx-0.nginx-headless.default.svc.cluster.local"))));
        // The ClusterIP Service and the ExternalName one.
        assert_eq!(a_records(&zone, "nginx.default.svc.cluster.local"), vec![Ipv4Addr::new(198, 18, 128, 20)]);
        let cname = zone.get(&name("db.prod.svc.cluster.local"), rtype::CNAME).unwrap();
        assert_eq!(cname.data.iter().next(), Some(&Rdata::Cname(name("db.example.test"))));
    }

    #[test]
    fn the_table_answers_a_per_pod_query() {
        let r = resolved(MANIFESTS);
        let table = DnsTable::build(&view_of(&r), &DnsConfig::default());
        let mut q = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec();
        for label in ["nginx-1", "nginx-headless", "default", "svc", "cluster", "local"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(b"\x00\x00\x01\x00\x01");
        let mut buf = [0u8; 512];
        buf[..q.len()].copy_from_slice(&q);
        let Outcome::Answered { len } = respond_in_place(&table, &mut buf, q.len(), 512) else {
            panic!("not answered")
        };
        assert_eq!(&buf[2..4], b"\x85\x00", "NOERROR, authoritative");
        assert_eq!(&buf[6..8], b"\x00\x01", "one answer");
        assert_eq!(&buf[len - 4..len], &[198, 18, 3, 11]);
    }

    #[test]
    fn slices_and_endpoints_carry_hostnames_and_readiness() {
        let r = resolved(
            "
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: None, publishNotReadyAddresses: true, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [198.18.3.20], hostname: web-0, conditions: {ready: true}}
- {addresses: [198.18.3.21], hostname: web-1, conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: db}
subsets:
- addresses: [{ip: 198.18.3.30, hostname: db-0}]
  notReadyAddresses: [{ip: 198.18.3.31, hostname: db-1}]
  ports: [{name: pg, port: 5432}]
",
        );
        let web = r.desired.services.iter().position(|s| s.name == "web").unwrap();
        let names: Vec<(&str, bool)> =
            r.endpoint_names[web].iter().map(|e| (e.hostname.as_deref().unwrap(), e.ready)).collect();
        // publishNotReadyAddresses: the not-ready endpoint is published.
        assert_eq!(names, vec![("web-0", true), ("web-1", true)]);
        let db = r.desired.services.iter().position(|s| s.name == "db").unwrap();
        let names: Vec<(&str, bool)> =
            r.endpoint_names[db].iter().map(|e| (e.hostname.as_deref().unwrap(), e.ready)).collect();
        assert_eq!(names, vec![("db-0", true), ("db-1", false)]);

        let view = view_of(&r);
        let zone = Zone::build(&view, &DnsConfig::default());
        assert_eq!(a_records(&zone, "web-1.web.default.svc.cluster.local"), vec![Ipv4Addr::new(198, 18, 3, 21)]);
        assert_eq!(a_records(&zone, "db.default.svc.cluster.local"), vec![Ipv4Addr::new(198, 18, 3, 30)]);
        // SRV of a headless Service carries the endpoint's port.
        let srv = zone.get(&name("_http._tcp.web.default.svc.cluster.local"), rtype::SRV).unwrap();
        assert!(srv.data.iter().all(|d| matches!(d, Rdata::Srv { port: 8080, .. })));
    }

    /// The dual-stack fixture of the integration tests, on a dual-stack gateway.
    fn dual_stack() -> Resolved {
        let text = include_str!("../tests/fixtures/dual-stack/services.yaml");
        let parsed = parse_str(Path::new("services.yaml"), text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let cfg = ResolveConfig::new("198.18.128.0/20,2001:2:0:8000::/112".parse().unwrap(), Vec::<IpAddr>::new());
        let r = resolve(&parsed.objects, &cfg, &Default::default(), &Allocations::default());
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        r
    }

    fn aaaa_records(zone: &Zone, n: &str) -> Vec<std::net::Ipv6Addr> {
        let Some(set) = zone.get(&name(n), rtype::AAAA) else {
            return Vec::new();
        };
        set.data.iter().filter_map(|d| if let Rdata::Aaaa(a) = d { Some(*a) } else { None }).collect()
    }

    fn ptr(zone: &Zone, addr: &str) -> Vec<String> {
        let rev = svcgate_dns::zone::reverse_name(addr.parse().unwrap());
        let Some(set) = zone.get(&rev, rtype::PTR) else {
            return Vec::new();
        };
        set.data.iter().filter_map(|d| if let Rdata::Ptr(n) = d { Some(n.to_string()) } else { None }).collect()
    }

    /// Asks `table` for `qname` of `qtype`: (RCODE, ANCOUNT, the message).
    fn ask(table: &DnsTable, qname: &str, qtype: u16) -> (u8, u16, Vec<u8>) {
        let mut q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec();
        for label in qname.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        let mut buf = [0u8; 1232];
        buf[..q.len()].copy_from_slice(&q);
        let Outcome::Answered { len } = respond_in_place(table, &mut buf, q.len(), 1232) else {
            panic!("{qname} {qtype}: not answered in the table")
        };
        (buf[3] & 0xf, u16::from_be_bytes([buf[6], buf[7]]), buf[..len].to_vec())
    }

    #[test]
    fn dual_stack_services_answer_a_and_aaaa() {
        let r = dual_stack();
        let zone = Zone::build(&view_of(&r), &DnsConfig::default());
        let svc = |n: &str| r.desired.services.iter().find(|s| s.name == n).unwrap();

        // Both families: an A and an AAAA record.
        let web = svc("web");
        let (IpAddr::V4(w4), IpAddr::V6(w6)) = (web.cluster_ips[0], web.cluster_ips[1]) else { panic!() };
        assert_eq!(a_records(&zone, "web.default.svc.cluster.local"), vec![w4]);
        assert_eq!(aaaa_records(&zone, "web.default.svc.cluster.local"), vec![w6]);
        // IPv6 only: AAAA, and no A record at a name that exists (NODATA).
        let IpAddr::V6(x6) = svc("web6").cluster_ips[0] else { panic!() };
        assert_eq!(aaaa_records(&zone, "web6.default.svc.cluster.local"), vec![x6]);
        assert!(a_records(&zone, "web6.default.svc.cluster.local").is_empty());
        // Reverse: nibbles under ip6.arpa for an IPv6 clusterIP.
        assert_eq!(ptr(&zone, "2001:2:0:8000::20"), ["api.prod.svc.cluster.local."]);
        assert_eq!(ptr(&zone, "198.18.128.20"), ["api.prod.svc.cluster.local."]);

        // Headless with endpoints of both families: A and AAAA per ready
        // endpoint, each endpoint's own name (the dashed IPv6 address when it
        // has no hostname) and its PTR.
        assert_eq!(a_records(&zone, "db.default.svc.cluster.local"), vec![Ipv4Addr::new(198, 18, 4, 30)]);
        let six = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
        assert_eq!(aaaa_records(&zone, "db.default.svc.cluster.local"), vec![six("2001:2::4:30"), six("2001:2::4:31")]);
        assert_eq!(a_records(&zone, "db-0.db.default.svc.cluster.local"), vec![Ipv4Addr::new(198, 18, 4, 30)]);
        assert_eq!(aaaa_records(&zone, "db-0.db.default.svc.cluster.local"), vec![six("2001:2::4:30")]);
        assert_eq!(aaaa_records(&zone, "2001-2--4-31.db.default.svc.cluster.local"), vec![six("2001:2::4:31")]);
        assert_eq!(ptr(&zone, "2001:2::4:31"), ["2001-2--4-31.db.default.svc.cluster.local."]);
        assert_eq!(ptr(&zone, "2001:2::4:30"), ["db-0.db.default.svc.cluster.local."]);
        // SRV targets are names, whatever the family.
        let srv = zone.get(&name("_pg._tcp.db.default.svc.cluster.local"), rtype::SRV).unwrap();
        let mut targets: Vec<String> = srv
            .data
            .iter()
            .filter_map(|d| if let Rdata::Srv { port: 5432, target, .. } = d { Some(target.to_string()) } else { None })
            .collect();
        targets.sort();
        assert_eq!(targets, ["2001-2--4-31.db.default.svc.cluster.local.", "db-0.db.default.svc.cluster.local."]);
    }

    #[test]
    fn the_table_answers_aaaa_and_nodata_for_the_missing_family() {
        let r = dual_stack();
        let table = DnsTable::build(&view_of(&r), &DnsConfig::default());
        let (rcode, n, msg) = ask(&table, "web6.default.svc.cluster.local", rtype::AAAA);
        assert_eq!((rcode, n), (0, 1));
        let IpAddr::V6(x6) = r.desired.services.iter().find(|s| s.name == "web6").unwrap().cluster_ips[0] else {
            panic!()
        };
        assert_eq!(&msg[msg.len() - 16..], &x6.octets());
        // NODATA: NOERROR with no answer, not NXDOMAIN.
        let (rcode, n, _) = ask(&table, "web6.default.svc.cluster.local", rtype::A);
        assert_eq!((rcode, n), (0, 0));
        let (rcode, n, _) = ask(&table, "web.default.svc.cluster.local", rtype::AAAA);
        assert_eq!((rcode, n), (0, 1));
        // PTR of an IPv6 endpoint, in the table.
        let rev = svcgate_dns::zone::reverse_name("2001:2::4:31".parse().unwrap()).to_string();
        let (rcode, n, _) = ask(&table, rev.trim_end_matches('.'), rtype::PTR);
        assert_eq!((rcode, n), (0, 1));
    }

    #[test]
    fn a_dual_stack_dns_service_gives_both_addresses() {
        let r = dual_stack();
        let settings = DnsSettings {
            service: Some(crate::config::ServiceRef { namespace: "prod".into(), name: "api".into() }),
            addresses: vec!["2001:2::53".parse().unwrap()],
            ..DnsSettings::default()
        };
        let addrs = dns_addresses(&settings, &r.desired).unwrap();
        let want: Vec<IpAddr> = ["2001:2::53", "2001:2:0:8000::20", "198.18.128.20"].map(|s| s.parse().unwrap()).into();
        assert_eq!(addrs, want);
        // The in-frame hook answers on the IPv4 ones only; the control-path
        // server listens on all of them.
        let table = DnsTable::build(&view_of(&r), &dns_config(&settings, &addrs, 1));
        assert_eq!(table.addresses(), [Ipv4Addr::new(198, 18, 128, 20)]);
    }

    #[test]
    fn rows_and_addresses() {
        let r = resolved(MANIFESTS);
        let view = view_of(&r);
        let rows = dns_rows(&view, "cluster.local");
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["nginx", "nginx-headless", "db"]);
        assert_eq!(
            rows[1].names[..3],
            [
                "nginx-headless.default.svc.cluster.local",
                "nginx-0.nginx-headless.default.svc.cluster.local",
                "nginx-1.nginx-headless.default.svc.cluster.local",
            ]
        );
        assert_eq!(rows[2].records, "CNAME db.example.test");

        let mut settings = DnsSettings {
            service: Some(crate::config::ServiceRef { namespace: "default".into(), name: "nginx".into() }),
            ..DnsSettings::default()
        };
        assert_eq!(dns_addresses(&settings, &r.desired), Ok(vec![IpAddr::from([198, 18, 128, 20])]));
        settings.service.as_mut().unwrap().name = "nginx-headless".into();
        settings.addresses = vec![IpAddr::from([198, 18, 128, 53])];
        let (addrs, why) = dns_addresses(&settings, &r.desired).unwrap_err();
        assert_eq!(addrs, vec![IpAddr::from([198, 18, 128, 53])]);
        assert!(why.contains("\"default/nginx-headless\" is headless"), "{why}");
    }
}
