//! Dual-stack Services through the control plane: `ipFamilies`,
//! `ipFamilyPolicy` and `clusterIPs` as the API server settles them, the
//! allocation from both service CIDRs, endpoints of both families, the table
//! built from the result, and what `svcgate validate` prints.
//!
//! Addresses: 198.18.0.0/15 and 2001:2::/48 only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use svcgate_common::family::IpFamily;
use svcgate_common::model::{IpNet, ServiceSpec};
use svcgate_common::table::{FrontendKind, ServiceTable};
use svcgate_control::display;
use svcgate_control::error::{LoadError, LoadWarning};
use svcgate_control::load::{load_paths, LoadReport};
use svcgate_control::manifest::parse_str;
use svcgate_control::resolve::{backends_from_slices, resolve, Allocations, ResolveConfig, Resolved, ServiceCidrs};

const V4: &str = "198.18.128.0/20";
const V6: &str = "2001:2:0:8000::/112";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dual-stack/services.yaml")
}

/// A gateway with these service CIDRs and a node IP of each family.
fn cfg(cidrs: &str) -> ResolveConfig {
    ResolveConfig::new(cidrs.parse().unwrap(), vec![ip("198.18.0.2"), ip("2001:2::2")])
}

fn dual() -> ResolveConfig {
    cfg(&format!("{V4},{V6}"))
}

fn resolve_text(text: &str, cfg: &ResolveConfig) -> Resolved {
    let parsed = parse_str(Path::new("ds.yaml"), text);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    resolve(&parsed.objects, cfg, &Default::default(), &Allocations::default())
}

fn svc<'a>(r: &'a Resolved, name: &str) -> &'a ServiceSpec {
    r.desired.services.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no Service {name}"))
}

fn families(s: &ServiceSpec) -> Vec<IpFamily> {
    s.cluster_ips.iter().map(IpFamily::of).collect()
}

fn fixture_report() -> LoadReport {
    let r = load_paths(&[fixture()], &dual());
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    assert!(r.resolved.warnings.is_empty(), "{:#?}", r.resolved.warnings);
    r
}

fn backends(s: &ServiceSpec) -> Vec<(IpAddr, u16, bool)> {
    s.ports[0].backends.iter().map(|b| (b.addr, b.port, b.conditions.ready)).collect()
}

#[test]
fn the_fixture_resolves_both_families() {
    let r = fixture_report();
    let r = &r.resolved;
    let v4 = V4.parse::<IpNet>().unwrap();
    let v6 = V6.parse::<IpNet>().unwrap();

    // PreferDualStack on a dual-stack gateway: both, allocated, primary first.
    let web = svc(r, "web");
    assert_eq!(families(web), [IpFamily::V4, IpFamily::V6]);
    assert!(v4.contains(&web.cluster_ips[0]) && v6.contains(&web.cluster_ips[1]), "{:?}", web.cluster_ips);
    // Pods' podIPs, both families; web-1 has IPv4 only.
    assert_eq!(
        backends(web),
        [(ip("198.18.4.10"), 8080, true), (ip("2001:2::4:10"), 8080, true), (ip("198.18.4.11"), 8080, true)]
    );
    // The IPv6-only Service over the same Pods: their IPv6 addresses only.
    let web6 = svc(r, "web6");
    assert_eq!(families(web6), [IpFamily::V6]);
    assert_eq!(backends(web6), [(ip("2001:2::4:10"), 8080, true)]);

    // Given addresses, IPv6 primary; LB, external IPs and ranges of both.
    let api = svc(r, "api");
    assert_eq!(api.cluster_ips, [ip("2001:2:0:8000::20"), ip("198.18.128.20")]);
    assert_eq!(api.external_ips, [ip("198.18.5.1"), ip("2001:2::5:1")]);
    assert_eq!(api.load_balancer_ips, [ip("198.18.6.1"), ip("2001:2::6:1")]);
    let ranges: Vec<String> = api.source_ranges.iter().map(ToString::to_string).collect();
    assert_eq!(ranges, ["198.18.0.0/16", "2001:2::/48"]);
    assert_eq!(
        backends(api),
        [(ip("198.18.4.20"), 8443, true), (ip("2001:2::4:20"), 8443, true), (ip("2001:2::4:21"), 8443, false)]
    );

    // Headless without selector: no address, endpoints of both families
    // named for DNS.
    let i = r.desired.services.iter().position(|s| s.name == "db").unwrap();
    assert!(r.desired.services[i].is_headless());
    let named: Vec<(IpAddr, Option<&str>)> =
        r.endpoint_names[i].iter().map(|e| (e.addr, e.hostname.as_deref())).collect();
    assert_eq!(
        named,
        [(ip("198.18.4.30"), Some("db-0")), (ip("2001:2::4:30"), Some("db-0")), (ip("2001:2::4:31"), None)]
    );

    // No ipFamilies: the primary family only, IPv4 endpoints only.
    let legacy = svc(r, "legacy");
    assert_eq!(families(legacy), [IpFamily::V4]);
    assert_eq!(backends(legacy), [(ip("198.18.4.40"), 8000, true)]);
    assert_eq!(r.desired.node_ips, [ip("198.18.0.2"), ip("2001:2::2")]);
}

