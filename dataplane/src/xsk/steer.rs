//! The XDP steering program (dataplane/bpf/steer.bpf.c): load, attach, and
//! its maps.
//!
//! The program is compiled by build.rs with clang and embedded; aya loads the
//! ELF (BTF-defined maps) and attaches it through a BPF link, so the kernel
//! detaches it by itself when the owning process dies (also on SIGKILL). A
//! program attached the old way (netlink, e.g. by `ip link set dev X xdp
//! obj ...` or an old svcgate) is replaced at attach time.
//!
//! Each family has its own maps (`frontends`/`sources`/`snat_addrs` and
//! `frontends6`/`sources6`/`snat_addrs6`, keys of 8 and 20 bytes); the SNAT
//! port range is shared. The IPv4 setters are unchanged; the IPv6 ones are
//! their `...6` twins, both written through one generic key replacement.

use std::collections::HashSet;
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;

use super::netlink;
use super::XskError;

/// The compiled steering program (empty when built without clang).
#[cfg(not(svcgate_no_bpf))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));
#[cfg(svcgate_no_bpf)]
static OBJECT: &[u8] = &[];

/// The ELF object of the steering program, for tools and tests (empty when
/// the crate was built without clang).
pub fn steer_object() -> &'static [u8] {
    OBJECT
}

/// Number of queues the XSKMAP holds (`MAX_QUEUES` in the C program).
pub const MAX_QUEUES: u32 = 64;
/// Number of SNAT addresses the program holds.
pub const MAX_SNAT_ADDRS: usize = 64;
/// Number of frontends the program holds.
pub const MAX_FRONTENDS: usize = 65536;
/// Capacity of the program's map of dnat-mode backends (`MAX_SOURCES`).
pub const MAX_SOURCES: usize = 262_144;

/// IP protocol numbers for [`Steering::set_frontends`].
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic (skb) mode.
    Auto,
    /// Native only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// Counters of the steering program, summed over CPUs. The first three
/// count frames of both families; the `v6_` ones break the IPv6 frames down
/// again (each IPv6 frame is in one of them and in one of the first three).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerStats {
    /// Frames passed to the kernel as not service traffic.
    pub not_steered: u64,
    /// Frames redirected to an AF_XDP socket.
    pub redirected: u64,
    /// Service frames passed because no socket is bound on their queue.
    pub no_socket: u64,
    /// IPv6 frames redirected to an AF_XDP socket.
    pub v6_redirected: u64,
    /// IPv6 TCP/UDP frames that are not service traffic, and IPv6 frames of
    /// other transport protocols: passed.
    pub v6_not_steered: u64,
    /// ICMPv6 frames (Neighbor Discovery, router discovery, MLD, errors,
    /// echo): always passed, the kernel answers them.
    pub v6_icmp: u64,
    /// IPv6 fragments, frames on a source route, behind ESP/AH or more than
    /// four extension headers, or truncated: passed.
    pub v6_ext: u64,
}

/// Number of counters in the program's `stats` map (`STAT_MAX`).
const STATS: u32 = 7;

/// A frontend key as the C `struct frontend_key`: daddr (network order),
/// dport (network order), proto, pad.
fn frontend_key(ip: Ipv4Addr, proto: u8, port: u16) -> [u8; 8] {
    let a = ip.octets();
    let p = port.to_be_bytes();
    [a[0], a[1], a[2], a[3], p[0], p[1], proto, 0]
}

/// An IPv6 frontend key as the C `struct frontend6_key`: address (network
/// order), port (network order), proto, pad.
fn frontend6_key(ip: Ipv6Addr, proto: u8, port: u16) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&ip.octets());
    k[16..18].copy_from_slice(&port.to_be_bytes());
    k[18] = proto;
    k
}

/// Replaces the keys of `map` (mirrored in `current`) with `new`:
/// inserts the new ones first, then deletes those that are gone, so that an
/// entry present before and after is never missing in between.
fn replace_keys<K: aya::Pod + Eq + Hash>(
    map: &mut HashMap<MapData, K, u8>,
    current: &mut HashSet<K>,
    new: HashSet<K>,
    name: &'static str,
    max: usize,
) -> Result<(), XskError> {
    if new.len() > max {
        return Err(XskError::TooMany { what: name, got: new.len(), max });
    }
    for k in new.difference(current) {
        map.insert(k, 1, 0).map_err(|source| XskError::Map { map: name, source })?;
    }
    for k in current.difference(&new) {
        match map.remove(k) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(source) => return Err(XskError::Map { map: name, source }),
        }
    }
    *current = new;
    Ok(())
}

