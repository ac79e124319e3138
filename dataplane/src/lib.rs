//! The svcgate hot path.
//!
//! - [`wire`]: zero-copy packet wrappers and incremental checksums.
//! - [`nat`]: the per-frame pipeline (`process`): service lookup, Maglev,
//!   connection tracking, DNAT/SNAT and reverse NAT.

pub mod nat;
pub mod wire;

#[cfg(feature = "testing")]
pub mod testing;
