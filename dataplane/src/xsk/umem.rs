//! UMEM and the four AF_XDP rings: the only place in svcgate with `unsafe`.
//!
//! # Ownership of chunks
//!
//! One [`XskPorts`] belongs to one worker thread. It owns one UMEM (an
//! anonymous mmap, on 2 MiB huge pages when the system has them) split into
//! `frame_size` chunks, and one AF_XDP socket per port (a port is an
//! `(interface, queue)` pair). All the sockets share the UMEM
//! (`XDP_SHARED_UMEM`), each with its own fill and completion ring, so a frame
//! received on one interface is transmitted on another by handing the same
//! chunk address to the other socket's TX ring: no copy, no allocation.
//!
//! Every chunk is, at any instant, in exactly one of these places:
//!
//! | where | owner |
//! |---|---|
//! | `free` stack (user space) | this struct |
//! | a fill ring, or the kernel's RX path | kernel |
//! | an RX ring entry not yet released | kernel until `release` |
//! | a received batch (between [`XskPorts::rx_burst`] and its disposal) | this struct (the worker) |
//! | a TX ring entry / in flight | kernel |
//! | a completion ring entry not yet released | kernel until `release` |
//!
//! A chunk leaves user space only through a fill or TX ring producer commit,
//! and comes back only through an RX or completion ring consumer read, so a
//! chunk the worker holds is never written by the kernel: that is what makes
//! the `&mut [u8]` of a [`Frame`] sound.
//!
//! # Memory ordering
//!
//! The ring indices are shared with the kernel. xdpilone implements the
//! protocol of `libxdp`'s `xsk.h`: the consumer reads the producer index with
//! `Acquire` before reading descriptors, and publishes its consumer index with
//! `Release` after it is done with them; the producer writes descriptors, then
//! publishes its producer index with `Release`. Ring flags
//! (`XDP_RING_NEED_WAKEUP`) are read relaxed after a full fence, as libxdp does.
//!
//! # Wake-ups
//!
//! Sockets are bound with `XDP_USE_NEED_WAKEUP`. The TX ring is kicked with a
//! zero-length `sendto` only when it holds entries the kernel has not consumed
//! and the kernel asked to be woken (in copy mode it always asks, and handles
//! a bounded number of frames per kick, so the kick is repeated on later
//! loop iterations while entries remain). The fill ring is woken with a
//! zero-timeout `poll` only after it was refilled and the flag is set.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

use super::XskError;
use crate::nat::Frame;

/// Frames per RX burst (and the size of the worker's scratch arrays).
pub const BATCH: usize = 64;

/// One `(interface, queue)` an [`XskPorts`] binds a socket to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Interface name, in the network namespace of the creating thread.
    pub ifname: String,
    /// Hardware queue id (`ethtool -l` channel).
    pub queue: u32,
}

impl PortConfig {
    /// `ifname` queue `queue`.
    pub fn new(ifname: impl Into<String>, queue: u32) -> Self {
        Self { ifname: ifname.into(), queue }
    }
}

/// Sizes of the UMEM and rings.
#[derive(Debug, Clone)]
pub struct XskConfig {
    /// Chunk size: 2048 or 4096 (aligned chunk mode).
    pub frame_size: u32,
    /// UMEM chunks per port; the UMEM holds `frames_per_port * ports` chunks.
    pub frames_per_port: u32,
    /// Entries in each of the RX, TX, fill and completion rings (power of two).
    pub ring_size: u32,
    /// Force copy mode (`XDP_COPY`); otherwise the kernel picks (zero-copy
    /// where the driver has it; veth is always copy).
    pub force_copy: bool,
    /// Try 2 MiB huge pages for the UMEM first (falls back to 4 KiB pages).
    pub huge_pages: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self { frame_size: 4096, frames_per_port: 4096, ring_size: 2048, force_copy: false, huge_pages: true }
    }
}

/// An anonymous shared mapping, unmapped on drop.
#[derive(Debug)]
struct Area {
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
}

const HUGE_PAGE: usize = 2 << 20;

