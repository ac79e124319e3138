//! The records: what the Kubernetes DNS specification says a cluster serves,
//! computed from a [`DnsView`].
//!
//! The result, a [`Zone`], is a plain sorted map from owner name to record
//! sets. [`DnsTable`](crate::DnsTable) encodes it into answers; a zone file
//! export can print it.
//!
//! # What is served (kubernetes/dns `docs/specification.md`, and what
//! CoreDNS's `kubernetes` plugin adds)
//!
//! For a Service `svc` in namespace `ns`, with `<zone>` the cluster domain:
//!
//! | Service | name | records |
//! |---|---|---|
//! | with cluster IPs | `svc.ns.svc.<zone>` | A / AAAA per cluster IP |
//! | | `_port._proto.svc.ns.svc.<zone>` | SRV `0 w port svc.ns.svc.<zone>` per named port (the A/AAAA in Additional) |
//! | | `svc.ns.svc.<zone>` | SRV for every port, named or not (CoreDNS; the spec leaves this name's SRV open) |
//! | | `d.c.b.a.in-addr.arpa` | PTR `svc.ns.svc.<zone>` per cluster IP (ip6.arpa for IPv6) |
//! | headless | `svc.ns.svc.<zone>` | A / AAAA per ready endpoint; no ready endpoint: the name does not exist (NXDOMAIN, as the spec says) |
//! | | `host.svc.ns.svc.<zone>` | A / AAAA of that endpoint; `host` is its `hostname`, or its dashed address (`198-18-1-2`, IPv6 `fd00--1`) as CoreDNS does |
//! | | `_port._proto.svc.ns.svc.<zone>` | SRV `0 w endpoint-port host.svc.ns.svc.<zone>` per ready endpoint having that named port (A/AAAA in Additional) |
//! | | `svc.ns.svc.<zone>` | SRV for every endpoint port (CoreDNS) |
//! | | `d.c.b.a.in-addr.arpa` | PTR `host.svc.ns.svc.<zone>` per ready endpoint (the spec asks it for endpoints with a hostname; CoreDNS gives the dashed names too) |
//! | ExternalName | `svc.ns.svc.<zone>` | CNAME to the target |
//!
//! "Ready" includes not-ready endpoints when `publishNotReadyAddresses` is
//! set. SRV records have priority 0 and weight `floor(100 / n)` for `n`
//! records in the set, as CoreDNS computes it (the spec leaves both open).
//! The zone apex carries an SOA (`ns.dns.<zone> hostmaster.<zone> serial
//! 7200 1800 86400 ttl`, CoreDNS's values) and an NS (`ns.dns.<zone>`, with
//! the configured name server addresses), and `dns-version.<zone>` a TXT
//! `1.1.0` (TTL 28800, as CoreDNS). `svc.<zone>`, `pod.<zone>`, `ns.svc.<zone>`
//! for every namespace with a Service, and every other ancestor of an owner
//! name up to the apex exist with no records (empty non-terminals: NODATA,
//! not NXDOMAIN). So does `_proto.svc.ns.svc.<zone>`, where CoreDNS answers
//! NXDOMAIN: the DNS's rule (RFC 8020) is kept over that quirk.
//!
//! Not served here: the deprecated Pod records `a-b-c-d.ns.pod.<zone>`
//! (spec 2.6), endpoint names of non-headless Services (a CoreDNS extension),
//! and wildcards. Labels that are not DNS labels (a name with a dot, over 63
//! bytes) skip that Service's records and are listed in [`Zone::skipped`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::view::{DnsConfig, DnsService, DnsServiceKind, DnsView};

/// A domain name in lower-case wire format (length-prefixed labels ending in
/// the root's zero byte), with no compression.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(Vec<u8>);

/// Why a name could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// An empty label (two dots, or a leading dot).
    EmptyLabel,
    /// A label over 63 bytes.
    LongLabel,
    /// A name over 255 bytes in wire format.
    LongName,
    /// A byte other than a letter, digit, `-` or `_`.
    BadByte,
}

