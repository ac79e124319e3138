//! The admin endpoint: `/healthz`, `/readyz`, `/metrics`, `/status`.
//!
//! Server: `tiny_http`, a small synchronous HTTP/1.1 server on its own thread.
//! Four read-only GET routes for localhost scrapes do not need an async stack
//! (axum/hyper) or to share the kube source's runtime; tiny_http keeps the
//! admin path independent of it and is a few hundred lines of dependency.
//! `svcgate status` is its client ([`fetch_status`], plain HTTP/1.0 over a
//! `TcpStream`: the daemon is on localhost).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::controller::{ControlStatus, Controller};
use crate::metrics::{self, NoStats, StatsSnapshot, StatsSource};

/// Where the dataplane's counters are read from; starts as [`NoStats`].
pub struct StatsSlot {
    source: RwLock<(Arc<dyn StatsSource>, bool)>,
    announce: RwLock<Option<Arc<crate::announce::AnnounceState>>>,
}

impl std::fmt::Debug for StatsSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsSlot").field("attached", &self.attached()).finish()
    }
}

impl Default for StatsSlot {
    fn default() -> Self {
        Self { source: RwLock::new((Arc::new(NoStats), false)), announce: RwLock::new(None) }
    }
}

impl StatsSlot {
    /// Registers the dataplane's counters.
    pub fn attach(&self, source: Arc<dyn StatsSource>) {
        *self.source.write() = (source, true);
    }

    /// True once a dataplane registered.
    pub fn attached(&self) -> bool {
        self.source.read().1
    }

    /// Registers the announcer (`[announce]`), for `/status` and `/metrics`.
    pub fn attach_announce(&self, state: Arc<crate::announce::AnnounceState>) {
        *self.announce.write() = Some(state);
    }

    /// The announcer's status, when one runs.
    pub fn announce(&self) -> Option<crate::announce::AnnounceStatus> {
        self.announce.read().as_ref().map(|a| a.status())
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = Arc::clone(&self.source.read().0);
        s.snapshot()
    }
}

/// The `/status` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// First full sync done.
    pub ready: bool,
    /// A dataplane is attached.
    pub dataplane_attached: bool,
    /// Seconds since the last sync (`null` before the first).
    pub since_last_sync_secs: Option<f64>,
    /// The controller's view.
    pub control: ControlStatus,
    /// The dataplane's counters.
    pub stats: StatsSnapshot,
    /// BGP announcement through BIRD (`[announce]`), when configured.
    #[serde(default)]
    pub announce: Option<crate::announce::AnnounceStatus>,
}

/// The status now.
pub fn status_report(ctl: &Controller, stats: &StatsSlot) -> StatusReport {
    let control = ctl.status();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let since = (control.last_sync_unix_ms > 0).then(|| now.saturating_sub(control.last_sync_unix_ms) as f64 / 1000.0);
    StatusReport {
        ready: ctl.is_ready(),
        dataplane_attached: stats.attached(),
        since_last_sync_secs: since,
        control,
        stats: stats.snapshot(),
        announce: stats.announce(),
    }
}

/// The `/metrics` text.
pub fn render_metrics(ctl: &Controller, stats: &StatsSlot) -> String {
    let st = ctl.status();
    let mut out = String::new();
    let gauges: [(&str, &str, u64); 9] = [
        ("svcgate_ready", "1 once the first full sync is published.", u64::from(ctl.is_ready())),
        ("svcgate_table_generation", "Generation of the published table.", st.generation),
        ("svcgate_services", "Services being served (headless included).", st.services.len() as u64),
        ("svcgate_service_ports", "Service ports (table entries).", st.entries as u64),
        ("svcgate_frontends", "Frontends (address, protocol, port).", st.frontends as u64),
        ("svcgate_endpoints", "Backends over all table entries.", st.backends as u64),
        ("svcgate_config_errors", "Objects or documents currently rejected.", st.errors.len() as u64),
        ("svcgate_config_warnings", "Objects served as they are with a warning.", st.warnings.len() as u64),
        (
            "svcgate_source_retrying",
            "1 while the source retries with backoff after a watch/list error.",
            u64::from(!st.source.retrying.is_empty()),
        ),
    ];
    for (name, help, v) in gauges {
        metrics::header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    metrics::header(&mut out, "svcgate_source_errors_total", "counter", "Watch/list errors the source met.");
    let _ = writeln!(out, "svcgate_source_errors_total {}", st.source.errors_total);
    let m = &ctl.metrics;
    metrics::header(&mut out, "svcgate_table_publishes_total", "counter", "Tables published, by kind of build.");
    let _ = writeln!(out, "svcgate_table_publishes_total{{kind=\"full\"}} {}", m.full_builds.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "svcgate_table_publishes_total{{kind=\"endpoints\"}} {}",
        m.incremental_builds.load(Ordering::Relaxed)
    );
    metrics::header(&mut out, "svcgate_dns_table_publishes_total", "counter", "Cluster DNS answer tables published.");
    let _ = writeln!(out, "svcgate_dns_table_publishes_total {}", m.dns_builds.load(Ordering::Relaxed));
    m.sync_latency.render(&mut out, "svcgate_sync_latency_seconds", "Source change to table published.");
    metrics::render_stats(&mut out, &stats.snapshot());
    if let Some(a) = stats.announce() {
        crate::announce::render_metrics(&mut out, &a);
    }
    out
}

/// A running admin server; dropping it stops the server.
pub struct AdminHandle {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for AdminHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHandle").field("addr", &self.addr).finish()
    }
}

