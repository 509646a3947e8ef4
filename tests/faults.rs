//! The upstream-fault matrix in one place: each test scripts one fault in a mock upstream (hyper, or
//! raw TCP for what hyper cannot send) and drives the gateway in both caller dialects, against a
//! backend of the same dialect and of the other one, streamed and not where it matters; each asserts
//! the caller's outcome and the counters (`switchyard_request_errors_total{kind}`,
//! `switchyard_upstream_faults_total{backend, fault}`).
//!
//! Covered elsewhere, not repeated here (tests/gateway.rs): an upstream that never sends its headers
//! gives 504 (`an_upstream_that_never_answers_gives_504`), a refused connection 502
//! (`a_refused_connection_gives_502_in_the_callers_dialect`), a same-dialect stream that stalls ends
//! with an error event (`a_stream_that_stalls_ends_with_an_error_event_in_the_callers_dialect`), an
//! upstream 429 keeps `retry-after` on the same dialect and a non-JSON 503 is wrapped
//! (`upstream_errors_come_back_in_the_callers_dialect_with_status_and_retry_after`); tests/routing.rs:
//! a variant's 5xx falls back to control (`a_failing_variant_falls_back_to_control_and_nothing_is_lost`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use serde_json::json;
use std::time::Duration;

/// Two routes: `gpt` on an OpenAI-compatible backend (`oa`), `claude` on an Anthropic one (`an`);
/// both on the scripted upstream.
const FAULTS: &str = r#"
[backends.oa]
kind = "openai"
base_url = "{upstream}"
api_key_env = "TEST_BACKEND_KEY"
first_byte_timeout = "2s"
idle_timeout = "2s"
max_response_bytes = 65536

[backends.an]
kind = "anthropic"
base_url = "{upstream}"
api_key_env = "TEST_BACKEND_KEY"
first_byte_timeout = "2s"
idle_timeout = "2s"
max_response_bytes = 65536

[[routes]]
model = "gpt"
control = { backend = "oa", model = "gpt-up" }

[[routes]]
model = "claude"
control = { backend = "an", model = "claude-up" }
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum D {
    OpenAi,
    Anthropic,
}

/// (caller dialect, backend dialect): same dialect and translated, both ways.
const COMBOS: [(D, D); 4] =
    [(D::OpenAi, D::OpenAi), (D::OpenAi, D::Anthropic), (D::Anthropic, D::Anthropic), (D::Anthropic, D::OpenAi)];

fn route(backend: D) -> &'static str {
    match backend {
        D::OpenAi => "gpt",
        D::Anthropic => "claude",
    }
}

/// The backend dialect a request reached, from the path the upstream saw.
fn dialect_of(s: &Seen) -> D {
    if s.path == "/v1/messages" {
        D::Anthropic
    } else {
        D::OpenAi
    }
}

