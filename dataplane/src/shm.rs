//! Memory that outlives the process: the flow and reverse tables mapped
//! from files in the state directory (`[dataplane] state_dir`, on tmpfs),
//! `MAP_SHARED`, so that what a worker writes is in the file at once and
//! the next svcgate maps it again (see docs/RESTART.md).
//!
//! This is the one small module besides the UMEM/ring code (and the
//! capability calls of `privileges`) with `unsafe`, each block with its
//! `// SAFETY:` note. It maps, views and reads the clock; it knows nothing
//! of what the tables hold: the header check and the adoption of entries
//! are in `nat::restart`, in safe code.
//!
//! # File layout
//! A file is a header page ([`HEADER_BYTES`], written with `pwrite`, never
//! mapped) followed by the body, mapped alone (offset [`HEADER_BYTES`]), so
//! that the body's first byte is page-aligned and a table viewing it sees
//! exactly its entries.
//!
//! # One owner
//! Each file is locked (`flock`, exclusive) while mapped: a second svcgate
//! on the same state directory gets [`StateBusy`] instead of sharing
//! tables whose entries have one writer each.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes before a state file's body: its header, padded to a page.
pub const HEADER_BYTES: usize = 4096;

/// Another process holds a state file's lock.
#[derive(Debug, thiserror::Error)]
#[error("{path} is in use by another process (is another svcgate running with this state_dir?)")]
pub struct StateBusy {
    /// The file.
    pub path: String,
}

/// A state file, open and locked: its header is read and written with
/// `pread`/`pwrite`; [`StateFile::map_pod`] or [`StateFile::map_cells`]
/// maps its body.
#[derive(Debug)]
pub struct StateFile {
    file: File,
}

impl StateFile {
    /// Opens (creating it, mode 0600) and locks `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(io::Error::new(io::ErrorKind::WouldBlock, StateBusy { path: path.display().to_string() }))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// The file's length in bytes.
    pub fn byte_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// The header page as it is (zeros past the end of a short file).
    pub fn read_header(&self) -> io::Result<[u8; HEADER_BYTES]> {
        let mut h = [0u8; HEADER_BYTES];
        let mut done = 0;
        while done < HEADER_BYTES {
            match self.file.read_at(&mut h[done..], done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        Ok(h)
    }

    /// Empties the file and sizes it for a body of `body` bytes, all zero
    /// (a fresh table: every entry free), with a zero header, which no
    /// reader accepts until [`StateFile::write_header`].
    /// The body's pages are reserved (`posix_fallocate`): a tmpfs too
    /// small for the tables fails here, at start, rather than with a
    /// SIGBUS when a worker first writes a page the filesystem cannot give.
    pub fn reset(&self, body: usize) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let len = (HEADER_BYTES + body) as u64;
        self.file.set_len(0)?;
        self.file.set_len(len)?;
        let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
        // SAFETY: a plain system call on a descriptor this struct owns; it
        // touches no memory of ours.
        match unsafe { libc::posix_fallocate(self.file.as_raw_fd(), 0, len) } {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Writes the header (at most [`HEADER_BYTES`]).
    pub fn write_header(&self, h: &[u8]) -> io::Result<()> {
        self.file.write_all_at(&h[..h.len().min(HEADER_BYTES)], 0)
    }

    /// The body (`body` bytes from [`HEADER_BYTES`]) mapped shared and
    /// writable, for a table of plain-data entries viewed with `bytemuck`.
    /// The file must be at least that long.
    pub fn map_pod(self, body: usize) -> io::Result<PodMap> {
        self.check_len(body)?;
        // SAFETY: the mapping is of a file svcgate created in its own state
        // directory and holds an exclusive lock on (see `open`): no other
        // svcgate maps it while this one lives, so the bytes change only
        // through this mapping. Should someone else write the file anyway,
        // the entries are plain data (`bytemuck::Pod`: every bit pattern is
        // a valid value) and every index read from them is bounds-checked,
        // so foreign writes can corrupt flows, not memory safety. The length
        // was checked against the file's, so no access faults past its end
        // unless the file is truncated under us (which the lock's honest
        // users do not do).
        let map = unsafe { memmap2::MmapOptions::new().offset(HEADER_BYTES as u64).len(body).map_mut(&self.file)? };
        // Only a hint (tmpfs mounted with huge=within_size or always uses it).
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(PodMap { map, _file: self.file })
    }

    /// The body mapped shared as `n` cells of `T` (atomics: shared between
    /// threads, written through `&`).
    pub fn map_cells<T: SharedCell>(self, n: usize) -> io::Result<CellMap<T>> {
        let body = n * std::mem::size_of::<T>();
        self.check_len(body)?;
        let map = memmap2::MmapOptions::new().offset(HEADER_BYTES as u64).len(body.max(1)).map_raw(&self.file)?;
        if map.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
            return Err(io::Error::other("state file mapping is not aligned"));
        }
        Ok(CellMap { map, n, _file: Some(self.file), _t: PhantomData })
    }

    fn check_len(&self, body: usize) -> io::Result<()> {
        if self.byte_len()? < (HEADER_BYTES + body) as u64 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "state file shorter than its table"));
        }
        Ok(())
    }
}

