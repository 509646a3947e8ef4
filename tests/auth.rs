//! Client API keys: unknown keys get 401 and keys outside their routes 403, in the caller's dialect;
//! a key bound to signed distinct_ids cannot pick its own variant; the caller's key never reaches the
//! provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

fn config(flags: &std::path::Path) -> String {
    format!(
        r#"
[flags]
file = {:?}
[auth]
distinct_id_secret_env = "TEST_ID_SECRET"
[[auth.keys]]
name = "web"
key_env = "TEST_CLIENT_KEY_WEB"
[[auth.keys]]
name = "mobile"
key_env = "TEST_CLIENT_KEY_MOBILE"
routes = ["m"]
distinct_id = "signed"
[backends.up]
kind = "openai"
base_url = "{{upstream}}"
[[routes]]
model = "m"
flag = "f"
control = {{ backend = "up", model = "control-model" }}
variants = {{ v = {{ backend = "up", model = "variant-model" }} }}
[[routes]]
model = "internal"
control = {{ backend = "up", model = "internal-model" }}
"#,
        flags.to_str().unwrap()
    )
}

#[tokio::test]
async fn callers_need_a_known_key_allowed_for_the_route_and_a_signed_id_where_required() {
    let (dir, flags) = flags_dir("auth", &variant_flag("f", &[("v", 100.0)]));
    let up =
        mock_upstream(handler(|s| json_response(200, openai_reply(s.json()["model"].as_str().unwrap_or(""))))).await;
    let gw = gateway_in(&dir, &config(&flags), &up.url()).await;
    let body = |model: &str| json!({"model": model, "messages": []}).to_string();

    let (s, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body("m")).await;
    assert_eq!(s, 401);
    assert_eq!(json(&b)["error"]["type"], "authentication_error");
    let (s, _, b) = call(gw.addr, "POST", "/v1/messages", &[("x-api-key", "sk-guess")], body("m")).await;
    assert_eq!(s, 401);
    assert_eq!(json(&b)["error"]["type"], "authentication_error", "Anthropic dialect");

    let web = [("authorization", "Bearer sk-web-client"), ("x-distinct-id", "anyone")];
    let (s, h, _) = call(gw.addr, "POST", "/v1/chat/completions", &web, body("m")).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-switchyard-variant"], "v", "a trusted key may claim any distinct_id");
    assert_eq!(call(gw.addr, "POST", "/v1/chat/completions", &web, body("internal")).await.0, 200);

    let (s, _, b) = call(gw.addr, "POST", "/v1/messages", &[("x-api-key", "sk-mobile-client")], body("internal")).await;
    assert_eq!(s, 403, "outside the key's routes");
    assert_eq!(json(&b)["error"]["type"], "permission_error");

    let mobile = |id: &'static str, sig: String| {
        vec![
            ("x-api-key", "sk-mobile-client".to_owned()),
            ("x-distinct-id", id.to_owned()),
            ("x-distinct-id-signature", sig),
        ]
    };
    let send_as = |headers: Vec<(&'static str, String)>| {
        let addr = gw.addr;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call(addr, "POST", "/v1/chat/completions", &h, json!({"model": "m"}).to_string()).await
        }
    };
    let (s, _, b) = send_as(mobile("alice", "00ff".into())).await;
    assert_eq!(s, 403, "a forged signature is refused: {}", String::from_utf8_lossy(&b));
    let (s, _, _) = send_as(mobile("alice", switchyard::auth::sign("id-signing-secret", "mallory"))).await;
    assert_eq!(s, 403, "a signature for another id is refused");
    let (s, h, _) = send_as(mobile("alice", switchyard::auth::sign("id-signing-secret", "alice"))).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-switchyard-variant"], "v");
    let (s, _, _) =
        call(gw.addr, "POST", "/v1/chat/completions", &[("x-api-key", "sk-mobile-client")], body("m")).await;
    assert_eq!(s, 200, "no distinct_id at all: served by control, nothing to forge");

    for seen in up.requests() {
        let all = format!("{:?} {}", seen.headers, String::from_utf8_lossy(&seen.body));
        assert!(
            !all.contains("sk-web-client") && !all.contains("sk-mobile-client"),
            "a client key reached the provider"
        );
    }
    let metrics = metrics_text(gw.addr).await;
    assert!(!metrics.contains("sk-"), "no key in metrics");
}

#[test]
fn a_missing_key_variable_is_a_config_problem() {
    let text = config(std::path::Path::new("flags.json")).replace("TEST_CLIENT_KEY_MOBILE", "UNSET_KEY_VAR");
    let env = |name: &str| (name != "UNSET_KEY_VAR").then(|| "x".to_owned());
    let err = switchyard::config::parse(&text, "t.toml", std::env::temp_dir(), &env).unwrap_err().to_string();
    assert!(err.contains("auth.keys[1].key_env: environment variable UNSET_KEY_VAR is not set"), "{err}");
}
