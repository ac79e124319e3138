//! The Kubernetes API source (kube-rs).
//!
//! Two watchers (`kube::runtime::watcher`, list + watch with resourceVersion
//! bookkeeping) follow Services and EndpointSlices cluster-wide. The runtime
//! handles 410 Gone and disconnects by relisting; `default_backoff` spaces out
//! retries after errors. Each kind keeps a store that is replaced whole at the
//! end of every (re)list, the way kube-rs' reflector store swaps at `InitDone`:
//! objects deleted while the watch was down disappear then, and a half-done
//! relist never reaches the tables. Nothing is published before both kinds have
//! finished their first list (`/readyz` stays 503 until then); after that,
//! every batch of events goes through the same [`crate::resolve`] path as the
//! manifests and the last good tables keep serving while the API is away.
//!
//! The Services watch selects by the `service.kubernetes.io/service-proxy-name`
//! label as kube-proxy does ([`services_selector`]).
//!
//! Pods are not watched: in a cluster, EndpointSlices already carry the
//! endpoints the EndpointSlice controller derived from them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;

use crate::controller::{Controller, ObjectKey};
use crate::manifest::{Object, Origin, Sourced};

/// The kube source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    /// No kubeconfig and not in a cluster.
    #[error(
        "kube source: no Kubernetes client configuration: {source} (set KUBECONFIG or ~/.kube/config, run in a Pod \
         with a ServiceAccount, or use `manifests = \"DIR\"` in the config instead of `kube = true`)"
    )]
    Config {
        /// kube's error.
        #[source]
        source: kube::config::InferConfigError,
    },
    /// The configuration was found but a client cannot be built from it.
    #[error("kube source: cannot build a Kubernetes client: {source}")]
    Client {
        /// kube's error.
        #[source]
        source: kube::Error,
    },
}

/// One kind's objects: the live set and, during a relist, the buffer that
/// will replace it.
#[derive(Debug)]
struct KindStore<K> {
    // Shared with the objects handed to the controller (no deep copies).
    live: BTreeMap<String, Arc<K>>,
    buffer: Option<BTreeMap<String, Arc<K>>>,
    synced: bool,
}

impl<K> Default for KindStore<K> {
    fn default() -> Self {
        Self { live: BTreeMap::new(), buffer: None, synced: false }
    }
}

fn key<K: Resource>(k: &K) -> String {
    let m = k.meta();
    format!("{}/{}", m.namespace.as_deref().unwrap_or("default"), m.name.as_deref().unwrap_or(""))
}

/// What one event changed in a kind's live set.
enum Change<K> {
    /// Nothing.
    None,
    /// This object was added or replaced.
    Upsert(Arc<K>),
    /// This object was removed.
    Delete(K),
    /// A relist replaced the whole set.
    Relisted,
}

impl<K: Resource + Clone + PartialEq> KindStore<K> {
    /// Applies one event and says what changed.
    fn apply(&mut self, ev: Event<K>) -> Change<K> {
        match ev {
            Event::Apply(k) => {
                let key = key(&k);
                if self.live.get(&key).is_some_and(|old| **old == k) {
                    return Change::None;
                }
                let k = Arc::new(k);
                self.live.insert(key, Arc::clone(&k));
                Change::Upsert(k)
            }
            Event::Delete(k) => match self.live.remove(&key(&k)) {
                Some(_) => Change::Delete(k),
                None => Change::None,
            },
            Event::Init => {
                self.buffer = Some(BTreeMap::new());
                Change::None
            }
            Event::InitApply(k) => {
                self.buffer.get_or_insert_with(BTreeMap::new).insert(key(&k), Arc::new(k));
                Change::None
            }
            Event::InitDone => {
                let next = self.buffer.take().unwrap_or_default();
                self.synced = true;
                if next == self.live {
                    return Change::None;
                }
                self.live = next;
                Change::Relisted
            }
        }
    }
}

/// One watch event of a kind the source follows.
// Events are moved once from the stream into the store, never kept in bulk.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum KubeEvent {
    /// A Service event.
    Service(Event<Service>),
    /// An EndpointSlice event.
    EndpointSlice(Event<EndpointSlice>),
}

/// Work for the controller.
#[derive(Debug)]
pub enum Pending {
    /// Resolve this whole object set ([`Controller::apply_objects`]).
    All(Vec<Sourced>),
    /// Apply these changes ([`Controller::apply_changes`]: only the affected
    /// Services are derived again when only EndpointSlices changed).
    Changes(Vec<Sourced>, Vec<ObjectKey>),
}

