//! Announcing the VIPs over BGP through BIRD 2 (`[announce]` in the config).
//!
//! svcgate speaks no BGP itself. Beside it on the gateway node runs BIRD 2,
//! whose `bird.conf` includes a file svcgate owns ([`AnnounceSettings::routes_file`]).
//! After each sync svcgate computes the set of addresses to announce
//! ([`vip_set`]: the frontends of the configured kinds, by default only
//! those whose Service has an endpoint to take a new flow), and when the set
//! changed it rewrites that file (temp file + rename, so BIRD never reads
//! half of it) as one `protocol static` per family, then asks BIRD to
//! re-read its configuration over BIRD's control socket (`configure`,
//! [`BirdClient`]). BIRD's BGP sessions export those static routes to the
//! routers; the operator's `bird.conf` decides to whom (docs/FLEET.md,
//! deploy/bird.conf).
//!
//! Liveness without svcgate's help: every route is written `via
//! "svcgate0q0"`, svcgate's exception TUN device of queue 0, which is not
//! persistent and vanishes with the process. BIRD follows interfaces over
//! netlink, so when svcgate dies (SIGKILL, a crash, the OOM killer) BIRD
//! withdraws the routes at once, and re-announces them only when the device
//! is back. For that reason [`withdraw_stale`] empties the file before the
//! dataplane (and so the device) comes up: a new process does not announce
//! the previous one's set before its own first sync.
//!
//! Errors (BIRD down, a refused config, a full disk) are logged, counted
//! (`svcgate_announce_errors_total`), shown by `svcgate status`, and retried
//! with backoff; they never stop the daemon.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use svcgate_common::family::Addr;
use svcgate_common::publish::Publisher;
use svcgate_common::table::{ActiveSet, FamilyTable, FrontendKind, ServiceTable};

use crate::controller::Controller;

/// Default path of BIRD's control socket (Debian's bird2).
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
/// Default path of the routes file svcgate writes.
pub const DEFAULT_ROUTES_FILE: &str = "/etc/bird/svcgate-routes.conf";
/// The device the routes point at by default: svcgate's exception TUN
/// device of queue 0 (`svcgate0` + `q0`), which lives as long as the process.
pub const DEFAULT_VIA: &str = "svcgate0q0";
/// Default name prefix of the static protocols (`svcgate4`, `svcgate6`).
pub const DEFAULT_PROTOCOL: &str = "svcgate";
/// Default drain time after withdrawing, seconds.
pub const DEFAULT_DRAIN_SECONDS: u64 = 10;

/// What kinds of frontend addresses are announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds {
    /// ClusterIPs (reachable from outside the cluster only when routed).
    pub cluster: bool,
    /// LoadBalancer ingress IPs.
    pub loadbalancer: bool,
    /// `externalIPs`.
    pub external: bool,
}

impl Kinds {
    /// True when frontends of `kind` are announced (NodePorts never: their
    /// address is a node's own).
    pub fn covers(&self, kind: FrontendKind) -> bool {
        match kind {
            FrontendKind::ClusterIp => self.cluster,
            FrontendKind::LoadBalancer => self.loadbalancer,
            FrontendKind::ExternalIp => self.external,
            FrontendKind::NodePort => false,
        }
    }
}

/// The `[announce]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceSettings {
    /// BIRD's control socket.
    pub bird_socket: PathBuf,
    /// The file svcgate writes and `bird.conf` includes.
    pub routes_file: PathBuf,
    /// The kinds of frontend addresses announced.
    pub kinds: Kinds,
    /// Withdraw an address when none of its Service ports has an endpoint
    /// that takes new flows.
    pub withdraw_without_endpoints: bool,
    /// On SIGTERM: after the routes are withdrawn, keep forwarding this long
    /// while established flows finish (or move to other gateways).
    pub drain: Duration,
    /// The interface the static routes point at.
    pub via: String,
    /// The static protocols are named `<protocol>4` and `<protocol>6`.
    pub protocol: String,
    /// How long one exchange with BIRD may take.
    pub timeout: Duration,
}

/// An `[announce]` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceConfigError {
    /// An unknown entry of `kinds`.
    #[error(
        "announce.kinds[{index}]: {value:?} is not one of \"loadbalancer\", \"external\", \"cluster\" \
         (NodePorts are not announced: their addresses are the nodes' own)"
    )]
    Kind {
        /// Its index.
        index: usize,
        /// The value.
        value: String,
    },
    /// A name BIRD would not take inside a quoted string or as a symbol.
    #[error("announce.{key}: {value:?} must be 1-{max} characters of [A-Za-z0-9_.-]")]
    Name {
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// Its longest length.
        max: usize,
    },
    /// `drain_seconds` or `timeout_ms` out of range.
    #[error("announce.{key}: {value} is out of range {range}")]
    Range {
        /// The key.
        key: &'static str,
        /// The value.
        value: i64,
        /// The range allowed.
        range: &'static str,
    },
}

