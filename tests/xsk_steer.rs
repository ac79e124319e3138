//! The XDP steering program on a veth in a network namespace: attach and
//! detach in native and generic mode, map updates, replacing a stale
//! program, netlink next hops, and IPv6 steering beside IPv4 (frontends
//! steered, NDP and everything else passed). Needs root (see
//! tests/netns/mod.rs).
//!
//! Addresses: 198.18.0.0/15 and 2001:2::/48 only, inside the test's own
//! namespaces.

mod netns;

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netns::{field, require_root, Lab};
use svcgate_dataplane::nat::{DropReason, Frame, Verdict};
use svcgate_dataplane::wire::ipv6;
use svcgate_dataplane::xsk::{
    self, BatchHandler, KernelNet, PortConfig, Steering, Worker, WorkerConfig, XdpMode, XskConfig, XskPorts, PROTO_UDP,
};

#[test]
#[ignore = "child process entry, run by the tests themselves"]
fn child_entry() {
    // This file's own roles first (tests/netns/roles.rs is shared).
    match std::env::var("SVCGATE_TEST_ROLE").as_deref() {
        Ok("steer6") => steer6_child(),
        Ok("send6") => send6_child(),
        Ok("inject6") => inject6_child(),
        _ => netns::child_main(),
    }
}

fn lab_with_veth(tag: &str) -> (Lab, String, String) {
    let mut lab = Lab::new(tag);
    let a = lab.netns("a");
    let b = lab.netns("b");
    lab.veth(&a, "x0", &b, "y0", 1);
    lab.ip(&a, "addr add 198.18.9.1/24 dev x0");
    lab.ip(&b, "addr add 198.18.9.2/24 dev y0");
    (lab, a, b)
}

#[test]
fn xsk_steer_attach_detach_and_maps() {
    if !require_root("xsk_steer_attach_detach_and_maps") {
        return;
    }
    let (mut lab, a, _b) = lab_with_veth("att");
    let mut c = lab.spawn(&a, "steer-check", &[("SG_IFACE", "x0")]);
    c.expect_line("OK");
    assert!(lab.wait(&mut c, Duration::from_secs(10)), "steer-check child failed");
    let link = lab.exec_ok(&a, &["ip", "link", "show", "dev", "x0"]);
    assert!(!link.contains("xdp"), "program left attached: {link}");
}

#[test]
fn xsk_transmit_rereads_a_stale_tx_ring() {
    if !require_root("xsk_transmit_rereads_a_stale_tx_ring") {
        return;
    }
    let (mut lab, a, _b) = lab_with_veth("txr");
    let mut c = lab.spawn(&a, "tx-refresh", &[("SG_IFACE", "x0")]);
    let ok = c.expect_line("OK");
    assert!(lab.wait(&mut c, Duration::from_secs(10)), "tx-refresh child failed: {ok}");
    assert_eq!((field(&ok, "first"), field(&ok, "second")), (40, 64), "{ok}");
}

#[test]
fn xsk_steer_replaces_stale_program() {
    if !require_root("xsk_steer_replaces_stale_program") {
        return;
    }
    let obj = svcgate_dataplane::xsk::steer_object();
    assert!(!obj.is_empty(), "built without the XDP program: run scripts/setup.sh");
    let (mut lab, a, _b) = lab_with_veth("stale");
    // A program attached the old way (netlink, no BPF link), as a killed
    // pre-link instance or a tool leaves it: it outlives its loader.
    let path = std::env::temp_dir().join(format!("svcgate-steer-{}.o", std::process::id()));
    std::fs::write(&path, obj).unwrap();
    let out =
        lab.exec(&a, &["ip", "link", "set", "dev", "x0", "xdpgeneric", "obj", path.to_str().unwrap(), "sec", "xdp"]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "ip link set xdp: {}", String::from_utf8_lossy(&out.stderr));
    let link = lab.exec_ok(&a, &["ip", "link", "show", "dev", "x0"]);
    assert!(link.contains("xdpgeneric"), "stale program not attached: {link}");

    // Forwarder start (Auto: native first) must replace it.
    let mut f = lab.spawn(&a, "forwarder", &[("SG_MODE", "mixed"), ("SG_IFACES", "x0")]);
    let ready = f.expect_line("READY");
    assert!(ready.contains("mode=native"), "{ready}");
    f.close_stdin();
    assert!(lab.wait(&mut f, Duration::from_secs(10)));
    let link = lab.exec_ok(&a, &["ip", "link", "show", "dev", "x0"]);
    assert!(!link.contains("xdp"), "program left attached: {link}");
}

