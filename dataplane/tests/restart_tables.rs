//! Flow and reverse tables kept in a state directory (`NatConfig::state_dir`,
//! `nat::restart`): a second `Shared::open` of the same directory (the next
//! process) adopts them and forwards every flow to the same backend with
//! the same SNAT port; a file of another layout is refused and started
//! clean; torn state (an odd reverse-slot sequence, garbage entries) is
//! adopted safely. No root, no network: frames in memory, as the fixtures.

use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use svcgate_common::model::{DesiredState, Protocol};
use svcgate_common::table::ServiceTable;
use svcgate_dataplane::nat::conntrack::{FlowEntry, FlowMeta};
use svcgate_dataplane::nat::restart::{self, Header, RestartReport};
use svcgate_dataplane::nat::{Frame, NatConfig, Shared, Verdict, Worker};
use svcgate_dataplane::shm::HEADER_BYTES;
use svcgate_dataplane::testing::*;
use svcgate_dataplane::wire::tcp::flags::{ACK, PSH, SYN};

const VIP: Ipv4Addr = CLUSTER_IP;
const FLOWS: u16 = 64;

/// A scratch state directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let d = base.join(format!("svcgate-restart-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Self(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &Dir, workers: u16, capacity: usize) -> NatConfig {
    NatConfig { state_dir: Some(dir.0.clone()), ..nat_config(workers, capacity) }
}

/// One Service with `n` backends (so that the backend a flow has matters).
fn desired(n: u8) -> DesiredState {
    DesiredState {
        node_ips: vec![NODE_IP.into()],
        services: vec![svc(
            "web",
            Some(VIP),
            vec![port("http", Protocol::Tcp, 8080, None, (0..n).map(|i| ready(i, 80)).collect())],
        )],
    }
}

fn table(d: &DesiredState, gen: u64) -> ServiceTable {
    ServiceTable::build(d, gen).0
}

/// A process's view: its shared state and worker 0.
struct Proc {
    shared: Arc<Shared>,
    w: Worker,
    t: ServiceTable,
}

impl Proc {
    fn open(cfg: NatConfig, t: ServiceTable) -> Self {
        let shared = Shared::open(cfg).expect("state dir usable");
        let w = Worker::new(0, Arc::clone(&shared));
        Self { shared, w, t }
    }

    fn report(&self) -> RestartReport {
        self.shared.restart.clone().expect("a state dir")
    }

    /// Runs one frame; the verdict and the output.
    fn run<A: Copy + Into<std::net::IpAddr>>(&mut self, in_port: u16, p: &Pkt<A>) -> (Verdict, Vec<u8>) {
        let input = p.build();
        let mut buf = vec![0u8; 2048];
        buf[..input.len()].copy_from_slice(&input);
        let mut f = Frame::new(&mut buf, input.len(), in_port);
        let now = self.shared.now_ms();
        self.w.process(&self.t, &next_hops(1), &mut f, now);
        let (v, len) = (f.verdict, f.len);
        (v, buf[..len].to_vec())
    }
}

/// (source address, source port, destination address, destination port)
/// of an IPv4 TCP frame without options.
fn tuple(f: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let a = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    let p = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    (a(26), p(34), a(30), p(36))
}

/// Opens `FLOWS` connections (SYN, the backend's SYN-ACK, the client's
/// ACK); returns each client port's (backend, backend port, SNAT port).
fn connect(p: &mut Proc) -> Vec<(u16, Ipv4Addr, u16)> {
    (0..FLOWS)
        .map(|i| {
            let cport = 40_000 + i;
            let (v, out) = p.run(0, &Pkt::new(CLIENT, VIP, tcp(cport, 8080, SYN)));
            assert!(matches!(v, Verdict::Forward { port: 1 }), "{v:?}");
            let (snat, sport, be, bport) = tuple(&out);
            assert_eq!(snat, SNAT);
            let synack = Pkt {
                src_mac: [2, 0, 0, 0, 2, 9],
                dst_mac: GW_POD_MAC,
                ..Pkt::new(be, SNAT, tcp(bport, sport, SYN | ACK))
            };
            let (v, out) = p.run(1, &synack);
            assert!(matches!(v, Verdict::Forward { port: 0 }), "{v:?}");
            assert_eq!(tuple(&out), (VIP, 8080, CLIENT, cport));
            let (v, _) = p.run(0, &Pkt::new(CLIENT, VIP, tcp(cport, 8080, ACK)));
            assert!(matches!(v, Verdict::Forward { port: 1 }));
            (cport, be, sport)
        })
        .collect()
}

