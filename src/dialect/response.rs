//! Non-streamed responses in both directions (protocols.md §3.2, §3.6 "Response").
//!
//! Ids: an Anthropic `msg_…` id becomes `chatcmpl-msg_…` and an OpenAI `chatcmpl-…` id becomes
//! `msg_chatcmpl-…`: deterministic, reversible, and easy to match in logs. `model` is the model
//! the client asked for (`requested_model`), not the backend's.

use serde::de::MapAccess;
use serde_json::{json, Value};
use std::borrow::Cow;

use super::anthropic::{finish_reason_for, AnthropicUsage};
use super::json_out::JsonOut;
use super::loose::{skip, Loose, LooseObject, MaybeObject, Object, Objects};
use super::openai::{matched_stop, stop_reason_for, OpenAiUsage, OpenAiUsageOut};

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

/// An Anthropic `message` body → an OpenAI `chat.completion` body, `created` = now, and the reply's
/// `usage` when it has one (an object; of repeated members the last, as the answer reports it), so
/// the body is read once for both. Fails only on text that is not JSON; fields of the wrong type
/// read as absent.
pub fn anthropic_response_to_openai(
    body: &[u8],
    requested_model: &str,
) -> Result<(Vec<u8>, Option<AnthropicUsage>), serde_json::Error> {
    anthropic_response_to_openai_at(body, requested_model, unix_now())
}

/// [`anthropic_response_to_openai`] with an explicit `created` timestamp (deterministic tests).
///
/// The body is read straight into the few fields used (`loose`) and the answer written from typed
/// structs, never through `Value` trees (that was a quarter of a translated request's instructions).
pub fn anthropic_response_to_openai_at(
    body: &[u8],
    requested_model: &str,
    created: u64,
) -> Result<(Vec<u8>, Option<AnthropicUsage>), serde_json::Error> {
    let Object(resp) = super::loose::from_bytes::<Object<AnthropicMessage<'_>>>(body)?;
    let mut text: Cow<'_, str> = Cow::Borrowed("");
    let mut tool_calls = Vec::new();
    for block in resp.content {
        match block.kind.as_str() {
            Some("text") => match (&mut text, block.text.into_str()) {
                (_, None) => {}
                (Cow::Borrowed(""), Some(t)) => text = t,
                (t, Some(more)) => t.to_mut().push_str(&more),
            },
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block.id.into_str().unwrap_or_default(),
                name: block.name.into_str().unwrap_or_default(),
                arguments: block.input.map_or_else(|| "{}".to_owned(), |v| v.to_string()),
            }),
            // thinking, redacted_thinking, server-tool blocks: no OpenAI counterpart.
            _ => {}
        }
    }

    // The `chat.completion`, members in the order OpenAI writes them.
    let mut out = JsonOut::with_capacity(body.len() + 128);
    let mut o = out.object();
    o.key("id").str(&openai_id_for(resp.id.as_str().unwrap_or("")));
    o.key("object").str("chat.completion");
    o.key("created").u64(created);
    o.key("model").str(requested_model);
    let mut choices = o.key("choices").array();
    let mut choice = choices.next().object();
    choice.key("index").u64(0);
    let mut message = choice.key("message").object();
    message.key("role").str("assistant");
    if !text.is_empty() || tool_calls.is_empty() {
        message.key("content").str(&text);
    } else {
        message.key("content").null();
    }
    message.key("refusal").null();
    if !tool_calls.is_empty() {
        let mut list = message.key("tool_calls").array();
        for call in &tool_calls {
            let mut c = list.next().object();
            c.key("id").str(&call.id);
            c.key("type").str("function");
            let mut function = c.key("function").object();
            function.key("name").str(&call.name);
            function.key("arguments").str(&call.arguments);
            function.end();
            c.end();
        }
        list.end();
    }
    message.end();
    choice.key("finish_reason").str(finish_reason_for(resp.stop_reason.as_str()));
    choice.key("logprobs").null();
    choice.end();
    choices.end();
    usage_json(o.key("usage"), &resp.usage.unwrap_or_default().to_openai());
    o.end();
    Ok((out.into_vec(), resp.usage))
}

