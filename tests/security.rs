//! Secrets stay where they belong, checked on the real binary with debug logging: the caller's
//! credentials never reach a provider; provider keys, client keys and the admin token never appear in
//! the log, in any response (errors, `/admin/flags`, `/dashboard/data`, `/metrics`), nor in what
//! `switchyard check` prints; a provider that rejects Switchyard's own key is a 502 for the caller
//! (not a 401 that would blame the caller's key); admin endpoints refuse without the token and change
//! nothing. (Forged and foreign distinct_id signatures: `tests/auth.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

const OPENAI_KEY: &str = "sk-proj-PROVIDERSECRET0penai";
const ANTHROPIC_KEY: &str = "sk-ant-PROVIDERSECRET4nthropic";
const CLIENT_KEY: &str = "sk-client-CALLERSECRET";
const ADMIN: &str = "admin-ADMINSECRET-token";
const SECRETS: [&str; 4] = [OPENAI_KEY, ANTHROPIC_KEY, CLIENT_KEY, ADMIN];

/// An upstream that misbehaves by model: `echo-500` answers a 500 whose body quotes the credentials
/// it received (as a careless provider or proxy might), `reject-401` answers OpenAI's 401 for a bad
/// key (which quotes the key), anything else a normal reply.
fn careless_upstream() -> Handler {
    handler(|s| {
        let auth = s
            .headers
            .get("authorization")
            .or_else(|| s.headers.get("x-api-key"))
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let model = s.json()["model"].as_str().unwrap_or("").to_owned();
        let anthropic = s.path.ends_with("/messages");
        match model.as_str() {
            "echo-500" => json_response(
                500,
                json!({"error": {"message": format!("upstream saw {auth}"), "type": "server_error"}}),
            ),
            "reject-401" => json_response(
                401,
                json!({"error": {"message": format!("Incorrect API key provided: {auth}"), "type": "invalid_request_error", "code": "invalid_api_key"}}),
            ),
            m if anthropic => json_response(200, anthropic_reply(m)),
            m => json_response(200, openai_reply(m)),
        }
    })
}

/// A path, its headers and its JSON body.
type Call<'a> = (&'a str, Vec<(&'a str, &'a str)>, serde_json::Value);

fn write_config(dir: &std::path::Path, upstream: &str, log_format: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("flags.json"), variant_flag("sec-flag", &[("v", 100.0)]).to_string()).unwrap();
    let config = format!(
        r#"
[flags]
file = "flags.json"

[backends.oa]
kind = "openai"
base_url = "{upstream}"
api_key_env = "SEC_OPENAI_KEY"

[backends.an]
kind = "anthropic"
base_url = "{upstream}"
api_key_env = "SEC_ANTHROPIC_KEY"

[[routes]]
model = "chat"
flag = "sec-flag"
control = {{ backend = "oa", model = "gpt-control" }}
variants = {{ v = {{ backend = "an", model = "claude-variant" }} }}

[[routes]]
model = "echo"
control = {{ backend = "oa", model = "echo-500" }}

[[routes]]
model = "echo-anthropic"
control = {{ backend = "an", model = "echo-500" }}

[[routes]]
model = "rejected"
control = {{ backend = "oa", model = "reject-401" }}

[[routes]]
model = "rejected-cross"
control = {{ backend = "an", model = "reject-401" }}

[auth]
[[auth.keys]]
name = "app"
key_env = "SEC_CLIENT_KEY"

[admin]
token_env = "SEC_ADMIN_TOKEN"

[server]
log_format = "{log_format}"
"#
    );
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    path
}

const ENV: [(&str, &str); 5] = [
    ("SEC_OPENAI_KEY", OPENAI_KEY),
    ("SEC_ANTHROPIC_KEY", ANTHROPIC_KEY),
    ("SEC_CLIENT_KEY", CLIENT_KEY),
    ("SEC_ADMIN_TOKEN", ADMIN),
    ("RUST_LOG", "debug"),
];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} contains the secret {secret:?}:\n{text}");
    }
}

