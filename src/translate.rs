//! The gateway side of dialect translation: picks the conversion a (caller dialect, backend dialect)
//! pair needs and applies the pure functions of `dialect/` to request bodies, whole responses, error
//! bodies and streams (as a `relay::Transform`). Same-dialect traffic only has `model` swapped.

use crate::dialect::StreamFailure;
use crate::dialect::{self, AnthropicToOpenAiStream, ConvertError, OpenAiToAnthropicStream, SseParser};
use crate::error::{Dialect, ErrorKind, GatewayError, UpstreamFault};
use crate::relay::Transform;
use crate::usage::tap::has_usage_object;
use crate::usage::Usage;
use bytes::{Bytes, BytesMut};
use serde_json::Value;
use std::ops::Range;

/// How a response must be converted on its way back to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// Same dialect: bytes pass through.
    None,
    /// Anthropic backend, OpenAI-dialect caller.
    ToOpenAi { include_usage: bool },
    /// OpenAI-compatible backend, Anthropic-dialect caller.
    ToAnthropic,
}

/// The request body for a backend of `backend` dialect, and the conversion its response needs.
/// `model_span` is where the caller's `model` value sits in `body`.
pub fn request_body(
    body: &Bytes,
    model_span: Range<usize>,
    caller: Dialect,
    backend: Dialect,
    model: &str,
    default_max_tokens: u32,
) -> Result<(Bytes, Conversion), GatewayError> {
    match (caller, backend) {
        (Dialect::OpenAi, Dialect::Anthropic) => {
            let req = dialect::OpenAiRequest::parse(body).map_err(invalid_json)?;
            let include_usage = req.include_usage();
            let out = dialect::openai_request_to_anthropic(&req, model, default_max_tokens).map_err(convert_error)?;
            Ok((Bytes::from(out.to_json(body.len() + 64)), Conversion::ToOpenAi { include_usage }))
        }
        (Dialect::Anthropic, Dialect::OpenAi) => {
            let req = parse(body)?;
            let out = dialect::anthropic_request_to_openai(&req, model).map_err(convert_error)?;
            Ok((json_bytes(&out), Conversion::ToAnthropic))
        }
        _ => Ok((swap_model(body, model_span, model), Conversion::None)),
    }
}

/// The body with the `model` value replaced, every other byte unchanged.
pub fn swap_model(body: &Bytes, span: Range<usize>, model: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() - span.len() + model.len() + 2);
    out.extend_from_slice(&body[..span.start]);
    // A JSON string, escaped exactly as `Value::from(model).to_string()` writes it; writing a
    // string into memory cannot fail.
    let mut w = bytes::BufMut::writer(out);
    let _ = serde_json::to_writer(&mut w, model);
    let mut out = w.into_inner();
    out.extend_from_slice(&body[span.end..]);
    out.freeze()
}

/// A JSON value's compact text, as `Value::to_string` writes it, serialized straight into bytes
/// (the `Display` route through `fmt::Formatter` cost about three times as much).
pub fn json_bytes(v: &Value) -> Bytes {
    serde_json::to_vec(v).map_or_else(|_| Bytes::from(v.to_string()), Bytes::from)
}

fn parse(body: &[u8]) -> Result<Value, GatewayError> {
    serde_json::from_slice(body).map_err(invalid_json)
}

fn invalid_json(e: serde_json::Error) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidRequest, format!("invalid JSON: {e}"))
}

fn convert_error(e: ConvertError) -> GatewayError {
    let mut err = GatewayError::new(ErrorKind::Untranslatable, e.message);
    err.status = Some(e.status);
    err.param = e.param;
    err
}

/// An upstream error body (and status) in the caller's dialect.
pub fn error_body(conversion: Conversion, status: u16, body: &[u8]) -> Option<(u16, Bytes)> {
    let (status, v) = match conversion {
        Conversion::None => return None,
        Conversion::ToOpenAi { .. } => dialect::anthropic_error_to_openai(status, body),
        Conversion::ToAnthropic => dialect::openai_error_to_anthropic(status, body),
    };
    Some((status, json_bytes(&v)))
}

