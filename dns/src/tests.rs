//! The responder end to end: queries built by hand, responses parsed by
//! hickory-proto's decoder and compared with records written out here as
//! text (what `dig` would print), not with this crate's encoder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, ResponseCode};
use proptest::prelude::*;

use crate::view::{DnsConfig, DnsEndpoint, DnsService, DnsServiceKind, DnsView, Protocol};
use crate::{respond_in_place, DnsTable, DropReason, Outcome, SlowReason};

const A: u16 = 1;
const NS: u16 = 2;
const CNAME: u16 = 5;
const SOA: u16 = 6;
const PTR: u16 = 12;
const MX: u16 = 15;
const TXT: u16 = 16;
const AAAA: u16 = 28;
const SRV: u16 = 33;

const SOA_CLUSTER: &str = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5";

fn ep(addr: [u8; 4], hostname: Option<&str>, ready: bool, ports: &[(&str, u16)]) -> DnsEndpoint {
    DnsEndpoint {
        addr: IpAddr::V4(Ipv4Addr::from(addr)),
        hostname: hostname.map(str::to_owned),
        ready,
        ports: ports.iter().map(|&(n, p)| (n.to_owned(), p)).collect(),
    }
}

/// The Services of the tests: the documentation's nginx, a StatefulSet-shaped
/// headless Service, and the corner cases.
fn view() -> DnsView {
    let mut dual = DnsService::cluster_ip("default", "dual", Ipv4Addr::new(198, 18, 128, 2));
    dual.kind = DnsServiceKind::ClusterIp(vec![
        IpAddr::V4(Ipv4Addr::new(198, 18, 128, 2)),
        IpAddr::V6("fd00::2".parse::<Ipv6Addr>().unwrap()),
    ]);
    let mut publish = DnsService::headless("default", "pub").with_endpoint(ep([198, 18, 2, 1], None, false, &[]));
    publish.publish_not_ready_addresses = true;
    DnsView {
        services: vec![
            DnsService::cluster_ip("default", "nginx", Ipv4Addr::new(198, 18, 128, 1))
                .with_port("http", Protocol::Tcp, 8080)
                .with_port("", Protocol::Udp, 9000),
            DnsService::headless("default", "nginx-headless")
                .with_port("web", Protocol::Tcp, 80)
                .with_endpoint(ep([198, 18, 1, 1], Some("nginx-0"), true, &[("web", 8080)]))
                .with_endpoint(ep([198, 18, 1, 2], Some("nginx-1"), true, &[("web", 8080)]))
                .with_endpoint(ep([198, 18, 1, 3], None, true, &[("web", 8080)]))
                .with_endpoint(ep([198, 18, 1, 4], Some("nginx-3"), false, &[("web", 8080)])),
            publish,
            DnsService::headless("default", "empty"),
            DnsService::external_name("default", "ext", "www.example.com"),
            DnsService::external_name("default", "ext-in", "nginx.default.svc.cluster.local."),
            DnsService::external_name("default", "ext-missing", "nope.default.svc.cluster.local"),
            dual,
            DnsService::cluster_ip("other", "db", Ipv4Addr::new(198, 18, 128, 3)).with_port("pg", Protocol::Tcp, 5432),
        ],
    }
}

fn config() -> DnsConfig {
    DnsConfig { nameservers: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 128, 10))], ..DnsConfig::default() }
}

fn table() -> &'static DnsTable {
    static TABLE: std::sync::OnceLock<DnsTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let t = DnsTable::build(&view(), &config());
        assert!(t.skipped().is_empty(), "{:?}", t.skipped());
        t
    })
}

/// A query: ID 0xbeef, RD, one question, and an OPT record (no options)
/// when `edns` gives a payload size.
fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())];
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    if let Some(size) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    q
}

/// Run the responder on a copy of `q` in a 4 KiB buffer.
fn ask_with(table: &DnsTable, q: &[u8], max_out: usize) -> (Outcome, Vec<u8>) {
    let mut buf = vec![0u8; 4096];
    buf[..q.len()].copy_from_slice(q);
    let outcome = respond_in_place(table, &mut buf, q.len(), max_out);
    match outcome {
        Outcome::Answered { len } => {
            assert!(len <= max_out, "{len} > {max_out}");
            buf.truncate(len);
        }
        _ => assert_eq!(&buf[..q.len()], q, "the buffer changed on {outcome:?}"),
    }
    (outcome, buf)
}

fn ask(table: &DnsTable, q: &[u8]) -> Message {
    let (outcome, buf) = ask_with(table, q, 4096);
    assert!(matches!(outcome, Outcome::Answered { .. }), "{outcome:?}");
    let m = Message::from_vec(&buf).expect("hickory parses the response");
    assert_eq!(&buf[12..12 + question_len(q)], &q[12..12 + question_len(q)], "question echoed");
    assert_eq!(m.metadata.id, 0xbeef);
    assert!(m.metadata.authoritative && !m.metadata.recursion_available);
    assert_eq!(m.metadata.recursion_desired, q[2] & 1 != 0);
    m
}