impl Area {
    fn new(len: usize, try_huge: bool) -> Result<Self, XskError> {
        if try_huge {
            let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            if let Ok(a) = Self::map(huge_len, libc::MAP_HUGETLB) {
                return Ok(Area { huge: true, ..a });
            }
        }
        Self::map(len, 0).map_err(|source| XskError::Mmap { bytes: len, source })
    }

    fn map(len: usize, extra: libc::c_int) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing: no existing memory is affected. The result is checked for
        // MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Area { ptr, len, huge: false })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; the mapping is
        // owned by this value and nothing borrows it any more (XskPorts drops
        // its sockets and Umem before its Area, see the field order).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// One bound AF_XDP socket.
struct Port {
    ifname: String,
    queue: u32,
    fq: DeviceQueue,
    rx: RingRx,
    tx: RingTx,
    user: User,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port").field("ifname", &self.ifname).field("queue", &self.queue).finish_non_exhaustive()
    }
}

/// The sockets and UMEM of one worker. See the module documentation.
pub struct XskPorts {
    // Field order is drop order: sockets, then the Umem registration, then
    // the memory they point into.
    ports: Vec<Port>,
    /// Kept alive for the registration (its fd is the first socket's).
    _umem: Umem,
    area: Area,
    /// Chunk base addresses owned by user space and not in use.
    free: Vec<u64>,
    frame_size: u64,
    ring_size: u32,
}

impl std::fmt::Debug for XskPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskPorts")
            .field("ports", &self.ports)
            .field("umem_bytes", &self.area.len)
            .field("huge_pages", &self.area.huge)
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}

// SAFETY: XskPorts exclusively owns its mapping, sockets and rings; the raw
// pointers inside (the UMEM area, the mmap'd rings) point into mappings owned
// by this value, not into thread-local state. xdpilone's shared device
// registry is an Arc over a spin-locked set, safe to touch from any thread.
// Moving the whole value to the worker thread that then uses it alone is what
// this enables; it is not Sync.
unsafe impl Send for XskPorts {}

fn os_err(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw())
}

impl XskPorts {
    /// Creates the UMEM and binds one socket per port, all sharing it, and
    /// fills every fill ring. Sockets are created in the network namespace of
    /// the calling thread.
    pub fn new(cfg: &XskConfig, ports: &[PortConfig]) -> Result<Self, XskError> {
        if ports.is_empty() {
            return Err(XskError::Config("no ports".into()));
        }
        if !(cfg.frame_size == 2048 || cfg.frame_size == 4096) {
            return Err(XskError::Config(format!("frame_size {} (2048 or 4096)", cfg.frame_size)));
        }
        if !cfg.ring_size.is_power_of_two() || cfg.ring_size < BATCH as u32 {
            return Err(XskError::Config(format!("ring_size {} (a power of two >= {BATCH})", cfg.ring_size)));
        }
        if cfg.frames_per_port < cfg.ring_size {
            return Err(XskError::Config("frames_per_port < ring_size".into()));
        }
        for (i, p) in ports.iter().enumerate() {
            if ports[..i].contains(p) {
                return Err(XskError::Config(format!("{} queue {} listed twice", p.ifname, p.queue)));
            }
        }
        let total = cfg.frames_per_port as usize * ports.len();
        let area = Area::new(total * cfg.frame_size as usize, cfg.huge_pages)?;
        let ucfg = UmemConfig {
            fill_size: cfg.ring_size,
            complete_size: cfg.ring_size,
            frame_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
        };
        let first = &ports[0];
        let sock_err = |op: &'static str, p: &PortConfig, e: xdpilone::Errno| XskError::Socket {
            op,
            ifname: p.ifname.clone(),
            queue: p.queue,
            source: os_err(e),
        };
        // SAFETY: `area` is a fresh page-aligned mapping of `area.len` bytes,
        // owned by the XskPorts built below, whose field order drops the Umem
        // (and every socket) before the Area; it is never handed out otherwise.
        let umem =
            unsafe { Umem::new(ucfg, area.as_slice_ptr()) }.map_err(|e| sock_err("umem registration", first, e))?;

        let mut bind_flags = SocketConfig::XDP_BIND_NEED_WAKEUP;
        if cfg.force_copy {
            bind_flags |= SocketConfig::XDP_BIND_COPY;
        }
        let rcfg = SocketConfig {
            rx_size: std::num::NonZeroU32::new(cfg.ring_size),
            tx_size: std::num::NonZeroU32::new(cfg.ring_size),
            bind_flags,
        };

