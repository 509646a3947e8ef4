//! Tokens, cost and feedback per variant: read on the side of every response (streams included,
//! even when the caller did not ask for usage), priced from the table, unknown models counted as
//! unpriced, labels bounded whatever the callers send, feedback attributed to the serving variant.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use serde_json::json;

fn usage_upstream() -> Handler {
    handler(|s| {
        let v = s.json();
        let model = v["model"].as_str().unwrap_or("").to_owned();
        let stream = v["stream"].as_bool().unwrap_or(false);
        if s.path == "/v1/messages" {
            if !stream {
                let mut r = anthropic_reply(&model);
                r["usage"] = json!({"input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 0});
                return json_response(200, r);
            }
            let events = [
                (
                    "message_start",
                    json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 100, "output_tokens": 1}}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
                ),
                ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                (
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 50}}),
                ),
                ("message_stop", json!({"type": "message_stop"})),
            ];
            let body: String = events.iter().map(|(e, d)| format!("event: {e}\ndata: {d}\n\n")).collect();
            return raw_response(200, "text/event-stream", body);
        }
        let usage = json!({"prompt_tokens": 1100, "completion_tokens": 50, "total_tokens": 1150, "prompt_tokens_details": {"cached_tokens": 1000}});
        if !stream {
            let mut r = openai_reply(&model);
            r["usage"] = usage;
            return json_response(200, r);
        }
        let include = v["stream_options"]["include_usage"].as_bool().unwrap_or(false);
        let mut body = String::new();
        for (delta, finish) in
            [(json!({"role": "assistant", "content": "hi"}), json!(null)), (json!({}), json!("stop"))]
        {
            let mut c = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            if include {
                c["usage"] = json!(null);
            }
            body.push_str(&format!("data: {c}\n\n"));
        }
        if include {
            body.push_str(&format!("data: {}\n\n", json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage})));
        }
        body.push_str("data: [DONE]\n\n");
        raw_response(200, "text/event-stream", Bytes::from(body))
    })
}

const CONFIG: &str = r#"
[backends.oa]
kind = "openai"
base_url = "{upstream}"
[backends.an]
kind = "anthropic"
base_url = "{upstream}"
[[routes]]
model = "gpt"
control = { backend = "oa", model = "gpt-4o" }
[[routes]]
model = "claude"
control = { backend = "an", model = "claude-sonnet-4-5" }
[[routes]]
model = "translated"
control = { backend = "an", model = "claude-sonnet-4-5" }
[[routes]]
model = "homegrown"
control = { backend = "oa", model = "my-finetune" }
[prices.models."gpt-4o"]
input = 2.0
output = 10.0
cache_read = 1.0
"#;

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

