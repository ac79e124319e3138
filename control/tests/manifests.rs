//! The manifest source on real files: the documentation's examples byte for
//! byte, the bundled example, and garbage.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use svcgate_common::model::{ForwardingMode, Protocol, ServiceSpec, ServiceType};
use svcgate_control::error::LoadError;
use svcgate_control::load::{load_paths, LoadReport};
use svcgate_control::manifest::parse_str;
use svcgate_control::resolve::ResolveConfig;

fn docs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docs").join(name)
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests")
}

fn docs_cfg() -> ResolveConfig {
    // The documentation's cluster uses 10.247.0.0/16 for Services. Loaded
    // only; nothing is ever sent to these addresses.
    ResolveConfig::new("10.247.0.0/16".parse().unwrap(), Vec::<std::net::IpAddr>::new())
}

fn lab_cfg() -> ResolveConfig {
    ResolveConfig::new("198.18.128.0/20".parse().unwrap(), vec![Ipv4Addr::new(198, 18, 0, 2)])
}

fn load(paths: &[PathBuf], cfg: &ResolveConfig) -> LoadReport {
    load_paths(paths, cfg)
}

fn svc<'a>(r: &'a LoadReport, name: &str) -> &'a ServiceSpec {
    r.resolved.desired.services.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no Service {name}"))
}

#[test]
fn docs_fixtures_are_byte_exact() {
    let lb = std::fs::read_to_string(docs("loadbalancer.yaml")).unwrap();
    assert!(lb.starts_with("apiVersion: v1 \nkind: Service \nmetadata: \n  annotations:   \n"));
    assert!(lb.contains("  loadBalancerIP: 10.78.42.242     #  ELB实例的IP地址\n"));
    assert!(lb.ends_with("  type: LoadBalancer    # 类型为LoadBalancer \n"));
    let dep = std::fs::read_to_string(docs("deployment.yaml")).unwrap();
    assert!(dep.starts_with("apiVersion: apps/v1      \nkind: Deployment         \n"));
    let svc = std::fs::read_to_string(docs("nginx-svc.yaml")).unwrap();
    assert!(svc.contains("  name: nginx        # Service的名称\n"));
}

#[test]
fn docs_clusterip_alone() {
    let r = load(&[docs("nginx-svc.yaml")], &docs_cfg());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let s = svc(&r, "nginx");
    assert_eq!(s.namespace, "default");
    assert_eq!(s.service_type, ServiceType::ClusterIp);
    let IpAddr::V4(ip) = s.cluster_ip().expect("allocated") else { panic!("an IPv4 clusterIP") };
    assert!(docs_cfg().service_cidr.contains(&IpAddr::V4(ip)));
    assert_ne!(ip, Ipv4Addr::new(10, 247, 0, 1), "first address is the kubernetes Service's");
    assert_eq!(s.ports.len(), 1);
    assert_eq!(s.ports[0].name, "service0");
    assert_eq!(s.ports[0].port, 8080);
    assert_eq!(s.ports[0].protocol, Protocol::Tcp);
    assert_eq!(s.ports[0].node_port, None);
    // Deterministic: the same name gets the same address.
    let again = load(&[docs("nginx-svc.yaml")], &docs_cfg());
    assert_eq!(svc(&again, "nginx").cluster_ip(), Some(ip.into()));
}

#[test]
fn docs_nodeport_alone() {
    let r = load(&[docs("nodeport.yaml")], &docs_cfg());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let s = svc(&r, "nodeport-service");
    assert_eq!(s.service_type, ServiceType::NodePort);
    assert_eq!(s.ports[0].port, 8080);
    assert_eq!(s.ports[0].node_port, Some(30120));
    assert_eq!(s.ports[0].protocol, Protocol::Tcp, "protocol defaults to TCP");
    assert_eq!(s.ports[0].name, "");
}

#[test]
fn docs_loadbalancer_alone() {
    let r = load(&[docs("loadbalancer.yaml")], &docs_cfg());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let s = svc(&r, "nginx");
    assert_eq!(s.service_type, ServiceType::LoadBalancer);
    assert_eq!(s.load_balancer_ips, vec![Ipv4Addr::new(10, 78, 42, 242)]);
    assert_eq!(s.ports[0].name, "service0");
    assert_eq!(s.ports[0].port, 80);
    assert_eq!(s.ports[0].node_port, Some(30120));
}

