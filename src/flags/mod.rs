//! PostHog-compatible feature-flag engine: definitions, bucketing, property matching, evaluation
//! and the compiled immutable form the gateway reads on every request.

pub mod bucketing;
pub mod cli;
mod cohorts;
pub mod compiled;
pub mod dates;
mod dependencies;
mod evaluate;
pub mod model;
pub mod properties;
pub mod pycompat;
pub mod semver;

pub use compiled::{CompiledFlag, CompiledFlags, EvalInput, Evaluation, FlagValue};
pub use model::FlagDefinitions;