#[test]
fn the_table_has_an_ipv6_half() {
    let r = fixture_report();
    let (t, warnings) = ServiceTable::build(&r.resolved.desired, 1);
    assert!(warnings.is_empty(), "{warnings:?}");
    let tcp = svcgate_common::model::Protocol::Tcp;
    let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();

    // api: every IPv6 frontend leads to the IPv6 entry, whose backends are
    // the IPv6 endpoints only, and whose source ranges are the IPv6 one.
    let f = t.v6().frontend(v6("2001:2:0:8000::20"), tcp, 443).expect("the IPv6 clusterIP");
    assert_eq!(f.kind, FrontendKind::ClusterIp);
    for (addr, port, kind) in [
        ("2001:2::5:1", 443, FrontendKind::ExternalIp),
        ("2001:2::6:1", 443, FrontendKind::LoadBalancer),
        ("2001:2::2", 30443, FrontendKind::NodePort),
    ] {
        let g = t.v6().frontend(v6(addr), tcp, port).unwrap_or_else(|| panic!("{addr}"));
        assert_eq!((g.kind, g.entry), (kind, f.entry), "{addr}");
    }
    let e = t.v6().entry(f.entry).unwrap();
    let b: Vec<Ipv6Addr> = e.backends.iter().map(|b| b.addr).collect();
    assert_eq!(b, [v6("2001:2::4:20"), v6("2001:2::4:21")]);
    assert!(e.source_allowed(v6("2001:2::99")));
    assert!(!e.source_allowed(v6("2001:3::1")));
    // Its IPv4 half: the IPv4 endpoint.
    let f4 = t.v4().frontend(Ipv4Addr::new(198, 18, 128, 20), tcp, 443).unwrap();
    let b: Vec<Ipv4Addr> = t.v4().entry(f4.entry).unwrap().backends.iter().map(|b| b.addr).collect();
    assert_eq!(b, [Ipv4Addr::new(198, 18, 4, 20)]);

    // web and web6 have IPv6 entries; legacy has none (nor an IPv6 node port).
    let web = svc(&r.resolved, "web");
    let IpAddr::V6(web_v6) = web.cluster_ips[1] else { panic!() };
    let e = t.v6().entry(t.v6().frontend(web_v6, tcp, 80).unwrap().entry).unwrap();
    assert_eq!(e.backends.iter().map(|b| b.addr).collect::<Vec<_>>(), [v6("2001:2::4:10")]);
    assert!(t.v6().frontend(v6("2001:2::2"), tcp, 30800).is_none());
    assert!(t.v4().frontend(Ipv4Addr::new(198, 18, 0, 2), tcp, 30800).is_some());
    // Entries per family: api, web, web6 (IPv6); api, web, legacy (IPv4).
    assert_eq!((t.v4().entries().len(), t.v6().entries().len()), (3, 3));
}

/// One Service `s` with `extra` spec lines (indented two spaces each).
fn one_service(extra: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  ports: [{{port: 80}}]\n{extra}")
}

