//! `svcgate run` plumbing: the admin endpoint, stats registration, `svcgate status`,
//! and the kube source's clear failure without a kubeconfig.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use svcgate_common::model::Protocol;
use svcgate_control::admin::{fetch, fetch_status};
use svcgate_control::config::Config;
use svcgate_control::daemon::Daemon;
use svcgate_control::metrics::{PortStats, StatsSnapshot, StatsSource, WorkerRow};

/// `svcgate status` against the admin endpoint at `addr`: its stdout, once
/// it exited successfully.
fn status_of(addr: std::net::SocketAddr) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_svcgate")).args(["status", "--admin", &addr.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct FakeStats;

impl StatsSource for FakeStats {
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            ports: vec![PortStats::new("default", "nginx", 8080, Protocol::Tcp, 42, 4200)],
            drops: vec![("no_backend".into(), 3)],
            conntrack_entries: 7,
            conntrack_events: vec![("new".into(), 9), ("reclaimed_unassured".into(), 2)],
            snat_ports_exhausted: vec![("198.18.3.1".into(), 5)],
            dns_queries: vec![("answered".into(), String::new(), 11), ("slow".into(), "query_type".into(), 2)],
            restart: vec![("files_refused".into(), 1)],
            workers: vec![WorkerRow {
                rx: 1000,
                tx: 990,
                dropped: 10,
                busy_ratio: 0.25,
                cycles_per_packet: 812.5,
                busy_cycles: 812_500,
            }],
            tsc_mhz: 2596,
        }
    }
}

fn config() -> Config {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let text = std::fs::read_to_string(examples.join("svcgate.toml")).unwrap().replace("127.0.0.1:9901", "127.0.0.1:0");
    Config::parse(&text, &examples.join("svcgate.toml")).unwrap()
}

#[test]
fn admin_endpoint_serves_health_metrics_and_status() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let daemon = rt.block_on(Daemon::start(&config())).unwrap();
    assert!(daemon.wait_ready(Duration::from_secs(10)));
    let addr = daemon.admin_addr();
    assert_eq!(fetch(addr, "/healthz").unwrap(), "ok\n");
    assert_eq!(fetch(addr, "/readyz").unwrap(), "ready\n");
    assert!(fetch(addr, "/nope").is_err());

    // The dataplane's API: a reader of the published tables...
    let mut reader = daemon.tables().reader();
    reader.refresh();
    assert!(reader.get().generation() >= 1);
    assert!(reader.get().frontend_count() > 0);
    // ...and its counters.
    daemon.attach_stats(Arc::new(FakeStats));

    let m = fetch(addr, "/metrics").unwrap();
    for needle in [
        "svcgate_ready 1",
        "svcgate_services 5",
        "svcgate_sync_latency_seconds_count 1",
        "svcgate_service_packets_total{namespace=\"default\",service=\"nginx\",port=\"8080\",protocol=\"TCP\"} 42",
        "svcgate_drops_total{reason=\"no_backend\"} 3",
        "svcgate_conntrack_entries 7",
        "svcgate_conntrack_events_total{event=\"reclaimed_unassured\"} 2",
        "svcgate_snat_ports_exhausted_total{snat_addr=\"198.18.3.1\"} 5",
        "svcgate_state_restart{what=\"files_refused\"} 1",
        "svcgate_worker_busy_ratio{worker=\"0\"} 0.25",
        "svcgate_worker_cycles_per_packet{worker=\"0\"} 812.5",
        "svcgate_worker_busy_cycles_total{worker=\"0\"} 812500",
        "svcgate_worker_rx_packets_total{worker=\"0\"} 1000",
        "svcgate_dns_queries_total{verdict=\"answered\",reason=\"\"} 11",
        "svcgate_dns_queries_total{verdict=\"slow\",reason=\"query_type\"} 2",
    ] {
        assert!(m.contains(needle), "{needle} not in\n{m}");
    }
    let st = fetch_status(addr).unwrap();
    assert!(st.ready && st.dataplane_attached);
    assert_eq!(st.control.services.len(), 5);
    assert_eq!(st.stats.ports[0].bytes, 4200);

    // `svcgate status` prints the docs' Services with endpoints and counters.
    let so = status_of(addr);
    assert!(so.contains("nodeport-service   NodePort"), "{so}");
    assert!(so.contains("8080:30120/TCP"), "{so}");
    assert!(so.contains("198.18.3.10:80,198.18.3.11:80,198.18.3.12:80"), "{so}");
    assert!(so.lines().any(|l| l.starts_with("nginx ") && l.contains(" 42 ") && l.ends_with("4200")), "{so}");
    assert!(so.contains("generation 1, last sync"), "{so}");
    assert!(so.contains("dataplane attached"), "{so}");
    assert!(so.contains("DNS: zone cluster.local on 198.18.128.53, table generation 1"), "{so}");
    assert!(
        so.lines().any(|l| l.starts_with("0 ") && l.contains(" 1000 ") && l.contains(" 25% ") && l.ends_with(" 812")),
        "worker row with cycles per packet: {so}"
    );
    drop(daemon);
}