fn question_len(q: &[u8]) -> usize {
    let mut at = 12;
    while q[at] != 0 {
        at += 1 + usize::from(q[at]);
    }
    at + 1 - 12 + 4
}

fn texts<'a>(records: impl IntoIterator<Item = &'a hickory_proto::rr::Record>) -> Vec<String> {
    let mut v: Vec<String> = records.into_iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Ask `name`/`qtype` (plain, then with EDNS) and check the response code
/// and the three sections.
#[track_caller]
fn check(table: &DnsTable, name: &str, qtype: u16, rcode: ResponseCode, answers: &[&str], ns: &[&str], extra: &[&str]) {
    for edns in [None, Some(1232)] {
        let m = ask(table, &query(name, qtype, edns));
        assert_eq!(m.metadata.response_code, rcode, "{name} {qtype}");
        assert!(!m.metadata.truncation);
        assert_eq!(texts(&m.answers), sorted(answers), "answers of {name} {qtype}");
        assert_eq!(texts(&m.authorities), sorted(ns), "authority of {name} {qtype}");
        assert_eq!(texts(&m.additionals), sorted(extra), "additional of {name} {qtype}");
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), edns);
    }
}

#[track_caller]
fn check_nodata(table: &DnsTable, name: &str, qtype: u16) {
    check(table, name, qtype, ResponseCode::NoError, &[], &[SOA_CLUSTER], &[]);
}

#[track_caller]
fn check_nxdomain(table: &DnsTable, name: &str, qtype: u16) {
    check(table, name, qtype, ResponseCode::NXDomain, &[], &[SOA_CLUSTER], &[]);
}

fn slow(table: &DnsTable, q: &[u8]) -> Outcome {
    ask_with(table, q, 4096).0
}

#[test]
fn cluster_ip_service() {
    let t = table();
    let ok = ResponseCode::NoError;
    let svc = "nginx.default.svc.cluster.local.";
    check(t, svc, A, ok, &["nginx.default.svc.cluster.local. 5 IN A 198.18.128.1"], &[], &[]);
    check_nodata(t, svc, AAAA);
    check_nodata(t, svc, MX);
    check_nodata(t, svc, SOA);
    check(
        t,
        "_http._tcp.nginx.default.svc.cluster.local.",
        SRV,
        ok,
        &["_http._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 100 8080 nginx.default.svc.cluster.local."],
        &[],
        &["nginx.default.svc.cluster.local. 5 IN A 198.18.128.1"],
    );
    // Every port, named or not, under the Service's own name (CoreDNS).
    check(
        t,
        svc,
        SRV,
        ok,
        &[
            "nginx.default.svc.cluster.local. 5 IN SRV 0 50 8080 nginx.default.svc.cluster.local.",
            "nginx.default.svc.cluster.local. 5 IN SRV 0 50 9000 nginx.default.svc.cluster.local.",
        ],
        &[],
        &["nginx.default.svc.cluster.local. 5 IN A 198.18.128.1"],
    );
    check(
        t,
        "1.128.18.198.in-addr.arpa.",
        PTR,
        ok,
        &["1.128.18.198.in-addr.arpa. 5 IN PTR nginx.default.svc.cluster.local."],
        &[],
        &[],
    );
    // The unnamed port has no SRV name; a port that does not exist neither.
    check_nxdomain(t, "_._udp.nginx.default.svc.cluster.local.", SRV);
    check_nxdomain(t, "_http._udp.nginx.default.svc.cluster.local.", SRV);
    check_nxdomain(t, "_https._tcp.nginx.default.svc.cluster.local.", SRV);
    // Empty non-terminal between the port name and the Service.
    check_nodata(t, "_tcp.nginx.default.svc.cluster.local.", SRV);
    // No per-endpoint names under a Service with a cluster IP.
    check_nxdomain(t, "nginx-0.nginx.default.svc.cluster.local.", A);
    check(t, "db.other.svc.cluster.local.", A, ok, &["db.other.svc.cluster.local. 5 IN A 198.18.128.3"], &[], &[]);
}

#[test]
fn dual_stack_service() {
    let t = table();
    let ok = ResponseCode::NoError;
    check(
        t,
        "dual.default.svc.cluster.local.",
        A,
        ok,
        &["dual.default.svc.cluster.local. 5 IN A 198.18.128.2"],
        &[],
        &[],
    );
    check(
        t,
        "dual.default.svc.cluster.local.",
        AAAA,
        ok,
        &["dual.default.svc.cluster.local. 5 IN AAAA fd00::2"],
        &[],
        &[],
    );
    check(
        t,
        "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        PTR,
        ok,
        &["2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 IN PTR dual.default.svc.cluster.local."],
        &[],
        &[],
    );
}

