//! Golden tests for usage extraction, the stream tap, price loading, lookup and cost. Fixtures
//! live in `tests/fixtures/usage/`; expected costs are worked out by hand in the comments.

use super::*;
use crate::error::Dialect;

const OPENAI_RESPONSE: &[u8] = include_bytes!("../../tests/fixtures/usage/openai_response.json");
const ANTHROPIC_RESPONSE: &[u8] = include_bytes!("../../tests/fixtures/usage/anthropic_response.json");
const OPENAI_STREAM: &[u8] = include_bytes!("../../tests/fixtures/usage/openai_stream.sse");
const ANTHROPIC_STREAM: &[u8] = include_bytes!("../../tests/fixtures/usage/anthropic_stream.sse");
const LITELLM: &[u8] = include_bytes!("../../tests/fixtures/usage/litellm_prices.json");

fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
    Usage { input, output, cache_read, cache_write }
}

/// Costs are sums of binary fractions; compare to the hand-computed value to 1e-12 USD.
fn assert_usd(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-12, "cost {actual} != expected {expected}");
}

/// Every way of cutting the stream in two, plus byte-by-byte, gives `expected`.
fn assert_tap_at_every_split(dialect: Dialect, stream: &[u8], expected: Option<Usage>) {
    for cut in 0..=stream.len() {
        let mut tap = UsageTap::new(dialect);
        tap.observe(&stream[..cut]);
        tap.observe(&stream[cut..]);
        assert_eq!(tap.usage(), expected, "split at byte {cut}");
    }
    let mut tap = UsageTap::new(dialect);
    for b in stream {
        tap.observe(std::slice::from_ref(b));
    }
    assert_eq!(tap.usage(), expected, "byte by byte");
}

// ---- non-stream bodies ----------------------------------------------------------------------

#[test]
fn openai_body_input_is_the_prompt_minus_cached_tokens() {
    // prompt 2006 = 86 uncached + 1920 cached; completion 300 already includes reasoning 128.
    assert_eq!(Usage::from_openai_response(OPENAI_RESPONSE), Some(usage(86, 300, 1920, 0)));
}

#[test]
fn openai_cache_write_tokens_are_taken_out_of_the_uncached_input() {
    let body = br#"{"usage":{"prompt_tokens":5000,"completion_tokens":10,"total_tokens":5010,
        "prompt_tokens_details":{"cached_tokens":1000,"cache_write_tokens":3000}}}"#;
    // 5000 - 1000 read - 3000 written = 1000 uncached.
    assert_eq!(Usage::from_openai_response(body), Some(usage(1000, 10, 1000, 3000)));
}