#[test]
fn policies_on_single_and_dual_stack_gateways() {
    use IpFamily::{V4 as F4, V6 as F6};
    // (spec lines, service_cidr, families the Service gets, or an error).
    let v4_only = V4.to_string();
    let v6_only = V6.to_string();
    let dual = format!("{V4},{V6}");
    let dual6 = format!("{V6},{V4}");
    /// The families a Service gets, or a part of the error it gets.
    type Outcome = Result<Vec<IpFamily>, &'static str>;
    let cases: Vec<(&str, &str, Outcome)> = vec![
        // No policy: SingleStack, the primary family.
        ("", &v4_only, Ok(vec![F4])),
        ("", &v6_only, Ok(vec![F6])),
        ("", &dual, Ok(vec![F4])),
        ("", &dual6, Ok(vec![F6])),
        ("  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n", &dual, Ok(vec![F6])),
        ("  ipFamilies: [IPv6]\n", &v4_only, Err("spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured")),
        // PreferDualStack: both where svcgate has both ranges, else one.
        ("  ipFamilyPolicy: PreferDualStack\n", &dual, Ok(vec![F4, F6])),
        ("  ipFamilyPolicy: PreferDualStack\n", &dual6, Ok(vec![F6, F4])),
        ("  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6]\n", &dual, Ok(vec![F6, F4])),
        ("  ipFamilyPolicy: PreferDualStack\n", &v4_only, Ok(vec![F4])),
        ("  ipFamilyPolicy: PreferDualStack\n", &v6_only, Ok(vec![F6])),
        // RequireDualStack: both, or an error on a single-stack gateway.
        ("  ipFamilyPolicy: RequireDualStack\n", &dual, Ok(vec![F4, F6])),
        ("  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6, IPv4]\n", &dual, Ok(vec![F6, F4])),
        ("  ipFamilyPolicy: RequireDualStack\n", &dual6, Ok(vec![F6, F4])),
        ("  ipFamilyPolicy: RequireDualStack\n", &v4_only, Err("svcgate is not configured for dual-stack")),
        ("  ipFamilyPolicy: RequireDualStack\n", &v6_only, Err("has no IPv4 range")),
        // Both addresses given: served as given (with warnings) even on a
        // single-stack gateway: nothing to allocate.
        (
            "  ipFamilyPolicy: RequireDualStack\n  clusterIPs: [198.18.128.9, \"2001:2:0:8000::9\"]\n",
            &v4_only,
            Ok(vec![F4, F6]),
        ),
        // One given, the other family allocated.
        ("  ipFamilyPolicy: PreferDualStack\n  clusterIP: \"2001:2:0:8000::9\"\n", &dual, Ok(vec![F6, F4])),
    ];
    for (spec, cidrs, want) in cases {
        let r = resolve_text(&one_service(spec), &cfg(cidrs));
        match want {
            Ok(fams) => {
                assert!(r.errors.is_empty(), "{spec} on {cidrs}: {:?}", r.errors);
                let s = &r.desired.services[0];
                assert_eq!(families(s), fams, "{spec} on {cidrs}");
                let c: ServiceCidrs = cidrs.parse().unwrap();
                for a in &s.cluster_ips {
                    let given = spec.contains(&a.to_string());
                    assert!(given || c.contains(a), "{spec} on {cidrs}: {a} allocated outside");
                }
            }
            Err(text) => {
                assert_eq!(r.errors.len(), 1, "{spec} on {cidrs}: {:?}", r.errors);
                assert!(r.desired.services.is_empty());
                let e = r.errors[0].to_string();
                assert!(e.starts_with("ds.yaml:1: Service \"default/s\" is invalid: "), "{e}");
                assert!(e.contains(text), "{spec} on {cidrs}: {e}");
            }
        }
    }
}

#[test]
fn require_dual_stack_on_a_single_stack_gateway_is_a_typed_error() {
    let r = resolve_text(&one_service("  ipFamilyPolicy: RequireDualStack\n"), &cfg(V4));
    match &r.errors[..] {
        [LoadError::DualStackNotConfigured { origin, name, missing, service_cidr }] => {
            assert_eq!((origin.to_string().as_str(), name.as_str()), ("ds.yaml:1", "default/s"));
            assert_eq!(*missing, IpFamily::V6);
            assert_eq!(service_cidr.to_string(), V4);
        }
        e => panic!("{e:?}"),
    }
    let r = resolve_text(&one_service("  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: PreferDualStack\n"), &cfg(V4));
    match &r.errors[..] {
        [LoadError::FamilyNotConfigured { index: 1, family: IpFamily::V6, .. }] => {}
        e => panic!("{e:?}"),
    }
}

