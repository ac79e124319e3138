//! The server's answers: from the table directly ([`lookup`]) and over real
//! UDP and TCP sockets on loopback, decoded by hickory-proto and compared
//! with records written out as text.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use svcgate_dns::{DnsConfig, DnsEndpoint, DnsService, DnsView, Protocol};

use super::*;

fn ep(addr: Ipv4Addr, hostname: Option<&str>) -> DnsEndpoint {
    DnsEndpoint {
        addr: IpAddr::V4(addr),
        hostname: hostname.map(str::to_owned),
        ready: true,
        ports: vec![("web".to_owned(), 8080)],
    }
}

fn view() -> DnsView {
    // 60 endpoints: 60 A records do not fit in 512 bytes.
    let mut big = DnsService::headless("default", "big");
    for i in 0..60u8 {
        big = big.with_endpoint(ep(Ipv4Addr::new(198, 18, 5, i), None));
    }
    DnsView {
        services: vec![
            DnsService::cluster_ip("default", "nginx", Ipv4Addr::new(198, 18, 128, 1)).with_port(
                "http",
                Protocol::Tcp,
                8080,
            ),
            DnsService::headless("default", "nginx-headless")
                .with_port("web", Protocol::Tcp, 80)
                .with_endpoint(ep(Ipv4Addr::new(198, 18, 1, 1), Some("nginx-0")))
                .with_endpoint(ep(Ipv4Addr::new(198, 18, 1, 2), Some("nginx-1"))),
            DnsService::external_name("default", "ext", "www.example.com"),
            big,
        ],
    }
}

fn table() -> DnsTable {
    let config = DnsConfig { nameservers: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 128, 10))], ..DnsConfig::default() };
    DnsTable::build(&view(), &config)
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

