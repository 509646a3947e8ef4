//! PostHog-compatible feature-flag engine: definitions, bucketing, property matching, evaluation
//! and the compiled immutable form the gateway reads on every request.

pub mod cli;
