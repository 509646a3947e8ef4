//! Golden-transcript conformance suite for the dialect translators.
//!
//! Every `tests/dialect/<direction>/<case>.json` is one scenario; `<direction>` is
//! `openai_client_anthropic_backend` or `anthropic_client_openai_backend`. A case holds any of:
//! - `client_request` + (`expected_upstream_request` | `expected_error: {status, param}`);
//!   `backend_model` (and `default_max_tokens`, default 1024) parameterise the translation;
//! - `upstream_response` + `expected_client_response` (non-streamed reply);
//! - `upstream_sse` (a list of `{event?, data}` frames, `data` JSON or a raw string, or one raw
//!   string) + `expected_client_sse` (the same list form); the upstream text is fed to the parser
//!   in small uneven chunks and the stream is `finish()`ed at the end;
//! - `upstream_errors`: a list of `{status, body, expected_status, expected_body}`.
//!
//! The client's `model` is the `requested_model`; OpenAI `created` is fixed at 1700000000. The
//! expected outputs were written from protocols.md and the SDK sources, not from this code's output.

#![expect(clippy::expect_used, clippy::panic, reason = "test harness: a malformed fixture must fail the test loudly")]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use pretty_assertions::assert_eq;
use serde_json::{json, Value};
use switchyard::dialect::{
    anthropic_error_to_openai, anthropic_request_to_openai, anthropic_response_to_openai_at, openai_error_to_anthropic,
    openai_request_to_anthropic, openai_response_to_anthropic, AnthropicToOpenAiStream, ConvertError, OpenAiRequest,
    OpenAiToAnthropicStream, SseEvent, SseParser,
};

const CREATED: u64 = 1_700_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    /// An OpenAI-dialect app on an Anthropic backend.
    OpenAiClient,
    /// An Anthropic-dialect app on an OpenAI-compatible backend.
    AnthropicClient,
}

fn case_files() -> Vec<(Direction, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dialect");
    let mut out = Vec::new();
    for (dir, direction) in [
        ("openai_client_anthropic_backend", Direction::OpenAiClient),
        ("anthropic_client_openai_backend", Direction::AnthropicClient),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
            .map(|e| e.map(|e| e.path()).unwrap_or_default())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no cases in {dir}");
        out.extend(files.into_iter().map(|f| (direction, f)));
    }
    out
}

/// Renders a transcript given as a list of `{event?, data}` (or one raw string) to SSE text.
fn render_sse(transcript: &Value) -> String {
    if let Some(raw) = transcript.as_str() {
        return raw.to_owned();
    }
    let mut text = String::new();
    for frame in transcript.as_array().expect("upstream_sse must be a list or a string") {
        if let Some(name) = frame.get("event").and_then(Value::as_str) {
            text.push_str(&format!("event: {name}\n"));
        }
        match &frame["data"] {
            Value::String(s) => text.push_str(&format!("data: {s}\n\n")),
            other => text.push_str(&format!("data: {other}\n\n")),
        }
    }
    text
}

/// Parses frames produced by a translator back into the `{event?, data}` list form, checking the
/// framing rules of the client's dialect on the way.
fn frames_to_list(frames: &[Bytes], direction: Direction) -> Vec<Value> {
    let mut parser = SseParser::new();
    let mut list = Vec::new();
    for frame in frames {
        let text = std::str::from_utf8(frame).expect("frames are UTF-8");
        assert!(text.ends_with("\n\n"), "frame not terminated by a blank line: {text:?}");
        match direction {
            Direction::OpenAiClient => assert!(text.starts_with("data: "), "OpenAI frame must be data only: {text:?}"),
            Direction::AnthropicClient => {
                assert!(text.starts_with("event: "), "Anthropic frame needs an event line: {text:?}")
            }
        }
        let events = parser.push(frame);
        assert_eq!(events.len(), 1, "one event per frame: {text:?}");
        for SseEvent { event, data } in events {
            let data = serde_json::from_str::<Value>(&data).unwrap_or(Value::String(data));
            if direction == Direction::AnthropicClient {
                assert_eq!(
                    Some(data["type"].as_str().unwrap_or("")),
                    event.as_deref(),
                    "event name must equal data.type"
                );
            }
            list.push(match event {
                Some(event) => json!({"event": event, "data": data}),
                None => json!({"data": data}),
            });
        }
    }
    list
}

