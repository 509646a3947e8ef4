//! The request context and its always-run record step: whatever path a request takes (success,
//! upstream error, gateway error, client gone), dropping its `RequestContext` counts it in the metrics
//! once and writes its one log line (`access`).

use crate::error::{Dialect, ErrorKind, UpstreamFault};
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Labels of the route and target that served a request, and the target's live counters; built once.
#[derive(Debug, Clone)]
pub struct Served {
    pub route: Arc<str>,
    pub flag: Arc<str>,
    pub variant: Arc<str>,
    pub backend: Arc<str>,
    pub model: Arc<str>,
    pub stats: Arc<TargetStats>,
    /// The model's price, looked up once at startup; `None`: unpriced.
    pub price: Option<crate::usage::Price>,
    /// `openai`, `anthropic` or `mock` (the backend kind), for exported events.
    pub provider: &'static str,
    /// This target's metric series, resolved once (no label hashing per request).
    pub series: TargetSeries,
    /// Its `x-switchyard-*` response headers, built once.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Its number in the feedback store (`FeedbackStore::register`).
    pub feedback: u32,
}

/// The metric series of one target.
#[derive(Debug, Clone)]
pub struct TargetSeries {
    pub ok: prometheus::IntCounter,
    pub duration: prometheus::Histogram,
    pub ttft: prometheus::Histogram,
    pub overhead: prometheus::Histogram,
    /// Per-call cost and total cost; priced models only (no zero series for unpriced ones).
    pub cost: Option<(prometheus::Histogram, prometheus::Counter)>,
    /// input, output, cache_read, cache_write.
    pub tokens: [prometheus::IntCounter; 4],
    /// `switchyard_flag_evaluations_total` of this target's flag and variant, resolved on first use
    /// (no series before a first evaluation).
    pub flag_evaluations: std::sync::OnceLock<prometheus::IntCounter>,
}

impl TargetSeries {
    pub fn new(m: &Metrics, route: &str, flag: &str, variant: &str, backend: &str, model: &str, priced: bool) -> Self {
        let rvb = [route, variant, backend];
        let token = |kind: &str| m.tokens.with_label_values(&[route, variant, backend, model, kind]);
        TargetSeries {
            ok: m.requests.with_label_values(&[route, flag, variant, backend, model, "200"]),
            duration: m.duration.with_label_values(&rvb),
            ttft: m.ttft.with_label_values(&rvb),
            overhead: m.overhead.with_label_values(&[route]),
            cost: priced.then(|| {
                (
                    m.request_cost.with_label_values(&[route, variant]),
                    m.cost_total.with_label_values(&[route, variant, backend, model]),
                )
            }),
            tokens: [token("input"), token("output"), token("cache_read"), token("cache_write")],
            flag_evaluations: std::sync::OnceLock::new(),
        }
    }
}

/// Requests and errors a target served since start (shown in `/admin/flags`).
#[derive(Debug, Default)]
pub struct TargetStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
}

/// A counted place under a limit (requests in flight, a backend's concurrent calls); given back when
/// dropped, i.e. when the request's response has ended.
pub struct Slot {
    counter: Arc<std::sync::atomic::AtomicUsize>,
    gauge: Option<prometheus::IntGauge>,
}

