//! Cluster DNS end to end: `svcgate run` on the gateway of a two-arm lab
//! (namespaces `sgx-dnsq-*`), `dig` in the client namespace asking the DNS
//! address, which is on the gateway's `lo`. UDP queries are answered by the
//! AF_XDP workers (checked with their counters on `/metrics`), TCP ones by
//! the daemon's hickory-server, both from one table.
//!
//! Needs root, `dig` (dnsutils, installed by scripts/setup.sh) and the
//! `svcgate` binary beside the test binary (`cargo build -p
//! svcgate-control`); without them it skips with a message, except under
//! CI=true, where it fails. Addresses: 198.18.0.0/15 only.

mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{require_root, skip_unless, TwoArm, GW_CLIENT_SIDE_IP, GW_SERVER_SIDE_IP};

#[test]
#[ignore]
fn child_entry() {
    netns::child_main()
}

/// The DNS address: on the gateway's lo, in the service CIDR's range.
const DNS: &str = "198.18.128.53";
const NGINX_IP: &str = "198.18.128.20";
const POD0: &str = "198.18.2.10";
const POD1: &str = "198.18.2.11";

fn pod(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: web\n\
         spec:\n  hostname: {name}\n  subdomain: web-headless\n  containers:\n  - name: c\n    image: nginx\n\
         \x20   ports:\n    - name: http\n      containerPort: 80\n\
         status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n  conditions:\n  - type: Ready\n    status: \"True\"\n"
    )
}

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: nginx
spec:
  clusterIP: 198.18.128.20
  selector:
    app: web
  ports:
  - name: http
    port: 8080
    targetPort: 80
    protocol: TCP
---
apiVersion: v1
kind: Service
metadata:
  name: web-headless
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - name: web
    port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: ext
spec:
  type: ExternalName
  externalName: www.example.com
";

