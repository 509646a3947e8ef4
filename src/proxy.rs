//! The request pipeline for `POST /v1/chat/completions` and `POST /v1/messages`, top to bottom:
//!
//! 1. read the caller's request (bounded body, `model`, identity) — `request::read`
//! 2. decide the target: route ▸ flag ▸ variant, or control — `routing::decide`
//! 3. build the upstream body: `model` swapped, or translated to the backend's dialect — `translate`
//! 4. call the backend; if a variant fails before the first byte, retry once on control (fallback),
//!    and tell the variant's cut-off breaker how it went
//! 5. answer: error bodies in the caller's dialect (`respond_error`), whole bodies translated
//!    (`respond_translated`), streams relayed chunk by chunk (translated on the fly) — `relay::RelayBody`.
//!    What a backend does wrong is counted by fault (`error::UpstreamFault`); a redirect is never
//!    followed nor passed on.
//!
//! The `RequestContext` travels along and is recorded when the response ends, on every path.

use crate::breaker::{self, Admit};
use crate::error::{is_dialect_error_body, Dialect, ErrorKind, GatewayError, UpstreamFault};
use crate::flags::compiled::FlagValue;
use crate::record::{RequestContext, Slot};
use crate::relay::{BoxError, RelayBody, ResponseBody, UsageObserver};
use crate::request::{self, LlmRequest};
use crate::routing::{self, Reason};
use crate::state::{AppState, RouteEntry, TargetEntry};
use crate::translate::{self, Conversion};
use crate::upstream::{self, backend_dialect, UpstreamBody};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::Instant;

/// Upstream error bodies are read whole (to check or translate their dialect) up to this size.
const MAX_ERROR_BODY: usize = 1024 * 1024;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Admits an LLM request under the in-flight limit (else 503 with `retry-after`: load shedding, not
/// collapse), then serves it.
pub async fn admit<B>(
    state: Arc<AppState>,
    req: Request<B>,
    dialect: Dialect,
    mut ctx: RequestContext,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let gauge = state.metrics.in_flight_of(dialect).clone();
    match Slot::acquire(&state.in_flight, state.config.server.max_in_flight, Some(gauge)) {
        Some(slot) => ctx.slot = Some(slot),
        None => {
            ctx.dialect = Some(dialect);
            let msg = "the gateway is at its in-flight request limit; retry shortly";
            return fail(&GatewayError::new(ErrorKind::Unavailable, msg), dialect, ctx);
        }
    }
    handle(state, req, dialect, ctx).await
}

/// Serves one LLM request in `dialect`; never fails (errors are responses in the caller's dialect).
pub async fn handle<B>(
    state: Arc<AppState>,
    req: Request<B>,
    dialect: Dialect,
    mut ctx: RequestContext,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    ctx.dialect = Some(dialect);
    let (parts, body) = req.into_parts();
    if parts.method != Method::POST {
        let msg = format!("{} {} is not supported; use POST", parts.method, parts.uri.path());
        return fail(&GatewayError::new(ErrorKind::MethodNotAllowed, msg), dialect, ctx);
    }

    // 1. Authenticate (when client keys are configured), then read the caller's request.
    let key = match state.config.auth.as_ref().map(|a| a.authenticate(&parts.headers)).transpose() {
        Ok(k) => k,
        Err(e) => return fail(&e, dialect, ctx),
    };
    let req = match request::read(body, &parts.headers, dialect, state.config.server.max_body_bytes).await {
        Ok(r) => r,
        Err(e) => return fail(&e, dialect, ctx),
    };
    ctx.stream = req.stream;
    ctx.distinct_id_present = req.distinct_id.is_some();
    if state.exporter.is_some() {
        ctx.distinct_id.clone_from(&req.distinct_id);
    }

    if let (Some(auth), Some(key)) = (&state.config.auth, key) {
        if let Err(e) = auth.authorize(key, &req.model, req.distinct_id.as_deref(), &parts.headers) {
            return fail(&e, dialect, ctx);
        }
    }

    // 2. Decide the target.
    let decision = match routing::decide(&state, &req.model, &req.facts()) {
        Ok(d) => d,
        Err(e) => return fail(&e, dialect, ctx),
    };
    let route = decision.route;
    ctx.served = Some(decision.target.served.clone());
    ctx.reason = decision.reason.as_str();

    // 3 and 4. Call the target; on a variant's failure before the first byte, fall back to control.
    let mut outcome = attempt(&req, route, decision.target, dialect, &parts.headers, &mut ctx).await;
    let failure = failure_reason(&outcome);
    if let (Some(b), Some(admit)) = (&decision.target.breaker, decision.admit) {
        record_breaker(&state, route, decision.target, b, admit, failure.is_some());
    }
    if let Some(reason) = failure {
        if decision.reason == Reason::Variant && route.fallback {
            count_failed_attempt(&state, decision.target, &outcome);
            let from = &decision.target.served.variant;
            tracing::warn!(request_id = %ctx.request_id, route = %route.model, variant = %from, reason, "variant failed; falling back to control");
            state.metrics.fallbacks.with_label_values(&[&route.model, from, reason]).inc();
            ctx.fallback = Some((from.clone(), reason));
            ctx.served = Some(route.control.served.clone());
            drop(outcome);
            outcome = attempt(&req, route, &route.control, dialect, &parts.headers, &mut ctx).await;
        }
    }

    if let (Some(exporter), Some(id), Some(flag), Some(value)) =
        (&state.exporter, &req.distinct_id, &route.flag, &decision.assigned)
    {
        let value = match value {
            FlagValue::Bool(true) => "true",
            FlagValue::Bool(false) => "false",
            FlagValue::Variant(v) => v,
        };
        let served = ctx.served.as_ref().map_or("control", |s| &*s.variant);
        exporter.flag_called(id, flag, value, served);
    }

    // 5. Answer.
    match outcome {
        Ok(upstream) => respond(upstream, dialect, &req, ctx).await,
        Err(e) => fail(&e, dialect, ctx),
    }
}

/// A backend's response headers, with what is needed to answer the caller.
struct Upstream<'a> {
    response: Response<UpstreamBody>,
    target: &'a TargetEntry,
    conversion: Conversion,
    /// `stream_options.include_usage` was added for metering; the caller did not ask for the usage chunk.
    injected_usage: bool,
}

