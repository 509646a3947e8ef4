//! Optional client authentication: API keys read from env vars named in `[[auth.keys]]`, presented as
//! `Authorization: Bearer` or `x-api-key`, each allowed a set of routes, compared in constant time and
//! never logged. A key may be required to sign the distinct_id it claims (`x-distinct-id-signature`:
//! hex HMAC-SHA256 of the id with a secret from env), so an untrusted client cannot pick its own
//! variant.

use crate::error::{ErrorKind, GatewayError};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// `[[auth.keys]]` as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyToml {
    /// Names the caller in logs (never the key itself).
    pub name: String,
    pub key_env: String,
    /// Routes (model names) this key may call; all when absent.
    pub routes: Option<Vec<String>>,
    /// How this caller's distinct_id is trusted.
    #[serde(default)]
    pub distinct_id: IdPolicy,
}

/// Whether a caller may claim any distinct_id, or only one it signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdPolicy {
    #[default]
    Trusted,
    Signed,
}

/// `[auth]` as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthToml {
    #[serde(default)]
    pub keys: Vec<KeyToml>,
    /// Env var with the HMAC secret for `x-distinct-id-signature`.
    pub distinct_id_secret_env: Option<String>,
}

/// A caller's key, resolved.
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub name: String,
    key: SecretString,
    routes: Option<Vec<String>>,
    policy: IdPolicy,
}

/// Client authentication, resolved; `None` in the config means open access.
#[derive(Debug, Clone)]
pub struct Auth {
    keys: Vec<ClientKey>,
    id_secret: Option<SecretString>,
}

impl Auth {
    /// Resolves the keys from the environment; returns (key path, why) problems.
    pub fn resolve(t: &AuthToml, env: &dyn Fn(&str) -> Option<String>) -> Result<Auth, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut keys = Vec::new();
        for (i, k) in t.keys.iter().enumerate() {
            match env(&k.key_env).filter(|v| !v.is_empty()) {
                Some(v) => keys.push(ClientKey {
                    name: k.name.clone(),
                    key: v.into(),
                    routes: k.routes.clone(),
                    policy: k.distinct_id,
                }),
                None => problems.push((
                    format!("auth.keys[{i}].key_env"),
                    format!("environment variable {} is not set", k.key_env),
                )),
            }
        }
        let id_secret = match &t.distinct_id_secret_env {
            Some(name) => match env(name).filter(|v| !v.is_empty()) {
                Some(v) => Some(SecretString::from(v)),
                None => {
                    problems.push((
                        "auth.distinct_id_secret_env".into(),
                        format!("environment variable {name} is not set"),
                    ));
                    None
                }
            },
            None => None,
        };
        if t.keys.iter().any(|k| k.distinct_id == IdPolicy::Signed) && t.distinct_id_secret_env.is_none() {
            problems.push((
                "auth.distinct_id_secret_env".into(),
                "required when a key has distinct_id = \"signed\"".into(),
            ));
        }
        if t.keys.is_empty() {
            problems.push(("auth.keys".into(), "name at least one key, or remove [auth] for open access".into()));
        }
        if problems.is_empty() {
            Ok(Auth { keys, id_secret })
        } else {
            Err(problems)
        }
    }

    /// The caller's key from `Authorization: Bearer` or `x-api-key`, or 401.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<&ClientKey, GatewayError> {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .unwrap_or("");
        // Every key is compared, so the time taken does not say which one nearly matched.
        let mut found = None;
        for k in &self.keys {
            if bool::from(presented.as_bytes().ct_eq(k.key.expose_secret().as_bytes())) {
                found = Some(k);
            }
        }
        found.ok_or_else(|| GatewayError::new(ErrorKind::Unauthorized, "missing or unknown API key"))
    }

    /// Checks that `key` may call `route` and may claim `distinct_id`.
    pub fn authorize(
        &self,
        key: &ClientKey,
        route: &str,
        distinct_id: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Result<(), GatewayError> {
        if key.routes.as_ref().is_some_and(|r| !r.iter().any(|m| m == route)) {
            return Err(GatewayError::new(ErrorKind::Forbidden, format!("this API key may not call model {route:?}")));
        }
        if let (IdPolicy::Signed, Some(id)) = (key.policy, distinct_id) {
            let signature = headers.get("x-distinct-id-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
            let ok = self.id_secret.as_ref().is_some_and(|s| verify(s, id, signature));
            if !ok {
                return Err(GatewayError::new(
                    ErrorKind::Forbidden,
                    "the distinct_id must be signed: x-distinct-id-signature = hex HMAC-SHA256 of the id",
                ));
            }
        }
        Ok(())
    }
}

/// The signature a trusted backend sends with a distinct_id: lower-case hex HMAC-SHA256.
pub fn sign(secret: &str, distinct_id: &str) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(distinct_id.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn verify(secret: &SecretString, distinct_id: &str, signature_hex: &str) -> bool {
    let expected = sign(secret.expose_secret(), distinct_id);
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(signature_hex.to_ascii_lowercase().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
