//! The NAT pipeline (work in progress on this branch).

mod verdict;

pub use verdict::{DropReason, Frame, PassReason, Verdict};
