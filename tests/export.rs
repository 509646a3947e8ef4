//! The PostHog export against a fake PostHog on loopback: what a batch carries, dedup, batching by size and
//! by interval, retries (500, 429 with retry-after), give-ups, a full queue, and the flush on shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{mock_upstream, raw_response, Handler, MockUpstream};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard::export::{ExportConfig, ExportMetrics, Exporter, Generation};
use tokio_util::sync::CancellationToken;

const KEY: &str = "phc_test_project";

/// A fake PostHog: answers from `script` in order (then 200), and notes when each request arrived.
struct Fake {
    up: MockUpstream,
    arrived: Arc<Mutex<Vec<Instant>>>,
}

async fn fake_posthog(script: &[(u16, Option<&'static str>)]) -> Fake {
    let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let arrived2 = arrived.clone();
    let handler: Handler = Arc::new(move |_seen| {
        arrived2.lock().unwrap().push(Instant::now());
        let (status, retry_after) = script.lock().unwrap().pop_front().unwrap_or((200, None));
        Box::pin(async move {
            let mut r = raw_response(status, "application/json", json!({"status": "Ok"}).to_string());
            if let Some(v) = retry_after {
                r.headers_mut().insert("retry-after", v.parse().unwrap());
            }
            r
        })
    });
    Fake { up: mock_upstream(handler).await, arrived }
}

impl Fake {
    /// Time between the arrivals of requests `a` and `b`.
    fn gap(&self, a: usize, b: usize) -> Duration {
        let arrived = self.arrived.lock().unwrap();
        arrived[b] - arrived[a]
    }
}

/// A fake PostHog that never answers.
async fn hanging_posthog() -> MockUpstream {
    mock_upstream(Arc::new(|_seen| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            raw_response(200, "application/json", "{}")
        })
    }))
    .await
}

struct Started {
    ex: Exporter,
    metrics: ExportMetrics,
    shutdown: CancellationToken,
}

fn start(url: &str, extra: &str) -> Started {
    let text = format!("host = \"{url}/\"\nproject_api_key_env = \"PH_KEY\"\n{extra}");
    let cfg: ExportConfig = toml::from_str(&text).unwrap();
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    let metrics = ExportMetrics::register(&prometheus::Registry::new()).unwrap();
    let shutdown = CancellationToken::new();
    let ex = Exporter::start(&cfg, KEY.to_owned(), metrics.clone(), shutdown.clone());
    Started { ex, metrics, shutdown }
}

impl Started {
    async fn stop(&self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.ex.finished()).await.expect("sender ended");
    }
    fn dropped(&self, reason: &str) -> u64 {
        self.metrics.dropped.with_label_values(&[reason]).get()
    }
}