#[test]
fn dns_names_are_published_and_shown() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let text = std::fs::read_to_string(examples.join("svcgate.toml"))
        .unwrap()
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("# service = \"kube-system/kube-dns\"", "service = \"default/nginx\"");
    let cfg = Config::parse(&text, &examples.join("svcgate.toml")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let daemon = rt.block_on(Daemon::start(&cfg)).unwrap();
    assert!(daemon.wait_ready(Duration::from_secs(10)));
    // The workers' end: a reader of the DNS tables, and the addresses.
    let mut reader = daemon.dns_tables().reader();
    reader.refresh();
    let name = svcgate_dns::zone::DomainName::from_dotted("nginx-0.nginx-headless.default.svc.cluster.local").unwrap();
    assert!(reader.get().name(name.wire()).is_some());
    // nginx is dual-stack in the example (PreferDualStack): IPv4 first.
    let ips = daemon.controller().desired().services.iter().find(|s| s.name == "nginx").unwrap().cluster_ips.clone();
    let [std::net::IpAddr::V4(_), std::net::IpAddr::V6(_)] = ips[..] else { panic!("nginx is dual-stack: {ips:?}") };
    let mut want: Vec<std::net::IpAddr> = vec!["198.18.128.53".parse().unwrap()];
    want.extend(&ips);
    assert_eq!(daemon.dns_addresses(), want);
    let nginx = ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let nginx_list = ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");

    let so = status_of(daemon.admin_addr());
    assert!(
        so.contains(&format!("DNS: zone cluster.local on 198.18.128.53, {nginx_list}, table generation 1")),
        "{so}"
    );
    assert!(so.lines().any(|l| l.starts_with("DNS NAME ") && l.ends_with("ANSWERS")), "{so}");
    assert!(so.lines().any(|l| l.starts_with("nginx.default.svc.cluster.local ") && l.ends_with(&nginx)), "{so}");
    assert!(
        so.lines().any(|l| l.starts_with("nginx-headless.default.svc.cluster.local ")
            && l.ends_with(" 198.18.3.10,198.18.3.11,198.18.3.12")),
        "{so}"
    );
    assert!(so.lines().any(|l| l.trim_end() == "nginx-2.nginx-headless.default.svc.cluster.local"), "{so}");
    drop(daemon);
}

#[test]
fn status_without_a_daemon_fails_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_svcgate")).args(["status", "--admin", "127.0.0.1:1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the svcgate admin endpoint at 127.0.0.1:1"));
}

#[test]
fn kube_source_without_kubeconfig_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "kube = true\nservice_cidr = \"198.18.128.0/20\"\nadmin_listen = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_svcgate"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{se}");
    assert!(se.contains("kube source: no Kubernetes client configuration"), "{se}");
    assert!(se.contains("KUBECONFIG"), "{se}");
}

#[test]
fn bad_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "manifests = \".\"\nservice_cidr = \"nope\"\n").unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_svcgate")).args(["run", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(se.contains("c.toml: service_cidr:"), "{se}");
}

#[test]
fn deploy_configmap_holds_a_valid_config() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/configmap.yaml");
    let v: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let toml = v["data"]["svcgate.toml"].as_str().unwrap();
    let c = Config::parse(toml, Path::new("/etc/svcgate/svcgate.toml")).unwrap();
    assert_eq!(c.source, svcgate_control::config::SourceConfig::Kube);
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9901");
}

#[test]
fn a_dual_stack_daemon_shows_both_families() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dual-stack");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svcgate.toml");
    let text = format!(
        "manifests = {:?}\nservice_cidr = [\"198.18.128.0/20\", \"2001:2:0:8000::/112\"]\n\
         node_ips = [\"198.18.0.2\", \"2001:2::2\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         [dns]\naddresses = [\"2001:2::53\"]\nservice = \"prod/api\"\n",
        fixtures.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    let cfg = Config::load(&path).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let daemon = rt.block_on(Daemon::start(&cfg)).unwrap();
    assert!(daemon.wait_ready(Duration::from_secs(10)));
    let mut reader = daemon.tables().reader();
    reader.refresh();
    assert_eq!(reader.get().v6().entries().len(), 3);
    let want: Vec<std::net::IpAddr> =
        ["2001:2::53", "2001:2:0:8000::20", "198.18.128.20"].iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(daemon.dns_addresses(), want);

    let so = status_of(daemon.admin_addr());
    assert!(so.lines().any(|l| l.starts_with("prod ") && l.contains(" 2001:2:0:8000::20,198.18.128.20 ")), "{so}");
    assert!(so.contains("[2001:2::4:20]:8443"), "{so}");
    assert!(so.contains("DNS: zone cluster.local on 2001:2::53, 2001:2:0:8000::20, 198.18.128.20"), "{so}");
    assert!(
        so.lines()
            .any(|l| l.starts_with("api.prod.svc.cluster.local ") && l.ends_with(" 2001:2:0:8000::20,198.18.128.20")),
        "{so}"
    );
    drop(daemon);
}
