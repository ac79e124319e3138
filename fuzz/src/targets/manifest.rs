//! The manifest loader: any bytes as a manifest file's text (non-UTF-8
//! input is read lossily; the loader itself rejects it earlier, when it
//! reads the file), through `manifest::parse_str`, the resolver and the
//! table build.
//!
//! Invariants: nothing panics; every error and warning formats; the
//! resolution's per-Service vectors line up; resolving the same objects
//! again with the first resolution's applied Services and allocations
//! (what the next reload does) gives the same desired state; the table
//! builds from it.

use std::net::Ipv4Addr;
use std::path::Path;

use svcgate_common::table::ServiceTable;
use svcgate_control::manifest::parse_str;
use svcgate_control::resolve::{resolve, Allocations, ResolveConfig};

/// See the module documentation.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let json = text.trim_start().starts_with(['{', '[']);
    let path = Path::new(if json { "fuzz.json" } else { "fuzz.yaml" });
    let parsed = parse_str(path, &text);
    for e in &parsed.errors {
        let _ = e.to_string();
    }
    let cfg = ResolveConfig::new("198.18.128.0/17".parse().expect("a CIDR"), vec![Ipv4Addr::new(198, 18, 1, 1)]);
    let r = resolve(&parsed.objects, &cfg, &Default::default(), &Allocations::default());
    assert_eq!(r.desired.services.len(), r.origins.len(), "one origin per Service");
    assert_eq!(r.desired.services.len(), r.plans.len(), "one endpoint plan per Service");
    for e in &r.errors {
        let _ = e.to_string();
    }
    for w in &r.warnings {
        let _ = w.to_string();
    }
    let again = resolve(&parsed.objects, &cfg, &r.applied, &r.allocations);
    assert_eq!(again.desired, r.desired, "a reload of the same objects changed the desired state");
    let (table, warnings) = ServiceTable::build(&r.desired, 1);
    for w in &warnings {
        let _ = w.to_string();
    }
    // At most one entry per port and family of each Service.
    assert!(table.entry_count() <= 2 * r.desired.services.iter().map(|s| s.ports.len()).sum::<usize>());
    for svc in &r.desired.services {
        assert!(svc.cluster_ips.len() <= 2, "{}: more than one cluster IP per family", svc.qualified_name());
    }
}
