//! Replays the checked-in corpus (`fuzz/corpus/<target>/*`), the crashes
//! found (`fuzz/regressions/<target>/*`) and the generated seeds through the
//! targets, without AFL: what CI runs of the fuzzing.
//!
//! A regression named `open-*` is a finding reported but not fixed yet: it
//! is expected to fail (panic) until the fix lands, then renamed.

use std::path::Path;

use svcgate_fuzz::targets;

fn files(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut v = Vec::new();
    for target in targets::NAMES {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else { continue };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                v.push((target.to_owned(), p));
            }
        }
    }
    v.sort();
    v
}

fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let all = files(&root);
    for (target, path) in &all {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("{target} {}", path.display());
        let open = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("open-"));
        if open {
            // A finding reported and not fixed yet: it must still fail, so
            // that its fix is noticed and the file renamed (without the
            // `open-` prefix it then guards against a relapse).
            let failed = std::panic::catch_unwind(|| targets::run(target, &data)).is_err();
            assert!(failed, "{} passes now: rename it without `open-`", path.display());
        } else {
            assert!(targets::run(target, &data));
        }
    }
    all.len()
}

#[test]
fn corpus_replays() {
    let n = replay("corpus");
    // Every target has seeds.
    for t in targets::NAMES {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(t);
        assert!(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) > 0, "no seeds for {t}");
    }
    assert!(n > 0);
}

#[test]
fn regressions_replay() {
    replay("regressions");
}

#[test]
fn generated_seeds_replay() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace");
    for (target, name, data) in svcgate_fuzz::seeds::all(repo) {
        eprintln!("{target} {name}");
        assert!(targets::run(target, &data));
    }
}

#[test]
fn empty_and_tiny_inputs() {
    for t in targets::NAMES {
        for data in [&b""[..], b"\x00", b"\xff", b"\x00\x00\x00\x00"] {
            assert!(targets::run(t, data));
        }
    }
}

/// The lab is dual-stack: every setup flow, IPv4 and IPv6, is forwarded
/// (a world where the IPv6 ones were dropped would fuzz nothing of IPv6's
/// fast path and reverse table), in both gateway modes.
#[test]
fn setup_flows_of_both_families_are_forwarded() {
    use svcgate_common::model::ForwardingMode;
    use svcgate_fuzz::lab::{self, Lab, World};
    use svcgate_fuzz::targets::frames::{setup, setup_packets};
    let lab = Lab::get();
    let (table, hops) = (lab.table(0, 1), lab::hops(0, 1));
    for mode in [ForwardingMode::Snat, ForwardingMode::Dnat] {
        let mut w = World::new(lab::config(mode, 1, lab::SMALL_CT), true);
        let forwarded = setup(&mut w, &table, &hops, lab::START_MS);
        assert_eq!(forwarded.len(), setup_packets().len(), "{mode:?}");
        let v6 = forwarded.iter().filter(|f| f[12..14] == [0x86, 0xdd]).count();
        assert_eq!(v6, 3, "{mode:?}: the IPv6 setup flows");
        // Their answers were translated back (the reverse table has them).
        assert!(w.workers[0].counters().reverse_translated >= 9, "{:?}", w.workers[0].counters());
    }
}