/// Builds the body for `target` and calls its backend.
async fn attempt<'a>(
    req: &LlmRequest,
    route: &RouteEntry,
    target: &'a TargetEntry,
    dialect: Dialect,
    headers: &http::HeaderMap,
    ctx: &mut RequestContext,
) -> Result<Upstream<'a>, GatewayError> {
    let backend = &target.backend;
    let backend_dialect = backend_dialect(backend.config.kind, dialect);
    let (mut body, conversion) = translate::request_body(
        &req.body,
        req.model_span.clone(),
        dialect,
        backend_dialect,
        &target.model,
        route.default_max_tokens,
    )?;
    let injected_usage =
        req.stream && conversion == Conversion::None && backend_dialect == Dialect::OpenAi && !req.has_stream_options;
    if injected_usage {
        body = translate::inject_include_usage(&body, req.null_stream_options);
    }
    if let Some(max) = backend.config.max_in_flight {
        match Slot::acquire(&backend.in_flight, max, None) {
            Some(slot) => ctx.backend_slots.push(slot),
            None => {
                let msg = format!("backend {:?} is at its in-flight limit ({max})", backend.config.name);
                return Err(GatewayError::new(ErrorKind::Unavailable, msg));
            }
        }
    }
    ctx.upstream_sent = Some(Instant::now());
    let response = upstream::call(backend, dialect, &target.model, body, headers, &ctx.request_id).await?;
    if response.status().is_redirection() {
        // Never followed, never passed on: an SDK would follow it with the caller's credentials.
        let msg = format!(
            "backend {:?} answered {} (a redirect, not followed)",
            backend.config.name,
            response.status().as_u16()
        );
        return Err(GatewayError::upstream(UpstreamFault::Redirect, msg));
    }
    Ok(Upstream { response, target, conversion, injected_usage })
}