/// IPv6 and dual-stack Services as the control plane hands them over
/// (addresses of 2001:2::/48): an IPv6-only ClusterIP Service and a headless
/// one with endpoints of both families.
#[test]
fn ipv6_and_dual_stack_answers() {
    let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
    let ep6 = |addr: &str, host: Option<&str>| DnsEndpoint {
        addr: v6(addr),
        hostname: host.map(str::to_owned),
        ready: true,
        ports: vec![("pg".to_owned(), 5432)],
    };
    let mut only6 =
        DnsService::cluster_ip("default", "web6", Ipv4Addr::new(198, 18, 128, 1)).with_port("http", Protocol::Tcp, 80);
    only6.kind = DnsServiceKind::ClusterIp(vec![v6("2001:2:0:8000::a")]);
    let view = DnsView {
        services: vec![
            only6,
            DnsService::headless("default", "db")
                .with_port("pg", Protocol::Tcp, 5432)
                .with_endpoint(ep([198, 18, 4, 30], Some("db-0"), true, &[("pg", 5432)]))
                .with_endpoint(ep6("2001:2::4:30", Some("db-0")))
                .with_endpoint(ep6("2001:2::4:31", None)),
        ],
    };
    let t = DnsTable::build(&view, &DnsConfig { nameservers: vec![v6("2001:2::53")], ..DnsConfig::default() });
    assert!(t.skipped().is_empty(), "{:?}", t.skipped());
    // The fast path of the workers parses IPv4 frames only: the IPv6
    // address is kept apart.
    assert!(t.addresses().is_empty());
    assert_eq!(t.addresses6(), ["2001:2::53".parse::<Ipv6Addr>().unwrap()]);
    let ok = ResponseCode::NoError;

    let svc = "web6.default.svc.cluster.local.";
    check(&t, svc, AAAA, ok, &["web6.default.svc.cluster.local. 5 IN AAAA 2001:2:0:8000::a"], &[], &[]);
    // The family it lacks: NODATA, not NXDOMAIN.
    check_nodata(&t, svc, A);
    check(
        &t,
        "_http._tcp.web6.default.svc.cluster.local.",
        SRV,
        ok,
        &["_http._tcp.web6.default.svc.cluster.local. 5 IN SRV 0 100 80 web6.default.svc.cluster.local."],
        &[],
        &["web6.default.svc.cluster.local. 5 IN AAAA 2001:2:0:8000::a"],
    );
    let rev = "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.0.0.0.0.2.0.0.0.1.0.0.2.ip6.arpa.";
    check(&t, rev, PTR, ok, &[&format!("{rev} 5 IN PTR web6.default.svc.cluster.local.")], &[], &[]);

    // Headless, both families: A and AAAA at the Service's name and at each
    // endpoint's (the dashed IPv6 address without a hostname, as CoreDNS).
    let db = "db.default.svc.cluster.local.";
    check(&t, db, A, ok, &["db.default.svc.cluster.local. 5 IN A 198.18.4.30"], &[], &[]);
    check(
        &t,
        db,
        AAAA,
        ok,
        &[
            "db.default.svc.cluster.local. 5 IN AAAA 2001:2::4:30",
            "db.default.svc.cluster.local. 5 IN AAAA 2001:2::4:31",
        ],
        &[],
        &[],
    );
    check(
        &t,
        "db-0.db.default.svc.cluster.local.",
        AAAA,
        ok,
        &["db-0.db.default.svc.cluster.local. 5 IN AAAA 2001:2::4:30"],
        &[],
        &[],
    );
    let dashed = "2001-2--4-31.db.default.svc.cluster.local.";
    check(&t, dashed, AAAA, ok, &[&format!("{dashed} 5 IN AAAA 2001:2::4:31")], &[], &[]);
    check_nodata(&t, dashed, A);
    let rev = "1.3.0.0.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.2.ip6.arpa.";
    check(&t, rev, PTR, ok, &[&format!("{rev} 5 IN PTR {dashed}")], &[], &[]);
    // SRV targets are the endpoint names, their A and AAAA in Additional.
    check(
        &t,
        "_pg._tcp.db.default.svc.cluster.local.",
        SRV,
        ok,
        &[
            "_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.default.svc.cluster.local.",
            &format!("_pg._tcp.db.default.svc.cluster.local. 5 IN SRV 0 50 5432 {dashed}"),
        ],
        &[],
        &[
            "db-0.db.default.svc.cluster.local. 5 IN A 198.18.4.30",
            "db-0.db.default.svc.cluster.local. 5 IN AAAA 2001:2::4:30",
            &format!("{dashed} 5 IN AAAA 2001:2::4:31"),
        ],
    );
}

