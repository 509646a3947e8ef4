//! Talking to backends: the connector (HTTPS over rustls, verified against the system roots or the
//! backend's own `ca_file`, with a client certificate for mutual TLS when configured, HTTP/1.1 and HTTP/2 by ALPN, `TCP_NODELAY`, connect timeout) and one
//! connection pool per backend and worker thread (`pool`), header hygiene on the way out
//! (hop-by-hop, caller credentials and Switchyard's own headers dropped; the backend's credentials set),
//! and the first-byte deadline (a failure before the response headers is classified: connect, reset,
//! not HTTP, timeout).

use crate::config::{Backend, BackendKind, DEFAULT_ANTHROPIC_VERSION};
use crate::error::{Dialect, GatewayError, UpstreamFault};
use crate::pool::{Connector, Pool, PooledBody, SendError};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

pub type HttpClient = Client<Connector, Full<Bytes>>;

/// Builds the connection pools of one backend: one per worker thread, over one connector, counting
/// the connections they open in `connections` (`switchyard_backend_connections_total`).
pub fn build_pools(backend: &Backend, workers: usize, connections: &prometheus::IntCounterVec) -> Vec<Arc<Pool>> {
    let connector = if backend.ca_roots.is_none() && backend.client_cert.is_none() {
        connector_with(backend.connect_timeout, &backend.name)
    } else {
        match tls_config(backend) {
            Ok(c) => connector(hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(c), backend.connect_timeout),
            Err(e) => {
                // Only when no protocol version or no trust root is usable: every HTTPS call fails.
                tracing::error!(error = %e, backend = %backend.name, "no usable TLS client configuration");
                connector_with(backend.connect_timeout, &backend.name)
            }
        }
    };
    let opened = ["http1", "http2"].map(|p| connections.with_label_values(&[backend.name.as_str(), p]));
    let timeouts = crate::pool::Timeouts { connect: backend.connect_timeout, idle: backend.pool_idle_timeout };
    (0..workers.max(1)).map(|_| Pool::new(connector.clone(), opened.clone(), timeouts)).collect()
}

/// The rustls client config of a backend with its own trust roots (`ca_file`, else the system's)
/// or a client certificate for mutual TLS (`client_cert_file`, presented whenever the server asks).
fn tls_config(backend: &Backend) -> Result<rustls::ClientConfig, String> {
    use hyper_rustls::ConfigBuilderExt;
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &backend.ca_roots {
        Some(roots) => builder.with_root_certificates(roots.clone()),
        None => builder.with_native_roots().map_err(|e| e.to_string())?,
    };
    Ok(match &backend.client_cert {
        None => builder.with_no_client_auth(),
        Some(key) => builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key.clone()))),
    })
}

/// Builds a pooled HTTP(S) client trusting the system roots; `name` only labels log lines.
pub fn build_client_with(connect_timeout: Duration, name: &str) -> HttpClient {
    pool(connector_with(connect_timeout, name))
}

thread_local! {
    /// The worker thread this is (0 outside the binary's worker threads): which pool it uses.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as worker `index`; set once when a worker thread starts.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The pool of the calling worker thread, so a connection's requests and the backend connections
/// they use are driven by the same event loop (no cross-thread wake-ups on the hot path).
pub fn pool_for_this_worker(pools: &[Arc<Pool>]) -> Option<&Arc<Pool>> {
    match pools.len() {
        0 => None,
        1 => pools.first(),
        n => pools.get(WORKER.with(|w| w.get()) % n),
    }
}

/// The TLS connector trusting the system roots (none found: every HTTPS call fails, logged once).
fn connector_with(connect_timeout: Duration, name: &str) -> Connector {
    let provider = crate::tls::provider();
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, client = name, "no system CA roots found; HTTPS upstreams will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth());
            match config {
                Ok(c) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(c),
                Err(e) => {
                    tracing::error!(error = %e, "rustls has no usable protocol version");
                    hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                        rustls::ClientConfig::builder()
                            .with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth(),
                    )
                }
            }
        }
    };
    connector(builder, connect_timeout)
}

/// HTTPS (HTTP/1.1 and HTTP/2 by ALPN) and plain HTTP over one TCP connector.
fn connector(
    builder: hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>,
    connect_timeout: Duration,
) -> Connector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    builder.https_or_http().enable_all_versions().wrap_connector(http)
}