impl Pending {
    /// Hands the work to the controller.
    pub fn apply(self, controller: &Controller) -> crate::controller::SyncOutcome {
        match self {
            Self::All(objects) => controller.apply_objects(&objects),
            Self::Changes(upserts, deletes) => controller.apply_changes(upserts, deletes),
        }
    }
}

/// The objects the API has given so far, and the changes not yet applied.
#[derive(Debug, Default)]
pub struct KubeState {
    services: KindStore<Service>,
    slices: KindStore<EndpointSlice>,
    /// Objects added or replaced since the last apply, by key.
    upserts: BTreeMap<ObjectKey, Sourced>,
    /// Objects removed since the last apply.
    deletes: BTreeSet<ObjectKey>,
    /// A relist happened: the next apply must resolve everything.
    relisted: bool,
}

fn sourced(object: Object) -> Sourced {
    Sourced { origin: Origin::api(), object }
}

impl KubeState {
    /// Applies an event; true when the object set changed.
    pub fn apply(&mut self, ev: KubeEvent) -> bool {
        enum Changed {
            None,
            Upsert(Object),
            Delete(Object),
            Relisted,
        }
        let change = match ev {
            KubeEvent::Service(e) => match self.services.apply(e) {
                Change::Upsert(k) => Changed::Upsert(Object::Service(k)),
                Change::Delete(k) => Changed::Delete(Object::Service(Arc::new(k))),
                Change::Relisted => Changed::Relisted,
                Change::None => Changed::None,
            },
            KubeEvent::EndpointSlice(e) => match self.slices.apply(e) {
                Change::Upsert(k) => Changed::Upsert(Object::EndpointSlice(k)),
                Change::Delete(k) => Changed::Delete(Object::EndpointSlice(Arc::new(k))),
                Change::Relisted => Changed::Relisted,
                Change::None => Changed::None,
            },
        };
        match change {
            Changed::None => false,
            Changed::Upsert(o) => {
                let s = sourced(o);
                let key = ObjectKey::of(&s);
                self.deletes.remove(&key);
                self.upserts.insert(key, s);
                true
            }
            Changed::Delete(o) => {
                let key = ObjectKey::of(&sourced(o));
                self.upserts.remove(&key);
                self.deletes.insert(key);
                true
            }
            Changed::Relisted => {
                self.relisted = true;
                true
            }
        }
    }

    /// Takes the pending work: the whole object set after a relist (or when
    /// `full`), else only the changed objects.
    pub fn take_pending(&mut self, full: bool) -> Pending {
        let upserts: Vec<Sourced> = std::mem::take(&mut self.upserts).into_values().collect();
        let deletes: Vec<ObjectKey> = std::mem::take(&mut self.deletes).into_iter().collect();
        if std::mem::take(&mut self.relisted) || full {
            Pending::All(self.objects())
        } else {
            Pending::Changes(upserts, deletes)
        }
    }

    /// True once every kind has finished its first list.
    pub fn synced(&self) -> bool {
        self.services.synced && self.slices.synced
    }

    /// The objects, for [`crate::resolve::resolve`] / [`Controller::apply_objects`].
    pub fn objects(&self) -> Vec<Sourced> {
        let svcs = self.services.live.values().map(|s| Object::Service(Arc::clone(s)));
        let slices = self.slices.live.values().map(|s| Object::EndpointSlice(Arc::clone(s)));
        svcs.chain(slices).map(|object| Sourced { origin: Origin::api(), object }).collect()
    }
}

/// The running source; dropping it stops the watches.
#[derive(Debug)]
pub struct KubeHandle {
    task: tokio::task::JoinHandle<()>,
    status: Arc<KubeSourceStatus>,
}

impl Drop for KubeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds a client from the kubeconfig or the in-cluster config.
pub async fn client() -> Result<kube::Client, KubeSourceError> {
    let config = kube::Config::infer().await.map_err(|source| KubeSourceError::Config { source })?;
    kube::Client::try_from(config).map_err(|source| KubeSourceError::Client { source })
}

/// What the source has met so far, for tests and status: watch/list errors
/// (each retried with backoff while the last good tables keep serving).
#[derive(Debug, Default)]
pub struct KubeSourceStatus {
    errors: std::sync::atomic::AtomicU64,
    last_error: parking_lot::Mutex<Option<String>>,
}

impl KubeSourceStatus {
    /// Watch or list errors seen since the start.
    pub fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last error, naming the kind (`Services` or `EndpointSlices`).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    fn record(&self, msg: String) {
        self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.last_error.lock() = Some(msg);
    }
}

