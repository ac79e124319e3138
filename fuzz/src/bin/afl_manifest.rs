//! AFL entry point of the `manifest` target (feature `afl`; build with
//! `cargo afl build`, see scripts/fuzz.sh and docs/FUZZING.md).

fn main() {
    svcgate_fuzz::init();
    afl::fuzz!(|data: &[u8]| {
        svcgate_fuzz::targets::manifest(data);
    });
}
