//! AF_XDP: the XDP steering program, UMEM and rings, polling workers, the
//! exception path to the kernel, and kernel next-hop state over netlink.
//! See docs/AF_XDP.md for the design.
//!
//! Typical set-up (per worker, in the gateway's network namespace):
//!
//! ```no_run
//! # use std::sync::{Arc, atomic::AtomicBool};
//! # use svcgate_dataplane::xsk::*;
//! # struct H; impl BatchHandler for H { fn handle_batch(&mut self, _: &mut [svcgate_dataplane::nat::Frame<'_>]) {} }
//! # fn main() -> Result<(), XskError> {
//! let mut steer = Steering::attach("eth0", XdpMode::Auto)?;
//! steer.set_frontends(&[("198.18.0.10".parse().unwrap(), PROTO_TCP, 80)])?;
//! let ports = XskPorts::new(&XskConfig::default(), &[PortConfig::new("eth0", 0)])?;
//! let (_, queue, fd) = ports.socket(0);
//! steer.register_socket(queue, fd)?;
//! let stop = Arc::new(AtomicBool::new(false));
//! let worker = Worker::new(ports, H, stop.clone(), None, WorkerConfig::default());
//! let join = worker.spawn()?;
//! # Ok(()) }
//! ```

mod error;
mod exception;
mod netlink;
mod steer;
mod umem;
mod worker;

pub use error::XskError;
pub use exception::{ExceptionPath, InjectError};
pub use netlink::{
    ifindex, resolve_neighbour, xdp_attachment, xdp_detach_legacy, Interface, KernelNet, NeighState, Neighbour, Route,
    XdpAttachment,
};
pub use steer::{
    steer_object, SteerStats, Steering, XdpMode, MAX_FRONTENDS, MAX_QUEUES, MAX_SNAT_ADDRS, MAX_SOURCES, PROTO_TCP,
    PROTO_UDP,
};
pub use umem::{match_sigs2, prefetch, tsc, PortConfig, XskConfig, XskPorts, BATCH};
pub use worker::{stop_on_signals, tsc_hz, BatchHandler, StatsSnapshot, Worker, WorkerConfig, WorkerStats};
/// The ring descriptor [`XskPorts::transmit`] takes (xdpilone's).
pub use xdpilone::xdp::XdpDesc;
