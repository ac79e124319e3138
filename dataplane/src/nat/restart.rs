//! Tables that outlive the process: the per-worker flow tables (both
//! families) and the shared reverse tables kept in files of the state
//! directory (`NatConfig::state_dir`, on tmpfs), mapped `MAP_SHARED`, so
//! that a restarted or upgraded svcgate maps them again and its workers
//! go on translating the flows the last one tracked (docs/RESTART.md).
//!
//! # Files
//! `reverse4.tbl`, `reverse6.tbl`, and per worker `flow4-q<w>.tbl`,
//! `flow6-q<w>.tbl`: a [`Header`] page, then the table's entries
//! (`crate::shm`). A file whose header matches what this process would
//! create (magic, layout version and fingerprint, entry size, slots,
//! capacity, workers, SNAT ports and addresses, boot, and the clock epoch
//! of the set) is *adopted*; any other (another layout, capacity, queue
//! count or SNAT range, a truncated file, garbage) is *refused*: the reason
//! is reported ([`Restored::refused`], which svcgate logs and counts), the
//! file emptied, and that table starts clean. Nothing is ever read from a
//! refused file.
//!
//! # What is rebased on adoption
//! - hash seeds: each file keeps its table's own (random) seeds, and the
//!   table is rebuilt with them;
//! - the signature arrays are not in the files: they are rebuilt from the
//!   entries, which also checks each entry sits in a bucket its key hashes
//!   to (a torn entry fails that, or the other checks, and is dropped);
//! - the clock: the workers' millisecond clock is `CLOCK_MONOTONIC` minus
//!   the set's epoch (kept in every header), so `last_seen` stamps stay
//!   meaningful; a file from another boot is refused;
//! - service-table and next-hop generations belong to the old process:
//!   every adopted flow's are set to a value no table of this process has
//!   yet ([`STALE_GEN`]), so its first packet revalidates it by backend
//!   address in the current table, as after a table swap; reverse slots
//!   forget their cached hop;
//! - the unassured queue is per process: adopted unassured flows are not
//!   in it, and leave by their timeout (or by eviction);
//! - per-Service counters start again at zero.
//!
//! # Torn state from a SIGKILL
//! A reverse slot with an odd sequence (killed inside the seqlock) is
//! cleared; a key in the wrong bucket or twice is cleared; a flow whose
//! reverse slot index is out of range, or whose slot does not hold the
//! flow's own reply key, or that another flow already claimed, is dropped;
//! a reverse slot no flow claims is freed. Every index is checked before
//! use: a bad file can lose flows, never crash.

use std::path::{Path, PathBuf};

use super::conntrack::{Flow, FlowEntry, FlowEntry6, FlowKey, FlowMeta, FlowTable, KeyHasher, WireAddr};
use super::pipeline::NatConfig;
use super::reverse::{slot_layout, ReverseError, ReverseTable};
use crate::shm::{self, StateFile, HEADER_BYTES};

/// The first bytes of every state file.
pub const MAGIC: [u8; 8] = *b"SVGSTATE";

/// Bumped whenever the layout of [`FlowEntry`], [`FlowEntry6`],
/// [`FlowMeta`], a reverse slot or the [`Header`] changes. A forgotten
/// bump is still caught by [`layout_fingerprint`].
pub const LAYOUT_VERSION: u32 = 3;

/// The table generation adopted flows carry: not a generation of this
/// process (they count up from 1), so the first packet of an adopted flow
/// revalidates it in the current table (and resolves its next hop again).
pub const STALE_GEN: u32 = u32::MAX;

/// What a state file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// A worker's IPv4 flow table.
    Flow4 = 1,
    /// A worker's IPv6 flow table.
    Flow6 = 2,
    /// The shared IPv4 reverse table.
    Reverse4 = 3,
    /// The shared IPv6 reverse table.
    Reverse6 = 4,
}

/// The header of a state file (the first of its [`HEADER_BYTES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// [`Kind`].
    pub kind: u32,
    /// [`layout_fingerprint`].
    pub fingerprint: u64,
    /// Bytes per entry (or reverse slot).
    pub entry_size: u32,
    /// Alignment of an entry.
    pub entry_align: u32,
    /// Entries in the body.
    pub slots: u64,
    /// The configured capacity (flows per worker; for a reverse table,
    /// every worker's together).
    pub capacity: u64,
    /// Workers (RX queues): SNAT ports name their owner worker.
    pub workers: u32,
    /// The worker of a flow table (0 for a reverse table).
    pub worker: u32,
    /// First SNAT port.
    pub snat_lo: u16,
    /// Last SNAT port.
    pub snat_hi: u16,
    /// Zero.
    pub _pad: u32,
    /// A hash of the SNAT addresses of both families, in order.
    pub snat_addrs: u64,
    /// The table's hash seeds.
    pub seeds: [u64; 2],
    /// `CLOCK_MONOTONIC` (ms) at the set's clock zero.
    pub epoch_ms: u64,
    /// The boot the epoch belongs to.
    pub boot_id: [u8; 48],
}