#[test]
fn docs_headless_alone() {
    let r = load(&[docs("headless.yaml")], &docs_cfg());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let s = svc(&r, "nginx-headless");
    assert_eq!(s.cluster_ip(), None);
    assert_eq!(s.ports[0].name, "nginx");
    assert_eq!(s.ports[0].port, 80);
    let (table, warnings) = svcgate_common::table::ServiceTable::build(&r.resolved.desired, 1);
    assert!(warnings.is_empty());
    assert_eq!(table.frontend_count(), 0, "headless: nothing to program");
}

#[test]
fn docs_deployment_is_skipped() {
    let r = load(&[docs("deployment.yaml")], &docs_cfg());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.resolved.desired.services.is_empty());
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].kind, "Deployment");
    assert_eq!(r.skipped[0].name, "nginx");
}

#[test]
fn docs_together_report_the_clashes_and_apply_the_rest() {
    let r = load(&[docs("")], &docs_cfg());
    let msgs: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
    // File order decides who came first: loadbalancer.yaml < nginx-svc.yaml < nodeport.yaml.
    let dup = r.errors.iter().find_map(|e| match e {
        LoadError::DuplicateService { origin, name, first } => Some((origin, name, first)),
        _ => None,
    });
    let (origin, name, first) = dup.unwrap_or_else(|| panic!("{msgs:#?}"));
    assert_eq!(name, "default/nginx");
    assert!(origin.path.ends_with("nginx-svc.yaml"), "{origin}");
    assert!(first.path.ends_with("loadbalancer.yaml"), "{first}");
    let np = r.errors.iter().find_map(|e| match e {
        LoadError::NodePortAllocated { origin, name, field, node_port, owner } => {
            Some((origin, name, field, *node_port, owner))
        }
        _ => None,
    });
    let (origin, name, field, port, owner) = np.unwrap_or_else(|| panic!("{msgs:#?}"));
    assert!(origin.path.ends_with("nodeport.yaml"));
    assert_eq!(name, "default/nodeport-service");
    assert_eq!(field, "spec.ports[0].nodePort");
    assert_eq!(port, 30120);
    assert_eq!(owner, "default/nginx");
    assert_eq!(r.errors.len(), 2, "{msgs:#?}");
    // The rest applies.
    let mut names: Vec<&str> = r.resolved.desired.services.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["nginx", "nginx-headless"]);
    assert_eq!(svc(&r, "nginx").service_type, ServiceType::LoadBalancer);
    // Messages a user can act on: file, object, field.
    assert!(msgs.iter().any(|m| m.contains("nodeport.yaml:")
        && m.contains("nodeport-service")
        && m.contains("spec.ports[0].nodePort")
        && m.contains("30120")));
}

#[test]
fn bundled_example_serves_every_type_with_pod_endpoints() {
    let r = load(&[examples()], &lab_cfg());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.skipped.len(), 1, "the Deployment");
    let lab: ipnet::IpNet = "198.18.0.0/15".parse().unwrap();
    let pods: Vec<Ipv4Addr> = (10..=12).map(|i| Ipv4Addr::new(198, 18, 3, i)).collect();
    for s in &r.resolved.desired.services {
        for ip in s.cluster_ips.iter().chain(&s.load_balancer_ips).chain(&s.external_ips) {
            assert!(lab.contains(ip), "{} has {ip}", s.name);
        }
        for p in &s.ports {
            let mut addrs: Vec<IpAddr> = p.backends.iter().map(|b| b.addr).collect();
            addrs.sort();
            assert_eq!(addrs, pods, "{} port {}", s.name, p.port);
            assert!(p.backends.iter().all(|b| b.conditions.ready));
        }
    }
    let nginx = svc(&r, "nginx");
    assert_eq!(nginx.ports[0].backends[0].port, 80);
    assert_eq!(svc(&r, "nodeport-service").ports[0].node_port, Some(30120));
    let lb = svc(&r, "nginx-lb");
    assert_eq!(lb.ports[0].node_port, Some(30121));
    assert_eq!(lb.load_balancer_ips, vec![Ipv4Addr::new(198, 19, 0, 100)]);
    let udp = svc(&r, "udp-echo");
    assert_eq!(udp.ports[0].protocol, Protocol::Udp);
    assert_eq!(udp.ports[0].backends[0].port, 7, "named targetPort resolved via the Pod's UDP port");
    assert_eq!(svc(&r, "nginx-headless").cluster_ip(), None);
    let (table, warnings) = svcgate_common::table::ServiceTable::build(&r.resolved.desired, 1);
    assert!(warnings.is_empty(), "{warnings:?}");
    let Some(IpAddr::V4(vip)) = nginx.cluster_ip() else { panic!("an IPv4 clusterIP") };
    assert!(table.frontend(vip, Protocol::Tcp, 8080).is_some());
    assert!(table.frontend(Ipv4Addr::new(198, 18, 0, 2), Protocol::Tcp, 30120).is_some());
    assert!(table.frontend(Ipv4Addr::new(198, 19, 0, 100), Protocol::Tcp, 80).is_some());
}