/// hyper-util's pooled client over `connector` (PostHog polling and export: off the hot path).
fn pool(connector: Connector) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(crate::config::DEFAULT_POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(crate::pool::MAX_IDLE)
        .build(connector)
}

/// The dialect a backend kind speaks; a mock speaks whatever the caller speaks.
pub fn backend_dialect(kind: BackendKind, caller: Dialect) -> Dialect {
    match kind {
        BackendKind::Openai => Dialect::OpenAi,
        BackendKind::Anthropic => Dialect::Anthropic,
        BackendKind::Mock => caller,
    }
}

/// Connection-level headers that never cross a proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Headers the gateway consumes or sets itself, never forwarded as the caller sent them.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "content-length",
    "authorization",
    "x-api-key",
    "x-distinct-id",
    "x-distinct-id-signature",
    "x-person-properties",
    "x-groups",
    // Compressed replies could not be read on the side (usage) or translated.
    "accept-encoding",
];

fn is_hop_by_hop(name: &str, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || connection.iter().any(|c| c == name)
}

/// The header names listed in `Connection` (hop-by-hop for this message only).
fn connection_tokens(src: &HeaderMap) -> Vec<String> {
    src.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect()
}

/// Vendor headers that only make sense to the caller's own vendor: dropped on a cross-dialect call.
fn vendor_header(name: &str) -> bool {
    name.starts_with("anthropic-") || name.starts_with("openai-") || name.starts_with("x-stainless-")
}

/// The backend's own credentials as the header its dialect reads (`authorization: Bearer KEY` or
/// `x-api-key: KEY`), built once per backend (`BackendEntry::credentials`); `None` without a key,
/// for a key that is no header value, and for the in-process mock.
pub fn credentials(backend: &Backend) -> Option<(HeaderName, HeaderValue)> {
    let key = backend.api_key.as_ref()?.expose_secret();
    let (name, value) = match backend.kind {
        BackendKind::Openai => (header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {key}")).ok()?),
        BackendKind::Anthropic => (HeaderName::from_static("x-api-key"), HeaderValue::from_str(key).ok()?),
        BackendKind::Mock => return None,
    };
    Some((name, sensitive(value)))
}

/// The headers sent upstream: the caller's, filtered, plus the backend's own `credentials`.
pub fn upstream_headers(
    src: &HeaderMap,
    caller: Dialect,
    backend: &Backend,
    credentials: Option<&(HeaderName, HeaderValue)>,
) -> HeaderMap {
    let target = backend_dialect(backend.kind, caller);
    let connection = connection_tokens(src);
    let mut out = HeaderMap::with_capacity(src.len() + 2);
    for (name, value) in src {
        let n = name.as_str();
        if is_hop_by_hop(n, &connection)
            || NOT_FORWARDED.contains(&n)
            || n.starts_with("x-switchyard-")
            || (target != caller && vendor_header(n))
        {
            continue;
        }
        if let Some(allow) = &backend.forward_headers {
            if !allow.iter().any(|a| a == n) && n != "content-type" && n != "anthropic-version" {
                continue;
            }
        }
        out.append(name.clone(), value.clone());
    }
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some((name, value)) = credentials {
        out.insert(name.clone(), value.clone());
    }
    if target == Dialect::Anthropic && !out.contains_key("anthropic-version") {
        out.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION));
    }
    out
}

