//! Local-evaluation cases. Those named after a posthog-python `TestLocalEvaluation` test keep its
//! definitions and expected values (`None` = python falls back to the server); the others pin
//! rules of the spec with 0%/100% rollouts so that no hash value is assumed.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use switchyard::flags::{CompiledFlags, EvalInput, FlagDefinitions};

struct Case<'a> {
    distinct_id: &'a str,
    device_id: Option<&'a str>,
    person: Value,
    groups: Value,
    group_props: Value,
}

fn case(distinct_id: &str) -> Case<'_> {
    Case { distinct_id, device_id: None, person: json!({}), groups: json!({}), group_props: json!({}) }
}

impl Case<'_> {
    fn person(mut self, p: Value) -> Self {
        self.person = p;
        self
    }
    fn groups(mut self, g: Value, gp: Value) -> Self {
        self.groups = g;
        self.group_props = gp;
        self
    }
    fn device(mut self, d: &'static str) -> Self {
        self.device_id = Some(d);
        self
    }
}

fn compile(defs: Value) -> CompiledFlags {
    CompiledFlags::compile(&FlagDefinitions::from_value(defs).unwrap_or_default())
}

fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The value as JSON (`None` = inconclusive), the payload and the reason.
fn eval(flags: &CompiledFlags, key: &str, c: &Case<'_>) -> (Option<Value>, Option<Arc<Value>>, String) {
    let (p, g, gp) = (obj(&c.person), obj(&c.groups), obj(&c.group_props));
    let now: DateTime<Utc> =
        DateTime::parse_from_rfc3339("2022-05-01T00:00:00Z").map(|d| d.with_timezone(&Utc)).unwrap_or_default();
    let input = EvalInput {
        distinct_id: c.distinct_id,
        device_id: c.device_id,
        person_properties: &p,
        groups: &g,
        group_properties: &gp,
        now,
    };
    let e = flags.evaluate(key, &input);
    (e.value.map(|v| v.to_json()), e.payload, e.reason.into_owned())
}

fn value(flags: &CompiledFlags, key: &str, c: &Case<'_>) -> Option<Value> {
    eval(flags, key, c).0
}

fn flag(key: &str, filters: Value) -> Value {
    json!({"id": 1, "key": key, "active": true, "filters": filters})
}

#[test]
fn test_flag_person_properties() {
    let f = compile(json!({"flags": [flag("person-flag", json!({"groups": [{"properties": [
        {"key": "region", "operator": "exact", "value": ["USA"], "type": "person"}], "rollout_percentage": 100}]}))]}));
    assert_eq!(value(&f, "person-flag", &case("some-distinct-id").person(json!({"region": "USA"}))), Some(json!(true)));
    assert_eq!(
        value(&f, "person-flag", &case("some-distinct-2").person(json!({"region": "Canada"}))),
        Some(json!(false))
    );
}

fn group_flag_defs(mapping: Value) -> Value {
    json!({"flags": [flag("group-flag", json!({"aggregation_group_type_index": 0, "groups": [{"properties": [
        {"group_type_index": 0, "key": "name", "operator": "exact", "value": ["Project Name 1"], "type": "group"}],
        "rollout_percentage": 35}]}))], "group_type_mapping": mapping})
}

#[test]
fn test_flag_group_properties() {
    let f = compile(group_flag_defs(json!({"0": "company", "1": "project"})));
    let gp1 = json!({"company": {"name": "Project Name 1"}});
    let gp2 = json!({"company": {"name": "Project Name 2"}});
    assert_eq!(value(&f, "group-flag", &case("some-distinct-id").groups(json!({}), gp1.clone())), Some(json!(false)));
    assert_eq!(value(&f, "group-flag", &case("some-distinct-2").groups(json!({}), gp2.clone())), Some(json!(false)));
    let ok = case("some-distinct-id").groups(json!({"company": "amazon_without_rollout"}), gp1.clone());
    assert_eq!(value(&f, "group-flag", &ok), Some(json!(true)));
    let out = case("some-distinct-id").groups(json!({"company": "amazon"}), gp1.clone());
    assert_eq!(value(&f, "group-flag", &out), Some(json!(false)));
    let mismatch = case("some-distinct-2").groups(json!({"company": "amazon_without_rollout"}), gp2);
    assert_eq!(value(&f, "group-flag", &mismatch), Some(json!(false)));
    let no_mapping = compile(group_flag_defs(json!({})));
    assert_eq!(value(&no_mapping, "group-flag", &out), None);
}

