//! The XDP steering program on a veth in a network namespace: attach and
//! detach in native and generic mode, map updates, replacing a stale
//! program, and netlink next hops. Needs root (see tests/netns/mod.rs).

mod netns;

use std::process::Command;
use std::time::Duration;

use netns::{field, require_root, Lab};

#[test]
#[ignore = "child process entry, run by the tests themselves"]
fn child_entry() {
    netns::child_main();
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
