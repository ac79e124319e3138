//! The answer table: every answer the zone can give, encoded once.
//!
//! [`DnsTable::build`] computes the [`Zone`] and encodes, for every name and
//! every record type present there, the complete answer: response code,
//! section counts, and the answer, authority and additional records as they
//! follow the question on the wire. Each answer is encoded by hickory-proto as
//! the full response to the lower-cased question, and the bytes after the
//! question are kept. Name compression therefore points at the question's
//! name (offset 12) or at names in the kept bytes, and the bytes are valid
//! after any question of the same name in any letter case: the labels, and so
//! the offsets, are the same.
//!
//! The table is one map from lower-cased wire-format name to that name's
//! answers by type. A name in the map exists; a type with no answer there is
//! NODATA. A name not in the map is NXDOMAIN when it is in the cluster domain
//! (except below `pod.<zone>`, left to the slow path), and is not the table's
//! to answer otherwise. The SOA of negative answers is written per query from
//! a small template whose three name pointers are set to the zone's suffix of
//! the question name (the zone name appears nowhere else in such a response).
//!
//! The table is immutable once built; share it behind an `Arc` and replace it
//! whole.

use std::collections::HashMap;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{RData, Record, RecordType};

use crate::respond::SlowReason;
use crate::view::{DnsConfig, DnsView};
use crate::zone::{reverse_v4_apex, reverse_v6_apex, rtype, soa_timers, DomainName, Rdata, Zone, ZoneKind};

/// A ready-encoded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response code (0 NOERROR or 3 NXDOMAIN).
    pub rcode: u8,
    /// ANCOUNT, NSCOUNT, ARCOUNT (without an OPT record).
    pub counts: [u16; 3],
    /// The records of the three sections, to be appended after the question.
    pub records: Box<[u8]>,
    /// Where the additional section starts in `records`: an answer too long
    /// for the client may drop it (RFC 2181 9) before it sets TC.
    pub additional_at: usize,
}

/// What a name and type get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// This answer.
    Answer(Answer),
    /// The slow path's to answer (an ExternalName outside the zone).
    Slow(SlowReason),
}

/// One name of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// Whose SOA its negative answers carry.
    pub zone: ZoneKind,
    /// Answers by query type.
    pub answers: Box<[(u16, Entry)]>,
    /// The answer for any other query type (CNAME owners), else NODATA.
    pub other: Option<Entry>,
}

impl NameEntry {
    /// The entry for `qtype`; `None` is NODATA.
    #[inline]
    pub fn get(&self, qtype: u16) -> Option<&Entry> {
        self.answers.iter().find(|(t, _)| *t == qtype).map(|(_, e)| e).or(self.other.as_ref())
    }
}

/// The SOA record of negative answers, with the owner and the ends of MNAME
/// and RNAME as compression pointers to be set per query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegativeSoa {
    /// Length of the zone's name in wire format.
    pub zone_len: usize,
    /// The record; bytes `pointers[i]..+2` are set to the zone's offset.
    pub record: Box<[u8]>,
    /// Where the three pointers are.
    pub pointers: [usize; 3],
}

/// The table the responder reads; built by [`DnsTable::build`].
#[derive(Debug, Clone)]
pub struct DnsTable {
    pub(crate) names: HashMap<Box<[u8]>, NameEntry, ahash::RandomState>,
    pub(crate) apex: DomainName,
    pub(crate) pod_apex: DomainName,
    pub(crate) negative: [NegativeSoa; 3],
    pub(crate) udp_payload_size: u16,
    addresses: Box<[std::net::Ipv4Addr]>,
    addresses6: Box<[std::net::Ipv6Addr]>,
    skipped: Vec<String>,
}

/// Longest CNAME chain followed inside the zone.
const MAX_CHAIN: usize = 8;

type Rr = (DomainName, u32, Rdata);

/// How a question resolves inside the zone.
enum Resolution {
    /// Records found (possibly after CNAMEs).
    Data { answers: Vec<Rr>, additional: Vec<Rr> },
    /// The last name exists without records of the type, or does not exist.
    Negative { answers: Vec<Rr>, rcode: u8, zone: ZoneKind },
    /// A CNAME leads out of the zone.
    OutOfZone { answers: Vec<Rr> },
}

impl DnsTable {
    /// Compute the records of `view` and encode every answer.
    pub fn build(view: &DnsView, config: &DnsConfig) -> DnsTable {
        Self::from_zone(&Zone::build(view, config), config)
    }