/// `[announce]` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnnounce {
    bird_socket: Option<PathBuf>,
    routes_file: Option<PathBuf>,
    kinds: Option<Vec<String>>,
    withdraw_without_endpoints: Option<bool>,
    drain_seconds: Option<i64>,
    via: Option<String>,
    protocol: Option<String>,
    timeout_ms: Option<i64>,
}

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl RawAnnounce {
    /// Checks the values; relative paths are taken relative to `base`.
    pub(crate) fn check(self, base: &Path) -> Result<AnnounceSettings, AnnounceConfigError> {
        let mut kinds = Kinds::default();
        let given = self.kinds.unwrap_or_else(|| vec!["loadbalancer".into(), "external".into()]);
        for (index, value) in given.into_iter().enumerate() {
            match value.as_str() {
                "loadbalancer" => kinds.loadbalancer = true,
                "external" => kinds.external = true,
                "cluster" => kinds.cluster = true,
                _ => return Err(AnnounceConfigError::Kind { index, value }),
            }
        }
        let via = self.via.unwrap_or_else(|| DEFAULT_VIA.into());
        // IFNAMSIZ - 1.
        if !name_ok(&via, 15) {
            return Err(AnnounceConfigError::Name { key: "via", value: via, max: 15 });
        }
        let protocol = self.protocol.unwrap_or_else(|| DEFAULT_PROTOCOL.into());
        if !name_ok(&protocol, 32)
            || protocol.contains(['.', '-'])
            || protocol.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(AnnounceConfigError::Name { key: "protocol", value: protocol, max: 32 });
        }
        let drain = match self.drain_seconds {
            None => DEFAULT_DRAIN_SECONDS,
            Some(s @ 0..=3600) => s as u64,
            Some(value) => return Err(AnnounceConfigError::Range { key: "drain_seconds", value, range: "0..=3600" }),
        };
        let timeout = match self.timeout_ms {
            None => 2000,
            Some(t @ 10..=60_000) => t as u64,
            Some(value) => return Err(AnnounceConfigError::Range { key: "timeout_ms", value, range: "10..=60000" }),
        };
        let abs = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        Ok(AnnounceSettings {
            bird_socket: abs(self.bird_socket.unwrap_or_else(|| DEFAULT_BIRD_SOCKET.into())),
            routes_file: abs(self.routes_file.unwrap_or_else(|| DEFAULT_ROUTES_FILE.into())),
            kinds,
            withdraw_without_endpoints: self.withdraw_without_endpoints.unwrap_or(true),
            drain: Duration::from_secs(drain),
            via,
            protocol,
            timeout: Duration::from_millis(timeout),
        })
    }
}

/// The addresses `table` should be announced for under `s`: every address
/// of a frontend of a kind `s` announces, and (with
/// `withdraw_without_endpoints`) whose Service port has an endpoint that
/// takes new flows; an address shared by several Services is announced
/// when any of them qualifies.
pub fn vip_set(table: &ServiceTable, s: &AnnounceSettings) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    add_vips(table.family::<Ipv4Addr>(), s, &mut out);
    add_vips(table.family::<Ipv6Addr>(), s, &mut out);
    out
}

/// [`vip_set`] of one family's half of the table, added to `out`.
fn add_vips<A: Addr>(half: &FamilyTable<A>, s: &AnnounceSettings, out: &mut BTreeSet<IpAddr>) {
    for (k, fe) in half.frontends() {
        if s.kinds.covers(fe.kind)
            && (!s.withdraw_without_endpoints || half.entry(fe.entry).is_some_and(|e| e.active != ActiveSet::Empty))
        {
            out.insert(k.addr.into());
        }
    }
}

/// The routes file for `vips`: one static protocol per family, every route
/// a host route via the device `via`.
pub fn render_routes(vips: &BTreeSet<IpAddr>, s: &AnnounceSettings) -> String {
    let mut out = String::from(
        "# Written by svcgate ([announce] in its config) and replaced whole on every change: do not edit.\n\
         # Include it at the top level of bird.conf; export these protocols to your BGP peers.\n",
    );
    for (fam, len, v4) in [("ipv4", 32, true), ("ipv6", 128, false)] {
        let suffix = if v4 { '4' } else { '6' };
        out += &format!("protocol static {}{suffix} {{\n\t{fam};\n", s.protocol);
        for a in vips.iter().filter(|a| a.is_ipv4() == v4) {
            out += &format!("\troute {a}/{len} via \"{}\";\n", s.via);
        }
        out += "}\n";
    }
    out
}

