//! The fast-path responder: a query in a buffer becomes its response in the
//! same buffer.
//!
//! [`respond_in_place`] reads the header, the question and an optional OPT
//! record with [`DnsPacket`], looks the lower-cased name up in the
//! [`DnsTable`], and writes the response over the query: the header is
//! rewritten, the question is kept byte for byte (so the client's letter case
//! comes back, as DNS 0x20 needs), and the table's answer bytes are copied
//! after it. It does not allocate, and returns a verdict on any input:
//! [`Outcome::Answered`], [`Outcome::Slow`] for what the control-path server
//! must answer, or [`Outcome::Drop`] for what no one should. Counting the
//! verdicts is the caller's.
//!
//! The response: ID and question as sent; QR=1, opcode 0, AA=1, RD and CD
//! copied, RA=0, AD=0. With an OPT record in the query (EDNS version 0, no
//! options other than COOKIE and PADDING, which are ignored) the response
//! carries an OPT record advertising the table's payload size, and may be as
//! long as the query's payload size (at least 512); without one, 512 bytes.
//! `max_out` (the caller's room) caps it further. An answer that does not fit
//! first drops its additional section; if it still does not fit, it is sent
//! with TC=1 and no records (but the OPT), and the client retries over TCP.

use core::fmt;

use crate::table::{Answer, DnsTable, Entry, NegativeSoa};
use crate::wire::{self, flags, DnsPacket, ParseError, CLASS_IN, HEADER_LEN, MAX_NAME_LEN};

/// Why a query goes to the slow path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlowReason {
    /// An opcode other than QUERY (NOTIFY, UPDATE...).
    Opcode,
    /// TC set in the query.
    QueryTruncated,
    /// QDCOUNT other than 1.
    QuestionCount,
    /// Records in the answer or authority sections, or more than one
    /// additional record.
    Sections,
    /// A compression pointer in the question name.
    CompressedName,
    /// A class other than IN (CHAOS `version.bind`...).
    Class,
    /// ANY, AXFR, IXFR and other meta types.
    QueryType,
    /// An additional record that is not OPT (TSIG, SIG(0)).
    AdditionalRecord,
    /// EDNS version other than 0 (BADVERS is the slow path's).
    EdnsVersion,
    /// An EDNS option the fast path does not ignore.
    EdnsOption,
    /// Bytes after the last record.
    TrailingData,
    /// A name outside the cluster domain, or a reverse name the table does
    /// not hold (CoreDNS's `fallthrough in-addr.arpa ip6.arpa`).
    OutOfZone,
    /// A name below `pod.<zone>` (deprecated Pod records).
    PodName,
    /// An ExternalName Service whose target is outside the zone, left to the
    /// slow path (`DnsConfig::external_names_upstream`).
    ExternalName,
    /// An answer that could not be encoded (over 64 KiB).
    TooLarge,
    /// `max_out` has no room for even the header and question.
    NoRoom,
}

impl SlowReason {
    /// Every reason, in declaration order (`reason as usize` indexes it).
    pub const ALL: [SlowReason; 16] = [
        Self::Opcode,
        Self::QueryTruncated,
        Self::QuestionCount,
        Self::Sections,
        Self::CompressedName,
        Self::Class,
        Self::QueryType,
        Self::AdditionalRecord,
        Self::EdnsVersion,
        Self::EdnsOption,
        Self::TrailingData,
        Self::OutOfZone,
        Self::PodName,
        Self::ExternalName,
        Self::TooLarge,
        Self::NoRoom,
    ];

    /// A short name for counters and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Opcode => "opcode",
            Self::QueryTruncated => "query_truncated",
            Self::QuestionCount => "question_count",
            Self::Sections => "sections",
            Self::CompressedName => "compressed_name",
            Self::Class => "class",
            Self::QueryType => "query_type",
            Self::AdditionalRecord => "additional_record",
            Self::EdnsVersion => "edns_version",
            Self::EdnsOption => "edns_option",
            Self::TrailingData => "trailing_data",
            Self::OutOfZone => "out_of_zone",
            Self::PodName => "pod_name",
            Self::ExternalName => "external_name",
            Self::TooLarge => "too_large",
            Self::NoRoom => "no_room",
        }
    }
}

/// Why a message is dropped unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its header or than its fields claim (or `dns_len` past
    /// the buffer).
    Truncated,
    /// An impossible field: a reserved label type, a name over 255 bytes, an
    /// EDNS option running past its record.
    Malformed,
    /// A response (QR=1): answering it could start a loop.
    NotQuery,
}

impl DropReason {
    /// Every reason, in declaration order (`reason as usize` indexes it).
    pub const ALL: [DropReason; 3] = [Self::Truncated, Self::Malformed, Self::NotQuery];

    /// A short name for counters and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Malformed => "malformed",
            Self::NotQuery => "not_query",
        }
    }
}

impl fmt::Display for SlowReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`respond_in_place`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response is in `buf[..len]`.
    Answered {
        /// Its length.
        len: usize,
    },
    /// Not answered here; the buffer is unchanged.
    Slow(SlowReason),
    /// Not to be answered; the buffer is unchanged.
    Drop(DropReason),
}

fn parse_verdict(e: ParseError) -> Outcome {
    match e {
        ParseError::Truncated => Outcome::Drop(DropReason::Truncated),
        ParseError::Malformed => Outcome::Drop(DropReason::Malformed),
        ParseError::Compressed => Outcome::Slow(SlowReason::CompressedName),
        ParseError::NotOpt => Outcome::Slow(SlowReason::AdditionalRecord),
        ParseError::EdnsVersion => Outcome::Slow(SlowReason::EdnsVersion),
        ParseError::EdnsOption => Outcome::Slow(SlowReason::EdnsOption),
    }
}

