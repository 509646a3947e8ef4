//! The wire shape of exported events: one capture-API batch item per queued `Pending`, with the property
//! names PostHog's SDKs use (sources in the `export` module header).

use super::Pending;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use std::time::SystemTime;

/// Our `$lib`, as SDKs name themselves (`posthog-python`, `posthog-node`).
const LIB: &str = "switchyard";
const LIB_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One proxied LLM call, as the gateway saw it.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    /// The caller's distinct id; `None` for anonymous calls (the trace id stands in, without a person).
    pub distinct_id: Option<String>,
    /// The request id.
    pub trace_id: String,
    pub route: String,
    pub flag: Option<String>,
    pub variant: Option<String>,
    pub backend: String,
    /// `"openai"`, `"anthropic"` or `"mock"`.
    pub provider: &'static str,
    /// The model the backend was asked for.
    pub model: String,
    pub http_status: u16,
    pub is_error: bool,
    pub latency_s: f64,
    pub ttft_s: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub stream: bool,
}

/// A batch item: `{"event", "distinct_id", "properties", "timestamp", "uuid"}`. The uuid lets PostHog
/// drop the duplicate when a retried batch had in fact been ingested.
pub(crate) fn batch_item(p: &Pending) -> Value {
    let (event, distinct_id, properties, at) = match p {
        Pending::FlagCalled { at, distinct_id, flag, value, served_variant } => {
            ("$feature_flag_called", distinct_id.as_str(), flag_called_properties(flag, value, served_variant), at)
        }
        Pending::Generation { at, ev } => {
            let id = ev.distinct_id.as_deref().unwrap_or(&ev.trace_id);
            ("$ai_generation", id, generation_properties(ev), at)
        }
    };
    json!({
        "event": event,
        "distinct_id": distinct_id,
        "properties": properties,
        "timestamp": timestamp(*at),
        "uuid": uuid_v4(),
    })
}

/// A flag value as the SDKs report it: booleans for boolean flags, the variant key otherwise.
fn flag_value(value: &str) -> Value {
    match value {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        v => Value::String(v.to_owned()),
    }
}

fn flag_called_properties(flag: &str, value: &str, served_variant: &str) -> Value {
    let mut p = Map::new();
    p.insert("$feature_flag".into(), flag.into());
    p.insert("$feature_flag_response".into(), flag_value(value));
    p.insert(format!("$feature/{flag}"), flag_value(value));
    p.insert("$feature_flag_served_variant".into(), served_variant.into());
    p.insert("locally_evaluated".into(), true.into());
    p.insert("$lib".into(), LIB.into());
    p.insert("$lib_version".into(), LIB_VERSION.into());
    Value::Object(p)
}

fn generation_properties(g: &super::Generation) -> Value {
    let mut p = Map::new();
    p.insert("$ai_trace_id".into(), g.trace_id.as_str().into());
    p.insert("$ai_provider".into(), g.provider.into());
    p.insert("$ai_model".into(), g.model.as_str().into());
    p.insert("$ai_http_status".into(), g.http_status.into());
    p.insert("$ai_is_error".into(), g.is_error.into());
    p.insert("$ai_latency".into(), g.latency_s.into());
    p.insert("$ai_stream".into(), g.stream.into());
    // Unknown counts are left out rather than sent as 0, so PostHog does not price them as free.
    let optional = [
        ("$ai_time_to_first_token", g.ttft_s.map(Value::from)),
        ("$ai_input_tokens", g.input_tokens.map(Value::from)),
        ("$ai_output_tokens", g.output_tokens.map(Value::from)),
        ("$ai_cache_read_input_tokens", g.cache_read_tokens.map(Value::from)),
        ("$ai_cache_creation_input_tokens", g.cache_write_tokens.map(Value::from)),
        ("$ai_total_cost_usd", g.cost_usd.map(Value::from)),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            p.insert(k.into(), v);
        }
    }
    p.insert("$ai_span_name".into(), g.route.as_str().into());
    p.insert("switchyard_route".into(), g.route.as_str().into());
    p.insert("switchyard_backend".into(), g.backend.as_str().into());
    if let Some(flag) = &g.flag {
        p.insert("switchyard_flag".into(), flag.as_str().into());
        if let Some(variant) = &g.variant {
            // PostHog's convention for "this event happened under this flag value" (experiment breakdowns).
            p.insert(format!("$feature/{flag}"), flag_value(variant));
        }
    }
    if let Some(variant) = &g.variant {
        p.insert("switchyard_variant".into(), variant.as_str().into());
    }
    if g.distinct_id.is_none() {
        p.insert("$process_person_profile".into(), false.into());
    }
    p.insert("$lib".into(), LIB.into());
    p.insert("$lib_version".into(), LIB_VERSION.into());
    Value::Object(p)
}

