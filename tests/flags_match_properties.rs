//! Ports of posthog-python `TestMatchProperties` (posthog/test/test_feature_flags.py): each
//! assertion keeps the Python test's value; `None` stands for `InconclusiveMatchError`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use switchyard::flags::properties::{Prop, PropertyMatcher};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc)).unwrap_or_default()
}

/// `match_property({"key": "key", "value": value, "operator": op}, props)` at `now`.
fn m_at(value: Value, op: Option<&str>, props: Value, now: DateTime<Utc>) -> Option<bool> {
    let op = op.map(Value::from);
    let matcher = PropertyMatcher::compile("key", op.as_ref(), &value);
    let map = props.as_object().cloned().unwrap_or_default();
    matcher.matches(|k| map.get(k).map(Prop::Json), now).ok()
}

fn m(value: Value, op: Option<&str>, props: Value) -> Option<bool> {
    m_at(value, op, props, at("2022-05-01T00:00:00Z"))
}

#[test]
fn exact_matches_case_insensitively_and_lists_match_any_item() {
    assert_eq!(m(json!("value"), None, json!({"key": "value"})), Some(true));
    assert_eq!(m(json!("value"), None, json!({"key": "value2"})), Some(false));
    assert_eq!(m(json!("value"), None, json!({"key": ""})), Some(false));
    assert_eq!(m(json!("value"), None, json!({"key": null})), Some(false));
    assert_eq!(m(json!("value"), None, json!({"key2": "value"})), None);
    assert_eq!(m(json!("value"), None, json!({})), None);
    assert_eq!(m(json!("value"), Some("exact"), json!({"key": "value"})), Some(true));
    assert_eq!(m(json!("value"), Some("exact"), json!({"key": "value2"})), Some(false));
    let list = json!(["value1", "value2", "value3"]);
    for v in ["value1", "value2", "value3"] {
        assert_eq!(m(list.clone(), Some("exact"), json!({"key": v})), Some(true));
    }
    assert_eq!(m(list.clone(), Some("exact"), json!({"key": "value4"})), Some(false));
    assert_eq!(m(list, Some("exact"), json!({"key2": "value"})), None);
}

#[test]
fn is_not_negates_exact_and_a_null_property_is_not_any_value() {
    let a = json!("value");
    assert_eq!(m(a.clone(), Some("is_not"), json!({"key": "value2"})), Some(true));
    assert_eq!(m(a.clone(), Some("is_not"), json!({"key": ""})), Some(true));
    assert_eq!(m(a.clone(), Some("is_not"), json!({"key": null})), Some(true));
    let c = json!(["value1", "value2", "value3"]);
    for v in [json!("value4"), json!("value5"), json!("value6"), json!(""), json!(null)] {
        assert_eq!(m(c.clone(), Some("is_not"), json!({"key": v})), Some(true));
    }
    for v in ["value2", "value3", "value1"] {
        assert_eq!(m(c.clone(), Some("is_not"), json!({"key": v})), Some(false));
    }
    assert_eq!(m(a, Some("is_not"), json!({"key2": "value"})), None);
}

#[test]
fn is_set_is_true_for_any_present_non_null_value() {
    let a = json!("is_set");
    assert_eq!(m(a.clone(), Some("is_set"), json!({"key": "value"})), Some(true));
    assert_eq!(m(a.clone(), Some("is_set"), json!({"key": ""})), Some(true));
    assert_eq!(m(a.clone(), Some("is_set"), json!({"key": null})), Some(false));
    assert_eq!(m(a, Some("is_set"), json!({"key2": "value"})), None);
}

#[test]
fn icontains_folds_case_and_stringifies_numbers() {
    let a = json!("valUe");
    for v in ["value", "value2", "value3", "vaLue4", "343tfvalue5"] {
        assert_eq!(m(a.clone(), Some("icontains"), json!({"key": v})), Some(true));
    }
    assert_eq!(m(a.clone(), Some("icontains"), json!({"key": "Alakazam"})), Some(false));
    assert_eq!(m(a, Some("icontains"), json!({"key": 123})), Some(false));
    let b = json!("3");
    assert_eq!(m(b.clone(), Some("icontains"), json!({"key": "3"})), Some(true));
    assert_eq!(m(b.clone(), Some("icontains"), json!({"key": 323})), Some(true));
    assert_eq!(m(b.clone(), Some("icontains"), json!({"key": "val3"})), Some(true));
    assert_eq!(m(b, Some("icontains"), json!({"key": "three"})), Some(false));
}

