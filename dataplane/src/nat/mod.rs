//! The NAT pipeline: service lookup, Maglev, connection tracking, DNAT/SNAT
//! and reverse NAT, as one pure function per frame batch
//! ([`Worker::process_batch`]) that the AF_XDP workers call and the tests and
//! benches drive directly with frames in memory.
//!
//! - [`pipeline`]: the per-frame decision and rewrite.
//! - [`conntrack`]: the per-worker flow table.
//! - [`reverse`]: the shared SNAT-port-indexed reply table, and why replies
//!   are handled this way with several workers.
//! - [`restart`]: the tables kept in a state directory, adopted by the
//!   next process (restart and upgrade).
//! - [`nexthop`]: ports, routes and neighbours the caller provides.
//! - [`verdict`]: verdicts and the pass/drop reasons that are counted.

pub mod conntrack;
pub mod nexthop;
pub mod pipeline;
pub mod restart;
pub mod reverse;
mod verdict;

pub use conntrack::KeyHasher;
pub use nexthop::{NextHop, NextHops, PortInfo, Resolution};
pub use pipeline::{Counters, NatConfig, ServiceCounter, Shared, Timeouts, Worker, MAX_BATCH};
pub use reverse::{ReverseError, ReverseTable};
pub use verdict::{DropReason, Frame, PassReason, Verdict};
