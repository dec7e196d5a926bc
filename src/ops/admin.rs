//! The operator's HTTP endpoints: /healthz, /readyz, /debug/zone, /metrics.
//!
//! Plain hyper 1 (HTTP/1.1, keep-alive), one task per connection, no
//! framework: four read-only endpoints do not need routing machinery.
//!
//! Shutdown: when the token is cancelled the listener is dropped (no new
//! connections), every open connection is told to finish the request it is
//! serving and then close, and `serve` returns once all of them are gone. A
//! client that stalls while sending headers is cut off after
//! [`HEADER_READ_TIMEOUT`], so it can neither pin a task forever nor hold up
//! shutdown for longer than that.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use prometheus::Registry;
use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::MetricFamily;

use crate::ops::metrics::{self, Gauges, Metrics};
use crate::ops::status::SyncStatus;
use crate::zone::ZoneStore;

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

/// How long a client may take to send a request's headers (also the idle
/// limit of a keep-alive connection between requests). Long enough for any
/// scraper, short enough that a stalled client cannot hold a task.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
const JSON_CONTENT_TYPE: &str = "application/json";
/// RFC 9110 §15.5.6: "The origin server MUST generate an Allow header field
/// in a 405 response containing a list of the target resource's currently
/// supported methods."
const ALLOWED_METHODS: &str = "GET, HEAD";

// ---------------------------------------------------------------------------
// State and server
// ---------------------------------------------------------------------------

/// What the endpoints read: the published zone, the sync status, and the
/// metrics registry (rpcdns's own metrics and the process's).
#[derive(Clone)]
pub struct AdminState {
    zone: Arc<ZoneStore>,
    status: Arc<SyncStatus>,
    registry: Registry,
}

impl AdminState {
    /// The state of the endpoints, with a registry that collects, at each
    /// scrape, `metrics` (the query path's shards summed) with gauges read
    /// from `zone` and `status`, and the `process_*` metrics.
    pub fn new(zone: Arc<ZoneStore>, status: Arc<SyncStatus>, metrics: Arc<Metrics>) -> Self {
        let registry = Registry::new();
        let ours = Scrape {
            zone: zone.clone(),
            status: status.clone(),
            metrics,
            descs: metrics::family_specs().map(|spec| spec.desc()).collect(),
        };
        let process = ProcessCollector::for_self();
        for (what, collector) in [
            ("rpcdns", Box::new(ours) as Box<dyn Collector>),
            ("process", Box::new(process)),
        ] {
            // Distinct constant names: registration cannot clash. Should it
            // fail, /metrics goes without those metrics rather than rpcdns
            // without DNS.
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "cannot register the {what} metrics");
            }
        }
        Self {
            zone,
            status,
            registry,
        }
    }
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

/// rpcdns's own metrics for the registry: each scrape sums the counters and
/// reads the gauges from the zone and the sync status at that moment.
struct Scrape {
    zone: Arc<ZoneStore>,
    status: Arc<SyncStatus>,
    metrics: Arc<Metrics>,
    descs: Vec<Desc>,
}

