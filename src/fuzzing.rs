//! Fuzz entry points: one function per `cargo fuzz` target (`fuzz/fuzz_targets/*.rs` are one-line
//! wrappers), also replayed over the committed seeds and crash inputs by `tests/fuzz_regressions.rs`.
//!
//! Each takes arbitrary bytes, drives one untrusted-input surface of the gateway exactly as the
//! request pipeline does, and asserts invariants beyond "does not panic". An invariant that does
//! not hold panics (`assert!`), which is how libFuzzer and the regression test see a finding.
//! Nothing here does I/O. Input layouts are described on each function and in `fuzz/README.md`.

use crate::dialect::SseParser;
use crate::error::Dialect;
use crate::flags::{CompiledFlags, EvalInput, FlagDefinitions, FlagValue};
use crate::translate::{self, Conversion};
use crate::usage::{Usage, UsageTap};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name (the names of `fuzz/fuzz_targets/`, `fuzz/seeds/` and `fuzz/regressions/`).
pub const TARGETS: &[(&str, Target)] = &[("request", request), ("dialect", dialect), ("sse", sse), ("flags", flags)];

/// The model name the targets route to.
const BACKEND_MODEL: &str = "backend-model";
/// OpenAI `created` used for stream translation, so two runs give the same bytes.
const CREATED: u64 = 1_700_000_000;

/// Headers then body, HTTP style: `name: value` lines up to the first blank line (`\n\n`), the rest
/// is the body. Without a blank line the whole input is the body. Lines that are not valid headers
/// are skipped.
fn split_headers(data: &[u8]) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let Some(at) = memchr::memmem::find(data, b"\n\n") else {
        return (headers, Bytes::copy_from_slice(data));
    };
    for line in data[..at].split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    (headers, Bytes::copy_from_slice(&data[at + 2..]))
}

fn dialect_of(bit: u8) -> Dialect {
    if bit & 1 == 0 {
        Dialect::OpenAi
    } else {
        Dialect::Anthropic
    }
}

fn other(d: Dialect) -> Dialect {
    match d {
        Dialect::OpenAi => Dialect::Anthropic,
        Dialect::Anthropic => Dialect::OpenAi,
    }
}

fn json(bytes: &[u8], what: &str) -> Value {
    match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => panic_invalid(what, &e, bytes),
    }
}