#[test]
fn regex_searches_unanchored_and_an_invalid_pattern_never_matches() {
    let a = json!(r"\.com$");
    assert_eq!(m(a.clone(), Some("regex"), json!({"key": "value.com"})), Some(true));
    assert_eq!(m(a.clone(), Some("regex"), json!({"key": "value2.com"})), Some(true));
    for v in [json!(".com343tfvalue5"), json!("Alakazam"), json!(123), json!("valuecom"), json!(r"value\com")] {
        assert_eq!(m(a.clone(), Some("regex"), json!({"key": v})), Some(false));
    }
    let b = json!("3");
    assert_eq!(m(b.clone(), Some("regex"), json!({"key": "3"})), Some(true));
    assert_eq!(m(b.clone(), Some("regex"), json!({"key": 323})), Some(true));
    assert_eq!(m(b.clone(), Some("regex"), json!({"key": "val3"})), Some(true));
    assert_eq!(m(b, Some("regex"), json!({"key": "three"})), Some(false));
    let c = json!("?*");
    assert_eq!(m(c.clone(), Some("regex"), json!({"key": "value"})), Some(false));
    assert_eq!(m(c.clone(), Some("not_regex"), json!({"key": "value"})), Some(false));
    let d = json!(4);
    assert_eq!(m(d.clone(), Some("regex"), json!({"key": "4"})), Some(true));
    assert_eq!(m(d.clone(), Some("regex"), json!({"key": 4})), Some(true));
    assert_eq!(m(d, Some("regex"), json!({"key": "value"})), Some(false));
}

#[test]
fn math_operators_compare_strings_as_strings_when_the_flag_value_is_numeric() {
    let a = json!(1);
    assert_eq!(m(a.clone(), Some("gt"), json!({"key": 2})), Some(true));
    assert_eq!(m(a.clone(), Some("gt"), json!({"key": 3})), Some(true));
    assert_eq!(m(a.clone(), Some("gt"), json!({"key": 0})), Some(false));
    assert_eq!(m(a.clone(), Some("gt"), json!({"key": -1})), Some(false));
    assert_eq!(m(a.clone(), Some("gt"), json!({"key": "23"})), Some(true));
    assert_eq!(m(a.clone(), Some("lt"), json!({"key": 0})), Some(true));
    assert_eq!(m(a.clone(), Some("lt"), json!({"key": -1})), Some(true));
    assert_eq!(m(a.clone(), Some("lt"), json!({"key": -3})), Some(true));
    assert_eq!(m(a.clone(), Some("lt"), json!({"key": 1})), Some(false));
    assert_eq!(m(a.clone(), Some("lt"), json!({"key": "1"})), Some(false));
    assert_eq!(m(a.clone(), Some("lt"), json!({"key": "3"})), Some(false));
    assert_eq!(m(a.clone(), Some("gte"), json!({"key": 1})), Some(true));
    assert_eq!(m(a.clone(), Some("gte"), json!({"key": 2})), Some(true));
    assert_eq!(m(a.clone(), Some("gte"), json!({"key": 0})), Some(false));
    assert_eq!(m(a.clone(), Some("gte"), json!({"key": -1})), Some(false));
    assert_eq!(m(a, Some("gte"), json!({"key": "3"})), Some(true));
    let d = json!("43");
    for v in ["41", "42", "43"] {
        assert_eq!(m(d.clone(), Some("lte"), json!({"key": v})), Some(true));
    }
    assert_eq!(m(d.clone(), Some("lte"), json!({"key": "44"})), Some(false));
    assert_eq!(m(d.clone(), Some("lte"), json!({"key": 44})), Some(false));
    assert_eq!(m(d, Some("lte"), json!({"key": 42})), Some(true));
    let e = json!("30");
    assert_eq!(m(e.clone(), Some("lt"), json!({"key": "29"})), Some(true));
    assert_eq!(m(e.clone(), Some("lt"), json!({"key": "100"})), Some(true));
    assert_eq!(m(e, Some("lt"), json!({"key": 100})), Some(false));
    let f = json!("123aloha");
    assert_eq!(m(f.clone(), Some("gt"), json!({"key": "123"})), Some(false));
    assert_eq!(m(f.clone(), Some("gt"), json!({"key": 122})), Some(false));
    assert_eq!(m(f, Some("gt"), json!({"key": 129})), Some(true));
}

