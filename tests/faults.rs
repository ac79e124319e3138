//! Faults around a real `svcgate run` (the binary, with a manifests
//! directory) in veth namespaces: the capabilities it keeps once up, a
//! restart over what a SIGKILLed instance left, and a manifests directory
//! that turns bad under it (broken YAML, an unreadable file, a FIFO, symlink
//! loops, a 100 MB file) while a ClusterIP keeps serving.
//!
//! Topology (names start with `flt-`, addresses in 198.18.0.0/15 only):
//! client c0 198.18.1.10 -- g0 198.18.1.1 [gw, svcgate] g1 198.18.2.1 --
//! e0 198.18.2.11 (a Pod: TCP echo on :80). Needs root (see tests/netns).

mod netns;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{require_root, skip_unless, ChildProc, Lab};

#[test]
#[ignore = "child process entry, run by the tests themselves"]
fn child_entry() {
    netns::child_main();
}

const CLIENT_IP: &str = "198.18.1.10";
const GW_CLIENT_IP: &str = "198.18.1.1";
const GW_POD_IP: &str = "198.18.2.1";
const POD_IP: &str = "198.18.2.11";
const WEB_IP: &str = "198.18.128.10";
const NEW_IP: &str = "198.18.128.11";
const PORT: u16 = 8080;

/// `CAP_NET_ADMIN`'s bit: what the housekeeping thread keeps.
const NET_ADMIN: u64 = 1 << 12;

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  clusterIP: {ip}\n  selector: {{app: web}}\n  \
         ports: [{{name: http, port: {PORT}, targetPort: 80, protocol: TCP}}]\n"
    )
}

