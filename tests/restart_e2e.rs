//! Hitless restart and upgrade of a real `svcgate run` (issue 14, item 3):
//! 200 long-lived TCP connections through a ClusterIP survive a SIGTERM
//! and a new start of svcgate, and a start from a copy of the binary at
//! another path (an upgrade to a rebuilt binary with the same table
//! layout), and a SIGKILL and a start, with zero resets and zero
//! failures, in snat and in dnat mode;
//! the flows are *adopted* from the state directory (no connection is
//! picked up again); a TCP server on the gateway's own address answers a
//! probe loop throughout; the gap is measured (a TCP probe through the
//! ClusterIP every 10 ms: its longest stall; a UDP probe every 2 ms: the
//! datagrams lost and the longest run of them). Then a state file with a
//! mismatched layout is refused with a clear error in the log, and
//! svcgate starts clean and serves.
//!
//! Topology (names start with `rst-`, addresses in 198.18.0.0/15 only):
//! client c0 198.18.1.10 -- g0 198.18.1.1 [gw, svcgate; a TCP server on
//! 198.18.1.1:2222] g1 198.18.2.1 -- e0 198.18.2.11 and .12 (two Pods:
//! TCP and UDP echo on :80; the second joins the Service while svcgate is
//! stopped before the upgrade, so that Maglev moves about half of the
//! flows' hashes to it: only adopted flows stay on their Pod). The SNAT address, 198.18.3.1, is not an address of the
//! gateway's kernel (see docs/RESTART.md: in the gap between two processes
//! the kernel sees the replies, and would answer those to an address of
//! its own with a RST). Needs root, curl and python3 (see tests/netns).

mod netns;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{require_root, skip_unless, Lab};

#[test]
#[ignore = "child process entry, run by the tests themselves"]
fn child_entry() {
    netns::child_main();
}

const CLIENT_IP: &str = "198.18.1.10";
const GW_CLIENT_IP: &str = "198.18.1.1";
const GW_POD_IP: &str = "198.18.2.1";
const POD_IP: &str = "198.18.2.11";
/// A second Pod of the Service, added while svcgate is stopped before the
/// upgrade: Maglev then sends about half of the flows' hashes to it, so
/// a flow that was not adopted (picked up again) would reach the wrong
/// Pod and be reset.
const POD2_IP: &str = "198.18.2.12";
const SNAT_IP: &str = "198.18.3.1";

/// `RESTART_E2E_LOCAL_SNAT=1`: masquerade to the gateway's own address
/// (198.18.2.1) instead, the experiment of docs/RESTART.md (the kernel
/// answers replies that reach it in the gap with a RST). Not a CI setting.
fn snat_ip() -> &'static str {
    if std::env::var("RESTART_E2E_LOCAL_SNAT").as_deref() == Ok("1") {
        GW_POD_IP
    } else {
        SNAT_IP
    }
}
const VIP: &str = "198.18.128.10";
const PORT: u16 = 8080;
const NODE_PORT: u16 = 2222;
const CONNS: usize = 200;

/// The client and servers: TCP and UDP echo servers (`serve`), and the
/// client (`client`) holding the connections and running the probes,
/// driven by lines on stdin.
const SCRIPT: &str = r#"
import socket, sys, threading, time

