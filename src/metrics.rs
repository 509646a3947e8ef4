//! The Prometheus metrics: one `Metrics` owning its own registry (no global state) with the contract's
//! families. Label values come only from configuration or small fixed sets, never from a caller.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Latency buckets for LLM calls: tens of milliseconds to minutes.
const LATENCY_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];
/// Per-call cost buckets, USD: fractions of a cent to dollars.
const COST_BUCKETS: &[f64] =
    &[0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Feedback scores: thumbs (-1, 0, 1) and stars (1 to 5).
const SCORE_BUCKETS: &[f64] = &[-1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0];
/// Overhead buckets: microseconds to milliseconds.
const OVERHEAD_BUCKETS: &[f64] = &[0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub upstream_faults: IntCounterVec,
    pub backend_connections: IntCounterVec,
    pub duration: HistogramVec,
    pub ttft: HistogramVec,
    pub flag_evaluations: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub flag_active: IntGaugeVec,
    pub flag_reloads: IntCounterVec,
    pub overhead: HistogramVec,
    pub in_flight: IntGaugeVec,
    /// `in_flight` of each dialect (OpenAI, Anthropic), resolved on first use (`in_flight_of`).
    in_flight_of: [std::sync::OnceLock<prometheus::IntGauge>; 2],
    /// Caller connections open, by the worker serving them (`server::Balance` reads it to choose).
    pub client_connections: IntGaugeVec,
    pub cut_off: IntGaugeVec,
    pub tokens: IntCounterVec,
    pub cost_total: prometheus::CounterVec,
    pub request_cost: HistogramVec,
    pub unpriced: IntCounterVec,
    pub feedback: HistogramVec,
    pub overrides_sync: IntCounterVec,
    pub overrides_redis_connected: prometheus::IntGauge,
    pub tls_reloads: IntCounterVec,
    pub tls_handshake_errors: prometheus::IntCounter,
}

impl Metrics {
    /// Builds and registers every family.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram =
            |name: &str, help: &str, labels: &[&str], buckets: &[f64]| -> Result<HistogramVec, prometheus::Error> {
                let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(Metrics {
            requests: counter(
                "switchyard_requests_total",
                "Requests answered, by route, flag, variant, backend, model and HTTP status.",
                &["route", "flag", "variant", "backend", "model", "status"],
            )?,
            request_errors: counter(
                "switchyard_request_errors_total",
                "Requests that ended in an error, by kind.",
                &["route", "flag", "variant", "backend", "kind"],
            )?,
            upstream_faults: counter(
                "switchyard_upstream_faults_total",
                "What backends did wrong, by backend and fault (connect, reset, bad_http, timeout_first_byte, stall, timeout_total, truncated, malformed_json, malformed_sse, stream_error, redirect, too_large, status_429, status_5xx).",
                &["backend", "fault"],
            )?,
            backend_connections: counter(
                "switchyard_backend_connections_total",
                "Connections opened to backends, by backend and protocol (http1, http2); kept-alive ones are reused, so this grows only with churn or load.",
                &["backend", "protocol"],
            )?,
            duration: histogram(
                "switchyard_request_duration_seconds",
                "Time from request received to last response byte.",
                &["route", "variant", "backend"],
                LATENCY_BUCKETS,
            )?,
            ttft: histogram(
                "switchyard_time_to_first_token_seconds",
                "Time from request received to the first response body byte.",
                &["route", "variant", "backend"],
                LATENCY_BUCKETS,
            )?,
            flag_evaluations: counter(
                "switchyard_flag_evaluations_total",
                "Flag evaluations made to route a request, by the variant served.",
                &["flag", "variant"],
            )?,
            fallbacks: counter(
                "switchyard_fallbacks_total",
                "Requests re-sent to the control target after their variant failed.",
                &["route", "from_variant", "reason"],
            )?,
            flag_active: gauge(
                "switchyard_flag_active",
                "1 when the flag is active, 0 when killed or inactive.",
                &["flag"],
            )?,
            flag_reloads: counter(
                "switchyard_flag_reloads_total",
                "Flag definition loads by source and outcome (ok, unchanged, error).",
                &["source", "outcome"],
            )?,
            overhead: histogram(
                "switchyard_gateway_overhead_seconds",
                "Time spent in Switchyard before the upstream request was sent.",
                &["route"],
                OVERHEAD_BUCKETS,
            )?,
            cut_off: gauge(
                "switchyard_variant_cut_off",
                "1 while a variant is cut off for its error rate (its users go to control).",
                &["route", "variant"],
            )?,
            tokens: counter(
                "switchyard_tokens_total",
                "Tokens by type: input (uncached), output, cache_read, cache_write.",
                &["route", "variant", "backend", "model", "type"],
            )?,
            cost_total: {
                let c = prometheus::CounterVec::new(
                    Opts::new("switchyard_cost_usd_total", "Cost in USD from the price table."),
                    &["route", "variant", "backend", "model"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            request_cost: histogram(
                "switchyard_request_cost_usd",
                "Cost of one call in USD.",
                &["route", "variant"],
                COST_BUCKETS,
            )?,
            unpriced: counter(
                "switchyard_unpriced_requests_total",
                "Requests whose model has no price: tokens counted, cost not.",
                &["route", "model"],
            )?,
            feedback: histogram(
                "switchyard_feedback_score",
                "Feedback scores, attributed to the variant that served the request.",
                &["route", "variant"],
                SCORE_BUCKETS,
            )?,
            overrides_sync: counter(
                "switchyard_overrides_sync_total",
                "Shared-overrides (Redis) events: connected, lost, connect_error, seeded, reloaded, published, publish_error, received, rejected.",
                &["outcome"],
            )?,
            overrides_redis_connected: {
                let g = prometheus::IntGauge::new(
                    "switchyard_overrides_redis_connected",
                    "1 while the shared-overrides Redis connection is up (0 when down or not configured).",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            tls_reloads: counter(
                "switchyard_tls_reloads_total",
                "Re-reads of the listener's certificate and key after they changed, by result (ok, error).",
                &["result"],
            )?,
            tls_handshake_errors: {
                let c = prometheus::IntCounter::new(
                    "switchyard_tls_handshake_errors_total",
                    "Client connections dropped because their TLS handshake failed or timed out.",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            in_flight: gauge("switchyard_in_flight_requests", "Requests being served.", &["dialect"])?,
            in_flight_of: Default::default(),
            client_connections: gauge(
                "switchyard_client_connections",
                "Caller connections open, by the worker thread serving them.",
                &["worker"],
            )?,
            registry,
        })
    }

    /// The in-flight gauge of `dialect`: resolved once, not looked up by label per request.
    pub fn in_flight_of(&self, dialect: crate::error::Dialect) -> &prometheus::IntGauge {
        let index = usize::from(dialect == crate::error::Dialect::Anthropic);
        self.in_flight_of[index].get_or_init(|| self.in_flight.with_label_values(&[dialect.as_str()]))
    }

    /// The registry, for families registered elsewhere (the PostHog export's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        buf
    }
}
