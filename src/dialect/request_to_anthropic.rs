//! OpenAI Chat Completions request → Anthropic Messages request (protocols.md §3.1).
//!
//! Decisions:
//! - `temperature` is clamped to Anthropic's [0, 1] (Portkey does the same); values outside
//!   OpenAI's own range [0, 2] or non-numbers are rejected. When both `temperature` and `top_p`
//!   are set, `top_p` is dropped (Claude Sonnet 4.5+ rejects the pair).
//! - Rejected with a 400 naming the field: `n > 1`, `logprobs: true`, `top_logprobs > 0`,
//!   `audio`, `modalities` containing audio, `prediction`, deprecated `functions`/`function_call`,
//!   non-function tools, `tool_choice` shapes other than auto/none/required/function,
//!   `input_audio` parts, `file` parts other than PDF data, unknown roles, tool messages that
//!   answer no earlier tool call, a conversation with no user/assistant content.
//! - Dropped as harmless (see [`DROPPED_FIELDS`]); any other unknown field is dropped too.
//! - `response_format` `json_schema` → `output_config.format`; `json_object` → an extra system
//!   instruction; `text` → nothing.
//!
//! The request is read into `OpenAiRequest` (its messages typed and borrowed from the text, the
//! rest of its members as values) and the translation written from typed structs that borrow from
//! it (`AnthropicRequest`): no `Value` tree is built for the conversation, either way.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::fmt;

use super::loose::{scalars_read_as, skip, strings_read_as, Array, Checked, Loose, LooseObject, MaybeObject, Object};

use super::anthropic::clean_tool_id;
use super::error::ConvertError;
use super::json_out::JsonOut;
use super::request_parts::{image_block_from_url, not_text, text_of_part_list};
use super::tools::{response_format_to_anthropic, tools_to_anthropic};

/// OpenAI request fields that are accepted and dropped on the way to Anthropic: they tune
/// sampling or OpenAI-side storage/billing and have no Anthropic counterpart.
pub const DROPPED_FIELDS: &[&str] = &[
    "seed",
    "logit_bias",
    "frequency_penalty",
    "presence_penalty",
    "store",
    "metadata",
    "service_tier",
    "verbosity",
    "web_search_options",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_effort",
    "stream_options",
    "safety_identifier (used as metadata.user_id when `user` is absent)",
];

/// Translates an OpenAI-dialect request for an Anthropic backend. `model` is the backend model;
/// `default_max_tokens` applies when neither `max_completion_tokens` nor `max_tokens` is set.
pub fn openai_request_to_anthropic<'a>(
    req: &'a OpenAiRequest<'_>,
    model: &'a str,
    default_max_tokens: u32,
) -> Result<AnthropicRequest<'a>, ConvertError> {
    if !req.object {
        return Err(ConvertError::bad_param("body", "request body must be a JSON object"));
    }
    let messages = req.messages.as_deref();
    let req = &req.rest;
    reject_unsupported(req)?;

    // tools, tool_choice, output_config: rare, and built as values (`tools`).
    let mut extra = Map::new();
    let (mut system, messages) = convert_messages(messages)?;
    if let Some(extra_instruction) = response_format_to_anthropic(req, &mut extra)? {
        system.push(Block::Text(Cow::Borrowed(extra_instruction)));
    }

    let max_tokens = match req
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| req.get("max_tokens").filter(|v| !v.is_null()))
    {
        None => u64::from(default_max_tokens),
        Some(v) => v.as_u64().ok_or_else(|| {
            let field = if req.get("max_completion_tokens").is_some_and(|v| !v.is_null()) {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            ConvertError::bad_param(field, format!("`{field}` must be a non-negative integer"))
        })?,
    };

    let (mut temperature, mut top_p) = (None, None);
    if let Some(t) = req.get("temperature").filter(|v| !v.is_null()) {
        let t = t
            .as_f64()
            .filter(|t| (0.0..=2.0).contains(t))
            .ok_or_else(|| ConvertError::bad_param("temperature", "`temperature` must be a number between 0 and 2"))?;
        temperature = Some(t.min(1.0));
    } else {
        top_p = req.get("top_p").filter(|v| !v.is_null());
    }

    let stop_sequences = stop_sequences(req.get("stop"))?;
    let stream = req.get("stream").and_then(Value::as_bool);
    let user =
        req.get("user").or_else(|| req.get("safety_identifier")).and_then(Value::as_str).filter(|u| !u.is_empty());
    tools_to_anthropic(req, &mut extra)?;
    Ok(AnthropicRequest {
        model,
        system,
        messages,
        max_tokens,
        temperature,
        top_p,
        stop_sequences,
        stream,
        user_id: user,
        extra,
    })
}

