//! Real UDP and TCP through svcgate's AF_XDP layer between veth namespaces:
//! client -- gw (AF_XDP sockets, kernel forwarding off) -- server, with one
//! and two queues; Pass / Drop / Reply verdicts; non-steered traffic still
//! reaching the gateway's kernel; SIGKILL leaving the gateway reachable.
//! Needs root (see tests/netns/mod.rs).

mod netns;

use std::time::Duration;

use netns::{field, require_root, TwoArm, CLIENT_IP, GW_CLIENT_SIDE_IP, SERVER_IP};

#[test]
#[ignore = "child process entry, run by the tests themselves"]
fn child_entry() {
    netns::child_main();
}

const UDP_PORT: &str = "7777";
const TCP_PORT: &str = "7778";

fn forwarder_env(queues: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SG_MODE", "l2fwd".into()),
        ("SG_IFACES", "g0,g1".into()),
        ("SG_QUEUES", queues.into()),
        ("SG_PEERS", format!("{CLIENT_IP},{SERVER_IP}")),
        ("SG_FRONTENDS", format!("{SERVER_IP}:udp:{UDP_PORT},{SERVER_IP}:tcp:{TCP_PORT}")),
        ("SG_SNAT", CLIENT_IP.into()),
    ]
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

/// Runs `count` UDP and `count` TCP exchanges client -> server through the
/// gateway; returns the forwarder's STATS lines.
fn forward_udp_tcp(tag: &str, queues: u32, count: usize) -> Vec<String> {
    let mut t = TwoArm::new(tag, queues);
    let (srv, cli, gw) = (t.server.clone(), t.client.clone(), t.gw.clone());
    let mut udp = t.lab.spawn(&srv, "udp-echo", &[("SG_BIND", &format!("{SERVER_IP}:{UDP_PORT}"))]);
    udp.expect_line("READY");
    let mut tcp = t.lab.spawn(&srv, "tcp-echo", &[("SG_BIND", &format!("{SERVER_IP}:{TCP_PORT}"))]);
    tcp.expect_line("READY");

    // Without svcgate the gateway does not forward (ip_forward=0).
    let out = t.lab.exec(&cli, &["ping", "-c1", "-W1", SERVER_IP]);
    assert!(!out.status.success(), "the gateway's kernel must not forward");

    let env = forwarder_env(&queues.to_string());
    let mut f = t.lab.spawn(&gw, "forwarder", &as_refs(&env));
    let ready = f.expect_line("READY");
    eprintln!("{ready}");

    let n = count.to_string();
    let mut uc = t.lab.spawn(&cli, "udp-client", &[("SG_DST", &format!("{SERVER_IP}:{UDP_PORT}")), ("SG_COUNT", &n)]);
    let uok = uc.expect_line("OK");
    assert!(t.lab.wait(&mut uc, Duration::from_secs(60)), "UDP through svcgate: {uok}");
    let mut tc = t.lab.spawn(&cli, "tcp-client", &[("SG_DST", &format!("{SERVER_IP}:{TCP_PORT}")), ("SG_COUNT", &n)]);
    let tok = tc.expect_line("OK");
    assert!(t.lab.wait(&mut tc, Duration::from_secs(60)), "TCP through svcgate: {tok}");

    // Non-steered traffic still reaches the gateway's kernel: ping (ICMP)
    // and ARP on both sides.
    let out = t.lab.exec(&cli, &["ping", "-c2", "-W1", GW_CLIENT_SIDE_IP]);
    assert!(out.status.success(), "ping to the gateway with svcgate running");
    let neigh = t.lab.exec_ok(&cli, &["ip", "neigh", "show", GW_CLIENT_SIDE_IP]);
    assert!(neigh.contains("lladdr"), "ARP for the gateway resolved by its kernel: {neigh}");

    f.close_stdin();
    let mut stats = Vec::new();
    for _ in 0..queues {
        stats.push(f.expect_line("STATS"));
    }
    assert!(t.lab.wait(&mut f, Duration::from_secs(10)));
    let link = t.lab.exec_ok(&gw, &["ip", "link", "show", "dev", "g0"]);
    assert!(!link.contains("xdp"), "detached on exit: {link}");
    for s in &stats {
        eprintln!("{s}");
    }
    let rx: u64 = stats.iter().map(|s| field(s, "rx")).sum();
    let tx: u64 = stats.iter().map(|s| field(s, "tx")).sum();
    let dropped: u64 = stats.iter().map(|s| field(s, "dropped")).sum();
    assert!(rx >= 4 * count as u64, "every exchange crossed svcgate twice at least: rx={rx}");
    assert_eq!(rx, tx, "everything received was forwarded");
    assert_eq!(dropped, 0);
    stats
}

#[test]
fn xsk_forward_udp_tcp_one_queue() {
    if !require_root("xsk_forward_udp_tcp_one_queue") {
        return;
    }
    forward_udp_tcp("fw1", 1, 8);
}

#[test]
fn xsk_forward_udp_tcp_two_queues() {
    if !require_root("xsk_forward_udp_tcp_two_queues") {
        return;
    }
    let stats = forward_udp_tcp("fw2", 2, 24);
    // 48 flows hashed over 2 TX queues of the client: both workers see
    // traffic (all on one queue has probability ~2^-47).
    for s in &stats {
        assert!(field(s, "rx") > 0, "each queue's worker forwarded something: {stats:?}");
    }
}

