//! Address families: one generic design for IPv4 and IPv6.
//!
//! The desired state ([`crate::model`]) holds addresses as [`IpAddr`], as
//! the Kubernetes API does (`clusterIPs`, `podIPs`, EndpointSlices of either
//! `addressType`). Everything built from it for the packet path is split by
//! family and typed by its address: a table half, a frontend key or a
//! backend is `T<Ipv4Addr>` or `T<Ipv6Addr>`, never an `IpAddr` that would
//! be matched on per packet. Code that works for both families is written
//! once, generic over [`Addr`]; the address type picks its half of anything
//! that holds one value per family ([`PerFamily`]).
//!
//! A Service's families are served each in its own: an IPv4 frontend leads
//! to the IPv4 endpoints only, an IPv6 frontend to the IPv6 ones (no NAT46).

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An IP family, named as in a Service's `spec.ipFamilies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// `IPv4`.
    V4,
    /// `IPv6`.
    V6,
}

impl IpFamily {
    /// Both families, IPv4 first.
    pub const ALL: [Self; 2] = [Self::V4, Self::V6];

    /// The name the Kubernetes API uses (`IPv4`, `IPv6`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }

    /// The family named `s` (`IPv4`, `IPv6`), as the API spells it.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(Self::V4),
            "IPv6" => Some(Self::V6),
            _ => None,
        }
    }

    /// The family of `ip`.
    pub const fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that holds one value per family, of a type that may depend on
/// the family (a `FamilyTable<Ipv4Addr>` beside a `FamilyTable<Ipv6Addr>`).
/// [`Addr::side`] picks the half of the address type at hand, so generic
/// code never matches on the family.
pub trait PerFamily {
    /// The type of the half for addresses of type `A`.
    type Of<A: Addr>;
    /// The IPv4 half.
    fn v4(&self) -> &Self::Of<Ipv4Addr>;
    /// The IPv6 half.
    fn v6(&self) -> &Self::Of<Ipv6Addr>;
    /// The IPv4 half, to change.
    fn v4_mut(&mut self) -> &mut Self::Of<Ipv4Addr>;
    /// The IPv6 half, to change.
    fn v6_mut(&mut self) -> &mut Self::Of<Ipv6Addr>;
}

/// An address type, standing for its family: [`Ipv4Addr`] or [`Ipv6Addr`].
pub trait Addr: Copy + Eq + Ord + Hash + fmt::Debug + fmt::Display + Send + Sync + Into<IpAddr> + 'static {
    /// The family's prefix type (for `loadBalancerSourceRanges`).
    type Net: Copy + Eq + Ord + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static;
    /// The family.
    const FAMILY: IpFamily;
    /// The unspecified address (`0.0.0.0`, `::`).
    const UNSPECIFIED: Self;

    /// `ip` when it is of this family.
    fn from_ip(ip: IpAddr) -> Option<Self>;
    /// `net` when it is of this family.
    fn from_net(net: IpNet) -> Option<Self::Net>;
    /// True when `net` holds `addr`.
    fn net_contains(net: &Self::Net, addr: Self) -> bool;
    /// The address as a big-endian integer, widened to 128 bits.
    fn to_bits128(self) -> u128;
    /// This family's half of `p`.
    fn side<P: PerFamily + ?Sized>(p: &P) -> &P::Of<Self>;
    /// This family's half of `p`, to change.
    fn side_mut<P: PerFamily + ?Sized>(p: &mut P) -> &mut P::Of<Self>;
}

impl Addr for Ipv4Addr {
    type Net = Ipv4Net;
    const FAMILY: IpFamily = IpFamily::V4;
    const UNSPECIFIED: Self = Ipv4Addr::UNSPECIFIED;

    #[inline]
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }

    #[inline]
    fn from_net(net: IpNet) -> Option<Ipv4Net> {
        match net {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        }
    }

    #[inline]
    fn net_contains(net: &Ipv4Net, addr: Self) -> bool {
        net.contains(&addr)
    }

    #[inline(always)]
    fn to_bits128(self) -> u128 {
        u128::from(u32::from(self))
    }

    #[inline(always)]
    fn side<P: PerFamily + ?Sized>(p: &P) -> &P::Of<Self> {
        p.v4()
    }

    #[inline(always)]
    fn side_mut<P: PerFamily + ?Sized>(p: &mut P) -> &mut P::Of<Self> {
        p.v4_mut()
    }
}