#[test]
fn absolute_date_operators_compare_instants_strictly() {
    let a = json!("2022-05-01");
    assert_eq!(m(a.clone(), Some("is_date_before"), json!({"key": "2022-03-01"})), Some(true));
    assert_eq!(m(a.clone(), Some("is_date_before"), json!({"key": "2022-04-30"})), Some(true));
    assert_eq!(m(a.clone(), Some("is_date_before"), json!({"key": "2022-05-30"})), Some(false));
    assert_eq!(m(a.clone(), Some("is_date_before"), json!({"key": 1})), None);
    assert_eq!(m(a.clone(), Some("is_date_before"), json!({"key": "abcdef"})), None);
    assert_eq!(m(a.clone(), Some("is_date_after"), json!({"key": "2022-05-02"})), Some(true));
    assert_eq!(m(a.clone(), Some("is_date_after"), json!({"key": "2022-05-30"})), Some(true));
    assert_eq!(m(a.clone(), Some("is_date_after"), json!({"key": "2022-04-30"})), Some(false));
    assert_eq!(m(a, Some("is_date_after"), json!({"key": "abcdef"})), None);
    assert_eq!(m(json!(1234), Some("is_date_before"), json!({"key": 1})), None);
    let d = json!("2022-04-05 12:34:12 +01:00");
    assert_eq!(m(d.clone(), Some("is_date_before"), json!({"key": "2022-05-30"})), Some(false));
    assert_eq!(m(d.clone(), Some("is_date_before"), json!({"key": "2022-03-30"})), Some(true));
    assert_eq!(m(d.clone(), Some("is_date_before"), json!({"key": "2022-04-05 12:34:11 +01:00"})), Some(true));
    assert_eq!(m(d.clone(), Some("is_date_before"), json!({"key": "2022-04-05 12:34:13 +01:00"})), Some(false));
    assert_eq!(m(d.clone(), Some("is_date_before"), json!({"key": "2022-04-05 11:34:11 +00:00"})), Some(true));
    assert_eq!(m(d, Some("is_date_before"), json!({"key": "2022-04-05 11:34:13 +00:00"})), Some(false));
}

#[test]
fn relative_date_operators_count_back_from_now() {
    let now = at("2022-05-01T00:00:00Z");
    let r = |v: &str, op: &str, p: Value| m_at(json!(v), Some(op), json!({"key": p}), now);
    assert_eq!(r("-6h", "is_date_before", json!("2022-03-01")), Some(true));
    assert_eq!(r("-6h", "is_date_before", json!("2022-04-30")), Some(true));
    assert_eq!(r("-6h", "is_date_before", json!("2022-05-30")), Some(false));
    assert_eq!(r("-6h", "is_date_before", json!(1)), None);
    assert_eq!(r("-6h", "is_date_before", json!("abcdef")), None);
    assert_eq!(r("1h", "is_date_after", json!("2022-05-02")), Some(true));
    assert_eq!(r("1h", "is_date_after", json!("2022-04-30")), Some(false));
    assert_eq!(m_at(json!(1234), Some("is_date_after"), json!({"key": "2022-05-30"}), now), Some(true));
    assert_eq!(r("12d", "is_date_before", json!("2022-05-30")), Some(false));
    assert_eq!(r("12d", "is_date_before", json!("2022-03-30")), Some(true));
    assert_eq!(r("12d", "is_date_before", json!("2022-04-05 12:34:11+01:00")), Some(true));
    assert_eq!(r("12d", "is_date_before", json!("2022-04-19 01:34:11+02:00")), Some(true));
    assert_eq!(r("12d", "is_date_before", json!("2022-04-19 02:00:01+02:00")), Some(false));
    assert_eq!(r("1h", "is_date_before", json!("2022-05-01 00:00:00")), Some(false));
    assert_eq!(r("1h", "is_date_before", json!("2022-04-30 22:00:00")), Some(true));
    assert_eq!(r("-1d", "is_date_before", json!("2022-04-29 23:59:00")), Some(true));
    assert_eq!(r("-1d", "is_date_before", json!("2022-04-30 00:00:01")), Some(false));
    assert_eq!(r("1w", "is_date_before", json!("2022-04-23 00:00:00")), Some(true));
    assert_eq!(r("1w", "is_date_before", json!("2022-04-24 00:00:00")), Some(false));
    assert_eq!(r("1w", "is_date_before", json!("2022-04-24 00:00:01")), Some(false));
    assert_eq!(r("1m", "is_date_before", json!("2022-03-01 00:00:00")), Some(true));
    assert_eq!(r("1m", "is_date_before", json!("2022-04-05 00:00:00")), Some(false));
    assert_eq!(r("1y", "is_date_before", json!("2021-04-28 00:00:00")), Some(true));
    assert_eq!(r("1y", "is_date_before", json!("2021-05-01 00:00:01")), Some(false));
    assert_eq!(r("122h", "is_date_after", json!("2022-05-01 00:00:00")), Some(true));
    assert_eq!(r("122h", "is_date_after", json!("2022-04-23 01:00:00")), Some(false));
    assert_eq!(r("2d", "is_date_after", json!("2022-04-29 00:00:01")), Some(true));
    assert_eq!(r("2d", "is_date_after", json!("2022-04-29 00:00:00")), Some(false));
    assert_eq!(r("-02w", "is_date_after", json!("2022-05-01 00:00:00")), Some(true));
    assert_eq!(r("-02w", "is_date_after", json!("2022-04-16 00:00:00")), Some(false));
    assert_eq!(r("1m", "is_date_after", json!("2022-04-01 00:00:01")), Some(true));
    assert_eq!(r("1m", "is_date_after", json!("2022-04-01 00:00:00")), Some(false));
    assert_eq!(r("1y", "is_date_after", json!("2022-05-01 00:00:00")), Some(true));
    assert_eq!(r("1y", "is_date_after", json!("2021-05-01 00:00:01")), Some(true));
    assert_eq!(r("1y", "is_date_after", json!("2021-05-01 00:00:00")), Some(false));
    assert_eq!(r("1y", "is_date_after", json!("2021-04-30 00:00:00")), Some(false));
    assert_eq!(r("1y", "is_date_after", json!("2021-03-01 12:13:00")), Some(false));
}