fn one(text: &str) -> LoadReport {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.yaml"), text).unwrap();
    load(&[dir.path().to_path_buf()], &lab_cfg())
}

#[test]
fn bad_values_name_file_object_and_field() {
    let cases = [
        ("  ports:\n  - port: 70000\n", "spec.ports[0].port"),
        ("  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 80\n", "spec.ports[0].nodePort"),
        ("  ports:\n  - port: 80\n    protocol: TCPP\n", "spec.ports[0].protocol"),
        ("  type: Cluster\n  ports:\n  - port: 80\n", "spec.type"),
        ("  ports:\n  - port: 80\n    nodePort: 30001\n", "spec.ports[0].nodePort"),
        ("  ports:\n  - port: 80\n    name: a\n  - port: 81\n", "spec.ports[1].name"),
        ("  ports:\n  - port: 80\n    targetPort: \"80\"\n", "spec.ports[0].targetPort"),
    ];
    for (spec, field) in cases {
        let text = format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n{spec}");
        let r = one(&text);
        assert!(r.resolved.desired.services.is_empty(), "{spec}");
        assert_eq!(r.errors.len(), 1, "{spec}: {:?}", r.errors);
        let m = r.errors[0].to_string();
        assert!(m.contains("x.yaml:1") && m.contains("default/bad") && m.contains(field), "{m}");
    }
}

#[test]
fn cluster_ip_outside_the_service_cidr_is_served_with_a_warning() {
    // Allocated by some cluster's API server, not by svcgate: served as given.
    let r = one("apiVersion: v1\nkind: Service\nmetadata:\n  name: far\nspec:\n  clusterIP: 198.19.0.1\n  ports:\n  - port: 80\n");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.resolved.desired.services[0].cluster_ip(), Some(Ipv4Addr::new(198, 19, 0, 1).into()));
    assert_eq!(r.resolved.warnings.len(), 1);
    let m = r.resolved.warnings[0].to_string();
    assert!(m.contains("x.yaml:1") && m.contains("default/far") && m.contains("outside svcgate's service_cidr"), "{m}");
}

#[test]
fn forwarding_mode_annotation() {
    let with = |v: &str| {
        one(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: keep\n  annotations:\n    svcgate.io/forwarding-mode: {v}\nspec:\n  ports:\n  - port: 80\n"
        ))
    };
    let r = with("dnat");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(svc(&r, "keep").forwarding, Some(ForwardingMode::Dnat));
    assert_eq!(svc(&with("snat"), "keep").forwarding, Some(ForwardingMode::Snat));
    let r = one("apiVersion: v1\nkind: Service\nmetadata:\n  name: plain\nspec:\n  ports:\n  - port: 80\n");
    assert_eq!(svc(&r, "plain").forwarding, None, "no annotation: the gateway's mode");
    let r = with("dsr");
    assert!(r.resolved.desired.services.is_empty());
    let m = r.errors[0].to_string();
    assert!(m.contains("default/keep") && m.contains("svcgate.io/forwarding-mode") && m.contains("\"dsr\""), "{m}");
}