/// Sends data on every flow and checks it reaches the same backend from
/// the same SNAT port, and that the backend's answer reaches the client.
fn exchange(p: &mut Proc, flows: &[(u16, Ipv4Addr, u16)]) {
    for &(cport, be, sport) in flows {
        let (v, out) = p.run(0, &Pkt::new(CLIENT, VIP, tcp(cport, 8080, ACK | PSH)));
        assert!(matches!(v, Verdict::Forward { port: 1 }), "{cport}: {v:?}");
        assert_eq!(tuple(&out), (SNAT, sport, be, 80), "client port {cport}");
        let reply = Pkt { dst_mac: GW_POD_MAC, ..Pkt::new(be, SNAT, tcp(80, sport, ACK | PSH)) };
        let (v, out) = p.run(1, &reply);
        assert!(matches!(v, Verdict::Forward { port: 0 }), "{cport} reply: {v:?}");
        assert_eq!(tuple(&out), (VIP, 8080, CLIENT, cport));
    }
}

#[test]
fn adopted_tables_forward_each_flow_to_the_same_backend_and_port() {
    let dir = Dir::new("same");
    let mut p = Proc::open(config(&dir, 1, 4096), table(&desired(8), 1));
    assert_eq!(p.report().files_adopted, 0);
    let flows = connect(&mut p);
    exchange(&mut p, &flows);
    let (epoch, then) = (p.shared.clock_epoch_ms, p.shared.now_ms());
    drop(p);
    std::thread::sleep(std::time::Duration::from_millis(20));

    // The next process: its first table has generation 1 as well (a new
    // process counts from 1 again), and two more backends, so that
    // Maglev would now send some of these flows elsewhere.
    let mut p = Proc::open(config(&dir, 1, 4096), table(&desired(10), 1));
    let r = p.report();
    assert_eq!(r.files_adopted, 4, "{r:?}");
    assert!(r.refused.is_empty(), "{r:?}");
    assert_eq!((r.flows_adopted, r.flows_dropped), (usize::from(FLOWS), 0), "{r:?}");
    assert_eq!(r.replies_adopted, usize::from(FLOWS), "{r:?}");
    assert_eq!(p.w.flows(), usize::from(FLOWS));
    // The clock goes on from the tables' epoch: flows' times stay meaningful.
    assert_eq!(p.shared.clock_epoch_ms, epoch);
    assert!(p.shared.now_ms().wrapping_sub(then) >= 20, "the clock did not restart at 0");
    exchange(&mut p, &flows);
    let c = p.w.counters();
    assert_eq!((c.new_flows, c.picked_up), (0, 0), "every flow was adopted, none picked up again");

    // A third process after this one: still the same.
    drop(p);
    let mut p = Proc::open(config(&dir, 1, 4096), table(&desired(10), 7));
    assert_eq!(p.report().flows_adopted, usize::from(FLOWS));
    exchange(&mut p, &flows);
}

#[test]
fn every_mismatch_is_refused_and_started_clean() {
    let dir = Dir::new("mismatch");
    let base = config(&dir, 2, 1024);
    let mut p = Proc::open(base.clone(), table(&desired(4), 1));
    connect(&mut p);
    drop(p);
    let cases: Vec<(&str, NatConfig, &str)> = vec![
        ("capacity", NatConfig { conntrack_capacity: 2048, ..base.clone() }, "capacity"),
        ("workers", NatConfig { workers: 3, ..base.clone() }, "worker"),
        ("ports", NatConfig { snat_ports: (40000, 50000), ..base.clone() }, "SNAT ports"),
        ("addresses", NatConfig { snat_addrs: vec![Ipv4Addr::new(198, 18, 2, 2)], ..base.clone() }, "SNAT addresses"),
    ];
    for (what, cfg, reason) in cases {
        let p = Proc::open(cfg, table(&desired(4), 1));
        let r = p.report();
        assert_eq!(r.files_adopted, 0, "{what}: {r:?}");
        assert!(!r.refused.is_empty() && r.refused.iter().all(|m| m.contains(reason)), "{what}: {r:?}");
        assert_eq!(p.w.flows(), 0);
        drop(p);
        // Back to the base layout: refused again (the files are now the
        // other layout's, clean), and nothing misread.
        let p = Proc::open(base.clone(), table(&desired(4), 1));
        assert_eq!(p.report().files_adopted, 0, "{what}");
        assert_eq!(p.w.flows(), 0);
    }
    // Same layout again: adopted.
    let p = Proc::open(base.clone(), table(&desired(4), 1));
    assert_eq!(p.report().files_adopted, 6);
}

