//! Switchyard: an LLM gateway that routes OpenAI- and Anthropic-dialect calls by PostHog feature flags.
//! This file owns the module list and `start`, the entry point the binary and the tests share.

pub mod access;
pub mod admin;
pub mod auth;
pub mod breaker;
pub mod config;
pub mod dashboard;
pub mod dialect;
pub mod error;
pub mod export;
pub mod feedback;
pub mod flags;
pub mod fleet;
/// Fuzz entry points (`fuzz/`), replayed by `tests/fuzz_regressions.rs`.
pub mod fuzzing;
pub mod metrics;
pub mod mock;
pub mod pool;
pub mod proxy;
pub mod record;
pub mod relay;
pub mod request;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod sources;
pub mod state;
pub mod tls;
pub mod translate;
pub mod upstream;
pub mod usage;

use std::sync::Arc;

/// Builds the gateway's state from a validated config and starts serving on `listen`.
pub async fn start(
    config: config::Config,
    listen: &str,
) -> Result<server::Running, Box<dyn std::error::Error + Send + Sync>> {
    let metrics = Arc::new(metrics::Metrics::new()?);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let exporter = match &config.export {
        Some((cfg, key)) => {
            let export_metrics = export::ExportMetrics::register(metrics.registry())?;
            Some(export::Exporter::start(cfg, key.clone(), export_metrics, shutdown.clone()))
        }
        None => None,
    };
    let state = Arc::new(state::AppState::new(config, metrics, exporter));
    let running = server::start(state.clone(), listen, shutdown).await?;
    spawn_sources(&state, &running.shutdown);
    Ok(running)
}

/// Starts the flag sources the config names; the file is read once before this returns.
fn spawn_sources(state: &Arc<state::AppState>, shutdown: &tokio_util::sync::CancellationToken) {
    if let Some(path) = &state.config.admin.state_file {
        match admin::load_state(path) {
            Ok(o) if !o.is_empty() => {
                tracing::info!(path = %path.display(), overrides = o.len(), "admin overrides restored");
                let _ = state.sources.update_overrides(state, |cur| *cur = o);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "admin overrides not restored"),
        }
    }
    if let Some(cfg) = &state.config.overrides {
        let (publisher, changes) = fleet::channel();
        if state.fleet.set(publisher).is_ok() {
            tokio::spawn(fleet::run(state.clone(), cfg.clone(), changes, shutdown.clone()));
        }
    }
    let Some(flags) = &state.config.flags else { return };
    if let Some(path) = &flags.file {
        match sources::read_definitions(path) {
            Ok(doc) => {
                let _ = state.sources.set_definitions(state, snapshot::Origin::File, doc);
            }
            Err(e) => tracing::error!(error = %e, "flags file not loaded; not ready until it is"),
        }
        let every = flags.file_poll_interval.unwrap_or(sources::DEFAULT_FILE_POLL);
        tokio::spawn(sources::watch_file(state.clone(), path.clone(), every, shutdown.clone()));
    }
    if let (Some(cfg), Some(keys)) = (&flags.posthog, &state.config.posthog_keys) {
        tokio::spawn(sources::poll_posthog(
            state.clone(),
            cfg.clone(),
            keys.clone(),
            state.posthog_wake.clone(),
            shutdown.clone(),
        ));
    }
}
