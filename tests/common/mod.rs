//! Test harness: a scriptable mock upstream (hyper on 127.0.0.1 port 0, recording every request), a
//! raw-TCP upstream for the faults hyper cannot script (RST, bytes that are not HTTP, a close mid-body),
//! a gateway started in-process from config text, and a small HTTP client for both.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream got JSON")
    }
}

pub type Handler = Arc<dyn Fn(Seen) -> BoxFuture<'static, Response<UpBody>> + Send + Sync>;

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockUpstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A throw-away certificate authority.
pub struct TestCa {
    pub pem: String,
    pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

pub fn ca(name: &str) -> TestCa {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    TestCa { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
}

/// A server certificate for 127.0.0.1 signed by `ca`: (certificate PEM, key PEM).
pub fn leaf(ca: &TestCa) -> (String, String) {
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A TLS acceptor with a leaf from `ca`, offering HTTP/2 and HTTP/1.1 by ALPN (as the gateway's own).
pub fn tls_acceptor(ca: &TestCa) -> tokio_rustls::TlsAcceptor {
    let (cert, key) = leaf(ca);
    let pair = switchyard::tls::certified_key(cert.as_bytes(), key.as_bytes()).unwrap();
    tokio_rustls::TlsAcceptor::from(switchyard::tls::server_config(switchyard::tls::Resolver::new(pair)).unwrap())
}

/// Like `tls_acceptor`, and the client must present a certificate issued by `clients` (mutual TLS).
pub fn tls_acceptor_requiring_client_cert(ca: &TestCa, clients: &TestCa) -> tokio_rustls::TlsAcceptor {
    let (cert, key) = leaf(ca);
    let pair = switchyard::tls::certified_key(cert.as_bytes(), key.as_bytes()).unwrap();
    let roots = std::sync::Arc::new(switchyard::tls::root_store(clients.pem.as_bytes()).unwrap());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, switchyard::tls::provider())
        .build()
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(switchyard::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(switchyard::tls::Resolver::new(pair));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

/// Starts a mock upstream answering every request with `handler`.
pub async fn mock_upstream(handler: Handler) -> MockUpstream {
    mock_upstream_with(handler, None).await
}

/// Like `mock_upstream`; with `tls`, every connection's TLS is terminated first (an HTTPS upstream).
pub async fn mock_upstream_with(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> MockUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (handler, seen, tls) = (handler.clone(), seen2.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let s = Seen {
                            method: parts.method,
                            path: parts.uri.path().to_owned(),
                            query: parts.uri.query().unwrap_or("").to_owned(),
                            headers: parts.headers,
                            body,
                        };
                        seen.lock().unwrap().push(s.clone());
                        Ok::<_, Infallible>(handler(s).await)
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => builder.serve_connection(TokioIo::new(stream), svc).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls_stream) => builder.serve_connection(TokioIo::new(tls_stream), svc).await,
                        Err(_) => return,
                    },
                };
            });
        }
    });
    MockUpstream { addr, seen }
}

/// One step of a raw-TCP upstream's answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// Writes these bytes (and flushes).
    Write(Bytes),
    /// Waits, so the gateway has read what was written before the connection goes.
    Pause(Duration),
    /// Closes the connection cleanly (FIN).
    Close,
    /// Resets the connection (RST: `SO_LINGER` 0, then close).
    Reset,
}

