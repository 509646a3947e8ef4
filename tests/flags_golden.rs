//! PostHog's published consistency vectors (see `tests/vectors/README.md`) must all pass.
#![expect(clippy::panic, reason = "a golden-vector test fails loudly when its data file is unreadable")]

use serde_json::{Map, Value};
use switchyard::flags::{CompiledFlags, EvalInput, FlagDefinitions, FlagValue};

fn load(name: &str) -> (CompiledFlags, Vec<Value>, String) {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let defs = FlagDefinitions::from_value(v["definitions"].clone()).unwrap_or_else(|e| panic!("{e}"));
    let key = defs.flags[0].key.clone();
    let expected = v["expected"].as_array().cloned().unwrap_or_default();
    (CompiledFlags::compile(&defs), expected, key)
}

fn check(name: &str) -> usize {
    let (flags, expected, key) = load(name);
    assert_eq!(expected.len(), 1000, "{name} must hold 1000 expected values");
    let empty = Map::new();
    let now = chrono::Utc::now();
    let mut mismatches = Vec::new();
    for (i, want) in expected.iter().enumerate() {
        let id = format!("distinct_id_{i}");
        let input = EvalInput {
            distinct_id: &id,
            device_id: None,
            person_properties: &empty,
            groups: &empty,
            group_properties: &empty,
            now,
        };
        let got = flags.evaluate(&key, &input).value.map(|v| v.to_json());
        if got.as_ref() != Some(want) {
            mismatches.push((i, got, want.clone()));
        }
    }
    assert!(mismatches.is_empty(), "{name}: {} mismatches, first: {:?}", mismatches.len(), mismatches.first());
    expected.len()
}

#[test]
fn simple_flag_45_percent_matches_posthog_for_1000_ids() {
    assert_eq!(check("simple_flag_consistency.json"), 1000);
}

#[test]
fn multivariate_flag_55_percent_matches_posthog_for_1000_ids() {
    assert_eq!(check("multivariate_flag_consistency.json"), 1000);
}

#[test]
fn vector_files_have_the_published_distribution() {
    let (_, simple, _) = load("simple_flag_consistency.json");
    assert_eq!(simple.iter().filter(|v| **v == Value::Bool(true)).count(), 446);
    let (_, multi, _) = load("multivariate_flag_consistency.json");
    let count = |want: Value| multi.iter().filter(|v| **v == want).count();
    assert_eq!(count(Value::Bool(false)), 444);
    assert_eq!(count(Value::from("first-variant")), 290);
    assert_eq!(count(Value::from("second-variant")), 110);
    assert_eq!(count(Value::from("third-variant")), 111);
    assert_eq!(count(Value::from("fourth-variant")), 24);
    assert_eq!(count(Value::from("fifth-variant")), 21);
    let _ = FlagValue::Bool(true);
}
