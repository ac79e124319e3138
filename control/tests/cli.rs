//! The `svcgate` binary run as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn svcgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svcgate")).args(args).output().expect("run svcgate")
}

fn path(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel).display().to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_each_docs_example_alone_succeeds() {
    let want = [
        ("nginx-svc.yaml", "nginx   ClusterIP   10.247."),
        ("nodeport.yaml", "8080:30120/TCP"),
        ("loadbalancer.yaml", "10.78.42.242   80:30120/TCP"),
        ("headless.yaml", "nginx-headless   ClusterIP   None"),
        ("deployment.yaml", "NAME   TYPE"),
    ];
    for (file, needle) in want {
        let p: PathBuf = Path::new(&path("tests/fixtures/docs")).join(file);
        let out = svcgate(&["validate", p.to_str().unwrap(), "--service-cidr", "10.247.0.0/16"]);
        let (so, se) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{file}: {se}");
        assert!(so.contains(needle), "{file}: {so}");
    }
}

#[test]
fn validate_docs_together_reports_the_clash_and_fails() {
    let out = svcgate(&["validate", &path("tests/fixtures/docs"), "--service-cidr", "10.247.0.0/16"]);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("nginx-svc.yaml:1: Service \"default/nginx\" already exists"), "{se}");
    assert!(se.contains("nodeport.yaml:1: Service \"default/nodeport-service\" is invalid: spec.ports[0].nodePort: Invalid value: 30120: provided port is already allocated"), "{se}");
    assert!(se.contains("skipped: apps/v1 Deployment \"nginx\""), "{se}");
    // The rest is still shown.
    assert!(so.contains("nginx-headless"), "{so}");
}

#[test]
fn validate_bundled_example_prints_kubectl_tables() {
    let out = svcgate(&[
        "validate",
        &path("../examples/manifests"),
        "--service-cidr",
        "198.18.128.0/20",
        "--node-ip",
        "198.18.1.1",
    ]);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{se}");
    let lines: Vec<&str> = so.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].ends_with("PORT(S)"), "{so}");
    assert!(so.contains("8080:30120/TCP"));
    assert!(so.contains("198.19.0.100   80:30121/TCP"));
    assert!(so.contains("None"));
    assert!(so.contains("7/UDP"));
    assert!(so.contains("198.18.3.10:80,198.18.3.11:80,198.18.3.12:80"));
    assert!(so.contains("198.18.3.10:7,198.18.3.11:7,198.18.3.12:7"));
}

#[test]
fn validate_missing_path_fails_cleanly() {
    let out = svcgate(&["validate", "/nonexistent/svcgate-manifests"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/svcgate-manifests: cannot read"));
}

#[test]
fn dns_export_prints_the_bundled_example_as_a_zone_file() {
    let out = svcgate(&["dns", "export", &path("../examples/manifests"), "--service-cidr", "198.18.128.0/20"]);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{se}");
    assert!(so.starts_with("$ORIGIN cluster.local.\n$TTL 5\ncluster.local. 5 IN SOA ns.dns.cluster.local. "), "{so}");
    for line in [
        // The StatefulSet-shaped Pods under the headless Service.
        "nginx-0.nginx-headless.default.svc.cluster.local. 5 IN A 198.18.3.10",
        "nginx-2.nginx-headless.default.svc.cluster.local. 5 IN A 198.18.3.12",
        "nginx-headless.default.svc.cluster.local. 5 IN A 198.18.3.11",
        "_nginx._tcp.nginx-headless.default.svc.cluster.local. 5 IN SRV 0 33 80 nginx-1.nginx-headless.default.svc.cluster.local.",
        "_service0._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 100 8080 nginx.default.svc.cluster.local.",
        "_echo._udp.udp-echo.default.svc.cluster.local. 5 IN SRV 0 100 7 udp-echo.default.svc.cluster.local.",
    ] {
        assert!(so.lines().any(|l| l == line), "{line} not in\n{so}");
    }
    assert!(so.lines().any(|l| l.starts_with("nginx.default.svc.cluster.local. 5 IN A 198.18.1")), "{so}");

    let out = svcgate(&[
        "dns",
        "export",
        &path("../examples/manifests"),
        "--zone",
        "Example.Test.",
        "--ttl",
        "30",
        "--reverse",
        "v4",
    ]);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(so.starts_with("$ORIGIN in-addr.arpa.\n$TTL 30\n"), "{so}");
    assert!(
        so.contains("10.3.18.198.in-addr.arpa. 30 IN PTR nginx-0.nginx-headless.default.svc.example.test.\n"),
        "{so}"
    );
}

#[test]
fn dns_export_rejects_a_bad_zone_and_reports_bad_objects() {
    let out = svcgate(&["dns", "export", &path("../examples/manifests"), "--zone", "a..b"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("\"a..b\" is not a domain name: an empty label"), "{}", text(&out.stderr));
    // The docs' clash: the rest is exported, the error named, exit code 1.
    let out = svcgate(&["dns", "export", &path("tests/fixtures/docs"), "--service-cidr", "10.247.0.0/16"]);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("already exists"), "{se}");
    assert!(so.contains("\nnginx.default.svc.cluster.local. 5 IN A 10.247."), "{so}");
    assert!(!so.contains("nodeport-service"), "{so}");
}

/// `svcgate validate DIR | head -1`: the reader closes the pipe after one
/// line; svcgate stops quietly (exit 0, no panic message), as `cat` does.
#[test]
fn validate_into_a_closed_pipe_exits_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = std::env::temp_dir().join(format!("svcgate-cli-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Enough Services that the tables outgrow the pipe's 64 KiB buffer.
    let yaml: String = (0..3000)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  clusterIP: 198.18.{}.{}\n  \
                 ports: [{{port: 80}}]\n---\n",
                128 + i / 250,
                1 + i % 250
            )
        })
        .collect();
    std::fs::write(dir.join("many.yaml"), yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_svcgate"))
        .args(["validate", dir.to_str().unwrap(), "--service-cidr", "198.18.128.0/20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run svcgate");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    // The reader is dropped here: the pipe is closed.
    let out = child.wait_with_output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let se = text(&out.stderr);
    assert!(first.starts_with("NAME"), "{first}");
    assert!(!se.contains("panicked"), "{se}");
    assert_eq!(out.status.code(), Some(0), "{se}");
}