        let mut bound = Vec::with_capacity(ports.len());
        for (i, p) in ports.iter().enumerate() {
            let name =
                CString::new(p.ifname.as_str()).map_err(|_| XskError::UnknownInterface { name: p.ifname.clone() })?;
            let mut info = IfInfo::invalid();
            info.from_name(&name).map_err(|_| XskError::UnknownInterface { name: p.ifname.clone() })?;
            info.set_queue(p.queue);
            let sock = if i == 0 { Socket::with_shared(&info, &umem) } else { Socket::new(&info) }
                .map_err(|e| sock_err("socket", p, e))?;
            let fq = umem.fq_cq(&sock).map_err(|e| sock_err("fill/completion rings", p, e))?;
            // A socket sharing the UMEM of another must bind with no mode
            // flags of its own: it inherits copy/zero-copy and need_wakeup
            // from the UMEM's first socket (the kernel answers EINVAL).
            let cfg_i = if i == 0 { rcfg.clone() } else { SocketConfig { bind_flags: 0, ..rcfg.clone() } };
            let user = umem.rx_tx(&sock, &cfg_i).map_err(|e| sock_err("rx/tx rings", p, e))?;
            let rx = user.map_rx().map_err(|e| sock_err("rx ring mmap", p, e))?;
            let tx = user.map_tx().map_err(|e| sock_err("tx ring mmap", p, e))?;
            umem.bind(&user).map_err(|e| sock_err("bind", p, e))?;
            bound.push(Port { ifname: p.ifname.clone(), queue: p.queue, fq, rx, tx, user });
        }