#[test]
fn bad_headers_and_truncated_files_are_refused() {
    let dir = Dir::new("bad");
    let cfg = config(&dir, 1, 1024);
    let mut p = Proc::open(cfg.clone(), table(&desired(4), 1));
    connect(&mut p);
    drop(p);
    let rev = dir.0.join("reverse4.tbl");
    let flow = dir.0.join("flow4-q0.tbl");
    // A header with another layout version.
    let f = std::fs::OpenOptions::new().write(true).open(&rev).unwrap();
    f.write_all_at(&99u32.to_le_bytes(), 8).unwrap();
    // A truncated flow file.
    let f = std::fs::OpenOptions::new().write(true).open(&flow).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 64).unwrap();
    let mut p = Proc::open(cfg.clone(), table(&desired(4), 1));
    let r = p.report();
    assert!(r.refused.iter().any(|m| m.contains("reverse4.tbl") && m.contains("layout version is 99")), "{r:?}");
    assert!(r.refused.iter().any(|m| m.contains("flow4-q0.tbl")), "{r:?}");
    // Only those two: the IPv6 tables are adopted (a refused file does not
    // make the others look like another set's).
    assert_eq!((r.refused.len(), r.files_adopted), (2, 2), "{r:?}");
    assert_eq!(p.w.flows(), 0);
    // Starts clean and serves.
    let flows = connect(&mut p);
    exchange(&mut p, &flows);
    drop(p);
    // The set is consistent again: everything adopted, the new flows too.
    let mut p = Proc::open(cfg.clone(), table(&desired(4), 1));
    assert_eq!((p.report().files_adopted, p.report().flows_adopted), (4, usize::from(FLOWS)), "{:?}", p.report());
    exchange(&mut p, &flows);
    drop(p);
    // Garbage where the header was: refused as not ours.
    std::fs::write(&rev, b"not a state file").unwrap();
    let p = Proc::open(cfg, table(&desired(4), 1));
    assert!(p.report().refused.iter().any(|m| m.contains("reverse4.tbl")), "{:?}", p.report());
    assert_eq!(p.report().refused.len(), 1, "{:?}", p.report());
}

#[test]
fn a_header_differing_in_any_field_is_refused() {
    let dir = Dir::new("fields");
    let cfg = config(&dir, 1, 1024);
    drop(Proc::open(cfg, table(&desired(4), 1)));
    let path = dir.0.join("flow4-q0.tbl");
    let raw = std::fs::read(&path).unwrap();
    let len = raw.len() as u64;
    let good: Header = bytemuck::pod_read_unaligned(&raw[..std::mem::size_of::<Header>()]);
    let body = len as usize - HEADER_BYTES;
    let want = Header { seeds: [0; 2], epoch_ms: 0, ..good };
    assert!(restart::check(&raw, &want, len, body, Some(good.epoch_ms)).is_ok());
    let mutations: Vec<(&str, Header)> = vec![
        ("magic", Header { magic: *b"SVGSTATX", ..good }),
        ("version", Header { version: good.version + 1, ..good }),
        ("fingerprint", Header { fingerprint: good.fingerprint ^ 1, ..good }),
        ("kind", Header { kind: 3, ..good }),
        ("entry size", Header { entry_size: 128, ..good }),
        ("slots", Header { slots: good.slots + 8, ..good }),
        ("capacity", Header { capacity: good.capacity + 1, ..good }),
        ("workers", Header { workers: 2, ..good }),
        ("worker", Header { worker: 1, ..good }),
        ("snat ports", Header { snat_hi: good.snat_hi - 1, ..good }),
        ("snat addrs", Header { snat_addrs: good.snat_addrs ^ 1, ..good }),
        ("boot", Header { boot_id: [b'x'; 48], ..good }),
        ("epoch", Header { epoch_ms: good.epoch_ms + 1, ..good }),
    ];
    for (what, h) in mutations {
        let mut bad = raw[..HEADER_BYTES].to_vec();
        bad[..std::mem::size_of::<Header>()].copy_from_slice(bytemuck::bytes_of(&h));
        assert!(restart::check(&bad, &want, len, body, Some(good.epoch_ms)).is_err(), "{what} accepted");
    }
    assert!(restart::check(&raw, &want, len - 1, body, None).is_err(), "short file accepted");
    assert!(restart::check(&raw[..10], &want, len, body, None).is_err(), "short header accepted");
}