/// Everything a response shows: status line, headers and body.
fn shown(status: http::StatusCode, headers: &http::HeaderMap, body: &[u8]) -> String {
    let mut out = format!("{status}\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    out + &String::from_utf8_lossy(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_provider_a_response_or_the_log() {
    for log_format in ["text", "json"] {
        let up = mock_upstream(careless_upstream()).await;
        let dir = temp_dir("security");
        let config = write_config(&dir, &up.url(), log_format);
        let gw = spawn_binary_env(&["--config", config.to_str().unwrap()], &ENV);
        let client_bearer = format!("Bearer {CLIENT_KEY}");
        let mut everything = String::new();

        // Both dialects, both backends, stream and not, through the flag's variant and control.
        let calls: Vec<Call> = vec![
            (
                "/v1/chat/completions",
                vec![("authorization", &client_bearer), ("x-distinct-id", "u1")],
                json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}),
            ),
            (
                "/v1/chat/completions",
                vec![("authorization", &client_bearer)],
                json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": true}),
            ),
            (
                "/v1/messages",
                vec![("x-api-key", CLIENT_KEY), ("anthropic-version", "2023-06-01"), ("x-distinct-id", "u2")],
                json!({"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            ("/v1/chat/completions", vec![("authorization", &client_bearer)], json!({"model": "echo", "messages": []})),
            (
                "/v1/messages",
                vec![("x-api-key", CLIENT_KEY), ("anthropic-version", "2023-06-01")],
                json!({"model": "echo-anthropic", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            (
                "/v1/chat/completions",
                vec![("authorization", &client_bearer)],
                json!({"model": "rejected", "messages": []}),
            ),
            (
                "/v1/chat/completions",
                vec![("authorization", &client_bearer)],
                json!({"model": "rejected-cross", "messages": [{"role": "user", "content": "hi"}]}),
            ),
            // A wrong client key: refused, and the attempt does not echo it either.
            (
                "/v1/chat/completions",
                vec![("authorization", "Bearer sk-client-CALLERSECRET-wrong")],
                json!({"model": "chat", "messages": []}),
            ),
        ];
        for (path, headers, body) in &calls {
            let (status, h, b) = call(gw.addr, "POST", path, headers, body.to_string()).await;
            let text = shown(status, &h, &b);
            assert_no_secret(&format!("the response to {path} {body}"), &text);
            everything.push_str(&text);
        }
        for path in ["/admin/flags", "/dashboard/data", "/metrics", "/v1/models", "/readyz"] {
            let auth = format!("Bearer {ADMIN}");
            let (status, h, b) = call(gw.addr, "GET", path, &[("authorization", &auth)], "").await;
            assert_eq!(status, 200, "{path}");
            assert_no_secret(path, &shown(status, &h, &b));
        }

        // What the provider saw: only its own key, never the caller's.
        let seen = up.requests();
        assert!(seen.len() >= 7, "{} upstream requests", seen.len());
        for s in &seen {
            let anthropic = s.path.ends_with("/messages");
            let (own, other) = if anthropic { (ANTHROPIC_KEY, OPENAI_KEY) } else { (OPENAI_KEY, ANTHROPIC_KEY) };
            let all: String = s.headers.iter().map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or(""))).collect();
            assert!(!all.contains(CLIENT_KEY), "the caller's key reached the provider:\n{all}");
            assert!(!all.contains(other), "another provider's key reached {}:\n{all}", s.path);
            assert!(!all.contains(ADMIN));
            assert!(all.contains(own), "the provider did not get its key:\n{all}");
            assert!(!String::from_utf8_lossy(&s.body).contains(CLIENT_KEY));
        }

        // Give the access log a moment to be written, then read all of it.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let log = gw.log_text();
        assert!(log.contains("chat"), "the log has the requests:\n{log}");
        assert_no_secret(&format!("the {log_format} log"), &log);
    }
}

#[tokio::test]
async fn a_provider_that_rejects_switchyards_key_is_a_502_and_echoed_secrets_are_redacted() {
    let up = mock_upstream(careless_upstream()).await;
    let dir = temp_dir("security-502");
    let config = write_config(&dir, &up.url(), "text");
    let gw = spawn_binary_env(&["--config", config.to_str().unwrap()], &ENV);
    let bearer = format!("Bearer {CLIENT_KEY}");

    // Same dialect and cross-dialect: the caller's key was fine, the gateway's was not.
    for (path, model, dialect_type) in [
        ("/v1/chat/completions", "rejected", "server_error"),
        ("/v1/chat/completions", "rejected-cross", "server_error"),
    ] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let (status, _, b) = call(gw.addr, "POST", path, &[("authorization", &bearer)], body).await;
        assert_eq!(status, 502, "{}", String::from_utf8_lossy(&b));
        let err = json(&b);
        assert_eq!(err["error"]["type"], dialect_type, "{err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains("refused Switchyard's credentials"), "{msg}");
    }
    let (status, _, b) = call(
        gw.addr,
        "POST",
        "/v1/messages",
        &[("x-api-key", CLIENT_KEY), ("anthropic-version", "2023-06-01")],
        json!({"model": "rejected", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(json(&b)["type"], "error", "Anthropic dialect: {}", String::from_utf8_lossy(&b));

    // An error body that quotes the key is passed on with the key redacted.
    let (status, _, b) = call(
        gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        json!({"model": "echo", "messages": []}).to_string(),
    )
    .await;
    assert_eq!(status, 500);
    let msg = json(&b)["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("upstream saw Bearer [redacted]"), "{msg}");
}

#[tokio::test]
async fn admin_endpoints_refuse_without_the_token_and_change_nothing() {
    let up = mock_upstream(careless_upstream()).await;
    let dir = temp_dir("security-admin");
    let config = write_config(&dir, &up.url(), "text");
    let gw = spawn_binary_env(&["--config", config.to_str().unwrap()], &ENV);
    let kill = r#"{"active": false}"#;
    let attempts: [(&str, &str, Option<String>); 6] = [
        ("GET", "/admin/flags", None),
        ("PATCH", "/admin/flags/sec-flag", None),
        ("PATCH", "/admin/flags/sec-flag", Some("Bearer wrong".to_owned())),
        ("PATCH", "/admin/flags/sec-flag", Some(format!("Bearer {ADMIN}x"))),
        ("PATCH", "/admin/flags/sec-flag", Some(ADMIN.to_owned())),
        ("DELETE", "/admin/flags/sec-flag/override", Some(format!("bearer {}", &ADMIN[..ADMIN.len() - 1]))),
    ];
    for (method, path, auth) in &attempts {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = auth {
            headers.push(("authorization", a.as_str()));
        }
        let (status, _, b) = call(gw.addr, method, path, &headers, kill).await;
        assert_eq!(status, 401, "{method} {path} with {auth:?}: {}", String::from_utf8_lossy(&b));
        assert_no_secret("an admin refusal", &String::from_utf8_lossy(&b));
    }
    // The flag still routes to its variant: nothing was killed.
    let bearer = format!("Bearer {CLIENT_KEY}");
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let (status, h, _) =
        call(gw.addr, "POST", "/v1/chat/completions", &[("authorization", &bearer), ("x-distinct-id", "u1")], body)
            .await;
    assert_eq!(status, 200);
    assert_eq!(h["x-switchyard-variant"], "v");
    assert!(!dir.join("switchyard-state.json").exists(), "a refused change was persisted");
}

#[test]
fn switchyard_check_never_prints_a_secret() {
    let dir = temp_dir("security-check");
    let config = write_config(&dir, "http://127.0.0.1:9", "text");
    // Valid: the one-line summary.
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config", config.to_str().unwrap()])
        .envs(ENV)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // Invalid (a bad listen address): the problem list.
    let text = std::fs::read_to_string(&config).unwrap().replace("[flags]", "listen = \"nope\"\n[flags]");
    std::fs::write(&config, text).unwrap();
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config", config.to_str().unwrap()])
        .envs(ENV)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    for out in [&ok, &bad] {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_no_secret("switchyard check", &text);
    }
}
