//! AF_PACKET sockets with memory-mapped rings: the pktgen's only `unsafe`.
//!
//! - [`TxRing`]: `TPACKET_V2` TX ring with `PACKET_QDISC_BYPASS` (as trafgen
//!   does) and `SO_SNDBUFFORCE`, so the socket buffer never caps the frames in
//!   flight below the ring size (with threaded NAPI on the receiving veth the
//!   skbs live long enough to fill a default `wmem_max` buffer, and
//!   `net.core.wmem_max` is read-only inside a network namespace).
//! - [`RxRing`]: `TPACKET_V3` (block-based) RX ring with kernel timestamps.
//!
//! # Ownership of the ring memory
//!
//! The mapping is shared with the kernel; ownership of each slot is handed
//! back and forth by its status word, read and written atomically:
//!
//! - TX frame slot: `TP_STATUS_AVAILABLE` (or `WRONG_FORMAT`): user space
//!   owns it and may write it; user space hands it over by storing
//!   `TP_STATUS_SEND_REQUEST` with `Release` after writing the frame; the kernel
//!   reads it only in that state (and `SENDING`), and gives it back by storing
//!   `AVAILABLE` once the skb is freed, which user space reads with `Acquire`.
//! - RX block: `TP_STATUS_USER` set in `block_status`: user space owns the
//!   whole block and reads it; it gives it back by storing `TP_STATUS_KERNEL`
//!   with `Release`.
//!
//! Slices into the mapping handed out by this module live only as long as the
//! slot or block is user-owned (the borrow ends before the hand-over).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Offset of the frame data in a `TPACKET_V2` TX slot: `TPACKET_ALIGN(sizeof
/// (tpacket2_hdr))`, as `tpacket_fill_skb` computes it without
/// `PACKET_TX_HAS_OFF`.
pub const TX_DATA_OFFSET: usize =
    (std::mem::size_of::<libc::tpacket2_hdr>() + libc::TPACKET_ALIGNMENT - 1) & !(libc::TPACKET_ALIGNMENT - 1);

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a valid, initialised `T` for the duration of the call
    // and the length passed is exactly its size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(fd, level, name, (val as *const T).cast(), std::mem::size_of::<T>() as libc::socklen_t)
    };
    cvt(r).map(|_| ())
}

fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments; no memory is passed.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(protocol.to_be())) };
    let fd = cvt(fd)?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_ll(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and the length is its size.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    cvt(r).map(|_| ())
}

