//! Errors of the dialect layer: `ConvertError` (a request that cannot be translated), the error
//! bodies of both dialects, the translation of upstream error responses into the caller's dialect
//! (protocols.md §3.7) and the in-stream error frames (errors after HTTP 200).

use bytes::Bytes;
use serde_json::{json, Value};

use super::sse::{anthropic_frame, openai_frame};

/// A request that cannot be translated faithfully. Rendered to the caller as a 4xx in its own
/// dialect; `param` names the offending field (OpenAI's `param`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConvertError {
    pub status: u16,
    pub message: String,
    pub param: Option<String>,
}

impl ConvertError {
    /// A 400 naming the field that cannot be honoured.
    pub fn bad_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        ConvertError { status: 400, message: message.into(), param: Some(param.into()) }
    }

    /// This error as an OpenAI error body.
    pub fn to_openai_body(&self) -> Value {
        openai_error_body(self.status, &self.message, "invalid_request_error", self.param.as_deref(), None)
    }

    /// This error as an Anthropic error body.
    pub fn to_anthropic_body(&self) -> Value {
        anthropic_error_body(anthropic_type_for_status(self.status), &self.message)
    }
}

/// `{"error": {"message", "type", "param", "code"}}`. `status` is accepted for symmetry with the
/// callers (the status travels on the HTTP response, not in the body).
pub fn openai_error_body(
    _status: u16,
    message: &str,
    error_type: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Value {
    json!({"error": {"message": message, "type": error_type, "param": param, "code": code}})
}

/// `{"type": "error", "error": {"type", "message"}}`.
pub fn anthropic_error_body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

/// The mid-stream OpenAI error frame: `data: {"error": {...}}`. The OpenAI SDK raises `APIError`
/// on a payload with a top-level `error`.
pub fn openai_error_frame(message: &str, error_type: &str, code: Option<&str>) -> Bytes {
    openai_frame(&openai_error_body(200, message, error_type, None, code))
}

/// The mid-stream Anthropic error frame: `event: error` with an Anthropic error body.
pub fn anthropic_error_frame(error_type: &str, message: &str) -> Bytes {
    anthropic_frame("error", &anthropic_error_body(error_type, message))
}

/// Anthropic `error.type` for an HTTP status (protocols.md §2.5).
pub fn anthropic_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 | 503 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The HTTP status Anthropic uses for an `error.type`; used for errors that arrive inside a 200
/// stream, where the type is all there is.
fn anthropic_status_for_type(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// OpenAI's (status, type, code) for an upstream Anthropic status (protocols.md §3.7).
fn openai_shape_for_status(status: u16, message: &str) -> (u16, &'static str, Option<&'static str>) {
    match status {
        400 => (400, "invalid_request_error", None),
        401 | 403 => (status, "invalid_request_error", Some("invalid_api_key")),
        402 => (402, "insufficient_quota", Some("insufficient_quota")),
        404 if message.to_ascii_lowercase().contains("model") => {
            (404, "invalid_request_error", Some("model_not_found"))
        }
        413 => (413, "invalid_request_error", Some("request_too_large")),
        429 => (429, "rate_limit_exceeded", Some("rate_limit_exceeded")),
        529 | 503 => (503, "service_unavailable_error", Some("server_is_overloaded")),
        504 => (504, "server_error", Some("timeout")),
        s if s >= 500 => (s, "server_error", None),
        s => (s, "invalid_request_error", None),
    }
}

/// Pulls `error.message` (and `error.type`) out of an upstream error body of either dialect.
/// A body that is not JSON (an HTML page from a proxy, plain text) still yields a message.
fn upstream_message(status: u16, body: &[u8]) -> (String, Option<String>) {
    const MAX_RAW: usize = 500;
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let err = v.get("error").unwrap_or(&v);
        let message = err.get("message").and_then(Value::as_str).or_else(|| err.as_str());
        let error_type = err.get("type").and_then(Value::as_str).map(str::to_owned);
        if let Some(message) = message {
            return (message.to_owned(), error_type);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return (format!("upstream returned HTTP {status}"), None);
    }
    let cut: String = text.chars().take(MAX_RAW).collect();
    (format!("upstream returned HTTP {status}: {cut}"), None)
}

/// An Anthropic error response → the (status, body) an OpenAI-dialect caller gets.
/// 529 `overloaded_error` becomes 503 `service_unavailable_error`.
pub fn anthropic_error_to_openai(status: u16, body: &[u8]) -> (u16, Value) {
    let (message, _) = upstream_message(status, body);
    let (status, error_type, code) = openai_shape_for_status(status, &message);
    (status, openai_error_body(status, &message, error_type, None, code))
}

/// An OpenAI (or OpenAI-compatible) error response → the (status, body) an Anthropic-dialect
/// caller gets. 503 becomes 529 `overloaded_error`, which the Anthropic SDK maps to
/// `OverloadedError` and retries.
pub fn openai_error_to_anthropic(status: u16, body: &[u8]) -> (u16, Value) {
    let (message, _) = upstream_message(status, body);
    let status = match status {
        503 => 529,
        s if s < 400 => 500,
        s => s,
    };
    (status, anthropic_error_body(anthropic_type_for_status(status), &message))
}

/// An Anthropic in-stream `error` event payload → the OpenAI error frame.
pub fn anthropic_stream_error_to_openai_frame(payload: &Value) -> Bytes {
    let err = payload.get("error").unwrap_or(payload);
    let message = err.get("message").and_then(Value::as_str).unwrap_or("upstream stream error");
    let anthropic_type = err.get("type").and_then(Value::as_str).unwrap_or("api_error");
    let (_, error_type, code) = openai_shape_for_status(anthropic_status_for_type(anthropic_type), message);
    openai_error_frame(message, error_type, code)
}

/// An OpenAI in-stream `{"error": {...}}` payload → the Anthropic `event: error` frame.
pub fn openai_stream_error_to_anthropic_frame(payload: &Value) -> Bytes {
    let err = payload.get("error").unwrap_or(payload);
    let message = err.get("message").and_then(Value::as_str).unwrap_or("upstream stream error");
    let field = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("");
    let anthropic_type = match (field("type"), field("code")) {
        (_, "rate_limit_exceeded") | ("rate_limit_exceeded" | "requests" | "tokens", _) => "rate_limit_error",
        ("service_unavailable_error", _) | (_, "server_is_overloaded" | "slow_down") => "overloaded_error",
        ("invalid_request_error", _) => "invalid_request_error",
        _ => "api_error",
    };
    anthropic_error_frame(anthropic_type, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_json_upstream_body_still_gives_a_well_formed_error() {
        let (status, body) = anthropic_error_to_openai(502, b"<html>Bad Gateway</html>");
        assert_eq!(status, 502);
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["message"], "upstream returned HTTP 502: <html>Bad Gateway</html>");
        let (status, body) = openai_error_to_anthropic(503, b"");
        assert_eq!(status, 529);
        assert_eq!(body, anthropic_error_body("overloaded_error", "upstream returned HTTP 503"));
    }

    #[test]
    fn convert_error_renders_in_both_dialects() {
        let e = ConvertError::bad_param("n", "n > 1 is not supported");
        assert_eq!(e.to_openai_body()["error"]["param"], "n");
        assert_eq!(e.to_anthropic_body()["error"]["type"], "invalid_request_error");
    }
}