fn pod_manifest() -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-0, labels: {{app: web}}}}\nspec:\n  containers:\n  - name: c\n    \
         ports: [{{name: http, containerPort: 80}}]\nstatus:\n  podIP: {POD_IP}\n  conditions: [{{type: Ready, status: \"True\"}}]\n"
    )
}

/// The lab and a config directory (removed on drop, after the daemon).
struct FaultLab {
    /// Last among the fields that matter: dropped after `svcgate`.
    lab: Lab,
    cli: String,
    gw: String,
    dir: PathBuf,
    _echo: ChildProc,
}

impl FaultLab {
    fn new(tag: &str) -> Self {
        let mut lab = Lab::with_prefix("flt", tag);
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
        lab.exec_ok(&gw, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        // The gateway's kernel has not resolved the Pod or the client:
        // svcgate's housekeeping thread asks it to, after the capability
        // drop, with the CAP_NET_ADMIN it keeps (without it, measured here:
        // 0 of 5 exchanges went through).
        let mut echo = lab.spawn(&pod, "tcp-echo", &[("SG_BIND", &format!("{POD_IP}:80"))]);
        echo.expect_line("READY");

        let dir = std::env::temp_dir().join(format!("flt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let toml = format!(
            "manifests = \"manifests\"\nservice_cidr = \"198.18.128.0/20\"\nnode_ips = [\"{GW_CLIENT_IP}\"]\n\
             admin_listen = \"127.0.0.1:9901\"\n\n[dataplane]\ninterfaces = [\"g0\", \"g1\"]\nqueues = 1\n\
             snat_addrs = [\"{GW_POD_IP}\"]\nconntrack_capacity = 4096\n"
        );
        std::fs::write(dir.join("svcgate.toml"), toml).unwrap();
        std::fs::write(dir.join("manifests/web.yaml"), service("web", WEB_IP)).unwrap();
        std::fs::write(dir.join("manifests/pod.yaml"), pod_manifest()).unwrap();
        FaultLab { lab, cli, gw, dir, _echo: echo }
    }

    fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    /// Starts `svcgate run` in the gateway namespace, its output in a log file.
    fn start(&self, bin: &str, log: &str) -> Svcgate {
        let log = self.dir.join(log);
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.gw, bin, "run", "--config"])
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
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// GET on the admin endpoint (the gateway namespace's loopback).
    fn admin(&self, path: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:9901{path}");
        let out = self.lab.exec(&self.gw, &["curl", "-sf", "-m", "3", &url]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A gauge of `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let m = self.admin("/metrics").expect("/metrics");
        m.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// `n` TCP exchanges from the client to `ip:PORT`; how many succeeded.
    fn exchanges(&mut self, ip: &str, n: usize) -> usize {
        let cli = self.cli.clone();
        let mut c =
            self.lab.spawn(&cli, "tcp-client", &[("SG_DST", &format!("{ip}:{PORT}")), ("SG_COUNT", &n.to_string())]);
        let line = c.expect_line("OK");
        self.lab.wait(&mut c, Duration::from_secs(30));
        line.trim_start_matches("OK ").parse().unwrap_or(0)
    }

    /// Waits until `/status` contains every one of `needles`.
    fn wait_status(&self, what: &str, needles: &[&str]) {
        let t0 = Instant::now();
        loop {
            let st = self.admin("/status").unwrap_or_default();
            if needles.iter().all(|n| st.contains(n)) {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "{what}: {needles:?} not in /status: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the table generation passes `gen`; returns the new one.
    fn wait_generation_past(&self, what: &str, gen: u64) -> u64 {
        let t0 = Instant::now();
        loop {
            let g = self.metric("svcgate_table_generation");
            if g > gen {
                return g;
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "{what}: generation still {g}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the status lists no error.
    fn wait_no_errors(&self, what: &str) {
        let t0 = Instant::now();
        while self.metric("svcgate_config_errors") != 0 {
            assert!(t0.elapsed() < Duration::from_secs(15), "{what}: {}", self.admin("/status").unwrap_or_default());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gateway's interfaces as `ip link` shows them.
    fn links(&self) -> String {
        self.lab.exec_ok(&self.gw, &["ip", "link", "show"])
    }
}

impl Drop for FaultLab {
    fn drop(&mut self) {
        // Give any file back its permissions so that it can be removed.
        let _ = Command::new("chmod").args(["-R", "u+rwX"]).arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `svcgate run`; killed on drop.
struct Svcgate {
    child: Child,
    log: PathBuf,
}

impl Svcgate {
    fn pid(&self) -> u32 {
        // `ip netns exec` execs the command: the child is svcgate itself.
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit status within 10 s.
    fn stop(mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Peak resident memory (VmHWM), KiB.
    fn peak_rss_kib(&self) -> u64 {
        let st = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status_field(&st, "VmHWM:").split_whitespace().next().unwrap().parse().unwrap()
    }
}

impl Drop for Svcgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim).unwrap_or_else(|| panic!("no {key}"))
}

fn hex(status: &str, key: &str) -> u64 {
    u64::from_str_radix(status_field(status, key), 16).unwrap()
}

/// Each thread of `pid`: (name, CapEff, CapPrm, CapBnd, CapAmb).
fn thread_caps(pid: u32) -> Vec<(String, u64, u64, u64, u64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let Ok(st) = std::fs::read_to_string(t.join("status")) else { continue };
        let name = status_field(&st, "Name:").to_string();
        out.push((name, hex(&st, "CapEff:"), hex(&st, "CapPrm:"), hex(&st, "CapBnd:"), hex(&st, "CapAmb:")));
    }
    out
}

fn svcgate_or_skip(test: &str) -> Option<String> {
    let bin = netns::svcgate_binary();
    let ok = skip_unless(
        test,
        bin.is_some(),
        "no target/<profile>/svcgate beside the test binary; build it first with `cargo build -p svcgate-control`",
    );
    ok.then(|| bin.unwrap().to_string_lossy().into_owned())
}

fn has_curl() -> bool {
    Command::new("curl").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Once the dataplane is up, no thread of `svcgate run` holds a capability
/// but the housekeeping thread's CAP_NET_ADMIN, in the effective, permitted,
/// ambient and bounding sets alike; and the dataplane still follows a new
/// Service (steering map updates through descriptors opened before the
/// drop) and forwards to it.
#[test]
fn flt_capabilities_after_startup() {
    let test = "flt_capabilities_after_startup";
    if !require_root(test) {
        return;
    }
    let Some(bin) = svcgate_or_skip(test) else { return };
    if !skip_unless(test, has_curl(), "curl not found (scripts/setup.sh installs it)") {
        return;
    }
    let mut l = FaultLab::new("caps");
    let sg = l.start(&bin, "caps.log");
    assert_eq!(l.exchanges(WEB_IP, 5), 5, "through the ClusterIP: {}", sg.log_text());

    let threads = thread_caps(sg.pid());
    for t in &threads {
        eprintln!("[{test}] {t:x?}");
    }
    assert!(threads.len() >= 4, "{threads:?}");
    let maint: Vec<_> = threads.iter().filter(|t| t.0.starts_with("svcgate-dp-mai")).collect();
    assert_eq!(maint.len(), 1, "one housekeeping thread: {threads:?}");
    for (name, eff, prm, bnd, amb) in &threads {
        let want = if name.starts_with("svcgate-dp-mai") { NET_ADMIN } else { 0 };
        assert_eq!((*eff, *prm, *bnd, *amb), (want, want, want, 0), "thread {name}: {threads:x?}");
    }
    // The main thread (the process's own status line) too.
    let st = std::fs::read_to_string(format!("/proc/{}/status", sg.pid())).unwrap();
    assert_eq!(hex(&st, "CapEff:"), 0, "{st}");
    assert_eq!(status_field(&st, "NoNewPrivs:"), "1");

    // A Service added after the drop: steered and forwarded.
    let gen = l.metric("svcgate_table_generation");
    std::fs::write(l.manifests().join("new.yaml"), service("new", NEW_IP)).unwrap();
    l.wait_generation_past("the new Service", gen);
    std::thread::sleep(Duration::from_millis(300)); // housekeeping syncs the maps every 100 ms
    assert_eq!(l.exchanges(NEW_IP, 5), 5, "a Service added after the drop: {}", sg.log_text());
    assert_eq!(l.exchanges(WEB_IP, 3), 3);
    let st = sg.stop().expect("svcgate stops on SIGTERM");
    assert!(st.success(), "exit status {st:?}");
    assert!(!l.links().contains("xdp"), "detached on exit: {}", l.links());
}

/// `svcgate run` SIGKILLed: nothing of it stays in the kernel (the XDP
/// program's link, the TUN devices; it pins no map), and a new instance
/// starts over it and serves; a clean stop then leaves nothing either.
#[test]
fn flt_restart_after_sigkill() {
    let test = "flt_restart_after_sigkill";
    if !require_root(test) {
        return;
    }
    let Some(bin) = svcgate_or_skip(test) else { return };
    if !skip_unless(test, has_curl(), "curl not found (scripts/setup.sh installs it)") {
        return;
    }
    let mut l = FaultLab::new("kill");
    let sg = l.start(&bin, "first.log");
    assert!(l.links().contains("svcgate0q0"), "TUN device while running: {}", l.links());
    assert!(l.links().contains("xdp"), "XDP attached while running: {}", l.links());
    assert_eq!(l.exchanges(WEB_IP, 3), 3);
    let pinned_before = bpffs_entries();
    sg.sigkill();

    let links = l.links();
    assert!(!links.contains("xdp"), "XDP program outlived its process: {links}");
    assert!(!links.contains("svcgate0"), "TUN device outlived its process: {links}");
    assert_eq!(bpffs_entries(), pinned_before, "nothing pinned in bpffs");

    for round in 1..=2 {
        let t0 = Instant::now();
        let sg = l.start(&bin, &format!("restart{round}.log"));
        eprintln!("[{test}] restart {round} ready in {:?}", t0.elapsed());
        assert_eq!(l.exchanges(WEB_IP, 5), 5, "after restart {round}: {}", sg.log_text());
        if round == 1 {
            sg.sigkill();
        } else {
            let st = sg.stop().expect("stops on SIGTERM");
            assert!(st.success(), "{st:?}");
        }
    }
    let links = l.links();
    assert!(!links.contains("xdp") && !links.contains("svcgate0"), "{links}");
}

/// Names in the host's bpffs, if mounted (svcgate pins nothing there).
fn bpffs_entries() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Writes `text` to `path` atomically (a temporary file renamed over it).
fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The manifests directory goes bad in every way the issue lists while a
/// flow keeps going through the ClusterIP: the last good state serves,
/// each error is in `/status` and the log, svcgate neither crashes nor
/// hangs (a Service added after each fault is served) and a 100 MB file
/// is not read (peak RSS grows by less than 8 MiB).
#[test]
fn flt_manifest_faults_keep_the_last_good_state() {
    let test = "flt_manifest_faults_keep_the_last_good_state";
    if !require_root(test) {
        return;
    }
    let Some(bin) = svcgate_or_skip(test) else { return };
    if !skip_unless(test, has_curl(), "curl not found (scripts/setup.sh installs it)") {
        return;
    }
    let mut l = FaultLab::new("mfst");
    let mut sg = l.start(&bin, "mfst.log");
    let m = l.manifests();
    assert_eq!(l.exchanges(WEB_IP, 3), 3);
    let rss0 = sg.peak_rss_kib();
    let mut probe = 0;
    // After each fault: the web Service still answers, and a change made
    // after the fault is applied (the watch is alive).
    let mut still_serving = |l: &mut FaultLab, sg: &mut Svcgate, what: &str| {
        probe += 1;
        let gen = l.metric("svcgate_table_generation");
        let ip = format!("198.18.128.{}", 100 + probe);
        std::fs::write(m.join(format!("probe{probe}.yaml")), service(&format!("probe{probe}"), &ip)).unwrap();
        l.wait_generation_past(what, gen);
        std::thread::sleep(Duration::from_millis(300));
        let diag = |l: &FaultLab, sg: &Svcgate| {
            let m = l.admin("/metrics").unwrap_or_default();
            let nonzero: Vec<&str> = m.lines().filter(|x| !x.starts_with('#') && !x.ends_with(" 0")).collect();
            format!(
                "log:\n{}\nmetrics:\n{}\nneighbours:\n{}",
                sg.log_text(),
                nonzero.join("\n"),
                l.lab.exec_ok(&l.gw, &["ip", "neigh"])
            )
        };
        let n = l.exchanges(WEB_IP, 3);
        assert_eq!(n, 3, "{what}: web no longer served: {}", diag(l, sg));
        let n = l.exchanges(&ip, 2);
        assert_eq!(n, 2, "{what}: a Service added after it not served: {}", diag(l, sg));
        assert!(sg.alive(), "{what}: svcgate died: {}", sg.log_text());
        eprintln!("[{test}] {what}: still serving");
    };

    // Broken YAML in place of the Service.
    std::fs::write(m.join("web.yaml"), "apiVersion: v1\nkind: Service\nmetadata: [\n").unwrap();
    l.wait_status("broken YAML", &["web.yaml:", "not valid YAML"]);
    still_serving(&mut l, &mut sg, "broken YAML");
    // Put back by a rename: a file rewritten in place can be read while it
    // is empty (truncated, not yet written), which is a valid, empty file.
    put(&m.join("web.yaml"), &service("web", WEB_IP));
    l.wait_no_errors("web.yaml put back");

    // Unreadable: mode 000. Root reads anything with CAP_DAC_OVERRIDE,
    // which svcgate no longer has once up: the open fails (EACCES).
    chmod(&m.join("web.yaml"), 0o000);
    l.wait_status("mode 000", &["web.yaml: cannot read", "Permission denied"]);
    still_serving(&mut l, &mut sg, "unreadable file");
    chmod(&m.join("web.yaml"), 0o644);
    l.wait_no_errors("web.yaml readable again");
    // An unreadable subdirectory holding a manifest.
    let gen = l.metric("svcgate_table_generation");
    std::fs::create_dir(m.join("sub")).unwrap();
    std::fs::write(m.join("sub/other.yaml"), service("other", "198.18.128.50")).unwrap();
    l.wait_generation_past("sub/other.yaml", gen);
    chmod(&m.join("sub"), 0o000);
    l.wait_status("directory mode 000", &["sub: cannot read"]);
    still_serving(&mut l, &mut sg, "unreadable directory");
    assert_eq!(l.exchanges("198.18.128.50", 2), 2, "a Service in the unreadable directory keeps serving");
    chmod(&m.join("sub"), 0o755);
    l.wait_no_errors("sub readable again");

    // A FIFO named like a manifest (a blocking read would hang the watch).
    let st = Command::new("mkfifo").arg(m.join("fifo.yaml")).status().unwrap();
    assert!(st.success());
    l.wait_status("FIFO", &["fifo.yaml", "not a regular file"]);
    still_serving(&mut l, &mut sg, "FIFO");

    // Symlink loops: a directory link back into the tree, two file links.
    std::os::unix::fs::symlink(".", m.join("loop")).unwrap();
    std::os::unix::fs::symlink("b.yaml", m.join("a.yaml")).unwrap();
    std::os::unix::fs::symlink("a.yaml", m.join("b.yaml")).unwrap();
    l.wait_status("symlink loops", &["symbolic link loop", "a.yaml: cannot read"]);
    still_serving(&mut l, &mut sg, "symlink loops");

    // 100 MB: real bytes, not a sparse file, so that a read would show;
    // written beside the directory and renamed in, as tools replace files
    // (a file growing in place is read while under the limit: at most
    // 32 MiB at a time).
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(l.dir.join("big.yaml")).unwrap());
        let line = format!("# {}\n", "x".repeat(1021));
        for _ in 0..100 << 10 {
            f.write_all(line.as_bytes()).unwrap();
        }
    }
    std::fs::rename(l.dir.join("big.yaml"), m.join("big.yaml")).unwrap();
    l.wait_status("100 MB file", &["big.yaml", "104857600 bytes is more than the 33554432"]);
    still_serving(&mut l, &mut sg, "100 MB file");
    let rss1 = sg.peak_rss_kib();
    eprintln!("[{test}] peak RSS {rss0} KiB before the faults, {rss1} KiB after");
    assert!(rss1 < rss0 + 8 * 1024, "peak RSS grew from {rss0} to {rss1} KiB");

    let log = sg.log_text();
    for needle in ["not valid YAML", "Permission denied", "not a regular file", "symbolic link loop", "104857600"] {
        assert!(log.contains(needle), "{needle:?} not in the log:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
    // All fixed: no error left.
    for f in ["fifo.yaml", "loop", "a.yaml", "b.yaml", "big.yaml"] {
        std::fs::remove_file(m.join(f)).unwrap();
    }
    l.wait_no_errors("all fixed");
    assert_eq!(l.exchanges(WEB_IP, 3), 3);
    let st = sg.stop().expect("stops on SIGTERM");
    assert!(st.success(), "{st:?}");
}
