//! Reading a caller's LLM request: the body (bounded), the few fields the gateway needs (`model` and
//! where it sits, `stream`, the caller's identity), without rebuilding the JSON, and the identity
//! headers (`x-distinct-id`, `x-person-properties`, `x-groups`, `x-group-properties`).

use crate::dialect::loose::{from_bytes, CheckedObject};
use crate::dialect::scan;
use crate::error::{Dialect, ErrorKind, GatewayError};
use crate::relay::BoxError;
use crate::routing::Facts;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::ops::Range;

/// The fields of a request body the gateway looks at, as raw JSON text; everything else is
/// forwarded untouched.
#[derive(Debug, PartialEq)]
struct Peek<'a> {
    model: Option<&'a str>,
    stream: Option<bool>,
    /// Kept when it is `null` (unlike the others, where `null` is as if absent).
    stream_options: Option<&'a str>,
    /// OpenAI dialect: the caller's end user.
    user: Option<&'a str>,
    /// Anthropic dialect: `metadata.user_id`.
    metadata: Option<&'a str>,
}

impl<'a> Peek<'a> {
    /// Reads the fields from a body: in one pass of our own (`dialect::scan`) when it can, else by
    /// serde_json, whose verdict and error the scan defers to (the bench's 400-byte body: 4.5k → 3.9k
    /// instructions for all of `parse`; a 7.5 KB prompt: 8k fewer).
    fn read(text: &'a str) -> Result<Self, serde_json::Error> {
        match scan::members(text, ["model", "stream", "stream_options", "user", "metadata"]) {
            Some([model, stream, stream_options, user, metadata]) => {
                let stream = match stream {
                    None | Some("null") => None,
                    Some("true") => Some(true),
                    Some("false") => Some(false),
                    // Not a boolean: serde_json's error says so.
                    Some(_) => return Self::read_by_serde(text),
                };
                let not_null = |v: Option<&'a str>| v.filter(|v| *v != "null");
                Ok(Peek {
                    model: not_null(model),
                    stream,
                    stream_options,
                    user: not_null(user),
                    metadata: not_null(metadata),
                })
            }
            None => Self::read_by_serde(text),
        }
    }

    fn read_by_serde(text: &'a str) -> Result<Self, serde_json::Error> {
        let p: SerdePeek<'_> = serde_json::from_str(text)?;
        Ok(Peek {
            model: p.model.map(RawValue::get),
            stream: p.stream,
            stream_options: p.stream_options.map(RawValue::get),
            user: p.user.map(RawValue::get),
            metadata: p.metadata.map(RawValue::get),
        })
    }
}

/// [`Peek`] as serde_json reads it.
#[derive(Deserialize)]
struct SerdePeek<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

/// A field that is there, whatever its value (`null` included).
pub(crate) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct PeekMetadata<'a> {
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
}

/// A caller's request, read and checked.
pub struct LlmRequest {
    pub body: Bytes,
    pub model: String,
    /// Where the `model` value (with its quotes) sits in `body`.
    pub model_span: Range<usize>,
    pub stream: bool,
    /// The body has `stream_options` (so the gateway must not add its own).
    pub has_stream_options: bool,
    /// The body has `"stream_options": null`: the gateway may add its own, in that place.
    pub null_stream_options: bool,
    pub distinct_id: Option<String>,
    pub identity: IdentityHeaders,
}

impl LlmRequest {
    /// What routing needs to know about the caller.
    pub fn facts(&self) -> Facts<'_> {
        Facts { distinct_id: self.distinct_id.as_deref(), identity: &self.identity }
    }
}

/// The identity headers that flag targeting reads (`x-person-properties`, `x-groups`,
/// `x-group-properties`), each a JSON object. Routing checks them on every route and builds them
/// into objects only when a flag is evaluated for the request (building them was a third of the cost
/// of reading a request).
#[derive(Default)]
pub struct IdentityHeaders {
    person_properties: Option<HeaderValue>,
    groups: Option<HeaderValue>,
    group_properties: Option<HeaderValue>,
}

/// The identity headers as objects (absent is empty).
pub struct Identity {
    pub person_properties: Map<String, Value>,
    pub groups: Map<String, Value>,
    pub group_properties: Map<String, Value>,
}

const PERSON_PROPERTIES: &str = "x-person-properties";
const GROUPS: &str = "x-groups";
const GROUP_PROPERTIES: &str = "x-group-properties";
const X_DISTINCT_ID: &str = "x-distinct-id";

