//! A packet generator and receiver for benchmarking svcgate (and its peers),
//! behind the `svcgate-pktgen` binary.
//!
//! - [`tx`]: frames for a fixed set of RFC 4814-style flows ([`flows`]) from
//!   precomputed templates ([`frame`]), UDP or TCP SYN, fixed size or IMIX,
//!   rate-limited or as fast as possible, one AF_PACKET TX ring per thread.
//! - [`rx`]: counts the frames carrying the payload [`frame::Stamp`] per
//!   (generator, thread) stream: loss, reordering, duplicates, and latency
//!   from the stamp's TX time to the kernel's receive timestamp ([`stats`]).
//! - [`ring`]: the AF_PACKET sockets and their mmap'd rings, the only
//!   `unsafe` here.
//!
//! # Transport
//!
//! TX: AF_PACKET with a `TPACKET_V2` TX ring and `PACKET_QDISC_BYPASS`, as
//! trafgen does, plus `SO_SNDBUFFORCE` so the socket buffer never limits the
//! frames in flight below the ring (with threaded NAPI on the receiving veth
//! a default-sized buffer fills and the ring stalls; `net.core.wmem_max` is
//! read-only inside a namespace, `SO_SNDBUFFORCE` as root is not bound by it).
//! AF_XDP TX was not measured against it (on veth it is the generic XDP
//! path, which also builds one skb per frame); see docs/PKTGEN.md.
//!
//! RX: AF_PACKET with a `TPACKET_V3` (block-based) RX ring, optionally in a
//! `PACKET_FANOUT` group, not AF_XDP: it needs no XDP program on the
//! interface (so it can sit beside a dataplane's own XDP program or the
//! kernel stack, and in any namespace), the kernel timestamps every frame
//! (CLOCK_REALTIME, the clock of the TX stamp) and hands over whole blocks per
//! wake-up, which keeps up with a single-threaded veth sender.

pub mod flows;
pub mod frame;
pub mod ring;
pub mod rx;
pub mod stats;
pub mod tx;

/// Parses a MAC address `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(format!("bad MAC address {s:?}"));
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC address {s:?}"))?;
    }
    Ok(m)
}

/// The MAC address of interface `dev` (from sysfs).
pub fn dev_mac(dev: &str) -> Result<[u8; 6], String> {
    let p = format!("/sys/class/net/{dev}/address");
    let s = std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"))?;
    parse_mac(&s)
}

#[cfg(test)]
mod tests {
    use super::parse_mac;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:0a:0B:ff:01").unwrap(), [2, 0, 10, 11, 255, 1]);
        assert_eq!(parse_mac("02-00-00-00-00-01\n").unwrap(), [2, 0, 0, 0, 0, 1]);
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:zz").is_err());
    }
}
