//! Frame templates, the payload stamp, and frame sizes (fixed or IMIX).
//!
//! Sizes: `--size` counts the Ethernet frame on the wire **including the
//! 4-byte FCS** (64 is the minimum frame), so the bytes written to the ring are
//! `size - 4` (the NIC, or nothing on veth, adds the FCS). The kernel's pktgen
//! `pkt_size` counts without FCS (its samples' 60 = our 64).
//!
//! Frame: Ethernet II, IPv4 (20 bytes, TTL 64, DF clear, ID 0), then
//! - UDP: valid checksum (computed per frame: the stamp changes);
//! - TCP SYN: 20-byte header (no options), window 64240, valid checksum.
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

    /// The stamp of a frame built here (Ethernet, IPv4 without options, UDP
    /// or TCP), or `None` for any other frame.
    pub fn parse(frame: &[u8]) -> Option<Stamp> {
        if frame.len() < ETH + IP || frame[12..14] != [0x08, 0x00] || frame[ETH] != 0x45 {
            return None;
        }
        let off = match frame[ETH + 9] {
            17 => ETH + IP + UDP,
            6 => ETH + IP + usize::from(frame.get(ETH + IP + 12)? >> 4) * 4,
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
    src: [u8; 4],
    dst: [u8; 4],
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
    hdr: [u8; ETH + IP + TCP],
    hdr_len: usize,
    /// IP header words without lengths, addresses and checksum.
    ip_base: u32,
    /// L4 words without ports, lengths, checksum and payload, plus the
    /// pseudo-header's protocol word.
    l4_base: u32,
    flows: Vec<FlowEntry>,
}

impl FrameBuilder {
    /// Templates for `flows` from `src_mac` to `dst_mac`.
    pub fn new(proto: Proto, dst_mac: [u8; 6], src_mac: [u8; 6], flows: &[Flow]) -> Self {
        let mut hdr = [0u8; ETH + IP + TCP];
        hdr[0..6].copy_from_slice(&dst_mac);
        hdr[6..12].copy_from_slice(&src_mac);
        hdr[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut hdr[ETH..ETH + IP];
        ip[0] = 0x45;
        ip[8] = 64;
        ip[9] = match proto {
            Proto::Udp => 17,
            Proto::TcpSyn => 6,
        };
        let ip_base = sum_words(ip);
        let (hdr_len, l4_base) = match proto {
            Proto::Udp => (ETH + IP + UDP, 17),
            Proto::TcpSyn => {
                let t = &mut hdr[ETH + IP..];
                t[4..8].copy_from_slice(&1u32.to_be_bytes()); // sequence number
                t[12] = 5 << 4; // data offset
                t[13] = 0x02; // SYN
                t[14..16].copy_from_slice(&64240u16.to_be_bytes());
                (ETH + IP + TCP, 6 + sum_words(t))
            }
        };
        let flows = flows
            .iter()
            .map(|f| {
                let (src, dst) = (f.src.to_be_bytes(), f.dst.to_be_bytes());
                let (sport, dport) = (f.sport.to_be_bytes(), f.dport.to_be_bytes());
                FlowEntry {
                    src,
                    dst,
                    sport,
                    dport,
                    addr_sum: sum_words(&src) + sum_words(&dst),
                    port_sum: u32::from(f.sport) + u32::from(f.dport),
                }
            })
            .collect();
        FrameBuilder { proto, hdr, hdr_len, ip_base, l4_base, flows }
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
        let ip_len = (IP + (h - ETH - IP) + payload) as u16;
        buf[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
        buf[ETH + 12..ETH + 16].copy_from_slice(&f.src);
        buf[ETH + 16..ETH + 20].copy_from_slice(&f.dst);
        let ip_sum = !fold(u64::from(self.ip_base) + u64::from(f.addr_sum) + u64::from(ip_len));
        buf[ETH + 10..ETH + 12].copy_from_slice(&ip_sum.to_be_bytes());
        let l4 = ETH + IP;
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
        let l4_len = ip_len - IP as u16;
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
                // RFC 768: a computed 0 goes on the wire as 0xffff.
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

    fn check(proto: Proto, size: usize) {
        let fl = flows();
        let b = FrameBuilder::new(proto, [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], &fl);
        let mut buf = vec![0xAAu8; 2048];
        for (i, f) in fl.iter().enumerate() {
            for seq in [0u32, 1, 0xFFFF_FFFF, 0x1234_5678] {
                let st = Stamp { generator: 7, thread: 3, seq, ts_ns: 0x1789_ABCD_EF01_2345 ^ u64::from(seq) };
                let n = b.write(&mut buf, i, size, &st);
                assert_eq!(n, size - 4);
                let frame = &buf[..n];
                let p = SlicedPacket::from_ethernet(frame).expect("parses");
                let Some(NetSlice::Ipv4(ip)) = p.net else { panic!("not ipv4") };
                let h = ip.header();
                assert_eq!(h.source(), f.src.to_be_bytes());
                assert_eq!(h.destination(), f.dst.to_be_bytes());
                let hdr = h.to_header();
                assert_eq!(hdr.header_checksum, hdr.calc_header_checksum(), "ip checksum");
                let payload: &[u8] = match p.transport {
                    Some(TransportSlice::Udp(u)) => {
                        assert_eq!(proto, Proto::Udp);
                        assert_eq!((u.source_port(), u.destination_port()), (f.sport, f.dport));
                        let want = u.to_header().calc_checksum_ipv4(&hdr, u.payload()).unwrap();
                        assert_eq!(u.checksum(), want, "udp checksum");
                        u.payload()
                    }
                    Some(TransportSlice::Tcp(t)) => {
                        assert_eq!(proto, Proto::TcpSyn);
                        assert!(t.syn() && !t.ack() && !t.rst() && !t.fin());
                        assert_eq!((t.source_port(), t.destination_port()), (f.sport, f.dport));
                        let want = t.to_header().calc_checksum_ipv4(&hdr, t.payload()).unwrap();
                        assert_eq!(t.checksum(), want, "tcp checksum");
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
            check(Proto::Udp, size);
            check(Proto::TcpSyn, size);
        }
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
