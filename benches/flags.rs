//! Per-request cost of `CompiledFlags::evaluate` for a multivariate flag with two property conditions.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use switchyard::flags::{CompiledFlags, EvalInput, FlagDefinitions};

fn bench(c: &mut Criterion) {
    let defs = json!({"flags": [{"key": "new-summarization-model", "active": true, "filters": {
        "groups": [{"properties": [
            {"key": "email", "value": "@example.com", "operator": "icontains", "type": "person"},
            {"key": "plan", "value": ["pro", "enterprise"], "operator": "exact", "type": "person"}
        ], "rollout_percentage": 80}],
        "multivariate": {"variants": [
            {"key": "control", "rollout_percentage": 50},
            {"key": "claude-sonnet", "rollout_percentage": 25},
            {"key": "gpt-4o", "rollout_percentage": 25}]},
        "payloads": {"claude-sonnet": "{\"model\": \"claude-sonnet-4-5\"}"}}}]});
    let flags = CompiledFlags::compile(&FlagDefinitions::from_value(defs).unwrap_or_default());
    let person: Map<String, Value> =
        json!({"email": "Someone@Example.com", "plan": "Pro"}).as_object().cloned().unwrap_or_default();
    let empty = Map::new();
    let now = chrono::Utc::now();
    c.bench_function("evaluate multivariate flag with two property conditions", |b| {
        b.iter(|| {
            let input = EvalInput {
                distinct_id: black_box("user-12345"),
                device_id: None,
                person_properties: &person,
                groups: &empty,
                group_properties: &empty,
                now,
            };
            black_box(flags.evaluate(black_box("new-summarization-model"), &input))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