impl IdentityHeaders {
    /// Takes the identity headers from `headers` (checked later, by `check` or `parse`), and
    /// `x-distinct-id`: the first value of each, as `HeaderMap::get` gives, in one pass over the
    /// map (a lookup by name parses and hashes the name: four lookups cost five times the pass).
    pub fn read(headers: &HeaderMap) -> (Self, Option<&HeaderValue>) {
        let (mut ids, mut distinct_id) = (IdentityHeaders::default(), None);
        for (name, value) in headers {
            let slot = match name.as_str() {
                PERSON_PROPERTIES => &mut ids.person_properties,
                GROUPS => &mut ids.groups,
                GROUP_PROPERTIES => &mut ids.group_properties,
                X_DISTINCT_ID => {
                    distinct_id = distinct_id.or(Some(value));
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        (ids, distinct_id)
    }

    /// Checks that each header present is a JSON object, without building it: the errors `parse`
    /// would give.
    pub fn check(&self) -> Result<(), GatewayError> {
        for (v, name) in self.each() {
            check_json_object(v.as_bytes()).map_err(|why| header_error(name, &why))?;
        }
        Ok(())
    }

    /// The headers as objects (absent is empty).
    pub fn parse(&self) -> Result<Identity, GatewayError> {
        Ok(Identity {
            person_properties: json_object(self.person_properties.as_ref(), PERSON_PROPERTIES)?,
            groups: json_object(self.groups.as_ref(), GROUPS)?,
            group_properties: json_object(self.group_properties.as_ref(), GROUP_PROPERTIES)?,
        })
    }

    fn each(&self) -> impl Iterator<Item = (&HeaderValue, &'static str)> {
        [
            (&self.person_properties, PERSON_PROPERTIES),
            (&self.groups, GROUPS),
            (&self.group_properties, GROUP_PROPERTIES),
        ]
        .into_iter()
        .filter_map(|(v, name)| v.as_ref().map(|v| (v, name)))
    }
}

/// Whether `bytes` is one JSON object that `Map<String, Value>` would read (well formed, UTF-8,
/// numbers in range), without building it: the same errors, no allocation.
fn check_json_object(bytes: &[u8]) -> Result<(), String> {
    // One pass of our own when it can tell (1,056 → 764 instructions for the bench's 45-byte
    // `x-person-properties`), else serde_json's verdict.
    if std::str::from_utf8(bytes).is_ok_and(scan::is_value_object) {
        return Ok(());
    }
    from_bytes::<CheckedObject>(bytes).map(drop).map_err(|e| e.to_string())
}

fn json_object_of(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

fn json_object(v: Option<&HeaderValue>, name: &str) -> Result<Map<String, Value>, GatewayError> {
    v.map_or_else(|| Ok(Map::new()), |v| json_object_of(v.as_bytes()).map_err(|why| header_error(name, &why)))
}

fn header_error(name: &str, why: &str) -> GatewayError {
    GatewayError::new(ErrorKind::InvalidRequest, format!("the {name} header must be a JSON object: {why}"))
}

/// Reads and checks a request body in `dialect`, with the identity headers.
pub async fn read<B>(body: B, headers: &HeaderMap, dialect: Dialect, max: usize) -> Result<LlmRequest, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let body = read_body(body, headers, max).await?;
    parse(body, headers, dialect)
}

/// Checks a whole request body in `dialect` and reads the identity headers: the pure half of
/// [`read`] (also the request-parsing fuzz target's entry point, `fuzzing::request`).
pub fn parse(body: Bytes, headers: &HeaderMap, dialect: Dialect) -> Result<LlmRequest, GatewayError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let why = match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            Ok(_) => "the request body must be a JSON object".to_owned(),
            Err(e) => format!("the request body is not valid JSON: {e}"),
        };
        return Err(GatewayError::new(ErrorKind::InvalidRequest, why));
    }
    // serde_json does not check the UTF-8 of strings it skips (every field but the few peeked),
    // and a same-dialect body is forwarded as it is: check it here, or invalid JSON goes upstream.
    let text = std::str::from_utf8(&body).map_err(|e| {
        let why = format!("the request body is not valid JSON: invalid UTF-8 at byte {}", e.valid_up_to());
        GatewayError::new(ErrorKind::InvalidRequest, why)
    })?;
    // Read from the checked text: serde_json's slice reader would check the UTF-8 of every key again.
    let peek = Peek::read(text).map_err(|e| invalid_json(&e))?;
    let raw_model = peek
        .model
        .ok_or_else(|| GatewayError::new(ErrorKind::MissingModel, "the request has no `model`").with_param("model"))?;
    let model: String = serde_json::from_str(raw_model)
        .map_err(|_| GatewayError::new(ErrorKind::InvalidRequest, "`model` must be a string").with_param("model"))?;
    let start = raw_model.as_ptr() as usize - body.as_ptr() as usize;
    let model_span = start..start + raw_model.len();
    let body_id: Option<String> = match dialect {
        Dialect::OpenAi => peek.user.and_then(|u| serde_json::from_str::<Cow<'_, str>>(u).ok()).map(Cow::into_owned),
        Dialect::Anthropic => peek
            .metadata
            .and_then(|m| serde_json::from_str::<PeekMetadata<'_>>(m).ok())
            .and_then(|m| m.user_id)
            .map(Cow::into_owned),
    };
    let (identity, header_id) = IdentityHeaders::read(headers);
    let distinct_id = match header_id.map(|v| v.to_str()) {
        Some(Ok(id)) if !id.is_empty() => Some(id.to_owned()),
        Some(Err(_)) => {
            return Err(GatewayError::new(ErrorKind::InvalidRequest, "x-distinct-id must be visible ASCII"))
        }
        _ => body_id.filter(|id| !id.is_empty()),
    };
    let stream = peek.stream.unwrap_or(false);
    Ok(LlmRequest {
        has_stream_options: peek.stream_options.is_some_and(|r| r != "null"),
        null_stream_options: peek.stream_options == Some("null"),
        model,
        model_span,
        stream,
        distinct_id,
        identity,
        body,
    })
}

/// Reads the request body, refusing more than `max` bytes with 413.
async fn read_body<B>(body: B, headers: &HeaderMap, max: usize) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let too_large =
        || GatewayError::new(ErrorKind::BodyTooLarge, format!("the request body is larger than {max} bytes"));
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(GatewayError::new(ErrorKind::InvalidRequest, format!("could not read the request body: {e}"))),
    }
}

