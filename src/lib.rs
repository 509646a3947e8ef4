//! Switchyard: an LLM gateway that routes OpenAI- and Anthropic-dialect calls by PostHog feature flags.
//! This file owns the module list and `run`, the entry point the binary and the tests share.

pub mod config;
pub mod dialect;
pub mod error;
pub mod flags;
pub mod metrics;
pub mod mock;
pub mod proxy;
pub mod record;
pub mod relay;
pub mod routing;
pub mod server;
pub mod state;
pub mod upstream;

use std::sync::Arc;

/// Builds the gateway's state from a validated config and starts serving on `listen`.
pub async fn start(
    config: config::Config,
    listen: &str,
) -> Result<server::Running, Box<dyn std::error::Error + Send + Sync>> {
    let metrics = Arc::new(metrics::Metrics::new()?);
    let state = Arc::new(state::AppState::new(config, metrics));
    Ok(server::start(state, listen).await?)
}
