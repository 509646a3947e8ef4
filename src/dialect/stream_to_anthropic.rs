//! OpenAI `chat.completion.chunk` stream → Anthropic Messages SSE events: the state machine of
//! protocols.md §3.6 "Streaming".
//!
//! Rules kept here: `message_start` first; at most one open content block; block indexes dense
//! from 0, each started before its deltas and stopped before the next starts; a new tool call is
//! recognised by a new tool `index` only (some servers resend the name or omit the id); argument
//! fragments are forwarded unparsed as `input_json_delta`; content is processed before a
//! `finish_reason` in the same chunk; `message_delta` is held until the usage chunk or the end of
//! the stream; every frame has an `event:` line. An in-stream `{"error": …}` payload becomes
//! `event: error`. A stream that ends with neither `finish_reason` nor `[DONE]` ends with an
//! `api_error` event, never a fake `message_stop`. Interleaved fragments of two tool calls
//! (a fragment for a call whose block was already closed) are not supported: they end the
//! stream with an error event rather than corrupt the arguments; so does an event whose data is
//! not JSON.
//!
//! The stream's usual chunk, more text for the open text block, takes a path without `Value`s
//! (`text_chunk`): the chunk checked by `scan` (only where serde_json would read the same values)
//! and the text's JSON string copied as it came into the `text_delta` event.

use bytes::Bytes;
use serde_json::{json, Value};

use super::error::{anthropic_error_frame, openai_stream_error_to_anthropic_frame};
use super::openai::{matched_stop, stop_reason_for, OpenAiUsage};
use super::response::anthropic_id_for;
use super::scan;
use super::sse::{anthropic_frame, is_blank, SseEvent, StreamFailure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    /// The OpenAI tool index of the open tool_use block.
    Tool(u64),
}

/// Translates one OpenAI stream into Anthropic frames.
#[derive(Debug)]
pub struct OpenAiToAnthropicStream {
    model: String,
    started: bool,
    open: Open,
    next_block: u64,
    /// OpenAI tool indexes already given a block, in order.
    seen_tools: Vec<u64>,
    finish_reason: Option<String>,
    matched_stop: Option<String>,
    usage: Option<OpenAiUsage>,
    done: bool,
    failure: Option<StreamFailure>,
}

impl OpenAiToAnthropicStream {
    /// `requested_model` is the model named in `message_start`.
    pub fn new(requested_model: &str) -> Self {
        OpenAiToAnthropicStream {
            model: requested_model.to_owned(),
            started: false,
            open: Open::None,
            next_block: 0,
            seen_tools: Vec::new(),
            finish_reason: None,
            matched_stop: None,
            usage: None,
            done: false,
            failure: None,
        }
    }

    /// The backend's usage, when it sent any (for the gateway's own accounting).
    pub fn usage(&self) -> Option<OpenAiUsage> {
        self.usage
    }

    /// Whether the stream reached its end (`message_stop` or an error event was produced).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Why the stream ended with an error event, when it did.
    pub fn failure(&self) -> Option<StreamFailure> {
        self.failure
    }

    /// Ends the stream with an error event.
    fn fail(&mut self, failure: StreamFailure, frame: Bytes, out: &mut Vec<Bytes>) {
        self.done = true;
        self.failure = Some(failure);
        out.push(frame);
    }

    /// Handles one upstream event and returns the frames to send, possibly none.
    pub fn on_event(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        if self.done || is_blank(&ev.data) {
            return Vec::new();
        }
        if ev.data.trim() == "[DONE]" {
            return self.complete(true);
        }
        if let Some(out) = self.text_chunk(&ev.data) {
            return out;
        }
        self.on_value_event(ev)
    }

    /// A chunk that only adds text to the open text block (no error, usage, tool call, refusal or
    /// finish), read by the scan: its frames, or `None` for any other chunk and for one the scan is
    /// not sure serde_json reads the same (`on_event`'s general path then reads it).
    fn text_chunk(&mut self, data: &str) -> Option<Vec<Bytes>> {
        let absent = |v: Option<&str>| v.is_none_or(|v| v == "null");
        if !self.started || self.open != Open::Text {
            return None;
        }
        let [error, usage, choices] = scan::value_members(data, ["error", "usage", "choices"])?;
        if !absent(error) || !absent(usage) {
            return None;
        }
        // One choice: the array's one element is an object the scan takes whole.
        let choice = choices?.strip_prefix('[')?.strip_suffix(']')?;
        let [delta, finish] = scan::value_members(choice, ["delta", "finish_reason"])?;
        let [text, refusal, calls] = scan::value_members(delta?, ["content", "refusal", "tool_calls"])?;
        if !absent(finish) || !(absent(refusal) || refusal == Some("\"\"")) || !absent(calls) {
            return None;
        }
        let text = text.filter(|t| t.starts_with('"'))?;
        if text == "\"\"" {
            return Some(Vec::new());
        }
        let mut frame = Vec::with_capacity(text.len() + 120);
        frame.extend_from_slice(b"event: content_block_delta\ndata: {\"delta\":{\"text\":");
        frame.extend_from_slice(text.as_bytes());
        frame.extend_from_slice(b",\"type\":\"text_delta\"},\"index\":");
        frame.extend_from_slice(itoa::Buffer::new().format(self.next_block).as_bytes());
        frame.extend_from_slice(b",\"type\":\"content_block_delta\"}\n\n");
        Some(vec![Bytes::from(frame)])
    }

