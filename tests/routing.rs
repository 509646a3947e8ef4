//! Flag-based routing end to end: the seed scenario over 10,000 distinct ids against
//! `switchyard flags eval`, the kill switch and revive through the admin API (surviving a reload and
//! a restart), fallback to control, automatic cut-off and recovery, and the admin API's refusals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The seed scenario: 5% rollout sticky by distinct_id, staff (email at example.com) forced to
/// claude-sonnet, variants 50/50.
fn seed_flags() -> Value {
    json!({"flags": [{"id": 7, "key": "new-summarization-model", "active": true, "filters": {
        "groups": [
            {"properties": [{"key": "email", "type": "person", "value": "@example\\.com$", "operator": "regex"}],
             "rollout_percentage": 100, "variant": "claude-sonnet"},
            {"properties": [], "rollout_percentage": 5}
        ],
        "multivariate": {"variants": [
            {"key": "claude-sonnet", "rollout_percentage": 50}, {"key": "gpt-4o", "rollout_percentage": 50}]},
        "payloads": {}}}],
        "cohorts": {}, "group_type_mapping": {}})
}

fn seed_config(flags_path: &std::path::Path, extra_route: &str) -> String {
    format!(
        r#"
[flags]
file = {:?}
file_poll_interval = "10ms"
[admin]
token_env = "TEST_ADMIN_TOKEN"
[backends.legacy]
kind = "mock"
[backends.claude]
kind = "mock"
[backends.gpt]
kind = "mock"
[[routes]]
model = "summarizer"
flag = "new-summarization-model"
control = {{ backend = "legacy", model = "llama3" }}
variants = {{ "claude-sonnet" = {{ backend = "claude", model = "claude-sonnet-4-5" }}, "gpt-4o" = {{ backend = "gpt", model = "gpt-4o" }} }}
{extra_route}
"#,
        flags_path.to_str().unwrap()
    )
}

fn person(i: usize) -> Option<String> {
    (i % 50 == 0).then(|| format!("user{i}@example.com"))
}

