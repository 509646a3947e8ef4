//! Flag evaluation exactly as posthog-python's `_compute_flag_locally`,
//! `match_feature_flag_properties`, `is_condition_match` and `evaluate_flag_dependency`:
//! gates, conditions in order, variant overrides, multivariate, group and mixed targeting,
//! device-id bucketing, flag dependencies (in `dependencies`), early exit, payloads; "inconclusive" is an outcome.

use crate::flags::bucketing::{hash, in_rollout, pick_variant, whole_rollout, VARIANT_SALT};
use crate::flags::compiled::{
    CohortOp, CompiledCondition, CompiledFlag, CompiledFlags, CompiledProperty, EvalInput, Evaluation, FlagValue,
    VariantsState,
};
use crate::flags::model::Rollout;
use crate::flags::properties::{Prop, Stop};
use crate::flags::pycompat::py_str;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Deeper nesting (dependency or cohort recursion) than this gives up, like Python's RecursionError.
const MAX_DEPTH: u32 = 64;

/// A value inside one evaluation: a boolean or an index into the flag's variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Val {
    Bool(bool),
    Variant(usize),
}

pub(crate) struct Decision {
    pub(crate) val: Val,
    reason: &'static str,
    condition: Option<usize>,
}

/// The properties one condition reads, plus the one the SDK injects (`distinct_id` for persons,
/// `$group_key` for groups; the caller's own value wins).
#[derive(Clone, Copy)]
pub(crate) struct Props<'a> {
    map: Option<&'a Map<String, Value>>,
    inject_key: &'static str,
    inject_value: &'a str,
}

impl<'a> Props<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<Prop<'a>> {
        match self.map.and_then(|m| m.get(key)) {
            Some(v) => Some(Prop::Json(v)),
            None if key == self.inject_key => Some(Prop::Str(self.inject_value)),
            None => None,
        }
    }
}

enum CondResult<'a> {
    Match(Cow<'a, str>),
    NoMatch,
    OutOfRollout,
}

pub(crate) struct Ctx<'a> {
    pub(crate) flags: &'a CompiledFlags,
    pub(crate) input: &'a EvalInput<'a>,
    pub(crate) cache: Vec<(usize, Option<Val>)>,
    pub(crate) depth: u32,
}

pub(crate) fn inconclusive(reason: &'static str) -> Stop {
    Stop::Inconclusive(Cow::Borrowed(reason))
}

impl CompiledFlags {
    /// Evaluates flag `key` for one request. Unknown key: `value: None`, reason `flag not found`.
    pub fn evaluate(&self, key: &str, input: &EvalInput<'_>) -> Evaluation {
        let Some(&idx) = self.index.get(key) else {
            return Evaluation {
                value: None,
                payload: None,
                reason: Cow::Borrowed("flag not found"),
                condition_index: None,
            };
        };
        let mut ctx = Ctx { flags: self, input, cache: Vec::new(), depth: 0 };
        match ctx.compute_flag(idx) {
            Ok(d) => {
                let flag = &self.flags[idx];
                let (value, payload) = match d.val {
                    Val::Bool(true) => (FlagValue::Bool(true), flag.payload_true.clone()),
                    Val::Bool(false) => (FlagValue::Bool(false), flag.payload_false.clone()),
                    Val::Variant(i) => {
                        let v = &flag.variants[i];
                        (FlagValue::Variant(v.key.clone()), v.payload.clone())
                    }
                };
                Evaluation {
                    value: Some(value),
                    payload,
                    reason: Cow::Borrowed(d.reason),
                    condition_index: d.condition,
                }
            }
            Err(stop) => {
                let reason = match stop {
                    Stop::Inconclusive(r) => format!("inconclusive: {r}"),
                    Stop::Abort(r) => format!("requires server evaluation: {r}"),
                };
                Evaluation { value: None, payload: None, reason: Cow::Owned(reason), condition_index: None }
            }
        }
    }
}

fn group_key(v: &Value) -> Cow<'_, str> {
    py_str(v)
}

