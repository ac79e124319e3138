//! Fuzz targets for svcgate, on stable Rust.
//!
//! Each target is a plain function of the input bytes in [`targets`] that
//! panics when an invariant breaks; the AFL binaries (`src/bin/afl_*.rs`,
//! feature `afl`) only wrap them in `afl::fuzz!`, and `tests/replay.rs` runs
//! the checked-in corpus and regressions through them in `cargo test`.
//! [`seeds`] builds that corpus (`cargo run -p svcgate-fuzz --bin
//! svcgate-fuzz-seeds`). How to run a campaign: docs/FUZZING.md.

pub mod lab;
pub mod seeds;
pub mod targets;