impl Addr for Ipv6Addr {
    type Net = Ipv6Net;
    const FAMILY: IpFamily = IpFamily::V6;
    const UNSPECIFIED: Self = Ipv6Addr::UNSPECIFIED;

    #[inline]
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }

    #[inline]
    fn from_net(net: IpNet) -> Option<Ipv6Net> {
        match net {
            IpNet::V6(n) => Some(n),
            IpNet::V4(_) => None,
        }
    }

    #[inline]
    fn net_contains(net: &Ipv6Net, addr: Self) -> bool {
        net.contains(&addr)
    }

    #[inline(always)]
    fn to_bits128(self) -> u128 {
        u128::from(self)
    }

    #[inline(always)]
    fn side<P: PerFamily + ?Sized>(p: &P) -> &P::Of<Self> {
        p.v6()
    }

    #[inline(always)]
    fn side_mut<P: PerFamily + ?Sized>(p: &mut P) -> &mut P::Of<Self> {
        p.v6_mut()
    }
}

/// The addresses of `list` that are of family `A`, in order.
pub fn of_family<A: Addr>(list: &[IpAddr]) -> impl Iterator<Item = A> + '_ {
    list.iter().filter_map(|&ip| A::from_ip(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        a: Vec<Ipv4Addr>,
        b: Vec<Ipv6Addr>,
    }

    impl PerFamily for Pair {
        type Of<A: Addr> = Vec<A>;
        fn v4(&self) -> &Vec<Ipv4Addr> {
            &self.a
        }
        fn v6(&self) -> &Vec<Ipv6Addr> {
            &self.b
        }
        fn v4_mut(&mut self) -> &mut Vec<Ipv4Addr> {
            &mut self.a
        }
        fn v6_mut(&mut self) -> &mut Vec<Ipv6Addr> {
            &mut self.b
        }
    }

    /// Generic code finds its family's half without matching on it.
    fn push_from<A: Addr>(p: &mut Pair, list: &[IpAddr]) -> usize {
        A::side_mut(p).extend(of_family::<A>(list));
        A::side(p).len()
    }

    #[test]
    fn each_family_gets_its_own_addresses() {
        let list: Vec<IpAddr> =
            ["198.18.0.1", "2001:2::1", "198.18.0.2", "2001:2::a"].iter().map(|s| s.parse().unwrap()).collect();
        let mut p = Pair { a: vec![], b: vec![] };
        assert_eq!(push_from::<Ipv4Addr>(&mut p, &list), 2);
        assert_eq!(push_from::<Ipv6Addr>(&mut p, &list), 2);
        assert_eq!(p.a, vec![Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)]);
        assert_eq!(p.b[1], "2001:2::a".parse::<Ipv6Addr>().unwrap());
        assert_eq!(IpFamily::of(&list[1]), IpFamily::V6);
        assert_eq!(IpFamily::parse("IPv6"), Some(IpFamily::V6));
        assert_eq!(IpFamily::parse("ipv6"), None);
        assert_eq!(IpFamily::V4.to_string(), "IPv4");
    }

    #[test]
    fn nets_and_bits() {
        let n4 = Ipv4Addr::from_net("198.18.0.0/15".parse().unwrap()).unwrap();
        assert!(Ipv4Addr::net_contains(&n4, Ipv4Addr::new(198, 19, 1, 1)));
        assert!(Ipv6Addr::from_net("198.18.0.0/15".parse().unwrap()).is_none());
        let n6 = Ipv6Addr::from_net("2001:2::/48".parse().unwrap()).unwrap();
        assert!(Ipv6Addr::net_contains(&n6, "2001:2::5".parse().unwrap()));
        assert!(!Ipv6Addr::net_contains(&n6, "2001:3::5".parse().unwrap()));
        assert_eq!(Ipv4Addr::new(198, 18, 0, 1).to_bits128(), 0xc612_0001);
        assert_eq!("2001:2::1".parse::<Ipv6Addr>().unwrap().to_bits128() >> 96, 0x2001_0002);
    }
}