#[test]
fn torn_slots_and_garbage_entries_are_adopted_safely() {
    let dir = Dir::new("torn");
    let cfg = config(&dir, 1, 1024);
    let mut p = Proc::open(cfg.clone(), table(&desired(4), 1));
    let flows = connect(&mut p);
    drop(p);
    // A process killed inside a reverse slot's write: odd sequence (the
    // first word of a 64-byte slot). The first used slot gets one.
    let rev = std::fs::OpenOptions::new().read(true).write(true).open(dir.0.join("reverse4.tbl")).unwrap();
    let body = std::fs::read(dir.0.join("reverse4.tbl")).unwrap();
    let used = (0..(body.len() - HEADER_BYTES) / 64)
        .find(|i| body[HEADER_BYTES + i * 64 + 16..HEADER_BYTES + i * 64 + 32].iter().any(|&b| b != 0))
        .expect("a used reverse slot");
    rev.write_all_at(&1u32.to_le_bytes(), (HEADER_BYTES + used * 64) as u64).unwrap();
    // A slot pointing past the reverse table, and a garbage entry.
    let flow = std::fs::OpenOptions::new().read(true).write(true).open(dir.0.join("flow4-q0.tbl")).unwrap();
    let fbody = std::fs::read(dir.0.join("flow4-q0.tbl")).unwrap();
    let mut used_flows =
        (0..(fbody.len() - HEADER_BYTES) / 64).filter(|i| fbody[HEADER_BYTES + i * 64 + 8..][..8] != [0; 8]);
    let past = used_flows.next().unwrap();
    // rev_slot: in the meta (after the key and the addresses).
    let at = std::mem::offset_of!(FlowEntry, m) + std::mem::offset_of!(FlowMeta, rev_slot);
    flow.write_all_at(&u32::MAX.to_le_bytes(), (HEADER_BYTES + past * 64 + at) as u64).unwrap();
    let mut rng = XorShift(0x7e57);
    let garbage: Vec<u8> = (0..64 * 50).map(|_| rng.next_u64() as u8).collect();
    let free = (0..(fbody.len() - HEADER_BYTES) / 64 - 50)
        .find(|i| fbody[HEADER_BYTES + i * 64..][..64 * 50].iter().all(|&b| b == 0));
    if let Some(free) = free {
        flow.write_all_at(&garbage, (HEADER_BYTES + free * 64) as u64).unwrap();
    }
    let mut p = Proc::open(cfg.clone(), table(&desired(4), 1));
    let r = p.report();
    assert_eq!(r.torn, 1, "{r:?}");
    assert_eq!(
        r.flows_adopted,
        usize::from(FLOWS) - 2,
        "the torn reply's flow and the out-of-range one dropped: {r:?}"
    );
    assert!(r.flows_dropped >= 2, "{r:?}");
    // The surviving flows still forward; the two dropped ones are picked
    // up again as connections in progress (no crash, no misrouting).
    exchange(&mut p, &flows);
    assert_eq!(p.w.counters().picked_up, 2);

    // A body of garbage under a valid header: nothing panics, and what is
    // adopted is only what validates (random keys are in their bucket and
    // point at their own reply once in a blue moon).
    drop(p);
    let n = fbody.len() - HEADER_BYTES;
    let noise: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    flow.write_all_at(&noise, HEADER_BYTES as u64).unwrap();
    let rn = body.len() - HEADER_BYTES;
    let noise: Vec<u8> = (0..rn).map(|_| rng.next_u64() as u8).collect();
    rev.write_all_at(&noise, HEADER_BYTES as u64).unwrap();
    let mut p = Proc::open(cfg, table(&desired(4), 1));
    let r = p.report();
    assert_eq!(r.flows_adopted, 0, "{r:?}");
    assert_eq!(r.replies_adopted, 0, "{r:?}");
    let flows = connect(&mut p);
    exchange(&mut p, &flows);
}

