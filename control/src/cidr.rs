//! svcgate's service CIDRs: where cluster IPs are allocated from, one range
//! per IP family.
//!
//! Like kube-apiserver's `--service-cluster-ip-range=v4,v6`: one CIDR makes
//! a single-stack gateway, two (of different families) a dual-stack one. The
//! first is the primary range: its family is the default family of a
//! Service that names none (`spec.ipFamilies` empty), the one a
//! `SingleStack` Service gets. A family without a range can still be served
//! for Services whose `clusterIPs` give its address (objects exported from a
//! cluster), but svcgate cannot allocate one of it.
//!
//! Allocation itself is generic over the family: addresses are handled as
//! 128-bit integers inside the range ([`allocatable`], [`nth`]), so IPv4 and
//! IPv6 share one deterministic allocator (`crate::resolve`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use svcgate_common::family::IpFamily;
use svcgate_common::model::{IpNet, Ipv4Net, Ipv6Net};

/// The service CIDRs: a primary range, and optionally one of the other
/// family. Prefixes are truncated to their network (`198.18.128.5/20` is
/// `198.18.128.0/20`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceCidrs {
    primary: IpNet,
    secondary: Option<IpNet>,
}

/// A `service_cidr` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceCidrError {
    /// An entry is not a CIDR.
    #[error("{0:?} is not a CIDR like 198.18.128.0/20 or 2001:2:0:8000::/112")]
    NotCidr(String),
    /// No entry at all.
    #[error("no CIDR given: give one, or two of different families (an IPv4 and an IPv6 one)")]
    Empty,
    /// More than two entries.
    #[error(
        "{0} CIDRs given: at most two, one per family (like kube-apiserver's \
         --service-cluster-ip-range=<IPv4 CIDR>,<IPv6 CIDR>)"
    )]
    TooMany(usize),
    /// Two entries of one family.
    #[error("{first} and {second} are both {family}: a dual-stack service_cidr has one IPv4 and one IPv6 CIDR")]
    SameFamily {
        /// The first CIDR.
        first: IpNet,
        /// The second one.
        second: IpNet,
        /// Their family.
        family: IpFamily,
    },
}

/// The family of a prefix.
pub fn family_of_net(net: &IpNet) -> IpFamily {
    match net {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
}

/// The other family (the one a dual-stack Service adds to its first).
pub fn other_family(f: IpFamily) -> IpFamily {
    match f {
        IpFamily::V4 => IpFamily::V6,
        IpFamily::V6 => IpFamily::V4,
    }
}

impl ServiceCidrs {
    /// A single-stack gateway with this range.
    pub fn single(net: IpNet) -> Self {
        Self { primary: net.trunc(), secondary: None }
    }

    /// A dual-stack gateway: `primary` first; the two must be of different
    /// families.
    pub fn dual(primary: IpNet, secondary: IpNet) -> Result<Self, ServiceCidrError> {
        let family = family_of_net(&primary);
        if family == family_of_net(&secondary) {
            return Err(ServiceCidrError::SameFamily { first: primary, second: secondary, family });
        }
        Ok(Self { primary: primary.trunc(), secondary: Some(secondary.trunc()) })
    }

    /// From one or two CIDRs as text, the primary first.
    pub fn from_list<S: AsRef<str>>(list: &[S]) -> Result<Self, ServiceCidrError> {
        let parse = |s: &S| {
            let s = s.as_ref().trim();
            s.parse::<IpNet>().map_err(|_| ServiceCidrError::NotCidr(s.to_string()))
        };
        match list {
            [] => Err(ServiceCidrError::Empty),
            [one] => Ok(Self::single(parse(one)?)),
            [a, b] => Self::dual(parse(a)?, parse(b)?),
            more => Err(ServiceCidrError::TooMany(more.len())),
        }
    }

    /// The primary range (the first given).
    pub fn primary(&self) -> IpNet {
        self.primary
    }

    /// The primary range's family: the default family of Services.
    pub fn primary_family(&self) -> IpFamily {
        family_of_net(&self.primary)
    }

    /// True with a range of each family.
    pub fn is_dual_stack(&self) -> bool {
        self.secondary.is_some()
    }

    /// The range of `family`, if there is one.
    pub fn get(&self, family: IpFamily) -> Option<IpNet> {
        self.iter().find(|n| family_of_net(n) == family)
    }

    /// The ranges, the primary first.
    pub fn iter(&self) -> impl Iterator<Item = IpNet> {
        std::iter::once(self.primary).chain(self.secondary)
    }

    /// True when the range of `ip`'s family holds it.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.get(IpFamily::of(ip)).is_some_and(|n| n.contains(ip))
    }
}

