//! Errors a request can meet in the gateway: each kind knows its status, whose fault it is, and how to
//! render itself in the caller's dialect (OpenAI or Anthropic error bodies, or a mid-stream error event);
//! and the fixed set of upstream faults (`switchyard_upstream_faults_total{fault}`).

use bytes::Bytes;
use serde_json::json;

/// The two wire dialects a caller (or a backend) may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }
}

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Caller,
    Upstream,
    Gateway,
}

/// What went wrong; the label `kind` of `switchyard_request_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Body not JSON, not an object, or fields of the wrong type.
    InvalidRequest,
    /// No `model` in the body.
    MissingModel,
    /// No route serves the requested model.
    UnknownModel,
    /// No distinct_id on a route that requires one.
    MissingDistinctId,
    BodyTooLarge,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    /// The caller's key may not do this.
    Forbidden,
    /// The route's backend speaks the other dialect and the request cannot be translated.
    Untranslatable,
    UpstreamConnect,
    UpstreamTimeout,
    /// The upstream answered with an error status.
    UpstreamStatus,
    /// The upstream's response broke off or was malformed.
    UpstreamProtocol,
    /// The gateway is shutting down or overloaded.
    Unavailable,
    /// The caller went away before the response ended.
    ClientCancelled,
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::MissingModel => "missing_model",
            ErrorKind::UnknownModel => "unknown_model",
            ErrorKind::MissingDistinctId => "missing_distinct_id",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Untranslatable => "untranslatable",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamStatus => "upstream_status",
            ErrorKind::UpstreamProtocol => "upstream_protocol",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ClientCancelled => "client_cancel",
            ErrorKind::Internal => "internal",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::MissingModel
            | ErrorKind::MissingDistinctId
            | ErrorKind::Untranslatable => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::UnknownModel | ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::BodyTooLarge => 413,
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamStatus | ErrorKind::UpstreamProtocol => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::ClientCancelled => 499,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    pub fn fault(self) -> Fault {
        match self {
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamStatus
            | ErrorKind::UpstreamProtocol => Fault::Upstream,
            ErrorKind::Unavailable | ErrorKind::Internal => Fault::Gateway,
            _ => Fault::Caller,
        }
    }

    /// Whether trying again (elsewhere or later) may succeed.
    pub fn retryable(self) -> bool {
        matches!(self.fault(), Fault::Upstream) || self == ErrorKind::Unavailable
    }
}

/// What a backend did wrong: the label `fault` of `switchyard_upstream_faults_total`, a small fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFault {
    /// The connection could not be made (refused, unreachable, connect timeout).
    Connect,
    /// The connection was closed or reset before the response ended (headers or body).
    Reset,
    /// What came back was not HTTP.
    BadHttp,
    /// No response headers within `first_byte_timeout`.
    TimeoutFirstByte,
    /// Silence between two chunks longer than `idle_timeout`.
    Stall,
    /// The exchange outlasted `total_timeout`.
    TimeoutTotal,
    /// An event stream that ended cleanly but before its finish (no finish reason, no terminal event).
    Truncated,
    /// A whole body that must be translated is not JSON.
    MalformedJson,
    /// An event stream that must be translated carries data that is not JSON (or cannot be translated).
    MalformedSse,
    /// The backend reported an error inside an event stream.
    StreamError,
    /// A 3xx answer (never followed).
    Redirect,
    /// A body over the size the gateway reads whole.
    TooLarge,
    Status429,
    /// 5xx, and Anthropic's 529.
    Status5xx,
}

