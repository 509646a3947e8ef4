//! The compiled, immutable form of a definitions snapshot and the per-request API the gateway
//! calls. Everything that does not depend on the request is computed once here: regexes,
//! folded strings, variant boundaries, payloads, the key index. `Send + Sync`; meant to sit
//! behind an `ArcSwap`.

use crate::flags::bucketing::variant_bounds;
use crate::flags::cohorts::CompiledGroup;
use crate::flags::model::{Condition, FlagDefinition, FlagDefinitions, Rollout};
use crate::flags::properties::PropertyMatcher;
use crate::flags::pycompat::{py_str, truthy};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// What the caller knows about one request.
#[derive(Debug, Clone, Copy)]
pub struct EvalInput<'a> {
    pub distinct_id: &'a str,
    pub device_id: Option<&'a str>,
    pub person_properties: &'a Map<String, Value>,
    /// Group type name → group key.
    pub groups: &'a Map<String, Value>,
    /// Group type name → that group's properties.
    pub group_properties: &'a Map<String, Value>,
    /// The clock for relative dates.
    pub now: DateTime<Utc>,
}

/// A decided flag value; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagValue {
    Bool(bool),
    Variant(Arc<str>),
}

impl FlagValue {
    /// The JSON form: `true`, `false` or the variant key.
    pub fn to_json(&self) -> Value {
        match self {
            FlagValue::Bool(b) => Value::Bool(*b),
            FlagValue::Variant(v) => Value::String(v.to_string()),
        }
    }
}

/// The outcome of evaluating one flag for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// `None` exactly when posthog-python's local evaluation gives up (inconclusive).
    pub value: Option<FlagValue>,
    /// The payload for the value (JSON-string payloads decoded); shared, not copied.
    pub payload: Option<Arc<Value>>,
    /// Why: `condition_match`, `no_condition_match`, `out_of_rollout_bound`, `flag_inactive`,
    /// `group_not_passed`, `flag not found`, or `inconclusive: ...` / `requires server evaluation: ...`.
    pub reason: Cow<'static, str>,
    /// Index of the condition that decided the value, when one did.
    pub condition_index: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledVariant {
    pub(crate) key: Arc<str>,
    pub(crate) percentage: Option<f64>,
    pub(crate) payload: Option<Arc<Value>>,
}

/// How the multivariate table can be used (Python raises at different points for bad input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VariantsState {
    Ok,
    /// A variant without a key: Python fails before trying any condition.
    BadKey,
    /// A non-numeric percentage: Python fails when it builds the lookup table.
    BadPercentage,
}

#[derive(Debug, Clone)]
pub(crate) enum CohortOp {
    In,
    NotIn,
    Unknown(Box<str>),
}

#[derive(Debug, Clone)]
pub(crate) struct Dependency {
    pub(crate) key: Box<str>,
    pub(crate) expected: Value,
    /// `operator == flag_evaluates_to`, a key and a non-null value.
    pub(crate) well_formed: bool,
    pub(crate) chain: Option<Vec<Box<str>>>,
}

#[derive(Debug, Clone)]
pub(crate) enum CompiledProperty {
    Match(PropertyMatcher),
    Cohort {
        id: String,
        op: CohortOp,
    },
    Flag(Dependency),
    /// `key` is not a string: Python never finds it (inconclusive).
    NoKey,
    /// Not an object: Python raises an unexpected error.
    Malformed,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledCondition {
    pub(crate) properties: Vec<CompiledProperty>,
    pub(crate) rollout: Rollout,
    pub(crate) variant_override: Option<usize>,
    pub(crate) aggregation: Option<String>,
}

/// One compiled flag.
#[derive(Debug, Clone)]
pub struct CompiledFlag {
    pub(crate) key: Arc<str>,
    pub(crate) id: Option<i64>,
    pub(crate) active: bool,
    pub(crate) continuity: bool,
    pub(crate) device_bucketing: bool,
    pub(crate) aggregation: Option<String>,
    pub(crate) conditions: Vec<CompiledCondition>,
    pub(crate) variants: Vec<CompiledVariant>,
    pub(crate) bounds: Vec<(f64, f64)>,
    pub(crate) variants_state: VariantsState,
    pub(crate) early_exit: bool,
    pub(crate) payload_true: Option<Arc<Value>>,
    pub(crate) payload_false: Option<Arc<Value>>,
}

impl CompiledFlag {
    pub fn key(&self) -> &str {
        &self.key
    }
    pub fn id(&self) -> Option<i64> {
        self.id
    }
    pub fn active(&self) -> bool {
        self.active
    }
    /// Group type index (as text) when the whole flag is bucketed by a group.
    pub fn aggregation_group_type_index(&self) -> Option<&str> {
        self.aggregation.as_deref()
    }
    pub fn variant_keys(&self) -> impl Iterator<Item = &str> {
        self.variants.iter().map(|v| &*v.key)
    }
    /// `(variant key, rollout percentage)` in declaration order.
    pub fn variants(&self) -> impl Iterator<Item = (&str, Option<f64>)> {
        self.variants.iter().map(|v| (&*v.key, v.percentage))
    }
    /// Each condition's rollout percentage (`None` = everyone who matches its properties).
    pub fn rollout_percentages(&self) -> impl Iterator<Item = Option<f64>> + '_ {
        self.conditions.iter().map(|c| match c.rollout {
            Rollout::Percent(p) => Some(p),
            Rollout::All | Rollout::Invalid => None,
        })
    }
}

