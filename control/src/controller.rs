//! The controller: owns the desired state, builds tables and publishes them.
//!
//! Every source change ends in [`Controller::sync`]: resolve the objects into
//! a [`DesiredState`], compare it with the one being served, and publish a new
//! [`ServiceTable`] generation through the [`Publisher`] (one pointer swap;
//! workers take it at their next batch boundary):
//!
//! - only backends changed (an Endpoints, EndpointSlice or Pod change): the
//!   affected entries are rebuilt with [`ServiceTable::with_entries_replaced`],
//!   sharing the frontend map and every other entry;
//! - anything else: a full [`ServiceTable::build`];
//! - nothing changed: nothing is published.
//!
//! With `[dns]` configured ([`Controller::with_dns`]), the cluster DNS
//! [`DnsTable`] of the same resolution is built right after the ServiceTable
//! is published and published through its own [`Publisher`]
//! ([`Controller::dns_tables`]); when it is rebuilt (only when the names
//! changed) is explained in [`crate::names`].
//!
//! For the manifests source the controller keeps each file's last good objects
//! ([`Controller::apply_files`]): a file that stops parsing keeps serving what
//! it held, and a Service whose new version is invalid keeps its last good
//! version (see [`crate::resolve`]). Nothing already serving is lost to one
//! bad object.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use svcgate_common::family::{Addr, IpFamily};
use svcgate_common::model::{BackendSpec, DesiredState, ServiceSpec};
use svcgate_common::publish::{Publisher, Reader};
use svcgate_common::table::{service_entries, Replacements, ServiceTable};
use svcgate_dns::{DnsConfig, DnsTable, DnsView};

use crate::config::DnsSettings;
pub use crate::display::SourceStatus;
use crate::display::{self, DnsRow, EndpointsRow, ServiceRow};
use crate::error::LoadError;
use crate::manifest::{Object, ParsedFile, Sourced};
use crate::metrics::ControlMetrics;
use crate::names;
use crate::resolve::{self, Allocations, EndpointPlan, ExternalNameSpec, NamedEndpoint, ResolveConfig, Resolved};

/// What the controller last did, for `/status`, `/metrics` and `svcgate status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControlStatus {
    /// Generation of the table being served (0: none yet).
    pub generation: u64,
    /// Services, `kubectl get svc`-style.
    pub services: Vec<ServiceRow>,
    /// Endpoints, `kubectl get endpoints`-style.
    pub endpoints: Vec<EndpointsRow>,
    /// Current problems (each names its file/object/field).
    pub errors: Vec<String>,
    /// Things served as they are that a user may want to know about (e.g. a
    /// clusterIP outside `service_cidr`).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Frontends in the table.
    pub frontends: usize,
    /// Service ports (entries) in the table.
    pub entries: usize,
    /// Backends over all entries.
    pub backends: usize,
    /// Unix time of the last sync, in milliseconds (0: never).
    pub last_sync_unix_ms: u64,
    /// What the source met while fetching objects (the kube source's watch
    /// and list errors).
    #[serde(default)]
    pub source: SourceStatus,
    /// Cluster DNS; `None` when `[dns]` is not configured.
    #[serde(default)]
    pub dns: Option<DnsStatus>,
}

/// The cluster DNS part of [`ControlStatus`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DnsStatus {
    /// The cluster domain.
    pub zone: String,
    /// The addresses DNS answers on.
    pub addresses: Vec<String>,
    /// Version of the [`DnsTable`] being served (0: none built yet).
    pub generation: u64,
    /// Names in the table (empty non-terminals included).
    pub names: usize,
    /// Each Service's names.
    pub rows: Vec<DnsRow>,
}

#[derive(Debug, Default)]
struct FileState {
    objects: Vec<Sourced>,
    errors: Vec<LoadError>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<PathBuf, FileState>,
    previous: resolve::FastMap<String, Sourced>,
    allocations: Allocations,
    desired: DesiredState,
    /// The object set of the API path ([`Controller::apply_objects`],
    /// [`Controller::apply_changes`]).
    objects: Vec<Sourced>,
    /// Indices over `objects` and `desired` for [`Controller::apply_changes`].
    index: ChangeIndex,
    /// Services (indices into `desired.services`) whose `status.endpoints`
    /// row is out of date after a fast-path change: brought up to date by
    /// [`Controller::status`], off the path to publishing.
    stale_rows: Vec<usize>,
    /// Every `status.services` / `status.endpoints` row is out of date (after
    /// a full sync): rebuilt by [`Controller::status`], off the path to
    /// publishing (kubectl-style rows for 10k Services cost ~30 ms).
    rows_stale: bool,
    /// What the DNS names come from besides `desired`, and what was built.
    dns: DnsInputs,
}

/// The inputs of the DNS view besides the desired state, and the last view
/// built (to skip builds that would change nothing).
#[derive(Debug, Default)]
struct DnsInputs {
    /// Same index as `desired.services` ([`Resolved::endpoint_names`]).
    endpoint_names: Vec<Vec<NamedEndpoint>>,
    /// [`Resolved::external_name_targets`].
    external: Vec<ExternalNameSpec>,
    /// The view and addresses of the table being served.
    built: Option<(DnsView, Vec<std::net::IpAddr>)>,
    /// A problem with the configured addresses (`dns.service` not found).
    problem: Option<String>,
}

