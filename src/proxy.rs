//! The request pipeline for `POST /v1/chat/completions` and `POST /v1/messages`, top to bottom:
//! read the body (bounded) ▸ peek at the few fields routing needs ▸ decide the target ▸ rewrite the
//! body (only `model` swapped on the same-dialect path) ▸ send upstream ▸ relay the response.
//! The `RequestContext` travels along and is recorded when the response ends, on every path.

use crate::error::{is_dialect_error_body, Dialect, ErrorKind, GatewayError};
use crate::mock::{self, MockBody};
use crate::record::RequestContext;
use crate::relay::{BoxError, RelayBody, ResponseBody};
use crate::routing;
use crate::state::{AppState, TargetEntry};
use crate::upstream::{self, backend_dialect};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Upstream error bodies are read whole (to check their dialect) up to this size.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// The fields of a request body the gateway looks at; everything else is forwarded untouched.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    /// OpenAI dialect: the caller's end user.
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    /// Anthropic dialect: `metadata.user_id`.
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PeekMetadata<'a> {
    #[serde(borrow)]
    user_id: Option<std::borrow::Cow<'a, str>>,
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
    let prepared = match prepare(&state, &parts, body, dialect, &mut ctx).await {
        Ok(p) => p,
        Err(err) => return fail(&err, dialect, ctx),
    };
    let upstream = match call(
        prepared.target,
        dialect,
        prepared.body,
        &parts.headers,
        &mut ctx,
    )
    .await
    {
        Ok(u) => u,
        Err(err) => return fail(&err, dialect, ctx),
    };
    respond(prepared.target, dialect, upstream, ctx).await
}

/// A request ready to go upstream.
struct Prepared<'a> {
    target: &'a TargetEntry,
    body: Bytes,
}

/// Steps 1 to 4: method, body, peek, routing decision, body rewrite.
async fn prepare<'a, B>(
    state: &'a AppState,
    parts: &http::request::Parts,
    body: B,
    dialect: Dialect,
    ctx: &mut RequestContext,
) -> Result<Prepared<'a>, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // 1. Method and body.
    if parts.method != Method::POST {
        return Err(GatewayError::new(
            ErrorKind::MethodNotAllowed,
            format!(
                "{} {} is not supported; use POST",
                parts.method,
                parts.uri.path()
            ),
        ));
    }
    let body = read_body(body, &parts.headers, state.config.server.max_body_bytes).await?;

    // 2. Peek at the fields routing needs; the body must be a JSON object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let e = serde_json::from_slice::<serde::de::IgnoredAny>(&body).err();
        let why = e.map_or_else(
            || "the request body must be a JSON object".to_owned(),
            |e| format!("the request body is not valid JSON: {e}"),
        );
        return Err(GatewayError::new(ErrorKind::InvalidRequest, why));
    }
    let peek: Peek<'_> = serde_json::from_slice(&body).map_err(|e| invalid_json(&e))?;
    let raw_model = peek.model.ok_or_else(|| {
        GatewayError::new(ErrorKind::MissingModel, "the request has no `model`").with_param("model")
    })?;
    let model: String = serde_json::from_str(raw_model.get()).map_err(|_| {
        GatewayError::new(ErrorKind::InvalidRequest, "`model` must be a string").with_param("model")
    })?;
    ctx.stream = peek.stream.unwrap_or(false);

    // 3. Decide the target from the caller's identity.
    let empty = serde_json::Map::new();
    let person_properties = json_header(&parts.headers, "x-person-properties")?;
    let groups = json_header(&parts.headers, "x-groups")?;
    let group_properties = json_header(&parts.headers, "x-group-properties")?;
    let body_id = match dialect {
        Dialect::OpenAi => peek
            .user
            .and_then(|u| serde_json::from_str::<std::borrow::Cow<'_, str>>(u.get()).ok()),
        Dialect::Anthropic => peek
            .metadata
            .and_then(|m| serde_json::from_str::<PeekMetadata<'_>>(m.get()).ok())
            .and_then(|m| m.user_id),
    };
    let distinct_id = match parts.headers.get("x-distinct-id").map(|v| v.to_str()) {
        Some(Ok(id)) if !id.is_empty() => Some(std::borrow::Cow::Borrowed(id)),
        Some(Err(_)) => {
            return Err(GatewayError::new(
                ErrorKind::InvalidRequest,
                "x-distinct-id must be visible ASCII",
            ));
        }
        _ => body_id.filter(|id| !id.is_empty()),
    };
    ctx.distinct_id_present = distinct_id.is_some();
    let facts = routing::Facts {
        distinct_id: distinct_id.as_deref(),
        person_properties: person_properties.as_ref().unwrap_or(&empty),
        groups: groups.as_ref().unwrap_or(&empty),
        group_properties: group_properties.as_ref().unwrap_or(&empty),
    };
    let decision = routing::decide(state, &model, &facts)?;
    let target = decision.target;
    ctx.served = Some(target.served.clone());
    ctx.reason = decision.reason.as_str();

    // 4. Rewrite the body for the target.
    let backend_dialect = backend_dialect(target.backend.config.kind, dialect);
    if backend_dialect != dialect {
        return Err(GatewayError::new(
            ErrorKind::Untranslatable,
            format!(
                "route {model:?} is served by a {} backend; cross-dialect translation is not available",
                backend_dialect.as_str()
            ),
        ));
    }
    let body = swap_model(&body, raw_model, &target.model);
    Ok(Prepared { target, body })
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

/// Reads the request body, refusing more than `max` bytes with 413.
async fn read_body<B>(body: B, headers: &http::HeaderMap, max: usize) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        GatewayError::new(
            ErrorKind::BodyTooLarge,
            format!("the request body is larger than {max} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(GatewayError::new(
            ErrorKind::InvalidRequest,
            format!("could not read the request body: {e}"),
        )),
    }
}

