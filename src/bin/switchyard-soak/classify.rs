//! What one response was, seen from the caller: complete, a well-formed error (status + error body,
//! or an error event ending a stream), a relayed body cut off (the defined outcome of a mid-body
//! upstream fault on a relayed non-stream response), relayed upstream garbage (same dialect: the
//! gateway does not parse what it forwards), or lost (anything else). And which outcomes a given
//! injected fault allows.

use bytes::Bytes;
use switchyard::error::{is_dialect_error_body, Dialect};

/// The marker of the bench upstream's malformed bodies.
pub const MALFORMED_MARKER: &str = "MOCK-MALFORMED";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    ErrorStatus,
    ErrorEvent,
    /// A 200 non-stream body that broke off (the caller's connection was aborted).
    Aborted,
    /// A 200 carrying the upstream's malformed body, relayed byte for byte.
    RelayedMalformed,
    Lost(String),
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ErrorStatus => "error_status",
            Outcome::ErrorEvent => "error_event",
            Outcome::Aborted => "aborted_body",
            Outcome::RelayedMalformed => "relayed_malformed",
            Outcome::Lost(_) => "lost",
        }
    }

    /// Whether the caller saw an error (and the gateway should have counted one).
    pub fn is_error(&self) -> bool {
        matches!(self, Outcome::ErrorStatus | Outcome::ErrorEvent | Outcome::Aborted)
    }
}

/// One response as read by the client.
pub struct Observed<'a> {
    pub dialect: Dialect,
    pub stream_requested: bool,
    pub status: u16,
    pub sse: bool,
    pub body: &'a Bytes,
    /// The body ended with a transport error instead of its end.
    pub body_error: bool,
}

pub fn classify(o: &Observed<'_>) -> Outcome {
    let lost = |why: &str| Outcome::Lost(why.to_owned());
    if o.status != 200 {
        if o.body_error {
            return lost("error response body broke off");
        }
        return if (400..600).contains(&o.status) && is_dialect_error_body(o.dialect, o.body) {
            Outcome::ErrorStatus
        } else {
            Outcome::Lost(format!("status {} without an error body of the caller's dialect", o.status))
        };
    }
    if o.sse != o.stream_requested {
        return lost(if o.stream_requested { "asked for a stream, got a whole body" } else { "got a stream unasked" });
    }
    if o.body_error {
        return if o.sse { lost("stream broke off without an error event") } else { Outcome::Aborted };
    }
    let marked = contains(o.body, MALFORMED_MARKER.as_bytes());
    if !o.sse {
        return match serde_json::from_slice::<serde_json::Value>(o.body) {
            Ok(v) if complete_body(o.dialect, &v) => Outcome::Complete,
            _ if marked => Outcome::RelayedMalformed,
            Ok(_) => lost("200 JSON that is not a complete response of the caller's dialect"),
            Err(_) => lost("200 body that is not JSON"),
        };
    }
    classify_stream(o.dialect, o.body, marked)
}