/// A whole (non-stream) success body in the caller's dialect, and the backend's token usage in it
/// (read by the conversion itself where it reads `usage` anyway). `Conversion::None` only checks
/// and copies the body and reads no usage: same-dialect replies are relayed, and metered on the way
/// (`relay::UsageObserver`).
pub fn response_body(
    conversion: Conversion,
    body: &[u8],
    requested_model: &str,
) -> Result<(Bytes, Option<Usage>), GatewayError> {
    let malformed = |e: serde_json::Error| {
        GatewayError::upstream(UpstreamFault::MalformedJson, format!("the backend's response is not valid JSON: {e}"))
    };
    match conversion {
        Conversion::None => {
            serde_json::from_slice::<dialect::Checked>(body).map_err(malformed)?;
            Ok((Bytes::copy_from_slice(body), None))
        }
        Conversion::ToOpenAi { .. } => {
            let (out, usage) = dialect::anthropic_response_to_openai(body, requested_model).map_err(malformed)?;
            Ok((Bytes::from(out), usage.map(Usage::from)))
        }
        Conversion::ToAnthropic => {
            let v: Value = serde_json::from_slice(body).map_err(malformed)?;
            let out = json_bytes(&dialect::openai_response_to_anthropic(&v, requested_model));
            Ok((out, Usage::from_response(Dialect::OpenAi, body)))
        }
    }
}

/// A stream translator for `conversion`, or `None` when bytes pass through.
pub fn stream(conversion: Conversion, requested_model: &str) -> Option<Box<dyn Transform>> {
    stream_at(conversion, requested_model, dialect::response::unix_now())
}

/// [`stream`] with an explicit OpenAI `created` timestamp (deterministic tests and fuzzing).
pub fn stream_at(conversion: Conversion, requested_model: &str, created: u64) -> Option<Box<dyn Transform>> {
    let translator = match conversion {
        Conversion::None => return None,
        Conversion::ToOpenAi { include_usage } => {
            Translator::ToOpenAi(AnthropicToOpenAiStream::new(requested_model, include_usage).with_created(created))
        }
        Conversion::ToAnthropic => Translator::ToAnthropic(OpenAiToAnthropicStream::new(requested_model)),
    };
    Some(Box::new(SseTranslate { parser: SseParser::new(), translator }))
}

enum Translator {
    ToOpenAi(AnthropicToOpenAiStream),
    ToAnthropic(OpenAiToAnthropicStream),
}

struct SseTranslate {
    parser: SseParser,
    translator: Translator,
}

impl SseTranslate {
    fn frames(&mut self, events: Vec<dialect::SseEvent>, out: &mut BytesMut) {
        for ev in &events {
            let frames = match &mut self.translator {
                Translator::ToOpenAi(t) => t.on_event(ev),
                Translator::ToAnthropic(t) => t.on_event(ev),
            };
            frames.iter().for_each(|f| out.extend_from_slice(f));
        }
    }
}

impl Transform for SseTranslate {
    fn chunk(&mut self, data: &[u8]) -> Bytes {
        let events = self.parser.push(data);
        let mut out = BytesMut::new();
        self.frames(events, &mut out);
        out.freeze()
    }

    fn finish(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        let last: Vec<_> = self.parser.finish().into_iter().collect();
        self.frames(last, &mut out);
        let tail = match &mut self.translator {
            Translator::ToOpenAi(t) => t.finish(),
            Translator::ToAnthropic(t) => t.finish(),
        };
        tail.iter().for_each(|f| out.extend_from_slice(f));
        out.freeze()
    }

    fn failure(&self) -> Option<UpstreamFault> {
        let failure = match &self.translator {
            Translator::ToOpenAi(t) => t.failure(),
            Translator::ToAnthropic(t) => t.failure(),
        };
        failure.map(|f| match f {
            StreamFailure::Truncated => UpstreamFault::Truncated,
            StreamFailure::Malformed => UpstreamFault::MalformedSse,
            StreamFailure::UpstreamError => UpstreamFault::StreamError,
        })
    }
}

