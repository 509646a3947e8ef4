//! The access log of the real binary, as an operator's log pipeline reads it: one line per LLM
//! request, in text and in JSON (`[server] log_format`), with the request id the caller got, the
//! route, variant, backend, status, error kind, timings and tokens; `RUST_LOG` silences it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::time::Duration;

const CONFIG: &str = r#"
[backends.oa]
kind = "openai"
base_url = "{upstream}"
api_key_env = "ACCESS_TEST_KEY"

[backends.an]
kind = "anthropic"
base_url = "{upstream}"
api_key_env = "ACCESS_TEST_KEY"

[[routes]]
model = "chat"
control = { backend = "oa", model = "gpt-upstream" }

[[routes]]
model = "translated"
control = { backend = "an", model = "claude-upstream" }

[server]
log_format = "{format}"
"#;

async fn upstream() -> MockUpstream {
    mock_upstream(handler(|seen| {
        if seen.path.ends_with("/messages") {
            json_response(200, anthropic_reply("claude-upstream"))
        } else {
            json_response(200, openai_reply("gpt-upstream"))
        }
    }))
    .await
}

fn start(format: &str, up: &MockUpstream, rust_log: &str) -> Binary {
    let dir = temp_dir("access-log");
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, CONFIG.replace("{upstream}", &up.url()).replace("{format}", format)).unwrap();
    spawn_binary_env(
        &["--config", path.to_str().unwrap()],
        &[("ACCESS_TEST_KEY", "sk-access-test"), ("RUST_LOG", rust_log)],
    )
}

/// Sends the three requests every case checks and returns the request ids the caller got.
async fn three_requests(gw: &Binary) -> [String; 3] {
    let mut ids = Vec::new();
    for (model, want) in [("chat", 200), ("translated", 200), ("no-such-model", 404)] {
        let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        let (status, headers, _) =
            call(gw.addr, "POST", "/v1/chat/completions", &[("content-type", "application/json")], body).await;
        assert_eq!(status.as_u16(), want, "{model}");
        ids.push(headers["x-request-id"].to_str().unwrap().to_owned());
    }
    ids.try_into().unwrap()
}

/// The access lines so far, waiting (5 s at most) until there are `n`.
async fn access_lines(gw: &Binary, n: usize) -> Vec<String> {
    let lines = || -> Vec<String> {
        gw.logs.lock().unwrap().iter().filter(|l| l.contains("switchyard::access")).cloned().collect()
    };
    for _ in 0..100 {
        if lines().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lines()
}

/// `name=value` pairs of a text line after its message (values in quotes are unquoted).
fn text_fields(line: &str) -> Vec<(String, String)> {
    let rest = line.split_once("switchyard::access: request ").map(|(_, r)| r).unwrap_or_else(|| panic!("{line}"));
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                value.push(c);
            }
            chars.next(); // the space after
        } else {
            value = chars.by_ref().take_while(|c| *c != ' ').collect();
        }
        out.push((name, value));
    }
    out
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// `2026-12-02T06:18:49.177412Z`, as every other line of the log has it.
fn assert_timestamp(stamp: &str, line: &str) {
    let b = stamp.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 23, 24, 25];
    assert!(
        b.len() == 27 && digits.iter().all(|&i| b[i].is_ascii_digit()) && &stamp[19..20] == "." && stamp.ends_with('Z'),
        "timestamp {stamp:?} in {line}"
    );
    let now = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    assert!(stamp.starts_with(&now) || stamp.starts_with(&yesterday), "{stamp} is not today (UTC)");
}

