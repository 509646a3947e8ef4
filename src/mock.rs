//! The built-in `kind = "mock"` backend: answers either dialect in-process (streaming too) with
//! deterministic text and usage, after a configurable latency, failing a configurable share of
//! requests, so anyone can try Switchyard and rehearse a rollout or a kill switch without API keys.

use crate::config::MockOptions;
use crate::error::{Dialect, ErrorKind, GatewayError};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// What the mock needs from the (already rewritten) request.
#[derive(serde::Deserialize, Default)]
struct MockRequest {
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(serde::Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The reply text for a model: `reply` from the config, or a sentence naming the model.
pub fn reply_text(opts: &MockOptions, model: &str) -> String {
    opts.reply.clone().unwrap_or_else(|| format!("Hello from {model}! This is the Switchyard mock backend."))
}

/// Answers one request as the mock backend would.
pub async fn respond(opts: &MockOptions, dialect: Dialect, model: &str, body: &[u8]) -> http::Response<MockBody> {
    if let Some(latency) = opts.latency {
        tokio::time::sleep(latency).await;
    }
    if opts.error_rate > 0.0 && fastrand::f64() < opts.error_rate {
        let status = opts.error_status.unwrap_or(500);
        let mut err = GatewayError::new(ErrorKind::UpstreamStatus, format!("mock backend: injected error {status}"));
        err.status = Some(status);
        let mut resp = http::Response::new(MockBody::full(err.body(dialect)));
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        if status == 429 || status == 503 || status == 529 {
            resp.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        }
        return resp;
    }
    let req: MockRequest = serde_json::from_slice(body).unwrap_or_default();
    let text = reply_text(opts, model);
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let input_tokens = body.len().div_ceil(4) as u64;
    let output_tokens = words.len() as u64;
    let id = format!("mock-{:016x}", fastrand::u64(..));
    let (frames, content_type) = match (dialect, req.stream) {
        (Dialect::OpenAi, false) => {
            (vec![openai_message(&id, model, &text, input_tokens, output_tokens)], "application/json")
        }
        (Dialect::Anthropic, false) => {
            (vec![anthropic_message(&id, model, &text, input_tokens, output_tokens)], "application/json")
        }
        (Dialect::OpenAi, true) => {
            let usage = req.stream_options.is_some_and(|o| o.include_usage);
            (openai_stream(&id, model, &words, input_tokens, output_tokens, usage), "text/event-stream")
        }
        (Dialect::Anthropic, true) => {
            (anthropic_stream(&id, model, &words, input_tokens, output_tokens), "text/event-stream")
        }
    };
    let mut resp = http::Response::new(MockBody::new(frames, opts.chunk_delay));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}

fn openai_message(id: &str, model: &str, text: &str, input: u64, output: u64) -> Bytes {
    Bytes::from(
        json!({
            "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": now(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                         "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
        })
        .to_string(),
    )
}

fn anthropic_message(id: &str, model: &str, text: &str, input: u64, output: u64) -> Bytes {
    Bytes::from(
        json!({
            "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": output},
        })
        .to_string(),
    )
}

fn openai_stream(id: &str, model: &str, words: &[&str], input: u64, output: u64, usage: bool) -> Vec<Bytes> {
    let created = now();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]});
        if usage {
            c["usage"] = Value::Null;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    out.extend(words.iter().map(|w| chunk(json!({"content": w}), Value::Null)));
    out.push(chunk(json!({}), json!("stop")));
    if usage {
        let u = json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [],
            "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}});
        out.push(Bytes::from(format!("data: {u}\n\n")));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

fn anthropic_stream(id: &str, model: &str, words: &[&str], input: u64, output: u64) -> Vec<Bytes> {
    let ev = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let mut out = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_{id}"), "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ev("ping", json!({"type": "ping"})),
    ];
    out.extend(words.iter().map(|w| {
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
        )
    }));
    out.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    out.push(ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": output}}),
    ));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    out
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A response body of pre-rendered frames, optionally spaced by a delay (the mock's, and the
/// benchmark upstream's).
pub struct MockBody {
    frames: VecDeque<Bytes>,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl MockBody {
    /// Frames sent in order, `delay` apart (none: all at once).
    pub fn new(frames: Vec<Bytes>, delay: Option<Duration>) -> Self {
        MockBody { frames: frames.into(), delay, sleep: None }
    }

    fn full(b: Bytes) -> Self {
        MockBody::new(vec![b], None)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(sleep) = &mut self.sleep {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let Some(frame) = self.frames.pop_front() else {
            return Poll::Ready(None);
        };
        if let (Some(d), false) = (self.delay, self.frames.is_empty()) {
            self.sleep = Some(Box::pin(tokio::time::sleep(d)));
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.frames.len(), self.frames.front()) {
            (1, Some(b)) => SizeHint::with_exact(b.len() as u64),
            _ => SizeHint::default(),
        }
    }
}
