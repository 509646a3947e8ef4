//! Cohort property groups (`match_property_group` of posthog-python): nested AND/OR groups,
//! per-entry negation, every entry evaluated, "requires server" for malformed groups.

use crate::flags::compiled::{compile_property, CompiledProperty};
use crate::flags::evaluate::{Ctx, Props};
use crate::flags::properties::Stop;
use serde_json::Value;
use std::borrow::Cow;

/// A compiled property group.
#[derive(Debug, Clone)]
pub(crate) enum CompiledGroup {
    /// `{}` or an empty `values` list: always true.
    Empty,
    /// Not an object, `type` not AND/OR, or `values` not a list: needs the server.
    Malformed,
    Group {
        and: bool,
        entries: Vec<Entry>,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// A nested group; its own `negation` is ignored.
    Nested(CompiledGroup),
    Prop {
        prop: CompiledProperty,
        negation: bool,
    },
}

fn is_nested(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.is_empty() || o.contains_key("values") || matches!(o.get("type").and_then(Value::as_str), Some("AND" | "OR"))
    })
}

impl CompiledGroup {
    pub(crate) fn compile(v: &Value) -> Self {
        let Some(o) = v.as_object() else {
            return CompiledGroup::Malformed;
        };
        if o.is_empty() {
            return CompiledGroup::Empty;
        }
        let and = match o.get("type").and_then(Value::as_str) {
            Some("AND") => true,
            Some("OR") => false,
            _ => return CompiledGroup::Malformed,
        };
        let Some(values) = o.get("values").and_then(Value::as_array) else {
            return CompiledGroup::Malformed;
        };
        if values.is_empty() {
            return CompiledGroup::Empty;
        }
        let entries = values
            .iter()
            .map(|e| {
                if is_nested(e) {
                    Entry::Nested(CompiledGroup::compile(e))
                } else {
                    let negation = e.get("negation").is_some_and(crate::flags::pycompat::truthy);
                    Entry::Prop { prop: compile_property(e), negation }
                }
            })
            .collect();
        CompiledGroup::Group { and, entries }
    }
}

impl Ctx<'_> {
    /// Evaluates every entry; the group is decided by the first deciding entry, else
    /// inconclusive if any entry was, else true for AND and false for OR.
    pub(crate) fn group(&mut self, g: &CompiledGroup, distinct_id: &str, props: Props<'_>) -> Result<bool, Stop> {
        let (and, entries) = match g {
            CompiledGroup::Empty => return Ok(true),
            CompiledGroup::Malformed => return Err(Stop::Abort(Cow::Borrowed("malformed cohort property group"))),
            CompiledGroup::Group { and, entries } => (*and, entries),
        };
        let mut decided: Option<bool> = None;
        let mut first_inconclusive: Option<Cow<'static, str>> = None;
        for e in entries {
            let r = match e {
                Entry::Nested(inner) => {
                    self.enter()?;
                    let r = self.group(inner, distinct_id, props);
                    self.depth -= 1;
                    r
                }
                Entry::Prop { prop, negation } => self.property(prop, distinct_id, props).map(|m| m != *negation),
            };
            match r {
                Ok(m) if decided.is_none() && m != and => decided = Some(m),
                Ok(_) => {}
                Err(Stop::Inconclusive(r)) => {
                    first_inconclusive.get_or_insert(r);
                }
                Err(abort) => return Err(abort),
            }
        }
        match (decided, first_inconclusive) {
            (Some(d), _) => Ok(d),
            (None, Some(r)) => Err(Stop::Inconclusive(r)),
            (None, None) => Ok(and),
        }
    }
}
