//! The benchmark's hyper floor (`switchyard-bench-floor`, a bare reverse proxy `bench/run.sh` and
//! `bench/callgrind.sh` measure beside Switchyard and nginx) forwards what it gets: whole and streamed
//! responses come back as the mock upstream sends them, over reused connections, and a dead upstream
//! is a 502. Also the bench client's interleaved runs, which measure the floor beside the others.
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

/// The bench client's `interleaved` mode (what `bench/run.sh` measures one request in flight and
/// streams with) takes the targets in turns and reports each one's own samples under its name; a
/// target that answers an error status gets no samples, only its error count.
#[test]
fn the_interleaved_client_reports_each_target_apart() {
    let upstream = spawn_bench_upstream(&["--chunks", "3"]);
    let floor = spawn_bench_floor(upstream.addr);
    let dir = temp_dir("interleaved");
    let body = dir.join("body.json");
    std::fs::write(&body, r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#).unwrap();
    let target = |name: &str, addr: std::net::SocketAddr, path: &str| {
        serde_json::json!({"name": name, "url": format!("http://{addr}{path}"), "body_file": body,
            "headers": ["authorization: Bearer sk-bench"]})
    };
    let targets = serde_json::json!([
        target("direct", upstream.addr, "/v1/chat/completions"),
        target("floor", floor.addr, "/v1/chat/completions"),
        target("missing", upstream.addr, "/no-such-path"),
    ]);
    let spec = dir.join("targets.json");
    std::fs::write(&spec, targets.to_string()).unwrap();
    for stream in [false, true] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-bench-client"));
        cmd.args(["interleaved", "--targets-file"]).arg(&spec);
        cmd.args(["--block", "3", "--requests", "10", "--warmup", "2"]);
        if stream {
            cmd.arg("--stream");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(line["mode"], if stream { "interleaved-stream" } else { "interleaved-latency" });
        assert_eq!(line["block"], 3);
        for name in ["direct", "floor"] {
            let t = &line["targets"][name];
            assert_eq!(t["ok"], 10, "{name}: {t}");
            assert_eq!(t["errors"], 0, "{name}: {t}");
            let measure = if stream { &t["ttlb_us"] } else { &t["latency_us"] };
            assert_eq!(measure["n"], 10, "{name}: {t}");
            assert!(measure["p50"].as_f64().unwrap() > 0.0, "{name}: {t}");
            if stream {
                assert!(t["ttfb_us"]["p50"].as_f64() <= t["ttlb_us"]["p50"].as_f64(), "{name}: {t}");
            }
        }
        let missing = &line["targets"]["missing"];
        assert_eq!(missing["ok"], 0, "{missing}");
        assert_eq!(missing["errors"], 12, "warm-up and measured requests all failed: {missing}");
        assert!(missing["first_error"].as_str().unwrap().starts_with("status 404"), "{missing}");
    }
    // The measured phase stops at `--max-seconds`, in turns and with one target alike.
    let bounded = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-bench-client"));
        cmd.args(args).args(["--requests", "1000000", "--warmup", "1", "--max-seconds", "0"]);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let spec = spec.to_str().unwrap();
    let line = bounded(&["interleaved", "--targets-file", spec]);
    assert_eq!(line["targets"]["direct"]["ok"], 0, "{line}");
    let url = format!("http://{}/v1/chat/completions", upstream.addr);
    let line = bounded(&["latency", "--url", &url, "--body-file", body.to_str().unwrap()]);
    assert_eq!(line["ok"], 0, "{line}");
}