#[tokio::test]
async fn text_lines_carry_the_request() {
    let up = upstream().await;
    let gw = start("text", &up, "info");
    let ids = three_requests(&gw).await;
    let lines = access_lines(&gw, 3).await;
    assert_eq!(lines.len(), 3, "{}", gw.log_text());
    for (line, id) in lines.iter().zip(&ids) {
        assert_timestamp(&line[..27], line);
        assert!(line[27..].starts_with("  INFO switchyard::access: request "), "{line}");
        let f = text_fields(line);
        assert_eq!(field(&f, "request_id"), Some(id.as_str()), "{line}");
        assert_eq!(field(&f, "method"), Some("POST"));
        assert_eq!(field(&f, "path"), Some("/v1/chat/completions"));
        assert_eq!(field(&f, "dialect"), Some("openai"));
        let ms: f64 = field(&f, "duration_ms").unwrap().parse().unwrap();
        assert!(ms > 0.0 && ms < 10_000.0, "{line}");
        assert!(field(&f, "duration_ms").unwrap().split('.').nth(1).is_some_and(|d| d.len() <= 3), "{line}");
    }
    let served = text_fields(&lines[0]);
    for (name, want) in [
        ("route", "chat"),
        ("flag", ""),
        ("variant", "control"),
        ("backend", "oa"),
        ("model", "gpt-upstream"),
        ("reason", "no_flag"),
        ("stream", "false"),
        ("status", "200"),
        ("input_tokens", "3"),
        ("output_tokens", "2"),
    ] {
        assert_eq!(field(&served, name), Some(want), "{name} in {}", lines[0]);
    }
    assert!(field(&served, "ttft_ms").is_some() && field(&served, "error").is_none(), "{}", lines[0]);
    let translated = text_fields(&lines[1]);
    assert_eq!(field(&translated, "backend"), Some("an"));
    assert_eq!(field(&translated, "model"), Some("claude-upstream"));
    assert_eq!(field(&translated, "input_tokens"), Some("3"));
    let refused = text_fields(&lines[2]);
    assert_eq!(field(&refused, "status"), Some("404"));
    assert_eq!(field(&refused, "error"), Some("unknown_model"));
    assert_eq!(field(&refused, "route"), None, "{}", lines[2]);
    assert_eq!(field(&refused, "ttft_ms"), None);
    // The other lines of the log have the same shape of timestamp (one writer's, one format).
    let listening = gw.logs.lock().unwrap().iter().find(|l| l.contains("switchyard listening")).cloned().unwrap();
    assert_timestamp(&listening[..27], &listening);
}

#[tokio::test]
async fn json_lines_carry_the_request() {
    let up = upstream().await;
    let gw = start("json", &up, "info");
    let ids = three_requests(&gw).await;
    let lines = access_lines(&gw, 3).await;
    assert_eq!(lines.len(), 3, "{}", gw.log_text());
    let parsed: Vec<serde_json::Value> = lines.iter().map(|l| json(l.as_bytes())).collect();
    for ((v, id), line) in parsed.iter().zip(&ids).zip(&lines) {
        assert_timestamp(v["timestamp"].as_str().unwrap(), line);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "switchyard::access");
        assert_eq!(v["message"], "request");
        assert_eq!(v["request_id"], id.as_str());
        assert_eq!(v["method"], "POST");
        assert!(v["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    }
    let want = serde_json::json!({"route": "chat", "flag": "", "variant": "control", "backend": "oa",
        "model": "gpt-upstream", "reason": "no_flag", "stream": false, "status": 200, "input_tokens": 3,
        "output_tokens": 2});
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&parsed[0][k], v, "{k} in {}", lines[0]);
    }
    assert!(parsed[0]["ttft_ms"].is_f64());
    assert_eq!(parsed[1]["backend"], "an");
    assert_eq!(parsed[2]["status"], 404);
    assert_eq!(parsed[2]["error"], "unknown_model");
    assert!(parsed[2].get("route").is_none() && parsed[2].get("ttft_ms").is_none(), "{}", lines[2]);
}

#[tokio::test]
async fn rust_log_silences_the_access_line() {
    let up = upstream().await;
    for format in ["text", "json"] {
        let gw = start(format, &up, "info,switchyard::access=off");
        three_requests(&gw).await;
        // The requests were served and recorded; only their lines are off.
        let metrics = metrics_text(gw.addr).await;
        let served = metrics.lines().any(|l| {
            l.starts_with("switchyard_requests_total{") && l.contains(r#"route="chat""#) && !l.ends_with(" 0")
        });
        assert!(served, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = gw.log_text();
        assert!(log.contains("switchyard listening"), "{log}");
        assert!(!log.contains("switchyard::access"), "{format}: {log}");
    }
}