impl KubeHandle {
    /// Errors met so far.
    pub fn status(&self) -> &KubeSourceStatus {
        &self.status
    }
}

/// Connects and starts watching; must run inside a tokio runtime.
pub async fn start(controller: Arc<Controller>) -> Result<KubeHandle, KubeSourceError> {
    let client = client().await?;
    Ok(start_with_client(controller, client))
}

/// The server-side timeout of each watch request, in seconds. The API
/// server ends a healthy watch after it and the watcher resumes from the
/// last resourceVersion (no relist); a watch on which nothing at all arrives
/// for this long plus kube-runtime's 5 s margin is taken for dead (a
/// connection a middlebox dropped, an API server that hung) and opened
/// again. kube-runtime's default, 290 s, would leave the tables up to five
/// minutes behind a silently dead connection; client-go notices one in
/// about 45 s (HTTP/2 health pings). One new watch request a minute per
/// kind is a negligible load.
pub const WATCH_TIMEOUT_SECS: u32 = 60;

/// Starts watching through a given client (a real one, or one over a mocked
/// API service in tests); must run inside a tokio runtime.
pub fn start_with_client(controller: Arc<Controller>, client: kube::Client) -> KubeHandle {
    start_with_client_and_timeout(controller, client, WATCH_TIMEOUT_SECS)
}

/// [`start_with_client`] with another watch timeout (tests of a stalled
/// watch use a short one).
pub fn start_with_client_and_timeout(
    controller: Arc<Controller>,
    client: kube::Client,
    watch_timeout_secs: u32,
) -> KubeHandle {
    tracing::info!(watch_timeout_secs, "kube source: watching Services and EndpointSlices");
    let status = Arc::new(KubeSourceStatus::default());
    let task = tokio::spawn(run(controller, client, Arc::clone(&status), watch_timeout_secs));
    KubeHandle { task, status }
}

/// True for an HTTP 410 Gone answering the watch request itself.
fn watch_start_gone(ev: &Result<Event<impl Sized>, watcher::Error>) -> bool {
    matches!(ev, Err(watcher::Error::WatchStartFailed(kube::Error::Api(s))) if s.code == 410)
}

/// A watcher with kube-runtime's default backoff that also relists when the
/// watch request itself is answered with HTTP 410 Gone. kube-runtime relists
/// on a 410 ERROR event inside a watch stream, but on an HTTP 410 to the watch
/// request it retries the watch from the same, expired resourceVersion, for
/// ever (kube-runtime 5.0); here the watcher is started anew instead (list
/// first), after one backoff step.
fn relisting<K>(
    api: kube::Api<K>,
    cfg: watcher::Config,
) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let start = move || watcher::watcher(api.clone(), cfg.clone()).default_backoff().boxed();
    let first = start();
    futures::stream::unfold((first, false), move |(mut w, restart)| {
        let start = start.clone();
        async move {
            if restart {
                tokio::time::sleep(Duration::from_millis(800)).await;
                w = start();
            }
            let ev = w.next().await?;
            let gone = watch_start_gone(&ev);
            if gone {
                tracing::warn!("kube source: HTTP 410 Gone on a watch request; relisting");
            }
            Some((ev, (w, gone)))
        }
    })
}

/// The label selector of the Services watch: the Services svcgate serves by
/// their `service.kubernetes.io/service-proxy-name` label, as kube-proxy
/// selects them (KEP-2447). The API server filters, so Services meant for
/// another proxy are never sent; [`crate::resolve`] checks the label again
/// (the manifests source has no server to filter). A Service whose label
/// changes so that it no longer matches arrives as a deletion.
pub fn services_selector(service_proxy_name: Option<&str>) -> String {
    match service_proxy_name {
        None => format!("!{}", crate::resolve::SERVICE_PROXY_NAME_LABEL),
        Some(name) => format!("{}={name}", crate::resolve::SERVICE_PROXY_NAME_LABEL),
    }
}

