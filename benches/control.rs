//! Control-plane bench (issue 4 item 7): from parsed objects (k8s-openapi
//! Service + EndpointSlice values built in memory) to the generation a reader
//! sees.
//!
//! - full build + publish of N Services x 10 endpoints (N = 1k, 10k);
//! - one EndpointSlice change to published at 10k, p50/p99, while a reader
//!   thread keeps refreshing and reading the tables;
//! - a Service with 400 ports and 4 endpoints through rolling restarts (each
//!   Pod replaced in turn by one with a new IP), each change timed to published;
//! - the memory of the tables at 10k x 10 (an estimate from sizes and
//!   capacities, plus the RSS delta of building one table).
//!
//! Every address is in 198.18.0.0/15 (nothing is sent anywhere).
//! Environment: `CTLBENCH_CHANGES` (default 2000), `CTLBENCH_FULL_CHANGES`
//! (changes through `apply_objects`, default 50), `CTLBENCH_RESTARTS` (default
//! 50), `CTLBENCH_QUICK=1` (fewer repetitions).
//! Output lines starting with `RESULT ` are machine-readable (key value unit).

// The svcgate binary's allocator (control/src/main.rs), so the bench
// measures what the daemon does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use svcgate_common::model::Protocol;
use svcgate_common::table::ServiceTable;
use svcgate_control::controller::{Controller, SyncOutcome};
use svcgate_control::manifest::{Object, Origin, Sourced};
use svcgate_control::resolve::{resolve, Allocations, ResolveConfig};

const NS: &str = "bench";
const EPS: usize = 10;

fn cluster_ip(i: usize) -> Ipv4Addr {
    // 198.18.0.0/17 is the service CIDR; skip .0.0 and .0.1.
    Ipv4Addr::from(0xc612_0000u32 + 16 + i as u32)
}

/// Pod IPs in 198.19.0.0/16 (wrapping: nothing is sent, they need not be unique
/// across Services), from a running counter.
fn pod_ip(n: u64) -> Ipv4Addr {
    Ipv4Addr::from(0xc613_0000u32 + (n % 65_000) as u32 + 256)
}