/// An OpenAI Chat Completions request as the translation reads it: `messages` typed (strings
/// borrowed from the text when they have no escapes), every other member a value.
#[derive(Default)]
pub struct OpenAiRequest<'a> {
    /// The body is an object (else the translation refuses it).
    object: bool,
    /// `None` when `messages` is absent or not an array; an element that is not an object reads as
    /// an empty message.
    messages: Option<Vec<Object<Message<'a>>>>,
    /// The other members.
    rest: Map<String, Value>,
}

impl<'a> OpenAiRequest<'a> {
    /// Reads a request body; fails only on a text that `Value` would not read either.
    pub fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        let MaybeObject(req) = super::loose::from_bytes::<MaybeObject<OpenAiRequest<'a>>>(body)?;
        Ok(req.map_or_else(OpenAiRequest::default, |req| OpenAiRequest { object: true, ..req }))
    }

    /// `stream_options.include_usage`.
    pub fn include_usage(&self) -> bool {
        let options = self.rest.get("stream_options");
        options.and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false)
    }
}

impl<'de> LooseObject<'de> for OpenAiRequest<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        if key == "messages" {
            self.messages = map.next_value::<Array<Object<Message<'de>>>>()?.0;
        } else {
            self.rest.insert(key.to_owned(), map.next_value()?);
        }
        Ok(())
    }
}

/// The members of a message the translation reads.
#[derive(Default)]
struct Message<'a> {
    role: Loose<'a>,
    content: Content<'a>,
    tool_calls: Option<Value>,
    tool_call_id: Loose<'a>,
    refusal: Loose<'a>,
}

impl<'de> LooseObject<'de> for Message<'de> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "role" => self.role = map.next_value()?,
            "content" => self.content = map.next_value()?,
            "tool_calls" => self.tool_calls = Some(map.next_value()?),
            "tool_call_id" => self.tool_call_id = map.next_value()?,
            "refusal" => self.refusal = map.next_value()?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

/// A message's `content`.
#[derive(Default)]
enum Content<'a> {
    /// Absent or `null`.
    #[default]
    None,
    Str(Cow<'a, str>),
    Parts(Vec<Value>),
    /// A number, a bool or an object.
    Other,
}

impl<'de> Deserialize<'de> for Content<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    strings_read_as!(Content::Str);
    scalars_read_as!(@numbers Content::Other);
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Content::None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut parts = Vec::new();
        while let Some(p) = seq.next_element()? {
            parts.push(p);
        }
        Ok(Content::Parts(parts))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Checked.visit_map(map).map(|_| Content::Other)
    }
}

impl Content<'_> {
    /// The content of message `i` as one string: a string, or text parts joined with `\n`
    /// (`text_of_part_list`); absent or `null` is empty. The parameter an error names is only
    /// written out for parts or an error.
    fn text(&self, i: usize) -> Result<Cow<'_, str>, ConvertError> {
        let param = || format!("messages[{i}].content");
        match self {
            Content::None => Ok(Cow::Borrowed("")),
            Content::Str(s) => Ok(Cow::Borrowed(s)),
            Content::Parts(parts) => text_of_part_list(parts, &param()).map(Cow::Owned),
            Content::Other => Err(not_text(&param())),
        }
    }
}

/// An Anthropic Messages request, borrowing from the OpenAI request it translates; written by
/// [`AnthropicRequest::to_json`].
#[derive(Debug)]
pub struct AnthropicRequest<'a> {
    model: &'a str,
    /// Left out when empty.
    system: Vec<Block<'a>>,
    messages: Vec<Turn<'a>>,
    max_tokens: u64,
    temperature: Option<f64>,
    top_p: Option<&'a Value>,
    stop_sequences: Option<Vec<&'a str>>,
    stream: Option<bool>,
    /// `metadata.user_id`.
    user_id: Option<&'a str>,
    /// `tools`, `tool_choice`, `output_config`, written after the rest.
    extra: Map<String, Value>,
}

