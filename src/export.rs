//! The optional PostHog event export: `$feature_flag_called` (one per distinct id, flag and value, as the
//! PostHog SDKs deduplicate it) and `$ai_generation` (one per proxied call), queued without blocking the
//! request path and POSTed in batches to PostHog's capture API by one background task.
//!
//! This file owns the config (`[export.posthog]`), the hot-path handle (`Exporter`), the dedup set and the
//! metrics; `export/events.rs` owns the event shapes and `export/sender.rs` batching, retries and shutdown.
//!
//! Sources (read, not copied):
//! - Capture API, `POST {host}/batch/` with `{"api_key", "batch": [{"event", "distinct_id", "properties",
//!   "timestamp", "uuid"}]}`: <https://posthog.com/docs/api/capture> ("post-only endpoints").
//! - `$ai_generation` property names: <https://posthog.com/docs/llm-analytics/manual-capture> and
//!   PostHog/posthog-python `posthog/ai/utils.py` (`call_llm_and_track_usage`: `$ai_provider`, `$ai_model`,
//!   `$ai_http_status`, `$ai_input_tokens`, `$ai_output_tokens`, `$ai_latency`, `$ai_trace_id`; the
//!   distinct id falls back to the trace id with `$process_person_profile: false`),
//!   `posthog/ai/anthropic/anthropic.py` (`$ai_cache_read_input_tokens`, `$ai_cache_creation_input_tokens`),
//!   and the docs' `$ai_is_error`, `$ai_total_cost_usd`, `$ai_stream`, `$ai_time_to_first_token`.
//! - `$feature_flag_called` and its dedup: the team's PostHog flags reference (`shared/reference/posthog-flags.md`) §9 (posthog-python
//!   `Client._capture_feature_flag_called`, posthog-js `_captureFlagCalledEventIfNeeded`, 50,000 cap).

mod events;
mod sender;

pub use events::Generation;

use dashmap::DashSet;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// PostHog's SDKs send batches of up to 100 events (posthog-python `flush_at`, posthog-js `flushAt`).
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// A second keeps events near real time without a request per event.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// About a minute of heavy traffic held while PostHog is unreachable, a few MB at most.
pub const DEFAULT_MAX_QUEUE: usize = 10_000;
/// The SDKs' dedup cap (posthog-python `MAX_DICT_SIZE`, posthog-js `MAX_CACHE_SIZE`); like posthog-js the
/// whole set is cleared when it is reached, so a long-lived id may be reported once more afterwards.
pub const DEDUP_CAP: usize = 50_000;

fn yes() -> bool {
    true
}

/// `[export.posthog]`: where to send events and which ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// The ingestion host, e.g. `https://us.i.posthog.com`; events go to `{host}/batch/`.
    pub host: String,
    /// The environment variable holding the project API key (`phc_...`).
    pub project_api_key_env: String,
    #[serde(default = "yes")]
    pub flag_called: bool,
    #[serde(default = "yes")]
    pub generations: bool,
    /// Events per request; default `DEFAULT_BATCH_SIZE`.
    pub batch_size: Option<usize>,
    /// Longest an event waits for a batch to fill, e.g. `"1s"`; default `DEFAULT_FLUSH_INTERVAL`.
    pub flush_interval: Option<String>,
    /// Events held in memory before new ones are dropped; default `DEFAULT_MAX_QUEUE`.
    pub max_queue: Option<usize>,
}

impl ExportConfig {
    /// Every problem with this section, each prefixed by its key; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let host = self.host.trim();
        if !(host.starts_with("http://") || host.starts_with("https://")) || host.parse::<http::Uri>().is_err() {
            out.push(format!("export.posthog.host: {:?} is not an http(s) URL", self.host));
        }
        if self.project_api_key_env.trim().is_empty() {
            out.push("export.posthog.project_api_key_env: must name an environment variable".to_owned());
        }
        if self.batch_size == Some(0) {
            out.push("export.posthog.batch_size: must be at least 1".to_owned());
        }
        if self.max_queue == Some(0) {
            out.push("export.posthog.max_queue: must be at least 1".to_owned());
        }
        if let Some(s) = &self.flush_interval {
            match humantime::parse_duration(s) {
                Ok(d) if d.is_zero() => out.push("export.posthog.flush_interval: must be more than 0".to_owned()),
                Ok(_) => {}
                Err(e) => out.push(format!("export.posthog.flush_interval: {s:?}: {e}")),
            }
        }
        out
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size.filter(|&n| n > 0).unwrap_or(DEFAULT_BATCH_SIZE)
    }

    /// The flush interval; an invalid value (which `problems` reports) falls back to the default.
    pub fn flush_interval(&self) -> Duration {
        self.flush_interval
            .as_deref()
            .and_then(|s| humantime::parse_duration(s).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_FLUSH_INTERVAL)
    }

    pub fn max_queue(&self) -> usize {
        self.max_queue.filter(|&n| n > 0).unwrap_or(DEFAULT_MAX_QUEUE)
    }
}