#[test]
fn broken_file_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(examples().join("nginx-svc.yaml"), dir.path().join("a.yaml")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: [\n").unwrap();
    let r = load(&[dir.path().to_path_buf()], &lab_cfg());
    assert_eq!(r.resolved.desired.services.len(), 1);
    assert_eq!(r.errors.len(), 1);
    let m = r.errors[0].to_string();
    assert!(m.contains("b.yaml:"), "{m}");
}

#[test]
fn endpoint_slices_and_endpoints_resolve_named_ports() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 198.18.128.50
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- addresses: [198.18.4.1]
  conditions: {ready: true}
- addresses: [198.18.4.2]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [198.18.4.3]
---
apiVersion: v1
kind: Service
metadata: {name: manual}
spec:
  ports: [{port: 9000}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: manual}
subsets:
- addresses: [{ip: 198.18.5.1}]
  notReadyAddresses: [{ip: 198.18.5.2}]
  ports: [{port: 9001}]
"#;
    let r = one(text);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let web = svc(&r, "web");
    assert_eq!(web.namespace, "shop");
    let http = &web.ports[0];
    assert_eq!(http.backends.len(), 3);
    assert!(http.backends.iter().all(|b| b.port == 8080));
    let b2 = http.backends.iter().find(|b| b.addr == Ipv4Addr::new(198, 18, 4, 2)).unwrap();
    assert!(!b2.conditions.ready && b2.conditions.serving && b2.conditions.terminating);
    let b3 = http.backends.iter().find(|b| b.addr == Ipv4Addr::new(198, 18, 4, 3)).unwrap();
    assert!(b3.conditions.ready, "nil ready counts as ready");
    assert!(web.ports[1].backends.iter().all(|b| b.port == 5353));
    let manual = svc(&r, "manual");
    assert_eq!(manual.ports[0].backends.len(), 2);
    assert_eq!(manual.ports[0].backends.iter().filter(|b| b.conditions.ready).count(), 1);
}

#[test]
fn pods_terminating_not_ready_and_named_ports() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  selector: {app: a}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: ready, labels: {app: a}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 198.18.6.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: going, labels: {app: a}, deletionTimestamp: "2024-01-01T00:00:00Z"}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 198.18.6.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: starting, labels: {app: a}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 198.18.6.3, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: noport, labels: {app: a}}
spec: {containers: [{name: c}]}
status: {podIP: 198.18.6.4, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {app: b}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 198.18.6.5, conditions: [{type: Ready, status: "True"}]}
"#;
    let r = one(text);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let b = &svc(&r, "s").ports[0].backends;
    assert_eq!(b.len(), 3, "{b:?}");
    assert!(b.iter().all(|b| b.port == 8080));
    let by = |last: u8| b.iter().find(|x| x.addr == Ipv4Addr::new(198, 18, 6, last)).unwrap().conditions;
    assert!(by(1).ready);
    assert!(!by(2).ready && by(2).serving && by(2).terminating);
    assert!(!by(3).ready && !by(3).serving && !by(3).terminating);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Nothing panics on random bytes or on any truncation / corruption of a real manifest.
    #[test]
    fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                               cut in 0usize..2000, flip in 0usize..2000, with in any::<u8>()) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_str(Path::new("fuzz.yaml"), &text);
        let all = [
            std::fs::read_to_string(docs("loadbalancer.yaml")).unwrap(),
            std::fs::read_to_string(examples().join("pod-nginx-0.yaml")).unwrap(),
            std::fs::read_to_string(examples().join("udp-echo.yaml")).unwrap(),
        ].join("---\n");
        let mut b = all.into_bytes();
        let n = b.len();
        b.truncate(cut % (n + 1));
        if !b.is_empty() { let i = flip % b.len(); b[i] = with; }
        let text = String::from_utf8_lossy(&b).into_owned();
        let parsed = parse_str(Path::new("fuzz.yaml"), &text);
        let r = svcgate_control::resolve::resolve(&parsed.objects, &lab_cfg(), &Default::default(), &Default::default());
        let _ = svcgate_common::table::ServiceTable::build(&r.desired, 1);
        for e in parsed.errors.iter().chain(&r.errors) { let _ = e.to_string(); }
    }
}