impl Collector for Scrape {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = self.zone.load();
        self.metrics.families(&Gauges {
            zone_services: snapshot.service_count(),
            zone_instances: snapshot.instance_count(),
            zone_multi_port_services: snapshot.several_ports_count(),
            zone_skydns_records: snapshot.sky_record_count(),
            zone_stale: self.status.is_stale(),
            etcd_connected: self.status.is_connected(),
            etcd_revision: self.status.revision(),
        })
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` is cancelled,
/// then lets in-flight requests finish and returns.
///
/// Errors on individual connections are logged at debug and never end the
/// server; a failing `accept` is logged and retried.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, HEADER_READ_TIMEOUT).await
}

async fn serve_with(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    let mut accept_failing = false;

    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    accept_failing = false;
                    let conn = builder.serve_connection(
                        TokioIo::new(stream),
                        service_fn({
                            let state = state.clone();
                            move |request: Request<Incoming>| {
                                let response = respond(&state, request.method(), request.uri().path());
                                async move { Ok::<_, Infallible>(response) }
                            }
                        }),
                    );
                    let shutdown = shutdown.clone();
                    connections.spawn(async move {
                        let mut conn = std::pin::pin!(conn);
                        let result = tokio::select! {
                            result = conn.as_mut() => result,
                            () = shutdown.cancelled() => {
                                // Finish the request being served (if any),
                                // then close instead of keeping alive.
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        };
                        if let Err(error) = result {
                            tracing::debug!(%peer, %error, "admin http connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Once per run of failures (out of descriptors), not
                    // every 50 ms.
                    if accept_failing {
                        tracing::debug!(%error, "admin http accept failed; retrying");
                    } else {
                        tracing::warn!(%error, "admin http accept failed; retrying");
                        accept_failing = true;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                }
            },
        }
    }

    // Stop accepting before draining, so new clients are refused at once
    // rather than queued behind a server that will never answer them.
    drop(listener);
    while let Some(joined) = connections.join_next().await {
        if let Err(error) = joined {
            tracing::warn!(%error, "admin http connection task failed");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Routing and responses
// ---------------------------------------------------------------------------

/// The response for `method` on `path`. Only the path decides the resource:
/// a query string is ignored.
fn respond(state: &AdminState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let known = matches!(path, "/healthz" | "/readyz" | "/debug/zone" | "/metrics");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    // hyper leaves the body out of the reply to a HEAD request itself, while
    // keeping the headers (Content-Length included) of the GET response.
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
        return response;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(state),
        "/debug/zone" => debug_zone(state),
        _ => metrics(state),
    }
}

/// 200 once the zone is there (the first full read, or the state file's
/// copy, which `stale` marks), 503 before and from shutdown on; JSON that
/// says which.
fn readyz(state: &AdminState) -> Response<Full<Bytes>> {
    let status = &state.status;
    let (code, reason) = if status.is_ready() {
        (StatusCode::OK, None)
    } else if status.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, Some("shutting down"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("waiting for the first full etcd read"),
        )
    };
    let mut body = serde_json::json!({
        "ready": code == StatusCode::OK,
        "stale": status.is_stale(),
        "etcd_connected": status.is_connected(),
        "revision": status.revision(),
    });
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    let mut bytes = body.to_string().into_bytes();
    bytes.push(b'\n');
    with_type(code, JSON_CONTENT_TYPE, Bytes::from(bytes))
}

fn debug_zone(state: &AdminState) -> Response<Full<Bytes>> {
    // One snapshot for both, so the serial and the services agree.
    let snapshot = state.zone.load();
    let body = serde_json::json!({
        "serial": snapshot.serial(),
        "revision": state.status.revision(),
        "etcd_connected": state.status.is_connected(),
        "ready": state.status.is_ready(),
        "zone": snapshot.debug_json(),
        "skipped": state.status.skipped(),
    });
    let mut bytes = match serde_json::to_vec_pretty(&body) {
        Ok(bytes) => bytes,
        // A `Value` with string keys always serializes; this branch exists
        // so that a future change cannot turn into a panic.
        Err(error) => {
            tracing::warn!(%error, "failed to serialize /debug/zone");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    bytes.push(b'\n');
    with_type(StatusCode::OK, JSON_CONTENT_TYPE, Bytes::from(bytes))
}

fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    let body = metrics::encode(&state.registry.gather());
    with_type(StatusCode::OK, metrics::CONTENT_TYPE, Bytes::from(body))
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(
        status,
        TEXT_CONTENT_TYPE,
        Bytes::from_static(body.as_bytes()),
    )
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Every answer reflects live state; a cache in between must not serve
    // a stale readiness or zone.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use hickory_proto::rr::Name;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::zone::ZoneParams;

    /// Bound on every wait in these tests; they normally take milliseconds.
    const DEADLINE: Duration = Duration::from_secs(5);

    struct Server {
        addr: SocketAddr,
        state: AdminState,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(header_read_timeout: Duration) -> Server {
        let params = ZoneParams {
            origin: Name::from_ascii("svc.local.").expect("constant name"),
            ttl: 5,
            negative_ttl: 5,
            grpc: Default::default(),
            reverse: Vec::new(),
        };
        let state = AdminState::new(
            Arc::new(ZoneStore::new(params)),
            Arc::new(SyncStatus::new()),
            Arc::new(Metrics::with_shards(1)),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_with(
            listener,
            state.clone(),
            shutdown.clone(),
            header_read_timeout,
        ));
        Server {
            addr,
            state,
            shutdown,
            task,
        }
    }

    /// A parsed HTTP/1.1 response.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn parse(raw: &[u8]) -> Reply {
        let raw = String::from_utf8(raw.to_vec()).expect("utf-8 response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("end of headers");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Reply {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    /// Sends one request with `Connection: close` and reads to EOF.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let req =
                format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
            stream.write_all(req.as_bytes()).await.expect("write");
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.expect("read");
            raw
        };
        let raw = tokio::time::timeout(DEADLINE, exchange)
            .await
            .expect("response within the deadline");
        parse(&raw)
    }

    #[tokio::test]
    async fn healthz_is_always_ok() {
        let server = start(HEADER_READ_TIMEOUT).await;
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "ok\n");
        assert_eq!(reply.header("content-type"), Some(TEXT_CONTENT_TYPE));
    }

    #[tokio::test]
    async fn readyz_flips_after_mark_ready() {
        let server = start(HEADER_READ_TIMEOUT).await;
        let before = request(server.addr, "GET", "/readyz").await;
        assert_eq!(before.status, 503);
        assert_eq!(before.header("content-type"), Some(JSON_CONTENT_TYPE));
        let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();
        let body = json(&before.body);
        assert_eq!(body["ready"], false);
        assert_eq!(body["reason"], "waiting for the first full etcd read");
        server.state.status.mark_ready();
        server.state.status.set_stale(true);
        let after = request(server.addr, "GET", "/readyz?verbose=1").await;
        assert_eq!(after.status, 200);
        let body = json(&after.body);
        assert_eq!(
            (&body["ready"], &body["stale"]),
            (&true.into(), &true.into())
        );
        assert!(body.get("reason").is_none());

        server.state.status.begin_shutdown();
        let during = request(server.addr, "GET", "/readyz").await;
        assert_eq!(during.status, 503);
        assert_eq!(json(&during.body)["reason"], "shutting down");
        assert_eq!(request(server.addr, "GET", "/healthz").await.status, 200);
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let server = start(HEADER_READ_TIMEOUT).await;
        let reply = request(server.addr, "GET", "/nope").await;
        assert_eq!(reply.status, 404);
        // A prefix of a real endpoint is not that endpoint.
        assert_eq!(request(server.addr, "GET", "/healthz/x").await.status, 404);
    }

    #[tokio::test]
    async fn non_get_is_405_with_allow() {
        let server = start(HEADER_READ_TIMEOUT).await;
        for method in ["POST", "PUT", "DELETE"] {
            let reply = request(server.addr, method, "/healthz").await;
            assert_eq!(reply.status, 405, "{method}");
            assert_eq!(reply.header("allow"), Some(ALLOWED_METHODS), "{method}");
        }
    }

    #[tokio::test]
    async fn head_has_headers_but_no_body() {
        let server = start(HEADER_READ_TIMEOUT).await;
        let reply = request(server.addr, "HEAD", "/healthz").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-length"), Some("3"));
        assert_eq!(reply.body, "");
    }

    #[tokio::test]
    async fn debug_zone_and_metrics_report_status() {
        let server = start(HEADER_READ_TIMEOUT).await;
        server.state.status.set_connected(true);
        server.state.status.set_revision(42);
        server.state.status.record_skip(b"bad.rpc/1", "no_port", 41);

        let reply = request(server.addr, "GET", "/debug/zone").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(JSON_CONTENT_TYPE));
        let json: serde_json::Value = serde_json::from_str(&reply.body).expect("json body");
        assert_eq!(json["revision"], 42);
        assert!(json["serial"].is_u64(), "{json}");
        assert_eq!(json["etcd_connected"], true);
        assert_eq!(json["ready"], false);
        assert_eq!(json["zone"]["services"], serde_json::json!([]));
        assert_eq!(json["skipped"][0]["key"], "bad.rpc/1");
        assert_eq!(json["skipped"][0]["reason"], "no_port");
        assert_eq!(json["skipped"][0]["revision"], 41);

        let reply = request(server.addr, "GET", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(metrics::CONTENT_TYPE));
        assert!(reply.body.contains("# TYPE rpcdns_etcd_connected gauge\n"));
        assert!(reply.body.contains("\nrpcdns_etcd_connected 1\n"));
        assert!(reply.body.contains("\nrpcdns_etcd_revision 42\n"));
        assert!(reply.body.contains("\nrpcdns_zone_services 0\n"));
        assert!(reply.body.contains("\nrpcdns_zone_instances 0\n"));
    }

    #[tokio::test]
    async fn keep_alive_serves_several_requests() {
        let server = start(HEADER_READ_TIMEOUT).await;
        let exchange = async {
            let mut stream = TcpStream::connect(server.addr).await.expect("connect");
            let req = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
                       GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
            stream.write_all(req.as_bytes()).await.expect("write");
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.expect("read");
            String::from_utf8(raw).expect("utf-8")
        };
        let raw = tokio::time::timeout(DEADLINE, exchange)
            .await
            .expect("responses within the deadline");
        assert_eq!(raw.matches("HTTP/1.1 ").count(), 2, "{raw}");
        assert!(raw.contains("ok\n"));
        assert!(raw.contains("HTTP/1.1 503"));
    }

    #[tokio::test]
    async fn stalled_client_is_cut_off() {
        let server = start(Duration::from_millis(200)).await;
        let exchange = async {
            let mut stream = TcpStream::connect(server.addr).await.expect("connect");
            // Headers never finished.
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
                .await
                .expect("write");
            let mut raw = Vec::new();
            // EOF (or a reset) is the server giving up on us.
            let _ = stream.read_to_end(&mut raw).await;
            raw
        };
        let raw = tokio::time::timeout(DEADLINE, exchange)
            .await
            .expect("server closed the stalled connection");
        assert!(!String::from_utf8_lossy(&raw).contains("ok\n"));
    }

    #[tokio::test]
    async fn shutdown_drains_and_releases_the_port() {
        let server = start(HEADER_READ_TIMEOUT).await;
        // An idle keep-alive connection must not hold up shutdown.
        let mut idle = TcpStream::connect(server.addr).await.expect("connect");
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(DEADLINE, idle.read(&mut buf))
            .await
            .expect("first response")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

        server.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, server.task)
            .await
            .expect("serve returned within the deadline")
            .expect("task did not panic");
        assert!(result.is_ok());
        // The listener is gone: the port can be bound again.
        TcpListener::bind(server.addr)
            .await
            .expect("rebind after shutdown");
    }
}
