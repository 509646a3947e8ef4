//! Config validation: each section deserialized on its own (so one bad section does not hide the
//! others), then the cross-checks (backends named by routes exist, secrets present, files readable);
//! every problem is collected with its key path.

use super::*;
use std::collections::HashSet;

/// A checked client certificate: the parsed pair, and the PEM text for clients that take files' bytes.
struct ClientCert {
    key: std::sync::Arc<rustls::sign::CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

pub(super) struct Validator {
    pub(super) file: String,
    pub(super) problems: Vec<Problem>,
}

impl Validator {
    pub(super) fn problem(&mut self, path: &str, why: String) {
        self.problems.push(Problem { file: self.file.clone(), path: path.to_owned(), why });
    }

    /// Deserializes `value` as `T`, recording a problem (with the key path under `path`) on failure.
    pub(super) fn typed<T: serde::de::DeserializeOwned>(&mut self, value: &toml::Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let full = match (path.is_empty(), inner.as_str()) {
                    (_, ".") => path.to_owned(),
                    (true, _) => inner,
                    (false, _) => format!("{path}.{inner}"),
                };
                self.problem(&full, e.into_inner().to_string());
                None
            }
        }
    }

    pub(super) fn section<T: serde::de::DeserializeOwned>(&mut self, table: &toml::Table, key: &str) -> Option<T> {
        table.get(key).and_then(|v| self.typed(v, key))
    }

    /// `[overrides]`: exactly one of `redis_url` (no password in it) and `redis_url_env`.
    pub(super) fn overrides(
        &mut self,
        o: OverridesToml,
        env: &dyn Fn(&str) -> Option<String>,
        base_dir: &Path,
    ) -> Option<OverridesConfig> {
        let (url, key) = match (o.redis_url, &o.redis_url_env) {
            (Some(_), Some(_)) => {
                self.problem("overrides", "give `redis_url` or `redis_url_env`, not both".to_owned());
                return None;
            }
            (None, None) => {
                self.problem("overrides", "needs `redis_url` (or `redis_url_env`)".to_owned());
                return None;
            }
            (Some(url), None) => {
                if url_password(&url).is_some() {
                    self.problem(
                        "overrides.redis_url",
                        "carries a password: put the URL in an environment variable and name it with `redis_url_env`"
                            .to_owned(),
                    );
                    return None;
                }
                (url, "overrides.redis_url")
            }
            (None, Some(name)) => match env(name).filter(|s| !s.is_empty()) {
                Some(url) => (url, "overrides.redis_url_env"),
                None => {
                    self.problem("overrides.redis_url_env", format!("environment variable {name} is not set"));
                    return None;
                }
            },
        };
        // The value itself is never echoed: it may hold a password.
        let secure = url.starts_with("rediss://");
        if !secure && !url.starts_with("redis://") {
            self.problem(key, "must be a URL like redis://host:6379 or rediss://host:6380 (TLS)".to_owned());
            return None;
        }
        if secure && url.contains('#') {
            // The redis client reads `#insecure` as "skip certificate checks".
            self.problem(
                key,
                "takes no #fragment: certificates are always verified (trust a private CA with `ca_file`)".to_owned(),
            );
            return None;
        }
        let has_tls_files = o.ca_file.is_some() || o.client_cert_file.is_some() || o.client_key_file.is_some();
        if has_tls_files && !secure {
            self.problem("overrides", "`ca_file` and the client certificate are only for a rediss:// URL".to_owned());
            return None;
        }
        let before = self.problems.len();
        let ca_pem =
            o.ca_file.as_ref().and_then(|f| self.ca_bundle("overrides.ca_file", &base_dir.join(f)).map(|(pem, _)| pem));
        let client =
            self.client_cert("overrides", o.client_cert_file.as_deref(), o.client_key_file.as_deref(), base_dir);
        if self.problems.len() > before {
            return None;
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            self.problem(key, format!("not a usable Redis URL: {e}"));
            return None;
        }
        let prefix = o.key_prefix.unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_owned());
        if prefix.is_empty() || prefix.chars().any(char::is_whitespace) {
            self.problem("overrides.key_prefix", "must be non-empty, without spaces".to_owned());
            return None;
        }
        let tls = has_tls_files.then(|| {
            let (client_cert_pem, client_key_pem) = match client {
                Some(c) => (Some(c.cert_pem), Some(c.key_pem.into())),
                None => (None, None),
            };
            crate::config::RedisTls { ca_pem, client_cert_pem, client_key_pem }
        });
        Some(OverridesConfig {
            redis_url: url.into(),
            key: format!("{prefix}:overrides"),
            channel: format!("{prefix}:overrides:changes"),
            tls,
        })
    }

    /// A `ca_file` bundle (`key` names it in problems): its PEM text and the trust roots it holds,
    /// every certificate a usable CA certificate.
    fn ca_bundle(&mut self, key: &str, file: &Path) -> Option<(Vec<u8>, rustls::RootCertStore)> {
        let read = std::fs::read(file).map_err(|e| e.to_string());
        match read.and_then(|pem| crate::tls::root_store(&pem).map(|store| (pem, store))) {
            Ok(bundle) => Some(bundle),
            Err(e) => {
                self.problem(key, format!("{}: {e}", file.display()));
                None
            }
        }
    }

    /// A client certificate for mutual TLS (`{section}.client_cert_file` and `client_key_file`): both
    /// or neither, both readable, a certificate chain and the key that belongs to it.
    fn client_cert(
        &mut self,
        section: &str,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
        base_dir: &Path,
    ) -> Option<ClientCert> {
        let (cert_file, key_file) = match (cert_file, key_file) {
            (None, None) => return None,
            (Some(c), Some(k)) => (base_dir.join(c), base_dir.join(k)),
            (Some(_), None) => {
                self.problem(&format!("{section}.client_cert_file"), "needs `client_key_file` too".to_owned());
                return None;
            }
            (None, Some(_)) => {
                self.problem(&format!("{section}.client_key_file"), "needs `client_cert_file` too".to_owned());
                return None;
            }
        };
        let cert = std::fs::read(&cert_file)
            .map_err(|e| self.problem(&format!("{section}.client_cert_file"), format!("{}: {e}", cert_file.display())));
        let key = std::fs::read(&key_file)
            .map_err(|e| self.problem(&format!("{section}.client_key_file"), format!("{}: {e}", key_file.display())));
        let (Ok(cert_pem), Ok(key_pem)) = (cert, key) else { return None };
        if let Err(e) = crate::tls::certificates(&cert_pem) {
            self.problem(&format!("{section}.client_cert_file"), format!("{}: {e}", cert_file.display()));
            return None;
        }
        match crate::tls::certified_key(&cert_pem, &key_pem) {
            Ok(key) => Some(ClientCert { key: std::sync::Arc::new(key), cert_pem, key_pem }),
            Err(e) => {
                self.problem(&format!("{section}.client_key_file"), format!("{}: {e}", key_file.display()));
                None
            }
        }
    }

    pub(super) fn prices(&mut self, table: &toml::Table, base_dir: &Path) -> crate::usage::PriceTable {
        use crate::usage::PriceTable;
        let mut out = PriceTable::builtin();
        let Some(p) = self.section::<PricesToml>(table, "prices") else { return out };
        if let Some(path) = &p.litellm_file {
            let path = base_dir.join(path);
            match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| PriceTable::from_litellm_json(&b)) {
                Ok(t) => out.merge(t),
                Err(e) => self.problem("prices.litellm_file", format!("{}: {e}", path.display())),
            }
        }
        if let Some(path) = &p.file {
            let path = base_dir.join(path);
            match std::fs::read_to_string(&path).map_err(|e| e.to_string()).and_then(|t| PriceTable::from_toml(&t)) {
                Ok(t) => out.merge(t),
                Err(e) => self.problem("prices.file", format!("{}: {e}", path.display())),
            }
        }
        match PriceTable::from_specs(&p.models) {
            Ok(t) => out.merge(t),
            Err(e) => self.problem("prices.models", e),
        }
        out
    }

    pub(super) fn backends(
        &mut self,
        table: &toml::Table,
        env: &dyn Fn(&str) -> Option<String>,
        base_dir: &Path,
    ) -> BTreeMap<String, Backend> {
        let mut out = BTreeMap::new();
        let Some(raw) = table.get("backends") else {
            return out;
        };
        let Some(raw) = raw.as_table() else {
            self.problem("backends", "must be a table of named backends".to_owned());
            return out;
        };
        for (name, value) in raw {
            let path = format!("backends.{name}");
            let Some(b) = self.typed::<BackendToml>(value, &path) else {
                continue;
            };
            let base_url = match (b.kind, b.base_url) {
                (BackendKind::Mock, url) => url.unwrap_or_else(|| "mock:".to_owned()),
                (_, None) => {
                    self.problem(&format!("{path}.base_url"), "required for this kind".to_owned());
                    continue;
                }
                (_, Some(url)) => {
                    match url.parse::<http::Uri>() {
                        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
                        _ => self
                            .problem(&format!("{path}.base_url"), format!("{url:?} is not an http:// or https:// URL")),
                    }
                    url.trim_end_matches('/').to_owned()
                }
            };
            let api_key = match &b.api_key_env {
                None => None,
                Some(var) => match env(var).filter(|s| !s.is_empty()) {
                    Some(key) => Some(secrecy::SecretString::from(key)),
                    None => {
                        self.problem(&format!("{path}.api_key_env"), format!("environment variable {var} is not set"));
                        None
                    }
                },
            };
            if !(0.0..=1.0).contains(&b.mock.error_rate) {
                self.problem(&format!("{path}.mock.error_rate"), "must be between 0.0 and 1.0".to_owned());
            }
            let ca_roots = b.ca_file.as_ref().and_then(|f| {
                let key = format!("{path}.ca_file");
                if !base_url.starts_with("https://") {
                    self.problem(&key, "only for an https:// base_url".to_owned());
                    return None;
                }
                self.ca_bundle(&key, &base_dir.join(f)).map(|(_, store)| std::sync::Arc::new(store))
            });
            let client_cert = self
                .client_cert(&path, b.client_cert_file.as_deref(), b.client_key_file.as_deref(), base_dir)
                .map(|c| c.key);
            if client_cert.is_some() && !base_url.starts_with("https://") {
                self.problem(&format!("{path}.client_cert_file"), "only for an https:// base_url".to_owned());
            }
            if b.max_response_bytes == Some(0) {
                self.problem(&format!("{path}.max_response_bytes"), "must be at least 1".to_owned());
            }
            if b.kind != BackendKind::Mock && b.mock != MockOptions::default() {
                self.problem(&format!("{path}.mock"), "only for kind = \"mock\"".to_owned());
            }
            out.insert(
                name.clone(),
                Backend {
                    name: name.clone(),
                    kind: b.kind,
                    base_url,
                    api_key,
                    connect_timeout: b.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                    first_byte_timeout: b.first_byte_timeout.unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT),
                    idle_timeout: b.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
                    total_timeout: b.total_timeout.unwrap_or(DEFAULT_TOTAL_TIMEOUT),
                    pool_idle_timeout: b.pool_idle_timeout.unwrap_or(DEFAULT_POOL_IDLE_TIMEOUT),
                    forward_headers: b.forward_headers.map(|h| h.into_iter().map(|s| s.to_ascii_lowercase()).collect()),
                    max_in_flight: b.max_in_flight.map(|n| n.max(1)),
                    ca_roots,
                    client_cert,
                    max_response_bytes: b.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
                    mock: b.mock,
                },
            );
        }
        out
    }

    /// `[server.tls]`: both files readable, a certificate chain and the key that belongs to it.
    pub(super) fn tls(&mut self, t: &TlsToml, base_dir: &Path) -> Option<TlsConfig> {
        let cert_file = base_dir.join(&t.cert_file);
        let key_file = base_dir.join(&t.key_file);
        let cert = std::fs::read(&cert_file)
            .map_err(|e| self.problem("server.tls.cert_file", format!("{}: {e}", cert_file.display())));
        let key = std::fs::read(&key_file)
            .map_err(|e| self.problem("server.tls.key_file", format!("{}: {e}", key_file.display())));
        let (Ok(cert), Ok(key)) = (cert, key) else { return None };
        if let Err(e) = crate::tls::certificates(&cert) {
            self.problem("server.tls.cert_file", format!("{}: {e}", cert_file.display()));
            return None;
        }
        match crate::tls::certified_key(&cert, &key) {
            Ok(pair) => Some(TlsConfig {
                cert_file,
                key_file,
                reload_interval: t.reload_interval.unwrap_or(crate::tls::DEFAULT_RELOAD_INTERVAL),
                key: pair,
            }),
            Err(e) => {
                self.problem("server.tls.key_file", format!("{}: {e}", key_file.display()));
                None
            }
        }
    }

    pub(super) fn routes(&mut self, table: &toml::Table, backends: &BTreeMap<String, Backend>) -> Vec<Route> {
        let mut out = Vec::new();
        let Some(raw) = table.get("routes") else {
            return out;
        };
        let Some(raw) = raw.as_array() else {
            self.problem("routes", "must be an array of tables ([[routes]])".to_owned());
            return out;
        };
        let mut seen = HashSet::new();
        for (i, value) in raw.iter().enumerate() {
            let path = format!("routes[{i}]");
            let Some(r) = self.typed::<Route>(value, &path) else {
                continue;
            };
            if !seen.insert(r.model.clone()) {
                self.problem(&format!("{path}.model"), format!("{:?} is already served by an earlier route", r.model));
            }
            let targets = std::iter::once(("control".to_owned(), &r.control))
                .chain(r.variants.iter().map(|(k, t)| (format!("variants.{k}"), t)));
            for (key, t) in targets {
                if !backends.contains_key(&t.backend) {
                    self.problem(&format!("{path}.{key}.backend"), format!("no backend named {:?}", t.backend));
                }
            }
            if r.flag.is_none() && !r.variants.is_empty() {
                self.problem(&format!("{path}.variants"), "variants need a flag".to_owned());
            }
            if let Some(c) = &r.cutoff {
                if !(c.error_rate > 0.0 && c.error_rate <= 1.0) {
                    self.problem(&format!("{path}.cutoff.error_rate"), "must be above 0.0 and at most 1.0".to_owned());
                }
                if c.min_requests == 0 || c.probes == 0 {
                    self.problem(&format!("{path}.cutoff"), "min_requests and probes must be at least 1".to_owned());
                }
            }
            out.push(r);
        }
        out
    }
}
