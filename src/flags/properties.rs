//! Property matching (`match_property` of posthog-python): every operator it knows, with its
//! exact coercions, precompiled once per definitions snapshot (regexes, folded strings, dates,
//! semver ranges). A match is `Ok(bool)`; where Python raises, `Err(Stop)` says why.

use crate::flags::dates::{parse_datetime, FlagDate};
use crate::flags::pycompat::{casefold, icontains, iequals, py_float, py_str};
use crate::flags::semver;
use chrono::{DateTime, Utc};
use regex::Regex;
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;

/// Why local evaluation stopped without a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// `InconclusiveMatchError`: other conditions are still tried.
    Inconclusive(Cow<'static, str>),
    /// `RequiresServerEvaluation` or an unexpected Python exception: the whole flag gives up.
    Abort(Cow<'static, str>),
}

/// A property value as the matcher sees it: from the caller's JSON, or injected by the SDK
/// (`distinct_id` in person properties, `$group_key` in group properties).
#[derive(Debug, Clone, Copy)]
pub enum Prop<'a> {
    Json(&'a Value),
    Str(&'a str),
}

impl<'a> Prop<'a> {
    fn is_null(self) -> bool {
        matches!(self, Prop::Json(Value::Null))
    }
    fn text(self) -> Cow<'a, str> {
        match self {
            Prop::Json(v) => py_str(v),
            Prop::Str(s) => Cow::Borrowed(s),
        }
    }
    fn as_str(self) -> Option<&'a str> {
        match self {
            Prop::Json(Value::String(s)) => Some(s),
            Prop::Json(_) => None,
            Prop::Str(s) => Some(s),
        }
    }
}

/// The operators of posthog-python's `PROPERTY_OPERATORS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Exact,
    IsNot,
    IsSet,
    IsNotSet,
    Icontains,
    NotIcontains,
    Regex,
    NotRegex,
    StartsWith,
    NotStartsWith,
    EndsWith,
    NotEndsWith,
    Gt,
    Gte,
    Lt,
    Lte,
    DateBefore,
    DateAfter,
    SemverEq,
    SemverNeq,
    SemverGt,
    SemverGte,
    SemverLt,
    SemverLte,
    SemverTilde,
    SemverCaret,
    SemverWildcard,
}

impl Op {
    /// `None` for an operator posthog-python does not know (inconclusive).
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "exact" => Op::Exact,
            "is_not" => Op::IsNot,
            "is_set" => Op::IsSet,
            "is_not_set" => Op::IsNotSet,
            "icontains" => Op::Icontains,
            "not_icontains" => Op::NotIcontains,
            "regex" => Op::Regex,
            "not_regex" => Op::NotRegex,
            "starts_with" => Op::StartsWith,
            "not_starts_with" => Op::NotStartsWith,
            "ends_with" => Op::EndsWith,
            "not_ends_with" => Op::NotEndsWith,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "is_date_before" => Op::DateBefore,
            "is_date_after" => Op::DateAfter,
            "semver_eq" => Op::SemverEq,
            "semver_neq" => Op::SemverNeq,
            "semver_gt" => Op::SemverGt,
            "semver_gte" => Op::SemverGte,
            "semver_lt" => Op::SemverLt,
            "semver_lte" => Op::SemverLte,
            "semver_tilde" => Op::SemverTilde,
            "semver_caret" => Op::SemverCaret,
            "semver_wildcard" => Op::SemverWildcard,
            _ => return None,
        })
    }
}

/// What was precomputed from the flag's `value` for the operator.
#[derive(Debug, Clone)]
enum Prepared {
    None,
    /// Casefolded `str(v)` of each accepted value (`exact`/`is_not`); one entry for a scalar.
    Folded(Vec<String>),
    /// Casefolded `str(value)` (contains / starts / ends).
    Needle(String),
    /// Compiled `str(value)`; `None` when invalid (then both regex operators are false).
    Regex(Option<Regex>),
    /// `str(value)` and `float(value)` for gt/gte/lt/lte.
    Number(String, Option<f64>),
    Date(FlagDate),
    /// Parsed flag version (eq..lte) or range (tilde, caret, wildcard); `None` is inconclusive.
    Version(Option<semver::Version>),
    Range(Option<semver::Range>),
}

