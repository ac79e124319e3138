//! Live updates: the controller and the directory watcher.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use svcgate_common::model::Protocol;
use svcgate_common::publish::Reader;
use svcgate_common::table::ServiceTable;
use svcgate_control::controller::{Controller, SyncOutcome};
use svcgate_control::manifest::parse_str;
use svcgate_control::resolve::ResolveConfig;
use svcgate_control::watch::watch_dir;

fn lab_cfg() -> ResolveConfig {
    ResolveConfig::new("198.18.128.0/20".parse().unwrap(), vec![Ipv4Addr::new(198, 18, 0, 2)])
}

fn copy_examples() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

fn pod(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: nginx}}\nspec:\n  containers:\n  - name: c\n    ports:\n    - {{name: http, containerPort: 80}}\n    - {{name: echo, containerPort: 7, protocol: UDP}}\nstatus:\n  podIP: {ip}\n  conditions: [{{type: Ready, status: \"True\"}}]\n"
    )
}

/// The backends' addresses of the entry serving `vip:port/proto`.
fn backends(t: &ServiceTable, vip: Ipv4Addr, proto: Protocol, port: u16) -> Vec<Ipv4Addr> {
    let f = t.frontend(vip, proto, port).expect("frontend");
    t.v4().entry(f.entry).unwrap().backends.iter().map(|b| b.addr).collect()
}

fn wait_for(reader: &mut Reader<ServiceTable>, what: &str, mut ok: impl FnMut(&ServiceTable) -> bool) {
    let t0 = Instant::now();
    loop {
        reader.refresh();
        if ok(reader.get()) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ips(last: &[u8]) -> Vec<Ipv4Addr> {
    last.iter().map(|l| Ipv4Addr::new(198, 18, 3, *l)).collect()
}

#[test]
fn deleting_a_pod_and_adding_another_moves_the_endpoints() {
    let dir = copy_examples();
    let ctl = Arc::new(Controller::new(lab_cfg()));
    assert!(!ctl.is_ready());
    let watch = watch_dir(Arc::clone(&ctl), dir.path(), Duration::from_millis(10)).unwrap();
    assert!(ctl.is_ready());
    let mut reader = ctl.reader();
    reader.refresh();
    let gen0 = reader.get().generation();
    assert!(gen0 >= 1);
    let vip = ctl.desired().services.iter().find(|s| s.name == "nginx").unwrap().cluster_ip().unwrap();
    let std::net::IpAddr::V4(vip) = vip else { panic!("an IPv4 clusterIP") };
    assert_eq!(backends(reader.get(), vip, Protocol::Tcp, 8080), ips(&[10, 11, 12]));
    let lb_entry_before = {
        let t = reader.get();
        let f = t.frontend(Ipv4Addr::new(198, 19, 0, 100), Protocol::Tcp, 80).unwrap();
        Arc::clone(&t.v4().entries()[f.entry as usize])
    };

    // kubectl delete po nginx-1; the Deployment makes a new one with another IP.
    std::fs::remove_file(dir.path().join("pod-nginx-1.yaml")).unwrap();
    std::fs::write(dir.path().join("pod-nginx-3.yaml"), pod("nginx-3", "198.18.3.13")).unwrap();
    wait_for(&mut reader, "the new Pod", |t| backends(t, vip, Protocol::Tcp, 8080) == ips(&[10, 12, 13]));
    let t = reader.get();
    assert!(t.generation() > gen0);
    assert!(t.frontend(vip, Protocol::Udp, 7).is_none(), "udp-echo has its own VIP");
    let echo_vip = ctl.desired().services.iter().find(|s| s.name == "udp-echo").unwrap().cluster_ip().unwrap();
    let std::net::IpAddr::V4(echo_vip) = echo_vip else { panic!("an IPv4 clusterIP") };
    assert_eq!(backends(t, echo_vip, Protocol::Udp, 7), ips(&[10, 12, 13]));
    // Endpoint-only changes went the incremental way.
    assert!(ctl.metrics.incremental_builds.load(Ordering::Relaxed) >= 1);
    assert_eq!(ctl.metrics.full_builds.load(Ordering::Relaxed), 1);
    assert!(ctl.metrics.sync_latency.count() >= 2);
    // Status follows.
    let st = ctl.status();
    let ep = st.endpoints.iter().find(|e| e.name == "nginx").unwrap();
    assert_eq!(ep.endpoints, "198.18.3.10:80,198.18.3.12:80,198.18.3.13:80");
    drop(lb_entry_before);
    watch.stop();
}

#[test]
fn a_broken_file_keeps_its_last_good_objects() {
    let dir = copy_examples();
    let ctl = Arc::new(Controller::new(lab_cfg()));
    let watch = watch_dir(Arc::clone(&ctl), dir.path(), Duration::from_millis(10)).unwrap();
    let mut reader = ctl.reader();
    reader.refresh();
    let gen0 = reader.get().generation();
    std::fs::write(dir.path().join("nginx-svc.yaml"), "apiVersion: v1\nkind: Service\nmetadata: [\n").unwrap();
    // A valid new Service alongside, so we know the broken one was processed.
    std::fs::write(
        dir.path().join("zz.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: extra}\nspec: {ports: [{port: 81}]}\n",
    )
    .unwrap();
    wait_for(&mut reader, "the extra Service", |t| {
        t.generation() > gen0 && t.v4().entries().iter().any(|e| &*e.id.name == "extra")
    });
    let t = reader.get();
    assert!(t.v4().entries().iter().any(|e| &*e.id.name == "nginx" && e.id.port == 8080), "nginx still served");
    let st = ctl.status();
    assert!(st.errors.iter().any(|e| e.contains("nginx-svc.yaml:") && e.contains("not valid YAML")), "{:?}", st.errors);

    // An invalid new version of a Service keeps the last good one serving.
    std::fs::write(
        dir.path().join("nodeport.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: nodeport-service}\nspec:\n  type: NodePort\n  selector: {app: nginx}\n  ports: [{port: 8080, targetPort: 80, nodePort: 80}]\n",
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        if ctl.status().errors.iter().any(|e| e.contains("spec.ports[0].nodePort") && e.contains("nodeport.yaml")) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", ctl.status().errors);
        std::thread::sleep(Duration::from_millis(5));
    }
    reader.refresh();
    assert!(reader.get().frontend(Ipv4Addr::new(198, 18, 0, 2), Protocol::Tcp, 30120).is_some());
    watch.stop();
}

/// Waits until the status lists an error containing every one of `needles`.
fn wait_error(ctl: &Controller, needles: &[&str]) {
    let t0 = Instant::now();
    while !ctl.status().errors.iter().any(|e| needles.iter().all(|n| e.contains(n))) {
        assert!(t0.elapsed() < Duration::from_secs(10), "no error with {needles:?}: {:?}", ctl.status().errors);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A Service `name` on port 81 (to see a later change go through).
fn extra(dir: &Path, name: &str) {
    let text = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 81}}]}}\n");
    std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
}

#[test]
fn unusable_entries_keep_the_last_good_state_and_the_watch_alive() {
    let dir = copy_examples();
    let d = dir.path();
    let ctl = Arc::new(Controller::new(lab_cfg()));
    let watch = watch_dir(Arc::clone(&ctl), d, Duration::from_millis(10)).unwrap();
    let mut reader = ctl.reader();
    reader.refresh();
    let served = |t: &ServiceTable, name: &str| t.v4().entries().iter().any(|e| &*e.id.name == name);
    assert!(served(reader.get(), "nginx"));

    // A FIFO named like a manifest: never opened for a blocking read (the
    // watch thread would hang there); a later change still applies.
    let fifo = d.join("pipe.yaml");
    let st = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    wait_error(&ctl, &["pipe.yaml", "not a regular file"]);
    extra(d, "after-fifo");
    wait_for(&mut reader, "the Service after the FIFO", |t| served(t, "after-fifo"));

    // A file replaced by a FIFO: an error, its last good objects stay.
    std::fs::remove_file(d.join("nginx-svc.yaml")).unwrap();
    let st = std::process::Command::new("mkfifo").arg(d.join("nginx-svc.yaml")).status().unwrap();
    assert!(st.success());
    wait_error(&ctl, &["nginx-svc.yaml", "not a regular file"]);
    extra(d, "after-fifo2");
    wait_for(&mut reader, "the Service after the second FIFO", |t| served(t, "after-fifo2"));
    // Removed while it was a FIFO, so its objects went with the file; put back.
    std::fs::remove_file(d.join("nginx-svc.yaml")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests/nginx-svc.yaml"),
        d.join("nginx-svc.yaml"),
    )
    .unwrap();
    wait_for(&mut reader, "nginx back", |t| served(t, "nginx"));

    // Symlink loops: a directory link back to the tree (walked once, not
    // forever, and no Service counted twice) and two file links to each other.
    std::os::unix::fs::symlink(".", d.join("loop")).unwrap();
    std::os::unix::fs::symlink("b-loop.yaml", d.join("a-loop.yaml")).unwrap();
    std::os::unix::fs::symlink("a-loop.yaml", d.join("b-loop.yaml")).unwrap();
    wait_error(&ctl, &["loop", "symbolic link loop"]);
    wait_error(&ctl, &["a-loop.yaml", "cannot read"]);
    extra(d, "after-loops");
    wait_for(&mut reader, "the Service after the loops", |t| served(t, "after-loops"));
    assert!(!ctl.status().errors.iter().any(|e| e.contains("already exists")), "{:?}", ctl.status().errors);

    // A 100 MB file (sparse: nothing is written, and nothing must be read).
    let big = std::fs::File::create(d.join("big.yaml")).unwrap();
    big.set_len(100 << 20).unwrap();
    drop(big);
    wait_error(&ctl, &["big.yaml", "104857600 bytes is more than the 33554432"]);
    // A file that was good and grew too large keeps its last good objects.
    let f = std::fs::OpenOptions::new().write(true).open(d.join("nginx-svc.yaml")).unwrap();
    f.set_len(40 << 20).unwrap();
    drop(f);
    wait_error(&ctl, &["nginx-svc.yaml", "more than the 33554432"]);
    extra(d, "after-big");
    wait_for(&mut reader, "the Service after the big files", |t| served(t, "after-big"));
    assert!(served(reader.get(), "nginx"), "nginx still served from its last good version");

    // All fixed: the errors go.
    for f in ["pipe.yaml", "loop", "a-loop.yaml", "b-loop.yaml", "big.yaml"] {
        std::fs::remove_file(d.join(f)).unwrap();
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests/nginx-svc.yaml"),
        d.join("nginx-svc.yaml"),
    )
    .unwrap();
    let t0 = Instant::now();
    while !ctl.status().errors.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", ctl.status().errors);
        std::thread::sleep(Duration::from_millis(5));
    }
    watch.stop();
}

fn parsed(name: &str, text: &str) -> BTreeMap<PathBuf, Option<svcgate_control::manifest::ParsedFile>> {
    let p = PathBuf::from(name);
    let f = parse_str(&p, text);
    BTreeMap::from([(p, Some(f))])
}

#[test]
fn endpoint_changes_share_untouched_entries_and_frontends() {
    let ctl = Controller::new(lab_cfg());
    let svcs = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {selector: {app: a}, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {selector: {app: b}, ports: [{port: 80}]}\n";
    assert!(matches!(ctl.apply_files(parsed("svc.yaml", svcs)), SyncOutcome::Full(1)));
    let pods = |ip: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p, labels: {{app: a}}}}\nstatus: {{podIP: {ip}, conditions: [{{type: Ready, status: \"True\"}}]}}\n")
    };
    assert!(matches!(ctl.apply_files(parsed("pod.yaml", &pods("198.18.7.1"))), SyncOutcome::Incremental(2, 1)));
    let t2 = ctl.tables().current();
    assert!(matches!(ctl.apply_files(parsed("pod.yaml", &pods("198.18.7.2"))), SyncOutcome::Incremental(3, 1)));
    let t3 = ctl.tables().current();
    assert_eq!(ctl.apply_files(parsed("pod.yaml", &pods("198.18.7.2"))), SyncOutcome::Unchanged);
    assert!(!Arc::ptr_eq(&t2.v4().entries()[0], &t3.v4().entries()[0]), "a's entry rebuilt");
    assert!(Arc::ptr_eq(&t2.v4().entries()[1], &t3.v4().entries()[1]), "b's entry shared");
    assert_eq!(t3.v4().entries()[0].backends[0].addr, Ipv4Addr::new(198, 18, 7, 2));
    // A Service change is a full build.
    let svcs2 = svcs.replace("port: 80}]}\n---", "port: 81}]}\n---");
    assert!(matches!(ctl.apply_files(parsed("svc.yaml", &svcs2)), SyncOutcome::Full(4)));
}

#[test]
fn readers_see_whole_generations_during_swaps() {
    // Generation g has every entry's backends count equal to g % 4 + 1:
    // a reader must never see a mix.
    let ctl = Arc::new(Controller::new(lab_cfg()));
    let svcs: String = (0..20)
        .map(|i| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{selector: {{app: x}}, ports: [{{port: 80}}]}}\n---\n"))
        .collect();
    let pods = |n: usize| -> String {
        (0..n)
            .map(|i| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, labels: {{app: x}}}}\nstatus: {{podIP: 198.18.8.{}, conditions: [{{type: Ready, status: \"True\"}}]}}\n---\n", i + 1))
            .collect()
    };
    let mut first = parsed("svc.yaml", &svcs);
    first.extend(parsed("pods.yaml", &pods(1)));
    ctl.apply_files(first);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The highest generation the reader saw: the writer goes on past its
    // 200 rounds until the reader has seen a swap (on a loaded machine the
    // reader thread may start late), within a bound.
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut reader = ctl.reader();
    let (s2, c2, seen2) = (Arc::clone(&stop), Arc::clone(&ctl), Arc::clone(&seen));
    let worker = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            reader.refresh();
            let t = reader.get();
            let n = t.v4().entries()[0].backends.len();
            assert!(t.v4().entries().iter().all(|e| e.backends.len() == n), "mixed generation {}", t.generation());
            seen2.fetch_max(t.generation(), Ordering::Relaxed);
        }
        drop(c2);
    });
    for round in 0..20_000 {
        ctl.apply_files(parsed("pods.yaml", &pods(round % 4 + 1)));
        if round >= 200 && seen.load(Ordering::Relaxed) > 1 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert!(seen.load(Ordering::Relaxed) > 1, "the reader saw no swap");
}