/// A kind, namespace and name: one object's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `Service`, `Endpoints`, `EndpointSlice` or `Pod` ([`crate::manifest::Object::kind`]).
    pub kind: &'static str,
    /// `metadata.namespace` (`default` when unset).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// The key of an object.
    pub fn of(s: &Sourced) -> Self {
        let meta = match &s.object {
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
        };
        Self {
            kind: s.object.kind(),
            namespace: meta.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// The Service an EndpointSlice is labelled with, if any.
fn slice_service(s: &Sourced) -> Option<&str> {
    match &s.object {
        Object::EndpointSlice(es) => {
            es.metadata.labels.as_ref().and_then(|l| l.get(resolve::SERVICE_NAME_LABEL)).map(String::as_str)
        }
        _ => None,
    }
}

/// What the fast path of [`Controller::apply_changes`] needs, rebuilt after
/// every full resolution of the API path's object set.
#[derive(Debug, Default)]
struct ChangeIndex {
    /// False when the fast path must not be used (no object set, or one with
    /// duplicate or unnamed objects, whose resolution has ordering subtleties).
    valid: bool,
    /// Position of each object in `State::objects`.
    pos: resolve::FastMap<ObjectKey, usize>,
    /// (namespace, Service name) -> positions of its EndpointSlices, in order.
    slices: resolve::FastMap<(String, String), Vec<usize>>,
    /// (namespace, name) -> index in `desired.services`.
    services: resolve::FastMap<(String, String), usize>,
    /// Same index as `desired.services`.
    plans: Vec<EndpointPlan>,
    /// Same index as `desired.services`: the table index of its first port
    /// in each family's half (IPv4, IPv6).
    entry_base: Vec<[u32; 2]>,
}

impl ChangeIndex {
    fn build(objects: &[Sourced], desired: &DesiredState, plans: Vec<EndpointPlan>) -> Self {
        let mut ix = Self { valid: true, plans, ..Self::default() };
        ix.pos.reserve(objects.len());
        ix.services.reserve(desired.services.len());
        for (i, s) in objects.iter().enumerate() {
            let key = ObjectKey::of(s);
            if key.name.is_empty() || ix.pos.contains_key(&key) {
                ix.valid = false;
                return ix;
            }
            if let Some(svc) = slice_service(s) {
                ix.slices.entry((key.namespace.clone(), svc.to_string())).or_default().push(i);
            }
            ix.pos.insert(key, i);
        }
        let mut base = [0u32; 2];
        for (i, svc) in desired.services.iter().enumerate() {
            ix.services.insert((svc.namespace.clone(), svc.name.clone()), i);
            ix.entry_base.push(base);
            for (f, family) in IpFamily::ALL.into_iter().enumerate() {
                if svc.has_family(family) {
                    base[f] += svc.ports.len() as u32;
                }
            }
        }
        ix.valid = ix.plans.len() == desired.services.len();
        ix
    }
}

/// How a sync went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// A full build was published as this generation.
    Full(u64),
    /// Endpoint-only change: this many entries were replaced in this generation.
    Incremental(u64, usize),
    /// Nothing changed.
    Unchanged,
}

/// Owns the desired state and the table publisher.
#[derive(Debug)]
pub struct Controller {
    cfg: ResolveConfig,
    tables: Arc<Publisher<ServiceTable>>,
    dns: Option<DnsSettings>,
    dns_tables: Arc<Publisher<DnsTable>>,
    state: Mutex<State>,
    status: RwLock<ControlStatus>,
    ready: AtomicBool,
    source: Mutex<SourceStatus>,
    source_retrying: AtomicBool,
    /// Sync counters and latency.
    pub metrics: ControlMetrics,
}

impl Controller {
    /// A controller serving nothing yet (generation 0, not ready).
    pub fn new(cfg: ResolveConfig) -> Self {
        Self {
            cfg,
            tables: Arc::new(Publisher::new(ServiceTable::empty())),
            dns: None,
            dns_tables: Arc::new(Publisher::new(DnsTable::build(&DnsView::default(), &DnsConfig::default()))),
            state: Mutex::new(State::default()),
            status: RwLock::new(ControlStatus::default()),
            ready: AtomicBool::new(false),
            source: Mutex::new(SourceStatus::default()),
            source_retrying: AtomicBool::new(false),
            metrics: ControlMetrics::default(),
        }
    }

    /// The publisher the dataplane subscribes to: call `.reader()` once per
    /// worker and `Reader::refresh` at each batch boundary.
    pub fn tables(&self) -> Arc<Publisher<ServiceTable>> {
        Arc::clone(&self.tables)
    }

    /// Serves cluster DNS with these settings (nothing changes when they are
    /// not [`DnsSettings::enabled`]). Call before the first sync.
    pub fn with_dns(mut self, settings: DnsSettings) -> Self {
        if settings.enabled() {
            self.dns_tables = Arc::new(Publisher::new(DnsTable::build(
                &DnsView::default(),
                &names::dns_config(&settings, &settings.addresses, 0),
            )));
            self.dns = Some(settings);
        }
        self
    }

    /// The DNS settings, when DNS is served.
    pub fn dns_settings(&self) -> Option<&DnsSettings> {
        self.dns.as_ref()
    }

    /// The publisher of the cluster DNS answer tables, for the workers that
    /// answer queries (`.reader()` each, `Reader::refresh` at batch
    /// boundaries, as for [`Controller::tables`]). Version 0 is an empty zone;
    /// with no `[dns]` configured nothing else is ever published.
    pub fn dns_tables(&self) -> Arc<Publisher<DnsTable>> {
        Arc::clone(&self.dns_tables)
    }

    /// The addresses DNS answers on as of the last sync (empty: DNS off).
    pub fn dns_addresses(&self) -> Vec<std::net::IpAddr> {
        self.state.lock().dns.built.as_ref().map(|(_, a)| a.clone()).unwrap_or_default()
    }

    /// A reader of the published tables (shorthand for `tables().reader()`).
    pub fn reader(&self) -> Reader<ServiceTable> {
        self.tables.reader()
    }

    /// True once the first full sync of the source has been published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the first full sync done (the source calls this).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Records an error the source met watching or listing `kind` (it
    /// retries with backoff).
    pub fn record_source_error(&self, kind: &str, message: String) {
        let mut s = self.source.lock();
        s.errors_total += 1;
        s.last_error = Some(message);
        s.last_error_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        if !s.retrying.iter().any(|k| k == kind) {
            s.retrying.push(kind.to_string());
            s.retrying.sort();
        }
        self.source_retrying.store(true, Ordering::Release);
    }

    /// Records that the source received an event for `kind` (cheap when no
    /// kind is being retried: one atomic load).
    pub fn record_source_ok(&self, kind: &str) {
        if self.source_retrying.load(Ordering::Acquire) {
            let mut s = self.source.lock();
            s.retrying.retain(|k| k != kind);
            self.source_retrying.store(!s.retrying.is_empty(), Ordering::Release);
        }
    }

    /// The source's errors.
    pub fn source_status(&self) -> SourceStatus {
        self.source.lock().clone()
    }

    /// A copy of the status.
    pub fn status(&self) -> ControlStatus {
        let mut st = self.state.lock();
        if st.rows_stale {
            let (services, endpoints) = display::rows(&st.desired);
            let mut status = self.status.write();
            status.services = services;
            status.endpoints = endpoints;
            st.rows_stale = false;
            st.stale_rows.clear();
        }
        if !st.stale_rows.is_empty() {
            let mut status = self.status.write();
            for si in std::mem::take(&mut st.stale_rows) {
                let Some(svc) = st.desired.services.get(si) else {
                    continue;
                };
                let one = DesiredState { node_ips: Vec::new(), services: vec![svc.clone()] };
                let (_, mut rows) = display::rows(&one);
                let at = status.endpoints.binary_search_by(|r| {
                    (r.namespace.as_str(), r.name.as_str()).cmp(&(svc.namespace.as_str(), svc.name.as_str()))
                });
                if let (Some(row), Ok(at)) = (rows.pop(), at) {
                    status.endpoints[at] = row;
                }
            }
        }
        drop(st);
        let mut out = self.status.read().clone();
        out.source = self.source_status();
        out
    }

    /// The desired state being served.
    pub fn desired(&self) -> DesiredState {
        self.state.lock().desired.clone()
    }

    /// The resolution config.
    pub fn config(&self) -> &ResolveConfig {
        &self.cfg
    }

    /// Applies changed files of the manifests source: `Some(parsed)` for a
    /// file added or changed, `None` for one removed. A file with errors keeps
    /// its last good objects (when it had any) and reports the errors.
    pub fn apply_files(&self, changes: BTreeMap<PathBuf, Option<ParsedFile>>) -> SyncOutcome {
        let mut st = self.state.lock();
        for (path, change) in changes {
            match change {
                None => {
                    st.files.remove(&path);
                }
                Some(parsed) => {
                    let keep_old = !parsed.errors.is_empty() && st.files.contains_key(&path);
                    if keep_old {
                        tracing::warn!(file = %path.display(), errors = parsed.errors.len(),
                            "the file has errors; its last good objects keep serving");
                        if let Some(f) = st.files.get_mut(&path) {
                            f.errors = parsed.errors;
                        }
                    } else {
                        st.files.insert(path, FileState { objects: parsed.objects, errors: parsed.errors });
                    }
                }
            }
        }
        let objects: Vec<Sourced> = st.files.values().flat_map(|f| f.objects.iter().cloned()).collect();
        let file_errors: Vec<LoadError> = st.files.values().flat_map(|f| f.errors.iter().cloned()).collect();
        let (outcome, _) = self.sync_locked(&mut st, &objects, file_errors);
        st.index = ChangeIndex::default();
        outcome
    }

    /// Replaces the whole object set (the kube source's path).
    pub fn apply_objects(&self, objects: &[Sourced]) -> SyncOutcome {
        let mut st = self.state.lock();
        let (outcome, plans) = self.sync_locked(&mut st, objects, Vec::new());
        st.objects = objects.to_vec();
        st.index = ChangeIndex::build(&st.objects, &st.desired, plans);
        outcome
    }

    /// Applies changes to the object set of the API path (the one the last
    /// [`Controller::apply_objects`] or `apply_changes` left, else empty):
    /// `deletes` remove objects, then `upserts` replace the object with the
    /// same [`ObjectKey`] in place or are added after the others. The result
    /// is the same as [`Controller::apply_objects`] with the changed set.
    ///
    /// Fast path: when only existing EndpointSlices change (same name, same
    /// Service label), only their Services' backends are derived again and
    /// only their table entries rebuilt (the frontend map and every other
    /// entry are shared); nothing else is re-resolved. Anything else resolves
    /// the whole set again.
    pub fn apply_changes(&self, upserts: Vec<Sourced>, deletes: Vec<ObjectKey>) -> SyncOutcome {
        let mut st = self.state.lock();
        let upserts = if deletes.is_empty() && !upserts.is_empty() {
            match self.try_slices_only(&mut st, upserts) {
                Ok(outcome) => return outcome,
                Err(upserts) => upserts,
            }
        } else {
            upserts
        };
        let mut objects = std::mem::take(&mut st.objects);
        if !deletes.is_empty() {
            let gone: std::collections::HashSet<ObjectKey> = deletes.into_iter().collect();
            objects.retain(|o| !gone.contains(&ObjectKey::of(o)));
        }
        let mut pos: HashMap<ObjectKey, usize> = HashMap::new();
        for (i, o) in objects.iter().enumerate() {
            pos.entry(ObjectKey::of(o)).or_insert(i);
        }
        for u in upserts {
            let key = ObjectKey::of(&u);
            match pos.get(&key) {
                Some(&i) if !key.name.is_empty() => objects[i] = u,
                _ => {
                    pos.insert(key, objects.len());
                    objects.push(u);
                }
            }
        }
        let (outcome, plans) = self.sync_locked(&mut st, &objects, Vec::new());
        st.index = ChangeIndex::build(&objects, &st.desired, plans);
        st.objects = objects;
        outcome
    }

    /// The fast path of [`Controller::apply_changes`]; gives the upserts back
    /// when it does not apply (then nothing was changed).
    fn try_slices_only(&self, st: &mut State, upserts: Vec<Sourced>) -> Result<SyncOutcome, Vec<Sourced>> {
        let current = self.tables.current();
        if !st.index.valid || current.generation() == 0 {
            return Err(upserts);
        }
        // Every upsert replaces an existing EndpointSlice labelled for the same
        // Service. When that Service is not served (none by that name, one
        // left to another proxy by its service-proxy-name label, one
        // rejected), the slice is only stored: no backend served changes.
        let place = |u: &Sourced| {
            let key = ObjectKey::of(u);
            let &i = st.index.pos.get(&key)?;
            let svc = slice_service(u)?;
            if slice_service(&st.objects[i]) != Some(svc) {
                return None;
            }
            Some((i, st.index.services.get(&(key.namespace, svc.to_string())).copied()))
        };
        let Some(places) = upserts.iter().map(place).collect::<Option<Vec<_>>>() else {
            return Err(upserts);
        };
        let mut touched: Vec<usize> = Vec::new();
        for (u, (i, si)) in upserts.into_iter().zip(places) {
            if st.objects[i] != u {
                st.objects[i] = u;
                if let Some(si) = si.filter(|si| !touched.contains(si)) {
                    touched.push(si);
                }
            }
        }
        let mut replaced = Replacements::default();
        let mut changed_services = Vec::new();
        let mut dns_touched = false;
        for &si in &touched {
            let plan = &st.index.plans[si];
            let key = (plan.namespace().to_string(), plan.name().to_string());
            let slices: Vec<&EndpointSlice> = st
                .index
                .slices
                .get(&key)
                .into_iter()
                .flatten()
                .filter_map(|&p| match &st.objects[p].object {
                    Object::EndpointSlice(es) => Some(&**es),
                    _ => None,
                })
                .collect();
            let backends = resolve::backends_from_slices(plan, &slices);
            if self.dns.is_some() && st.desired.services[si].is_headless() {
                // A headless Service: its endpoints are DNS names.
                let named = resolve::endpoint_names_from_slices(plan, &slices);
                if let Some(slot) = st.dns.endpoint_names.get_mut(si) {
                    if *slot != named {
                        *slot = named;
                        dns_touched = true;
                    }
                }
                dns_touched |= st.desired.services[si].ports.iter().zip(&backends).any(|(p, b)| p.backends != *b);
            }
            let svc = &mut st.desired.services[si];
            // Per family: an IPv6 slice's change rebuilds the IPv6 entries
            // only, and the IPv4 ones stay shared with the last table.
            let (mut changed4, mut changed6, mut changed) = (Vec::new(), Vec::new(), false);
            for (j, (port, new)) in svc.ports.iter_mut().zip(backends).enumerate() {
                if port.backends != new {
                    if family_changed::<Ipv4Addr>(&port.backends, &new) {
                        changed4.push(j);
                    }
                    if family_changed::<Ipv6Addr>(&port.backends, &new) {
                        changed6.push(j);
                    }
                    port.backends = new;
                    changed = true;
                }
            }
            if !changed {
                continue;
            }
            changed_services.push(si);
            let [base4, base6] = st.index.entry_base[si];
            replace_ports::<Ipv4Addr>(&mut replaced, base4, svc, &changed4);
            replace_ports::<Ipv6Addr>(&mut replaced, base6, svc, &changed6);
        }
        let outcome = if changed_services.is_empty() {
            self.metrics.noop_syncs.fetch_add(1, Ordering::Relaxed);
            SyncOutcome::Unchanged
        } else {
            let next_gen = current.generation() + 1;
            let n = replaced.len();
            let delta =
                backends_delta::<Ipv4Addr>(&current, &replaced) + backends_delta::<Ipv6Addr>(&current, &replaced);
            let table = current.with_entries_replaced(next_gen, replaced);
            self.tables.publish(table);
            self.metrics.incremental_builds.fetch_add(1, Ordering::Relaxed);
            tracing::info!(generation = next_gen, entries = n, "published an endpoints-only change");
            let mut status = self.status.write();
            status.generation = next_gen;
            status.backends = (status.backends as isize + delta).max(0) as usize;
            for &si in &changed_services {
                if !st.stale_rows.contains(&si) {
                    st.stale_rows.push(si);
                }
            }
            SyncOutcome::Incremental(next_gen, n)
        };
        self.status.write().last_sync_unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        if dns_touched {
            self.refresh_dns(st);
        }
        Ok(outcome)
    }

    fn sync_locked(
        &self,
        st: &mut State,
        objects: &[Sourced],
        mut errors: Vec<LoadError>,
    ) -> (SyncOutcome, Vec<EndpointPlan>) {
        let Resolved {
            desired,
            applied,
            allocations,
            errors: rerrs,
            warnings,
            plans,
            endpoint_names,
            external_name_targets,
            ..
        } = resolve::resolve(objects, &self.cfg, &st.previous, &st.allocations);
        errors.extend(rerrs);
        st.previous = applied;
        st.allocations = allocations;
        let current = self.tables.current();
        let next_gen = current.generation() + 1;
        let outcome = if current.generation() > 0 && desired == st.desired {
            SyncOutcome::Unchanged
        } else if current.generation() > 0 && same_shape(&st.desired, &desired) {
            let replaced = changed_entries(&st.desired, &desired);
            let n = replaced.len();
            let table = current.with_entries_replaced(next_gen, replaced);
            self.tables.publish(table);
            SyncOutcome::Incremental(next_gen, n)
        } else {
            let (table, warnings) = ServiceTable::build(&desired, next_gen);
            for w in &warnings {
                tracing::warn!("{w}");
            }
            errors.extend(warnings.into_iter().map(LoadError::from));
            self.tables.publish(table);
            SyncOutcome::Full(next_gen)
        };
        match outcome {
            SyncOutcome::Full(g) => {
                self.metrics.full_builds.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation = g, services = desired.services.len(), "published a full table build");
            }
            SyncOutcome::Incremental(g, n) => {
                self.metrics.incremental_builds.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation = g, entries = n, "published an endpoints-only change");
            }
            SyncOutcome::Unchanged => {
                self.metrics.noop_syncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        for e in &errors {
            tracing::warn!("{e}");
        }
        let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        {
            // Logged when they change, not at every sync: a cluster's dump may
            // hold thousands of clusterIPs outside service_cidr.
            let old = &self.status.read().warnings;
            for w in warnings.iter().filter(|w| !old.contains(w)) {
                tracing::warn!("{w}");
            }
        }
        let table = self.tables.current();
        // Kept when the names did not change (`refresh_dns` redoes it otherwise).
        let dns_status = self.status.write().dns.take();
        *self.status.write() = ControlStatus {
            generation: table.generation(),
            services: Vec::new(), // rows_stale: made by `status`
            endpoints: Vec::new(),
            errors: errors.iter().map(ToString::to_string).collect(),
            warnings,
            frontends: table.frontend_count(),
            entries: table.entry_count(),
            backends: backend_count::<Ipv4Addr>(&table) + backend_count::<Ipv6Addr>(&table),
            last_sync_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            source: SourceStatus::default(), // filled in by `status`
            dns: dns_status,
        };
        st.desired = desired;
        st.stale_rows.clear();
        st.rows_stale = true;
        st.dns.endpoint_names = endpoint_names;
        st.dns.external = external_name_targets;
        self.refresh_dns(st);
        (outcome, plans)
    }

    /// Builds and publishes the DNS table of the current state when its view
    /// or addresses changed (DNS configured only), and fills in the status.
    fn refresh_dns(&self, st: &mut State) {
        let Some(settings) = &self.dns else {
            return;
        };
        let view = names::dns_view(&st.desired, &st.dns.endpoint_names, &st.dns.external);
        let (addresses, problem) = match names::dns_addresses(settings, &st.desired) {
            Ok(a) => (a, None),
            Err((a, why)) => (a, Some(why)),
        };
        if problem != st.dns.problem {
            if let Some(p) = &problem {
                tracing::warn!("{p}");
            }
            st.dns.problem = problem;
        }
        let unchanged = st.dns.built.as_ref().is_some_and(|(v, a)| *v == view && *a == addresses);
        if !unchanged {
            let t0 = Instant::now();
            let serial = (self.dns_tables.version() + 1) as u32;
            let table = names::build_table(&view, &names::dns_config(settings, &addresses, serial));
            let n = table.len();
            let version = self.dns_tables.publish(table);
            self.metrics.dns_builds.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                generation = version,
                names = n,
                services = view.services.len(),
                ms = t0.elapsed().as_secs_f64() * 1e3,
                "published a DNS table"
            );
            st.dns.built = Some((view, addresses));
        }
        let mut status = self.status.write();
        if let Some((view, addresses)) = &st.dns.built {
            let keep = status.dns.as_ref().filter(|d| unchanged && d.generation == self.dns_tables.version());
            status.dns = Some(match keep {
                Some(d) => d.clone(),
                None => DnsStatus {
                    zone: settings.zone.clone(),
                    addresses: addresses.iter().map(ToString::to_string).collect(),
                    generation: self.dns_tables.version(),
                    names: self.dns_tables.current().len(),
                    rows: names::dns_rows(view, &settings.zone),
                },
            });
        }
        if let Some(p) = &st.dns.problem {
            if !status.warnings.contains(p) {
                status.warnings.push(p.clone());
            }
        }
    }

    /// Records one source-change-to-published latency.
    pub fn observe_sync(&self, since: Instant) {
        self.metrics.sync_latency.observe(since.elapsed());
    }
}