impl UpstreamFault {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFault::Connect => "connect",
            UpstreamFault::Reset => "reset",
            UpstreamFault::BadHttp => "bad_http",
            UpstreamFault::TimeoutFirstByte => "timeout_first_byte",
            UpstreamFault::Stall => "stall",
            UpstreamFault::TimeoutTotal => "timeout_total",
            UpstreamFault::Truncated => "truncated",
            UpstreamFault::MalformedJson => "malformed_json",
            UpstreamFault::MalformedSse => "malformed_sse",
            UpstreamFault::StreamError => "stream_error",
            UpstreamFault::Redirect => "redirect",
            UpstreamFault::TooLarge => "too_large",
            UpstreamFault::Status429 => "status_429",
            UpstreamFault::Status5xx => "status_5xx",
        }
    }

    /// The error kind a request that met this fault is counted under.
    pub fn kind(self) -> ErrorKind {
        match self {
            UpstreamFault::Connect => ErrorKind::UpstreamConnect,
            UpstreamFault::TimeoutFirstByte | UpstreamFault::Stall | UpstreamFault::TimeoutTotal => {
                ErrorKind::UpstreamTimeout
            }
            UpstreamFault::StreamError
            | UpstreamFault::Redirect
            | UpstreamFault::Status429
            | UpstreamFault::Status5xx => ErrorKind::UpstreamStatus,
            UpstreamFault::Reset
            | UpstreamFault::BadHttp
            | UpstreamFault::Truncated
            | UpstreamFault::MalformedJson
            | UpstreamFault::MalformedSse
            | UpstreamFault::TooLarge => ErrorKind::UpstreamProtocol,
        }
    }

    /// The fault an upstream error status stands for, if it is one (other 4xx are the request's).
    pub fn for_status(status: u16) -> Option<Self> {
        match status {
            300..=399 => Some(UpstreamFault::Redirect),
            429 => Some(UpstreamFault::Status429),
            500..=599 => Some(UpstreamFault::Status5xx),
            _ => None,
        }
    }
}

/// An error answered by the gateway itself. `message` is safe to show the caller.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault, when there is one (OpenAI `param`).
    pub param: Option<String>,
    /// Overrides the kind's status (e.g. a translation error that carries its own).
    pub status: Option<u16>,
    /// The backend's fault behind this error, when there is one.
    pub fault: Option<UpstreamFault>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError { kind, message: message.into(), param: None, status: None, fault: None }
    }

    /// An error caused by a backend's fault; its kind follows from the fault.
    pub fn upstream(fault: UpstreamFault, message: impl Into<String>) -> Self {
        GatewayError { fault: Some(fault), ..GatewayError::new(fault.kind(), message) }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.kind.status())
    }

    /// The error body in the caller's dialect.
    pub fn body(&self, dialect: Dialect) -> Bytes {
        let status = self.status();
        let v = match dialect {
            Dialect::OpenAi => json!({"error": {
                "message": self.message,
                "type": openai_type(status),
                "param": self.param,
                "code": self.kind.as_str(),
            }}),
            Dialect::Anthropic => json!({"type": "error", "error": {
                "type": anthropic_type(status),
                "message": self.message,
            }}),
        };
        Bytes::from(v.to_string())
    }

    /// The error as one event of the caller's stream, for failures after the stream started.
    pub fn stream_event(&self, dialect: Dialect) -> Bytes {
        let body = self.body(dialect);
        let mut out = Vec::with_capacity(body.len() + 24);
        match dialect {
            Dialect::OpenAi => out.extend_from_slice(b"data: "),
            Dialect::Anthropic => out.extend_from_slice(b"event: error\ndata: "),
        }
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

/// OpenAI's error `type` for a status.
pub fn openai_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 405 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        503 | 529 => "service_unavailable_error",
        _ => "server_error",
    }
}

/// Anthropic's error `type` for a status (one table, shared with the dialect converters).
pub fn anthropic_type(status: u16) -> &'static str {
    crate::dialect::error::anthropic_type_for_status(status)
}

/// Whether `body` already is an error body of `dialect` (so it can go back to the caller untouched).
pub fn is_dialect_error_body(dialect: Dialect, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    match dialect {
        Dialect::OpenAi => v.get("error").is_some_and(|e| e.get("message").is_some()),
        Dialect::Anthropic => {
            v.get("type").and_then(|t| t.as_str()) == Some("error")
                && v.get("error").is_some_and(|e| e.get("type").is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_in_each_dialect() {
        let e = GatewayError::new(ErrorKind::UnknownModel, "no route for model \"x\"").with_param("model");
        let o: serde_json::Value = serde_json::from_slice(&e.body(Dialect::OpenAi)).expect("json");
        assert_eq!(o["error"]["type"], "invalid_request_error");
        assert_eq!(o["error"]["param"], "model");
        assert_eq!(o["error"]["code"], "unknown_model");
        let a: serde_json::Value = serde_json::from_slice(&e.body(Dialect::Anthropic)).expect("json");
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "not_found_error");
        assert!(is_dialect_error_body(Dialect::Anthropic, &e.body(Dialect::Anthropic)));
        assert!(!is_dialect_error_body(Dialect::Anthropic, &e.body(Dialect::OpenAi)));
        assert!(e.stream_event(Dialect::Anthropic).starts_with(b"event: error\ndata: {"));
    }
}
