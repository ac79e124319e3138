//! Kubernetes cluster DNS for svcgate: the names of the Kubernetes DNS
//! specification (kubernetes/dns `docs/specification.md`, as CoreDNS's
//! `kubernetes` plugin serves them), a precomputed answer table, and a
//! responder that answers a query in the buffer it arrived in.
//!
//! Pure: no sockets, no threads, no clock. The control plane fills a
//! [`DnsView`] from the same objects as its `DesiredState`, builds a
//! [`DnsTable`] beside the old one and publishes it in the same swap; the
//! AF_XDP workers call [`respond_in_place`] on the UDP payload of queries to
//! the DNS address and send the frame back, and hand the
//! [`Outcome::Slow`] ones to the control-path server.
//!
//! - [`view`]: the input (Services, ports, endpoints) and [`DnsConfig`]
//!   (zone `cluster.local`, TTL 5 s by default);
//! - [`zone`]: the records, as the spec and CoreDNS give them (the table of
//!   names and records is in that module's documentation);
//! - [`table`]: [`DnsTable::build`], every answer encoded once;
//! - [`wire`]: the zero-copy [`DnsPacket`] wrapper;
//! - [`respond`]: [`respond_in_place`] and its verdicts.
//!
//! The records of the table are encoded by hickory-proto (`Message::to_vec`
//! of the full response to the lower-cased question; the bytes after the
//! question are kept, compressed against the question's name). Its API made
//! this direct, so there is no encoder of our own, except the 54-byte SOA
//! template of negative answers, whose name pointers depend on the query.
//! The responder itself reads and writes bytes at offsets: hickory-proto's
//! decoder allocates, which the hot path does not.
//!
//! # Example
//!
//! ```
//! use std::net::Ipv4Addr;
//! use svcgate_dns::{respond_in_place, DnsConfig, DnsService, DnsTable, DnsView, Outcome, Protocol};
//!
//! let view = DnsView {
//!     services: vec![DnsService::cluster_ip("default", "nginx", Ipv4Addr::new(198, 18, 128, 1))
//!         .with_port("http", Protocol::Tcp, 8080)],
//! };
//! let table = DnsTable::build(&view, &DnsConfig::default());
//!
//! // A query for `Nginx.default.svc.cluster.local` A, as a stub resolver sends it.
//! let mut buf = [0u8; 512];
//! let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
//!               \x05Nginx\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01";
//! buf[..query.len()].copy_from_slice(query);
//!
//! let Outcome::Answered { len } = respond_in_place(&table, &mut buf, query.len(), 512) else { panic!() };
//! assert_eq!(&buf[..4], b"\x12\x34\x85\x00"); // ID, QR AA RD, NOERROR
//! assert_eq!(&buf[6..8], b"\x00\x01"); // one answer
//! assert_eq!(&buf[12..18], b"\x05Nginx"); // the question as sent
//! // The answer: a pointer to the question's name, A, IN, TTL 5, the ClusterIP.
//! assert_eq!(&buf[query.len()..len], b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x05\x00\x04\xc6\x12\x80\x01");
//! ```

pub mod respond;
pub mod table;
pub mod view;
pub mod wire;
pub mod zone;

pub use respond::{respond_in_place, DropReason, Outcome, SlowReason};
pub use table::DnsTable;
pub use view::{DnsConfig, DnsEndpoint, DnsPort, DnsService, DnsServiceKind, DnsView, Protocol};
pub use wire::DnsPacket;
pub use zone::Zone;

#[cfg(test)]
mod tests;
