//! Which target serves a request: the route named by the request's `model`, then (for flagged routes)
//! the variant the flag gives the caller, else the route's control target.

use crate::error::{ErrorKind, GatewayError};
use crate::state::{AppState, RouteEntry, TargetEntry};

/// Why a target was chosen (logged; `control` reasons explain a fall-through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoFlag,
}

pub struct Decision<'a> {
    pub route: &'a RouteEntry,
    pub target: &'a TargetEntry,
    pub reason: Reason,
}

/// Picks the target for `model`.
pub fn decide<'a>(state: &'a AppState, model: &str) -> Result<Decision<'a>, GatewayError> {
    let route = state.routes.get(model).ok_or_else(|| {
        GatewayError::new(
            ErrorKind::UnknownModel,
            format!("no route serves model {model:?}; see GET /v1/models"),
        )
        .with_param("model")
    })?;
    Ok(Decision {
        route,
        target: &route.control,
        reason: Reason::NoFlag,
    })
}
