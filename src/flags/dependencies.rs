//! Flag dependencies (`type: "flag"` filters), as posthog-python's `evaluate_flag_dependency`:
//! the server-computed `dependency_chain` is evaluated in order with a per-evaluation cache,
//! then the referenced flag's value is compared with the expected one.

use crate::flags::compiled::Dependency;
use crate::flags::evaluate::{inconclusive, Ctx, Props, Val};
use crate::flags::properties::Stop;
use serde_json::Value;

impl Ctx<'_> {
    /// `evaluate_flag_dependency`: evaluate the chain in order (cached), then compare.
    pub(crate) fn dependency(&mut self, dep: &Dependency, distinct_id: &str, props: Props<'_>) -> Result<bool, Stop> {
        if !dep.well_formed {
            return Ok(false);
        }
        let Some(chain) = &dep.chain else {
            return Err(inconclusive("flag dependency is missing its dependency_chain"));
        };
        if chain.is_empty() {
            return Err(inconclusive("circular or missing flag dependency"));
        }
        let flags = self.flags;
        for key in chain {
            let Some(&di) = flags.index.get(key) else {
                return Err(inconclusive("flag dependency not found in local flags"));
            };
            let cached = match self.cache.iter().find(|(i, _)| *i == di) {
                Some((_, v)) => *v,
                None => {
                    let v = self.evaluate_dependency(di, distinct_id, props)?;
                    self.cache.push((di, v));
                    v
                }
            };
            match cached {
                None => return Err(inconclusive("flag dependency was inconclusive")),
                Some(Val::Bool(false)) => return Ok(false),
                Some(_) => {}
            }
        }
        let actual =
            flags.index.get(&dep.key).and_then(|di| self.cache.iter().find(|(i, _)| i == di).map(|(i, v)| (*i, *v)));
        let Some((di, Some(actual))) = actual else {
            return Err(inconclusive("flag dependency was not evaluated despite being in the chain"));
        };
        Ok(match (actual, &dep.expected) {
            (Val::Variant(v), Value::Bool(e)) => *e && !flags.flags[di].variants[v].key.is_empty(),
            (Val::Variant(v), Value::String(e)) => &*flags.flags[di].variants[v].key == e.as_str(),
            (Val::Bool(a), Value::Bool(e)) => a == *e,
            _ => false,
        })
    }

    /// One chain entry: inactive is false; otherwise its conditions with the current properties.
    fn evaluate_dependency(&mut self, di: usize, distinct_id: &str, props: Props<'_>) -> Result<Option<Val>, Stop> {
        let flags = self.flags;
        let dflag = &flags.flags[di];
        if !dflag.active {
            return Ok(Some(Val::Bool(false)));
        }
        let bucket =
            if dflag.aggregation.is_some() { Ok(distinct_id) } else { self.person_bucketing(dflag, distinct_id) };
        let bucket = match bucket {
            Ok(b) => b,
            Err(_) => return Ok(None),
        };
        self.enter()?;
        let r = self.match_flag(di, distinct_id, props, bucket);
        self.depth -= 1;
        match r {
            Ok(d) => Ok(Some(d.val)),
            Err(Stop::Inconclusive(_)) => Ok(None),
            Err(abort) => Err(abort),
        }
    }
}
