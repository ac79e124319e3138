//! Cluster DNS in the workers: a UDP query to a DNS address is answered in
//! the frame it arrived in, before the NAT pipeline sees the burst.
//!
//! The XDP steering program sends `(DNS address, UDP, 53)` to the workers
//! like a frontend (TCP/53 is not in its map, so it goes to the kernel). Per
//! burst the worker loads the published [`DnsTable`] once; when the table has
//! addresses, [`split_batch`] looks at each frame's fixed offsets (an
//! untagged IPv4 frame without options, not a fragment, UDP, destination
//! port 53, destination one of the table's few addresses) and hands every
//! other frame, in runs and in order, to the NAT pipeline. With no DNS
//! address nothing is looked at.
//!
//! A query frame ([`answer`]):
//! - its IPv4 and UDP headers are checked (lengths, both checksums); a bad
//!   one is a counted drop ([`DropReason::DnsQuery`], `bad_frame`);
//! - the UDP payload goes to [`respond_in_place`], with room for a
//!   1472-byte payload (a 1500-byte IP MTU) at most;
//! - `Answered`: the frame becomes the response in place: MACs, addresses
//!   and ports swapped, IPv4 total length, TTL 64, DF, header checksum
//!   recomputed, UDP length and a full UDP checksum (pseudo-header and
//!   payload, as the kernel would compute it: the payload is new, so an
//!   incremental update would save nothing, and a zero checksum would leave
//!   a corrupted answer undetected). No conntrack entry: the verdict is
//!   `Reply`, sent back out of the port the query came in on;
//! - `Slow` (TCP-only features, ANY, unknown EDNS options, names outside the
//!   zone...): `Pass` to the kernel through the exception path
//!   ([`PassReason::DnsSlow`]); the DNS address is local there and the
//!   control-path server listens on it, so the kernel delivers the query to
//!   that server, which answers from the same table;
//! - `Drop` (a response, a truncated or malformed message): a counted drop.
//!
//! Frames with a VLAN tag or IPv4 options are not matched: the NAT pipeline
//! passes them to the kernel (not a frontend), where the server answers.

use std::net::Ipv4Addr;

use svcgate_dns::{respond_in_place, DnsTable, Outcome};

use crate::nat::{DropReason, Frame, PassReason, Verdict};
use crate::wire::ethernet::EthernetFrame;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::udp::UdpPacket;

/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// Where the IPv4 header starts (untagged Ethernet).
const L3: usize = 14;
/// Where the UDP header starts (IPv4 without options).
const L4: usize = L3 + 20;
/// Where the DNS message starts.
const DNS_AT: usize = L4 + 8;
/// The largest UDP payload of a response: a 1500-byte IP MTU less the IPv4
/// and UDP headers (the table's EDNS size, 1232 by default, is below it).
const MAX_PAYLOAD: usize = 1472;

/// What the workers did with DNS queries; per worker, exported with the NAT
/// counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsCounters {
    /// Queries answered by the worker.
    pub answered: u64,
    /// Queries passed to the control-path server, by
    /// [`svcgate_dns::SlowReason`] (`reason as usize`).
    pub slow: [u64; svcgate_dns::SlowReason::ALL.len()],
    /// Messages dropped by the responder, by [`svcgate_dns::DropReason`].
    pub dropped: [u64; svcgate_dns::DropReason::ALL.len()],
    /// Frames dropped before the responder: inconsistent IPv4 or UDP
    /// lengths, or a wrong checksum.
    pub bad_frame: u64,
}

impl DnsCounters {
    /// Adds `other` (another worker's) to these.
    pub fn add(&mut self, other: &DnsCounters) {
        self.answered += other.answered;
        self.bad_frame += other.bad_frame;
        for (a, b) in self.slow.iter_mut().zip(other.slow) {
            *a += b;
        }
        for (a, b) in self.dropped.iter_mut().zip(other.dropped) {
            *a += b;
        }
    }
}

/// Whether `buf[..len]` is a UDP datagram to port 53 of one of `addrs`, in
/// an untagged IPv4 frame without options that is not a fragment. Reads
/// fixed offsets of the first 42 bytes only.
#[inline(always)]
pub fn is_query(buf: &[u8], len: usize, addrs: &[Ipv4Addr]) -> bool {
    if len < DNS_AT {
        return false;
    }
    let Some(h) = buf.get(..DNS_AT) else { return false };
    // Destination port first: it rules out nearly every other frame.
    h[L4 + 2..L4 + 4] == DNS_PORT.to_be_bytes()
        && h[12..14] == [0x08, 0x00]
        && h[L3] == 0x45
        && h[L3 + 9] == 17
        && h[L3 + 6] & 0x3f == 0
        && h[L3 + 7] == 0
        && addrs.iter().any(|a| h[L3 + 16..L3 + 20] == a.octets())
}

