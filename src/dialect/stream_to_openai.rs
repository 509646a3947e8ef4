//! Anthropic Messages SSE events → OpenAI `chat.completion.chunk` frames: the stateful
//! translator of protocols.md §3.4.
//!
//! Rules kept here: one role chunk first; tool calls numbered by their ordinal among tool calls
//! (0, 1, 2 …), never by Anthropic's block index, with id/name on the first fragment and
//! argument fragments forwarded unparsed; choice index always 0; the same id/model/created on
//! every chunk; usage only on a final `choices: []` chunk and only when the client asked for it;
//! `data: [DONE]` last. `ping` and unknown events are skipped. An Anthropic `error` event becomes
//! an OpenAI `{"error": {...}}` frame and ends the stream without `[DONE]`, so a client can't
//! mistake a cut-short answer for a complete one; so does an event whose data is not JSON.
//!
//! The stream's usual event, a text delta, takes a path without `Value`s (`text_delta`): the
//! event checked by `scan` (only where serde_json would read the same values) and the text's JSON
//! string copied as it came between the two halves of the stream's text chunk, written once.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Value};

use super::anthropic::{finish_reason_for, AnthropicUsage};
use super::error::{anthropic_stream_error_to_openai_frame, openai_error_frame};
use super::openai::{chunk, usage_chunk};
use super::response::{openai_id_for, unix_now};
use super::scan;
use super::sse::{is_blank, openai_done, openai_frame, SseEvent, StreamFailure};

/// Translates one Anthropic stream into OpenAI frames.
#[derive(Debug)]
pub struct AnthropicToOpenAiStream {
    model: String,
    include_usage: bool,
    created: u64,
    id: String,
    started: bool,
    /// Anthropic block index → tool ordinal, for tool_use blocks only.
    tools: HashMap<u64, u64>,
    next_tool: u64,
    usage: AnthropicUsage,
    finish_sent: bool,
    done: bool,
    failure: Option<StreamFailure>,
    /// A text chunk's frame before and after its `content` string, written when the stream starts
    /// (the id is known then).
    text_frame: (Vec<u8>, Vec<u8>),
}

impl AnthropicToOpenAiStream {
    /// `requested_model` is echoed in every chunk; `include_usage` is the client's
    /// `stream_options.include_usage`.
    pub fn new(requested_model: &str, include_usage: bool) -> Self {
        AnthropicToOpenAiStream {
            model: requested_model.to_owned(),
            include_usage,
            created: unix_now(),
            id: String::new(),
            started: false,
            tools: HashMap::new(),
            next_tool: 0,
            usage: AnthropicUsage::default(),
            finish_sent: false,
            done: false,
            failure: None,
            text_frame: (Vec::new(), Vec::new()),
        }
    }

    /// Fixes the `created` timestamp (deterministic tests).
    pub fn with_created(mut self, created: u64) -> Self {
        self.created = created;
        self
    }

    /// The usage seen so far, in Anthropic terms (for the gateway's own accounting).
    pub fn usage(&self) -> AnthropicUsage {
        self.usage
    }

    /// Whether the stream reached its end (`[DONE]` or an error frame was produced).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Why the stream ended with an error frame, when it did.
    pub fn failure(&self) -> Option<StreamFailure> {
        self.failure
    }

    /// Ends the stream with an error frame.
    fn fail(&mut self, failure: StreamFailure, frame: Bytes) -> Vec<Bytes> {
        self.done = true;
        self.failure = Some(failure);
        vec![frame]
    }

    /// Handles one upstream event and returns the frames to send, possibly none.
    pub fn on_event(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        if self.done || is_blank(&ev.data) {
            return Vec::new();
        }
        if let Some(out) = self.text_delta(ev) {
            return out;
        }
        // Named events with nothing to translate need only their JSON checked.
        if matches!(ev.event.as_deref(), Some("ping" | "content_block_stop")) && scan::is_value_object(&ev.data) {
            return Vec::new();
        }
        self.on_value_event(ev)
    }

