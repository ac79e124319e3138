//! Soak under churn (issue 12, item 2): stamped UDP from the bundled
//! `svcgate-pktgen` and TCP connections held open run through svcgate's
//! `Gateway` (AF_XDP workers, NAT pipeline) while the desired state changes
//! several times a second: Pods leave the endpoints and come back, a second
//! Service is added and removed and its port changed, weights and session
//! affinity are toggled. Every Pod runs a sink that records each stamped
//! frame it receives; at the end the test checks, per frame and per
//! connection, against the log of what was published when:
//!
//! (a) **no misroute**: no frame reached a Pod port that no table the
//!     frame can have met allowed. A frame stamped (by the generator, at
//!     TX) at time `ts` and received at `rx` was processed with a table
//!     generation at least the one published last before `ts` (its
//!     publish time taken after the swap returned: the worker takes the
//!     table after it took the burst from its RX ring, so a frame sent after
//!     the swap meets the new table) and at most the one published last
//!     before `rx` (its time taken just before the swap). The frame is a
//!     misroute unless one of those generations lists that Pod for that
//!     port. The "one batch" a worker was processing at the swap is made
//!     of frames sent before the swap, so they are allowed; they are
//!     counted as *in flight* (allowed at `ts`, no longer at `rx`), with
//!     the longest such delay after the publish.
//! (b) **no moved flow**: a UDP flow of `soak/web` (64 flows, one per
//!     client source address; the gateway runs in `dnat` mode, so the Pod
//!     sees the client's address) whose consecutive frames (in send order,
//!     the stamp's sequence) reached Pod A then Pod B must have met a
//!     removal of A in between (published after A's frame was sent, and
//!     before B's frame was received); a TCP connection
//!     held open (pinged every 100 ms) may break only when a removal of
//!     its Pod was published after its last good ping began, and never
//!     gets an answer from another Pod.
//! (c) **flat resources**: the gateway child's VmRSS and open file
//!     descriptors (`/proc/<pid>/status`, `/proc/<pid>/fd`), sampled after
//!     a warm-up (a fifth of the run, at least 10 s) and at the end: RSS
//!     growth at most max(10 %, 4 MiB), fds at most +2 (a netlink socket
//!     `maintain` may hold open during a sample).
//!
//! Zero misroutes and zero moved flows are the bar; the counts are printed
//! (`SOAK ...` lines). Duration: `SVCGATE_SOAK_SECS` (default 60; the CI
//! run), one change every `SVCGATE_SOAK_STEP_MS` (default 200), seed
//! `SVCGATE_SOAK_SEED`. `scripts/soak.sh` runs this test for 10 minutes or
//! more. Needs root (see tests/netns/mod.rs) and `svcgate-pktgen` beside the
//! test binary (`cargo build --workspace --all-targets`).
//!
//! Topology (every address in 198.18.0.0/15; links named `sk*`):
//!
//! ```text
//! cli  skc0 198.18.1.10/24; routes 198.18.128.0/17 via .1.1
//!      (pktgen sends from 198.18.1.100-163, raw frames)
//!  |
//! gw   skg0 198.18.1.1/24 | skg1 198.18.2.1/24   ip_forward=0, Gateway, dnat
//!  |
//! br   skp0 + skq1..skq4 on bridge skbr
//!  |
//! p1..p4  ske0 198.18.2.11-14/24, route 198.18.1.0/24 via 198.18.2.1;
//!         sink: UDP 5300, 5301, 5302, TCP 80
//! ```
//!
//! Services: `soak/web` ClusterIP 198.18.128.10, UDP 8053 -> 5300 and TCP
//! 8080 -> 80, endpoints the live Pods (weights 1 or 3, affinity None or
//! ClientIP toggled); `soak/extra` ClusterIP 198.18.128.30, present or not,
//! UDP port 9001 -> 5301 or 9002 -> 5302 (the target port tells the sink
//! which frontend port a frame came through), endpoints the live Pods.

mod netns;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netns::{field, require_root, serve_gateway, skip_unless, Lab};
use svcgate_common::model::{
    BackendSpec, DesiredState, EndpointConditions, ForwardingMode, Protocol, ServicePortSpec, ServiceSpec, ServiceType,
    SessionAffinity,
};
use svcgate_common::publish::Publisher;
use svcgate_common::table::ServiceTable;
use svcgate_dataplane::gateway::{Gateway, GatewayConfig};
use svcgate_dataplane::nat::NatConfig;
use svcgate_dataplane::pktgen::frame::{MAGIC, STAMP_LEN};
use svcgate_dataplane::xsk::{XdpMode, XskConfig};