impl From<IpNet> for ServiceCidrs {
    fn from(net: IpNet) -> Self {
        Self::single(net)
    }
}

impl From<Ipv4Net> for ServiceCidrs {
    fn from(net: Ipv4Net) -> Self {
        Self::single(net.into())
    }
}

impl From<Ipv6Net> for ServiceCidrs {
    fn from(net: Ipv6Net) -> Self {
        Self::single(net.into())
    }
}

/// `198.18.128.0/20` or `198.18.128.0/20,2001:2:0:8000::/112`, as
/// kube-apiserver's `--service-cluster-ip-range` takes it.
impl FromStr for ServiceCidrs {
    type Err = ServiceCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').collect();
        Self::from_list(&parts)
    }
}

impl fmt::Display for ServiceCidrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.primary)?;
        if let Some(s) = self.secondary {
            write!(f, ",{s}")?;
        }
        Ok(())
    }
}

/// The allocatable addresses of `cidr` as `(first, count)`, the addresses as
/// 128-bit integers: without the network address and the first host (which
/// the API server gives to the `kubernetes` Service), and for IPv4 without
/// the broadcast address (IPv6 has none; kube-apiserver allocates the last
/// address of an IPv6 range). Ranges of fewer than 8 addresses have none.
pub fn allocatable(cidr: IpNet) -> (u128, u128) {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    let net = match cidr.network() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    if host_bits < 3 {
        return (net, 0);
    }
    let reserved = match cidr {
        IpNet::V4(_) => 3, // network, .1, broadcast
        IpNet::V6(_) => 2, // network (the subnet-router anycast), ::1
    };
    // At most 2^64 addresses are used of a larger IPv6 range (a /64 is the
    // largest service range kube-apiserver takes): the probe arithmetic
    // then never overflows.
    let size = 1u128 << host_bits.min(64);
    (net + 2, size - reserved)
}

/// The address of `cidr`'s family with these bits (the low 32 for IPv4).
pub fn nth(cidr: IpNet, bits: u128) -> IpAddr {
    match cidr {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_two_of_different_families() {
        let one: ServiceCidrs = "198.18.128.7/20".parse().unwrap();
        assert_eq!(one.to_string(), "198.18.128.0/20");
        assert_eq!(one.primary_family(), IpFamily::V4);
        assert!(!one.is_dual_stack());
        assert_eq!(one.get(IpFamily::V6), None);

        let dual: ServiceCidrs = "2001:2:0:8000::/112, 198.18.128.0/20".parse().unwrap();
        assert_eq!(dual.primary_family(), IpFamily::V6);
        assert!(dual.is_dual_stack());
        assert_eq!(dual.get(IpFamily::V4), Some("198.18.128.0/20".parse().unwrap()));
        assert_eq!(dual.to_string(), "2001:2:0:8000::/112,198.18.128.0/20");
        assert!(dual.contains(&"2001:2:0:8000::5".parse().unwrap()));
        assert!(!dual.contains(&"2001:2::5".parse().unwrap()));
        assert!(dual.contains(&"198.18.130.1".parse().unwrap()));

        assert_eq!("".parse::<ServiceCidrs>(), Err(ServiceCidrError::NotCidr(String::new())));
        assert_eq!(ServiceCidrs::from_list::<&str>(&[]), Err(ServiceCidrError::Empty));
        assert!(matches!(
            "198.18.0.0/16,198.19.0.0/16".parse::<ServiceCidrs>(),
            Err(ServiceCidrError::SameFamily { family: IpFamily::V4, .. })
        ));
        assert_eq!(
            "198.18.0.0/16,2001:2::/112,2001:2:1::/112".parse::<ServiceCidrs>(),
            Err(ServiceCidrError::TooMany(3))
        );
    }

    #[test]
    fn allocatable_ranges() {
        // IPv4: network, .1 and broadcast are left out.
        let (first, count) = allocatable("198.18.128.0/29".parse().unwrap());
        assert_eq!(nth("198.18.128.0/29".parse().unwrap(), first), "198.18.128.2".parse::<IpAddr>().unwrap());
        assert_eq!(count, 5);
        // IPv6: network and ::1; the last address is allocatable.
        let v6: IpNet = "2001:2:0:8000::/125".parse().unwrap();
        let (first, count) = allocatable(v6);
        assert_eq!(nth(v6, first), "2001:2:0:8000::2".parse::<IpAddr>().unwrap());
        assert_eq!(count, 6);
        assert_eq!(allocatable("198.18.0.0/30".parse().unwrap()).1, 0);
        assert_eq!(allocatable("2001:2::/126".parse().unwrap()).1, 0);
        assert_eq!(allocatable("2001:2::/48".parse().unwrap()).1, (1u128 << 64) - 2);
    }
}
