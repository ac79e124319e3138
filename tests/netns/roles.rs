//! What a child process does inside its namespace, chosen by
//! `SVCGATE_TEST_ROLE`. Parameters come in `SG_*` environment variables.
//!
//! - `udp-echo` / `tcp-echo`: echo servers on `SG_BIND` (addr:port); print
//!   `READY`, serve until stdin closes.
//! - `udp-client` / `tcp-client`: `SG_COUNT` exchanges with `SG_DST`, each on
//!   a new socket (a new flow); print `OK <n>`; exit 0 only if all answered.
//! - `forwarder`: svcgate's AF_XDP layer with a test handler; see [`forwarder`].
//! - `steer-check`: attach/detach and map updates, see [`steer_check`].
//! - `nexthops`: netlink reading and neighbour resolution.
//! - `tx-refresh`: TX ring reservations after the kernel drained the ring,
//!   see [`tx_refresh`].

use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use svcgate_dataplane::nat::{DropReason, Frame, PassReason, Verdict};
use svcgate_dataplane::xsk::{
    self, BatchHandler, ExceptionPath, KernelNet, PortConfig, Steering, Worker, WorkerConfig, XdpMode, XskConfig,
    XskPorts, PROTO_TCP, PROTO_UDP,
};

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("child needs {k}"))
}

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

/// Entry point of a child process (called from each test file's
/// `child_entry`). Does nothing when not started as a child.
pub fn child_main() {
    let Ok(role) = std::env::var("SVCGATE_TEST_ROLE") else { return };
    match role.as_str() {
        "udp-echo" => udp_echo(),
        "tcp-echo" => tcp_echo(),
        "udp-client" => udp_client(),
        "tcp-client" => tcp_client(),
        "forwarder" => forwarder(),
        "steer-check" => steer_check(),
        "nexthops" => nexthops(),
        "tx-refresh" => tx_refresh(),
        other => panic!("unknown role {other}"),
    }
}

fn ready(extra: &str) {
    println!("READY {extra}");
    std::io::stdout().flush().unwrap();
}

/// Blocks until the parent closes our stdin (or it dies).
fn wait_stdin_closed() {
    let mut sink = String::new();
    let _ = std::io::stdin().lock().read_line(&mut sink);
}

