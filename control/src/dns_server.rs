//! The control-path DNS server: UDP and TCP on the DNS addresses, port 53,
//! answering from the same published [`DnsTable`] as the workers.
//!
//! The workers answer the common UDP query in the frame it arrived in
//! (`svcgate_dataplane::dns_hook`). Everything else reaches this server
//! through the kernel, where the DNS address is local: TCP/53 (the XDP
//! program does not steer it), and the UDP queries the workers' responder
//! returns as `Slow` (passed to the kernel through the exception path): ANY,
//! EDNS options it does not know, a query with TC set, names outside the
//! zone, and anything without the dataplane running.
//!
//! The server is hickory-server 0.26's [`Server`] (sockets, TCP framing,
//! per-request tasks, truncation of UDP responses to the client's size)
//! with a [`RequestHandler`] of ours: the question is put to the table as a
//! plain query (the name lower-cased, an OPT record asking for 65535 bytes)
//! through the same [`respond_in_place`] the workers call, and the records
//! of that answer (decoded by hickory-proto) are sent with the client's
//! question as it was written (letter case kept). So a TCP answer carries
//! the same records as the workers' UDP one.
//!
//! Beyond the fast path:
//! - ANY: the records of every type the name has (A, AAAA, CNAME, SRV, PTR,
//!   TXT, NS, SOA), or the negative answer when none;
//! - a UDP answer larger than the client's EDNS size (512 without EDNS) is
//!   sent truncated, with TC set: the client retries over TCP;
//! - EDNS: any options are ignored; version above 0 gets BADVERS;
//! - names below `pod.<zone>` (deprecated Pod records, off as in CoreDNS's
//!   default): NXDOMAIN;
//! - ExternalName Services whose target is outside the zone: the CNAME
//!   alone, as an authoritative server answers (no upstream resolution);
//! - outside the zone, another class than IN, AXFR, IXFR and the other
//!   meta types: REFUSED (not a recursive resolver, no zone transfers); an
//!   opcode other than QUERY: NOTIMP; not exactly one question: FORMERR.
//!
//! [`DnsServers::start`] follows the controller's DNS addresses (they may
//! come from a Service's clusterIP and change at a sync): a server is bound
//! on each new address and stopped when the address goes. The address must
//! be local on the node (e.g. `ip addr add <addr>/32 dev lo`); until it is,
//! binding fails, is logged, and is retried.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use svcgate_common::publish::Publisher;
use svcgate_dns::{respond_in_place, DnsTable, Outcome, SlowReason};
use tokio::net::{TcpListener, UdpSocket};

use crate::controller::Controller;

/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// The UDP payload size advertised in responses with EDNS (the table's, as
/// the workers advertise it: 1232, DNS flag day 2020).
const UDP_PAYLOAD: u16 = 1232;
/// How long a TCP connection may idle between queries.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the served addresses are compared with the controller's.
const FOLLOW_PERIOD: Duration = Duration::from_millis(500);
/// The types an ANY query collects.
const ANY_TYPES: [RecordType; 8] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::TXT,
    RecordType::NS,
    RecordType::SOA,
];

/// A DNS server socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DnsServerError {
    /// Binding the UDP or TCP socket failed.
    #[error(
        "dns: cannot listen on {proto} {addr}: {source} (the DNS address must be local on this node, \
         e.g. `ip addr add {ip}/32 dev lo`, and port 53 needs root or CAP_NET_BIND_SERVICE)",
        ip = addr.ip()
    )]
    Bind {
        /// `UDP` or `TCP`.
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The answer to one request: header fields and the three sections.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The response code.
    pub rcode: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section.
    pub authorities: Vec<Record>,
    /// The additional section (without OPT).
    pub additionals: Vec<Record>,
}

impl Reply {
    fn empty(rcode: ResponseCode) -> Self {
        Self { rcode, answers: Vec::new(), authorities: Vec::new(), additionals: Vec::new() }
    }
}