    /// `on_event` for any chunk, through `Value`s.
    fn on_value_event(&mut self, ev: &SseEvent) -> Vec<Bytes> {
        let mut out = Vec::new();
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            let frame = anthropic_error_frame("api_error", "upstream sent an event that is not JSON");
            self.fail(StreamFailure::Malformed, frame, &mut out);
            return out;
        };
        if data.get("error").is_some_and(|e| !e.is_null()) {
            self.fail(StreamFailure::UpstreamError, openai_stream_error_to_anthropic_frame(&data), &mut out);
            return out;
        }
        if !self.started {
            self.start(&data, &mut out);
        }
        if let Some(usage) = OpenAiUsage::from_value(data.get("usage")) {
            self.usage = Some(usage);
        }
        let choice = data.get("choices").and_then(Value::as_array).and_then(|c| c.first());
        if let Some(choice) = choice {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            for key in ["content", "refusal"] {
                if let Some(text) = delta.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    self.text(text, &mut out);
                }
            }
            for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                if !self.tool_fragment(call, &mut out) {
                    let frame = anthropic_error_frame("api_error", "upstream interleaved tool call fragments");
                    self.fail(StreamFailure::Malformed, frame, &mut out);
                    return out;
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.close_block(&mut out);
                self.finish_reason = Some(reason.to_owned());
                self.matched_stop = matched_stop(choice).map(str::to_owned);
            }
        }
        out
    }

    /// The upstream stream ended (connection closed). Completes a stream that had its
    /// `finish_reason`; otherwise reports the truncation as an `api_error` event.
    pub fn finish(&mut self) -> Vec<Bytes> {
        if self.done {
            return Vec::new();
        }
        self.complete(false)
    }

    fn start(&mut self, data: &Value, out: &mut Vec<Bytes>) {
        self.started = true;
        let message = json!({
            "id": anthropic_id_for(data.get("id").and_then(Value::as_str)),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        out.push(anthropic_frame("message_start", &json!({"type": "message_start", "message": message})));
    }

    fn text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        if self.open != Open::Text {
            self.close_block(out);
            self.open_block(Open::Text, json!({"type": "text", "text": ""}), out);
        }
        self.delta(json!({"type": "text_delta", "text": text}), out);
    }

    /// Returns false for a fragment of a tool call whose block is already closed.
    fn tool_fragment(&mut self, call: &Value, out: &mut Vec<Bytes>) -> bool {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(match self.open {
            Open::Tool(i) => i,
            _ => self.seen_tools.len() as u64,
        });
        let f = call.get("function").unwrap_or(&Value::Null);
        if !self.seen_tools.contains(&index) {
            self.close_block(out);
            self.seen_tools.push(index);
            let id = call.get("id").and_then(Value::as_str).map_or_else(|| format!("toolu_{index}"), str::to_owned);
            let name = f.get("name").and_then(Value::as_str).unwrap_or("");
            self.open_block(Open::Tool(index), json!({"type": "tool_use", "id": id, "name": name, "input": {}}), out);
        } else if self.open != Open::Tool(index) {
            return false;
        }
        if let Some(args) = f.get("arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
            self.delta(json!({"type": "input_json_delta", "partial_json": args}), out);
        }
        true
    }

    fn open_block(&mut self, kind: Open, block: Value, out: &mut Vec<Bytes>) {
        self.open = kind;
        let ev = json!({"type": "content_block_start", "index": self.next_block, "content_block": block});
        out.push(anthropic_frame("content_block_start", &ev));
    }

    fn delta(&self, delta: Value, out: &mut Vec<Bytes>) {
        let ev = json!({"type": "content_block_delta", "index": self.next_block, "delta": delta});
        out.push(anthropic_frame("content_block_delta", &ev));
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if self.open != Open::None {
            out.push(anthropic_frame(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.next_block}),
            ));
            self.open = Open::None;
            self.next_block += 1;
        }
    }

    /// Ends the message: `[DONE]` (`saw_done`) or a `finish_reason` makes the stream complete;
    /// without either it was cut short.
    fn complete(&mut self, saw_done: bool) -> Vec<Bytes> {
        self.done = true;
        let mut out = Vec::new();
        if !saw_done && self.finish_reason.is_none() {
            self.fail(
                StreamFailure::Truncated,
                anthropic_error_frame("api_error", "upstream stream ended early"),
                &mut out,
            );
            return out;
        }
        if !self.started {
            self.start(&Value::Null, &mut out);
        }
        self.close_block(&mut out);
        let finish = match self.finish_reason.as_deref() {
            Some(f) => Some(f),
            // [DONE] without a finish_reason (some legacy servers): infer from what was sent.
            None if !self.seen_tools.is_empty() => Some("tool_calls"),
            None => None,
        };
        let (stop_reason, stop_sequence) = stop_reason_for(finish, self.matched_stop.as_deref());
        let usage = match self.usage {
            Some(u) => u.to_anthropic(),
            None => json!({"output_tokens": 0}),
        };
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": usage,
        });
        out.push(anthropic_frame("message_delta", &delta));
        out.push(anthropic_frame("message_stop", &json!({"type": "message_stop"})));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value, finish: Value) -> SseEvent {
        let data = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        SseEvent::new(None, data.to_string())
    }

    /// The same chunks through `on_event` and through the `Value` path alone give the same bytes.
    fn same_bytes(events: &[SseEvent]) {
        let mut fast = OpenAiToAnthropicStream::new("m\"odel");
        let mut slow = OpenAiToAnthropicStream::new("m\"odel");
        for ev in events {
            let want = if ev.data.trim() == "[DONE]" { slow.on_event(ev) } else { slow.on_value_event(ev) };
            assert_eq!(fast.on_event(ev), want, "{ev:?}");
        }
    }

    #[test]
    fn a_text_chunk_is_written_as_the_value_path_writes_it() {
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        for text in ["tok ", "é \"q\"\n\u{1}\\ /", "", "\u{2028}"] {
            events.push(chunk(json!({"content": text}), Value::Null));
            events.push(chunk(json!({"content": text, "refusal": null, "tool_calls": null}), Value::Null));
        }
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f", "arguments": "{}"}}]}),
            Value::Null,
        ));
        events.push(chunk(json!({"content": "after the tool"}), Value::Null));
        events.push(chunk(json!({"content": "last"}), json!("stop")));
        events.push(SseEvent::new(None, "[DONE]"));
        same_bytes(&events);
    }

    #[test]
    fn a_text_chunk_the_scan_is_not_sure_of_takes_the_value_path() {
        let mut t = OpenAiToAnthropicStream::new("m");
        t.on_event(&chunk(json!({"content": "a"}), Value::Null));
        let texts = |frames: Vec<Bytes>| -> Vec<Value> {
            frames
                .iter()
                .filter_map(|f| std::str::from_utf8(f).ok()?.split_once("data: ")?.1.trim().parse::<Value>().ok())
                .map(|v| v["delta"]["text"].clone())
                .collect()
        };
        let escaped = r#"{"choices":[{"index":0,"delta":{"content":"\u00e9\/"}}]}"#;
        let frames = t.on_event(&SseEvent::new(None, escaped));
        assert!(std::str::from_utf8(&frames[0]).is_ok_and(|f| f.contains(r#""text":"\u00e9\/""#)), "{frames:?}");
        assert_eq!(texts(frames), [json!("é/")]);
        for (data, text) in [
            (r#"{"choices":[{"delta":{"cont\u0065nt":"a"}}]}"#, "a"),
            (r#"{"choices":[{"delta":{"content":"b","content":"c"}}]}"#, "c"),
            (r#"{"choices":[{"delta":{"content":"\ud83d\ude00"}}]}"#, "😀"),
            (r#"{"created":1e0,"choices":[{"delta":{"content":"d"}}]}"#, "d"),
            (r#"{"choices":[{"delta":{"content":"e"}},{"delta":{"content":"ignored"}}]}"#, "e"),
            (
                r#"{"choices":[{"delta":{"content":"f"}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
                "f",
            ),
        ] {
            assert_eq!(texts(t.on_event(&SseEvent::new(None, data))), [json!(text)], "{data}");
        }
        assert!(t.usage().is_some(), "usage beside text is read by the value path");
        let broken = r#"{"choices":[{"delta":{"content":"a}}]}"#;
        t.on_event(&SseEvent::new(None, broken));
        assert_eq!(t.failure(), Some(StreamFailure::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn any_text_chunk_is_written_as_the_value_path_writes_it(text in "\\PC*|[\"\\\\\u{0}-\u{1f}\u{2028}]{0,4}") {
            same_bytes(&[chunk(json!({"content": "x"}), Value::Null), chunk(json!({"content": text}), Value::Null)]);
        }
    }
}
