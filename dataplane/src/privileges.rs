//! Least privilege after start-up: a thread gives up every Linux capability
//! it does not need any more, from its effective, permitted, inheritable
//! and ambient sets and from its bounding set.
//!
//! # What svcgate needs, and when
//! Setting the dataplane up needs root's powers in the node's network
//! namespace: loading the XDP program and creating its maps (`CAP_BPF`,
//! and `CAP_NET_ADMIN` for a networking program type), attaching it
//! (`CAP_NET_ADMIN`), AF_XDP sockets (`CAP_NET_RAW`), the UMEM above
//! `RLIMIT_MEMLOCK` (`CAP_IPC_LOCK`), TUN devices (`CAP_NET_ADMIN`),
//! SCHED_FIFO workers (`CAP_SYS_NICE`, only with `worker_rt_priority`).
//! Once it is up, the open file descriptors carry those rights: updating
//! the steering maps through their descriptors, sending on the XSKs and
//! writing to the TUN devices check no capability, and the BPF link is
//! released (the program detached) when its descriptor is closed. One
//! thing still needs a capability: asking the kernel to resolve a
//! neighbour (an `RTM_NEWNEIGH` request, `CAP_NET_ADMIN`), which the
//! housekeeping thread does. So:
//! - the housekeeping thread keeps `CAP_NET_ADMIN`, nothing else;
//! - every other thread (the main thread, the workers, and every thread
//!   started after the main thread dropped: the async runtime, the admin
//!   endpoint, the manifests watch, the kube source) keeps nothing, except
//!   `CAP_NET_BIND_SERVICE` when cluster DNS is configured: its control-path
//!   server binds port 53 from the async runtime's threads as the DNS
//!   addresses appear.
//!
//! The tests (`tests/faults.rs`) read each thread's `CapEff`, `CapPrm` and
//! `CapBnd` of a running `svcgate run`, and change the Services after the
//! drop to show that the steering maps still follow.
//!
//! # Capabilities are per thread
//! `capset(2)` and `PR_CAPBSET_DROP` change only the calling thread; a new
//! thread starts with a copy of its creator's sets. Each thread therefore
//! calls [`restrict_thread`] itself, and threads created afterwards inherit
//! the reduced sets.
//!
//! # Unsafe
//! The two system calls (`capget`/`capset` through `syscall(2)`) and
//! `prctl(2)` have no safe wrapper in the crates this workspace already
//! uses (`caps` is not available here). This module is one of the two
//! places outside the UMEM/ring module that use `unsafe` (the other is
//! `shm`, the state files' mappings), each block with its
//! `// SAFETY:` note; each call passes only integers or pointers to local,
//! properly sized `#[repr(C)]` values.
#![allow(unsafe_code)]

use std::fmt;

/// One Linux capability, by its number (`linux/capability.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap(pub u8);

impl Cap {
    /// `CAP_NET_BIND_SERVICE`: binding ports below 1024 (cluster DNS's 53).
    pub const NET_BIND_SERVICE: Cap = Cap(10);
    /// `CAP_NET_ADMIN`: network configuration (XDP attach, TUN, neighbours).
    pub const NET_ADMIN: Cap = Cap(12);
    /// `CAP_NET_RAW`: raw and AF_XDP sockets.
    pub const NET_RAW: Cap = Cap(13);
    /// `CAP_IPC_LOCK`: locking memory beyond `RLIMIT_MEMLOCK`.
    pub const IPC_LOCK: Cap = Cap(14);
    /// `CAP_SYS_ADMIN`.
    pub const SYS_ADMIN: Cap = Cap(21);
    /// `CAP_SYS_NICE`: real-time scheduling.
    pub const SYS_NICE: Cap = Cap(23);
    /// `CAP_PERFMON`.
    pub const PERFMON: Cap = Cap(38);
    /// `CAP_BPF`: BPF programs and maps.
    pub const BPF: Cap = Cap(39);

    /// The name as in `linux/capability.h`, for the ones svcgate talks about.
    pub fn name(self) -> String {
        match self.0 {
            10 => "CAP_NET_BIND_SERVICE".into(),
            12 => "CAP_NET_ADMIN".into(),
            13 => "CAP_NET_RAW".into(),
            14 => "CAP_IPC_LOCK".into(),
            21 => "CAP_SYS_ADMIN".into(),
            23 => "CAP_SYS_NICE".into(),
            38 => "CAP_PERFMON".into(),
            39 => "CAP_BPF".into(),
            n => format!("capability {n}"),
        }
    }
}

/// A set of capabilities as the kernel's 64-bit mask (bit n: capability n).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSet(pub u64);

impl CapSet {
    /// No capability.
    pub const EMPTY: CapSet = CapSet(0);

    /// The set of these capabilities.
    pub fn of(caps: &[Cap]) -> Self {
        CapSet(caps.iter().fold(0, |m, c| m | 1u64 << (c.0 & 63)))
    }

    /// True when `c` is in the set.
    pub fn contains(self, c: Cap) -> bool {
        self.0 >> (c.0 & 63) & 1 == 1
    }
}

impl fmt::Debug for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = (0..64u8).filter(|&n| self.0 >> n & 1 == 1).map(|n| Cap(n).name()).collect();
        write!(f, "{{{}}}", names.join(", "))
    }
}

/// A thread's capability sets, as `capget(2)` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCaps {
    /// Effective.
    pub effective: CapSet,
    /// Permitted.
    pub permitted: CapSet,
    /// Inheritable.
    pub inheritable: CapSet,
}