def serve(host, port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(1024)
    def conn(c):
        try:
            while True:
                d = c.recv(4096)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()
    def accept():
        while True:
            c, _ = ls.accept()
            threading.Thread(target=conn, args=(c,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.bind((host, port))
    def udp():
        while True:
            d, a = us.recvfrom(2048)
            us.sendto(d, a)
    threading.Thread(target=udp, daemon=True).start()
    print("READY", flush=True)
    sys.stdin.read()

def recv_exact(s, n):
    got = b""
    while len(got) < n:
        d = s.recv(n - len(got))
        if not d:
            raise ConnectionError("closed by peer")
        got += d
    return got

def client(vip, port, n, node, node_port):
    lock = threading.Lock()
    st = dict(probe_ok=0, probe_err=0, probe_gap=0.0, node_ok=0, node_fail=0, node_gap=0.0)
    errors = []
    conns = []
    failed = 0
    for i in range(n):
        try:
            s = socket.create_connection((vip, port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.append(s)
        except OSError as e:
            failed += 1
            errors.append(repr(e))
    print(f"OPENED ok={len(conns)} failed={failed}", flush=True)

    def probe():
        try:
            s = socket.create_connection((vip, port), timeout=30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            with lock:
                st["probe_err"] += 1
                errors.append("probe connect " + repr(e))
            return
        last, i = time.monotonic(), 0
        while True:
            msg = b"p%07d\n" % (i % 10000000)
            try:
                s.sendall(msg)
                if recv_exact(s, len(msg)) != msg:
                    raise ConnectionError("probe echo differs")
            except OSError as e:
                with lock:
                    st["probe_err"] += 1
                    errors.append("probe " + repr(e))
                return
            now = time.monotonic()
            with lock:
                st["probe_ok"] += 1
                st["probe_gap"] = max(st["probe_gap"], now - last)
            last = now
            i += 1
            time.sleep(0.01)

    udp = dict(sent=0, got=set(), base=0)
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.connect((vip, port))
    def udp_send():
        i = 0
        while True:
            try:
                us.send(b"%d" % i)
            except OSError:
                pass
            with lock:
                udp["sent"] = i + 1
            i += 1
            time.sleep(0.002)
    def udp_recv():
        while True:
            try:
                d = us.recv(64)
            except OSError:
                time.sleep(0.01)
                continue
            with lock:
                udp["got"].add(int(d))

    def node_loop():
        last = time.monotonic()
        while True:
            try:
                c = socket.create_connection((node, node_port), timeout=2)
                c.sendall(b"n\n")
                ok = recv_exact(c, 2) == b"n\n"
                c.close()
            except OSError:
                ok = False
            now = time.monotonic()
            with lock:
                if ok:
                    st["node_ok"] += 1
                    st["node_gap"] = max(st["node_gap"], now - last)
                    last = now
                else:
                    st["node_fail"] += 1
            time.sleep(0.02)

    for f in (probe, udp_send, udp_recv, node_loop):
        threading.Thread(target=f, daemon=True).start()

    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "x":
            ok = reset = fail = 0
            for i, s in enumerate(conns):
                try:
                    s.sendall(b"x%05d\n" % i)
                except OSError as e:
                    errors.append(repr(e))
            deadline = time.monotonic() + 15  # the whole round: bounded
            for i, s in enumerate(conns):
                try:
                    s.settimeout(max(0.05, deadline - time.monotonic()))
                    if recv_exact(s, 7) == b"x%05d\n" % i:
                        ok += 1
                    else:
                        fail += 1
                except ConnectionResetError as e:
                    reset += 1
                    errors.append(repr(e))
                except OSError as e:
                    fail += 1
                    errors.append(repr(e))
            print(f"X ok={ok} reset={reset} fail={fail}", flush=True)
        elif cmd == "stats":
            time.sleep(0.1)
            with lock:
                sent, got, base = udp["sent"], udp["got"], udp["base"]
                seen = [i for i in got if i >= base]
                top = max(seen) if seen else base
                lost, run, longest = 0, 0, 0
                for i in range(base, top + 1):
                    if i in got:
                        run = 0
                    else:
                        lost += 1
                        run += 1
                        longest = max(longest, run)
                print(
                    f"STATS probe_ok={st['probe_ok']} probe_err={st['probe_err']} "
                    f"probe_max_stall_ms={st['probe_gap'] * 1000:.0f} "
                    f"udp_sent={top + 1 - base} udp_lost={lost} udp_longest_loss_ms={longest * 2} "
                    f"node_ok={st['node_ok']} node_fail={st['node_fail']} node_max_gap_ms={st['node_gap'] * 1000:.0f} "
                    f"errors={';'.join(errors[-5:])}",
                    flush=True,
                )
                st["probe_gap"] = st["node_gap"] = 0.0
                udp["base"] = top + 1
                udp["got"] = set(i for i in got if i > top)
        elif cmd == "new":
            try:
                s = socket.create_connection((vip, port), timeout=5)
                s.sendall(b"new\n")
                s.settimeout(5)
                ok = recv_exact(s, 4) == b"new\n"
                s.close()
                print("NEW ok" if ok else "NEW fail", flush=True)
            except OSError as e:
                print("NEW fail " + repr(e), flush=True)

if sys.argv[1] == "serve":
    serve(sys.argv[2], int(sys.argv[3]))
else:
    client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
"#;

/// A Python process in a namespace, driven by lines; killed on drop.
struct Py {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Py {
    fn spawn(ns: &str, script: &Path, args: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-u"])
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Py { child, stdin, stdout }
    }

    /// The next line starting with `prefix` (other lines are skipped).
    fn expect(&mut self, prefix: &str) -> String {
        loop {
            let mut l = String::new();
            assert!(self.stdout.read_line(&mut l).unwrap_or(0) > 0, "python exited waiting for {prefix:?}");
            if l.starts_with(prefix) {
                return l.trim_end().to_string();
            }
        }
    }

    fn ask(&mut self, cmd: &str, prefix: &str) -> String {
        let w = self.stdin.as_mut().expect("stdin");
        writeln!(w, "{cmd}").unwrap();
        w.flush().unwrap();
        self.expect(prefix)
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=<number>` of a line (0 when absent).
fn num(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .unwrap_or(0)
}

/// A running `svcgate run`; killed on drop.
struct Svcgate {
    child: Child,
    log: PathBuf,
}

impl Svcgate {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (a crash): the tables are in the files as the workers left
    /// them, mid-write or not.
    fn kill(mut self) -> Option<std::process::ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// SIGTERM; the exit status within 10 s.
    fn stop(mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Svcgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lab, its servers and the config directory (removed on drop).
struct RestartLab {
    gw: String,
    cli: String,
    dir: PathBuf,
    _servers: Vec<Py>,
    /// Last: dropped after the servers (namespaces removed).
    lab: Lab,
}

impl RestartLab {
    fn new(mode: &str) -> Self {
        let mut lab = Lab::with_prefix("rst", mode);
        let cli = lab.netns("cli");
        let gw = lab.netns("gw");
        let pod = lab.netns("pod");
        lab.veth(&cli, "c0", &gw, "g0", 1);
        lab.veth(&gw, "g1", &pod, "e0", 1);
        lab.ip(&cli, &format!("addr add {CLIENT_IP}/24 dev c0"));
        lab.ip(&cli, &format!("route add 198.18.128.0/20 via {GW_CLIENT_IP}"));
        lab.ip(&gw, &format!("addr add {GW_CLIENT_IP}/24 dev g0"));
        lab.ip(&gw, &format!("addr add {GW_POD_IP}/24 dev g1"));
        lab.ip(&pod, &format!("addr add {POD_IP}/24 dev e0"));
        lab.ip(&pod, &format!("addr add {POD2_IP}/24 dev e0"));
        // Replies to the SNAT address (snat) and to the client (dnat) go
        // through the gateway.
        lab.ip(&pod, &format!("route add 198.18.3.0/24 via {GW_POD_IP}"));
        lab.ip(&pod, &format!("route add 198.18.1.0/24 via {GW_POD_IP}"));
        lab.exec_ok(&gw, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);

        let dir = std::env::temp_dir().join(format!("rst-{mode}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let script = dir.join("restart_probe.py");
        std::fs::write(&script, SCRIPT).unwrap();
        let mut echo = Py::spawn(&pod, &script, &["serve", POD_IP, "80"]);
        echo.expect("READY");
        let mut echo2 = Py::spawn(&pod, &script, &["serve", POD2_IP, "80"]);
        echo2.expect("READY");
        let mut node = Py::spawn(&gw, &script, &["serve", GW_CLIENT_IP, &NODE_PORT.to_string()]);
        node.expect("READY");
        let toml = format!(
            "manifests = \"manifests\"\nservice_cidr = \"198.18.128.0/20\"\nnode_ips = [\"{GW_CLIENT_IP}\"]\n\
             admin_listen = \"127.0.0.1:9901\"\n\n[dataplane]\ninterfaces = [\"g0\", \"g1\"]\nqueues = 1\n\
             mode = \"{mode}\"\nsnat_addrs = [\"{SNAT_IP}\"]\nconntrack_capacity = 4096\n\
             conntrack_capacity6 = 1024\nstate_dir = \"{}\"\n",
            dir.join("state").display(),
            SNAT_IP = snat_ip()
        );
        std::fs::write(dir.join("svcgate.toml"), toml).unwrap();
        let svc = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  clusterIP: {VIP}\n  selector: {{app: web}}\n  \
             ports: [{{name: http, port: {PORT}, targetPort: 80, protocol: TCP}}, {{name: u, port: {PORT}, targetPort: 80, protocol: UDP}}]\n"
        );
        let pod_yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-0, labels: {{app: web}}}}\nspec:\n  containers:\n  - name: c\n    \
             ports: [{{name: http, containerPort: 80}}]\nstatus:\n  podIP: {POD_IP}\n  conditions: [{{type: Ready, status: \"True\"}}]\n"
        );
        std::fs::write(dir.join("manifests/web.yaml"), svc).unwrap();
        std::fs::write(dir.join("manifests/pod.yaml"), &pod_yaml).unwrap();
        let pod2_yaml = pod_yaml.replace("web-0", "web-1").replace(POD_IP, POD2_IP);
        std::fs::write(dir.join("pod2.yaml.later"), pod2_yaml).unwrap();
        RestartLab { gw, cli, dir, _servers: vec![echo, echo2, node], lab }
    }

    fn admin(&self, path: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:9901{path}");
        let out = self.lab.exec(&self.gw, &["curl", "-sf", "-m", "3", &url]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn metric(&self, name: &str) -> u64 {
        let m = self.admin("/metrics").expect("/metrics");
        m.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// Starts `bin run` in the gateway namespace; waits for `/readyz`.
    fn start(&self, bin: &Path, log: &str) -> Svcgate {
        let log = self.dir.join(log);
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.gw])
            .arg(bin)
            .args(["run", "--config"])
            .arg(self.dir.join("svcgate.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let s = Svcgate { child, log };
        let t0 = Instant::now();
        while self.admin("/readyz").as_deref() != Some("ready\n") {
            assert!(t0.elapsed() < Duration::from_secs(30), "svcgate not ready: {}", s.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }
}

impl Drop for RestartLab {
    fn drop(&mut self) {
        // RESTART_E2E_KEEP=1 keeps the logs (timestamps of each start).
        if std::env::var("RESTART_E2E_KEEP").as_deref() == Ok("1") {
            eprintln!("kept {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn picked_up(l: &RestartLab) -> u64 {
    l.metric("svcgate_conntrack_events_total{event=\"picked_up\"}")
}

/// One restart: SIGTERM `old`, start `bin`; the connections and probes
/// must come through. Returns the new process.
#[allow(clippy::too_many_arguments)]
fn restart(
    test: &str,
    what: &str,
    l: &RestartLab,
    py: &mut Py,
    old: Svcgate,
    bin: &Path,
    log: &str,
    while_stopped: impl FnOnce(),
) -> Svcgate {
    py.ask("stats", "STATS"); // a new measuring window
    let t0 = Instant::now();
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    if what.contains("SIGKILL") {
        old.kill().expect("killed");
    } else {
        let st = old.stop().expect("svcgate stops on SIGTERM");
        assert!(st.success(), "{what}: exit status {st:?}");
    }
    let stopped = t0.elapsed();
    while_stopped();
    let sg = l.start(bin, log);
    let ready = t0.elapsed();
    let log_text = sg.log_text();
    let adopted = log_text.lines().find(|l| l.contains("state directory opened")).map(|l| num(l, "flows_adopted"));
    assert!(
        adopted.is_some_and(|n| n as usize >= CONNS),
        "{what}: flows adopted {adopted:?} (want >= {CONNS}):\n{log_text}"
    );
    assert!(!log_text.contains("state file refused"), "{what}:\n{log_text}");
    assert_eq!(l.metric("svcgate_state_restart{what=\"files_refused\"}"), 0, "{what}");
    // TCP retransmits what the gap dropped (200 ms, then 400 ms, ...).
    std::thread::sleep(Duration::from_millis(2500));
    let x = py.ask("x", "X");
    let stats = py.ask("stats", "STATS");
    eprintln!(
        "[{test}] {what}: signal at {}.{:03} (unix), stopped in {} ms, ready {} ms after the signal; {x}; {stats}",
        wall.as_secs(),
        wall.subsec_millis(),
        stopped.as_millis(),
        ready.as_millis()
    );
    assert_eq!((num(&x, "ok"), num(&x, "reset"), num(&x, "fail")), (CONNS as u64, 0, 0), "{what}: {x} {stats}");
    assert_eq!(num(&stats, "probe_err"), 0, "{what}: the probe connection failed: {stats}");
    assert_eq!(num(&stats, "node_fail"), 0, "{what}: the node's own server stopped answering: {stats}");
    assert_eq!(picked_up(l), 0, "{what}: connections were picked up again instead of adopted:\n{}", sg.log_text());
    sg
}

fn run_mode(test: &str, mode: &str, bin: &Path) {
    let t_start = Instant::now();
    let l = RestartLab::new(mode);
    let first = l.start(bin, "first.log");
    let script = l.dir.join("restart_probe.py");
    let mut py = Py::spawn(
        &l.cli,
        &script,
        &["client", VIP, &PORT.to_string(), &CONNS.to_string(), GW_CLIENT_IP, &NODE_PORT.to_string()],
    );
    let opened = py.expect("OPENED");
    assert_eq!(num(&opened, "ok"), CONNS as u64, "{opened}: {}", first.log_text());
    let x = py.ask("x", "X");
    assert_eq!(num(&x, "ok"), CONNS as u64, "before any restart: {x}");

    let second = restart(test, &format!("{mode} restart"), &l, &mut py, first, bin, "second.log", || {});
    // An upgrade: the binary from another path (a rebuilt binary with the
    // same table layout).
    let upgraded = l.dir.join("svcgate-upgraded");
    std::fs::copy(bin, &upgraded).unwrap();
    // While it is down, a second Pod joins the Service.
    let pod2 = || std::fs::rename(l.dir.join("pod2.yaml.later"), l.dir.join("manifests/pod2.yaml")).unwrap();
    let third = restart(test, &format!("{mode} upgrade (+1 Pod)"), &l, &mut py, second, &upgraded, "third.log", pod2);
    let status = l.admin("/status").unwrap_or_default();
    assert!(status.contains(POD2_IP), "the second Pod is a backend now: {status}");
    for _ in 0..4 {
        assert_eq!(py.ask("new", "NEW"), "NEW ok", "new connections spread over both Pods");
    }

    // A crash: SIGKILL while the probes run, then a start.
    let third = restart(test, &format!("{mode} SIGKILL and start"), &l, &mut py, third, bin, "third-b.log", || {});

    // A state file of another layout: refused, clean start, serving.
    let st = third.stop().expect("stops");
    assert!(st.success());
    let rev = std::fs::OpenOptions::new().write(true).open(l.dir.join("state/reverse4.tbl")).unwrap();
    rev.write_all_at(&99u32.to_le_bytes(), 8).unwrap(); // the layout version
    let fourth = l.start(bin, "fourth.log");
    let log_text = fourth.log_text();
    assert!(
        log_text.lines().any(|l| l.contains("ERROR")
            && l.contains("state file refused")
            && l.contains("reverse4.tbl")
            && l.contains("layout version is 99")),
        "the refused file is named in the log:\n{log_text}"
    );
    assert_eq!(l.metric("svcgate_state_restart{what=\"files_refused\"}"), 1, "counted");
    assert_eq!(l.metric("svcgate_state_restart{what=\"flows_adopted\"}"), 0, "clean start");
    let new = py.ask("new", "NEW");
    assert_eq!(new, "NEW ok", "a clean start serves new connections:\n{log_text}");
    std::thread::sleep(Duration::from_millis(1500));
    let x = py.ask("x", "X");
    let stats = py.ask("stats", "STATS");
    assert_eq!(num(&stats, "node_fail"), 0, "{stats}");
    eprintln!(
        "[{test}] {mode} mismatched layout: refused, clean start; old connections after it (picked up, not \
         adopted): {x}; {stats}; total {:?}",
        t_start.elapsed()
    );
    drop(fourth);
}

#[test]
fn restart_e2e_connections_survive_restart_and_upgrade() {
    let test = "restart_e2e_connections_survive_restart_and_upgrade";
    if !require_root(test) {
        return;
    }
    let bin = netns::svcgate_binary();
    if !skip_unless(test, bin.is_some(), "no target/<profile>/svcgate; build it with `cargo build -p svcgate-control`")
    {
        return;
    }
    let has = |p: &str| Command::new(p).arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !skip_unless(test, has("curl") && has("python3"), "curl and python3 are needed") {
        return;
    }
    let bin = bin.unwrap();
    // One mode after the other: two labs at once on two cores would
    // measure the machine, not the gap.
    for mode in ["snat", "dnat"] {
        run_mode(test, mode, &bin);
    }
}
