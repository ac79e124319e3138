//! Cluster DNS cross-checked with a second implementation: `svcgate run` on
//! the bundled example (examples/svcgate.toml and examples/manifests, copied
//! unchanged, plus one test-only file of ExternalName Services, which the
//! example has none of) on the gateway of a two-arm lab (namespaces
//! `sgx-dnsx-*`), and dnspython in the client namespace
//! (scripts/dns-crosscheck.py) asking for every record the example defines,
//! over UDP (answered by the AF_XDP workers in the frame), UDP with EDNS0,
//! and TCP (answered by the daemon's hickory server).
//!
//! The expected records are a table written here from the manifests by the
//! Kubernetes DNS specification (kubernetes/dns docs/specification.md) and
//! CoreDNS's `kubernetes` plugin where the spec leaves a choice; nothing of
//! svcgate's DNS code (its zone builder, encoder or decoder) computes or
//! reads them: dnspython decodes the answers and renders each record, and
//! the renderings are compared as sets of (owner, TTL, class, type, rdata),
//! with a diff per case on failure. The only value taken from svcgate is
//! the cluster IPs it allocated to each Service that has none in its
//! manifest (a hash of the name in the service CIDR of each family), read
//! from `svcgate status`'s Service table, as `kubectl get svc` would show
//! them.
//!
//! The example is dual-stack (service CIDRs, node IPs and SNAT addresses of
//! both families; nginx PreferDualStack): the gateway namespace has IPv6
//! enabled and the example's IPv6 addresses (scripts/lab.sh's plan), so the
//! AAAA and ip6.arpa records are checked too. The queries still go to the
//! example's DNS address, IPv4.
//!
//! Needs root, dnspython (python3-dnspython, installed by scripts/setup.sh)
//! and the `svcgate` binary beside the test binary (`cargo build -p
//! svcgate-control`); without them it skips with a message, except under
//! CI=true, where it fails. Addresses: 198.18.0.0/15 and 2001:2::/48 only.

mod netns;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{require_root, skip_unless, TwoArm};

#[test]
#[ignore]
fn child_entry() {
    netns::child_main()
}

/// examples/svcgate.toml's `[dns] addresses`: put on the gateway's lo.
const DNS: &str = "198.18.128.53";
/// examples/svcgate.toml's SNAT addresses, the gateway's addresses on g1 in
/// scripts/lab.sh (TwoArm gives g1 198.18.2.1; these are added beside it).
const EXAMPLE_SNAT: &str = "198.18.3.1/24";
const EXAMPLE_SNAT6: &str = "2001:2:0:3::1/64";
/// examples/svcgate.toml's IPv6 node IP, the gateway's on g0 in
/// scripts/lab.sh (its IPv4 one, 198.18.1.1, is TwoArm's).
const EXAMPLE_NODE6: &str = "2001:2:0:1::1/64";
/// examples/svcgate.toml's `[dns] ttl`; every record but dns-version's has it.
const TTL: u32 = 5;
/// The namespace every example Service is in (none is written: `default`).
const NS: &str = "default.svc.cluster.local";

/// Test-only Services (the example has no ExternalName): one pointing out of
/// the zone, one at a Service of the example (the dual-stack nginx), one at
/// an IPv4-only one, one at a name that does not exist.
const EXTERNAL_NAMES: &str = "\
# Written by tests/dns_crosscheck.rs beside a copy of examples/manifests.
apiVersion: v1
kind: Service
metadata:
  name: ext
spec:
  type: ExternalName
  externalName: www.example.com
---
apiVersion: v1
kind: Service
metadata:
  name: nginx-alias
spec:
  type: ExternalName
  externalName: nginx.default.svc.cluster.local
---
apiVersion: v1
kind: Service
metadata:
  name: nginx-lb-alias
spec:
  type: ExternalName
  externalName: nginx-lb.default.svc.cluster.local
---
apiVersion: v1
kind: Service
metadata:
  name: gone-alias