/// True when the two states differ at most in backends: same node IPs, same
/// Services in the same order with the same addresses, ports and policy.
fn same_shape(a: &DesiredState, b: &DesiredState) -> bool {
    a.node_ips == b.node_ips
        && a.services.len() == b.services.len()
        && a.services.iter().zip(&b.services).all(|(x, y)| {
            x.namespace == y.namespace
                && x.name == y.name
                && x.service_type == y.service_type
                && x.cluster_ips == y.cluster_ips
                && x.external_ips == y.external_ips
                && x.load_balancer_ips == y.load_balancer_ips
                && x.source_ranges == y.source_ranges
                && x.affinity == y.affinity
                && x.ports.len() == y.ports.len()
                && x.ports.iter().zip(&y.ports).all(|(p, q)| {
                    p.name == q.name && p.protocol == q.protocol && p.port == q.port && p.node_port == q.node_port
                })
        })
}

/// The entries (table indices per family, in [`ServiceTable::build`]'s
/// order: Services with a cluster IP of the family, then their ports) whose
/// backends differ, rebuilt.
fn changed_entries(old: &DesiredState, new: &DesiredState) -> Replacements {
    let mut out = Replacements::default();
    let mut base = [0u32; 2];
    for (o, n) in old.services.iter().zip(&new.services) {
        let changed = |family_changed: fn(&[BackendSpec], &[BackendSpec]) -> bool| -> Vec<usize> {
            o.ports
                .iter()
                .zip(&n.ports)
                .enumerate()
                .filter(|(_, (op, np))| family_changed(&op.backends, &np.backends))
                .map(|(j, _)| j)
                .collect()
        };
        replace_ports::<Ipv4Addr>(&mut out, base[0], n, &changed(family_changed::<Ipv4Addr>));
        replace_ports::<Ipv6Addr>(&mut out, base[1], n, &changed(family_changed::<Ipv6Addr>));
        for (f, family) in IpFamily::ALL.into_iter().enumerate() {
            if n.has_family(family) {
                base[f] += n.ports.len() as u32;
            }
        }
    }
    out
}