/// FNV-1a over 64-bit words.
const fn fnv(mut h: u64, words: &[u64]) -> u64 {
    let mut i = 0;
    while i < words.len() {
        let mut b = 0;
        while b < 8 {
            h ^= (words[i] >> (8 * b)) & 0xff;
            h = h.wrapping_mul(0x100_0000_01b3);
            b += 1;
        }
        i += 1;
    }
    h
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// A hash of the size, alignment and field offsets of every type a state
/// file holds: a layout change that forgot to bump [`LAYOUT_VERSION`]
/// still changes it.
pub fn layout_fingerprint() -> u64 {
    use std::mem::{align_of, offset_of, size_of};
    let meta = [
        size_of::<FlowMeta>(),
        align_of::<FlowMeta>(),
        offset_of!(FlowMeta, snat_port),
        offset_of!(FlowMeta, backend_port),
        offset_of!(FlowMeta, hop),
        offset_of!(FlowMeta, backend),
        offset_of!(FlowMeta, ip_delta),
        offset_of!(FlowMeta, l4_delta),
        offset_of!(FlowMeta, table_gen),
        offset_of!(FlowMeta, hop_gen),
        offset_of!(FlowMeta, last_seen),
        offset_of!(FlowMeta, entry),
        offset_of!(FlowMeta, rev_slot),
        offset_of!(FlowMeta, state),
        offset_of!(FlowMeta, ticket),
        offset_of!(FlowMeta, snat),
        offset_of!(FlowMeta, front),
        offset_of!(FlowMeta, _pad),
    ];
    let e4 = [
        size_of::<FlowEntry>(),
        align_of::<FlowEntry>(),
        offset_of!(FlowEntry, k0),
        offset_of!(FlowEntry, k1),
        offset_of!(FlowEntry, snat_addr),
        offset_of!(FlowEntry, backend_addr),
        offset_of!(FlowEntry, m),
    ];
    let e6 = [
        size_of::<FlowEntry6>(),
        align_of::<FlowEntry6>(),
        offset_of!(FlowEntry6, src),
        offset_of!(FlowEntry6, p),
        offset_of!(FlowEntry6, dst),
        offset_of!(FlowEntry6, snat_addr),
        offset_of!(FlowEntry6, backend_addr),
        offset_of!(FlowEntry6, m),
        offset_of!(FlowEntry6, _pad),
    ];
    let hdr = [size_of::<Header>(), offset_of!(Header, seeds), offset_of!(Header, boot_id)];
    let all: Vec<u64> = [&meta[..], &e4, &e6, &slot_layout::<u32>(), &slot_layout::<u128>(), &hdr]
        .iter()
        .flat_map(|s| s.iter().map(|&x| x as u64).chain([u64::MAX]))
        .collect();
    fnv(FNV_BASIS, &all)
}

/// A hash of the SNAT addresses, both families, in order.
fn snat_hash(cfg: &NatConfig) -> u64 {
    let v4 = cfg.snat_addrs.iter().map(|a| u64::from(u32::from(*a)));
    let v6 = cfg.snat_addrs6.iter().flat_map(|a| {
        let x = u128::from(*a);
        [(x >> 64) as u64, x as u64]
    });
    let words: Vec<u64> = v4.chain([u64::MAX]).chain(v6).collect();
    fnv(FNV_BASIS, &words)
}

/// Why the state directory could not be used at all (a refused *file* is
/// not an error: the table starts clean).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory could not be created.
    #[error("state_dir {path}: cannot create: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A state file could not be opened, locked, sized or mapped.
    #[error("state file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error (`WouldBlock`: another svcgate holds it).
        #[source]
        source: std::io::Error,
    },
    /// The SNAT configuration is unusable.
    #[error(transparent)]
    Snat(#[from] ReverseError),
}