/// How the table answers `name` (any letter case) and `qtype`, class IN:
/// what the control-path server sends, beside the question.
pub fn lookup(table: &DnsTable, name: &Name, qtype: RecordType) -> Reply {
    if qtype == RecordType::ANY {
        return lookup_any(table, name);
    }
    match ask(table, name, qtype) {
        Asked::Reply(r) => r,
        Asked::Slow(SlowReason::ExternalName) => match ask(table, name, RecordType::CNAME) {
            Asked::Reply(r) => r,
            Asked::Slow(_) => Reply::empty(ResponseCode::ServFail),
        },
        Asked::Slow(SlowReason::PodName) => {
            // NXDOMAIN, with the zone's SOA as a negative answer carries it.
            let mut r = Reply::empty(ResponseCode::NXDomain);
            if let Asked::Reply(nx) = ask(table, &pod_probe(name), RecordType::A) {
                r.authorities = nx.authorities;
            }
            r
        }
        // Outside the zone: not a recursive resolver. AXFR, IXFR and the
        // other meta types: no zone transfers.
        Asked::Slow(SlowReason::OutOfZone | SlowReason::QueryType) => Reply::empty(ResponseCode::Refused),
        Asked::Slow(_) => Reply::empty(ResponseCode::ServFail),
    }
}

/// A name in the cluster domain that no table holds: `name`'s labels below
/// `pod` dropped, one label no Service name can have put in front (an
/// underscore then `pod-name`), so the table answers it NXDOMAIN with the
/// cluster SOA.
fn pod_probe(name: &Name) -> Name {
    let labels: Vec<&[u8]> = name.iter().collect();
    let at = labels.iter().position(|l| l.eq_ignore_ascii_case(b"pod")).map_or(0, |p| p + 1);
    let mut probe: Vec<&[u8]> = vec![b"_svcgate-no-such-name"];
    probe.extend_from_slice(&labels[at..]);
    Name::from_labels(probe).unwrap_or_else(|_| name.clone())
}

fn lookup_any(table: &DnsTable, name: &Name) -> Reply {
    let mut found = Reply::empty(ResponseCode::NoError);
    for t in ANY_TYPES {
        if let Asked::Reply(r) = ask(table, name, t) {
            if r.rcode == ResponseCode::NoError {
                for rec in r.answers {
                    if !found.answers.contains(&rec) {
                        found.answers.push(rec);
                    }
                }
            }
        }
    }
    if found.answers.is_empty() {
        // NODATA or NXDOMAIN as for A, and REFUSED outside the zone.
        return lookup(table, name, RecordType::A);
    }
    found
}

enum Asked {
    Reply(Reply),
    Slow(SlowReason),
}

/// Puts a plain query for `name` and `qtype` to the responder, with an OPT
/// record asking for 65535 bytes so that nothing is truncated here.
fn ask(table: &DnsTable, name: &Name, qtype: RecordType) -> Asked {
    let Ok(wire) = name.to_lowercase().to_bytes() else { return Asked::Reply(Reply::empty(ResponseCode::FormErr)) };
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    let mut q = Vec::with_capacity(12 + wire.len() + 4 + 11);
    q.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    q.extend_from_slice(&wire);
    q.extend_from_slice(&u16::from(qtype).to_be_bytes());
    q.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
    q.extend_from_slice(&[0, 0, 41, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
    let Some(at) = buf.get_mut(..q.len()) else { return Asked::Reply(Reply::empty(ResponseCode::FormErr)) };
    at.copy_from_slice(&q);
    let max_out = buf.len();
    match respond_in_place(table, &mut buf, q.len(), max_out) {
        Outcome::Answered { len } => match Message::from_vec(&buf[..len]) {
            Ok(m) => Asked::Reply(Reply {
                rcode: m.metadata.response_code,
                answers: m.answers,
                authorities: m.authorities,
                additionals: m.additionals,
            }),
            Err(e) => {
                tracing::warn!("dns: the table's answer for {name} {qtype} does not decode: {e}");
                Asked::Reply(Reply::empty(ResponseCode::ServFail))
            }
        },
        Outcome::Slow(r) => Asked::Slow(r),
        Outcome::Drop(_) => Asked::Reply(Reply::empty(ResponseCode::FormErr)),
    }
}

/// The hickory-server request handler over the published tables.
#[derive(Debug, Clone)]
pub struct TableHandler {
    tables: Arc<Publisher<DnsTable>>,
}

impl TableHandler {
    /// A handler answering from the current table of `tables`.
    pub fn new(tables: Arc<Publisher<DnsTable>>) -> Self {
        Self { tables }
    }
}

#[async_trait::async_trait]
impl RequestHandler for TableHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let table = self.tables.current();
        let edns_version = request.edns.as_ref().map(Edns::version);
        let reply = if request.metadata.message_type != MessageType::Query {
            None
        } else if request.metadata.op_code != OpCode::Query {
            Some(Reply::empty(ResponseCode::NotImp))
        } else if edns_version.is_some_and(|v| v > 0) {
            Some(Reply::empty(ResponseCode::BADVERS))
        } else {
            match request.queries.queries() {
                [q] if q.query_class() != DNSClass::IN => Some(Reply::empty(ResponseCode::Refused)),
                [q] => Some(lookup(&table, &Name::from(q.name().clone()), q.query_type())),
                _ => Some(Reply::empty(ResponseCode::FormErr)),
            }
        };
        let mut metadata = Metadata::new(request.metadata.id, MessageType::Response, request.metadata.op_code);
        let Some(reply) = reply else {
            // A response sent to us: never answered (no loops).
            metadata.response_code = ResponseCode::Refused;
            return ResponseInfo::from(Header { metadata, counts: Default::default() });
        };
        metadata.authoritative = reply.rcode != ResponseCode::Refused;
        metadata.recursion_desired = request.metadata.recursion_desired;
        metadata.checking_disabled = request.metadata.checking_disabled;
        metadata.response_code = reply.rcode;
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        if reply.rcode.high() != 0 {
            edns.set_rcode_high(reply.rcode.high());
        }
        let builder = MessageResponseBuilder::new(&request.queries, request.edns.as_ref().map(|_| &edns));
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("dns: sending a response to {} failed: {e}", request.src());
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: Default::default() })
            }
        }
    }
}