/// The body with `"stream_options":{"include_usage":true}` added, so an OpenAI-compatible backend
/// reports a stream's usage (the gateway meters tokens and cost). The caller's JSON is otherwise
/// untouched; `strip_injected_usage` removes the extra usage chunk the caller did not ask for.
/// `has_null` (the body has `"stream_options": null`): that `null` is replaced instead, since a
/// second `stream_options` key would leave the backend reading whichever one its parser keeps.
pub fn inject_include_usage(body: &Bytes, has_null: bool) -> Bytes {
    const FIELD: &[u8] = br#""stream_options":{"include_usage":true},"#;
    if let Some(span) = has_null.then(|| null_stream_options(body)).flatten() {
        let mut out = BytesMut::with_capacity(body.len() + FIELD.len());
        out.extend_from_slice(&body[..span.start]);
        out.extend_from_slice(br#"{"include_usage":true}"#);
        out.extend_from_slice(&body[span.end..]);
        return out.freeze();
    }
    let Some(open) = body.iter().position(|b| *b == b'{') else { return body.clone() };
    let mut out = BytesMut::with_capacity(body.len() + FIELD.len());
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(FIELD);
    out.extend_from_slice(&body[open + 1..]);
    out.freeze()
}

/// Where the top-level `"stream_options": null` value sits in `body`.
fn null_stream_options(body: &[u8]) -> Option<Range<usize>> {
    #[derive(serde::Deserialize)]
    struct Peek<'a> {
        #[serde(borrow, default, deserialize_with = "crate::request::present")]
        stream_options: Option<&'a serde_json::value::RawValue>,
    }
    let raw = serde_json::from_slice::<Peek<'_>>(body).ok()?.stream_options.filter(|r| r.get() == "null")?;
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    Some(start..start + raw.get().len())
}

/// A transform that drops the usage-only chunk (`"choices": []` with a `usage` object) from an
/// OpenAI stream, for callers that did not ask for it.
pub fn strip_injected_usage() -> Box<dyn Transform> {
    Box::new(StripUsage { pending: BytesMut::new() })
}

struct StripUsage {
    /// The tail of the stream after the last complete event.
    pending: BytesMut,
}

/// The blank lines that end an SSE event, by line end (`\n`, `\r\n`, a lone `\r`).
const EVENT_ENDS: [&[u8]; 3] = [b"\n\n", b"\r\n\r\n", b"\r\r"];

/// End of the last complete SSE event in `buf` (after its blank line).
fn last_event_end(buf: &[u8]) -> Option<usize> {
    EVENT_ENDS.iter().filter_map(|end| memchr::memmem::rfind(buf, end).map(|p| p + end.len())).max()
}

/// End of the first complete SSE event in `buf`.
fn first_event_end(buf: &[u8]) -> Option<usize> {
    EVENT_ENDS.iter().filter_map(|end| memchr::memmem::find(buf, end).map(|p| p + end.len())).min()
}

/// Whether one SSE event is the usage-only chunk.
fn is_usage_chunk(event: &[u8]) -> bool {
    if !has_usage_object(event) {
        return false;
    }
    // Lines end in `\n`, `\r\n` or `\r`: split on both (a `\r\n` leaves an empty line between).
    let data: Vec<u8> = event
        .split(|b| *b == b'\n' || *b == b'\r')
        .filter_map(|line| line.strip_prefix(b"data:"))
        .flat_map(|d| d.strip_prefix(b" ").unwrap_or(d).iter().copied())
        .collect();
    serde_json::from_slice::<Value>(&data).is_ok_and(|v| {
        v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty)
            && v.get("usage").is_some_and(Value::is_object)
    })
}

impl StripUsage {
    fn filter(complete: Bytes) -> Bytes {
        if !has_usage_object(&complete) {
            return complete;
        }
        let mut out = BytesMut::with_capacity(complete.len());
        let mut rest = &complete[..];
        while !rest.is_empty() {
            let end = first_event_end(rest).unwrap_or(rest.len());
            let (event, tail) = rest.split_at(end);
            if !is_usage_chunk(event) {
                out.extend_from_slice(event);
            }
            rest = tail;
        }
        out.freeze()
    }
}

impl StripUsage {
    /// The common case: whole events without usage, nothing pending, pass on as they are.
    fn passes_whole(&self, data: &[u8]) -> bool {
        self.pending.is_empty() && data.ends_with(b"\n\n") && !has_usage_object(data)
    }
}