/// True when the backends of family `A` differ between `old` and `new` (the
/// only ones an entry of that family is built from).
fn family_changed<A: Addr>(old: &[BackendSpec], new: &[BackendSpec]) -> bool {
    let of = |l: &[BackendSpec]| l.iter().filter(|b| A::from_ip(b.addr).is_some()).copied().collect::<Vec<_>>();
    of(old) != of(new)
}

/// Adds to `out` the entries of family `A` of `svc`'s `ports` (indices into
/// its ports), rebuilt, when the Service is served in that family; `base` is
/// the index of its first port in that family's half. One Maglev build for
/// the ports with the same endpoints.
fn replace_ports<A: Addr>(out: &mut Replacements, base: u32, svc: &ServiceSpec, ports: &[usize]) {
    if ports.is_empty() || !svc.has_family(A::FAMILY) {
        return;
    }
    let built = service_entries::<A>(svc, ports.iter().map(|&j| (j, &svc.ports[j])));
    A::side_mut(out).extend(built.into_iter().map(|(j, e)| (base + j as u32, e)));
}

/// How many backends the replacements of family `A` add to `current`'s.
fn backends_delta<A: Addr>(current: &ServiceTable, replaced: &Replacements) -> isize {
    let half = current.family::<A>();
    A::side(replaced)
        .iter()
        .map(|(i, e)| e.backends.len() as isize - half.entry(*i).map_or(0, |o| o.backends.len()) as isize)
        .sum()
}