/// Fuzzing's invariant for [`Peek::read`]: its fast path reads what serde_json reads, and refuses
/// what serde_json refuses with serde_json's own error.
pub(crate) fn assert_peek_agrees(text: &str) {
    let (fast, by_serde) = (Peek::read(text), Peek::read_by_serde(text));
    assert_eq!(fast.map_err(|e| e.to_string()), by_serde.map_err(|e| e.to_string()), "the peek of {text:?}");
}

fn invalid_json(e: &serde_json::Error) -> GatewayError {
    let msg = match e.classify() {
        serde_json::error::Category::Data => format!("the request body must be a JSON object: {e}"),
        _ => format!("the request body is not valid JSON: {e}"),
    };
    GatewayError::new(ErrorKind::InvalidRequest, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity headers' check accepts and refuses exactly what reading them as objects does,
    /// with the same message.
    #[test]
    fn the_identity_check_agrees_with_reading_the_object() {
        let cases: &[&[u8]] = &[
            b"{}",
            b" {\"plan\": \"pro\", \"n\": -1.5e3, \"ok\": true, \"x\": null, \"l\": [1, {\"a\": []}]} ",
            b"{\"e\": \"\\u00e9\\n\"}",
            b"{\"a\": 1e999}",
            b"{\"a\": 1",
            b"{\"a\": 1} x",
            b"{\"a\": 1,}",
            b"[1]",
            b"\"s\"",
            b"12",
            b"null",
            b"",
            b"{\"a\": \"\xff\"}",
            b"{\"\xc3\": 1}",
            b"{\"a\": \"\\ud800\"}",
        ];
        for &c in cases {
            let read = json_object_of(c).map(drop);
            assert_eq!(check_json_object(c), read, "{}", String::from_utf8_lossy(c));
        }
        let deep = format!("{{\"a\": {}1{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(check_json_object(deep.as_bytes()), json_object_of(deep.as_bytes()).map(drop));
        assert!(check_json_object(deep.as_bytes()).is_err(), "nesting deeper than serde_json's limit");
    }

    /// The fast read of the peeked fields gives what serde_json gives, `null`s and refusals
    /// included; and it is the path the usual bodies take.
    #[test]
    fn the_peek_reads_what_serde_json_reads() {
        let bodies = [
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true}"#,
            r#"{"model": null, "stream": null, "stream_options": null, "user": null, "metadata": null}"#,
            r#"{"model": "m", "stream": false, "stream_options": {"include_usage": true}, "user": "u"}"#,
            r#"{"model": "m", "metadata": {"user_id": "a"}, "max_tokens": 1e999}"#,
            r#"{"model": 12, "stream": 1}"#,
            r#"{"model": "m", "stream": "yes"}"#,
            r#"{"model": "m", "model": "n"}"#,
            r#"{"mod\u0065l": "m", "stream": true}"#,
            r#"{"model": "m",}"#,
            r#"{"model": "m"} {}"#,
            "{\"model\": \"m\u{1}\"}",
            r#"{}"#,
        ];
        for body in bodies {
            assert_peek_agrees(body);
        }
        let usual = bodies[0];
        assert!(scan::members(usual, ["model"]).is_some(), "the usual body takes the fast path");
        assert_eq!(Peek::read(usual).ok().and_then(|p| p.stream), Some(true));
    }

    #[test]
    fn a_body_with_invalid_utf8_in_a_field_the_gateway_skips_is_rejected() {
        let body = Bytes::from_static(b"{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"c\xff\": \"x\"}]}");
        let err = parse(body, &HeaderMap::new(), Dialect::OpenAi).err().map(|e| e.message);
        assert_eq!(err.as_deref(), Some("the request body is not valid JSON: invalid UTF-8 at byte 47"));
        let ok = Bytes::from_static("{\"model\": \"m\", \"x\": \"é\"}".as_bytes());
        assert!(parse(ok, &HeaderMap::new(), Dialect::OpenAi).is_ok());
    }
}