/// The config directory (manifests and svcgate.toml), removed on drop.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("sgx-dnsq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        std::fs::write(dir.join("manifests/services.yaml"), SERVICES).unwrap();
        std::fs::write(dir.join("manifests/pod-web-0.yaml"), pod("web-0", POD0)).unwrap();
        std::fs::write(dir.join("manifests/pod-web-1.yaml"), pod("web-1", POD1)).unwrap();
        let toml = format!(
            "manifests = \"manifests\"\nservice_cidr = \"198.18.128.0/20\"\nnode_ips = [\"{GW_CLIENT_SIDE_IP}\"]\n\
             admin_listen = \"127.0.0.1:9901\"\n\n[dns]\naddresses = [\"{DNS}\"]\n\n\
             [dataplane]\ninterfaces = [\"g0\", \"g1\"]\nqueues = 1\nsnat_addrs = [\"{GW_SERVER_SIDE_IP}\"]\n\
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

fn show_log(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `svcgate run` in the gateway namespace, killed (by its pid) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `dig` printed, reduced: the status, the flags, the answer records
/// (owner name lower-cased, whitespace collapsed, sorted) and whether the
/// authority section holds an SOA.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dig {
    status: String,
    answers: Vec<String>,
    soa: bool,
    aa: bool,
}

fn parse_dig(out: &str) -> Option<Dig> {
    let status = out.split("status: ").nth(1)?.split(',').next()?.to_string();
    let flags = out.split("flags: ").nth(1)?.split(';').next()?.to_string();
    let section = |title: &str| -> Vec<String> {
        let Some(rest) = out.split(title).nth(1) else { return Vec::new() };
        let mut v: Vec<String> = rest
            .lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(|l| {
                let mut parts: Vec<String> = l.split_whitespace().map(str::to_owned).collect();
                parts[0].make_ascii_lowercase();
                parts.join(" ")
            })
            .collect();
        v.sort();
        v
    };
    let authority = section(";; AUTHORITY SECTION:");
    Some(Dig {
        status,
        answers: section(";; ANSWER SECTION:"),
        soa: authority.iter().any(|l| l.contains(" SOA ")),
        aa: flags.split_whitespace().any(|f| f == "aa"),
    })
}

struct DnsLab {
    lab: TwoArm,
}

impl DnsLab {
    fn dig(&self, args: &[&str], tcp: bool) -> Option<Dig> {
        let server = format!("@{DNS}");
        let mut argv = vec!["dig", &server, "+tries=1", "+time=2"];
        if tcp {
            argv.push("+tcp");
        }
        argv.extend_from_slice(args);
        let out = self.lab.lab.exec(&self.lab.client, &argv);
        parse_dig(&String::from_utf8_lossy(&out.stdout))
    }

    fn dig_ok(&self, args: &[&str], tcp: bool) -> Dig {
        self.dig(args, tcp).unwrap_or_else(|| panic!("dig {args:?} (tcp: {tcp}): no answer"))
    }

    fn metrics(&self) -> String {
        let out = self.lab.lab.exec(&self.lab.gw, &["curl", "-s", "--max-time", "5", "http://127.0.0.1:9901/metrics"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The workers' answered count, as of their last export (every 100 ms;
    /// waits up to 10 s for the dataplane to be attached).
    fn answered(&self) -> u64 {
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        loop {
            let m = self.metrics();
            let n = m
                .lines()
                .find_map(|l| l.strip_prefix("svcgate_dns_queries_total{verdict=\"answered\",reason=\"\"} "))
                .and_then(|v| v.trim().parse().ok());
            match n {
                Some(n) => return n,
                None if t0.elapsed() > Duration::from_secs(10) => panic!("no answered counter in /metrics:\n{m}"),
                None => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The DNS table generation `svcgate status` shows.
    fn dns_generation(&self, bin: &str) -> u64 {
        let out = self.lab.lab.exec(&self.lab.gw, &[bin, "status"]);
        let s = String::from_utf8_lossy(&out.stdout);
        s.split("table generation ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|g| g.trim().parse().ok())
            .unwrap_or_else(|| panic!("no DNS table generation in svcgate status:\n{s}"))
    }

    /// Polls `dig` (UDP) until `ok` holds for its answer, for up to `limit`.
    fn until(&self, args: &[&str], limit: Duration, ok: impl Fn(&Dig) -> bool) -> Result<Dig, String> {
        let t0 = Instant::now();
        loop {
            let d = self.dig(args, false);
            match d {
                Some(d) if ok(&d) => return Ok(d),
                _ if t0.elapsed() > limit => return Err(format!("dig {args:?}: still {d:?} after {limit:?}")),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

fn a(name: &str, ip: &str) -> String {
    format!("{name}. 5 IN A {ip}")
}

#[test]
fn dig_gets_cluster_dns_from_the_gateway() {
    let test = "dig_gets_cluster_dns_from_the_gateway";
    if !require_root(test) {
        return;
    }
    let dig_ok = Command::new("dig").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !skip_unless(test, dig_ok, "dig not found; install dnsutils (scripts/setup.sh does)") {
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

    let files = Files::new();
    let lab = DnsLab { lab: TwoArm::new("dnsq", 1) };
    lab.lab.lab.ip(&lab.lab.gw, &format!("addr add {DNS}/32 dev lo"));
    let log = std::fs::File::create(files.path("svcgate.log")).unwrap();
    let config = files.path("svcgate.toml");
    let _daemon = Daemon(
        Command::new("ip")
            .args(["netns", "exec", &lab.lab.gw, &bin, "run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log_path = files.path("svcgate.log");
    let fail = |e: String| -> Dig { panic!("{e}\nsvcgate's log:\n{}", show_log(&log_path)) };

    let nginx = "nginx.default.svc.cluster.local";
    lab.until(&[nginx, "A"], Duration::from_secs(30), |d| d.answers == [a(nginx, NGINX_IP)]).unwrap_or_else(fail);

    let headless = "web-headless.default.svc.cluster.local";
    let srv = "_http._tcp.nginx.default.svc.cluster.local";
    let cases: Vec<(Vec<&str>, Dig)> = vec![
        (vec![nginx, "A"], Dig { status: "NOERROR".into(), answers: vec![a(nginx, NGINX_IP)], soa: false, aa: true }),
        (
            vec![headless, "A"],
            Dig { status: "NOERROR".into(), answers: vec![a(headless, POD0), a(headless, POD1)], soa: false, aa: true },
        ),
        (
            vec!["web-0.web-headless.default.svc.cluster.local", "A"],
            Dig {
                status: "NOERROR".into(),
                answers: vec![a("web-0.web-headless.default.svc.cluster.local", POD0)],
                soa: false,
                aa: true,
            },
        ),
        (
            vec![srv, "SRV"],
            Dig {
                status: "NOERROR".into(),
                answers: vec![format!("{srv}. 5 IN SRV 0 100 8080 {nginx}.")],
                soa: false,
                aa: true,
            },
        ),
        (
            vec!["-x", NGINX_IP],
            Dig {
                status: "NOERROR".into(),
                answers: vec![format!("20.128.18.198.in-addr.arpa. 5 IN PTR {nginx}.")],
                soa: false,
                aa: true,
            },
        ),
        (
            vec!["ext.default.svc.cluster.local", "CNAME"],
            Dig {
                status: "NOERROR".into(),
                answers: vec!["ext.default.svc.cluster.local. 5 IN CNAME www.example.com.".into()],
                soa: false,
                aa: true,
            },
        ),
        (
            vec!["nope.default.svc.cluster.local", "A"],
            Dig { status: "NXDOMAIN".into(), answers: vec![], soa: true, aa: true },
        ),
        // NODATA: the name exists, no AAAA.
        (vec![nginx, "AAAA"], Dig { status: "NOERROR".into(), answers: vec![], soa: true, aa: true }),
    ];

    // Over UDP: every answer from the workers.
    let before = lab.answered();
    for (args, want) in &cases {
        assert_eq!(&lab.dig_ok(args, false), want, "UDP dig {args:?}");
    }
    let after = lab.answered();
    assert_eq!(after - before, cases.len() as u64, "every UDP answer came from the workers' fast path");

    // Over TCP (the daemon's hickory server): the same answers, none from the workers.
    for (args, want) in &cases {
        assert_eq!(&lab.dig_ok(args, true), want, "TCP dig {args:?}");
    }
    // ANY over UDP (dig sends ANY over TCP unless told +notcp) goes from
    // the workers to the control-path server through the kernel: every
    // record of the name, as the A and SRV queries give them.
    let any = lab.dig_ok(&["+notcp", nginx, "ANY"], false);
    let mut each = lab.dig_ok(&[nginx, "A"], true).answers;
    each.extend(lab.dig_ok(&[nginx, "SRV"], true).answers);
    each.sort();
    assert_eq!(any.answers, each);
    assert!(any.answers.contains(&a(nginx, NGINX_IP)), "{any:?}");
    assert_eq!(lab.answered(), after, "TCP and ANY were not the workers'");
    let m = lab.metrics();
    assert!(m.contains("svcgate_dns_queries_total{verdict=\"slow\",reason=\"query_type\"} 1"), "{m}");

    // A Pod deleted and re-added: the names follow, one table swap each.
    let web1 = "web-1.web-headless.default.svc.cluster.local";
    let g0 = lab.dns_generation(&bin);
    std::fs::remove_file(files.path("manifests/pod-web-1.yaml")).unwrap();
    lab.until(&[headless, "A"], Duration::from_secs(10), |d| d.answers == [a(headless, POD0)]).unwrap_or_else(fail);
    assert_eq!(lab.dig_ok(&[web1, "A"], false).status, "NXDOMAIN");
    assert_eq!(lab.dig_ok(&[web1, "A"], true).status, "NXDOMAIN");
    let g1 = lab.dns_generation(&bin);
    assert_eq!(g1, g0 + 1, "one table swap for the deletion");
    std::fs::write(files.path("manifests/pod-web-1.yaml"), pod("web-1", POD1)).unwrap();
    lab.until(&[web1, "A"], Duration::from_secs(10), |d| d.answers == [a(web1, POD1)]).unwrap_or_else(fail);
    assert_eq!(lab.dig_ok(&[headless, "A"], true).answers, [a(headless, POD0), a(headless, POD1)]);
    assert_eq!(lab.dns_generation(&bin), g1 + 1, "one table swap for the re-add");
}
