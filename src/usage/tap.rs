//! `UsageTap`: reads token usage on the side of a relayed SSE stream, from the raw bytes exactly as
//! they are forwarded (chunk boundaries anywhere), without parsing the text deltas.
//!
//! Where usage appears (protocols.md §1.4, §2.4, §3.5):
//! - OpenAI: one extra chunk before `[DONE]` with `choices: []` and a `usage` object, only when the
//!   request had `stream_options.include_usage`; every other chunk then has `"usage":null`. Some
//!   servers send a running total on every chunk: the last object wins.
//! - Anthropic: `message_start.message.usage` (input and cache counts, a small output count), then
//!   `message_delta.usage`, cumulative. A delta that carries any input-side count replaces that set
//!   as a whole; `output_tokens` is always the latest (`AnthropicUsage::apply_delta`).
//!
//! Cheapness: lines are cut in place (only a line split across chunks is copied); an event's JSON
//! is parsed only when it is not named `content_block_delta` (the bulk of an Anthropic stream) and
//! its data has a `"usage"` key whose value is an object. So an OpenAI stream is parsed once (its
//! usage chunk), an Anthropic stream twice (`message_start`, `message_delta`). Both are decided when
//! the event ends, as `SseParser` decides them: the last `event:` line names the event, and the
//! usage object may span `data:` lines.
//!
//! The tap also notes whether the stream reached its finish (`StreamEnd`), so the relay can tell a
//! stream cut short from a complete one: Anthropic `message_delta` (which carries the stop reason) or
//! `message_stop`; OpenAI a chunk with a non-null `finish_reason` or `data: [DONE]`; either dialect's
//! error event. The same rules as the stream translators (`dialect::stream_to_*`).
//!
//! Line rules match `dialect::sse::SseParser`: `\n`, `\r\n` or a lone `\r` end a line, a leading
//! byte-order mark is ignored, `:` starts a comment, `data:` lines of one event are joined with
//! `\n`, a blank line dispatches. An event larger than `MAX_EVENT_BYTES` is dropped.

use serde_json::Value;

use crate::dialect::anthropic::AnthropicUsage;
use crate::dialect::openai::OpenAiUsage;
use crate::error::Dialect;

use super::Usage;

/// Largest event the tap buffers: a usage event is a few hundred bytes; this bound only stops a
/// stream without line breaks from growing the buffer without limit.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

const USAGE_KEY: &[u8] = b"\"usage\"";
const FINISH_KEY: &[u8] = b"\"finish_reason\"";

/// How far an observed stream got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Not (yet) finished: a stream that ends like this was cut short.
    Open,
    /// The answer's finish (stop reason, finish reason or terminal event) passed.
    Finished,
    /// The upstream sent an error event.
    Error,
}

/// Observes one response stream and keeps the latest usage it carried.
#[derive(Debug)]
pub struct UsageTap {
    dialect: Dialect,
    /// The current line, when a chunk ended inside it.
    partial: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next one belongs to it.
    skip_lf: bool,
    /// The byte-order mark check at the very start has been done.
    started: bool,
    /// `data:` lines of the current event joined with `\n`.
    data: Vec<u8>,
    has_data: bool,
    /// The current event's (latest) name says it carries no usage.
    skip_event: bool,
    /// The current event outgrew `MAX_EVENT_BYTES`.
    overflow: bool,
    openai: Option<OpenAiUsage>,
    anthropic: Option<AnthropicUsage>,
    end: StreamEnd,
    /// Events parsed as JSON so far (the cheapness claim, checked by tests).
    parsed: u32,
}

impl UsageTap {
    /// A tap for a stream in `dialect` (the dialect of the bytes observed, i.e. of the upstream
    /// stream if fed before translation, of the client stream if fed after).
    pub fn new(dialect: Dialect) -> Self {
        UsageTap {
            dialect,
            partial: Vec::new(),
            skip_lf: false,
            started: false,
            data: Vec::new(),
            has_data: false,
            skip_event: false,
            overflow: false,
            openai: None,
            anthropic: None,
            end: StreamEnd::Open,
            parsed: 0,
        }
    }

    /// Feeds the next chunk of the stream, exactly as relayed.
    pub fn observe(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        if self.skip_lf && !rest.is_empty() {
            self.skip_lf = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', rest) {
            let (line, tail) = rest.split_at(pos);
            let is_cr = tail.first() == Some(&b'\r');
            rest = tail.get(1..).unwrap_or_default();
            if self.partial.is_empty() {
                self.line(line);
            } else {
                let mut full = std::mem::take(&mut self.partial);
                full.extend_from_slice(line);
                self.line(&full);
                full.clear();
                self.partial = full;
            }
            if is_cr {
                match rest.strip_prefix(b"\n") {
                    Some(tail) => rest = tail,
                    None => self.skip_lf = rest.is_empty(),
                }
            }
        }
        if self.partial.len() + rest.len() <= MAX_EVENT_BYTES {
            self.partial.extend_from_slice(rest);
        } else {
            self.overflow = true;
            self.partial.clear();
        }
    }

