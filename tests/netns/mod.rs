//! Test lab for the AF_XDP integration tests: RAII network namespaces and
//! veth links (removed by name on drop, also when a test panics), and child
//! processes re-executed from the test binary inside a namespace
//! (`ip netns exec NS <test-binary> child_entry --exact --ignored`), so no
//! test code ever runs in, or touches, the host's own namespace beyond
//! creating and deleting its own namespaces.
//!
//! Addresses: 198.18.0.0/15 only (RFC 2544 benchmarking range), inside the
//! namespaces the test made.
//!
//! Each test file that uses it must define
//! `#[test] #[ignore] fn child_entry() { netns::child_main() }`.
#![allow(dead_code)]

pub mod roles;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use roles::child_main;

/// True when the tests may run: root. Not root: with CI=true panics (CI
/// must run them), otherwise prints why and returns false (skip).
pub fn require_root(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    if root {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root for network namespaces, and CI=true forbids skipping");
    }
    // Written to the stderr handle directly: libtest captures eprintln!
    // of passing tests, and a skip must be visible.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root (ip netns, veth, XDP); run as root, e.g. `sudo -E cargo test --test xsk_forward`"
    );
    false
}

/// A prerequisite other than root is missing (`what`, and how to get it):
/// with CI=true panics (CI must run every test), otherwise prints
/// `SKIPPED <test>: ...` to stderr and returns false, like [`require_root`].
pub fn skip_unless(test: &str, ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {what}, and CI=true forbids skipping");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {what}");
    false
}

/// The workspace's `svcgate` binary beside this test binary
/// (`target/<profile>/svcgate`, from `cargo build -p svcgate-control`;
/// `CARGO_BIN_EXE_svcgate` exists only in the control crate's own tests).
pub fn svcgate_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/svcgate
    let p = exe.parent()?.parent()?.join("svcgate");
    p.is_file().then_some(p)
}

/// How to run a command as `nobody` (uid/gid 65534, no supplementary
/// groups) from root: `setpriv`, else `su`; `None` when neither exists.
/// The returned argv prefix is followed by the program and its arguments
/// (for `su`, joined into one `-c` string, so keep them free of quotes).
pub fn drop_privileges_prefix() -> Option<Vec<String>> {
    let has = |p: &str| Command::new(p).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if has("setpriv") {
        return Some(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from).to_vec());
    }
    if has("su") {
        return Some(["su", "nobody", "-s", "/bin/sh", "-c"].map(String::from).to_vec());
    }
    None
}

/// What a command run with [`Lab::run_bounded`] did.
#[derive(Debug)]
pub struct Bounded {
    /// Exit status; `None`: still running at the deadline (then killed).
    pub status: Option<std::process::ExitStatus>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Time from spawn to exit (or to the kill).
    pub elapsed: Duration,
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Namespaces (and the links inside them) created by one test, removed on drop.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    /// A lab whose namespace names start with `sgx-<tag>-<pid>-<n>-`, so
    /// concurrently running tests never share a namespace.
    pub fn new(tag: &str) -> Self {
        Self::with_prefix("sgx", tag)
    }

    /// [`Lab::new`] with names starting `<prefix>-<tag>-<pid>-<n>-` (the
    /// fault tests use `flt`).
    pub fn with_prefix(prefix: &str, tag: &str) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        Lab {
            prefix: format!("{prefix}-{tag}-{}-{n}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Creates namespace `<prefix>-<name>` with `lo` up; returns its name.
    pub fn netns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        // A namespace of a crashed earlier run with the same pid: remove it.
        let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()).status();
        run_ok(Command::new("ip").args(["netns", "add", &ns]));
        self.namespaces.push(ns.clone());
        self.ip(&ns, "link set lo up");
        ns
    }

    /// `ip -n NS <args>` (whitespace-separated), must succeed.
    pub fn ip(&self, ns: &str, args: &str) {
        let mut c = Command::new("ip");
        c.args(["-n", ns]).args(args.split_whitespace());
        run_ok(&mut c);
    }

    /// `ip netns exec NS <argv>`: output, whatever the exit status.
    pub fn exec(&self, ns: &str, argv: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", ns]).args(argv).output().expect("ip netns exec")
    }

    /// `ip netns exec NS <argv>`, must succeed; returns stdout.
    pub fn exec_ok(&self, ns: &str, argv: &[&str]) -> String {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(argv);
        String::from_utf8_lossy(&run_ok(&mut c).stdout).into_owned()
    }