fn panic_invalid(what: &str, e: &serde_json::Error, bytes: &[u8]) -> ! {
    fail(&format!("{what} is not valid JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

#[expect(clippy::panic, reason = "a fuzz invariant that does not hold must panic for libFuzzer to report it")]
fn fail(why: &str) -> ! {
    panic!("{why}")
}

/// Request parsing (`request::parse`): byte 0 picks the caller's dialect (bit 0), the rest is
/// headers and body (`split_headers`). For any body: the fast scan of its top-level fields reads
/// what serde_json reads, or leaves it to serde_json. For an accepted request: the identity headers' check and
/// their reading agree; `model_span` points at `model`;
/// swapping the model keeps every other byte and gives valid JSON; adding `stream_options` for
/// usage gives valid JSON whose `include_usage` is true; the cross-dialect translation, when it
/// succeeds, is a JSON object naming the backend's model.
pub fn request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let caller = dialect_of(mode);
    let (headers, body) = split_headers(rest);
    if let Ok(text) = std::str::from_utf8(&body) {
        crate::request::assert_peek_agrees(text);
    }
    let Ok(req) = crate::request::parse(body.clone(), &headers, caller) else { return };
    assert_eq!(req.body, body, "the body is kept as sent");
    let raw = &body[req.model_span.clone()];
    assert_eq!(json(raw, "the model span"), Value::from(req.model.as_str()), "model_span points at `model`");
    assert!(req.distinct_id.as_deref() != Some(""), "an empty distinct_id is no distinct_id");
    // The identity headers' check (routes without a flag) refuses exactly what reading them (flag
    // evaluation) refuses, with the same message.
    let (checked, read) = (req.identity.check(), req.identity.parse());
    assert_eq!(
        checked.map_err(|e| e.message),
        read.map(drop).map_err(|e| e.message),
        "identity check and read disagree"
    );

    let swapped = translate::swap_model(&body, req.model_span.clone(), BACKEND_MODEL);
    // The gateway accepts what is valid JSON syntax; serde_json's `Value` also refuses numbers out
    // of f64 range (1e999), which the gateway forwards as sent (Python reads them as inf).
    let Ok(original) = serde_json::from_slice::<Value>(&body) else {
        let valid = serde_json::from_slice::<serde::de::IgnoredAny>(&swapped).is_ok();
        assert!(valid, "the body with `model` swapped is not JSON: {}", String::from_utf8_lossy(&swapped));
        return;
    };
    let mut swapped_v = json(&swapped, "the body with `model` swapped");
    assert_eq!(swapped_v.get("model"), Some(&Value::from(BACKEND_MODEL)));
    let mut original_rest = original.clone();
    if let (Some(a), Some(b)) = (original_rest.as_object_mut(), swapped_v.as_object_mut()) {
        a.remove("model");
        b.remove("model");
    }
    assert_eq!(original_rest, swapped_v, "swapping `model` changes nothing else");

    if req.stream && !req.has_stream_options {
        let injected = translate::inject_include_usage(&swapped, req.null_stream_options);
        let v = json(&injected, "the body with stream_options added");
        assert_eq!(
            v.pointer("/stream_options/include_usage"),
            Some(&Value::Bool(true)),
            "the added stream_options is the one the backend reads"
        );
    }

    let backend = other(caller);
    if let Ok((out, conversion)) = translate::request_body(&body, req.model_span.clone(), caller, backend, "m2", 1024) {
        let v = json(&out, "a translated request");
        assert_eq!(v.get("model"), Some(&Value::from("m2")), "the translated request names the backend model");
        assert_ne!(conversion, Conversion::None);
    }
}

/// Dialect conversion through `translate` (the gateway's calls): byte 0 picks the case, bytes 1–2
/// an HTTP status for the error cases, the rest is the body.
/// 0/1: an OpenAI/Anthropic request to the other dialect (after `request::parse`, as the gateway
/// does); 2/3: a whole Anthropic/OpenAI response to the other dialect; 4/5: an Anthropic/OpenAI
/// error body to the other dialect. Every output is valid JSON of the target dialect's shape;
/// responses keep their token counts; errors stay errors.
pub fn dialect(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 6 {
        0 | 1 => convert_request(dialect_of(mode), rest),
        2 => convert_response(Conversion::ToOpenAi { include_usage: false }, rest),
        3 => convert_response(Conversion::ToAnthropic, rest),
        m => {
            let (status, body) = match rest {
                [a, b, body @ ..] => (400 + u16::from_be_bytes([*a, *b]) % 200, body),
                _ => (500, rest),
            };
            let conversion =
                if m == 4 { Conversion::ToOpenAi { include_usage: false } } else { Conversion::ToAnthropic };
            convert_error(conversion, status, body);
        }
    }
}

fn convert_request(caller: Dialect, body: &[u8]) {
    let body = Bytes::copy_from_slice(body);
    let Ok(req) = crate::request::parse(body.clone(), &HeaderMap::new(), caller) else { return };
    let backend = other(caller);
    let Ok((out, conversion)) = translate::request_body(&body, req.model_span, caller, backend, BACKEND_MODEL, 1024)
    else {
        return;
    };
    let mut v = json(&out, "a translated request");
    assert_eq!(v.get("model"), Some(&Value::from(BACKEND_MODEL)));
    assert!(v.get("messages").is_some_and(Value::is_array), "a translated request has `messages`: {v}");
    match backend {
        Dialect::Anthropic => {
            assert!(matches!(conversion, Conversion::ToOpenAi { .. }));
            assert!(v.get("max_tokens").and_then(Value::as_u64).is_some(), "Anthropic needs `max_tokens`: {v}");
        }
        Dialect::OpenAi => {
            assert_eq!(conversion, Conversion::ToAnthropic);
            crate::dialect::adapt_for_legacy_backend(&mut v, req.stream);
            assert!(v.is_object());
        }
    }
}

fn convert_response(conversion: Conversion, body: &[u8]) {
    let Ok((out, metered)) = translate::response_body(conversion, body, "client-model") else { return };
    let v = json(&out, "a translated response");
    assert_eq!(v.get("model"), Some(&Value::from("client-model")));
    let (from, to) = match conversion {
        Conversion::ToOpenAi { .. } => {
            assert_eq!(v.get("object"), Some(&Value::from("chat.completion")));
            assert!(v.pointer("/id").and_then(Value::as_str).is_some_and(|id| id.starts_with("chatcmpl-")));
            assert_eq!(v.get("choices").and_then(Value::as_array).map(Vec::len), Some(1));
            (Usage::from_anthropic_response(body), Usage::from_openai_response(&out))
        }
        _ => {
            assert_eq!(v.get("type"), Some(&Value::from("message")));
            assert!(v.pointer("/id").and_then(Value::as_str).is_some_and(|id| id.starts_with("msg_")));
            assert!(v.get("content").is_some_and(Value::is_array));
            assert!(v.get("stop_reason").is_some_and(Value::is_string), "stop_reason is never null: {v}");
            (Usage::from_openai_response(body), Usage::from_anthropic_response(&out))
        }
    };
    // Counts whose sum does not fit in u64 saturate in OpenAI's `prompt_tokens` and cannot come back.
    let fits = |u: &Usage| u.input.checked_add(u.cache_read).and_then(|n| n.checked_add(u.cache_write)).is_some();
    // What is metered is what the caller is told (both read the same `usage` member).
    if let Some(metered) = metered.filter(fits) {
        assert_eq!(Some(metered), to, "metered usage is the usage the caller sees");
    }
    if let Some(from) = from.filter(fits) {
        assert_eq!(Some(from), to, "translation keeps the token counts");
    }
}

fn convert_error(conversion: Conversion, status: u16, body: &[u8]) {
    let Some((out_status, out)) = translate::error_body(conversion, status, body) else { return };
    assert!(out_status >= 400 && http::StatusCode::from_u16(out_status).is_ok(), "{status} became {out_status}");
    let v = json(&out, "a translated error body");
    assert!(v.pointer("/error/message").is_some_and(Value::is_string), "an error has a message: {v}");
    assert!(v.pointer("/error/type").is_some_and(Value::is_string), "an error has a type: {v}");
    if matches!(conversion, Conversion::ToAnthropic) {
        assert_eq!(v.get("type"), Some(&Value::from("error")));
    }
}

/// SSE parsing and the stream transforms: byte 0 picks the transform, byte 1 where to split, the
/// rest is the upstream stream. 0/1: Anthropic → OpenAI (with/without usage), 2: OpenAI →
/// Anthropic, 3: the injected-usage stripper, 4/5: the usage tap on an OpenAI/Anthropic stream.
/// The stream is fed whole, split in two at a point, and in small chunks: the output (or usage)
/// must be the same each time. Every chunk a translator emits is whole SSE events of the caller's
/// dialect, and the translated stream keeps its dialect's event order. The parser itself must give
/// the same events however the stream is split.
pub fn sse(data: &[u8]) {
    let [mode, split, stream @ ..] = data else { return };
    let cut = usize::from(*split) % (stream.len() + 1);
    let small = usize::from(*split % 7) + 1;
    let splits: [Vec<&[u8]>; 3] = [vec![stream], vec![&stream[..cut], &stream[cut..]], stream.chunks(small).collect()];

    let parsed: Vec<_> = splits.iter().map(|chunks| parse_events(chunks)).collect();
    assert_eq!(parsed[0], parsed[1], "splitting at {cut} changed the events");
    assert_eq!(parsed[0], parsed[2], "feeding {small}-byte chunks changed the events");

    match mode % 6 {
        m @ (0..=3) => {
            let (conversion, caller) = match m {
                0 => (Some(Conversion::ToOpenAi { include_usage: true }), Dialect::OpenAi),
                1 => (Some(Conversion::ToOpenAi { include_usage: false }), Dialect::OpenAi),
                2 => (Some(Conversion::ToAnthropic), Dialect::Anthropic),
                _ => (None, Dialect::OpenAi),
            };
            let outs: Vec<Vec<u8>> = splits.iter().map(|chunks| run_transform(conversion, chunks)).collect();
            assert_eq!(outs[0], outs[1], "splitting at {cut} changed the output");
            assert_eq!(outs[0], outs[2], "feeding {small}-byte chunks changed the output");
            if conversion.is_some() {
                check_client_stream(caller, &outs[0], conversion);
            } else if !stream.windows(7).any(|w| w == b"\"usage\"") {
                assert_eq!(outs[0], stream, "a stream without usage passes the stripper untouched");
            }
        }
        m => {
            let d = if m == 4 { Dialect::OpenAi } else { Dialect::Anthropic };
            let usages: Vec<_> = splits.iter().map(|chunks| tap_usage(d, chunks)).collect();
            assert_eq!(usages[0], usages[1], "splitting at {cut} changed the usage");
            assert_eq!(usages[0], usages[2], "feeding {small}-byte chunks changed the usage");
            assert_eq!(usages[0], reference_usage(d, &parsed[0]), "the tap reads what the SSE parser reads");
        }
    }
}

fn parse_events(chunks: &[&[u8]]) -> Vec<crate::dialect::SseEvent> {
    let mut parser = SseParser::new();
    let mut events: Vec<_> = chunks.iter().flat_map(|c| parser.push(c)).collect();
    events.extend(parser.finish());
    events
}

/// Runs a transform like the relay does, checking that every chunk it emits is whole events.
fn run_transform(conversion: Option<Conversion>, chunks: &[&[u8]]) -> Vec<u8> {
    fastrand::seed(7);
    let mut t = match conversion {
        Some(c) => match translate::stream_at(c, "client-model", CREATED) {
            Some(t) => t,
            None => return Vec::new(),
        },
        None => translate::strip_injected_usage(),
    };
    let mut out = Vec::new();
    let mut pieces: Vec<Bytes> = chunks.iter().map(|c| t.chunk(c)).collect();
    pieces.push(t.finish());
    for piece in pieces {
        if conversion.is_some() {
            assert!(piece.is_empty() || piece.ends_with(b"\n\n"), "a chunk of whole events: {piece:?}");
        }
        out.extend_from_slice(&piece);
    }
    out
}

/// The translated stream as a client reads it: whole events, JSON data, the dialect's order.
fn check_client_stream(caller: Dialect, out: &[u8], conversion: Option<Conversion>) {
    let mut parser = SseParser::new();
    let events = parser.push(out);
    assert_eq!(parser.finish(), None, "the stream ends with a whole event");
    let last = events.len().saturating_sub(1);
    match caller {
        Dialect::OpenAi => {
            let mut id: Option<Value> = None;
            for (i, ev) in events.iter().enumerate() {
                assert_eq!(ev.event, None, "OpenAI chunks have no event name");
                if ev.data == "[DONE]" {
                    assert_eq!(i, last, "[DONE] is last");
                    continue;
                }
                let v = json(ev.data.as_bytes(), "an OpenAI chunk");
                if v.get("error").is_some() {
                    assert_eq!(i, last, "an error frame ends the stream");
                    continue;
                }
                assert_eq!(v.get("model"), Some(&Value::from("client-model")));
                assert_eq!(v.get("created"), Some(&Value::from(CREATED)));
                let this_id = v.get("id").cloned().unwrap_or_default();
                assert_eq!(id.get_or_insert_with(|| this_id.clone()), &this_id, "the same id on every chunk");
                if i == 0 {
                    assert_eq!(v.pointer("/choices/0/delta/role"), Some(&Value::from("assistant")), "role chunk first");
                }
                for c in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
                    assert_eq!(c.get("index"), Some(&Value::from(0)), "choice index is 0");
                }
                if v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty) {
                    assert_eq!(conversion, Some(Conversion::ToOpenAi { include_usage: true }), "usage only if asked");
                }
            }
            let end = events.last().map(|e| e.data.as_str());
            assert!(end == Some("[DONE]") || end.is_some_and(|d| d.contains("\"error\"")), "the stream is ended");
        }
        Dialect::Anthropic => check_anthropic_stream(&events),
    }
}

