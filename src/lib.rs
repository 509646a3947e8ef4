//! Switchyard: an LLM gateway that routes OpenAI- and Anthropic-dialect calls by PostHog feature flags.
//! This file owns the module list only.

pub mod dialect;
pub mod flags;