    /// Encode every answer of `zone`.
    pub fn from_zone(zone: &Zone, config: &DnsConfig) -> DnsTable {
        let mut skipped = zone.skipped.clone();
        let mut names = HashMap::with_capacity_and_hasher(zone.nodes.len(), ahash::RandomState::new());
        let pod_apex = zone.apex.prepend("pod").unwrap_or_else(|_| zone.apex.clone());
        let soas = [ZoneKind::Cluster, ZoneKind::ReverseV4, ZoneKind::ReverseV6].map(|k| zone.soa(k, config));
        let ctx = Ctx { zone, pod_apex: &pod_apex, soas: &soas };
        for (name, node) in &zone.nodes {
            let mut answers: Vec<(u16, Entry)> = Vec::new();
            let encode = |qtype: u16, r: Resolution, skipped: &mut Vec<String>| match ctx.encode(name, qtype, r) {
                Ok(answer) => Entry::Answer(answer),
                Err(e) => {
                    skipped.push(format!("{name} type {qtype}: {e}"));
                    Entry::Slow(SlowReason::TooLarge)
                }
            };
            for &qtype in node.rrsets.keys() {
                answers.push((qtype, encode(qtype, ctx.resolve(name, qtype), &mut skipped)));
            }
            let mut other = None;
            if node.rrsets.contains_key(&rtype::CNAME) {
                for qtype in [rtype::A, rtype::AAAA, rtype::SRV, rtype::TXT, rtype::PTR, rtype::NS, rtype::SOA] {
                    if let r @ Resolution::Data { .. } = ctx.resolve(name, qtype) {
                        answers.push((qtype, encode(qtype, r, &mut skipped)));
                    }
                }
                // Type 0 is in no record set: this is the chain's end for any other type.
                other = match ctx.resolve(name, 0) {
                    Resolution::OutOfZone { .. } if config.external_names_upstream => {
                        Some(Entry::Slow(SlowReason::ExternalName))
                    }
                    r => Some(encode(rtype::A, r, &mut skipped)),
                };
            }
            names.insert(name.wire().into(), NameEntry { zone: node.zone, answers: answers.into(), other });
        }
        let negative = [
            negative_soa(&zone.apex, config),
            negative_soa(&reverse_v4_apex(), config),
            negative_soa(&reverse_v6_apex(), config),
        ];
        DnsTable {
            names,
            apex: zone.apex.clone(),
            pod_apex,
            negative,
            udp_payload_size: config.udp_payload_size.max(512),
            addresses: config
                .nameservers
                .iter()
                .filter_map(|a| match a {
                    std::net::IpAddr::V4(a) => Some(*a),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect(),
            addresses6: config
                .nameservers
                .iter()
                .filter_map(|a| match a {
                    std::net::IpAddr::V6(a) => Some(*a),
                    std::net::IpAddr::V4(_) => None,
                })
                .collect(),
            skipped,
        }
    }

    /// The number of names (including empty non-terminals).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the table has no names (never: the apex is always there).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// An estimate of the table's heap use in bytes: names, entries and
    /// encoded answers (not the hash map's spare capacity).
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u16, Entry)>();
        let slot = std::mem::size_of::<(Box<[u8]>, NameEntry)>();
        self.names
            .iter()
            .map(|(name, e)| {
                let records: usize = e
                    .answers
                    .iter()
                    .map(|(_, a)| a)
                    .chain(e.other.as_ref())
                    .map(|a| match a {
                        Entry::Answer(a) => a.records.len(),
                        Entry::Slow(_) => 0,
                    })
                    .sum();
                slot + name.len() + e.answers.len() * entry + records
            })
            .sum()
    }

    /// The IPv4 addresses this table is served on ([`DnsConfig::nameservers`]):
    /// the dataplane answers UDP queries to these (port 53) and steers them to
    /// its workers. Empty when cluster DNS is off.
    pub fn addresses(&self) -> &[std::net::Ipv4Addr] {
        &self.addresses
    }

    /// The IPv6 addresses this table is served on. Kept apart from
    /// [`DnsTable::addresses`]: the dataplane's in-frame hook parses IPv4
    /// frames only, so queries to these reach the kernel and the
    /// control-path server; an IPv6 hook would read them here.
    pub fn addresses6(&self) -> &[std::net::Ipv6Addr] {
        &self.addresses6
    }

    /// Records left out, with the reason, for the control plane to log.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The entry of a lower-cased wire-format name.
    #[inline]
    pub fn name(&self, wire: &[u8]) -> Option<&NameEntry> {
        self.names.get(wire)
    }
}

struct Ctx<'a> {
    zone: &'a Zone,
    pod_apex: &'a DomainName,
    soas: &'a [Rr; 3],
}