#[test]
fn headless_service() {
    let t = table();
    let ok = ResponseCode::NoError;
    let a = |host: &str, ip: &str| format!("{host}nginx-headless.default.svc.cluster.local. 5 IN A {ip}");
    check(
        t,
        "nginx-headless.default.svc.cluster.local.",
        A,
        ok,
        &[&a("", "198.18.1.1"), &a("", "198.18.1.2"), &a("", "198.18.1.3")],
        &[],
        &[],
    );
    check(t, "nginx-0.nginx-headless.default.svc.cluster.local.", A, ok, &[&a("nginx-0.", "198.18.1.1")], &[], &[]);
    check(
        t,
        "198-18-1-3.nginx-headless.default.svc.cluster.local.",
        A,
        ok,
        &[&a("198-18-1-3.", "198.18.1.3")],
        &[],
        &[],
    );
    check_nodata(t, "nginx-0.nginx-headless.default.svc.cluster.local.", AAAA);
    // Not ready, no publishNotReadyAddresses: no records, no name.
    check_nxdomain(t, "nginx-3.nginx-headless.default.svc.cluster.local.", A);
    check_nxdomain(t, "198-18-1-1.nginx-headless.default.svc.cluster.local.", A);
    check_nxdomain(t, "x.nginx-0.nginx-headless.default.svc.cluster.local.", A);
    let srv = |host: &str| {
        format!("_web._tcp.nginx-headless.default.svc.cluster.local. 5 IN SRV 0 33 8080 {host}.nginx-headless.default.svc.cluster.local.")
    };
    check(
        t,
        "_web._tcp.nginx-headless.default.svc.cluster.local.",
        SRV,
        ok,
        &[&srv("nginx-0"), &srv("nginx-1"), &srv("198-18-1-3")],
        &[],
        &[&a("nginx-0.", "198.18.1.1"), &a("nginx-1.", "198.18.1.2"), &a("198-18-1-3.", "198.18.1.3")],
    );
    check(
        t,
        "1.1.18.198.in-addr.arpa.",
        PTR,
        ok,
        &["1.1.18.198.in-addr.arpa. 5 IN PTR nginx-0.nginx-headless.default.svc.cluster.local."],
        &[],
        &[],
    );
    check(
        t,
        "3.1.18.198.in-addr.arpa.",
        PTR,
        ok,
        &["3.1.18.198.in-addr.arpa. 5 IN PTR 198-18-1-3.nginx-headless.default.svc.cluster.local."],
        &[],
        &[],
    );
    // A reverse name that exists, asked for another type: NODATA with the
    // reverse zone's SOA.
    check(
        t,
        "1.1.18.198.in-addr.arpa.",
        TXT,
        ok,
        &[],
        &["in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. 1 7200 1800 86400 5"],
        &[],
    );
    // The not-ready endpoint has no PTR: not the table's name.
    assert_eq!(slow(t, &query("4.1.18.198.in-addr.arpa.", PTR, None)), Outcome::Slow(SlowReason::OutOfZone));
    // publishNotReadyAddresses.
    check(t, "pub.default.svc.cluster.local.", A, ok, &["pub.default.svc.cluster.local. 5 IN A 198.18.2.1"], &[], &[]);
    // No ready endpoints: NXDOMAIN, as the spec says.
    check_nxdomain(t, "empty.default.svc.cluster.local.", A);
}

#[test]
fn external_name_service() {
    let t = table();
    let ok = ResponseCode::NoError;
    let cname = "ext.default.svc.cluster.local. 5 IN CNAME www.example.com.";
    check(t, "ext.default.svc.cluster.local.", CNAME, ok, &[cname], &[], &[]);
    // Other types: resolved upstream by the slow path (CoreDNS does the same)...
    assert_eq!(slow(t, &query("ext.default.svc.cluster.local.", A, None)), Outcome::Slow(SlowReason::ExternalName));
    // ...or the CNAME alone, when configured as a plain authoritative server.
    let auth = &DnsTable::build(&view(), &DnsConfig { external_names_upstream: false, ..config() });
    check(auth, "ext.default.svc.cluster.local.", A, ok, &[cname], &[], &[]);
    check(auth, "ext.default.svc.cluster.local.", AAAA, ok, &[cname], &[], &[]);
    // A target inside the zone is followed.
    let cname_in = "ext-in.default.svc.cluster.local. 5 IN CNAME nginx.default.svc.cluster.local.";
    check(
        t,
        "ext-in.default.svc.cluster.local.",
        A,
        ok,
        &[cname_in, "nginx.default.svc.cluster.local. 5 IN A 198.18.128.1"],
        &[],
        &[],
    );
    check(t, "ext-in.default.svc.cluster.local.", AAAA, ok, &[cname_in], &[SOA_CLUSTER], &[]);
    check(t, "ext-in.default.svc.cluster.local.", MX, ok, &[cname_in], &[SOA_CLUSTER], &[]);
    check(
        t,
        "ext-missing.default.svc.cluster.local.",
        A,
        ResponseCode::NXDomain,
        &["ext-missing.default.svc.cluster.local. 5 IN CNAME nope.default.svc.cluster.local."],
        &[SOA_CLUSTER],
        &[],
    );
    // Below an ExternalName: nothing (CoreDNS's case).
    check_nxdomain(t, "endpoint.ext.default.svc.cluster.local.", CNAME);
}

