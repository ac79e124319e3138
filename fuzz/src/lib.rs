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

/// Prepares the process for fuzzing, before the first input: what an AFL
/// binary calls ahead of `afl::fuzz!`, so that it runs once, in the fork
/// server, and not in the first input of every forked child.
///
/// - Every `ahash::RandomState` the process creates gets the same keys. The
///   AFL build (`--cfg fuzzing`) already fixes ahash's process-wide seeds;
///   the per-instance part comes from a counter that starts at an address
///   (so it differs per process under ASLR) and moves on with every new map.
///   The next-hop table, the Service table's frontend map and the DNS name
///   map are built anew per input (or per child), so the same input used to
///   hash into a different layout each time and take different edges (AFL's
///   "stability"). A fixed source makes every map hash alike; the results
///   never depended on it.
/// - The per-process tables (the frame targets' lab, the DNS target's
///   table) are built.
pub fn init() {
    struct Fixed;
    impl ahash::random_state::RandomSource for Fixed {
        fn gen_hasher_seed(&self) -> usize {
            0x5356_4347_4154_4521
        }
    }
    // Err: a RandomState was created already (then nothing is fixed; only
    // AFL's stability suffers) or the source is set.
    let _ = ahash::random_state::set_random_source(Fixed);
    lab::Lab::get();
    targets::dns::table();
}