/// What adoption found, for the log and the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartReport {
    /// State files adopted.
    pub files_adopted: usize,
    /// State files refused (and started clean), each with its reason.
    pub refused: Vec<String>,
    /// Flows taken over, both families, every worker.
    pub flows_adopted: usize,
    /// Flows dropped as invalid (torn, misplaced, duplicated, or without
    /// their reply slot).
    pub flows_dropped: usize,
    /// Reverse slots taken over (and claimed by a flow).
    pub replies_adopted: usize,
    /// Reverse slots cleared or freed (torn, misplaced, or claimed by no flow).
    pub replies_dropped: usize,
    /// Reverse slots caught in the middle of a write (odd sequence).
    pub torn: usize,
}

/// The tables of a state directory, opened.
#[derive(Debug)]
pub struct Restored {
    /// The IPv4 reverse table.
    pub reverse: ReverseTable,
    /// The IPv6 reverse table.
    pub reverse6: ReverseTable<u128>,
    /// Per worker: the IPv4 and IPv6 flow tables.
    pub flows: Vec<(FlowTable<FlowEntry>, FlowTable<FlowEntry6>)>,
    /// `CLOCK_MONOTONIC` (ms) at the tables' clock zero.
    pub epoch_ms: u64,
    /// What was adopted and refused.
    pub report: RestartReport,
}

/// The set being opened: what every header must say.
struct Opening<'a> {
    dir: &'a Path,
    cfg: &'a NatConfig,
    workers: u16,
    boot_id: [u8; 48],
    /// The set's epoch, once the first adopted file fixed it.
    epoch: Option<u64>,
    /// The epoch of a set with no file adopted (this process's start).
    provisional: u64,
    /// Files created or refused (started clean), with their header: their
    /// epoch is set to the set's once it is known (a refused file must not
    /// make the files after it look like another set's).
    fresh: Vec<(PathBuf, Header)>,
    report: RestartReport,
}

impl Opening<'_> {
    /// The header this process writes for a file of `kind`.
    fn expected(&self, kind: Kind, worker: u16, entry: (usize, usize), slots: usize, capacity: usize) -> Header {
        let (lo, hi) = self.cfg.snat_ports;
        Header {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            kind: kind as u32,
            fingerprint: layout_fingerprint(),
            entry_size: entry.0 as u32,
            entry_align: entry.1 as u32,
            slots: slots as u64,
            capacity: capacity as u64,
            workers: u32::from(self.workers),
            worker: u32::from(worker),
            snat_lo: lo,
            snat_hi: hi,
            _pad: 0,
            snat_addrs: snat_hash(self.cfg),
            seeds: [0; 2],
            epoch_ms: 0,
            boot_id: self.boot_id,
        }
    }

    /// Opens `name`: the file, its header, and whether it was adopted
    /// (its header matched); when not (a new file, or one refused), it is
    /// emptied and given a fresh header with `hasher`'s seeds.
    fn open(&mut self, name: &str, want: Header, hasher: KeyHasher) -> Result<(StateFile, Header, bool), StateError> {
        let path = self.dir.join(name);
        let err = |source| StateError::File { path: path.clone(), source };
        let file = StateFile::open(&path).map_err(err)?;
        let len = file.byte_len().map_err(err)?;
        let body = want.slots as usize * want.entry_size as usize;
        let raw = file.read_header().map_err(err)?;
        let verdict = if len == 0 { Err(None) } else { check(&raw, &want, len, body, self.epoch).map_err(Some) };
        match verdict {
            Ok(h) => {
                self.epoch.get_or_insert(h.epoch_ms);
                self.report.files_adopted += 1;
                Ok((file, h, true))
            }
            Err(why) => {
                if let Some(why) = why {
                    self.report.refused.push(format!("{}: {why}; starting it clean", path.display()));
                }
                let epoch = self.epoch.unwrap_or(self.provisional);
                let h = Header { seeds: hasher.seeds(), epoch_ms: epoch, ..want };
                file.reset(body).map_err(err)?;
                file.write_header(bytemuck::bytes_of(&h)).map_err(err)?;
                self.fresh.push((path.clone(), h));
                Ok((file, h, false))
            }
        }
    }
}