impl DomainName {
    /// The root (`.`).
    pub fn root() -> Self {
        Self(vec![0])
    }

    /// A name from dotted text (`a.b.c`, a trailing dot allowed), lower-cased.
    /// Labels may hold letters, digits, `-` and `_`.
    pub fn from_dotted(text: &str) -> Result<Self, NameError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Ok(Self::root());
        }
        Self::from_labels(text.split('.'))
    }

    /// A name from labels, first label first, lower-cased.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Result<Self, NameError> {
        let mut wire = Vec::with_capacity(64);
        for label in labels {
            push_label(&mut wire, label)?;
        }
        wire.push(0);
        if wire.len() > 255 {
            return Err(NameError::LongName);
        }
        Ok(Self(wire))
    }

    /// `label.self`.
    pub fn prepend(&self, label: &str) -> Result<Self, NameError> {
        let mut wire = Vec::with_capacity(self.0.len() + label.len() + 1);
        push_label(&mut wire, label)?;
        wire.extend_from_slice(&self.0);
        if wire.len() > 255 {
            return Err(NameError::LongName);
        }
        Ok(Self(wire))
    }

    /// The wire bytes.
    pub fn wire(&self) -> &[u8] {
        &self.0
    }

    /// The labels, first label first.
    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let len = usize::from(*self.0.get(at)?);
            if len == 0 {
                return None;
            }
            let label = self.0.get(at + 1..at + 1 + len)?;
            at += 1 + len;
            Some(label)
        })
    }

    /// The parent (`b.c` for `a.b.c`); `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        let len = usize::from(*self.0.first()?);
        (len != 0).then(|| Self(self.0[1 + len..].to_vec()))
    }

    /// Whether `self` is `zone` or below it.
    pub fn is_within(&self, zone: &Self) -> bool {
        let (name, zone) = (&self.0, &zone.0);
        if zone.len() > name.len() || name[name.len() - zone.len()..] != zone[..] {
            return false;
        }
        // The suffix must start at a label boundary.
        let target = name.len() - zone.len();
        let mut at = 0;
        while at < target {
            at += 1 + usize::from(name[at]);
        }
        at == target
    }

    /// The name as hickory-proto's type.
    pub fn to_hickory(&self) -> hickory_proto::rr::Name {
        use hickory_proto::serialize::binary::BinDecodable;
        // Decoding the wire form is several times faster than from_labels.
        // The labels were checked when this name was made: it cannot fail.
        hickory_proto::rr::Name::from_bytes(&self.0).unwrap_or_else(|_| hickory_proto::rr::Name::root())
    }
}

fn push_label(wire: &mut Vec<u8>, label: &str) -> Result<(), NameError> {
    let len = label.len();
    if len == 0 {
        return Err(NameError::EmptyLabel);
    }
    if len > 63 {
        return Err(NameError::LongLabel);
    }
    if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(NameError::BadByte);
    }
    wire.push(len as u8);
    wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    Ok(())
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == [0] {
            return f.write_str(".");
        }
        for label in self.labels() {
            // Labels hold only letters, digits, '-' and '_'.
            f.write_str(std::str::from_utf8(label).unwrap_or("?"))?;
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainName({self})")
    }
}

/// Record types the zone holds.
pub mod rtype {
    /// A.
    pub const A: u16 = 1;
    /// NS.
    pub const NS: u16 = 2;
    /// CNAME.
    pub const CNAME: u16 = 5;
    /// SOA.
    pub const SOA: u16 = 6;
    /// PTR.
    pub const PTR: u16 = 12;
    /// TXT.
    pub const TXT: u16 = 16;
    /// AAAA.
    pub const AAAA: u16 = 28;
    /// SRV.
    pub const SRV: u16 = 33;
}