/// A header holding a JSON object (`x-person-properties`, `x-groups`); absent is `None`.
fn json_header(
    headers: &http::HeaderMap,
    name: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, GatewayError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    serde_json::from_slice(v.as_bytes()).map(Some).map_err(|e| {
        GatewayError::new(
            ErrorKind::InvalidRequest,
            format!("the {name} header must be a JSON object: {e}"),
        )
    })
}

fn invalid_json(e: &serde_json::Error) -> GatewayError {
    let msg = match e.classify() {
        serde_json::error::Category::Data => format!("the request body must be a JSON object: {e}"),
        _ => format!("the request body is not valid JSON: {e}"),
    };
    GatewayError::new(ErrorKind::InvalidRequest, msg)
}

/// The body with the `model` value replaced, every other byte unchanged.
fn swap_model(body: &Bytes, raw_model: &RawValue, model: &str) -> Bytes {
    let raw = raw_model.get();
    let start = raw.as_ptr() as usize - body.as_ptr() as usize;
    let end = start + raw.len();
    let quoted = serde_json::Value::from(model).to_string();
    let mut out = Vec::with_capacity(body.len() - raw.len() + quoted.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[end..]);
    Bytes::from(out)
}

/// The upstream's response before its body is relayed: either from a real backend or the mock.
pub enum UpstreamBody {
    Http(hyper::body::Incoming),
    Mock(MockBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Http(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Mock(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http(b) => b.is_end_stream(),
            UpstreamBody::Mock(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http(b) => b.size_hint(),
            UpstreamBody::Mock(b) => b.size_hint(),
        }
    }
}

/// Sends the request to the target's backend and waits for its response headers.
async fn call(
    target: &TargetEntry,
    dialect: Dialect,
    body: Bytes,
    headers: &http::HeaderMap,
    ctx: &mut RequestContext,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let backend = &target.backend;
    ctx.upstream_sent = Some(Instant::now());
    let Some(client) = &backend.client else {
        let resp = mock::respond(&backend.config.mock, dialect, &target.model, &body).await;
        return Ok(resp.map(UpstreamBody::Mock));
    };
    let uri = match backend_dialect(backend.config.kind, dialect) {
        Dialect::OpenAi => backend.chat_url.clone(),
        Dialect::Anthropic => backend.messages_url.clone(),
    };
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = upstream::upstream_headers(headers, dialect, &backend.config);
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        req.headers_mut().insert(X_REQUEST_ID, v);
    }
    let resp = upstream::send(client, &backend.config, req).await?;
    Ok(resp.map(UpstreamBody::Http))
}

/// Turns the upstream response into the caller's response: error bodies checked and kept in the
/// caller's dialect, success bodies relayed frame by frame.
async fn respond(
    target: &TargetEntry,
    dialect: Dialect,
    upstream: Response<UpstreamBody>,
    mut ctx: RequestContext,
) -> Response<ResponseBody> {
    let backend = &target.backend.config;
    let (parts, body) = upstream.into_parts();
    let status = parts.status;
    ctx.status = status.as_u16();
    let mut headers = upstream::response_headers(&parts.headers);
    add_served_headers(&mut headers, &ctx);
    if status.is_client_error() || status.is_server_error() {
        ctx.error = Some(ErrorKind::UpstreamStatus);
        let read = tokio::time::timeout(
            backend.idle_timeout,
            Limited::new(body, MAX_ERROR_BODY).collect(),
        )
        .await;
        let bytes = match read {
            Ok(Ok(c)) => c.to_bytes(),
            _ => Bytes::new(),
        };
        ctx.first_byte();
        let body = if is_dialect_error_body(dialect, &bytes) {
            bytes
        } else {
            let snippet = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            let mut err = GatewayError::new(
                ErrorKind::UpstreamStatus,
                format!(
                    "backend {:?} answered {}: {}",
                    backend.name,
                    status.as_u16(),
                    snippet.trim()
                ),
            );
            err.status = Some(status.as_u16());
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            err.body(dialect)
        };
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        drop(ctx);
        return resp;
    }
    let is_sse = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let sse = is_sse.then_some(dialect);
    let relay = RelayBody::new(
        body,
        ctx,
        backend.idle_timeout,
        backend.total_timeout,
        sse,
        None,
    );
    let mut resp = Response::new(ResponseBody::new(relay));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `x-switchyard-*` and `server-timing` headers for a routed response.
fn add_served_headers(headers: &mut http::HeaderMap, ctx: &RequestContext) {
    let Some(s) = &ctx.served else { return };
    for (name, value) in [
        ("x-switchyard-flag", &s.flag),
        ("x-switchyard-variant", &s.variant),
        ("x-switchyard-backend", &s.backend),
        ("x-switchyard-model", &s.model),
    ] {
        if value.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    if let Some(reason) = ctx.fallback {
        headers.insert(
            HeaderName::from_static("x-switchyard-fallback"),
            HeaderValue::from_static(reason),
        );
    }
    if let Some(o) = ctx.overhead() {
        if let Ok(v) =
            HeaderValue::from_str(&format!("switchyard;dur={:.3}", o.as_secs_f64() * 1000.0))
        {
            headers.insert(HeaderName::from_static("server-timing"), v);
        }
    }
}

/// An error response in the caller's dialect; `ctx` is recorded when the response is built.
pub fn error_response(
    err: &GatewayError,
    dialect: Dialect,
    ctx: RequestContext,
) -> Response<ResponseBody> {
    let mut resp = Response::new(full(err.body(dialect)));
    *resp.status_mut() =
        StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_served_headers(resp.headers_mut(), &ctx);
    if err.kind == ErrorKind::Unavailable {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    drop(ctx);
    resp
}

/// A complete in-memory body.
pub fn full(b: impl Into<Bytes>) -> ResponseBody {
    ResponseBody::new(Full::new(b.into()).map_err(|e| match e {}))
}
