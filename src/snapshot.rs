//! The flag snapshot every request reads: source definitions ⊕ admin overrides, compiled once into
//! `CompiledFlags` and swapped atomically (readers never lock, a reload never shows a mix). Also the
//! JSON merge-patch used by overrides.

use crate::flags::compiled::CompiledFlags;
use crate::flags::model::FlagDefinitions;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// Where the source definitions came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    File,
    Posthog,
    /// PostHog's last good definitions, read back from the disk cache.
    PosthogCache,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Posthog => "posthog",
            Origin::PosthogCache => "posthog_cache",
        }
    }
}

/// Admin overrides: flag key → merge patch of flag fields (e.g. `{"active": false}`).
pub type Overrides = BTreeMap<String, Map<String, Value>>;

pub struct Snapshot {
    pub flags: CompiledFlags,
    /// The definitions as the source delivered them (before overrides).
    pub source: Arc<Value>,
    pub origin: Origin,
    pub overrides: Arc<Overrides>,
    pub loaded_at: SystemTime,
}

/// Parses `source` with `overrides` applied and compiles it. Fails when the document is not
/// definitions at all (not an object, no `flags` list).
pub fn build(source: Arc<Value>, origin: Origin, overrides: Arc<Overrides>) -> Result<Snapshot, String> {
    let mut merged = (*source).clone();
    if !overrides.is_empty() {
        if let Some(flags) = merged.get_mut("flags").and_then(Value::as_array_mut) {
            for flag in flags.iter_mut() {
                let key = flag.get("key").and_then(Value::as_str).map(str::to_owned);
                if let Some(patch) = key.and_then(|k| overrides.get(&k)) {
                    apply_override(flag, patch);
                }
            }
        }
    }
    let defs = FlagDefinitions::from_value(merged)?;
    for skipped in &defs.skipped {
        tracing::warn!(origin = origin.as_str(), "flag definitions: skipped {skipped}");
    }
    Ok(Snapshot { flags: CompiledFlags::compile(&defs), source, origin, overrides, loaded_at: SystemTime::now() })
}

/// Applies an admin override to one flag object: a JSON merge patch of its fields, plus the shorthand
/// `rollout_percentage`, which sets the rollout of every condition without a variant override (the
/// "everyone else" conditions; a forced-variant cohort keeps its own).
pub fn apply_override(flag: &mut Value, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if k == ROLLOUT_SHORTHAND {
            let groups = flag.pointer_mut("/filters/groups").and_then(Value::as_array_mut);
            for group in groups.into_iter().flatten() {
                if group.get("variant").is_none_or(Value::is_null) {
                    if let Some(g) = group.as_object_mut() {
                        g.insert(k.clone(), v.clone());
                    }
                }
            }
        } else if v.is_null() {
            if let Some(o) = flag.as_object_mut() {
                o.remove(k);
            }
        } else if let Some(o) = flag.as_object_mut() {
            merge_patch(o.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The override field that ramps a flag (see `apply_override`).
pub const ROLLOUT_SHORTHAND: &str = "rollout_percentage";

/// RFC 7386 JSON merge patch: objects merge recursively, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1]});
        merge_patch(&mut doc, &json!({"a": {"b": 1}, "n": 2}));
        assert_eq!(doc, json!({"a": {"b": 1}, "n": 2}));
    }

    #[test]
    fn overrides_apply_to_the_flag_they_name_only() {
        let source = Arc::new(json!({"flags": [
            {"key": "a", "active": true, "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}},
            {"key": "b", "active": true, "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]}}
        ]}));
        let mut o = Overrides::new();
        o.insert("a".into(), json!({"active": false}).as_object().cloned().unwrap_or_default());
        let s = build(source.clone(), Origin::File, Arc::new(o)).expect("builds");
        assert_eq!(s.flags.flag("a").map(|f| f.active()), Some(false));
        assert_eq!(s.flags.flag("b").map(|f| f.active()), Some(true));
        assert_eq!(source["flags"][0]["active"], true, "the source itself is untouched");
    }
}