async fn served(addr: std::net::SocketAddr, id: &str, email: Option<&str>) -> String {
    let props = email.map(|e| json!({"email": e}).to_string());
    let mut headers = vec![("x-distinct-id", id)];
    if let Some(p) = &props {
        headers.push(("x-person-properties", p.as_str()));
    }
    let body = json!({"model": "summarizer", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let (status, h, b) = call(addr, "POST", "/v1/chat/completions", &headers, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    let variant = h["x-switchyard-variant"].to_str().unwrap().to_owned();
    let expected_model = match variant.as_str() {
        "claude-sonnet" => "claude-sonnet-4-5",
        "gpt-4o" => "gpt-4o",
        _ => "llama3",
    };
    assert_eq!(h["x-switchyard-model"], expected_model);
    assert_eq!(json(&b)["model"], expected_model, "the variant's backend really served it");
    variant
}

/// `switchyard flags eval` in batch mode for the same ids.
fn cli_eval(flags: &std::path::Path, ids: &[(String, Option<String>)]) -> Vec<String> {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["flags", "eval", "--flags", flags.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for (id, email) in ids {
        let props = email.as_ref().map_or(json!({}), |e| json!({"email": e}));
        input.push_str(
            &json!({"flag": "new-summarization-model", "distinct_id": id, "person_properties": props}).to_string(),
        );
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    // Written from a thread: the child's output would fill the pipe while we still write.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| match &serde_json::from_str::<Value>(l).unwrap()["value"] {
            Value::String(v) => v.clone(),
            _ => "control".to_owned(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenario_over_10000_ids_matches_flags_eval_and_is_sticky() {
    let (dir, flags) = flags_dir("seed", &seed_flags());
    let gw = gateway_in(&dir, &seed_config(&flags, ""), "").await;
    let ids: Vec<(String, Option<String>)> = (0..10_000).map(|i| (format!("user-{i}"), person(i))).collect();
    let expected = cli_eval(&flags, &ids);

    let ids = Arc::new(ids);
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let ids = ids.clone();
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (worker..ids.len()).step_by(16) {
                out.push((i, served(addr, &ids[i].0, ids[i].1.as_deref()).await));
            }
            out
        }));
    }
    let mut got = vec![String::new(); ids.len()];
    for t in tasks {
        for (i, v) in t.await.unwrap() {
            got[i] = v;
        }
    }
    let mismatches: Vec<_> = (0..ids.len()).filter(|&i| got[i] != expected[i]).take(5).collect();
    assert!(mismatches.is_empty(), "served ≠ flags eval for ids {mismatches:?}");

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (i, v) in got.iter().enumerate() {
        if person(i).is_some() {
            assert_eq!(v, "claude-sonnet", "staff always get claude-sonnet");
        } else {
            *counts.entry(v.as_str()).or_default() += 1;
        }
    }
    let non_staff = ids.len() - ids.len() / 50;
    let exposed = counts.get("claude-sonnet").copied().unwrap_or(0) + counts.get("gpt-4o").copied().unwrap_or(0);
    // 5% of 9,800 is 490, σ ≈ 21.6: 4σ bounds.
    assert!((404..=576).contains(&exposed), "{counts:?} of {non_staff}");
    let claude = counts.get("claude-sonnet").copied().unwrap_or(0) as f64 / exposed as f64;
    assert!((0.41..=0.59).contains(&claude), "variants 50/50: {claude} {counts:?}");

    for i in (0..ids.len()).step_by(97) {
        assert_eq!(served(gw.addr, &ids[i].0, ids[i].1.as_deref()).await, got[i], "the same id gets the same variant");
    }
    let metrics = metrics_text(gw.addr).await;
    assert!(metrics.contains(r#"switchyard_flag_evaluations_total{flag="new-summarization-model",variant="gpt-4o"}"#));
    assert!(!metrics.contains("user-1"), "no distinct_id ever becomes a label");
}

async fn admin(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json"), ("x-switchyard-actor", "test-oncall")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let (status, _, b) = call(addr, method, path, &headers, body.to_owned()).await;
    (status.as_u16(), serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Ids that the seed flag sends to a variant (ramped to 100% so most ids are exposed).
fn exposed_ids() -> Vec<String> {
    (0..300).map(|i| format!("ks-{i}")).collect()
}

#[tokio::test]
async fn the_kill_switch_sends_everyone_to_control_at_once_and_revive_restores_assignments() {
    let dir = temp_dir("kill");
    let flags = dir.join("flags.json");
    let mut f = seed_flags();
    f["flags"][0]["filters"]["groups"][1]["rollout_percentage"] = json!(100);
    std::fs::write(&flags, f.to_string()).unwrap();
    let gw = gateway_in(&dir, &seed_config(&flags, ""), "").await;
    let ids = exposed_ids();
    let mut before = Vec::new();
    for id in &ids {
        before.push(served(gw.addr, id, None).await);
    }
    assert!(before.iter().all(|v| v != "control"), "100% rollout exposes everyone");

    let (status, v) =
        admin(gw.addr, "PATCH", "/admin/flags/new-summarization-model", Some(ADMIN_TOKEN), r#"{"active": false}"#)
            .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["killed"], true);
    assert_eq!(served(gw.addr, &ids[0], None).await, "control", "the very next request gets control");
    for id in &ids {
        assert_eq!(served(gw.addr, id, None).await, "control");
    }
    assert_eq!(served(gw.addr, "staff", Some("a@example.com")).await, "control", "killed means killed, staff too");
    let metrics = metrics_text(gw.addr).await;
    assert!(metrics.contains(r#"switchyard_flag_active{flag="new-summarization-model"} 0"#), "{metrics}");

    // The override survives a reload of the flags file...
    let mut f2 = f.clone();
    f2["flags"][0]["name"] = json!("renamed in the file");
    std::fs::write(&flags, f2.to_string()).unwrap();
    assert!(
        eventually(Duration::from_secs(3), || {
            let addr = gw.addr;
            Box::pin(async move {
                let (_, v) = admin(addr, "GET", "/admin/flags", Some(ADMIN_TOKEN), "").await;
                v["flags"][0]["definition"]["name"] == "renamed in the file"
            })
        })
        .await
    );
    assert_eq!(served(gw.addr, &ids[1], None).await, "control", "still killed after the reload");

    // ...and a restart.
    gw.shutdown.cancel();
    let gw = gateway_in(&dir, &seed_config(&flags, ""), "").await;
    assert_eq!(served(gw.addr, &ids[2], None).await, "control", "still killed after a restart");

    let (status, _) =
        admin(gw.addr, "PATCH", "/admin/flags/new-summarization-model", Some(ADMIN_TOKEN), r#"{"active": true}"#).await;
    assert_eq!(status, 200);
    for (id, was) in ids.iter().zip(&before) {
        assert_eq!(&served(gw.addr, id, None).await, was, "revive restores the exact assignment of {id}");
    }

    // A ramp, then dropping the override.
    let (status, v) = admin(
        gw.addr,
        "PATCH",
        "/admin/flags/new-summarization-model",
        Some(ADMIN_TOKEN),
        r#"{"rollout_percentage": 0}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(served(gw.addr, &ids[3], None).await, "control", "ramped to 0%");
    assert_eq!(
        served(gw.addr, "staff", Some("a@example.com")).await,
        "claude-sonnet",
        "the ramp keeps the staff condition"
    );
    let (status, v) =
        admin(gw.addr, "DELETE", "/admin/flags/new-summarization-model/override", Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["override"], Value::Null);
    assert_eq!(served(gw.addr, &ids[3], None).await, before[3]);
}

#[tokio::test]
async fn the_admin_api_refuses_bad_tokens_unknown_flags_and_malformed_patches_without_changing_state() {
    let (dir, flags) = flags_dir("admin", &seed_flags());
    let gw = gateway_in(&dir, &seed_config(&flags, ""), "").await;
    let path = "/admin/flags/new-summarization-model";
    assert_eq!(admin(gw.addr, "GET", "/admin/flags", None, "").await.0, 401);
    assert_eq!(admin(gw.addr, "PATCH", path, Some("wrong"), r#"{"active": false}"#).await.0, 401);
    assert_eq!(admin(gw.addr, "PATCH", path, Some(&format!("{ADMIN_TOKEN}x")), r#"{"active": false}"#).await.0, 401);
    assert_eq!(
        admin(gw.addr, "PATCH", "/admin/flags/no-such-flag", Some(ADMIN_TOKEN), r#"{"active": false}"#).await.0,
        404
    );
    assert_eq!(admin(gw.addr, "DELETE", &format!("{path}/override"), Some(ADMIN_TOKEN), "").await.0, 404);
    for bad in ["{nope", "[1]", "{}", r#"{"active": "no"}"#, r#"{"rollout_percentage": 150}"#, r#"{"key": "other"}"#] {
        let (status, v) = admin(gw.addr, "PATCH", path, Some(ADMIN_TOKEN), bad).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"]["message"].is_string());
    }
    let (status, v) = admin(gw.addr, "GET", "/admin/flags", Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, 200);
    assert_eq!(v["flags"][0]["override"], Value::Null, "nothing changed: {v}");
    assert_eq!(v["flags"][0]["active"], true);
    assert!(!dir.join("switchyard-state.json").exists(), "nothing persisted");
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token() {
    let gw = gateway(TWO_ROUTES, "http://127.0.0.1:9").await;
    let (status, v) = admin(gw.addr, "GET", "/admin/flags", Some("anything"), "").await;
    assert_eq!(status, 404);
    assert!(v["error"]["message"].as_str().unwrap().contains("admin API is off"));
}

#[tokio::test]
async fn a_malformed_identity_header_is_a_400_in_the_callers_dialect_on_every_route() {
    let (dir, flags) = flags_dir("identity", &seed_flags());
    let plain = "[[routes]]\nmodel = \"plain\"\ncontrol = { backend = \"legacy\", model = \"llama3\" }";
    let gw = gateway_in(&dir, &seed_config(&flags, plain), "").await;
    let bad = [
        ("x-person-properties", "{\"email\": ", "the x-person-properties header must be a JSON object: EOF"),
        (
            "x-person-properties",
            "[1, 2]",
            "the x-person-properties header must be a JSON object: invalid type: sequence",
        ),
        ("x-groups", "{\"company\": 1e999}", "the x-groups header must be a JSON object: number out of range"),
        ("x-group-properties", "\"acme\"", "the x-group-properties header must be a JSON object: invalid type: string"),
    ];
    for model in ["summarizer", "plain"] {
        for (name, value, why) in bad {
            let headers = [("x-distinct-id", "user-1"), (name, value)];
            let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
            let (status, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &headers, body.clone()).await;
            assert_eq!(status, 400, "{model} {name}: {value}");
            let v = json(&b);
            assert_eq!(v["error"]["type"], "invalid_request_error");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.starts_with(why), "{model} {name}: {msg}");
            let body = json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
            let (status, _, b) = call(gw.addr, "POST", "/v1/messages", &headers, body.to_string()).await;
            assert_eq!(status, 400);
            let v = json(&b);
            assert_eq!(
                (v["type"].as_str(), v["error"]["type"].as_str()),
                (Some("error"), Some("invalid_request_error"))
            );
            assert!(v["error"]["message"].as_str().unwrap().starts_with(why));
        }
        let good = [("x-distinct-id", "user-1"), ("x-person-properties", r#"{"email": "a@example.com"}"#)];
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let (status, h, _) = call(gw.addr, "POST", "/v1/chat/completions", &good, body).await;
        assert_eq!(status, 200);
        let expected = if model == "summarizer" { "claude-sonnet" } else { "control" };
        assert_eq!(h["x-switchyard-variant"], expected, "the staff email is read on the flagged route");
    }
}

#[tokio::test]
async fn callers_without_a_distinct_id_get_control_or_a_400_per_route() {
    let dir = temp_dir("anon");
    let flags = dir.join("flags.json");
    let mut f = seed_flags();
    f["flags"][0]["filters"]["groups"][1]["rollout_percentage"] = json!(100);
    std::fs::write(&flags, f.to_string()).unwrap();
    let strict = r#"
[[routes]]
model = "strict"
flag = "new-summarization-model"
anonymous = "reject"
control = { backend = "legacy", model = "llama3" }
"#;
    let gw = gateway_in(&dir, &seed_config(&flags, strict), "").await;
    let (s, h, _) =
        call(gw.addr, "POST", "/v1/chat/completions", &[], json!({"model": "summarizer", "messages": []}).to_string())
            .await;
    assert_eq!(s, 200);
    assert_eq!(h["x-switchyard-variant"], "control");
    let body = json!({"model": "summarizer", "user": "from-the-body", "messages": []}).to_string();
    let (_, h, _) = call(gw.addr, "POST", "/v1/chat/completions", &[], body).await;
    assert_ne!(h["x-switchyard-variant"], "control", "OpenAI `user` is the distinct_id");
    let body =
        json!({"model": "summarizer", "max_tokens": 5, "metadata": {"user_id": "from-metadata"}, "messages": []});
    let (_, h, _) = call(gw.addr, "POST", "/v1/messages", &[], body.to_string()).await;
    assert_ne!(h["x-switchyard-variant"], "control", "Anthropic metadata.user_id is the distinct_id");
    let (s, _, b) = call(
        gw.addr,
        "POST",
        "/v1/messages",
        &[],
        json!({"model": "strict", "max_tokens": 5, "messages": []}).to_string(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(json(&b)["error"]["message"].as_str().unwrap().contains("x-distinct-id"));
}

/// Upstream that fails (503) while `failing` is set, counting requests per model.
fn flaky_upstream(failing: Arc<AtomicBool>, variant_hits: Arc<AtomicUsize>) -> Handler {
    handler(move |s| {
        let model = s.json()["model"].as_str().unwrap_or("").to_owned();
        if model == "variant-model" {
            variant_hits.fetch_add(1, Ordering::SeqCst);
            if failing.load(Ordering::SeqCst) {
                return json_response(
                    503,
                    json!({"error": {"message": "overloaded", "type": "server_error", "param": null, "code": null}}),
                );
            }
        }
        json_response(200, openai_reply(&model))
    })
}

fn flaky_config(flags: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
[flags]
file = {:?}
[backends.up]
kind = "openai"
base_url = "{{upstream}}"
[[routes]]
model = "m"
flag = "f"
control = {{ backend = "up", model = "control-model" }}
variants = {{ "v" = {{ backend = "up", model = "variant-model" }} }}
{extra}
"#,
        flags.to_str().unwrap()
    )
}

#[tokio::test]
async fn a_failing_variant_falls_back_to_control_and_nothing_is_lost() {
    let (dir, flags) = flags_dir("fallback", &variant_flag("f", &[("v", 100.0)]));
    let failing = Arc::new(AtomicBool::new(true));
    let hits = Arc::new(AtomicUsize::new(0));
    let up = mock_upstream(flaky_upstream(failing.clone(), hits.clone())).await;
    let gw = gateway_in(&dir, &flaky_config(&flags, ""), &up.url()).await;
    for i in 0..20 {
        let body = json!({"model": "m", "messages": []}).to_string();
        let (s, h, b) =
            call(gw.addr, "POST", "/v1/chat/completions", &[("x-distinct-id", &format!("u{i}"))], body).await;
        assert_eq!(s, 200, "every request answered once, by control");
        assert_eq!(json(&b)["model"], "control-model");
        assert_eq!(h["x-switchyard-variant"], "control");
        assert_eq!(h["x-switchyard-fallback"], "from=v; reason=status_5xx");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 20, "each request tried the variant exactly once");
    let metrics = metrics_text(gw.addr).await;
    assert!(
        metrics.contains(r#"switchyard_fallbacks_total{from_variant="v",reason="status_5xx",route="m"} 20"#),
        "{metrics}"
    );
    failing.store(false, Ordering::SeqCst);
    assert_eq!(variant_for(gw.addr, "m", "u1").await, "v", "a healthy variant serves again");

    // With fallback off, the variant's error is the answer.
    let gw2 = gateway_in(&dir, &flaky_config(&flags, "fallback = false"), &up.url()).await;
    failing.store(true, Ordering::SeqCst);
    let (s, h, _) =
        call(gw2.addr, "POST", "/v1/chat/completions", &[("x-distinct-id", "u1")], json!({"model": "m"}).to_string())
            .await;
    assert_eq!(s, 503);
    assert_eq!(h["x-switchyard-variant"], "v");
}

#[tokio::test]
async fn a_variant_whose_error_rate_spikes_is_cut_off_then_probed_back() {
    let (dir, flags) = flags_dir("cutoff", &variant_flag("f", &[("v", 100.0)]));
    let failing = Arc::new(AtomicBool::new(true));
    let hits = Arc::new(AtomicUsize::new(0));
    let up = mock_upstream(flaky_upstream(failing.clone(), hits.clone())).await;
    let cutoff = r#"cutoff = { error_rate = 0.5, min_requests = 5, window = "60s", cooldown = "300ms", probes = 2 }"#;
    let gw = gateway_in(&dir, &flaky_config(&flags, cutoff), &up.url()).await;
    for i in 0..30 {
        let body = json!({"model": "m", "messages": []}).to_string();
        let (s, _, _) =
            call(gw.addr, "POST", "/v1/chat/completions", &[("x-distinct-id", &format!("u{i}"))], body).await;
        assert_eq!(s, 200, "no request lost while the variant fails");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 5, "after 5 failures the variant is cut off and no longer tried");
    let metrics = metrics_text(gw.addr).await;
    assert!(metrics.contains(r#"switchyard_variant_cut_off{route="m",variant="v"} 1"#), "{metrics}");

    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(variant_for(gw.addr, "m", "p1").await, "v", "half-open: a probe goes to the variant");
    assert_eq!(variant_for(gw.addr, "m", "p2").await, "v");
    assert_eq!(variant_for(gw.addr, "m", "p3").await, "v", "two good probes restore the variant");
    let metrics = metrics_text(gw.addr).await;
    assert!(metrics.contains(r#"switchyard_variant_cut_off{route="m",variant="v"} 0"#), "{metrics}");
}

#[tokio::test]
async fn a_boolean_flag_routes_true_through_its_true_variant() {
    let dir = temp_dir("bool");
    let flags = dir.join("flags.json");
    let defs = json!({"flags": [{"key": "b", "active": true, "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}}]});
    std::fs::write(&flags, defs.to_string()).unwrap();
    let cfg = format!(
        r#"
[flags]
file = {:?}
[backends.mock]
kind = "mock"
[[routes]]
model = "m"
flag = "b"
control = {{ backend = "mock", model = "old" }}
variants = {{ "true" = {{ backend = "mock", model = "new" }} }}
"#,
        flags.to_str().unwrap()
    );
    let gw = gateway_in(&dir, &cfg, "").await;
    let body = json!({"model": "m", "stream": true, "messages": []}).to_string();
    let (_, h, b) = call(gw.addr, "POST", "/v1/chat/completions", &[("x-distinct-id", "anyone")], body).await;
    assert_eq!(h["x-switchyard-variant"], "true", "routing headers on a stream");
    assert_eq!(h["x-switchyard-model"], "new");
    assert!(String::from_utf8_lossy(&b).contains("\"model\":\"new\""));
}
