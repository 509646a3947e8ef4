//! Flag sources end to end: the flags file hot-reloaded under load (never a half-updated snapshot,
//! never a failed request, a malformed file keeps the old flags, symlink swaps seen), readiness, and
//! the PostHog poller against a fake PostHog on loopback (ETag / 304, errors keep the last good
//! definitions, the disk cache serves a restart during an outage).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn config(flags_section: &str) -> String {
    format!(
        r#"
{flags_section}
[backends.mock]
kind = "mock"
[[routes]]
model = "m"
flag = "f"
control = {{ backend = "mock", model = "control-model" }}
variants = {{ "a" = {{ backend = "mock", model = "model-a" }}, "b" = {{ backend = "mock", model = "model-b" }} }}
"#
    )
}

#[tokio::test]
async fn a_flags_file_rewritten_under_load_never_fails_a_request_or_shows_a_mix() {
    let dir = temp_dir("reload");
    let path = dir.join("flags.json");
    let v_a = serde_json::to_vec_pretty(&variant_flag("f", &[("a", 100.0)])).unwrap();
    let v_b = serde_json::to_vec_pretty(&variant_flag("f", &[("b", 100.0)])).unwrap();
    std::fs::write(&path, &v_a).unwrap();
    let cfg = config(&format!("[flags]\nfile = {:?}\nfile_poll_interval = \"5ms\"", path.to_str().unwrap()));
    let gw = gateway(&cfg, "").await;
    assert_eq!(variant_for(gw.addr, "m", "u").await, "a");

    // Writer: rewrites the file in place, non-atomically (truncate, half, pause, rest), 40 times.
    let writer_path = path.clone();
    let (wa, wb) = (v_a.clone(), v_b.clone());
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        for i in 0..40 {
            let content = if i % 2 == 0 { &wb } else { &wa };
            let mut f = std::fs::File::create(&writer_path).unwrap();
            f.write_all(&content[..content.len() / 2]).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(8));
            f.write_all(&content[content.len() / 2..]).unwrap();
            drop(f);
            std::thread::sleep(Duration::from_millis(8));
        }
    });
    let served = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
    let mut clients = Vec::new();
    for c in 0..4 {
        let served = served.clone();
        let addr = gw.addr;
        clients.push(tokio::spawn(async move {
            for i in 0..100 {
                let v = variant_for(addr, "m", &format!("user-{c}-{i}")).await;
                *served.lock().unwrap().entry(v).or_default() += 1;
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    writer.await.unwrap();
    let served = served.lock().unwrap().clone();
    assert_eq!(served.values().sum::<usize>(), 400, "every request answered: {served:?}");
    assert!(served.keys().all(|k| k == "a" || k == "b"), "only whole snapshots were ever seen: {served:?}");

    // The last write was version A; then a malformed file keeps it.
    assert!(
        eventually(Duration::from_secs(3), || Box::pin(async move { variant_for(gw.addr, "m", "z").await == "a" }))
            .await
    );
    std::fs::write(&path, b"{\"flags\": [ {\"key\": ").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(variant_for(gw.addr, "m", "z").await, "a", "a malformed file keeps the last good flags");
    let metrics = metrics_text(gw.addr).await;
    assert!(metrics.contains(r#"switchyard_flag_reloads_total{outcome="error",source="file"}"#), "{metrics}");
    std::fs::write(&path, &v_b).unwrap();
    assert!(
        eventually(Duration::from_secs(3), || Box::pin(async move { variant_for(gw.addr, "m", "z").await == "b" }))
            .await
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let dir = temp_dir("symlink");
    for (ts, variant) in [("ts1", "a"), ("ts2", "b")] {
        std::fs::create_dir_all(dir.join(ts)).unwrap();
        std::fs::write(dir.join(ts).join("flags.json"), variant_flag("f", &[(variant, 100.0)]).to_string()).unwrap();
    }
    symlink("ts1", dir.join("..data")).unwrap();
    symlink("..data/flags.json", dir.join("flags.json")).unwrap();
    let path = dir.join("flags.json");
    let cfg = config(&format!("[flags]\nfile = {:?}\nfile_poll_interval = \"10ms\"", path.to_str().unwrap()));
    let gw = gateway(&cfg, "").await;
    assert_eq!(variant_for(gw.addr, "m", "u").await, "a");
    // What kubelet does: a new ..data symlink renamed over the old one, atomically.
    symlink("ts2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    assert!(
        eventually(Duration::from_secs(3), || Box::pin(async move { variant_for(gw.addr, "m", "u").await == "b" }))
            .await
    );
}

#[tokio::test]
async fn readiness_waits_for_the_first_snapshot() {
    let dir = temp_dir("ready");
    let path = dir.join("flags.json");
    let cfg = config(&format!("[flags]\nfile = {:?}\nfile_poll_interval = \"10ms\"", path.to_str().unwrap()));
    let gw = gateway(&cfg, "").await;
    assert_eq!(call(gw.addr, "GET", "/readyz", &[], "").await.0, 503);
    assert_eq!(variant_for(gw.addr, "m", "u").await, "control", "requests are served by control meanwhile");
    std::fs::write(&path, variant_flag("f", &[("b", 100.0)]).to_string()).unwrap();
    assert!(
        eventually(Duration::from_secs(3), || Box::pin(async move {
            call(gw.addr, "GET", "/readyz", &[], "").await.0 == 200
        }))
        .await
    );
    assert_eq!(variant_for(gw.addr, "m", "u").await, "b");
}

/// A fake PostHog: serves `defs` with `etag`, or fails with `fail` when set.
#[derive(Clone, Default)]
struct FakePosthog {
    defs: Arc<Mutex<(serde_json::Value, String)>>,
    fail: Arc<Mutex<Option<u16>>>,
    not_modified: Arc<AtomicUsize>,
}

fn posthog_section(url: &str, cache: &std::path::Path) -> String {
    format!(
        "[flags.posthog]\nhost = {url:?}\nproject_api_key_env = \"TEST_POSTHOG_PROJECT_KEY\"\nsecret_key_env = \"TEST_POSTHOG_SECRET\"\npoll_interval = \"20ms\"\ncache_file = {:?}",
        cache.to_str().unwrap()
    )
}

#[tokio::test]
async fn the_posthog_poller_honours_etags_keeps_the_last_good_definitions_and_caches_them() {
    let fake = FakePosthog::default();
    *fake.defs.lock().unwrap() = (variant_flag("f", &[("a", 100.0)]), "\"v1\"".to_owned());
    let f2 = fake.clone();
    let up = mock_upstream(handler(move |s| {
        if let Some(status) = *f2.fail.lock().unwrap() {
            return raw_response(status, "text/plain", "nope");
        }
        let (defs, etag) = f2.defs.lock().unwrap().clone();
        let inm = s.headers.get("if-none-match").map(|v| v.to_str().unwrap().to_owned());
        if inm.as_deref() == Some(etag.as_str()) {
            f2.not_modified.fetch_add(1, Ordering::SeqCst);
            let mut r = raw_response(304, "application/json", "");
            r.headers_mut().insert("etag", etag.parse().unwrap());
            return r;
        }
        let mut r = json_response(200, defs);
        r.headers_mut().insert("etag", etag.parse().unwrap());
        r
    }))
    .await;
    let dir = temp_dir("posthog");
    let cache = dir.join("cache.json");
    let cfg = config(&format!("[flags]\n{}", posthog_section(&up.url(), &cache)));
    let gw = gateway(&cfg, "").await;
    assert!(
        eventually(Duration::from_secs(3), || Box::pin(async move { variant_for(gw.addr, "m", "u").await == "a" }))
            .await
    );

    let first = &up.requests()[0];
    assert_eq!(first.path, "/flags/definitions");
    assert_eq!(first.query, "token=phc_test%20project&send_cohorts");
    assert_eq!(first.headers["authorization"], "Bearer phs_secret");
    assert!(first.headers.get("if-none-match").is_none());
    let n = fake.not_modified.clone();
    assert!(
        eventually(Duration::from_secs(3), || {
            let n = n.clone();
            Box::pin(async move { n.load(Ordering::SeqCst) >= 2 })
        })
        .await,
        "later polls send If-None-Match and get 304"
    );
    assert_eq!(variant_for(gw.addr, "m", "u").await, "a", "304 keeps the definitions");

    for status in [500, 401] {
        *fake.fail.lock().unwrap() = Some(status);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(variant_for(gw.addr, "m", "u").await, "a", "{status} keeps the last good definitions");
    }
    *fake.fail.lock().unwrap() = None;
    *fake.defs.lock().unwrap() = (variant_flag("f", &[("b", 100.0)]), "\"v2\"".to_owned());
    // Backoff after two failures: 20ms * 4, jittered.
    assert!(
        eventually(Duration::from_secs(5), || Box::pin(async move { variant_for(gw.addr, "m", "u").await == "b" }))
            .await
    );
    // The cache is written just after the snapshot is swapped in.
    let cache_path = cache.clone();
    let cached_b = move || {
        let cached: serde_json::Value =
            std::fs::read(&cache_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        cached["flags"][0]["filters"]["multivariate"]["variants"][0]["key"] == "b"
    };
    assert!(
        eventually(Duration::from_secs(3), || {
            let ok = cached_b();
            Box::pin(async move { ok })
        })
        .await,
        "the last good definitions are on disk"
    );

    // A restart while PostHog is down routes from the cache.
    gw.shutdown.cancel();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = config(&format!("[flags]\n{}", posthog_section(&format!("http://{dead}"), &cache)));
    let gw2 = gateway(&cfg, "").await;
    assert!(
        eventually(Duration::from_secs(3), || Box::pin(async move {
            call(gw2.addr, "GET", "/readyz", &[], "").await.0 == 200
        }))
        .await
    );
    assert_eq!(variant_for(gw2.addr, "m", "u").await, "b");
}

#[tokio::test]
async fn the_posthog_webhook_triggers_an_immediate_poll() {
    let defs = Arc::new(Mutex::new(variant_flag("f", &[("a", 100.0)])));
    let d2 = defs.clone();
    let up = mock_upstream(handler(move |_| json_response(200, d2.lock().unwrap().clone()))).await;
    let dir = temp_dir("webhook");
    let section = posthog_section(&up.url(), &dir.join("cache.json")).replace("\"20ms\"", "\"1h\"");
    let cfg = config(&format!("[flags]\n{section}\nwebhook_secret_env = \"TEST_WEBHOOK_SECRET\""));
    let gw = gateway_in(&dir, &cfg, "").await;
    assert!(
        eventually(Duration::from_secs(3), || Box::pin(async move { variant_for(gw.addr, "m", "u").await == "a" }))
            .await
    );
    *defs.lock().unwrap() = variant_flag("f", &[("b", 100.0)]);
    let polls = up.requests().len();
    assert_eq!(call(gw.addr, "POST", "/webhooks/posthog", &[("authorization", "Bearer wrong")], "").await.0, 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(up.requests().len(), polls, "a refused webhook polls nothing");
    let started = std::time::Instant::now();
    let (status, _, _) =
        call(gw.addr, "POST", "/webhooks/posthog", &[("authorization", "Bearer hook-secret")], "{}").await;
    assert_eq!(status, 202);
    assert!(
        eventually(Duration::from_secs(2), || Box::pin(async move { variant_for(gw.addr, "m", "u").await == "b" }))
            .await
    );
    eprintln!("flag change applied {:?} after the webhook (poll interval 1h)", started.elapsed());
}