/// Talking to BIRD or writing its file failed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The routes file cannot be written.
    #[error("{path}: cannot write the routes file: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// BIRD's control socket does not answer.
    #[error("BIRD control socket {path}: cannot connect: {source} (is bird running with `-s {path}`?)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed, or timed out.
    #[error("BIRD control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The OS error (`WouldBlock`/`TimedOut`: no answer in time).
        #[source]
        source: std::io::Error,
    },
    /// BIRD answered with an error code (8xxx run-time, 9xxx parse error).
    #[error("BIRD refused `{command}`: {code} {message}")]
    Refused {
        /// The command sent.
        command: String,
        /// BIRD's reply code.
        code: u16,
        /// BIRD's text (for a config error: file, line and column).
        message: String,
    },
    /// A line that is not BIRD's control protocol.
    #[error("BIRD control socket {path}: unexpected reply {line:?}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// The line.
        line: String,
    },
}

/// One reply of BIRD's control protocol: the final code and every text line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdReply {
    /// The code of the last line (`0003` Reconfigured, `0004`
    /// Reconfiguration in progress, `8002` configuration error, ...).
    pub code: u16,
    /// The text of each line, in order.
    pub lines: Vec<String>,
}

/// A client of BIRD's control socket (what `birdc` speaks): each reply line
/// is `NNNN-text` (more follow), `NNNN text` (the last), or ` text` (a
/// continuation of the previous code); codes 0xxx are success, 1xxx/2xxx
/// table rows and headings, 8xxx and 9xxx errors.
#[derive(Debug, Clone)]
pub struct BirdClient {
    path: PathBuf,
    timeout: Duration,
}

impl BirdClient {
    /// A client of the socket at `path`; each exchange is bounded by `timeout`.
    pub fn new(path: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self { path: path.into(), timeout }
    }

    /// Sends `command` and reads the reply; an 8xxx/9xxx reply is
    /// [`AnnounceError::Refused`].
    pub fn command(&self, command: &str) -> Result<BirdReply, AnnounceError> {
        let io = |source| AnnounceError::Io { path: self.path.clone(), source };
        let stream = UnixStream::connect(&self.path)
            .map_err(|source| AnnounceError::Connect { path: self.path.clone(), source })?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
        let deadline = Instant::now() + self.timeout;
        // The greeting: `0001 BIRD 2.0.12 ready.`
        let hello = self.read_reply(&mut reader, deadline)?;
        if hello.code != 1 {
            return Err(AnnounceError::Protocol { path: self.path.clone(), line: hello.lines.join(" / ") });
        }
        (&stream).write_all(format!("{command}\n").as_bytes()).map_err(io)?;
        let reply = self.read_reply(&mut reader, Instant::now() + self.timeout)?;
        if reply.code >= 8000 {
            return Err(AnnounceError::Refused {
                command: command.into(),
                code: reply.code,
                message: reply.lines.join(" / "),
            });
        }
        Ok(reply)
    }

    /// Asks BIRD to re-read its configuration (and so the routes file).
    pub fn configure(&self) -> Result<BirdReply, AnnounceError> {
        self.command("configure")
    }

    fn read_reply(&self, r: &mut impl BufRead, deadline: Instant) -> Result<BirdReply, AnnounceError> {
        let mut lines = Vec::new();
        loop {
            if Instant::now() > deadline {
                return Err(AnnounceError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no complete reply in time"),
                });
            }
            let mut l = String::new();
            let n = r.read_line(&mut l).map_err(|source| AnnounceError::Io { path: self.path.clone(), source })?;
            if n == 0 {
                return Err(AnnounceError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "BIRD closed the socket"),
                });
            }
            let l = l.trim_end_matches(['\n', '\r']);
            if let Some(text) = l.strip_prefix(' ') {
                lines.push(text.to_string());
                continue;
            }
            let bytes = l.as_bytes();
            let code = (bytes.len() >= 5 && bytes[..4].iter().all(u8::is_ascii_digit))
                .then(|| l[..4].parse::<u16>().ok())
                .flatten();
            match (code, bytes.get(4)) {
                (Some(_), Some(b'-')) => lines.push(l[5..].to_string()),
                (Some(code), Some(b' ')) => {
                    lines.push(l[5..].to_string());
                    return Ok(BirdReply { code, lines });
                }
                _ => return Err(AnnounceError::Protocol { path: self.path.clone(), line: l.to_string() }),
            }
        }
    }
}

