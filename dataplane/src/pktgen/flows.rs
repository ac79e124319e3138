//! Ranges, the RFC 4814-style flow set, and the per-frame flow sequence.
//!
//! RFC 4814 (hash and stuffing, section 4) asks benchmarks to use
//! pseudo-random addresses and ports, not incrementing ones, so a device under
//! test that hashes flows meets a realistic spread. Here:
//!
//! - the flow set is `N` distinct 4-tuples drawn from the product of the
//!   source/destination address and port ranges by a pseudo-random
//!   permutation of that product's index space (so no two flows collide while
//!   `N` fits, and the tuples spread over the whole ranges);
//! - each frame picks its flow from a pseudo-random sequence over `0..N`
//!   with full period: every flow is used exactly once per `N` frames of a
//!   thread, in an order that looks random (not a counter).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An inclusive range of addresses of one family: `a.b.c.d`,
/// `a.b.c.d-e.f.g.h`, `a.b.c.d/len` (every address of the prefix), or the
/// same in IPv6 (`2001:2::1-2001:2::ff`, `2001:2:0:40::/112`). A range
/// spans at most 2^64 addresses (an IPv6 prefix shorter than /64 is cut to
/// its first 2^64 - 1), far more than any flow set needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    /// First address (host order; an IPv4 address in the low 32 bits).
    pub start: u128,
    /// Last address (host order), `>= start`.
    pub end: u128,
    /// IPv6 addresses.
    pub v6: bool,
}

impl IpRange {
    /// Number of addresses (at most `u64::MAX`).
    pub fn len(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(u64::MAX - 1) + 1
    }

    /// Never empty; for clippy.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn addr(&self, a: u128) -> IpAddr {
        if self.v6 {
            Ipv6Addr::from(a).into()
        } else {
            Ipv4Addr::from(a as u32).into()
        }
    }
}

impl FromStr for IpRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ip = |t: &str| -> Result<(u128, bool), String> {
            Ok(match t.trim().parse::<IpAddr>().map_err(|e| format!("{t:?}: {e}"))? {
                IpAddr::V4(a) => (u128::from(u32::from(a)), false),
                IpAddr::V6(a) => (u128::from(a), true),
            })
        };
        if let Some((a, len)) = s.split_once('/') {
            let (a, v6) = ip(a)?;
            let bits = if v6 { 128 } else { 32 };
            let len: u32 = len.parse().map_err(|_| format!("bad prefix length in {s:?}"))?;
            if len > bits {
                return Err(format!("bad prefix length in {s:?}"));
            }
            let host = if len == bits { 0 } else { (u128::MAX >> (128 - bits)) >> len };
            let start = a & !host;
            // At most 2^64 addresses (see the type's doc).
            let end = start | host.min(u128::from(u64::MAX - 1));
            return Ok(IpRange { start, end, v6 });
        }
        let ((a, v6), (b, v6b)) = match s.split_once('-') {
            Some((a, b)) => (ip(a)?, ip(b)?),
            None => (ip(s)?, ip(s)?),
        };
        if v6 != v6b {
            return Err(format!("a range of one family: {s:?}"));
        }
        if b < a {
            return Err(format!("empty range {s:?}"));
        }
        if b - a >= u128::from(u64::MAX) {
            return Err(format!("range {s:?} spans more than 2^64 addresses"));
        }
        Ok(IpRange { start: a, end: b, v6 })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.addr(self.start), self.addr(self.end))
    }
}

/// An inclusive range of ports: `p` or `p-q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port, `>= start`.
    pub end: u16,
}

impl PortRange {
    /// Number of ports.
    pub fn len(&self) -> u64 {
        u64::from(self.end - self.start) + 1
    }

    /// Never empty; for clippy.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = |t: &str| t.trim().parse::<u16>().map_err(|e| format!("{t:?}: {e}"));
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (p(a)?, p(b)?),
            None => (p(s)?, p(s)?),
        };
        if b < a {
            return Err(format!("empty range {s:?}"));
        }
        Ok(PortRange { start: a, end: b })
    }
}

/// A CPU list as in `taskset -c`: `0,2-3`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n = |t: &str| t.trim().parse::<usize>().map_err(|e| format!("cpu {t:?}: {e}"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (n(a)?, n(b)?);
                if b < a {
                    return Err(format!("empty cpu range {part:?}"));
                }
                v.extend(a..=b);
            }
            None => v.push(n(part)?),
        }
    }
    if v.is_empty() {
        return Err(format!("empty cpu list {s:?}"));
    }
    Ok(v)
}