/// The steering program attached to one interface. Detached on drop.
pub struct Steering {
    ifname: String,
    ifindex: u32,
    mode: &'static str,
    xsks: XskMap<MapData>,
    frontends: HashMap<MapData, [u8; 8], u8>,
    sources: HashMap<MapData, [u8; 8], u8>,
    snat_addrs: HashMap<MapData, [u8; 4], u8>,
    snat_ports: Array<MapData, [u16; 2]>,
    stats: PerCpuArray<MapData, u64>,
    current: HashSet<[u8; 8]>,
    current_sources: HashSet<[u8; 8]>,
    current_snat: HashSet<[u8; 4]>,
    frontends6: HashMap<MapData, [u8; 20], u8>,
    sources6: HashMap<MapData, [u8; 20], u8>,
    snat_addrs6: HashMap<MapData, [u8; 16], u8>,
    current6: HashSet<[u8; 20]>,
    current_sources6: HashSet<[u8; 20]>,
    current_snat6: HashSet<[u8; 16]>,
    // Last: dropping it detaches the program (closes the link) after the
    // maps above are released.
    _bpf: Ebpf,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .field("frontends", &self.current.len())
            .field("frontends6", &self.current6.len())
            .finish_non_exhaustive()
    }
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    bpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, XskError> {
    let m = bpf.take_map(name).ok_or(XskError::Missing { what: "map", name })?;
    T::try_from(m).map_err(|source| XskError::Map { map: name, source })
}