/// The data of one record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rdata {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A canonical name.
    Cname(DomainName),
    /// A name server.
    Ns(DomainName),
    /// A reverse pointer.
    Ptr(DomainName),
    /// A service location.
    Srv {
        /// Priority (0).
        priority: u16,
        /// Weight, `floor(100 / n)` of the set.
        weight: u16,
        /// Port.
        port: u16,
        /// Target host.
        target: DomainName,
    },
    /// One character string.
    Txt(String),
    /// The zone's SOA.
    Soa {
        /// Primary name server.
        mname: DomainName,
        /// Responsible mailbox.
        rname: DomainName,
        /// Serial.
        serial: u32,
        /// Refresh, retry, expire, minimum (the negative TTL).
        timers: [u32; 4],
    },
}

impl Rdata {
    /// The record type.
    pub fn rtype(&self) -> u16 {
        match self {
            Self::A(_) => rtype::A,
            Self::Aaaa(_) => rtype::AAAA,
            Self::Cname(_) => rtype::CNAME,
            Self::Ns(_) => rtype::NS,
            Self::Ptr(_) => rtype::PTR,
            Self::Srv { .. } => rtype::SRV,
            Self::Txt(_) => rtype::TXT,
            Self::Soa { .. } => rtype::SOA,
        }
    }

    /// The address record for an address.
    pub fn addr(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Self::A(a),
            IpAddr::V6(a) => Self::Aaaa(a),
        }
    }
}

/// The records of one type at one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    /// Time to live.
    pub ttl: u32,
    /// The records, sorted, without duplicates.
    pub data: BTreeSet<Rdata>,
}

/// Which zone a name's negative answers carry the SOA of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ZoneKind {
    /// The cluster domain.
    Cluster = 0,
    /// `in-addr.arpa`.
    ReverseV4 = 1,
    /// `ip6.arpa`.
    ReverseV6 = 2,
}

/// One name: its record sets (none for an empty non-terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The zone it belongs to.
    pub zone: ZoneKind,
    /// Record sets by type.
    pub rrsets: BTreeMap<u16, RecordSet>,
}

/// The names and records of the cluster domain and of the reverse names of
/// its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The cluster domain's apex.
    pub apex: DomainName,
    /// Every name that exists, with its records.
    pub nodes: BTreeMap<DomainName, Node>,
    /// Services (or parts of them) left out, with the reason.
    pub skipped: Vec<String>,
}

/// `in-addr.arpa.`
pub fn reverse_v4_apex() -> DomainName {
    DomainName(b"\x07in-addr\x04arpa\x00".to_vec())
}

/// `ip6.arpa.`
pub fn reverse_v6_apex() -> DomainName {
    DomainName(b"\x03ip6\x04arpa\x00".to_vec())
}

/// The reverse name of an address (`d.c.b.a.in-addr.arpa`, or the 32
/// nibbles under `ip6.arpa`).
pub fn reverse_name(addr: IpAddr) -> DomainName {
    let mut wire = Vec::with_capacity(72);
    match addr {
        IpAddr::V4(a) => {
            for octet in a.octets().iter().rev() {
                let text = octet.to_string();
                wire.push(text.len() as u8);
                wire.extend_from_slice(text.as_bytes());
            }
            wire.extend_from_slice(reverse_v4_apex().wire());
        }
        IpAddr::V6(a) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for octet in a.octets().iter().rev() {
                wire.extend_from_slice(&[1, HEX[usize::from(octet & 0xf)], 1, HEX[usize::from(octet >> 4)]]);
            }
            wire.extend_from_slice(reverse_v6_apex().wire());
        }
    }
    DomainName(wire)
}

/// The label CoreDNS gives an endpoint with no hostname: its address with
/// `.` (IPv4) or `:` (IPv6) replaced by `-`, and a `0` added where the IPv6
/// text would start or end with `-`.
pub fn dashed(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string().replace('.', "-"),
        IpAddr::V6(a) => {
            let mut s = a.to_string().replace(':', "-");
            if s.starts_with('-') {
                s.insert(0, '0');
            }
            if s.ends_with('-') {
                s.push('0');
            }
            s
        }
    }
}

/// TTL of `dns-version.<zone>` TXT (CoreDNS's).
const VERSION_TTL: u32 = 28800;
/// The schema version CoreDNS reports.
const SCHEMA_VERSION: &str = "1.1.0";

struct Builder<'c> {
    config: &'c DnsConfig,
    zone: Zone,
}