#[test]
fn apex_and_empty_non_terminals() {
    let t = table();
    let ok = ResponseCode::NoError;
    check(t, "cluster.local.", SOA, ok, &[SOA_CLUSTER], &[], &[]);
    check(
        t,
        "cluster.local.",
        NS,
        ok,
        &["cluster.local. 5 IN NS ns.dns.cluster.local."],
        &[],
        &["ns.dns.cluster.local. 5 IN A 198.18.128.10"],
    );
    check(t, "ns.dns.cluster.local.", A, ok, &["ns.dns.cluster.local. 5 IN A 198.18.128.10"], &[], &[]);
    check(t, "dns-version.cluster.local.", TXT, ok, &["dns-version.cluster.local. 28800 IN TXT 1.1.0"], &[], &[]);
    check_nodata(t, "cluster.local.", A);
    check_nodata(t, "svc.cluster.local.", A);
    check_nodata(t, "pod.cluster.local.", A);
    check_nodata(t, "default.svc.cluster.local.", A);
    check_nodata(t, "other.svc.cluster.local.", NS);
    check_nodata(t, "dns.cluster.local.", A);
    check_nxdomain(t, "svc0.default.svc.cluster.local.", A);
    check_nxdomain(t, "svc0.default.svc.cluster.local.", AAAA);
    check_nxdomain(t, "nginx.nsnoexist.svc.cluster.local.", A);
    check_nxdomain(t, "foo.cluster.local.", NS);
    check_nxdomain(t, "foo.svc.cluster.local.", NS);
    check_nxdomain(t, "a.b.c.d.e.f.g.cluster.local.", A);
}

#[test]
fn outside_the_zone() {
    let t = table();
    for (name, qtype, reason) in [
        ("www.example.com.", A, SlowReason::OutOfZone),
        ("local.", A, SlowReason::OutOfZone),
        (".", NS, SlowReason::OutOfZone),
        ("xcluster.local.", A, SlowReason::OutOfZone),
        ("9.9.9.9.in-addr.arpa.", PTR, SlowReason::OutOfZone),
        ("198-18-1-1.default.pod.cluster.local.", A, SlowReason::PodName),
    ] {
        assert_eq!(slow(t, &query(name, qtype, None)), Outcome::Slow(reason), "{name}");
    }
}

#[test]
fn letter_case_is_preserved() {
    let t = table();
    let q = query("NgInX.DeFault.SVC.cluster.LOCAL.", A, None);
    let m = ask(t, &q);
    assert_eq!(m.queries[0].name().to_string(), "NgInX.DeFault.SVC.cluster.LOCAL.");
    assert_eq!(m.answers.len(), 1);
    // The answer's owner is a pointer to the question: the client's case.
    assert_eq!(m.answers[0].name.to_string(), "NgInX.DeFault.SVC.cluster.LOCAL.");
    // Negative answers too: the SOA's owner points into the question.
    let m = ask(t, &query("NOPE.DeFault.SVC.cluster.LOCAL.", A, None));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].name.to_string(), "cluster.LOCAL.");
}

#[test]
fn header_bits() {
    let t = table();
    let mut q = query("nginx.default.svc.cluster.local.", A, None);
    q[2] = 0x00; // no RD
    q[3] = 0x10 | 0x20 | 0x80; // CD, AD and RA set by the client
    let (_, r) = ask_with(t, &q, 512);
    assert_eq!(&r[..12], &[0xbe, 0xef, 0x84, 0x10, 0, 1, 0, 1, 0, 0, 0, 0]);
    q[2] = 0x01;
    let (_, r) = ask_with(t, &q, 512);
    assert_eq!(r[2], 0x85);
}

/// A headless Service with `n` endpoints with no hostname.
fn big(n: u8) -> DnsTable {
    let mut svc = DnsService::headless("default", "big").with_port("web", Protocol::Tcp, 80);
    for i in 0..n {
        svc.endpoints.push(ep([198, 18, 3, i], None, true, &[("web", 80)]));
    }
    DnsTable::build(&DnsView { services: vec![svc] }, &DnsConfig::default())
}

#[test]
fn truncation() {
    let t = &big(40);
    let name = "big.default.svc.cluster.local.";
    // 40 A records (16 bytes each) do not fit in 512 bytes: TC, no records.
    let (outcome, r) = ask_with(t, &query(name, A, None), 4096);
    let Outcome::Answered { len } = outcome else { panic!("{outcome:?}") };
    assert!(len <= 512);
    let m = Message::from_vec(&r).unwrap();
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty());
    // EDNS below 512 counts as 512.
    let m = Message::from_vec(&ask_with(t, &query(name, A, Some(100)), 4096).1).unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty());
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    // With EDNS 1232 they fit.
    let m = ask(t, &query(name, A, Some(1232)));
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
    // The caller's room caps the client's size.
    let (_, r) = ask_with(t, &query(name, A, Some(4096)), 600);
    assert!(Message::from_vec(&r).unwrap().metadata.truncation);
    // 7 SRV records (60 bytes each: the target is not compressed) fit in
    // 512 bytes, with their 7 A records they do not: the additional section
    // goes, TC stays clear (RFC 2181 9).
    let t = &big(7);
    let m = ask(t, &query("_web._tcp.big.default.svc.cluster.local.", SRV, None));
    assert!(!m.metadata.truncation);
    assert_eq!((m.answers.len(), m.additionals.len()), (7, 0));
    let m = ask(t, &query("_web._tcp.big.default.svc.cluster.local.", SRV, Some(1232)));
    assert_eq!((m.answers.len(), m.additionals.len()), (7, 7));
    assert!(m.answers.iter().all(|r| r.to_string().contains(" 0 14 80 ")));
}

