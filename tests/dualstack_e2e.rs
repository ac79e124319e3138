//! Dual-stack end to end: `svcgate run` on a gateway between a client and
//! three Pods in network namespaces (`sgx-ds6-*`), every link dual-stack,
//! serving manifests with three Services:
//!
//! * `web`: LoadBalancer, RequireDualStack, clusterIPs 198.18.128.10 and
//!   2001:2:0:8000::10, TCP 8080 -> 80 and UDP 8053 -> 7 (NodePorts 30180
//!   and 30181 on both node IPs), LoadBalancer ingress 198.19.0.10 and
//!   2001:2:0:9000::10, snat mode (the default): the Pods see the gateway's
//!   SNAT address of the family;
//! * `webd`: the same on 198.18.128.11 and 2001:2:0:8000::11 with the
//!   `svcgate.io/forwarding-mode: dnat` annotation: the Pods see the client;
//! * `web6`: IPv6 only (SingleStack, ipFamilies [IPv6]) on 2001:2:0:8000::12.
//!
//! ```text
//! cli  c0 198.18.1.2/24 2001:2:0:1::2/64   routes the service CIDRs and the
//!                                          LoadBalancer ranges via the gateway
//!  |
//! gw   g0 198.18.1.1/24 2001:2:0:1::1/64 (node IPs)   ip_forward=0, IPv6 forwarding=0
//!      g1 198.18.3.1/24 2001:2:0:3::1/64 (SNAT addresses)
//!  |
//! sw   bridge br0: sg0, sb1..sb3
//!  |
//! b1..b3  eth0 198.18.3.10-12/24 2001:2:0:3::10-12/64, default routes via the gateway;
//!         scripts/lab-backend.py web-N: GET /peer and UDP "peer?" answer "web-N <peer address>"
//! ```
//!
//! It checks TCP and UDP through `web` (clusterIPs, NodePorts, LoadBalancer
//! IPs) and `webd` over both families (every
//! Pod answers; the peer address the Pod sees is the mode's), `web6` over
//! IPv6 and its lack of an IPv4 address, and that a Pod whose manifest is
//! deleted gets no new connection of either family. The first connection to
//! a Pod may be lost while the gateway resolves its neighbour (ARP or NDP):
//! every probe is retried, within a bound.
//!
//! Needs root, python3, curl and the `svcgate` binary beside the test
//! binary (`cargo build -p svcgate-control`); without them it skips with a
//! message, except under CI=true, where it fails. Addresses: 198.18.0.0/15
//! and 2001:2::/48 only, inside the test's own namespaces.

mod netns;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{require_root, skip_unless, Lab};

#[test]
#[ignore]
fn child_entry() {
    netns::child_main()
}

const CLIENT4: &str = "198.18.1.2";
const CLIENT6: &str = "2001:2:0:1::2";
const NODE4: &str = "198.18.1.1";
const NODE6: &str = "2001:2:0:1::1";
const SNAT4: &str = "198.18.3.1";
const SNAT6: &str = "2001:2:0:3::1";
/// (name, IPv4, IPv6) of each Pod.
const PODS: [(&str, &str, &str); 3] = [
    ("web-0", "198.18.3.10", "2001:2:0:3::10"),
    ("web-1", "198.18.3.11", "2001:2:0:3::11"),
    ("web-2", "198.18.3.12", "2001:2:0:3::12"),
];
const WEB4: &str = "198.18.128.10";
const WEB6: &str = "2001:2:0:8000::10";
const WEBD4: &str = "198.18.128.11";
const WEBD6: &str = "2001:2:0:8000::11";
const ONLY6: &str = "2001:2:0:8000::12";
/// `web`'s LoadBalancer ingress IPs.
const LB4: &str = "198.19.0.10";
const LB6: &str = "2001:2:0:9000::10";
/// `web`'s NodePorts (TCP, UDP) on both node IPs.
const NODE_PORTS: (u16, u16) = (30180, 30181);
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 8053;

const SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: 198.18.128.10
  clusterIPs: ["198.18.128.10", "2001:2:0:8000::10"]
  selector:
    app: web
  ports:
  - {name: http, port: 8080, targetPort: 80, protocol: TCP, nodePort: 30180}
  - {name: echo, port: 8053, targetPort: 7, protocol: UDP, nodePort: 30181}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.0.10
    - ip: "2001:2:0:9000::10"
