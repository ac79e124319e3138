//! Writes the seed corpus: `svcgate-fuzz-seeds [DIR]` (default: this
//! crate's `corpus/`), one directory per target. Reproducible: the same
//! sources give the same files.

use std::path::{Path, PathBuf};

fn main() -> std::io::Result<()> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| crate_dir.join("corpus"));
    let repo = crate_dir.parent().unwrap_or(crate_dir);
    let seeds = svcgate_fuzz::seeds::all(repo);
    for (target, name, bytes) in &seeds {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
    }
    println!("wrote {} seeds to {}", seeds.len(), out.display());
    Ok(())
}
