//! Types shared by the svcgate control plane and dataplane.
//!
//! Nothing in this crate does I/O: it holds the desired-state model the control
//! plane produces ([`model`]), the immutable table set workers read ([`table`]),
//! address families ([`family`]), Maglev ([`maglev`]) and the deterministic
//! flow hashes ([`hash`]).

pub mod family;
pub mod hash;
pub mod maglev;
pub mod model;
pub mod publish;
pub mod table;