impl Builder<'_> {
    fn node(&mut self, name: &DomainName, zone: ZoneKind) -> &mut Node {
        self.zone.nodes.entry(name.clone()).or_insert_with(|| Node { zone, rrsets: BTreeMap::new() })
    }

    fn add(&mut self, name: &DomainName, data: Rdata) {
        let ttl = self.config.ttl;
        let zone = if name.is_within(&self.zone.apex) {
            ZoneKind::Cluster
        } else if name.is_within(&reverse_v4_apex()) {
            ZoneKind::ReverseV4
        } else {
            ZoneKind::ReverseV6
        };
        self.node(name, zone)
            .rrsets
            .entry(data.rtype())
            .or_insert_with(|| RecordSet { ttl, data: BTreeSet::new() })
            .data
            .insert(data);
    }

    fn service(&mut self, svc: &DnsService) -> Result<(), String> {
        let bad = |what: &str, e: NameError| format!("{}/{}: {what}: {e:?}", svc.namespace, svc.name);
        let ns_name = self.svc_apex().prepend(&svc.namespace).map_err(|e| bad("namespace", e))?;
        let name = ns_name.prepend(&svc.name).map_err(|e| bad("name", e))?;
        // The namespace exists once it holds a Service, even an empty headless one.
        self.node(&ns_name, ZoneKind::Cluster);
        match &svc.kind {
            DnsServiceKind::ExternalName(target) => {
                let target = DomainName::from_dotted(target).map_err(|e| bad("externalName", e))?;
                self.add(&name, Rdata::Cname(target));
            }
            // No address: no name, and no SRV record pointing at it.
            DnsServiceKind::ClusterIp(ips) if ips.is_empty() => {}
            DnsServiceKind::ClusterIp(ips) => {
                for &ip in ips {
                    self.add(&name, Rdata::addr(ip));
                    self.add(&reverse_name(ip), Rdata::Ptr(name.clone()));
                }
                for port in &svc.ports {
                    let srv = Rdata::Srv { priority: 0, weight: 0, port: port.port, target: name.clone() };
                    if !port.name.is_empty() {
                        let owner = self.port_name(&name, &port.name, port.protocol).map_err(|e| bad("port", e))?;
                        self.add(&owner, srv.clone());
                    }
                    self.add(&name, srv);
                }
            }
            DnsServiceKind::Headless => {
                // Resolve every name first: one bad hostname skips the Service,
                // not half of it.
                let mut ready = Vec::new();
                for ep in svc.endpoints.iter().filter(|ep| ep.ready || svc.publish_not_ready_addresses) {
                    let host = ep.hostname.clone().unwrap_or_else(|| dashed(ep.addr));
                    ready.push((ep, name.prepend(&host).map_err(|e| bad("endpoint hostname", e))?));
                }
                let mut port_names = Vec::new();
                for port in &svc.ports {
                    let owner = if port.name.is_empty() {
                        None
                    } else {
                        Some(self.port_name(&name, &port.name, port.protocol).map_err(|e| bad("port", e))?)
                    };
                    port_names.push((port, owner));
                }
                for (ep, host) in &ready {
                    self.add(&name, Rdata::addr(ep.addr));
                    self.add(host, Rdata::addr(ep.addr));
                    self.add(&reverse_name(ep.addr), Rdata::Ptr(host.clone()));
                    for (port, owner) in &port_names {
                        let Some(&(_, number)) = ep.ports.iter().find(|(n, _)| *n == port.name) else { continue };
                        let srv = Rdata::Srv { priority: 0, weight: 0, port: number, target: host.clone() };
                        if let Some(owner) = owner {
                            self.add(owner, srv.clone());
                        }
                        self.add(&name, srv);
                    }
                }
            }
        }
        Ok(())
    }

    fn svc_apex(&self) -> DomainName {
        // "svc" is a valid label: prepend cannot fail on a valid apex.
        self.zone.apex.prepend("svc").unwrap_or_else(|_| self.zone.apex.clone())
    }

    fn port_name(
        &self,
        svc: &DomainName,
        port: &str,
        protocol: crate::view::Protocol,
    ) -> Result<DomainName, NameError> {
        let proto = match protocol {
            crate::view::Protocol::Tcp => "_tcp",
            crate::view::Protocol::Udp => "_udp",
        };
        svc.prepend(proto)?.prepend(&format!("_{port}"))
    }

    fn apex_records(&mut self) {
        let apex = self.zone.apex.clone();
        let (Ok(ns), Ok(hostmaster), Ok(version)) = (
            apex.prepend("dns").and_then(|n| n.prepend("ns")),
            apex.prepend("hostmaster"),
            apex.prepend("dns-version"),
        ) else {
            return;
        };
        let ttl = self.config.ttl;
        self.add(
            &apex,
            Rdata::Soa { mname: ns.clone(), rname: hostmaster, serial: self.config.serial, timers: soa_timers(ttl) },
        );
        self.add(&apex, Rdata::Ns(ns.clone()));
        for &addr in &self.config.nameservers {
            self.add(&ns, Rdata::addr(addr));
        }
        self.add(&version, Rdata::Txt(SCHEMA_VERSION.to_owned()));
        if let Some(set) = self.node(&version, ZoneKind::Cluster).rrsets.get_mut(&rtype::TXT) {
            set.ttl = VERSION_TTL;
        }
        let svc = self.svc_apex();
        self.node(&svc, ZoneKind::Cluster);
        if let Ok(pod) = apex.prepend("pod") {
            self.node(&pod, ZoneKind::Cluster);
        }
    }

    /// SRV weights, and the empty non-terminals between owner names and the apex.
    fn finish(mut self) -> Zone {
        for node in self.zone.nodes.values_mut() {
            if let Some(set) = node.rrsets.get_mut(&rtype::SRV) {
                let weight = (100 / set.data.len().max(1)) as u16;
                set.data = std::mem::take(&mut set.data)
                    .into_iter()
                    .map(|r| match r {
                        Rdata::Srv { priority, port, target, .. } => Rdata::Srv { priority, weight, port, target },
                        other => other,
                    })
                    .collect();
            }
        }
        let apex = self.zone.apex.clone();
        let mut missing = Vec::new();
        for name in self.zone.nodes.keys().filter(|n| n.is_within(&apex)) {
            let mut up = name.parent();
            while let Some(parent) = up {
                if !parent.is_within(&apex) || self.zone.nodes.contains_key(&parent) {
                    break;
                }
                up = parent.parent();
                missing.push(parent);
            }
        }
        for name in missing {
            self.zone.nodes.entry(name).or_insert_with(|| Node { zone: ZoneKind::Cluster, rrsets: BTreeMap::new() });
        }
        self.zone
    }
}