/// ISO 8601 with milliseconds, as the capture API documents.
fn timestamp(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A random (version 4) UUID.
fn uuid_v4() -> String {
    let x = fastrand::u128(..);
    let x = (x & !(0xf << 76)) | (0x4 << 76); // version
    let x = (x & !(0x3 << 62)) | (0x2 << 62); // RFC 4122 variant
    let h = format!("{x:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::time::{Duration, UNIX_EPOCH};

    pub(crate) fn sample_generation() -> Generation {
        Generation {
            distinct_id: Some("user-1".into()),
            trace_id: "req-1".into(),
            route: "chat".into(),
            flag: Some("llm-model".into()),
            variant: Some("test".into()),
            backend: "oa".into(),
            provider: "openai",
            model: "gpt-4o-mini".into(),
            http_status: 200,
            is_error: false,
            latency_s: 1.5,
            ttft_s: Some(0.25),
            input_tokens: Some(12),
            output_tokens: Some(34),
            cache_read_tokens: Some(5),
            cache_write_tokens: Some(0),
            cost_usd: Some(0.0012),
            stream: true,
        }
    }

    const AT: Duration = Duration::from_millis(1_767_225_600_123); // 2026-01-01T00:00:00.123Z

    #[test]
    fn flag_called_event_has_the_sdk_properties() {
        let p = Pending::FlagCalled {
            at: UNIX_EPOCH + AT,
            distinct_id: "user-1".into(),
            flag: "llm-model".into(),
            value: "test".into(),
            served_variant: "control".into(),
        };
        let mut item = batch_item(&p);
        let uuid = item["uuid"].take();
        assert_eq!(
            item,
            json!({
                "event": "$feature_flag_called",
                "distinct_id": "user-1",
                "timestamp": "2026-01-01T00:00:00.123Z",
                "uuid": null,
                "properties": {
                    "$feature_flag": "llm-model",
                    "$feature_flag_response": "test",
                    "$feature/llm-model": "test",
                    "$feature_flag_served_variant": "control",
                    "locally_evaluated": true,
                    "$lib": "switchyard",
                    "$lib_version": LIB_VERSION,
                }
            })
        );
        assert_eq!(uuid.as_str().map(str::len), Some(36));
    }

    #[test]
    fn boolean_flag_values_are_json_booleans() {
        let props = flag_called_properties("beta", "false", "false");
        assert_eq!(props["$feature_flag_response"], json!(false));
        assert_eq!(props["$feature/beta"], json!(false));
        assert_eq!(flag_called_properties("beta", "true", "true")["$feature_flag_response"], json!(true));
    }

    #[test]
    fn generation_event_has_the_llm_analytics_properties() {
        let item = batch_item(&Pending::Generation { at: UNIX_EPOCH + AT, ev: Box::new(sample_generation()) });
        assert_eq!(item["event"], "$ai_generation");
        assert_eq!(item["distinct_id"], "user-1");
        assert_eq!(
            item["properties"],
            json!({
                "$ai_trace_id": "req-1",
                "$ai_provider": "openai",
                "$ai_model": "gpt-4o-mini",
                "$ai_http_status": 200,
                "$ai_is_error": false,
                "$ai_latency": 1.5,
                "$ai_stream": true,
                "$ai_time_to_first_token": 0.25,
                "$ai_input_tokens": 12,
                "$ai_output_tokens": 34,
                "$ai_cache_read_input_tokens": 5,
                "$ai_cache_creation_input_tokens": 0,
                "$ai_total_cost_usd": 0.0012,
                "$ai_span_name": "chat",
                "switchyard_route": "chat",
                "switchyard_backend": "oa",
                "switchyard_flag": "llm-model",
                "switchyard_variant": "test",
                "$feature/llm-model": "test",
                "$lib": "switchyard",
                "$lib_version": LIB_VERSION,
            })
        );
    }

    #[test]
    fn anonymous_generation_uses_the_trace_id_without_a_person_profile() {
        let g = Generation {
            distinct_id: None,
            flag: None,
            variant: None,
            ttft_s: None,
            input_tokens: None,
            output_tokens: None,
            cache_read_tokens: None,
            cache_write_tokens: None,
            cost_usd: None,
            http_status: 502,
            is_error: true,
            ..sample_generation()
        };
        let item = batch_item(&Pending::Generation { at: UNIX_EPOCH + AT, ev: Box::new(g) });
        let p = &item["properties"];
        assert_eq!(item["distinct_id"], "req-1");
        assert_eq!(p["$process_person_profile"], json!(false));
        assert_eq!((p["$ai_http_status"].clone(), p["$ai_is_error"].clone()), (json!(502), json!(true)));
        for absent in ["$ai_input_tokens", "$ai_total_cost_usd", "$ai_time_to_first_token", "switchyard_flag"] {
            assert!(p.get(absent).is_none(), "{absent} should be absent: {p}");
        }
        assert!(!p.as_object().unwrap().keys().any(|k| k.starts_with("$feature/")));
    }

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let (a, b) = (uuid_v4(), uuid_v4());
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('4'), "{a}");
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "{a}");
    }
}
