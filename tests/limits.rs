//! Limits: a request storm over the in-flight limit is shed with 503 + `retry-after` in the caller's
//! dialect (every request answered exactly once), a busy backend makes its variant fall back to
//! control, oversized or too many headers get 431, request-smuggling attempts get 400, and the
//! gateway keeps serving after each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;

const SLOW: &str = r#"
[backends.slow]
kind = "mock"
mock = { latency = "300ms" }
[[routes]]
model = "m"
control = { backend = "slow", model = "x" }
[server]
max_in_flight = 4
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_over_the_in_flight_limit_is_shed_with_503_and_retry_after() {
    let gw = gateway(SLOW, "").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let addr = gw.addr;
        let (path, body) = if i % 2 == 0 {
            ("/v1/chat/completions", json!({"model": "m", "messages": []}))
        } else {
            ("/v1/messages", json!({"model": "m", "max_tokens": 5, "messages": []}))
        };
        tasks.push(tokio::spawn(async move { (path, call(addr, "POST", path, &[], body.to_string()).await) }));
    }
    let (mut ok, mut shed) = (0, 0);
    for t in tasks {
        let (path, (status, headers, body)) = t.await.unwrap();
        match status.as_u16() {
            200 => ok += 1,
            503 => {
                shed += 1;
                assert_eq!(headers["retry-after"], "1");
                let v = json(&body);
                if path == "/v1/messages" {
                    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
                } else {
                    assert_eq!(v["error"]["code"], "unavailable", "{v}");
                }
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok + shed, 20, "every request answered exactly once");
    assert_eq!(ok, 4, "exactly the limit was served at once");
    let metrics = metrics_text(gw.addr).await;
    assert!(metrics.contains(r#"switchyard_in_flight_requests{dialect="openai"} 0"#), "slots given back: {metrics}");
    // Shed requests are counted as requests too (no route was chosen: empty route labels).
    let shed_line = r#"switchyard_requests_total{backend="",flag="",model="",route="",status="503",variant=""}"#;
    assert!(metrics.contains(&format!("{shed_line} 16")), "{metrics}");
    assert_eq!(call(gw.addr, "POST", "/v1/chat/completions", &[], json!({"model": "m"}).to_string()).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_its_in_flight_limit_sends_its_variant_to_control() {
    let (dir, flags) = flags_dir("backend-limit", &variant_flag("f", &[("v", 100.0)]));
    let cfg = format!(
        r#"
[flags]
file = {:?}
[backends.narrow]
kind = "mock"
max_in_flight = 1
mock = {{ latency = "300ms" }}
[backends.wide]
kind = "mock"
[[routes]]
model = "m"
flag = "f"
control = {{ backend = "wide", model = "control-model" }}
variants = {{ v = {{ backend = "narrow", model = "variant-model" }} }}
"#,
        flags.to_str().unwrap()
    );
    let gw = gateway_in(&dir, &cfg, "").await;
    let mut tasks = Vec::new();
    for i in 0..5 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let id = format!("u{i}");
            call(addr, "POST", "/v1/chat/completions", &[("x-distinct-id", &id)], json!({"model": "m"}).to_string())
                .await
        }));
    }
    let mut variant = 0;
    for t in tasks {
        let (status, headers, body) = t.await.unwrap();
        assert_eq!(status, 200);
        if json(&body)["model"] == "variant-model" {
            variant += 1;
        } else {
            assert_eq!(headers["x-switchyard-fallback"], "from=v; reason=overloaded");
        }
    }
    assert_eq!(variant, 1, "one call at a time on the narrow backend; the rest fell back");
}

/// Sends raw bytes on a fresh connection and returns what came back (until close or timeout).
fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_too_many_headers_and_smuggling_attempts_are_refused() {
    let gw = gateway(
        "[backends.m]\nkind = \"mock\"\n[[routes]]\nmodel = \"m\"\ncontrol = { backend = \"m\", model = \"x\" }\n[server]\nmax_header_bytes = 16384\nmax_headers = 32",
        "",
    )
    .await;
    let addr = gw.addr;
    let body = r#"{"model":"m","messages":[]}"#;
    let big = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: {}\r\ncontent-length: {}\r\n\r\n{body}",
        "a".repeat(40_000),
        body.len()
    );
    let many: String = (0..50).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many =
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{many}content-length: {}\r\n\r\n{body}", body.len());
    let dup_cl = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\ncontent-length: 5\r\n\r\n{body}",
        body.len()
    );
    let te_cl = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\nGET /admin/flags HTTP/1.1\r\nhost: x\r\n\r\n",
        body.len()
    );
    let cases = [(big, "431"), (many, "431"), (dup_cl, "400")];
    for (request, want) in cases {
        let answer = tokio::task::spawn_blocking(move || raw(addr, request.as_bytes())).await.unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {want}")),
            "want {want}, got: {}",
            &answer[..answer.len().min(200)]
        );
    }
    // Transfer-encoding wins over content-length (RFC 9112 §6.3): the chunked body is read whole, the
    // connection is closed after the answer, and the request smuggled behind it is never served.
    let answer = tokio::task::spawn_blocking(move || raw(addr, te_cl.as_bytes())).await.unwrap();
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one answer only: {answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(!answer.contains("admin API"), "the smuggled request was not served: {answer}");
    assert_eq!(call(gw.addr, "POST", "/v1/chat/completions", &[], body).await.0, 200, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let gw = gateway(
        "[backends.m]\nkind = \"mock\"\n[[routes]]\nmodel = \"m\"\ncontrol = { backend = \"m\", model = \"x\" }\n[server]\nheader_read_timeout = \"200ms\"",
        "",
    )
    .await;
    let addr = gw.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: ").unwrap();
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        let result = s.read_to_end(&mut out);
        (result.is_ok(), started.elapsed(), String::from_utf8_lossy(&out).into_owned())
    })
    .await
    .unwrap();
    assert!(closed.0, "the gateway closed the connection: {closed:?}");
    assert!(closed.1 < Duration::from_secs(10), "{closed:?}");
    assert_eq!(call(gw.addr, "POST", "/v1/chat/completions", &[], r#"{"model":"m"}"#).await.0, 200, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_connections_wait_their_turn() {
    let gw = gateway(
        "[backends.m]\nkind = \"mock\"\n[[routes]]\nmodel = \"m\"\ncontrol = { backend = \"m\", model = \"x\" }\n[server]\nmax_connections = 1",
        "",
    )
    .await;
    let addr = gw.addr;
    let request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 13\r\n\r\n{\"model\":\"m\"}";
    let mut first = std::net::TcpStream::connect(addr).unwrap();
    first.write_all(request).unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200", "the first connection is served and stays open");
    let second = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).map(|()| buf)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second connection waits while the first holds the only place");
    drop(first);
    let answer = second.await.unwrap().unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200", "served once the first connection closed");
}
