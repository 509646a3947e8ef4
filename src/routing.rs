//! Which target serves a request: the route named by the request's `model`, then (for flagged routes)
//! the variant the flag gives the caller's distinct_id, else the route's control target. Control serves
//! whenever the flag gives `false`, no variant, a variant the route does not map, is inactive or killed,
//! or cannot be decided locally.

use crate::breaker::{Admit, Breaker};
use crate::config::Anonymous;
use crate::error::{ErrorKind, GatewayError};
use crate::flags::compiled::{EvalInput, FlagValue};
use crate::request::IdentityHeaders;
use crate::state::{AppState, RouteEntry, TargetEntry};

/// Why a target was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The route has no flag.
    NoFlag,
    /// The flag gave a variant the route maps.
    Variant,
    /// No distinct_id: control serves (per the route's `anonymous` setting).
    Anonymous,
    /// No flag definitions loaded yet.
    NoSnapshot,
    /// The flag gave `false` (off, inactive, killed or out of rollout).
    FlagOff,
    /// The flag gave a value the route does not map.
    Unmapped,
    /// Local evaluation could not decide.
    Inconclusive,
    /// The variant is cut off for its error rate.
    CutOff,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoFlag => "no_flag",
            Reason::Variant => "variant",
            Reason::Anonymous => "anonymous",
            Reason::NoSnapshot => "no_snapshot",
            Reason::FlagOff => "flag_off",
            Reason::Unmapped => "unmapped_variant",
            Reason::Inconclusive => "inconclusive",
            Reason::CutOff => "cut_off",
        }
    }
}

/// What the request says about its caller.
pub struct Facts<'a> {
    pub distinct_id: Option<&'a str>,
    /// Read into objects only when a flag is evaluated.
    pub identity: &'a IdentityHeaders,
}

pub struct Decision<'a> {
    pub route: &'a RouteEntry,
    pub target: &'a TargetEntry,
    pub reason: Reason,
    /// Set when the target has a cut-off breaker: how the breaker admitted this request.
    pub admit: Option<Admit>,
    /// What the flag gave this caller (before kill, cut-off or mapping), when it decided.
    pub assigned: Option<FlagValue>,
}

/// Picks the target for `model` and `facts`.
pub fn decide<'a>(state: &'a AppState, model: &str, facts: &Facts<'_>) -> Result<Decision<'a>, GatewayError> {
    let route = state.routes.get(model).ok_or_else(|| {
        GatewayError::new(ErrorKind::UnknownModel, format!("no route serves model {model:?}; see GET /v1/models"))
            .with_param("model")
    })?;
    let control = |reason| Decision { route, target: &route.control, reason, admit: None, assigned: None };
    // The identity headers are checked on every route, and read into objects only for a flag.
    let Some(flag) = &route.flag else {
        facts.identity.check()?;
        return Ok(control(Reason::NoFlag));
    };
    let snapshot = state.snapshot.load();
    let snap = match (facts.distinct_id, &*snapshot) {
        (Some(distinct_id), Some(snap)) => Some((distinct_id, snap)),
        _ => {
            facts.identity.check()?;
            None
        }
    };
    let decision = match facts.distinct_id {
        None if route.anonymous == Anonymous::Reject => {
            return Err(GatewayError::new(
                ErrorKind::MissingDistinctId,
                "this route needs a distinct_id: send the x-distinct-id header (or `user` / `metadata.user_id`)",
            ))
        }
        None => control(Reason::Anonymous),
        Some(_) => match snap {
            None => control(Reason::NoSnapshot),
            Some((distinct_id, snap)) => {
                let identity = facts.identity.parse()?;
                let input = EvalInput {
                    distinct_id,
                    device_id: None,
                    person_properties: &identity.person_properties,
                    groups: &identity.groups,
                    group_properties: &identity.group_properties,
                    now: chrono::Utc::now(),
                };
                let assigned = snap.flags.evaluate(flag, &input).value;
                let key = match &assigned {
                    None => None,
                    Some(FlagValue::Bool(false)) => Some(Err(Reason::FlagOff)),
                    Some(FlagValue::Bool(true)) => Some(Ok(route.variants.get("true"))),
                    Some(FlagValue::Variant(v)) => Some(Ok(route.variants.get(&**v))),
                };
                let decision = match key {
                    None => control(Reason::Inconclusive),
                    Some(Err(reason)) => control(reason),
                    Some(Ok(None)) => control(Reason::Unmapped),
                    Some(Ok(Some(target))) => match target.breaker.as_ref().map(Breaker::allow) {
                        Some(Admit::No) => control(Reason::CutOff),
                        admit => Decision { route, target, reason: Reason::Variant, admit, assigned: None },
                    },
                };
                Decision { assigned, ..decision }
            }
        },
    };
    let served = &decision.target.served;
    let evaluations = || state.metrics.flag_evaluations.with_label_values(&[flag, &served.variant]);
    served.series.flag_evaluations.get_or_init(evaluations).inc();
    Ok(decision)
}
