//! Non-streamed responses in both directions (protocols.md §3.2, §3.6 "Response").
//!
//! Ids: an Anthropic `msg_…` id becomes `chatcmpl-msg_…` and an OpenAI `chatcmpl-…` id becomes
//! `msg_chatcmpl-…`: deterministic, reversible, and easy to match in logs. `model` is the model
//! the client asked for (`requested_model`), not the backend's.

use serde_json::{json, Value};

use super::anthropic::{finish_reason_for, AnthropicUsage};
use super::openai::{matched_stop, stop_reason_for, OpenAiUsage};

/// Seconds since the Unix epoch, for OpenAI's `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The OpenAI id for an Anthropic message id; a random one when the backend sent none.
pub fn openai_id_for(anthropic_id: &str) -> String {
    if anthropic_id.is_empty() {
        return format!("chatcmpl-{}", random_suffix());
    }
    format!("chatcmpl-{anthropic_id}")
}

fn random_suffix() -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(24).collect()
}

/// The Anthropic id for an OpenAI completion id; a random one when the backend sent none.
pub fn anthropic_id_for(openai_id: Option<&str>) -> String {
    match openai_id.filter(|id| !id.is_empty()) {
        Some(id) => format!("msg_{id}"),
        None => format!("msg_{}", random_suffix()),
    }
}

/// An Anthropic `message` → an OpenAI `chat.completion`, `created` = now.
pub fn anthropic_response_to_openai(resp: &Value, requested_model: &str) -> Value {
    anthropic_response_to_openai_at(resp, requested_model, unix_now())
}

/// [`anthropic_response_to_openai`] with an explicit `created` timestamp (deterministic tests).
pub fn anthropic_response_to_openai_at(resp: &Value, requested_model: &str, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in resp.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": block.get("id").and_then(Value::as_str).unwrap_or(""),
                    "type": "function",
                    "function": {
                        "name": block.get("name").and_then(Value::as_str).unwrap_or(""),
                        "arguments": input.to_string(),
                    },
                }));
            }
            // thinking, redacted_thinking, server-tool blocks: no OpenAI counterpart.
            _ => {}
        }
    }
    let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let stop_reason = resp.get("stop_reason").and_then(Value::as_str);
    let usage = AnthropicUsage::from_value(resp.get("usage").unwrap_or(&Value::Null));
    json!({
        "id": openai_id_for(resp.get("id").and_then(Value::as_str).unwrap_or("")),
        "object": "chat.completion",
        "created": created,
        "model": requested_model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason_for(stop_reason),
            "logprobs": null,
        }],
        "usage": usage.to_openai(),
    })
}

/// An OpenAI `chat.completion` → an Anthropic `message`: a text block only when the text is
/// non-empty, then the tool_use blocks (arguments parsed; unparsable → `{}`).
pub fn openai_response_to_anthropic(resp: &Value, requested_model: &str) -> Value {
    let choice = resp.get("choices").and_then(Value::as_array).and_then(|c| c.first()).unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    };
    let text =
        if text.is_empty() { message.get("refusal").and_then(Value::as_str).unwrap_or("").to_owned() } else { text };
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for (n, call) in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let f = call.get("function").unwrap_or(&Value::Null);
        let arguments = f.get("arguments").and_then(Value::as_str).unwrap_or("");
        let input = serde_json::from_str::<Value>(arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}));
        let id = call.get("id").and_then(Value::as_str).map_or_else(|| format!("toolu_{n}"), str::to_owned);
        content.push(json!({
            "type": "tool_use",
            "id": id,
            "name": f.get("name").and_then(Value::as_str).unwrap_or(""),
            "input": input,
        }));
    }
    let (stop_reason, stop_sequence) =
        stop_reason_for(choice.get("finish_reason").and_then(Value::as_str), matched_stop(choice));
    let usage = OpenAiUsage::from_value(resp.get("usage")).unwrap_or_default();
    json!({
        "id": anthropic_id_for(resp.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage.to_anthropic(),
    })
}