    /// The usage seen so far: `None` until a usage-bearing event arrived (an OpenAI stream
    /// without `include_usage`, or a stream cut short). A last event that was not followed by a
    /// blank line is counted too: some OpenAI-compatible servers close right after it.
    pub fn usage(&self) -> Option<Usage> {
        let (mut openai, mut anthropic) = (self.openai, self.anthropic);
        if let Some(event) = self.pending_event() {
            apply(self.dialect, &event, &mut openai, &mut anthropic);
        }
        match self.dialect {
            Dialect::OpenAi => openai.map(Usage::from),
            Dialect::Anthropic => anthropic.map(Usage::from),
        }
    }

    /// How far the stream got; an unterminated last `data:` line counts.
    pub fn end(&self) -> StreamEnd {
        match data_value(&self.partial) {
            Some(value) if self.end == StreamEnd::Open => self.data_end(value),
            _ => self.end,
        }
    }

    /// What one `data:` value says about the end of the stream (OpenAI; Anthropic uses event names).
    fn data_end(&self, value: &[u8]) -> StreamEnd {
        if self.dialect != Dialect::OpenAi {
            return self.end;
        }
        let value = value.trim_ascii();
        if value == b"[DONE]" || has_key_before(value, finish_key_finder(), b'"') {
            StreamEnd::Finished
        } else if value.strip_prefix(b"{").is_some_and(|r| r.trim_ascii_start().starts_with(b"\"error\"")) {
            StreamEnd::Error
        } else {
            self.end
        }
    }

    /// How many events were parsed as JSON (for tests: text deltas must not be).
    #[cfg(test)]
    pub(crate) fn parsed_events(&self) -> u32 {
        self.parsed
    }

    /// The unterminated last event, parsed, when it carries usage (its last line too, as
    /// `SseParser::finish` reads it).
    fn pending_event(&self) -> Option<Value> {
        if self.overflow {
            return None;
        }
        let (mut skip, mut has_data) = (self.skip_event, self.has_data);
        let mut data = std::borrow::Cow::Borrowed(&self.data[..]);
        let mut last: &[u8] = &self.partial;
        if !self.started {
            last = last.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(last);
        }
        if let Some(name) = field_value(last, b"event") {
            skip = name == b"content_block_delta";
        } else if let Some(value) = data_value(last) {
            let data = data.to_mut();
            if has_data {
                data.push(b'\n');
            }
            data.extend_from_slice(value);
            has_data = true;
        }
        if !has_data || skip || !has_usage_object(&data) {
            return None;
        }
        parse_data(&data)
    }

    fn line(&mut self, mut line: &[u8]) {
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.first() == Some(&b':') || self.overflow {
            return;
        }
        if let Some(name) = field_value(line, b"event") {
            // The bulk of an Anthropic stream; never carries usage. The last name counts.
            self.skip_event = name == b"content_block_delta";
            match name {
                b"message_delta" | b"message_stop" if self.end == StreamEnd::Open => self.end = StreamEnd::Finished,
                b"error" => self.end = StreamEnd::Error,
                _ => {}
            }
            return;
        }
        let Some(value) = data_value(line) else {
            return;
        };
        if self.end == StreamEnd::Open {
            self.end = self.data_end(value);
        }
        if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
            self.overflow = true;
            return;
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
    }

    fn dispatch(&mut self) {
        if self.has_data && !self.skip_event && !self.overflow && has_usage_object(&self.data) {
            self.parsed = self.parsed.saturating_add(1);
            if let Some(event) = parse_data(&self.data) {
                apply(self.dialect, &event, &mut self.openai, &mut self.anthropic);
            }
        }
        self.data.clear();
        self.has_data = false;
        self.skip_event = false;
        self.overflow = false;
    }
}

/// An event's data as JSON, read as `SseParser` reads it: invalid UTF-8 becomes U+FFFD (so a stray
/// byte in some other field does not hide the usage from the meter while the translator sees it).
fn parse_data(data: &[u8]) -> Option<Value> {
    serde_json::from_str(&String::from_utf8_lossy(data)).ok()
}

/// Folds one usage-bearing event into the running state.
pub(crate) fn apply(
    dialect: Dialect,
    event: &Value,
    openai: &mut Option<OpenAiUsage>,
    anthropic: &mut Option<AnthropicUsage>,
) {
    match dialect {
        Dialect::OpenAi => {
            if let Some(usage) = OpenAiUsage::from_value(event.get("usage")) {
                *openai = Some(usage);
            }
        }
        Dialect::Anthropic => match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let usage = event.get("message").and_then(|m| m.get("usage"));
                if let Some(usage) = usage.filter(|u| u.is_object()) {
                    *anthropic = Some(AnthropicUsage::from_value(usage));
                }
            }
            Some("message_delta") => {
                if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
                    anthropic.get_or_insert_default().apply_delta(usage);
                }
            }
            _ => {}
        },
    }
}