impl AdminHandle {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starting the admin server failed.
#[derive(Debug, thiserror::Error)]
#[error("admin endpoint: cannot listen on {addr}: {message} (set admin_listen in the config)")]
pub struct AdminError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub message: String,
}

/// Serves the admin endpoint on `addr` until the handle is dropped.
pub fn serve(addr: SocketAddr, ctl: Arc<Controller>, stats: Arc<StatsSlot>) -> Result<AdminHandle, AdminError> {
    let server = tiny_http::Server::http(addr).map_err(|e| AdminError { addr, message: e.to_string() })?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    let server = Arc::new(server);
    let s2 = Arc::clone(&server);
    let thread = std::thread::Builder::new()
        .name("svcgate-admin".into())
        .spawn(move || {
            for req in s2.incoming_requests() {
                let (code, ctype, body) = route(req.method(), req.url(), &ctl, &stats);
                let header = tiny_http::Header::from_bytes("Content-Type", ctype).ok();
                let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
                if let Some(h) = header {
                    resp = resp.with_header(h);
                }
                let _ = req.respond(resp);
            }
        })
        .map_err(|e| AdminError { addr, message: e.to_string() })?;
    tracing::info!(addr = %bound, "admin endpoint listening (/healthz /readyz /metrics /status)");
    if !bound.ip().is_loopback() {
        // No authentication: /status lists every Service, endpoint and counter.
        tracing::warn!(
            addr = %bound,
            "the admin endpoint is reachable beyond this host and has no authentication: keep it on 127.0.0.1 \
             and scrape from the node, or admit only the scraper (deploy/README.md)"
        );
    }
    Ok(AdminHandle { server, thread: Some(thread), addr: bound })
}

fn route(method: &tiny_http::Method, url: &str, ctl: &Controller, stats: &StatsSlot) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if *method != tiny_http::Method::Get {
        return (405, TEXT, "only GET\n".into());
    }
    match url.split('?').next().unwrap_or("") {
        "/healthz" => (200, TEXT, "ok\n".into()),
        "/readyz" if ctl.is_ready() => (200, TEXT, "ready\n".into()),
        "/readyz" => (503, TEXT, "not ready: waiting for the first full sync of the source\n".into()),
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(ctl, stats)),
        "/status" => match serde_json::to_string_pretty(&status_report(ctl, stats)) {
            Ok(j) => (200, "application/json", j),
            Err(e) => (500, TEXT, format!("{e}\n")),
        },
        _ => (404, TEXT, "not found: try /healthz /readyz /metrics /status\n".into()),
    }
}

/// `svcgate status` could not get the status.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No daemon answers there.
    #[error("cannot reach the svcgate admin endpoint at {addr}: {source} (is `svcgate run` running? see --admin)")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It answered something else.
    #[error("the admin endpoint at {addr} answered unexpectedly: {message}")]
    Protocol {
        /// The address.
        addr: SocketAddr,
        /// What was wrong.
        message: String,
    },
}

/// GETs `path` from the admin endpoint; returns the body of a 200 answer.
pub fn fetch(addr: SocketAddr, path: &str) -> Result<String, FetchError> {
    let connect = |source| FetchError::Connect { addr, source };
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(connect)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(connect)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(connect)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(connect)?;
    let text = String::from_utf8_lossy(&buf);
    let proto = |message: String| FetchError::Protocol { addr, message };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| proto("no HTTP header".into()))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(proto(format!("{status}: {}", body.trim())));
    }
    Ok(body.to_string())
}

/// Fetches and decodes `/status`.
pub fn fetch_status(addr: SocketAddr) -> Result<StatusReport, FetchError> {
    let body = fetch(addr, "/status")?;
    serde_json::from_str(&body).map_err(|e| FetchError::Protocol { addr, message: format!("bad /status JSON: {e}") })
}