/// Why an attempt counts as the backend's failure (fallback, cut-off), if it does.
fn failure_reason(outcome: &Result<Upstream<'_>, GatewayError>) -> Option<&'static str> {
    match outcome {
        Err(e) if e.fault == Some(UpstreamFault::Redirect) => Some("redirect"),
        Err(e) => match e.kind {
            ErrorKind::UpstreamConnect => Some("connect"),
            ErrorKind::UpstreamTimeout => Some("timeout"),
            ErrorKind::UpstreamProtocol => Some("protocol"),
            ErrorKind::Unavailable => Some("overloaded"),
            _ => None,
        },
        Ok(up) => match up.response.status().as_u16() {
            429 => Some("status_429"),
            529 => Some("status_529"),
            s if s >= 500 => Some("status_5xx"),
            _ => None,
        },
    }
}

/// Counts a variant's failed attempt that the fallback then replaced.
fn count_failed_attempt(state: &AppState, target: &TargetEntry, outcome: &Result<Upstream<'_>, GatewayError>) {
    let (kind, fault) = match outcome {
        Err(e) => (e.kind, e.fault),
        Ok(up) => (ErrorKind::UpstreamStatus, UpstreamFault::for_status(up.response.status().as_u16())),
    };
    let s = &target.served;
    if let Some(fault) = fault {
        state.metrics.upstream_faults.with_label_values(&[&s.backend, fault.as_str()]).inc();
    }
    s.stats.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    s.stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    state.metrics.request_errors.with_label_values(&[&s.route, &s.flag, &s.variant, &s.backend, kind.as_str()]).inc();
}

fn record_breaker(
    state: &AppState,
    route: &RouteEntry,
    target: &TargetEntry,
    b: &breaker::Breaker,
    admit: Admit,
    failed: bool,
) {
    if let Some(new) = b.record(admit, failed) {
        let variant = &target.served.variant;
        let (window_requests, window_errors) = b.figures();
        tracing::warn!(route = %route.model, %variant, state = new.as_str(), window_requests, window_errors, "variant cut-off state changed");
        let cut = i64::from(new == breaker::State::Open);
        state.metrics.cut_off.with_label_values(&[&route.model, variant]).set(cut);
    }
}

/// Turns the backend's response into the caller's response.
async fn respond(
    up: Upstream<'_>,
    dialect: Dialect,
    req: &LlmRequest,
    mut ctx: RequestContext,
) -> Response<ResponseBody> {
    let backend = &up.target.backend.config;
    let (parts, body) = up.response.into_parts();
    let status = parts.status;
    ctx.status = status.as_u16();
    let is_sse = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut headers = upstream::response_headers(parts.headers);
    add_served_headers(&mut headers, &ctx);

    if status.is_client_error() || status.is_server_error() {
        return respond_error(status, headers, body, up.conversion, backend, dialect, ctx).await;
    }
    if up.conversion != Conversion::None && !is_sse {
        return respond_translated(status, headers, body, up.conversion, backend, dialect, req, ctx).await;
    }

    // Relay, translating streams on the fly and reading usage on the side.
    let transform = if is_sse { translate::stream(up.conversion, &req.model) } else { None };
    let transform = transform.or_else(|| up.injected_usage.then(translate::strip_injected_usage));
    let usage = UsageObserver::new(backend_dialect(backend.kind, dialect), is_sse);
    let (idle, total) = (backend.idle_timeout, backend.total_timeout);
    let mut relay = RelayBody::new(body, ctx, idle, total, is_sse.then_some(dialect), transform, Some(usage));
    if is_sse && up.conversion == Conversion::None {
        relay = relay.checking_stream_end();
    }
    build(status, headers, ResponseBody::new(relay))
}

/// An upstream error status: the body read whole (up to `MAX_ERROR_BODY`) and answered in the
/// caller's dialect with the upstream's status (and headers, e.g. `retry-after`).
async fn respond_error(
    status: StatusCode,
    mut headers: http::HeaderMap,
    body: UpstreamBody,
    conversion: Conversion,
    backend: &crate::config::Backend,
    dialect: Dialect,
    mut ctx: RequestContext,
) -> Response<ResponseBody> {
    ctx.error = Some(ErrorKind::UpstreamStatus);
    ctx.fault = UpstreamFault::for_status(status.as_u16());
    let deadline = tokio::time::Instant::from_std(ctx.start) + backend.total_timeout;
    let bytes = match read_whole(body, MAX_ERROR_BODY, backend.idle_timeout, deadline).await {
        Ok(b) => b,
        Err(UpstreamFault::TooLarge) => Bytes::from(format!("(an error body over {MAX_ERROR_BODY} bytes, not shown)")),
        Err(_) => Bytes::new(),
    };
    ctx.first_byte();
    let bytes = redact_key(bytes, backend);
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // The backend refused Switchyard's own key, not the caller's: a gateway problem (502), and
        // the provider's message (which may quote the key) stays in the log.
        tracing::error!(request_id = %ctx.request_id, backend = %backend.name, status = status.as_u16(), upstream = %snippet(&bytes), "backend refused Switchyard's credentials");
        let msg = format!(
            "backend {:?} refused Switchyard's credentials ({}); the gateway's operator must check its api_key_env",
            backend.name,
            status.as_u16()
        );
        let err = GatewayError::new(ErrorKind::UpstreamStatus, msg);
        ctx.status = err.status();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return build(StatusCode::BAD_GATEWAY, headers, full(err.body(dialect)));
    }
    let (status, body) = match translate::error_body(conversion, status.as_u16(), &bytes) {
        Some((s, b)) => (StatusCode::from_u16(s).unwrap_or(status), b),
        None if is_dialect_error_body(dialect, &bytes) => (status, bytes),
        None => {
            let msg = format!("backend {:?} answered {}: {}", backend.name, status.as_u16(), snippet(&bytes));
            let mut err = GatewayError::new(ErrorKind::UpstreamStatus, msg);
            err.status = Some(status.as_u16());
            (status, err.body(dialect))
        }
    };
    ctx.status = status.as_u16();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    build(status, headers, full(body))
}

