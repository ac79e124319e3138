//! The kube source against a small HTTP/1.1 API server of the test's own on
//! 127.0.0.1 (real sockets, kube-rs' real connector): connections refused
//! by the kernel (the listener closed), HTTP 500s on every request, and
//! watches that stall (headers sent, then nothing), each for seconds, with
//! the objects changing meanwhile. The last good table serves throughout
//! and the source resyncs after. `kube_mock.rs` drives the same source
//! through kube-rs' mocked service, request by request.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use svcgate_common::model::Protocol;
use svcgate_common::table::ServiceTable;
use svcgate_control::controller::Controller;
use svcgate_control::kube_source;
use svcgate_control::resolve::ResolveConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NGINX: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 2);
const WEB: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Lists answered; a watch from the current resourceVersion stays open
    /// until its timeoutSeconds, one from an older one gets a 410 event.
    Normal,
    /// Every request: HTTP 500 with a Status body.
    Error500,
    /// Lists answered; watches get their headers and then nothing.
    Stall,
}

struct State {
    mode: Mode,
    rv: u64,
    services: Vec<Value>,
    slices: Vec<Value>,
    requests: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn service(name: &str, ip: Ipv4Addr) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
           "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
                    "selector": {"app": name},
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 80}]}})
}

fn slice(svc: &str, ips: &[&str]) -> Value {
    let endpoints: Vec<Value> =
        ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true}})).collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{svc}-a"), "namespace": "default", "resourceVersion": "1",
                        "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4", "endpoints": endpoints,
           "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
}

fn query<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    target.split_once('?')?.1.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

async fn send_whole(s: &mut TcpStream, status: &str, body: &Value) {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(&body).await;
}

async fn send_chunk(s: &mut TcpStream, data: &[u8]) -> bool {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    s.write_all(&c).await.is_ok()
}

/// One connection: one request, answered as the state says, then closed.
async fn handle(mut s: TcpStream, st: Shared) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    let (mode, rv, items) = {
        let mut g = st.lock();
        g.requests.push(target.clone());
        let items = if path.ends_with("/services") { g.services.clone() } else { g.slices.clone() };
        (g.mode, g.rv, items)
    };
    let list_kind =
        if path.ends_with("/services") { ("v1", "ServiceList") } else { ("discovery.k8s.io/v1", "EndpointSliceList") };
    if mode == Mode::Error500 {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": "Internal error occurred: etcdserver: request timed out",
                          "reason": "InternalError", "code": 500});
        return send_whole(&mut s, "500 Internal Server Error", &body).await;
    }
    if query(&target, "watch") != Some("true") {
        let body = json!({"apiVersion": list_kind.0, "kind": list_kind.1,
                          "metadata": {"resourceVersion": rv.to_string()}, "items": items});
        return send_whole(&mut s, "200 OK", &body).await;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    if mode == Mode::Stall {
        // Headers, then silence: held until the client gives up.
        let _ = s.read(&mut buf).await;
        return;
    }
    let from: u64 = query(&target, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    if from != rv {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": format!("too old resource version: {from} ({rv})"),
                            "reason": "Expired", "code": 410});
        let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
        line.push(b'\n');
        let _ = send_chunk(&mut s, &line).await;
        let _ = s.write_all(b"0\r\n\r\n").await;
        return;
    }
    // Up to date: open until the request's timeoutSeconds, as the API
    // server does, or until the client hangs up.
    let secs: u64 = query(&target, "timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(290);
    let _ = tokio::time::timeout(Duration::from_secs(secs), s.read(&mut buf)).await;
    let _ = s.write_all(b"0\r\n\r\n").await;
}

/// The API server: an accept loop on `addr`; `close` stops it and every
/// connection it had (then connecting is refused by the kernel).
struct Server {
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Server {
    async fn bind(addr: SocketAddr, st: Shared) -> (Server, SocketAddr) {
        let l = TcpListener::bind(addr).await.expect("bind 127.0.0.1");
        let bound = l.local_addr().expect("addr");
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let c2 = Arc::clone(&conns);
        let accept = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let h = tokio::spawn(handle(s, Arc::clone(&st)));
                c2.lock().push(h);
            }
        });
        (Server { accept, conns }, bound)
    }

    fn close(self) {
        self.accept.abort();
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }
}

fn backends(t: &ServiceTable, vip: Ipv4Addr) -> Option<Vec<Ipv4Addr>> {
    let f = t.frontend(vip, Protocol::Tcp, 8080)?;
    Some(t.v4().entry(f.entry)?.backends.iter().map(|b| b.addr).collect())
}

async fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_over_real_sockets_last_tables_serve_then_resync() {
    let st: Shared = Arc::new(Mutex::new(State {
        mode: Mode::Normal,
        rv: 10,
        services: vec![service("nginx", NGINX)],
        slices: vec![slice("nginx", &["198.18.3.10", "198.18.3.11"])],
        requests: Vec::new(),
    }));
    let (server, addr) = Server::bind("127.0.0.1:0".parse().unwrap(), Arc::clone(&st)).await;
    let mut cfg = ResolveConfig::new("198.18.128.0/20".parse().unwrap(), Vec::<std::net::IpAddr>::new());
    cfg.check_cluster_ip_range = false;
    let ctl = Arc::new(Controller::new(cfg));
    let kcfg = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(kcfg).expect("client");
    // A 1 s watch timeout: a healthy watch is renewed every second, a
    // silent one is given up after 6 s (kube-runtime's 5 s margin).
    let h = kube_source::start_with_client_and_timeout(Arc::clone(&ctl), client, 1);
    // kube-runtime backs off up to 30 s (with jitter) between retries.
    let long = Duration::from_secs(45);
    wait_until("first sync", long, || ctl.is_ready()).await;
    let first = ctl.tables().current();
    assert_eq!(backends(&first, NGINX), Some(vec!["198.18.3.10".parse().unwrap(), "198.18.3.11".parse().unwrap()]));
    let g = first.generation();
    let unchanged = |what: &str| {
        let t = ctl.tables().current();
        assert_eq!(t.generation(), g, "{what}: published during the outage");
        assert!(backends(&t, NGINX).is_some(), "{what}: nginx gone");
        assert!(ctl.is_ready(), "{what}: not ready");
    };

    // 1. Connection refused: the listener and its connections closed for 3 s.
    server.close();
    let e0 = h.status().errors();
    tokio::time::sleep(Duration::from_secs(3)).await;
    unchanged("connection refused");
    let refused = h.status().errors() - e0;
    assert!(refused >= 1, "no error recorded while refused");
    let last = h.status().last_error().unwrap_or_default();
    eprintln!("refused for 3 s: {refused} errors, last: {last}");
    // Back on the same port, but every answer a 500, for 3 s.
    st.lock().mode = Mode::Error500;
    let (server, _) = Server::bind(addr, Arc::clone(&st)).await;
    let e1 = h.status().errors();
    tokio::time::sleep(Duration::from_secs(3)).await;
    unchanged("HTTP 500s");
    let errors500 = h.status().errors() - e1;
    eprintln!("500s for 3 s: {errors500} errors");
    // The API answers again; web appeared and nginx's endpoints changed
    // meanwhile (a new resourceVersion). The watch retried from the old
    // resourceVersion gets 410, the source relists.
    {
        let mut g = st.lock();
        g.mode = Mode::Normal;
        g.rv = 20;
        g.services.push(service("web", WEB));
        g.slices = vec![slice("nginx", &["198.18.3.12"]), slice("web", &["198.18.4.10"])];
    }
    let back_at = Instant::now();
    wait_until("the state after the errors", long, || {
        let t = ctl.tables().current();
        backends(&t, WEB).is_some() && backends(&t, NGINX) == Some(vec!["198.18.3.12".parse().unwrap()])
    })
    .await;
    eprintln!("resynced {:?} after the API answered again", back_at.elapsed());
    // 2. Stalled watches: every watch from now on gets its headers and then
    // nothing (the open ones end within their 1 s timeout and come back).
    st.lock().mode = Mode::Stall;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let g2 = ctl.tables().current().generation();
    // A change while the watches stall: nothing tells the source, until the
    // API answers watches again and a stalled one has been given up (6 s);
    // the watch from the old resourceVersion then gets 410 and it relists.
    {
        let mut g = st.lock();
        g.rv = 30;
        g.services.retain(|s| s["metadata"]["name"] != "web");
        g.slices.retain(|s| s["metadata"]["name"] != "web-a");
    }
    let changed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ctl.tables().current().generation(), g2, "a stalled watch delivered something");
    st.lock().mode = Mode::Normal;
    wait_until("web removed after the stall", long, || backends(&ctl.tables().current(), WEB).is_none()).await;
    let seen = changed_at.elapsed();
    eprintln!("a change made during the stall published {seen:?} later");
    assert!(seen >= Duration::from_secs(3), "{seen:?}");
    assert!(backends(&ctl.tables().current(), NGINX).is_some());
    // Both kinds relisted (a 410 counts as an error until its relist is in).
    wait_until("no kind retrying", long, || ctl.status().source.retrying.is_empty()).await;
    let reqs = st.lock().requests.len();
    eprintln!("{reqs} requests, {} errors in all", h.status().errors());
    server.close();
}
