//! The fleet end to end: two `svcgate run` gateways in dnat mode announce
//! the bundled example's VIPs through BIRD to a router that spreads flows
//! over them by ECMP (`scripts/lab-fleet.sh`, namespaces `sgft-<pid>-<n>-*`).
//!
//! - the router learns every VIP from both gateways and installs one route
//!   with two next hops (IPv4 /32s and the IPv6 clusterIPs' /128s, over
//!   sessions of each family), and a flow reaches the same Pod whichever gateway
//!   it crosses (each gateway forced in turn by a policy route on the
//!   router, the same UDP 5-tuples sent through both);
//! - SIGKILL of one gateway under 200 held TCP connections and a
//!   new-connection loop: BIRD withdraws its routes when its TUN device
//!   vanishes, the other gateway picks the moved connections up (the
//!   same Maglev pick), >= 99% of them keep working; the failover time and
//!   the loop's failures are printed;
//! - SIGTERM: the routes are withdrawn first (the router's route loses the
//!   gateway while its process still runs and forwards for drain_seconds),
//!   and no held connection fails;
//! - a gateway's BIRD down when its svcgate starts: an error counted and
//!   shown, retried, announced once BIRD is back; every Pod removed from
//!   the (shared) manifests: every VIP withdrawn by both gateways, then
//!   announced again when they return.
//!
//! Needs root, bird (Debian bird2), python3, curl and the `svcgate` binary
//! beside the test binary (`cargo build -p svcgate-control`); without them it
//! skips with a message, except under CI=true. Addresses: 198.18.0.0/15
//! and 2001:2::/48 only, inside the lab's namespaces (IPv6 carries BGP only).

mod netns;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use netns::{require_root, skip_unless};

#[test]
#[ignore]
fn child_entry() {
    netns::child_main()
}

const LB_IP: &str = "198.19.0.100";
const CLIENT: &str = "198.18.1.2";
const GW_A: &str = "198.18.5.2";
const GW_B: &str = "198.18.6.2";
const GW_A6: &str = "2001:2:0:5::2";
const GW_B6: &str = "2001:2:0:6::2";
const CIDRS: &str = "198.18.128.0/20,2001:2:0:8000::/112";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The prerequisites; false (after a SKIPPED message) when one is missing.
fn ready(test: &str) -> Option<PathBuf> {
    if !require_root(test) {
        return None;
    }
    let has = |p: &str| {
        Command::new("sh").args(["-c", &format!("command -v {p}")]).output().is_ok_and(|o| o.status.success())
    };
    if !skip_unless(test, has("bird") && has("birdc"), "bird and birdc missing (Debian bird2: scripts/setup.sh)") {
        return None;
    }
    if !skip_unless(test, has("python3") && has("curl"), "python3 or curl missing (scripts/setup.sh)") {
        return None;
    }
    let bin = netns::svcgate_binary();
    if !skip_unless(test, bin.is_some(), "no svcgate binary beside the tests: cargo build -p svcgate-control") {
        return None;
    }
    bin
}

/// A fleet lab; `scripts/lab-fleet.sh down` on drop (also on panic): the
/// gateways, BIRDs and Pods by their pid files, then the namespaces.
struct Fleet {
    prefix: String,
    dir: PathBuf,
    bin: PathBuf,
    drain: u32,
}

