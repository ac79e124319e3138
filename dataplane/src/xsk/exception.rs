//! The exception path: frames the pipeline passes to the kernel (Pass
//! verdicts) after the XDP program already redirected them to user space.
//!
//! AF_XDP cannot hand a redirected frame back to the kernel's receive path,
//! so svcgate does what DPDK applications do with their "exception path"
//! (KNI, later virtio-user / TAP): it writes the IP packet into a TUN device
//! (`svcgate0` by default). The kernel receives it there as if it had arrived
//! on that interface: local delivery, forwarding, and, for the
//! unknown-next-hop case, the ARP resolution of the next hop all happen as
//! usual. Only the Ethernet header (and one VLAN tag) is lost; the kernel
//! sees the packet's ingress interface as the TUN device, so reverse-path
//! filtering must be loose or off on it (set at creation) and firewall rules
//! matching on the original ingress interface do not apply.
//!
//! It is rare by design: the steering program already keeps non-service
//! traffic (ARP, ICMP, the node's own traffic) away from user space.

use std::sync::Arc;

use super::XskError;

/// A TUN device frames are injected into. Cheap to clone (shared fd; each
/// write is one syscall, one packet, safe from several threads).
#[derive(Clone)]
pub struct ExceptionPath {
    dev: Arc<tun::Device>,
    name: String,
}

impl std::fmt::Debug for ExceptionPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExceptionPath").field("name", &self.name).finish()
    }
}

/// Why a frame could not be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectError {
    /// Not Ethernet + IPv4/IPv6 (ARP never reaches here: XDP passes it).
    NotIp,
    /// The write failed (device down, queue full).
    Write,
}

impl ExceptionPath {
    /// Creates (or opens) TUN device `name`, brings it up and turns off
    /// reverse-path filtering on it, in the calling thread's network
    /// namespace.
    pub fn create(name: &str) -> Result<Self, XskError> {
        let mut cfg = tun::Configuration::default();
        cfg.tun_name(name).layer(tun::Layer::L3).up();
        let dev = tun::create(&cfg).map_err(|source| XskError::Tun { name: name.into(), source })?;
        // Best effort: the effective value is max(all, dev), see docs/AF_XDP.md.
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0");
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{name}/accept_local"), "1");
        Ok(Self { dev: Arc::new(dev), name: name.into() })
    }

    /// The TUN device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes the IP packet inside Ethernet frame `frame` to the kernel.
    pub fn inject(&self, frame: &[u8]) -> Result<(), InjectError> {
        let ip = l3_payload(frame).ok_or(InjectError::NotIp)?;
        match self.dev.send(ip) {
            Ok(_) => Ok(()),
            Err(_) => Err(InjectError::Write),
        }
    }
}

/// The IPv4/IPv6 packet after the Ethernet header and at most one VLAN tag.
fn l3_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut off = 12;
    let mut et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    off += 2;
    if et == 0x8100 || et == 0x88a8 {
        et = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
        off += 4;
    }
    match et {
        0x0800 | 0x86dd => frame.get(off..).filter(|p| !p.is_empty()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::l3_payload;

    #[test]
    fn strips_ethernet_and_vlan() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0x00]);
        assert_eq!(l3_payload(&f), Some(&[0x45, 0x00][..]));
        let mut v = vec![0u8; 12];
        v.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00, 0x45]);
        assert_eq!(l3_payload(&v), Some(&[0x45][..]));
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 1, 2]);
        assert_eq!(l3_payload(&arp), None);
        assert_eq!(l3_payload(&[0u8; 5]), None);
    }
}