#[test]
fn test_flag_with_complex_definition() {
    let f = compile(json!({"flags": [flag("complex-flag", json!({"groups": [
        {"properties": [{"key": "region", "operator": "exact", "value": ["USA"], "type": "person"},
                        {"key": "name", "operator": "exact", "value": ["Aloha"], "type": "person"}], "rollout_percentage": 100},
        {"properties": [{"key": "email", "operator": "exact", "value": ["a@b.com", "b@c.com"], "type": "person"}], "rollout_percentage": 30},
        {"properties": [{"key": "doesnt_matter", "operator": "exact", "value": ["1", "2"], "type": "person"}], "rollout_percentage": 0}
    ]}))]}));
    let k = "complex-flag";
    assert_eq!(
        value(&f, k, &case("some-distinct-id").person(json!({"region": "USA", "name": "Aloha"}))),
        Some(json!(true))
    );
    let within = case("some-distinct-id_within_rollout?").person(json!({"region": "USA", "email": "a@b.com"}));
    assert_eq!(value(&f, k, &within), Some(json!(true)));
    let outside = case("some-distinct-id_outside_rollout?").person(json!({"region": "USA", "email": "a@b.com"}));
    assert_eq!(value(&f, k, &outside), None);
    assert_eq!(value(&f, k, &case("some-distinct-id").person(json!({"doesnt_matter": "1"}))), None);
    assert_eq!(value(&f, k, &case("some-distinct-id").person(json!({"region": "USA"}))), None);
    let all = case("some-distinct-id_outside_rollout?")
        .person(json!({"region": "USA", "email": "a@b.com", "name": "X", "doesnt_matter": "1"}));
    assert_eq!(value(&f, k, &all), Some(json!(false)));
}

#[test]
fn test_feature_flags_fallback_to_decide() {
    let f = compile(json!({"flags": [
        flag("beta-feature", json!({"groups": [{"properties": [{"key": "id", "value": 98, "operator": null, "type": "cohort"}], "rollout_percentage": 100}]})),
        flag("beta-feature2", json!({"groups": [{"properties": [{"key": "region", "operator": "exact", "value": ["USA"], "type": "person"}], "rollout_percentage": 100}]}))
    ]}));
    let (v, _, reason) = eval(&f, "beta-feature", &case("some-distinct-id"));
    assert_eq!(v, None);
    assert!(reason.contains("requires server"), "{reason}");
    assert_eq!(value(&f, "beta-feature2", &case("some-distinct-id")), None);
}

#[test]
fn test_feature_flag_never_returns_undefined_during_regular_evaluation() {
    let f = compile(
        json!({"flags": [flag("beta-feature", json!({"groups": [{"properties": [], "rollout_percentage": 0}]}))]}),
    );
    assert_eq!(value(&f, "beta-feature", &case("some-distinct-id")), Some(json!(false)));
}

#[test]
fn inactive_flags_are_false_but_experience_continuity_is_inconclusive_even_when_inactive() {
    let f = compile(json!({"flags": [
        {"key": "off", "active": false, "filters": {"groups": [{"rollout_percentage": 100}]}},
        {"key": "continuity", "active": false, "ensure_experience_continuity": true, "filters": {"groups": [{"rollout_percentage": 100}]}}
    ]}));
    assert_eq!(eval(&f, "off", &case("u")).0, Some(json!(false)));
    assert_eq!(eval(&f, "off", &case("u")).2, "flag_inactive");
    assert_eq!(value(&f, "continuity", &case("u")), None);
}

#[test]
fn unknown_flag_keys_are_inconclusive_with_a_reason() {
    let f = compile(json!({"flags": []}));
    assert_eq!(eval(&f, "nope", &case("u")), (None, None, "flag not found".to_owned()));
}

#[test]
fn conditions_are_evaluated_in_order_and_a_variant_override_applies_to_its_condition() {
    let mv =
        json!({"variants": [{"key": "first", "rollout_percentage": 0}, {"key": "second", "rollout_percentage": 100}]});
    let f = compile(json!({"flags": [flag("ordered", json!({"multivariate": mv, "groups": [
        {"properties": [{"key": "email", "value": "a@b.com"}], "rollout_percentage": 100},
        {"properties": [], "rollout_percentage": 100, "variant": "first"}
    ]}))]}));
    assert_eq!(value(&f, "ordered", &case("u").person(json!({"email": "a@b.com"}))), Some(json!("second")));
    assert_eq!(value(&f, "ordered", &case("u").person(json!({"email": "x@b.com"}))), Some(json!("first")));
}