/// Binds UDP and TCP on `addr` (port 0: one the OS picks, the same for
/// both) and starts serving from `tables` (inside a tokio runtime);
/// returns the server and its address.
pub async fn serve(
    tables: Arc<Publisher<DnsTable>>,
    addr: SocketAddr,
) -> Result<(Server<TableHandler>, SocketAddr), DnsServerError> {
    let udp = UdpSocket::bind(addr).await.map_err(|source| DnsServerError::Bind { proto: "UDP", addr, source })?;
    let tcp_addr = udp.local_addr().unwrap_or(addr);
    let tcp = TcpListener::bind(tcp_addr).await.map_err(|source| DnsServerError::Bind {
        proto: "TCP",
        addr: tcp_addr,
        source,
    })?;
    let mut server = Server::new(TableHandler::new(tables));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT, usize::from(u16::MAX));
    Ok((server, tcp_addr))
}

/// The servers on the controller's DNS addresses; dropping it stops them.
#[derive(Debug)]
pub struct DnsServers {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServers {
    /// Follows `controller`'s DNS addresses on port `port` (inside a tokio
    /// runtime): a server on each address as it appears, stopped when it
    /// goes; a bind failure is logged and retried.
    pub fn start(controller: Arc<Controller>, port: u16) -> Self {
        let task = tokio::spawn(async move {
            let mut running: BTreeMap<IpAddr, Server<TableHandler>> = BTreeMap::new();
            let mut failing: BTreeMap<IpAddr, String> = BTreeMap::new();
            loop {
                let want = controller.dns_addresses();
                running.retain(|a, s| {
                    let keep = want.contains(a);
                    if !keep {
                        tracing::info!(addr = %a, "dns: no longer serving");
                        s.shutdown_token().cancel();
                    }
                    keep
                });
                for a in want {
                    if running.contains_key(&a) {
                        continue;
                    }
                    match serve(controller.dns_tables(), SocketAddr::from((a, port))).await {
                        Ok((s, _)) => {
                            tracing::info!(addr = %a, port, "dns: serving UDP and TCP");
                            failing.remove(&a);
                            running.insert(a, s);
                        }
                        Err(e) => {
                            // Logged once per distinct error, retried each period.
                            let msg = e.to_string();
                            if failing.get(&a) != Some(&msg) {
                                tracing::warn!("{msg}");
                                failing.insert(a, msg);
                            }
                        }
                    }
                }
                tokio::time::sleep(FOLLOW_PERIOD).await;
            }
        });
        Self { task }
    }
}

#[cfg(test)]
mod tests;
