//! Frame templates, the payload stamp, and frame sizes (fixed or IMIX).
//!
//! Sizes: `--size` counts the Ethernet frame on the wire **including the
//! 4-byte FCS** (64 is the minimum frame), so the bytes written to the ring are
//! `size - 4` (the NIC, or nothing on veth, adds the FCS). The kernel's pktgen
//! `pkt_size` counts without FCS (its samples' 60 = our 64).
//!
//! Frame: Ethernet II, IPv4 (20 bytes, TTL 64, DF clear, ID 0) or IPv6 (40
//! bytes, hop limit 64, no extension header), then
//! - UDP: valid checksum (computed per frame: the stamp changes);
//! - TCP SYN: 20-byte header (no options), window 64240, valid checksum.
//!
//! IPv6's 40-byte header leaves no room for UDP and the stamp in a 64-byte
//! frame: its smallest stamped UDP frame is 84 bytes ([`FrameBuilder::min_size`]).
//!
//! Payload: the 18-byte [`Stamp`] then zeros. At 64 bytes a UDP frame's
//! payload is exactly the stamp (60 - 14 - 20 - 8 = 18). A TCP SYN needs a
//! frame of at least 76 bytes to carry it; smaller SYNs are plain 60-byte SYNs
//! (IP length 40, Ethernet padding) without a stamp, which `rx` cannot count;
//! sequence numbers count stamped frames only, so `rx`'s loss accounting
//! holds for the stamped ones (e.g. the 594- and 1518-byte SYNs of an IMIX).
//!
//! Per frame: copy the header template (42 or 54 bytes), write the flow's
//! addresses and ports, the lengths and the stamp, and finish both checksums
//! from precomputed one's-complement partial sums (template words + flow
//! words) plus the few words that change.

/// Magic at the start of the payload ("SGPG").
pub const MAGIC: u32 = 0x5347_5047;
/// Bytes of the stamp: magic (4), generator id (1), thread (1), sequence (4,
/// wraps), TX timestamp (8, CLOCK_REALTIME ns), all big-endian.
pub const STAMP_LEN: usize = 18;
/// Smallest frame (with FCS).
pub const MIN_FRAME: usize = 64;
/// Largest frame (with FCS) for a 1500-byte MTU.
pub const MAX_FRAME: usize = 1518;
/// FCS bytes, counted in sizes but never written.
pub const FCS: usize = 4;

const ETH: usize = 14;
const IP: usize = 20;
const IP6: usize = 40;
const UDP: usize = 8;
const TCP: usize = 20;

/// The simple IMIX used by `--imix`: frame sizes with FCS 64, 594, 1518
/// (IP packets of 46, 576 and 1500 bytes) in the proportion 7:4:1, sent in
/// this fixed interleaved order of 12.
pub const IMIX: [usize; 12] = [64, 594, 64, 64, 594, 64, 1518, 64, 594, 64, 64, 594];

use super::flows::Flow;

/// Transport of the generated frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP datagrams.
    Udp,
    /// TCP segments with only SYN set.
    TcpSyn,
}

/// What the payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Generator id (`--id`).
    pub generator: u8,
    /// Sending thread.
    pub thread: u8,
    /// Per-(generator, thread) sequence number, from 0.
    pub seq: u32,
    /// TX time, CLOCK_REALTIME ns.
    pub ts_ns: u64,
}

impl Stamp {
    fn bytes(&self) -> [u8; STAMP_LEN] {
        let mut b = [0u8; STAMP_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4] = self.generator;
        b[5] = self.thread;
        b[6..10].copy_from_slice(&self.seq.to_be_bytes());
        b[10..18].copy_from_slice(&self.ts_ns.to_be_bytes());
        b
    }