const CLIENT_IP: &str = "198.18.1.10";
const GW_CLIENT_IP: &str = "198.18.1.1";
const GW_POD_IP: &str = "198.18.2.1";
const PODS: [&str; 4] = ["198.18.2.11", "198.18.2.12", "198.18.2.13", "198.18.2.14"];
const WEB_IP: &str = "198.18.128.10";
const EXTRA_IP: &str = "198.18.128.30";
const WEB_UDP: u16 = 8053;
const WEB_TCP: u16 = 8080;
const POD_UDP: u16 = 5300;
const POD_TCP: u16 = 80;
/// `soak/extra`'s two ports and the target port each maps to.
const EXTRA_PORTS: [(u16, u16); 2] = [(9001, 5301), (9002, 5302)];
/// pktgen generator ids: stamped frames to `soak/web`, to `soak/extra`.
const GEN_WEB: u8 = 1;
const GEN_EXTRA: u8 = 2;
/// TCP connections held open at any time.
const HELD: usize = 6;

#[test]
#[ignore = "child process entry, run by the tests themselves"]
fn child_entry() {
    match std::env::var("SVCGATE_TEST_ROLE").as_deref() {
        Ok("soak-gateway") => gateway_child(),
        Ok("soak-sink") => sink_child(),
        Ok("soak-hold") => hold_child(),
        _ => netns::child_main(),
    }
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("child needs {k}"))
}

fn say(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A flag set when our stdin closes (the parent asks us to finish, or died).
fn stdin_closed_flag() -> Arc<AtomicBool> {
    let f = Arc::new(AtomicBool::new(false));
    let g = f.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::stdin().lock().read_to_string(&mut s);
        g.store(true, Ordering::SeqCst);
    });
    f
}

// ------------------------------------------------------------- the state

/// The desired state the churn moves through, in a compact form the
/// parent sends to the gateway child (`apply <State::encode>`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    /// Per Pod: `Some(weight)` when it is in the endpoints.
    pods: [Option<u16>; 4],
    /// `soak/web`'s ClientIP affinity.
    affinity: bool,
    /// `soak/extra`: absent, or the index into [`EXTRA_PORTS`] of its port.
    extra: Option<usize>,
}

impl State {
    fn initial() -> Self {
        State { pods: [Some(1); 4], affinity: false, extra: Some(0) }
    }

    /// `p=1:1,2:3 a=0 x=9001` (`x=-`: no `soak/extra`).
    fn encode(&self) -> String {
        let pods: Vec<String> =
            self.pods.iter().enumerate().filter_map(|(i, w)| w.map(|w| format!("{}:{w}", i + 1))).collect();
        let x = self.extra.map_or("-".to_string(), |i| EXTRA_PORTS[i].0.to_string());
        format!("p={} a={} x={x}", pods.join(","), u8::from(self.affinity))
    }

    fn decode(s: &str) -> Self {
        let mut st = State { pods: [None; 4], affinity: false, extra: None };
        for kv in s.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("bad state {s:?}"));
            match k {
                "p" => {
                    for p in v.split(',').filter(|p| !p.is_empty()) {
                        let (i, w) = p.split_once(':').unwrap();
                        st.pods[i.parse::<usize>().unwrap() - 1] = Some(w.parse().unwrap());
                    }
                }
                "a" => st.affinity = v == "1",
                "x" if v == "-" => st.extra = None,
                "x" => st.extra = Some(EXTRA_PORTS.iter().position(|(p, _)| p.to_string() == v).unwrap()),
                _ => panic!("bad state {s:?}"),
            }
        }
        st
    }

    /// May a frame reach Pod `pod` (0-based) at its port `port`?
    fn allows(&self, pod: usize, port: u16) -> bool {
        if self.pods[pod].is_none() {
            return false;
        }
        match port {
            POD_UDP | POD_TCP => true,
            p => self.extra.is_some_and(|i| EXTRA_PORTS[i].1 == p),
        }
    }

    fn desired(&self) -> DesiredState {
        let backends = |port: u16| -> Vec<BackendSpec> {
            self.pods
                .iter()
                .zip(PODS)
                .filter_map(|(w, a)| {
                    w.map(|weight| BackendSpec {
                        addr: ip(a).into(),
                        port,
                        conditions: EndpointConditions::READY,
                        weight,
                    })
                })
                .collect()
        };
        let svc = |name: &str, cip: &str, affinity, ports| ServiceSpec {
            namespace: "soak".into(),
            name: name.into(),
            service_type: ServiceType::ClusterIp,
            cluster_ips: vec![ip(cip).into()],
            external_ips: vec![],
            load_balancer_ips: vec![],
            source_ranges: vec![],
            affinity,
            ports,
            forwarding: None,
        };
        let affinity =
            if self.affinity { SessionAffinity::ClientIp { timeout_secs: 10800 } } else { SessionAffinity::None };
        let port = |name: &str, protocol, port, target| ServicePortSpec {
            name: name.into(),
            protocol,
            port,
            node_port: None,
            backends: backends(target),
        };
        let mut services = vec![svc(
            "web",
            WEB_IP,
            affinity,
            vec![port("dgram", Protocol::Udp, WEB_UDP, POD_UDP), port("stream", Protocol::Tcp, WEB_TCP, POD_TCP)],
        )];
        if let Some(i) = self.extra {
            let (p, target) = EXTRA_PORTS[i];
            services.push(svc("extra", EXTRA_IP, SessionAffinity::None, vec![port("dgram", Protocol::Udp, p, target)]));
        }
        DesiredState { node_ips: vec![ip(GW_CLIENT_IP).into()], services }
    }
}

