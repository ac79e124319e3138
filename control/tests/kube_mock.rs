//! The kube source against kube-rs' mocked API service (`tower_test::mock`):
//! a fake API server answers the list and watch requests the two watchers
//! make, in the shape a real API server sends them (lists with
//! `metadata.resourceVersion`, watch streams of JSON lines with ADDED,
//! MODIFIED, DELETED, BOOKMARK and ERROR 410 events, `Status` bodies on HTTP
//! errors). No network, no cluster; every wait is bounded.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::mpsc;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{json, Value};
use svcgate_common::model::Protocol;
use svcgate_common::table::ServiceTable;
use svcgate_control::controller::Controller;
use svcgate_control::kube_source::{self, KubeHandle};
use svcgate_control::resolve::ResolveConfig;

/// Every wait for the source is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// objects, as k8s-openapi serializes them
// ---------------------------------------------------------------------------

fn service(name: &str, cluster_ip: &str, rv: &str) -> Value {
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": format!("0b6e1c52-0000-4000-8000-{:012}", name.len()),
            "resourceVersion": rv,
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {"app": name}
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "selector": {"app": name},
            "ports": [{"name": "service0", "port": 8080, "protocol": "TCP", "targetPort": 80}]
        },
        "status": {"loadBalancer": {}}
    }))
    .expect("a valid Service");
    serde_json::to_value(svc).expect("serializable")
}

fn slice(name: &str, svc: &str, rv: &str, pods: &[(&str, &str)]) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(pod, ip)| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "node-1",
                "targetRef": {"kind": "Pod", "namespace": "default", "name": pod,
                              "uid": format!("pod-{pod}")}
            })
        })
        .collect();
    let s: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "generateName": format!("{svc}-"),
            "namespace": "default",
            "resourceVersion": rv,
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc,
                                 "uid": "owner", "controller": true, "blockOwnerDeletion": true}]
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "service0", "port": 80, "protocol": "TCP"}]
    }))
    .expect("a valid EndpointSlice");
    serde_json::to_value(s).expect("serializable")
}

// ---------------------------------------------------------------------------
// the fake API server
// ---------------------------------------------------------------------------

type RespBody = StreamBody<mpsc::UnboundedReceiver<Result<Frame<Bytes>, Infallible>>>;
type Handle = tower_test::mock::Handle<Request<Body>, Response<RespBody>>;
type Respond = tower_test::mock::SendResponse<Response<RespBody>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Services,
    Slices,
}