fn udp_echo() {
    let s = UdpSocket::bind(env("SG_BIND")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    std::thread::spawn(move || {
        wait_stdin_closed();
        st.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    ready("");
    let mut buf = [0u8; 2048];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

fn tcp_echo() {
    let l = TcpListener::bind(env("SG_BIND")).unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                c.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    ready("");
    wait_stdin_closed();
}

fn udp_client() {
    let dst: SocketAddr = env("SG_DST").parse().unwrap();
    let count: usize = env("SG_COUNT").parse().unwrap();
    let mut ok = 0;
    for i in 0..count {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
        let msg = format!("svcgate udp probe {i}");
        let mut buf = [0u8; 2048];
        // Up to three tries: the first datagram of a flow may race ARP.
        for _ in 0..3 {
            s.send_to(msg.as_bytes(), dst).unwrap();
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                if &buf[..n] == msg.as_bytes() && from == dst {
                    ok += 1;
                    break;
                }
            }
        }
    }
    println!("OK {ok}");
    std::process::exit(if ok == count { 0 } else { 1 });
}

fn tcp_client() {
    let dst: SocketAddr = env("SG_DST").parse().unwrap();
    let count: usize = env("SG_COUNT").parse().unwrap();
    let mut ok = 0;
    for i in 0..count {
        let Ok(mut c) = TcpStream::connect_timeout(&dst, Duration::from_secs(3)) else { continue };
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let msg = format!("svcgate tcp probe {i} {}", "x".repeat(1000));
        if c.write_all(msg.as_bytes()).is_err() {
            continue;
        }
        let mut got = vec![0u8; msg.len()];
        if c.read_exact(&mut got).is_ok() && got == msg.as_bytes() {
            ok += 1;
        }
    }
    println!("OK {ok}");
    std::process::exit(if ok == count { 0 } else { 1 });
}

/// Forwards between port 0 and port 1, rewriting MACs (an L2 forwarder
/// with routed next hops: src = egress interface MAC, dst = neighbour MAC).
struct MacForwarder {
    /// Per egress port: (own MAC, next-hop MAC).
    macs: [([u8; 6], [u8; 6]); 2],
}

impl BatchHandler for MacForwarder {
    fn handle_batch(&mut self, frames: &mut [Frame<'_>]) {
        for f in frames {
            if f.len < 14 || f.in_port > 1 {
                f.verdict = Verdict::Drop(DropReason::Malformed);
                continue;
            }
            let out = 1 - f.in_port;
            let (src, dst) = self.macs[usize::from(out)];
            f.buf[0..6].copy_from_slice(&dst);
            f.buf[6..12].copy_from_slice(&src);
            f.verdict = Verdict::Forward { port: out };
        }
    }
}

/// One port: UDP to port 9999 -> Pass (kernel via TUN), 9998 -> Drop,
/// 9997 -> Reply (reflected: MACs, IPs and ports swapped; checksums are
/// invariant under the swap).
struct Mixed;

fn udp_dport(f: &Frame<'_>) -> Option<u16> {
    let b = &f.buf[..f.len];
    if b.len() < 42 || b[12..14] != [0x08, 0x00] || b[23] != 17 {
        return None;
    }
    let ihl = usize::from(b[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    b.get(l4 + 2..l4 + 4).map(|p| u16::from_be_bytes([p[0], p[1]]))
}

impl BatchHandler for Mixed {
    fn handle_batch(&mut self, frames: &mut [Frame<'_>]) {
        for f in frames {
            f.verdict = match udp_dport(f) {
                Some(9999) => Verdict::Pass(PassReason::NotService),
                Some(9998) => Verdict::Drop(DropReason::SourceRange),
                Some(9997) => {
                    let ihl = usize::from(f.buf[14] & 0x0f) * 4;
                    let b = &mut *f.buf;
                    let mut t = [0u8; 6];
                    t.copy_from_slice(&b[0..6]);
                    b.copy_within(6..12, 0);
                    b[6..12].copy_from_slice(&t);
                    let mut a = [0u8; 4];
                    a.copy_from_slice(&b[26..30]);
                    b.copy_within(30..34, 26);
                    b[30..34].copy_from_slice(&a);
                    let l4 = 14 + ihl;
                    let mut p = [0u8; 2];
                    p.copy_from_slice(&b[l4..l4 + 2]);
                    b.copy_within(l4 + 2..l4 + 4, l4);
                    b[l4 + 2..l4 + 4].copy_from_slice(&p);
                    Verdict::Reply { len: f.len as u16 }
                }
                _ => Verdict::Drop(DropReason::Malformed),
            };
        }
    }
}

fn parse_frontends(s: &str) -> Vec<(Ipv4Addr, u8, u16)> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            let mut it = x.split(':');
            let ip = it.next().unwrap().parse().unwrap();
            let proto = match it.next().unwrap() {
                "tcp" => PROTO_TCP,
                "udp" => PROTO_UDP,
                p => panic!("proto {p}"),
            };
            (ip, proto, it.next().unwrap().parse().unwrap())
        })
        .collect()
}

/// Waits until the kernel has a usable MAC for `ip` on `ifname`, asking it
/// to resolve (netlink NTF_USE) first.
fn neighbour_mac(ifname: &str, ip: Ipv4Addr) -> [u8; 6] {
    let ifindex = xsk::ifindex(ifname).unwrap();
    xsk::resolve_neighbour(ifindex, ip).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let net = KernelNet::read().unwrap();
        if let Some(m) = net.neighbour_mac(ifindex, ip) {
            return m;
        }
        assert!(Instant::now() < deadline, "{ip} on {ifname} not resolved: {:?}", net.neighbours);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `SG_MODE`: `l2fwd` (ports `SG_IFACES`=a,b; next hops `SG_PEERS`=ipA,ipB)
/// or `mixed` (one interface). `SG_QUEUES` workers, one per queue id, each
/// with a socket on every interface at that queue. Frontends `SG_FRONTENDS`
/// (ip:proto:port,...) are steered on the first interface; `SG_SNAT` (an
/// address; ports 1024-65535) on the second. Prints `READY mode=<xdp mode>`,
/// runs until stdin closes, then prints one `STATS w<i> ...` line per worker.
fn forwarder() {
    let mode = env("SG_MODE");
    let ifaces: Vec<String> = env("SG_IFACES").split(',').map(String::from).collect();
    let queues: u32 = env_or("SG_QUEUES", "1").parse().unwrap();
    let xdp_mode = match env_or("SG_XDP_MODE", "auto").as_str() {
        "generic" => XdpMode::Generic,
        "native" => XdpMode::Native,
        _ => XdpMode::Auto,
    };
    let mut steers: Vec<Steering> = ifaces.iter().map(|i| Steering::attach(i, xdp_mode).unwrap()).collect();
    steers[0].set_frontends(&parse_frontends(&env_or("SG_FRONTENDS", ""))).unwrap();
    if let (Ok(snat), Some(s)) = (std::env::var("SG_SNAT"), steers.get_mut(1)) {
        s.set_snat(&[snat.parse().unwrap()], 1024, 65535).unwrap();
    }

    let macs = if mode == "l2fwd" {
        let peers: Vec<Ipv4Addr> = env("SG_PEERS").split(',').map(|p| p.parse().unwrap()).collect();
        let net = KernelNet::read().unwrap();
        let own = |i: &str| net.interface(i).unwrap().mac;
        [(own(&ifaces[0]), neighbour_mac(&ifaces[0], peers[0])), (own(&ifaces[1]), neighbour_mac(&ifaces[1], peers[1]))]
    } else {
        [([0; 6], [0; 6]); 2]
    };
    let exception = if mode == "mixed" { Some(ExceptionPath::create("svcgate0").unwrap()) } else { None };

    let stop = Arc::new(AtomicBool::new(false));
    xsk::stop_on_signals(&stop).unwrap();
    let cfg = XskConfig { frames_per_port: 2048, ring_size: 1024, ..XskConfig::default() };
    let mut joins = Vec::new();
    let mut stats = Vec::new();
    for q in 0..queues {
        let ports: Vec<PortConfig> = ifaces.iter().map(|i| PortConfig::new(i.as_str(), q)).collect();
        let ports = XskPorts::new(&cfg, &ports).unwrap();
        for (i, s) in steers.iter_mut().enumerate() {
            let (_, queue, fd) = ports.socket(i);
            s.register_socket(queue, fd).unwrap();
        }
        let wcfg = WorkerConfig {
            name: format!("xsk-q{q}"),
            core: Some(q as usize),
            idle_spins: 64,
            idle_sleep: Duration::from_micros(200),
            rt_priority: 0,
            drop_capabilities: false,
        };
        let handler: Box<dyn BatchHandler> =
            if mode == "l2fwd" { Box::new(MacForwarder { macs }) } else { Box::new(Mixed) };
        let w = Worker::new(ports, handler, stop.clone(), exception.clone(), wcfg);
        stats.push(w.stats());
        joins.push(w.spawn().unwrap());
    }
    ready(&format!("mode={} ports={}", steers[0].mode(), ifaces.len()));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        wait_stdin_closed();
        s2.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    for j in joins {
        j.join().unwrap();
    }
    let steer = steers[0].stats().unwrap();
    for (i, s) in stats.iter().enumerate() {
        let s = s.snapshot();
        println!(
            "STATS w{i} rx={} tx={} completed={} passed={} pass_failed={} dropped={} empty={} busy_cycles={} steered={} not_steered={}",
            s.rx,
            s.tx,
            s.completed,
            s.passed(),
            s.pass_failed,
            s.dropped(),
            s.empty_polls,
            s.busy_cycles,
            steer.redirected,
            steer.not_steered
        );
    }
    std::io::stdout().flush().unwrap();
}

/// Attach native, check, detach; attach generic, check; map updates.
/// `SG_IFACE`. Prints `OK` at the end.
fn steer_check() {
    let ifname = env("SG_IFACE");
    let ifindex = xsk::ifindex(&ifname).unwrap();
    assert_eq!(xsk::xdp_attachment(ifindex).unwrap(), None, "no program before");
    for (mode, want) in [(XdpMode::Native, "native"), (XdpMode::Generic, "generic"), (XdpMode::Auto, "native")] {
        let mut s = Steering::attach(&ifname, mode).unwrap();
        assert_eq!(s.mode(), want);
        let att = xsk::xdp_attachment(ifindex).unwrap().expect("attached");
        assert_eq!(att.mode, want);
        assert!(att.prog_id > 0);
        let a: Ipv4Addr = "198.18.5.1".parse().unwrap();
        s.set_frontends(&[(a, PROTO_TCP, 80), (a, PROTO_UDP, 53)]).unwrap();
        s.set_frontends(&[(a, PROTO_TCP, 80), (a, PROTO_TCP, 443)]).unwrap();
        s.set_frontends(&[]).unwrap();
        s.set_snat(&["198.18.5.2".parse().unwrap()], 20000, 29999).unwrap();
        s.set_snat(&[], 1, 0).unwrap();
        let st = s.stats().unwrap();
        println!("mode {want}: stats {st:?}");
        drop(s);
        assert_eq!(xsk::xdp_attachment(ifindex).unwrap(), None, "detached on drop ({want})");
    }
    // Too many SNAT addresses is a clear error, not a panic.
    let mut s = Steering::attach(&ifname, XdpMode::Auto).unwrap();
    let many: Vec<Ipv4Addr> = (0..100u32).map(|i| Ipv4Addr::from(0xc612_0000 + i)).collect();
    let e = s.set_snat(&many, 1, 2).unwrap_err();
    println!("expected error: {e}");
    println!("OK");
}

/// On `SG_IFACE` queue 0, with 64-entry rings: 40 frames go on the TX ring,
/// the kernel sends them all, then a burst of 64 must go in whole (the
/// ring is empty again). The library caches the kernel's consumer index; a
/// transmit that took its stale view (24 free) for the ring's state dropped
/// 40 frames of the second burst. Prints `OK first=<n> second=<n>`. The
/// frames are 60 bytes of whatever the chunks hold, dropped by the peer.
fn tx_refresh() {
    let ifname = env("SG_IFACE");
    let cfg = XskConfig { frames_per_port: 256, ring_size: 64, ..XskConfig::default() };
    let mut ports = XskPorts::new(&cfg, &[PortConfig::new(ifname.as_str(), 0)]).unwrap();
    let burst = |ports: &mut XskPorts, n: usize| -> Vec<xsk::XdpDesc> {
        (0..n).map(|_| xsk::XdpDesc { addr: ports.alloc().expect("a free chunk"), len: 60, options: 0 }).collect()
    };
    let descs = burst(&mut ports, 40);
    let first = ports.transmit(0, &descs);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut done = 0;
    while done < first && Instant::now() < deadline {
        done += ports.reap_and_refill();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(done, first, "the kernel sent the first burst");
    let descs = burst(&mut ports, 64);
    let second = ports.transmit(0, &descs);
    println!("OK first={first} second={second}");
}

/// Reads the kernel's view; resolves `SG_PEER` on `SG_IFACE`; prints `OK`.
fn nexthops() {
    let ifname = env("SG_IFACE");
    let peer: Ipv4Addr = env("SG_PEER").parse().unwrap();
    let net = KernelNet::read().unwrap();
    let iface = net.interface(&ifname).expect("interface listed").clone();
    assert_ne!(iface.mac, [0; 6]);
    assert!(iface.addrs.iter().any(|(a, _)| a.octets()[..2] == [198, 18]), "{iface:?}");
    let (oif, nh) = net.route(peer).expect("route to peer");
    assert_eq!(oif, iface.ifindex);
    assert_eq!(nh, peer, "on-link next hop is the address itself");
    assert_eq!(net.neighbour_mac(iface.ifindex, peer), None, "not resolved yet");
    let mac = neighbour_mac(&ifname, peer);
    println!("resolved {peer} -> {mac:02x?}");
    println!("OK");
}