/// Records as `dig` prints them (name, TTL, class, type, data), the owner
/// name lower-cased
/// (the workers' answers point at the question's name, in the client's
/// letter case; hickory-server writes the owner names out lower-cased),
/// sorted.
fn text(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .map(|r| {
            let s = r.to_string();
            let mut parts: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
            parts[0].make_ascii_lowercase();
            parts.join(" ")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn lookup_answers_from_the_table() {
    let t = table();
    let r = lookup(&t, &name("NGINX.default.svc.cluster.local."), RecordType::A);
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert_eq!(text(&r.answers), ["nginx.default.svc.cluster.local. 5 IN A 198.18.128.1"]);

    let r = lookup(&t, &name("nginx-headless.default.svc.cluster.local."), RecordType::A);
    assert_eq!(
        text(&r.answers),
        [
            "nginx-headless.default.svc.cluster.local. 5 IN A 198.18.1.1",
            "nginx-headless.default.svc.cluster.local. 5 IN A 198.18.1.2"
        ]
    );
    let r = lookup(&t, &name("nope.default.svc.cluster.local."), RecordType::A);
    assert_eq!(r.rcode, ResponseCode::NXDomain);
    assert_eq!(r.authorities.len(), 1);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn any_collects_every_type_of_the_name() {
    let t = table();
    let r = lookup(&t, &name("cluster.local."), RecordType::ANY);
    let types: Vec<RecordType> = r.answers.iter().map(Record::record_type).collect();
    assert!(types.contains(&RecordType::SOA) && types.contains(&RecordType::NS), "{types:?}");
    let r = lookup(&t, &name("nginx-0.nginx-headless.default.svc.cluster.local."), RecordType::ANY);
    assert_eq!(text(&r.answers), ["nginx-0.nginx-headless.default.svc.cluster.local. 5 IN A 198.18.1.1"]);
    // No record of any type: the negative answer of A.
    let r = lookup(&t, &name("nope.default.svc.cluster.local."), RecordType::ANY);
    assert_eq!((r.rcode, r.answers.len(), r.authorities.len()), (ResponseCode::NXDomain, 0, 1));
}

#[test]
fn what_the_fast_path_leaves_gets_an_answer() {
    let t = table();
    // Outside the zone: not a recursive resolver.
    assert_eq!(lookup(&t, &name("example.org."), RecordType::A).rcode, ResponseCode::Refused);
    // No zone transfers.
    assert_eq!(lookup(&t, &name("cluster.local."), RecordType::AXFR).rcode, ResponseCode::Refused);
    // Below pod.<zone>: NXDOMAIN with the zone's SOA.
    let r = lookup(&t, &name("1-2-3-4.default.pod.cluster.local."), RecordType::A);
    assert_eq!(r.rcode, ResponseCode::NXDomain);
    assert_eq!(r.authorities.iter().map(|a| a.name.to_string()).collect::<Vec<_>>(), ["cluster.local."]);
    // ExternalName out of the zone: the CNAME alone.
    let r = lookup(&t, &name("ext.default.svc.cluster.local."), RecordType::A);
    assert_eq!(text(&r.answers), ["ext.default.svc.cluster.local. 5 IN CNAME www.example.com."]);
}

/// A query's bytes, the question name in `qname`'s letter case (hickory's
/// encoder writes it lower-cased).
fn query(qname: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.edns = Some(e);
    }
    let mut bytes = m.to_vec().unwrap();
    let mut at = 12;
    for label in qname.trim_end_matches('.').split('.') {
        bytes[at + 1..at + 1 + label.len()].copy_from_slice(label.as_bytes());
        at += 1 + label.len();
    }
    bytes
}

async fn udp(server: SocketAddr, q: &[u8]) -> Message {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(q, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(from, server);
    Message::from_vec(&buf[..n]).unwrap()
}

async fn tcp(server: SocketAddr, q: &[u8]) -> Message {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    s.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len)).await.unwrap().unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// The workers' answer to the same question (the responder on a plain UDP
/// query with EDNS), decoded.
fn fast_path(t: &DnsTable, bytes: &[u8]) -> Message {
    let mut buf = vec![0u8; 4096];
    buf[..bytes.len()].copy_from_slice(bytes);
    let Outcome::Answered { len } = respond_in_place(t, &mut buf, bytes.len(), 1472) else { panic!("not answered") };
    Message::from_vec(&buf[..len]).unwrap()
}

#[tokio::test]
async fn serves_udp_and_tcp_with_the_fast_paths_records() {
    let tables = Arc::new(Publisher::new(table()));
    let (server, addr) = serve(Arc::clone(&tables), "127.0.0.1:0".parse().unwrap()).await.unwrap();

    for (qname, qtype) in [
        ("Nginx.default.svc.cluster.local.", RecordType::A),
        ("nginx-headless.default.svc.cluster.local.", RecordType::A),
        ("_web._tcp.nginx-headless.default.svc.cluster.local.", RecordType::SRV),
        ("1.128.18.198.in-addr.arpa.", RecordType::PTR),
        ("nope.default.svc.cluster.local.", RecordType::A),
    ] {
        let q = query(qname, qtype, true);
        let fast = fast_path(&tables.current(), &q);
        for (how, r) in [("udp", udp(addr, &q).await), ("tcp", tcp(addr, &q).await)] {
            assert_eq!(r.metadata.id, 0x4242);
            assert!(r.metadata.authoritative, "{how} {qname}");
            assert_eq!(r.metadata.response_code, fast.metadata.response_code, "{how} {qname}");
            assert_eq!(r.queries[0].name().to_string(), qname, "{how}: the question's letter case is kept");
            assert_eq!(text(&r.answers), text(&fast.answers), "{how} {qname}");
            assert_eq!(text(&r.authorities), text(&fast.authorities), "{how} {qname}");
            assert_eq!(text(&r.additionals), text(&fast.additionals), "{how} {qname}");
            assert!(r.edns.is_some(), "{how}: an OPT record answers one");
        }
    }
    server.shutdown_token().cancel();
}

#[tokio::test]
async fn large_udp_answers_are_truncated_and_complete_over_tcp() {
    let tables = Arc::new(Publisher::new(table()));
    let (server, addr) = serve(Arc::clone(&tables), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let q = query("big.default.svc.cluster.local.", RecordType::A, false);
    let r = udp(addr, &q).await;
    assert!(r.metadata.truncation, "60 A records in 512 bytes");
    let r = tcp(addr, &q).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 60);
    // ANY over TCP (the fast path leaves it).
    let r = tcp(addr, &query("cluster.local.", RecordType::ANY, false)).await;
    assert!(r.answers.iter().any(|a| a.record_type() == RecordType::SOA));
    server.shutdown_token().cancel();
}