/// The SOA timers: refresh, retry, expire (CoreDNS's values) and the
/// minimum, which is the negative TTL.
pub fn soa_timers(ttl: u32) -> [u32; 4] {
    [7200, 1800, 86400, ttl]
}

impl Zone {
    /// Compute every record of `view`.
    pub fn build(view: &DnsView, config: &DnsConfig) -> Zone {
        let mut skipped = Vec::new();
        let apex = DomainName::from_dotted(&config.zone).unwrap_or_else(|e| {
            skipped.push(format!("zone {:?}: {e:?}; using cluster.local", config.zone));
            DomainName(b"\x07cluster\x05local\x00".to_vec())
        });
        let mut b = Builder { config, zone: Zone { apex, nodes: BTreeMap::new(), skipped } };
        b.apex_records();
        for svc in &view.services {
            if let Err(why) = b.service(svc) {
                b.zone.skipped.push(why);
            }
        }
        b.finish()
    }

    /// Names left out, with the reason.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The record set of `rtype` at `name`.
    pub fn get(&self, name: &DomainName, rtype: u16) -> Option<&RecordSet> {
        self.nodes.get(name)?.rrsets.get(&rtype)
    }

    /// The apex of a zone.
    pub fn apex_of(&self, kind: ZoneKind) -> DomainName {
        match kind {
            ZoneKind::Cluster => self.apex.clone(),
            ZoneKind::ReverseV4 => reverse_v4_apex(),
            ZoneKind::ReverseV6 => reverse_v6_apex(),
        }
    }