#[test]
fn edns() {
    let t = table();
    let name = "nginx.default.svc.cluster.local.";
    let mut q = query(name, A, Some(4096));
    // A COOKIE option: ignored, answered, no options in the response.
    let cookie = [0u8, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    let rdlen_at = q.len() - 2;
    q[rdlen_at + 1] = cookie.len() as u8;
    q.extend_from_slice(&cookie);
    let m = ask(t, &q);
    let edns = m.edns.as_ref().expect("an OPT record");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);
    assert_eq!(m.answers.len(), 1);
    let (_, r) = ask_with(t, &q, 4096);
    assert_eq!(&r[r.len() - 11..], &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    // Client subnet: not ignored here.
    let mut ecs = q.clone();
    ecs[rdlen_at + 3] = 8;
    assert_eq!(slow(t, &ecs), Outcome::Slow(SlowReason::EdnsOption));
    // Version 1: BADVERS is the slow path's.
    let mut v1 = query(name, A, Some(1232));
    let version_at = v1.len() - 5;
    v1[version_at] = 1;
    assert_eq!(slow(t, &v1), Outcome::Slow(SlowReason::EdnsVersion));
    // DO set: answered without DNSSEC, DO clear in the response.
    let mut dnssec_ok = query(name, A, Some(1232));
    let flags_at = dnssec_ok.len() - 4;
    dnssec_ok[flags_at] = 0x80;
    let m = ask(t, &dnssec_ok);
    assert!(!m.edns.unwrap().flags().dnssec_ok);
}

#[test]
fn what_goes_to_the_slow_path_or_is_dropped() {
    let t = table();
    let good = query("nginx.default.svc.cluster.local.", A, None);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut q = good.clone();
        f(&mut q);
        slow(t, &q)
    };
    assert_eq!(with(&|q| q[2] |= 4 << 3), Outcome::Slow(SlowReason::Opcode)); // NOTIFY
    assert_eq!(with(&|q| q[2] |= 0x02), Outcome::Slow(SlowReason::QueryTruncated));
    assert_eq!(with(&|q| q[5] = 2), Outcome::Slow(SlowReason::QuestionCount));
    assert_eq!(with(&|q| q[5] = 0), Outcome::Slow(SlowReason::QuestionCount));
    assert_eq!(with(&|q| q[7] = 1), Outcome::Slow(SlowReason::Sections));
    assert_eq!(with(&|q| q[11] = 2), Outcome::Slow(SlowReason::Sections));
    assert_eq!(with(&|q| q.push(0)), Outcome::Slow(SlowReason::TrailingData));
    let n = good.len();
    assert_eq!(with(&|q| q[n - 1] = 3), Outcome::Slow(SlowReason::Class)); // CHAOS
    for meta in [255u16, 252, 251, 41, 0] {
        assert_eq!(
            with(&|q| q[n - 4..n - 2].copy_from_slice(&meta.to_be_bytes())),
            Outcome::Slow(SlowReason::QueryType)
        );
    }
    // A compression pointer in the question name.
    let mut q = good[..12].to_vec();
    q.extend_from_slice(b"\x05nginx\xc0\x12\x00\x01\x00\x01");
    assert_eq!(slow(t, &q), Outcome::Slow(SlowReason::CompressedName));
    // A TSIG-like additional record.
    let mut q = good.clone();
    q[11] = 1;
    q.extend_from_slice(b"\x03key\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x00");
    assert_eq!(slow(t, &q), Outcome::Slow(SlowReason::AdditionalRecord));
    // Not even room for the question.
    assert_eq!(ask_with(t, &good, 20).0, Outcome::Slow(SlowReason::NoRoom));

    assert_eq!(with(&|q| q[2] |= 0x80), Outcome::Drop(DropReason::NotQuery));
    assert_eq!(with(&|q| q.truncate(11)), Outcome::Drop(DropReason::Truncated));
    assert_eq!(with(&|q| q.truncate(n - 1)), Outcome::Drop(DropReason::Truncated));
    assert_eq!(with(&|q| q[12] = 0x45), Outcome::Drop(DropReason::Malformed));
    let mut buf = good.clone();
    assert_eq!(respond_in_place(t, &mut buf, good.len() + 1, 512), Outcome::Drop(DropReason::Truncated));
}