/// Writes `text` to `path` atomically: a temporary file beside it, synced,
/// then renamed over it.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), AnnounceError> {
    let err = |source| AnnounceError::Write { path: path.to_path_buf(), source };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "routes".into());
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// Withdraws whatever an earlier process left in the routes file (an empty
/// set, then `configure`), before the dataplane creates the `via` device
/// that would bring those routes back up. Errors are returned for the log;
/// the daemon starts anyway (BIRD may not be up yet: the announcer retries).
pub fn withdraw_stale(s: &AnnounceSettings) -> Result<(), AnnounceError> {
    write_atomically(&s.routes_file, &render_routes(&BTreeSet::new(), s))?;
    BirdClient::new(&s.bird_socket, s.timeout).configure().map(|_| ())
}

/// `svcgate run`, before the dataplane starts: [`withdraw_stale`] when
/// `[announce]` is configured, its outcome logged.
pub fn before_dataplane(settings: Option<&AnnounceSettings>) {
    let Some(s) = settings else { return };
    match withdraw_stale(s) {
        Ok(()) => tracing::info!(file = %s.routes_file.display(), "announce: earlier routes withdrawn"),
        Err(e) => tracing::warn!("announce: withdrawing earlier routes: {e} (retried once running)"),
    }
}

/// `svcgate run`, once the daemon runs: starts the announcer when
/// `[announce]` is configured and a dataplane is attached (announcing VIPs
/// nothing forwards would black-hole them), and registers it for
/// `/status` and `/metrics`.
pub fn start_for_run(
    settings: Option<&AnnounceSettings>,
    dataplane_attached: bool,
    daemon: &crate::daemon::Daemon,
) -> Option<Announcer> {
    let s = settings?;
    if !dataplane_attached {
        tracing::warn!("[announce] is configured but there is no [dataplane]: nothing is announced");
        return None;
    }
    match start(s.clone(), Arc::clone(daemon.controller())) {
        Ok(a) => {
            daemon.attach_announce(a.state());
            tracing::info!(socket = %s.bird_socket.display(), file = %s.routes_file.display(), "announce: running");
            Some(a)
        }
        Err(e) => {
            tracing::error!("announce: cannot start the announcer thread: {e}; nothing is announced");
            None
        }
    }
}

/// What `svcgate status` and `/metrics` show of the announcer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceStatus {
    /// BIRD's control socket.
    pub bird_socket: String,
    /// The addresses BIRD last confirmed (after a successful `configure`).
    pub announced: Vec<String>,
    /// The addresses that should be announced now.
    pub desired: Vec<String>,
    /// Withdrawing for shutdown.
    pub draining: bool,
    /// Not announcing yet: the first sync is not done.
    pub waiting_for_sync: bool,
    /// Successful `configure` exchanges.
    pub reloads_total: u64,
    /// Failed writes or exchanges.
    pub errors_total: u64,
    /// The last error, until the next success.
    pub last_error: Option<String>,
}

/// The announcer's shared state.
#[derive(Debug, Default)]
pub struct AnnounceState {
    status: Mutex<AnnounceStatus>,
    draining: AtomicBool,
    stop: AtomicBool,
    /// True once BIRD confirmed the empty set while draining (the drain
    /// waits for it).
    withdrawn: AtomicBool,
}

impl AnnounceState {
    /// The status now.
    pub fn status(&self) -> AnnounceStatus {
        self.status.lock().clone()
    }
}