spec:
  type: ExternalName
  externalName: gone.default.svc.cluster.local
";

/// A copy of examples/ (svcgate.toml, manifests/) plus the ExternalName
/// file, in a temporary directory removed on drop.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new() -> Self {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let dir = std::env::temp_dir().join(format!("sgx-dnsx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        for entry in std::fs::read_dir(examples.join("manifests")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join("manifests").join(entry.file_name())).unwrap();
        }
        std::fs::write(dir.join("manifests/zz-test-externalname.yaml"), EXTERNAL_NAMES).unwrap();
        // The config as it is, dual-stack (`manifests = "manifests"` is
        // relative to it): the lab below has the IPv6 addresses it names.
        std::fs::copy(examples.join("svcgate.toml"), dir.join("svcgate.toml")).unwrap();
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

/// `svcgate run` in the gateway namespace, killed (by its pid) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Python interpreter that has dnspython: Debian's first (where
/// python3-dnspython installs it), then `python3` on the PATH.
fn python_with_dnspython() -> Option<String> {
    ["/usr/bin/python3", "python3"].into_iter().map(str::to_owned).find(|py| {
        Command::new(py)
            .args(["-c", "import dns.message, dns.query"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// One question and what must come back, as dnspython renders it.
struct Case {
    qname: String,
    qtype: &'static str,
    rcode: &'static str,
    answer: Vec<String>,
    authority: Vec<String>,
    /// `None`: not checked.
    additional: Option<Vec<String>>,
    /// Whether the workers answer it over UDP (else the kernel passes it
    /// to the daemon's server).
    fast: bool,
}

impl Case {
    fn new(qname: &str, qtype: &'static str) -> Self {
        Case {
            qname: fqdn(qname),
            qtype,
            rcode: "NOERROR",
            answer: vec![],
            authority: vec![],
            additional: Some(vec![]),
            fast: true,
        }
    }

    /// Over UDP, the workers leave it to the daemon's server.
    fn slow(mut self) -> Self {
        self.fast = false;
        self
    }

    fn answer(mut self, records: impl IntoIterator<Item = String>) -> Self {
        self.answer.extend(records);
        self
    }

    fn additional(mut self, records: impl IntoIterator<Item = String>) -> Self {
        self.additional = Some(records.into_iter().collect());
        self
    }

    /// NODATA (RFC 2308 2.2): NOERROR, no answer, the zone's SOA.
    fn nodata(mut self, zone: &str) -> Self {
        self.authority = vec![soa(zone)];
        self
    }

    /// NXDOMAIN with the zone's SOA.
    fn nxdomain(mut self, zone: &str) -> Self {
        self.rcode = "NXDOMAIN";
        self.authority = vec![soa(zone)];
        self
    }

    fn json(&self) -> String {
        let list = |v: &[String]| format!("[{}]", v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(", "));
        let mut s = format!(
            "{{\"qname\": {}, \"qtype\": {}, \"rcode\": {}, \"answer\": {}, \"authority\": {}",
            json_str(&self.qname),
            json_str(self.qtype),
            json_str(self.rcode),
            list(&self.answer),
            list(&self.authority)
        );
        if let Some(a) = &self.additional {
            s += &format!(", \"additional\": {}", list(a));
        }
        if self.rcode == "REFUSED" {
            // Not the server's zone: no AA (the helper's default asks AA).
            s += ", \"aa\": false";
        }
        s + "}"
    }
}

fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// One record as dnspython's `RRset.to_text()` writes it.
fn rr(owner: &str, ttl: u32, rtype: &str, rdata: &str) -> String {
    format!("{} {ttl} IN {rtype} {rdata}", fqdn(owner))
}

/// The SOA of negative answers: CoreDNS's (`ns.dns.<zone>
/// hostmaster.<zone>`, refresh 7200, retry 1800, expire 86400, minimum =
/// the TTL), the serial (svcgate's table generation) as `*`.
fn soa(zone: &str) -> String {
    rr(zone, TTL, "SOA", &format!("ns.dns.{zone}. hostmaster.{zone}. * 7200 1800 86400 {TTL}"))
}

fn reverse(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
}

/// The reverse name of an IPv6 address (RFC 3596 2.5): its 32 nibbles,
/// least significant first, under `ip6.arpa.`.
fn reverse6(ip: Ipv6Addr) -> String {
    let mut s = String::new();
    for b in ip.octets().iter().rev() {
        s += &format!("{:x}.{:x}.", b & 0xf, b >> 4);
    }
    s + "ip6.arpa."
}

/// A Service port as the spec names its SRV record.
struct Port {
    name: &'static str,
    proto: &'static str,
    port: u16,
}

/// Every record the example defines, by the specification, with the cluster
/// IPs svcgate allocated (`ips`: Service name -> its IPv4 cluster IP and,
/// if it has one, its IPv6 one).
fn expected(ips: &dyn Fn(&str) -> (Ipv4Addr, Option<Ipv6Addr>)) -> Vec<Case> {
    let mut cases = Vec::new();

    // ClusterIP, NodePort and LoadBalancer Services (nginx-svc.yaml,
    // nodeport.yaml, loadbalancer.yaml, udp-echo.yaml): spec 2.3.1 A
    // `<svc>.<ns>.svc.<zone>` -> the cluster IP (the LoadBalancer IP
    // 198.19.0.100 and the NodePort have no record); 2.3.2 SRV
    // `_<port>._<proto>.<svc>...` per named port -> `0 100 <port>
    // <svc>.<ns>.svc.<zone>.` with the A record in Additional (CoreDNS);
    // 2.3.3 PTR of the cluster IP. CoreDNS also answers SRV at the Service
    // name itself, one record per port (named or not: nodeport-service's
    // port has no name), weight 100/n.
    //
    // Dual-stack (examples/svcgate.toml has a service CIDR of each family):
    // nginx is PreferDualStack, so it has an IPv6 cluster IP too, and spec
    // 2.3.1 gives it an AAAA record beside the A, 2.3.3 a PTR in ip6.arpa
    // (RFC 3596 nibble form). Its SRV records stay one per port: CoreDNS
    // drops the duplicate target of the second cluster IP and puts the
    // target's A and AAAA in Additional. (The weight is written 100/n as
    // above; the spec does not set it.) The other three are SingleStack
    // (the default): IPv4 only, their AAAA is NODATA. Over UDP the workers
    // answer AAAA and ip6.arpa in the frame as they do A (the queries come
    // to the IPv4 DNS address): these are fast cases.
    let services: [(&str, Vec<Port>); 4] = [
        ("nginx", vec![Port { name: "service0", proto: "_tcp", port: 8080 }]),
        ("nginx-lb", vec![Port { name: "service0", proto: "_tcp", port: 80 }]),
        ("nodeport-service", vec![Port { name: "", proto: "_tcp", port: 8080 }]),
        ("udp-echo", vec![Port { name: "echo", proto: "_udp", port: 7 }]),
    ];
    for (svc, ports) in &services {
        let name = format!("{svc}.{NS}.");
        let (ip, ip6) = ips(svc);
        let a = rr(&name, TTL, "A", &ip.to_string());
        let aaaa = ip6.map(|ip6| rr(&name, TTL, "AAAA", &ip6.to_string()));
        let addresses: Vec<String> = std::iter::once(a.clone()).chain(aaaa.clone()).collect();
        cases.push(Case::new(&name, "A").answer([a.clone()]));
        let weight = 100 / ports.len();
        cases.push(
            Case::new(&name, "SRV")
                .answer(ports.iter().map(|p| rr(&name, TTL, "SRV", &format!("0 {weight} {} {name}", p.port))))
                .additional(addresses.clone()),
        );
        for p in ports.iter().filter(|p| !p.name.is_empty()) {
            let owner = format!("_{}.{}.{name}", p.name, p.proto);
            cases.push(
                Case::new(&owner, "SRV")
                    .answer([rr(&owner, TTL, "SRV", &format!("0 100 {} {name}", p.port))])
                    .additional(addresses.clone()),
            );
        }
        cases.push(Case::new(&reverse(ip), "PTR").answer([rr(&reverse(ip), TTL, "PTR", &name)]));
        match (aaaa, ip6) {
            (Some(aaaa), Some(ip6)) => {
                cases.push(Case::new(&name, "AAAA").answer([aaaa]));
                let ptr = reverse6(ip6);
                cases.push(Case::new(&ptr, "PTR").answer([rr(&ptr, TTL, "PTR", &name)]));
                // The reverse name exists, asked for another type: NODATA.
                cases.push(Case::new(&ptr, "AAAA").nodata("ip6.arpa"));
            }
            // The name exists, IPv4 only: NODATA (spec 2.3.1's AAAA is for IPv6 cluster IPs).
            _ => cases.push(Case::new(&name, "AAAA").nodata("cluster.local")),
        }
    }

    // The headless Service (headless.yaml: nginx-headless, port "nginx" 80,
    // selector app=nginx) and its ready endpoints, the Pods
    // pod-nginx-{0,1,2}.yaml (Running, Ready, podIP 198.18.3.1{0,1,2},
    // hostname nginx-N, subdomain nginx-headless). Spec 2.4.1: A per ready
    // endpoint at the Service name, and at `<hostname>.<svc>...` for
    // endpoints with a hostname; 2.4.2: SRV per named port and endpoint,
    // target the endpoint's name, port the endpoint's (targetPort unset:
    // 80), weight 100/3 = 33 (CoreDNS), endpoint A records in Additional;
    // 2.4.3: PTR of each endpoint address -> its name. SRV at the Service
    // name as above (CoreDNS).
    //
    // The Pods have IPv6 podIPs too, but nginx-headless sets no
    // ipFamilyPolicy: a headless Service with a selector is SingleStack of
    // the primary family (IPv4) on a dual-stack cluster (Kubernetes'
    // dual-stack docs), its EndpointSlices IPv4 only, so no AAAA at its
    // names (NODATA) and no ip6.arpa PTR for the Pods' IPv6 addresses.
    let headless = format!("nginx-headless.{NS}.");
    let pods: Vec<(String, String)> =
        (0..3).map(|i| (format!("nginx-{i}.{headless}"), format!("198.18.3.{}", 10 + i))).collect();
    let pod_a: Vec<String> = pods.iter().map(|(host, ip)| rr(host, TTL, "A", ip)).collect();
    cases.push(Case::new(&headless, "A").answer(pods.iter().map(|(_, ip)| rr(&headless, TTL, "A", ip))));
    for owner in [format!("_nginx._tcp.{headless}"), headless.clone()] {
        cases.push(
            Case::new(&owner, "SRV")
                .answer(pods.iter().map(|(host, _)| rr(&owner, TTL, "SRV", &format!("0 33 80 {host}"))))
                .additional(pod_a.clone()),
        );
    }
    for ((host, ip), a) in pods.iter().zip(&pod_a) {
        cases.push(Case::new(host, "A").answer([a.clone()]));
        let ptr = reverse(ip.parse().unwrap());
        cases.push(Case::new(&ptr, "PTR").answer([rr(&ptr, TTL, "PTR", host)]));
    }
    cases.push(Case::new(&pods[0].0, "AAAA").nodata("cluster.local"));
    cases.push(Case::new(&headless, "AAAA").nodata("cluster.local"));

    // ExternalName (the test's file): spec 2.5, a CNAME at the Service name,
    // for any query type. The target out of the zone is not resolved (an
    // authoritative answer, no recursion); one inside it is followed, as
    // CoreDNS does, with the target's records after the CNAME.
    let ext = format!("ext.{NS}.");
    let ext_cname = rr(&ext, TTL, "CNAME", "www.example.com.");
    cases.push(Case::new(&ext, "CNAME").answer([ext_cname.clone()]));
    // (Over UDP the workers leave this one to the daemon's server, the
    // place for resolving such a target upstream: it answers the CNAME alone.)
    cases.push(Case::new(&ext, "A").answer([ext_cname]).slow());
    let alias = format!("nginx-alias.{NS}.");
    let alias_cname = rr(&alias, TTL, "CNAME", &format!("nginx.{NS}."));
    cases.push(Case::new(&alias, "CNAME").answer([alias_cname.clone()]));
    cases.push(
        Case::new(&alias, "A")
            .answer([alias_cname.clone(), rr(&format!("nginx.{NS}."), TTL, "A", &ips("nginx").0.to_string())]),
    );
    // nginx is dual-stack: its AAAA follows the CNAME too.
    let nginx6 = ips("nginx").1.expect("nginx (PreferDualStack) has an IPv6 cluster IP");
    cases.push(
        Case::new(&alias, "AAAA").answer([alias_cname, rr(&format!("nginx.{NS}."), TTL, "AAAA", &nginx6.to_string())]),
    );

    // After a CNAME, the target's negative answer (RFC 2308 2.1, 2.2; RFC
    // 6604 3): NODATA or NXDOMAIN, the CNAME kept in the answer.
    let lb_alias = format!("nginx-lb-alias.{NS}.");
    let mut c = Case::new(&lb_alias, "AAAA").nodata("cluster.local");
    c.answer = vec![rr(&lb_alias, TTL, "CNAME", &format!("nginx-lb.{NS}."))];
    cases.push(c);
    let gone = format!("gone-alias.{NS}.");
    let gone_cname = rr(&gone, TTL, "CNAME", &format!("gone.{NS}."));
    cases.push(Case::new(&gone, "CNAME").answer([gone_cname.clone()]));
    cases.push(Case::new(&gone, "A").nxdomain("cluster.local").answer([gone_cname]));

    // The zone's own records (spec 2.2: dns-version TXT "1.1.0", CoreDNS's
    // TTL 28800); the apex SOA and NS as CoreDNS serves them, the name
    // server `ns.dns.<zone>` at the DNS address of the config.
    let ns_a = rr("ns.dns.cluster.local", TTL, "A", DNS);
    cases.push(Case::new("cluster.local", "SOA").answer([soa("cluster.local")]));
    cases.push(
        Case::new("cluster.local", "NS")
            .answer([rr("cluster.local", TTL, "NS", "ns.dns.cluster.local.")])
            .additional([ns_a.clone()]),
    );
    cases.push(Case::new("ns.dns.cluster.local", "A").answer([ns_a]));
    cases.push(Case::new("dns-version.cluster.local", "TXT").answer([rr(
        "dns-version.cluster.local",
        28800,
        "TXT",
        "\"1.1.0\"",
    )]));

    // Negative answers (spec 2.3.1/2.4.1: a name that does not exist is
    // NXDOMAIN; one that exists without the type is NODATA), with the SOA.
    cases.push(Case::new(&format!("nope.{NS}"), "A").nxdomain("cluster.local"));
    cases.push(Case::new("nginx.nonexistent.svc.cluster.local", "A").nxdomain("cluster.local"));
    cases.push(Case::new(&format!("nginx-3.{headless}"), "A").nxdomain("cluster.local"));
    // A port name nginx does not have (its port is "service0").
    cases.push(Case::new(&format!("_http._tcp.nginx.{NS}"), "SRV").nxdomain("cluster.local"));
    // The namespace exists (it holds Services) but has no records.
    cases.push(Case::new(NS, "A").nodata("cluster.local"));
    // Spec 2.6's deprecated Pod records (`a-b-c-d.<ns>.pod.<zone>`) are
    // off, as in CoreDNS's default (`pods disabled`): NXDOMAIN, from the
    // daemon's server. (`pod.<zone>` itself exists.)
    cases.push(Case::new("198-18-3-10.default.pod.cluster.local", "A").nxdomain("cluster.local").slow());
    // A PTR name that exists, asked for another type.
    cases.push(Case::new(&reverse("198.18.3.10".parse().unwrap()), "A").nodata("in-addr.arpa"));

    // Not the server's: a name outside the zone, and the reverse names of
    // addresses that have no record: 127.0.0.1, ::1, and nginx-0's IPv6
    // podIP (no PTR: the headless Service is IPv4 only, see above). REFUSED,
    // not authoritative (no recursion; CoreDNS's `fallthrough in-addr.arpa
    // ip6.arpa` would hand them to its next plugin); the workers leave them
    // to the daemon's server.
    let pod6 = reverse6("2001:2:0:3::10".parse().unwrap());
    let lo6 = reverse6(Ipv6Addr::LOCALHOST);
    for (name, qtype) in
        [("www.example.com", "A"), ("1.0.0.127.in-addr.arpa", "PTR"), (lo6.as_str(), "PTR"), (pod6.as_str(), "PTR")]
    {
        let mut c = Case::new(name, qtype).slow();
        c.rcode = "REFUSED";
        cases.push(c);
    }
    cases
}

/// The gateway's DNS query counters from `/metrics`: (answered by the
/// workers, left to the slow path), after the workers' next export.
fn dns_counters(lab: &TwoArm) -> (u64, u64) {
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    loop {
        let out = lab.lab.exec(&lab.gw, &["curl", "-s", "--max-time", "5", "http://127.0.0.1:9901/metrics"]);
        let m = String::from_utf8_lossy(&out.stdout);
        let sum = |verdict: &str| -> Option<u64> {
            let prefix = format!("svcgate_dns_queries_total{{verdict=\"{verdict}\"");
            let mut found = false;
            let mut n = 0;
            for l in m.lines().filter(|l| l.starts_with(&prefix)) {
                found = true;
                n += l.rsplit(' ').next()?.trim().parse::<u64>().ok()?;
            }
            found.then_some(n)
        };
        if let Some(answered) = sum("answered") {
            return (answered, sum("slow").unwrap_or(0));
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no DNS counters in /metrics:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Service's name and cluster IPs.
type ClusterIps = (String, Ipv4Addr, Option<Ipv6Addr>);

/// The cluster IPs of each Service, from `svcgate status`'s Service table
/// (NAME TYPE CLUSTER-IP ...; a dual-stack Service's CLUSTER-IP is both,
/// comma-separated, as `kubectl get svc -o wide` shows them).
fn cluster_ips(lab: &TwoArm, bin: &str) -> Vec<ClusterIps> {
    let out = lab.lab.exec(&lab.gw, &[bin, "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            let ips: Vec<&str> = cells.get(2)?.split(',').collect();
            let v4 = ips.iter().find_map(|s| s.parse::<Ipv4Addr>().ok())?;
            let v6 = ips.iter().find_map(|s| s.parse::<Ipv6Addr>().ok());
            Some((cells.first()?.to_string(), v4, v6))
        })
        .collect()
}

#[test]
fn dnspython_gets_the_examples_records_from_the_gateway() {
    let test = "dnspython_gets_the_examples_records_from_the_gateway";
    if !require_root(test) {
        return;
    }
    let python = python_with_dnspython();
    if !skip_unless(
        test,
        python.is_some(),
        "no python3 with dnspython; install python3-dnspython (scripts/setup.sh does)",
    ) {
        return;
    }
    let python = python.unwrap();
    let bin = netns::svcgate_binary();
    if !skip_unless(
        test,
        bin.is_some(),
        "no target/<profile>/svcgate; build it first with `cargo build -p svcgate-control`",
    ) {
        return;
    }
    let bin = bin.unwrap().to_string_lossy().into_owned();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dns-crosscheck.py");
    let script = script.to_string_lossy().into_owned();

    let files = Files::new();
    let lab = TwoArm::new("dnsx", 1);
    lab.lab.ip(&lab.gw, &format!("addr add {DNS}/32 dev lo"));
    lab.lab.ip(&lab.gw, &format!("addr add {EXAMPLE_SNAT} dev g1"));
    // The example's IPv6 addresses (the daemon opens NodePorts on the node
    // IPs and masquerades to the SNAT addresses of both families).
    lab.lab.exec_ok(
        &lab.gw,
        &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0"],
    );
    lab.lab.ip(&lab.gw, &format!("addr add {EXAMPLE_NODE6} dev g0 nodad"));
    lab.lab.ip(&lab.gw, &format!("addr add {EXAMPLE_SNAT6} dev g1 nodad"));
    let log_path = files.path("svcgate.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _daemon = Daemon(
        Command::new("ip")
            .args(["netns", "exec", &lab.gw, &bin, "run", "--config"])
            .arg(files.path("svcgate.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let crosscheck = |expect: &str, extra: &[&str]| {
        let mut argv = vec![python.as_str(), script.as_str(), expect, "--server", DNS, "-v"];
        argv.extend_from_slice(extra);
        lab.lab.run_bounded(&lab.client, &argv, Duration::from_secs(180))
    };

    // The cluster IPs svcgate allocated, once `svcgate status` lists the
    // Services; then up when nginx's A record is served (the helper's
    // --wait: one table swap brings every name).
    let t0 = Instant::now();
    let ips = loop {
        let ips = cluster_ips(&lab, &bin);
        if ips.iter().any(|(n, _, _)| n == "nginx") {
            break ips;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "svcgate status shows no Services after 30 s\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    };
    let ip = |svc: &str| -> (Ipv4Addr, Option<Ipv6Addr>) {
        ips.iter()
            .find(|(n, _, _)| n == svc)
            .map(|(_, ip, ip6)| (*ip, *ip6))
            .unwrap_or_else(|| panic!("no cluster IP of {svc} in {ips:?}"))
    };
    let cases = expected(&ip);
    let write = |name: &str, cases: &[Case]| -> String {
        let body: Vec<String> = cases.iter().map(|c| format!("  {}", c.json())).collect();
        let path = files.path(name);
        std::fs::write(&path, format!("{{\"cases\": [\n{}\n]}}\n", body.join(",\n"))).unwrap();
        path.to_string_lossy().into_owned()
    };
    let ready = crosscheck(&write("ready.json", &cases[..1]), &["--wait", "30"]);
    assert_eq!(
        ready.status.map(|s| s.success()),
        Some(true),
        "not ready:\n{}{}\n{}",
        ready.stdout,
        ready.stderr,
        log()
    );

    let before = dns_counters(&lab);
    let run = crosscheck(&write("expect.json", &cases), &[]);
    let after = dns_counters(&lab);
    let report = format!(
        "scripts/dns-crosscheck.py ({:?}):\n{}{}\nsvcgate's log:\n{}",
        run.elapsed,
        run.stdout,
        run.stderr,
        log()
    );
    assert_eq!(run.status.map(|s| s.success()), Some(true), "the cross-check failed\n{report}");
    // The helper's lines (shown with --nocapture).
    println!("{}", run.stdout);
    let n = cases.len();
    let summary = format!("crosscheck cases={n} failed=0 udp_queries={} tcp_queries={n}", 2 * n);
    assert!(run.stdout.lines().any(|l| l == summary), "expected {summary:?}\n{report}");
    // Each case went twice over UDP (plain, EDNS): the workers answered
    // those of the fast cases, the kernel passed the others to the daemon.
    let fast = cases.iter().filter(|c| c.fast).count() as u64;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (2 * fast, 2 * (n as u64 - fast)),
        "(answered by the workers, left to the slow path) over UDP\n{report}"
    );
}