/// A compiled property filter.
#[derive(Debug, Clone)]
pub struct PropertyMatcher {
    key: Box<str>,
    /// `Err(name)` for an unknown operator.
    op: Result<Op, Box<str>>,
    prepared: Prepared,
}

impl PropertyMatcher {
    /// Compiles `{"key", "value", "operator"}`; never fails (bad input matches the way Python would).
    pub fn compile(key: &str, operator: Option<&Value>, value: &Value) -> Self {
        let op_name = operator.filter(|v| crate::flags::pycompat::truthy(v)).map_or(Cow::Borrowed("exact"), py_str);
        let op = Op::parse(&op_name).ok_or_else(|| Box::<str>::from(op_name.as_ref()));
        let text = || py_str(value);
        let prepared = match op {
            Ok(Op::Exact | Op::IsNot) => match value {
                Value::Array(items) => {
                    Prepared::Folded(items.iter().map(|v| casefold(&py_str(v)).into_owned()).collect())
                }
                v => Prepared::Folded(vec![casefold(&py_str(v)).into_owned()]),
            },
            Ok(
                Op::Icontains | Op::NotIcontains | Op::StartsWith | Op::NotStartsWith | Op::EndsWith | Op::NotEndsWith,
            ) => Prepared::Needle(casefold(&text()).into_owned()),
            Ok(Op::Regex | Op::NotRegex) => Prepared::Regex(Regex::new(&text()).ok()),
            Ok(Op::Gt | Op::Gte | Op::Lt | Op::Lte) => Prepared::Number(text().into_owned(), py_float(value)),
            Ok(Op::DateBefore | Op::DateAfter) => Prepared::Date(FlagDate::compile(&text())),
            Ok(Op::SemverTilde) => Prepared::Range(semver::tilde(&text())),
            Ok(Op::SemverCaret) => Prepared::Range(semver::caret(&text())),
            Ok(Op::SemverWildcard) => Prepared::Range(semver::wildcard(&text())),
            Ok(Op::SemverEq | Op::SemverNeq | Op::SemverGt | Op::SemverGte | Op::SemverLt | Op::SemverLte) => {
                Prepared::Version(semver::parse(&text()))
            }
            Ok(Op::IsSet | Op::IsNotSet) | Err(_) => Prepared::None,
        };
        PropertyMatcher { key: key.into(), op, prepared }
    }

