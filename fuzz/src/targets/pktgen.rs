//! The pktgen receiver: any bytes as one received frame through
//! `Stamp::parse` and the receiver's accounting (`RxCounter`).
//!
//! Invariants: nothing panics; a stamp is found exactly where a frame built
//! by the generator carries it (Ethernet, IPv4 without options, after the
//! UDP header or the TCP header of its data offset) with the magic, and its
//! fields are the bytes there; the receiver counts the frame twice (as a
//! stamped frame of one stream, or as another frame); a
//! stamp written by the generator's `FrameBuilder` parses back to itself.

use svcgate_dataplane::pktgen::flows::Flow;
use svcgate_dataplane::pktgen::frame::{FrameBuilder, Proto, Stamp, MAGIC, STAMP_LEN};
use svcgate_dataplane::pktgen::rx::RxCounter;

/// A receive time for the accounting (2023-11-14, CLOCK_REALTIME ns).
const RX_NS: u64 = 1_700_000_000_000_000_000;

fn expected(frame: &[u8]) -> Option<Stamp> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] != 0x45 {
        return None;
    }
    let off = match frame[23] {
        17 => 42,
        6 => 34 + usize::from(*frame.get(46)? >> 4) * 4,
        _ => return None,
    };
    let p = frame.get(off..off + STAMP_LEN)?;
    if u32::from_be_bytes([p[0], p[1], p[2], p[3]]) != MAGIC {
        return None;
    }
    let mut seq = [0u8; 4];
    seq.copy_from_slice(&p[6..10]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&p[10..18]);
    Some(Stamp { generator: p[4], thread: p[5], seq: u32::from_be_bytes(seq), ts_ns: u64::from_be_bytes(ts) })
}

/// See the module documentation.
pub fn pktgen_stamp(data: &[u8]) {
    let stamp = Stamp::parse(data);
    assert_eq!(stamp, expected(data), "stamp parsed from the wrong place");
    let mut rx = RxCounter::default();
    rx.frame(data, RX_NS);
    rx.frame(data, RX_NS + 1);
    let report = rx.report();
    let _ = report.to_string();
    if stamp.is_some() {
        assert_eq!((report.packets, report.other, report.streams), (2, 0, 1));
    } else {
        assert_eq!((report.packets, report.other), (0, 2));
    }
    if let Some(s) = stamp {
        let flow = Flow { src: 0xc612_010a, dst: 0xc612_800a, sport: 1024, dport: 9 };
        for (proto, size) in [(Proto::Udp, 64), (Proto::TcpSyn, 76), (Proto::Udp, 1518)] {
            let b = FrameBuilder::new(proto, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], &[flow]);
            let mut buf = [0u8; 1518];
            let n = b.write(&mut buf, 0, size, &s);
            assert_eq!(Stamp::parse(&buf[..n]), Some(s), "a written stamp does not parse back");
        }
    }
}