fn complete_body(d: Dialect, v: &serde_json::Value) -> bool {
    match d {
        Dialect::OpenAi => v["object"] == "chat.completion" && v["choices"].as_array().is_some_and(|c| !c.is_empty()),
        Dialect::Anthropic => v["type"] == "message" && v["content"].is_array(),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// An event stream must end with its dialect's terminal event or an error event, and nothing after.
fn classify_stream(d: Dialect, body: &[u8], marked: bool) -> Outcome {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut end: Option<Outcome> = None;
    let mut events = 0usize;
    for block in text.split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if name.is_none() && data.is_empty() {
            continue; // comments and keep-alives
        }
        if end.is_some() {
            return Outcome::Lost("events after the stream's end".into());
        }
        events += 1;
        if d == Dialect::OpenAi && data == "[DONE]" {
            end = Some(if marked { Outcome::RelayedMalformed } else { Outcome::Complete });
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(&data) {
            Ok(v) => v,
            Err(_) if data.contains(MALFORMED_MARKER) => continue,
            Err(_) => return Outcome::Lost(format!("stream event that is not JSON: {:.80}", data)),
        };
        let is_error = match d {
            Dialect::OpenAi => v.get("error").is_some(),
            Dialect::Anthropic => name.as_deref() == Some("error") || v["type"] == "error",
        };
        if is_error {
            let wrapped = serde_json::to_vec(&v).unwrap_or_default();
            if !is_dialect_error_body(d, &wrapped) {
                return Outcome::Lost("an error event not in the caller's dialect".into());
            }
            end = Some(Outcome::ErrorEvent);
        } else if d == Dialect::Anthropic && v["type"] == "message_stop" {
            end = Some(if marked { Outcome::RelayedMalformed } else { Outcome::Complete });
        }
    }
    match end {
        Some(o) => o,
        None if events == 0 => Outcome::Lost("empty stream".into()),
        None => Outcome::Lost("stream ended without its terminal event".into()),
    }
}

/// Faults the soak client asks the upstream for (names as the bench upstream's `x-mock-fault`).
pub const FAULT_KINDS: [&str; 8] = ["500", "429", "529", "reset", "reset_mid", "stall", "slow", "malformed"];

/// Whether `outcome` is a defined result of `fault` (None: no fault reached the upstream) for a
/// request that was a stream or not, served by a backend of the caller's dialect or not.
pub fn allowed(fault: Option<&str>, outcome: &Outcome, stream: bool, same_dialect: bool) -> bool {
    match outcome {
        Outcome::Complete => true,
        Outcome::Lost(_) => false,
        Outcome::ErrorStatus => fault.is_some(),
        Outcome::ErrorEvent => stream && matches!(fault, Some("reset_mid" | "stall" | "malformed")),
        Outcome::Aborted => !stream && same_dialect && matches!(fault, Some("reset_mid" | "stall")),
        Outcome::RelayedMalformed => same_dialect && fault == Some("malformed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(dialect: Dialect, stream: bool, status: u16, body: &'static str) -> Outcome {
        let body = Bytes::from_static(body.as_bytes());
        classify(&Observed { dialect, stream_requested: stream, status, sse: stream, body: &body, body_error: false })
    }

    #[test]
    fn complete_streams_and_bodies_of_each_dialect_are_complete() {
        let oa = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\ndata: [DONE]\n\n";
        assert_eq!(obs(Dialect::OpenAi, true, 200, oa), Outcome::Complete);
        let an = "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert_eq!(obs(Dialect::Anthropic, true, 200, an), Outcome::Complete);
        let body = r#"{"object":"chat.completion","choices":[{"index":0}]}"#;
        assert_eq!(obs(Dialect::OpenAi, false, 200, body), Outcome::Complete);
    }

    #[test]
    fn a_cut_stream_and_garbage_are_lost_and_an_error_event_is_not() {
        let cut = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\n";
        assert!(matches!(obs(Dialect::OpenAi, true, 200, cut), Outcome::Lost(_)));
        assert!(matches!(obs(Dialect::OpenAi, false, 200, "{\"choi"), Outcome::Lost(_)));
        let err = "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"x\"}}\n\n";
        assert_eq!(obs(Dialect::Anthropic, true, 200, err), Outcome::ErrorEvent);
        let after = "data: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n";
        assert!(matches!(obs(Dialect::OpenAi, true, 200, after), Outcome::Lost(_)));
    }

    #[test]
    fn an_error_status_needs_a_body_of_the_callers_dialect() {
        let oa = r#"{"error":{"message":"m","type":"server_error"}}"#;
        assert_eq!(obs(Dialect::OpenAi, false, 502, oa), Outcome::ErrorStatus);
        assert!(matches!(obs(Dialect::Anthropic, false, 502, oa), Outcome::Lost(_)));
    }

    #[test]
    fn only_a_fault_allows_an_error_and_only_a_relayed_one_allows_an_aborted_body() {
        assert!(!allowed(None, &Outcome::ErrorStatus, false, true));
        assert!(allowed(Some("500"), &Outcome::ErrorStatus, false, true));
        assert!(allowed(Some("reset_mid"), &Outcome::Aborted, false, true));
        assert!(!allowed(Some("reset_mid"), &Outcome::Aborted, false, false));
        assert!(!allowed(Some("reset_mid"), &Outcome::Aborted, true, true));
    }
}