/// The value of a `name:` field line, one leading space removed (a bare `name` line has an empty
/// value); `None` for other fields.
fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?;
    if rest.is_empty() {
        return Some(rest);
    }
    let value = rest.strip_prefix(b":")?;
    Some(value.strip_prefix(b" ").unwrap_or(value))
}

/// The value of a `data:` line.
fn data_value(line: &[u8]) -> Option<&[u8]> {
    field_value(line, b"data")
}

/// The `"finish_reason"` and `"usage"` searchers, built once (a `Finder` is costly to build per call).
fn finish_key_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> = std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(FINISH_KEY))
}

fn usage_key_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> = std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(USAGE_KEY))
}

/// Whether the JSON text has a `"usage"` key followed by an object (not `"usage":null`). Inside
/// a JSON string a quote is escaped, so a text delta that mentions "usage" does not match.
pub(crate) fn has_usage_object(json: &[u8]) -> bool {
    has_key_before(json, usage_key_finder(), b'{')
}

/// Whether the JSON text has the (quoted) key `finder` looks for, with a value that starts with `first`.
fn has_key_before(json: &[u8], finder: &memchr::memmem::Finder<'_>, first: u8) -> bool {
    let mut rest = json;
    while let Some(at) = finder.find(rest) {
        rest = rest.get(at + finder.needle().len()..).unwrap_or_default();
        let after = rest.trim_ascii_start();
        if let Some(value) = after.strip_prefix(b":") {
            if value.trim_ascii_start().first() == Some(&first) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_null_and_quoted_mentions_do_not_count_as_usage() {
        assert!(has_usage_object(br#"{"usage": {"prompt_tokens":1}}"#));
        assert!(has_usage_object(br#"{"a":"\"usage\"","usage" :{}}"#));
        assert!(!has_usage_object(br#"{"usage":null}"#));
        assert!(!has_usage_object(br#"{"delta":{"content":"say \"usage\": {x}"}}"#));
        assert!(!has_usage_object(b"[DONE]"));
    }

    #[test]
    fn invalid_utf8_in_a_usage_event_is_read_as_the_sse_parser_reads_it() {
        let stream = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"x\xff\":1}}\n\n";
        for unterminated in [false, true] {
            let mut tap = UsageTap::new(Dialect::OpenAi);
            tap.observe(if unterminated { &stream[..stream.len() - 2] } else { stream });
            assert_eq!(tap.usage().map(|u| u.input), Some(5), "unterminated: {unterminated}");
        }
    }

    #[test]
    fn the_last_event_line_names_the_event_and_usage_may_span_data_lines() {
        let streams: [&[u8]; 3] = [
            b"event: content_block_delta\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"message_delta\",\"usage\":\ndata: {\"output_tokens\":7}}\nevent\n\n",
            b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\nevent: message_delta",
        ];
        for stream in streams {
            let mut tap = UsageTap::new(Dialect::Anthropic);
            tap.observe(stream);
            assert_eq!(tap.usage().map(|u| u.output), Some(7), "{}", String::from_utf8_lossy(stream));
        }
        let mut tap = UsageTap::new(Dialect::Anthropic);
        tap.observe(b"event: message_delta\nevent: content_block_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n");
        assert_eq!(tap.usage(), None, "an event named content_block_delta last is not read");
    }

    #[test]
    fn the_finish_of_a_stream_is_noted_in_both_dialects() {
        let end = |dialect, text: &str| {
            let mut tap = UsageTap::new(dialect);
            tap.observe(text.as_bytes());
            tap.end()
        };
        let chunk = r#"data: {"choices":[{"index":0,"delta":{"content":"say \"finish_reason\": \"x\""},"finish_reason":null}]}"#;
        assert_eq!(end(Dialect::OpenAi, &format!("{chunk}\n\n")), StreamEnd::Open);
        assert_eq!(end(Dialect::OpenAi, r#"data: {"choices":[{"finish_reason": "stop"}]}"#), StreamEnd::Finished);
        assert_eq!(end(Dialect::OpenAi, &format!("{chunk}\n\ndata: [DONE]")), StreamEnd::Finished);
        assert_eq!(end(Dialect::OpenAi, "data: { \"error\": {\"message\": \"x\"}}\n\n"), StreamEnd::Error);
        assert_eq!(end(Dialect::Anthropic, "event: message_start\ndata: {}\n\n"), StreamEnd::Open);
        assert_eq!(end(Dialect::Anthropic, "event: message_delta\ndata: {}\n\n"), StreamEnd::Finished);
        assert_eq!(end(Dialect::Anthropic, "event: error\ndata: {}\n\n"), StreamEnd::Error);
    }

    #[test]
    fn field_lines_are_recognised_with_or_without_the_space() {
        assert_eq!(data_value(b"data: x"), Some(&b"x"[..]));
        assert_eq!(data_value(b"data:x"), Some(&b"x"[..]));
        assert_eq!(data_value(b"data"), Some(&b""[..]));
        assert_eq!(data_value(b"datum: x"), None);
        assert_eq!(field_value(b"event: ping", b"event"), Some(&b"ping"[..]));
    }
}