---
apiVersion: v1
kind: Service
metadata:
  name: webd
  annotations:
    svcgate.io/forwarding-mode: dnat
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: 198.18.128.11
  clusterIPs: ["198.18.128.11", "2001:2:0:8000::11"]
  selector:
    app: web
  ports:
  - {name: http, port: 8080, targetPort: 80, protocol: TCP}
  - {name: echo, port: 8053, targetPort: 7, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata:
  name: web6
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  clusterIP: "2001:2:0:8000::12"
  clusterIPs: ["2001:2:0:8000::12"]
  selector:
    app: web
  ports:
  - {name: http, port: 8080, targetPort: 80, protocol: TCP}
  - {name: echo, port: 8053, targetPort: 7, protocol: UDP}
"#;

fn pod(name: &str, ip4: &str, ip6: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: web\n\
         spec:\n  containers:\n  - name: c\n    image: nginx\n\
         status:\n  phase: Running\n  podIP: {ip4}\n  podIPs:\n  - ip: {ip4}\n  - ip: \"{ip6}\"\n\
         \x20 conditions:\n  - type: Ready\n    status: \"True\"\n"
    )
}

/// The config directory (manifests and svcgate.toml), removed on drop.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("sgx-ds6-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        std::fs::write(dir.join("manifests/services.yaml"), SERVICES).unwrap();
        for (name, ip4, ip6) in PODS {
            std::fs::write(dir.join(format!("manifests/pod-{name}.yaml")), pod(name, ip4, ip6)).unwrap();
        }
        let toml = format!(
            "manifests = \"manifests\"\nservice_cidr = [\"198.18.128.0/20\", \"2001:2:0:8000::/112\"]\n\
             node_ips = [\"{NODE4}\", \"{NODE6}\"]\nadmin_listen = \"127.0.0.1:9901\"\n\n\
             [dataplane]\ninterfaces = [\"g0\", \"g1\"]\nqueues = 1\nsnat_addrs = [\"{SNAT4}\", \"{SNAT6}\"]\n\
             conntrack_capacity = 4096\n"
        );
        std::fs::write(dir.join("svcgate.toml"), toml).unwrap();
        Files { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Processes started in the namespaces (`ip netns exec` execs them, so the
/// pid is the process itself), killed by their pid on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct DsLab {
    lab: Lab,
    client: String,
    gw: String,
    pods: Vec<String>,
}

impl DsLab {
    fn new() -> Self {
        let mut lab = Lab::new("ds6");
        let client = lab.netns("cli");
        let gw = lab.netns("gw");
        let sw = lab.netns("sw");
        let pods: Vec<String> = (1..=3).map(|i| lab.netns(&format!("b{i}"))).collect();
        for ns in [&client, &gw, &sw].into_iter().chain(&pods) {
            lab.exec_ok(
                ns,
                &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0"],
            );
        }
        lab.veth(&client, "c0", &gw, "g0", 1);
        lab.veth(&gw, "g1", &sw, "sg0", 1);
        lab.ip(&sw, "link add br0 type bridge");
        lab.ip(&sw, "link set br0 up");
        lab.ip(&sw, "link set sg0 master br0");
        for (i, (ns, (_, ip4, ip6))) in pods.iter().zip(PODS).enumerate() {
            let sb = format!("sb{}", i + 1);
            lab.veth(ns, "eth0", &sw, &sb, 1);
            lab.ip(&sw, &format!("link set {sb} master br0"));
            lab.ip(ns, &format!("addr add {ip4}/24 dev eth0"));
            lab.ip(ns, &format!("addr add {ip6}/64 dev eth0 nodad"));
            lab.ip(ns, &format!("route add default via {SNAT4}"));
            lab.ip(ns, &format!("-6 route add default via {SNAT6}"));
        }
        lab.ip(&client, &format!("addr add {CLIENT4}/24 dev c0"));
        lab.ip(&client, &format!("addr add {CLIENT6}/64 dev c0 nodad"));
        lab.ip(&client, &format!("route add 198.18.128.0/20 via {NODE4}"));
        lab.ip(&client, &format!("-6 route add 2001:2:0:8000::/112 via {NODE6}"));
        lab.ip(&client, &format!("route add 198.19.0.0/16 via {NODE4}"));
        lab.ip(&client, &format!("-6 route add 2001:2:0:9000::/64 via {NODE6}"));
        lab.ip(&gw, &format!("addr add {NODE4}/24 dev g0"));
        lab.ip(&gw, &format!("addr add {NODE6}/64 dev g0 nodad"));
        lab.ip(&gw, &format!("addr add {SNAT4}/24 dev g1"));
        lab.ip(&gw, &format!("addr add {SNAT6}/64 dev g1 nodad"));
        lab.exec_ok(&gw, &["sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"]);
        DsLab { lab, client, gw, pods }
    }

    /// `n` probes of `vip:port` from the client, each on a new socket (a
    /// new source port, so a new flow): TCP, an HTTP GET of `/peer`; UDP,
    /// a "peer?" datagram. One Python process for the batch; each probe's
    /// answer is `(pod, peer)`, or `None` when it got none within 1 s.
    fn probes(&self, proto: &str, vip: &str, port: u16, n: usize) -> Vec<Option<(String, String)>> {
        let b = self.lab.run_bounded(
            &self.client,
            &["python3", "-c", PROBE, proto, vip, &port.to_string(), &n.to_string()],
            Duration::from_secs(3 + 2 * n as u64),
        );
        assert!(b.status.is_some_and(|s| s.success()), "probe {proto} {vip}: {b:?}");
        b.stdout.lines().map(parse_answer).collect()
    }

    /// Batches of 12 probes (at most `tries` in all) until every Pod in
    /// `want` answered and at least `min` answers came; every answer's peer
    /// must be `peer`. Returns the answers per Pod.
    fn spread(
        &self,
        what: &str,
        (proto, vip, port): (&str, &str, u16),
        peer: &str,
        want: &[&str],
        min: usize,
        tries: usize,
    ) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        let mut lost = 0;
        let mut n = 0;
        let mut sent = 0;
        while sent < tries && !(n >= min && want.iter().all(|w| seen.contains_key(*w))) {
            for a in self.probes(proto, vip, port, 12.min(tries - sent)) {
                sent += 1;
                match a {
                    Some((pod, p)) => {
                        assert_eq!(p, peer, "{what}: {pod} saw peer {p}, want {peer}");
                        *seen.entry(pod).or_insert(0) += 1;
                        n += 1;
                    }
                    None => lost += 1,
                }
            }
        }
        assert!(
            want.iter().all(|w| seen.contains_key(*w)) && n >= min,
            "{what}: answers {seen:?} ({lost} lost of {sent}); want every one of {want:?}, at least {min} answers"
        );
        println!("{what}: {seen:?}, {lost} lost (neighbour warm-up)");
        seen
    }

    fn status(&self, bin: &str) -> String {
        let out = self.lab.exec(&self.gw, &[bin, "status"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The client's probes: `python3 -c PROBE tcp|udp VIP PORT N` prints one
/// line per probe, the Pod's answer ("web-N PEER") or "LOST" (then it waits
/// 100 ms: the probes of a batch span a neighbour resolution).
const PROBE: &str = r#"
import socket, sys, time
proto, vip, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
for _ in range(n):
    try:
        if proto == "tcp":
            s = socket.create_connection((vip, port), timeout=1)
            s.sendall(b"GET /peer HTTP/1.0\r\nHost: t\r\n\r\n")
            data = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                data += d
            line = data.split(b"\r\n\r\n", 1)[1].decode().strip()
        else:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(1)
            s.connect((vip, port))
            s.send(b"peer?")
            line = s.recv(200).decode().strip()
        s.close()
    except (OSError, IndexError):
        # Refused at once (ICMPv6 no-route from the gateway's kernel, which
        # got the first packet while the Pod's neighbour was unresolved):
        # give the resolution time before the next probe.
        line = "LOST"
        time.sleep(0.1)
    print(line, flush=True)
"#;

/// "web-N PEER" -> (web-N, PEER).
fn parse_answer(s: &str) -> Option<(String, String)> {
    let mut it = s.split_whitespace();
    let pod = it.next()?.to_string();
    let peer = it.next()?.to_string();
    pod.starts_with("web-").then_some((pod, peer))
}

fn show_log(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn dual_stack_services_over_both_families() {
    let test = "dual_stack_services_over_both_families";
    if !require_root(test) {
        return;
    }
    let has = |p: &str| Command::new(p).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !skip_unless(test, has("python3") && has("curl"), "python3 and curl are needed (scripts/setup.sh)") {
        return;
    }
    let bin = netns::svcgate_binary();
    if !skip_unless(
        test,
        bin.is_some(),
        "no target/<profile>/svcgate; build it first with `cargo build -p svcgate-control`",
    ) {
        return;
    }
    let bin = bin.unwrap().to_string_lossy().into_owned();
    let backend = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lab-backend.py");
    let t0 = Instant::now();

    // Dropped in reverse: the daemon, the backends, the files, the namespaces.
    let lab = DsLab::new();
    let files = Files::new();
    let mut procs = Procs(Vec::new());
    for (ns, (name, _, _)) in lab.pods.iter().zip(PODS) {
        procs.0.push(
            Command::new("ip")
                .args(["netns", "exec", ns, "python3"])
                .arg(&backend)
                .arg(name)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let log_path = files.path("svcgate.log");
    let log = std::fs::File::create(&log_path).unwrap();
    procs.0.push(
        Command::new("ip")
            .args(["netns", "exec", &lab.gw, &bin, "run", "--config"])
            .arg(files.path("svcgate.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log_on_panic = LogOnPanic(log_path.clone());

    // Up: the three Services in `svcgate status`, both addresses of each
    // dual-stack one (CLUSTER-IP "v4,v6"), web6's IPv6 one only.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = lab.status(&bin);
        if s.contains("dataplane attached") && s.lines().any(|l| l.starts_with("web6 ")) {
            break s;
        }
        assert!(Instant::now() < deadline, "svcgate not up:\n{s}\nlog:\n{}", show_log(&log_path));
        std::thread::sleep(Duration::from_millis(100));
    };
    let row = |name: &str| -> String {
        status.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_default().to_string()
    };
    assert!(row("web").contains(&format!(" {WEB4},{WEB6} ")), "{status}");
    assert!(row("webd").contains(&format!(" {WEBD4},{WEBD6} ")), "{status}");
    assert!(row("web6").contains(&format!(" {ONLY6} ")) && !row("web6").contains("198.18."), "{status}");
    // The backends are up (their HTTP answers inside their namespace).
    for ns in &lab.pods {
        let ok = (0..50).any(|_| {
            let b =
                lab.lab.run_bounded(ns, &["curl", "-sf", "--max-time", "1", "http://[::1]/"], Duration::from_secs(2));
            b.status.is_some_and(|s| s.success()) || {
                std::thread::sleep(Duration::from_millis(100));
                false
            }
        });
        assert!(ok, "backend in {ns} did not start");
    }
    println!("up after {:?}", t0.elapsed());

    let all = ["web-0", "web-1", "web-2"];
    // snat mode: the Pod sees the gateway's SNAT address of the family.
    // dnat mode: the Pod sees the client. The first probe to each Pod may
    // be lost while the gateway resolves its neighbour: up to 30 probes.
    for (svc, vip, peer) in [
        ("web", WEB4, SNAT4),
        ("web", WEB6, SNAT6),
        ("webd", WEBD4, CLIENT4),
        ("webd", WEBD6, CLIENT6),
        ("web6", ONLY6, SNAT6),
    ] {
        lab.spread(&format!("{svc} TCP {vip}"), ("tcp", vip, TCP_PORT), peer, &all, 0, 36);
        lab.spread(&format!("{svc} UDP {vip}"), ("udp", vip, UDP_PORT), peer, &all, 0, 36);
    }
    // web's NodePorts on both node IPs and its LoadBalancer IPs of both families.
    for (what, vip, tcp, udp, peer) in [
        ("NodePort", NODE4, NODE_PORTS.0, NODE_PORTS.1, SNAT4),
        ("NodePort", NODE6, NODE_PORTS.0, NODE_PORTS.1, SNAT6),
        ("LoadBalancer", LB4, TCP_PORT, UDP_PORT, SNAT4),
        ("LoadBalancer", LB6, TCP_PORT, UDP_PORT, SNAT6),
    ] {
        lab.spread(&format!("web {what} TCP {vip}:{tcp}"), ("tcp", vip, tcp), peer, &all, 0, 36);
        lab.spread(&format!("web {what} UDP {vip}:{udp}"), ("udp", vip, udp), peer, &all, 0, 36);
    }
    println!("both families, both modes: {:?}", t0.elapsed());

    // web-1's manifest deleted: once the table without it is published, no
    // new connection of either family reaches it.
    let generation = |s: &str| -> u64 {
        s.split("generation ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("no table generation in svcgate status:\n{s}"))
    };
    let g0 = generation(&lab.status(&bin));
    std::fs::remove_file(files.path("manifests/pod-web-1.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation(&lab.status(&bin)) == g0 {
        assert!(Instant::now() < deadline, "no new table after deleting web-1:\n{}", show_log(&log_path));
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = ["web-0", "web-2"];
    for (svc, vip, peer) in [
        ("web", WEB4, SNAT4),
        ("web", WEB6, SNAT6),
        ("webd", WEBD4, CLIENT4),
        ("webd", WEBD6, CLIENT6),
        ("web6", ONLY6, SNAT6),
    ] {
        for (proto, seen) in [
            ("TCP", lab.spread(&format!("{svc} TCP {vip} without web-1"), ("tcp", vip, TCP_PORT), peer, &left, 16, 36)),
            ("UDP", lab.spread(&format!("{svc} UDP {vip} without web-1"), ("udp", vip, UDP_PORT), peer, &left, 16, 36)),
        ] {
            assert!(!seen.contains_key("web-1"), "{svc} {proto} {vip}: web-1 answered after its deletion: {seen:?}");
        }
    }
    drop(log_on_panic);
    println!("{test}: {:?}", t0.elapsed());
}

/// Prints svcgate's log when the test panics (before the files go).
struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("svcgate's log:\n{}", show_log(&self.0));
        }
    }
}