/// Anthropic event order: `message_start` first (or only an error), dense block indexes, each block
/// started before its deltas and stopped before the next starts, `message_stop` or `error` last.
fn check_anthropic_stream(events: &[crate::dialect::SseEvent]) {
    let last = events.len().saturating_sub(1);
    let mut open: Option<u64> = None;
    let mut next = 0u64;
    for (i, ev) in events.iter().enumerate() {
        let v = json(ev.data.as_bytes(), "an Anthropic event");
        let name = ev.event.as_deref().unwrap_or("");
        assert_eq!(v.get("type").and_then(Value::as_str), Some(name), "the event line names the type");
        let index = v.get("index").and_then(Value::as_u64);
        match name {
            "message_start" => assert_eq!(i, 0, "message_start is first"),
            "error" | "message_stop" => assert_eq!(i, last, "{name} is last"),
            "content_block_start" => {
                assert_eq!(open, None, "a block starts only when none is open");
                assert_eq!(index, Some(next), "block indexes are dense");
                open = index;
            }
            "content_block_delta" => assert!(open.is_some() && index == open, "a delta belongs to the open block"),
            "content_block_stop" => {
                assert!(open.is_some() && index == open, "a stop closes the open block");
                open = None;
                next += 1;
            }
            "message_delta" => assert_eq!(open, None, "blocks are closed before message_delta"),
            other => fail(&format!("unexpected event {other:?}")),
        }
        if i == 0 {
            assert!(name == "message_start" || name == "error", "the stream opens with message_start");
        }
    }
    let end = events.last().and_then(|e| e.event.as_deref());
    assert!(end == Some("message_stop") || end == Some("error"), "the stream is ended");
}