fn sensitive(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

/// Response headers from upstream that go back to the caller: all but hop-by-hop and length (the
/// relayed body sets its own framing) and the backend's request id. Filtered in place: each name
/// to drop is found by a scan and removed with all its values (a rebuilt map hashed every name; a
/// list of the names was an allocation per reply, for the one `content-length` usually found).
pub fn response_headers(mut headers: HeaderMap) -> HeaderMap {
    let connection = connection_tokens(&headers);
    let unwanted = |name: &HeaderName| {
        let n = name.as_str();
        is_hop_by_hop(n, &connection) || n == "content-length" || n == "x-request-id"
    };
    while let Some(name) = headers.keys().find(|n| unwanted(n)).cloned() {
        headers.remove(&name);
    }
    headers
}

/// The `Host` header for `uri`, exactly as hyper-util's client sets it when a request has none
/// (the host, and the port unless it is the scheme's default); built once per backend instead.
pub fn host_header(uri: &http::Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let secure = matches!(uri.scheme_str(), Some("https" | "wss"));
    let value = match uri.port() {
        Some(p) if !matches!((p.as_u16(), secure), (443, true) | (80, false)) => {
            HeaderValue::from_str(&format!("{host}:{}", p.as_str()))
        }
        _ => HeaderValue::from_str(host),
    };
    value.ok()
}

/// The upstream's response body: from a real backend or from the in-process mock.
pub enum UpstreamBody {
    Http(PooledBody),
    Mock(crate::mock::MockBody),
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = crate::relay::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpstreamBody::Http(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Mock(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http(b) => b.is_end_stream(),
            UpstreamBody::Mock(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::Http(b) => b.size_hint(),
            UpstreamBody::Mock(b) => b.size_hint(),
        }
    }
}

/// Sends `body` to a backend (or the built-in mock) at the endpoint of its dialect and waits for the
/// response headers.
pub async fn call(
    backend: &crate::state::BackendEntry,
    caller: Dialect,
    model: &str,
    body: Bytes,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<http::Response<UpstreamBody>, GatewayError> {
    let Some(pool) = pool_for_this_worker(&backend.pools) else {
        // Boxed like the pool's dial: the demo backend's future stays off the proxied path's size.
        let resp = Box::pin(crate::mock::respond(&backend.config.mock, caller, model, &body)).await;
        return Ok(resp.map(UpstreamBody::Mock));
    };
    let uri = match backend_dialect(backend.config.kind, caller) {
        Dialect::OpenAi => backend.chat_url.clone(),
        Dialect::Anthropic => backend.messages_url.clone(),
    };
    let mut req = Box::new(http::Request::new(Full::new(body)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = upstream_headers(headers, caller, &backend.config, backend.credentials.as_ref());
    if let Some(host) = &backend.host {
        req.headers_mut().insert(header::HOST, host.clone());
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        req.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    let resp = send(pool, &backend.config, req).await?;
    Ok(resp.map(UpstreamBody::Http))
}

/// Sends one request and waits for the response headers, within the backend's first-byte deadline.
pub async fn send(
    pool: &Arc<Pool>,
    backend: &Backend,
    req: crate::pool::Outgoing,
) -> Result<http::Response<PooledBody>, GatewayError> {
    match tokio::time::timeout(backend.first_byte_timeout, pool.send(req)).await {
        Err(_) => Err(GatewayError::upstream(
            UpstreamFault::TimeoutFirstByte,
            format!("backend {:?} sent no response within {:?}", backend.name, backend.first_byte_timeout),
        )),
        Ok(Err(SendError::Connect(e))) => {
            tracing::warn!(backend = %backend.name, error = ?e, "upstream connect failed");
            let msg = match tls_failure(&*e) {
                Some(tls) => format!("TLS with backend {:?} failed: {tls}", backend.name),
                None => format!("cannot connect to backend {:?}", backend.name),
            };
            Err(GatewayError::upstream(UpstreamFault::Connect, msg))
        }
        Ok(Err(SendError::Exchange(e))) => {
            tracing::warn!(backend = %backend.name, error = ?e, "upstream request failed");
            // With TLS 1.3 a server that refuses the client certificate says so after the
            // client's side of the handshake is done: its alert arrives with the first read.
            if let Some(tls) = tls_failure(&e) {
                let msg = format!("TLS with backend {:?} failed: {tls}", backend.name);
                return Err(GatewayError::upstream(UpstreamFault::Connect, msg));
            }
            let (fault, what) = if e.is_parse() || e.is_parse_status() {
                (UpstreamFault::BadHttp, "answered with something that is not HTTP")
            } else {
                (UpstreamFault::Reset, "closed the connection without a response")
            };
            Err(GatewayError::upstream(fault, format!("backend {:?} {what}", backend.name)))
        }
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// What failed in TLS with the backend, from `e`'s chain of causes: the rustls error (the client's
/// own checks), or the `InvalidData` I/O error in which the TLS stream reports an alert the server
/// sent (a plain TCP stream never fails with that kind).
pub(crate) fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(tls) = cause::<rustls::Error>(e) {
        return Some(tls.to_string());
    }
    cause::<std::io::Error>(e).filter(|io| io.kind() == std::io::ErrorKind::InvalidData).map(|io| io.to_string())
}

/// The error of type `T` in `e`'s chain of causes (the rustls error behind a failed connect).
/// `io::Error` hides its payload from `source()`, so it is unwrapped with `get_ref`.
fn cause<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MockOptions;

    fn backend(kind: BackendKind, allow: Option<Vec<String>>) -> Backend {
        Backend {
            name: "b".into(),
            kind,
            base_url: "http://x".into(),
            api_key: Some("sk-backend".to_owned().into()),
            connect_timeout: Duration::from_secs(1),
            first_byte_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(1),
            forward_headers: allow,
            max_in_flight: None,
            ca_roots: None,
            client_cert: None,
            max_response_bytes: 1024,
            mock: MockOptions::default(),
        }
    }

    fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    fn caller_headers() -> HeaderMap {
        header_map(&[
            ("authorization", "Bearer sk-caller"),
            ("x-api-key", "caller"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("x-distinct-id", "u1"),
            ("x-switchyard-debug", "1"),
            ("anthropic-beta", "tools-2024"),
            ("anthropic-version", "2023-06-01"),
            ("x-stainless-lang", "python"),
            ("x-custom", "kept"),
        ])
    }

    #[test]
    fn caller_credentials_and_hop_by_hop_headers_never_reach_the_backend() {
        let b = backend(BackendKind::Anthropic, None);
        let out = upstream_headers(&caller_headers(), Dialect::Anthropic, &b, credentials(&b).as_ref());
        assert_eq!(out["x-api-key"], "sk-backend");
        assert!(out.get("authorization").is_none());
        for gone in ["connection", "x-drop-me", "keep-alive", "x-distinct-id", "x-switchyard-debug"] {
            assert!(out.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(out["anthropic-beta"], "tools-2024");
        assert_eq!(out["x-custom"], "kept");
    }

    #[test]
    fn openai_backends_get_a_bearer_key_and_no_anthropic_headers() {
        let b = backend(BackendKind::Openai, None);
        let out = upstream_headers(&caller_headers(), Dialect::Anthropic, &b, credentials(&b).as_ref());
        assert_eq!(out["authorization"], "Bearer sk-backend");
        assert!(out.get("x-api-key").is_none());
        assert!(out.get("anthropic-beta").is_none());
        assert!(out.get("x-stainless-lang").is_none());
    }

    #[test]
    fn the_host_header_has_the_port_unless_it_is_the_schemes_default() {
        let host = |u: &str| host_header(&u.parse().unwrap()).unwrap();
        assert_eq!(host("http://127.0.0.1:9001/v1/messages"), "127.0.0.1:9001");
        assert_eq!(host("http://example.com:80/v1"), "example.com");
        assert_eq!(host("https://api.openai.com/v1"), "api.openai.com");
        assert_eq!(host("https://api.openai.com:443/v1"), "api.openai.com");
        assert_eq!(host("https://gw.internal:80/v1"), "gw.internal:80");
        assert_eq!(host("http://[::1]:8080/v1"), "[::1]:8080");
    }

    #[test]
    fn an_allow_list_narrows_forwarding() {
        let b = backend(BackendKind::Openai, Some(vec!["x-custom".into()]));
        let out = upstream_headers(&caller_headers(), Dialect::OpenAi, &b, credentials(&b).as_ref());
        assert_eq!(out["x-custom"], "kept");
        assert!(out.get("x-stainless-lang").is_none());
        assert_eq!(out["authorization"], "Bearer sk-backend");
    }

    #[test]
    fn response_headers_drop_hop_by_hop_length_and_the_backend_request_id_and_keep_the_rest() {
        let h = header_map(&[
            ("connection", "keep-alive, X-Drop-Me"),
            ("keep-alive", "timeout=5"),
            ("x-drop-me", "1"),
            ("content-length", "42"),
            ("x-request-id", "backend-id"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("retry-after", "3"),
        ]);
        let out = response_headers(h);
        // Removal may reorder different names (HTTP gives their order no meaning); a name's values keep theirs.
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["retry-after", "set-cookie"]);
        assert_eq!(out.get_all("set-cookie").iter().collect::<Vec<_>>(), ["a=1", "b=2"]);
    }
}
