//! The backend connection pool (`src/pool.rs`), seen from a counting upstream that records which
//! connection and HTTP version carried every request: sequential calls reuse one keep-alive
//! connection, streamed or not; a connection the backend closed while idle is replaced without an
//! error; a response the caller abandons closes its connection instead of returning it; an HTTPS
//! backend that offers h2 gets concurrent calls multiplexed on one connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An upstream that numbers its connections and records (connection, version) per request.
struct Counting {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Connections that ended (the gateway closed them, or `lifetime` passed).
    closed: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(usize, http::Version)>>>,
}

impl Counting {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
    fn seen(&self) -> Vec<(usize, http::Version)> {
        self.seen.lock().unwrap().clone()
    }
}

const CHUNKS: &[&str] = &[
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-upstream\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-upstream\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
];

/// Starts the counting upstream. `lifetime`: each connection is dropped this long after it opened
/// (a backend closing idle keep-alive connections). `chunk_gap`: the pause between stream chunks.
async fn counting_upstream(
    tls: Option<tokio_rustls::TlsAcceptor>,
    lifetime: Option<Duration>,
    chunk_gap: Duration,
) -> Counting {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (conns, closed2, seen2) = (connections.clone(), closed.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let id = conns.fetch_add(1, Ordering::SeqCst) + 1;
            let (seen, tls, closed) = (seen2.clone(), tls.clone(), closed2.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push((id, req.version()));
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let stream = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["stream"] == true;
                        let resp: Response<UpBody> = if stream {
                            let (tx, resp) = sse_channel();
                            tokio::spawn(async move {
                                for c in CHUNKS {
                                    if tx.send(Bytes::from_static(c.as_bytes())).await.is_err() {
                                        return;
                                    }
                                    tokio::time::sleep(chunk_gap).await;
                                }
                            });
                            resp
                        } else {
                            json_response(200, openai_reply("gpt-upstream"))
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let serve = async {
                    let _ = match tls {
                        None => builder.serve_connection(TokioIo::new(stream), svc).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(s) => builder.serve_connection(TokioIo::new(s), svc).await,
                            Err(_) => return,
                        },
                    };
                };
                match lifetime {
                    Some(d) => drop(tokio::time::timeout(d, serve).await),
                    None => serve.await,
                }
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Counting { addr, connections, closed, seen }
}

const ONE_WORKER: &str = r#"
[server]
workers = 1

[backends.oa]
kind = "openai"
base_url = "{upstream}"
api_key_env = "TEST_BACKEND_KEY"

[[routes]]
model = "chat"
control = { backend = "oa", model = "gpt-upstream" }
"#;

/// `switchyard_backend_connections_total` of backend `oa` for `protocol`.
async fn opened(gw: &switchyard::server::Running, protocol: &str) -> f64 {
    let series = format!(r#"switchyard_backend_connections_total{{backend="oa",protocol="{protocol}"}}"#);
    metric(&metrics_text(gw.addr).await, &series)
}

fn body(stream: bool) -> String {
    serde_json::json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_calls_streamed_or_not_reuse_one_keep_alive_connection() {
    let up = counting_upstream(None, None, Duration::ZERO).await;
    let gw = gateway(ONE_WORKER, &format!("http://{}", up.addr)).await;
    for i in 0..20 {
        let (status, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body(i % 2 == 1)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
        if i % 2 == 1 {
            assert!(String::from_utf8_lossy(&b).contains("[DONE]"), "a whole stream");
        }
    }
    assert_eq!(up.seen().len(), 20);
    assert_eq!(up.connections(), 1, "every call after the first reused the connection: {:?}", up.seen());
    assert!(up.seen().iter().all(|(_, v)| *v == http::Version::HTTP_11));
    assert_eq!(opened(&gw, "http1").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_backend_closed_while_idle_is_replaced_without_an_error() {
    let up = counting_upstream(None, Some(Duration::from_millis(150)), Duration::ZERO).await;
    let gw = gateway(ONE_WORKER, &format!("http://{}", up.addr)).await;
    for _ in 0..3 {
        let (status, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body(false)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
        tokio::time::sleep(Duration::from_millis(400)).await; // the backend closes it meanwhile
    }
    assert_eq!(up.connections(), 3, "{:?}", up.seen());
    assert_eq!(opened(&gw, "http1").await, 3.0);
    let metrics = metrics_text(gw.addr).await;
    assert!(!metrics.contains("switchyard_upstream_faults_total{"), "no fault was counted:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_pool_idle_timeout_without_another_call() {
    let up = counting_upstream(None, None, Duration::ZERO).await;
    let config = ONE_WORKER.replace("api_key_env", "pool_idle_timeout = \"300ms\"\napi_key_env");
    let gw = gateway(&config, &format!("http://{}", up.addr)).await;
    let (status, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body(false)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((up.connections(), up.closed()), (1, 0), "kept for reuse at first");
    // Nothing calls the backend again: the once-a-second prune closes the connection.
    for _ in 0..40 {
        if up.closed() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.closed(), 1, "the idle connection was closed by the gateway");
    let (status, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body(false)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(up.connections(), 2, "the next call dialled a new one");

    // With the default (90 s), the same idle connection stays open.
    let up = counting_upstream(None, None, Duration::ZERO).await;
    let gw = gateway(ONE_WORKER, &format!("http://{}", up.addr)).await;
    let (status, _, _) = call(gw.addr, "POST", "/v1/chat/completions", &[], body(false)).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!((up.connections(), up.closed()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_caller_abandons_closes_its_connection_and_the_next_call_gets_a_new_one() {
    let up = counting_upstream(None, None, Duration::from_millis(300)).await;
    let gw = gateway(ONE_WORKER, &format!("http://{}", up.addr)).await;
    let resp = send(&client(), "POST", format!("http://{}/v1/chat/completions", gw.addr), &[], body(true)).await;
    assert_eq!(resp.status(), 200);
    let mut incoming = resp.into_body();
    assert!(next_chunk(&mut incoming).await.is_some(), "the first chunk arrived");
    drop(incoming); // hang up mid-stream: the backend connection has a response half read
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body(false)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(up.connections(), 2, "the half-read connection was not reused: {:?}", up.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_backend_offering_h2_gets_concurrent_calls_on_one_multiplexed_connection() {
    // The upstream offers h2 and http/1.1 by ALPN, with a certificate from a CA made here.
    let authority = ca("Pool CA");
    let acceptor = tls_acceptor(&authority);
    let up = counting_upstream(Some(acceptor), None, Duration::from_millis(20)).await;
    let dir = temp_dir("pool-h2");
    std::fs::write(dir.join("ca.pem"), &authority.pem).unwrap();
    let config = ONE_WORKER.replace("api_key_env", "ca_file = \"ca.pem\"\napi_key_env");
    let gw = gateway_in(&dir, &config, &format!("https://{}", up.addr)).await;

    let calls: Vec<_> =
        (0..8).map(|i| tokio::spawn(call(gw.addr, "POST", "/v1/chat/completions", &[], body(i % 2 == 0)))).collect();
    for c in calls {
        let (status, _, b) = c.await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 8);
    assert!(seen.iter().all(|(_, v)| *v == http::Version::HTTP_2), "{seen:?}");
    assert_eq!(up.connections(), 1, "one multiplexed connection: {seen:?}");
    assert_eq!(opened(&gw, "http2").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_open_connections_that_later_calls_reuse() {
    let up = counting_upstream(None, None, Duration::from_millis(50)).await;
    let gw = gateway(ONE_WORKER, &format!("http://{}", up.addr)).await;
    let calls: Vec<_> =
        (0..6).map(|_| tokio::spawn(call(gw.addr, "POST", "/v1/chat/completions", &[], body(true)))).collect();
    for c in calls {
        assert_eq!(c.await.unwrap().0, 200);
    }
    let opened = up.connections();
    assert!((1..=6).contains(&opened), "{opened}");
    for _ in 0..10 {
        let (status, _, _) = call(gw.addr, "POST", "/v1/chat/completions", &[], body(false)).await;
        assert_eq!(status, 200);
    }
    assert_eq!(up.connections(), opened, "sequential calls reused the pooled connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_of_one_http2_caller_connection_are_spread_over_the_workers() {
    let up = counting_upstream(None, None, Duration::ZERO).await;
    let gw = gateway(&ONE_WORKER.replace("workers = 1", "workers = 2"), &format!("http://{}", up.addr)).await;
    let h2 = h2_client(); // one multiplexed connection to the gateway
    for _ in 0..10 {
        let resp = send(&h2, "POST", format!("http://{}/v1/chat/completions", gw.addr), &[], body(false)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        resp.into_body().collect().await.unwrap();
    }
    // Each worker keeps its own backend connection: both served this caller's streams.
    assert_eq!(up.connections(), 2, "{:?}", up.seen());
    assert_eq!(opened(&gw, "http1").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_that_stalls_in_its_tls_handshake_times_out_as_a_connect_error_and_queues_no_one() {
    // A backend that accepts TCP and never answers the TLS handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let config =
        ONE_WORKER.replace("api_key_env", "connect_timeout = \"2s\"\nfirst_byte_timeout = \"10s\"\napi_key_env");
    let gw = gateway(&config, &format!("https://{addr}")).await;
    let calls: Vec<_> =
        (0..4).map(|_| tokio::spawn(call(gw.addr, "POST", "/v1/chat/completions", &[], body(false)))).collect();
    // Well before the first dial's deadline, the others dialled on their own instead of waiting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 4, "every call dialled");
    // The connect timeout covers the TLS handshake: a connect error, long before the first-byte deadline.
    for c in calls {
        let (status, _, b) = c.await.unwrap();
        assert_eq!(status, 502, "{}", String::from_utf8_lossy(&b));
        assert_eq!(json(&b)["error"]["code"], "upstream_connect");
    }
}

/// `switchyard_client_connections` of each of the two workers.
async fn per_worker(gw: &switchyard::server::Running) -> (f64, f64) {
    let text = metrics_text(gw.addr).await;
    let of = |w: &str| metric(&text, &format!(r#"switchyard_client_connections{{worker="{w}"}}"#));
    (of("0"), of("1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_caller_connections_is_spread_evenly_over_the_workers() {
    let up = counting_upstream(None, None, Duration::ZERO).await;
    let gw = gateway(&ONE_WORKER.replace("workers = 1", "workers = 2"), &format!("http://{}", up.addr)).await;
    // Nine connections at once (every other one HTTP/2 by prior knowledge), each kept open: whichever
    // loop wakes first would accept them all; the loops hand them over until the counts are even.
    let open = |i: usize| async move {
        let io = TokioIo::new(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
        let req = Request::post(format!("http://{}/v1/chat/completions", gw.addr))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(body(false))))
            .unwrap();
        // The sender is kept: dropping it would close the connection.
        let (resp, keep): (_, Box<dyn std::any::Any + Send>) = if i % 2 == 0 {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            (send.send_request(req).await.unwrap(), Box::new(send))
        } else {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(conn);
            (send.send_request(req).await.unwrap(), Box::new(send))
        };
        let status = resp.status().as_u16();
        resp.into_body().collect().await.unwrap();
        (status, keep)
    };
    let opened: Vec<_> = futures_util::future::join_all((0..9).map(open)).await;
    assert!(opened.iter().all(|(status, _)| *status == 200), "every connection was served");
    // The scrape's own connection makes ten.
    let (w0, w1) = per_worker(&gw).await;
    assert_eq!(w0 + w1, 10.0);
    assert!((w0 - w1).abs() <= 1.0, "connections per worker: {w0} and {w1}");
    // Closed connections are uncounted: only the next scrape's remains.
    drop(opened);
    let mut counts = (w0, w1);
    for _ in 0..50 {
        counts = per_worker(&gw).await;
        if counts.0 + counts.1 == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counts.0 + counts.1, 1.0, "{counts:?}");
}
