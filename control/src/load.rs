//! Loading a manifests directory in one go: files -> objects -> desired state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::LoadError;
use crate::manifest::{self, ParsedFile, Skipped, Sourced};
use crate::resolve::{self, Allocations, ResolveConfig, Resolved};

/// The outcome of loading some paths once.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The resolved state, with the resolution's errors.
    pub resolved: Resolved,
    /// Documents of kinds svcgate does not serve.
    pub skipped: Vec<Skipped>,
    /// Every error: files' and documents' first, then the objects'.
    pub errors: Vec<LoadError>,
}

/// The parsed files of a manifests tree, by path (sorted: the priority order).
pub fn parse_paths(paths: &[PathBuf]) -> (BTreeMap<PathBuf, ParsedFile>, Vec<LoadError>) {
    let mut files = BTreeMap::new();
    let mut errors = Vec::new();
    for p in paths {
        match manifest::manifest_files(p) {
            Ok(list) => {
                for f in list {
                    let parsed = manifest::load_file(&f);
                    files.insert(f, parsed);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (files, errors)
}

/// Loads files and directories once (what `svcgate validate` does).
pub fn load_paths(paths: &[PathBuf], cfg: &ResolveConfig) -> LoadReport {
    let (files, mut errors) = parse_paths(paths);
    let mut objects: Vec<Sourced> = Vec::new();
    let mut skipped = Vec::new();
    for f in files.values() {
        objects.extend(f.objects.iter().cloned());
        skipped.extend(f.skipped.iter().cloned());
        errors.extend(f.errors.iter().cloned());
    }
    let resolved = resolve::resolve(&objects, cfg, &Default::default(), &Allocations::default());
    errors.extend(resolved.errors.iter().cloned());
    LoadReport { resolved, skipped, errors }
}

/// Loads one directory (convenience for tests and examples).
pub fn load_dir(dir: &Path, cfg: &ResolveConfig) -> LoadReport {
    load_paths(&[dir.to_path_buf()], cfg)
}