#[tokio::test]
async fn tokens_and_cost_are_counted_for_whole_and_streamed_responses() {
    let up = mock_upstream(usage_upstream()).await;
    let gw = gateway(CONFIG, &up.url()).await;
    // OpenAI non-stream, then a stream whose caller did not ask for usage.
    call(gw.addr, "POST", "/v1/chat/completions", &[], json!({"model": "gpt", "messages": []}).to_string()).await;
    let (_, _, b) = call(
        gw.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        json!({"model": "gpt", "stream": true, "messages": []}).to_string(),
    )
    .await;
    let text = String::from_utf8_lossy(&b);
    assert!(!text.contains("\"usage\":{"), "the caller gets no usage chunk it did not ask for: {text}");
    assert_eq!(text.matches("data: ").count(), 3, "two chunks and [DONE]: {text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let sent = up.requests()[1].json();
    assert_eq!(sent["stream_options"]["include_usage"], true, "the gateway asked the backend for usage");

    let m = metrics_text(gw.addr).await;
    let l = r#"{backend="oa",model="gpt-4o",route="gpt","#;
    assert_eq!(
        value(&m, &format!(r#"switchyard_tokens_total{l}type="input",variant="control"}}"#)),
        200.0,
        "2 × (1100 − 1000 cached)"
    );
    assert_eq!(value(&m, &format!(r#"switchyard_tokens_total{l}type="cache_read",variant="control"}}"#)), 2000.0);
    assert_eq!(value(&m, &format!(r#"switchyard_tokens_total{l}type="output",variant="control"}}"#)), 100.0);
    // Configured price: 100 × $2 + 1000 × $1 + 50 × $10 per million = $0.0017 per call.
    let cost = value(&m, r#"switchyard_cost_usd_total{backend="oa",model="gpt-4o",route="gpt",variant="control"}"#);
    assert!((cost - 0.0034).abs() < 1e-9, "{cost}");
    assert_eq!(value(&m, r#"switchyard_request_cost_usd_count{route="gpt",variant="control"}"#), 2.0);

    // Anthropic stream (cumulative message_delta usage) and a translated call.
    let body =
        json!({"model": "claude", "stream": true, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    call(gw.addr, "POST", "/v1/messages", &[], body.to_string()).await;
    let body = json!({"model": "translated", "messages": [{"role": "user", "content": "hi"}]});
    let (s, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body.to_string()).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let m = metrics_text(gw.addr).await;
    assert_eq!(
        value(
            &m,
            r#"switchyard_tokens_total{backend="an",model="claude-sonnet-4-5",route="claude",type="output",variant="control"}"#
        ),
        50.0
    );
    assert_eq!(
        value(
            &m,
            r#"switchyard_tokens_total{backend="an",model="claude-sonnet-4-5",route="translated",type="cache_read",variant="control"}"#
        ),
        1000.0
    );
    // Built-in price for claude-sonnet-4-5: $3 input, $15 output per million: 100×3 + 50×15 = 1050 µ$.
    let cost = value(
        &m,
        r#"switchyard_cost_usd_total{backend="an",model="claude-sonnet-4-5",route="claude",variant="control"}"#,
    );
    assert!((cost - 0.00105).abs() < 1e-9, "{cost}");
}

#[tokio::test]
async fn an_unpriced_model_counts_tokens_and_a_warning_but_no_cost() {
    let up = mock_upstream(usage_upstream()).await;
    let gw = gateway(CONFIG, &up.url()).await;
    let (s, _, _) =
        call(gw.addr, "POST", "/v1/chat/completions", &[], json!({"model": "homegrown", "messages": []}).to_string())
            .await;
    assert_eq!(s, 200);
    let m = metrics_text(gw.addr).await;
    assert_eq!(value(&m, r#"switchyard_unpriced_requests_total{model="my-finetune",route="homegrown"}"#), 1.0);
    assert_eq!(
        value(
            &m,
            r#"switchyard_tokens_total{backend="oa",model="my-finetune",route="homegrown",type="output",variant="control"}"#
        ),
        50.0
    );
    assert!(!m.contains(r#"switchyard_cost_usd_total{backend="oa",model="my-finetune""#));
}

#[tokio::test]
async fn ten_thousand_distinct_ids_add_no_series() {
    let gw = gateway(
        "[backends.m]\nkind = \"mock\"\n[[routes]]\nmodel = \"m\"\ncontrol = { backend = \"m\", model = \"gpt-4o\" }",
        "",
    )
    .await;
    let body = json!({"model": "m", "messages": []}).to_string();
    call(gw.addr, "POST", "/v1/chat/completions", &[("x-distinct-id", "warm-up")], body.clone()).await;
    let series = |m: &str| m.lines().filter(|l| !l.starts_with('#')).count();
    let before = series(&metrics_text(gw.addr).await);
    let c = client();
    for i in 0..10_000 {
        let id = format!("user-{i}");
        let resp = send(
            &c,
            "POST",
            format!("http://{}/v1/chat/completions", gw.addr),
            &[("x-distinct-id", &id), ("x-request-id", &id)],
            body.clone(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
    }
    let after = metrics_text(gw.addr).await;
    assert_eq!(series(&after), before, "no series per caller");
    assert!(!after.contains("user-1"));
}

#[tokio::test]
async fn feedback_is_attributed_to_the_variant_that_served_the_request() {
    let (dir, flags) = flags_dir("feedback", &variant_flag("f", &[("v", 100.0)]));
    let cfg = format!(
        "[flags]\nfile = {:?}\n[backends.m]\nkind = \"mock\"\n[[routes]]\nmodel = \"m\"\nflag = \"f\"\ncontrol = {{ backend = \"m\", model = \"a\" }}\nvariants = {{ v = {{ backend = \"m\", model = \"b\" }} }}",
        flags.to_str().unwrap()
    );
    let gw = gateway_in(&dir, &cfg, "").await;
    let (_, h, _) =
        call(gw.addr, "POST", "/v1/chat/completions", &[("x-distinct-id", "u")], json!({"model": "m"}).to_string())
            .await;
    let rid = h["x-request-id"].to_str().unwrap().to_owned();
    let fb = |body: serde_json::Value| call(gw.addr, "POST", "/v1/feedback", &[], body.to_string());
    assert_eq!(fb(json!({"request_id": rid, "score": 9})).await.0, 400, "score out of range");
    assert_eq!(fb(json!({"request_id": "nope", "score": 1})).await.0, 404, "unknown id");
    let (s, _, b) = fb(json!({"request_id": rid, "score": 1, "comment": "great"})).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["variant"], "v");
    assert_eq!(fb(json!({"request_id": rid, "score": 1})).await.0, 404, "counted once");
    let m = metrics_text(gw.addr).await;
    assert_eq!(value(&m, r#"switchyard_feedback_score_count{route="m",variant="v"}"#), 1.0);
    assert_eq!(value(&m, r#"switchyard_feedback_score_sum{route="m",variant="v"}"#), 1.0);
    let d = json(&call(gw.addr, "GET", "/dashboard/data", &[], "").await.2);
    let v = d["variants"].as_array().unwrap().iter().find(|v| v["variant"] == "v").unwrap().clone();
    assert_eq!(v["requests"], 1);
    assert_eq!(v["feedback"]["count"], 1);
}

#[tokio::test]
async fn feedback_capacity_bounds_how_many_served_requests_are_remembered() {
    // A table of two slots: after six requests only the last two can still be rated.
    let cfg = "[backends.m]\nkind = \"mock\"\n[[routes]]\nmodel = \"m\"\ncontrol = { backend = \"m\", model = \"a\" }\n[server]\nfeedback_capacity = 2";
    let gw = gateway(cfg, "").await;
    for i in 1..=6 {
        let id = format!("fb-cap-{i}");
        let (s, _, _) =
            call(gw.addr, "POST", "/v1/chat/completions", &[("x-request-id", &id)], json!({"model": "m"}).to_string())
                .await;
        assert_eq!(s, 200);
    }
    let fb = |id: &str| call(gw.addr, "POST", "/v1/feedback", &[], json!({"request_id": id, "score": 1}).to_string());
    assert_eq!(fb("fb-cap-1").await.0, 404, "the oldest request is forgotten");
    let remembered = eventually(std::time::Duration::from_secs(5), || {
        let addr = gw.addr;
        Box::pin(async move {
            let body = json!({"request_id": "fb-cap-6", "score": 1}).to_string();
            call(addr, "POST", "/v1/feedback", &[], body).await.0 == 200
        })
    })
    .await;
    assert!(remembered, "the newest request can be rated");
}

#[tokio::test]
async fn flag_calls_and_generations_are_exported_to_posthog_off_the_request_path() {
    let posthog = mock_upstream(handler(|_| json_response(200, json!({"status": 1})))).await;
    let (dir, flags) = flags_dir("export", &variant_flag("f", &[("v", 100.0)]));
    let cfg = format!(
        r#"
[flags]
file = {:?}
[backends.m]
kind = "mock"
[[routes]]
model = "m"
flag = "f"
control = {{ backend = "m", model = "gpt-4o-mini" }}
variants = {{ v = {{ backend = "m", model = "gpt-4o" }} }}
[export.posthog]
host = "{}"
project_api_key_env = "TEST_POSTHOG_PROJECT_KEY"
flush_interval = "50ms"
"#,
        flags.to_str().unwrap(),
        posthog.url()
    );
    let gw = gateway_in(&dir, &cfg, "").await;
    for _ in 0..3 {
        let (s, _, _) = call(
            gw.addr,
            "POST",
            "/v1/chat/completions",
            &[("x-distinct-id", "alice")],
            json!({"model": "m"}).to_string(),
        )
        .await;
        assert_eq!(s, 200);
    }
    let events = || -> Vec<serde_json::Value> {
        posthog.requests().iter().flat_map(|r| r.json()["batch"].as_array().cloned().unwrap_or_default()).collect()
    };
    let got = eventually(std::time::Duration::from_secs(3), || {
        let n = events().iter().filter(|e| e["event"] == "$ai_generation").count();
        Box::pin(async move { n == 3 })
    })
    .await;
    assert!(got, "three generations exported: {:?}", events());
    let events = events();
    assert_eq!(posthog.requests()[0].path, "/batch/");
    assert_eq!(posthog.requests()[0].json()["api_key"], "phc_test project");
    let called: Vec<_> = events.iter().filter(|e| e["event"] == "$feature_flag_called").collect();
    assert_eq!(called.len(), 1, "deduplicated per distinct_id, flag and value: {called:?}");
    assert_eq!(called[0]["distinct_id"], "alice");
    assert_eq!(called[0]["properties"]["$feature_flag"], "f");
    assert_eq!(called[0]["properties"]["$feature_flag_response"], "v");
    let generation = events.iter().find(|e| e["event"] == "$ai_generation").unwrap();
    assert_eq!(generation["distinct_id"], "alice");
    assert_eq!(generation["properties"]["$ai_model"], "gpt-4o");
    assert_eq!(generation["properties"]["$ai_provider"], "mock");
    assert!(generation["properties"]["$ai_output_tokens"].as_u64().unwrap() > 0);
    assert!(generation["properties"]["$ai_total_cost_usd"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn a_stream_with_stream_options_null_is_metered_and_the_backend_gets_one_stream_options() {
    let up = mock_upstream(usage_upstream()).await;
    let gw = gateway(CONFIG, &up.url()).await;
    let body = r#"{"model": "gpt", "stream": true, "stream_options": null, "messages": []}"#;
    let (s, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body.to_owned()).await;
    let text = String::from_utf8_lossy(&b);
    assert_eq!(s, 200, "{text}");
    assert!(!text.contains("\"usage\":{"), "the caller gets no usage chunk it did not ask for: {text}");
    let sent = String::from_utf8_lossy(&up.requests()[0].body).into_owned();
    assert_eq!(sent.matches("stream_options").count(), 1, "one stream_options key: {sent}");
    assert_eq!(up.requests()[0].json()["stream_options"]["include_usage"], true);
    let m = metrics_text(gw.addr).await;
    let l = r#"{backend="oa",model="gpt-4o",route="gpt","#;
    assert_eq!(value(&m, &format!(r#"switchyard_tokens_total{l}type="output",variant="control"}}"#)), 50.0);
}