/// Checks a file's header (`raw`, the file `len` bytes long) against what
/// this process expects (`want`; seeds and epoch are the file's own, the
/// epoch must be `epoch` once the set has one). The reason when refused.
pub fn check(raw: &[u8], want: &Header, len: u64, body: usize, epoch: Option<u64>) -> Result<Header, String> {
    let Some(h) =
        raw.get(..std::mem::size_of::<Header>()).and_then(|b| bytemuck::try_pod_read_unaligned::<Header>(b).ok())
    else {
        return Err("no header".into());
    };
    if h.magic != MAGIC {
        return Err("not an svcgate state file (bad magic)".into());
    }
    let differ = |what: &str, have: u64, want: u64| Err(format!("{what} is {have} in the file, {want} here"));
    if h.version != want.version {
        return differ("layout version", h.version.into(), want.version.into());
    }
    if h.fingerprint != want.fingerprint {
        return Err(format!(
            "layout fingerprint {:#x} in the file, {:#x} here (entry layout changed)",
            h.fingerprint, want.fingerprint
        ));
    }
    if h.kind != want.kind {
        return differ("kind", h.kind.into(), want.kind.into());
    }
    if (h.entry_size, h.entry_align) != (want.entry_size, want.entry_align) {
        return differ("entry size", h.entry_size.into(), want.entry_size.into());
    }
    if h.workers != want.workers || h.worker != want.worker {
        return Err(format!(
            "worker {} of {} in the file, {} of {} here",
            h.worker, h.workers, want.worker, want.workers
        ));
    }
    if h.capacity != want.capacity {
        return differ("capacity", h.capacity, want.capacity);
    }
    if h.slots != want.slots {
        return differ("slots", h.slots, want.slots);
    }
    if (h.snat_lo, h.snat_hi) != (want.snat_lo, want.snat_hi) {
        return Err(format!(
            "SNAT ports {}-{} in the file, {}-{} here",
            h.snat_lo, h.snat_hi, want.snat_lo, want.snat_hi
        ));
    }
    if h.snat_addrs != want.snat_addrs {
        return Err("SNAT addresses differ".into());
    }
    if h.boot_id != want.boot_id {
        return Err("written before the last boot".into());
    }
    if let Some(e) = epoch {
        if h.epoch_ms != e {
            return Err("from another set of tables (clock epoch differs)".into());
        }
    }
    if h.epoch_ms > shm::monotonic_ms() {
        return Err("clock epoch in the future".into());
    }
    let need = (HEADER_BYTES + body) as u64;
    if len != need {
        return Err(format!("{len} bytes long, {need} expected (truncated or grown)"));
    }
    Ok(h)
}

/// Opens (or creates) every table of the state directory `dir` for
/// `cfg` with `workers` workers, adopting what matches and starting the
/// rest clean (see the module documentation).
pub fn open(dir: &Path, cfg: &NatConfig, workers: u16) -> Result<Restored, StateError> {
    std::fs::create_dir_all(dir).map_err(|source| StateError::Dir { path: dir.to_path_buf(), source })?;
    let mut o = Opening {
        dir,
        cfg,
        workers,
        boot_id: shm::boot_id(),
        epoch: None,
        provisional: shm::monotonic_ms(),
        fresh: Vec::new(),
        report: RestartReport::default(),
    };
    let n = usize::from(workers);
    let (lo, hi) = cfg.snat_ports;

    let flows4 = cfg.conntrack_capacity.saturating_mul(n);
    let (rev4, adopted4) = {
        let slots = ReverseTable::<u32>::slots_for(flows4);
        let want = o.expected(Kind::Reverse4, 0, slot_size::<u32>(), slots, flows4);
        let (file, h, adopted) = o.open("reverse4.tbl", want, cfg.key_hasher())?;
        let map =
            file.map_cells(slots).map_err(|source| StateError::File { path: dir.join("reverse4.tbl"), source })?;
        let hasher = KeyHasher::with_seeds(h.seeds[0], h.seeds[1]);
        let t = ReverseTable::build(&cfg.snat_addrs, lo, hi, workers, flows4, hasher, Some(map))?;
        (t, adopted)
    };
    let flows6 = cfg.capacity6().saturating_mul(n);
    let (rev6, adopted6) = {
        let slots = ReverseTable::<u128>::slots_for(flows6);
        let want = o.expected(Kind::Reverse6, 0, slot_size::<u128>(), slots, flows6);
        let (file, h, adopted) = o.open("reverse6.tbl", want, cfg.key_hasher())?;
        let map =
            file.map_cells(slots).map_err(|source| StateError::File { path: dir.join("reverse6.tbl"), source })?;
        let hasher = KeyHasher::with_seeds(h.seeds[0], h.seeds[1]);
        let t = ReverseTable::build(&cfg.snat_addrs6, lo, hi, workers, flows6, hasher, Some(map))?;
        (t, adopted)
    };
    let adopted = [adopted4.then(|| rev4.adopt()), adopted6.then(|| rev6.adopt())];
    for a in adopted.into_iter().flatten() {
        o.report.replies_dropped += a.cleared + a.torn;
        o.report.torn += a.torn;
    }
    let mut claimed4 = vec![false; rev4.slots()];
    let mut claimed6 = vec![false; rev6.slots()];
    let mut flows = Vec::with_capacity(n);
    for w in 0..workers {
        let t4 = open_flows::<FlowEntry>(&mut o, Kind::Flow4, w, cfg.conntrack_capacity, &rev4, &mut claimed4)?;
        let t6 = open_flows::<FlowEntry6>(&mut o, Kind::Flow6, w, cfg.capacity6(), &rev6, &mut claimed6)?;
        flows.push((t4, t6));
    }
    o.report.replies_dropped += rev4.free_unclaimed(&claimed4) + rev6.free_unclaimed(&claimed6);
    o.report.replies_adopted = claimed4.iter().chain(&claimed6).filter(|&&c| c).count();
    let epoch_ms = o.epoch.unwrap_or(o.provisional);
    // Clean tables started before an adopted file fixed the set's epoch
    // take it (they hold no flow, so no time is rebased).
    for (path, h) in o.fresh.iter().filter(|(_, h)| h.epoch_ms != epoch_ms) {
        let h = Header { epoch_ms, ..*h };
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::FileExt;
            std::fs::OpenOptions::new().write(true).open(path)?.write_all_at(bytemuck::bytes_of(&h), 0)
        };
        write().map_err(|source| StateError::File { path: path.clone(), source })?;
    }
    Ok(Restored { reverse: rev4, reverse6: rev6, flows, epoch_ms, report: o.report })
}

