//! The wire shape of PostHog's flag-definitions response (`flags`, `cohorts`,
//! `group_type_mapping`), read tolerantly from JSON: unknown fields are ignored, numbers may be
//! ints or floats, nulls mean "absent", payloads may be JSON strings or values. Property filters
//! and cohort groups stay raw JSON here; `compiled` turns them into matchers.

use crate::flags::pycompat::{py_str, truthy};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The whole definitions document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagDefinitions {
    pub flags: Vec<FlagDefinition>,
    /// Cohort id (as text) → property group (`{"type": "AND"|"OR", "values": [...]}`), raw.
    pub cohorts: Map<String, Value>,
    /// Group type index (as text, e.g. `"0"`) → group type name.
    pub group_type_mapping: BTreeMap<String, String>,
    /// Entries that could not be read as flags (no string `key`, not an object), with why.
    pub skipped: Vec<String>,
}

/// One flag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagDefinition {
    pub id: Option<i64>,
    pub key: String,
    pub active: bool,
    pub ensure_experience_continuity: bool,
    /// `bucketing_identifier` from the flag, else from `filters` (`"device_id"` buckets by device).
    pub bucketing_identifier: Option<String>,
    pub filters: Filters,
}

/// `filters` of a flag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub groups: Vec<Condition>,
    pub variants: Vec<Variant>,
    /// `"true"` / variant key → payload; JSON-string payloads are decoded when they parse.
    pub payloads: Map<String, Value>,
    /// Python `str()` of `aggregation_group_type_index` when it is not null.
    pub aggregation_group_type_index: Option<String>,
    pub early_exit: bool,
}

/// A condition set (`filters.groups[i]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Condition {
    /// Property filters, raw; AND-ed.
    pub properties: Vec<Value>,
    pub rollout_percentage: Rollout,
    pub variant: Option<String>,
    /// Python `str()` of the condition's own group type index (mixed targeting).
    pub aggregation_group_type_index: Option<String>,
}

/// A rollout percentage: absent/null, a number, or something Python could not divide.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Rollout {
    #[default]
    All,
    Percent(f64),
    Invalid,
}

/// A variant of a multivariate flag; `rollout_percentage` is `None` when it is not a number.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variant {
    pub key: String,
    pub name: Option<String>,
    pub rollout_percentage: Option<f64>,
}

fn non_null<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    o.get(k).filter(|v| !v.is_null())
}

fn string(o: &Map<String, Value>, k: &str) -> Option<String> {
    non_null(o, k).and_then(Value::as_str).map(str::to_owned)
}

fn rollout(v: Option<&Value>) -> Rollout {
    match v {
        None | Some(Value::Null) => Rollout::All,
        Some(Value::Number(n)) => n.as_f64().map_or(Rollout::Invalid, Rollout::Percent),
        Some(Value::Bool(b)) => Rollout::Percent(if *b { 1.0 } else { 0.0 }),
        Some(_) => Rollout::Invalid,
    }
}

fn condition(v: &Value) -> Condition {
    let Some(o) = v.as_object() else {
        return Condition { rollout_percentage: Rollout::Invalid, ..Condition::default() };
    };
    Condition {
        properties: non_null(o, "properties").and_then(Value::as_array).cloned().unwrap_or_default(),
        rollout_percentage: rollout(o.get("rollout_percentage")),
        variant: non_null(o, "variant").filter(|v| truthy(v)).map(|v| py_str(v).into_owned()),
        aggregation_group_type_index: non_null(o, "aggregation_group_type_index").map(|v| py_str(v).into_owned()),
    }
}

fn variant(v: &Value) -> Option<Variant> {
    let o = v.as_object()?;
    Some(Variant {
        key: non_null(o, "key").map(|k| py_str(k).into_owned())?,
        name: string(o, "name"),
        rollout_percentage: match non_null(o, "rollout_percentage") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::Bool(b)) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        },
    })
}

fn payload(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

fn filters(v: Option<&Value>) -> Filters {
    let Some(o) = v.and_then(Value::as_object) else {
        return Filters::default();
    };
    let multivariate = non_null(o, "multivariate").and_then(Value::as_object);
    Filters {
        groups: non_null(o, "groups")
            .and_then(Value::as_array)
            .map(|g| g.iter().map(condition).collect())
            .unwrap_or_default(),
        variants: multivariate
            .and_then(|m| non_null(m, "variants"))
            .and_then(Value::as_array)
            .map(|vs| vs.iter().map(|v| variant(v).unwrap_or_default()).collect())
            .unwrap_or_default(),
        payloads: non_null(o, "payloads")
            .and_then(Value::as_object)
            .map(|p| p.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), payload(v))).collect())
            .unwrap_or_default(),
        aggregation_group_type_index: non_null(o, "aggregation_group_type_index").map(|v| py_str(v).into_owned()),
        early_exit: o.get("early_exit").is_some_and(truthy),
    }
}