/// One flow: the 4-tuple of the frames that use it (host order; IPv4
/// addresses in the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Source address.
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// The ranges a flow set is drawn from.
#[derive(Debug, Clone, Copy)]
pub struct FlowSpace {
    /// Source addresses.
    pub src: IpRange,
    /// Destination addresses (the same family).
    pub dst: IpRange,
    /// Source ports.
    pub sport: PortRange,
    /// Destination ports.
    pub dport: PortRange,
}

/// A bijection on `0..2^bits` (multiply by an odd constant, xor-shift,
/// twice): pseudo-random, cheap, invertible.
fn mix(x: u128, bits: u32, seed: u128) -> u128 {
    let mask = if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 };
    let sh = (bits / 2).max(1);
    let mut x = (x ^ (seed & mask)) & mask;
    for k in [0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835u128, 0xD6E8_FEB8_6659_FD93_A5A3_5625_6DA1_1B3Bu128] {
        x = x.wrapping_mul(k | 1) & mask;
        if bits > 1 {
            x ^= x >> sh;
        }
    }
    x
}

fn bits_for(n: u128) -> u32 {
    // Smallest b with 2^b >= n (n >= 1).
    128 - (n - 1).leading_zeros()
}

impl FlowSpace {
    /// Number of distinct 4-tuples (`u128::MAX`: at least that many).
    pub fn size(&self) -> u128 {
        // Saturating: two IPv6 ranges of 2^64 addresses overflow u128.
        u128::from(self.src.len())
            .saturating_mul(u128::from(self.dst.len()))
            .saturating_mul(u128::from(self.sport.len()))
            .saturating_mul(u128::from(self.dport.len()))
    }

    /// The tuple with index `i < size()` (mixed radix: ports fastest).
    fn tuple(&self, mut i: u128) -> Flow {
        let mut take = |n: u64| {
            let r = (i % u128::from(n)) as u64;
            i /= u128::from(n);
            r
        };
        let sport = self.sport.start + take(self.sport.len()) as u16;
        let dport = self.dport.start + take(self.dport.len()) as u16;
        let src = self.src.start + u128::from(take(self.src.len()));
        let dst = self.dst.start + u128::from(take(self.dst.len()));
        Flow { src, dst, sport, dport }
    }

    /// `n` flows, pairwise distinct while `n <= size()` (beyond that the set
    /// repeats), from a pseudo-random permutation of the tuple index space
    /// keyed by `seed` (cycle walking over the next power of two).
    pub fn flows(&self, n: usize, seed: u64) -> Vec<Flow> {
        let size = self.size();
        let bits = bits_for(size);
        let seed = u128::from(seed) * 0x2545_F491_4F6C_DD1D;
        (0..n as u128)
            .map(|k| {
                let mut x = k % size;
                loop {
                    x = mix(x, bits, seed);
                    if x < size {
                        break;
                    }
                }
                self.tuple(x)
            })
            .collect()
    }
}

/// A pseudo-random sequence over `0..n` with period `n`: a full-period LCG
/// modulo the next power of two (Hull-Dobell: multiplier = 1 mod 4, odd
/// increment), each state passed through a bijection to hide the LCG's weak
/// low bits, values `>= n` skipped. Each value appears once per `n` calls.
#[derive(Debug, Clone)]
pub struct FlowPicker {
    n: u64,
    mask: u64,
    state: u64,
    inc: u64,
    bits: u32,
}

