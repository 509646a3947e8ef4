//! Anthropic Messages wire helpers: the typed usage object (tolerant of unknown fields) and its
//! OpenAI rendering, the `stop_reason` → `finish_reason` table (protocols.md §3.3, §3.5) and
//! tool-use id hygiene.

use super::loose::{count, skip, LooseObject};
use super::openai::{CachedTokens, OpenAiUsageOut};
use serde::Deserialize;
use serde_json::Value;

/// Anthropic `usage`. `input_tokens` is the uncached part of the prompt only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct AnthropicUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl AnthropicUsage {
    /// Reads a `usage` object; missing or null counts are 0.
    pub fn from_value(v: &Value) -> Self {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        AnthropicUsage {
            input_tokens: n("input_tokens"),
            output_tokens: n("output_tokens"),
            cache_creation_input_tokens: n("cache_creation_input_tokens"),
            cache_read_input_tokens: n("cache_read_input_tokens"),
        }
    }

    /// Applies a streamed `message_delta.usage`, whose counts are cumulative. When it carries any
    /// input-side count, that set replaces the one from `message_start` as a whole (never a mix:
    /// bifrost #6598); `output_tokens` is always the latest value.
    pub fn apply_delta(&mut self, delta: &Value) {
        let has = |k: &str| delta.get(k).is_some_and(|x| !x.is_null());
        if has("input_tokens") || has("cache_creation_input_tokens") || has("cache_read_input_tokens") {
            let d = AnthropicUsage::from_value(delta);
            self.input_tokens = d.input_tokens;
            self.cache_creation_input_tokens = d.cache_creation_input_tokens;
            self.cache_read_input_tokens = d.cache_read_input_tokens;
        }
        if let Some(out) = delta.get("output_tokens").and_then(Value::as_u64) {
            self.output_tokens = out;
        }
    }

    /// OpenAI `usage`: the prompt includes both cache counts; `cached_tokens` is the cache read;
    /// `cache_write_tokens` (newest OpenAI SDK field) carries the cache creation count.
    pub fn to_openai(&self) -> OpenAiUsageOut {
        // Saturating: the counts are the backend's, and a sum past u64 must not panic or wrap.
        let prompt = self
            .input_tokens
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens);
        OpenAiUsageOut {
            prompt_tokens: prompt,
            completion_tokens: self.output_tokens,
            total_tokens: prompt.saturating_add(self.output_tokens),
            prompt_tokens_details: CachedTokens {
                cached_tokens: self.cache_read_input_tokens,
                cache_write_tokens: self.cache_creation_input_tokens,
            },
        }
    }
}

/// Read leniently, as `from_value` does: a count that is not an unsigned integer is 0.
impl<'de> LooseObject<'de> for AnthropicUsage {
    fn member<A: serde::de::MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let field = match key {
            "input_tokens" => &mut self.input_tokens,
            "output_tokens" => &mut self.output_tokens,
            "cache_creation_input_tokens" => &mut self.cache_creation_input_tokens,
            "cache_read_input_tokens" => &mut self.cache_read_input_tokens,
            _ => return skip(map),
        };
        *field = count(map)?;
        Ok(())
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`. Never passes a raw Anthropic value through;
/// unknown and missing values become `stop`.
pub fn finish_reason_for(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Anthropic requires tool-use ids to match `^[a-zA-Z0-9_-]+$`; other characters become `_`.
/// The same function is applied to `tool_call_id`s so calls and results still pair up.
pub fn clean_tool_id(id: &str) -> String {
    let cleaned: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if cleaned.is_empty() {
        "toolu_empty".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::openai::OpenAiUsage;

    #[test]
    fn usage_counts_past_u64_saturate_instead_of_overflowing() {
        let a = AnthropicUsage {
            input_tokens: u64::MAX,
            cache_read_input_tokens: 1,
            output_tokens: 1,
            ..Default::default()
        };
        let v = a.to_openai();
        assert_eq!(v.prompt_tokens, u64::MAX);
        assert_eq!(v.total_tokens, u64::MAX);
        let o = OpenAiUsage { prompt_tokens: 5, cached_tokens: u64::MAX, cache_write_tokens: 1, completion_tokens: 1 };
        assert_eq!(o.to_anthropic()["input_tokens"], 0);
    }
}