/// Runs `nat` over `frames` with the DNS queries among them answered here:
/// every run of other frames goes to `nat` in order, each query gets its
/// verdict from [`answer`]. With no DNS address, all frames go to `nat` at
/// once.
#[inline]
pub fn split_batch(
    table: &DnsTable,
    frames: &mut [Frame<'_>],
    counters: &mut DnsCounters,
    mut nat: impl FnMut(&mut [Frame<'_>]),
) {
    let addrs = table.addresses();
    if addrs.is_empty() {
        return nat(frames);
    }
    let mut start = 0;
    for i in 0..frames.len() {
        if is_query(frames[i].buf, frames[i].len, addrs) {
            if start < i {
                nat(&mut frames[start..i]);
            }
            answer(table, &mut frames[i], counters);
            start = i + 1;
        }
    }
    if start < frames.len() {
        nat(&mut frames[start..]);
    }
}

/// Answers the query in `f` (one [`is_query`] accepted) and sets its
/// verdict (and length, for a response).
pub fn answer(table: &DnsTable, f: &mut Frame<'_>, counters: &mut DnsCounters) {
    let Some(dns_len) = check(f.buf, f.len) else {
        counters.bad_frame += 1;
        f.verdict = Verdict::Drop(DropReason::DnsQuery);
        return;
    };
    // `check` saw the UDP header inside the frame: DNS_AT <= f.len <= buf.len().
    let max_out = MAX_PAYLOAD.min(f.buf.len() - DNS_AT);
    f.verdict = match respond_in_place(table, &mut f.buf[DNS_AT..], dns_len, max_out) {
        Outcome::Answered { len } => {
            counters.answered += 1;
            let len = write_reply(f.buf, len);
            f.len = usize::from(len);
            Verdict::Reply { len }
        }
        Outcome::Slow(r) => {
            counters.slow[r as usize] += 1;
            Verdict::Pass(PassReason::DnsSlow)
        }
        Outcome::Drop(r) => {
            counters.dropped[r as usize] += 1;
            Verdict::Drop(DropReason::DnsQuery)
        }
    };
}

/// The DNS message length of a query frame whose headers are consistent
/// and whose checksums verify.
fn check(buf: &[u8], len: usize) -> Option<usize> {
    let frame = buf.get(..len)?;
    let ip = Ipv4Packet::new_checked(frame.get(L3..)?).ok()?;
    if ip.header_len() != 20 || !ip.verify_checksum() {
        return None;
    }
    let end = L3 + usize::from(ip.total_len());
    let udp = UdpPacket::new_checked(frame.get(L4..end)?).ok()?;
    if !udp.verify_checksum(ip.src_addr(), ip.dst_addr()) {
        return None;
    }
    Some(usize::from(udp.len()) - 8)
}

/// Turns the checked query frame in `buf` into the response whose DNS
/// message (`dns_len` bytes) is already at [`DNS_AT`]; returns the frame
/// length.
fn write_reply(buf: &mut [u8], dns_len: usize) -> u16 {
    // dns_len <= MAX_PAYLOAD: the lengths fit in u16.
    let udp_len = (8 + dns_len) as u16;
    let frame_len = DNS_AT + dns_len;
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..L3]);
    let (src_mac, dst_mac) = (eth.src_addr(), eth.dst_addr());
    eth.set_dst_addr(src_mac);
    eth.set_src_addr(dst_mac);

    let mut ip = Ipv4Packet::new_unchecked(&mut buf[L3..L4]);
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_total_len(20 + udp_len);
    ip.set_ident(0);
    ip.set_flags_frag(true, false, 0);
    ip.set_ttl(64);
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.fill_checksum();

    let mut udp = UdpPacket::new_unchecked(&mut buf[L4..frame_len]);
    let (sport, dport) = (udp.src_port(), udp.dst_port());
    udp.set_ports(dport, sport);
    udp.set_len(udp_len);
    udp.fill_checksum(dst, src);
    frame_len as u16
}

#[cfg(test)]
mod tests;
