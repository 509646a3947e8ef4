//! Anthropic Messages request → OpenAI Chat Completions request (protocols.md §3.6), for
//! Anthropic-dialect apps on OpenAI or OpenAI-compatible ("legacy") backends.
//!
//! Decisions:
//! - `max_tokens` → `max_completion_tokens` (what current OpenAI models need). For legacy
//!   servers the caller applies [`adapt_for_legacy_backend`].
//! - `system` blocks are joined with `\n\n` into one leading system message.
//! - Tool results become `tool` messages placed before the rest of their user turn; `is_error`
//!   has no OpenAI field, so the text is prefixed with `Error: `.
//! - Streaming always sets `stream_options.include_usage` so usage arrives.
//! - Dropped: `top_k`, `thinking` (and thinking blocks in history), `cache_control`,
//!   `service_tier`, citations. `stop_sequences` pass unchanged (OpenAI itself rejects more
//!   than 4; legacy servers may accept more).
//! - Rejected with a 400 naming the field: server tools (a `type` other than `custom`),
//!   `mcp_servers`, `container`, images inside tool results, blocks with no OpenAI counterpart.

use serde_json::{json, Map, Value};

use super::error::ConvertError;
use super::request_parts::url_from_source;
use super::tools::{output_format_to_openai, tools_to_openai};