impl AnthropicRequest<'_> {
    /// The request's JSON text: the members in the order above, absent ones left out.
    /// `capacity`: a guess at its size (the caller's body is about as long).
    pub fn to_json(&self, capacity: usize) -> Vec<u8> {
        let mut out = JsonOut::with_capacity(capacity);
        let mut o = out.object();
        o.key("model").str(self.model);
        if !self.system.is_empty() {
            blocks(o.key("system"), &self.system);
        }
        let mut messages = o.key("messages").array();
        for turn in &self.messages {
            let mut m = messages.next().object();
            m.key("role").str(turn.role);
            blocks(m.key("content"), &turn.content);
            m.end();
        }
        messages.end();
        o.key("max_tokens").u64(self.max_tokens);
        if let Some(t) = self.temperature {
            o.key("temperature").value(&t);
        }
        if let Some(p) = self.top_p {
            o.key("top_p").value(p);
        }
        if let Some(stops) = &self.stop_sequences {
            let mut list = o.key("stop_sequences").array();
            stops.iter().for_each(|s| list.next().str(s));
            list.end();
        }
        if let Some(stream) = self.stream {
            o.key("stream").bool(stream);
        }
        if let Some(user_id) = self.user_id {
            let mut metadata = o.key("metadata").object();
            metadata.key("user_id").str(user_id);
            metadata.end();
        }
        for (k, v) in &self.extra {
            o.any_key(k).value(v);
        }
        o.end();
        out.into_vec()
    }
}

fn blocks(out: &mut JsonOut, blocks: &[Block<'_>]) {
    let mut list = out.array();
    for block in blocks {
        let out = list.next();
        let b = match block {
            Block::Source(v) => {
                out.value(v);
                continue;
            }
            Block::Text(text) => {
                let mut b = out.object();
                b.key("type").str("text");
                b.key("text").str(text);
                b
            }
            Block::ToolUse { id, name, input } => {
                let mut b = out.object();
                b.key("type").str("tool_use");
                b.key("id").str(id);
                b.key("name").str(name);
                b.key("input").value(input);
                b
            }
            Block::ToolResult { tool_use_id, content } => {
                let mut b = out.object();
                b.key("type").str("tool_result");
                b.key("tool_use_id").str(tool_use_id);
                if !content.is_empty() {
                    b.key("content").str(content);
                }
                b
            }
        };
        b.end();
    }
    list.end();
}

/// One Anthropic message: a role and its content blocks.
#[derive(Debug)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

/// A content block of an Anthropic message or system prompt.
#[derive(Debug)]
enum Block<'a> {
    Text(Cow<'a, str>),
    ToolUse {
        id: String,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
    },
    /// An image or document (`image_block_from_url`).
    Source(Value),
}

fn present(req: &Map<String, Value>, key: &str) -> bool {
    req.get(key).is_some_and(|v| !v.is_null())
}

fn reject_unsupported(req: &Map<String, Value>) -> Result<(), ConvertError> {
    let unsupported = |field: &str, why: &str| {
        ConvertError::bad_param(field, format!("`{field}` is not supported by this model's backend: {why}"))
    };
    if req.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(unsupported("n", "only one choice (n = 1) can be generated"));
    }
    if req.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported("logprobs", "log probabilities are not available"));
    }
    if req.get("top_logprobs").and_then(Value::as_u64).is_some_and(|n| n > 0) {
        return Err(unsupported("top_logprobs", "log probabilities are not available"));
    }
    if present(req, "audio") {
        return Err(unsupported("audio", "audio output is not available"));
    }
    let wants_audio = req.get("modalities").and_then(Value::as_array).is_some_and(|m| m.iter().any(|x| x == "audio"));
    if wants_audio {
        return Err(unsupported("modalities", "audio output is not available"));
    }
    if present(req, "prediction") {
        return Err(unsupported("prediction", "predicted outputs are not available"));
    }
    for field in ["functions", "function_call"] {
        if present(req, field) {
            return Err(unsupported(field, "use `tools` and `tool_choice` instead"));
        }
    }
    Ok(())
}