/// The head of an HTTP/1.1 response, for raw-TCP scripts.
pub fn http_head(status: u16, headers: &[(&str, &str)]) -> Bytes {
    let mut head = format!("HTTP/1.1 {status} Whatever\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    Bytes::from(head)
}

/// One HTTP/1.1 chunk (`transfer-encoding: chunked`) carrying `data`.
pub fn http_chunk(data: &str) -> Bytes {
    Bytes::from(format!("{:x}\r\n{data}\r\n", data.len()))
}

/// Starts an upstream speaking raw TCP: it reads each request (head and `content-length` body,
/// recorded like `mock_upstream`'s), then plays the steps `script` gives for it; the connection is
/// closed after the last step in any case.
pub async fn raw_upstream(script: impl Fn(&Seen) -> Vec<Step> + Send + Sync + 'static) -> MockUpstream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, script) = (seen2.clone(), script.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut lines = head.split("\r\n");
                let mut request_line = lines.next().unwrap_or("").split(' ');
                let method: http::Method = request_line.next().unwrap_or("GET").parse().unwrap();
                let target = request_line.next().unwrap_or("/").to_owned();
                let mut headers = HeaderMap::new();
                for line in lines.filter(|l| !l.is_empty()) {
                    if let Some((k, v)) = line.split_once(':') {
                        if let (Ok(k), Ok(v)) = (k.trim().parse::<http::HeaderName>(), v.trim().parse()) {
                            headers.append(k, v);
                        }
                    }
                }
                let length: usize =
                    headers.get("content-length").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
                while buf.len() < head_end + length {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let s = Seen {
                    method,
                    path: path.to_owned(),
                    query: query.to_owned(),
                    headers,
                    body: Bytes::copy_from_slice(&buf[head_end..head_end + length]),
                };
                seen.lock().unwrap().push(s.clone());
                for step in script(&s) {
                    match step {
                        Step::Write(b) => {
                            if stream.write_all(&b).await.is_err() || stream.flush().await.is_err() {
                                return;
                            }
                        }
                        Step::Pause(d) => tokio::time::sleep(d).await,
                        Step::Close => return,
                        Step::Reset => {
                            let _ = stream.set_zero_linger();
                            return;
                        }
                    }
                }
            });
        }
    });
    MockUpstream { addr, seen }
}

/// A handler from a plain closure returning a response.
pub fn handler(f: impl Fn(Seen) -> Response<UpBody> + Send + Sync + 'static) -> Handler {
    let f = Arc::new(f);
    Arc::new(move |s| {
        let f = f.clone();
        Box::pin(async move { f(s) })
    })
}

pub fn json_response(status: u16, body: serde_json::Value) -> Response<UpBody> {
    raw_response(status, "application/json", body.to_string())
}

pub fn raw_response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<UpBody> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("content-type", content_type.parse().unwrap());
    r
}

/// An event-stream response whose frames the test pushes through the returned sender; the sender's
/// `send` fails once the gateway has dropped the stream.
pub fn sse_channel() -> (mpsc::Sender<Bytes>, Response<UpBody>) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
    (tx, r)
}

/// A response of `content_type` whose body chunks the test pushes through the returned sender (no
/// `content-length`: chunked); the body ends when the sender is dropped.
pub fn body_channel(content_type: &str) -> (mpsc::Sender<Bytes>, Response<UpBody>) {
    let (tx, mut r) = sse_channel();
    r.headers_mut().insert("content-type", content_type.parse().unwrap());
    (tx, r)
}

/// An upstream that streams `frames[0]`, then waits until the returned sender fires (or is dropped)
/// before the rest: proves what the caller receives before the upstream finished.
pub async fn gated_sse_upstream(frames: &[&str]) -> (tokio::sync::oneshot::Sender<()>, MockUpstream) {
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some(gate_rx)));
    let frames: Vec<Bytes> = frames.iter().map(|f| Bytes::from(f.to_string())).collect();
    let up = mock_upstream(Arc::new(move |_s| {
        let gate = gate.lock().unwrap().take();
        let frames = frames.clone();
        Box::pin(async move {
            let (tx, resp) = sse_channel();
            tokio::spawn(async move {
                tx.send(frames[0].clone()).await.unwrap();
                if let Some(g) = gate {
                    let _ = g.await;
                }
                for f in &frames[1..] {
                    let _ = tx.send(f.clone()).await;
                }
            });
            resp
        })
    }))
    .await;
    (gate_tx, up)
}