fn tap_usage(d: Dialect, chunks: &[&[u8]]) -> Option<Usage> {
    let mut tap = UsageTap::new(d);
    chunks.iter().for_each(|c| tap.observe(c));
    tap.usage()
}

/// What the tap should report, computed from whole parsed events with the same rules: events named
/// `content_block_delta` carry no usage, and only data with a `"usage"` object is read.
fn reference_usage(d: Dialect, events: &[crate::dialect::SseEvent]) -> Option<Usage> {
    let (mut openai, mut anthropic) = (None, None);
    for ev in events {
        if ev.event.as_deref() == Some("content_block_delta")
            || !crate::usage::tap::has_usage_object(ev.data.as_bytes())
        {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
            crate::usage::tap::apply(d, &v, &mut openai, &mut anthropic);
        }
    }
    match d {
        Dialect::OpenAi => openai.map(Usage::from),
        Dialect::Anthropic => anthropic.map(Usage::from),
    }
}

/// Flag definitions: the first line is the evaluation input (a JSON object with any of
/// `distinct_id`, `device_id`, `person_properties`, `groups`, `group_properties`; anything else
/// means defaults), the rest the definitions document. Parse, compile, evaluate every flag (up to
/// 64): evaluating twice, or with a second compilation, gives the same result; `value` is `None`
/// exactly when the reason says why; a variant is one of the flag's; and the kill-switch override
/// (`active: false`) leaves a flag nothing but `false` or undecided (both serve control).
pub fn flags(data: &[u8]) {
    let (first, defs_bytes) = match memchr::memchr(b'\n', data) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b""[..], data),
    };
    let input: Map<String, Value> = serde_json::from_slice(first).unwrap_or_default();
    let Ok(doc) = serde_json::from_slice::<Value>(defs_bytes) else { return };
    let Ok(defs) = FlagDefinitions::from_value(doc.clone()) else { return };
    let obj = |k: &str| input.get(k).and_then(Value::as_object).cloned().unwrap_or_default();
    let (person, groups, group_props) = (obj("person_properties"), obj("groups"), obj("group_properties"));
    let eval = EvalInput {
        distinct_id: input.get("distinct_id").and_then(Value::as_str).unwrap_or("user-1"),
        device_id: input.get("device_id").and_then(Value::as_str),
        person_properties: &person,
        groups: &groups,
        group_properties: &group_props,
        now: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
    };
    let compiled = CompiledFlags::compile(&defs);
    let again = CompiledFlags::compile(&defs);
    let keys: Vec<&str> = defs.flags.iter().map(|f| f.key.as_str()).take(64).chain(["no-such-flag"]).collect();
    for key in &keys {
        let e = compiled.evaluate(key, &eval);
        assert_eq!(e, compiled.evaluate(key, &eval), "evaluating {key:?} twice gives the same result");
        assert_eq!(e, again.evaluate(key, &eval), "a second compilation evaluates {key:?} the same");
        let undecided = e.reason.starts_with("inconclusive")
            || e.reason.starts_with("requires server evaluation")
            || e.reason == "flag not found";
        assert_eq!(e.value.is_none(), undecided, "{key:?}: value {:?} with reason {:?}", e.value, e.reason);
        if let Some(FlagValue::Variant(v)) = &e.value {
            let flag = compiled.flag(key);
            assert!(flag.is_some_and(|f| f.variant_keys().any(|k| k == &**v)), "{key:?}: unknown variant {v:?}");
        }
    }
    if let Some(key) = keys.first().filter(|k| **k != "no-such-flag") {
        let mut patch = Map::new();
        patch.insert("active".to_owned(), Value::Bool(false));
        let overrides = std::sync::Arc::new([(key.to_string(), patch)].into_iter().collect());
        if let Ok(snap) = crate::snapshot::build(std::sync::Arc::new(doc), crate::snapshot::Origin::File, overrides) {
            let e = snap.flags.evaluate(key, &eval);
            let off = matches!(e.value, None | Some(FlagValue::Bool(false)));
            assert!(off, "the kill switch turns {key:?} off, got {:?} ({})", e.value, e.reason);
        }
    }
}