/// Every name of the zone, asked for every common type, parses with
/// hickory; the header's counts match; a positive answer's first record
/// is owned by the question's name.
#[test]
fn every_answer_parses() {
    let t = table();
    let zone = crate::zone::Zone::build(&view(), &config());
    let mut answered = 0;
    for name in zone.nodes.keys() {
        for qtype in [A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV] {
            let (outcome, r) = ask_with(t, &query(&name.to_string(), qtype, Some(1232)), 4096);
            if outcome == Outcome::Slow(SlowReason::ExternalName) {
                continue;
            }
            assert!(matches!(outcome, Outcome::Answered { .. }), "{name} {qtype}: {outcome:?}");
            let m = Message::from_vec(&r).unwrap_or_else(|e| panic!("{name} {qtype}: {e}"));
            assert_eq!(usize::from(u16::from_be_bytes([r[6], r[7]])), m.answers.len());
            if let Some(first) = m.answers.first() {
                assert_eq!(first.name.to_string(), name.to_string(), "{name} {qtype}");
            } else {
                assert_eq!(m.authorities.len(), 1, "{name} {qtype}: SOA in negative answers");
            }
            answered += 1;
        }
    }
    assert!(answered > 200, "{answered}");
}

#[test]
fn the_table_is_shareable_and_deterministic() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<DnsTable>();
    let again = DnsTable::build(&view(), &config());
    assert_eq!(again.len(), table().len());
    for (name, entry) in &table().names {
        assert_eq!(again.name(name), Some(entry));
    }
}

#[test]
fn headless_endpoint_without_the_named_port_has_no_srv() {
    let svc = DnsService::headless("default", "h")
        .with_port("web", Protocol::Tcp, 80)
        .with_endpoint(ep([198, 18, 4, 1], Some("a"), true, &[("web", 8080)]))
        .with_endpoint(ep([198, 18, 4, 2], Some("b"), true, &[]));
    let t = &DnsTable::build(&DnsView { services: vec![svc] }, &DnsConfig::default());
    check(
        t,
        "_web._tcp.h.default.svc.cluster.local.",
        SRV,
        ResponseCode::NoError,
        &["_web._tcp.h.default.svc.cluster.local. 5 IN SRV 0 100 8080 a.h.default.svc.cluster.local."],
        &[],
        &["a.h.default.svc.cluster.local. 5 IN A 198.18.4.1"],
    );
    check(
        t,
        "b.h.default.svc.cluster.local.",
        A,
        ResponseCode::NoError,
        &["b.h.default.svc.cluster.local. 5 IN A 198.18.4.2"],
        &[],
        &[],
    );
}

#[test]
fn cname_loops_and_services_without_addresses() {
    let mut no_ip =
        DnsService::cluster_ip("default", "noip", Ipv4Addr::new(198, 18, 128, 9)).with_port("p", Protocol::Tcp, 1);
    no_ip.kind = DnsServiceKind::ClusterIp(vec![]);
    let services = vec![
        DnsService::external_name("default", "a", "b.default.svc.cluster.local"),
        DnsService::external_name("default", "b", "a.default.svc.cluster.local"),
        no_ip,
    ];
    let t = &DnsTable::build(&DnsView { services }, &DnsConfig::default());
    check(
        t,
        "a.default.svc.cluster.local.",
        A,
        ResponseCode::NoError,
        &[
            "a.default.svc.cluster.local. 5 IN CNAME b.default.svc.cluster.local.",
            "b.default.svc.cluster.local. 5 IN CNAME a.default.svc.cluster.local.",
        ],
        &[],
        &[],
    );
    check_nxdomain(t, "noip.default.svc.cluster.local.", A);
    check_nxdomain(t, "_p._tcp.noip.default.svc.cluster.local.", SRV);
}

fn query_strategy() -> impl Strategy<Value = Vec<u8>> {
    let names = prop::sample::select(vec![
        "nginx.default.svc.cluster.local.",
        "_web._tcp.nginx-headless.default.svc.cluster.local.",
        "nginx-0.nginx-headless.default.svc.cluster.local.",
        "ext-in.default.svc.cluster.local.",
        "nope.default.svc.cluster.local.",
        "1.1.18.198.in-addr.arpa.",
        "cluster.local.",
    ]);
    let qtypes = prop::sample::select(vec![A, AAAA, SRV, PTR, CNAME, SOA, NS, MX, TXT]);
    (names, qtypes, prop::option::of(0u16..2000)).prop_map(|(n, t, e)| query(n, t, e))
}