    /// The SOA record of a zone, as its negative answers carry it:
    /// `ns.dns.<apex> hostmaster.<apex>`, as CoreDNS names them.
    pub fn soa(&self, kind: ZoneKind, config: &DnsConfig) -> (DomainName, u32, Rdata) {
        let apex = self.apex_of(kind);
        let mname = apex.prepend("dns").and_then(|n| n.prepend("ns")).unwrap_or_else(|_| apex.clone());
        let rname = apex.prepend("hostmaster").unwrap_or_else(|_| apex.clone());
        (apex, config.ttl, Rdata::Soa { mname, rname, serial: config.serial, timers: soa_timers(config.ttl) })
    }

    /// The names of one zone as a zone file (RFC 1035 5.1), for an
    /// authoritative server such as NSD or Knot: the SOA first, an NS at the
    /// apex (the reverse zones get `ns.dns.<cluster zone>`), then every record,
    /// grouped by name (in wire-format byte order, not DNSSEC's canonical
    /// order), one per line with its TTL and class.
    pub fn zone_file(&self, kind: ZoneKind, config: &DnsConfig) -> String {
        use fmt::Write as _;
        let (apex, ttl, soa) = self.soa(kind, config);
        let mut out = String::new();
        let _ = writeln!(out, "$ORIGIN {apex}\n$TTL {ttl}\n{apex} {ttl} IN {soa}");
        if kind != ZoneKind::Cluster {
            if let Ok(ns) = self.apex.prepend("dns").and_then(|n| n.prepend("ns")) {
                let _ = writeln!(out, "{apex} {ttl} IN {}", Rdata::Ns(ns));
            }
        }
        for (name, node) in self.nodes.iter().filter(|(_, node)| node.zone == kind) {
            for set in node.rrsets.values() {
                for data in set.data.iter().filter(|d| d.rtype() != rtype::SOA) {
                    let _ = writeln!(out, "{name} {} IN {data}", set.ttl);
                }
            }
        }
        out
    }
}

