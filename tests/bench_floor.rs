//! The benchmark's hyper floor (`switchyard-bench-floor`, a bare reverse proxy `bench/run.sh` and
//! `bench/callgrind.sh` measure beside Switchyard and nginx) forwards what it gets: whole and streamed
//! responses come back as the mock upstream sends them, over reused connections, and a dead upstream
//! is a 502.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[tokio::test]
async fn the_floor_relays_whole_and_streamed_responses_unchanged() {
    let upstream = spawn_bench_upstream(&["--chunks", "7"]);
    let floor = spawn_bench_floor(upstream.addr);
    for stream in [false, true] {
        let body =
            serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
                .to_string();
        let headers = [("content-type", "application/json")];
        let direct = call(upstream.addr, "POST", "/v1/chat/completions", &headers, body.clone()).await;
        for _ in 0..20 {
            let (status, h, bytes) = call(floor.addr, "POST", "/v1/chat/completions", &headers, body.clone()).await;
            assert_eq!(status, 200);
            assert_eq!(h.get("content-type"), direct.1.get("content-type"));
            assert_eq!(bytes, direct.2, "stream: {stream}");
        }
        if stream {
            let text = String::from_utf8_lossy(&direct.2);
            assert_eq!(text.matches(r#""content":"tok "#).count(), 7, "7 content chunks: {text}");
        }
    }
}

#[tokio::test]
async fn a_dead_upstream_is_a_502() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let floor = spawn_bench_floor(dead);
    let (status, _, body) = call(floor.addr, "POST", "/v1/chat/completions", &[], "{}").await;
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body).starts_with("upstream: "), "{body:?}");
}
