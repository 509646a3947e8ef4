//! TLS both ways, with certificates made at test time (rcgen): the listener terminates TLS (`curl`
//! over HTTP/1.1 and HTTP/2 by ALPN), serves a rotated certificate to new connections and ignores a
//! broken rotation; config problems are listed at once; HTTPS backends are verified, against the
//! system roots by default or the backend's own `ca_file`; a backend that asks for a client
//! certificate (mutual TLS) gets the configured one, and refuses a gateway without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `curl` over HTTPS trusting `ca_file`: (exit code, HTTP version, body).
fn curl(ca_file: &Path, url: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca_file)
        .args(["-w", "\n%{http_version}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (out.status.code().unwrap_or(-1), version.to_owned(), body.to_owned())
}

async fn curl_async(ca_file: &Path, url: String, extra: Vec<&'static str>) -> (i32, String, String) {
    let ca_file = ca_file.to_path_buf();
    tokio::task::spawn_blocking(move || curl(&ca_file, &url, &extra)).await.unwrap()
}

const TLS_GATEWAY: &str = r#"
[backends.oa]
kind = "openai"
base_url = "{upstream}"
api_key_env = "TEST_BACKEND_KEY"

[[routes]]
model = "chat"
control = { backend = "oa", model = "gpt-upstream" }

[server.tls]
cert_file = "cert.pem"
key_file = "key.pem"
reload_interval = "50ms"
"#;

/// A TLS gateway in a fresh dir holding `cert.pem` and `key.pem` from `ca`, and `ca.pem`.
async fn tls_gateway(tag: &str, ca: &TestCa, upstream: &str) -> (std::path::PathBuf, switchyard::server::Running) {
    let dir = temp_dir(tag);
    let (cert, key) = leaf(ca);
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    let gw = gateway_in(&dir, TLS_GATEWAY, upstream).await;
    (dir, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_reach_the_gateway_over_https_with_http1_and_http2_and_plain_http_gets_nothing() {
    let up = mock_upstream(handler(|_| json_response(200, openai_reply("gpt-upstream")))).await;
    let authority = ca("Test CA");
    let (dir, gw) = tls_gateway("tls-serve", &authority, &up.url()).await;
    let base = format!("https://127.0.0.1:{}", gw.addr.port());
    let ca_file = dir.join("ca.pem");

    let (code, version, body) = curl_async(&ca_file, format!("{base}/healthz"), vec!["--http1.1"]).await;
    assert_eq!((code, version.as_str(), body.as_str()), (0, "1.1", "ok\n"));

    let chat = r#"{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}"#;
    let (code, version, body) = curl_async(
        &ca_file,
        format!("{base}/v1/chat/completions"),
        vec!["--http2", "-H", "content-type: application/json", "-d", chat],
    )
    .await;
    assert_eq!((code, version.as_str()), (0, "2"), "{body}");
    assert_eq!(json(body.as_bytes())["choices"][0]["message"]["content"], "hi there");
    assert_eq!(up.requests().len(), 1);

    // Plain HTTP on the TLS port: no answer but a closed connection; the listener goes on serving.
    let plain = send_plain(gw.addr).await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");
    let (code, _, body) = curl_async(&ca_file, format!("{base}/healthz"), vec![]).await;
    assert_eq!((code, body.as_str()), (0, "ok\n"));

    // A client that does not trust the gateway's CA refuses it (curl exit 60: certificate problem).
    let other = temp_dir("tls-other-ca").join("ca.pem");
    std::fs::write(&other, ca("Other CA").pem).unwrap();
    let (code, _, _) = curl_async(&other, format!("{base}/healthz"), vec![]).await;
    assert_eq!(code, 60);
    let (_, _, metrics) = curl_async(&ca_file, format!("{base}/metrics"), vec![]).await;
    let handshake_errors = metric_value(&metrics, "switchyard_tls_handshake_errors_total");
    assert!(handshake_errors >= 2.0, "plain HTTP and the untrusting client count: {handshake_errors}");
}

async fn send_plain(addr: std::net::SocketAddr) -> Result<http::StatusCode, String> {
    let url = format!("http://{addr}/healthz");
    let fut = client().request(
        http::Request::get(url).body(http_body_util::Full::new(bytes::Bytes::new())).map_err(|e| e.to_string())?,
    );
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Err(_) => Err("timed out".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(r)) => Ok(r.status()),
    }
}

/// The value of an unlabelled series (or the sum of a family's series) in exposition text.
fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_reaches_new_connections_and_a_broken_rotation_keeps_the_old_one() {
    let up = mock_upstream(handler(|_| json_response(200, openai_reply("gpt-upstream")))).await;
    let first = ca("First CA");
    let (dir, gw) = tls_gateway("tls-rotate", &first, &up.url()).await;
    let url = format!("https://127.0.0.1:{}/healthz", gw.addr.port());
    let first_ca = dir.join("ca.pem");
    assert_eq!(curl_async(&first_ca, url.clone(), vec![]).await.0, 0);

    // Rotate to a certificate from another CA, key first (a reader may see a mismatched pair once).
    let second = ca("Second CA");
    let second_ca = dir.join("ca2.pem");
    std::fs::write(&second_ca, &second.pem).unwrap();
    let (cert, key) = leaf(&second);
    std::fs::write(dir.join("key.pem"), key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    let rotated = eventually(Duration::from_secs(10), || {
        let (second_ca, url) = (second_ca.clone(), url.clone());
        Box::pin(async move { curl_async(&second_ca, url, vec![]).await.0 == 0 })
    })
    .await;
    assert!(rotated, "the new certificate was never served");
    assert_eq!(curl_async(&first_ca, url.clone(), vec![]).await.0, 60, "the old certificate is still served");

    // A broken rotation (garbage certificate): counted, logged, and the last good pair stays.
    std::fs::write(dir.join("cert.pem"), "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
        .unwrap();
    let metrics_url = format!("https://127.0.0.1:{}/metrics", gw.addr.port());
    let counted = eventually(Duration::from_secs(10), || {
        let (second_ca, metrics_url) = (second_ca.clone(), metrics_url.clone());
        Box::pin(async move {
            let (_, _, text) = curl_async(&second_ca, metrics_url, vec![]).await;
            text.contains("switchyard_tls_reloads_total{result=\"error\"}")
        })
    })
    .await;
    assert!(counted, "the broken rotation was not counted");
    let (code, _, body) = curl_async(&second_ca, url, vec![]).await;
    assert_eq!((code, body.as_str()), (0, "ok\n"));
}

#[test]
fn tls_problems_are_all_listed_at_once() {
    let dir = temp_dir("tls-check");
    let authority = ca("Test CA");
    let (cert, _) = leaf(&authority);
    let (_, other_key) = leaf(&authority);
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("other-key.pem"), other_key).unwrap();
    std::fs::write(dir.join("not-pem.txt"), "hello").unwrap();
    let config = r#"
[backends.plain]
kind = "openai"
base_url = "http://127.0.0.1:9"
ca_file = "cert.pem"

[backends.secure]
kind = "openai"
base_url = "https://127.0.0.1:9"
ca_file = "not-pem.txt"

[backends.gone]
kind = "anthropic"
base_url = "https://127.0.0.1:9"
ca_file = "missing-ca.pem"

[[routes]]
model = "chat"
control = { backend = "secure", model = "m" }

[server.tls]
cert_file = "cert.pem"
key_file = "other-key.pem"
"#;
    let errors = switchyard::config::parse(config, "t.toml", dir.clone(), &|_| None).unwrap_err();
    let text = errors.to_string();
    for expected in [
        "backends.plain.ca_file: only for an https:// base_url",
        "backends.secure.ca_file:",
        "no PEM certificate",
        "backends.gone.ca_file:",
        "missing-ca.pem",
        "server.tls.key_file:",
        "does not belong to the certificate",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    assert_eq!(errors.0.len(), 4, "{text}");

    let missing = r#"
[server.tls]
cert_file = "nope.pem"
key_file = "nope-key.pem"
"#;
    let text = switchyard::config::parse(missing, "t.toml", dir, &|_| None).unwrap_err().to_string();
    assert!(text.contains("server.tls.cert_file:") && text.contains("server.tls.key_file:"), "{text}");
}

/// An HTTPS upstream on 127.0.0.1 with a certificate from `ca`, answering OpenAI replies.
async fn https_upstream(ca: &TestCa) -> MockUpstream {
    let reply = handler(|_| json_response(200, openai_reply("gpt-upstream")));
    mock_upstream_with(reply, Some(tls_acceptor(ca))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_are_verified_against_the_system_roots_or_their_own_ca_file() {
    let private = ca("Private CA");
    let up = https_upstream(&private).await;
    let dir = temp_dir("tls-upstream");
    std::fs::write(dir.join("private-ca.pem"), &private.pem).unwrap();
    let config = r#"
[backends.trusted]
kind = "openai"
base_url = "https://{upstream}"
ca_file = "private-ca.pem"

[backends.system]
kind = "openai"
base_url = "https://{upstream}"

[[routes]]
model = "trusted"
control = { backend = "trusted", model = "gpt-upstream" }

[[routes]]
model = "system"
control = { backend = "system", model = "gpt-upstream" }
"#;
    let gw = gateway_in(&dir, config, &up.addr.to_string()).await;
    let body = |model: &str| serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});

    let (status, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body("trusted").to_string()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["choices"][0]["message"]["content"], "hi there");
    assert_eq!(up.requests().len(), 1);

    // The same upstream through a backend that trusts only the system roots: the handshake fails,
    // nothing is sent, and the caller gets a 502 in its dialect.
    let (status, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body("system").to_string()).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&b));
    let err = json(&b);
    assert_eq!(err["error"]["code"], "upstream_connect", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("TLS with backend \"system\" failed") && message.contains("certificate"), "{message}");
    assert_eq!(up.requests().len(), 1, "an unverified upstream got the request");
    let metrics = metrics_text(gw.addr).await;
    assert!(
        metrics.lines().any(|l| l.starts_with("switchyard_request_errors_total")
            && l.contains("backend=\"system\"")
            && l.contains("kind=\"upstream_connect\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_asks_for_a_client_certificate_gets_the_configured_one() {
    let servers = ca("Server CA");
    let clients = ca("Client CA");
    let reply = handler(|_| json_response(200, openai_reply("gpt-upstream")));
    let up = mock_upstream_with(reply, Some(tls_acceptor_requiring_client_cert(&servers, &clients))).await;
    let dir = temp_dir("tls-mutual");
    std::fs::write(dir.join("server-ca.pem"), &servers.pem).unwrap();
    let (cert, key) = leaf(&clients);
    std::fs::write(dir.join("client.pem"), cert).unwrap();
    std::fs::write(dir.join("client-key.pem"), key).unwrap();
    let (stranger_cert, stranger_key) = leaf(&ca("Stranger CA"));
    std::fs::write(dir.join("stranger.pem"), stranger_cert).unwrap();
    std::fs::write(dir.join("stranger-key.pem"), stranger_key).unwrap();
    let config = r#"
[backends.mutual]
kind = "openai"
base_url = "https://{upstream}"
ca_file = "server-ca.pem"
client_cert_file = "client.pem"
client_key_file = "client-key.pem"

[backends.anonymous]
kind = "openai"
base_url = "https://{upstream}"
ca_file = "server-ca.pem"

[backends.stranger]
kind = "openai"
base_url = "https://{upstream}"
ca_file = "server-ca.pem"
client_cert_file = "stranger.pem"
client_key_file = "stranger-key.pem"

[[routes]]
model = "mutual"
control = { backend = "mutual", model = "gpt-upstream" }

[[routes]]
model = "anonymous"
control = { backend = "anonymous", model = "gpt-upstream" }

[[routes]]
model = "stranger"
control = { backend = "stranger", model = "gpt-upstream" }
"#;
    let gw = gateway_in(&dir, config, &up.addr.to_string()).await;
    let body = |model: &str| serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});

    // Twice: the second request reuses the pooled connection.
    for _ in 0..2 {
        let (status, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body("mutual").to_string()).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
        assert_eq!(json(&b)["choices"][0]["message"]["content"], "hi there");
    }
    assert_eq!(up.requests().len(), 2);

    // Without a certificate, or with one from a CA the backend does not trust, the backend refuses
    // the handshake: nothing reaches it and the caller gets a 502 in its dialect.
    for model in ["anonymous", "stranger"] {
        let (status, _, b) = call(gw.addr, "POST", "/v1/chat/completions", &[], body(model).to_string()).await;
        assert_eq!(status, 502, "{model}: {}", String::from_utf8_lossy(&b));
        let err = json(&b);
        // `upstream_connect`, and the TLS alert in the message when the gateway saw it: with TLS
        // 1.3 the alert comes after the client's handshake, and may reach only the connection's
        // own task (then the message is generic, and the alert is logged).
        let code = err["error"]["code"].as_str().unwrap();
        assert!(matches!(code, "upstream_connect" | "upstream_protocol"), "{model}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("backend \"{model}\"")), "{model}: {message}");
        assert_eq!(up.requests().len(), 2, "{model}: a caller without the right certificate reached the backend");
    }
    let metrics = metrics_text(gw.addr).await;
    for backend in ["anonymous", "stranger"] {
        assert!(
            metrics.lines().any(|l| l.starts_with("switchyard_request_errors_total")
                && l.contains(&format!("backend=\"{backend}\""))
                && !l.ends_with(" 0")),
            "{backend}: {metrics}"
        );
    }
}

#[test]
fn client_certificate_problems_are_all_listed_at_once() {
    let dir = temp_dir("tls-client-check");
    let authority = ca("Test CA");
    let (cert, key) = leaf(&authority);
    let (_, other_key) = leaf(&authority);
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    std::fs::write(dir.join("other-key.pem"), other_key).unwrap();
    std::fs::write(dir.join("ca.pem"), &authority.pem).unwrap();
    let config = r#"
[backends.plain]
kind = "openai"
base_url = "http://127.0.0.1:9"
client_cert_file = "cert.pem"
client_key_file = "key.pem"

[backends.half]
kind = "openai"
base_url = "https://127.0.0.1:9"
client_cert_file = "cert.pem"

[backends.mismatched]
kind = "anthropic"
base_url = "https://127.0.0.1:9"
client_cert_file = "cert.pem"
client_key_file = "other-key.pem"

[backends.good]
kind = "openai"
base_url = "https://127.0.0.1:9"
client_cert_file = "cert.pem"
client_key_file = "key.pem"

[[routes]]
model = "chat"
control = { backend = "good", model = "m" }

[overrides]
redis_url = "rediss://127.0.0.1:6380"
ca_file = "ca.pem"
client_cert_file = "missing.pem"
client_key_file = "key.pem"
"#;
    let errors = switchyard::config::parse(config, "t.toml", dir.clone(), &|_| None).unwrap_err();
    let text = errors.to_string();
    for expected in [
        "backends.plain.client_cert_file: only for an https:// base_url",
        "backends.half.client_cert_file: needs `client_key_file` too",
        "backends.mismatched.client_key_file:",
        "does not belong to the certificate",
        "overrides.client_cert_file:",
        "missing.pem",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    assert_eq!(errors.0.len(), 4, "{text}");
    assert!(!text.contains("PRIVATE KEY"), "key material is never echoed: {text}");

    // The good parts alone load: the backend keeps its certificate, the overrides their TLS files.
    let good = config.replace("missing.pem", "cert.pem");
    let good = good.split("[backends.plain]").next().unwrap().to_owned()
        + "[backends.good]"
        + good.split("[backends.good]").nth(1).unwrap();
    let cfg = switchyard::config::parse(&good, "t.toml", dir, &|_| None).unwrap();
    assert!(cfg.backends["good"].client_cert.is_some());
    let tls = cfg.overrides.unwrap().tls.unwrap();
    assert!(tls.ca_pem.is_some() && tls.client_cert_pem.is_some());
    assert!(!format!("{tls:?}").contains("PRIVATE"), "{tls:?}");
}