/// The running announcer thread; [`Announcer::drain`] withdraws everything.
#[derive(Debug)]
pub struct Announcer {
    state: Arc<AnnounceState>,
    settings: AnnounceSettings,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the announcer looks at the published table.
const TICK: Duration = Duration::from_millis(100);
/// Retry backoff after an error: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(10));

/// Starts the announcer: it announces nothing until `controller` reports
/// its first full sync, then follows every published table. Call it only
/// once the dataplane is attached (the routes are only useful then).
pub fn start(settings: AnnounceSettings, controller: Arc<Controller>) -> Result<Announcer, std::io::Error> {
    let tables = controller.tables();
    start_with(settings, Box::new(move || controller.is_ready()), tables)
}

/// [`start`] with the readiness and the tables given apart (tests).
fn start_with(
    settings: AnnounceSettings,
    ready: Box<dyn Fn() -> bool + Send>,
    tables: Arc<Publisher<ServiceTable>>,
) -> Result<Announcer, std::io::Error> {
    let state = Arc::new(AnnounceState::default());
    let thread = {
        let state = Arc::clone(&state);
        let s = settings.clone();
        std::thread::Builder::new().name("svcgate-announce".into()).spawn(move || run(&s, &state, &*ready, &tables))?
    };
    Ok(Announcer { state, settings, thread: Some(thread) })
}

fn run(s: &AnnounceSettings, state: &AnnounceState, is_ready: &dyn Fn() -> bool, tables: &Publisher<ServiceTable>) {
    let bird = BirdClient::new(&s.bird_socket, s.timeout);
    // What the file on disk holds (None: unknown) and what BIRD confirmed.
    let mut written: Option<BTreeSet<IpAddr>> = None;
    let mut applied: Option<BTreeSet<IpAddr>> = None;
    let mut retry_at: Option<Instant> = None;
    let mut last_tried: Option<BTreeSet<IpAddr>> = None;
    let mut backoff = BACKOFF.0;
    let mut last_logged: Option<String> = None;
    {
        let mut st = state.status.lock();
        st.bird_socket = s.bird_socket.display().to_string();
        st.waiting_for_sync = true;
    }
    // The wanted set and what it was computed from (table generation,
    // drained or not ready): recomputed only when one of them changed, not
    // on every tick.
    let mut want = BTreeSet::new();
    let mut want_of: Option<(u64, bool)> = None;
    while !state.stop.load(Ordering::Relaxed) {
        let draining = state.draining.load(Ordering::Relaxed);
        let ready = is_ready();
        let table = tables.current();
        let basis = (table.generation(), draining || !ready);
        if want_of != Some(basis) {
            want = if basis.1 { BTreeSet::new() } else { vip_set(&table, s) };
            want_of = Some(basis);
        }
        drop(table);
        // After an error, wait for the backoff, unless the set changed
        // since (a new set is tried at once).
        let due = retry_at.is_none_or(|t| Instant::now() >= t) || last_tried.as_ref() != Some(&want);
        if applied.as_ref() != Some(&want) && due {
            last_tried = Some(want.clone());
            let result = if written.as_ref() == Some(&want) {
                Ok(())
            } else {
                write_atomically(&s.routes_file, &render_routes(&want, s)).map(|_| written = Some(want.clone()))
            }
            .and_then(|_| bird.configure());
            match result {
                Ok(_) => {
                    tracing::info!(
                        routes = want.len(),
                        draining,
                        file = %s.routes_file.display(),
                        "announce: BIRD reloaded the routes"
                    );
                    applied = Some(want.clone());
                    retry_at = None;
                    backoff = BACKOFF.0;
                    last_logged = None;
                    let mut st = state.status.lock();
                    st.reloads_total += 1;
                    st.last_error = None;
                }
                Err(e) => {
                    let msg = e.to_string();
                    // One warning per distinct error, not one per retry.
                    if last_logged.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(retry_in = ?backoff, "announce: {msg}");
                        last_logged = Some(msg.clone());
                    }
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF.1);
                    let mut st = state.status.lock();
                    st.errors_total += 1;
                    st.last_error = Some(msg);
                }
            }
        }
        let done = applied.as_ref().is_some_and(|a| a.is_empty());
        state.withdrawn.store(draining && done, Ordering::Release);
        {
            let mut st = state.status.lock();
            st.announced = applied.iter().flatten().map(ToString::to_string).collect();
            st.desired = want.iter().map(ToString::to_string).collect();
            st.draining = draining;
            st.waiting_for_sync = !ready;
        }
        std::thread::sleep(TICK);
    }
}

impl Announcer {
    /// The shared state (for `/status` and `/metrics`).
    pub fn state(&self) -> Arc<AnnounceState> {
        Arc::clone(&self.state)
    }

    /// The drain time of the config.
    pub fn drain_time(&self) -> Duration {
        self.settings.drain
    }

    /// Withdraws every route and waits up to `timeout` for BIRD to confirm;
    /// true when it did. The announcer keeps the set empty from then on.
    pub fn withdraw_all(&self, timeout: Duration) -> bool {
        wait_withdrawn(&self.state, timeout)
    }

