//! The admin API: `GET /admin/flags` (definitions, overrides, kill and cut-off state, live figures),
//! `PATCH /admin/flags/{key}` (a JSON merge of flag fields: `{"active": false}` kills, `{"active":
//! true}` revives, `{"rollout_percentage": 20}` ramps) and `DELETE /admin/flags/{key}/override`.
//! Bearer token from the env var the config names (off when unset), compared in constant time.
//! Overrides apply from the next request, survive reloads (snapshot = source ⊕ overrides), are
//! persisted to the state file and logged as audit lines. With `[overrides]` each change is also
//! shared with the fleet through Redis (`fleet.rs`).

use crate::error::{Dialect, ErrorKind, GatewayError};
use crate::proxy::full;
use crate::relay::{BoxError, ResponseBody};
use crate::snapshot::{Overrides, ROLLOUT_SHORTHAND};
use crate::state::{AppState, TargetEntry};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use subtle::ConstantTimeEq;

/// Admin request bodies are small JSON patches.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Serves `/admin/...`.
pub async fn handle<B>(state: &AppState, req: Request<B>, peer: Option<SocketAddr>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match serve(state, req, peer).await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = Response::new(full(e.body(Dialect::OpenAi)));
            *resp.status_mut() = status;
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            resp
        }
    }
}

async fn serve<B>(state: &AppState, req: Request<B>, peer: Option<SocketAddr>) -> Result<Value, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Some(token) = &state.config.admin.token else {
        return Err(GatewayError::new(ErrorKind::NotFound, "the admin API is off: set [admin] token_env"));
    };
    if !bearer_matches(req.headers(), token) {
        return Err(GatewayError::new(ErrorKind::Unauthorized, "missing or wrong admin token"));
    }
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
    let actor = actor(&req, peer);
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["flags"]) => Ok(describe(state)),
        (Method::PATCH, ["flags", key]) => {
            let body = read_json(req).await?;
            patch(state, key, body, &actor)?;
            Ok(describe_one(state, key))
        }
        (Method::DELETE, ["flags", key, "override"]) => {
            drop_override(state, key, &actor)?;
            Ok(describe_one(state, key))
        }
        (_, ["flags"] | ["flags", _] | ["flags", _, "override"]) => {
            Err(GatewayError::new(ErrorKind::MethodNotAllowed, format!("{} is not supported on {path}", req.method())))
        }
        _ => Err(GatewayError::new(ErrorKind::NotFound, format!("no admin endpoint {path}"))),
    }
}

/// Whether the request's `Authorization: Bearer` token equals `secret`, compared in constant time.
pub fn bearer_matches(headers: &http::HeaderMap, secret: &secrecy::SecretString) -> bool {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(presented.as_bytes().ct_eq(secret.expose_secret().as_bytes()))
}

/// Who made a change, for the audit line: `x-switchyard-actor` if given, and the peer address.
fn actor<B>(req: &Request<B>, peer: Option<SocketAddr>) -> String {
    let name = req.headers().get("x-switchyard-actor").and_then(|v| v.to_str().ok()).unwrap_or("admin-token");
    match peer {
        Some(peer) => format!("{name}@{peer}"),
        None => name.to_owned(),
    }
}

async fn read_json<B>(req: Request<B>) -> Result<Map<String, Value>, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let bytes = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| GatewayError::new(ErrorKind::InvalidRequest, format!("cannot read the body: {e}")))?
        .to_bytes();
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) if !o.is_empty() => Ok(o),
        Ok(_) => {
            Err(GatewayError::new(ErrorKind::InvalidRequest, "the body must be a non-empty JSON object of flag fields"))
        }
        Err(e) => Err(GatewayError::new(ErrorKind::InvalidRequest, format!("the body is not valid JSON: {e}"))),
    }
}

/// Checks the fields of a patch whose meaning the gateway knows.
fn validate(patch: &Map<String, Value>) -> Result<(), GatewayError> {
    let bad = |field: &str, why: &str| {
        Err(GatewayError::new(ErrorKind::InvalidRequest, format!("`{field}` {why}")).with_param(field))
    };
    for (k, v) in patch {
        match k.as_str() {
            "key" | "id" => return bad(k, "cannot be changed"),
            "active" | "ensure_experience_continuity" if !v.is_boolean() => return bad(k, "must be true or false"),
            ROLLOUT_SHORTHAND if !v.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p)) => {
                return bad(k, "must be a number from 0 to 100")
            }
            "filters" if !v.is_object() && !v.is_null() => return bad(k, "must be an object"),
            _ => {}
        }
    }
    Ok(())
}

fn known_flag(state: &AppState, key: &str) -> Result<(), GatewayError> {
    let snap = state.snapshot.load();
    if snap.as_ref().is_some_and(|s| s.flags.flag(key).is_some()) {
        Ok(())
    } else {
        Err(GatewayError::new(ErrorKind::NotFound, format!("no flag {key:?} in the loaded definitions")))
    }
}

fn patch(state: &AppState, key: &str, patch: Map<String, Value>, actor: &str) -> Result<(), GatewayError> {
    known_flag(state, key)?;
    validate(&patch)?;
    let overrides = state
        .sources
        .update_overrides(state, |o| {
            let entry = o.entry(key.to_owned()).or_default();
            for (k, v) in &patch {
                entry.insert(k.clone(), v.clone());
            }
        })
        .map_err(|e| GatewayError::new(ErrorKind::InvalidRequest, format!("the patched flag does not compile: {e}")))?;
    let patch = Value::Object(patch);
    tracing::info!(target: "switchyard::audit", actor, flag = key, action = "patch", %patch, "admin override");
    persist(state, &overrides);
    if let Some(fleet) = state.fleet.get() {
        fleet.share(key, overrides.get(key).cloned());
    }
    Ok(())
}

