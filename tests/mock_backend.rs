//! The built-in mock backend: both dialects, streaming and not, deterministic text, injected errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

const CONFIG: &str = r#"
[backends.ok]
kind = "mock"
mock = { reply = "one two three" }
[backends.broken]
kind = "mock"
mock = { error_rate = 1.0, error_status = 529 }
[[routes]]
model = "good"
control = { backend = "ok", model = "mock-model" }
[[routes]]
model = "bad"
control = { backend = "broken", model = "mock-model" }
"#;

#[tokio::test]
async fn the_mock_answers_both_dialects_streaming_and_not() {
    let gw = gateway(CONFIG, "").await;
    let (s, _, b) =
        call(gw.addr, "POST", "/v1/chat/completions", &[], json!({"model": "good", "messages": []}).to_string()).await;
    assert_eq!(s, 200);
    let v = json(&b);
    assert_eq!(v["choices"][0]["message"]["content"], "one two three");
    assert_eq!(v["model"], "mock-model");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let (s, _, b) = call(
        gw.addr,
        "POST",
        "/v1/messages",
        &[],
        json!({"model": "good", "max_tokens": 5, "messages": []}).to_string(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["content"][0]["text"], "one two three");

    let body = json!({"model": "good", "stream": true, "stream_options": {"include_usage": true}, "messages": []});
    let (_, h, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body.to_string()).await;
    assert_eq!(h["content-type"], "text/event-stream");
    let text = String::from_utf8_lossy(&b);
    let deltas: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| json(d.as_bytes())["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(deltas, "one two three");
    assert!(text.contains("\"completion_tokens\":3"), "usage chunk when asked for: {text}");
    assert!(text.ends_with("data: [DONE]\n\n"));

    let body = json!({"model": "good", "stream": true, "max_tokens": 5, "messages": []});
    let (_, _, b) = call(gw.addr, "POST", "/v1/messages", &[], body.to_string()).await;
    let events: Vec<&str> =
        String::from_utf8_lossy(&b).lines().filter_map(|l| l.strip_prefix("event: ")).map(|_| "").collect();
    assert_eq!(events.len(), 9, "message_start, block start, ping, 3 deltas, block stop, message_delta, message_stop");
}

#[tokio::test]
async fn the_mock_injects_errors_in_the_callers_dialect() {
    let gw = gateway(CONFIG, "").await;
    let (s, h, b) = call(
        gw.addr,
        "POST",
        "/v1/messages",
        &[],
        json!({"model": "bad", "max_tokens": 5, "messages": []}).to_string(),
    )
    .await;
    assert_eq!(s, 529);
    assert_eq!(h["retry-after"], "1");
    assert_eq!(json(&b)["error"]["type"], "overloaded_error");
    let (s, _, b) =
        call(gw.addr, "POST", "/v1/chat/completions", &[], json!({"model": "bad", "messages": []}).to_string()).await;
    assert_eq!(s, 529);
    assert!(json(&b)["error"]["message"].as_str().unwrap().contains("injected error 529"));
}
