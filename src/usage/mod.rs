//! Token usage and cost: one dialect-neutral `Usage` read from a reply body (here) or observed
//! on the side of a relayed stream (`tap`), and the price table that turns it into USD (`prices`).
//!
//! `Usage` uses Anthropic's split (protocols.md §2.3, §3.5): `input` is the *uncached* part of the
//! prompt, and the whole prompt is `input + cache_read + cache_write`. OpenAI's `prompt_tokens`
//! includes both cache counts, so `input = prompt_tokens − cached_tokens − cache_write_tokens`
//! (LiteLLM's formula, the same one `dialect::openai::OpenAiUsage::to_anthropic` uses).

mod member;
mod prices;
pub(crate) mod tap;

pub use prices::{cost, LongContextPrice, Price, PriceSpec, PriceTable, LONG_CONTEXT_THRESHOLD};
pub use tap::{StreamEnd, UsageTap};

use serde::Deserialize;

use crate::dialect::anthropic::AnthropicUsage;
use crate::dialect::loose::{from_bytes, Object};
use crate::dialect::openai::OpenAiUsage;

/// Tokens of one call, split the way prices are quoted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uncached prompt tokens (Anthropic `input_tokens`).
    pub input: u64,
    /// Completion tokens, reasoning included.
    pub output: u64,
    /// Prompt tokens read from the cache.
    pub cache_read: u64,
    /// Prompt tokens written to the cache (Anthropic 5-minute and 1-hour writes together).
    pub cache_write: u64,
}

/// Only the `usage` member of a reply, as its raw text (nothing is built for the rest).
#[derive(Deserialize)]
struct RawUsageOnly<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a serde_json::value::RawValue>,
}

impl Usage {
    /// The whole prompt: uncached input plus both cache counts (OpenAI's `prompt_tokens`).
    pub fn prompt_total(&self) -> u64 {
        self.input.saturating_add(self.cache_read).saturating_add(self.cache_write)
    }

    /// Prompt plus output (OpenAI's `total_tokens`).
    pub fn total(&self) -> u64 {
        self.prompt_total().saturating_add(self.output)
    }

    /// Reads a non-stream OpenAI `chat.completion` body. `None` when the body is not JSON or has
    /// no `usage` object (some legacy servers).
    pub fn from_openai_response(body: &[u8]) -> Option<Usage> {
        // The same result as `OpenAiUsage::from_value` on the parsed `usage`, without building it.
        let Object(u) = from_bytes::<Object<OpenAiUsage>>(usage_object(body)?).ok()?;
        Some(Usage::from(u))
    }

    /// Reads a non-stream Anthropic `message` body. `None` when the body is not JSON or has no
    /// `usage` object.
    pub fn from_anthropic_response(body: &[u8]) -> Option<Usage> {
        // The same result as `AnthropicUsage::from_value` on the parsed `usage`, without building it.
        let Object(u) = from_bytes::<Object<AnthropicUsage>>(usage_object(body)?).ok()?;
        Some(Usage::from(u))
    }

    /// Reads a non-stream body in the given dialect.
    pub fn from_response(dialect: crate::error::Dialect, body: &[u8]) -> Option<Usage> {
        match dialect {
            crate::error::Dialect::OpenAi => Usage::from_openai_response(body),
            crate::error::Dialect::Anthropic => Usage::from_anthropic_response(body),
        }
    }
}

/// The raw text of a reply's top-level `usage` member when it is an object: found by a scan
/// (`member`), serde parsing the whole body only when the scan is unsure.
fn usage_object(body: &[u8]) -> Option<&[u8]> {
    let raw = match member::top_level(body, &member::USAGE) {
        member::Member::Found(raw) => raw,
        member::Member::Absent => return None,
        member::Member::Unsure => serde_json::from_slice::<RawUsageOnly<'_>>(body).ok()?.usage?.get().as_bytes(),
    };
    (raw.first() == Some(&b'{')).then_some(raw)
}

impl From<OpenAiUsage> for Usage {
    fn from(u: OpenAiUsage) -> Self {
        Usage {
            input: u.prompt_tokens.saturating_sub(u.cached_tokens.saturating_add(u.cache_write_tokens)),
            output: u.completion_tokens,
            cache_read: u.cached_tokens,
            cache_write: u.cache_write_tokens,
        }
    }
}

impl From<AnthropicUsage> for Usage {
    fn from(u: AnthropicUsage) -> Self {
        Usage {
            input: u.input_tokens,
            output: u.output_tokens,
            cache_read: u.cache_read_input_tokens,
            cache_write: u.cache_creation_input_tokens,
        }
    }
}

#[cfg(test)]
mod tests;
