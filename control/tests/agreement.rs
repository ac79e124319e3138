//! Stateless agreement across gateways: two `svcgate` processes given the
//! same desired state build byte-identical Maglev tables, whatever the
//! order, names and layout of the manifest files (so in a fleet behind
//! ECMP any gateway picks the same backend for a flow, docs/FLEET.md).

use std::path::{Path, PathBuf};
use std::process::Command;

const CIDRS: &str = "198.18.128.0/20,2001:2:0:8000::/112";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests")
}

/// `svcgate debug maglev --slots` over `paths`, in its own process.
fn dump(paths: &[&Path]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_svcgate"))
        .args(["debug", "maglev", "--slots", "--service-cidr", CIDRS, "--node-ip", "198.18.1.1"])
        .args(paths)
        .output()
        .expect("run svcgate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn two_processes_build_byte_identical_maglev_tables() {
    let a = dump(&[&examples()]);
    // The same objects, the files reversed, renamed and nested.
    let dir = tempfile::tempdir().unwrap();
    for (i, f) in manifest_files().iter().rev().enumerate() {
        let sub = dir.path().join(format!("d{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(f, sub.join(format!("{i:02}-{}", f.file_name().unwrap().to_string_lossy()))).unwrap();
    }
    let b = dump(&[dir.path()]);
    // And every document in one file, in reverse order.
    let one = tempfile::tempdir().unwrap();
    let mut docs: Vec<String> = Vec::new();
    for f in manifest_files() {
        for d in std::fs::read_to_string(&f).unwrap().split("\n---") {
            if d.trim().lines().any(|l| l.starts_with("kind:")) {
                docs.push(d.trim_start_matches('-').trim().to_string());
            }
        }
    }
    docs.reverse();
    std::fs::write(one.path().join("all.yaml"), docs.join("\n---\n")).unwrap();
    let c = dump(&[one.path()]);

    assert!(a.contains("ipv4 default/nginx 8080/TCP") && a.contains("ipv6 default/nginx 8080/TCP"), "{a}");
    assert!(a.lines().filter(|l| l.starts_with("ipv")).count() >= 4, "{a}");
    // Every table has its backends spread over it (more than one distinct backend).
    assert!(a.contains("198.18.3.10:80") && a.contains("198.18.3.12:80"), "{a}");
    assert_eq!(a, b, "reversed and nested files gave another table");
    assert_eq!(a, c, "one reversed multi-document file gave another table");
}

#[test]
fn the_digest_follows_the_endpoints() {
    // Without one Pod the tables differ: the comparison above can fail.
    let all = dump(&[&examples()]);
    let dir = tempfile::tempdir().unwrap();
    for f in manifest_files() {
        if !f.ends_with("pod-nginx-2.yaml") {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    let fewer = dump(&[dir.path()]);
    let digest = |s: &str, svc: &str| {
        s.lines().find(|l| l.starts_with(svc)).and_then(|l| l.split("fnv64=").nth(1)).unwrap().to_string()
    };
    assert_ne!(digest(&all, "ipv4 default/nginx 8080/TCP"), digest(&fewer, "ipv4 default/nginx 8080/TCP"));
    assert!(!fewer.contains("198.18.3.12:80"), "{fewer}");
}