/// The number of backends of family `A` in `table`.
fn backend_count<A: Addr>(table: &ServiceTable) -> usize {
    table.family::<A>().entries().iter().map(|e| e.backends.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Origin;
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec as KService};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(i: u8, ports: &[i32]) -> Sourced {
        let s = Service {
            metadata: ObjectMeta { name: Some(format!("s{i}")), ..Default::default() },
            spec: Some(KService {
                cluster_ip: Some(format!("198.18.0.{}", 10 + i)),
                ports: Some(
                    ports
                        .iter()
                        .map(|&p| ServicePort { name: Some(format!("p{p}")), port: p, ..Default::default() })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        Sourced { origin: Origin::api(), object: Object::Service(Arc::new(s)) }
    }

    fn slice(i: u8, name: &str, ports: &[i32], ips: &[&str]) -> Sourced {
        let es = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(resolve::SERVICE_NAME_LABEL.to_string(), format!("s{i}"))])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: ips
                .iter()
                .map(|ip| Endpoint { addresses: vec![ip.to_string()], ..Default::default() })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|&p| EndpointPort { name: Some(format!("p{p}")), port: Some(p + 8000), ..Default::default() })
                    .collect(),
            ),
        };
        Sourced { origin: Origin::api(), object: Object::EndpointSlice(Arc::new(es)) }
    }

    fn cfg() -> ResolveConfig {
        ResolveConfig::new("198.18.0.0/24".parse().unwrap(), vec![std::net::Ipv4Addr::new(198, 18, 1, 1)])
    }

    /// `apply_changes` ends where `apply_objects` of the changed set does.
    fn same_as_full(c: &Controller, objects: &[Sourced]) {
        let full = Controller::new(cfg());
        full.apply_objects(objects);
        assert_eq!(c.desired(), full.desired());
        let (a, b) = (c.status(), full.status());
        assert_eq!(a.endpoints.len(), b.endpoints.len());
        for (x, y) in a.endpoints.iter().zip(&b.endpoints) {
            assert_eq!((&x.name, &x.ready, &x.not_ready), (&y.name, &y.ready, &y.not_ready));
        }
        assert_eq!((a.entries, a.backends, a.frontends), (b.entries, b.backends, b.frontends));
        let (ta, tb) = (c.tables().current(), full.tables().current());
        assert_eq!(ta.v4().entries().len(), tb.v4().entries().len());
        for (x, y) in ta.v4().entries().iter().zip(tb.v4().entries()) {
            assert_eq!(**x, **y);
        }
        assert_eq!(ta.v6().entries().len(), tb.v6().entries().len());
        for (x, y) in ta.v6().entries().iter().zip(tb.v6().entries()) {
            assert_eq!(**x, **y);
        }
    }

    #[test]
    fn apply_changes_matches_a_full_resolution() {
        let mut objects = vec![
            svc(1, &[80]),
            svc(2, &[80, 443]),
            svc(3, &[53]),
            slice(1, "s1-a", &[80], &["198.19.0.1", "198.19.0.2"]),
            slice(2, "s2-a", &[80, 443], &["198.19.0.3"]),
            slice(2, "s2-b", &[80, 443], &["198.19.0.4"]),
            slice(3, "s3-a", &[53], &["198.19.0.5"]),
        ];
        let c = Controller::new(cfg());
        assert_eq!(c.apply_objects(&objects), SyncOutcome::Full(1));
        let gen0_entry0 = Arc::clone(&c.tables().current().v4().entries()[0]);

        // One slice of a two-slice, two-port Service: its two entries only.
        let s = slice(2, "s2-b", &[80, 443], &["198.19.0.9", "198.19.0.4"]);
        objects[5] = s.clone();
        assert_eq!(c.apply_changes(vec![s.clone()], Vec::new()), SyncOutcome::Incremental(2, 2));
        assert!(Arc::ptr_eq(&gen0_entry0, &c.tables().current().v4().entries()[0]));
        // s2's two ports (same Pods, a targetPort each): one Maglev table, and
        // each flow picks the same Pod on both.
        let t = c.tables().current();
        let (p80, p443) = (&t.v4().entries()[1], &t.v4().entries()[2]);
        assert_eq!((p80.id.port, p443.id.port), (80, 443));
        assert!(p80.maglev.shares_slots_with(&p443.maglev));
        for h in [0, 1 << 20, 3 << 29, u32::MAX] {
            let pod =
                |e: &svcgate_common::table::ServiceEntry| e.maglev.pick(h).map(|i| e.backends[usize::from(i)].addr);
            assert_eq!(pod(p80), pod(p443));
        }
        same_as_full(&c, &objects);
        // The same again: nothing to do.
        assert_eq!(c.apply_changes(vec![s], Vec::new()), SyncOutcome::Unchanged);
        assert_eq!(c.tables().current().generation(), 2);

        // A slice moving to another Service, a new Service, a deletion: the
        // whole set is resolved again (the move changes only backends: s1's
        // and s3's entries are replaced).
        let moved = slice(3, "s1-a", &[53], &["198.19.0.7"]);
        objects[3] = moved.clone();
        assert_eq!(c.apply_changes(vec![moved], Vec::new()), SyncOutcome::Incremental(3, 2));
        same_as_full(&c, &objects);
        let added = svc(4, &[80]);
        objects.push(added.clone());
        assert!(matches!(c.apply_changes(vec![added], Vec::new()), SyncOutcome::Full(_)));
        same_as_full(&c, &objects);
        let gone = ObjectKey::of(&objects[6]);
        objects.remove(6);
        assert!(matches!(c.apply_changes(Vec::new(), vec![gone]), SyncOutcome::Incremental(_, 1)));
        same_as_full(&c, &objects);

        // After the full paths the fast path works again.
        let s = slice(1, "s1-a", &[53], &["198.19.0.8"]);
        objects[3] = s.clone();
        assert!(matches!(c.apply_changes(vec![s], Vec::new()), SyncOutcome::Incremental(_, 1)));
        same_as_full(&c, &objects);
    }

    #[test]
    fn ipv6_slices_change_the_ipv6_entries_only() {
        // A dual-stack Service as the API server hands it over, IPv6 first.
        let dual = |mut s: Sourced| -> Sourced {
            if let Object::Service(svc) = &mut s.object {
                let spec = Arc::make_mut(svc).spec.as_mut().unwrap();
                spec.cluster_ip = Some("2001:2:0:8000::b".into());
                spec.cluster_ips = Some(vec!["2001:2:0:8000::b".into(), "198.18.0.11".into()]);
                spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
                spec.ip_family_policy = Some("RequireDualStack".into());
            }
            s
        };
        let v6 = |mut s: Sourced| -> Sourced {
            if let Object::EndpointSlice(es) = &mut s.object {
                Arc::make_mut(es).address_type = "IPv6".into();
            }
            s
        };
        let mut objects = vec![
            dual(svc(1, &[80])),
            svc(2, &[80]),
            slice(1, "s1-a", &[80], &["198.19.0.1"]),
            v6(slice(1, "s1-b", &[80], &["2001:2::1"])),
            slice(2, "s2-a", &[80], &["198.19.0.2"]),
        ];
        let c = Controller::new(cfg());
        assert_eq!(c.apply_objects(&objects), SyncOutcome::Full(1));
        let t = c.tables().current();
        assert_eq!((t.v4().entries().len(), t.v6().entries().len()), (2, 1));
        let addrs6 = |t: &ServiceTable| t.v6().entries()[0].backends.iter().map(|b| b.addr).collect::<Vec<_>>();
        assert_eq!(addrs6(&t), ["2001:2::1".parse::<Ipv6Addr>().unwrap()]);
        let v4_entry = Arc::clone(&t.v4().entries()[0]);

        // The IPv6 slice grows: one entry (the IPv6 one) is rebuilt; the IPv4
        // entry of the same port is the last table's.
        let s = v6(slice(1, "s1-b", &[80], &["2001:2::1", "2001:2::2"]));
        objects[3] = s.clone();
        assert_eq!(c.apply_changes(vec![s], Vec::new()), SyncOutcome::Incremental(2, 1));
        let t = c.tables().current();
        assert!(Arc::ptr_eq(&v4_entry, &t.v4().entries()[0]));
        assert_eq!(addrs6(&t), ["2001:2::1".parse::<Ipv6Addr>().unwrap(), "2001:2::2".parse().unwrap()]);
        same_as_full(&c, &objects);
        // An IPv6 slice of the IPv4-only Service changes nothing.
        let s = v6(slice(2, "s2-b", &[80], &["2001:2::3"]));
        objects.push(s.clone());
        assert!(matches!(c.apply_changes(vec![s], Vec::new()), SyncOutcome::Unchanged | SyncOutcome::Full(_)));
        assert_eq!(c.tables().current().v6().entries().len(), 1);
        same_as_full(&c, &objects);
    }

    #[test]
    fn dns_tables_follow_headless_endpoints_only() {
        use svcgate_dns::zone::DomainName;
        let headless = |s: Sourced| -> Sourced {
            let mut s = s;
            if let Object::Service(svc) = &mut s.object {
                Arc::make_mut(svc).spec.as_mut().unwrap().cluster_ip = Some("None".into());
            }
            s
        };
        let named = |s: Sourced, host: &str| -> Sourced {
            let mut s = s;
            if let Object::EndpointSlice(es) = &mut s.object {
                Arc::make_mut(es).endpoints[0].hostname = Some(host.into());
            }
            s
        };
        let mut objects = vec![
            svc(1, &[80]),
            headless(svc(2, &[80])),
            slice(1, "s1-a", &[80], &["198.19.0.1"]),
            named(slice(2, "s2-a", &[80], &["198.19.0.2"]), "pod-0"),
        ];
        let settings = DnsSettings { addresses: vec!["198.18.0.53".parse().unwrap()], ..DnsSettings::default() };
        let c = Controller::new(cfg()).with_dns(settings);
        let has = |n: &str| {
            let name = DomainName::from_dotted(n).unwrap();
            c.dns_tables().current().name(name.wire()).is_some()
        };
        assert_eq!(c.apply_objects(&objects), SyncOutcome::Full(1));
        assert_eq!(c.dns_tables().version(), 1);
        assert!(has("s1.default.svc.cluster.local"));
        assert!(has("pod-0.s2.default.svc.cluster.local"));
        assert_eq!(c.dns_addresses(), vec!["198.18.0.53".parse::<std::net::Ipv4Addr>().unwrap()]);
        let st = c.status().dns.unwrap();
        assert_eq!((st.generation, st.zone.as_str()), (1, "cluster.local"));
        assert!(st.rows.iter().any(|r| r.names.contains(&"pod-0.s2.default.svc.cluster.local".to_string())));

        // A ClusterIP Service's endpoints: no DNS build.
        let s = slice(1, "s1-a", &[80], &["198.19.0.9"]);
        objects[2] = s.clone();
        assert!(matches!(c.apply_changes(vec![s], Vec::new()), SyncOutcome::Incremental(_, 1)));
        assert_eq!(c.dns_tables().version(), 1);
        // A headless Service's endpoint renamed (backends unchanged): a DNS
        // build, and nothing for the ServiceTable.
        let s = named(slice(2, "s2-a", &[80], &["198.19.0.2"]), "pod-1");
        objects[3] = s.clone();
        assert_eq!(c.apply_changes(vec![s], Vec::new()), SyncOutcome::Unchanged);
        assert_eq!(c.dns_tables().version(), 2);
        assert!(has("pod-1.s2.default.svc.cluster.local"));
        assert!(!has("pod-0.s2.default.svc.cluster.local"));
        same_as_full(&c, &objects);
        // A full resolution to the same names builds nothing.
        c.apply_objects(&objects);
        assert_eq!(c.dns_tables().version(), 2);
        assert_eq!(c.metrics.dns_builds.load(Ordering::Relaxed), 2);

        // Without [dns], nothing is built.
        let off = Controller::new(cfg());
        off.apply_objects(&objects);
        assert_eq!(off.dns_tables().version(), 0);
        assert!(off.status().dns.is_none());
    }

    #[test]
    fn slices_of_services_not_served_are_stored_without_a_build() {
        // s2 is left to another proxy by its service-proxy-name label.
        let mut other = svc(2, &[80]);
        if let Object::Service(s) = &mut other.object {
            Arc::make_mut(s).metadata.labels =
                Some(BTreeMap::from([(resolve::SERVICE_PROXY_NAME_LABEL.to_string(), "other".to_string())]));
        }
        let mut objects = vec![
            svc(1, &[80]),
            other,
            slice(1, "s1-a", &[80], &["198.19.0.1"]),
            slice(2, "s2-a", &[80], &["198.19.0.2"]),
            slice(9, "s9-a", &[80], &["198.19.0.9"]), // no Service s9
        ];
        let c = Controller::new(cfg());
        assert_eq!(c.apply_objects(&objects), SyncOutcome::Full(1));
        assert_eq!(c.desired().services.len(), 1);
        let full_builds = c.metrics.full_builds.load(Ordering::Relaxed);
        for (at, s) in [(3, slice(2, "s2-a", &[80], &["198.19.0.3"])), (4, slice(9, "s9-a", &[80], &["198.19.0.8"]))] {
            objects[at] = s.clone();
            assert_eq!(c.apply_changes(vec![s], Vec::new()), SyncOutcome::Unchanged);
            same_as_full(&c, &objects);
        }
        assert_eq!(c.tables().current().generation(), 1);
        assert_eq!(c.metrics.full_builds.load(Ordering::Relaxed), full_builds);
        // The stored slices are used once their Service is served.
        let served = svc(9, &[80]);
        objects.push(served.clone());
        assert!(matches!(c.apply_changes(vec![served], Vec::new()), SyncOutcome::Full(2)));
        same_as_full(&c, &objects);
        assert_eq!(
            c.desired().services[1].ports[0].backends[0].addr,
            "198.19.0.8".parse::<std::net::Ipv4Addr>().unwrap()
        );
    }
}
