//! OpenAI Chat Completions wire helpers: the typed usage object (tolerant of unknown fields), its
//! Anthropic rendering and the usage object the gateway writes (`OpenAiUsageOut`), the `finish_reason` → `stop_reason` table (protocols.md §3.3, §3.5),
//! and the `chat.completion.chunk` envelope.

use super::loose::{count, skip, LooseObject, Object};
use serde::de::MapAccess;
use serde::Serialize;
use serde_json::{json, Value};

/// OpenAI `usage`. `prompt_tokens` includes `cached_tokens` (and `cache_write_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenAiUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

impl OpenAiUsage {
    /// Reads a `usage` object; `None` when it is missing or null (legacy servers).
    pub fn from_value(v: Option<&Value>) -> Option<Self> {
        let v = v.filter(|v| v.is_object())?;
        let n = |x: Option<&Value>| x.and_then(Value::as_u64).unwrap_or(0);
        let details = v.get("prompt_tokens_details");
        Some(OpenAiUsage {
            prompt_tokens: n(v.get("prompt_tokens")),
            completion_tokens: n(v.get("completion_tokens")),
            cached_tokens: n(details.and_then(|d| d.get("cached_tokens"))),
            cache_write_tokens: n(details.and_then(|d| d.get("cache_write_tokens"))),
        })
    }

    /// Anthropic `usage` (LiteLLM's formula): `input_tokens` is the prompt minus both cache
    /// counts, never negative.
    pub fn to_anthropic(&self) -> Value {
        let input = self.prompt_tokens.saturating_sub(self.cached_tokens.saturating_add(self.cache_write_tokens));
        json!({
            "input_tokens": input,
            "output_tokens": self.completion_tokens,
            "cache_creation_input_tokens": self.cache_write_tokens,
            "cache_read_input_tokens": self.cached_tokens,
        })
    }
}

/// An OpenAI `usage` object, as the gateway writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OpenAiUsageOut {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: CachedTokens,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CachedTokens {
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

/// Read leniently, as `from_value` does: a count that is not an unsigned integer is 0.
impl<'de> LooseObject<'de> for OpenAiUsage {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let field = match key {
            "prompt_tokens" => &mut self.prompt_tokens,
            "completion_tokens" => &mut self.completion_tokens,
            "prompt_tokens_details" => {
                let Object(d) = map.next_value::<Object<CacheDetails>>()?;
                (self.cached_tokens, self.cache_write_tokens) = (d.cached_tokens, d.cache_write_tokens);
                return Ok(());
            }
            _ => return skip(map),
        };
        *field = count(map)?;
        Ok(())
    }
}

/// `usage.prompt_tokens_details`.
#[derive(Default)]
struct CacheDetails {
    cached_tokens: u64,
    cache_write_tokens: u64,
}

impl<'de> LooseObject<'de> for CacheDetails {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let field = match key {
            "cached_tokens" => &mut self.cached_tokens,
            "cache_write_tokens" => &mut self.cache_write_tokens,
            _ => return skip(map),
        };
        *field = count(map)?;
        Ok(())
    }
}

/// OpenAI `finish_reason` (+ a backend's hint of which stop string matched, vLLM `stop_reason` /
/// SGLang `matched_stop`) → Anthropic (`stop_reason`, `stop_sequence`). Never null.
pub fn stop_reason_for(finish_reason: Option<&str>, matched_stop: Option<&str>) -> (&'static str, Option<String>) {
    match finish_reason {
        Some("length") => ("max_tokens", None),
        Some("tool_calls" | "function_call") => ("tool_use", None),
        Some("content_filter") => ("refusal", None),
        _ => match matched_stop {
            Some(s) if !s.is_empty() => ("stop_sequence", Some(s.to_owned())),
            _ => ("end_turn", None),
        },
    }
}

/// The matched stop string some OpenAI-compatible servers report on a choice.
pub fn matched_stop(choice: &Value) -> Option<&str> {
    choice.get("stop_reason").and_then(Value::as_str).or_else(|| choice.get("matched_stop").and_then(Value::as_str))
}

/// One `chat.completion.chunk` with a single choice (index 0). `usage: null` is added when the
/// client asked for `include_usage`, as OpenAI does on every chunk but the last.
pub fn chunk(
    id: &str,
    created: u64,
    model: &str,
    delta: Value,
    finish_reason: Option<&str>,
    with_usage_null: bool,
) -> Value {
    let mut c = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null}],
    });
    if with_usage_null {
        c["usage"] = Value::Null;
    }
    c
}

/// The final usage chunk of an OpenAI stream: `choices: []` and the full `usage`.
pub fn usage_chunk(id: &str, created: u64, model: &str, usage: OpenAiUsageOut) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage,
    })
}