#[test]
fn a_null_property_value_fails_every_operator_but_is_not() {
    assert_eq!(m(json!("none"), Some("is_not"), json!({"key": null})), Some(false));
    assert_eq!(m(json!("none"), Some("is_not"), json!({"key": "non"})), Some(true));
    assert_eq!(m(json!(null), Some("is_set"), json!({"key": null})), Some(false));
    assert_eq!(m(json!("no"), Some("icontains"), json!({"key": null})), Some(false));
    assert_eq!(m(json!("no"), Some("icontains"), json!({"key": "smh"})), Some(false));
    assert_eq!(m(json!("No"), Some("regex"), json!({"key": null})), Some(false));
    assert_eq!(m(json!("no"), Some("regex"), json!({"key": null})), Some(false));
    assert_eq!(m(json!(1), Some("gt"), json!({"key": null})), Some(false));
    assert_eq!(m(json!(1), Some("lt"), json!({"key": null})), Some(false));
    assert_eq!(m(json!("xyz"), Some("gte"), json!({"key": null})), Some(false));
    assert_eq!(m(json!("Oo"), Some("lte"), json!({"key": null})), Some(false));
    assert_eq!(m(json!("2022-05-01"), Some("is_date_before"), json!({"key": null})), Some(false));
    assert_eq!(m(json!("2022-05-01"), Some("is_date_after"), json!({"key": null})), Some(false));
    assert_eq!(m(json!("2022-05-01"), Some("is_date_before"), json!({"key": "random"})), None);
}

#[test]
fn unknown_and_is_not_set_operators_are_inconclusive() {
    assert_eq!(m(json!("2022-05-01"), Some("is_unknown"), json!({"key": "random"})), None);
    assert_eq!(m(json!("x"), Some("is_not_set"), json!({"key": "random"})), None);
}

#[test]
fn semver_operators_follow_the_spec() {
    let s = |v: &str, op: &str, p: &str| m(json!(v), Some(op), json!({"key": p}));
    assert_eq!(s("1.2.3", "semver_eq", "v1.2.3-alpha"), Some(true));
    assert_eq!(s("1.2.3", "semver_neq", "1.2.4"), Some(true));
    assert_eq!(s("1.2.3", "semver_gt", "1.10.0"), Some(true));
    assert_eq!(s("1.2.3", "semver_gte", "1.2.3"), Some(true));
    assert_eq!(s("1.2.3", "semver_lt", "1.2"), Some(true));
    assert_eq!(s("1.2.3", "semver_lte", "1.2.4"), Some(false));
    assert_eq!(s("1.2.3", "semver_tilde", "1.2.9"), Some(true));
    assert_eq!(s("1.2.3", "semver_tilde", "1.3.0"), Some(false));
    assert_eq!(s("1.2.3", "semver_caret", "1.9.0"), Some(true));
    assert_eq!(s("0.2.3", "semver_caret", "0.3.0"), Some(false));
    assert_eq!(s("1.*", "semver_wildcard", "1.9.9"), Some(true));
    assert_eq!(s("1.2.*", "semver_wildcard", "1.3.0"), Some(false));
    assert_eq!(s("1.2.3", "semver_eq", "01.2.3"), None);
    assert_eq!(s("banana", "semver_gt", "1.2.3"), None);
}

#[test]
fn starts_and_ends_with_fold_case() {
    assert_eq!(m(json!("HTTPS://"), Some("starts_with"), json!({"key": "https://x"})), Some(true));
    assert_eq!(m(json!(".COM"), Some("ends_with"), json!({"key": "a.com"})), Some(true));
    assert_eq!(m(json!(".com"), Some("not_ends_with"), json!({"key": "a.com"})), Some(false));
    assert_eq!(m(json!("x"), Some("not_starts_with"), json!({"key": "abc"})), Some(true));
}