/// Path, headers and body of a caller's request in `caller` dialect to the route on `backend`.
fn request(caller: D, backend: D, stream: bool) -> (&'static str, Vec<(&'static str, &'static str)>, String) {
    let model = route(backend);
    match caller {
        D::OpenAi => (
            "/v1/chat/completions",
            vec![("content-type", "application/json"), ("authorization", "Bearer sk-caller")],
            json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        ),
        D::Anthropic => (
            "/v1/messages",
            vec![("content-type", "application/json"), ("x-api-key", "sk-caller"), ("anthropic-version", "2023-06-01")],
            json!({"model": model, "stream": stream, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        ),
    }
}

async fn ask(
    gw: &switchyard::server::Running,
    caller: D,
    backend: D,
    stream: bool,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let (path, headers, body) = request(caller, backend, stream);
    call(gw.addr, "POST", path, &headers, body).await
}

/// Asserts an error body of the caller's dialect and returns its message.
fn error_message(caller: D, body: &[u8]) -> String {
    let v = json(body);
    if caller == D::Anthropic {
        assert_eq!(v["type"], "error", "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
    }
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("no error.message in {v}")).to_owned()
}

/// The events of an event-stream body, in order.
fn events(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body).split("\n\n").filter(|e| !e.trim().is_empty()).map(str::to_owned).collect()
}

/// Asserts the stream ends with one error event of the caller's dialect (and nothing that looks like
/// a normal end) and returns its message.
fn final_error_event(caller: D, body: &[u8]) -> String {
    let evs = events(body);
    let last = evs.last().unwrap_or_else(|| panic!("empty stream"));
    let data = last.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_else(|| panic!("no data in {last:?}"));
    match caller {
        D::OpenAi => {
            assert!(!evs.iter().any(|e| e.contains("[DONE]")), "a cut stream must not end with [DONE]: {evs:?}");
        }
        D::Anthropic => {
            assert!(last.starts_with("event: error\n"), "{last:?}");
            assert!(!evs.iter().any(|e| e.starts_with("event: message_stop")), "no message_stop: {evs:?}");
        }
    }
    error_message(caller, data.as_bytes())
}

fn faults_of(text: &str, backend: &str, fault: &str) -> f64 {
    metric(text, &format!(r#"switchyard_upstream_faults_total{{backend="{backend}",fault="{fault}"}}"#))
}

/// Both backends counted `n` of `fault` in `switchyard_upstream_faults_total`, and `n` errors of
/// `kind` in `switchyard_request_errors_total`.
fn assert_counted_on_both(m: &str, fault: &str, kind: &str, n: f64) {
    for b in ["oa", "an"] {
        assert_eq!(faults_of(m, b, fault), n, "{b} {fault}: {m}");
        assert_eq!(errors_of(m, b, kind), n, "{b} {kind}: {m}");
    }
}

fn errors_of(text: &str, backend: &str, kind: &str) -> f64 {
    let route = if backend == "oa" { "gpt" } else { "claude" };
    metric(
        text,
        &format!(
            r#"switchyard_request_errors_total{{backend="{backend}",flag="",kind="{kind}",route="{route}",variant="control"}}"#
        ),
    )
}

/// The first events of a stream in `d` dialect, without its finish.
fn stream_start(d: D) -> &'static str {
    match d {
        D::OpenAi => concat!(
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        ),
        D::Anthropic => concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        ),
    }
}

/// The rest of a complete stream in `d` dialect.
fn stream_finish(d: D) -> &'static str {
    match d {
        D::OpenAi => concat!(
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        ),
        D::Anthropic => concat!(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ),
    }
}

#[tokio::test]
async fn a_reset_or_close_before_the_response_headers_gives_502_upstream_protocol_in_the_callers_dialect() {
    for (end, fault) in [(Step::Reset, "reset"), (Step::Close, "reset")] {
        let up = raw_upstream(move |_| vec![end.clone()]).await;
        let gw = gateway(FAULTS, &up.url()).await;
        for (caller, backend) in COMBOS {
            for stream in [false, true] {
                let (status, _, body) = ask(&gw, caller, backend, stream).await;
                assert_eq!(status, 502, "{caller:?} on {backend:?}");
                let msg = error_message(caller, &body);
                assert!(msg.contains("closed the connection without a response"), "{msg}");
                if caller == D::OpenAi {
                    assert_eq!(json(&body)["error"]["code"], "upstream_protocol");
                }
            }
        }
        let m = metrics_text(gw.addr).await;
        assert_counted_on_both(&m, fault, "upstream_protocol", 4.0);
    }
}

#[tokio::test]
async fn bytes_that_are_not_http_give_502_bad_http_and_a_refused_connection_stays_upstream_connect() {
    let up = raw_upstream(|_| {
        vec![Step::Write(Bytes::from_static(b"SSH-2.0-OpenSSH_9.6\r\n\r\n\x00\x01garbage")), Step::Close]
    })
    .await;
    let gw = gateway(FAULTS, &up.url()).await;
    for (caller, backend) in COMBOS {
        let (status, _, body) = ask(&gw, caller, backend, false).await;
        assert_eq!(status, 502);
        assert!(error_message(caller, &body).contains("not HTTP"));
    }
    let m = metrics_text(gw.addr).await;
    assert_eq!(faults_of(&m, "oa", "bad_http"), 2.0, "{m}");
    assert_eq!(errors_of(&m, "an", "upstream_protocol"), 2.0, "{m}");

    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = gateway(FAULTS, &format!("http://{unused}")).await;
    let (status, _, _) = ask(&gw, D::Anthropic, D::OpenAi, false).await;
    assert_eq!(status, 502);
    let m = metrics_text(gw.addr).await;
    assert_eq!(faults_of(&m, "oa", "connect"), 1.0, "{m}");
    assert_eq!(errors_of(&m, "oa", "upstream_connect"), 1.0, "{m}");
}