        let fs = u64::from(cfg.frame_size);
        let mut free = Vec::with_capacity(total);
        // Highest addresses first so the first chunks handed out are low.
        free.extend((0..total as u64).rev().map(|i| i * fs));
        let mut me = XskPorts { ports: bound, _umem: umem, area, free, frame_size: fs, ring_size: cfg.ring_size };
        me.refill();
        Ok(me)
    }

    /// Number of ports (sockets).
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Never true: there is at least one port.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// `(ifname, queue, socket fd)` of port `i`, to put into the steering
    /// program's XSKMAP ([`super::Steering::register_socket`]).
    pub fn socket(&self, i: usize) -> (&str, u32, BorrowedFd<'_>) {
        let p = &self.ports[i];
        let raw: RawFd = p.user.as_raw_fd();
        // SAFETY: the fd is owned by `p.user` (and the Umem) and stays open
        // at least as long as the returned borrow of `self`.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        (&p.ifname, p.queue, fd)
    }

    /// Whether the UMEM sits on huge pages.
    pub fn huge_pages(&self) -> bool {
        self.area.huge
    }

    /// Size of the UMEM in bytes.
    pub fn umem_bytes(&self) -> usize {
        self.area.len
    }

    /// Chunks currently free in user space (for tests and stats).
    pub fn free_chunks(&self) -> usize {
        self.free.len()
    }

    /// Chunk size.
    pub fn frame_size(&self) -> u32 {
        self.frame_size as u32
    }

    /// Reads up to [`BATCH`] descriptors from port `port`'s RX ring into
    /// `out` and releases the ring entries: the chunks now belong to the
    /// caller until each is passed to [`Self::transmit`] or [`Self::recycle`].
    pub fn rx_burst(&mut self, port: usize, out: &mut [XdpDesc; BATCH]) -> usize {
        let p = &mut self.ports[port];
        let mut rd = p.rx.receive(BATCH as u32);
        let mut n = 0;
        while n < BATCH {
            match rd.read() {
                Some(d) => {
                    out[n] = d;
                    n += 1;
                }
                None => break,
            }
        }
        rd.release();
        n
    }

    /// Whether `d` lies inside one chunk of the UMEM.
    fn check(&self, d: &XdpDesc) -> Option<(usize, usize)> {
        let start = d.addr;
        let end = (d.addr & !(self.frame_size - 1)).checked_add(self.frame_size)?;
        if end > self.area.len as u64 || u64::from(d.len) > end - start {
            return None;
        }
        Some((start as usize, end as usize))
    }

    /// Calls `f` with the received descriptors `descs` as [`Frame`]s: each
    /// frame's `buf` runs from the packet start to the end of its chunk.
    ///
    /// `descs` must be descriptors returned by [`Self::rx_burst`] and not yet
    /// transmitted or recycled (so the caller owns their chunks); a descriptor
    /// pointing outside the UMEM becomes an empty frame.
    pub fn with_frames<R>(&mut self, in_port: u16, descs: &[XdpDesc], f: impl FnOnce(&mut [Frame<'_>]) -> R) -> R {
        let n = descs.len().min(BATCH);
        let base = self.area.ptr;
        let mut frames: [Frame<'_>; BATCH] = core::array::from_fn(|i| {
            let Some(d) = descs.get(i).filter(|_| i < n) else {
                return Frame::new(&mut [], 0, in_port);
            };
            match self.check(d) {
                Some((start, end)) => {
                    let ptr = base.as_ptr().wrapping_add(start);
                    // SAFETY: [start, end) lies within the UMEM mapping (checked
                    // above) and within one chunk. The chunk was received from
                    // an RX ring and not yet given back (the caller's contract),
                    // so the kernel does not write it, and the descriptors of
                    // one burst name distinct chunks (each chunk is in exactly
                    // one place, see the module doc), so these slices do not
                    // overlap. They live no longer than `&mut self`.
                    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, end - start) };
                    Frame::new(buf, d.len as usize, in_port)
                }
                None => Frame::new(&mut [], 0, in_port),
            }
        });
        f(&mut frames[..n])
    }

    /// The first `len` bytes of the chunk of a descriptor the caller owns.
    pub fn bytes(&self, d: &XdpDesc) -> &[u8] {
        match self.check(d) {
            Some((start, _)) => {
                let ptr = self.area.ptr.as_ptr().wrapping_add(start);
                // SAFETY: in bounds (checked); the caller owns the chunk (not
                // in any kernel ring), and only shared access is given out
                // while `&self` is borrowed, so nothing writes it meanwhile.
                unsafe { std::slice::from_raw_parts(ptr, d.len as usize) }
            }
            None => &[],
        }
    }

    /// Takes a chunk from the free stack for a frame built from scratch
    /// rather than received (a generator, a test); `None` when every chunk
    /// is in a ring or in use. The chunk holds whatever its last frame left.
    pub fn alloc(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Gives an owned chunk back to the free stack.
    #[inline]
    pub fn recycle(&mut self, addr: u64) {
        debug_assert!(self.free.len() < self.free.capacity());
        self.free.push(addr & !(self.frame_size - 1));
    }

    /// Enqueues owned descriptors on port `port`'s TX ring, commits, and kicks
    /// the kernel if it asked for it. Returns how many were enqueued; the
    /// rest (TX ring full) are recycled by this call and should be counted as
    /// drops by the caller.
    pub fn transmit(&mut self, port: usize, descs: &[XdpDesc]) -> usize {
        if descs.is_empty() {
            return 0;
        }
        let p = &mut self.ports[port];
        // xdpilone reserves "1 to n" slots and re-reads the kernel's consumer
        // index only when its cached view has no free slot at all: with a
        // stale view it hands out fewer slots than the ring has free. A
        // second reservation after a short one starts from an empty cached
        // view, so it re-reads the index; only if that one gets nothing is
        // the ring full. (Taking the short reservation as "full" dropped a
        // few frames per 10k at any rate.)
        let mut n = 0;
        while n < descs.len() {
            let mut w = p.tx.transmit((descs.len() - n) as u32);
            let k = w.insert(descs[n..].iter().copied()) as usize;
            w.commit();
            drop(w);
            if k == 0 {
                break;
            }
            n += k;
        }
        if p.tx.needs_wakeup() {
            p.tx.wake();
        }
        for d in &descs[n..] {
            self.recycle(d.addr);
        }
        n
    }

    /// Reaps every completion ring into the free stack, re-kicks TX rings
    /// that still hold unconsumed entries, and tops up every fill ring from
    /// the free stack. Returns the number of completions (frames the kernel
    /// finished sending).
    pub fn reap_and_refill(&mut self) -> usize {
        let mut done = 0;
        for p in &mut self.ports {
            let mut rd = p.fq.complete(self.ring_size);
            while let Some(a) = rd.read() {
                self.free.push(a & !(self.frame_size - 1));
                done += 1;
            }
            rd.release();
            drop(rd);
            if p.tx.pending() > 0 && p.tx.needs_wakeup() {
                p.tx.wake();
            }
        }
        self.refill();
        done
    }

    fn refill(&mut self) {
        for p in &mut self.ports {
            if self.free.is_empty() {
                break;
            }
            let mut w = p.fq.fill(self.ring_size);
            let n = w.insert(self.free.iter().rev().copied()) as usize;
            w.commit();
            drop(w);
            let keep = self.free.len() - n;
            self.free.truncate(keep);
            if n > 0 && p.fq.needs_wakeup() {
                p.fq.wake();
            }
        }
    }
}