/// Messages → (system blocks, Anthropic messages), merging consecutive same-role turns and
/// putting every tool result first in its user turn.
fn convert_messages<'a>(
    messages: Option<&'a [Object<Message<'_>>]>,
) -> Result<(Vec<Block<'a>>, Vec<Turn<'a>>), ConvertError> {
    let messages = messages.ok_or_else(|| ConvertError::bad_param("messages", "`messages` must be an array"))?;
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::new();
    let mut known_calls: Vec<String> = Vec::new();

    for (i, Object(m)) in messages.iter().enumerate() {
        let role = m.role.as_str().unwrap_or("");
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_block(m.content.text(i)?));
                continue;
            }
            "user" => ("user", user_blocks(&m.content, i)?),
            "assistant" => ("assistant", assistant_blocks(m, i, &mut known_calls)?),
            "tool" => ("user", vec![tool_result_block(m, i, &known_calls)?]),
            other => {
                return Err(ConvertError::bad_param(
                    format!("messages[{i}].role"),
                    format!("unsupported message role `{other}`"),
                ));
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(Turn { role, content: blocks }),
        }
    }
    if turns.is_empty() {
        return Err(ConvertError::bad_param(
            "messages",
            "at least one non-empty user or assistant message is required",
        ));
    }
    let is_result = |b: &Block<'_>| matches!(b, Block::ToolResult { .. });
    for turn in turns.iter_mut().filter(|t| t.content.iter().skip_while(|b| is_result(b)).any(is_result)) {
        // Tool results must open the user turn; a stable partition keeps their order.
        let (mut first, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut turn.content).into_iter().partition(is_result);
        first.extend(rest);
        turn.content = first;
    }
    Ok((system, turns))
}

fn text_block(text: Cow<'_, str>) -> Option<Block<'_>> {
    (!text.is_empty()).then_some(Block::Text(text))
}

fn user_blocks<'a>(content: &'a Content<'_>, i: usize) -> Result<Vec<Block<'a>>, ConvertError> {
    match content {
        Content::None => Ok(Vec::new()),
        Content::Str(s) => Ok(text_block(Cow::Borrowed(s)).into_iter().collect()),
        Content::Parts(parts) => {
            let mut blocks = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let param = || format!("messages[{i}].content[{j}]");
                match part.get("type").and_then(Value::as_str).unwrap_or("") {
                    "text" => {
                        let text = part.get("text").and_then(Value::as_str).unwrap_or("");
                        blocks.extend(text_block(Cow::Borrowed(text)));
                    }
                    "image_url" => {
                        let url = part.get("image_url").and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str);
                        let url = url.ok_or_else(|| ConvertError::bad_param(param(), "`image_url.url` is required"))?;
                        blocks.push(Block::Source(image_block_from_url(url, &param())?));
                    }
                    "file" => {
                        let data = part.get("file").and_then(|f| f.get("file_data")).and_then(Value::as_str);
                        let data = data.ok_or_else(|| {
                            ConvertError::bad_param(param(), "only inline `file_data` (PDF) files are supported")
                        })?;
                        blocks.push(Block::Source(image_block_from_url(data, &param())?));
                    }
                    other => {
                        return Err(ConvertError::bad_param(
                            param(),
                            format!("content part type `{other}` is not supported by this model's backend"),
                        ));
                    }
                }
            }
            Ok(blocks)
        }
        Content::Other => Err(ConvertError::bad_param(
            format!("messages[{i}].content"),
            "content must be a string or an array of parts",
        )),
    }
}