#[test]
fn invalid_family_fields_are_named() {
    let cases = [
        ("  ipFamilyPolicy: DualStack\n", "spec.ipFamilyPolicy: Unsupported value: \"DualStack\""),
        ("  ipFamilies: [IPv4, IPv4]\n  ipFamilyPolicy: PreferDualStack\n", "spec.ipFamilies[1]: Duplicate value"),
        ("  ipFamilies: [IPv5]\n", "spec.ipFamilies[0]: Unsupported value: \"IPv5\""),
        ("  ipFamilies: [IPv4, IPv6, IPv4]\n  ipFamilyPolicy: PreferDualStack\n", "spec.ipFamilies: Too many: 3"),
        (
            "  clusterIP: 198.18.128.9\n  clusterIPs: [198.18.128.10]\n",
            "spec.clusterIPs[0]: Invalid value: \"198.18.128.10\": must be the same as spec.clusterIP",
        ),
        (
            "  ipFamilyPolicy: PreferDualStack\n  clusterIPs: [198.18.128.9, 198.18.128.10]\n",
            "spec.clusterIPs[1]: Invalid value: \"198.18.128.10\": may specify no more than one IP for each IP family",
        ),
        (
            "  clusterIPs: [198.18.128.9, \"2001:2:0:8000::9\"]\n",
            "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' \
             when multiple cluster IPs are specified",
        ),
        (
            "  ipFamilies: [IPv4, IPv6]\n",
            "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' \
             when multiple IP families are specified",
        ),
        (
            "  ipFamilies: [IPv6]\n  clusterIP: 198.18.128.9\n",
            "spec.ipFamilies[0]: Invalid value: \"IPv6\": does not match the family of spec.clusterIP 198.18.128.9",
        ),
        ("  clusterIP: 2001:2::zz\n", "spec.clusterIP: Invalid value: \"2001:2::zz\": must be a valid IP address"),
        (
            "  clusterIPs: [None, 198.18.128.9]\n",
            "spec.clusterIPs[1]: Invalid value: \"198.18.128.9\": must not be set when spec.clusterIPs[0] is 'None'",
        ),
        ("  externalIPs: [\"2001:2::x\"]\n", "spec.externalIPs[0]: Invalid value"),
        ("  loadBalancerSourceRanges: [\"2001:2::/129\"]\n", "spec.loadBalancerSourceRanges[0]: Invalid value"),
    ];
    for (spec, want) in cases {
        let r = resolve_text(&one_service(spec), &dual());
        let errors: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        assert!(errors.iter().any(|e| e.contains(want)), "{spec}: {errors:#?}");
        assert!(r.desired.services.is_empty(), "{spec}");
    }
}