async fn run(controller: Arc<Controller>, client: kube::Client, status: Arc<KubeSourceStatus>, watch_timeout: u32) {
    let cfg = watcher::Config::default().timeout(watch_timeout);
    // EndpointSlices are not filtered: a slice of a Service not served is
    // stored without a table build (see `Controller::apply_changes`).
    let selector = services_selector(controller.config().service_proxy_name.as_deref());
    let svcs = relisting(kube::Api::<Service>::all(client.clone()), cfg.clone().labels(&selector))
        .map(|r| r.map(KubeEvent::Service).map_err(|e| ("Services", e)));
    let slices = relisting(kube::Api::<EndpointSlice>::all(client), cfg)
        .map(|r| r.map(KubeEvent::EndpointSlice).map_err(|e| ("EndpointSlices", e)));
    let mut events = std::pin::pin!(futures::stream::select(svcs, slices));
    let mut state = KubeState::default();
    let mut pending = false;
    let mut since = Instant::now();
    let handle = |ev: Result<KubeEvent, (&'static str, watcher::Error)>, state: &mut KubeState| match ev {
        Ok(ev) => {
            // An answer from the API server; `Init` is not one (the watcher
            // emits it before it sends the list request).
            match &ev {
                KubeEvent::Service(Event::Init) | KubeEvent::EndpointSlice(Event::Init) => {}
                KubeEvent::Service(_) => controller.record_source_ok("Services"),
                KubeEvent::EndpointSlice(_) => controller.record_source_ok("EndpointSlices"),
            }
            state.apply(ev)
        }
        Err((kind, e)) => {
            let msg = format!("kube source: {kind} watch error: {e}");
            tracing::warn!("{msg}; relisting with backoff, the last good tables keep serving");
            // Also into the controller's status (`svcgate status`, /status).
            controller.record_source_error(kind, msg.clone());
            status.record(msg);
            false
        }
    };
    while let Some(ev) = events.next().await {
        if !pending {
            since = Instant::now();
        }
        pending |= handle(ev, &mut state);
        // Take whatever else is already queued (a relist arrives as a burst).
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(5), events.next()).await {
            pending |= handle(ev, &mut state);
        }
        let first_sync = state.synced() && !controller.is_ready();
        if state.synced() && (pending || first_sync) {
            // Resolution and table builds are CPU work: off the async workers.
            let c = Arc::clone(&controller);
            let work = state.take_pending(first_sync);
            let outcome = tokio::task::spawn_blocking(move || work.apply(&c)).await;
            if let Err(e) = outcome {
                // The changes taken are lost with the task: resolve the whole
                // set at the next sync so nothing stays stale.
                tracing::error!("table build task failed: {e}; the next sync resolves everything");
                state.relisted = true;
                continue;
            }
            controller.observe_sync(since);
            if first_sync {
                controller.set_ready();
                tracing::info!("kube source: first full sync published; ready");
            }
            pending = false;
        }
    }
}

#[cfg(test)]
mod pending_tests {
    use super::*;

    #[test]
    fn services_selector_follows_service_proxy_name() {
        assert_eq!(services_selector(None), "!service.kubernetes.io/service-proxy-name");
        assert_eq!(services_selector(Some("svcgate")), "service.kubernetes.io/service-proxy-name=svcgate");
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str) -> Service {
        Service {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..Default::default() },
            ..Default::default()
        }
    }

    fn slice(name: &str, rv: &str) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![],
            ports: None,
        }
    }

    fn sync(st: &mut KubeState) {
        for ev in [
            KubeEvent::Service(Event::Init),
            KubeEvent::Service(Event::InitApply(svc("a"))),
            KubeEvent::Service(Event::InitDone),
            KubeEvent::EndpointSlice(Event::Init),
            KubeEvent::EndpointSlice(Event::InitApply(slice("a-1", "1"))),
            KubeEvent::EndpointSlice(Event::InitDone),
        ] {
            st.apply(ev);
        }
    }

    #[test]
    fn after_the_first_sync_only_changes_are_handed_over() {
        let mut st = KubeState::default();
        sync(&mut st);
        assert!(st.synced());
        assert!(matches!(st.take_pending(true), Pending::All(o) if o.len() == 2));
        // A modified slice: one upsert, nothing else.
        assert!(st.apply(KubeEvent::EndpointSlice(Event::Apply(slice("a-1", "2")))));
        match st.take_pending(false) {
            Pending::Changes(u, d) => {
                assert_eq!((u.len(), d.len()), (1, 0));
                assert_eq!(ObjectKey::of(&u[0]).name, "a-1");
            }
            other => panic!("{other:?}"),
        }
        // The same object again changes nothing.
        assert!(!st.apply(KubeEvent::EndpointSlice(Event::Apply(slice("a-1", "2")))));
        // A deletion after an update of the same object is only a deletion.
        st.apply(KubeEvent::Service(Event::Apply(svc("b"))));
        st.apply(KubeEvent::Service(Event::Delete(svc("b"))));
        match st.take_pending(false) {
            Pending::Changes(u, d) => assert_eq!((u.len(), d.len()), (0, 1)),
            other => panic!("{other:?}"),
        }
        // A relist that changed the set hands over everything.
        sync(&mut st);
        assert!(matches!(st.take_pending(false), Pending::All(o) if o.len() == 2));
    }
}