/// xorshift64*: the churn's choices, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// One random change of `s`: a Pod deleted (at least two stay) or re-added,
/// a weight toggled 1 <-> 3, affinity toggled, `soak/extra` added or
/// removed, or its port changed. Returns what was done.
fn churn(s: &mut State, rng: &mut Rng) -> &'static str {
    loop {
        let live: Vec<usize> = (0..4).filter(|&i| s.pods[i].is_some()).collect();
        let gone: Vec<usize> = (0..4).filter(|&i| s.pods[i].is_none()).collect();
        match rng.below(8) {
            0 | 1 if live.len() > 2 => {
                s.pods[live[rng.below(live.len())]] = None;
                return "pod-deleted";
            }
            2 | 3 if !gone.is_empty() => {
                s.pods[gone[rng.below(gone.len())]] = Some(1);
                return "pod-added";
            }
            4 => {
                let p = live[rng.below(live.len())];
                s.pods[p] = Some(if s.pods[p] == Some(1) { 3 } else { 1 });
                return "weight";
            }
            5 => {
                s.affinity = !s.affinity;
                return "affinity";
            }
            6 => {
                s.extra = match s.extra {
                    Some(_) => None,
                    None => Some(0),
                };
                return if s.extra.is_some() { "service-added" } else { "service-removed" };
            }
            7 if s.extra.is_some() => {
                s.extra = s.extra.map(|i| 1 - i);
                return "port-changed";
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- children

/// `SG_STATE` (the first state), `SG_LIMIT_SECS`. Prints `READY`; commands:
/// `apply <state>` builds and publishes the state's table and prints
/// `PUBLISHED <generation> <us before the swap> <us after>`; `stats`; EOF:
/// final counters, `BYE` (see [`serve_gateway`]).
fn gateway_child() {
    let first = State::decode(&env("SG_STATE"));
    let (t, warnings) = ServiceTable::build(&first.desired(), 1);
    assert!(warnings.is_empty(), "{warnings:?}");
    let tables = Publisher::new(t);
    let cfg = GatewayConfig {
        interfaces: vec!["skg0".into(), "skg1".into()],
        queues: 1,
        xdp_mode: XdpMode::Auto,
        nat: NatConfig {
            mode: ForwardingMode::Dnat,
            snat_addrs: vec![ip(GW_POD_IP)],
            // Small, so that touching the rest of the (huge-page) flow
            // tables cannot pass for growth: about 0.6 MiB in all.
            conntrack_capacity: 4096,
            ..NatConfig::default()
        },
        xsk: XskConfig { frames_per_port: 2048, ring_size: 1024, ..XskConfig::default() },
        ..GatewayConfig::default()
    };
    let gw = Gateway::start(cfg, &tables).expect("Gateway::start");
    say(&format!("READY modes={:?}", gw.xdp_modes()));
    let limit = Duration::from_secs(env("SG_LIMIT_SECS").parse().unwrap());
    let mut generation = 1;
    serve_gateway(gw, &tables, limit, |cmd, gw| {
        let Some(s) = cmd.strip_prefix("apply ") else { return false };
        generation += 1;
        let (t, warnings) = ServiceTable::build(&State::decode(s).desired(), generation);
        assert!(warnings.is_empty(), "{warnings:?}");
        let before = unix_us();
        tables.publish(t);
        let after = unix_us();
        if let Err(e) = gw.maintain(&tables.current()) {
            say(&format!("MAINTAIN-ERROR {e}"));
        }
        say(&format!("PUBLISHED {generation} {before} {after}"));
        true
    });
}

/// A Pod: `SG_NAME`, `SG_ADDR`, `SG_LOG` (a file). UDP on 5300 and the
/// [`EXTRA_PORTS`] targets records every stamped datagram; TCP :80 greets
/// with `<name>\n` and answers each line `<line>` with `<name> <line>`.
/// Prints `READY`; when stdin closes, writes one line per datagram to
/// `SG_LOG` (`<port> <src ip:port> <generator> <seq> <tx us> <rx us>`),
/// and prints `DONE frames=<n> unstamped=<n>`.
fn sink_child() {
    let name = env("SG_NAME");
    let addr = env("SG_ADDR");
    let stop = stdin_closed_flag();
    let l = TcpListener::bind(format!("{addr}:{POD_TCP}")).unwrap();
    let n = name.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let n = n.clone();
            std::thread::spawn(move || {
                let mut w = c;
                w.set_read_timeout(Some(Duration::from_secs(60))).ok();
                if w.write_all(format!("{n}\n").as_bytes()).is_err() {
                    return;
                }
                let mut r = BufReader::new(w.try_clone().unwrap());
                let mut line = String::new();
                while matches!(r.read_line(&mut line), Ok(k) if k > 0) {
                    if w.write_all(format!("{n} {line}").as_bytes()).is_err() {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
    let ports = [POD_UDP, EXTRA_PORTS[0].1, EXTRA_PORTS[1].1];
    let threads: Vec<_> = ports
        .iter()
        .map(|&port| {
            let u = UdpSocket::bind(format!("{addr}:{port}")).unwrap();
            u.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut recs = Vec::new();
                let mut unstamped = 0u64;
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((k, from)) = u.recv_from(&mut buf) else { continue };
                    let rx = unix_us();
                    let p = &buf[..k];
                    if k < STAMP_LEN || p[0..4] != MAGIC.to_be_bytes() {
                        unstamped += 1;
                        continue;
                    }
                    let seq = u32::from_be_bytes(p[6..10].try_into().unwrap());
                    let ts_us = u64::from_be_bytes(p[10..18].try_into().unwrap()) / 1000;
                    recs.push(format!("{port} {from} {} {seq} {ts_us} {rx}\n", p[4]));
                }
                (recs, unstamped)
            })
        })
        .collect();
    say("READY");
    let mut out = BufWriter::new(std::fs::File::create(env("SG_LOG")).unwrap());
    let (mut frames, mut unstamped) = (0, 0);
    for t in threads {
        let (recs, u) = t.join().unwrap();
        frames += recs.len();
        unstamped += u;
        for r in recs {
            out.write_all(r.as_bytes()).unwrap();
        }
    }
    out.flush().unwrap();
    say(&format!("DONE frames={frames} unstamped={unstamped}"));
}

/// One held connection: the Pod that greeted it, when it opened, and when
/// its last good ping began.
struct Held {
    id: usize,
    c: TcpStream,
    r: BufReader<TcpStream>,
    pod: String,
    last_ok: u64,
    pings: u64,
}

/// `SG_DST`: keeps [`HELD`] connections open, pinging each in turn every
/// 100 ms; a connection that fails is reported and replaced. When stdin
/// closes, prints what happened (kept until then: nobody reads our stdout
/// during the run, and a long run would fill the pipe):
/// `OPEN <id> <pod> <us>`, `BROKEN <id> <pod> <last ok us> <us> <why>`,
/// `MOVED <id> <pod> <us> <answer>`, `ALIVE <id> <pod> <pings>` per
/// connection still open, and `HOLD-END pings=<n> opened=<n>
/// connect_failures=<n>`.
fn hold_child() {
    let dst: SocketAddr = env("SG_DST").parse().unwrap();
    let stop = stdin_closed_flag();
    let (mut next_id, mut pings, mut connect_failures) = (0usize, 0u64, 0u64);
    let mut events = Vec::new();
    let open = |next_id: &mut usize, connect_failures: &mut u64, events: &mut Vec<String>| -> Option<Held> {
        let c = TcpStream::connect_timeout(&dst, Duration::from_secs(2)).ok();
        let held = c.and_then(|c| {
            c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut r = BufReader::new(c.try_clone().ok()?);
            let mut pod = String::new();
            r.read_line(&mut pod).ok()?;
            let pod = pod.trim().to_string();
            (!pod.is_empty()).then(|| Held { id: *next_id, c, r, pod, last_ok: unix_us(), pings: 0 })
        });
        match held {
            Some(h) => {
                *next_id += 1;
                events.push(format!("OPEN {} {} {}", h.id, h.pod, h.last_ok));
                Some(h)
            }
            None => {
                *connect_failures += 1;
                None
            }
        }
    };
    let mut conns: Vec<Held> = Vec::new();
    let mut k = 0u64;
    say("READY");
    while !stop.load(Ordering::SeqCst) {
        while conns.len() < HELD && !stop.load(Ordering::SeqCst) {
            if let Some(h) = open(&mut next_id, &mut connect_failures, &mut events) {
                conns.push(h);
            }
        }
        let mut i = 0;
        while i < conns.len() {
            k += 1;
            let h = &mut conns[i];
            let t0 = unix_us();
            let msg = format!("ping-{k}\n");
            let mut line = String::new();
            let res = h.c.write_all(msg.as_bytes()).map_err(|e| format!("write: {e}")).and_then(|()| {
                match h.r.read_line(&mut line) {
                    Ok(0) => Err("closed".to_string()),
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("read: {e}")),
                }
            });
            match res {
                Ok(()) if line == format!("{} {msg}", h.pod) => {
                    h.last_ok = t0;
                    h.pings += 1;
                    pings += 1;
                    i += 1;
                }
                Ok(()) => {
                    events.push(format!("MOVED {} {} {} {}", h.id, h.pod, unix_us(), line.trim()));
                    conns.remove(i);
                }
                Err(e) => {
                    events.push(format!("BROKEN {} {} {} {} {e}", h.id, h.pod, h.last_ok, unix_us()));
                    conns.remove(i);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for e in &events {
        say(e);
    }
    for h in &conns {
        say(&format!("ALIVE {} {} {}", h.id, h.pod, h.pings));
    }
    say(&format!("HOLD-END pings={pings} opened={next_id} connect_failures={connect_failures}"));
}

// ------------------------------------------------------------------- parent

/// `target/<profile>/svcgate-pktgen` beside the test binary, or `None`
/// after a skip.
fn pktgen_binary(test: &str) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("svcgate-pktgen");
    let ok = skip_unless(
        test,
        p.is_file(),
        "no target/<profile>/svcgate-pktgen beside the test binary; build it with \
         `cargo build -p svcgate-dataplane --bin svcgate-pktgen`",
    );
    ok.then(|| p.to_string_lossy().into_owned())
}

/// A directory for the sinks' logs, removed on drop.
struct LogDir(PathBuf);

impl LogDir {
    fn new() -> Self {
        let d = std::env::temp_dir().join(format!("svcgate-soak-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        LogDir(d)
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// VmRSS in KiB and the number of open file descriptors of `pid`.
fn resources(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("gateway child's status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("gateway child's fds").count();
    (rss, fds)
}

/// One entry of the publish log.
struct Published {
    /// Just before the swap.
    before: u64,
    /// After the swap returned.
    after: u64,
    state: State,
}

/// Index of the last entry with `key(entry) <= t` (entry 0 is the start).
fn last_at(log: &[Published], t: u64, key: impl Fn(&Published) -> u64) -> usize {
    log.partition_point(|p| key(p) <= t).saturating_sub(1)
}

/// A frame as a sink recorded it.
struct Rec {
    pod: usize,
    port: u16,
    src: String,
    generator: u8,
    seq: u32,
    ts: u64,
    rx: u64,
}

fn read_recs(path: &Path, pod: usize) -> Vec<Rec> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: Vec<&str> = l.split(' ').collect();
            Rec {
                pod,
                port: v[0].parse().unwrap(),
                src: v[1].to_string(),
                generator: v[2].parse().unwrap(),
                seq: v[3].parse().unwrap(),
                ts: v[4].parse().unwrap(),
                rx: v[5].parse().unwrap(),
            }
        })
        .collect()
}

/// Was Pod `pod` removed (from every port) by a publish with
/// `before <= hi` and `after >= lo`?
fn removed_between(log: &[Published], pod: usize, lo: u64, hi: u64) -> bool {
    log.windows(2).any(|w| {
        w[0].state.pods[pod].is_some() && w[1].state.pods[pod].is_none() && w[1].before <= hi && w[1].after >= lo
    })
}

fn pod_index(name: &str) -> usize {
    name.strip_prefix("pod-").and_then(|n| n.parse::<usize>().ok()).expect("pod name") - 1
}

#[test]
fn soak_churn() {
    const T: &str = "soak_churn";
    if !require_root(T) {
        return;
    }
    let Some(pktgen) = pktgen_binary(T) else { return };
    let secs: u64 = std::env::var("SVCGATE_SOAK_SECS").map_or(60, |v| v.parse().expect("SVCGATE_SOAK_SECS"));
    let step = Duration::from_millis(std::env::var("SVCGATE_SOAK_STEP_MS").map_or(200, |v| v.parse().unwrap()));
    let seed: u64 = std::env::var("SVCGATE_SOAK_SEED").map_or_else(|_| unix_us() | 1, |v| v.parse().unwrap());
    assert!(secs >= 20, "SVCGATE_SOAK_SECS >= 20");
    let warmup = Duration::from_secs((secs / 5).max(10));
    eprintln!("[{T}] {secs} s, a change every {step:?}, seed {seed}");

    let logs = LogDir::new();
    let mut lab = Lab::new("sk");
    let cli = lab.netns("cli");
    let gw = lab.netns("gw");
    let br = lab.netns("br");
    lab.veth(&cli, "skc0", &gw, "skg0", 1);
    lab.veth(&gw, "skg1", &br, "skp0", 1);
    lab.ip(&br, "link add skbr type bridge");
    lab.ip(&br, "link set skbr up");
    lab.ip(&br, "link set skp0 master skbr");
    lab.ip(&cli, &format!("addr add {CLIENT_IP}/24 dev skc0"));
    lab.ip(&cli, &format!("route add 198.18.128.0/17 via {GW_CLIENT_IP}"));
    lab.ip(&gw, &format!("addr add {GW_CLIENT_IP}/24 dev skg0"));
    lab.ip(&gw, &format!("addr add {GW_POD_IP}/24 dev skg1"));
    lab.exec_ok(&gw, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let mut sinks = Vec::new();
    for (i, addr) in PODS.iter().enumerate() {
        let ns = lab.netns(&format!("p{}", i + 1));
        let q = format!("skq{}", i + 1);
        lab.veth(&ns, "ske0", &br, &q, 1);
        lab.ip(&br, &format!("link set {q} master skbr"));
        lab.ip(&ns, &format!("addr add {addr}/24 dev ske0"));
        // dnat mode: the Pod answers the client through the gateway.
        lab.ip(&ns, &format!("route add 198.18.1.0/24 via {GW_POD_IP}"));
        let log = logs.0.join(format!("pod-{}", i + 1));
        let name = format!("pod-{}", i + 1);
        let log_s = log.to_string_lossy().into_owned();
        let mut s = lab.spawn(&ns, "soak-sink", &[("SG_NAME", &name), ("SG_ADDR", addr), ("SG_LOG", &log_s)]);
        s.expect_line("READY");
        sinks.push((s, log));
    }
    for a in PODS.iter().chain([&CLIENT_IP]) {
        let out = lab.exec(&gw, &["ping", "-c1", "-W2", a]);
        assert!(out.status.success(), "gw -> {a}: {}", String::from_utf8_lossy(&out.stdout));
    }
    let mut state = State::initial();
    let limit = (secs + 120).to_string();
    let mut gateway = lab.spawn(&gw, "soak-gateway", &[("SG_STATE", &state.encode()), ("SG_LIMIT_SECS", &limit)]);
    eprintln!("[{T}] gateway {}", gateway.expect_line("READY"));
    let gw_pid = gateway.pid();
    let mut log = vec![Published { before: 0, after: 0, state: state.clone() }];

    let mut hold = lab.spawn(&cli, "soak-hold", &[("SG_DST", &format!("{WEB_IP}:{WEB_TCP}"))]);
    hold.expect_line("READY");
    let mac = lab.exec_ok(&gw, &["cat", "/sys/class/net/skg0/address"]).trim().to_string();
    // Bounded in count and time: 2000 + 500 frames a second for the run.
    let tx = |id: u8, dst: &str, dports: &str, sport: &str, flows: &str, rate: u64| -> Vec<String> {
        let v = [
            pktgen.as_str(),
            "tx",
            "-i",
            "skc0",
            "-d",
            dst,
            "-m",
            &mac,
            "--src-ip",
            "198.18.1.100-198.18.1.163",
            "--src-port",
            sport,
            "--dst-port",
            dports,
            "--flows",
            flows,
            "--rate",
            &rate.to_string(),
            "--count",
            &(rate * secs).to_string(),
            "--duration",
            &secs.to_string(),
            "--id",
            &id.to_string(),
        ];
        v.iter().map(|s| s.to_string()).collect()
    };
    // soak/web: 64 flows, one per source address (the flow's key at the
    // sinks: a flow re-picked after a removal may leave with another port).
    let web_argv = tx(GEN_WEB, WEB_IP, &WEB_UDP.to_string(), "40000", "64", 2000);
    let extra_ports = format!("{}-{}", EXTRA_PORTS[0].0, EXTRA_PORTS[1].0);
    let extra_argv = tx(GEN_EXTRA, EXTRA_IP, &extra_ports, "40001", "32", 500);

    let mut rng = Rng(seed);
    let mut kinds = BTreeMap::<&str, u64>::new();
    let mut samples = Vec::new();
    let mut start_res = None;
    let (web_tx, extra_tx) = std::thread::scope(|sc| {
        let lab = &lab;
        let run = |argv: Vec<String>| {
            let cli = cli.clone();
            sc.spawn(move || {
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                lab.run_bounded(&cli, &argv, Duration::from_secs(secs + 30))
            })
        };
        let web = run(web_argv);
        let extra = run(extra_argv);
        let t0 = Instant::now();
        let mut next_sample = t0 + warmup;
        // Changes stop 2 s before the generators do: the last frames meet
        // a settled table.
        while t0.elapsed() + Duration::from_secs(2) < Duration::from_secs(secs) {
            std::thread::sleep(step);
            let what = churn(&mut state, &mut rng);
            *kinds.entry(what).or_default() += 1;
            gateway.send(&format!("apply {}", state.encode()));
            let p = gateway.expect_line("PUBLISHED");
            let v: Vec<&str> = p.split_whitespace().collect();
            log.push(Published { before: v[2].parse().unwrap(), after: v[3].parse().unwrap(), state: state.clone() });
            if Instant::now() >= next_sample {
                let r = resources(gw_pid);
                start_res.get_or_insert(r);
                samples.push(r);
                next_sample += Duration::from_secs(5);
            }
        }
        let ok = |b: netns::Bounded| -> String {
            assert!(b.status.is_some_and(|s| s.success()), "pktgen: {b:?}");
            b.stdout.lines().last().unwrap_or_default().to_string()
        };
        (ok(web.join().unwrap()), ok(extra.join().unwrap()))
    });
    // Let the last frames land, then sample the end.
    std::thread::sleep(Duration::from_millis(500));
    let end_res = resources(gw_pid);
    let start_res = start_res.expect("a sample after the warm-up");
    hold.close_stdin();
    hold.expect_line("HOLD-END");
    assert!(lab.wait(&mut hold, Duration::from_secs(10)), "hold client");
    gateway.close_stdin();
    let bye = gateway.expect_line("BYE");
    let stats: Vec<String> =
        gateway.lines.iter().filter(|l| l.starts_with("NAT ") || l.starts_with("XSK ")).cloned().collect();
    assert!(lab.wait(&mut gateway, Duration::from_secs(10)), "gateway child failed: {:?}", gateway.lines);
    let mut recs = Vec::new();
    for (i, (s, path)) in sinks.iter_mut().enumerate() {
        s.close_stdin();
        eprintln!("[{T}] pod-{} {}", i + 1, s.expect_line("DONE"));
        assert!(lab.wait(s, Duration::from_secs(20)), "sink pod-{}", i + 1);
        recs.extend(read_recs(path, i));
    }
    drop(lab);
    for s in &stats {
        eprintln!("[{T}] {s}");
    }
    eprintln!("[{T}] pktgen web: {web_tx}");
    eprintln!("[{T}] pktgen extra: {extra_tx}");
    eprintln!("[{T}] changes {kinds:?}");

    // (a) Misroutes and frames in flight at a removal.
    let (mut misroutes, mut inflight, mut inflight_max_us) = (0u64, 0u64, 0u64);
    let mut examples = Vec::new();
    for r in &recs {
        let lo = last_at(&log, r.ts, |p| p.after);
        let hi = last_at(&log, r.rx, |p| p.before).max(lo);
        if !log[lo..=hi].iter().any(|p| p.state.allows(r.pod, r.port)) {
            misroutes += 1;
            if examples.len() < 5 {
                examples.push(format!(
                    "pod-{} port {} from {} gen {} seq {} sent {} received {} (tables {}..={} published {}..{})",
                    r.pod + 1,
                    r.port,
                    r.src,
                    r.generator,
                    r.seq,
                    r.ts,
                    r.rx,
                    lo + 1,
                    hi + 1,
                    log[lo].after,
                    log[hi].before
                ));
            }
        } else if !log[hi].state.allows(r.pod, r.port) {
            inflight += 1;
            let removal = log[lo + 1..=hi].iter().find(|p| !p.state.allows(r.pod, r.port)).map_or(r.rx, |p| p.after);
            inflight_max_us = inflight_max_us.max(r.rx.saturating_sub(removal));
        }
    }
    // (b) UDP flows of soak/web that changed Pods.
    let mut flows: HashMap<&str, Vec<&Rec>> = HashMap::new();
    for r in recs.iter().filter(|r| r.port == POD_UDP && r.generator == GEN_WEB) {
        let addr = r.src.split(':').next().unwrap_or_default();
        flows.entry(addr).or_default().push(r);
    }
    let (mut moves_ok, mut moved_udp) = (0u64, 0u64);
    for (src, frames) in &mut flows {
        frames.sort_by_key(|r| r.seq);
        for w in frames.windows(2) {
            if w[0].pod != w[1].pod {
                if removed_between(&log, w[0].pod, w[0].ts, w[1].rx) {
                    moves_ok += 1;
                } else {
                    moved_udp += 1;
                    if examples.len() < 10 {
                        examples.push(format!(
                            "UDP flow {src} moved pod-{} (seq {} sent {}) -> pod-{} (seq {} received {})",
                            w[0].pod + 1,
                            w[0].seq,
                            w[0].ts,
                            w[1].pod + 1,
                            w[1].seq,
                            w[1].rx
                        ));
                    }
                }
            }
        }
    }
    // (b) Held TCP connections.
    let (mut broken_ok, mut moved_tcp) = (0u64, 0u64);
    for l in &hold.lines {
        let v: Vec<&str> = l.split_whitespace().collect();
        match v.first() {
            Some(&"BROKEN") => {
                let (lo, hi): (u64, u64) = (v[3].parse().unwrap(), v[4].parse().unwrap());
                if removed_between(&log, pod_index(v[2]), lo, hi) {
                    broken_ok += 1;
                } else {
                    moved_tcp += 1;
                    examples.push(format!("TCP connection broke while its Pod stayed: {l}"));
                }
            }
            Some(&"MOVED") => {
                moved_tcp += 1;
                examples.push(format!("TCP connection answered by another Pod: {l}"));
            }
            _ => {}
        }
    }
    let hold_end = hold.lines.iter().find(|l| l.starts_with("HOLD-END")).unwrap().clone();
    // (c) Resources.
    let (rss0, fd0) = start_res;
    let (rss1, fd1) = end_res;
    let rss_max = samples.iter().map(|s| s.0).max().unwrap_or(rss0).max(rss1);
    let rss_bound = rss0 + (rss0 / 10).max(4096);

    let per_pod: Vec<usize> = (0..4).map(|p| recs.iter().filter(|r| r.pod == p).count()).collect();
    let web_rx = recs.iter().filter(|r| r.generator == GEN_WEB).count() as u64;
    let changes = log.len() - 1;
    eprintln!(
        "SOAK secs={secs} changes={changes} frames_tx={} frames_rx={} web_tx={} web_rx={web_rx} per_pod={per_pod:?}",
        field(&web_tx, "tx_packets") + field(&extra_tx, "tx_packets"),
        recs.len(),
        field(&web_tx, "tx_packets"),
    );
    eprintln!(
        "SOAK misroutes={misroutes} inflight={inflight} inflight_max_us={inflight_max_us} udp_flows={} udp_moves_after_removal={moves_ok} moved_udp={moved_udp}",
        flows.len()
    );
    eprintln!("SOAK tcp {hold_end} broken_by_removal={broken_ok} moved_tcp={moved_tcp}");
    eprintln!(
        "SOAK rss_kib start={rss0} end={rss1} max={rss_max} bound={rss_bound} fds start={fd0} end={fd1} samples={}",
        samples.len()
    );
    for e in &examples {
        eprintln!("[{T}] {e}");
    }
    assert!(bye.ends_with("maintain_errors=0"), "{bye}");
    assert_eq!(misroutes, 0, "frames reached a Pod after its removal was published: {examples:?}");
    assert_eq!(moved_udp + moved_tcp, 0, "established flows moved: {examples:?}");
    assert!(rss1 <= rss_bound, "gateway RSS grew from {rss0} KiB to {rss1} KiB (bound {rss_bound})");
    assert!(fd1 <= fd0 + 2, "gateway fds grew from {fd0} to {fd1}");
    // The run meant something: traffic flowed to every Pod, the churn
    // removed Pods and moved flows, connections were held.
    assert!(changes as u64 >= secs * 2, "changes={changes}");
    assert!(web_rx * 2 >= field(&web_tx, "tx_packets"), "most of soak/web's frames arrived: {web_rx}");
    assert!(per_pod.iter().all(|&n| n > 0), "{per_pod:?}");
    assert!(moves_ok > 0, "no flow met a removal: the churn did not bite");
    assert!(field(&hold_end, "pings") >= secs, "{hold_end}");
}