#[test]
fn ipv6_cluster_ips_are_allocated_once_per_family() {
    let two = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ipFamilyPolicy: RequireDualStack\n  \
               clusterIPs: [198.18.128.9, \"2001:2:0:8000::9\"]\n  ports: [{port: 80}]\n---\n\
               apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  ipFamilyPolicy: PreferDualStack\n  \
               ipFamilies: [IPv4, IPv6]\n  clusterIPs: [198.18.128.10, \"2001:2:0:8000::9\"]\n  ports: [{port: 80}]\n";
    let r = resolve_text(two, &dual());
    match &r.errors[..] {
        [LoadError::ClusterIpAllocated { name, field, ip: got, owner, .. }] => {
            assert_eq!(
                (name.as_str(), *field, *got, owner.as_str()),
                ("default/b", "spec.clusterIPs[1]", ip("2001:2:0:8000::9"), "default/a")
            );
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(r.desired.services.len(), 1);
}

#[test]
fn allocation_is_deterministic_and_sticky_in_both_families() {
    let text = one_service("  ipFamilyPolicy: RequireDualStack\n");
    let a = resolve_text(&text, &dual());
    let b = resolve_text(&text, &dual());
    assert_eq!(a.desired.services[0].cluster_ips, b.desired.services[0].cluster_ips);
    // Sticky: kept through the next resolution even when another Service's
    // name would hash to the same slot.
    let parsed = parse_str(Path::new("ds.yaml"), &text);
    let again = resolve(&parsed.objects, &dual(), &a.applied, &a.allocations);
    assert_eq!(again.desired.services[0].cluster_ips, a.desired.services[0].cluster_ips);
    // The IPv4 address is the one a single-stack gateway gives the same name.
    let single = resolve_text(&one_service(""), &cfg(V4));
    assert_eq!(single.desired.services[0].cluster_ips[0], a.desired.services[0].cluster_ips[0]);
}

#[test]
fn api_server_objects_keep_their_cluster_ips() {
    // From the API server (kube source): a PreferDualStack Service the
    // cluster made single-stack stays single-stack, whatever svcgate's ranges.
    let mut c = dual();
    c.check_cluster_ip_range = false;
    let r = resolve_text(
        &one_service(
            "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv4]\n  clusterIP: 198.19.0.5\n  \
             clusterIPs: [198.19.0.5]\n",
        ),
        &c,
    );
    assert!(r.errors.is_empty() && r.warnings.is_empty(), "{:?} {:?}", r.errors, r.warnings);
    assert_eq!(r.desired.services[0].cluster_ips, [ip("198.19.0.5")]);
    // ...and an IPv6 one outside svcgate's range is served without warning.
    let r = resolve_text(&one_service("  ipFamilies: [IPv6]\n  clusterIPs: [\"2001:2:ffff::5\"]\n"), &c);
    assert!(r.errors.is_empty() && r.warnings.is_empty(), "{:?} {:?}", r.errors, r.warnings);
    assert_eq!(r.desired.services[0].cluster_ips, [ip("2001:2:ffff::5")]);
}

#[test]
fn an_ipv6_cluster_ip_outside_the_range_warns_like_ipv4() {
    let r = resolve_text(&one_service("  ipFamilies: [IPv6]\n  clusterIP: \"2001:2:ffff::5\"\n"), &dual());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    match &r.warnings[..] {
        [LoadWarning::ClusterIpOutsideServiceCidr { ip: got, service_cidr, .. }] => {
            assert_eq!(*got, ip("2001:2:ffff::5"));
            assert_eq!(service_cidr.map(|c| c.to_string()).as_deref(), Some(V6));
        }
        w => panic!("{w:?}"),
    }
}

#[test]
fn slices_of_each_address_type_feed_their_family() {
    // What the controller's EndpointSlice fast path computes for one Service.
    let r = load_paths(&[fixture()], &dual());
    let objects: Vec<_> = {
        let p = svcgate_control::manifest::load_file(&fixture());
        p.objects
    };
    let slices: Vec<&k8s_openapi::api::discovery::v1::EndpointSlice> = objects
        .iter()
        .filter_map(|o| match &o.object {
            svcgate_control::manifest::Object::EndpointSlice(es) if es.metadata.name.as_deref() != Some("db-v4") => {
                Some(&**es)
            }
            _ => None,
        })
        .collect();
    let i = r.resolved.plans.iter().position(|p| p.name() == "api").unwrap();
    let api: Vec<_> = slices.iter().copied().filter(|s| s.metadata.namespace.as_deref() == Some("prod")).collect();
    let got = backends_from_slices(&r.resolved.plans[i], &api);
    assert_eq!(got, vec![r.resolved.desired.services[i].ports[0].backends.clone()]);
    // An IPv6-only Service ignores an IPv4 slice (and vice versa).
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: v6}\nspec:\n  ipFamilies: [IPv6]\n  \
                ports: [{name: p, port: 80}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                metadata: {name: v6-a, labels: {kubernetes.io/service-name: v6}}\naddressType: IPv4\n\
                ports: [{name: p, port: 80}]\nendpoints: [{addresses: [198.18.4.50]}]\n---\n\
                apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                metadata: {name: v6-b, labels: {kubernetes.io/service-name: v6}}\naddressType: IPv6\n\
                ports: [{name: p, port: 80}]\nendpoints: [{addresses: [\"2001:2::4:50\"]}]\n";
    let r = resolve_text(text, &dual());
    assert_eq!(backends(&r.desired.services[0]), [(ip("2001:2::4:50"), 80, true)]);
}

#[test]
fn pods_with_pod_ips_of_both_families() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ipFamilyPolicy: RequireDualStack\n  \
                ipFamilies: [IPv6, IPv4]\n  selector: {app: a}\n  ports: [{port: 80}]\n---\n\
                apiVersion: v1\nkind: Pod\nmetadata: {name: p0, labels: {app: a}}\nspec: {containers: []}\n\
                status:\n  phase: Running\n  podIP: 198.18.4.60\n  podIPs: [{ip: 198.18.4.60}, {ip: \"2001:2::4:60\"}]\n  \
                conditions: [{type: Ready, status: 'True'}]\n---\n\
                apiVersion: v1\nkind: Pod\nmetadata: {name: p1, labels: {app: a}}\nspec: {containers: []}\n\
                status:\n  phase: Running\n  podIP: \"2001:2::4:61\"\n  conditions: [{type: Ready, status: 'False'}]\n";
    let r = resolve_text(text, &dual());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // Each Pod's address of each family, the Service's family order.
    assert_eq!(
        backends(&r.desired.services[0]),
        [(ip("2001:2::4:60"), 80, true), (ip("198.18.4.60"), 80, true), (ip("2001:2::4:61"), 80, false)]
    );
}

#[test]
fn rows_show_both_addresses_as_kubectl_does() {
    let r = fixture_report();
    let (svcs, eps) = display::rows(&r.resolved.desired);
    let api = svcs.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(api.cluster_ip, "2001:2:0:8000::20,198.18.128.20");
    assert_eq!(api.external_ip, "198.18.6.1,2001:2::6:1,198.18.5.1,2001:2::5:1");
    assert_eq!(api.ports, "443:30443/TCP");
    let web = svcs.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.cluster_ip.split(',').count(), 2, "{}", web.cluster_ip);
    let db = svcs.iter().find(|s| s.name == "db").unwrap();
    assert_eq!(db.cluster_ip, "None");
    let web_eps = eps.iter().find(|e| e.name == "web").unwrap();
    assert_eq!(web_eps.endpoints, "198.18.4.10:8080,[2001:2::4:10]:8080,198.18.4.11:8080");
}

#[test]
fn validate_prints_both_cluster_ips() {
    let out = Command::new(env!("CARGO_BIN_EXE_svcgate"))
        .args(["validate", "--service-cidr", &format!("{V4},{V6}"), "--node-ip", "2001:2::2"])
        .arg(fixture())
        .output()
        .expect("run svcgate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let line = stdout.lines().find(|l| l.contains(" api ")).expect("api's row");
    assert!(line.contains("2001:2:0:8000::20,198.18.128.20"), "{line}");
    assert!(stderr.contains("the manifests are ok (5 Services)"), "{stderr}");
    // A RequireDualStack Service on a single-stack gateway fails validation.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.yaml");
    std::fs::write(&f, one_service("  ipFamilyPolicy: RequireDualStack\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_svcgate"))
        .args(["validate", "--service-cidr", V4])
        .arg(&f)
        .output()
        .expect("run svcgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("svcgate is not configured for dual-stack Services"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_svcgate"))
        .args(["validate", "--service-cidr", "198.18.0.0/16,198.19.0.0/16"])
        .arg(&f)
        .output()
        .expect("run svcgate");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a dual-stack service_cidr has one IPv4 and one IPv6"));
}

#[test]
fn endpoints_objects_of_both_families() {
    // A legacy Endpoints object with addresses of both families: a
    // dual-stack Service takes both, an IPv6-only one its IPv6 addresses.
    let eps = |name: &str| {
        format!(
            "---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}}}\nsubsets:\n- addresses: \
             [{{ip: 198.18.4.70}}, {{ip: \"2001:2::4:70\"}}]\n  notReadyAddresses: [{{ip: \"2001:2::4:71\"}}]\n  \
             ports: [{{port: 80}}]\n"
        )
    };
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: both}}\nspec:\n  ipFamilyPolicy: PreferDualStack\n  \
         ports: [{{port: 80}}]\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: six}}\nspec:\n  \
         ipFamilies: [IPv6]\n  ports: [{{port: 80}}]\n{}",
        eps("both"),
        eps("six")
    );
    let r = resolve_text(&text, &dual());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        backends(svc(&r, "both")),
        [(ip("198.18.4.70"), 80, true), (ip("2001:2::4:70"), 80, true), (ip("2001:2::4:71"), 80, false)]
    );
    assert_eq!(backends(svc(&r, "six")), [(ip("2001:2::4:70"), 80, true), (ip("2001:2::4:71"), 80, false)]);
}