impl fmt::Display for Rdata {
    /// The type and the data as a zone file writes them (`A 198.18.0.1`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::A(a) => write!(f, "A {a}"),
            Self::Aaaa(a) => write!(f, "AAAA {a}"),
            Self::Cname(n) => write!(f, "CNAME {n}"),
            Self::Ns(n) => write!(f, "NS {n}"),
            Self::Ptr(n) => write!(f, "PTR {n}"),
            Self::Srv { priority, weight, port, target } => write!(f, "SRV {priority} {weight} {port} {target}"),
            // Only letters, digits and dots are put in TXT records here.
            Self::Txt(s) => write!(f, "TXT \"{s}\""),
            Self::Soa { mname, rname, serial, timers: [refresh, retry, expire, minimum] } => {
                write!(f, "SOA {mname} {rname} {serial} {refresh} {retry} {expire} {minimum}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{DnsEndpoint, Protocol};

    fn n(text: &str) -> DomainName {
        DomainName::from_dotted(text).unwrap()
    }

    #[test]
    fn names() {
        let name = n("Nginx.Default.svc.cluster.local.");
        assert_eq!(name.wire(), b"\x05nginx\x07default\x03svc\x07cluster\x05local\x00");
        assert_eq!(name.to_string(), "nginx.default.svc.cluster.local.");
        assert!(name.is_within(&n("cluster.local")));
        assert!(name.is_within(&name));
        assert!(!n("xcluster.local").is_within(&n("cluster.local")));
        assert!(!n("local").is_within(&n("cluster.local")));
        assert_eq!(name.parent().unwrap(), n("default.svc.cluster.local"));
        assert_eq!(DomainName::root().parent(), None);
        assert_eq!(DomainName::from_dotted("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(DomainName::from_dotted("a.b c"), Err(NameError::BadByte));
        assert_eq!(DomainName::from_dotted(&"a".repeat(64)), Err(NameError::LongLabel));
        assert_eq!(DomainName::from_dotted(&["abcdefghi"; 26].join(".")), Err(NameError::LongName));
        assert_eq!(reverse_name("198.18.0.10".parse().unwrap()), n("10.0.18.198.in-addr.arpa"));
        assert_eq!(
            reverse_name("fd00::1".parse().unwrap()).to_string(),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."
        );
        assert_eq!(dashed("198.18.1.2".parse().unwrap()), "198-18-1-2");
        assert_eq!(dashed("5678:abcd::1".parse().unwrap()), "5678-abcd--1");
        assert_eq!(dashed("::1".parse().unwrap()), "0--1");
        assert_eq!(dashed("fd00::".parse().unwrap()), "fd00--0");
    }

    #[test]
    fn zone_files() {
        let view = DnsView {
            services: vec![
                DnsService::cluster_ip("default", "nginx", Ipv4Addr::new(198, 18, 128, 1)).with_port(
                    "http",
                    Protocol::Tcp,
                    8080,
                ),
                DnsService::external_name("default", "ext", "www.example.com"),
            ],
        };
        let config = DnsConfig::default();
        let zone = Zone::build(&view, &config);
        assert_eq!(
            zone.zone_file(ZoneKind::Cluster, &config),
            "$ORIGIN cluster.local.
$TTL 5
cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5
ext.default.svc.cluster.local. 5 IN CNAME www.example.com.
_http._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 100 8080 nginx.default.svc.cluster.local.
nginx.default.svc.cluster.local. 5 IN A 198.18.128.1
nginx.default.svc.cluster.local. 5 IN SRV 0 100 8080 nginx.default.svc.cluster.local.
cluster.local. 5 IN NS ns.dns.cluster.local.
dns-version.cluster.local. 28800 IN TXT \"1.1.0\"
"
        );
        assert_eq!(
            zone.zone_file(ZoneKind::ReverseV4, &config),
            "$ORIGIN in-addr.arpa.
$TTL 5
in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa. hostmaster.in-addr.arpa. 1 7200 1800 86400 5
in-addr.arpa. 5 IN NS ns.dns.cluster.local.
1.128.18.198.in-addr.arpa. 5 IN PTR nginx.default.svc.cluster.local.
"
        );
    }

    #[test]
    fn headless_without_ready_endpoints_does_not_exist_but_its_namespace_does() {
        let mut ep = DnsEndpoint::ready(Ipv4Addr::new(198, 18, 1, 2));
        ep.ready = false;
        let view = DnsView { services: vec![DnsService::headless("ns", "h").with_endpoint(ep)] };
        let zone = Zone::build(&view, &DnsConfig::default());
        assert!(!zone.nodes.contains_key(&n("h.ns.svc.cluster.local")));
        assert!(zone.nodes.contains_key(&n("ns.svc.cluster.local")));
        assert!(zone.skipped().is_empty());
    }

    #[test]
    fn bad_labels_skip_the_service() {
        let mut ep = DnsEndpoint::ready(Ipv4Addr::new(198, 18, 1, 2));
        ep.hostname = Some("a.b".into());
        let view = DnsView {
            services: vec![
                DnsService::headless("ns", "h").with_endpoint(ep),
                DnsService::external_name("ns", "e", "bad name.example"),
                DnsService::cluster_ip("ns", "ok", Ipv4Addr::new(198, 18, 128, 1)).with_port("p", Protocol::Tcp, 80),
            ],
        };
        let zone = Zone::build(&view, &DnsConfig::default());
        assert_eq!(zone.skipped().len(), 2, "{:?}", zone.skipped());
        assert!(zone.get(&n("h.ns.svc.cluster.local"), rtype::A).is_none());
        assert!(zone.get(&n("ok.ns.svc.cluster.local"), rtype::A).is_some());
        assert!(zone.get(&n("_p._tcp.ok.ns.svc.cluster.local"), rtype::SRV).is_some());
        assert!(zone.nodes.contains_key(&n("_tcp.ok.ns.svc.cluster.local")));
    }
}