impl FlagDefinition {
    /// Reads one flag object; `Err` says why it is not a flag.
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let o = v.as_object().ok_or("a flag must be a JSON object")?;
        let key = string(o, "key").ok_or("a flag needs a string `key`")?;
        let filters_v = o.get("filters");
        let bucketing = string(o, "bucketing_identifier")
            .filter(|s| !s.is_empty())
            .or_else(|| filters_v.and_then(Value::as_object).and_then(|f| string(f, "bucketing_identifier")));
        Ok(FlagDefinition {
            id: non_null(o, "id").and_then(Value::as_i64),
            active: o.get("active").is_some_and(truthy),
            ensure_experience_continuity: o.get("ensure_experience_continuity").is_some_and(truthy),
            bucketing_identifier: bucketing,
            filters: filters(filters_v),
            key,
        })
    }
}

impl FlagDefinitions {
    /// Parses the definitions document from bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("definitions are not valid JSON: {e}"))?;
        Self::from_value(v)
    }

    /// Reads the definitions document from a JSON value (e.g. after merging admin overrides).
    /// Fails only when the top level is not an object or `flags` is not a list.
    pub fn from_value(v: Value) -> Result<Self, String> {
        let Value::Object(mut o) = v else {
            return Err("definitions must be a JSON object".to_owned());
        };
        let flags_v = match o.remove("flags") {
            Some(Value::Array(a)) => a,
            Some(Value::Null) | None => return Err("definitions need a `flags` list".to_owned()),
            Some(_) => return Err("`flags` must be a list".to_owned()),
        };
        let mut defs = FlagDefinitions::default();
        for (i, f) in flags_v.iter().enumerate() {
            match FlagDefinition::from_value(f) {
                Ok(flag) => defs.flags.push(flag),
                Err(e) => defs.skipped.push(format!("flags[{i}]: {e}")),
            }
        }
        if let Some(Value::Object(c)) = o.remove("cohorts") {
            defs.cohorts = c;
        }
        if let Some(Value::Object(m)) = o.remove("group_type_mapping") {
            defs.group_type_mapping =
                m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned()))).collect();
        }
        Ok(defs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tolerant_parsing_accepts_the_shapes_posthog_serves() {
        let defs = FlagDefinitions::from_value(json!({
            "flags": [
                {"key": "a", "active": true, "unknown": 1, "filters": {"groups": [
                    {"properties": null, "rollout_percentage": 33.33},
                    {"rollout_percentage": null, "variant": "x", "aggregation_group_type_index": 1},
                    {"properties": [], "rollout_percentage": "50"}
                ], "multivariate": {"variants": [{"key": "x", "rollout_percentage": 100.0}]},
                   "payloads": {"x": "{\"a\": 1}", "true": 5}, "aggregation_group_type_index": null}},
                {"key": "b", "active": true},
                {"id": 3},
                "junk"
            ],
            "group_type_mapping": {"0": "company"},
            "cohorts": {"1": {"type": "AND", "values": []}}
        }));
        let defs = defs.unwrap_or_default();
        assert_eq!(defs.flags.len(), 2);
        assert_eq!(defs.skipped.len(), 2);
        let a = &defs.flags[0];
        assert_eq!(a.filters.groups[0].rollout_percentage, Rollout::Percent(33.33));
        assert_eq!(a.filters.groups[1].rollout_percentage, Rollout::All);
        assert_eq!(a.filters.groups[1].aggregation_group_type_index.as_deref(), Some("1"));
        assert_eq!(a.filters.groups[2].rollout_percentage, Rollout::Invalid);
        assert_eq!(a.filters.payloads.get("x"), Some(&json!({"a": 1})));
        assert_eq!(a.filters.aggregation_group_type_index, None);
        assert!(defs.flags[1].filters.groups.is_empty());
        assert_eq!(defs.group_type_mapping.get("0").map(String::as_str), Some("company"));
    }

    #[test]
    fn definitions_without_a_flags_list_are_rejected() {
        assert!(FlagDefinitions::from_value(json!({"cohorts": {}})).is_err());
        assert!(FlagDefinitions::from_value(json!([])).is_err());
        assert!(FlagDefinitions::from_slice(b"{").is_err());
    }
}