#[test]
fn a_second_process_on_the_same_state_dir_is_refused() {
    let dir = Dir::new("busy");
    let cfg = config(&dir, 1, 1024);
    let _p = Proc::open(cfg.clone(), table(&desired(4), 1));
    let e = Shared::open(cfg).expect_err("locked");
    assert!(e.to_string().contains("in use by another process"), "{e}");
}

#[test]
fn adopted_flows_wait_for_the_first_table() {
    let dir = Dir::new("unsynced");
    let mut p = Proc::open(config(&dir, 1, 1024), table(&desired(4), 3));
    let flows = connect(&mut p);
    drop(p);
    // The next process before its first table is published (generation 0).
    let mut p = Proc::open(config(&dir, 1, 1024), ServiceTable::empty());
    let (cport, _, _) = flows[0];
    let (v, _) = p.run(0, &Pkt::new(CLIENT, VIP, tcp(cport, 8080, ACK | PSH)));
    assert_eq!(v, Verdict::Drop(svcgate_dataplane::nat::DropReason::NotSynced));
    assert_eq!(p.w.flows(), usize::from(FLOWS), "no flow forgotten");
    p.t = table(&desired(4), 1);
    exchange(&mut p, &flows);
    assert_eq!(p.w.counters().picked_up, 0);
}

/// How long opening a state directory takes at the default capacity (1M
/// IPv4 and 64k IPv6 flows per worker): created, then adopted (every entry
/// and reply slot read and checked). What it adds to a restart's gap.
/// `cargo test --release -p svcgate-dataplane --test restart_tables -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: run by hand, in release"]
fn open_and_adopt_time_at_the_default_capacity() {
    let dir = Dir::new("time");
    let cfg = NatConfig { state_dir: Some(dir.0.clone()), ..nat_config(1, 1 << 20) };
    for round in ["created", "adopted", "adopted"] {
        let t0 = std::time::Instant::now();
        let mut p = Proc::open(cfg.clone(), table(&desired(4), 1));
        let opened = t0.elapsed();
        if round == "created" {
            connect(&mut p);
        }
        eprintln!("{round}: {opened:?} ({:?})", p.report());
    }
}

/// (source, source port, destination, destination port) of an IPv6 TCP frame.
fn tuple6(f: &[u8]) -> (std::net::Ipv6Addr, u16, std::net::Ipv6Addr, u16) {
    let a = |o: usize| std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&f[o..o + 16]).unwrap());
    let p = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    (a(22), p(54), a(38), p(56))
}

#[test]
fn ipv6_flows_are_adopted_too() {
    use std::net::Ipv6Addr;
    let dir = Dir::new("v6");
    let d = |n: u8| DesiredState {
        node_ips: vec![NODE_IP.into(), NODE_IP6.into()],
        services: vec![svcgate_common::model::ServiceSpec {
            cluster_ips: vec![CLUSTER_IP6.into()],
            ..svc("web6", None, vec![port("http", Protocol::Tcp, 8080, None, (0..n).map(|i| ready6(i, 80)).collect())])
        }],
    };
    let mut p = Proc::open(config(&dir, 1, 1024), table(&d(6), 1));
    let mut flows: Vec<(u16, Ipv6Addr, u16)> = Vec::new();
    for i in 0..32u16 {
        let cport = 41_000 + i;
        let (v, out) = p.run(0, &Pkt::new(CLIENT6, CLUSTER_IP6, tcp(cport, 8080, SYN)));
        assert!(matches!(v, Verdict::Forward { port: 1 }), "{v:?}");
        let (snat, sport, be, _) = tuple6(&out);
        assert_eq!(snat, SNAT6);
        let synack = Pkt { dst_mac: GW_POD_MAC, ..Pkt::new(be, SNAT6, tcp(80, sport, SYN | ACK)) };
        assert!(matches!(p.run(1, &synack).0, Verdict::Forward { port: 0 }));
        assert!(matches!(p.run(0, &Pkt::new(CLIENT6, CLUSTER_IP6, tcp(cport, 8080, ACK))).0, Verdict::Forward { .. }));
        flows.push((cport, be, sport));
    }
    drop(p);
    let mut p = Proc::open(config(&dir, 1, 1024), table(&d(8), 1));
    let r = p.report();
    assert_eq!((r.flows_adopted, r.replies_adopted), (32, 32), "{r:?}");
    assert_eq!(p.w.flows6(), 32);
    for &(cport, be, sport) in &flows {
        let (v, out) = p.run(0, &Pkt::new(CLIENT6, CLUSTER_IP6, tcp(cport, 8080, ACK | PSH)));
        assert!(matches!(v, Verdict::Forward { port: 1 }), "{v:?}");
        assert_eq!(tuple6(&out), (SNAT6, sport, be, 80));
        let reply = Pkt { dst_mac: GW_POD_MAC, ..Pkt::new(be, SNAT6, tcp(80, sport, ACK | PSH)) };
        let (v, out) = p.run(1, &reply);
        assert!(matches!(v, Verdict::Forward { port: 0 }), "{v:?}");
        assert_eq!(tuple6(&out), (CLUSTER_IP6, 8080, CLIENT6, cport));
    }
    assert_eq!(p.w.counters().picked_up, 0);
}

