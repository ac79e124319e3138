//! Errors of the AF_XDP control path (set-up, attach, map updates, netlink).
//! The hot path never returns errors: it counts.

use std::io;

/// Something went wrong setting up or steering AF_XDP.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// The crate was built on a machine without clang / BPF headers.
    #[error("built without the XDP program: run scripts/setup.sh and rebuild")]
    NoProgram,
    /// No such network interface (in this network namespace).
    #[error("no network interface named {name:?} in this network namespace")]
    UnknownInterface {
        /// The interface name asked for.
        name: String,
    },
    /// The BPF object could not be loaded (verifier, BTF, permissions).
    #[error("loading the XDP steering program failed (root or CAP_BPF+CAP_NET_ADMIN needed)")]
    Load(#[source] aya::EbpfError),
    /// A program or map the object should contain is missing.
    #[error("the XDP object has no {what} named {name:?}")]
    Missing {
        /// "program" or "map".
        what: &'static str,
        /// The name looked for.
        name: &'static str,
    },
    /// Attaching the XDP program failed in every mode tried.
    #[error("attaching XDP to {ifname} failed ({mode} mode)")]
    Attach {
        /// The interface.
        ifname: String,
        /// The last mode tried.
        mode: &'static str,
        /// The kernel's answer.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A BPF map operation failed.
    #[error("updating the steering map {map}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The kernel's answer.
        #[source]
        source: aya::maps::MapError,
    },
    /// Too many entries for a map.
    #[error("{what}: {got} entries, at most {max} supported")]
    TooMany {
        /// What overflowed.
        what: &'static str,
        /// Entries asked for.
        got: usize,
        /// Capacity.
        max: usize,
    },
    /// An AF_XDP socket operation failed.
    #[error("AF_XDP {op} on {ifname} queue {queue} failed")]
    Socket {
        /// The operation (socket, umem, fill/completion rings, rx/tx rings, bind).
        op: &'static str,
        /// Interface.
        ifname: String,
        /// Queue id.
        queue: u32,
        /// The kernel's answer (EPERM: not root; EAFNOSUPPORT: no AF_XDP in
        /// this kernel; EBUSY: another socket owns the queue; EINVAL: queue
        /// id past the interface's channel count).
        #[source]
        source: io::Error,
    },
    /// The UMEM could not be mapped.
    #[error("mapping {bytes} bytes of UMEM failed")]
    Mmap {
        /// Size asked for.
        bytes: usize,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Bad configuration.
    #[error("invalid AF_XDP configuration: {0}")]
    Config(String),
    /// A netlink request failed.
    #[error("netlink {op} failed")]
    Netlink {
        /// What was asked.
        op: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The exception-path TUN device could not be created.
    #[error("creating the exception-path TUN device {name:?} failed (needs /dev/net/tun and CAP_NET_ADMIN)")]
    Tun {
        /// Device name.
        name: String,
        /// Cause.
        #[source]
        source: tun::Error,
    },
    /// Spawning a worker thread failed.
    #[error("spawning worker thread {name}")]
    Spawn {
        /// Thread name.
        name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}