#[test]
fn an_override_naming_an_unknown_variant_falls_back_to_the_hashed_variant() {
    let mv = json!({"variants": [{"key": "only", "rollout_percentage": 100}]});
    let f = compile(
        json!({"flags": [flag("f", json!({"multivariate": mv, "groups": [{"rollout_percentage": 100, "variant": "ghost"}]}))]}),
    );
    assert_eq!(value(&f, "f", &case("u")), Some(json!("only")));
}

#[test]
fn a_matched_condition_wins_over_an_earlier_inconclusive_one() {
    let f = compile(json!({"flags": [flag("f", json!({"groups": [
        {"properties": [{"key": "missing", "value": "x"}], "rollout_percentage": 100},
        {"properties": [], "rollout_percentage": 100}
    ]}))]}));
    assert_eq!(value(&f, "f", &case("u")), Some(json!(true)));
}

#[test]
fn early_exit_stops_at_the_first_condition_out_of_rollout() {
    let groups = json!([{"properties": [], "rollout_percentage": 0}, {"properties": [], "rollout_percentage": 100}]);
    let f = compile(json!({"flags": [
        flag("exit", json!({"early_exit": true, "groups": groups})),
        flag("no-exit", json!({"groups": groups}))
    ]}));
    assert_eq!(eval(&f, "exit", &case("u")).0, Some(json!(false)));
    assert_eq!(eval(&f, "exit", &case("u")).2, "out_of_rollout_bound");
    assert_eq!(value(&f, "no-exit", &case("u")), Some(json!(true)));
}

#[test]
fn payloads_are_looked_up_by_true_or_the_variant_key_and_json_strings_are_decoded() {
    let f = compile(json!({"flags": [
        flag("bool", json!({"groups": [{"rollout_percentage": 100}], "payloads": {"true": "{\"test\": 1}"}})),
        flag("mv", json!({"groups": [{"rollout_percentage": 100, "variant": "b"}],
            "multivariate": {"variants": [{"key": "a", "rollout_percentage": 50}, {"key": "b", "rollout_percentage": 50}]},
            "payloads": {"a": 1, "b": [1, 2]}}))
    ]}));
    assert_eq!(eval(&f, "bool", &case("u")).1.as_deref(), Some(&json!({"test": 1})));
    assert_eq!(eval(&f, "mv", &case("u")).1.as_deref(), Some(&json!([1, 2])));
}

#[test]
fn device_id_bucketing_needs_a_device_id() {
    let f = compile(json!({"flags": [{"key": "d", "active": true, "bucketing_identifier": "device_id",
        "filters": {"groups": [{"rollout_percentage": 100}]}}]}));
    assert_eq!(value(&f, "d", &case("u")), None);
    assert_eq!(value(&f, "d", &case("u").device("dev-1")), Some(json!(true)));
}

#[test]
fn mixed_targeting_skips_a_condition_whose_group_was_not_passed() {
    let f = compile(json!({"group_type_mapping": {"0": "company"}, "flags": [flag("mixed", json!({"groups": [
        {"aggregation_group_type_index": 0, "properties": [{"key": "plan", "value": "enterprise", "type": "group"}], "rollout_percentage": 100},
        {"properties": [{"key": "email", "value": "a@b.com"}], "rollout_percentage": 100}
    ]}))]}));
    assert_eq!(value(&f, "mixed", &case("u").person(json!({"email": "x@y.z"}))), Some(json!(false)));
    let with_group = case("u").groups(json!({"company": "acme"}), json!({"company": {"plan": "enterprise"}}));
    assert_eq!(value(&f, "mixed", &with_group), Some(json!(true)));
}

