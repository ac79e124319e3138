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
//! For the manifests source the controller keeps each file's last good objects
//! ([`Controller::apply_files`]): a file that stops parsing keeps serving what
//! it held, and a Service whose new version is invalid keeps its last good
//! version (see [`crate::resolve`]). Nothing already serving is lost to one
//! bad object.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use svcgate_common::model::DesiredState;
use svcgate_common::publish::{Publisher, Reader};
use svcgate_common::table::{ServiceEntry, ServicePortId, ServiceTable};

use crate::display::{self, EndpointsRow, ServiceRow};
use crate::error::LoadError;
use crate::manifest::{ParsedFile, Sourced};
use crate::metrics::ControlMetrics;
use crate::resolve::{self, Allocations, ResolveConfig, Resolved};

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
    /// Frontends in the table.
    pub frontends: usize,
    /// Service ports (entries) in the table.
    pub entries: usize,
    /// Backends over all entries.
    pub backends: usize,
    /// Unix time of the last sync, in milliseconds (0: never).
    pub last_sync_unix_ms: u64,
}

#[derive(Debug, Default)]
struct FileState {
    objects: Vec<Sourced>,
    errors: Vec<LoadError>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<PathBuf, FileState>,
    previous: HashMap<String, Sourced>,
    allocations: Allocations,
    desired: DesiredState,
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
    state: Mutex<State>,
    status: RwLock<ControlStatus>,
    ready: AtomicBool,
    /// Sync counters and latency.
    pub metrics: ControlMetrics,
}

impl Controller {
    /// A controller serving nothing yet (generation 0, not ready).
    pub fn new(cfg: ResolveConfig) -> Self {
        Self {
            cfg,
            tables: Arc::new(Publisher::new(ServiceTable::empty())),
            state: Mutex::new(State::default()),
            status: RwLock::new(ControlStatus::default()),
            ready: AtomicBool::new(false),
            metrics: ControlMetrics::default(),
        }
    }

    /// The publisher the dataplane subscribes to: call `.reader()` once per
    /// worker and `Reader::refresh` at each batch boundary.
    pub fn tables(&self) -> Arc<Publisher<ServiceTable>> {
        Arc::clone(&self.tables)
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

    /// A copy of the status.
    pub fn status(&self) -> ControlStatus {
        self.status.read().clone()
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
                        st.files.insert(
                            path,
                            FileState {
                                objects: parsed.objects,
                                errors: parsed.errors,
                            },
                        );
                    }
                }
            }
        }
        let objects: Vec<Sourced> = st
            .files
            .values()
            .flat_map(|f| f.objects.iter().cloned())
            .collect();
        let file_errors: Vec<LoadError> = st
            .files
            .values()
            .flat_map(|f| f.errors.iter().cloned())
            .collect();
        self.sync_locked(&mut st, &objects, file_errors)
    }

    /// Replaces the whole object set (the kube source's path).
    pub fn apply_objects(&self, objects: &[Sourced]) -> SyncOutcome {
        let mut st = self.state.lock();
        self.sync_locked(&mut st, objects, Vec::new())
    }

    fn sync_locked(
        &self,
        st: &mut State,
        objects: &[Sourced],
        mut errors: Vec<LoadError>,
    ) -> SyncOutcome {
        let Resolved {
            desired,
            applied,
            allocations,
            errors: rerrs,
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
                tracing::info!(
                    generation = g,
                    services = desired.services.len(),
                    "published a full table build"
                );
            }
            SyncOutcome::Incremental(g, n) => {
                self.metrics
                    .incremental_builds
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    generation = g,
                    entries = n,
                    "published an endpoints-only change"
                );
            }
            SyncOutcome::Unchanged => {
                self.metrics.noop_syncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        for e in &errors {
            tracing::warn!("{e}");
        }
        let table = self.tables.current();
        let (services, endpoints) = display::rows(&desired);
        *self.status.write() = ControlStatus {
            generation: table.generation(),
            services,
            endpoints,
            errors: errors.iter().map(ToString::to_string).collect(),
            frontends: table.frontend_count(),
            entries: table.entries().len(),
            backends: table.entries().iter().map(|e| e.backends.len()).sum(),
            last_sync_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        st.desired = desired;
        outcome
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
                && x.cluster_ip == y.cluster_ip
                && x.external_ips == y.external_ips
                && x.load_balancer_ips == y.load_balancer_ips
                && x.source_ranges == y.source_ranges
                && x.affinity == y.affinity
                && x.ports.len() == y.ports.len()
                && x.ports.iter().zip(&y.ports).all(|(p, q)| {
                    p.name == q.name
                        && p.protocol == q.protocol
                        && p.port == q.port
                        && p.node_port == q.node_port
                })
        })
}

/// The entries (table indices, in [`ServiceTable::build`]'s order: Services
/// with a cluster IP, then their ports) whose backends differ, rebuilt.
fn changed_entries(old: &DesiredState, new: &DesiredState) -> Vec<(u32, ServiceEntry)> {
    let mut out = Vec::new();
    let mut idx = 0u32;
    for (o, n) in old.services.iter().zip(&new.services) {
        if n.cluster_ip.is_none() {
            continue;
        }
        for (op, np) in o.ports.iter().zip(&n.ports) {
            if op.backends != np.backends {
                let id = ServicePortId {
                    namespace: Arc::from(n.namespace.as_str()),
                    name: Arc::from(n.name.as_str()),
                    port_name: Arc::from(np.name.as_str()),
                    protocol: np.protocol,
                    port: np.port,
                };
                out.push((
                    idx,
                    ServiceEntry::new(id, &np.backends, n.affinity, &n.source_ranges),
                ));
            }
            idx += 1;
        }
    }
    out
}