impl Steering {
    /// Loads the program and attaches it to `ifname` (in the calling thread's
    /// network namespace). A stale netlink-attached program (from a killed
    /// older instance or a tool) is detached first when it blocks the attach.
    pub fn attach(ifname: &str, mode: XdpMode) -> Result<Steering, XskError> {
        if OBJECT.is_empty() {
            return Err(XskError::NoProgram);
        }
        let ifindex = netlink::ifindex(ifname)?;
        let mut bpf = Ebpf::load(OBJECT).map_err(XskError::Load)?;
        let prog: &mut Xdp = bpf
            .program_mut("svcgate_steer")
            .ok_or(XskError::Missing { what: "program", name: "svcgate_steer" })?
            .try_into()
            .map_err(|source| XskError::Attach { ifname: ifname.into(), mode: "load", source })?;
        prog.load().map_err(|source| XskError::Attach { ifname: ifname.into(), mode: "load", source })?;

        let tries: &[(XdpFlags, &'static str)] = match mode {
            XdpMode::Auto => &[(XdpFlags::DRV_MODE, "native"), (XdpFlags::SKB_MODE, "generic")],
            XdpMode::Native => &[(XdpFlags::DRV_MODE, "native")],
            XdpMode::Generic => &[(XdpFlags::SKB_MODE, "generic")],
        };
        let mut attached = None;
        let mut last_err = None;
        for &(flags, name) in tries {
            match prog.attach_to_if_index(ifindex, flags) {
                Ok(_) => {
                    attached = Some(name);
                    break;
                }
                Err(e) => {
                    // EBUSY: a netlink-attached program holds this mode;
                    // EEXIST: one holds the other mode. Both are what a killed
                    // pre-link instance or a tool leaves: remove and retry.
                    if netlink::xdp_attachment(ifindex)?.is_some() {
                        let _ = netlink::xdp_detach_legacy(ifindex, 2);
                        let _ = netlink::xdp_detach_legacy(ifindex, 4);
                        if prog.attach_to_if_index(ifindex, flags).is_ok() {
                            attached = Some(name);
                            break;
                        }
                    }
                    last_err = Some((name, e));
                }
            }
        }
        let mode = match (attached, last_err) {
            (Some(m), _) => m,
            (None, Some((mode, source))) => return Err(XskError::Attach { ifname: ifname.into(), mode, source }),
            (None, None) => unreachable!("at least one mode is tried"),
        };

        let xsks = take(&mut bpf, "xsks")?;
        let frontends = take(&mut bpf, "frontends")?;
        let sources = take(&mut bpf, "sources")?;
        let snat_addrs = take(&mut bpf, "snat_addrs")?;
        let snat_ports = take(&mut bpf, "snat_ports")?;
        let stats = take(&mut bpf, "stats")?;
        let frontends6 = take(&mut bpf, "frontends6")?;
        let sources6 = take(&mut bpf, "sources6")?;
        let snat_addrs6 = take(&mut bpf, "snat_addrs6")?;
        let mut me = Steering {
            ifname: ifname.into(),
            ifindex,
            mode,
            xsks,
            frontends,
            sources,
            snat_addrs,
            snat_ports,
            stats,
            current: HashSet::new(),
            current_sources: HashSet::new(),
            current_snat: HashSet::new(),
            frontends6,
            sources6,
            snat_addrs6,
            current6: HashSet::new(),
            current_sources6: HashSet::new(),
            current_snat6: HashSet::new(),
            _bpf: bpf,
        };
        // Port range disabled until set_snat.
        me.snat_ports.set(0, [1u16, 0u16], 0).map_err(|source| XskError::Map { map: "snat_ports", source })?;
        Ok(me)
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// "native" or "generic".
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// Replaces the frontend set: inserts the new entries, then deletes the
    /// ones that are gone (so a frontend present before and after is never
    /// missing in between). Call on every table swap.
    pub fn set_frontends(&mut self, frontends: &[(Ipv4Addr, u8, u16)]) -> Result<(), XskError> {
        let new = frontends.iter().map(|&(ip, proto, port)| frontend_key(ip, proto, port)).collect();
        replace_keys(&mut self.frontends, &mut self.current, new, "frontends", MAX_FRONTENDS)
    }

    /// [`Self::set_frontends`] for the IPv6 frontends (map `frontends6`,
    /// its own capacity of [`MAX_FRONTENDS`]).
    pub fn set_frontends6(&mut self, frontends: &[(Ipv6Addr, u8, u16)]) -> Result<(), XskError> {
        let new = frontends.iter().map(|&(ip, proto, port)| frontend6_key(ip, proto, port)).collect();
        replace_keys(&mut self.frontends6, &mut self.current6, new, "frontends6", MAX_FRONTENDS)
    }

    /// Replaces the set of dnat-mode backends (address, protocol, port)
    /// whose traffic is steered by its *source*: the replies of flows that
    /// kept the client's address. Same order of updates as
    /// [`Self::set_frontends`].
    pub fn set_sources(&mut self, sources: &[(Ipv4Addr, u8, u16)]) -> Result<(), XskError> {
        let new = sources.iter().map(|&(ip, proto, port)| frontend_key(ip, proto, port)).collect();
        replace_keys(&mut self.sources, &mut self.current_sources, new, "sources", MAX_SOURCES)
    }

    /// [`Self::set_sources`] for the IPv6 backends of dnat-mode Services
    /// (map `sources6`).
    pub fn set_sources6(&mut self, sources: &[(Ipv6Addr, u8, u16)]) -> Result<(), XskError> {
        let new = sources.iter().map(|&(ip, proto, port)| frontend6_key(ip, proto, port)).collect();
        replace_keys(&mut self.sources6, &mut self.current_sources6, new, "sources6", MAX_SOURCES)
    }

    /// Sets the SNAT addresses and the inclusive port range whose traffic
    /// (replies of SNAT'ed flows) is steered. `lo > hi` disables the range.
    pub fn set_snat(&mut self, addrs: &[Ipv4Addr], lo: u16, hi: u16) -> Result<(), XskError> {
        if addrs.len() > MAX_SNAT_ADDRS {
            return Err(XskError::TooMany { what: "SNAT addresses", got: addrs.len(), max: MAX_SNAT_ADDRS });
        }
        self.snat_ports.set(0, [lo, hi], 0).map_err(|source| XskError::Map { map: "snat", source })?;
        let new = addrs.iter().map(|a| a.octets()).collect();
        replace_keys(&mut self.snat_addrs, &mut self.current_snat, new, "snat", MAX_SNAT_ADDRS)
    }

    /// Sets the IPv6 SNAT addresses (map `snat_addrs6`): their traffic
    /// within the port range of [`Self::set_snat`] (shared by both
    /// families, as the pipeline's port allocator is) is steered.
    pub fn set_snat6(&mut self, addrs: &[Ipv6Addr]) -> Result<(), XskError> {
        if addrs.len() > MAX_SNAT_ADDRS {
            return Err(XskError::TooMany { what: "IPv6 SNAT addresses", got: addrs.len(), max: MAX_SNAT_ADDRS });
        }
        let new = addrs.iter().map(|a| a.octets()).collect();
        replace_keys(&mut self.snat_addrs6, &mut self.current_snat6, new, "snat6", MAX_SNAT_ADDRS)
    }

    /// Puts the AF_XDP socket `fd` into the XSKMAP slot of `queue`; frames
    /// steered on that queue go to it from now on. The kernel removes the
    /// entry by itself when the socket is closed.
    pub fn register_socket(&mut self, queue: u32, fd: BorrowedFd<'_>) -> Result<(), XskError> {
        if queue >= MAX_QUEUES {
            return Err(XskError::TooMany { what: "queue id", got: queue as usize, max: MAX_QUEUES as usize - 1 });
        }
        self.xsks.set(queue, fd.as_raw_fd(), 0).map_err(|source| XskError::Map { map: "xsks", source })
    }

    /// The program's counters, summed over CPUs.
    pub fn stats(&self) -> Result<SteerStats, XskError> {
        let get = |i: u32| -> Result<u64, XskError> {
            let v = self.stats.get(&i, 0).map_err(|source| XskError::Map { map: "stats", source })?;
            Ok(v.iter().sum())
        };
        debug_assert_eq!(STATS, 7);
        Ok(SteerStats {
            not_steered: get(0)?,
            redirected: get(1)?,
            no_socket: get(2)?,
            v6_redirected: get(3)?,
            v6_not_steered: get(4)?,
            v6_icmp: get(5)?,
            v6_ext: get(6)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_c_layouts() {
        // struct frontend_key { __be32 daddr; __be16 dport; __u8 proto; __u8 pad; }
        assert_eq!(frontend_key(Ipv4Addr::new(198, 18, 0, 10), PROTO_TCP, 80), [198, 18, 0, 10, 0, 80, 6, 0]);
        // struct frontend6_key { __u8 addr[16]; __be16 port; __u8 proto; __u8 pad; }
        let k = frontend6_key("2001:2::a".parse().unwrap(), PROTO_UDP, 0x1234);
        assert_eq!(&k[..4], &[0x20, 0x01, 0, 2]);
        assert_eq!(k[15], 0x0a);
        assert_eq!(&k[16..], &[0x12, 0x34, 17, 0]);
    }
}
