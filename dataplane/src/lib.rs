//! The svcgate hot path.
//!
//! - [`wire`]: zero-copy packet wrappers and incremental checksums.
//! - [`nat`]: the per-frame pipeline (`process`): service lookup, Maglev,
//!   connection tracking, DNAT/SNAT and reverse NAT.
//! - [`dns_hook`]: UDP queries to the cluster DNS addresses answered in
//!   the worker, in the frame they arrived in.
//! - [`gateway`]: the assembled dataplane: AF_XDP workers running the NAT.
//! - [`pktgen`]: the packet generator and receiver behind `svcgate-pktgen`.
//! - [`privileges`]: dropping Linux capabilities once the dataplane is up.
//! - [`shm`]: state files mapped shared, so flow tables outlive the process.
//! - [`xsk`]: AF_XDP: the XDP steering program, UMEM and rings, the polling
//!   workers, the exception path and kernel next hops.

pub mod dns_hook;
pub mod gateway;
pub mod nat;
pub mod pktgen;
pub mod privileges;
pub mod shm;
pub mod wire;

#[cfg(feature = "testing")]
pub mod testing;
pub mod xsk;