impl Transform for StripUsage {
    fn chunk_owned(&mut self, data: Bytes) -> Bytes {
        if self.passes_whole(&data) {
            return data;
        }
        self.chunk(&data)
    }

    fn chunk(&mut self, data: &[u8]) -> Bytes {
        if self.passes_whole(data) {
            return Bytes::copy_from_slice(data);
        }
        self.pending.extend_from_slice(data);
        match last_event_end(&self.pending) {
            Some(end) => Self::filter(self.pending.split_to(end).freeze()),
            None => Bytes::new(),
        }
    }

    fn finish(&mut self) -> Bytes {
        Self::filter(self.pending.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_usage_is_added_without_touching_the_rest() {
        let body = Bytes::from_static(br#" {"model":"m","stream":true,"x":[1]}"#);
        let out = inject_include_usage(&body, false);
        assert_eq!(&out[..], br#" {"stream_options":{"include_usage":true},"model":"m","stream":true,"x":[1]}"#);
        let v: Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn a_null_stream_options_is_replaced_not_duplicated() {
        let body =
            Bytes::from_static(br#"{"model":"m","stream":true,"stream_options" : null,"x":{"stream_options":null}}"#);
        let out = inject_include_usage(&body, true);
        let want =
            br#"{"model":"m","stream":true,"stream_options" : {"include_usage":true},"x":{"stream_options":null}}"#;
        assert_eq!(&out[..], &want[..]);
    }

    #[test]
    fn the_injected_usage_chunk_is_removed_wherever_the_chunks_split_whatever_the_line_ends() {
        let lf = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\n",
            "data: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        let usage = "data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n";
        for line_end in ["\n", "\r\n", "\r"] {
            let stream = lf.replace('\n', line_end);
            let expected = lf.replace(usage, "").replace('\n', line_end);
            assert_ne!(stream, expected);
            strips_wherever_split(&stream, &expected);
            // A complete event is passed on at once, not held until the stream ends.
            let first = &stream[..stream.find(&line_end.repeat(2)).unwrap() + 2 * line_end.len()];
            assert_eq!(&strip_injected_usage().chunk(first.as_bytes())[..], first.as_bytes(), "{line_end:?}");
        }
    }

    fn strips_wherever_split(stream: &str, expected: &str) {
        let stream: &'static str = Box::leak(stream.to_owned().into_boxed_str());
        for split in 0..stream.len() {
            let mut t = strip_injected_usage();
            let mut out = Vec::new();
            out.extend_from_slice(&t.chunk(&stream.as_bytes()[..split]));
            out.extend_from_slice(&t.chunk(&stream.as_bytes()[split..]));
            out.extend_from_slice(&t.finish());
            assert_eq!(String::from_utf8_lossy(&out), expected, "split at {split}");
            // The relay hands chunks over owned; whole usage-free events pass uncopied.
            let mut t = strip_injected_usage();
            let bytes = Bytes::from_static(stream.as_bytes());
            let mut out = Vec::new();
            out.extend_from_slice(&t.chunk_owned(bytes.slice(..split)));
            out.extend_from_slice(&t.chunk_owned(bytes.slice(split..)));
            out.extend_from_slice(&t.finish());
            assert_eq!(String::from_utf8_lossy(&out), expected, "owned, split at {split}");
        }
    }

    #[test]
    fn bodies_and_models_are_written_exactly_as_value_display_writes_them() {
        for model in ["gpt-4o", "a\"quote\\slash", "tab\tnl\n\u{1}ctl", "ünïcødé 模型 🚀", ""] {
            let body = Bytes::from_static(br#"{"model":"x","n":1}"#);
            let out = swap_model(&body, 9..12, model);
            assert_eq!(String::from_utf8_lossy(&out), format!(r#"{{"model":{},"n":1}}"#, Value::from(model)));
        }
        let v = serde_json::json!({"a": [1, 2.5, -3, null, true], "s": "x\"y\u{7f}\u{2028}", "o": {"k": {}}, "e": []});
        assert_eq!(&json_bytes(&v)[..], v.to_string().as_bytes());
        let frame = crate::dialect::anthropic_frame("message_start", &v);
        assert_eq!(String::from_utf8_lossy(&frame), format!("event: message_start\ndata: {v}\n\n"));
    }
}