#[test]
fn openai_body_without_usage_or_not_json_has_none() {
    assert_eq!(Usage::from_openai_response(br#"{"id":"x","usage":null}"#), None);
    assert_eq!(Usage::from_openai_response(br#"{"id":"x"}"#), None);
    assert_eq!(Usage::from_openai_response(b"<html>bad gateway</html>"), None);
}

#[test]
fn openai_cached_count_larger_than_the_prompt_never_goes_negative() {
    let body = br#"{"usage":{"prompt_tokens":10,"completion_tokens":1,
        "prompt_tokens_details":{"cached_tokens":20}}}"#;
    assert_eq!(Usage::from_openai_response(body), Some(usage(0, 1, 20, 0)));
}

#[test]
fn anthropic_body_keeps_input_and_cache_counts_apart() {
    let u = Usage::from_anthropic_response(ANTHROPIC_RESPONSE);
    assert_eq!(u, Some(usage(21, 393, 3400, 1200)));
    // Total prompt = 21 + 3400 + 1200 = 4621; total = 4621 + 393 = 5014.
    assert_eq!(u.map(|u| (u.prompt_total(), u.total())), Some((4621, 5014)));
}

#[test]
fn anthropic_body_without_usage_has_none() {
    assert_eq!(Usage::from_anthropic_response(br#"{"type":"message"}"#), None);
    assert_eq!(Usage::from_anthropic_response(br#"{"type":"error","error":{}}"#), None);
    assert_eq!(Usage::from_anthropic_response(b"not json"), None);
}

#[test]
fn from_response_dispatches_on_the_dialect() {
    assert_eq!(Usage::from_response(Dialect::OpenAi, OPENAI_RESPONSE), Usage::from_openai_response(OPENAI_RESPONSE));
    assert_eq!(
        Usage::from_response(Dialect::Anthropic, ANTHROPIC_RESPONSE),
        Usage::from_anthropic_response(ANTHROPIC_RESPONSE)
    );
}

// ---- streams --------------------------------------------------------------------------------

#[test]
fn openai_stream_usage_comes_from_the_final_chunk_at_every_split() {
    // prompt 1200 = 176 uncached + 1024 cached. The text delta quoting "usage" is not counted.
    assert_tap_at_every_split(Dialect::OpenAi, OPENAI_STREAM, Some(usage(176, 42, 1024, 0)));
}

#[test]
fn only_usage_bearing_events_are_parsed() {
    let mut tap = UsageTap::new(Dialect::OpenAi);
    tap.observe(OPENAI_STREAM);
    assert_eq!(tap.parsed_events(), 1, "OpenAI: the final usage chunk only");
    let mut tap = UsageTap::new(Dialect::Anthropic);
    tap.observe(ANTHROPIC_STREAM);
    assert_eq!(tap.parsed_events(), 2, "Anthropic: message_start and message_delta");
}

#[test]
fn openai_stream_with_crlf_line_ends_gives_the_same_usage() {
    let crlf = String::from_utf8_lossy(OPENAI_STREAM).replace('\n', "\r\n");
    assert_tap_at_every_split(Dialect::OpenAi, crlf.as_bytes(), Some(usage(176, 42, 1024, 0)));
    let cr = String::from_utf8_lossy(OPENAI_STREAM).replace('\n', "\r");
    assert_tap_at_every_split(Dialect::OpenAi, cr.as_bytes(), Some(usage(176, 42, 1024, 0)));
}

#[test]
fn openai_stream_without_include_usage_has_none() {
    let stream = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n\
                   data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
                   data: [DONE]\n\n";
    assert_tap_at_every_split(Dialect::OpenAi, stream, None);
}

#[test]
fn openai_usage_chunk_without_the_closing_blank_line_still_counts() {
    // Some OpenAI-compatible servers close the connection right after the last data line.
    let stream = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}";
    assert_tap_at_every_split(Dialect::OpenAi, stream, Some(usage(7, 3, 0, 0)));
}

#[test]
fn openai_running_totals_on_every_chunk_keep_the_last() {
    // vLLM with continuous usage stats: cumulative counts on each chunk.
    let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}\n\n\
                   data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n\
                   data: [DONE]\n\n";
    assert_tap_at_every_split(Dialect::OpenAi, stream, Some(usage(9, 2, 0, 0)));
}

#[test]
fn anthropic_stream_takes_input_from_message_start_and_output_from_message_delta() {
    // message_start: input 12, cache write 2048, cache read 10240, output 1;
    // message_delta: output 57 (cumulative: replaces 1, not added to it). The text delta quoting
    // "usage" with 999 is ignored.
    assert_tap_at_every_split(Dialect::Anthropic, ANTHROPIC_STREAM, Some(usage(12, 57, 10240, 2048)));
}

#[test]
fn anthropic_message_delta_with_input_counts_replaces_the_whole_input_set() {
    // An "Anthropic-compatible" upstream that puts the whole prompt in message_start and the
    // cache-aware split in message_delta (bifrost #6598): the delta's set wins, never a mix.
    let stream = b"event: message_start\n\
        data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12300,\"output_tokens\":1}}}\n\n\
        event: message_delta\n\
        data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":12288,\"output_tokens\":40}}\n\n";
    assert_tap_at_every_split(Dialect::Anthropic, stream, Some(usage(12, 40, 12288, 0)));
}

#[test]
fn anthropic_stream_cut_after_message_start_keeps_the_start_counts() {
    let cut = ANTHROPIC_STREAM
        .windows(b"event: content_block_start".len())
        .position(|w| w == b"event: content_block_start")
        .unwrap();
    assert_tap_at_every_split(Dialect::Anthropic, &ANTHROPIC_STREAM[..cut], Some(usage(12, 1, 10240, 2048)));
}

#[test]
fn anthropic_stream_with_only_pings_or_an_error_has_none() {
    let stream = b"event: ping\ndata: {\"type\": \"ping\"}\n\n\
        event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    assert_tap_at_every_split(Dialect::Anthropic, stream, None);
}

#[test]
fn anthropic_stream_without_event_lines_is_still_read_from_the_type_field() {
    let stream =
        b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
        data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n";
    assert_tap_at_every_split(Dialect::Anthropic, stream, Some(usage(5, 9, 0, 0)));
}

#[test]
fn json_split_over_two_data_lines_is_joined_before_parsing() {
    let stream =
        b": keep-alive\ndata: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n";
    assert_tap_at_every_split(Dialect::OpenAi, stream, Some(usage(4, 2, 0, 0)));
}

#[test]
fn a_leading_byte_order_mark_is_ignored() {
    let mut stream = b"\xEF\xBB\xBF".to_vec();
    stream.extend_from_slice(b"data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n");
    assert_tap_at_every_split(Dialect::OpenAi, &stream, Some(usage(3, 1, 0, 0)));
}

// ---- prices ---------------------------------------------------------------------------------

#[test]
fn builtin_table_parses_and_its_prices_are_sane() {
    let table = PriceTable::from_toml(include_str!("../../config/prices.toml")).unwrap();
    assert_eq!(table, PriceTable::builtin());
    assert!(table.len() >= 30, "only {} models", table.len());
    for name in ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "gpt-4o", "o3"] {
        let p = table.get(name).unwrap();
        assert!(p.cache_read <= p.input, "{name}: cache read dearer than input");
        assert!(p.output >= p.input, "{name}: output cheaper than input");
        assert!(p.cache_write >= p.input, "{name}: cache write cheaper than input");
    }
}

#[test]
fn builtin_prices_match_the_reference_table() {
    let table = PriceTable::builtin();
    let sonnet = table.get("claude-sonnet-4-5").unwrap();
    assert_eq!((sonnet.input, sonnet.output, sonnet.cache_read, sonnet.cache_write), (3.0, 15.0, 0.30, 3.75));
    assert_eq!(
        sonnet.above_200k,
        Some(LongContextPrice { input: 6.0, output: 22.5, cache_read: 0.60, cache_write: 7.50 })
    );
    let gpt = table.get("gpt-4o").unwrap();
    // OpenAI rows omit cache_write: it defaults to the input price (no surcharge).
    assert_eq!((gpt.input, gpt.output, gpt.cache_read, gpt.cache_write, gpt.above_200k), (2.5, 10.0, 1.25, 2.5, None));
}

#[test]
fn toml_accepts_table_headers_and_defaults_cache_prices_to_input() {
    let table = PriceTable::from_toml(
        r#"
        [models."my-model"]
        input = 2
        output = 6.5

        [models."cached"]
        input = 1.0
        output = 2.0
        cache_read = 0.1
        "#,
    )
    .unwrap();
    assert_eq!(
        table.get("my-model"),
        Some(&Price { input: 2.0, output: 6.5, cache_read: 2.0, cache_write: 2.0, above_200k: None })
    );
    let cached = table.get("cached").unwrap();
    assert_eq!((cached.cache_read, cached.cache_write), (0.1, 1.0));
}

#[test]
fn toml_reports_every_bad_price_at_once() {
    let err = PriceTable::from_toml(
        r#"
        [models.a]
        input = -1.0
        output = 2.0
        [models.b]
        input = 1.0
        output = nan
        "#,
    )
    .unwrap_err();
    assert!(err.contains("models.\"a\": input = -1"), "{err}");
    assert!(err.contains("models.\"b\": output = NaN"), "{err}");
}

#[test]
fn toml_rejects_unknown_keys_and_missing_prices() {
    let typo = PriceTable::from_toml("[models.a]\ninput = 1.0\noutput = 2.0\ncache_reads = 0.1\n");
    assert!(typo.unwrap_err().contains("cache_reads"));
    let missing = PriceTable::from_toml("[models.a]\ninput = 1.0\n");
    assert!(missing.unwrap_err().contains("output"));
    let stray = PriceTable::from_toml("[model.a]\ninput = 1.0\noutput = 2.0\n");
    assert!(stray.is_err());
}

#[test]
fn litellm_prices_are_converted_from_per_token_to_per_million() {
    let table = PriceTable::from_litellm_json(LITELLM).unwrap();
    let builtin = PriceTable::builtin();
    // 3e-06 USD/token → 3.00 USD/M, the same numbers as our table, long-context tier included.
    for name in ["claude-sonnet-4-5", "gpt-4o", "gpt-4o-2024-05-13"] {
        assert_eq!(table.get(name), builtin.get(name), "{name}");
    }
    let haiku = table.get("claude-haiku-4-5-20251001").unwrap();
    assert_eq!((haiku.input, haiku.output, haiku.cache_read, haiku.cache_write), (1.0, 5.0, 0.1, 1.25));
    let embedding = table.get("text-embedding-3-small").unwrap();
    assert_eq!((embedding.input, embedding.output), (0.02, 0.0));
    let bedrock = table.get("bedrock/us-east-1/anthropic.claude-3-haiku-20240307-v1:0").unwrap();
    assert_eq!((bedrock.input, bedrock.output), (0.25, 1.25));
}

#[test]
fn litellm_entries_without_token_prices_or_with_bad_ones_are_skipped() {
    let table = PriceTable::from_litellm_json(LITELLM).unwrap();
    for skipped in
        ["sample_spec", "dall-e-3", "whisper-1", "broken-entry-with-a-negative-price", "entry-with-a-string-price"]
    {
        assert_eq!(table.get(skipped), None, "{skipped}");
    }
    // 11 keys: 5 skipped, 6 kept.
    assert_eq!(table.len(), 6);
}

#[test]
fn litellm_file_that_is_not_an_object_is_an_error() {
    assert!(PriceTable::from_litellm_json(b"[1, 2]").is_err());
    assert!(PriceTable::from_litellm_json(b"{").is_err());
    assert_eq!(PriceTable::from_litellm_json(b"{}"), Ok(PriceTable::new()));
}

#[test]
fn merge_lets_the_later_table_win() {
    let mut table = PriceTable::from_litellm_json(LITELLM).unwrap();
    let overrides = PriceTable::from_toml("[models.\"gpt-4o\"]\ninput = 1.0\noutput = 4.0\n").unwrap();
    table.merge(overrides);
    assert_eq!(table.get("gpt-4o").map(|p| (p.input, p.output)), Some((1.0, 4.0)));
    assert_eq!(table.get("claude-sonnet-4-5").map(|p| p.input), Some(3.0));
}

#[test]
fn from_specs_takes_entries_deserialized_elsewhere() {
    let mut specs = std::collections::BTreeMap::new();
    specs.insert(
        "local-llama".to_string(),
        PriceSpec { input: 0.0, output: 0.0, cache_read: None, cache_write: None, above_200k: None },
    );
    let table = PriceTable::from_specs(&specs).unwrap();
    assert_eq!(table.lookup("local-llama").map(|p| p.output), Some(0.0));
}

// ---- lookup ---------------------------------------------------------------------------------

#[test]
fn lookup_prefers_the_exact_name_then_strips_prefix_and_date() {
    let t = PriceTable::builtin();
    let input = |m: &str| t.lookup(m).map(|p| p.input);
    assert_eq!(input("claude-sonnet-4-5-20250929"), Some(3.0));
    assert_eq!(input("anthropic/claude-sonnet-4-5"), Some(3.0));
    assert_eq!(input("anthropic/claude-haiku-4-5-20991231"), Some(1.0));
    assert_eq!(input("claude-sonnet-4-5@20250929"), Some(3.0));
    assert_eq!(input("gpt-4.1-mini-2025-04-14"), Some(0.4));
    assert_eq!(input("openai/gpt-4o"), Some(2.5));
    // The exact dated snapshot beats the stripped alias: this one costs double.
    assert_eq!(input("gpt-4o-2024-05-13"), Some(5.0));
}

#[test]
fn unknown_models_have_no_price() {
    let t = PriceTable::builtin();
    for m in ["llama-3.1-70b-instruct", "bedrock/claude-sonnet-4-5", "CLAUDE-SONNET-4-5", "claude-sonnet-4-5-v2", ""] {
        assert_eq!(t.lookup(m), None, "{m}");
    }
}

#[test]
fn lookup_first_tries_every_exact_name_before_any_normalised_one() {
    let mut t = PriceTable::new();
    let p = |input| Price { input, output: 1.0, cache_read: input, cache_write: input, above_200k: None };
    t.insert("alias", p(1.0));
    t.insert("served-model", p(2.0));
    // Response model "alias-20250101" only matches once normalised; the request model is exact.
    assert_eq!(t.lookup_first(&["alias-20250101", "served-model"]).map(|p| p.input), Some(2.0));
    assert_eq!(t.lookup_first(&["alias-20250101", "unknown"]).map(|p| p.input), Some(1.0));
    assert_eq!(t.lookup_first(&[]), None);
}

// ---- cost -----------------------------------------------------------------------------------

#[test]
fn anthropic_cost_prices_each_kind_of_input_separately() {
    let price = PriceTable::builtin().lookup("claude-sonnet-4-5-20250929").copied().unwrap();
    let u = Usage::from_anthropic_response(ANTHROPIC_RESPONSE).unwrap();
    // 21·3.00 + 3400·0.30 + 1200·3.75 + 393·15.00 = 63 + 1020 + 4500 + 5895 = 11478 → $0.011478
    assert_usd(cost(&price, &u), 0.011478);
}

#[test]
fn openai_cost_charges_cached_tokens_at_the_cached_rate() {
    let price = PriceTable::builtin().lookup("gpt-4o-2024-08-06").copied().unwrap();
    let u = Usage::from_openai_response(OPENAI_RESPONSE).unwrap();
    // (2006 − 1920)·2.50 + 1920·1.25 + 300·10.00 = 215 + 2400 + 3000 = 5615 → $0.005615
    assert_usd(cost(&price, &u), 0.005615);
}

#[test]
fn streamed_usage_costs_the_same_as_hand_arithmetic() {
    let table = PriceTable::builtin();
    let mut tap = UsageTap::new(Dialect::OpenAi);
    tap.observe(OPENAI_STREAM);
    let u = tap.usage().unwrap();
    // gpt-4o-mini: 176·0.15 + 1024·0.075 + 42·0.60 = 26.4 + 76.8 + 25.2 = 128.4 → $0.0001284
    assert_usd(cost(table.lookup("gpt-4o-mini-2024-07-18").unwrap(), &u), 0.0001284);

    let mut tap = UsageTap::new(Dialect::Anthropic);
    tap.observe(ANTHROPIC_STREAM);
    let u = tap.usage().unwrap();
    // sonnet 4.5: 12·3 + 10240·0.30 + 2048·3.75 + 57·15 = 36 + 3072 + 7680 + 855 = 11643
    // → $0.011643
    assert_usd(cost(table.lookup("claude-sonnet-4-5").unwrap(), &u), 0.011643);
}

#[test]
fn a_prompt_over_200k_prices_the_whole_request_at_the_long_context_rates() {
    let price = PriceTable::builtin().get("claude-sonnet-4-5").copied().unwrap();
    // prompt 150000 + 60000 = 210000 > 200000:
    // 150000·6.00 + 60000·0.60 + 1000·22.50 = 900000 + 36000 + 22500 = 958500 → $0.9585
    assert_usd(cost(&price, &usage(150_000, 1_000, 60_000, 0)), 0.9585);
    // Exactly 200000 is not over: 140000·3 + 60000·0.30 + 1000·15 = 420000 + 18000 + 15000
    // = 453000 → $0.453
    assert_usd(cost(&price, &usage(140_000, 1_000, 60_000, 0)), 0.453);
    // A model without the tier keeps its rates: opus 4.1, 250000·15 = 3750000 → $3.75
    let opus = PriceTable::builtin().get("claude-opus-4-1").copied().unwrap();
    assert_usd(cost(&opus, &usage(250_000, 0, 0, 0)), 3.75);
}

#[test]
fn zero_usage_costs_nothing() {
    let price = PriceTable::builtin().get("gpt-4o").copied().unwrap();
    assert_eq!(cost(&price, &Usage::default()), 0.0);
}

#[test]
fn the_one_pass_openai_body_reader_agrees_with_reading_the_parsed_usage() {
    let bodies: &[&[u8]] = &[
        br#"{"usage":{"prompt_tokens":10,"completion_tokens":2}}"#,
        br#"{"usage":{"prompt_tokens":10,"prompt_tokens":7,"completion_tokens":2}}"#,
        br#"{"usage":{"prompt_tokens":1.5,"completion_tokens":"3","extra":{"a":[1,{"b":null}]}}}"#,
        br#"{"usage":{"prompt_tokens":-4,"prompt_tokens_details":null}}"#,
        br#"{"usage":{"prompt_tokens":9,"prompt_tokens_details":7}}"#,
        br#"{"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":4},"prompt_tokens_details":{"cache_write_tokens":2}}}"#,
        br#"{"usage":{"prompt\u005ftokens":5}}"#,
        br#"{"usage":{"prompt_tokens":18446744073709551616,"completion_tokens":18446744073709551615}}"#,
        br#"{"usage":{"prompt_tokens":1e2,"completion_tokens":"\ud800"}}"#,
        br#"{"usage":{}}"#,
        br#"{"usage":[1,2]}"#,
        br#"{"usage":5}"#,
        br#"{"usage":"x"}"#,
        br#"{"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":1}"}}],"usage": {"prompt_tokens":3}}"#,
        br#"{"usage":{"prompt_tokens":3}} trailing"#,
        br#"{"usage":{"prompt_tokens":3"#,
    ];
    for body in bodies {
        let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
        let expected = parsed.and_then(|v| OpenAiUsage::from_value(v.get("usage")).map(Usage::from));
        assert_eq!(Usage::from_openai_response(body), expected, "{}", String::from_utf8_lossy(body));
    }
}

mod lenient_reading {
    use super::*;
    use crate::dialect::anthropic::AnthropicUsage;
    use crate::dialect::openai::OpenAiUsage;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// A count, or something of the wrong type in its place.
    fn count() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => any::<u32>().prop_map(Value::from),
            1 => Just(Value::Null),
            1 => Just(json!(-3)),
            1 => Just(json!(2.5)),
            1 => Just(json!("7")),
            1 => Just(json!([1])),
            1 => Just(json!({"n": 1})),
        ]
    }

    /// A `usage` object with each member present or not.
    fn object(keys: &'static [&'static str], extra: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
        (prop::collection::vec(count(), keys.len()), any::<u8>(), extra).prop_map(move |(counts, present, extra)| {
            let mut m = serde_json::Map::new();
            for (i, (k, v)) in keys.iter().zip(counts).enumerate() {
                if present & (1 << i) != 0 {
                    m.insert((*k).to_owned(), v);
                }
            }
            m.insert("other".to_owned(), extra);
            Value::Object(m)
        })
    }

    proptest! {
        /// A reply's usage read straight from its text is what reading the parsed `usage` gives,
        /// whatever the members' types.
        #[test]
        fn openai_usage_agrees_with_from_value(
            details in prop_oneof![object(&["cached_tokens", "cache_write_tokens"], count()), count()],
            usage in object(&["prompt_tokens", "completion_tokens"], count()),
        ) {
            let mut usage = usage;
            usage["prompt_tokens_details"] = details;
            let body = json!({"id": "x", "choices": [], "usage": usage});
            let want = OpenAiUsage::from_value(body.get("usage")).map(Usage::from);
            prop_assert_eq!(Usage::from_openai_response(body.to_string().as_bytes()), want);
        }

        #[test]
        fn anthropic_usage_agrees_with_from_value(
            usage in object(&["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"], count()),
        ) {
            let body = json!({"id": "x", "content": [], "usage": usage});
            let want = Usage::from(AnthropicUsage::from_value(&body["usage"]));
            prop_assert_eq!(Usage::from_anthropic_response(body.to_string().as_bytes()), Some(want));
        }
    }
}