/// An OpenAI `usage` object, members in the order of `OpenAiUsageOut`.
fn usage_json(out: &mut JsonOut, u: &OpenAiUsageOut) {
    let mut o = out.object();
    o.key("prompt_tokens").u64(u.prompt_tokens);
    o.key("completion_tokens").u64(u.completion_tokens);
    o.key("total_tokens").u64(u.total_tokens);
    let mut details = o.key("prompt_tokens_details").object();
    details.key("cached_tokens").u64(u.prompt_tokens_details.cached_tokens);
    details.key("cache_write_tokens").u64(u.prompt_tokens_details.cache_write_tokens);
    details.end();
    o.end();
}

/// A `tool_use` block as an OpenAI tool call.
struct ToolCall<'a> {
    id: Cow<'a, str>,
    name: Cow<'a, str>,
    /// The input's compact JSON text.
    arguments: String,
}

/// The members of an Anthropic `message` the translation reads.
#[derive(Default)]
struct AnthropicMessage<'a> {
    id: Loose<'a>,
    content: Vec<Block<'a>>,
    stop_reason: Loose<'a>,
    /// `None` when absent or not an object.
    usage: Option<AnthropicUsage>,
}

impl<'de> LooseObject<'de> for AnthropicMessage<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "id" => self.id = map.next_value()?,
            "content" => self.content = map.next_value::<Objects<Block<'de>>>()?.0,
            "stop_reason" => self.stop_reason = map.next_value()?,
            "usage" => self.usage = map.next_value::<MaybeObject<AnthropicUsage>>()?.0,
            _ => skip(map)?,
        }
        Ok(())
    }
}

/// A content block.
#[derive(Default)]
struct Block<'a> {
    kind: Loose<'a>,
    text: Loose<'a>,
    id: Loose<'a>,
    name: Loose<'a>,
    /// `tool_use` input, any JSON (rendered compact with sorted keys, as before).
    input: Option<Value>,
}