/// All flags of one snapshot, compiled.
#[derive(Debug, Clone, Default)]
pub struct CompiledFlags {
    pub(crate) flags: Vec<CompiledFlag>,
    pub(crate) index: HashMap<Box<str>, usize>,
    pub(crate) cohorts: HashMap<String, CompiledGroup>,
    pub(crate) group_types: HashMap<String, Arc<str>>,
}

pub(crate) fn compile_property(v: &Value) -> CompiledProperty {
    let Some(o) = v.as_object() else {
        return CompiledProperty::Malformed;
    };
    let value = o.get("value").unwrap_or(&Value::Null);
    match o.get("type").and_then(Value::as_str) {
        Some("cohort") => {
            let op = match o.get("operator") {
                None | Some(Value::Null) => CohortOp::In,
                Some(Value::String(s)) if s == "in" || s == "exact" => CohortOp::In,
                Some(Value::String(s)) if s == "not_in" => CohortOp::NotIn,
                Some(other) => CohortOp::Unknown(py_str(other).into()),
            };
            CompiledProperty::Cohort { id: py_str(value).into_owned(), op }
        }
        Some("flag") => {
            let key = o.get("key").filter(|k| truthy(k)).map(|k| Box::<str>::from(py_str(k).as_ref()));
            let well_formed = key.is_some()
                && !value.is_null()
                && o.get("operator").and_then(Value::as_str) == Some("flag_evaluates_to");
            let chain = o.get("dependency_chain").map(|c| {
                c.as_array()
                    .map(|a| a.iter().map(|k| Box::<str>::from(py_str(k).as_ref())).collect())
                    .unwrap_or_default()
            });
            CompiledProperty::Flag(Dependency {
                key: key.unwrap_or_default(),
                expected: value.clone(),
                well_formed,
                chain,
            })
        }
        _ => match o.get("key").and_then(Value::as_str) {
            Some(key) => CompiledProperty::Match(PropertyMatcher::compile(key, o.get("operator"), value)),
            None => CompiledProperty::NoKey,
        },
    }
}

fn compile_condition(c: &Condition, variants: &[CompiledVariant]) -> CompiledCondition {
    CompiledCondition {
        properties: c.properties.iter().map(compile_property).collect(),
        rollout: c.rollout_percentage,
        variant_override: c.variant.as_deref().and_then(|v| variants.iter().position(|x| &*x.key == v)),
        aggregation: c.aggregation_group_type_index.clone(),
    }
}

fn compile_flag(f: &FlagDefinition) -> CompiledFlag {
    let payload = |k: &str| f.filters.payloads.get(k).map(|v| Arc::new(v.clone()));
    let variants: Vec<CompiledVariant> = f
        .filters
        .variants
        .iter()
        .map(|v| CompiledVariant {
            key: Arc::from(v.key.as_str()),
            percentage: v.rollout_percentage,
            payload: payload(&v.key),
        })
        .collect();
    let variants_state = if f.filters.variants.iter().any(|v| v.key.is_empty() && v.rollout_percentage.is_none()) {
        VariantsState::BadKey
    } else if variants.iter().any(|v| v.percentage.is_none()) {
        VariantsState::BadPercentage
    } else {
        VariantsState::Ok
    };
    let percentages: Vec<f64> = variants.iter().map(|v| v.percentage.unwrap_or(0.0)).collect();
    CompiledFlag {
        key: Arc::from(f.key.as_str()),
        id: f.id,
        active: f.active,
        continuity: f.ensure_experience_continuity,
        device_bucketing: f.bucketing_identifier.as_deref() == Some("device_id"),
        aggregation: f.filters.aggregation_group_type_index.clone(),
        conditions: f.filters.groups.iter().map(|c| compile_condition(c, &variants)).collect(),
        bounds: variant_bounds(&percentages),
        variants,
        variants_state,
        early_exit: f.filters.early_exit,
        payload_true: payload("true"),
        payload_false: payload("false"),
    }
}

impl CompiledFlags {
    /// Compiles a snapshot. Never fails: a flag that cannot be evaluated evaluates the way
    /// posthog-python would (usually inconclusive).
    pub fn compile(defs: &FlagDefinitions) -> Self {
        let flags: Vec<CompiledFlag> = defs.flags.iter().map(compile_flag).collect();
        let index = flags.iter().enumerate().map(|(i, f)| (Box::<str>::from(&*f.key), i)).collect();
        let cohorts = defs.cohorts.iter().map(|(id, g)| (id.clone(), CompiledGroup::compile(g))).collect();
        let group_types = defs.group_type_mapping.iter().map(|(k, v)| (k.clone(), Arc::from(v.as_str()))).collect();
        CompiledFlags { flags, index, cohorts, group_types }
    }

    /// The compiled flag with this key.
    pub fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.index.get(key).and_then(|i| self.flags.get(*i))
    }

    /// Flag keys in definition order (a later duplicate key shadows an earlier one).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().enumerate().filter(|(i, f)| self.index.get(&*f.key) == Some(i)).map(|(_, f)| &*f.key)
    }

    /// Number of distinct flag keys.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// The snapshot is shared across request threads behind an `ArcSwap`.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<CompiledFlags>();
};