/// A raw answer: the head, part of the body, then the connection goes (`end`).
fn cut_mid_body(s: &Seen, stream: bool, end: Step) -> Vec<Step> {
    let d = dialect_of(s);
    let mut steps = if stream {
        let head = http_head(200, &[("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]);
        vec![Step::Write(head), Step::Write(http_chunk(stream_start(d)))]
    } else {
        let head = http_head(200, &[("content-type", "application/json"), ("content-length", "1000")]);
        vec![
            Step::Write(head),
            Step::Write(Bytes::from_static(b"{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[")),
        ]
    };
    steps.push(Step::Pause(Duration::from_millis(200)));
    steps.push(end);
    steps
}

#[tokio::test]
async fn a_connection_cut_mid_body_ends_a_stream_with_an_error_event_aborts_a_relayed_body_and_is_a_502_when_translated(
) {
    for end in [Step::Reset, Step::Close] {
        let up = raw_upstream(move |s| {
            let stream = s.body.windows(13).any(|w| w == b"\"stream\":true");
            cut_mid_body(s, stream, end.clone())
        })
        .await;
        let gw = gateway(FAULTS, &up.url()).await;
        for (caller, backend) in COMBOS {
            // Streamed: what arrived is relayed (translated), then an error event of the caller's dialect.
            let (status, _, body) = ask(&gw, caller, backend, true).await;
            assert_eq!(status, 200);
            let msg = final_error_event(caller, &body);
            assert!(msg.contains("broke off"), "{caller:?} on {backend:?}: {msg}");
            assert!(String::from_utf8_lossy(&body).contains("Hel"), "the text that arrived was relayed");

            // Not streamed.
            let (path, headers, req) = request(caller, backend, false);
            let resp = send(&client(), "POST", format!("http://{}{path}", gw.addr), &headers, req).await;
            if caller == backend {
                assert_eq!(resp.status(), 200, "the headers were relayed before the body broke");
                let read = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await.unwrap();
                assert!(read.is_err(), "the caller sees an incomplete body, never a short one that looks whole");
            } else {
                assert_eq!(resp.status(), 502);
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert!(error_message(caller, &body).contains("broke off"));
            }
        }
        let m = metrics_text(gw.addr).await;
        assert_counted_on_both(&m, "reset", "upstream_protocol", 4.0);
    }
}

#[tokio::test]
async fn malformed_json_in_a_200_is_a_502_when_translated_and_relayed_byte_for_byte_on_the_same_dialect() {
    const BROKEN: &str = "{\"id\": \"x\", \"choices\": [{\"message\": {\"content\": \"hi\"";
    let up = mock_upstream(handler(|_| raw_response(200, "application/json", BROKEN))).await;
    let gw = gateway(FAULTS, &up.url()).await;
    for (caller, backend) in COMBOS {
        let (status, _, body) = ask(&gw, caller, backend, false).await;
        if caller == backend {
            assert_eq!(status, 200, "the gateway does not parse what it forwards");
            assert_eq!(body, BROKEN.as_bytes());
        } else {
            assert_eq!(status, 502);
            assert!(error_message(caller, &body).contains("not valid JSON"));
        }
    }
    let m = metrics_text(gw.addr).await;
    assert_counted_on_both(&m, "malformed_json", "upstream_protocol", 1.0);
}

#[tokio::test]
async fn malformed_sse_ends_a_translated_stream_with_an_error_event_and_is_relayed_on_the_same_dialect() {
    const JUNK: &str = "data: <html>502 Bad Gateway</html>\n\n";
    let up = mock_upstream(handler(|s| {
        let d = dialect_of(&s);
        raw_response(200, "text/event-stream", format!("{}{JUNK}{}", stream_start(d), stream_finish(d)))
    }))
    .await;
    let gw = gateway(FAULTS, &up.url()).await;
    for (caller, backend) in COMBOS {
        let (status, _, body) = ask(&gw, caller, backend, true).await;
        assert_eq!(status, 200);
        if caller == backend {
            let whole = format!("{}{JUNK}{}", stream_start(backend), stream_finish(backend));
            assert_eq!(String::from_utf8_lossy(&body), whole, "relayed untouched");
        } else {
            assert!(final_error_event(caller, &body).contains("not JSON"));
        }
    }
    let m = metrics_text(gw.addr).await;
    assert_counted_on_both(&m, "malformed_sse", "upstream_protocol", 1.0);
}

#[tokio::test]
async fn a_stream_that_ends_cleanly_before_its_finish_gets_an_error_event_in_every_combination() {
    let up = mock_upstream(handler(|s| {
        let d = dialect_of(&s);
        if s.body.windows(8).any(|w| w == b"complete") {
            raw_response(200, "text/event-stream", format!("{}{}", stream_start(d), stream_finish(d)))
        } else if s.body.windows(12).any(|w| w == b"no-done-line") {
            // A finish reason but no `[DONE]` (some OpenAI-compatible servers): complete.
            let finish = stream_finish(d).replace("data: [DONE]\n\n", "");
            raw_response(200, "text/event-stream", format!("{}{finish}", stream_start(d)))
        } else {
            raw_response(200, "text/event-stream", stream_start(d))
        }
    }))
    .await;
    let gw = gateway(FAULTS, &up.url()).await;
    for (caller, backend) in COMBOS {
        let (status, _, body) = ask(&gw, caller, backend, true).await;
        assert_eq!(status, 200);
        let msg = final_error_event(caller, &body);
        assert!(msg.contains("ended"), "{caller:?} on {backend:?}: {msg}");
        assert!(String::from_utf8_lossy(&body).contains("Hel"));

        for marker in ["complete", "no-done-line"] {
            let (path, headers, req) = request(caller, backend, true);
            let req = req.replace("\"hi\"", &format!("\"{marker}\""));
            let (status, _, body) = call(gw.addr, "POST", path, &headers, req).await;
            assert_eq!(status, 200);
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains("error"),
                "{marker}, {caller:?} on {backend:?}: a complete stream has no error: {text}"
            );
        }
    }
    let m = metrics_text(gw.addr).await;
    assert_counted_on_both(&m, "truncated", "upstream_protocol", 2.0);
}

#[tokio::test]
async fn a_429_keeps_its_retry_after_and_comes_back_in_the_callers_dialect_in_every_combination() {
    let up = mock_upstream(handler(|s| {
        let mut r = match dialect_of(&s) {
            D::OpenAi => json_response(429, json!({"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})),
            D::Anthropic => json_response(429, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})),
        };
        r.headers_mut().insert("retry-after", "7".parse().unwrap());
        r
    }))
    .await;
    let gw = gateway(FAULTS, &up.url()).await;
    for (caller, backend) in COMBOS {
        for stream in [false, true] {
            let (status, h, body) = ask(&gw, caller, backend, stream).await;
            assert_eq!(status, 429, "{caller:?} on {backend:?}");
            assert_eq!(h["retry-after"], "7");
            assert_eq!(error_message(caller, &body), "slow down");
            if caller == D::Anthropic {
                assert_eq!(json(&body)["error"]["type"], "rate_limit_error");
            }
        }
    }
    let m = metrics_text(gw.addr).await;
    assert_counted_on_both(&m, "status_429", "upstream_status", 4.0);
}

#[tokio::test]
async fn a_redirect_is_never_followed_nor_passed_on_and_gives_502_upstream_status() {
    let up = mock_upstream(handler(|s| {
        let status = s.headers["x-status"].to_str().unwrap().parse().unwrap();
        let mut r = raw_response(status, "text/html", "moved");
        r.headers_mut().insert("location", "http://127.0.0.1:9/v1/steal-credentials".parse().unwrap());
        r
    }))
    .await;
    let gw = gateway(FAULTS, &up.url()).await;
    for code in ["301", "302", "307", "308"] {
        for (caller, backend) in COMBOS {
            let (path, mut headers, req) = request(caller, backend, false);
            headers.push(("x-status", code));
            let (status, h, body) = call(gw.addr, "POST", path, &headers, req).await;
            assert_eq!(status, 502, "{code} {caller:?} on {backend:?}");
            assert!(h.get("location").is_none(), "no location header reaches the caller");
            let msg = error_message(caller, &body);
            assert!(msg.contains(&format!("answered {code}")), "{msg}");
            assert!(!msg.contains("steal-credentials"), "the target is not named: {msg}");
            if caller == D::OpenAi {
                assert_eq!(json(&body)["error"]["code"], "upstream_status");
            }
        }
    }
    assert!(up.requests().iter().all(|s| s.path.starts_with("/v1/messages") || s.path == "/v1/chat/completions"));
    assert_eq!(up.requests().len(), 16, "not followed");
    let m = metrics_text(gw.addr).await;
    assert_counted_on_both(&m, "redirect", "upstream_status", 8.0);
}

#[tokio::test]
async fn a_huge_same_dialect_body_passes_intact_and_is_streamed_not_buffered() {
    const HALF: usize = 10 * 1024 * 1024;
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    let gate = std::sync::Arc::new(std::sync::Mutex::new(Some(gate_rx)));
    let up = mock_upstream(handler(move |_| {
        let mut gate = gate.lock().unwrap().take();
        let (tx, resp) = body_channel("application/json");
        tokio::spawn(async move {
            for i in 0..(2 * HALF / 65536) {
                if i == HALF / 65536 {
                    if let Some(g) = gate.take() {
                        let _ = g.await;
                    }
                }
                let byte = b'a' + (i % 26) as u8;
                if tx.send(Bytes::from(vec![byte; 65536])).await.is_err() {
                    return;
                }
            }
        });
        resp
    }))
    .await;
    let gw = gateway(FAULTS, &up.url()).await;
    let (path, headers, req) = request(D::OpenAi, D::OpenAi, false);
    let resp = send(&client(), "POST", format!("http://{}{path}", gw.addr), &headers, req).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::with_capacity(2 * HALF);
    while got.len() < HALF {
        got.extend_from_slice(
            &next_chunk(&mut body).await.expect("the first half arrives before the upstream sends the rest"),
        );
    }
    gate_tx.send(()).unwrap();
    while let Some(c) = next_chunk(&mut body).await {
        got.extend_from_slice(&c);
    }
    assert_eq!(got.len(), 2 * HALF);
    assert!(got.chunks(65536).enumerate().all(|(i, c)| c.iter().all(|b| *b == b'a' + (i % 26) as u8)), "intact");
}

#[tokio::test]
async fn a_translated_reply_in_several_frames_is_read_whole() {
    // The reply's text arrives in pieces, apart in time: the frames are joined, not one taken.
    let up = mock_upstream(handler(|s| {
        let text = serde_json::to_vec(&match dialect_of(&s) {
            D::OpenAi => openai_reply("gpt-up"),
            D::Anthropic => anthropic_reply("claude-up"),
        })
        .unwrap();
        let (tx, resp) = body_channel("application/json");
        tokio::spawn(async move {
            for piece in text.chunks(7) {
                if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        resp
    }))
    .await;
    let gw = gateway(FAULTS, &up.url()).await;
    for (caller, backend) in [(D::OpenAi, D::Anthropic), (D::Anthropic, D::OpenAi)] {
        let (status, _, body) = ask(&gw, caller, backend, false).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v = json(&body);
        match caller {
            D::OpenAi => {
                assert_eq!(v["choices"][0]["message"]["content"], "hi there", "{v}");
                assert_eq!(v["usage"]["total_tokens"], 5, "{v}");
            }
            D::Anthropic => {
                assert_eq!(v["content"][0]["text"], "hi there", "{v}");
                assert_eq!(v["usage"]["input_tokens"], 3, "{v}");
            }
        }
    }
    // Both replies are metered: 2 output tokens each.
    let m = metrics_text(gw.addr).await;
    let output: f64 = m
        .lines()
        .filter(|l| l.starts_with("switchyard_tokens_total{") && l.contains(r#"type="output""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(output, 4.0, "{m}");
}

#[tokio::test]
async fn a_translated_body_over_max_response_bytes_is_a_502_saying_so_and_the_same_dialect_is_not_limited() {
    let up = mock_upstream(handler(|s| {
        let pad = "x".repeat(100 * 1024);
        match dialect_of(&s) {
            D::OpenAi => {
                let mut v = openai_reply("gpt-up");
                v["choices"][0]["message"]["content"] = pad.into();
                json_response(200, v)
            }
            D::Anthropic => {
                let mut v = anthropic_reply("claude-up");
                v["content"][0]["text"] = pad.into();
                json_response(200, v)
            }
        }
    }))
    .await;
    let gw = gateway(FAULTS, &up.url()).await;
    for (caller, backend) in COMBOS {
        let (status, _, body) = ask(&gw, caller, backend, false).await;
        if caller == backend {
            assert_eq!(status, 200);
            assert!(body.len() > 100 * 1024);
        } else {
            assert_eq!(status, 502);
            let msg = error_message(caller, &body);
            assert!(msg.contains("too large") && msg.contains("65536"), "{msg}");
        }
    }
    let m = metrics_text(gw.addr).await;
    for b in ["oa", "an"] {
        assert_eq!(faults_of(&m, b, "too_large"), 1.0, "{m}");
    }
}

#[tokio::test]
async fn an_error_body_over_the_limit_still_gives_a_well_formed_error_with_the_upstreams_status() {
    let up = mock_upstream(handler(|_| raw_response(500, "text/html", "<p>".repeat(1024 * 1024)))).await;
    let gw = gateway(FAULTS, &up.url()).await;
    for (caller, backend) in COMBOS {
        let (status, _, body) = ask(&gw, caller, backend, false).await;
        assert_eq!(status, 500, "{caller:?} on {backend:?}");
        assert!(body.len() < 4096, "the huge body is not passed on");
        assert!(error_message(caller, &body).contains("not shown"));
    }
    let m = metrics_text(gw.addr).await;
    assert_eq!(faults_of(&m, "an", "status_5xx"), 2.0, "{m}");
}

#[tokio::test]
async fn a_hang_before_the_headers_and_a_stall_mid_stream_are_counted_on_translated_calls_too() {
    let up = mock_upstream(std::sync::Arc::new(|s: Seen| {
        Box::pin(async move {
            let d = dialect_of(&s);
            if !s.body.windows(13).any(|w| w == b"\"stream\":true") {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            let (tx, resp) = sse_channel();
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(stream_start(d).as_bytes())).await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
            resp
        })
    }))
    .await;
    let config = FAULTS.replace("\"2s\"", "\"300ms\"");
    let gw = gateway(&config, &up.url()).await;
    for (caller, backend) in [(D::OpenAi, D::Anthropic), (D::Anthropic, D::OpenAi)] {
        let (status, _, body) = ask(&gw, caller, backend, false).await;
        assert_eq!(status, 504);
        assert!(error_message(caller, &body).contains("sent no response"));
        let (status, _, body) = ask(&gw, caller, backend, true).await;
        assert_eq!(status, 200);
        assert!(final_error_event(caller, &body).contains("sent nothing for"));
    }
    let m = metrics_text(gw.addr).await;
    for b in ["oa", "an"] {
        assert_eq!(faults_of(&m, b, "timeout_first_byte"), 1.0, "{m}");
        assert_eq!(faults_of(&m, b, "stall"), 1.0, "{m}");
        assert_eq!(errors_of(&m, b, "upstream_timeout"), 2.0, "{m}");
    }
}

#[tokio::test]
async fn a_whole_body_that_stalls_mid_way_is_a_504_when_translated_not_a_wait_for_the_total_timeout() {
    // The head and the start of a body, then silence far longer than idle_timeout (the total timeout is
    // the default 10 minutes: only the idle deadline can end this within the client's patience).
    let up = raw_upstream(|_| {
        let head = http_head(200, &[("content-type", "application/json"), ("content-length", "1000")]);
        vec![
            Step::Write(head),
            Step::Write(Bytes::from_static(b"{\"id\":\"x\",")),
            Step::Pause(Duration::from_secs(30)),
        ]
    })
    .await;
    let config = FAULTS.replace("idle_timeout = \"2s\"", "idle_timeout = \"300ms\"");
    let gw = gateway(&config, &up.url()).await;
    for (caller, backend) in [(D::OpenAi, D::Anthropic), (D::Anthropic, D::OpenAi)] {
        let (status, _, body) = ask(&gw, caller, backend, false).await;
        assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
        assert!(error_message(caller, &body).contains("stalled"));
    }
    let m = metrics_text(gw.addr).await;
    assert_counted_on_both(&m, "stall", "upstream_timeout", 1.0);
}

/// A flagged route per fault: the variant's backend fails, control (a healthy upstream) serves.
fn fallback_config(flags: &std::path::Path, broken: &str, healthy: &str) -> String {
    let mut text = format!("[flags]\nfile = {:?}\n", flags.to_str().unwrap());
    for (name, url) in [("broken", broken), ("healthy", healthy)] {
        text.push_str(&format!(
            "[backends.{name}]\nkind = \"openai\"\nbase_url = \"{url}\"\napi_key_env = \"TEST_BACKEND_KEY\"\n"
        ));
    }
    text.push_str("[backends.limited]\nkind = \"anthropic\"\nbase_url = \"{upstream}\"\n[backends.moved]\nkind = \"openai\"\nbase_url = \"{upstream}\"\n");
    for (model, variant_backend) in [("m-reset", "broken"), ("m-429", "limited"), ("m-redirect", "moved")] {
        text.push_str(&format!(
            "[[routes]]\nmodel = \"{model}\"\nflag = \"f\"\ncontrol = {{ backend = \"healthy\", model = \"control-model\" }}\nvariants = {{ \"v\" = {{ backend = \"{variant_backend}\", model = \"v-model\" }} }}\n"
        ));
    }
    text
}

#[tokio::test]
async fn a_variant_whose_backend_resets_answers_429_or_redirects_falls_back_to_control() {
    let (dir, flags) = flags_dir("faults-fallback", &variant_flag("f", &[("v", 100.0)]));
    let broken = raw_upstream(|_| vec![Step::Reset]).await;
    let healthy =
        mock_upstream(handler(|s| json_response(200, openai_reply(s.json()["model"].as_str().unwrap())))).await;
    let statuses = mock_upstream(handler(|s| {
        if dialect_of(&s) == D::Anthropic {
            let mut r = json_response(
                429,
                json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
            );
            r.headers_mut().insert("retry-after", "7".parse().unwrap());
            r
        } else {
            let mut r = raw_response(307, "text/plain", "");
            r.headers_mut().insert("location", "http://127.0.0.1:9/".parse().unwrap());
            r
        }
    }))
    .await;
    let gw = gateway_in(&dir, &fallback_config(&flags, &broken.url(), &healthy.url()), &statuses.url()).await;
    for (model, reason) in [("m-reset", "protocol"), ("m-429", "status_429"), ("m-redirect", "redirect")] {
        for caller in [D::OpenAi, D::Anthropic] {
            let (path, mut headers, _) = request(caller, D::OpenAi, false);
            headers.push(("x-distinct-id", "user-1"));
            let body =
                json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}).to_string();
            let (status, h, body) = call(gw.addr, "POST", path, &headers, body).await;
            assert_eq!(status, 200, "{model} {caller:?}: {}", String::from_utf8_lossy(&body));
            assert_eq!(h["x-switchyard-variant"], "control");
            assert_eq!(h["x-switchyard-fallback"], format!("from=v; reason={reason}").as_str());
            assert!(h.get("retry-after").is_none() && h.get("location").is_none());
        }
    }
    let m = metrics_text(gw.addr).await;
    assert_eq!(faults_of(&m, "broken", "reset"), 2.0, "{m}");
    assert_eq!(faults_of(&m, "limited", "status_429"), 2.0, "{m}");
    assert_eq!(faults_of(&m, "moved", "redirect"), 2.0, "{m}");
    assert_eq!(metric(&m, r#"switchyard_fallbacks_total{from_variant="v",reason="redirect",route="m-redirect"}"#), 2.0);

    // Without fallback, the variant's 429 is the answer, with its retry-after, in the caller's dialect.
    let no_fallback = fallback_config(&flags, &broken.url(), &healthy.url())
        .replace("[[routes]]\n", "[[routes]]\nfallback = false\n");
    let gw = gateway_in(&dir, &no_fallback, &statuses.url()).await;
    let body = json!({"model": "m-429", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let (status, h, body) = call(gw.addr, "POST", "/v1/chat/completions", &[("x-distinct-id", "user-1")], body).await;
    assert_eq!(status, 429);
    assert_eq!(h["retry-after"], "7");
    assert_eq!(error_message(D::OpenAi, &body), "slow down");
}

#[tokio::test]
async fn an_error_event_inside_a_stream_is_passed_on_in_the_callers_dialect_and_counted() {
    let up = mock_upstream(handler(|s| {
        let d = dialect_of(&s);
        let error = match d {
            D::OpenAi => "data: {\"error\":{\"message\":\"overloaded mid-stream\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
            D::Anthropic => "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"overloaded mid-stream\"}}\n\n",
        };
        raw_response(200, "text/event-stream", format!("{}{error}", stream_start(d)))
    }))
    .await;
    let gw = gateway(FAULTS, &up.url()).await;
    for (caller, backend) in COMBOS {
        let (status, _, body) = ask(&gw, caller, backend, true).await;
        assert_eq!(status, 200);
        assert_eq!(final_error_event(caller, &body), "overloaded mid-stream", "{caller:?} on {backend:?}");
        assert_eq!(events(&body).iter().filter(|e| e.contains("error")).count(), 1, "one error event, not two");
    }
    let m = metrics_text(gw.addr).await;
    assert_counted_on_both(&m, "stream_error", "upstream_status", 2.0);
}