/// The start of an upstream body as text, for a message or a log line.
fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).trim().to_owned()
}

/// A whole success body of the other dialect: read (up to the backend's `max_response_bytes`, within
/// its total timeout) and translated; a broken, oversized or malformed one is a 502.
#[expect(clippy::too_many_arguments, reason = "the pieces of one upstream response, taken apart once")]
async fn respond_translated(
    status: StatusCode,
    mut headers: http::HeaderMap,
    body: UpstreamBody,
    conversion: Conversion,
    backend: &crate::config::Backend,
    dialect: Dialect,
    req: &LlmRequest,
    ctx: RequestContext,
) -> Response<ResponseBody> {
    let limit = backend.max_response_bytes;
    let deadline = tokio::time::Instant::from_std(ctx.start) + backend.total_timeout;
    let bytes = match read_whole(body, limit, backend.idle_timeout, deadline).await {
        Ok(b) => b,
        Err(fault) => {
            let msg = match fault {
                UpstreamFault::TooLarge => {
                    format!("the backend's response was too large to translate (over {limit} bytes)")
                }
                UpstreamFault::Stall => {
                    format!("the backend's response stalled: nothing for {:?}", backend.idle_timeout)
                }
                UpstreamFault::TimeoutTotal => "the backend's response exceeded the total timeout".to_owned(),
                _ => "the backend's response broke off".to_owned(),
            };
            return fail(&GatewayError::upstream(fault, msg), dialect, ctx);
        }
    };
    match translate::response_body(conversion, &bytes, &req.model) {
        Ok((out, usage)) => {
            let mut ctx = ctx;
            ctx.first_byte();
            ctx.usage = usage;
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            build(status, headers, full(out))
        }
        Err(e) => fail(&e, dialect, ctx),
    }
}

