//! The gateway core against a real mock upstream on loopback: same-dialect forwarding, streaming
//! relayed as it arrives, upstream errors and faults in the caller's dialect, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

mod common;

use bytes::Bytes;
use common::*;
use serde_json::json;
use std::time::Duration;

const OA: &[(&str, &str)] = &[("content-type", "application/json"), ("authorization", "Bearer sk-caller-key")];
const AN: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("x-api-key", "sk-caller-key"),
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", "tools-2024-04-04"),
];

fn echo_upstream() -> Handler {
    handler(|s| {
        let model = s.json()["model"].as_str().unwrap_or("").to_owned();
        if s.path == "/v1/messages" {
            json_response(200, anthropic_reply(&model))
        } else {
            json_response(200, openai_reply(&model))
        }
    })
}

#[tokio::test]
async fn openai_requests_are_forwarded_with_only_the_model_swapped_and_the_backend_key() {
    let up = mock_upstream(echo_upstream()).await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;
    let body = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"x_unknown":{"keep":[1,2.50,"é"]},"temperature":0.2}"#;
    let headers = [OA, &[("x-request-id", "req-abc-123"), ("x-custom", "yes"), ("x-distinct-id", "user-1")]].concat();
    let (status, h, resp) = call(gw.addr, "POST", "/v1/chat/completions", &headers, body).await;
    assert_eq!(status, 200);
    assert_eq!(json(&resp)["choices"][0]["message"]["content"], "hi there");
    assert_eq!(h["x-request-id"], "req-abc-123");
    assert_eq!(h["x-switchyard-variant"], "control");
    assert_eq!(h["x-switchyard-backend"], "oa");
    assert_eq!(h["x-switchyard-model"], "gpt-upstream");

    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    let expected = body.replace(r#""model":"chat""#, r#""model":"gpt-upstream""#);
    assert_eq!(String::from_utf8_lossy(&seen.body), expected, "every other byte of the body is unchanged");
    assert_eq!(seen.headers["authorization"], format!("Bearer {BACKEND_KEY}"));
    assert!(!format!("{:?}", seen.headers).contains("sk-caller-key"), "the caller's key never reaches the provider");
    assert_eq!(seen.headers["x-custom"], "yes");
    assert!(seen.headers.get("x-distinct-id").is_none());
}