fn slot_size<R: WireAddr>() -> (usize, usize) {
    let l = slot_layout::<R>();
    (l[0], l[1])
}

/// Opens worker `w`'s flow table of one family and adopts its flows
/// against the family's reverse table `rev` (marking the reply slots they
/// claim in `claimed`).
fn open_flows<E>(
    o: &mut Opening<'_>,
    kind: Kind,
    w: u16,
    capacity: usize,
    rev: &ReverseTable<E::Raw>,
    claimed: &mut [bool],
) -> Result<FlowTable<E>, StateError>
where
    E: Flow + std::ops::DerefMut<Target = FlowMeta>,
{
    let name = format!("{}-q{w}.tbl", if kind == Kind::Flow4 { "flow4" } else { "flow6" });
    let slots = FlowTable::<E>::slots_for(capacity);
    let entry = (std::mem::size_of::<E>(), std::mem::align_of::<E>());
    let want = o.expected(kind, w, entry, slots, capacity);
    let (file, h, adopted) = o.open(&name, want, o.cfg.key_hasher())?;
    let path = o.dir.join(&name);
    let map = file.map_pod(slots * entry.0).map_err(|source| StateError::File { path: path.clone(), source })?;
    let hasher = KeyHasher::with_seeds(h.seeds[0], h.seeds[1]);
    let Some(mut t) = FlowTable::<E>::from_state(capacity, map, hasher, !adopted) else {
        let source = std::io::Error::other("mapping does not fit the table");
        return Err(StateError::File { path, source });
    };
    if adopted {
        let (kept, dropped) = t.adopt(|_, e| adopt_flow(e, rev, claimed));
        o.report.flows_adopted += kept;
        o.report.flows_dropped += dropped;
    }
    Ok(t)
}

/// Whether a flow read from a state file may be taken over: it must be TCP
/// or UDP and hold the reply slot of its own reply key, which no other
/// flow claimed. Its generations are made stale (revalidated on its first
/// packet) and its unassured-queue ticket cleared.
fn adopt_flow<E>(e: &mut E, rev: &ReverseTable<E::Raw>, claimed: &mut [bool]) -> bool
where
    E: Flow + std::ops::DerefMut<Target = FlowMeta>,
{
    let proto = e.proto();
    if proto != crate::wire::IPPROTO_TCP && proto != crate::wire::IPPROTO_UDP {
        return false;
    }
    let reply = FlowKey { src: e.backend_addr(), dst: e.snat_addr(), sport: e.backend_port, dport: e.snat_port, proto };
    let idx = e.rev_slot;
    match claimed.get_mut(idx as usize) {
        Some(c) if !*c && rev.key_at(idx, &reply) => *c = true,
        _ => return false,
    }
    e.table_gen = STALE_GEN;
    e.hop_gen = STALE_GEN;
    e.ticket = [0xff; 3];
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_plain_and_fits_its_page() {
        assert_eq!(std::mem::size_of::<Header>(), 144);
        assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);
        assert_eq!(layout_fingerprint(), layout_fingerprint());
    }
}
