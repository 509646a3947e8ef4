//! What every request reads: the validated config compiled into lookup tables (routes by model,
//! backends with their pooled clients, label sets), the metrics, and readiness.

use crate::breaker::Breaker;
use crate::config::{Anonymous, Backend, BackendKind, Config, Target, DEFAULT_MAX_TOKENS};
use crate::metrics::Metrics;
use crate::record::{Served, TargetSeries};
use crate::snapshot::Snapshot;
use crate::sources::Sources;
use crate::upstream::build_pools;
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub struct BackendEntry {
    pub config: Backend,
    /// One keep-alive pool per worker thread (`upstream::pool_for_this_worker`); empty for the
    /// in-process mock.
    pub pools: Vec<Arc<crate::pool::Pool>>,
    /// Calls to this backend in flight (for `max_in_flight`).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Full URLs of the two endpoints, built once.
    pub chat_url: http::Uri,
    pub messages_url: http::Uri,
    /// The `Host` header of both endpoints, built once (as the client would build it per request).
    pub host: Option<http::HeaderValue>,
    /// The backend's own credentials header, built once (`upstream::credentials`).
    pub credentials: Option<(http::HeaderName, http::HeaderValue)>,
}

/// One target of a route (control or a variant) with its metric labels built once.
pub struct TargetEntry {
    pub backend: Arc<BackendEntry>,
    pub model: Arc<str>,
    pub served: Arc<Served>,
    /// Automatic cut-off; variants of routes with `[routes.cutoff]` only.
    pub breaker: Option<Breaker>,
}

pub struct RouteEntry {
    pub model: Arc<str>,
    pub flag: Option<Arc<str>>,
    pub control: TargetEntry,
    pub variants: HashMap<String, TargetEntry>,
    pub anonymous: Anonymous,
    pub default_max_tokens: u32,
    pub fallback: bool,
}

pub struct AppState {
    pub config: Arc<Config>,
    /// The flag snapshot requests read (lock-free); `None` until the first load.
    pub snapshot: ArcSwapOption<Snapshot>,
    /// The snapshot's only writer.
    pub sources: Sources,
    /// Wakes the PostHog poller for an immediate poll.
    pub posthog_wake: Arc<tokio::sync::Notify>,
    pub routes: HashMap<String, RouteEntry>,
    /// Every backend (the routes hold them too), for housekeeping: idle connections are pruned.
    pub backends: Vec<Arc<BackendEntry>>,
    pub metrics: Arc<Metrics>,
    /// Set once the first flag snapshot loaded (immediately when no flags are configured).
    pub ready: AtomicBool,
    /// LLM requests in flight (for `[server] max_in_flight`).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Sends `$feature_flag_called` and `$ai_generation` events to PostHog, when configured.
    pub exporter: Option<crate::export::Exporter>,
    /// Which variant served recent requests, for feedback.
    pub feedback: Arc<crate::feedback::FeedbackStore>,
    /// `GET /v1/models`, rendered once.
    pub models_body: Bytes,
    /// Shares admin overrides with the fleet; set when `[overrides]` is configured.
    pub fleet: std::sync::OnceLock<crate::fleet::Publisher>,
}

impl AppState {
    /// `exporter`: the PostHog event exporter, when `[export.posthog]` is configured.
    pub fn new(config: Config, metrics: Arc<Metrics>, exporter: Option<crate::export::Exporter>) -> Self {
        let backends: HashMap<String, Arc<BackendEntry>> = config
            .backends
            .iter()
            .map(|(name, b)| {
                let pools = match b.kind {
                    BackendKind::Mock => Vec::new(),
                    _ => build_pools(b, config.server.workers, &metrics.backend_connections),
                };
                let url = |path: &str| format!("{}{path}", b.base_url).parse().unwrap_or_default();
                let entry = BackendEntry {
                    config: b.clone(),
                    pools,
                    in_flight: Arc::default(),
                    chat_url: url("/v1/chat/completions"),
                    messages_url: url("/v1/messages"),
                    host: crate::upstream::host_header(&url("/v1/chat/completions")),
                    credentials: crate::upstream::credentials(b),
                };
                (name.clone(), Arc::new(entry))
            })
            .collect();
        let feedback = Arc::new(crate::feedback::FeedbackStore::new(config.server.feedback_capacity));
        let mut routes = HashMap::new();
        for r in &config.routes {
            let route: Arc<str> = r.model.as_str().into();
            let flag: Arc<str> = r.flag.as_deref().unwrap_or("").into();
            let target = |variant: &str, t: &Target| -> Option<TargetEntry> {
                let backend = backends.get(&t.backend)?.clone();
                let variant: Arc<str> = variant.into();
                Some(TargetEntry {
                    served: Arc::new(Served {
                        series: TargetSeries::new(
                            &metrics,
                            &route,
                            &flag,
                            &variant,
                            &t.backend,
                            &t.model,
                            config.prices.lookup(&t.model).is_some(),
                        ),
                        headers: served_headers(&flag, &variant, &t.backend, &t.model),
                        feedback: feedback.register(&route, &variant),
                        route: route.clone(),
                        flag: flag.clone(),
                        variant: variant.clone(),
                        backend: t.backend.as_str().into(),
                        model: t.model.as_str().into(),
                        stats: Arc::default(),
                        price: config.prices.lookup(&t.model).copied(),
                        provider: match backend.config.kind {
                            BackendKind::Openai => "openai",
                            BackendKind::Anthropic => "anthropic",
                            BackendKind::Mock => "mock",
                        },
                    }),
                    backend,
                    model: t.model.as_str().into(),
                    breaker: (&*variant != "control").then(|| r.cutoff.clone().map(Breaker::new)).flatten(),
                })
            };
            // Validation guarantees every named backend exists.
            let Some(control) = target("control", &r.control) else {
                continue;
            };
            let variants = r.variants.iter().filter_map(|(k, t)| Some((k.clone(), target(k, t)?))).collect();
            routes.insert(
                r.model.clone(),
                RouteEntry {
                    model: route.clone(),
                    flag: r.flag.as_deref().map(Into::into),
                    control,
                    variants,
                    anonymous: r.anonymous,
                    default_max_tokens: r.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
                    fallback: r.fallback,
                },
            );
        }
        let data: Vec<_> = config
            .routes
            .iter()
            .map(|r| serde_json::json!({"id": r.model, "object": "model", "created": 0, "owned_by": "switchyard"}))
            .collect();
        let models_body = Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string());
        let ready = AtomicBool::new(config.flags.is_none());
        AppState {
            config: Arc::new(config),
            snapshot: ArcSwapOption::empty(),
            sources: Sources::default(),
            posthog_wake: Arc::new(tokio::sync::Notify::new()),
            feedback,
            exporter,
            in_flight: Arc::default(),
            routes,
            backends: backends.into_values().collect(),
            metrics,
            ready,
            models_body,
            fleet: std::sync::OnceLock::new(),
        }
    }
}

/// The `x-switchyard-*` headers of a target, built once.
fn served_headers(flag: &str, variant: &str, backend: &str, model: &str) -> Vec<(http::HeaderName, http::HeaderValue)> {
    [
        ("x-switchyard-flag", flag),
        ("x-switchyard-variant", variant),
        ("x-switchyard-backend", backend),
        ("x-switchyard-model", model),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .filter_map(|(k, v)| Some((http::HeaderName::from_static(k), http::HeaderValue::from_str(v).ok()?)))
    .collect()
}