    /// The stamp of a frame built here (Ethernet, IPv4 without options or
    /// IPv6 without extension headers, UDP or TCP), or `None` for any other
    /// frame.
    pub fn parse(frame: &[u8]) -> Option<Stamp> {
        let (l4, proto) = match (frame.get(12..14)?, frame.get(ETH)?) {
            ([0x08, 0x00], 0x45) => (ETH + IP, *frame.get(ETH + 9)?),
            ([0x86, 0xdd], v) if v >> 4 == 6 => (ETH + IP6, *frame.get(ETH + 6)?),
            _ => return None,
        };
        let off = match proto {
            17 => l4 + UDP,
            6 => l4 + usize::from(frame.get(l4 + 12)? >> 4) * 4,
            _ => return None,
        };
        let p = frame.get(off..off + STAMP_LEN)?;
        if p[0..4] != MAGIC.to_be_bytes() {
            return None;
        }
        Some(Stamp {
            generator: p[4],
            thread: p[5],
            seq: u32::from_be_bytes(p[6..10].try_into().ok()?),
            ts_ns: u64::from_be_bytes(p[10..18].try_into().ok()?),
        })
    }
}

/// Sum of big-endian 16-bit words (odd tail padded with zero), unfolded.
fn sum_words(b: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut it = b.chunks_exact(2);
    for w in &mut it {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [x] = it.remainder() {
        s += u32::from(*x) << 8;
    }
    s
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[derive(Debug, Clone, Copy)]
struct FlowEntry {
    /// Source address, network order (IPv4: the first 4 bytes).
    src: [u8; 16],
    /// Destination address, network order (IPv4: the first 4 bytes).
    dst: [u8; 16],
    sport: [u8; 2],
    dport: [u8; 2],
    /// Sum of the address words (IP header and L4 pseudo-header alike).
    addr_sum: u32,
    /// Sum of the port words.
    port_sum: u32,
}

/// The frames of one run: a header template and its flows.
#[derive(Debug, Clone)]
pub struct FrameBuilder {
    proto: Proto,
    /// IPv6 frames.
    v6: bool,
    hdr: [u8; ETH + IP6 + TCP],
    hdr_len: usize,
    /// IP header words without lengths, addresses and checksum (IPv4).
    ip_base: u32,
    /// L4 words without ports, lengths, checksum and payload, plus the
    /// pseudo-header's protocol word.
    l4_base: u32,
    flows: Vec<FlowEntry>,
}

impl FrameBuilder {
    /// IPv4 templates for `flows` from `src_mac` to `dst_mac`.
    pub fn new(proto: Proto, dst_mac: [u8; 6], src_mac: [u8; 6], flows: &[Flow]) -> Self {
        Self::build(proto, dst_mac, src_mac, flows, false)
    }

    /// IPv6 templates for `flows` (addresses as `u128`).
    pub fn new_v6(proto: Proto, dst_mac: [u8; 6], src_mac: [u8; 6], flows: &[Flow]) -> Self {
        Self::build(proto, dst_mac, src_mac, flows, true)
    }

    fn build(proto: Proto, dst_mac: [u8; 6], src_mac: [u8; 6], flows: &[Flow], v6: bool) -> Self {
        let mut hdr = [0u8; ETH + IP6 + TCP];
        hdr[0..6].copy_from_slice(&dst_mac);
        hdr[6..12].copy_from_slice(&src_mac);
        let proto_num = match proto {
            Proto::Udp => 17,
            Proto::TcpSyn => 6,
        };
        let ip_len = if v6 { IP6 } else { IP };
        let ip = &mut hdr[ETH..ETH + ip_len];
        if v6 {
            ip[0] = 0x60;
            ip[6] = proto_num;
            ip[7] = 64;
        } else {
            ip[0] = 0x45;
            ip[8] = 64;
            ip[9] = proto_num;
        }
        hdr[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        let ip_base = if v6 { 0 } else { sum_words(&hdr[ETH..ETH + IP]) };
        let l4 = ETH + ip_len;
        let (hdr_len, l4_base) = match proto {
            Proto::Udp => (l4 + UDP, 17),
            Proto::TcpSyn => {
                let t = &mut hdr[l4..];
                t[4..8].copy_from_slice(&1u32.to_be_bytes()); // sequence number
                t[12] = 5 << 4; // data offset
                t[13] = 0x02; // SYN
                t[14..16].copy_from_slice(&64240u16.to_be_bytes());
                (l4 + TCP, 6 + sum_words(&t[..TCP]))
            }
        };
        let n = if v6 { 16 } else { 4 };
        let bytes = |a: u128| {
            let mut b = [0u8; 16];
            if v6 {
                b = a.to_be_bytes();
            } else {
                b[..4].copy_from_slice(&(a as u32).to_be_bytes());
            }
            b
        };
        let flows = flows
            .iter()
            .map(|f| {
                let (src, dst) = (bytes(f.src), bytes(f.dst));
                let (sport, dport) = (f.sport.to_be_bytes(), f.dport.to_be_bytes());
                FlowEntry {
                    src,
                    dst,
                    sport,
                    dport,
                    addr_sum: sum_words(&src[..n]) + sum_words(&dst[..n]),
                    port_sum: u32::from(f.sport) + u32::from(f.dport),
                }
            })
            .collect();
        FrameBuilder { proto, v6, hdr, hdr_len, ip_base, l4_base, flows }
    }

    /// The smallest wire size (with FCS) whose frames carry the stamp for
    /// UDP, or hold the whole TCP header (IPv4: [`MIN_FRAME`]; IPv6 UDP: 84).
    pub fn min_size(&self) -> usize {
        let need = match self.proto {
            Proto::Udp => self.hdr_len + STAMP_LEN,
            Proto::TcpSyn => self.hdr_len,
        };
        (need + FCS).max(MIN_FRAME)
    }

    /// Whether a frame of wire size `size` carries the stamp (UDP: always;
    /// TCP SYN: from 76 bytes).
    pub fn stamps(&self, size: usize) -> bool {
        size - FCS - self.hdr_len >= STAMP_LEN
    }

    /// Number of flows.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Writes the frame of flow `flow` with wire size `size` (with FCS,
    /// `MIN_FRAME..=MAX_FRAME`) and `stamp` into `buf`; returns the number of
    /// bytes written (`size - FCS`).
    #[inline]
    pub fn write(&self, buf: &mut [u8], flow: usize, size: usize, stamp: &Stamp) -> usize {
        let len = size - FCS;
        let buf = &mut buf[..len];
        let f = &self.flows[flow];
        let h = self.hdr_len;
        buf[..h].copy_from_slice(&self.hdr[..h]);
        let room = len - h;
        let payload = if room >= STAMP_LEN || self.proto == Proto::Udp { room } else { 0 };
        let l4 = if self.v6 { ETH + IP6 } else { ETH + IP };
        // The L4 segment's length: the pseudo-header's, UDP's own, and
        // IPv6's payload length.
        let l4_len = (h - l4 + payload) as u16;
        if self.v6 {
            buf[ETH + 4..ETH + 6].copy_from_slice(&l4_len.to_be_bytes());
            buf[ETH + 8..ETH + 24].copy_from_slice(&f.src);
            buf[ETH + 24..ETH + 40].copy_from_slice(&f.dst);
        } else {
            let ip_len = IP as u16 + l4_len;
            buf[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
            buf[ETH + 12..ETH + 16].copy_from_slice(&f.src[..4]);
            buf[ETH + 16..ETH + 20].copy_from_slice(&f.dst[..4]);
            let ip_sum = !fold(u64::from(self.ip_base) + u64::from(f.addr_sum) + u64::from(ip_len));
            buf[ETH + 10..ETH + 12].copy_from_slice(&ip_sum.to_be_bytes());
        }
        buf[l4..l4 + 2].copy_from_slice(&f.sport);
        buf[l4 + 2..l4 + 4].copy_from_slice(&f.dport);
        let mut stamp_sum = 0;
        if room >= STAMP_LEN {
            let s = stamp.bytes();
            buf[h..h + STAMP_LEN].copy_from_slice(&s);
            stamp_sum = sum_words(&s);
            buf[h + STAMP_LEN..].fill(0);
        } else {
            buf[h..].fill(0);
        }
        // Pseudo-header length and, for UDP, the header's own length field:
        // the same value, counted twice.
        let lens = match self.proto {
            Proto::Udp => {
                buf[l4 + 4..l4 + 6].copy_from_slice(&l4_len.to_be_bytes());
                2 * u64::from(l4_len)
            }
            Proto::TcpSyn => u64::from(l4_len),
        };
        let sum = u64::from(self.l4_base) + u64::from(f.addr_sum) + u64::from(f.port_sum) + lens + u64::from(stamp_sum);
        let mut c = !fold(sum);
        let at = match self.proto {
            Proto::Udp => {
                // RFC 768 (and RFC 8200 for IPv6, where 0 is not allowed): a
                // computed 0 goes on the wire as 0xffff.
                if c == 0 {
                    c = 0xffff;
                }
                l4 + 6
            }
            Proto::TcpSyn => l4 + 16,
        };
        buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
        len
    }
}

/// The frame sizes of a run: one size, or the [`IMIX`] cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    /// Every frame this size (with FCS).
    Fixed(usize),
    /// The IMIX cycle.
    Imix,
}

impl Sizes {
    /// Size of the `i`-th frame of a thread.
    #[inline]
    pub fn nth(&self, i: u64) -> usize {
        match *self {
            Sizes::Fixed(s) => s,
            Sizes::Imix => IMIX[(i % IMIX.len() as u64) as usize],
        }
    }

    /// Largest size used.
    pub fn max(&self) -> usize {
        match *self {
            Sizes::Fixed(s) => s,
            Sizes::Imix => MAX_FRAME,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn flows() -> Vec<Flow> {
        vec![
            Flow { src: 0xC612_0001, dst: 0xC613_0A0A, sport: 1234, dport: 9 },
            Flow { src: 0xC612_FFFE, dst: 0xC613_0001, sport: 65535, dport: 65535 },
            Flow { src: 0, dst: 0xFFFF_FFFF, sport: 0, dport: 0 },
        ]
    }

    fn flows6() -> Vec<Flow> {
        let a = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        vec![
            Flow { src: a("2001:2:0:40::1"), dst: a("2001:2:0:8000::a"), sport: 1234, dport: 9 },
            Flow { src: a("2001:2:ffff:ffff:ffff:ffff:ffff:fffe"), dst: a("2001:2::1"), sport: 65535, dport: 65535 },
            Flow { src: 0, dst: u128::MAX, sport: 0, dport: 0 },
        ]
    }

    fn check(proto: Proto, size: usize, v6: bool) {
        let fl = if v6 { flows6() } else { flows() };
        let b = if v6 {
            FrameBuilder::new_v6(proto, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], &fl)
        } else {
            FrameBuilder::new(proto, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], &fl)
        };
        if size < b.min_size() {
            return;
        }
        let mut buf = vec![0xAAu8; 2048];
        for (i, f) in fl.iter().enumerate() {
            for seq in [0u32, 1, 0xFFFF_FFFF, 0x1234_5678] {
                let st = Stamp { generator: 7, thread: 3, seq, ts_ns: 0x1789_ABCD_EF01_2345 ^ u64::from(seq) };
                let n = b.write(&mut buf, i, size, &st);
                assert_eq!(n, size - 4);
                let frame = &buf[..n];
                let p = SlicedPacket::from_ethernet(frame).expect("parses");
                // The IP header, for etherparse's checksums of the transport.
                let ip_hdr = match p.net {
                    Some(NetSlice::Ipv4(ref ip)) => {
                        assert!(!v6);
                        let h = ip.header();
                        assert_eq!(h.source(), (f.src as u32).to_be_bytes());
                        assert_eq!(h.destination(), (f.dst as u32).to_be_bytes());
                        let hdr = h.to_header();
                        assert_eq!(hdr.header_checksum, hdr.calc_header_checksum(), "ip checksum");
                        etherparse::IpHeaders::Ipv4(hdr, Default::default())
                    }
                    Some(NetSlice::Ipv6(ref ip)) => {
                        assert!(v6);
                        let h = ip.header();
                        assert_eq!(h.source(), f.src.to_be_bytes());
                        assert_eq!(h.destination(), f.dst.to_be_bytes());
                        // A SYN too short for the stamp is padded, as in IPv4.
                        let padded = proto == Proto::TcpSyn && n - 74 < STAMP_LEN;
                        assert_eq!(
                            (h.hop_limit(), h.payload_length() as usize),
                            (64, if padded { 20 } else { n - 54 })
                        );
                        etherparse::IpHeaders::Ipv6(h.to_header(), Default::default())
                    }
                    _ => panic!("not IP"),
                };
                let udp_want = |u: &etherparse::UdpSlice| match &ip_hdr {
                    etherparse::IpHeaders::Ipv4(h, _) => u.to_header().calc_checksum_ipv4(h, u.payload()).unwrap(),
                    etherparse::IpHeaders::Ipv6(h, _) => u.to_header().calc_checksum_ipv6(h, u.payload()).unwrap(),
                };
                let tcp_want = |t: &etherparse::TcpSlice| match &ip_hdr {
                    etherparse::IpHeaders::Ipv4(h, _) => t.to_header().calc_checksum_ipv4(h, t.payload()).unwrap(),
                    etherparse::IpHeaders::Ipv6(h, _) => t.to_header().calc_checksum_ipv6(h, t.payload()).unwrap(),
                };
                let payload: &[u8] = match p.transport {
                    Some(TransportSlice::Udp(u)) => {
                        assert_eq!(proto, Proto::Udp);
                        assert_eq!((u.source_port(), u.destination_port()), (f.sport, f.dport));
                        assert_eq!(u.checksum(), udp_want(&u), "udp checksum");
                        assert_ne!(u.checksum(), 0);
                        u.payload()
                    }
                    Some(TransportSlice::Tcp(t)) => {
                        assert_eq!(proto, Proto::TcpSyn);
                        assert!(t.syn() && !t.ack() && !t.rst() && !t.fin());
                        assert_eq!((t.source_port(), t.destination_port()), (f.sport, f.dport));
                        assert_eq!(t.checksum(), tcp_want(&t), "tcp checksum");
                        t.payload()
                    }
                    _ => panic!("no transport"),
                };
                if payload.len() >= STAMP_LEN {
                    assert_eq!(Stamp::parse(frame), Some(st));
                    assert!(payload[STAMP_LEN..].iter().all(|&x| x == 0));
                } else {
                    assert_eq!(proto, Proto::TcpSyn);
                    assert!(payload.is_empty());
                    assert_eq!(Stamp::parse(frame), None);
                }
            }
        }
    }

    #[test]
    fn templates_parse_with_valid_checksums() {
        for size in [64, 65, 75, 76, 77, 128, 594, 1518] {
            check(Proto::Udp, size, false);
            check(Proto::TcpSyn, size, false);
        }
        for size in [78, 83, 84, 85, 95, 96, 97, 128, 1518] {
            check(Proto::Udp, size, true);
            check(Proto::TcpSyn, size, true);
        }
        let f = flows6();
        assert_eq!(FrameBuilder::new_v6(Proto::Udp, [0; 6], [0; 6], &f).min_size(), 84);
        assert_eq!(FrameBuilder::new_v6(Proto::TcpSyn, [0; 6], [0; 6], &f).min_size(), 78);
        assert_eq!(FrameBuilder::new(Proto::Udp, [0; 6], [0; 6], &flows()).min_size(), 64);
    }

    #[test]
    fn imix_proportions() {
        let mut c = std::collections::HashMap::new();
        for i in 0..1200 {
            *c.entry(Sizes::Imix.nth(i)).or_insert(0) += 1;
        }
        assert_eq!((c[&64], c[&594], c[&1518]), (700, 400, 100));
        assert_eq!(Sizes::Imix.max(), 1518);
        assert_eq!(Sizes::Fixed(64).nth(5), 64);
        let f = flows();
        let udp = FrameBuilder::new(Proto::Udp, [0; 6], [0; 6], &f);
        let syn = FrameBuilder::new(Proto::TcpSyn, [0; 6], [0; 6], &f);
        assert!(udp.stamps(64) && !syn.stamps(75) && syn.stamps(76));
    }

    #[test]
    fn stamp_rejects_other_frames() {
        assert_eq!(Stamp::parse(&[0u8; 60]), None);
        let b = FrameBuilder::new(Proto::Udp, [0; 6], [0; 6], &flows());
        let mut buf = [0u8; 64];
        let n = b.write(&mut buf, 0, 64, &Stamp { generator: 1, thread: 2, seq: 3, ts_ns: 4 });
        buf[ETH + IP + UDP] ^= 1;
        assert_eq!(Stamp::parse(&buf[..n]), None);
    }
}