impl Fleet {
    fn up(bin: PathBuf, drain: u32) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("sgft-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let f = Fleet { prefix, dir, bin, drain };
        let out = f.script(&["up"]);
        assert!(out.status.success(), "lab-fleet.sh up: {}{}", text(&out.stdout), text(&out.stderr));
        f
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new(root().join("scripts/lab-fleet.sh"))
            .args(args)
            .env("SG_FLEET_PREFIX", &self.prefix)
            .env("SG_FLEET_DIR", &self.dir)
            .env("SG_FLEET_DRAIN", self.drain.to_string())
            .env("SVCGATE", &self.bin)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/lab-fleet.sh")
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Starts svcgate on gateway `x` ("a" or "b"), waits until it is ready.
    fn start_gw(&self, x: &str) -> u32 {
        let out = self.script(&["start-gw", x]);
        assert!(out.status.success(), "start-gw {x}: {}{}", text(&out.stdout), text(&out.stderr));
        self.pid(x).expect("svcgate pid file")
    }

    fn pid(&self, x: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("gw{x}/svcgate.pid"))).ok()?.trim().parse().ok()
    }

    fn log(&self, x: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("gw{x}/svcgate.log"))).unwrap_or_default()
    }

    /// `ip netns exec <ns> argv`: stdout, whatever the status.
    fn exec(&self, ns: &str, argv: &[&str]) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.ns(ns)]).args(argv).output().expect("ip netns exec");
        text(&out.stdout)
    }

    /// The next hops of the router's kernel route to `vip` (empty: none).
    fn next_hops(&self, vip: &str) -> Vec<String> {
        let family = if vip.contains(':') { "-6" } else { "-4" };
        let r = self.exec("rtr", &["ip", family, "route", "show", vip]);
        let words: Vec<&str> = r.split_whitespace().collect();
        let mut hops: Vec<String> = words.windows(2).filter(|w| w[0] == "via").map(|w| w[1].to_string()).collect();
        hops.sort();
        hops
    }

    /// Waits until the router's route to `vip` has exactly `want` next hops.
    fn wait_next_hops(&self, vip: &str, want: &[&str], timeout: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.next_hops(vip) == want {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < timeout,
                "route to {vip}: next hops {:?}, want {want:?}; router BIRD:\n{}",
                self.next_hops(vip),
                self.birdc("rtr", "show protocols")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn birdc(&self, who: &str, cmd: &str) -> String {
        let sock = self.dir.join(format!("{who}/bird.ctl"));
        let mut c = Command::new("birdc");
        c.arg("-s").arg(sock).args(cmd.split_whitespace());
        text(&c.output().map(|o| o.stdout).unwrap_or_default())
    }

    /// A counter or gauge of gateway `x`'s /metrics (0 when absent).
    fn metric(&self, x: &str, line_prefix: &str) -> u64 {
        let m = self.exec(&format!("gw{x}"), &["curl", "-sf", "-m", "3", "http://127.0.0.1:9901/metrics"]);
        m.lines()
            .find_map(|l| l.strip_prefix(line_prefix).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Starts `argv` in namespace `ns` with its stdout piped.
    fn spawn(&self, ns: &str, argv: &[&str]) -> (Child, BufReader<ChildStdout>) {
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let out = BufReader::new(c.stdout.take().unwrap());
        (c, out)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
    }
}

/// The process runs (exists and is not a zombie: the lab script's
/// children are reaped by whoever adopted them, maybe late).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn line(r: &mut BufReader<ChildStdout>) -> String {
    let mut l = String::new();
    let _ = r.read_line(&mut l);
    l.trim().to_string()
}

fn field(l: &str, key: &str) -> u64 {
    l.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {l:?}"))
}

/// The IPv4 cluster IP of Service `name` of examples/manifests, as svcgate
/// allocates it (`svcgate validate`).
fn cluster_ip(bin: &Path, name: &str) -> String {
    let out = Command::new(bin)
        .args(["validate", "--service-cidr", CIDRS])
        .arg(root().join("examples/manifests"))
        .output()
        .expect("svcgate validate");
    let s = text(&out.stdout);
    let l = s.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name}: {s}"));
    l.split_whitespace().nth(2).unwrap().split(',').next().unwrap().to_string()
}

/// Every address svcgate announces for the example (ClusterIPs of both
/// families and the LoadBalancer IP), from `svcgate status` of gateway `x`.
fn announced(f: &Fleet, x: &str) -> Vec<String> {
    let st = f.exec(&format!("gw{x}"), &[f.bin.to_str().unwrap(), "status"]);
    let l = st.lines().find_map(|l| l.strip_prefix("announced: ")).unwrap_or_else(|| panic!("gw{x} status: {st}"));
    l.split(", ").map(String::from).collect()
}

/// UDP "peer?" to `dst`:7 from the client, one datagram per source port
/// (each a flow of its own): source port -> the answering Pod's line.
fn udp_probe(f: &Fleet, dst: &str, ports: std::ops::Range<u16>) -> BTreeMap<u16, String> {
    let script = format!(
        "import socket\n\
         for p in range({}, {}):\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20   s.bind(('{CLIENT}', p)); s.settimeout(0.7)\n\
         \x20   ans = 'none'\n\
         \x20   for _ in range(4):\n\
         \x20       s.sendto(b'peer?', ('{dst}', 7))\n\
         \x20       try:\n\
         \x20           ans = s.recv(256).decode(); break\n\
         \x20       except socket.timeout:\n\
         \x20           pass\n\
         \x20   s.close(); print(p, ans, flush=True)\n",
        ports.start, ports.end
    );
    let out = f.exec("cli", &["python3", "-c", &script]);
    out.lines().filter_map(|l| l.split_once(' ').map(|(p, a)| (p.parse().unwrap(), a.to_string()))).collect()
}

#[test]
fn fleet_ecmp_route_from_both_gateways_and_same_pod_through_either() {
    let Some(bin) = ready("fleet_ecmp_route_from_both_gateways_and_same_pod_through_either") else { return };
    let f = Fleet::up(bin.clone(), 2);
    f.start_gw("a");
    f.start_gw("b");
    let vips = announced(&f, "a");
    assert!(vips.contains(&LB_IP.to_string()) && vips.len() >= 4, "{vips:?}");
    assert!(vips.iter().any(|v| v.contains(':')), "no IPv6 clusterIP announced: {vips:?}");
    assert_eq!(vips, announced(&f, "b"), "both gateways announce the same set");
    for v in &vips {
        let hops: &[&str] = if v.contains(':') { &[GW_A6, GW_B6] } else { &[GW_A, GW_B] };
        f.wait_next_hops(v, hops, Duration::from_secs(20));
    }
    let routes = f.birdc("rtr", &format!("show route {LB_IP}/32 all"));
    assert!(routes.contains("[gwa ") && routes.contains("[gwb "), "router's BIRD: {routes}");
    println!("router's kernel: {LB_IP} via {:?}", f.next_hops(LB_IP));

    // The same 5-tuples through each gateway in turn: a policy route on the
    // router sends the echo Service's clusterIP through one of them.
    let echo = cluster_ip(&bin, "udp-echo");
    let ns = f.ns("rtr");
    let ip = |args: &str| {
        let st = Command::new("ip").args(["-n", &ns]).args(args.split_whitespace()).status().unwrap();
        assert!(st.success(), "ip {args}");
    };
    ip(&format!("rule add to {echo}/32 lookup 200 pref 50"));
    let mut through = Vec::new();
    for (x, gw) in [("a", GW_A), ("b", GW_B)] {
        ip(&format!("route replace {echo}/32 via {gw} table 200"));
        let (new_a, new_b) = (
            f.metric("a", "svcgate_conntrack_events_total{event=\"new\"}"),
            f.metric("b", "svcgate_conntrack_events_total{event=\"new\"}"),
        );
        let answers = udp_probe(&f, &echo, 41000..41040);
        // Idle workers export their counters every 100 ms.
        std::thread::sleep(Duration::from_millis(400));
        let (d_a, d_b) = (
            f.metric("a", "svcgate_conntrack_events_total{event=\"new\"}") - new_a,
            f.metric("b", "svcgate_conntrack_events_total{event=\"new\"}") - new_b,
        );
        println!("through gw{x}: new flows a={d_a} b={d_b}");
        // The flows were entered on the forced gateway only.
        let (mine, other) = if x == "a" { (d_a, d_b) } else { (d_b, d_a) };
        assert!(mine >= 40 && other == 0, "through gw{x}: new flows on a {d_a}, on b {d_b}");
        through.push(answers);
    }
    let (a, b) = (&through[0], &through[1]);
    assert_eq!(a.len(), 40, "{a:?}");
    for (p, ans) in a {
        // dnat: the Pod saw the client itself.
        assert!(ans.starts_with("nginx-") && ans.ends_with(CLIENT), "port {p}: {ans:?}");
    }
    let pods: std::collections::BTreeSet<&str> = a.values().map(|s| s.split(' ').next().unwrap()).collect();
    assert!(pods.len() >= 2, "40 flows all on one Pod: {pods:?}");
    assert_eq!(a, b, "a flow reached another Pod through the other gateway");
    println!("same Pod through either gateway for 40 of 40 UDP flows, spread over {pods:?}");
}

/// `conn-hold.py` from the client: `n` connections to the LoadBalancer IP,
/// held `hold` seconds, then one more request on each.
fn hold(f: &Fleet, n: u32, hold: u32) -> (Child, BufReader<ChildStdout>) {
    let script = root().join("scripts/conn-hold.py");
    f.spawn("cli", &["python3", script.to_str().unwrap(), LB_IP, "80", &n.to_string(), CLIENT, &hold.to_string()])
}

#[test]
fn fleet_sigkill_one_gateway_under_200_connections() {
    let Some(bin) = ready("fleet_sigkill_one_gateway_under_200_connections") else { return };
    let f = Fleet::up(bin, 2);
    let pid_a = f.start_gw("a");
    f.start_gw("b");
    f.wait_next_hops(LB_IP, &[GW_A, GW_B], Duration::from_secs(20));

    let (mut holder, mut held) = hold(&f, 200, 7);
    let opened = line(&mut held);
    let n = field(&opened, "opened");
    assert!(n >= 198, "{opened}");
    std::thread::sleep(Duration::from_millis(400));
    let (on_a, on_b) = (f.metric("a", "svcgate_conntrack_entries"), f.metric("b", "svcgate_conntrack_entries"));
    println!("{opened}; flows on gwa {on_a}, on gwb {on_b}");
    assert!(on_a >= 20 && on_b >= 20, "ECMP should spread 200 connections: a {on_a}, b {on_b}");

    let conn_loop = root().join("scripts/conn-loop.py");
    let (mut looper, mut looped) =
        f.spawn("cli", &["python3", conn_loop.to_str().unwrap(), LB_IP, "80", "4", "20", "3"]);
    std::thread::sleep(Duration::from_secs(1));
    let kill = Instant::now();
    let st = Command::new("kill").args(["-KILL", &pid_a.to_string()]).status().unwrap();
    assert!(st.success());
    let withdrawn = f.wait_next_hops(LB_IP, &[GW_B], Duration::from_secs(10));
    let t_withdrawn = kill.elapsed();
    let loop_line = line(&mut looped);
    let again = line(&mut held);
    let _ = looper.wait();
    let _ = holder.wait();
    // Workers export their counters every 100 ms.
    std::thread::sleep(Duration::from_millis(400));
    let picked = f.metric("b", "svcgate_conntrack_events_total{event=\"picked_up\"}");
    println!(
        "SIGKILL gwa: router route without gwa after {:.0} ms ({withdrawn:?} of polling); held: {again}; \
         new-connection loop: {loop_line}; gwb picked up {picked} flows",
        t_withdrawn.as_secs_f64() * 1000.0
    );
    let ok = field(&again, "again_ok");
    assert!(ok * 100 >= n * 99, "{ok} of {n} held connections kept working: {again}\n{}", f.log("b"));
    assert!(picked >= on_a / 2, "gwb picked up {picked} flows, gwa had {on_a}");
    assert!(t_withdrawn < Duration::from_secs(2), "withdrawal took {t_withdrawn:?}");
    // New connections: only those whose SYNs met the dead gateway before the
    // withdrawal are delayed, until their retransmission (1 s later) takes
    // the other one. Failures are bounded by the failover: a few at most
    // (one attempt blocks the loop for its 3 s timeout; one was seen in 7
    // runs, with four fleet labs at once on a loaded 2-core machine), and
    // no time without a success longer than the withdrawal, the loop's
    // timeout and slack for a loaded machine.
    assert!(field(&loop_line, "ok") > 0 && field(&loop_line, "failed") <= 3, "{loop_line}");
    let bound = t_withdrawn + Duration::from_millis(4500);
    assert!(Duration::from_millis(field(&loop_line, "longest_gap_ms")) < bound, "{loop_line}: over {bound:?}");
}

#[test]
fn fleet_sigterm_withdraws_first_and_resets_nothing() {
    let Some(bin) = ready("fleet_sigterm_withdraws_first_and_resets_nothing") else { return };
    let drain = 3;
    let f = Fleet::up(bin, drain);
    let pid_a = f.start_gw("a");
    f.start_gw("b");
    f.wait_next_hops(LB_IP, &[GW_A, GW_B], Duration::from_secs(20));

    let (mut holder, mut held) = hold(&f, 100, 6);
    let opened = line(&mut held);
    let n = field(&opened, "opened");
    assert!(n >= 99, "{opened}");
    assert!(f.metric("a", "svcgate_conntrack_entries") > 0, "no flow crossed gwa");

    let term = Instant::now();
    let st = Command::new("kill").args(["-TERM", &pid_a.to_string()]).status().unwrap();
    assert!(st.success());
    f.wait_next_hops(LB_IP, &[GW_B], Duration::from_secs(5));
    let t_withdrawn = term.elapsed();
    let alive = running(pid_a);
    let mut t_exit = None;
    while term.elapsed() < Duration::from_secs(20) {
        if !running(pid_a) {
            t_exit = Some(term.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let again = line(&mut held);
    let _ = holder.wait();
    println!(
        "SIGTERM gwa: route withdrawn after {:.0} ms, process exited after {:?} (drain {drain} s); held: {again}",
        t_withdrawn.as_secs_f64() * 1000.0,
        t_exit
    );
    assert!(alive, "gwa exited before the router lost its route");
    let t_exit = t_exit.expect("gwa did not exit within 20 s");
    assert!(t_exit >= Duration::from_secs(drain.into()), "exited after {t_exit:?}, before the drain time");
    let log = f.log("a");
    assert!(log.contains("routes withdrawn; draining"), "{log}");
    assert_eq!(field(&again, "again_ok"), n, "a held connection failed: {again}");
}

#[test]
fn fleet_bird_down_at_start_and_vips_without_endpoints() {
    let Some(bin) = ready("fleet_bird_down_at_start_and_vips_without_endpoints") else { return };
    let f = Fleet::up(bin, 2);
    // Gateway a's BIRD is down when its svcgate starts: svcgate runs and
    // forwards, says so, and retries.
    let out = f.script(&["stop-bird", "a"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    f.start_gw("a");
    f.start_gw("b");
    f.wait_next_hops(LB_IP, &[GW_B], Duration::from_secs(20));
    let t0 = Instant::now();
    while f.metric("a", "svcgate_announce_errors_total") == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no announce error counted on gwa:\n{}", f.log("a"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = f.exec("gwa", &[f.bin.to_str().unwrap(), "status"]);
    assert!(st.contains("announce error (retrying): BIRD control socket") && st.contains("cannot connect"), "{st}");
    // BIRD back: both next hops again, and svcgate's retry gets through.
    let out = f.script(&["start-bird", "a"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    f.wait_next_hops(LB_IP, &[GW_A, GW_B], Duration::from_secs(20));
    let desired = f.metric("a", "svcgate_announce_desired_routes");
    let t0 = Instant::now();
    while f.metric("a", "svcgate_announced_routes") != desired {
        assert!(t0.elapsed() < Duration::from_secs(15), "gwa never confirmed its routes:\n{}", f.log("a"));
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "gwa: BIRD down at start, {} errors, then {desired} routes confirmed",
        f.metric("a", "svcgate_announce_errors_total")
    );

    // Every Pod gone: no Service has an endpoint, every VIP is withdrawn
    // by both gateways (withdraw_without_endpoints).
    let manifests = f.dir.join("manifests");
    let away = f.dir.join("pods-away");
    std::fs::create_dir_all(&away).unwrap();
    let pods: Vec<PathBuf> = std::fs::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("pod-"))
        .collect();
    assert_eq!(pods.len(), 3, "{pods:?}");
    for p in &pods {
        std::fs::rename(p, away.join(p.file_name().unwrap())).unwrap();
    }
    let gone = f.wait_next_hops(LB_IP, &[], Duration::from_secs(15));
    for x in ["a", "b"] {
        assert_eq!(f.metric(x, "svcgate_announce_desired_routes"), 0, "gw{x}");
    }
    // And back.
    for p in &pods {
        std::fs::rename(away.join(p.file_name().unwrap()), p).unwrap();
    }
    let back = f.wait_next_hops(LB_IP, &[GW_A, GW_B], Duration::from_secs(15));
    println!("Pods removed: {LB_IP} withdrawn after {gone:?}; Pods back: announced again after {back:?}");
}