#[test]
fn each_worker_adopts_its_own_table_and_ports() {
    let dir = Dir::new("two");
    let cfg = config(&dir, 2, 1024);
    let run = |w: &mut Worker, shared: &Shared, in_port: u16, p: &Pkt| {
        let input = p.build();
        let mut buf = vec![0u8; 2048];
        buf[..input.len()].copy_from_slice(&input);
        let mut f = Frame::new(&mut buf, input.len(), in_port);
        w.process(&table(&desired(4), 1), &next_hops(1), &mut f, shared.now_ms());
        let (v, len) = (f.verdict, f.len);
        (v, buf[..len].to_vec())
    };
    let shared = Shared::open(cfg.clone()).unwrap();
    let mut ws = [Worker::new(0, Arc::clone(&shared)), Worker::new(1, Arc::clone(&shared))];
    // Worker w opens flows from client ports 50000 + 100 w + i; its SNAT
    // ports come from its own slice of the range.
    let mut flows = Vec::new();
    for (w, worker) in ws.iter_mut().enumerate() {
        for i in 0..16u16 {
            let cport = 50_000 + 100 * w as u16 + i;
            let (v, out) = run(worker, &shared, 0, &Pkt::new(CLIENT, VIP, tcp(cport, 8080, SYN)));
            assert!(matches!(v, Verdict::Forward { port: 1 }), "{v:?}");
            let (_, sport, be, _) = tuple(&out);
            assert_eq!(shared.reverse.owner_of(sport), Some(w as u16), "worker {w}'s slice");
            let synack = Pkt { dst_mac: GW_POD_MAC, ..Pkt::new(be, SNAT, tcp(80, sport, SYN | ACK)) };
            assert!(matches!(run(worker, &shared, 1, &synack).0, Verdict::Forward { port: 0 }));
            flows.push((w, cport, be, sport));
        }
    }
    drop(ws);
    drop(shared);
    let shared = Shared::open(cfg).unwrap();
    let r = shared.restart.clone().unwrap();
    assert_eq!((r.files_adopted, r.flows_adopted, r.replies_adopted), (6, 32, 32), "{r:?}");
    let mut ws = [Worker::new(0, Arc::clone(&shared)), Worker::new(1, Arc::clone(&shared))];
    assert_eq!((ws[0].flows(), ws[1].flows()), (16, 16));
    for &(w, cport, be, sport) in &flows {
        let (v, out) = run(&mut ws[w], &shared, 0, &Pkt::new(CLIENT, VIP, tcp(cport, 8080, ACK)));
        assert!(matches!(v, Verdict::Forward { port: 1 }), "{v:?}");
        assert_eq!(tuple(&out), (SNAT, sport, be, 80));
        // A reply is translated by either worker (the shared table).
        let reply = Pkt { dst_mac: GW_POD_MAC, ..Pkt::new(be, SNAT, tcp(80, sport, ACK)) };
        let (v, out) = run(&mut ws[1 - w], &shared, 1, &reply);
        assert!(matches!(v, Verdict::Forward { port: 0 }), "{v:?}");
        assert_eq!(tuple(&out), (VIP, 8080, CLIENT, cport));
    }
    assert_eq!(ws[0].counters().picked_up + ws[1].counters().picked_up, 0);
}