/// A state file's body mapped for plain-data entries: a `memmap2::MmapMut`
/// (the flow tables' `Entries` view it with `bytemuck`), with the file (and
/// its lock) kept open as long as the mapping.
#[derive(Debug)]
pub struct PodMap {
    map: memmap2::MmapMut,
    _file: File,
}

impl PodMap {
    /// The mapping and the file, which must be kept open as long as the
    /// mapping (for its lock).
    pub fn into_parts(self) -> (memmap2::MmapMut, File) {
        (self.map, self._file)
    }
}

/// Types that may be viewed in shared mapped memory and written through
/// shared references: made only of atomics (and padding), so that every
/// bit pattern is a valid value and every write is an atomic store.
///
/// # Safety
/// The implementor must be `#[repr(C)]` (or an array) of atomics and
/// padding only: no references, no non-atomic fields, no invariants
/// beyond "any bits".
pub unsafe trait SharedCell: Sync + Send {}

// SAFETY: atomics of integers have the size and bit validity of their integer.
unsafe impl SharedCell for std::sync::atomic::AtomicU64 {}
// SAFETY: as above.
unsafe impl SharedCell for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl SharedCell for std::sync::atomic::AtomicU8 {}
// SAFETY: a reverse slot is `#[repr(C, align(64))]` of atomics and padding:
// three `AtomicU32`, an `AtomicU8`, and its key and value cells, which
// `WireAddr` requires to be `SharedCell`s themselves.
unsafe impl<R: crate::nat::conntrack::WireAddr> SharedCell for crate::nat::reverse::Slot<R> {}
// SAFETY: an array of cells is cells.
unsafe impl<T: SharedCell, const N: usize> SharedCell for [T; N] {}

/// A state file's body viewed as `[T]` of shared cells (the reverse
/// tables' slots), with the file (and its lock) kept open as long as the
/// mapping; or anonymous memory viewed the same way
/// ([`CellMap::anonymous`]), so that a table reaches its cells through one
/// code path whether or not they outlive the process.
pub struct CellMap<T> {
    map: memmap2::MmapRaw,
    n: usize,
    _file: Option<File>,
    _t: PhantomData<T>,
}

impl<T: SharedCell> CellMap<T> {
    /// `n` cells of anonymous, private memory, all bits zero: `T`'s
    /// all-zero value must be what the table means by a fresh cell. (The
    /// pages are mapped lazily: the caller writes one cell per page to
    /// have them in before the packet path touches them.)
    pub fn anonymous(n: usize) -> io::Result<Self> {
        let bytes = (n * std::mem::size_of::<T>()).max(1);
        let m = memmap2::MmapOptions::new().len(bytes).map_anon()?;
        #[cfg(target_os = "linux")]
        let _ = m.advise(memmap2::Advice::HugePage);
        let map = memmap2::MmapRaw::from(m);
        Ok(Self { map, n, _file: None, _t: PhantomData })
    }
}

impl<T> std::fmt::Debug for CellMap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellMap").field("cells", &self.n).finish()
    }
}

impl<T: SharedCell> std::ops::Deref for CellMap<T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: the mapping is at least `n * size_of::<T>()` bytes (its
        // length; for a file, also checked against the file's length in
        // `map_cells`), aligned for `T` (mappings are page-aligned; checked
        // in `map_cells`), and lives as long as `self`. `T` is a
        // `SharedCell`: any bytes are a valid `T`, and it is only ever
        // written through its atomics, which is what shared references
        // allow; the pointer comes from a raw mapping, not from a Rust
        // reference, so no `&[u8]` aliases these cells.
        unsafe { std::slice::from_raw_parts(self.map.as_mut_ptr().cast::<T>(), self.n) }
    }
}

/// The system-wide monotonic clock (`CLOCK_MONOTONIC`) in milliseconds:
/// the same for every process of one boot, so a table's clock can outlive
/// the process that started it (see `nat::restart`).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always
    // available on Linux, and on failure `ts` stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`, 36 characters), or
/// zeros when it cannot be read: `CLOCK_MONOTONIC` restarts at each boot,
/// so a table from another boot must not be adopted.
pub fn boot_id() -> [u8; 48] {
    let mut id = [0u8; 48];
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let s = s.trim().as_bytes();
        let n = s.len().min(id.len());
        id[..n].copy_from_slice(&s[..n]);
    }
    id
}