    /// A veth pair `a`@`ns_a` <-> `b`@`ns_b`, created directly inside the
    /// namespaces, with `queues` RX and TX queues on each end, both up, and
    /// TX checksum offload off on both ends (a frame that takes the AF_XDP
    /// path must carry a complete checksum).
    pub fn veth(&self, ns_a: &str, a: &str, ns_b: &str, b: &str, queues: u32) {
        let q = queues.to_string();
        run_ok(Command::new("ip").args([
            "link",
            "add",
            a,
            "netns",
            ns_a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            ns_b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]));
        for (ns, dev) in [(ns_a, a), (ns_b, b)] {
            self.exec_ok(ns, &["ethtool", "-K", dev, "tx", "off"]);
            self.ip(ns, &format!("link set {dev} up"));
        }
    }

    /// Starts this test binary inside `ns` in child role `role` (see
    /// [`roles`]) with extra environment; stdin and stdout are piped.
    pub fn spawn(&mut self, ns: &str, role: &str, env: &[(&str, &str)]) -> ChildProc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .arg(exe)
            .args(["child_entry", "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"])
            .env("SVCGATE_TEST_ROLE", role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn child");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let pid = child.id();
        self.children.push(child);
        ChildProc { pid, stdin, stdout, lines: Vec::new() }
    }