/// A shared mapping of a packet socket's ring; unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize) -> io::Result<Self> {
        // SAFETY: maps `len` bytes of the socket's ring (set up just before,
        // of exactly this size) at an address the kernel picks; no existing
        // memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// Pointer to `len` bytes at `off`, checked to lie inside the mapping.
    fn at(&self, off: usize, len: usize) -> *mut u8 {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.len), "ring access out of bounds");
        self.ptr.as_ptr().wrapping_add(off)
    }

    /// The status word at byte offset `off` (4-byte aligned, inside the map).
    fn status(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4));
        let p = self.at(off, 4).cast::<u32>();
        // SAFETY: in bounds and aligned (checked); the word is shared with
        // the kernel, which accesses it atomically (READ_ONCE/WRITE_ONCE plus
        // barriers), so atomic access from here is the right protocol; the
        // mapping outlives the returned borrow of `self`.
        unsafe { AtomicU32::from_ptr(p) }
    }

    /// `len` bytes at `off` in a region user space currently owns.
    fn slice(&self, off: usize, len: usize) -> &[u8] {
        let p = self.at(off, len);
        // SAFETY: in bounds (checked by `at`); user-owned per the status
        // protocol (module doc), so nothing writes it while the shared borrow
        // of `self` lives.
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    fn slice_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        let p = self.at(off, len);
        // SAFETY: in bounds (checked by `at`); user-owned per the status
        // protocol and `&mut self` makes this the only live reference into
        // the mapping.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }

    fn read_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.slice(off, 4).try_into().expect("4 bytes"))
    }

    fn read_u16(&self, off: usize) -> u16 {
        u16::from_ne_bytes(self.slice(off, 2).try_into().expect("2 bytes"))
    }

    fn write_u32(&mut self, off: usize, v: u32) {
        self.slice_mut(off, 4).copy_from_slice(&v.to_ne_bytes());
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the region mmap returned; no slice into it outlives
        // `self` (they all borrow it).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

// SAFETY: the mapping is plain memory owned by this value; moving it to
// another thread moves that ownership (no thread-local state is involved).
unsafe impl Send for Mapping {}

/// Sizes of a TX ring.
#[derive(Debug, Clone, Copy)]
pub struct TxRingConfig {
    /// Largest frame (bytes, without FCS) that will be written.
    pub max_frame: usize,
    /// Number of slots (rounded up to whole blocks).
    pub frames: usize,
    /// `SO_SNDBUFFORCE` value in bytes (0: leave the default).
    pub sndbuf: usize,
    /// Prefix each frame with a `virtio_net_hdr` (`PACKET_VNET_HDR`) whose
    /// `hdr_len` is the whole frame, so the kernel copies the frame into the
    /// skb's linear area instead of attaching the ring page as a zero-copy
    /// fragment (which a veth must copy again into a fresh page,
    /// `skb_copy_ubufs`, when the frame crosses into another namespace). No
    /// offload flags are set: the frame on the wire is the same.
    pub linear: bool,
}

/// Bytes of `struct virtio_net_hdr` (without `num_buffers`).
const VNET_HDR_LEN: usize = 10;

/// A `TPACKET_V2` TX ring on one interface (see the module doc).
#[derive(Debug)]
pub struct TxRing {
    fd: OwnedFd,
    map: Mapping,
    frame_size: usize,
    frames_per_block: usize,
    block_size: usize,
    frame_nr: usize,
    head: usize,
    vnet: usize,
    /// Frames the kernel rejected (`TP_STATUS_WRONG_FORMAT`) seen so far.
    pub wrong_format: u64,
}

impl TxRing {
    /// Opens a packet socket bound to `ifindex` with a TX ring, qdisc bypass
    /// and the forced send buffer.
    pub fn open(ifindex: u32, cfg: TxRingConfig) -> io::Result<Self> {
        let fd = packet_socket(0)?;
        let raw = fd.as_raw_fd();
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &(libc::tpacket_versions::TPACKET_V2 as libc::c_int))?;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1 as &libc::c_int)?;
        // With PACKET_LOSS a malformed frame is marked WRONG_FORMAT and
        // skipped instead of stalling the ring with an error.
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_LOSS, &1 as &libc::c_int)?;
        if cfg.linear {
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &1 as &libc::c_int)?;
        }
        if cfg.sndbuf > 0 {
            let v = cfg.sndbuf.min(i32::MAX as usize / 2) as libc::c_int;
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &v)?;
        }
        let frame_size = (TX_DATA_OFFSET + VNET_HDR_LEN + cfg.max_frame).next_power_of_two().max(128);
        let block_size = frame_size.max(1 << 16);
        let frames_per_block = block_size / frame_size;
        let blocks = cfg.frames.div_ceil(frames_per_block).max(1);
        let req = libc::tpacket_req {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: (blocks * frames_per_block) as u32,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_TX_RING, &req)?;
        let map = Mapping::new(raw, block_size * blocks)?;
        bind_ll(raw, ifindex, 0)?;
        Ok(TxRing {
            fd,
            map,
            frame_size,
            frames_per_block,
            block_size,
            frame_nr: blocks * frames_per_block,
            head: 0,
            vnet: if cfg.linear { VNET_HDR_LEN } else { 0 },
            wrong_format: 0,
        })
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.frame_nr
    }

    /// Never empty (at least one block); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.frame_nr == 0
    }

    /// Room for frame data in one slot.
    pub fn capacity(&self) -> usize {
        self.frame_size - TX_DATA_OFFSET - self.vnet
    }

    fn slot_off(&self, i: usize) -> usize {
        (i / self.frames_per_block) * self.block_size + (i % self.frames_per_block) * self.frame_size
    }

    fn slot_free(&mut self, off: usize) -> bool {
        let st = self.map.status(off).load(Ordering::Acquire);
        if st & libc::TP_STATUS_WRONG_FORMAT != 0 {
            self.wrong_format += 1;
            self.map.status(off).store(libc::TP_STATUS_AVAILABLE, Ordering::Relaxed);
            return true;
        }
        st & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) == 0
    }

    /// Writes one frame into the next slot if the kernel is done with it:
    /// `fill` gets the slot's data area and returns the frame length. Returns
    /// false (and calls nothing) when the ring is full. The frame goes out at
    /// the next [`TxRing::kick`].
    #[inline]
    pub fn try_push(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> bool {
        let off = self.slot_off(self.head);
        if !self.slot_free(off) {
            return false;
        }
        let cap = self.capacity();
        let data = off + TX_DATA_OFFSET + self.vnet;
        let len = fill(self.map.slice_mut(data, cap));
        assert!(len <= cap, "frame longer than the ring slot");
        if self.vnet > 0 {
            // virtio_net_hdr: flags 0, gso_type NONE, hdr_len = the frame
            // (little-endian: vio_le() for packet sockets), gso_size,
            // csum_start, csum_offset 0.
            let h = self.map.slice_mut(data - VNET_HDR_LEN, VNET_HDR_LEN);
            h.fill(0);
            h[2..4].copy_from_slice(&(len as u16).to_le_bytes());
        }
        // tpacket2_hdr: tp_len at 4 (tp_snaplen at 8 is not read on TX).
        self.map.write_u32(off + 4, (self.vnet + len) as u32);
        self.map.status(off).store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.head = if self.head + 1 == self.frame_nr { 0 } else { self.head + 1 };
        true
    }

    /// Asks the kernel to send every slot marked for sending
    /// (`sendto(fd, NULL, 0, MSG_DONTWAIT)`). Transient errors (EAGAIN,
    /// ENOBUFS: socket buffer or device busy) are not errors here: the slots
    /// stay marked and go out at a later kick.
    pub fn kick(&self) -> io::Result<()> {
        // SAFETY: a zero-length sendto with null buffer and address is what
        // the TX ring protocol asks for; no memory is passed.
        let r =
            unsafe { libc::sendto(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => Ok(()),
                _ => Err(e),
            };
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` until the next slot is free (POLLOUT).
    pub fn wait_writable(&self, timeout_ms: i32) {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
        // SAFETY: one valid pollfd, count 1.
        unsafe {
            libc::poll(&mut p, 1, timeout_ms);
        }
    }

    /// Slots still owned by the kernel (marked, or being sent).
    pub fn in_flight(&mut self) -> usize {
        (0..self.frame_nr).filter(|&i| !self.slot_free(self.slot_off(i))).count()
    }
}

/// Sizes of an RX ring.
#[derive(Debug, Clone, Copy)]
pub struct RxRingConfig {
    /// Block size in bytes (a power of two, at least a page).
    pub block_size: usize,
    /// Number of blocks.
    pub blocks: usize,
    /// Block retire timeout in ms (a partly filled block is handed over then).
    pub retire_ms: u32,
    /// `PACKET_FANOUT` group id (hash mode) to join, if any.
    pub fanout: Option<u16>,
}

/// One received frame.
#[derive(Debug)]
pub struct RxFrame<'a> {
    /// The frame from the Ethernet header on (snap length).
    pub data: &'a [u8],
    /// Kernel receive timestamp, CLOCK_REALTIME ns.
    pub ts_ns: u64,
}

/// Counters of an RX ring (`PACKET_STATISTICS`, since the last call).
#[derive(Debug, Default, Clone, Copy)]
pub struct RxRingStats {
    /// Frames the socket saw.
    pub packets: u64,
    /// Frames dropped because the ring was full.
    pub drops: u64,
}

/// A `TPACKET_V3` RX ring on one interface (see the module doc).
#[derive(Debug)]
pub struct RxRing {
    fd: OwnedFd,
    map: Mapping,
    block_size: usize,
    blocks: usize,
    cur: usize,
}

impl RxRing {
    /// Opens a packet socket (all protocols, not our own outgoing frames)
    /// bound to `ifindex` with a V3 RX ring.
    pub fn open(ifindex: u32, cfg: RxRingConfig) -> io::Result<Self> {
        const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;
        let fd = packet_socket(0)?;
        let raw = fd.as_raw_fd();
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &(libc::tpacket_versions::TPACKET_V3 as libc::c_int))?;
        // Best effort (Linux >= 4.20): frames this host sends are not ours.
        let _ = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1 as &libc::c_int);
        let req = libc::tpacket_req3 {
            tp_block_size: cfg.block_size as u32,
            tp_block_nr: cfg.blocks as u32,
            tp_frame_size: 2048,
            tp_frame_nr: (cfg.block_size / 2048 * cfg.blocks) as u32,
            tp_retire_blk_tov: cfg.retire_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let map = Mapping::new(raw, cfg.block_size * cfg.blocks)?;
        bind_ll(raw, ifindex, ETH_P_ALL)?;
        if let Some(id) = cfg.fanout {
            let v = u32::from(id) | (libc::PACKET_FANOUT_HASH << 16);
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_FANOUT, &v)?;
        }
        Ok(RxRing { fd, map, block_size: cfg.block_size, blocks: cfg.blocks, cur: 0 })
    }

    /// Waits up to `timeout_ms` for the current block, then hands every
    /// frame of every ready block to `f`; returns the number of frames.
    pub fn poll(&mut self, timeout_ms: i32, mut f: impl FnMut(RxFrame<'_>)) -> usize {
        let mut n = 0;
        let first = self.cur * self.block_size;
        if self.map.status(first + 8).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN | libc::POLLERR, revents: 0 };
            // SAFETY: one valid pollfd, count 1.
            unsafe {
                libc::poll(&mut p, 1, timeout_ms);
            }
        }
        loop {
            let b = self.cur * self.block_size;
            // tpacket_block_desc: version 0, offset_to_priv 4, then
            // tpacket_hdr_v1: block_status 8, num_pkts 12, offset_to_first_pkt 16.
            if self.map.status(b + 8).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                return n;
            }
            let num = self.map.read_u32(b + 12) as usize;
            let mut off = b + self.map.read_u32(b + 16) as usize;
            for _ in 0..num {
                // tpacket3_hdr: next_offset 0, sec 4, nsec 8, snaplen 12,
                // len 16, status 20, mac 24.
                let next = self.map.read_u32(off) as usize;
                let sec = self.map.read_u32(off + 4);
                let nsec = self.map.read_u32(off + 8);
                let snap = self.map.read_u32(off + 12) as usize;
                let mac = self.map.read_u16(off + 24) as usize;
                let data = self.map.slice(off + mac, snap);
                f(RxFrame { data, ts_ns: u64::from(sec) * 1_000_000_000 + u64::from(nsec) });
                n += 1;
                if next == 0 {
                    break;
                }
                off += next;
            }
            self.map.status(b + 8).store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.cur = (self.cur + 1) % self.blocks;
        }
    }

    /// `PACKET_STATISTICS` (the kernel resets them on every read).
    pub fn stats(&self) -> io::Result<RxRingStats> {
        let mut s = libc::tpacket_stats_v3 { tp_packets: 0, tp_drops: 0, tp_freeze_q_cnt: 0 };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `s` and `len` are valid for writes, `len` is `s`'s size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut s as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        cvt(r)?;
        Ok(RxRingStats { packets: u64::from(s.tp_packets), drops: u64::from(s.tp_drops) })
    }
}

/// Index of interface `name` (`if_nametoindex`).
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::other("interface name with NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::other(format!("no interface {name:?}: {}", io::Error::last_os_error())));
    }
    Ok(i)
}