    /// `on_event` for any event, through `Value`s.
    fn on_value_event(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            let frame = openai_error_frame("upstream sent an event that is not JSON", "server_error", None);
            return self.fail(StreamFailure::Malformed, frame);
        };
        let name = ev.event.as_deref().or_else(|| data.get("type").and_then(Value::as_str)).unwrap_or("");
        match name {
            "message_start" => self.message_start(&data),
            "content_block_start" => self.block_start(&data),
            "content_block_delta" => self.block_delta(&data),
            "message_delta" => self.message_delta(&data),
            "message_stop" => self.message_stop(),
            "error" => self.fail(StreamFailure::UpstreamError, anthropic_stream_error_to_openai_frame(&data)),
            // ping, content_block_stop and event types added later.
            _ => Vec::new(),
        }
    }

    /// The upstream stream ended (connection closed). Completes a stream that already had its
    /// `message_delta`; otherwise reports the truncation as an error frame.
    pub fn finish(&mut self) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        if self.finish_sent {
            return self.message_stop();
        }
        self.fail(StreamFailure::Truncated, openai_error_frame("upstream stream ended early", "server_error", None))
    }

    fn frame(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        openai_frame(&chunk(&self.id, self.created, &self.model, delta, finish_reason, self.include_usage))
    }

    /// Emits the role chunk if no chunk was sent yet (also covers a missing `message_start`).
    fn ensure_started(&mut self, out: &mut Vec<Bytes>) {
        if !self.started {
            self.started = true;
            if self.id.is_empty() {
                self.id = openai_id_for("");
            }
            self.text_frame = self.text_frame_halves();
            out.push(self.frame(json!({"role": "assistant", "content": ""}), None));
        }
    }

    /// What `frame` writes for a text delta, before and after the text's JSON string: serde_json's
    /// compact JSON of `chunk`, its keys in serde_json's order (sorted).
    fn text_frame_halves(&self) -> (Vec<u8>, Vec<u8>) {
        let before = b"data: {\"choices\":[{\"delta\":{\"content\":".to_vec();
        let mut after = b"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":".to_vec();
        after.extend_from_slice(itoa::Buffer::new().format(self.created).as_bytes());
        after.extend_from_slice(b",\"id\":");
        after.extend_from_slice(Value::from(self.id.as_str()).to_string().as_bytes());
        after.extend_from_slice(b",\"model\":");
        after.extend_from_slice(Value::from(self.model.as_str()).to_string().as_bytes());
        after.extend_from_slice(b",\"object\":\"chat.completion.chunk\"");
        if self.include_usage {
            after.extend_from_slice(b",\"usage\":null");
        }
        after.extend_from_slice(b"}\n\n");
        (before, after)
    }

    /// A `content_block_delta` event of a `text_delta`, read by the scan: its frames, or `None` for
    /// any other event and for a text the scan is not sure serde_json reads the same (`on_event`'s
    /// general path then reads it). The text's JSON string goes out as it came (its escapes too).
    fn text_delta(&mut self, ev: &SseEvent) -> Option<Vec<Bytes>> {
        const EVENT: &str = "content_block_delta";
        if ev.event.as_deref().is_some_and(|e| e != EVENT) {
            return None;
        }
        let [kind, delta] = scan::value_members(&ev.data, ["type", "delta"])?;
        if ev.event.is_none() && kind != Some("\"content_block_delta\"") {
            return None;
        }
        let [kind, text] = scan::value_members(delta?, ["type", "text"])?;
        let text = text.filter(|t| kind == Some("\"text_delta\"") && t.starts_with('"'))?;
        let mut out = Vec::new();
        self.ensure_started(&mut out);
        if text != "\"\"" {
            let (before, after) = &self.text_frame;
            let mut frame = Vec::with_capacity(before.len() + text.len() + after.len());
            frame.extend_from_slice(before);
            frame.extend_from_slice(text.as_bytes());
            frame.extend_from_slice(after);
            out.push(Bytes::from(frame));
        }
        Some(out)
    }

    fn message_start(&mut self, data: &Value) -> Vec<Bytes> {
        let message = data.get("message").unwrap_or(&Value::Null);
        // Only before the first chunk: a repeated (or late) message_start must not change the id
        // the client has already seen.
        if let Some(id) = message.get("id").and_then(Value::as_str).filter(|_| !self.started) {
            self.id = openai_id_for(id);
        }
        self.usage = AnthropicUsage::from_value(message.get("usage").unwrap_or(&Value::Null));
        let mut out = Vec::new();
        self.ensure_started(&mut out);
        out
    }

    fn block_start(&mut self, data: &Value) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.ensure_started(&mut out);
        let block = data.get("content_block").unwrap_or(&Value::Null);
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") => {
                let ordinal = self.next_tool;
                self.next_tool += 1;
                self.tools.insert(index, ordinal);
                // A start that already carries the whole input (some compatible servers) sends it
                // as the first argument fragment.
                let arguments = match block.get("input") {
                    Some(input) if input.as_object().is_some_and(|o| !o.is_empty()) => input.to_string(),
                    _ => String::new(),
                };
                let call = json!({
                    "index": ordinal,
                    "id": block.get("id").and_then(Value::as_str).unwrap_or(""),
                    "type": "function",
                    "function": {"name": block.get("name").and_then(Value::as_str).unwrap_or(""), "arguments": arguments},
                });
                out.push(self.frame(json!({"tool_calls": [call]}), None));
            }
            Some("text") => {
                let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                if !text.is_empty() {
                    out.push(self.frame(json!({"content": text}), None));
                }
            }
            _ => {}
        }
        out
    }

    fn block_delta(&mut self, data: &Value) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.ensure_started(&mut out);
        let delta = data.get("delta").unwrap_or(&Value::Null);
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                if !text.is_empty() {
                    out.push(self.frame(json!({"content": text}), None));
                }
            }
            Some("input_json_delta") => {
                let fragment = delta.get("partial_json").and_then(Value::as_str).unwrap_or("");
                if let Some(&ordinal) = self.tools.get(&index) {
                    if !fragment.is_empty() {
                        let call = json!({"index": ordinal, "function": {"arguments": fragment}});
                        out.push(self.frame(json!({"tool_calls": [call]}), None));
                    }
                }
            }
            // thinking_delta, signature_delta, citations_delta: no OpenAI counterpart.
            _ => {}
        }
        out
    }

    fn message_delta(&mut self, data: &Value) -> Vec<Bytes> {
        if let Some(usage) = data.get("usage") {
            self.usage.apply_delta(usage);
        }
        let mut out = Vec::new();
        self.ensure_started(&mut out);
        if !self.finish_sent {
            self.finish_sent = true;
            let stop_reason = data.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str);
            out.push(self.frame(json!({}), Some(finish_reason_for(stop_reason))));
        }
        out
    }

    fn message_stop(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.ensure_started(&mut out);
        if !self.finish_sent {
            self.finish_sent = true;
            out.push(self.frame(json!({}), Some("stop")));
        }
        if self.include_usage {
            out.push(openai_frame(&usage_chunk(&self.id, self.created, &self.model, self.usage.to_openai())));
        }
        out.push(openai_done());
        self.done = true;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(frames: &[Bytes]) -> Vec<String> {
        frames
            .iter()
            .filter_map(|f| std::str::from_utf8(f).ok()?.strip_prefix("data: ")?.trim().parse::<Value>().ok())
            .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    fn text_delta(text: &str) -> String {
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}).to_string()
    }

    #[test]
    fn a_text_delta_is_written_as_the_value_path_writes_it() {
        for (include_usage, start) in [(false, true), (true, true), (false, false)] {
            let mut fast = AnthropicToOpenAiStream::new("m\"odel é", include_usage).with_created(7);
            let mut slow = AnthropicToOpenAiStream::new("m\"odel é", include_usage).with_created(7);
            let mut events = vec![];
            if start {
                let start =
                    json!({"type": "message_start", "message": {"id": "msg_\"1", "usage": {"input_tokens": 3}}});
                events.push(SseEvent::new(Some("message_start"), start.to_string()));
            }
            for text in ["tok ", "é \"q\"\n\u{1}\\ /", "", "\u{2028}"] {
                events.push(SseEvent::new(Some("content_block_delta"), text_delta(text)));
                events.push(SseEvent::new(None, text_delta(text)));
            }
            events.push(SseEvent::new(Some("message_stop"), r#"{"type":"message_stop"}"#));
            let (mut got, mut want) = (vec![], vec![]);
            for ev in &events {
                got.extend(fast.on_event(ev));
                want.extend(slow.on_value_event(ev));
            }
            if start {
                assert_eq!(got, want, "include_usage {include_usage}");
            } else {
                // Without a message_start each stream draws its own random id: the same otherwise.
                let strip = |frames: &[Bytes]| -> Vec<Value> {
                    frames_values(frames)
                        .into_iter()
                        .map(|mut v| {
                            v.as_object_mut().map(|o| o.remove("id"));
                            v
                        })
                        .collect()
                };
                assert_eq!(strip(&got), strip(&want));
                let ids = ids(&got);
                assert!(ids.len() > 2 && ids.iter().all(|id| id == &ids[0]), "{ids:?}");
            }
        }
    }

    proptest::proptest! {
        /// Any text, as serde_json writes it into the event: the scan's path writes the bytes the
        /// `Value` path writes, for any model name.
        #[test]
        fn any_text_delta_is_written_as_the_value_path_writes_it(text in "\\PC*|[\"\\\\\u{0}-\u{1f}\u{2028}]{0,4}", model in "\\PC{0,8}") {
            let mut fast = AnthropicToOpenAiStream::new(&model, true).with_created(9);
            let mut slow = AnthropicToOpenAiStream::new(&model, true).with_created(9);
            let start = json!({"type": "message_start", "message": {"id": "msg_x", "usage": {}}}).to_string();
            for ev in [SseEvent::new(Some("message_start"), start), SseEvent::new(Some("content_block_delta"), text_delta(&text))] {
                proptest::prop_assert_eq!(fast.on_event(&ev), slow.on_value_event(&ev));
            }
        }
    }

    fn frames_values(frames: &[Bytes]) -> Vec<Value> {
        frames
            .iter()
            .filter_map(|f| std::str::from_utf8(f).ok()?.strip_prefix("data: ")?.trim().parse::<Value>().ok())
            .collect()
    }

    #[test]
    fn a_text_delta_the_scan_is_not_sure_of_takes_the_value_path() {
        let mut t = AnthropicToOpenAiStream::new("m", false).with_created(1);
        let content = |frames: Vec<Bytes>| -> Vec<Value> {
            frames_values(&frames).iter().map(|v| v["choices"][0]["delta"]["content"].clone()).collect()
        };
        // Escapes kept as they came: the client reads the same text.
        let escaped = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\u00e9\/"}}"#;
        let frames = t.on_event(&SseEvent::new(Some("content_block_delta"), escaped));
        assert!(std::str::from_utf8(&frames[1]).is_ok_and(|f| f.contains(r#""content":"\u00e9\/""#)), "{frames:?}");
        assert_eq!(content(frames), [json!(""), json!("é/")]);
        for (data, text) in [
            (r#"{"type":"content_block_delta","delta":{"ty\u0070e":"text_delta","text":"a"}}"#, "a"),
            (r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"b","text":"c"}}"#, "c"),
            (r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"\ud83d\ude00"}}"#, "😀"),
            (r#"{"type":"content_block_delta","index":1e0,"delta":{"type":"text_delta","text":"d"}}"#, "d"),
        ] {
            assert_eq!(content(t.on_event(&SseEvent::new(Some("content_block_delta"), data))), [json!(text)], "{data}");
        }
        let broken = r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"a}}"#;
        let frames = t.on_event(&SseEvent::new(Some("content_block_delta"), broken));
        assert_eq!(t.failure(), Some(StreamFailure::Malformed), "{frames:?}");
    }

    #[test]
    fn a_repeated_message_start_does_not_change_the_chunk_id() {
        let mut t = AnthropicToOpenAiStream::new("m", false).with_created(1);
        let start = |id: &str| {
            let data = json!({"type": "message_start", "message": {"id": id, "usage": {"input_tokens": 1}}});
            SseEvent::new(Some("message_start"), data.to_string())
        };
        let mut frames = t.on_event(&start("msg_1"));
        frames.extend(t.on_event(&start("msg_2")));
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}});
        frames.extend(t.on_event(&SseEvent::new(Some("content_block_delta"), delta.to_string())));
        frames.extend(t.on_event(&SseEvent::new(Some("message_stop"), r#"{"type":"message_stop"}"#)));
        let ids = ids(&frames);
        assert_eq!(ids.len(), 3);
        assert!(ids.iter().all(|id| id == "chatcmpl-msg_1"), "{ids:?}");
    }
}
