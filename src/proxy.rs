//! The request pipeline for `POST /v1/chat/completions` and `POST /v1/messages`, top to bottom:
//!
//! 1. read the caller's request (bounded body, `model`, identity) — `request::read`
//! 2. decide the target: route ▸ flag ▸ variant, or control — `routing::decide`
//! 3. build the upstream body: `model` swapped, or translated to the backend's dialect — `translate`
//! 4. call the backend; if a variant fails before the first byte, retry once on control (fallback),
//!    and tell the variant's cut-off breaker how it went
//! 5. answer: error bodies in the caller's dialect, whole bodies translated, streams relayed chunk by
//!    chunk (translated on the fly) — `relay::RelayBody`
//!
//! The `RequestContext` travels along and is recorded when the response ends, on every path.

use crate::breaker::{self, Admit};
use crate::error::{is_dialect_error_body, Dialect, ErrorKind, GatewayError};
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
use http_body_util::{BodyExt, Full, Limited};
use std::sync::Arc;
use std::time::Instant;

/// Upstream error bodies are read whole (to check or translate their dialect) up to this size.
const MAX_ERROR_BODY: usize = 1024 * 1024;
/// Non-stream responses that must be translated are read whole up to this size.
const MAX_TRANSLATED_BODY: usize = 64 * 1024 * 1024;

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
    let gauge = state.metrics.in_flight.with_label_values(&[dialect.as_str()]);
    match Slot::acquire(&state.in_flight, state.config.server.max_in_flight, Some(gauge)) {
        Some(slot) => ctx.slots.push(slot),
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
            Some(slot) => ctx.slots.push(slot),
            None => {
                let msg = format!("backend {:?} is at its in-flight limit ({max})", backend.config.name);
                return Err(GatewayError::new(ErrorKind::Unavailable, msg));
            }
        }
    }
    ctx.upstream_sent = Some(Instant::now());
    let response = upstream::call(backend, dialect, &target.model, body, headers, &ctx.request_id).await?;
    Ok(Upstream { response, target, conversion, injected_usage })
}

/// Why an attempt counts as the backend's failure (fallback, cut-off), if it does.
fn failure_reason(outcome: &Result<Upstream<'_>, GatewayError>) -> Option<&'static str> {
    match outcome {
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
    let kind = match outcome {
        Err(e) => e.kind,
        Ok(_) => ErrorKind::UpstreamStatus,
    };
    let s = &target.served;
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
    let mut headers = upstream::response_headers(&parts.headers);
    add_served_headers(&mut headers, &ctx);
    let is_sse = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));

    // Errors: read whole, answer in the caller's dialect.
    if status.is_client_error() || status.is_server_error() {
        ctx.error = Some(ErrorKind::UpstreamStatus);
        let read = tokio::time::timeout(backend.idle_timeout, Limited::new(body, MAX_ERROR_BODY).collect()).await;
        let bytes = match read {
            Ok(Ok(c)) => c.to_bytes(),
            _ => Bytes::new(),
        };
        ctx.first_byte();
        let (status, body) = match translate::error_body(up.conversion, status.as_u16(), &bytes) {
            Some((s, b)) => (StatusCode::from_u16(s).unwrap_or(status), b),
            None if is_dialect_error_body(dialect, &bytes) => (status, bytes),
            None => {
                let snippet = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
                let msg = format!("backend {:?} answered {}: {}", backend.name, status.as_u16(), snippet.trim());
                let mut err = GatewayError::new(ErrorKind::UpstreamStatus, msg);
                err.status = Some(status.as_u16());
                (status, err.body(dialect))
            }
        };
        ctx.status = status.as_u16();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return build(status, headers, full(body));
    }

    // A whole body to translate.
    if up.conversion != Conversion::None && !is_sse {
        let read = tokio::time::timeout(backend.total_timeout, Limited::new(body, MAX_TRANSLATED_BODY).collect()).await;
        let bytes = match read {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) => {
                let msg = format!("the backend's response broke off: {e}");
                return fail(&GatewayError::new(ErrorKind::UpstreamProtocol, msg), dialect, ctx);
            }
            Err(_) => {
                let msg = "the backend's response exceeded the total timeout";
                return fail(&GatewayError::new(ErrorKind::UpstreamTimeout, msg), dialect, ctx);
            }
        };
        return match translate::response_body(up.conversion, &bytes, &req.model) {
            Ok(out) => {
                ctx.first_byte();
                ctx.usage = crate::usage::Usage::from_response(backend_dialect(backend.kind, dialect), &bytes);
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                build(status, headers, full(out))
            }
            Err(e) => fail(&e, dialect, ctx),
        };
    }

    // Relay, translating streams on the fly and reading usage on the side.
    let transform = if is_sse { translate::stream(up.conversion, &req.model) } else { None };
    let transform = transform.or_else(|| up.injected_usage.then(translate::strip_injected_usage));
    let usage = UsageObserver::new(backend_dialect(backend.kind, dialect), is_sse);
    let (idle, total) = (backend.idle_timeout, backend.total_timeout);
    let relay = RelayBody::new(body, ctx, idle, total, is_sse.then_some(dialect), transform, Some(usage));
    build(status, headers, ResponseBody::new(relay))
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
    if let Some(o) = ctx.overhead() {
        if let Ok(v) = HeaderValue::from_str(&format!("switchyard;dur={:.3}", o.as_secs_f64() * 1000.0)) {
            headers.insert(HeaderName::from_static("server-timing"), v);
        }
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

/// A complete in-memory body.
pub fn full(b: impl Into<Bytes>) -> ResponseBody {
    ResponseBody::new(Full::new(b.into()).map_err(|e| match e {}))
}