    /// Waits for the child with `pid` to exit; returns whether it succeeded.
    // Both paths reap the child (try_wait returned its status, or kill+wait).
    #[allow(clippy::zombie_processes)]
    pub fn wait(&mut self, p: &mut ChildProc, timeout: Duration) -> bool {
        drop(p.stdin.take());
        let deadline = Instant::now() + timeout;
        let idx = self.children.iter().position(|c| c.id() == p.pid).expect("our child");
        loop {
            if let Some(st) = self.children[idx].try_wait().expect("try_wait") {
                self.children.remove(idx);
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = self.children[idx].kill();
                let _ = self.children[idx].wait();
                self.children.remove(idx);
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ip netns exec NS <argv>` with stdin closed, killed if still running
    /// after `timeout`; never panics on the command's outcome.
    pub fn run_bounded(&self, ns: &str, argv: &[&str], timeout: Duration) -> Bounded {
        let t0 = Instant::now();
        let mut c = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec");
        let read = |r: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_string(&mut s);
                }
                s
            })
        };
        let out = read(c.stdout.take().map(|r| Box::new(r) as Box<dyn std::io::Read + Send>));
        let err = read(c.stderr.take().map(|r| Box::new(r) as Box<dyn std::io::Read + Send>));
        let status = loop {
            match c.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if t0.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break None;
                }
            }
        };
        let elapsed = t0.elapsed();
        Bounded { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default(), elapsed }
    }

    /// SIGKILLs the child (the process `ip netns exec` became: it execs).
    pub fn kill(&mut self, p: &ChildProc) {
        if let Some(idx) = self.children.iter().position(|c| c.id() == p.pid) {
            let mut c = self.children.remove(idx);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A running child: its stdout lines, and its stdin (closing it asks the
/// child to finish).
pub struct ChildProc {
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Lines read so far.
    pub lines: Vec<String>,
}

impl ChildProc {
    /// Reads lines until one starts with `prefix` (returned) or EOF (panics).
    pub fn expect_line(&mut self, prefix: &str) -> String {
        loop {
            let mut l = String::new();
            let n = self.stdout.read_line(&mut l).expect("read child stdout");
            assert!(n > 0, "child exited before printing {prefix:?}; got {:?}", self.lines);
            let l = l.trim_end().to_string();
            self.lines.push(l.clone());
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    /// Sends a line to the child's stdin.
    pub fn send(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    /// Closes stdin: a forwarder child then prints its stats and exits.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// Parses `key=value` pairs of a line such as `STATS rx=3 tx=3`.
pub fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// The standard two-arm topology: client -- gw (g0 | g1) -- server.
///
/// client c0 198.18.1.2/24 (default via .1) | gw g0 198.18.1.1/24,
/// g1 198.18.2.1/24, ip_forward off (only svcgate forwards) | server s0
/// 198.18.2.2/24 (default via 198.18.2.1).
pub struct TwoArm {
    pub lab: Lab,
    pub client: String,
    pub gw: String,
    pub server: String,
}

pub const CLIENT_IP: &str = "198.18.1.2";
pub const GW_CLIENT_SIDE_IP: &str = "198.18.1.1";
pub const GW_SERVER_SIDE_IP: &str = "198.18.2.1";
pub const SERVER_IP: &str = "198.18.2.2";

impl TwoArm {
    /// Builds it with `queues` queues on every veth.
    pub fn new(tag: &str, queues: u32) -> Self {
        let mut lab = Lab::new(tag);
        let client = lab.netns("cli");
        let gw = lab.netns("gw");
        let server = lab.netns("srv");
        lab.veth(&client, "c0", &gw, "g0", queues);
        lab.veth(&gw, "g1", &server, "s0", queues);
        lab.ip(&client, &format!("addr add {CLIENT_IP}/24 dev c0"));
        lab.ip(&gw, &format!("addr add {GW_CLIENT_SIDE_IP}/24 dev g0"));
        lab.ip(&gw, &format!("addr add {GW_SERVER_SIDE_IP}/24 dev g1"));
        lab.ip(&server, &format!("addr add {SERVER_IP}/24 dev s0"));
        lab.ip(&client, &format!("route add default via {GW_CLIENT_SIDE_IP}"));
        lab.ip(&server, &format!("route add default via {GW_SERVER_SIDE_IP}"));
        lab.exec_ok(&gw, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        TwoArm { lab, client, gw, server }
    }
}

/// A running gateway's counters: one `NAT w<i> key=value ...` line per
/// worker plus `XSK w<i> ...` (read back with [`field`]).
pub fn stats_lines(gw: &svcgate_dataplane::gateway::Gateway) -> Vec<String> {
    let mut out = Vec::new();
    for (i, s) in gw.nat_stats().iter().enumerate() {
        let c = &s.counters;
        let mut l = format!(
            "NAT w{i} rx={} forwarded={} replied={} reverse={} new_flows={} picked_up={} evicted={} reclaimed={} expired={} flows={}",
            c.rx, c.forwarded, c.replied, c.reverse_translated, c.new_flows, c.picked_up, c.evicted, c.reclaimed, c.expired, s.flows
        );
        for r in svcgate_dataplane::nat::PassReason::ALL {
            l += &format!(" pass_{}={}", r.as_str(), c.pass[*r as usize]);
        }
        for r in svcgate_dataplane::nat::DropReason::ALL {
            l += &format!(" drop_{}={}", r.as_str(), c.drop[*r as usize]);
        }
        out.push(l);
    }
    for (i, s) in gw.worker_stats().iter().enumerate() {
        out.push(format!(
            "XSK w{i} rx={} tx={} completed={} passed={} pass_failed={} dropped={} tx_ring_full={} bad_verdict={}",
            s.rx,
            s.tx,
            s.completed,
            s.passed(),
            s.pass_failed,
            s.dropped(),
            s.tx_ring_full,
            s.bad_verdict
        ));
    }
    out
}

/// A gateway child's life after `Gateway::start` and its `READY` line:
/// reads commands from stdin, calls `maintain` every 50 ms (printing the
/// first few `MAINTAIN-ERROR`s), answers `stats` with the counters
/// ([`stats_lines`]) and `END`, and hands any other command to `command`,
/// which returns false for one it does not know (`UNKNOWN <cmd>` is
/// printed). At stdin's EOF or after `limit`: the final counters, shutdown,
/// `BYE maintain_errors=<n>`.
pub fn serve_gateway(
    mut gw: svcgate_dataplane::gateway::Gateway,
    tables: &svcgate_common::publish::Publisher<svcgate_common::table::ServiceTable>,
    limit: Duration,
    mut command: impl FnMut(&str, &mut svcgate_dataplane::gateway::Gateway) -> bool,
) {
    let say = |line: &str| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::stdin().lock().lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut maintain_errors = 0u32;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(cmd) if cmd.trim() == "stats" => {
                for l in stats_lines(&gw) {
                    say(&l);
                }
                say("END");
            }
            Ok(cmd) => {
                if !command(cmd.trim(), &mut gw) {
                    say(&format!("UNKNOWN {}", cmd.trim()));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Err(e) = gw.maintain(&tables.current()) {
            maintain_errors += 1;
            if maintain_errors < 5 {
                say(&format!("MAINTAIN-ERROR {e}"));
            }
        }
    }
    // Let idle workers export their last counters (every 100 ms).
    std::thread::sleep(Duration::from_millis(300));
    for l in stats_lines(&gw) {
        say(&l);
    }
    gw.shutdown();
    say(&format!("BYE maintain_errors={maintain_errors}"));
}
