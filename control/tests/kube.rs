//! The kube source's translation path, on watcher events built here (no cluster).

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use svcgate_common::model::Protocol;
use svcgate_control::controller::{Controller, SyncOutcome};
use svcgate_control::kube_source::{KubeEvent, KubeState};
use svcgate_control::resolve::ResolveConfig;

fn svc(name: &str, ip: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
        "spec": {"clusterIP": ip, "type": "ClusterIP", "selector": {"app": "nginx"},
                 "ports": [{"name": "service0", "port": 8080, "targetPort": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

fn slice(name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
    let eps: Vec<_> =
        ips.iter().map(|ip| serde_json::json!({"addresses": [ip], "conditions": {"ready": true}})).collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "service0", "port": 80, "protocol": "TCP"}],
        "endpoints": eps
    }))
    .unwrap()
}

fn backends(ctl: &Controller, vip: Ipv4Addr) -> Vec<Ipv4Addr> {
    let t = ctl.tables().current();
    let f = t.frontend(vip, Protocol::Tcp, 8080).expect("frontend");
    t.v4().entry(f.entry).unwrap().backends.iter().map(|b| b.addr).collect()
}

#[test]
fn watcher_events_feed_the_same_path_as_manifests() {
    // The cluster's own ranges: load only, nothing is sent (and the API
    // server already checked clusterIPs, so no range check here).
    let mut cfg = ResolveConfig::new("198.18.128.0/20".parse().unwrap(), Vec::<std::net::IpAddr>::new());
    cfg.check_cluster_ip_range = false;
    let ctl = Controller::new(cfg);
    let mut st = KubeState::default();
    let vip = Ipv4Addr::new(10, 247, 1, 2);

    // Initial list of both kinds; not synced until both InitDone.
    st.apply(KubeEvent::Service(Event::Init));
    st.apply(KubeEvent::Service(Event::InitApply(svc("nginx", "10.247.1.2"))));
    assert!(!st.apply(KubeEvent::Service(Event::InitApply(svc("gone-later", "10.247.1.3")))));
    assert!(st.apply(KubeEvent::Service(Event::InitDone)));
    assert!(!st.synced());
    st.apply(KubeEvent::EndpointSlice(Event::Init));
    st.apply(KubeEvent::EndpointSlice(Event::InitApply(slice("nginx-a", "nginx", &["198.18.3.10", "198.18.3.11"]))));
    st.apply(KubeEvent::EndpointSlice(Event::InitDone));
    assert!(st.synced());
    assert!(matches!(ctl.apply_objects(&st.objects()), SyncOutcome::Full(1)));
    assert_eq!(backends(&ctl, vip), [Ipv4Addr::new(198, 18, 3, 10), Ipv4Addr::new(198, 18, 3, 11)]);

    // Modified: a Pod replaced -> endpoints-only publish.
    assert!(st.apply(KubeEvent::EndpointSlice(Event::Apply(slice(
        "nginx-a",
        "nginx",
        &["198.18.3.10", "198.18.3.13"]
    )))));
    assert!(matches!(ctl.apply_objects(&st.objects()), SyncOutcome::Incremental(2, 1)));
    assert_eq!(backends(&ctl, vip), [Ipv4Addr::new(198, 18, 3, 10), Ipv4Addr::new(198, 18, 3, 13)]);
    // The same object again (a resync) changes nothing.
    assert!(!st.apply(KubeEvent::EndpointSlice(Event::Apply(slice(
        "nginx-a",
        "nginx",
        &["198.18.3.10", "198.18.3.13"]
    )))));

    // Deleted.
    assert!(st.apply(KubeEvent::EndpointSlice(Event::Delete(slice("nginx-a", "nginx", &[])))));
    ctl.apply_objects(&st.objects());
    assert!(backends(&ctl, vip).is_empty());

    // A relist after 410 Gone / a disconnect: half-way through, nothing
    // changes; at InitDone the store is replaced whole, so a Service deleted
    // while the watch was down disappears.
    st.apply(KubeEvent::Service(Event::Init));
    assert!(!st.apply(KubeEvent::Service(Event::InitApply(svc("nginx", "10.247.1.2")))));
    assert_eq!(st.objects().len(), 2, "the old set keeps serving during the relist");
    assert!(st.apply(KubeEvent::Service(Event::InitDone)));
    assert_eq!(st.objects().len(), 1);
    assert!(matches!(ctl.apply_objects(&st.objects()), SyncOutcome::Full(_)));
    let t = ctl.tables().current();
    assert!(t.frontend(Ipv4Addr::new(10, 247, 1, 3), Protocol::Tcp, 8080).is_none());
    assert!(t.frontend(vip, Protocol::Tcp, 8080).is_some());
}