    /// The property key this filter reads.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `match_property(property, property_values)`; `lookup` finds a property by key.
    pub fn matches<'a>(&self, lookup: impl Fn(&str) -> Option<Prop<'a>>, now: DateTime<Utc>) -> Result<bool, Stop> {
        let op = match &self.op {
            Ok(op) => *op,
            Err(name) => return Err(Stop::Inconclusive(Cow::Owned(format!("unknown operator {name}")))),
        };
        let Some(p) = lookup(&self.key) else {
            return Err(Stop::Inconclusive(Cow::Borrowed("can't match properties without a given property value")));
        };
        if op == Op::IsNotSet {
            return Err(Stop::Inconclusive(Cow::Borrowed("can't match properties with operator is_not_set")));
        }
        if p.is_null() && op != Op::IsNot {
            return Ok(false);
        }
        match (&self.prepared, op) {
            (Prepared::Folded(values), Op::Exact) => Ok(exact(values, p)),
            (Prepared::Folded(values), _) => Ok(!exact(values, p)),
            (Prepared::None, Op::IsSet) => Ok(true),
            (Prepared::Needle(n), Op::Icontains) => Ok(icontains(&p.text(), n)),
            (Prepared::Needle(n), Op::NotIcontains) => Ok(!icontains(&p.text(), n)),
            (Prepared::Needle(n), Op::StartsWith) => Ok(casefold(&p.text()).starts_with(n.as_str())),
            (Prepared::Needle(n), Op::NotStartsWith) => Ok(!casefold(&p.text()).starts_with(n.as_str())),
            (Prepared::Needle(n), Op::EndsWith) => Ok(casefold(&p.text()).ends_with(n.as_str())),
            (Prepared::Needle(n), Op::NotEndsWith) => Ok(!casefold(&p.text()).ends_with(n.as_str())),
            (Prepared::Regex(re), Op::Regex) => Ok(re.as_ref().is_some_and(|r| r.is_match(&p.text()))),
            (Prepared::Regex(re), _) => Ok(re.as_ref().is_some_and(|r| !r.is_match(&p.text()))),
            (Prepared::Number(text, parsed), _) => compare_numbers(op, p, text, *parsed),
            (Prepared::Date(d), _) => compare_dates(op, p, d, now),
            (Prepared::Version(v), _) => {
                let (Some(flag_v), Some(person_v)) = (v, parse_person_semver(p)) else {
                    return Err(Stop::Inconclusive(Cow::Borrowed("invalid semver")));
                };
                let ord = person_v.cmp(flag_v);
                Ok(match op {
                    Op::SemverEq => ord == Ordering::Equal,
                    Op::SemverNeq => ord != Ordering::Equal,
                    Op::SemverGt => ord == Ordering::Greater,
                    Op::SemverGte => ord != Ordering::Less,
                    Op::SemverLt => ord == Ordering::Less,
                    _ => ord != Ordering::Greater,
                })
            }
            (Prepared::Range(r), _) => match (r, parse_person_semver(p)) {
                (Some(r), Some(v)) => Ok(semver::in_range(v, *r)),
                _ => Err(Stop::Inconclusive(Cow::Borrowed("invalid semver"))),
            },
            _ => Err(Stop::Inconclusive(Cow::Borrowed("operator not applicable"))),
        }
    }
}

fn parse_person_semver(p: Prop<'_>) -> Option<semver::Version> {
    semver::parse(&p.text())
}

fn exact(values: &[String], p: Prop<'_>) -> bool {
    let text = p.text();
    values.iter().any(|v| iequals(&text, v))
}

fn cmp_op<T: PartialOrd + ?Sized>(op: Op, a: &T, b: &T) -> bool {
    match op {
        Op::Gt => a > b,
        Op::Gte => a >= b,
        Op::Lt => a < b,
        _ => a <= b,
    }
}

/// posthog-python: if `float(value)` works, a string property is compared as a *string* with
/// `str(value)`, anything else numerically; if it fails, `str(p)` vs `str(value)` as strings.
fn compare_numbers(op: Op, p: Prop<'_>, text: &str, parsed: Option<f64>) -> Result<bool, Stop> {
    match (parsed, p) {
        (Some(_), p) if p.as_str().is_some() => Ok(cmp_op(op, p.as_str().unwrap_or_default(), text)),
        (Some(f), Prop::Json(Value::Number(n))) => Ok(n.as_f64().is_some_and(|x| cmp_op(op, &x, &f))),
        (Some(f), Prop::Json(Value::Bool(b))) => Ok(cmp_op(op, &f64::from(u8::from(*b)), &f)),
        (Some(_), _) => Err(Stop::Abort(Cow::Borrowed("TypeError: cannot order a list or object with a number"))),
        (None, p) => Ok(cmp_op(op, p.text().as_ref(), text)),
    }
}

fn compare_dates(op: Op, p: Prop<'_>, flag: &FlagDate, now: DateTime<Utc>) -> Result<bool, Stop> {
    let Some(flag_date) = flag.resolve(now) else {
        return Err(Stop::Inconclusive(Cow::Borrowed("the date set on the flag is not a valid format")));
    };
    let Some(s) = p.as_str() else {
        return Err(Stop::Inconclusive(Cow::Borrowed("the date provided must be a string or date object")));
    };
    let Some(person_date) = parse_datetime(s, now) else {
        return Err(Stop::Inconclusive(Cow::Borrowed("the date provided is not a valid format")));
    };
    Ok(if op == Op::DateBefore { person_date < flag_date } else { person_date > flag_date })
}
