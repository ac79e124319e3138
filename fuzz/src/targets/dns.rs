//! The DNS responder: `[sizes] [message...]` through `respond_in_place`
//! against a small table (a ClusterIP Service with named ports and an
//! endpoint, a headless Service with hostnames and a not-ready endpoint, an
//! ExternalName Service, kube-dns itself).
//!
//! The sizes byte: bits 0-2 pick `max_out` (512, 1232, 4096, 65535, the
//! message's length, 0, 12, 100), bits 6-7 the buffer's size (512, 1500,
//! 4096, 65535, and at least the message).
//!
//! Invariants: nothing panics; an answered response fits `max_out` and the
//! buffer, parses with hickory-proto as a response with the query's ID, one
//! question, the question echoed byte for byte, and no records when
//! truncated (TC) except the OPT; a query that is not answered leaves the
//! buffer unchanged; the same query gives the same outcome again.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use svcgate_dns::{respond_in_place, DnsConfig, DnsEndpoint, DnsService, DnsTable, DnsView, Outcome, Protocol};

/// The table the target answers from.
pub fn table() -> &'static DnsTable {
    static TABLE: OnceLock<DnsTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let ep = |a: [u8; 4], host: Option<&str>, ready: bool| DnsEndpoint {
            addr: IpAddr::V4(Ipv4Addr::from(a)),
            hostname: host.map(str::to_owned),
            ready,
            ports: vec![("http".to_owned(), 8080), ("dns".to_owned(), 5353)],
        };
        let view = DnsView {
            services: vec![
                DnsService::cluster_ip("default", "nginx", Ipv4Addr::new(198, 18, 128, 1))
                    .with_port("http", Protocol::Tcp, 8080)
                    .with_port("dns", Protocol::Udp, 53)
                    .with_endpoint(ep([198, 18, 2, 10], Some("web-0"), true)),
                DnsService::headless("db", "pg")
                    .with_port("pg", Protocol::Tcp, 5432)
                    .with_endpoint(ep([198, 18, 2, 11], Some("pg-0"), true))
                    .with_endpoint(ep([198, 18, 2, 12], Some("pg-1"), true))
                    .with_endpoint(ep([198, 18, 2, 13], None, false)),
                DnsService::external_name("default", "ext", "db.example.org"),
                DnsService::cluster_ip("kube-system", "kube-dns", Ipv4Addr::new(198, 18, 128, 10))
                    .with_port("dns", Protocol::Udp, 53)
                    .with_port("dns-tcp", Protocol::Tcp, 53),
            ],
        };
        let cfg = DnsConfig { nameservers: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 128, 10))], ..DnsConfig::default() };
        DnsTable::build(&view, &cfg)
    })
}

/// The end of the question of a message (uncompressed name), if whole.
fn question_end(msg: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let l = usize::from(*msg.get(at)?);
        if l == 0 {
            return Some(at + 1 + 4).filter(|&e| e <= msg.len());
        }
        if l & 0xc0 != 0 {
            return None;
        }
        at += 1 + l;
    }
}

/// See the module documentation.
pub fn dns_query(data: &[u8]) {
    let Some((&sizes, msg)) = data.split_first() else { return };
    let max_out = [512, 1232, 4096, 65535, msg.len(), 0, 12, 100][usize::from(sizes & 7)];
    let buf_len = [512, 1500, 4096, 65535][usize::from(sizes >> 6)].max(msg.len());
    let t = table();
    let mut buf = vec![0u8; buf_len];
    buf[..msg.len()].copy_from_slice(msg);
    let outcome = respond_in_place(t, &mut buf, msg.len(), max_out);
    let mut again = vec![0u8; buf_len];
    again[..msg.len()].copy_from_slice(msg);
    assert_eq!(respond_in_place(t, &mut again, msg.len(), max_out), outcome, "the same query answered differently");
    assert_eq!(again, buf, "the same query gave different bytes");
    let Outcome::Answered { len } = outcome else {
        assert_eq!(&buf[..msg.len()], msg, "the buffer changed on {outcome:?}");
        return;
    };
    assert!(len <= max_out && len <= buf.len(), "response of {len} bytes over max_out {max_out} / buffer {buf_len}");
    let r = &buf[..len];
    let m = Message::from_vec(r).unwrap_or_else(|e| panic!("hickory cannot parse the response ({e}): {r:02x?}"));
    assert_eq!(m.metadata.message_type, MessageType::Response, "not a response");
    assert_eq!(m.metadata.id, u16::from_be_bytes([msg[0], msg[1]]), "ID changed");
    assert_eq!(m.queries.len(), 1, "not one question");
    let q_end = question_end(msg).expect("an answered query has a whole, uncompressed question");
    assert_eq!(&r[12..q_end], &msg[12..q_end], "question not echoed as sent");
    if m.metadata.truncation {
        assert!(m.answers.is_empty() && m.authorities.is_empty(), "records in a truncated response");
    }
}