impl Ctx<'_> {
    fn resolve(&self, qname: &DomainName, qtype: u16) -> Resolution {
        let mut answers = Vec::new();
        let mut name = qname.clone();
        for _ in 0..MAX_CHAIN {
            // A CNAME loop: the chain so far, once.
            if answers.iter().any(|(owner, _, _)| *owner == name) {
                break;
            }
            let Some(node) = self.zone.nodes.get(&name) else {
                if name.is_within(&self.zone.apex) && !(name.is_within(self.pod_apex) && name != *self.pod_apex) {
                    return Resolution::Negative { answers, rcode: 3, zone: ZoneKind::Cluster };
                }
                return Resolution::OutOfZone { answers };
            };
            if let Some(set) = node.rrsets.get(&qtype) {
                let mut additional = Vec::new();
                for data in &set.data {
                    if let Rdata::Srv { target, .. } | Rdata::Ns(target) = data {
                        for t in [rtype::A, rtype::AAAA] {
                            if let Some(s) = self.zone.get(target, t) {
                                additional.extend(s.data.iter().map(|d| (target.clone(), s.ttl, d.clone())));
                            }
                        }
                    }
                    answers.push((name.clone(), set.ttl, data.clone()));
                }
                additional.dedup();
                return Resolution::Data { answers, additional };
            }
            match node.rrsets.get(&rtype::CNAME).and_then(|s| s.data.first().map(|d| (s.ttl, d))) {
                Some((ttl, Rdata::Cname(target))) if qtype != rtype::CNAME => {
                    answers.push((name.clone(), ttl, Rdata::Cname(target.clone())));
                    name = target.clone();
                }
                _ => return Resolution::Negative { answers, rcode: 0, zone: node.zone },
            }
        }
        // A loop, or a chain longer than MAX_CHAIN: what was found so far.
        Resolution::Data { answers, additional: Vec::new() }
    }

    fn encode(&self, qname: &DomainName, qtype: u16, r: Resolution) -> Result<Answer, String> {
        let (rcode, answers, authority, additional) = match r {
            Resolution::Data { answers, additional } => (0, answers, None, additional),
            Resolution::Negative { answers, rcode, zone } => (rcode, answers, Some(&self.soas[zone as usize]), vec![]),
            Resolution::OutOfZone { answers } => (0, answers, None, vec![]),
        };
        let message = |with_additional: bool| {
            let mut m = Message::new(0, MessageType::Response, OpCode::Query);
            m.metadata.authoritative = true;
            m.metadata.response_code = ResponseCode::from(0, rcode);
            m.add_query(Query::query(qname.to_hickory(), RecordType::from(qtype)));
            m.add_answers(answers.iter().map(record));
            m.add_authorities(authority.iter().map(|rr| record(rr)));
            if with_additional {
                m.add_additionals(additional.iter().map(record));
            }
            m.to_vec().map_err(|e| e.to_string())
        };
        let full = message(true)?;
        let question_end = 12 + qname.wire().len() + 4;
        let short_len = if additional.is_empty() {
            full.len()
        } else {
            let short = message(false)?;
            // The header's ARCOUNT differs; the records without the additional
            // section must be a prefix of the full ones.
            if short.len() < question_end || full.get(question_end..short.len()) != short.get(question_end..) {
                return Err("unexpected encoding".into());
            }
            short.len()
        };
        if full.len() < question_end {
            return Err("unexpected encoding".into());
        }
        let count = |n: usize| u16::try_from(n).map_err(|_| "too many records".to_string());
        Ok(Answer {
            rcode,
            counts: [count(answers.len())?, count(usize::from(authority.is_some()))?, count(additional.len())?],
            records: full[question_end..].into(),
            additional_at: short_len - question_end,
        })
    }
}

fn record((name, ttl, data): &Rr) -> Record {
    let rdata = match data {
        Rdata::A(a) => RData::A(A(*a)),
        Rdata::Aaaa(a) => RData::AAAA(AAAA(*a)),
        Rdata::Cname(n) => RData::CNAME(CNAME(n.to_hickory())),
        Rdata::Ns(n) => RData::NS(NS(n.to_hickory())),
        Rdata::Ptr(n) => RData::PTR(PTR(n.to_hickory())),
        Rdata::Srv { priority, weight, port, target } => {
            RData::SRV(SRV::new(*priority, *weight, *port, target.to_hickory()))
        }
        Rdata::Txt(s) => RData::TXT(TXT::new(vec![s.clone()])),
        Rdata::Soa { mname, rname, serial, timers: [refresh, retry, expire, minimum] } => RData::SOA(SOA::new(
            mname.to_hickory(),
            rname.to_hickory(),
            *serial,
            *refresh as i32,
            *retry as i32,
            *expire as i32,
            *minimum,
        )),
    };
    Record::from_rdata(name.to_hickory(), *ttl, rdata)
}

/// The same SOA as [`Zone::soa`], written by hand with pointers to the zone's
/// name in the question.
fn negative_soa(apex: &DomainName, config: &DnsConfig) -> NegativeSoa {
    let mut r = Vec::with_capacity(64);
    let p0 = r.len();
    r.extend_from_slice(&[0xc0, 0]);
    r.extend_from_slice(&rtype::SOA.to_be_bytes());
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&config.ttl.to_be_bytes());
    let rdlen_at = r.len();
    r.extend_from_slice(&[0, 0]);
    r.extend_from_slice(b"\x02ns\x03dns");
    let p1 = r.len();
    r.extend_from_slice(&[0xc0, 0]);
    r.extend_from_slice(b"\x0ahostmaster");
    let p2 = r.len();
    r.extend_from_slice(&[0xc0, 0]);
    r.extend_from_slice(&config.serial.to_be_bytes());
    for t in soa_timers(config.ttl) {
        r.extend_from_slice(&t.to_be_bytes());
    }
    let rdlen = (r.len() - rdlen_at - 2) as u16;
    r[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    NegativeSoa { zone_len: apex.wire().len(), record: r.into(), pointers: [p0, p1, p2] }
}
