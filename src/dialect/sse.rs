//! Server-sent events: an incremental parser for upstream streams and the frame writers for both
//! dialects' client streams.
//!
//! The parser follows the WHATWG "event stream" interpretation rules that matter for LLM APIs:
//! lines end in `\n`, `\r\n` or a lone `\r` (a chunk may split a `\r\n` pair or a UTF-8 sequence
//! anywhere); `:` starts a comment; `data:` lines of one event are joined with `\n`; one space
//! after the colon is removed; a blank line dispatches the event; an event without any `data:`
//! line is discarded. `id:` and `retry:` are ignored (neither vendor uses them).

use bytes::Bytes;
use serde_json::Value;

/// Why a stream translator ended the client's stream with an error event of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFailure {
    /// The upstream stream ended before its finish (no finish reason / `message_delta`, no terminal event).
    Truncated,
    /// An event's data is not JSON, or the events cannot be translated (interleaved tool fragments).
    Malformed,
    /// The upstream sent an error event of its own.
    UpstreamError,
}

/// Whether an event's data is empty (a keep-alive some servers send): skipped, not malformed.
pub fn is_blank(data: &str) -> bool {
    data.trim().is_empty()
}

/// One complete server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the stream sent one (Anthropic does, OpenAI does not).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// An event with a name and data, as an upstream would send it.
    pub fn new(event: Option<&str>, data: impl Into<String>) -> Self {
        SseEvent { event: event.map(str::to_owned), data: data.into() }
    }
}

/// Incremental SSE parser: feed raw body chunks, get complete events back.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next chunk belongs to it.
    skip_lf: bool,
    /// Whether the byte-order mark check at the very start has been done.
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes a chunk of the body and returns every event completed by it, in order. A line
    /// inside the chunk is read where it lies; only a line cut by the chunk's end is copied.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.skip_lf && !rest.is_empty() {
            self.skip_lf = false;
            rest = rest.strip_prefix(b"\n").unwrap_or(rest);
        }
        while let Some(at) = memchr::memchr2(b'\n', b'\r', rest) {
            let (line, cr) = (&rest[..at], rest[at] == b'\r');
            if self.line.is_empty() {
                self.end_line(line, &mut out);
            } else {
                let mut cut = std::mem::take(&mut self.line);
                cut.extend_from_slice(line);
                self.end_line(&cut, &mut out);
                cut.clear();
                self.line = cut;
            }
            rest = &rest[at + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        out
    }

    /// Ends the stream. A last event that was not followed by a blank line is still returned:
    /// some OpenAI-compatible servers close the connection right after the final `data:` line.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.end_line(&line, &mut out);
        }
        self.dispatch(&mut out);
        out.pop()
    }

    fn end_line(&mut self, mut line: &[u8], out: &mut Vec<SseEvent>) {
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        // Valid UTF-8 is checked many bytes at a time; only an invalid line takes the lossy path.
        let text = std::str::from_utf8(line).map_or_else(|_| String::from_utf8_lossy(line), std::borrow::Cow::Borrowed);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if self.has_data {
            self.has_data = false;
            out.push(SseEvent { event, data: std::mem::take(&mut self.data) });
        }
    }
}

/// `data: <json>\n\n`: one OpenAI chunk.
pub fn openai_frame(value: &Value) -> Bytes {
    frame(&[b"data: "], value)
}

/// The `prefix` parts, the value's compact JSON (as its `Display` writes it, but serialized straight into
/// the buffer: `format!` through `Display` cost about three times as much), and a blank line.
fn frame(prefix: &[&[u8]], value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(160);
    prefix.iter().for_each(|p| out.extend_from_slice(p));
    let start = out.len();
    if serde_json::to_writer(&mut out, value).is_err() {
        out.truncate(start);
        out.extend_from_slice(value.to_string().as_bytes());
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// `data: [DONE]\n\n`: the end of an OpenAI stream.
pub fn openai_done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// `event: <name>\ndata: <json>\n\n`: one Anthropic event. The `event:` line is mandatory:
/// the Anthropic SDK ignores events without it.
pub fn anthropic_frame(event_name: &str, value: &Value) -> Bytes {
    frame(&[b"event: ", event_name.as_bytes(), b"\ndata: "], value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = ": comment at the start\r\n\
        event: message_start\r\n\
        data: {\"a\":1}\r\n\
        \r\n\
        data: line one\n\
        data: line two\n\
        \n\
        event: ping\n\
        data:{\"type\":\"ping\"}\n\
        \n\
        event: no_data\n\
        \n\
        data: é ü 汉字\r\r\
        data: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent::new(Some("message_start"), "{\"a\":1}"),
            SseEvent::new(None, "line one\nline two"),
            SseEvent::new(Some("ping"), "{\"type\":\"ping\"}"),
            SseEvent::new(None, "é ü 汉字"),
            SseEvent::new(None, "[DONE]"),
        ]
    }

    #[test]
    fn parses_a_whole_stream_in_one_chunk() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(STREAM.as_bytes()), expected());
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn a_split_at_every_byte_boundary_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let mut parser = SseParser::new();
            let mut events = parser.push(&bytes[..cut]);
            events.extend(parser.push(&bytes[cut..]));
            assert_eq!(events, expected(), "split at byte {cut}");
        }
    }

    #[test]
    fn a_split_at_every_two_byte_boundaries_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut parser = SseParser::new();
                let mut events = parser.push(&bytes[..a]);
                events.extend(parser.push(&bytes[a..b]));
                events.extend(parser.push(&bytes[b..]));
                assert_eq!(events, expected(), "split at bytes {a} and {b}");
            }
        }
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_events() {
        let mut parser = SseParser::new();
        let events: Vec<SseEvent> = STREAM.as_bytes().iter().flat_map(|b| parser.push(&[*b])).collect();
        assert_eq!(events, expected());
    }

    #[test]
    fn finish_returns_an_unterminated_last_event() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: {\"x\":1}").is_empty());
        assert_eq!(parser.finish(), Some(SseEvent::new(None, "{\"x\":1}")));
    }

    #[test]
    fn a_leading_byte_order_mark_is_ignored_and_empty_data_is_kept() {
        let mut parser = SseParser::new();
        let events = parser.push(b"\xEF\xBB\xBFdata\n\nevent: x\ndata:\n\n");
        assert_eq!(events, vec![SseEvent::new(None, ""), SseEvent::new(Some("x"), "")]);
        let mut parser = SseParser::new();
        assert!(parser.push(b"\xEF\xBB").is_empty());
        // Split across chunks it is still the stream's start; later in the stream it is no mark,
        // and the line's field is not `data`.
        assert_eq!(parser.push(b"\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n"), vec![SseEvent::new(None, "a")]);
    }

    #[test]
    fn frame_writers_produce_the_dialects_framing() {
        let v = serde_json::json!({"k": "v"});
        assert_eq!(openai_frame(&v), Bytes::from("data: {\"k\":\"v\"}\n\n"));
        assert_eq!(openai_done(), Bytes::from("data: [DONE]\n\n"));
        assert_eq!(anthropic_frame("ping", &v), Bytes::from("event: ping\ndata: {\"k\":\"v\"}\n\n"));
    }
}