impl<'de> LooseObject<'de> for Block<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "type" => self.kind = map.next_value()?,
            "text" => self.text = map.next_value()?,
            "id" => self.id = map.next_value()?,
            "name" => self.name = map.next_value()?,
            "input" => self.input = Some(map.next_value()?),
            _ => skip(map)?,
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The `Value`-based translation this module had before it read bodies directly: the oracle.
    fn reference(resp: &Value, requested_model: &str, created: u64) -> Value {
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
                _ => {}
            }
        }
        let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) };
        let mut message = json!({"role": "assistant", "content": content, "refusal": null});
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        let usage = AnthropicUsage::from_value(resp.get("usage").unwrap_or(&Value::Null));
        json!({
            "id": openai_id_for(resp.get("id").and_then(Value::as_str).unwrap_or("")),
            "object": "chat.completion",
            "created": created,
            "model": requested_model,
            "choices": [{"index": 0, "message": message,
                "finish_reason": finish_reason_for(resp.get("stop_reason").and_then(Value::as_str)), "logprobs": null}],
            "usage": serde_json::to_value(usage.to_openai()).unwrap(),
        })
    }

    fn translate(text: &[u8]) -> Value {
        serde_json::from_slice(&anthropic_response_to_openai_at(text, "m", 7).unwrap().0).unwrap()
    }

    /// Any JSON, often of the wrong type for the member it stands in.
    fn noise() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u32>().prop_map(Value::from),
            Just(json!(1.5)),
            "[a-z\"\\\\é ]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn block() -> impl Strategy<Value = Value> {
        let kind = prop_oneof![Just(json!("text")), Just(json!("tool_use")), Just(json!("thinking")), noise()];
        let field = |s: &'static str| prop_oneof![3 => s.prop_map(Value::from), 1 => noise()];
        (kind, field("[a-z\"\\\\é ]{0,8}"), field("toolu_[0-9]{1,3}"), field("[a-z_]{1,6}"), noise(), any::<u8>())
            .prop_map(|(kind, text, id, name, input, present)| {
                let mut b = serde_json::Map::new();
                for (bit, key, v) in
                    [(0, "type", kind), (1, "text", text), (2, "id", id), (3, "name", name), (4, "input", input)]
                {
                    if present & (1 << bit) != 0 || bit == 0 {
                        b.insert(key.to_owned(), v);
                    }
                }
                Value::Object(b)
            })
    }

    fn message() -> impl Strategy<Value = Value> {
        let content = prop_oneof![4 => prop::collection::vec(prop_oneof![4 => block(), 1 => noise()], 0..4).prop_map(Value::from), 1 => noise()];
        let count = prop_oneof![any::<u32>().prop_map(Value::from), noise()];
        let usage = prop_oneof![
            4 => (count.clone(), count.clone(), count.clone(), count).prop_map(|(a, b, c, d)| json!({
                "input_tokens": a, "output_tokens": b, "cache_creation_input_tokens": c, "cache_read_input_tokens": d})),
            1 => noise(),
        ];
        let stop = prop_oneof![Just(json!("end_turn")), Just(json!("max_tokens")), Just(json!("tool_use")), noise()];
        (prop_oneof![Just(json!("msg_1")), noise()], content, stop, usage, noise()).prop_map(|(id, content, stop, usage, extra)| {
            json!({"id": id, "type": "message", "content": content, "stop_reason": stop, "usage": usage, "extra": extra})
        })
    }

    proptest! {
        /// Read directly, a body gives what the `Value`-based translation gave, however wrong its
        /// members' types (compact or pretty text).
        #[test]
        fn agrees_with_the_value_translation(resp in message(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_vec_pretty(&resp) } else { serde_json::to_vec(&resp) }.unwrap();
            let mut got = translate(&text);
            let mut want = reference(&resp, "m", 7);
            // Ids without one from the backend are random.
            if resp["id"].as_str().is_none_or(str::is_empty) {
                prop_assert!(got["id"].as_str().unwrap().starts_with("chatcmpl-"));
                got["id"] = json!("x");
                want["id"] = json!("x");
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn the_usage_read_for_metering_is_the_one_the_answer_reports() {
        let usage = |text: &str| anthropic_response_to_openai_at(text.as_bytes(), "m", 7).unwrap().1;
        let u = |input_tokens, output_tokens| AnthropicUsage { input_tokens, output_tokens, ..Default::default() };
        assert_eq!(usage(r#"{"usage": {"input_tokens": 3, "output_tokens": 2}}"#), Some(u(3, 2)));
        assert_eq!(usage(r#"{"usage": {}}"#), Some(u(0, 0)), "an object without counts");
        assert_eq!(usage(r#"{"content": []}"#), None, "absent");
        assert_eq!(usage(r#"{"usage": [1, 2]}"#), None, "not an object");
        assert_eq!(usage(r#"{"usage": null}"#), None, "null");
        let repeated = r#"{"usage": {"input_tokens": 1}, "usage": {"input_tokens": 9, "output_tokens": 4}}"#;
        assert_eq!(usage(repeated), Some(u(9, 4)), "the last, as reported");
        assert_eq!(translate(repeated.as_bytes())["usage"]["prompt_tokens"], 9);
        assert_eq!(usage(r#"{"usage": {"input_tokens": 1}, "usage": 5}"#), None, "the last is no object");
    }

    #[test]
    fn non_objects_and_repeated_keys_read_as_value_reads_them() {
        for text in ["[]", "\"s\"", "3", "null", "{}", r#"{"content": 5}"#, r#"{"content": [1, [2], "x"]}"#] {
            let got = translate(text.as_bytes());
            assert_eq!(got["choices"][0]["message"]["content"], "", "{text}");
            assert_eq!(got["usage"]["total_tokens"], 0, "{text}");
        }
        // The last of a repeated key wins, as in `Value`.
        let text = r#"{"id": "msg_a", "id": "msg_b", "content": [{"type": "text", "text": "x", "text": "y"}],
            "content": [{"type": "text", "text": "z\u00e9\n"}, {"type": "text", "text": "!"}]}"#;
        let got = translate(text.as_bytes());
        assert_eq!(got["id"], "chatcmpl-msg_b");
        assert_eq!(got["choices"][0]["message"]["content"], "zé\n!");
        for bad in ["", "{", r#"{"a": 1e999}"#, "{\"a\": \"\u{1}\"}", "{} x"] {
            assert!(anthropic_response_to_openai_at(bad.as_bytes(), "m", 7).is_err(), "{bad}");
        }
        assert!(anthropic_response_to_openai_at(b"{\"a\": \"\xff\"}", "m", 7).is_err(), "invalid UTF-8 where skipped");
    }
}