/// The invariants of any outcome: an answer fits, parses and echoes the
/// ID and question; anything else leaves the buffer alone (checked in
/// `ask_with`).
fn check_any(t: &DnsTable, q: &[u8], max_out: usize) {
    let (outcome, r) = ask_with(t, q, max_out);
    if let Outcome::Answered { len } = outcome {
        assert!(len >= 12 && len <= max_out);
        assert_eq!(&r[..2], &q[..2]);
        let m = Message::from_vec(&r).expect("an answer parses");
        assert_eq!(m.queries.len(), 1);
        assert_eq!(&r[12..12 + question_len(q)], &q[12..12 + question_len(q)]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), max_out in 0usize..4096) {
        let t = table();
        check_any(t, &bytes, max_out);
    }

    #[test]
    fn mutated_queries_never_panic(
        q in query_strategy(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
        max_out in 0usize..2000,
    ) {
        let t = table();
        let mut q = q;
        for (at, byte) in flips {
            let i = at.index(q.len());
            q[i] = byte;
        }
        if do_cut {
            q.truncate(cut.index(q.len() + 1));
        }
        check_any(t, &q, max_out);
    }

    #[test]
    fn valid_queries_are_answered_within_the_limit(q in query_strategy(), max_out in 128usize..2000) {
        let t = table();
        let (outcome, r) = ask_with(t, &q, max_out);
        let Outcome::Answered { len } = outcome else { panic!("{outcome:?}") };
        let m = Message::from_vec(&r).unwrap();
        let limit = m.edns.as_ref().map_or(512, |_| usize::from(u16::from_be_bytes([q[q.len() - 8], q[q.len() - 7]]).max(512)));
        prop_assert!(len <= limit.min(max_out));
    }
}

fn label_strategy() -> impl Strategy<Value = String> {
    // Mostly valid labels, sometimes empty, too long, dotted or with a space.
    prop_oneof![
        8 => "[a-z][a-z0-9-]{0,12}",
        1 => Just(String::new()),
        1 => "[a-z]{64}",
        1 => "[a-z]{1,3}[. ][a-z]{1,3}",
    ]
}

fn service_strategy() -> impl Strategy<Value = DnsService> {
    let addr = prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u16; 8]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ];
    let endpoint = (addr.clone(), prop::option::of(label_strategy()), any::<bool>(), 0u16..3).prop_map(
        |(addr, hostname, ready, port)| DnsEndpoint {
            addr,
            hostname,
            ready,
            ports: (0..port).map(|i| (format!("p{i}"), 8000 + i)).collect(),
        },
    );
    let kind = prop_oneof![
        prop::collection::vec(addr, 0..3).prop_map(DnsServiceKind::ClusterIp),
        Just(DnsServiceKind::Headless),
        prop_oneof![label_strategy(), Just("a.b.c.example.".to_owned()), Just("x.ns0.svc.cluster.local".to_owned())]
            .prop_map(DnsServiceKind::ExternalName),
    ];
    (
        prop_oneof![Just("ns0".to_owned()), label_strategy()],
        label_strategy(),
        kind,
        0u16..3,
        any::<bool>(),
        prop::collection::vec(endpoint, 0..6),
    )
        .prop_map(|(namespace, name, kind, ports, publish, endpoints)| DnsService {
            namespace,
            name,
            kind,
            ports: (0..ports)
                .map(|i| crate::view::DnsPort {
                    name: if i == 0 { String::new() } else { format!("p{i}") },
                    protocol: if i % 2 == 0 { Protocol::Tcp } else { Protocol::Udp },
                    port: 80 + i,
                })
                .collect(),
            publish_not_ready_addresses: publish,
            endpoints,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any view builds (bad names are skipped, not a panic), and every name
    /// of its zone, asked for every common type, gets an answer hickory
    /// parses, or a slow-path verdict.
    #[test]
    fn any_view_builds_and_answers(services in prop::collection::vec(service_strategy(), 0..6)) {
        let view = DnsView { services };
        let zone = crate::zone::Zone::build(&view, &DnsConfig::default());
        let t = DnsTable::from_zone(&zone, &DnsConfig::default());
        for name in zone.nodes.keys() {
            for qtype in [A, CNAME, PTR, AAAA, SRV, MX] {
                let (outcome, r) = ask_with(&t, &query(&name.to_string(), qtype, Some(4096)), 4096);
                match outcome {
                    Outcome::Answered { .. } => {
                        let m = Message::from_vec(&r).unwrap();
                        prop_assert!(!m.metadata.truncation);
                    }
                    Outcome::Slow(SlowReason::ExternalName) => {}
                    other => prop_assert!(false, "{name} {qtype}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn reasons_index_their_counters() {
    for (i, r) in SlowReason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i, "{r}");
    }
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i, "{r}");
    }
    let names: std::collections::HashSet<_> = SlowReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), SlowReason::ALL.len());
}

#[test]
fn table_keeps_its_ipv4_addresses() {
    let config = DnsConfig {
        nameservers: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 128, 10)), "2001:db8::1".parse().unwrap()],
        ..DnsConfig::default()
    };
    let table = DnsTable::build(&DnsView::default(), &config);
    assert_eq!(table.addresses(), [Ipv4Addr::new(198, 18, 128, 10)]);
    assert!(DnsTable::build(&DnsView::default(), &DnsConfig::default()).addresses().is_empty());
}
