//! Objects exported from a live cluster, loaded as they are: `kubectl get
//! svc,endpointslices,pods -A -o yaml` (a `kind: List`), the same as `-o json`
//! and as a multi-document stream, with status, managedFields, ownerReferences,
//! last-applied annotations and kinds svcgate does not serve. The cluster's
//! API server allocated the clusterIPs (198.19.0.0/24) outside svcgate's
//! service CIDR (198.18.128.0/17): served with warnings. Every address is in
//! 198.18.0.0/15; nothing is sent anywhere.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use svcgate_common::model::{Protocol, ServiceSpec, ServiceType, SessionAffinity};
use svcgate_common::table::ServiceTable;
use svcgate_control::controller::Controller;
use svcgate_control::error::{LoadError, LoadWarning};
use svcgate_control::load::{load_paths, LoadReport};
use svcgate_control::manifest::{self, Origin, Sourced};
use svcgate_control::resolve::{self, Allocations, ResolveConfig};

const SERVED: [&str; 7] = ["api", "db", "front", "kube-dns", "kubernetes", "legacy", "web"];

fn dump(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster").join(name)
}

fn cfg() -> ResolveConfig {
    ResolveConfig::new("198.18.128.0/17".parse().unwrap(), vec![Ipv4Addr::new(198, 18, 0, 21)])
}

fn svc<'a>(r: &'a LoadReport, ns: &str, name: &str) -> &'a ServiceSpec {
    r.resolved
        .desired
        .services
        .iter()
        .find(|s| s.namespace == ns && s.name == name)
        .unwrap_or_else(|| panic!("no Service {ns}/{name}"))
}

