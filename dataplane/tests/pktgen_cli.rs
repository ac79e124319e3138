//! `svcgate-pktgen`'s command line, without network access (the netns run
//! is the root package's tests/pktgen_netns.rs). Being an integration test of
//! this package, it also makes `cargo test --workspace` build the binary
//! that test runs.

use std::process::Command;

fn pktgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_svcgate-pktgen")).args(args).output().expect("run svcgate-pktgen")
}

#[test]
fn help_lists_the_options() {
    let out = pktgen(&["tx", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in ["--dev", "--dst-ip", "--dst-mac", "--src-ip", "--src-port", "--dst-port", "--size", "--imix"] {
        assert!(help.contains(opt), "{opt} missing from tx --help");
    }
    for opt in ["--flows", "--rate", "--count", "--duration", "--threads", "--cpu", "--proto", "--burst"] {
        assert!(help.contains(opt), "{opt} missing from tx --help");
    }
    let out = pktgen(&["rx", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--duration"));
}

#[test]
fn bad_arguments_fail() {
    for args in [
        &["tx", "-i", "lo", "-d", "198.18.0.1", "-m", "02:00:00:00:00:01", "--size", "63"][..],
        &["tx", "-i", "lo", "-d", "198.18.0.9-198.18.0.1", "-m", "02:00:00:00:00:01"][..],
        &["tx", "-i", "lo", "-d", "198.18.0.1", "-m", "nonsense"][..],
        &["tx", "-i", "no-such-dev0", "-d", "198.18.0.1", "-m", "02:00:00:00:00:01", "-n", "1"][..],
        &["tx", "-i", "lo", "-d", "198.18.0.1", "-m", "02:00:00:00:00:01", "--threads", "0"][..],
    ] {
        let out = pktgen(args);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(!out.stderr.is_empty(), "{args:?} must say why");
    }
}