/// Whether the wire name `name` (plain labels, checked) is `zone` or below.
#[inline]
fn is_within(name: &[u8], zone: &[u8]) -> bool {
    let Some(start) = name.len().checked_sub(zone.len()) else { return false };
    if name.get(start..) != Some(zone) {
        return false;
    }
    let mut at = 0;
    while at < start {
        at += 1 + usize::from(name.get(at).copied().unwrap_or(0xff));
    }
    at == start
}

enum Body<'t> {
    Answer(&'t Answer),
    Negative { rcode: u8, soa: &'t NegativeSoa },
}

/// Answer the DNS query in `buf[..dns_len]` from `table`, writing the
/// response over it in `buf[..len]` with `len <= max_out`.
///
/// The buffer is changed only when the outcome is `Answered`.
pub fn respond_in_place(table: &DnsTable, buf: &mut [u8], dns_len: usize, max_out: usize) -> Outcome {
    let Some(msg) = buf.get(..dns_len) else { return Outcome::Drop(DropReason::Truncated) };
    let Ok(query) = DnsPacket::new_checked(msg) else { return Outcome::Drop(DropReason::Truncated) };
    let qflags = query.flags();
    if qflags & flags::QR != 0 {
        return Outcome::Drop(DropReason::NotQuery);
    }
    if query.opcode() != 0 {
        return Outcome::Slow(SlowReason::Opcode);
    }
    if qflags & flags::TC != 0 {
        return Outcome::Slow(SlowReason::QueryTruncated);
    }
    if query.qdcount() != 1 {
        return Outcome::Slow(SlowReason::QuestionCount);
    }
    if query.ancount() != 0 || query.nscount() != 0 || query.arcount() > 1 {
        return Outcome::Slow(SlowReason::Sections);
    }
    let mut lower = [0u8; MAX_NAME_LEN];
    let question = match query.question(&mut lower) {
        Ok(q) => q,
        Err(e) => return parse_verdict(e),
    };
    let (client_size, end) = if query.arcount() == 1 {
        match query.opt(question.end) {
            Ok(opt) => (Some(opt.udp_size.max(512)), opt.end),
            Err(e) => return parse_verdict(e),
        }
    } else {
        (None, question.end)
    };
    if end != dns_len {
        return Outcome::Slow(SlowReason::TrailingData);
    }
    if question.qclass != CLASS_IN {
        return Outcome::Slow(SlowReason::Class);
    }
    if wire::is_meta_qtype(question.qtype) {
        return Outcome::Slow(SlowReason::QueryType);
    }

    let name = &lower[..question.name_len];
    let body = match table.name(name) {
        Some(entry) => match entry.get(question.qtype) {
            Some(Entry::Answer(answer)) => Body::Answer(answer),
            Some(Entry::Slow(reason)) => return Outcome::Slow(*reason),
            None => Body::Negative { rcode: 0, soa: &table.negative[entry.zone as usize] },
        },
        None => {
            if !is_within(name, table.apex.wire()) {
                return Outcome::Slow(SlowReason::OutOfZone);
            }
            // pod.<zone> itself is in the table: this name is below it.
            if is_within(name, table.pod_apex.wire()) {
                return Outcome::Slow(SlowReason::PodName);
            }
            Body::Negative { rcode: 3, soa: &table.negative[0] }
        }
    };

    let opt_len = if client_size.is_some() { 11 } else { 0 };
    let limit = max_out.min(buf.len()).min(usize::from(client_size.unwrap_or(512)));
    let Some(room) = limit.checked_sub(question.end + opt_len) else { return Outcome::Slow(SlowReason::NoRoom) };
    let q_end = question.end;
    let (rcode, mut counts, written) = match body {
        Body::Answer(a) => {
            let (counts, len) = if a.records.len() <= room {
                (a.counts, a.records.len())
            } else if a.additional_at <= room {
                ([a.counts[0], a.counts[1], 0], a.additional_at)
            } else {
                ([0; 3], 0)
            };
            let Some(src) = a.records.get(..len) else { return Outcome::Slow(SlowReason::TooLarge) };
            buf[q_end..q_end + len].copy_from_slice(src);
            (a.rcode, counts, if len == 0 && !a.records.is_empty() { None } else { Some(len) })
        }
        Body::Negative { rcode, soa } => {
            let len = soa.record.len();
            if len <= room {
                let Some(zone_at) = (HEADER_LEN + question.name_len).checked_sub(soa.zone_len) else {
                    return Outcome::Slow(SlowReason::OutOfZone);
                };
                let pointer = (0xc000 | zone_at as u16).to_be_bytes();
                let out = &mut buf[q_end..q_end + len];
                out.copy_from_slice(&soa.record);
                for p in soa.pointers {
                    if let Some(at) = out.get_mut(p..p + 2) {
                        at.copy_from_slice(&pointer);
                    }
                }
                (rcode, [0, 1, 0], Some(len))
            } else {
                (rcode, [0; 3], None)
            }
        }
    };
    let mut at = q_end + written.unwrap_or(0);
    if client_size.is_some() {
        buf[at..at + 11].copy_from_slice(&wire::opt_record(table.udp_payload_size));
        at += 11;
        counts[2] += 1;
    }
    let tc = if written.is_none() { flags::TC } else { 0 };
    let mut response = DnsPacket::new_unchecked(&mut buf[..at]);
    response.set_flags(flags::QR | flags::AA | tc | (qflags & (flags::RD | flags::CD)) | u16::from(rcode & 0xf));
    response.set_record_counts(counts);
    Outcome::Answered { len: at }
}