#[test]
fn distinct_id_and_group_key_are_injected_as_properties() {
    let f = compile(json!({"group_type_mapping": {"0": "company"}, "flags": [
        flag("by-id", json!({"groups": [{"properties": [{"key": "distinct_id", "value": "u-1"}], "rollout_percentage": 100}]})),
        flag("by-group", json!({"aggregation_group_type_index": 0,
            "groups": [{"properties": [{"key": "$group_key", "value": "acme"}], "rollout_percentage": 100}]}))
    ]}));
    assert_eq!(value(&f, "by-id", &case("u-1")), Some(json!(true)));
    assert_eq!(value(&f, "by-group", &case("u").groups(json!({"company": "acme"}), json!({}))), Some(json!(true)));
}

fn dependency_defs() -> Value {
    json!({"flags": [
        flag("base", json!({"groups": [{"properties": [{"key": "email", "value": "a@b.com"}], "rollout_percentage": 100}]})),
        flag("dependent", json!({"groups": [{"properties": [
            {"key": "base", "type": "flag", "operator": "flag_evaluates_to", "value": true, "dependency_chain": ["base"]}],
            "rollout_percentage": 100}]})),
        flag("cyclic", json!({"groups": [{"properties": [
            {"key": "cyclic", "type": "flag", "operator": "flag_evaluates_to", "value": true, "dependency_chain": []}],
            "rollout_percentage": 100}]})),
        flag("self-chain", json!({"groups": [{"properties": [
            {"key": "self-chain", "type": "flag", "operator": "flag_evaluates_to", "value": true, "dependency_chain": ["self-chain"]}],
            "rollout_percentage": 100}]}))
    ]})
}

#[test]
fn flag_dependencies_evaluate_their_chain_and_compare_the_value() {
    let f = compile(dependency_defs());
    assert_eq!(value(&f, "dependent", &case("u").person(json!({"email": "a@b.com"}))), Some(json!(true)));
    assert_eq!(value(&f, "dependent", &case("u").person(json!({"email": "x@b.com"}))), Some(json!(false)));
    assert_eq!(value(&f, "dependent", &case("u")), None);
    assert_eq!(value(&f, "cyclic", &case("u")), None);
    let (v, _, reason) = eval(&f, "self-chain", &case("u"));
    assert_eq!(v, None, "{reason}");
}

fn cohort_defs() -> Value {
    json!({"cohorts": {
        "1": {"type": "OR", "values": [
            {"type": "AND", "values": [{"key": "country", "value": "UK", "type": "person"},
                                       {"key": "age", "value": 30, "operator": "gt", "type": "person", "negation": true}]},
            {"type": "OR", "values": [{"key": "other", "value": "thing", "type": "person"}]}]},
        "2": {"type": "AND", "values": [{"key": "id", "value": 1, "type": "cohort"},
                                        {"key": "email", "value": "@posthog.com", "operator": "icontains", "type": "person"}]},
        "3": "not a group"
    }, "flags": [
        flag("c1", json!({"groups": [{"properties": [{"key": "id", "value": 1, "type": "cohort"}], "rollout_percentage": 100}]})),
        flag("c2", json!({"groups": [{"properties": [{"key": "id", "value": 2, "type": "cohort"}], "rollout_percentage": 100}]})),
        flag("not-c1", json!({"groups": [{"properties": [{"key": "id", "value": 1, "type": "cohort", "operator": "not_in"}], "rollout_percentage": 100}]})),
        flag("c3", json!({"groups": [{"properties": [{"key": "id", "value": 3, "type": "cohort"}], "rollout_percentage": 100}]}))
    ]})
}

#[test]
fn cohorts_match_nested_groups_with_negation() {
    let f = compile(cohort_defs());
    let uk_young = case("u").person(json!({"country": "UK", "age": 20, "other": "x", "email": "a@posthog.com"}));
    assert_eq!(value(&f, "c1", &uk_young), Some(json!(true)));
    assert_eq!(value(&f, "c2", &uk_young), Some(json!(true)));
    assert_eq!(value(&f, "not-c1", &uk_young), Some(json!(false)));
    let uk_old = case("u").person(json!({"country": "UK", "age": 40, "other": "x"}));
    assert_eq!(value(&f, "c1", &uk_old), Some(json!(false)));
    let other = case("u").person(json!({"country": "US", "age": 40, "other": "thing"}));
    assert_eq!(value(&f, "c1", &other), Some(json!(true)));
    let missing = case("u").person(json!({"country": "US"}));
    assert_eq!(value(&f, "c1", &missing), None);
    assert_eq!(value(&f, "c3", &uk_young), None);
}