#[test]
fn xsk_verdicts_pass_drop_reply() {
    if !require_root("xsk_verdicts_pass_drop_reply") {
        return;
    }
    let mut t = TwoArm::new("verd", 1);
    let (cli, gw) = (t.client.clone(), t.gw.clone());
    // A kernel UDP echo on the gateway itself: reachable only through the
    // exception path once 9999 is steered.
    let mut echo = t.lab.spawn(&gw, "udp-echo", &[("SG_BIND", "0.0.0.0:9999")]);
    echo.expect_line("READY");
    let fr = format!("{g}:udp:9999,{g}:udp:9998,{g}:udp:9997", g = GW_CLIENT_SIDE_IP);
    let mut f = t.lab.spawn(&gw, "forwarder", &[("SG_MODE", "mixed"), ("SG_IFACES", "g0"), ("SG_FRONTENDS", &fr)]);
    f.expect_line("READY");

    // Pass: redirected to user space, injected through TUN, answered by the
    // gateway kernel's socket.
    let mut c = t.lab.spawn(&cli, "udp-client", &[("SG_DST", &format!("{GW_CLIENT_SIDE_IP}:9999")), ("SG_COUNT", "3")]);
    let l = c.expect_line("OK");
    assert!(t.lab.wait(&mut c, Duration::from_secs(30)), "Pass via the exception path: {l}");
    // Reply: reflected by the handler.
    let mut c = t.lab.spawn(&cli, "udp-client", &[("SG_DST", &format!("{GW_CLIENT_SIDE_IP}:9997")), ("SG_COUNT", "3")]);
    let l = c.expect_line("OK");
    assert!(t.lab.wait(&mut c, Duration::from_secs(30)), "Reply verdict: {l}");
    // Drop: no answer.
    let mut c = t.lab.spawn(&cli, "udp-client", &[("SG_DST", &format!("{GW_CLIENT_SIDE_IP}:9998")), ("SG_COUNT", "1")]);
    let l = c.expect_line("OK");
    assert_eq!(l, "OK 0", "Drop verdict answered");
    t.lab.wait(&mut c, Duration::from_secs(30));

    f.close_stdin();
    let s = f.expect_line("STATS");
    eprintln!("{s}");
    assert!(t.lab.wait(&mut f, Duration::from_secs(10)));
    assert!(field(&s, "passed") >= 3, "{s}");
    assert_eq!(field(&s, "pass_failed"), 0, "{s}");
    assert!(field(&s, "dropped") >= 3, "{s}");
    assert!(field(&s, "tx") >= 3, "{s}");
}

#[test]
fn xsk_sigkill_leaves_gateway_reachable() {
    if !require_root("xsk_sigkill_leaves_gateway_reachable") {
        return;
    }
    let mut t = TwoArm::new("kill", 1);
    let (cli, gw) = (t.client.clone(), t.gw.clone());
    let mut echo = t.lab.spawn(&gw, "udp-echo", &[("SG_BIND", "0.0.0.0:9999")]);
    echo.expect_line("READY");
    let fr = format!("{GW_CLIENT_SIDE_IP}:udp:9999");
    let env = [("SG_MODE", "mixed"), ("SG_IFACES", "g0"), ("SG_FRONTENDS", fr.as_str())];
    let f = {
        let mut f = t.lab.spawn(&gw, "forwarder", &env);
        f.expect_line("READY");
        f
    };
    t.lab.kill(&f); // SIGKILL: no cleanup code runs

    // The BPF link died with the process: nothing steers any more, the
    // gateway's kernel answers everything.
    let link = t.lab.exec_ok(&gw, &["ip", "link", "show", "dev", "g0"]);
    assert!(!link.contains("xdp"), "program outlived its process: {link}");
    let out = t.lab.exec(&cli, &["ping", "-c2", "-W1", GW_CLIENT_SIDE_IP]);
    assert!(out.status.success(), "gateway unreachable after SIGKILL");
    let mut c = t.lab.spawn(&cli, "udp-client", &[("SG_DST", &format!("{GW_CLIENT_SIDE_IP}:9999")), ("SG_COUNT", "2")]);
    c.expect_line("OK");
    assert!(t.lab.wait(&mut c, Duration::from_secs(30)), "the formerly steered port is served by the kernel");

    // The next start works (and serves again).
    let mut f2 = t.lab.spawn(&gw, "forwarder", &env);
    f2.expect_line("READY");
    let mut c = t.lab.spawn(&cli, "udp-client", &[("SG_DST", &format!("{GW_CLIENT_SIDE_IP}:9999")), ("SG_COUNT", "2")]);
    c.expect_line("OK");
    assert!(t.lab.wait(&mut c, Duration::from_secs(30)));
    f2.close_stdin();
    let s = f2.expect_line("STATS");
    assert!(field(&s, "passed") >= 2, "restarted instance handled the traffic: {s}");
    assert!(t.lab.wait(&mut f2, Duration::from_secs(10)));
}