fn run_stream(case: &Value, direction: Direction, requested_model: &str) -> Vec<Value> {
    let text = render_sse(&case["upstream_sse"]);
    let include_usage = case["client_request"]["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    let mut a2o = AnthropicToOpenAiStream::new(requested_model, include_usage).with_created(CREATED);
    let mut o2a = OpenAiToAnthropicStream::new(requested_model);
    let mut on_event = |ev: &SseEvent| match direction {
        Direction::OpenAiClient => a2o.on_event(ev),
        Direction::AnthropicClient => o2a.on_event(ev),
    };
    let mut parser = SseParser::new();
    let mut frames = Vec::new();
    // Uneven chunk sizes so chunk boundaries fall inside lines, CRLFs and JSON.
    let bytes = text.as_bytes();
    let (mut at, mut step) = (0, 1);
    while at < bytes.len() {
        let end = (at + step).min(bytes.len());
        for ev in parser.push(&bytes[at..end]) {
            frames.extend(on_event(&ev));
        }
        at = end;
        step = step % 13 + 3;
    }
    if let Some(ev) = parser.finish() {
        frames.extend(on_event(&ev));
    }
    frames.extend(match direction {
        Direction::OpenAiClient => a2o.finish(),
        Direction::AnthropicClient => o2a.finish(),
    });
    frames_to_list(&frames, direction)
}

fn check_case(direction: Direction, path: &Path) {
    let name = path.display();
    let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let case: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
    let requested_model = case["client_request"]["model"].as_str().unwrap_or("client-model").to_owned();
    let mut checked = 0;

    if case.get("client_request").is_some()
        && (case.get("expected_upstream_request").is_some() || case.get("expected_error").is_some())
    {
        let backend_model = case["backend_model"].as_str().expect("backend_model");
        let default_max = case["default_max_tokens"].as_u64().unwrap_or(1024) as u32;
        let got: Result<Value, ConvertError> = match direction {
            Direction::OpenAiClient => {
                let body = serde_json::to_vec(&case["client_request"]).expect("serializable");
                let req = OpenAiRequest::parse(&body).expect("JSON");
                openai_request_to_anthropic(&req, backend_model, default_max)
                    .map(|r| serde_json::from_slice(&r.to_json(0)).expect("the translation writes JSON"))
            }
            Direction::AnthropicClient => anthropic_request_to_openai(&case["client_request"], backend_model),
        };
        match (&got, case.get("expected_error")) {
            (Ok(req), None) => assert_eq!(req, &case["expected_upstream_request"], "{name}: upstream request"),
            (Err(e), Some(want)) => {
                assert_eq!(json!({"status": e.status, "param": e.param}), *want, "{name}: error ({})", e.message);
            }
            (got, want) => panic!("{name}: got {got:?}, expected error {want:?}"),
        }
        checked += 1;
    }
    if let Some(resp) = case.get("upstream_response") {
        let got = match direction {
            Direction::OpenAiClient => {
                let body = serde_json::to_vec(resp).expect("serializable");
                let (out, _) = anthropic_response_to_openai_at(&body, &requested_model, CREATED).expect("JSON");
                serde_json::from_slice(&out).expect("the translation writes JSON")
            }
            Direction::AnthropicClient => openai_response_to_anthropic(resp, &requested_model),
        };
        assert_eq!(got, case["expected_client_response"], "{name}: client response");
        checked += 1;
    }
    if case.get("upstream_sse").is_some() {
        let got = run_stream(&case, direction, &requested_model);
        let want = case["expected_client_sse"].as_array().expect("expected_client_sse").clone();
        assert_eq!(got, want, "{name}: client stream");
        checked += 1;
    }
    for err in case["upstream_errors"].as_array().into_iter().flatten() {
        let status = err["status"].as_u64().expect("status") as u16;
        let body = match &err["body"] {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        };
        let (got_status, got_body) = match direction {
            Direction::OpenAiClient => anthropic_error_to_openai(status, &body),
            Direction::AnthropicClient => openai_error_to_anthropic(status, &body),
        };
        assert_eq!(
            json!({"status": got_status, "body": got_body}),
            json!({"status": err["expected_status"], "body": err["expected_body"]}),
            "{name}: upstream error {status}"
        );
        checked += 1;
    }
    assert!(checked > 0, "{name}: the case checks nothing");
}

#[test]
fn every_golden_transcript_matches() {
    let cases = case_files();
    for (direction, path) in &cases {
        check_case(*direction, path);
    }
    assert!(cases.len() >= 20, "expected the full suite, found {} cases", cases.len());
}