/// The standard OpenAI-dialect reply of the fake upstream.
pub fn openai_reply(model: &str) -> serde_json::Value {
    serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
}

pub fn anthropic_reply(model: &str) -> serde_json::Value {
    serde_json::json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "hi there"}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 3, "output_tokens": 2}})
}

pub const BACKEND_KEY: &str = "sk-backend-secret";

/// Starts the gateway from config text; `{upstream}` is replaced by `upstream_url`. Relative paths
/// (and the admin state file) live in a fresh temp dir.
pub async fn gateway(config: &str, upstream_url: &str) -> switchyard::server::Running {
    gateway_in(&temp_dir("gw"), config, upstream_url).await
}

pub const ADMIN_TOKEN: &str = "admin-secret-token";

/// Like `gateway`, with relative paths resolved in `dir` (so a restart can find its state file).
pub async fn gateway_in(dir: &std::path::Path, config: &str, upstream_url: &str) -> switchyard::server::Running {
    let text = config.replace("{upstream}", upstream_url);
    let env = |name: &str| match name {
        "TEST_BACKEND_KEY" => Some(BACKEND_KEY.to_owned()),
        "TEST_POSTHOG_PROJECT_KEY" => Some("phc_test project".to_owned()),
        "TEST_POSTHOG_SECRET" => Some("phs_secret".to_owned()),
        "TEST_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
        "TEST_WEBHOOK_SECRET" => Some("hook-secret".to_owned()),
        "TEST_CLIENT_KEY_WEB" => Some("sk-web-client".to_owned()),
        "TEST_CLIENT_KEY_MOBILE" => Some("sk-mobile-client".to_owned()),
        "TEST_ID_SECRET" => Some("id-signing-secret".to_owned()),
        _ => None,
    };
    let cfg = switchyard::config::parse(&text, "test.toml", dir.to_path_buf(), &env)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    switchyard::start(cfg, "127.0.0.1:0").await.unwrap()
}

/// Both dialects' routes to one upstream of each kind.
pub const TWO_ROUTES: &str = r#"
[backends.oa]
kind = "openai"
base_url = "{upstream}"
api_key_env = "TEST_BACKEND_KEY"
first_byte_timeout = "1s"
idle_timeout = "1s"

[backends.an]
kind = "anthropic"
base_url = "{upstream}"
api_key_env = "TEST_BACKEND_KEY"
first_byte_timeout = "1s"
idle_timeout = "1s"

[[routes]]
model = "chat"
control = { backend = "oa", model = "gpt-upstream" }

[[routes]]
model = "claude"
control = { backend = "an", model = "claude-upstream" }

[server]
max_body_bytes = 4096
"#;

pub type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// Sends a request and returns the response with its body unread.
pub async fn send(
    client: &Client,
    method: &str,
    url: String,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let fut = client.request(req.body(Full::new(body.into())).unwrap());
    tokio::time::timeout(Duration::from_secs(10), fut).await.expect("gateway answered in time").unwrap()
}

/// Sends a request and reads the whole response.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Bytes) {
    let resp = send(&client(), method, format!("http://{addr}{path}"), headers, body).await;
    let (parts, body) = resp.into_parts();
    let body =
        tokio::time::timeout(Duration::from_secs(10), body.collect()).await.expect("body in time").unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

pub fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

/// Reads the next data frame of a streamed response, within a deadline.
pub async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("chunk in time")?;
        if let Ok(data) = frame.unwrap().into_data() {
            return Some(data);
        }
    }
}

/// The `switchyard` binary running as a child process; killed on drop.
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Every line the process wrote to stderr (its log) so far.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns the binary with `args` plus `--listen 127.0.0.1:0` and waits for its listening line.
pub fn spawn_binary(args: &[&str]) -> Binary {
    spawn_binary_env(args, &[])
}

