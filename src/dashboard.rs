//! The built-in dashboard: `GET /dashboard` serves the page (plain HTML and JS compiled into the
//! binary, no CDN) and `GET /dashboard/data` the JSON it polls: per flag its state, per route target
//! its cumulative counters and histograms (the page computes rates and quantiles between polls).

use crate::metrics::Metrics;
use crate::state::{AppState, TargetEntry};
use prometheus::core::Collector;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

/// The page, served as is.
pub const PAGE: &str = include_str!("dashboard.html");

/// The JSON the page polls.
pub fn data(state: &AppState) -> Value {
    let snap = state.snapshot.load();
    let overrides = state.sources.overrides();
    let flag_keys: BTreeSet<&str> = state.routes.values().filter_map(|r| r.flag.as_deref()).collect();
    let flags: Vec<Value> = flag_keys
        .iter()
        .map(|k| {
            let active = snap.as_ref().and_then(|s| s.flags.flag(k)).is_some_and(|f| f.active());
            let o = overrides.get(*k);
            let killed = o.and_then(|o| o.get("active")).and_then(Value::as_bool) == Some(false);
            json!({"key": k, "active": active, "killed": killed, "override": o})
        })
        .collect();
    let mut routes: Vec<_> = state.routes.values().collect();
    routes.sort_by(|a, b| a.model.cmp(&b.model));
    let mut variants = Vec::new();
    for r in routes {
        let mut targets: Vec<&TargetEntry> = r.variants.values().collect();
        targets.sort_by(|a, b| a.served.variant.cmp(&b.served.variant));
        targets.insert(0, &r.control);
        for t in targets {
            variants.push(target(&state.metrics, t));
        }
    }
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    json!({"now_ms": now_ms as u64, "flags": flags, "variants": variants})
}

fn target(m: &Metrics, t: &TargetEntry) -> Value {
    let s = &t.served;
    let rvb = [&*s.route, &*s.variant, &*s.backend];
    let tokens = |kind: &str| {
        m.tokens
            .get_metric_with_label_values(&[&*s.route, &*s.variant, &*s.backend, &*s.model, kind])
            .map_or(0, |c| c.get())
    };
    let fallbacks: u64 = ["connect", "timeout", "protocol", "status_429", "status_529", "status_5xx"]
        .iter()
        .filter_map(|reason| m.fallbacks.get_metric_with_label_values(&[&*s.route, &*s.variant, reason]).ok())
        .map(|c| c.get())
        .sum();
    let feedback = m.feedback.get_metric_with_label_values(&[&s.route, &s.variant]).ok();
    json!({
        "route": &*s.route,
        "flag": &*s.flag,
        "variant": &*s.variant,
        "backend": &*s.backend,
        "model": &*s.model,
        "requests": s.stats.requests.load(Ordering::Relaxed),
        "errors": s.stats.errors.load(Ordering::Relaxed),
        "fallbacks": fallbacks,
        "cut_off": t.breaker.as_ref().map(|b| b.state().as_str()),
        "latency_s": histogram(m.duration.get_metric_with_label_values(&rvb).ok()),
        "ttft_s": histogram(m.ttft.get_metric_with_label_values(&rvb).ok()),
        "cost_usd": histogram(m.request_cost.get_metric_with_label_values(&[&s.route, &s.variant]).ok()),
        "tokens": {"input": tokens("input"), "output": tokens("output"), "cache_read": tokens("cache_read"), "cache_write": tokens("cache_write")},
        "feedback": {"count": feedback.as_ref().map_or(0, |h| h.get_sample_count()), "sum": feedback.as_ref().map_or(0.0, |h| h.get_sample_sum())},
        "priced": s.price.is_some(),
    })
}

/// A histogram as `{le, counts (cumulative), sum, count}`.
fn histogram(h: Option<prometheus::Histogram>) -> Value {
    let Some(h) = h else { return Value::Null };
    let families = h.collect();
    let Some(metric) = families.first().and_then(|f| f.get_metric().first()) else { return Value::Null };
    let hist = metric.get_histogram();
    let (le, counts): (Vec<f64>, Vec<u64>) =
        hist.get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).unzip();
    json!({"le": le, "counts": counts, "sum": hist.get_sample_sum(), "count": hist.get_sample_count()})
}