fn names(r: &LoadReport) -> Vec<&str> {
    let mut v: Vec<&str> = r.resolved.desired.services.iter().map(|s| s.name.as_str()).collect();
    v.sort_unstable();
    v
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The warnings' (Service, address).
fn warned(r: &LoadReport) -> BTreeMap<String, IpAddr> {
    r.resolved
        .warnings
        .iter()
        .map(|w| match w {
            LoadWarning::ClusterIpOutsideServiceCidr { name, ip, service_cidr, .. } => {
                assert_eq!(service_cidr.map(|c| c.to_string()).as_deref(), Some("198.18.128.0/17"));
                (name.clone(), *ip)
            }
        })
        .collect()
}

#[test]
fn kubectl_yaml_list_loads_as_it_is() {
    let r = load_paths(&[dump("get-svc-eps-pods.yaml")], &cfg());
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(names(&r), SERVED);
    // Kinds svcgate does not serve, inside the List: skipped, named by their line.
    let skipped: Vec<(&str, &str)> = r.skipped.iter().map(|s| (s.kind.as_str(), s.name.as_str())).collect();
    assert_eq!(skipped, [("ConfigMap", "web-config"), ("Deployment", "web")]);
    let text = std::fs::read_to_string(dump("get-svc-eps-pods.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let kind_at = lines.iter().position(|l| *l == "  kind: ConfigMap").unwrap();
    let item_at = lines[..kind_at].iter().rposition(|l| l.starts_with("- ")).unwrap();
    assert_eq!(r.skipped[0].origin.line, item_at + 1, "the item's `- apiVersion` line");

    // The API server's clusterIPs, served as given.
    let web = svc(&r, "shop", "web");
    assert_eq!(web.cluster_ip(), Some(ip("198.19.0.20")));
    // Named targetPort, through the EndpointSlice: two ready, one terminating.
    let b = &web.ports[0].backends;
    let ready: Vec<IpAddr> = b.iter().filter(|b| b.conditions.ready).map(|b| b.addr).collect();
    assert_eq!(ready, [ip("198.18.64.11"), ip("198.18.65.12")]);
    let term: Vec<_> = b.iter().filter(|b| b.conditions.terminating).map(|b| (b.addr, b.conditions.serving)).collect();
    assert_eq!(term, [(ip("198.18.64.13"), true)]);
    assert!(b.iter().all(|b| b.port == 8080));

    let dns = svc(&r, "kube-system", "kube-dns");
    let ports: Vec<(Protocol, u16, usize)> = dns.ports.iter().map(|p| (p.protocol, p.port, p.backends.len())).collect();
    assert_eq!(ports, [(Protocol::Udp, 53, 2), (Protocol::Tcp, 53, 2), (Protocol::Tcp, 9153, 2)]);

    let api = svc(&r, "shop", "api");
    assert_eq!(api.service_type, ServiceType::NodePort);
    assert_eq!(api.ports[0].node_port, Some(30080));
    assert_eq!(api.affinity, SessionAffinity::ClientIp { timeout_secs: 10800 });

    let front = svc(&r, "shop", "front");
    assert_eq!(front.load_balancer_ips, [ip("198.18.200.10")]);
    assert_eq!(front.ports[0].node_port, Some(31080));

    assert_eq!(svc(&r, "shop", "legacy").external_ips, [ip("198.18.210.5")]);
    assert_eq!(svc(&r, "default", "kubernetes").ports[0].backends[0].port, 6443);
    let db = svc(&r, "shop", "db");
    assert_eq!(db.cluster_ip(), None, "headless");
    assert_eq!(db.ports[0].backends.len(), 1);

    // One warning per served clusterIP outside 198.18.128.0/17; none for the headless one.
    let w = warned(&r);
    assert_eq!(w.len(), 6, "{w:?}");
    assert_eq!(w["default/kubernetes"], ip("198.19.0.1"));
    assert_eq!(w["shop/front"], ip("198.19.0.22"));
    assert!(!w.contains_key("shop/db"));
    let msg = r.resolved.warnings[0].to_string();
    assert!(
        msg.contains("get-svc-eps-pods.yaml:3: Service \"default/kubernetes\": spec.clusterIP 198.19.0.1"),
        "{msg}"
    );

    // Left to another proxy by its label (svcgate's service_proxy_name unset).
    let other: Vec<(&str, Option<&str>)> =
        r.resolved.other_proxy.iter().map(|o| (o.name.as_str(), o.proxy.as_deref())).collect();
    assert_eq!(other, [("shop/search", Some("other-proxy")), ("shop/edge", Some("svcgate"))]);

    let (table, build_warnings) = ServiceTable::build(&r.resolved.desired, 1);
    assert!(build_warnings.is_empty(), "{build_warnings:?}");
    let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert!(table.frontend(v4("198.19.0.20"), Protocol::Tcp, 80).is_some());
    assert!(table.frontend(v4("198.19.0.30"), Protocol::Tcp, 80).is_none(), "left to other-proxy");
}

#[test]
fn json_list_and_multidoc_yaml_load_the_same() {
    let yaml = load_paths(&[dump("get-svc-eps-pods.yaml")], &cfg());
    for f in ["get-svc-eps-pods.json", "objects-multidoc.yaml"] {
        let r = load_paths(&[dump(f)], &cfg());
        assert!(r.errors.is_empty(), "{f}: {:#?}", r.errors);
        assert_eq!(r.resolved.desired, yaml.resolved.desired, "{f}");
        assert_eq!(warned(&r), warned(&yaml), "{f}");
        assert_eq!(r.skipped.len(), 2, "{f}");
        assert_eq!(r.resolved.other_proxy.len(), 2, "{f}");
    }
    // -o json: each item named by its own `{` line.
    let r = load_paths(&[dump("get-svc-eps-pods.json")], &cfg());
    let text = std::fs::read_to_string(dump("get-svc-eps-pods.json")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for o in &r.resolved.origins {
        assert_eq!(lines[o.line - 1], "        {", "{o}");
    }
}

#[test]
fn a_clusterip_clash_is_still_an_error() {
    let r = load_paths(&[dump("clash.yaml")], &cfg());
    assert_eq!(names(&r), ["first"]);
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    match &r.errors[0] {
        LoadError::ClusterIpAllocated { name, field, ip: got, owner, origin } => {
            assert_eq!(
                (name.as_str(), *field, *got, owner.as_str()),
                ("shop/second", "spec.clusterIP", "198.19.0.40".parse().unwrap(), "shop/first")
            );
            assert_eq!(origin.line, 24, "the second item's line");
        }
        e => panic!("{e:?}"),
    }
    // The first is served, with its warning; the rejected one warns nothing.
    assert_eq!(warned(&r).into_keys().collect::<Vec<_>>(), ["shop/first"]);
}

#[test]
fn no_warning_when_service_cidr_is_the_clusters() {
    let mut c = cfg();
    c.service_cidr = "198.19.0.0/16".parse().unwrap();
    let r = load_paths(&[dump("get-svc-eps-pods.yaml")], &c);
    assert!(r.errors.is_empty() && r.resolved.warnings.is_empty(), "{:?} {:?}", r.errors, r.resolved.warnings);
    assert_eq!(names(&r), SERVED);
}

#[test]
fn service_proxy_name_selects_the_services_labelled_with_it() {
    let mut c = cfg();
    c.service_proxy_name = Some("svcgate".into());
    let r = load_paths(&[dump("get-svc-eps-pods.yaml")], &c);
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert_eq!(names(&r), ["edge"]);
    let edge = svc(&r, "shop", "edge");
    assert_eq!(edge.cluster_ip(), Some(ip("198.19.0.31")));
    // No EndpointSlice in the dump: the Pods its selector matches.
    assert_eq!(
        edge.ports[0].backends.iter().map(|b| (b.addr, b.port)).collect::<Vec<_>>(),
        [(ip("198.18.64.11"), 8080)]
    );
    let other: BTreeMap<&str, Option<&str>> =
        r.resolved.other_proxy.iter().map(|o| (o.name.as_str(), o.proxy.as_deref())).collect();
    assert_eq!(other.len(), 8);
    assert_eq!(other["shop/search"], Some("other-proxy"));
    assert_eq!(other["shop/web"], None);
    let note = r.resolved.other_proxy.iter().find(|o| o.name == "shop/web").unwrap().to_string();
    assert!(note.contains("has no service.kubernetes.io/service-proxy-name label"), "{note}");
}

#[test]
fn ipv6_first_dual_stack_serves_both_cluster_ips() {
    // 2001:2::/48 is RFC 5180's IPv6 benchmarking range; loaded only.
    let t = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ds\nspec:\n  clusterIP: 2001:2::10\n  clusterIPs:\n  \
             - 2001:2::10\n  - 198.18.128.10\n  ipFamilies: [IPv6, IPv4]\n  ipFamilyPolicy: PreferDualStack\n  \
             ports:\n  - port: 80\n";
    let p = manifest::parse_str(Path::new("ds.yaml"), t);
    let r = resolve::resolve(&p.objects, &cfg(), &Default::default(), &Allocations::default());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // Both, IPv6 (the primary) first, as given; the IPv6 one is outside
    // svcgate's ranges (it has none of IPv6): served, with a warning.
    assert_eq!(r.desired.services[0].cluster_ips, [ip("2001:2::10"), ip("198.18.128.10")]);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    let w = r.warnings[0].to_string();
    assert!(w.contains("spec.clusterIP 2001:2::10 is outside svcgate's service_cidr (which has no IPv6 range)"), "{w}");
    // With an IPv6 range that holds it, no warning.
    let mut c = cfg();
    c.service_cidr = "198.18.128.0/17,2001:2::/64".parse().unwrap();
    let r = resolve::resolve(&p.objects, &c, &Default::default(), &Allocations::default());
    assert!(r.errors.is_empty() && r.warnings.is_empty(), "{:?} {:?}", r.errors, r.warnings);
}

/// The dump's objects as the kube source hands them over.
fn as_api_objects() -> Vec<Sourced> {
    let p = manifest::load_file(&dump("get-svc-eps-pods.yaml"));
    p.objects.into_iter().map(|o| Sourced { origin: Origin::api(), object: o.object }).collect()
}

#[test]
fn the_kube_source_path_filters_the_same_and_does_not_warn() {
    // As the daemon configures it for `kube = true`.
    let mut c = cfg();
    c.check_cluster_ip_range = false;
    let ctl = Controller::new(c.clone());
    ctl.apply_objects(&as_api_objects());
    let st = ctl.status();
    let mut served: Vec<&str> = st.services.iter().map(|r| r.name.as_str()).collect();
    served.sort_unstable();
    assert_eq!(served, SERVED);
    assert!(st.errors.is_empty() && st.warnings.is_empty(), "{:?} {:?}", st.errors, st.warnings);

    c.service_proxy_name = Some("svcgate".into());
    let ctl = Controller::new(c);
    ctl.apply_objects(&as_api_objects());
    let served: Vec<String> = ctl.status().services.iter().map(|r| r.name.clone()).collect();
    assert_eq!(served, ["edge"]);
}

#[test]
fn the_manifests_path_shows_the_warnings_in_status() {
    let ctl = Controller::new(cfg());
    let f = dump("get-svc-eps-pods.yaml");
    ctl.apply_files(BTreeMap::from([(f.clone(), Some(manifest::load_file(&f)))]));
    let st = ctl.status();
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    assert_eq!(st.services.len(), 7);
    assert_eq!(st.warnings.len(), 6, "{:?}", st.warnings);
    assert!(st.warnings[0].contains("is outside svcgate's service_cidr 198.18.128.0/17; served as given"));
}

fn svcgate(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_svcgate")).args(args).output().expect("run svcgate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_shows_warnings_and_notes_without_failing() {
    let f = dump("get-svc-eps-pods.json");
    let f = f.to_str().unwrap();
    let (code, so, se) = svcgate(&["validate", f, "--service-cidr", "198.18.128.0/17", "--node-ip", "198.18.0.21"]);
    assert_eq!(code, Some(0), "{se}");
    assert!(so.contains("front        LoadBalancer   198.19.0.22   198.18.200.10   80:31080/TCP"), "{so}");
    assert!(
        se.contains("warning: ") && se.contains("Service \"shop/web\": spec.clusterIP 198.19.0.20 is outside"),
        "{se}"
    );
    assert!(se.contains("note: ") && se.contains("Service \"shop/search\" is labelled"), "{se}");
    assert!(se.contains("skipped: v1 ConfigMap \"web-config\""), "{se}");
    assert!(se.contains("svcgate: the manifests are ok (7 Services, 6 warning(s))"), "{se}");

    let (code, so, se) =
        svcgate(&["validate", f, "--service-cidr", "198.19.0.0/16", "--service-proxy-name", "svcgate"]);
    assert_eq!(code, Some(0), "{se}");
    assert!(so.contains("edge") && !so.contains("web "), "{so}");
    assert!(se.contains("svcgate: the manifests are ok (1 Services)"), "{se}");

    let clash = dump("clash.yaml");
    let (code, _, se) = svcgate(&["validate", clash.to_str().unwrap(), "--service-cidr", "198.18.128.0/17"]);
    assert_eq!(code, Some(1), "{se}");
    assert!(se.contains("error: ") && se.contains("\"198.19.0.40\": provided IP is already allocated"), "{se}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// A dump cut anywhere (a copy interrupted, a download truncated) or with
    /// one byte changed loads what it can and never panics.
    #[test]
    fn damaged_dumps_never_panic(which in 0usize..3, cut in 0.0f64..1.0, at in 0.0f64..1.0, byte in 0u8..128) {
        let f = ["get-svc-eps-pods.yaml", "get-svc-eps-pods.json", "objects-multidoc.yaml"][which];
        let mut text = std::fs::read(dump(f)).unwrap();
        let i = ((at * text.len() as f64) as usize).min(text.len() - 1);
        text[i] = byte;
        text.truncate((cut * text.len() as f64) as usize);
        let text = String::from_utf8_lossy(&text);
        let p = manifest::parse_str(Path::new(f), &text);
        let _ = resolve::resolve(&p.objects, &cfg(), &Default::default(), &Allocations::default());
    }
}