fn service(i: usize, ports: usize) -> Sourced {
    let svc = Service {
        metadata: ObjectMeta { name: Some(format!("svc-{i}")), namespace: Some(NS.into()), ..Default::default() },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(cluster_ip(i).to_string()),
            ports: Some(
                (0..ports)
                    .map(|j| ServicePort {
                        name: Some(format!("p{j}")),
                        port: 1000 + j as i32,
                        target_port: Some(IntOrString::Int(8000 + j as i32)),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    Sourced { origin: Origin::api(), object: Object::Service(Arc::new(svc)) }
}

fn slice(i: usize, ports: usize, ips: &[Ipv4Addr]) -> Sourced {
    let es = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("svc-{i}-x7k2p")),
            namespace: Some(NS.into()),
            labels: Some(BTreeMap::from([("kubernetes.io/service-name".to_string(), format!("svc-{i}"))])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            (0..ports)
                .map(|j| EndpointPort {
                    name: Some(format!("p{j}")),
                    port: Some(8000 + j as i32),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
    };
    Sourced { origin: Origin::api(), object: Object::EndpointSlice(Arc::new(es)) }
}

fn cfg() -> ResolveConfig {
    ResolveConfig::new("198.18.0.0/17".parse().unwrap(), vec![Ipv4Addr::new(198, 19, 255, 1)])
}

/// The cluster: Services first, then their slices (the kube source's order).
struct Cluster {
    objects: Vec<Sourced>,
    ips: Vec<Vec<Ipv4Addr>>,
    ports: Vec<usize>,
    next_ip: u64,
}

impl Cluster {
    fn new(n: usize) -> Self {
        let mut next_ip = 0;
        let mut ips = Vec::with_capacity(n);
        for _ in 0..n {
            ips.push(
                (0..EPS)
                    .map(|_| {
                        next_ip += 1;
                        pod_ip(next_ip)
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let ports = vec![1; n];
        let mut objects: Vec<Sourced> = (0..n).map(|i| service(i, 1)).collect();
        objects.extend((0..n).map(|i| slice(i, 1, &ips[i])));
        Self { objects, ips, ports, next_ip }
    }

    fn n(&self) -> usize {
        self.ips.len()
    }

    /// Makes Service `i` one with `ports` ports and these endpoints.
    fn reshape(&mut self, i: usize, ports: usize, ips: Vec<Ipv4Addr>) {
        let n = self.n();
        self.objects[i] = service(i, ports);
        self.objects[n + i] = slice(i, ports, &ips);
        self.ports[i] = ports;
        self.ips[i] = ips;
    }

    /// Replaces endpoint `k` of Service `i` with a new Pod IP; returns the new slice.
    fn replace_endpoint(&mut self, i: usize, k: usize) -> Sourced {
        self.next_ip += 1;
        self.ips[i][k] = pod_ip(self.next_ip + 70_000);
        let s = slice(i, self.ports[i], &self.ips[i]);
        let n = self.n();
        self.objects[n + i] = s.clone();
        s
    }
}

/// A reader thread that refreshes and reads the tables the way a worker does
/// at batch boundaries (a lookup + Maglev pick per "packet").
struct ReaderThread {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ReaderThread {
    fn start(c: &Controller, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let mut r = c.reader();
        let (s, rd) = (Arc::clone(&stop), Arc::clone(&reads));
        let handle = std::thread::spawn(move || {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut local = 0u64;
            while !s.load(Ordering::Relaxed) {
                r.refresh();
                let t: &ServiceTable = r.get();
                // one "batch" of 64 lookups
                for _ in 0..64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = (x % n as u64) as usize;
                    if let Some(f) = t.frontend(cluster_ip(i), Protocol::Tcp, 1000) {
                        if let Some(e) = t.v4().entry(f.entry) {
                            std::hint::black_box(e.maglev.pick(x as u32));
                        }
                    }
                }
                local += 64;
                if local & 0xffff == 0 {
                    rd.store(local, Ordering::Relaxed);
                }
            }
            rd.store(local, Ordering::Relaxed);
        });
        Self { stop, reads, handle: Some(handle) }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.reads.load(Ordering::Relaxed)
    }
}

/// Waits until every reader holds at least the current version; returns when.
fn wait_readers(c: &Controller) -> Instant {
    let p = c.tables();
    let v = p.version();
    while !p.all_readers_at(v) {
        std::hint::spin_loop();
    }
    Instant::now()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let (p50, p99, max) = (pct(&v, 0.5), pct(&v, 0.99), *v.last().unwrap_or(&Duration::ZERO));
    println!("{name}: n={} p50={:.1} us p99={:.1} us max={:.1} us", v.len(), us(p50), us(p99), us(max));
    (p50, p99, max)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|x| x.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Bytes of a table, from sizes and capacities (heap allocator overhead not
/// counted): the frontend hash map, the entries array, each entry (Arc header,
/// struct, backends, Maglev slots, source ranges, identity strings).
fn table_bytes(t: &ServiceTable) -> (usize, usize, usize, usize, usize) {
    use std::mem::size_of;
    use svcgate_common::table::{Backend, Frontend, FrontendKey, ServiceEntry};
    let fcap = t.frontend_count().next_power_of_two().max(4) * 8 / 7 + 1;
    let buckets = (t.frontend_count() * 8 / 7).next_power_of_two().max(fcap.next_power_of_two() / 2);
    let frontends = buckets * (size_of::<(FrontendKey, Frontend)>() + 1) + 16;
    let entries_arr = std::mem::size_of_val(t.v4().entries()) + 16;
    let mut entries = 0;
    let mut maglev = 0;
    let mut backends = 0;
    // Ports of a Service with the same endpoints share one Maglev table.
    let mut seen = std::collections::HashSet::new();
    for e in t.v4().entries() {
        entries += 16 + size_of::<ServiceEntry>() + e.source_ranges.len() * 8;
        entries += 3 * 16 + e.id.namespace.len() + e.id.name.len() + e.id.port_name.len();
        backends += e.backends.len() * size_of::<Backend>();
        if seen.insert(e.maglev.slots().as_ptr()) {
            maglev += e.maglev.len() * size_of::<u16>() + 16;
        }
    }
    (frontends, entries_arr, entries, maglev, backends)
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let quick = std::env::var("CTLBENCH_QUICK").is_ok_and(|v| v == "1");
    let changes = env("CTLBENCH_CHANGES", if quick { 500 } else { 2000 });
    let full_changes = env("CTLBENCH_FULL_CHANGES", if quick { 10 } else { 50 });
    let restarts = env("CTLBENCH_RESTARTS", if quick { 10 } else { 50 });
    println!("svcgate control bench (quick={quick})");

    // CTLBENCH_ONLY=restart: only the rolling restart (for profiling).
    let only_restart = std::env::var("CTLBENCH_ONLY").is_ok_and(|v| v == "restart");
    // 1. Full build + publish, 1k and 10k.
    for (n, reps) in if only_restart {
        vec![]
    } else {
        vec![(1_000usize, if quick { 5 } else { 20 }), (10_000, if quick { 3 } else { 7 })]
    } {
        let reps: usize = reps;
        let cluster = Cluster::new(n);
        let mut times = Vec::new();
        for _ in 0..reps {
            let c = Controller::new(cfg());
            // A worker's reader; it takes the new generation at its next
            // batch boundary (the refresh below).
            let mut r = c.reader();
            let t0 = Instant::now();
            let out = c.apply_objects(&cluster.objects);
            assert!(r.refresh());
            let t1 = Instant::now();
            assert_eq!(r.get().generation(), 1);
            assert!(matches!(out, SyncOutcome::Full(1)), "{out:?}");
            let st = c.status();
            assert!(st.errors.is_empty(), "{:?}", &st.errors[..st.errors.len().min(3)]);
            assert_eq!(st.entries, n);
            assert_eq!(st.backends, n * EPS);
            times.push(t1 - t0);
        }
        times.sort();
        let med = pct(&times, 0.5);
        println!(
            "full build+publish {n} Services x {EPS} endpoints: median {:.1} ms (min {:.1}, max {:.1}, {reps} runs)",
            ms(med),
            ms(times[0]),
            ms(*times.last().unwrap())
        );
        println!("RESULT full_{n} {:.3} ms", ms(med));
        // Where the time goes (one run each).
        let t0 = Instant::now();
        let copy = cluster.objects.clone();
        let t1 = Instant::now();
        let res = resolve(&copy, &cfg(), &Default::default(), &Allocations::default());
        let t2 = Instant::now();
        let (t, _) = ServiceTable::build(&res.desired, 1);
        let t3 = Instant::now();
        drop((t, res, copy));
        println!(
            "  breakdown at {n}: clone objects {:.1} ms, resolve {:.1} ms, ServiceTable::build {:.1} ms",
            ms(t1 - t0),
            ms(t2 - t1),
            ms(t3 - t2)
        );
    }

    // 2. One EndpointSlice change at 10k, reader running.
    let n = 10_000;
    let mut cluster = Cluster::new(n);
    let c = Controller::new(cfg());
    assert!(matches!(c.apply_objects(&cluster.objects), SyncOutcome::Full(_)));
    let rt = ReaderThread::start(&c, n);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };

    // 2a. Through apply_objects (the whole object set, as the kube source calls it today).
    let mut v = Vec::new();
    let (full_changes, changes) = if only_restart { (0, 0) } else { (full_changes, changes) };
    for _ in 0..full_changes {
        let i = (rnd() % n as u64) as usize;
        let k = (rnd() % EPS as u64) as usize;
        cluster.replace_endpoint(i, k);
        let t0 = Instant::now();
        let out = c.apply_objects(&cluster.objects);
        let t1 = wait_readers(&c);
        assert!(matches!(out, SyncOutcome::Incremental(_, 1)), "{out:?}");
        v.push(t1 - t0);
    }
    if !v.is_empty() {
        let (p50, p99, _) = summary("one change at 10k via apply_objects (all objects re-resolved)", v);
        println!("RESULT change_all_p50 {:.3} us", us(p50));
        println!("RESULT change_all_p99 {:.3} us", us(p99));
    }

    // 2b. Through apply_changes (only the changed objects).
    let mut v = Vec::new();
    let mut vp = Vec::new();
    for _ in 0..changes {
        let i = (rnd() % n as u64) as usize;
        let k = (rnd() % EPS as u64) as usize;
        let s = cluster.replace_endpoint(i, k);
        let t0 = Instant::now();
        let out = c.apply_changes(vec![s], Vec::new());
        let tp = Instant::now();
        let t1 = wait_readers(&c);
        assert!(matches!(out, SyncOutcome::Incremental(_, 1)), "{out:?}");
        v.push(t1 - t0);
        vp.push(tp - t0);
    }
    let (p50, p99, _) = summary("one change at 10k via apply_changes, to seen by the reader", v);
    println!("RESULT change_p50 {:.3} us", us(p50));
    println!("RESULT change_p99 {:.3} us", us(p99));
    let (p50, p99, _) = summary("one change at 10k via apply_changes, to published (swap done)", vp);
    println!("RESULT change_pub_p50 {:.3} us", us(p50));
    println!("RESULT change_pub_p99 {:.3} us", us(p99));
    // The incremental result equals a full resolution of the same objects.
    {
        let check = Controller::new(cfg());
        check.apply_objects(&cluster.objects);
        assert!(check.desired() == c.desired(), "incremental state differs from a full resolution");
    }

    // 3. Rolling restart of a Service with 400 ports and 4 endpoints, among the 10k.
    let big = 4242;
    let ips: Vec<Ipv4Addr> = (0..4).map(|k| Ipv4Addr::new(198, 19, 254, 10 + k)).collect();
    cluster.reshape(big, 400, ips);
    assert!(matches!(c.apply_objects(&cluster.objects), SyncOutcome::Full(_)));
    let mut v = Vec::new();
    let mut vp = Vec::new();
    for _ in 0..restarts {
        for k in 0..4 {
            let s = cluster.replace_endpoint(big, k);
            let t0 = Instant::now();
            let out = c.apply_changes(vec![s], Vec::new());
            let tp = Instant::now();
            let t1 = wait_readers(&c);
            assert!(matches!(out, SyncOutcome::Incremental(_, 400)), "{out:?}");
            v.push(t1 - t0);
            vp.push(tp - t0);
        }
    }
    // Where the slowest steps fell (step index, microseconds): a cold first
    // step or scattered preemptions look different.
    let mut worst: Vec<(usize, f64)> = vp.iter().map(|d| us(*d)).enumerate().collect();
    worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    worst.truncate(5);
    println!("400-port restart, slowest steps (index, us): {worst:.1?}");
    let (p50, _, max) = summary("400-port Service, rolling restart step, to published (swap done)", vp);
    println!("RESULT restart400_pub_p50 {:.3} us", us(p50));
    println!("RESULT restart400_pub_max {:.3} us", us(max));
    let (p50, p99, max) = summary("400-port Service, rolling restart step (4 per restart) at 10k", v);
    println!("RESULT restart400_p50 {:.3} us", us(p50));
    println!("RESULT restart400_p99 {:.3} us", us(p99));
    println!("RESULT restart400_max {:.3} us", us(max));
    let reads = rt.stop();
    println!("reader thread: {reads} lookups during the change runs");
    {
        let check = Controller::new(cfg());
        check.apply_objects(&cluster.objects);
        assert!(check.desired() == c.desired(), "incremental state differs from a full resolution");
    }
    drop(c);

    // 4. Memory of the tables at 10k x 10.
    let cluster = Cluster::new(n);
    let c = Controller::new(cfg());
    c.apply_objects(&cluster.objects);
    let desired = c.desired();
    drop(c);
    let before = rss_bytes();
    let (t, _) = ServiceTable::build(&desired, 1);
    let after = rss_bytes();
    let (f, a, e, m, b) = table_bytes(&t);
    let total = f + a + e + m + b;
    println!(
        "tables at 10k x 10 (estimate from sizes/capacities): frontends {:.2} MiB, entry array {:.2} MiB, entries {:.2} MiB, \
         Maglev {:.2} MiB, backends {:.2} MiB, total {:.2} MiB; RSS delta of one build {:.2} MiB",
        f as f64 / 1048576.0,
        a as f64 / 1048576.0,
        e as f64 / 1048576.0,
        m as f64 / 1048576.0,
        b as f64 / 1048576.0,
        total as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / 1048576.0
    );
    println!("RESULT table_mib {:.3} MiB", total as f64 / 1048576.0);
    println!("RESULT table_rss_mib {:.3} MiB", after.saturating_sub(before) as f64 / 1048576.0);
    std::hint::black_box(&t);
}