/// Reads a whole body of at most `limit` bytes, frame by frame: no silence between two frames longer
/// than `idle` (a stalled body is the same fault as a stalled stream) and done by `deadline`. A body
/// of one frame (the usual small reply) is that frame, not a copy.
async fn read_whole(
    body: UpstreamBody,
    limit: usize,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
) -> Result<Bytes, UpstreamFault> {
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    loop {
        let wait = tokio::time::Instant::now() + idle;
        let frame = tokio::select! {
            f = body.frame() => f,
            () = tokio::time::sleep_until(wait.min(deadline)) => {
                return Err(if deadline <= wait { UpstreamFault::TimeoutTotal } else { UpstreamFault::Stall });
            }
        };
        match frame {
            None if buf.is_empty() => return Ok(first.unwrap_or_default()),
            None => return Ok(buf.freeze()),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "upstream body error");
                return Err(UpstreamFault::Reset);
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                let read = first.as_ref().map_or(0, Bytes::len) + buf.len();
                if read + data.len() > limit {
                    return Err(UpstreamFault::TooLarge);
                }
                match first.take() {
                    None if buf.is_empty() => first = Some(data),
                    earlier => {
                        buf.extend_from_slice(&earlier.unwrap_or_default());
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

fn build(status: StatusCode, headers: http::HeaderMap, body: ResponseBody) -> Response<ResponseBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// Records the error on the context and answers it in the caller's dialect.
fn fail(err: &GatewayError, dialect: Dialect, mut ctx: RequestContext) -> Response<ResponseBody> {
    if err.kind.fault() != crate::error::Fault::Caller {
        tracing::warn!(request_id = %ctx.request_id, error = %err, "request failed");
    }
    ctx.error = Some(err.kind);
    ctx.fault = err.fault;
    ctx.status = err.status();
    error_response(err, dialect, ctx)
}

/// `x-switchyard-*` and `server-timing` headers for a routed response.
fn add_served_headers(headers: &mut http::HeaderMap, ctx: &RequestContext) {
    let Some(s) = &ctx.served else { return };
    for (name, value) in &s.headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some((from, reason)) = &ctx.fallback {
        if let Ok(v) = HeaderValue::from_str(&format!("from={from}; reason={reason}")) {
            headers.insert(HeaderName::from_static("x-switchyard-fallback"), v);
        }
    }
    if let Some(v) = ctx.server_timing() {
        headers.insert(HeaderName::from_static("server-timing"), v);
    }
}

/// An error response in the caller's dialect; `ctx` is recorded when the response is built.
pub fn error_response(err: &GatewayError, dialect: Dialect, ctx: RequestContext) -> Response<ResponseBody> {
    let mut headers = http::HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_served_headers(&mut headers, &ctx);
    if err.kind == ErrorKind::Unavailable {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    build(status, headers, full(err.body(dialect)))
}

/// `bytes` with every occurrence of the backend's key replaced by `[redacted]` (a provider or proxy
/// that quotes the credentials it got must not hand Switchyard's key to the caller).
fn redact_key(bytes: Bytes, backend: &crate::config::Backend) -> Bytes {
    use secrecy::ExposeSecret;
    let Some(key) = backend.api_key.as_ref().map(|k| k.expose_secret().as_bytes()).filter(|k| !k.is_empty()) else {
        return bytes;
    };
    let mut out = Vec::new();
    let mut copied = 0;
    for at in memchr::memmem::find_iter(&bytes, key) {
        out.extend_from_slice(&bytes[copied..at]);
        out.extend_from_slice(b"[redacted]");
        copied = at + key.len();
    }
    if copied == 0 {
        return bytes;
    }
    out.extend_from_slice(&bytes[copied..]);
    Bytes::from(out)
}

/// A complete in-memory body.
pub fn full(b: impl Into<Bytes>) -> ResponseBody {
    ResponseBody::new(Full::new(b.into()).map_err(|e| match e {}))
}

#[cfg(test)]
mod tests {
    use crate::error::Dialect;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::sync::Arc;

    /// Every await moves the future it awaits into its caller's, so a request's futures are copied
    /// on the way down and each caller's is at least as large. The backend dial (connect, TLS,
    /// handshake) and the demo backend are boxed to keep them off that path: unboxed, the pool's
    /// dial alone doubled every future here (dispatch was 11.6 KiB in a debug build; 6.0 KiB boxed).
    /// The request context and the backend request, handed by value from call to call, are boxed
    /// for the same reason (each hand was a copy of their 296 and 256 bytes).
    #[test]
    fn the_request_path_futures_stay_small() {
        let cfg = "[backends.m]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\n[[routes]]\nmodel = \"m\"\ncontrol = { backend = \"m\", model = \"a\" }\n";
        let config = crate::config::parse(cfg, "t", std::path::PathBuf::from("."), &|_| None).unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new().unwrap());
        let state = Arc::new(crate::state::AppState::new(config, metrics, None));
        let req = || http::Request::new(Full::new(Bytes::from_static(b"{}")));
        let ctx = || crate::record::RequestContext::new(state.clone(), "id".into(), http::Method::POST, "/".into());
        let dispatch = std::mem::size_of_val(&crate::server::dispatch(state.clone(), req(), None));
        let handle = std::mem::size_of_val(&super::handle(state.clone(), req(), Dialect::OpenAi, ctx()));
        let target = &state.routes["m"].control;
        let headers = http::HeaderMap::new();
        let call = crate::upstream::call(&target.backend, Dialect::OpenAi, &target.model, Bytes::new(), &headers, "id");
        let call = std::mem::size_of_val(&call);
        assert!(dispatch <= 8 * 1024, "dispatch's future is {dispatch} bytes");
        assert!(handle <= 7 * 1024, "handle's future is {handle} bytes");
        assert!(call <= 4 * 1024, "upstream::call's future is {call} bytes");
        // What moves by value down the path is a pointer, not the hundreds of bytes behind it.
        assert_eq!(std::mem::size_of::<crate::record::RequestContext>(), std::mem::size_of::<usize>());
        assert_eq!(std::mem::size_of::<crate::pool::Outgoing>(), std::mem::size_of::<usize>());
    }
}