impl<'a> Ctx<'a> {
    fn group_props(&self, name: &str, key: &'a str) -> Props<'a> {
        Props {
            map: self.input.group_properties.get(name).and_then(Value::as_object),
            inject_key: "$group_key",
            inject_value: key,
        }
    }

    /// `_compute_flag_locally`: continuity, active, group or person context.
    fn compute_flag(&mut self, idx: usize) -> Result<Decision, Stop> {
        let flags = self.flags;
        let input = self.input;
        let flag = &flags.flags[idx];
        if flag.continuity {
            return Err(inconclusive("flag has ensure_experience_continuity enabled"));
        }
        if !flag.active {
            return Ok(Decision { val: Val::Bool(false), reason: "flag_inactive", condition: None });
        }
        if let Some(index) = &flag.aggregation {
            let Some(name) = flags.group_types.get(index) else {
                return Err(inconclusive("flag has an unknown group type index"));
            };
            let Some(key) = input.groups.get(&**name) else {
                return Ok(Decision { val: Val::Bool(false), reason: "group_not_passed", condition: None });
            };
            let key = group_key(key);
            let props = self.group_props(name, &key);
            return self.match_flag(idx, &key, props, &key);
        }
        let bucketing = self.person_bucketing(flag, input.distinct_id)?;
        let props =
            Props { map: Some(input.person_properties), inject_key: "distinct_id", inject_value: input.distinct_id };
        self.match_flag(idx, input.distinct_id, props, bucketing)
    }

    /// `resolve_bucketing_value`: the device id when the flag asks for it, else `distinct_id`.
    pub(crate) fn person_bucketing<'b>(&self, flag: &CompiledFlag, distinct_id: &'b str) -> Result<&'b str, Stop>
    where
        'a: 'b,
    {
        if flag.device_bucketing {
            return self
                .input
                .device_id
                .filter(|d| !d.is_empty())
                .ok_or_else(|| inconclusive("flag requires device_id for bucketing but none was provided"));
        }
        Ok(distinct_id)
    }

    /// `match_feature_flag_properties`: conditions in order; the first match decides.
    pub(crate) fn match_flag(
        &mut self,
        idx: usize,
        distinct_id: &str,
        props: Props<'_>,
        bucketing: &str,
    ) -> Result<Decision, Stop> {
        let flags = self.flags;
        let flag = &flags.flags[idx];
        if flag.variants_state == VariantsState::BadKey {
            return Err(Stop::Abort(Cow::Borrowed("a multivariate variant has no key")));
        }
        let mut first_inconclusive: Option<Cow<'static, str>> = None;
        let mut out_of_rollout = false;
        for (i, cond) in flag.conditions.iter().enumerate() {
            match self.condition(flag, cond, distinct_id, props, bucketing) {
                Ok(CondResult::Match(bucket)) => {
                    let val = match cond.variant_override {
                        Some(v) => Val::Variant(v),
                        None => self.hashed_variant(flag, &bucket)?,
                    };
                    return Ok(Decision { val, reason: "condition_match", condition: Some(i) });
                }
                Ok(CondResult::NoMatch) => {}
                Ok(CondResult::OutOfRollout) => {
                    if flag.early_exit {
                        return Ok(Decision {
                            val: Val::Bool(false),
                            reason: "out_of_rollout_bound",
                            condition: Some(i),
                        });
                    }
                    out_of_rollout = true;
                }
                Err(Stop::Inconclusive(r)) => {
                    first_inconclusive.get_or_insert(r);
                }
                Err(abort) => return Err(abort),
            }
        }
        if let Some(r) = first_inconclusive {
            return Err(Stop::Inconclusive(r));
        }
        let reason = if out_of_rollout { "out_of_rollout_bound" } else { "no_condition_match" };
        Ok(Decision { val: Val::Bool(false), reason, condition: None })
    }

    /// `get_matching_variant`, or `true` when no variant range holds the hash.
    fn hashed_variant(&self, flag: &CompiledFlag, bucket: &str) -> Result<Val, Stop> {
        if flag.variants.is_empty() {
            return Ok(Val::Bool(true));
        }
        if flag.variants_state == VariantsState::BadPercentage {
            return Err(Stop::Abort(Cow::Borrowed("a variant's rollout_percentage is not a number")));
        }
        let h = hash(&flag.key, bucket, VARIANT_SALT);
        Ok(pick_variant(&flag.bounds, h).map_or(Val::Bool(true), Val::Variant))
    }