/// Hints the CPU to bring the cache line at `p` into the caches ahead of use,
/// as DPDK's `rte_prefetch0`. The NAT's read-ahead passes issue it for the
/// flow-table buckets and entries of a whole burst, so that their cache
/// misses overlap. Stable Rust has no safe prefetch, and this module is where
/// svcgate keeps its `unsafe`. Any address is allowed, even a dangling one.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is only a hint: it never faults, whatever the
    // address, reads nothing into registers and writes no memory or flags.
    unsafe {
        core::arch::asm!("prefetcht0 [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Reads the CPU's time-stamp counter, as DPDK's `rte_rdtsc`: the workers
/// count the cycles of their busy polls with it, so that `svcgate status`
/// and the benchmark can print cycles per packet beside testpmd's
/// `--record-core-cycles` figure, which counts the same TSC. It costs a few
/// dozen cycles, a tenth of `Instant::now()` through the vDSO here. Outside
/// x86_64 it falls back to nanoseconds since the first call.
#[inline(always)]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `rdtsc` is part of the x86_64 baseline (every x86_64 CPU has
    // it, and user mode may run it unless the kernel set CR4.TSD, which
    // Linux does only for seccomp-strict tasks); it reads a counter and
    // touches no memory.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
}

/// The 16-bit lanes (lane `j` of word `w` is bits `16j..16j+16` of `a[w]`,
/// slot `4w + j`) of two flow-table signature buckets equal to `sig`: bit
/// `s` for slot `s` of `a`, bit `8 + s` for slot `s` of `b`.
///
/// On x86_64, two SSE2 compares and mask extractions (`pcmpeqw`,
/// `pmovmskb`, about a dozen instructions for both buckets against some 40
/// for the word-wide SWAR match). SSE2 is part of the x86_64 baseline, but
/// the intrinsics are `unsafe` functions before Rust 1.87 (the workspace's
/// rust-version is older), so they live here with svcgate's other `unsafe`.
#[inline(always)]
pub fn match_sigs2(a: &[u64; 2], b: &[u64; 2], sig: u16) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_cmpeq_epi16, _mm_movemask_epi8, _mm_packs_epi16, _mm_set1_epi16, _mm_set_epi64x};
        // One block for the seven intrinsic calls: each has the same (and
        // only) precondition, stated once below.
        #[allow(unused_unsafe, clippy::multiple_unsafe_ops_per_block)]
        // SAFETY: these intrinsics only compute on values in registers (no
        // memory access) and need SSE2, which every x86_64 CPU has.
        let mask = unsafe {
            let s = _mm_set1_epi16(sig as i16);
            let ea = _mm_cmpeq_epi16(_mm_set_epi64x(a[1] as i64, a[0] as i64), s);
            let eb = _mm_cmpeq_epi16(_mm_set_epi64x(b[1] as i64, b[0] as i64), s);
            // Each lane's 0 / -1 saturates to one byte: 8 bytes per bucket.
            _mm_movemask_epi8(_mm_packs_epi16(ea, eb))
        };
        mask as u32
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let lanes =
            |w: &[u64; 2]| (0..8).fold(0u32, |m, s| m | u32::from((w[s / 4] >> (16 * (s % 4))) as u16 == sig) << s);
        lanes(a) | lanes(b) << 8
    }
}