    /// The graceful drain of `svcgate run` on SIGTERM: withdraw every route
    /// (waiting up to 5 s for BIRD's confirmation), then keep forwarding
    /// for the configured drain time while the routers move new flows away
    /// and established ones finish, then return. A second signal during
    /// the wait ends it early (`interrupted` resolves).
    pub async fn drain(&self, interrupted: impl std::future::Future<Output = ()>) {
        let me = self.state();
        let confirmed =
            tokio::task::spawn_blocking(move || wait_withdrawn(&me, Duration::from_secs(5))).await.unwrap_or(false);
        if confirmed {
            tracing::info!(drain = ?self.settings.drain, "announce: routes withdrawn; draining established flows");
        } else {
            tracing::warn!(
                drain = ?self.settings.drain,
                "announce: BIRD did not confirm the withdrawal in 5 s; draining anyway (the routes go when the \
                 process exits and its device disappears)"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(self.settings.drain) => {}
            _ = interrupted => tracing::info!("announce: drain cut short by a second signal"),
        }
    }
}

fn wait_withdrawn(state: &AnnounceState, timeout: Duration) -> bool {
    state.draining.store(true, Ordering::Release);
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if state.withdrawn.load(Ordering::Acquire) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Appends the announcer's metrics to the `/metrics` text.
pub fn render_metrics(out: &mut String, st: &AnnounceStatus) {
    use std::fmt::Write as _;
    crate::metrics::header(
        out,
        "svcgate_announced_routes",
        "gauge",
        "Routes BIRD confirmed it announces (after configure).",
    );
    let _ = writeln!(out, "svcgate_announced_routes {}", st.announced.len());
    crate::metrics::header(out, "svcgate_announce_desired_routes", "gauge", "Routes that should be announced now.");
    let _ = writeln!(out, "svcgate_announce_desired_routes {}", st.desired.len());
    crate::metrics::header(out, "svcgate_announce_draining", "gauge", "1 while withdrawing for shutdown.");
    let _ = writeln!(out, "svcgate_announce_draining {}", u8::from(st.draining));
    crate::metrics::header(out, "svcgate_announce_reloads_total", "counter", "Successful BIRD configure exchanges.");
    let _ = writeln!(out, "svcgate_announce_reloads_total {}", st.reloads_total);
    crate::metrics::header(
        out,
        "svcgate_announce_errors_total",
        "counter",
        "Failed routes-file writes or BIRD exchanges.",
    );
    let _ = writeln!(out, "svcgate_announce_errors_total {}", st.errors_total);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn settings(dir: &Path) -> AnnounceSettings {
        RawAnnounce {
            bird_socket: Some(dir.join("bird.ctl")),
            routes_file: Some(dir.join("routes.conf")),
            kinds: Some(vec!["loadbalancer".into(), "external".into(), "cluster".into()]),
            ..RawAnnounce::default()
        }
        .check(dir)
        .unwrap()
    }

    /// A fake BIRD: greets, reads one command per connection, answers with
    /// `reply`; returns the commands it got.
    fn fake_bird(path: &Path, reply: &'static str, conns: usize) -> std::thread::JoinHandle<Vec<String>> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..conns {
                let (s, _) = l.accept().unwrap();
                let mut w = s.try_clone().unwrap();
                w.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).unwrap();
                got.push(line.trim().to_string());
                w.write_all(reply.as_bytes()).unwrap();
            }
            got
        })
    }

    #[test]
    fn configure_reads_multi_line_replies() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("bird.ctl");
        let srv = fake_bird(&sock, "0002-Reading configuration from /etc/bird/bird.conf\n0003 Reconfigured\n", 1);
        let r = BirdClient::new(&sock, Duration::from_secs(2)).configure().unwrap();
        assert_eq!(r.code, 3);
        assert_eq!(r.lines, ["Reading configuration from /etc/bird/bird.conf", "Reconfigured"]);
        assert_eq!(srv.join().unwrap(), ["configure"]);
    }

    #[test]
    fn errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("bird.ctl");
        // Nobody listening.
        let e = BirdClient::new(&sock, Duration::from_secs(1)).configure().unwrap_err();
        assert!(matches!(e, AnnounceError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("is bird running"), "{e}");
        // A config error: 8002 with the file and line.
        let srv = fake_bird(
            &sock,
            "0002-Reading configuration from /etc/bird/bird.conf\n8002 /etc/bird/svcgate.conf:3:2 syntax error\n",
            1,
        );
        let e = BirdClient::new(&sock, Duration::from_secs(2)).configure().unwrap_err();
        match &e {
            AnnounceError::Refused { code: 8002, message, .. } => assert!(message.contains("syntax error"), "{e}"),
            other => panic!("{other}"),
        }
        srv.join().unwrap();
        // Not BIRD's protocol.
        std::fs::remove_file(&sock).unwrap();
        let srv = fake_bird(&sock, "HTTP/1.1 400 Bad Request\n", 1);
        let e = BirdClient::new(&sock, Duration::from_secs(2)).configure().unwrap_err();
        assert!(matches!(e, AnnounceError::Protocol { .. }), "{e}");
        srv.join().unwrap();
    }

    #[test]
    fn a_silent_bird_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("bird.ctl");
        let l = UnixListener::bind(&sock).unwrap();
        let t0 = Instant::now();
        let e = BirdClient::new(&sock, Duration::from_millis(200)).configure().unwrap_err();
        assert!(matches!(e, AnnounceError::Io { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        drop(l);
    }

    #[test]
    fn routes_file_has_one_static_protocol_per_family() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let vips: BTreeSet<IpAddr> =
            ["198.19.0.100", "2001:2:0:9000::100", "198.18.128.10"].iter().map(|a| a.parse().unwrap()).collect();
        let text = render_routes(&vips, &s);
        assert!(text.contains(
            "protocol static svcgate4 {\n\tipv4;\n\troute 198.18.128.10/32 via \"svcgate0q0\";\n\troute 198.19.0.100/32 via \"svcgate0q0\";\n}\n"
        ), "{text}");
        assert!(
            text.contains(
                "protocol static svcgate6 {\n\tipv6;\n\troute 2001:2:0:9000::100/128 via \"svcgate0q0\";\n}\n"
            ),
            "{text}"
        );
        let empty = render_routes(&BTreeSet::new(), &s);
        assert!(empty.contains("protocol static svcgate4 {\n\tipv4;\n}\n"), "{empty}");
        write_atomically(&s.routes_file, &text).unwrap();
        assert_eq!(std::fs::read_to_string(&s.routes_file).unwrap(), text);
        // No temporary file left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn settings_default_and_check() {
        let s = RawAnnounce::default().check(Path::new("/etc/svcgate")).unwrap();
        assert_eq!(s.bird_socket, Path::new(DEFAULT_BIRD_SOCKET));
        assert_eq!(s.kinds, Kinds { cluster: false, loadbalancer: true, external: true });
        assert!(s.withdraw_without_endpoints);
        assert_eq!(s.drain, Duration::from_secs(10));
        assert!(!s.kinds.covers(FrontendKind::NodePort));
        let bad = RawAnnounce { kinds: Some(vec!["cluster".into(), "nodeport".into()]), ..RawAnnounce::default() };
        assert_eq!(
            bad.check(Path::new(".")).unwrap_err(),
            AnnounceConfigError::Kind { index: 1, value: "nodeport".into() }
        );
        let bad = RawAnnounce { via: Some("a\"; b".into()), ..RawAnnounce::default() };
        assert!(matches!(bad.check(Path::new(".")), Err(AnnounceConfigError::Name { key: "via", .. })));
        let bad = RawAnnounce { drain_seconds: Some(-1), ..RawAnnounce::default() };
        assert!(matches!(bad.check(Path::new(".")), Err(AnnounceConfigError::Range { key: "drain_seconds", .. })));
        let rel = RawAnnounce { routes_file: Some("r.conf".into()), ..RawAnnounce::default() };
        assert_eq!(rel.check(Path::new("/etc/svcgate")).unwrap().routes_file, Path::new("/etc/svcgate/r.conf"));
    }

    /// A fake BIRD serving any number of connections, answering each
    /// `configure` with `0003 Reconfigured`; returns the count of them.
    fn bird_forever(path: &Path) -> Arc<std::sync::atomic::AtomicUsize> {
        let l = UnixListener::bind(path).unwrap();
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&n);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { break };
                let mut w = s.try_clone().unwrap();
                let _ = w.write_all(b"0001 BIRD 2.0.12 ready.\n");
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.trim() == "configure" {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = w.write_all(b"0002-Reading configuration from bird.conf\n0003 Reconfigured\n");
                }
            }
        });
        n
    }

    fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !ok() {
            assert!(t0.elapsed() < timeout, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn announcer_waits_for_the_sync_retries_bird_and_withdraws_on_drain() {
        use svcgate_common::model::{
            BackendSpec, DesiredState, EndpointConditions, Protocol, ServicePortSpec, ServiceSpec, ServiceType,
        };
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let ready = Arc::new(AtomicBool::new(false));
        let tables = Arc::new(Publisher::new(ServiceTable::empty()));
        let r = Arc::clone(&ready);
        let a = start_with(s.clone(), Box::new(move || r.load(Ordering::SeqCst)), Arc::clone(&tables)).unwrap();
        let st = a.state();
        // BIRD is not running: an error, retried; the daemon goes on.
        wait_for("an error while BIRD is down", Duration::from_secs(3), || st.status().errors_total > 0);
        let e = st.status().last_error.unwrap();
        assert!(e.contains("cannot connect"), "{e}");
        assert!(st.status().waiting_for_sync);
        // A table is published but the first sync is not done: nothing announced.
        let svc = ServiceSpec {
            namespace: "default".into(),
            name: "web".into(),
            service_type: ServiceType::LoadBalancer,
            cluster_ips: vec!["198.18.128.10".parse().unwrap()],
            external_ips: vec![],
            load_balancer_ips: vec!["198.19.0.100".parse().unwrap()],
            source_ranges: vec![],
            affinity: Default::default(),
            ports: vec![ServicePortSpec {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                backends: vec![BackendSpec {
                    addr: "198.18.3.10".parse().unwrap(),
                    port: 80,
                    conditions: EndpointConditions::READY,
                    weight: 1,
                }],
            }],
            forwarding: None,
        };
        let desired = DesiredState { node_ips: vec![], services: vec![svc] };
        tables.publish(ServiceTable::build(&desired, 1).0);
        let configures = bird_forever(&s.bird_socket);
        wait_for("BIRD reached once it runs", Duration::from_secs(15), || configures.load(Ordering::SeqCst) > 0);
        std::thread::sleep(Duration::from_millis(300));
        assert!(st.status().announced.is_empty(), "{:?}", st.status());
        assert!(!std::fs::read_to_string(&s.routes_file).unwrap().contains("route "));
        // First sync done: both addresses announced.
        ready.store(true, Ordering::SeqCst);
        wait_for("announced after the sync", Duration::from_secs(3), || st.status().announced.len() == 2);
        let text = std::fs::read_to_string(&s.routes_file).unwrap();
        assert!(text.contains("route 198.19.0.100/32 via \"svcgate0q0\";"), "{text}");
        assert!(text.contains("route 198.18.128.10/32 via \"svcgate0q0\";"), "{text}");
        let n = configures.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(configures.load(Ordering::SeqCst), n, "a reload while nothing changed");
        assert_eq!(st.status().last_error, None);
        // SIGTERM: everything withdrawn, confirmed by BIRD.
        assert!(a.withdraw_all(Duration::from_secs(3)));
        assert!(!std::fs::read_to_string(&s.routes_file).unwrap().contains("route "));
        assert!(st.status().draining && st.status().announced.is_empty());
        let mut m = String::new();
        render_metrics(&mut m, &st.status());
        assert!(m.contains("svcgate_announced_routes 0\n"), "{m}");
        assert!(m.contains("svcgate_announce_draining 1\n"), "{m}");
    }

    #[test]
    fn vip_set_follows_kinds_and_endpoints() {
        use svcgate_common::model::{
            BackendSpec, DesiredState, EndpointConditions, Protocol, ServicePortSpec, ServiceSpec, ServiceType,
        };
        let port = |node_port: u16, backends: Vec<BackendSpec>| ServicePortSpec {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: Some(node_port),
            backends,
        };
        let pod = BackendSpec {
            addr: "198.18.3.10".parse().unwrap(),
            port: 80,
            conditions: EndpointConditions::READY,
            weight: 1,
        };
        let svc = |name: &str, cip: &str, lb: &str, node_port: u16, backends: Vec<BackendSpec>| ServiceSpec {
            namespace: "default".into(),
            name: name.into(),
            service_type: ServiceType::LoadBalancer,
            cluster_ips: vec![cip.parse().unwrap()],
            load_balancer_ips: vec![lb.parse().unwrap()],
            external_ips: vec![],
            source_ranges: vec![],
            affinity: Default::default(),
            ports: vec![port(node_port, backends)],
            forwarding: None,
        };
        let desired = DesiredState {
            node_ips: vec!["198.18.1.1".parse().unwrap()],
            services: vec![
                svc("web", "198.18.128.10", "198.19.0.100", 30080, vec![pod]),
                svc("empty", "198.18.128.11", "198.19.0.101", 30081, vec![]),
            ],
        };
        let (t, w) = ServiceTable::build(&desired, 1);
        assert!(w.is_empty(), "{w:?}");
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        let strs = |v: BTreeSet<IpAddr>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(strs(vip_set(&t, &s)), ["198.18.128.10", "198.19.0.100"]);
        s.withdraw_without_endpoints = false;
        assert_eq!(strs(vip_set(&t, &s)), ["198.18.128.10", "198.18.128.11", "198.19.0.100", "198.19.0.101"]);
        s.kinds.cluster = false;
        // Never the node IP of the NodePort.
        assert_eq!(strs(vip_set(&t, &s)), ["198.19.0.100", "198.19.0.101"]);
    }
}