#[test]
fn xsk_nexthops_from_netlink() {
    if !require_root("xsk_nexthops_from_netlink") {
        return;
    }
    let (mut lab, a, _b) = lab_with_veth("nh");
    let mut c = lab.spawn(&a, "nexthops", &[("SG_IFACE", "x0"), ("SG_PEER", "198.18.9.2")]);
    c.expect_line("OK");
    assert!(lab.wait(&mut c, Duration::from_secs(10)));
}

#[test]
fn xsk_setup_script_is_idempotent_noop_when_installed() {
    if !require_root("xsk_setup_script_is_idempotent_noop_when_installed") {
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup.sh");
    let out = Command::new("bash").arg(root).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

// ---------------------------------------------------------------------------
// IPv6 steering.

const A4: &str = "198.18.9.1";
const B4: &str = "198.18.9.2";
const A6: &str = "2001:2:0:9::1";
const B6: &str = "2001:2:0:9::2";
/// The frontend port (both families).
const PORT: u16 = 7000;
/// Not a frontend.
const OTHER: u16 = 7001;
/// `B6`'s UDP port 7100 is a dnat-mode backend (`sources6`).
const BACKEND_PORT: u16 = 7100;
/// The SNAT port range (shared by both families), and a port in it.
const SNAT_RANGE: (u16, u16) = (40000, 40010);
const SNAT_PORT: u16 = 40005;
/// Just past the range.
const PAST_SNAT: u16 = 40011;

/// What the kernel's sockets in the gateway namespace listen on: whatever
/// is not steered lands there.
const LISTEN: [(&str, u16); 7] =
    [(A4, PORT), (A4, OTHER), (A4, SNAT_PORT), (A6, PORT), (A6, OTHER), (A6, SNAT_PORT), (A6, PAST_SNAT)];

/// Two namespaces with IPv6 enabled and a dual-stack veth between them;
/// the IPv6 addresses skip duplicate address detection (`nodad`), which
/// would otherwise hold them unusable (tentative) for a second or more.
fn lab_dual_stack(tag: &str) -> (Lab, String, String) {
    let mut lab = Lab::new(tag);
    let a = lab.netns("a");
    let b = lab.netns("b");
    for ns in [&a, &b] {
        for k in ["all", "default"] {
            lab.exec_ok(ns, &["sysctl", "-qw", &format!("net.ipv6.conf.{k}.disable_ipv6=0")]);
        }
    }
    lab.veth(&a, "x0", &b, "y0", 1);
    lab.ip(&a, &format!("addr add {A4}/24 dev x0"));
    lab.ip(&b, &format!("addr add {B4}/24 dev y0"));
    lab.ip(&a, &format!("-6 addr add {A6}/64 dev x0 nodad"));
    lab.ip(&b, &format!("-6 addr add {B6}/64 dev y0 nodad"));
    (lab, a, b)
}

/// With the program on `x0` (IPv4 frontend `A4` UDP `PORT`; IPv6 frontend
/// `A6` UDP `PORT`, dnat-mode backend `B6` UDP `BACKEND_PORT`, SNAT address
/// `A6` with the shared range `SNAT_RANGE`; a socket on queue 0): NDP
/// resolves both ways and ping and ping6 are answered by the kernel; what
/// the IPv6 maps match reaches the socket and not the kernel (a frontend
/// datagram also behind a Destination Options header); non-matching
/// datagrams and IPv6 fragments reach the kernel and not the socket; IPv4
/// steering is unchanged.
#[test]
fn xsk_steer_ipv6_frontends_steered_ndp_passed() {
    if !require_root("xsk_steer_ipv6_frontends_steered_ndp_passed") {
        return;
    }
    steer6("native");
}

/// [`xsk_steer_ipv6_frontends_steered_ndp_passed`] in generic (skb) mode.
#[test]
fn xsk_steer_ipv6_generic_mode() {
    if !require_root("xsk_steer_ipv6_generic_mode") {
        return;
    }
    steer6("generic");
}

fn steer6(mode: &str) {
    let (mut lab, a, b) = lab_dual_stack(&format!("st6{}", &mode[..1]));
    let mut c = lab.spawn(&a, "steer6", &[("SG_IFACE", "x0"), ("SG_XDP_MODE", mode)]);
    let ready = c.expect_line("READY");
    assert_eq!(ready, format!("READY mode={mode}"));

    // NDP and ICMPv6 echo through the attached program (b resolves a: its
    // solicitation and a's advertisement both cross x0's XDP hook).
    let ping6 = lab.run_bounded(&b, &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", A6], Duration::from_secs(10));
    assert_eq!(ping6.status.map(|s| s.success()), Some(true), "ping6: {}{}", ping6.stdout, ping6.stderr);
    let ping4 = lab.run_bounded(&b, &["ping", "-c", "2", "-i", "0.2", "-W", "2", A4], Duration::from_secs(10));
    assert_eq!(ping4.status.map(|s| s.success()), Some(true), "ping: {}{}", ping4.stdout, ping4.stderr);
    let neigh = lab.exec_ok(&b, &["ip", "-6", "neigh", "show", A6, "dev", "y0"]);
    assert!(neigh.contains("lladdr"), "b did not learn a's MAC by NDP: {neigh:?}");

    let sends = [
        format!("{A4} {PORT} 10"),
        format!("{A4} {OTHER} 10"),
        format!("{A4} {SNAT_PORT} 10"),
        format!("{A6} {PORT} 10"),
        format!("{A6} {OTHER} 10"),
        format!("{A6} {PORT} 3000"),
        format!("{A6} {PORT} 10 dstopts"),
        format!("{A6} {OTHER} 10 sport={BACKEND_PORT}"),
        format!("{A6} {SNAT_PORT} 10"),
        format!("{A6} {PAST_SNAT} 10"),
    ];
    let mut s = lab.spawn(&b, "send6", &[("SG_SENDS", &sends.join(","))]);
    s.expect_line(&format!("SENT {}", sends.len()));
    assert!(lab.wait(&mut s, Duration::from_secs(10)), "send6 failed");

    c.send("report");
    let kernel = c.expect_line("KERNEL");
    let worker = c.expect_line("WORKER");
    let steer = c.expect_line("STEER");
    let nh = c.expect_line("NEXTHOP6");
    println!("{kernel}\n{worker}\n{steer}\n{nh}");
    assert!(lab.wait(&mut c, Duration::from_secs(10)), "steer6 child failed");

    // The kernel: what matches no map, and the fragmented datagram
    // (reassembled: fragments are never steered); the IPv4 SNAT map is
    // empty, so the shared range steers no IPv4 datagram.
    let k = |key: &str| field(&kernel, key);
    assert_eq!(k(&format!("v4_{PORT}")), 0, "{kernel}");
    assert_eq!(k(&format!("v4_{OTHER}")), 1, "{kernel}");
    assert_eq!(k(&format!("v4_{SNAT_PORT}")), 1, "{kernel}");
    assert_eq!(k(&format!("v6_{PORT}")), 1, "only the fragmented datagram: {kernel}");
    assert_eq!(k(&format!("v6_{OTHER}")), 1, "only the one not from the backend's port: {kernel}");
    assert_eq!(k(&format!("v6_{SNAT_PORT}")), 0, "{kernel}");
    assert_eq!(k(&format!("v6_{PAST_SNAT}")), 1, "{kernel}");
    // The socket: frontends (one IPv6 datagram behind a Destination Options
    // header), the dnat backend's reply by source, the SNAT reply; no NDP,
    // no echo, no fragment.
    let w = |key: &str| field(&worker, key);
    assert_eq!(w(&format!("v4_{PORT}")), 1, "{worker}");
    assert_eq!(w(&format!("v6_{PORT}")), 2, "{worker}");
    assert_eq!(w("v6_ext"), 1, "{worker}");
    assert_eq!(w(&format!("v6_{OTHER}")), 1, "{worker}");
    assert_eq!(w(&format!("v6_{SNAT_PORT}")), 1, "{worker}");
    assert_eq!(w("other"), 0, "{worker}");
    assert_eq!(field(&steer, "redirected"), 5, "{steer}");
    assert_eq!(field(&steer, "v6_redirected"), 4, "{steer}");
    assert!(field(&steer, "v6_icmp") >= 4, "NDP and echo requests counted as passed ICMPv6: {steer}");
    assert!(field(&steer, "v6_ext") >= 2, "the fragments: {steer}");
    assert!(field(&steer, "v6_not_steered") >= 2, "{steer}");
    assert_eq!(field(&nh, "resolved"), 1, "{nh}");
}

/// Crafted IPv6 frames (raw, from `b`'s `y0` to `x0`'s MAC), each a UDP
/// datagram to the frontend `A6`:`PORT` behind a different chain of
/// extension headers: what the program's bounded walk steers (up to four
/// Hop-by-Hop/Routing/Destination Options headers, a source route already
/// done) and what it passes (a fifth header, a misplaced Hop-by-Hop, a
/// source route still under way, a fragment, ESP, a truncated UDP header).
#[test]
fn xsk_steer_ipv6_extension_headers() {
    if !require_root("xsk_steer_ipv6_extension_headers") {
        return;
    }
    let (mut lab, a, b) = lab_dual_stack("st6x");
    let mut c = lab.spawn(&a, "steer6", &[("SG_IFACE", "x0"), ("SG_XDP_MODE", "native")]);
    c.expect_line("READY");
    let link = lab.exec_ok(&a, &["ip", "-o", "link", "show", "dev", "x0"]);
    let mac = link.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).expect("x0's MAC").to_string();
    let mut i = lab.spawn(&b, "inject6", &[("SG_IFACE", "y0"), ("SG_DST_MAC", &mac)]);
    let sent = i.expect_line("INJECTED");
    assert!(lab.wait(&mut i, Duration::from_secs(10)), "inject6 failed");
    c.send("report");
    let worker = c.expect_line("WORKER");
    let steer = c.expect_line("STEER");
    println!("{sent}\n{worker}\n{steer}");
    assert!(lab.wait(&mut c, Duration::from_secs(10)), "steer6 child failed");
    let (steered, passed) = (field(&sent, "steered"), field(&sent, "passed"));
    assert_eq!(field(&worker, &format!("v6_{PORT}")), steered, "{worker}");
    assert_eq!(field(&worker, "v6_ext"), steered, "every steered one had extension headers: {worker}");
    assert_eq!(field(&worker, "other"), 0, "{worker}");
    assert_eq!(field(&steer, "v6_redirected"), steered, "{steer}");
    assert_eq!(field(&steer, "v6_ext"), passed, "{steer}");
}

/// The Internet checksum of an IPv6 UDP datagram (RFC 8200 8.1 pseudo-header).
fn udp6_checksum(src: Ipv6Addr, dst: Ipv6Addr, udp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(udp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 17]);
    add(udp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
    }
}

/// An Ethernet frame `src` -> `dst` holding IPv6 `B6` -> `A6` whose header
/// chain is `chain` (each `(next-header value of this header, its bytes)`,
/// the first byte of each filled in), ending in a UDP datagram to `PORT`.
fn crafted6(dst: [u8; 6], src: [u8; 6], chain: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let (s6, d6): (Ipv6Addr, Ipv6Addr) = (B6.parse().unwrap(), A6.parse().unwrap());
    let mut udp = vec![0x15, 0xb3]; // source port 5555
    udp.extend(PORT.to_be_bytes());
    udp.extend(16u16.to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(*b"svcgate6");
    let ck = udp6_checksum(s6, d6, &udp);
    udp[6..8].copy_from_slice(&ck.to_be_bytes());
    let mut payload = Vec::new();
    for (i, (_, bytes)) in chain.iter().enumerate() {
        let mut h = bytes.clone();
        h[0] = chain.get(i + 1).map_or(17, |(nh, _)| *nh);
        payload.extend(h);
    }
    payload.extend(udp);
    let mut f = Vec::new();
    f.extend(dst);
    f.extend(src);
    f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend((payload.len() as u16).to_be_bytes());
    f.push(chain.first().map_or(17, |(nh, _)| *nh));
    f.push(64);
    f.extend(s6.octets());
    f.extend(d6.octets());
    f.extend(payload);
    f
}

/// `inject6`: writes the frames of [`xsk_steer_ipv6_extension_headers`] on
/// `SG_IFACE` through an `AF_PACKET` socket, to `SG_DST_MAC`; prints
/// `INJECTED steered=<n> passed=<n>` (what the program should do).
fn inject6_child() {
    let ifname = std::env::var("SG_IFACE").unwrap();
    let dst: Vec<u8> =
        std::env::var("SG_DST_MAC").unwrap().split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    let dst: [u8; 6] = dst.try_into().unwrap();
    let net = KernelNet::read().unwrap();
    let iface = net.interface(&ifname).unwrap();
    // PadN-padded 8-byte option headers; the first byte is the next header.
    let opts = |nh: u8| (nh, vec![0, 0, 1, 4, 0, 0, 0, 0]);
    let (hbh, dest) = (opts(0), opts(60));
    let routing = |left: u8| (43, vec![0, 0, 4, left, 0, 0, 0, 0]);
    let fragment = (44, vec![0, 0, 0, 1, 0, 0, 0x12, 0x34]); // offset 0, more fragments
    let esp = (50, vec![0; 16]);
    let steer = [
        vec![hbh.clone()],
        vec![hbh.clone(), dest.clone(), routing(0), dest.clone()],
        vec![dest.clone(), dest.clone(), dest.clone(), dest.clone()],
    ];
    let pass = [vec![dest.clone(); 5], vec![dest.clone(), hbh.clone()], vec![routing(1)], vec![fragment], vec![esp]];
    let frames: Vec<Vec<u8>> = steer.iter().chain(&pass).map(|chain| crafted6(dst, iface.mac, chain)).collect();
    // A truncated one: the IPv6 header says UDP, two bytes of it follow.
    let mut truncated = crafted6(dst, iface.mac, &[]);
    truncated.truncate(14 + 40 + 2);
    for f in frames.iter().chain(std::iter::once(&truncated)) {
        send_raw(iface.ifindex, f);
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("INJECTED steered={} passed={}", steer.len(), pass.len() + 1);
    std::io::stdout().flush().unwrap();
}

/// Writes one Ethernet frame on `ifindex` through a fresh `AF_PACKET` socket.
#[allow(unsafe_code)]
fn send_raw(ifindex: u32, frame: &[u8]) {
    // SAFETY: socket(2) with constant arguments; the descriptor is checked
    // and closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_ifindex = ifindex as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: `frame` and `sa` are valid for the lengths given and outlive
    // the call; `fd` is the socket opened above.
    let n = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    assert_eq!(n, frame.len() as isize, "AF_PACKET sendto: {err}");
}

/// What the socket received: datagrams by family and destination port,
/// IPv6 ones behind extension headers, anything else.
#[derive(Default)]
struct Seen {
    udp: std::collections::BTreeMap<(u8, u16), u64>,
    v6_ext: u64,
    other: u64,
}

struct Recorder(Arc<Mutex<Seen>>);

fn port_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|p| u16::from_be_bytes([p[0], p[1]]))
}

impl BatchHandler for Recorder {
    fn handle_batch(&mut self, frames: &mut [Frame<'_>]) {
        let mut seen = self.0.lock().unwrap();
        for f in frames {
            let b = &f.buf[..f.len];
            let dport = match port_at(b, 12) {
                Some(0x0800) if b.len() >= 38 && b[23] == 17 => {
                    port_at(b, 14 + usize::from(b[14] & 0x0f) * 4 + 2).map(|p| (4, p))
                }
                Some(0x86dd) if b.len() >= 54 => match ipv6::walk(b[20], &b[14..], ipv6::HEADER_LEN) {
                    Ok(u) if u.protocol == 17 => {
                        seen.v6_ext += u64::from(u.offset > ipv6::HEADER_LEN);
                        port_at(b, 14 + u.offset + 2).map(|p| (6, p))
                    }
                    _ => None,
                },
                _ => None,
            };
            match dport {
                Some(k) => *seen.udp.entry(k).or_default() += 1,
                None => seen.other += 1,
            }
            f.verdict = Verdict::Drop(DropReason::Malformed);
        }
    }
}

/// Drains a non-blocking socket: how many datagrams the kernel delivered.
fn drain(s: &UdpSocket) -> u64 {
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while s.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

fn family(ip: &str) -> u8 {
    if ip.contains(':') {
        6
    } else {
        4
    }
}

/// `steer6`: the program on `SG_IFACE` (`SG_XDP_MODE` native or generic)
/// with the maps of [`xsk_steer_ipv6_frontends_steered_ndp_passed`], one
/// socket on queue 0, and kernel UDP sockets on [`LISTEN`]. Prints `READY`;
/// on `report` resolves `B6` through netlink (NTF_USE: an NDP solicitation
/// through the attached program), checks the kernel's IPv6 view and the
/// gateway's next hop built from it, and prints `KERNEL ...`, `WORKER ...`,
/// `STEER ...` and `NEXTHOP6 ...`.
fn steer6_child() {
    let ifname = std::env::var("SG_IFACE").unwrap();
    let kernel: Vec<UdpSocket> = LISTEN
        .iter()
        .map(|&(ip, port)| {
            let s = UdpSocket::bind(SocketAddr::new(ip.parse().unwrap(), port)).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mode = match std::env::var("SG_XDP_MODE").as_deref() {
        Ok("generic") => XdpMode::Generic,
        _ => XdpMode::Native,
    };
    let mut steer = Steering::attach(&ifname, mode).unwrap();
    steer.set_frontends(&[(A4.parse().unwrap(), PROTO_UDP, PORT)]).unwrap();
    steer.set_frontends6(&[(A6.parse().unwrap(), PROTO_UDP, PORT)]).unwrap();
    steer.set_sources6(&[(B6.parse().unwrap(), PROTO_UDP, BACKEND_PORT)]).unwrap();
    // The range is set with the IPv4 addresses (none here) and shared.
    steer.set_snat(&[], SNAT_RANGE.0, SNAT_RANGE.1).unwrap();
    steer.set_snat6(&["2001:2:0:9::100".parse().unwrap()]).unwrap();
    steer.set_snat6(&[A6.parse().unwrap()]).unwrap();
    let many: Vec<Ipv6Addr> =
        (0..100u128).map(|i| Ipv6Addr::from(0x2001_0002_0000_0009_0000_0000_0000_1000 + i)).collect();
    assert!(steer.set_snat6(&many).is_err(), "too many IPv6 SNAT addresses is an error");

    let cfg = XskConfig { frames_per_port: 2048, ring_size: 1024, ..XskConfig::default() };
    let ports = XskPorts::new(&cfg, &[PortConfig::new(ifname.as_str(), 0)]).unwrap();
    let (_, queue, fd) = ports.socket(0);
    steer.register_socket(queue, fd).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let wcfg = WorkerConfig {
        name: "steer6".into(),
        idle_spins: 64,
        idle_sleep: Duration::from_micros(200),
        ..WorkerConfig::default()
    };
    let join = Worker::new(ports, Recorder(Arc::clone(&seen)), Arc::clone(&stop), None, wcfg).spawn().unwrap();
    println!("READY mode={}", steer.mode());
    std::io::stdout().flush().unwrap();

    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "report");

    // NDP from this side, with the program attached: the kernel solicits,
    // the advertisement comes back through XDP (passed), and the netlink
    // view and the gateway's next-hop table pick the MAC up.
    let b6: Ipv6Addr = B6.parse().unwrap();
    let ifindex = xsk::ifindex(&ifname).unwrap();
    let _ = Command::new("ip").args(["-6", "neigh", "flush", "dev", &ifname]).status();
    xsk::resolve_neighbour(ifindex, b6).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let net = loop {
        let net = KernelNet::read().unwrap();
        if net.neighbour_mac(ifindex, b6).is_some() {
            break net;
        }
        assert!(Instant::now() < deadline, "{b6} not resolved by NDP: {:?}", net.neighbours6);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(net.route(b6), Some((ifindex, b6)), "on-link IPv6 route");
    let iface = net.interface(&ifname).unwrap();
    assert!(iface.addrs6.iter().any(|&(a, l)| a == A6.parse::<Ipv6Addr>().unwrap() && l == 64), "{iface:?}");
    let hops = svcgate_dataplane::gateway::next_hops_from_kernel(&net, std::slice::from_ref(&ifname), 1);
    let resolved = match hops.resolve(b6) {
        svcgate_dataplane::nat::Resolution::Hop(i) => hops.hop(i).map(|h| h.dst_mac) == net.neighbour_mac(ifindex, b6),
        other => panic!("next hop of {b6}: {other:?}"),
    };
    assert_eq!(hops.port_addr::<Ipv6Addr>(0), Some(A6.parse().unwrap()), "global address, not link-local");
    assert_eq!(hops.port_addr::<Ipv4Addr>(0), Some(A4.parse().unwrap()));

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    join.join().unwrap();
    let mut line = String::from("KERNEL");
    for (s, &(ip, port)) in kernel.iter().zip(&LISTEN) {
        line += &format!(" v{}_{port}={}", family(ip), drain(s));
    }
    println!("{line}");
    let s = seen.lock().unwrap();
    let mut line = String::from("WORKER");
    for (&(fam, port), n) in &s.udp {
        line += &format!(" v{fam}_{port}={n}");
    }
    // Zeroes for the ports expected to be there, so a miss reads as 0.
    for (fam, port) in [(4, PORT), (6, PORT), (6, OTHER), (6, SNAT_PORT)] {
        if !s.udp.contains_key(&(fam, port)) {
            line += &format!(" v{fam}_{port}=0");
        }
    }
    println!("{line} v6_ext={} other={}", s.v6_ext, s.other);
    let st = steer.stats().unwrap();
    println!(
        "STEER redirected={} not_steered={} no_socket={} v6_redirected={} v6_not_steered={} v6_icmp={} v6_ext={}",
        st.redirected, st.not_steered, st.no_socket, st.v6_redirected, st.v6_not_steered, st.v6_icmp, st.v6_ext
    );
    println!("NEXTHOP6 resolved={}", u8::from(resolved));
    std::io::stdout().flush().unwrap();
}

/// Linux's `IPV6_DSTOPTS` socket option (not in the libc crate's list for
/// every target).
const IPV6_DSTOPTS: libc::c_int = 59;

/// Has the kernel put a Destination Options header (one PadN option, 8
/// bytes in all) before the UDP header of what `s` sends.
#[allow(unsafe_code)]
fn set_dstopts(s: &UdpSocket) {
    // Next header (the kernel fills it in), length 0 (8 bytes), PadN of 4.
    let opts: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
    // SAFETY: setsockopt only reads `opts`, an initialised 8-byte array on
    // our stack that outlives the call, on a socket `s` keeps open.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            IPV6_DSTOPTS,
            opts.as_ptr().cast(),
            opts.len() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
}

/// `send6`: one UDP datagram per entry of `SG_SENDS` (`addr port len
/// [dstopts] [sport=N]`, comma-separated), 20 ms apart; `dstopts` adds a
/// Destination Options header (one PadN option) before the UDP header,
/// `sport` sends from that port. Prints `SENT n`.
fn send6_child() {
    let specs = std::env::var("SG_SENDS").unwrap();
    let mut n = 0;
    for spec in specs.split(',') {
        let w: Vec<&str> = spec.split_whitespace().collect();
        let ip: IpAddr = w[0].parse().unwrap();
        let dst = SocketAddr::new(ip, w[1].parse().unwrap());
        let len: usize = w[2].parse().unwrap();
        let any: IpAddr = if ip.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
        let sport = w[3..].iter().find_map(|o| o.strip_prefix("sport=")).map_or(0, |p| p.parse().unwrap());
        let s = UdpSocket::bind(SocketAddr::new(any, sport)).unwrap();
        if w[3..].contains(&"dstopts") {
            set_dstopts(&s);
        }
        s.send_to(&vec![0x5a; len], dst).unwrap();
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("SENT {n}");
    std::io::stdout().flush().unwrap();
}