/// The export's metric families, registered in the gateway's registry.
#[derive(Clone)]
pub struct ExportMetrics {
    /// Events PostHog accepted (2xx).
    pub sent: IntCounter,
    /// Events given up, by reason: `queue_full`, `send_failed`, `shutdown`.
    pub dropped: IntCounterVec,
    /// Batches given up after their retries, or refused outright.
    pub failed_batches: IntCounter,
}

impl ExportMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let sent = IntCounter::new("switchyard_export_events_sent_total", "Events PostHog accepted.")?;
        let dropped = IntCounterVec::new(
            Opts::new("switchyard_export_events_dropped_total", "Events not exported, by reason."),
            &["reason"],
        )?;
        let failed_batches =
            IntCounter::new("switchyard_export_batches_failed_total", "Batches given up after retries.")?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(failed_batches.clone()))?;
        Ok(ExportMetrics { sent, dropped, failed_batches })
    }
}

/// One queued event, kept as plain data: JSON is built by the sender, off the request path.
pub(crate) enum Pending {
    FlagCalled { at: SystemTime, distinct_id: String, flag: String, value: String, served_variant: String },
    Generation { at: SystemTime, ev: Box<Generation> },
}

/// The hot-path handle: cheap to clone, never blocks, never awaits.
#[derive(Clone)]
pub struct Exporter {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Pending>,
    flag_called: bool,
    generations: bool,
    dedup: Dedup,
    queue_full: IntCounter,
    after_shutdown: IntCounter,
    tracker: TaskTracker,
}

impl Exporter {
    /// Spawns the sender task and returns the handle. Cancelling `shutdown` flushes what is queued (for at
    /// most `sender::SHUTDOWN_GRACE`) and ends the task; `finished` waits for that.
    pub fn start(
        cfg: &ExportConfig,
        project_api_key: String,
        metrics: ExportMetrics,
        shutdown: CancellationToken,
    ) -> Exporter {
        let (tx, rx) = mpsc::channel(cfg.max_queue());
        let queue_full = metrics.dropped.with_label_values(&["queue_full"]);
        let after_shutdown = metrics.dropped.with_label_values(&["shutdown"]);
        let tracker = TaskTracker::new();
        let sender = sender::Sender::new(cfg, project_api_key, metrics);
        tracker.spawn(sender.run(rx, shutdown));
        tracker.close();
        Exporter {
            inner: Arc::new(Inner {
                tx,
                flag_called: cfg.flag_called,
                generations: cfg.generations,
                dedup: Dedup::new(DEDUP_CAP),
                queue_full,
                after_shutdown,
                tracker,
            }),
        }
    }

    /// Reports that `distinct_id` was given `value` (a variant key, or `"true"`/`"false"`) for `flag`, and
    /// that `served_variant` actually served (control after a kill switch, cut-off or fallback). Sent once
    /// per (distinct id, flag, value) until the dedup set fills and is cleared.
    pub fn flag_called(&self, distinct_id: &str, flag: &str, value: &str, served_variant: &str) {
        let inner = &self.inner;
        if !inner.flag_called || !inner.dedup.first_time(distinct_id, flag, value) {
            return;
        }
        self.enqueue(Pending::FlagCalled {
            at: SystemTime::now(),
            distinct_id: distinct_id.to_owned(),
            flag: flag.to_owned(),
            value: value.to_owned(),
            served_variant: served_variant.to_owned(),
        });
    }

    /// Reports one proxied LLM call as a `$ai_generation` event.
    pub fn generation(&self, ev: Generation) {
        if self.inner.generations {
            self.enqueue(Pending::Generation { at: SystemTime::now(), ev: Box::new(ev) });
        }
    }

    /// Resolves once the sender task has ended (after `shutdown` is cancelled and the final flush is done
    /// or its grace period is over).
    pub async fn finished(&self) {
        self.inner.tracker.wait().await;
    }