#[tokio::test]
async fn anthropic_requests_keep_version_and_beta_headers_and_get_the_backend_key() {
    let up = mock_upstream(echo_upstream()).await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;
    let body = json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "metadata": {"user_id": "u"}});
    let (status, h, resp) = call(gw.addr, "POST", "/v1/messages", AN, body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(json(&resp)["content"][0]["text"], "hi there");
    assert_eq!(h["x-switchyard-model"], "claude-upstream");
    assert!(h.get("x-request-id").is_some(), "a request id is generated when the caller sent none");

    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.json()["model"], "claude-upstream");
    assert_eq!(seen.json()["metadata"]["user_id"], "u");
    assert_eq!(seen.headers["x-api-key"], BACKEND_KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(seen.headers["anthropic-beta"], "tools-2024-04-04");
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test]
async fn callers_over_http2_cleartext_are_served() {
    let up = mock_upstream(echo_upstream()).await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;
    let body = json!({"model": "chat", "messages": []}).to_string();
    let resp = send(&h2_client(), "POST", format!("http://{}/v1/chat/completions", gw.addr), OA, body).await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

/// The upstream sends the first event, then waits until the test saw it at the client before the rest.
async fn assert_stream_relayed_incrementally(
    path: &str,
    headers: &[(&str, &str)],
    model: &str,
    first: &str,
    rest: &[&str],
) {
    let frames: Vec<&str> = std::iter::once(first).chain(rest.iter().copied()).collect();
    let (gate_tx, up) = gated_sse_upstream(&frames).await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;
    let body =
        json!({"model": model, "stream": true, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let resp = send(&client(), "POST", format!("http://{}{path}", gw.addr), headers, body.to_string()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-switchyard-variant"], "control", "routing headers on streams too");
    let mut body = resp.into_body();
    let got_first = next_chunk(&mut body).await.expect("first event");
    assert_eq!(got_first, first.as_bytes(), "the first event arrives before the upstream sent the rest");
    gate_tx.send(()).unwrap();
    let mut rest_got = Vec::new();
    while let Some(c) = next_chunk(&mut body).await {
        rest_got.extend_from_slice(&c);
    }
    assert_eq!(String::from_utf8_lossy(&rest_got), rest.concat());
}

#[tokio::test]
async fn openai_streams_are_relayed_event_by_event() {
    assert_stream_relayed_incrementally(
        "/v1/chat/completions",
        OA,
        "chat",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
        &["data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n", "data: [DONE]\n\n"],
    )
    .await;
}

/// Events that reached the gateway together leave together: the first at once (time to first byte),
/// the rest of a burst in one write instead of one per event. Counted as HTTP/1.1 chunks at the
/// caller, which get one per write of the gateway. On a single-threaded runtime, as the gateway's
/// workers are, so the backend connection's task gets its turn in order.
#[tokio::test]
async fn a_burst_of_events_is_relayed_in_few_writes_and_the_first_at_once() {
    let events: Vec<String> = (0..40)
        .map(|i| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"))
        .chain(std::iter::once("data: [DONE]\n\n".to_owned()))
        .collect();
    let burst = {
        let mut b = http_head(200, &[("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]).to_vec();
        for e in &events {
            b.extend_from_slice(&http_chunk(e));
        }
        b.extend_from_slice(b"0\r\n\r\n");
        bytes::Bytes::from(b)
    };
    let up = raw_upstream(move |_| vec![Step::Write(burst.clone()), Step::Pause(Duration::from_millis(200))]).await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;
    let body = json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = send(&client(), "POST", format!("http://{}/v1/chat/completions", gw.addr), OA, body.to_string()).await;
    assert_eq!(resp.status(), 200);
    let mut incoming = resp.into_body();
    let (mut writes, mut got) = (0, Vec::new());
    while let Some(c) = next_chunk(&mut incoming).await {
        writes += 1;
        got.extend_from_slice(&c);
    }
    assert_eq!(String::from_utf8_lossy(&got), events.concat(), "every event, in order");
    assert!(writes <= 4, "{} events in {writes} writes", events.len());
}

#[tokio::test]
async fn anthropic_streams_are_relayed_event_by_event() {
    assert_stream_relayed_incrementally(
        "/v1/messages",
        AN,
        "claude",
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
        &["event: ping\ndata: {\"type\":\"ping\"}\n\n", "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"],
    )
    .await;
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_request() {
    let (cancelled_tx, cancelled_rx) = tokio::sync::oneshot::channel::<()>();
    let cancelled = std::sync::Arc::new(std::sync::Mutex::new(Some(cancelled_tx)));
    let up = mock_upstream(std::sync::Arc::new(move |_s| {
        let cancelled = cancelled.lock().unwrap().take();
        Box::pin(async move {
            let (tx, resp) = sse_channel();
            tokio::spawn(async move {
                for i in 0..200 {
                    if tx.send(Bytes::from(format!("data: {{\"n\":{i}}}\n\n"))).await.is_err() {
                        if let Some(c) = cancelled {
                            let _ = c.send(());
                        }
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            resp
        })
    }))
    .await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;
    let body = json!({"model": "chat", "stream": true, "messages": []}).to_string();
    let c = client();
    let resp = send(&c, "POST", format!("http://{}/v1/chat/completions", gw.addr), OA, body).await;
    let mut b = resp.into_body();
    next_chunk(&mut b).await.expect("first chunk");
    drop(b);
    drop(c);
    tokio::time::timeout(Duration::from_secs(3), cancelled_rx)
        .await
        .expect("the upstream saw the cancellation within 3 s")
        .unwrap();
}

#[tokio::test]
async fn upstream_errors_come_back_in_the_callers_dialect_with_status_and_retry_after() {
    let up = mock_upstream(handler(|s| {
        let model = s.json()["model"].as_str().unwrap_or("").to_owned();
        match model.as_str() {
            "gpt-upstream" => {
                let mut r = json_response(429, json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}}));
                r.headers_mut().insert("retry-after", "7".parse().unwrap());
                r
            }
            _ => raw_response(503, "text/html", "<html>upstream proxy melted</html>"),
        }
    }))
    .await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;

    let (status, h, body) =
        call(gw.addr, "POST", "/v1/chat/completions", OA, json!({"model": "chat", "messages": []}).to_string()).await;
    assert_eq!(status, 429);
    assert_eq!(h["retry-after"], "7");
    assert_eq!(json(&body)["error"]["code"], "rate_limit_exceeded", "a body already in the caller's dialect is kept");

    let (status, _, body) = call(
        gw.addr,
        "POST",
        "/v1/messages",
        AN,
        json!({"model": "claude", "max_tokens": 1, "messages": []}).to_string(),
    )
    .await;
    assert_eq!(status, 503);
    let b = json(&body);
    assert_eq!(b["type"], "error");
    assert_eq!(b["error"]["type"], "overloaded_error");
    assert!(b["error"]["message"].as_str().unwrap().contains("upstream proxy melted"));

    let text = call(gw.addr, "GET", "/metrics", &[], "").await.2;
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains(r#"switchyard_request_errors_total{backend="oa",flag="",kind="upstream_status",route="chat",variant="control"} 1"#), "{text}");
}

#[tokio::test]
async fn an_upstream_that_never_answers_gives_504() {
    let up = mock_upstream(std::sync::Arc::new(|_s| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json_response(200, json!({}))
        })
    }))
    .await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;
    let (status, _, body) =
        call(gw.addr, "POST", "/v1/chat/completions", OA, json!({"model": "chat", "messages": []}).to_string()).await;
    assert_eq!(status, 504);
    assert_eq!(json(&body)["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn a_refused_connection_gives_502_in_the_callers_dialect() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = gateway(TWO_ROUTES, &format!("http://{unused}")).await;
    let (status, _, body) = call(
        gw.addr,
        "POST",
        "/v1/messages",
        AN,
        json!({"model": "claude", "max_tokens": 1, "messages": []}).to_string(),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(json(&body)["error"]["type"], "api_error");
}

#[tokio::test]
async fn a_stream_that_stalls_ends_with_an_error_event_in_the_callers_dialect() {
    let up = mock_upstream(std::sync::Arc::new(|_s| {
        Box::pin(async {
            let (tx, resp) = sse_channel();
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(10)).await;
                drop(tx);
            });
            resp
        })
    }))
    .await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;
    let body = json!({"model": "claude", "stream": true, "max_tokens": 1, "messages": []}).to_string();
    let resp = send(&client(), "POST", format!("http://{}/v1/messages", gw.addr), AN, body).await;
    let mut b = resp.into_body();
    next_chunk(&mut b).await.unwrap();
    let err = next_chunk(&mut b).await.expect("an error event after the idle timeout");
    let text = String::from_utf8_lossy(&err);
    assert!(text.starts_with("event: error\ndata: "), "{text}");
    assert!(text.contains("\"type\":\"timeout_error\""), "{text}");
    assert!(next_chunk(&mut b).await.is_none(), "the stream ends after the error event");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_in_the_callers_dialect_and_the_next_request_is_served() {
    let up = mock_upstream(echo_upstream()).await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;
    let big = format!(r#"{{"model":"chat","messages":[],"pad":"{}"}}"#, "x".repeat(5000));
    let cases: Vec<(&str, &str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/v1/chat/completions", "openai", b"{not json".to_vec(), 400, "not valid JSON"),
        ("POST", "/v1/messages", "anthropic", b"[1,2]".to_vec(), 400, "must be a JSON object"),
        ("POST", "/v1/chat/completions", "openai", br#"{"messages":[]}"#.to_vec(), 400, "no `model`"),
        ("POST", "/v1/chat/completions", "openai", br#"{"model":7}"#.to_vec(), 400, "`model` must be a string"),
        (
            "POST",
            "/v1/messages",
            "anthropic",
            br#"{"model":"nope","max_tokens":1}"#.to_vec(),
            404,
            "no route serves model \"nope\"",
        ),
        ("POST", "/v1/chat/completions", "openai", big.into_bytes(), 413, "larger than 4096 bytes"),
        ("POST", "/v1/chat/completions", "openai", b"{\"model\":\"chat\xff\"}".to_vec(), 400, "not valid JSON"),
        ("GET", "/v1/messages", "anthropic", vec![], 405, "use POST"),
        ("POST", "/v2/nothing", "openai", vec![], 404, "no endpoint POST /v2/nothing"),
    ];
    for (method, path, dialect, body, want_status, want_msg) in cases {
        let headers = if dialect == "openai" { OA } else { AN };
        let (status, h, resp) = call(gw.addr, method, path, headers, body).await;
        let v = json(&resp);
        let msg = if dialect == "openai" {
            assert!(v["error"]["type"].is_string(), "{v}");
            v["error"]["message"].as_str().unwrap().to_owned()
        } else {
            assert_eq!(v["type"], "error", "{v}");
            v["error"]["message"].as_str().unwrap().to_owned()
        };
        assert_eq!(status.as_u16(), want_status, "{path}: {msg}");
        assert!(msg.contains(want_msg), "{path}: {msg:?} should mention {want_msg:?}");
        assert!(h.get("x-request-id").is_some());
        let (ok, _, _) =
            call(gw.addr, "POST", "/v1/chat/completions", OA, json!({"model": "chat", "messages": []}).to_string())
                .await;
        assert_eq!(ok, 200, "the next request is still served");
    }
    assert!(up.requests().iter().all(|s| s.json()["model"] == "gpt-upstream"), "no bad request reached the upstream");
}

#[tokio::test]
async fn models_health_and_readiness_endpoints_answer() {
    let gw = gateway(TWO_ROUTES, "http://127.0.0.1:9").await;
    let (status, _, body) = call(gw.addr, "GET", "/v1/models", &[], "").await;
    assert_eq!(status, 200);
    let ids: Vec<String> =
        json(&body)["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["chat", "claude"]);
    assert_eq!(call(gw.addr, "GET", "/healthz", &[], "").await.0, 200);
    assert_eq!(call(gw.addr, "GET", "/readyz", &[], "").await.0, 200, "ready: no flags configured");
}

/// HTTP/2 streams may run on another worker than their connection's: shutdown keeps every worker
/// up until every accept loop is done, so in-flight streams on any of them finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_http2_streams_on_every_worker_finish() {
    // Every stream sends its first event, then waits for the gate.
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let up = mock_upstream(std::sync::Arc::new(move |_s| {
        let mut gate = gate_rx.clone();
        Box::pin(async move {
            let (tx, resp) = sse_channel();
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"data: {\"n\":1}\n\n")).await.unwrap();
                let _ = gate.wait_for(|open| *open).await;
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            });
            resp
        })
    }))
    .await;
    let gw = gateway(&format!("{TWO_ROUTES}workers = 2\n"), &up.url()).await;
    let h2 = h2_client();
    let body = json!({"model": "chat", "stream": true, "messages": []}).to_string();
    let mut streams = Vec::new();
    for _ in 0..4 {
        let resp = send(&h2, "POST", format!("http://{}/v1/chat/completions", gw.addr), OA, body.clone()).await;
        let mut b = resp.into_body();
        next_chunk(&mut b).await.unwrap();
        streams.push(b);
    }
    gw.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate_tx.send(true).unwrap();
    for mut b in streams {
        assert_eq!(next_chunk(&mut b).await.unwrap(), "data: [DONE]\n\n", "an in-flight stream finished");
    }
    tokio::time::timeout(Duration::from_secs(5), gw.task).await.expect("server task ended").unwrap();
}

#[tokio::test]
async fn shutdown_stops_accepting_but_lets_an_in_flight_stream_finish() {
    let (gate_tx, up) = gated_sse_upstream(&["data: {\"n\":1}\n\n", "data: [DONE]\n\n"]).await;
    let gw = gateway(TWO_ROUTES, &up.url()).await;
    let body = json!({"model": "chat", "stream": true, "messages": []}).to_string();
    let resp = send(&client(), "POST", format!("http://{}/v1/chat/completions", gw.addr), OA, body).await;
    let mut b = resp.into_body();
    next_chunk(&mut b).await.unwrap();
    gw.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err(), "no new connections after shutdown began");
    gate_tx.send(()).unwrap();
    assert_eq!(next_chunk(&mut b).await.unwrap(), "data: [DONE]\n\n", "the in-flight stream finished");
    tokio::time::timeout(Duration::from_secs(5), gw.task).await.expect("server task ended").unwrap();
}