impl Kind {
    fn list_kind(self) -> (&'static str, &'static str) {
        match self {
            Kind::Services => ("v1", "ServiceList"),
            Kind::Slices => ("discovery.k8s.io/v1", "EndpointSliceList"),
        }
    }
    fn object_kind(self) -> (&'static str, &'static str) {
        match self {
            Kind::Services => ("v1", "Service"),
            Kind::Slices => ("discovery.k8s.io/v1", "EndpointSlice"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Verb {
    List,
    Watch,
}

/// One request the watchers made, waiting for its answer.
struct Call {
    kind: Kind,
    uri: String,
    respond: Respond,
}

/// A body sent whole.
fn whole(bytes: Vec<u8>) -> RespBody {
    let (tx, rx) = mpsc::unbounded();
    tx.unbounded_send(Ok(Frame::data(Bytes::from(bytes)))).expect("open");
    StreamBody::new(rx)
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
           "status": "Failure", "message": message, "reason": reason, "code": code})
}

impl Call {
    /// Answers a list: 200, `<Kind>List` with `metadata.resourceVersion`.
    fn list(self, rv: &str, items: Vec<Value>) {
        assert!(!self.uri.contains("continue="), "no paging expected: {}", self.uri);
        let (api_version, kind) = self.kind.list_kind();
        let body = json!({"apiVersion": api_version, "kind": kind,
                          "metadata": {"resourceVersion": rv}, "items": items});
        let resp = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(whole(serde_json::to_vec(&body).expect("json")))
            .expect("response");
        self.respond.send_response(resp);
    }

    /// Answers with an HTTP error and a `Status` body, as the API server does.
    fn error(self, code: u16, reason: &str, message: &str) {
        let body = status_body(code, reason, message);
        let resp = Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(whole(serde_json::to_vec(&body).expect("json")))
            .expect("response");
        self.respond.send_response(resp);
    }

    /// Fails the request as a refused connection would (no HTTP answer).
    fn refuse(self) {
        self.respond.send_error(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
    }

    /// Answers a watch: 200 and a body that stays open; events are written
    /// to it as JSON lines through the returned stream.
    fn watch(self) -> WatchStream {
        let (tx, rx) = mpsc::unbounded();
        let resp = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(StreamBody::new(rx))
            .expect("response");
        self.respond.send_response(resp);
        WatchStream { kind: self.kind, tx }
    }
}

/// An open watch response.
struct WatchStream {
    kind: Kind,
    tx: mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>,
}

impl WatchStream {
    fn event(&self, ty: &str, object: Value) {
        let mut line = serde_json::to_vec(&json!({"type": ty, "object": object})).expect("json");
        line.push(b'\n');
        // The watcher may already have hung up (after a 410); that is fine.
        let _ = self.tx.unbounded_send(Ok(Frame::data(Bytes::from(line))));
    }
    fn added(&self, o: Value) {
        self.event("ADDED", o);
    }
    fn modified(&self, o: Value) {
        self.event("MODIFIED", o);
    }
    fn deleted(&self, o: Value) {
        self.event("DELETED", o);
    }
    /// A BOOKMARK: an object of the kind carrying only a resourceVersion.
    fn bookmark(&self, rv: &str) {
        let (api_version, kind) = self.kind.object_kind();
        self.event("BOOKMARK", json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": rv}}));
    }
    /// The API server's answer to a watch from a compacted resourceVersion.
    fn gone(&self, rv: &str) {
        self.event("ERROR", status_body(410, "Expired", &format!("too old resource version: {rv} (9000)")));
    }
}

/// Routes each request to a queue per (kind, list/watch) so the tests can
/// answer the two watchers independently of how their requests interleave.
/// Where requests wait for the test to answer them, by kind and verb.
type Queues = Arc<Mutex<HashMap<(Kind, Verb), mpsc::UnboundedSender<Call>>>>;

struct FakeApi {
    rx: HashMap<(Kind, Verb), mpsc::UnboundedReceiver<Call>>,
    /// Every request's URI, in order of arrival.
    log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    fn start() -> (kube::Client, FakeApi) {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<RespBody>>();
        let client = kube::Client::new(svc, "default");
        let mut txs = HashMap::new();
        let mut rx = HashMap::new();
        for k in [Kind::Services, Kind::Slices] {
            for v in [Verb::List, Verb::Watch] {
                let (t, r) = mpsc::unbounded();
                txs.insert((k, v), t);
                rx.insert((k, v), r);
            }
        }
        let queues = Arc::new(Mutex::new(txs));
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(handle, queues, Arc::clone(&log)));
        (client, FakeApi { rx, log, task })
    }

    /// The next request of this kind and verb (bounded wait).
    async fn next(&mut self, kind: Kind, verb: Verb) -> Call {
        use futures::StreamExt;
        let rx = self.rx.get_mut(&(kind, verb)).expect("queue");
        tokio::time::timeout(WAIT, rx.next())
            .await
            .unwrap_or_else(|_| {
                panic!("no {verb:?} request for {kind:?} within {WAIT:?}; requests so far: {:#?}", self.log.lock())
            })
            .expect("fake API server running")
    }

    /// True when no request of this kind and verb is waiting.
    fn none_waiting(&mut self, kind: Kind, verb: Verb) -> bool {
        let rx = self.rx.get_mut(&(kind, verb)).expect("queue");
        rx.try_recv().is_err()
    }
}

async fn serve(mut handle: Handle, queues: Queues, log: Arc<Mutex<Vec<String>>>) {
    while let Some((req, respond)) = handle.next_request().await {
        assert_eq!(req.method(), http::Method::GET, "the watchers only read");
        let uri = req.uri().to_string();
        log.lock().push(uri.clone());
        let path = req.uri().path();
        let kind = match path {
            "/api/v1/services" => Kind::Services,
            "/apis/discovery.k8s.io/v1/endpointslices" => Kind::Slices,
            other => panic!("unexpected path {other} ({uri})"),
        };
        let query = req.uri().query().unwrap_or("");
        let verb = if query.split('&').any(|kv| kv == "watch=true") { Verb::Watch } else { Verb::List };
        let q = queues.lock();
        q[&(kind, verb)].unbounded_send(Call { kind, uri, respond }).expect("test alive");
    }
}

fn query_param<'a>(uri: &'a str, name: &str) -> Option<&'a str> {
    uri.split_once('?')?.1.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

// ---------------------------------------------------------------------------
// the controller side
// ---------------------------------------------------------------------------

fn controller() -> Arc<Controller> {
    // The cluster's own ranges: loaded, never sent to (the API server
    // already checked clusterIPs, so no range check here).
    let mut cfg = ResolveConfig::new("198.18.128.0/20".parse().expect("cidr"), Vec::<std::net::IpAddr>::new());
    cfg.check_cluster_ip_range = false;
    Arc::new(Controller::new(cfg))
}

fn start(ctl: &Arc<Controller>) -> (KubeHandle, FakeApi) {
    let (client, api) = FakeApi::start();
    let handle = kube_source::start_with_client(Arc::clone(ctl), client);
    (handle, api)
}

const NGINX: Ipv4Addr = Ipv4Addr::new(10, 247, 1, 2);
const WEB: Ipv4Addr = Ipv4Addr::new(10, 247, 1, 3);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

/// The backends of `vip:8080/TCP`, or None without that frontend.
fn backends(t: &ServiceTable, vip: Ipv4Addr) -> Option<Vec<Ipv4Addr>> {
    let f = t.frontend(vip, Protocol::Tcp, 8080)?;
    Some(t.v4().entry(f.entry).expect("entry").backends.iter().map(|b| b.addr).collect())
}

/// Waits (bounded) until the published table satisfies `ok`.
async fn published(ctl: &Controller, what: &str, ok: impl Fn(&ServiceTable) -> bool) -> Arc<ServiceTable> {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = ctl.tables().current();
        if t.generation() > 0 && ok(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "not published within {WAIT:?}: {what}; current generation {}, status {:?}",
            t.generation(),
            ctl.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (bounded) until the source has marked the controller ready (just
/// after publishing its first full sync).
async fn ready(ctl: &Controller) {
    let deadline = Instant::now() + WAIT;
    while !ctl.is_ready() {
        assert!(Instant::now() < deadline, "not ready within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Lets the source run for a moment (to prove that something does *not* happen).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// Initial lists of both kinds answered, both watches open.
async fn synced(ctl: &Arc<Controller>, api: &mut FakeApi) -> (WatchStream, WatchStream, Arc<ServiceTable>) {
    api.next(Kind::Services, Verb::List).await.list("100", vec![service("nginx", "10.247.1.2", "90")]);
    api.next(Kind::Slices, Verb::List).await.list(
        "101",
        vec![slice("nginx-abcde", "nginx", "95", &[("nginx-1", "198.18.3.10"), ("nginx-2", "198.18.3.11")])],
    );
    let svc_watch = api.next(Kind::Services, Verb::Watch).await;
    assert_eq!(query_param(&svc_watch.uri, "resourceVersion"), Some("100"));
    let slice_watch = api.next(Kind::Slices, Verb::Watch).await;
    assert_eq!(query_param(&slice_watch.uri, "resourceVersion"), Some("101"));
    let t = published(ctl, "the initial lists", |t| backends(t, NGINX).is_some()).await;
    ready(ctl).await;
    (svc_watch.watch(), slice_watch.watch(), t)
}

// ---------------------------------------------------------------------------
// the tests
// ---------------------------------------------------------------------------

/// 1. Initial list of a Service and its EndpointSlice -> one table with the
/// frontend and both backends; nothing published and not ready while only
/// one of the two kinds has been listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_lists_publish_once_both_kinds_synced() {
    let ctl = controller();
    let (_h, mut api) = start(&ctl);

    let list = api.next(Kind::Services, Verb::List).await;
    assert!(query_param(&list.uri, "watch").is_none(), "a list: {}", list.uri);
    assert_eq!(
        query_param(&list.uri, "labelSelector"),
        Some("%21service.kubernetes.io%2Fservice-proxy-name"),
        "only Services without a service-proxy-name label, as kube-proxy: {}",
        list.uri
    );
    list.list("100", vec![service("nginx", "10.247.1.2", "90")]);
    // The Services watch starting proves that list was taken in whole.
    let svc_watch = api.next(Kind::Services, Verb::Watch).await;
    assert_eq!(query_param(&svc_watch.uri, "resourceVersion"), Some("100"));
    assert_eq!(query_param(&svc_watch.uri, "allowWatchBookmarks"), Some("true"));
    // Only the Services without a service-proxy-name label, as kube-proxy
    // selects them; EndpointSlices unfiltered.
    let selector = Some("%21service.kubernetes.io%2Fservice-proxy-name");
    assert_eq!(query_param(&svc_watch.uri, "labelSelector"), selector, "{}", svc_watch.uri);
    let _svc_watch = svc_watch.watch();
    settle().await;
    assert!(!ctl.is_ready(), "ready with Services listed but no EndpointSlices");
    assert_eq!(ctl.tables().current().generation(), 0, "published before both lists");

    api.next(Kind::Slices, Verb::List).await.list(
        "101",
        vec![slice("nginx-abcde", "nginx", "95", &[("nginx-1", "198.18.3.10"), ("nginx-2", "198.18.3.11")])],
    );
    let t = published(&ctl, "the initial lists", |t| backends(t, NGINX).is_some()).await;
    ready(&ctl).await;
    assert_eq!(t.generation(), 1, "one publish for the first full sync");
    assert_eq!(backends(&t, NGINX), Some(vec![ip("198.18.3.10"), ip("198.18.3.11")]));
    assert_eq!(t.frontend_count(), 1);
    let st = ctl.status();
    assert_eq!(st.services.len(), 1);
    assert!(st.errors.is_empty(), "{:?}", st.errors);
}

/// 2. Watch events: a MODIFIED EndpointSlice (a Pod replaced by one with a
/// new IP) changes the backends; an ADDED Service brings a new frontend; a
/// DELETED Service takes its frontend away; a BOOKMARK publishes nothing,
/// raises no error and moves the resourceVersion the next watch resumes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_modified_added_deleted_bookmark() {
    let ctl = controller();
    let (h, mut api) = start(&ctl);
    let (svcs, slices, t0) = synced(&ctl, &mut api).await;
    let g0 = t0.generation();

    // MODIFIED: nginx-2 (198.18.3.11) replaced by nginx-3 (198.18.3.13).
    slices.modified(slice("nginx-abcde", "nginx", "110", &[("nginx-1", "198.18.3.10"), ("nginx-3", "198.18.3.13")]));
    let t =
        published(&ctl, "the replaced Pod", |t| backends(t, NGINX) == Some(vec![ip("198.18.3.10"), ip("198.18.3.13")]))
            .await;
    assert_eq!(t.generation(), g0 + 1);

    // ADDED: a second Service, then its slice.
    svcs.added(service("web", "10.247.1.3", "111"));
    let t = published(&ctl, "the added Service", |t| backends(t, WEB).is_some()).await;
    assert_eq!(backends(&t, WEB), Some(vec![]), "no endpoints yet");
    slices.added(slice("web-xyz", "web", "112", &[("web-1", "198.18.4.10")]));
    published(&ctl, "the added slice", |t| backends(t, WEB) == Some(vec![ip("198.18.4.10")])).await;

    // DELETED: nginx goes, web stays.
    svcs.deleted(service("nginx", "10.247.1.2", "113"));
    let t = published(&ctl, "the deleted Service", |t| backends(t, NGINX).is_none()).await;
    assert_eq!(backends(&t, WEB), Some(vec![ip("198.18.4.10")]));
    let g = t.generation();

    // BOOKMARK: nothing published, no error.
    svcs.bookmark("150");
    slices.bookmark("151");
    settle().await;
    assert_eq!(ctl.tables().current().generation(), g, "a bookmark published a table");
    assert_eq!(h.status().errors(), 0, "{:?}", h.status().last_error());

    // The watch ends (the API server's timeout): the watcher resumes from
    // the bookmark's resourceVersion, without a relist.
    drop(svcs);
    let rewatch = api.next(Kind::Services, Verb::Watch).await;
    assert_eq!(query_param(&rewatch.uri, "resourceVersion"), Some("150"));
    assert!(api.none_waiting(Kind::Services, Verb::List), "no relist after a clean end");
    let _svcs = rewatch.watch();
    settle().await;
    assert_eq!(ctl.tables().current().generation(), g);
    assert!(ctl.is_ready());
}

/// 3. 410 Gone (an ERROR event "too old resource version") on the watch ->
/// the watcher relists; until the relist is complete the last good table
/// keeps serving (no empty or partial table published), then exactly one
/// table with the relisted state is published, and the new watch starts at
/// the relist's resourceVersion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_relists_and_keeps_serving_meanwhile() {
    let ctl = controller();
    let (h, mut api) = start(&ctl);
    let (svcs, slices, _) = synced(&ctl, &mut api).await;
    svcs.added(service("web", "10.247.1.3", "120"));
    let t = published(&ctl, "web", |t| backends(t, WEB).is_some()).await;
    let g = t.generation();

    slices.gone("101");
    let relist = api.next(Kind::Slices, Verb::List).await;
    assert!(query_param(&relist.uri, "watch").is_none(), "a list: {}", relist.uri);
    // Between the 410 and the relist's answer: the old table keeps serving.
    settle().await;
    let mid = ctl.tables().current();
    assert_eq!(mid.generation(), g, "published something before the relist completed");
    assert_eq!(backends(&mid, NGINX), Some(vec![ip("198.18.3.10"), ip("198.18.3.11")]));
    assert!(ctl.is_ready());
    assert!(
        h.status().last_error().is_some_and(|e| e.contains("EndpointSlices") && e.contains("too old resource version")),
        "{:?}",
        h.status().last_error()
    );

    // The relist: nginx's slice changed while the watch was down, web got one.
    relist.list(
        "300",
        vec![
            slice("nginx-abcde", "nginx", "250", &[("nginx-4", "198.18.3.14")]),
            slice("web-xyz", "web", "260", &[("web-1", "198.18.4.10")]),
        ],
    );
    let t = published(&ctl, "the relisted state", |t| backends(t, NGINX) == Some(vec![ip("198.18.3.14")])).await;
    assert_eq!(t.generation(), g + 1, "exactly one publish for the whole relist");
    assert_eq!(backends(&t, WEB), Some(vec![ip("198.18.4.10")]));
    let rewatch = api.next(Kind::Slices, Verb::Watch).await;
    assert_eq!(query_param(&rewatch.uri, "resourceVersion"), Some("300"));
    let _slices = rewatch.watch();

    // A 410 on the Services watch too: a Service deleted while the watch
    // was down disappears at the relist's end.
    svcs.gone("120");
    api.next(Kind::Services, Verb::List).await.list("400", vec![service("web", "10.247.1.3", "120")]);
    let t = published(&ctl, "nginx gone after the relist", |t| backends(t, NGINX).is_none()).await;
    assert_eq!(t.generation(), g + 2);
    assert_eq!(backends(&t, WEB), Some(vec![ip("198.18.4.10")]));
    assert_eq!(h.status().errors(), 2);
}

/// 4. API errors: a 500 on the first list -> not ready, nothing published, a
/// clear error recorded, the list retried after a backoff; later, a 500 on a
/// relist keeps the last good table serving until a relist succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_retried_with_backoff_last_good_kept() {
    let ctl = controller();
    let (h, mut api) = start(&ctl);

    api.next(Kind::Slices, Verb::List)
        .await
        .list("101", vec![slice("nginx-abcde", "nginx", "95", &[("nginx-1", "198.18.3.10")])]);
    let _slices = api.next(Kind::Slices, Verb::Watch).await.watch();
    api.next(Kind::Services, Verb::List).await.error(
        500,
        "InternalError",
        "Internal error occurred: etcdserver: request timed out",
    );
    let failed_at = Instant::now();
    let retry = api.next(Kind::Services, Verb::List).await;
    let waited = failed_at.elapsed();
    // kube-runtime's default backoff: 800 ms, doubling, with jitter.
    assert!(waited >= Duration::from_millis(700), "retried after {waited:?}, no backoff");
    assert!(!ctl.is_ready());
    assert_eq!(ctl.tables().current().generation(), 0);
    assert_eq!(h.status().errors(), 1);
    let err = h.status().last_error().expect("an error recorded");
    assert!(err.contains("Services") && err.contains("etcdserver: request timed out"), "{err}");
    // The same in the controller's status, which /status and `svcgate status` show.
    let report = svcgate_control::admin::status_report(&ctl, &svcgate_control::admin::StatsSlot::default());
    let src = &report.control.source;
    assert_eq!((src.errors_total, &src.retrying[..]), (1, &["Services".to_string()][..]), "{src:?}");
    assert_eq!(src.last_error.as_deref(), Some(err.as_str()));
    assert!(src.last_error_unix_ms > 0);
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("etcdserver: request timed out"), "{json}");
    let metrics = svcgate_control::admin::render_metrics(&ctl, &svcgate_control::admin::StatsSlot::default());
    assert!(metrics.contains("svcgate_source_errors_total 1\n"), "{metrics}");
    assert!(metrics.contains("svcgate_source_retrying 1\n"), "{metrics}");

    retry.list("100", vec![service("nginx", "10.247.1.2", "90")]);
    let svcs = api.next(Kind::Services, Verb::Watch).await.watch();
    let t = published(&ctl, "after the retried list", |t| backends(t, NGINX) == Some(vec![ip("198.18.3.10")])).await;
    ready(&ctl).await;
    let g = t.generation();
    let src = ctl.status().source;
    assert_eq!((src.errors_total, src.retrying.len()), (1, 0), "recovered after the retried list: {src:?}");

    // Later: the watch is lost (410) and the relist fails twice.
    svcs.gone("100");
    api.next(Kind::Services, Verb::List).await.error(
        500,
        "InternalError",
        "Internal error occurred: etcdserver: leader changed",
    );
    api.next(Kind::Services, Verb::List).await.error(
        503,
        "ServiceUnavailable",
        "the server is currently unable to handle the request",
    );
    settle().await;
    let mid = ctl.tables().current();
    assert_eq!(mid.generation(), g, "published while the API was failing");
    assert_eq!(backends(&mid, NGINX), Some(vec![ip("198.18.3.10")]));
    assert!(ctl.is_ready(), "not ready any more while the API fails");
    assert_eq!(h.status().errors(), 4, "{:?}", h.status().last_error());
    assert!(h.status().last_error().is_some_and(|e| e.contains("unable to handle the request")));
    let src = ctl.status().source;
    assert_eq!((src.errors_total, &src.retrying[..]), (4, &["Services".to_string()][..]), "{src:?}");
    assert!(src.last_error.is_some_and(|e| e.contains("unable to handle the request")));

    api.next(Kind::Services, Verb::List)
        .await
        .list("500", vec![service("nginx", "10.247.1.2", "90"), service("web", "10.247.1.3", "450")]);
    let t = published(&ctl, "after the API came back", |t| backends(t, WEB).is_some()).await;
    assert_eq!(t.generation(), g + 1);
    assert_eq!(backends(&t, NGINX), Some(vec![ip("198.18.3.10")]));
}

/// 410 Gone as an HTTP status on the watch request itself (not as an ERROR
/// event in a 200 stream): the error is recorded, the last good table keeps
/// serving, and the source relists (kube-runtime alone would retry the watch
/// from the same expired resourceVersion) and publishes the relisted state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_410_on_watch_start_relists() {
    let ctl = controller();
    let (h, mut api) = start(&ctl);
    let (svcs, _slices, t) = synced(&ctl, &mut api).await;
    let g = t.generation();
    // The Services watch ends; its restart is answered with HTTP 410.
    drop(svcs);
    let rewatch = api.next(Kind::Services, Verb::Watch).await;
    assert_eq!(query_param(&rewatch.uri, "resourceVersion"), Some("100"));
    rewatch.error(410, "Expired", "too old resource version: 100 (9000)");
    let relist = api.next(Kind::Services, Verb::List).await;
    assert!(api.none_waiting(Kind::Services, Verb::Watch), "a watch from the expired resourceVersion again");
    settle().await;
    assert_eq!(ctl.tables().current().generation(), g, "published before the relist completed");
    assert!(ctl.is_ready());
    assert!(
        h.status().last_error().is_some_and(|e| e.contains("Services") && e.contains("too old resource version")),
        "{:?}",
        h.status().last_error()
    );
    relist.list("9001", vec![service("nginx", "10.247.1.2", "90"), service("web", "10.247.1.3", "9000")]);
    let t = published(&ctl, "the relisted state", |t| backends(t, WEB).is_some()).await;
    assert_eq!(t.generation(), g + 1);
    assert_eq!(backends(&t, NGINX), Some(vec![ip("198.18.3.10"), ip("198.18.3.11")]));
    let watch = api.next(Kind::Services, Verb::Watch).await;
    assert_eq!(query_param(&watch.uri, "resourceVersion"), Some("9001"));
}

/// An API outage of the kinds a real one is made of, after the first sync:
/// both watches stall (open, nothing arrives), the new watch requests are
/// refused at the connection, then one gets an HTTP 410 and its relist is
/// refused too. All along the last good table keeps serving, nothing is
/// published, the source stays ready and counts the errors; once the API
/// answers again, the Services watch resumes from where it was and the
/// EndpointSlices are relisted, and both changes made meanwhile are
/// published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_stalled_watch_refused_connections_then_resync() {
    let ctl = controller();
    let (client, mut api) = FakeApi::start();
    // A 1 s server-side watch timeout: a watch silent for 6 s is dead.
    let h = kube_source::start_with_client_and_timeout(Arc::clone(&ctl), client, 1);
    let (svcs, slices, t) = synced(&ctl, &mut api).await;
    let g = t.generation();
    let stalled_at = Instant::now();
    let unchanged = |what: &str| {
        let cur = ctl.tables().current();
        assert_eq!(cur.generation(), g, "{what}: published during the outage");
        assert_eq!(backends(&cur, NGINX), Some(vec![ip("198.18.3.10"), ip("198.18.3.11")]), "{what}");
        assert!(ctl.is_ready(), "{what}: not ready any more");
    };

    // The stall: both watches stay open and silent; after 1 s + 5 s the
    // watcher gives up on each and watches again from its resourceVersion.
    let rewatch = api.next(Kind::Services, Verb::Watch).await;
    let waited = stalled_at.elapsed();
    assert!(waited >= Duration::from_secs(5), "a silent watch dropped after only {waited:?}");
    assert_eq!(query_param(&rewatch.uri, "resourceVersion"), Some("100"));
    assert_eq!(query_param(&rewatch.uri, "timeoutSeconds"), Some("1"));
    unchanged("stalled watch");
    // Refused twice (backoff between), then answered.
    rewatch.refuse();
    unchanged("refused watch");
    api.next(Kind::Services, Verb::Watch).await.refuse();
    let deadline = Instant::now() + WAIT;
    while h.status().errors() < 2 {
        assert!(Instant::now() < deadline, "{} errors after two refused connections", h.status().errors());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h.status().last_error().is_some_and(|e| e.contains("Services")), "{:?}", h.status().last_error());
    assert_eq!(ctl.status().source.retrying, vec!["Services".to_string()]);

    // The EndpointSlices watch, stalled too: its new watch gets HTTP 410,
    // and the relist that follows is refused once.
    let slice_rewatch = api.next(Kind::Slices, Verb::Watch).await;
    assert_eq!(query_param(&slice_rewatch.uri, "resourceVersion"), Some("101"));
    slice_rewatch.error(410, "Expired", "too old resource version: 101 (9000)");
    api.next(Kind::Slices, Verb::List).await.refuse();
    unchanged("relist refused");
    settle().await;
    unchanged("relist refused, later");
    drop((svcs, slices));

    // The API is back. Services: the watch resumes from 100 and carries
    // what changed meanwhile (web added).
    let w = api.next(Kind::Services, Verb::Watch).await;
    assert_eq!(query_param(&w.uri, "resourceVersion"), Some("100"));
    let svcs = w.watch();
    svcs.added(service("web", "10.247.1.3", "150"));
    // EndpointSlices: relisted, with nginx's endpoints changed meanwhile.
    api.next(Kind::Slices, Verb::List).await.list(
        "300",
        vec![
            slice("nginx-abcde", "nginx", "250", &[("nginx-3", "198.18.3.13")]),
            slice("web-xyz", "web", "260", &[("web-1", "198.18.4.10")]),
        ],
    );
    let t = published(&ctl, "the state after the outage", |t| {
        backends(t, NGINX) == Some(vec![ip("198.18.3.13")]) && backends(t, WEB) == Some(vec![ip("198.18.4.10")])
    })
    .await;
    assert!(t.generation() > g);
    let _slices = api.next(Kind::Slices, Verb::Watch).await.watch();
    let src = ctl.status().source;
    assert!(src.retrying.is_empty(), "still retrying after the API came back: {src:?}");
    eprintln!(
        "outage: {} errors recorded, resynced {:?} after the stall began",
        h.status().errors(),
        stalled_at.elapsed()
    );
    drop(svcs);
}