fn assistant_blocks<'a>(
    m: &'a Message<'_>,
    i: usize,
    known_calls: &mut Vec<String>,
) -> Result<Vec<Block<'a>>, ConvertError> {
    let mut blocks = Vec::new();
    let text: Cow<'a, str> = match &m.content {
        Content::Parts(parts) => Cow::Owned(
            parts.iter().filter_map(|p| p.get("text").or_else(|| p.get("refusal")).and_then(Value::as_str)).collect(),
        ),
        Content::Str(s) => Cow::Borrowed(s),
        _ => Cow::Borrowed(""),
    };
    if text.is_empty() {
        blocks.extend(text_block(Cow::Borrowed(m.refusal.as_str().unwrap_or(""))));
    } else {
        blocks.extend(text_block(text));
    }
    for (j, call) in m.tool_calls.as_ref().and_then(Value::as_array).into_iter().flatten().enumerate() {
        let param = || format!("messages[{i}].tool_calls[{j}]");
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ConvertError::bad_param(param(), "tool call `id` is required"))?;
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
        let name = name.ok_or_else(|| ConvertError::bad_param(param(), "tool call `function.name` is required"))?;
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("");
        // Anthropic needs an object; empty or unparsable arguments become {} (Helicone, Portkey).
        let input = serde_json::from_str::<Value>(arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}));
        let id = clean_tool_id(id);
        known_calls.push(id.clone());
        blocks.push(Block::ToolUse { id, name, input });
    }
    Ok(blocks)
}

fn tool_result_block<'a>(m: &'a Message<'_>, i: usize, known_calls: &[String]) -> Result<Block<'a>, ConvertError> {
    let param = || format!("messages[{i}].tool_call_id");
    let id = m.tool_call_id.as_str().ok_or_else(|| ConvertError::bad_param(param(), "`tool_call_id` is required"))?;
    let id = clean_tool_id(id);
    if !known_calls.contains(&id) {
        return Err(ConvertError::bad_param(
            param(),
            format!("tool message answers `{id}`, which no earlier assistant message called"),
        ));
    }
    let content = m.content.text(i)?.into_owned();
    Ok(Block::ToolResult { tool_use_id: id, content })
}

fn stop_sequences(stop: Option<&Value>) -> Result<Option<Vec<&str>>, ConvertError> {
    let list: Vec<&str> = match stop {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => {
            let strings: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            strings.ok_or_else(|| ConvertError::bad_param("stop", "`stop` must be a string or an array of strings"))?
        }
        Some(_) => return Err(ConvertError::bad_param("stop", "`stop` must be a string or an array of strings")),
    };
    let list: Vec<&str> = list.into_iter().filter(|s| !s.is_empty()).collect();
    Ok((!list.is_empty()).then_some(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(req: &Value) -> Result<Value, ConvertError> {
        let body = serde_json::to_vec(req).unwrap();
        let req = OpenAiRequest::parse(&body).unwrap();
        openai_request_to_anthropic(&req, "claude", 16).map(|r| serde_json::from_slice(&r.to_json(0)).unwrap())
    }

    #[test]
    fn json_object_format_becomes_a_system_instruction() {
        let req = json!({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}});
        let out = translate(&req);
        let want = json!([{"type": "text", "text": "Respond with a single valid JSON object and nothing else."}]);
        assert_eq!(out.map(|o| o["system"].clone()), Ok(want));
    }

    #[test]
    fn an_empty_object_lacks_messages_and_a_non_object_is_no_request() {
        let param = |body: &[u8]| {
            let req = OpenAiRequest::parse(body).unwrap();
            openai_request_to_anthropic(&req, "claude", 16).err().and_then(|e| e.param)
        };
        assert_eq!(param(b"{}"), Some("messages".to_owned()));
        assert_eq!(param(br#"{"messages": {"role": "user"}}"#), Some("messages".to_owned()));
        assert_eq!(param(br#"[{"messages": []}]"#), Some("body".to_owned()));
        assert_eq!(param(b"null"), Some("body".to_owned()));
        assert_eq!(param(br#"{"messages": [3]}"#), Some("messages[0].role".to_owned()));
    }

    #[test]
    fn temperature_outside_openai_range_is_rejected() {
        let req = json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5});
        let err = translate(&req).err().map(|e| e.param);
        assert_eq!(err, Some(Some("temperature".to_owned())));
    }

    #[test]
    fn a_conversation_with_only_system_messages_is_rejected() {
        let req = json!({"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": ""}]});
        let err = translate(&req).err().map(|e| e.param);
        assert_eq!(err, Some(Some("messages".to_owned())));
    }
}