impl FlowPicker {
    /// A sequence over `0..n` (n >= 1); `stream` selects one of many
    /// different orders (e.g. the thread number).
    pub fn new(n: usize, stream: u64) -> Self {
        let n = n.max(1) as u64;
        let bits = bits_for(u128::from(n));
        let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        let inc = (stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) << 1) | 1;
        FlowPicker { n, mask, state: stream.wrapping_mul(0xD1B5_4A32_D192_ED03) & mask, inc, bits }
    }

    /// The next flow index.
    #[inline]
    pub fn next_index(&mut self) -> usize {
        if self.n == 1 {
            return 0;
        }
        loop {
            self.state = self.state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(self.inc) & self.mask;
            // A bijection on `bits` bits: xor-shift, odd multiply, xor-shift.
            let sh = (self.bits / 2).max(1);
            let mut x = self.state;
            x ^= x >> sh;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9) & self.mask;
            x ^= x >> sh;
            if x < self.n {
                return x as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ranges_parse() {
        let r: IpRange = "198.18.0.1-198.18.0.10".parse().unwrap();
        assert_eq!((r.len(), r.v6), (10, false));
        let r: IpRange = "198.18.0.7".parse().unwrap();
        assert_eq!((r.len(), Ipv4Addr::from(r.start as u32)), (1, Ipv4Addr::new(198, 18, 0, 7)));
        let r: IpRange = "198.18.1.9/24".parse().unwrap();
        assert_eq!((Ipv4Addr::from(r.start as u32), r.len()), (Ipv4Addr::new(198, 18, 1, 0), 256));
        assert_eq!(r.to_string(), "198.18.1.0-198.18.1.255");
        assert!("198.18.0.9-198.18.0.1".parse::<IpRange>().is_err());
        assert!("198.18.0.300".parse::<IpRange>().is_err());
        assert!("1.2.3.4/33".parse::<IpRange>().is_err());
        let r: IpRange = "2001:2:0:40::9/120".parse().unwrap();
        assert_eq!((r.v6, r.len(), r.to_string().as_str()), (true, 256, "2001:2:0:40::-2001:2:0:40::ff"));
        let r: IpRange = "2001:2::/48".parse().unwrap();
        assert_eq!(r.len(), u64::MAX, "cut to 2^64 - 1 addresses");
        assert!("2001:2::1-198.18.0.1".parse::<IpRange>().is_err(), "one family");
        assert!("2001:2::/129".parse::<IpRange>().is_err());
        let p: PortRange = "1024-65535".parse().unwrap();
        assert_eq!(p.len(), 64512);
        assert_eq!("9".parse::<PortRange>().unwrap(), PortRange { start: 9, end: 9 });
        assert!("10-9".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    fn space(src: &str, dst: &str, sp: &str, dp: &str) -> FlowSpace {
        FlowSpace {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: sp.parse().unwrap(),
            dport: dp.parse().unwrap(),
        }
    }

    #[test]
    fn flows_are_distinct_inside_the_ranges_and_spread() {
        let s = space("198.18.0.0/24", "198.19.0.1-198.19.0.4", "1024-65535", "9");
        let f = s.flows(10_000, 1);
        let set: HashSet<_> = f.iter().collect();
        assert_eq!(set.len(), 10_000, "distinct while n <= size");
        for x in &f {
            assert!((s.src.start..=s.src.end).contains(&x.src));
            assert!((s.dst.start..=s.dst.end).contains(&x.dst));
            assert!(x.sport >= 1024);
            assert_eq!(x.dport, 9);
        }
        // Not a counter: consecutive flows differ in more than the port, and
        // every source address and destination is used.
        let srcs: HashSet<_> = f.iter().map(|x| x.src).collect();
        let dsts: HashSet<_> = f.iter().map(|x| x.dst).collect();
        assert!(srcs.len() > 200, "sources spread: {}", srcs.len());
        assert_eq!(dsts.len(), 4);
        let increments = f.windows(2).filter(|w| w[1].sport == w[0].sport.wrapping_add(1)).count();
        assert!(increments < 100, "ports look sequential: {increments}");
        // Exhausting the space: all tuples, each once.
        let small = space("198.18.0.1-198.18.0.3", "198.19.0.1", "1-5", "7-8");
        let all: HashSet<_> = small.flows(30, 9).into_iter().collect();
        assert_eq!(all.len(), 30);
    }

    #[test]
    fn picker_covers_every_flow_once_per_period() {
        for n in [1usize, 2, 3, 100, 1000, 65_537] {
            let mut p = FlowPicker::new(n, 3);
            let mut seen = vec![0u32; n];
            for _ in 0..n {
                seen[p.next_index()] += 1;
            }
            assert!(seen.iter().all(|&c| c == 1), "n={n}: each flow once per period");
        }
        // Pseudo-random order, not a counter.
        let mut p = FlowPicker::new(1000, 0);
        let v: Vec<usize> = (0..1000).map(|_| p.next_index()).collect();
        let steps = v.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(steps < 20, "sequential steps: {steps}");
        // Different streams, different orders.
        let mut q = FlowPicker::new(1000, 1);
        let w: Vec<usize> = (0..1000).map(|_| q.next_index()).collect();
        assert_ne!(v, w);
    }
}