    fn enqueue(&self, p: Pending) {
        match self.inner.tx.try_send(p) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.inner.queue_full.inc(),
            Err(mpsc::error::TrySendError::Closed(_)) => self.inner.after_shutdown.inc(),
        }
    }
}

/// The ids already reported: 64-bit keyed hashes of (distinct id, flag, value), so nothing is allocated
/// per call once an id is known, and a caller cannot aim for collisions (random key per process).
struct Dedup {
    seen: DashSet<u64>,
    len: AtomicUsize,
    cap: usize,
    keys: std::collections::hash_map::RandomState,
}

impl Dedup {
    fn new(cap: usize) -> Self {
        Dedup { seen: DashSet::new(), len: AtomicUsize::new(0), cap, keys: Default::default() }
    }

    /// True the first time a triple is seen (and again after the set was cleared at the cap).
    fn first_time(&self, distinct_id: &str, flag: &str, value: &str) -> bool {
        // `str` hashes its bytes and a terminator, so ("ab","c") and ("a","bc") differ.
        let h = self.keys.hash_one((distinct_id, flag, value));
        if !self.seen.insert(h) {
            return false;
        }
        if self.len.fetch_add(1, Ordering::Relaxed) + 1 >= self.cap {
            // Approximate under races, which only costs an extra event or a slightly late clear.
            self.seen.clear();
            self.len.store(0, Ordering::Relaxed);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> ExportConfig {
        let text = format!("host = \"https://us.i.posthog.com\"\nproject_api_key_env = \"PH_KEY\"\n{extra}");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn defaults_apply_when_keys_are_absent() {
        let c = cfg("");
        assert!(c.flag_called && c.generations);
        assert_eq!(c.batch_size(), 100);
        assert_eq!(c.flush_interval(), Duration::from_secs(1));
        assert_eq!(c.max_queue(), 10_000);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }

    #[test]
    fn explicit_values_are_read() {
        let c = cfg("flag_called = false\nbatch_size = 7\nflush_interval = \"250ms\"\nmax_queue = 3");
        assert!(!c.flag_called && c.generations);
        assert_eq!((c.batch_size(), c.flush_interval(), c.max_queue()), (7, Duration::from_millis(250), 3));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "host = \"https://x\"\nproject_api_key_env = \"K\"\nbatchsize = 3";
        assert!(toml::from_str::<ExportConfig>(text).is_err());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = cfg("batch_size = 0\nmax_queue = 0\nflush_interval = \"soon\"");
        c.host = "us.i.posthog.com".to_owned();
        c.project_api_key_env = " ".to_owned();
        let p = c.problems();
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(p[0].starts_with("export.posthog.host"));
        assert!(cfg("flush_interval = \"0s\"").problems()[0].contains("more than 0"));
    }

    #[test]
    fn dedup_reports_a_triple_once_and_a_changed_value_again() {
        let d = Dedup::new(100);
        assert!(d.first_time("u1", "f", "test"));
        assert!(!d.first_time("u1", "f", "test"));
        assert!(d.first_time("u1", "f", "control"));
        assert!(d.first_time("u2", "f", "test"));
        assert!(d.first_time("u1", "g", "test"));
        // Boundaries between the parts matter.
        assert!(d.first_time("u1f", "", "test"));
    }

    #[test]
    fn dedup_set_is_cleared_when_it_reaches_its_cap() {
        let d = Dedup::new(3);
        assert!(d.first_time("a", "f", "v"));
        assert!(d.first_time("b", "f", "v"));
        assert!(!d.first_time("a", "f", "v"));
        assert!(d.first_time("c", "f", "v")); // third entry: the set is cleared
        assert_eq!(d.seen.len(), 0);
        assert!(d.first_time("a", "f", "v"));
    }

    #[tokio::test]
    async fn disabled_kinds_are_not_queued() {
        let metrics = ExportMetrics::register(&Registry::new()).unwrap();
        let c = cfg("flag_called = false\ngenerations = false\nmax_queue = 1");
        let shutdown = CancellationToken::new();
        let ex = Exporter::start(&c, "phc".into(), metrics.clone(), shutdown.clone());
        for i in 0..3 {
            ex.flag_called(&format!("u{i}"), "f", "true", "true");
            ex.generation(events::tests::sample_generation());
        }
        // With a queue of one, anything queued beyond the first would have counted as dropped.
        assert_eq!(metrics.dropped.with_label_values(&["queue_full"]).get(), 0);
        assert_eq!(ex.inner.dedup.seen.len(), 0);
        shutdown.cancel();
        ex.finished().await;
    }
}