/// What [`restrict_thread`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restricted {
    /// The thread's sets afterwards.
    pub now: ThreadCaps,
    /// False when the bounding set could not be trimmed because the thread
    /// lacked `CAP_SETPCAP` (a container that did not grant it): the
    /// effective and permitted sets are reduced all the same, and the
    /// container's own bounding set applies.
    pub bounding_trimmed: bool,
}

/// Dropping capabilities failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// A system call failed.
    #[error("cannot drop capabilities: {call} failed")]
    Syscall {
        /// Which call.
        call: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two (capabilities
/// 0-31, then 32-63).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn join(d: &[CapData; 2], f: impl Fn(&CapData) -> u32) -> CapSet {
    CapSet(u64::from(f(&d[0])) | u64::from(f(&d[1])) << 32)
}

/// The calling thread's capability sets.
pub fn thread_caps() -> Result<ThreadCaps, PrivilegeError> {
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) with version 3 writes exactly two CapData structs
    // (the array is two long and #[repr(C)] as the kernel's) and reads the
    // header, both live locals; pid 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) };
    if r != 0 {
        return Err(PrivilegeError::Syscall { call: "capget", source: std::io::Error::last_os_error() });
    }
    Ok(ThreadCaps {
        effective: join(&data, |d| d.effective),
        permitted: join(&data, |d| d.permitted),
        inheritable: join(&data, |d| d.inheritable),
    })
}

/// `prctl(option, arg2, 0, 0, 0)`.
fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> libc::c_int {
    // SAFETY: the options used here (PR_CAPBSET_READ, PR_CAPBSET_DROP,
    // PR_CAP_AMBIENT with CLEAR_ALL, PR_SET_NO_NEW_PRIVS) take integers
    // only and touch no memory of ours.
    unsafe { libc::prctl(option, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) }
}

/// The highest capability number the kernel knows.
fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

/// The calling thread's bounding set.
pub fn bounding_set() -> CapSet {
    CapSet((0..=last_cap()).filter(|&c| prctl(libc::PR_CAPBSET_READ, c.into()) == 1).fold(0, |m, c| m | 1 << c))
}

/// Reduces the calling thread's capabilities to `keep` (those of them it
/// has): effective = permitted = what it had of `keep`, inheritable and
/// ambient empty, the bounding set trimmed to `keep` (when the thread may:
/// see [`Restricted::bounding_trimmed`]), and `no_new_privs` set, so that
/// nothing this thread starts can gain privileges back through an
/// executable. Irreversible for the thread; threads it creates afterwards
/// inherit the result.
pub fn restrict_thread(keep: CapSet) -> Result<Restricted, PrivilegeError> {
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // the capset below removes.
    let mut bounding_trimmed = true;
    for c in 0..=last_cap() {
        if keep.contains(Cap(c)) || prctl(libc::PR_CAPBSET_READ, c.into()) != 1 {
            continue;
        }
        if prctl(libc::PR_CAPBSET_DROP, c.into()) != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                bounding_trimmed = false;
                break;
            }
            return Err(PrivilegeError::Syscall { call: "prctl(PR_CAPBSET_DROP)", source: e });
        }
    }
    // Ambient capabilities (kernel 4.3+; EINVAL before, when there are none).
    // SAFETY: integers only, as in `prctl`.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(PrivilegeError::Syscall { call: "prctl(PR_CAP_AMBIENT_CLEAR_ALL)", source: e });
        }
    }
    let cur = thread_caps()?;
    let kept = cur.permitted.0 & keep.0;
    let word = |m: u64, i: usize| (m >> (32 * i)) as u32;
    let data: [CapData; 2] =
        std::array::from_fn(|i| CapData { effective: word(kept, i), permitted: word(kept, i), inheritable: 0 });
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // SAFETY: capset(2) with version 3 reads the header and exactly two
    // CapData structs (#[repr(C)] as the kernel's), both live locals; pid 0
    // is the calling thread. Lowering the permitted set needs no privilege.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(PrivilegeError::Syscall { call: "capset", source: std::io::Error::last_os_error() });
    }
    if prctl(libc::PR_SET_NO_NEW_PRIVS, 1) != 0 {
        return Err(PrivilegeError::Syscall {
            call: "prctl(PR_SET_NO_NEW_PRIVS)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Restricted { now: thread_caps()?, bounding_trimmed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capset_names_and_membership() {
        let s = CapSet::of(&[Cap::NET_ADMIN, Cap::BPF]);
        assert_eq!(s.0, 1 << 12 | 1 << 39);
        assert!(s.contains(Cap::NET_ADMIN) && s.contains(Cap::BPF) && !s.contains(Cap::NET_RAW));
        assert_eq!(format!("{s:?}"), "{CAP_NET_ADMIN, CAP_BPF}");
        assert_eq!(format!("{:?}", CapSet::EMPTY), "{}");
    }

    #[test]
    fn a_restricted_thread_keeps_only_what_it_asked_for() {
        // In a thread of its own: the change is per thread and irreversible.
        let before = thread_caps().unwrap();
        let r = std::thread::spawn(|| {
            let r = restrict_thread(CapSet::of(&[Cap::NET_ADMIN])).unwrap();
            (r, bounding_set())
        })
        .join()
        .unwrap();
        let (r, bset) = r;
        let want = CapSet(before.permitted.0 & 1 << 12);
        assert_eq!(r.now.effective, want, "{r:?}");
        assert_eq!(r.now.permitted, want, "{r:?}");
        assert_eq!(r.now.inheritable, CapSet::EMPTY);
        if r.bounding_trimmed {
            assert_eq!(bset.0 & !(1 << 12), 0, "bounding set {bset:?}");
        }
        // This thread is untouched.
        assert_eq!(thread_caps().unwrap(), before);
    }
}
