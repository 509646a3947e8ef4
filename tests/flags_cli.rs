//! `switchyard flags eval` through `switchyard::flags::cli::run` with in-memory stdin/stdout.

use serde_json::{json, Value};
use switchyard::flags::cli::{run, EvalArgs};

fn defs_file() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-flags-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_default();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("flags-{n}.json"));
    let defs = json!({"flags": [
        {"key": "simple-flag", "active": true, "filters": {"groups": [{"properties": [], "rollout_percentage": 45}],
            "payloads": {"true": "{\"model\": \"x\"}"}}},
        {"key": "needs-region", "active": true, "filters": {"groups": [
            {"properties": [{"key": "region", "value": "USA"}], "rollout_percentage": 100}]}}
    ]});
    std::fs::write(&path, defs.to_string()).unwrap_or_default();
    path
}

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out).lines().map(|l| serde_json::from_str(l).unwrap_or(Value::Null)).collect()
}

#[test]
fn a_single_case_prints_one_json_object() {
    let args = EvalArgs {
        flags: defs_file(),
        flag: Some("simple-flag".into()),
        distinct_id: Some("distinct_id_1".into()),
        now: Some("2024-01-01T00:00:00Z".into()),
        ..EvalArgs::default()
    };
    let mut out = Vec::new();
    assert_eq!(run(&args, &b""[..], &mut out), Ok(()));
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("{\"flag\":\"simple-flag\",\"distinct_id\":\"distinct_id_1\",\"value\":true,"), "{text}");
    assert_eq!(
        lines(&out),
        vec![json!({"flag": "simple-flag", "distinct_id": "distinct_id_1", "value": true,
        "payload": {"model": "x"}, "reason": "condition_match"})]
    );
}

#[test]
fn a_batch_gives_one_line_per_input_line_in_order() {
    let args = EvalArgs { flags: defs_file(), ..EvalArgs::default() };
    let input = "{\"flag\":\"simple-flag\",\"distinct_id\":\"distinct_id_0\"}\n\
                 {\"flag\":\"simple-flag\",\"distinct_id\":\"distinct_id_1\"}\n\
                 {\"flag\":\"needs-region\",\"distinct_id\":\"u\",\"person_properties\":{\"region\":\"usa\"}}\n";
    let mut out = Vec::new();
    assert_eq!(run(&args, input.as_bytes(), &mut out), Ok(()));
    let got: Vec<Value> = lines(&out).into_iter().map(|l| l["value"].clone()).collect();
    assert_eq!(got, vec![json!(false), json!(true), json!(true)]);
}

#[test]
fn a_malformed_line_gives_an_error_object_and_the_run_goes_on() {
    let args = EvalArgs { flags: defs_file(), ..EvalArgs::default() };
    let input = "not json\n{\"distinct_id\":\"u\"}\n{\"flag\":\"simple-flag\",\"distinct_id\":\"distinct_id_1\"}\n";
    let mut out = Vec::new();
    assert_eq!(run(&args, input.as_bytes(), &mut out), Ok(()));
    let l = lines(&out);
    assert_eq!(l.len(), 3);
    assert_eq!(l[0]["line"], json!(1));
    assert!(l[0]["error"].is_string());
    assert_eq!(l[1]["line"], json!(2));
    assert_eq!(l[2]["value"], json!(true));
}

#[test]
fn an_inconclusive_case_gives_null_with_a_reason() {
    let args = EvalArgs { flags: defs_file(), ..EvalArgs::default() };
    let input = "{\"flag\":\"needs-region\",\"distinct_id\":\"u\"}\n{\"flag\":\"missing\",\"distinct_id\":\"u\"}\n";
    let mut out = Vec::new();
    assert_eq!(run(&args, input.as_bytes(), &mut out), Ok(()));
    let l = lines(&out);
    assert_eq!(l[0]["value"], Value::Null);
    assert!(l[0]["reason"].as_str().is_some_and(|r| r.starts_with("inconclusive")), "{}", l[0]);
    assert_eq!(l[1]["value"], Value::Null);
    assert_eq!(l[1]["reason"], json!("flag not found"));
}

#[test]
fn a_missing_definitions_file_is_a_fatal_error() {
    let args = EvalArgs { flags: "/nonexistent/flags.json".into(), ..EvalArgs::default() };
    assert!(run(&args, &b""[..], Vec::new()).is_err());
}
