//! `svcgate-pktgen` between two network namespaces over a veth pair: `rx`
//! in one, `tx` in the other; every frame must arrive, in order, with a sane
//! latency. Needs root (see tests/netns/mod.rs) and the binary beside this
//! test's (`cargo test --workspace` builds it; alone: `cargo build -p
//! svcgate-dataplane --bin svcgate-pktgen`).

mod netns;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use netns::{require_root, skip_unless, Lab};

#[test]
#[ignore = "child process entry, run by the tests themselves"]
fn child_entry() {
    netns::child_main();
}

/// `target/<profile>/svcgate-pktgen` (a binary of the dataplane crate, so no
/// `CARGO_BIN_EXE_` here), or `None` after a skip.
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

/// The `rx` process, SIGKILLed if still running when dropped.
struct Rx(Child);

impl Drop for Rx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn field_f64(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn pktgen_tx_to_rx_no_loss() {
    const T: &str = "pktgen_tx_to_rx_no_loss";
    if !require_root(T) {
        return;
    }
    let Some(bin) = pktgen_binary(T) else { return };
    let mut lab = Lab::new("pktgen");
    let txns = lab.netns("tx");
    let rxns = lab.netns("rx");
    lab.veth(&txns, "pg0", &rxns, "pg1", 1);
    lab.ip(&txns, "addr add 198.18.7.2/24 dev pg0");
    lab.ip(&rxns, "addr add 198.18.7.1/24 dev pg1");
    let mac = lab.exec_ok(&rxns, &["cat", "/sys/class/net/pg1/address"]).trim().to_string();

    let child = Command::new("ip")
        .args(["netns", "exec", &rxns, &bin, "rx", "-i", "pg1", "--duration", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn rx");
    let mut rx = Rx(child);
    let mut out = BufReader::new(rx.0.stdout.take().expect("rx stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("rx ready line");
    assert!(line.starts_with("rx_ready"), "rx: {line:?}");

    // UDP, 64-byte frames, 100 flows; then TCP SYN IMIX from a second
    // generator id, two threads (its 64-byte SYNs, 7 of 12, carry no stamp).
    let runs: [(&str, &[&str], u64, u64); 2] = [
        ("1", &["--count", "10000", "--flows", "100"], 10_000, 10_000),
        ("2", &["--count", "3000", "--flows", "50", "--proto", "tcp-syn", "--imix", "--threads", "2"], 3_000, 1_250),
    ];
    for (id, extra, n, stamped) in runs {
        let mut argv = vec![bin.as_str(), "tx", "-i", "pg0", "-d", "198.18.7.1", "-m", &mac, "--src-ip", "198.18.7.2"];
        argv.extend_from_slice(&["--id", id]);
        argv.extend_from_slice(extra);
        let r = lab.run_bounded(&txns, &argv, Duration::from_secs(60));
        assert!(r.status.is_some_and(|s| s.success()), "tx {argv:?}: {r:?}");
        let last = r.stdout.lines().last().unwrap_or_default();
        assert_eq!(netns::field(last, "tx_packets"), n, "{last}");
        assert_eq!(netns::field(last, "tx_stamped"), stamped, "{last}");
        assert_eq!(netns::field(last, "wrong_format"), 0, "{last}");
    }
    // Let the last frames land, then SIGINT: rx must print its result.
    std::thread::sleep(Duration::from_millis(300));
    let st = Command::new("kill").args(["-INT", &rx.0.id().to_string()]).status().expect("kill");
    assert!(st.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("rx output");
    let status = rx.0.wait().expect("rx exit");
    assert!(status.success(), "rx exit {status:?}: {rest}");
    let last = rest.lines().last().unwrap_or_default();
    eprintln!("{last}");
    assert_eq!(netns::field(last, "rx_packets"), 11_250, "{last}");
    assert!(netns::field(last, "other_packets") >= 1_750, "the unstamped SYNs: {last}");
    assert_eq!(netns::field(last, "streams"), 3, "{last}");
    for k in ["lost", "reordered", "duplicates", "ring_drops"] {
        assert_eq!(netns::field(last, k), 0, "{k}: {last}");
    }
    let (p50, p99, max) = (field_f64(last, "lat_p50_us"), field_f64(last, "lat_p99_us"), field_f64(last, "lat_max_us"));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{last}");
    assert!(max < 1_000_000.0, "latency above a second: {last}");
}