/// Like `spawn_binary`, with extra environment variables (`RUST_LOG` among them overrides `info`).
pub fn spawn_binary_env(args: &[&str], envs: &[(&str, &str)]) -> Binary {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .envs(envs.iter().copied());
    // `addr=127.0.0.1:1234` in text logs, `"addr":"127.0.0.1:1234"` in JSON logs.
    spawn_logged(cmd, |line| {
        let (i, skip) = line.find("addr=").map(|i| (i, 5)).or_else(|| line.find("\"addr\":").map(|i| (i, 7)))?;
        let addr: String =
            line[i + skip..].chars().take_while(|c| !c.is_whitespace() && *c != ',' && *c != '}').collect();
        Some(addr.trim_matches('"').to_owned())
    })
}

/// Spawns `cmd` with its stderr kept line by line in `Binary::logs`, and waits (30 s at most) for the
/// first line from which `addr_in` reads the address it listens on.
fn spawn_logged(mut cmd: std::process::Command, addr_in: fn(&str) -> Option<String>) -> Binary {
    use std::io::BufRead;
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().expect("spawn the binary");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = addr_in(&line) {
                let _ = tx.send(addr);
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the binary printed its address");
    Binary { child, addr: addr.parse().expect("an address"), logs }
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-{tag}-{}-{:x}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Definitions with one multivariate flag whose variants get the given percentages.
pub fn variant_flag(key: &str, variants: &[(&str, f64)]) -> serde_json::Value {
    let variants: Vec<_> =
        variants.iter().map(|(k, p)| serde_json::json!({"key": k, "rollout_percentage": p})).collect();
    serde_json::json!({"flags": [{"id": 1, "key": key, "active": true,
        "filters": {"groups": [{"properties": [], "rollout_percentage": 100}], "multivariate": {"variants": variants}}}],
        "cohorts": {}, "group_type_mapping": {}})
}

/// The variant header of a call to route `model` as `distinct_id`.
pub async fn variant_for(addr: SocketAddr, model: &str, distinct_id: &str) -> String {
    let body = serde_json::json!({"model": model, "messages": []}).to_string();
    let (status, h, b) = call(addr, "POST", "/v1/chat/completions", &[("x-distinct-id", distinct_id)], body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    h["x-switchyard-variant"].to_str().unwrap().to_owned()
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> BoxFuture<'static, bool>) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A fresh temp dir holding `flags.json` with `defs`; returns (dir, path of the file).
pub fn flags_dir(tag: &str, defs: &serde_json::Value) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(tag);
    let flags = dir.join("flags.json");
    std::fs::write(&flags, defs.to_string()).unwrap();
    (dir, flags)
}

/// The value of one series (`name{labels}` exactly as rendered, labels sorted) in a `/metrics` text;
/// 0 when the series is absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The gateway's `/metrics` text.
pub async fn metrics_text(addr: SocketAddr) -> String {
    String::from_utf8(call(addr, "GET", "/metrics", &[], "").await.2.to_vec()).unwrap()
}

/// Spawns the bench upstream (`switchyard-bench-upstream --listen 127.0.0.1:0` plus `args`) and waits
/// for its "listening on ADDR" line; killed on drop.
/// The benchmark's hyper floor (a bare reverse proxy) in front of `upstream`, on a free port.
pub fn spawn_bench_floor(upstream: std::net::SocketAddr) -> Binary {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-bench-floor"));
    cmd.args(["--listen", "127.0.0.1:0", "--upstream", &upstream.to_string(), "--workers", "2"]);
    spawn_logged(cmd, |line| Some(line.split("listening on ").nth(1)?.split([' ', ',']).next()?.to_owned()))
}

pub fn spawn_bench_upstream(args: &[&str]) -> Binary {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-bench-upstream"));
    cmd.args(["--listen", "127.0.0.1:0"]).args(args);
    spawn_logged(cmd, |line| Some(line.split("listening on ").nth(1)?.split_whitespace().next()?.to_owned()))
}