impl Slot {
    /// Takes a place if fewer than `max` are taken.
    pub fn acquire(
        counter: &Arc<std::sync::atomic::AtomicUsize>,
        max: usize,
        gauge: Option<prometheus::IntGauge>,
    ) -> Option<Slot> {
        let taken = counter.fetch_add(1, Ordering::AcqRel);
        if taken >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if let Some(g) = &gauge {
            g.inc();
        }
        Some(Slot { counter: counter.clone(), gauge })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

/// Everything known about one request, filled in step by step; recorded when dropped. Its fields
/// (`Context`) are boxed: the context moves by value down the request path (dispatch, admit, handle,
/// respond, the relayed body) and each move copied all 296 bytes, ten times a request (a `perf
/// probe` on `memmove`); a pointer moves in eight, for one allocation.
pub struct RequestContext(Box<Context>);

/// The fields of a `RequestContext`, reached through it (`Deref`).
pub struct Context {
    state: Arc<crate::state::AppState>,
    /// The caller's distinct_id; kept only when events are exported.
    pub distinct_id: Option<String>,
    /// This request's place under the gateway's in-flight limit.
    pub slot: Option<Slot>,
    /// Its places under its backends' limits (a fallback holds two); empty, so never allocated,
    /// unless a backend sets `max_in_flight`.
    pub backend_slots: Vec<Slot>,
    /// Tokens the response reported, read on the side.
    pub usage: Option<crate::usage::Usage>,
    pub start: Instant,
    pub request_id: String,
    pub method: http::Method,
    /// The request's path: the endpoint's own `&'static str` for the LLM endpoints (no copy on the
    /// path every proxied request takes), a copy for any other.
    pub path: std::borrow::Cow<'static, str>,
    pub dialect: Option<Dialect>,
    pub served: Option<Arc<Served>>,
    pub distinct_id_present: bool,
    /// Why the routing decision picked its target (`routing::Reason`).
    pub reason: &'static str,
    pub stream: bool,
    pub status: u16,
    pub error: Option<ErrorKind>,
    /// What the backend did wrong, counted in `switchyard_upstream_faults_total` with the backend.
    pub fault: Option<UpstreamFault>,
    /// Set when the fallback served the request: the variant that failed, and why.
    pub fallback: Option<(Arc<str>, &'static str)>,
    /// When the upstream request left (gateway overhead ends here).
    pub upstream_sent: Option<Instant>,
    pub first_byte: Option<Duration>,
    /// The response body is being relayed and has not ended yet: a drop now means the client left.
    pub relaying: bool,
}

impl RequestContext {
    pub fn new(
        state: Arc<crate::state::AppState>,
        request_id: String,
        method: http::Method,
        path: std::borrow::Cow<'static, str>,
    ) -> Self {
        RequestContext(Box::new(Context {
            state,
            distinct_id: None,
            slot: None,
            backend_slots: Vec::new(),
            usage: None,
            start: Instant::now(),
            request_id,
            method,
            path,
            dialect: None,
            served: None,
            distinct_id_present: false,
            reason: "",
            stream: false,
            status: 0,
            error: None,
            fault: None,
            fallback: None,
            upstream_sent: None,
            first_byte: None,
            relaying: false,
        }))
    }

    /// Marks the first response body byte (time to first token).
    pub fn first_byte(&mut self) {
        if self.first_byte.is_none() {
            self.first_byte = Some(self.start.elapsed());
        }
    }

    /// The `server-timing` header value: time spent in the gateway before the upstream request left.
    pub fn overhead(&self) -> Option<Duration> {
        self.upstream_sent.map(|t| t.duration_since(self.start))
    }

    /// The `server-timing` header: `switchyard;dur=` and the overhead in milliseconds with 3 decimals.
    pub fn server_timing(&self) -> Option<http::HeaderValue> {
        self.overhead().and_then(server_timing)
    }
}

impl std::ops::Deref for RequestContext {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.0
    }
}

impl std::ops::DerefMut for RequestContext {
    fn deref_mut(&mut self) -> &mut Context {
        &mut self.0
    }
}

impl Drop for RequestContext {
    fn drop(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        if self.relaying {
            // The client went away before the body ended; the upstream request is cancelled with it.
            self.error = Some(ErrorKind::ClientCancelled);
        }
        let distinct_id = self.distinct_id.take();
        // Borrowed, not cloned: the state and the target are shared by every worker, and each
        // clone is a contended atomic increment and decrement.
        let this = &*self;
        let state = &*this.state;
        let m = &state.metrics;
        if let Some(s) = this.served.as_deref() {
            let series = &s.series;
            if this.status == 200 {
                series.ok.inc();
            } else {
                let status = status_label(this.status);
                m.requests.with_label_values(&[&*s.route, &*s.flag, &*s.variant, &*s.backend, &*s.model, status]).inc();
            }
            s.stats.requests.fetch_add(1, Ordering::Relaxed);
            if let Some(kind) = this.error {
                s.stats.errors.fetch_add(1, Ordering::Relaxed);
                m.request_errors
                    .with_label_values(&[&*s.route, &*s.flag, &*s.variant, &*s.backend, kind.as_str()])
                    .inc();
            }
            if let Some(fault) = this.fault {
                m.upstream_faults.with_label_values(&[&*s.backend, fault.as_str()]).inc();
            }
            series.duration.observe(elapsed.as_secs_f64());
            if let Some(t) = this.first_byte {
                series.ttft.observe(t.as_secs_f64());
            }
            if let Some(o) = this.overhead() {
                series.overhead.observe(o.as_secs_f64());
            }
            let cost = this.usage.and_then(|u| record_usage(m, s, &u));
            if let Some(exporter) = &state.exporter {
                exporter.generation(this.generation(s, distinct_id, elapsed, cost));
            }
            if this.error.is_none() && (200..300).contains(&this.status) {
                state.feedback.remember(&this.request_id, s.feedback, now);
            }
        } else {
            // Answered before a route was chosen (refused, shed, unknown model): an LLM request is
            // still counted in `switchyard_requests_total`, with empty route labels, so requests =
            // successes + errors holds on every path.
            if this.dialect.is_some() {
                m.requests.with_label_values(&["", "", "", "", "", status_label(this.status)]).inc();
            }
            if let Some(kind) = this.error {
                m.request_errors.with_label_values(&["", "", "", "", kind.as_str()]).inc();
            }
        }
        if this.dialect.is_none() && this.error.is_none() {
            // Probes and scrapes: counted nowhere, logged nowhere.
            return;
        }
        if !crate::access::enabled() {
            return;
        }
        let s = this.served.as_ref();
        crate::access::emit(&crate::access::AccessLine {
            request_id: &this.request_id,
            method: this.method.as_str(),
            path: &this.path,
            dialect: this.dialect.map(Dialect::as_str),
            route: s.map(|s| &*s.route),
            flag: s.map(|s| &*s.flag),
            variant: s.map(|s| &*s.variant),
            backend: s.map(|s| &*s.backend),
            model: s.map(|s| &*s.model),
            reason: this.reason,
            stream: this.stream,
            status: this.status,
            error: this.error.map(ErrorKind::as_str),
            fault: this.fault.map(UpstreamFault::as_str),
            fallback_from: this.fallback.as_ref().map(|f| &*f.0),
            fallback_reason: this.fallback.as_ref().map(|f| f.1),
            duration_ms: crate::access::Millis::of(elapsed),
            ttft_ms: this.first_byte.map(crate::access::Millis::of),
            input_tokens: this.usage.map(|u| u.input + u.cache_read + u.cache_write),
            output_tokens: this.usage.map(|u| u.output),
        });
    }
}

impl RequestContext {
    /// The `$ai_generation` event of this request.
    fn generation(
        &self,
        s: &Served,
        distinct_id: Option<String>,
        elapsed: Duration,
        cost: Option<f64>,
    ) -> crate::export::Generation {
        crate::export::Generation {
            distinct_id,
            trace_id: self.request_id.clone(),
            route: s.route.to_string(),
            flag: (!s.flag.is_empty()).then(|| s.flag.to_string()),
            variant: (!s.flag.is_empty()).then(|| s.variant.to_string()),
            backend: s.backend.to_string(),
            provider: s.provider,
            model: s.model.to_string(),
            http_status: self.status,
            is_error: self.error.is_some(),
            latency_s: elapsed.as_secs_f64(),
            ttft_s: self.first_byte.map(|t| t.as_secs_f64()),
            input_tokens: self.usage.map(|u| u.input + u.cache_read + u.cache_write),
            output_tokens: self.usage.map(|u| u.output),
            cache_read_tokens: self.usage.map(|u| u.cache_read),
            cache_write_tokens: self.usage.map(|u| u.cache_write),
            cost_usd: cost,
            stream: self.stream,
        }
    }
}

/// Tokens and cost of one served request; returns the cost when the model is priced.
fn record_usage(m: &Metrics, s: &Served, u: &crate::usage::Usage) -> Option<f64> {
    for (counter, n) in s.series.tokens.iter().zip([u.input, u.output, u.cache_read, u.cache_write]) {
        if n > 0 {
            counter.inc_by(n);
        }
    }
    match (&s.price, &s.series.cost) {
        (Some(price), Some((per_call, total))) => {
            let usd = crate::usage::cost(price, u);
            total.inc_by(usd);
            per_call.observe(usd);
            Some(usd)
        }
        _ => {
            m.unpriced.with_label_values(&[&*s.route, &*s.model]).inc();
            None
        }
    }
}

/// `switchyard;dur=<milliseconds, 3 decimals>` written digit by digit: float formatting (and the
/// `format!` machinery) cost more than the rest of the header work per request.
fn server_timing(overhead: Duration) -> Option<http::HeaderValue> {
    let mut n = u64::try_from((overhead.as_nanos() + 500) / 1000).unwrap_or(u64::MAX);
    let mut digits = [0u8; 24];
    let mut at = digits.len();
    // At least 4 digits: the milliseconds and 3 decimals of microseconds.
    while n > 0 || digits.len() - at < 4 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let (ms, frac) = digits[at..].split_at(digits.len() - at - 3);
    let mut v = Vec::with_capacity(16 + ms.len() + 3);
    v.extend_from_slice(b"switchyard;dur=");
    v.extend_from_slice(ms);
    v.push(b'.');
    v.extend_from_slice(frac);
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()
}

/// Status as a label without allocating for the common ones.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        529 => "529",
        s if s < 300 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::server_timing;
    use std::time::Duration;

    #[test]
    fn server_timing_is_milliseconds_with_three_decimals_rounded_to_the_microsecond() {
        let t = |nanos: u64| server_timing(Duration::from_nanos(nanos)).unwrap();
        assert_eq!(t(0), "switchyard;dur=0.000");
        assert_eq!(t(499), "switchyard;dur=0.000");
        assert_eq!(t(500), "switchyard;dur=0.001");
        assert_eq!(t(5_000), "switchyard;dur=0.005");
        assert_eq!(t(123_456), "switchyard;dur=0.123");
        assert_eq!(t(12_345_678), "switchyard;dur=12.346");
        assert_eq!(t(3_000_000_000), "switchyard;dur=3000.000");
    }
}