fn drop_override(state: &AppState, key: &str, actor: &str) -> Result<(), GatewayError> {
    if !state.sources.overrides().contains_key(key) {
        return Err(GatewayError::new(ErrorKind::NotFound, format!("flag {key:?} has no override")));
    }
    let overrides = state
        .sources
        .update_overrides(state, |o| {
            o.remove(key);
        })
        .map_err(|e| GatewayError::new(ErrorKind::Internal, format!("cannot drop the override: {e}")))?;
    tracing::info!(target: "switchyard::audit", actor, flag = key, action = "drop_override", "admin override");
    persist(state, &overrides);
    if let Some(fleet) = state.fleet.get() {
        fleet.share(key, None);
    }
    Ok(())
}

/// Writes the overrides to the state file (temp file + rename); with shared overrides it mirrors the
/// last state seen from the fleet, used at startup until Redis answers.
pub(crate) fn persist(state: &AppState, overrides: &Overrides) {
    let Some(path) = &state.config.admin.state_file else { return };
    let doc = json!({"overrides": overrides});
    let tmp = path.with_extension("tmp");
    let result = std::fs::write(&tmp, doc.to_string()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::error!(path = %path.display(), error = %e, "cannot persist admin overrides; they will not survive a restart");
    }
}

/// Reads persisted overrides; a missing file is no overrides.
pub fn load_state(path: &Path) -> Result<Overrides, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Overrides::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    serde_json::from_value(v.get("overrides").cloned().unwrap_or(Value::Null))
        .map_err(|e| format!("{}: `overrides` must map flag keys to objects: {e}", path.display()))
}

fn describe(state: &AppState) -> Value {
    let snap = state.snapshot.load();
    let mut keys: BTreeSet<String> =
        state.routes.values().filter_map(|r| r.flag.as_deref().map(str::to_owned)).collect();
    if let Some(s) = snap.as_ref() {
        keys.extend(s.flags.keys().map(str::to_owned));
    }
    let source = snap.as_ref().map(|s| {
        json!({"origin": s.origin.as_str(), "loaded_at": chrono::DateTime::<chrono::Utc>::from(s.loaded_at).to_rfc3339()})
    });
    json!({
        "ready": state.ready.load(Ordering::Acquire),
        "source": source,
        "flags": keys.iter().map(|k| describe_one(state, k)).collect::<Vec<_>>(),
    })
}

fn describe_one(state: &AppState, key: &str) -> Value {
    let snap = state.snapshot.load();
    let snap = snap.as_ref();
    let compiled = snap.and_then(|s| s.flags.flag(key));
    let definition = snap
        .and_then(|s| s.source.get("flags").and_then(Value::as_array).cloned())
        .and_then(|flags| flags.into_iter().find(|f| f.get("key").and_then(Value::as_str) == Some(key)));
    let override_ =
        snap.and_then(|s| s.overrides.get(key).cloned()).or_else(|| state.sources.overrides().get(key).cloned());
    let killed = override_.as_ref().and_then(|o| o.get("active")).and_then(Value::as_bool) == Some(false);
    let routes: Vec<Value> = state
        .routes
        .values()
        .filter(|r| r.flag.as_deref() == Some(key))
        .map(|r| {
            let variants: Map<String, Value> = r.variants.iter().map(|(k, t)| (k.clone(), target_view(t))).collect();
            json!({"route": &*r.model, "control": target_view(&r.control), "variants": variants})
        })
        .collect();
    json!({
        "key": key,
        "found": compiled.is_some(),
        "active": compiled.is_some_and(|f| f.active()),
        "killed": killed,
        "override": override_,
        "variants": compiled.map(|f| f.variants().map(|(k, p)| json!({"key": k, "rollout_percentage": p})).collect::<Vec<_>>()),
        "definition": definition,
        "routes": routes,
    })
}

fn target_view(t: &TargetEntry) -> Value {
    let s = &t.served;
    let mut v = json!({
        "backend": &*s.backend,
        "model": &*s.model,
        "requests": s.stats.requests.load(Ordering::Relaxed),
        "errors": s.stats.errors.load(Ordering::Relaxed),
    });
    if let Some(b) = &t.breaker {
        let (requests, errors) = b.figures();
        v["cut_off"] = json!({"state": b.state().as_str(), "window_requests": requests, "window_errors": errors});
    }
    v
}

fn json_response(status: StatusCode, v: &Value) -> Response<ResponseBody> {
    let mut resp = Response::new(full(v.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::actor;

    /// The audit line names who asked (`x-switchyard-actor`, else the token) and from where.
    #[test]
    fn the_actor_is_the_named_caller_at_its_peer_address() {
        let peer = Some("127.0.0.1:5000".parse().unwrap());
        let named = http::Request::builder().header("x-switchyard-actor", "oncall").body(()).unwrap();
        assert_eq!(actor(&named, peer), "oncall@127.0.0.1:5000");
        let anonymous = http::Request::new(());
        assert_eq!(actor(&anonymous, peer), "admin-token@127.0.0.1:5000");
        assert_eq!(actor(&named, None), "oncall");
    }
}
