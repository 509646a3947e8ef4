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

use bytes::Bytes;
use serde_json::{json, Value};

use super::error::{anthropic_error_frame, openai_stream_error_to_anthropic_frame};
use super::openai::{matched_stop, stop_reason_for, OpenAiUsage};
use super::response::anthropic_id_for;
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