    /// `is_condition_match`, with mixed targeting (a condition-level group type index).
    fn condition<'c>(
        &mut self,
        flag: &CompiledFlag,
        cond: &CompiledCondition,
        distinct_id: &str,
        props: Props<'_>,
        bucketing: &'c str,
    ) -> Result<CondResult<'c>, Stop>
    where
        'a: 'c,
    {
        let input = self.input;
        let (props, bucket): (Props<'_>, Cow<'c, str>) = match (&flag.aggregation, &cond.aggregation) {
            (None, Some(index)) => {
                let Some(name) = self.flags.group_types.get(index) else {
                    return Ok(CondResult::NoMatch);
                };
                let Some(key) = input.groups.get(&**name) else {
                    return Ok(CondResult::NoMatch);
                };
                let key: Cow<'c, str> = group_key(key);
                let key_ref: &str = &key;
                let group_props = Props {
                    map: input.group_properties.get(&**name).and_then(Value::as_object),
                    inject_key: "$group_key",
                    inject_value: key_ref,
                };
                let r = self.condition_body(flag, cond, distinct_id, group_props, key_ref)?;
                return Ok(match r {
                    CondResult::Match(_) => CondResult::Match(Cow::Owned(key.into_owned())),
                    CondResult::NoMatch => CondResult::NoMatch,
                    CondResult::OutOfRollout => CondResult::OutOfRollout,
                });
            }
            _ => (props, Cow::Borrowed(bucketing)),
        };
        let r = self.condition_body(flag, cond, distinct_id, props, &bucket)?;
        Ok(match r {
            CondResult::Match(_) => CondResult::Match(bucket),
            other => other,
        })
    }

    fn condition_body(
        &mut self,
        flag: &CompiledFlag,
        cond: &CompiledCondition,
        distinct_id: &str,
        props: Props<'_>,
        bucket: &str,
    ) -> Result<CondResult<'static>, Stop> {
        for prop in &cond.properties {
            if !self.property(prop, distinct_id, props)? {
                return Ok(CondResult::NoMatch);
            }
        }
        match cond.rollout {
            Rollout::All => Ok(CondResult::Match(Cow::Borrowed(""))),
            // At 100 % no hash is out, so none is computed (a SHA-1 of the key and id saved).
            Rollout::Percent(p) if whole_rollout(p) || in_rollout(hash(&flag.key, bucket, ""), p) => {
                Ok(CondResult::Match(Cow::Borrowed("")))
            }
            Rollout::Percent(_) => Ok(CondResult::OutOfRollout),
            Rollout::Invalid => Err(Stop::Abort(Cow::Borrowed("rollout_percentage is not a number"))),
        }
    }

    /// One property filter of a condition or cohort: plain property, cohort or flag dependency.
    pub(crate) fn property(
        &mut self,
        prop: &CompiledProperty,
        distinct_id: &str,
        props: Props<'_>,
    ) -> Result<bool, Stop> {
        match prop {
            CompiledProperty::Match(m) => m.matches(|k| props.get(k), self.input.now),
            CompiledProperty::Cohort { id, op } => self.cohort(id, op, distinct_id, props),
            CompiledProperty::Flag(dep) => self.dependency(dep, distinct_id, props),
            CompiledProperty::NoKey => Err(inconclusive("can't match properties without a given property value")),
            CompiledProperty::Malformed => Err(Stop::Abort(Cow::Borrowed("a property filter is not an object"))),
        }
    }

    /// `match_cohort`: a cohort missing from the definitions (static) needs the server.
    fn cohort(&mut self, id: &str, op: &CohortOp, distinct_id: &str, props: Props<'_>) -> Result<bool, Stop> {
        let flags = self.flags;
        let Some(group) = flags.cohorts.get(id) else {
            return Err(Stop::Abort(Cow::Owned(format!("cohort {id} not found locally (static cohort?)"))));
        };
        let negate = match op {
            CohortOp::In => false,
            CohortOp::NotIn => true,
            CohortOp::Unknown(name) => {
                return Err(Stop::Inconclusive(Cow::Owned(format!("unknown cohort operator {name}"))))
            }
        };
        self.enter()?;
        let r = self.group(group, distinct_id, props);
        self.depth -= 1;
        Ok(r? != negate)
    }

    pub(crate) fn enter(&mut self) -> Result<(), Stop> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.depth -= 1;
            return Err(Stop::Abort(Cow::Borrowed("nesting too deep")));
        }
        Ok(())
    }
}