async fn wait_for_requests(up: &MockUpstream, n: usize, within: Duration) {
    let start = Instant::now();
    while up.requests().len() < n {
        assert!(start.elapsed() < within, "wanted {n} requests within {within:?}, got {}", up.requests().len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every event of every batch received, in order.
fn events(up: &MockUpstream) -> Vec<Value> {
    up.requests().iter().flat_map(|s| s.json()["batch"].as_array().unwrap().clone()).collect()
}

fn batch_sizes(up: &MockUpstream) -> Vec<usize> {
    up.requests().iter().map(|s| s.json()["batch"].as_array().unwrap().len()).collect()
}

fn generation(trace_id: &str) -> Generation {
    Generation {
        distinct_id: Some("user-1".into()),
        trace_id: trace_id.into(),
        route: "chat".into(),
        flag: Some("llm-model".into()),
        variant: Some("test".into()),
        backend: "oa".into(),
        provider: "openai",
        model: "gpt-4o-mini".into(),
        http_status: 200,
        latency_s: 0.5,
        input_tokens: Some(3),
        output_tokens: Some(2),
        cost_usd: Some(0.0001),
        ..Generation::default()
    }
}

#[tokio::test]
async fn a_batch_carries_the_api_key_and_both_event_kinds() {
    let fake = fake_posthog(&[]).await;
    let s = start(&fake.up.url(), "batch_size = 2\nflush_interval = \"60s\"");
    s.ex.flag_called("user-1", "llm-model", "test", "control");
    s.ex.generation(generation("req-1"));
    wait_for_requests(&fake.up, 1, Duration::from_secs(3)).await;

    let seen = &fake.up.requests()[0];
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/batch/"));
    assert_eq!(seen.headers["content-type"], "application/json");
    let body = seen.json();
    assert_eq!(body["api_key"], KEY);
    let batch = body["batch"].as_array().unwrap();
    assert_eq!(batch.len(), 2);

    let called = &batch[0];
    assert_eq!(called["event"], "$feature_flag_called");
    assert_eq!(called["distinct_id"], "user-1");
    let p = &called["properties"];
    assert_eq!(p["$feature_flag"], "llm-model");
    assert_eq!(p["$feature_flag_response"], "test");
    assert_eq!(p["$feature_flag_served_variant"], "control");
    assert_eq!(p["locally_evaluated"], true);
    assert_eq!(p["$lib"], "switchyard");

    let gen = &batch[1];
    assert_eq!(gen["event"], "$ai_generation");
    let p = &gen["properties"];
    assert_eq!(p["$ai_trace_id"], "req-1");
    assert_eq!(p["$ai_model"], "gpt-4o-mini");
    assert_eq!(p["$ai_provider"], "openai");
    assert_eq!((p["$ai_input_tokens"].clone(), p["$ai_output_tokens"].clone()), (json!(3), json!(2)));
    assert_eq!(p["$ai_http_status"], 200);
    assert_eq!(p["$feature/llm-model"], "test");

    for e in batch {
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'), "{e}");
        assert_eq!(e["uuid"].as_str().unwrap().len(), 36, "{e}");
    }
    assert_ne!(batch[0]["uuid"], batch[1]["uuid"]);
    s.stop().await;
    assert_eq!(s.metrics.sent.get(), 2);
}

#[tokio::test]
async fn flag_called_is_sent_once_per_distinct_id_flag_and_value() {
    let fake = fake_posthog(&[]).await;
    let s = start(&fake.up.url(), "flush_interval = \"60s\"");
    s.ex.flag_called("u1", "llm-model", "test", "test");
    s.ex.flag_called("u1", "llm-model", "test", "control"); // same value, another serving: deduplicated
    s.ex.flag_called("u1", "llm-model", "control", "control"); // value changed: reported
    s.ex.flag_called("u2", "llm-model", "test", "test");
    s.ex.flag_called("u1", "other-flag", "true", "true");
    s.ex.flag_called("u1", "other-flag", "true", "true");
    s.stop().await;

    let got: Vec<(String, String, Value)> = events(&fake.up)
        .iter()
        .map(|e| {
            let p = &e["properties"];
            (
                e["distinct_id"].as_str().unwrap().to_owned(),
                p["$feature_flag"].as_str().unwrap().to_owned(),
                p["$feature_flag_response"].clone(),
            )
        })
        .collect();
    let want = vec![
        ("u1".to_owned(), "llm-model".to_owned(), json!("test")),
        ("u1".to_owned(), "llm-model".to_owned(), json!("control")),
        ("u2".to_owned(), "llm-model".to_owned(), json!("test")),
        ("u1".to_owned(), "other-flag".to_owned(), json!(true)),
    ];
    assert_eq!(got, want);
}

#[tokio::test]
async fn batches_are_cut_at_batch_size_and_the_rest_waits() {
    let fake = fake_posthog(&[]).await;
    let s = start(&fake.up.url(), "batch_size = 2\nflush_interval = \"60s\"");
    for i in 0..5 {
        s.ex.generation(generation(&format!("req-{i}")));
    }
    wait_for_requests(&fake.up, 2, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(batch_sizes(&fake.up), vec![2, 2], "the fifth event waits for the interval");
    s.stop().await;
    assert_eq!(batch_sizes(&fake.up), vec![2, 2, 1]);
    let ids: Vec<Value> = events(&fake.up).iter().map(|e| e["properties"]["$ai_trace_id"].clone()).collect();
    assert_eq!(ids, vec![json!("req-0"), json!("req-1"), json!("req-2"), json!("req-3"), json!("req-4")]);
}

#[tokio::test]
async fn a_partial_batch_is_sent_when_the_flush_interval_passes() {
    let fake = fake_posthog(&[]).await;
    let s = start(&fake.up.url(), "batch_size = 100\nflush_interval = \"400ms\"");
    let t0 = Instant::now();
    for i in 0..3 {
        s.ex.generation(generation(&format!("req-{i}")));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.up.requests().len(), 0, "nothing is sent before the interval");
    wait_for_requests(&fake.up, 1, Duration::from_secs(3)).await;
    let at = fake.arrived.lock().unwrap()[0];
    assert!(at.duration_since(t0) >= Duration::from_millis(390), "sent after {:?}", at.duration_since(t0));
    assert_eq!(batch_sizes(&fake.up), vec![3]);
    // Counted once PostHog's answer is read, a moment after the request arrived: after `stop`,
    // which waits for the sender, as the other tests read it.
    s.stop().await;
    assert_eq!(s.metrics.sent.get(), 3);
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_batch_which_is_then_accepted() {
    let fake = fake_posthog(&[(500, None)]).await;
    let s = start(&fake.up.url(), "batch_size = 1");
    s.ex.generation(generation("req-1"));
    wait_for_requests(&fake.up, 2, Duration::from_secs(3)).await;
    let reqs = fake.up.requests();
    assert_eq!(reqs[0].body, reqs[1].body, "a retry resends the same events, uuids included");
    let gap = fake.gap(0, 1);
    assert!(gap >= Duration::from_millis(200), "backed off for {gap:?}");
    s.stop().await;
    assert_eq!((s.metrics.sent.get(), s.metrics.failed_batches.get()), (1, 0));
    assert_eq!(fake.up.requests().len(), 2);
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let fake = fake_posthog(&[(429, Some("1"))]).await;
    let s = start(&fake.up.url(), "batch_size = 1");
    s.ex.flag_called("u1", "f", "true", "true");
    wait_for_requests(&fake.up, 2, Duration::from_secs(4)).await;
    let gap = fake.gap(0, 1);
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}, not the 1 s retry-after");
    s.stop().await;
    assert_eq!(s.metrics.sent.get(), 1);
}

#[tokio::test]
async fn a_batch_failing_every_attempt_is_dropped_and_counted() {
    let fake = fake_posthog(&[(500, None), (502, None), (503, None)]).await;
    let s = start(&fake.up.url(), "batch_size = 2");
    s.ex.generation(generation("req-1"));
    s.ex.generation(generation("req-2"));
    wait_for_requests(&fake.up, 3, Duration::from_secs(4)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.up.requests().len(), 3, "three attempts, no more");
    assert_eq!(s.metrics.failed_batches.get(), 1);
    assert_eq!(s.dropped("send_failed"), 2);
    assert_eq!(s.metrics.sent.get(), 0);
    s.stop().await;
}

#[tokio::test]
async fn a_refused_batch_is_not_retried() {
    let fake = fake_posthog(&[(400, None)]).await;
    let s = start(&fake.up.url(), "batch_size = 1");
    s.ex.generation(generation("req-1"));
    wait_for_requests(&fake.up, 1, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fake.up.requests().len(), 1);
    assert_eq!((s.metrics.failed_batches.get(), s.dropped("send_failed")), (1, 1));
    s.stop().await;
}

#[tokio::test]
async fn events_beyond_max_queue_are_dropped_and_counted() {
    let fake = fake_posthog(&[]).await;
    let s = start(&fake.up.url(), "max_queue = 2\nflush_interval = \"60s\"");
    // The test runtime is single-threaded: the sender cannot drain the queue until this test yields.
    for i in 0..10 {
        s.ex.generation(generation(&format!("req-{i}")));
    }
    assert_eq!(s.dropped("queue_full"), 8);
    s.stop().await;
    assert_eq!(batch_sizes(&fake.up), vec![2]);
    assert_eq!(s.metrics.sent.get(), 2);
}

#[tokio::test]
async fn shutdown_flushes_what_is_queued_and_later_events_are_counted() {
    let fake = fake_posthog(&[]).await;
    let s = start(&fake.up.url(), "flush_interval = \"60s\"");
    for i in 0..3 {
        s.ex.generation(generation(&format!("req-{i}")));
    }
    s.ex.flag_called("u1", "f", "true", "true");
    let t0 = Instant::now();
    s.stop().await;
    assert!(t0.elapsed() < Duration::from_secs(2), "flushed in {:?}", t0.elapsed());
    assert_eq!(batch_sizes(&fake.up), vec![4]);
    assert_eq!(s.metrics.sent.get(), 4);

    s.ex.generation(generation("late"));
    assert_eq!(s.dropped("shutdown"), 1);
}

#[tokio::test]
async fn shutdown_gives_up_after_its_grace_when_posthog_hangs() {
    let up = hanging_posthog().await;
    let s = start(&up.url(), "batch_size = 2\nflush_interval = \"60s\"");
    for i in 0..3 {
        s.ex.generation(generation(&format!("req-{i}")));
    }
    wait_for_requests(&up, 1, Duration::from_secs(3)).await;
    let t0 = Instant::now();
    s.stop().await;
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "stopped after {took:?}");
    assert_eq!(s.dropped("shutdown"), 3, "the batch in flight and the one buffered");
    assert_eq!(s.metrics.sent.get(), 0);
}