/// Translates an Anthropic-dialect request for an OpenAI-compatible backend; `model` is the
/// backend model.
pub fn anthropic_request_to_openai(req: &Value, model: &str) -> Result<Value, ConvertError> {
    let req = req.as_object().ok_or_else(|| ConvertError::bad_param("body", "request body must be a JSON object"))?;
    for field in ["mcp_servers", "container"] {
        if req.get(field).is_some_and(|v| !v.is_null()) {
            return Err(ConvertError::bad_param(field, format!("`{field}` is not supported by this model's backend")));
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));

    let mut messages = Vec::new();
    let system = match req.get("system") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n"),
        Some(_) => {
            return Err(ConvertError::bad_param("system", "`system` must be a string or an array of text blocks"))
        }
    };
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    let input = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ConvertError::bad_param("messages", "`messages` must be an array"))?;
    for (i, m) in input.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user") => user_messages(m.get("content"), i, &mut messages)?,
            Some("assistant") => messages.extend(assistant_message(m.get("content"), i)?),
            Some("system") => {
                let text = blocks_text(m.get("content"));
                if !text.is_empty() {
                    messages.push(json!({"role": "system", "content": text}));
                }
            }
            _ => {
                return Err(ConvertError::bad_param(
                    format!("messages[{i}].role"),
                    "role must be `user` or `assistant`",
                ))
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(max) = req.get("max_tokens").filter(|v| !v.is_null()) {
        out.insert("max_completion_tokens".into(), max.clone());
    }
    for field in ["temperature", "top_p"] {
        if let Some(v) = req.get(field).filter(|v| !v.is_null()) {
            out.insert(field.into(), v.clone());
        }
    }
    if let Some(stop) = req.get("stop_sequences").and_then(Value::as_array).filter(|s| !s.is_empty()) {
        out.insert("stop".into(), Value::Array(stop.clone()));
    }
    if let Some(user) = req.get("metadata").and_then(|m| m.get("user_id")).and_then(Value::as_str) {
        out.insert("user".into(), json!(user));
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    tools_to_openai(req, &mut out)?;
    output_format_to_openai(req, &mut out);
    Ok(Value::Object(out))
}

/// Adapts a translated request for a legacy OpenAI-compatible server (vLLM, Ollama, TGI, older
/// Azure): `max_completion_tokens` → `max_tokens`, `developer` → `system`, and optionally
/// removes `stream_options` for servers that reject it (protocols.md §3.8).
pub fn adapt_for_legacy_backend(req: &mut Value, keep_stream_options: bool) {
    let Some(obj) = req.as_object_mut() else {
        return;
    };
    if let Some(max) = obj.remove("max_completion_tokens") {
        obj.insert("max_tokens".into(), max);
    }
    if !keep_stream_options {
        obj.remove("stream_options");
    }
    for m in obj.get_mut("messages").and_then(Value::as_array_mut).into_iter().flatten() {
        if m.get("role").and_then(Value::as_str) == Some("developer") {
            m["role"] = json!("system");
        }
    }
}

fn blocks_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

/// One Anthropic user turn → tool messages (one per tool_result, first) then one user message
/// with the remaining text and image parts.
fn user_messages(content: Option<&Value>, i: usize, out: &mut Vec<Value>) -> Result<(), ConvertError> {
    let blocks = match content {
        Some(Value::String(s)) => {
            if !s.is_empty() {
                out.push(json!({"role": "user", "content": s}));
            }
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(ConvertError::bad_param(
                format!("messages[{i}].content"),
                "content must be a string or an array of blocks",
            ))
        }
    };
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "tool_result" => out.push(tool_message(b, &param)?),
            "text" => {
                let text = b.get("text").and_then(Value::as_str).unwrap_or("");
                if !text.is_empty() {
                    parts.push(json!({"type": "text", "text": text}));
                }
            }
            "image" => {
                let url = url_from_source(b.get("source"), &param)?;
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            "document" => parts.push(document_part(b, &param)?),
            other => {
                return Err(ConvertError::bad_param(
                    param,
                    format!("content block type `{other}` is not supported by this model's backend"),
                ))
            }
        }
    }
    match parts.as_slice() {
        [] => {}
        [only] if only["type"] == "text" => out.push(json!({"role": "user", "content": only["text"]})),
        _ => out.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

fn document_part(b: &Value, param: &str) -> Result<Value, ConvertError> {
    let source = b.get("source");
    match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
        Some("text") => {
            let text = source.and_then(|s| s.get("data")).and_then(Value::as_str).unwrap_or("");
            Ok(json!({"type": "text", "text": text}))
        }
        Some("base64") => {
            let url = url_from_source(source, param)?;
            Ok(json!({"type": "file", "file": {"file_data": url, "filename": "document.pdf"}}))
        }
        _ => Err(ConvertError::bad_param(param, "only base64 and text document sources are supported")),
    }
}

fn tool_message(b: &Value, param: &str) -> Result<Value, ConvertError> {
    let id = b
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ConvertError::bad_param(param, "`tool_use_id` is required"))?;
    let mut text = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let mut texts = Vec::new();
            for item in items {
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(item.get("text").and_then(Value::as_str).unwrap_or("")),
                    _ => {
                        return Err(ConvertError::bad_param(
                            format!("{param}.content"),
                            "only text is supported inside tool results by this model's backend",
                        ))
                    }
                }
            }
            texts.join("\n")
        }
        Some(_) => {
            return Err(ConvertError::bad_param(
                format!("{param}.content"),
                "tool result content must be a string or blocks",
            ))
        }
    };
    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("Error: {text}");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn assistant_message(content: Option<&Value>, i: usize) -> Result<Option<Value>, ConvertError> {
    let blocks = match content {
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => return Ok(Some(json!({"role": "assistant", "content": s}))),
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(ConvertError::bad_param(
                format!("messages[{i}].content"),
                "content must be a string or an array of blocks",
            ))
        }
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            "tool_use" => {
                let id = b.get("id").and_then(Value::as_str).unwrap_or("");
                let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}),
                );
            }
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(ConvertError::bad_param(
                    format!("messages[{i}].content[{j}]"),
                    format!("content block type `{other}` is not supported by this model's backend"),
                ));
            }
        }
    }
    if text.is_empty() && calls.is_empty() {
        return Ok(None);
    }
    let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_adaptation_renames_max_tokens_and_developer_and_can_drop_stream_options() {
        let mut req = json!({
            "model": "m",
            "max_completion_tokens": 10,
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "developer", "content": "x"}],
        });
        adapt_for_legacy_backend(&mut req, false);
        assert_eq!(
            req,
            json!({"model": "m", "max_tokens": 10, "stream": true, "messages": [{"role": "system", "content": "x"}]})
        );
    }

    #[test]
    fn structured_output_maps_to_a_json_schema_response_format() {
        let req = json!({
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        });
        let out = anthropic_request_to_openai(&req, "gpt-4o");
        let want = json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}});
        assert_eq!(out.map(|o| o["response_format"].clone()), Ok(want));
    }
}
