//! The TOML configuration: its model (unknown keys rejected), loading with every problem reported at
//! once with its key path, secrets read only from the environment variables the config names, and
//! the defaults (each a named constant with the reason for its value).

use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Address when neither the config nor `--listen` gives one: loopback, so a demo never opens a public port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Connecting to a provider is fast or broken; 5 s leaves room for a slow TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Until the upstream's response headers: large non-streamed completions can take minutes.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest silence between two stream chunks; providers send pings well inside this.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Whole exchange, streams included: the longest reasonable generation.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(600);
/// Request bodies above this are refused with 413; Anthropic's own cap is 32 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// On SIGTERM, how long in-flight streams may run before the process exits anyway.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// PostHog's last good definitions, relative to the config file's folder.
pub const DEFAULT_POSTHOG_CACHE: &str = "posthog-definitions-cache.json";
/// Admin overrides persist here (relative to the config file's folder) so they survive a restart.
pub const DEFAULT_STATE_FILE: &str = "switchyard-state.json";
/// Prefix of the Redis keys shared overrides use: the hash `{prefix}:overrides` and the pub/sub
/// channel `{prefix}:overrides:changes`. A second fleet on the same Redis picks another prefix.
pub const DEFAULT_REDIS_PREFIX: &str = "switchyard";
/// Used for an OpenAI-dialect app's request on an Anthropic backend when the app sent no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// `anthropic-version` sent to Anthropic backends when the caller did not send one.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// The whole configuration, validated; durations and secrets resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub flags: Option<FlagsConfig>,
    /// PostHog's keys, read from the variables `[flags.posthog]` names.
    pub posthog_keys: Option<PosthogKeys>,
    pub backends: BTreeMap<String, Backend>,
    pub routes: Vec<Route>,
    pub admin: AdminConfig,
    pub server: ServerConfig,
    /// Admin overrides shared by a fleet through Redis; `None`: this replica keeps its own.
    pub overrides: Option<OverridesConfig>,
    /// Built-in prices ⊕ LiteLLM file ⊕ price file ⊕ inline `[prices.models]`, later wins.
    pub prices: crate::usage::PriceTable,
    /// `[export.posthog]` with its project key, when events go to PostHog.
    pub export: Option<(crate::export::ExportConfig, String)>,
    /// Directory of the config file: relative paths inside it are resolved against it.
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsConfig {
    /// A file in the shape of PostHog's flag-definitions response.
    pub file: Option<PathBuf>,
    pub posthog: Option<PosthogConfig>,
    /// How often the flags file's metadata is checked for a change.
    #[serde(default, with = "opt_duration")]
    pub file_poll_interval: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosthogConfig {
    pub host: String,
    pub project_api_key_env: String,
    pub secret_key_env: String,
    #[serde(default, with = "opt_duration")]
    pub poll_interval: Option<Duration>,
    /// Where the last good definitions are cached, so a restart during a PostHog outage still routes.
    pub cache_file: Option<PathBuf>,
    /// Env var holding the secret that authenticates `POST /webhooks/posthog` (an immediate re-poll).
    pub webhook_secret_env: Option<String>,
}

/// PostHog's project key (sent as `token`) and feature-flags secure key (sent as a bearer token).
#[derive(Debug, Clone)]
pub struct PosthogKeys {
    pub project_api_key: String,
    pub secret_key: secrecy::SecretString,
    /// `None`: the webhook endpoint is off.
    pub webhook_secret: Option<secrecy::SecretString>,
}

/// Which wire protocol a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Openai,
    Anthropic,
    /// Built in: answers both dialects with deterministic text, no network, no key.
    Mock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendToml {
    kind: BackendKind,
    base_url: Option<String>,
    api_key_env: Option<String>,
    #[serde(default, with = "opt_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    first_byte_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    total_timeout: Option<Duration>,
    /// When set, only these request headers (lower-case) are forwarded, besides the ones Switchyard sets.
    forward_headers: Option<Vec<String>>,
    #[serde(default)]
    mock: MockOptions,
}

/// Behaviour of a `kind = "mock"` backend.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MockOptions {
    /// Delay before the response headers.
    #[serde(default, with = "opt_duration")]
    pub latency: Option<Duration>,
    /// Delay between two stream chunks.
    #[serde(default, with = "opt_duration")]
    pub chunk_delay: Option<Duration>,
    /// Share of requests answered with `error_status` (0.0 to 1.0).
    #[serde(default)]
    pub error_rate: f64,
    /// Status of the injected errors (default 500).
    pub error_status: Option<u16>,
    /// Reply text; default names the model.
    pub reply: Option<String>,
}

/// A validated backend.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub kind: BackendKind,
    /// Scheme, host and optional path prefix, without a trailing slash.
    pub base_url: String,
    pub api_key: Option<secrecy::SecretString>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub total_timeout: Duration,
    pub forward_headers: Option<Vec<String>>,
    pub mock: MockOptions,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub backend: String,
    pub model: String,
}

/// What to do with a request that names no distinct_id on a flagged route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    #[default]
    Control,
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub model: String,
    pub flag: Option<String>,
    pub control: Target,
    #[serde(default)]
    pub variants: BTreeMap<String, Target>,
    #[serde(default)]
    pub anonymous: Anonymous,
    /// `max_tokens` sent to an Anthropic backend when an OpenAI-dialect app omits it.
    pub default_max_tokens: Option<u32>,
    /// Retry once on the control target when a variant fails before the first byte.
    #[serde(default = "yes")]
    pub fallback: bool,
    /// Automatic cut-off of a failing variant; off when absent.
    pub cutoff: Option<crate::breaker::CutoffConfig>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportToml {
    posthog: Option<crate::export::ExportConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesToml {
    /// A TOML price file (`[models."name"] input = ... output = ...`, USD per million tokens).
    file: Option<PathBuf>,
    /// LiteLLM's `model_prices_and_context_window.json`.
    litellm_file: Option<PathBuf>,
    #[serde(default)]
    models: BTreeMap<String, crate::usage::PriceSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminToml {
    token_env: Option<String>,
    state_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// `None`: the admin API is off.
    pub token: Option<secrecy::SecretString>,
    /// Where admin overrides are persisted (always set after loading).
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverridesToml {
    /// A URL without a password, e.g. `redis://redis.switchyard:6379/0`.
    redis_url: Option<String>,
    /// Or the name of an environment variable holding the URL (required when it carries a password).
    redis_url_env: Option<String>,
    key_prefix: Option<String>,
}

/// `[overrides]`: where a fleet keeps its shared admin overrides.
#[derive(Debug, Clone)]
pub struct OverridesConfig {
    /// May carry a password, so never in Debug output.
    pub redis_url: secrecy::SecretString,
    /// The hash holding one field per overridden flag (value: the override, a JSON object).
    pub key: String,
    /// The pub/sub channel on which every change is announced.
    pub channel: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerToml {
    max_body_bytes: Option<usize>,
    #[serde(default, with = "opt_duration")]
    shutdown_grace: Option<Duration>,
    #[serde(default)]
    log_format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub path: String,
    pub why: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.why)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.why)
        }
    }
}

/// Every problem found, in file order; never empty.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a config file; `env` resolves the secrets' variable names.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![Problem { file: file.clone(), path: String::new(), why: format!("cannot read: {e}") }])
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &file, base_dir, env)
}

/// Parses and validates config text; `file` names it in problems.
pub fn parse(
    text: &str,
    file: &str,
    base_dir: PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut v = Validator { file: file.to_owned(), problems: Vec::new() };
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            v.problem("", e.to_string().trim().replace('\n', " "));
            return Err(ConfigErrors(v.problems));
        }
    };
    for key in table.keys() {
        if !["listen", "flags", "backends", "routes", "admin", "server", "overrides", "prices", "export"]
            .contains(&key.as_str())
        {
            v.problem(key, "unknown key".to_owned());
        }
    }
    let listen = v.section::<String>(&table, "listen").unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    if listen.parse::<std::net::SocketAddr>().is_err() {
        v.problem("listen", format!("{listen:?} is not an address like 127.0.0.1:8080"));
    }
    let flags = v.section::<FlagsConfig>(&table, "flags");
    let mut posthog_keys = None;
    if let Some(f) = &flags {
        if f.file.is_none() && f.posthog.is_none() {
            v.problem("flags", "needs `file` or `[flags.posthog]`".to_owned());
        }
        if let Some(p) = &f.posthog {
            let mut read = |key: &str, name: &str| {
                let value = env(name).filter(|s| !s.is_empty());
                if value.is_none() {
                    v.problem(&format!("flags.posthog.{key}"), format!("environment variable {name} is not set"));
                }
                value
            };
            let project = read("project_api_key_env", &p.project_api_key_env);
            let secret = read("secret_key_env", &p.secret_key_env);
            let webhook_secret = match &p.webhook_secret_env {
                Some(name) => read("webhook_secret_env", name).map(Into::into),
                None => None,
            };
            if let (Some(project_api_key), Some(secret)) = (project, secret) {
                posthog_keys = Some(PosthogKeys { project_api_key, secret_key: secret.into(), webhook_secret });
            }
            if !(p.host.starts_with("http://") || p.host.starts_with("https://")) {
                v.problem("flags.posthog.host", "must start with http:// or https://".to_owned());
            }
        }
    }
    let backends = v.backends(&table, env);
    let routes = v.routes(&table, &backends);
    let admin_toml = v.section::<AdminToml>(&table, "admin").unwrap_or_default();
    let admin = AdminConfig {
        token: admin_toml.token_env.as_deref().and_then(env).filter(|s| !s.is_empty()).map(Into::into),
        state_file: Some(base_dir.join(admin_toml.state_file.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE)))),
    };
    let overrides = v.section::<OverridesToml>(&table, "overrides").and_then(|o| v.overrides(o, env));
    let prices = v.prices(&table, &base_dir);
    let export = v.section::<ExportToml>(&table, "export").and_then(|e| e.posthog).and_then(|cfg| {
        let problems = cfg.problems();
        let key = env(&cfg.project_api_key_env).filter(|k| !k.is_empty());
        if key.is_none() && !cfg.project_api_key_env.trim().is_empty() {
            let why = format!("environment variable {} is not set", cfg.project_api_key_env);
            v.problem("export.posthog.project_api_key_env", why);
        }
        for p in &problems {
            let (path, why) = p.split_once(": ").unwrap_or(("export.posthog", p));
            v.problem(path, why.to_owned());
        }
        key.filter(|_| problems.is_empty()).map(|k| (cfg, k))
    });
    let server_toml = v.section::<ServerToml>(&table, "server");
    let server = ServerConfig {
        max_body_bytes: server_toml.as_ref().and_then(|s| s.max_body_bytes).unwrap_or(DEFAULT_MAX_BODY_BYTES),
        shutdown_grace: server_toml.as_ref().and_then(|s| s.shutdown_grace).unwrap_or(DEFAULT_SHUTDOWN_GRACE),
        log_format: server_toml.map(|s| s.log_format).unwrap_or_default(),
    };
    if !v.problems.is_empty() {
        return Err(ConfigErrors(v.problems));
    }
    let flags = flags.map(|mut f| {
        f.file = f.file.map(|p| base_dir.join(p));
        if let Some(p) = &mut f.posthog {
            let cache = p.cache_file.take().unwrap_or_else(|| PathBuf::from(DEFAULT_POSTHOG_CACHE));
            p.cache_file = Some(base_dir.join(cache));
        }
        f
    });
    Ok(Config { listen, flags, posthog_keys, backends, routes, admin, server, overrides, prices, export, base_dir })
}

/// The password in a URL's user info (`redis://user:pass@host`), if any.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, pass)| pass).filter(|p| !p.is_empty())
}

struct Validator {
    file: String,
    problems: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, path: &str, why: String) {
        self.problems.push(Problem { file: self.file.clone(), path: path.to_owned(), why });
    }

    /// Deserializes `value` as `T`, recording a problem (with the key path under `path`) on failure.
    fn typed<T: serde::de::DeserializeOwned>(&mut self, value: &toml::Value, path: &str) -> Option<T> {
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

    fn section<T: serde::de::DeserializeOwned>(&mut self, table: &toml::Table, key: &str) -> Option<T> {
        table.get(key).and_then(|v| self.typed(v, key))
    }

    /// `[overrides]`: exactly one of `redis_url` (no password in it) and `redis_url_env`.
    fn overrides(&mut self, o: OverridesToml, env: &dyn Fn(&str) -> Option<String>) -> Option<OverridesConfig> {
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
        if !url.starts_with("redis://") {
            let why = if url.starts_with("rediss://") {
                "rediss:// (TLS) is not supported by this build; use redis:// (e.g. through a TLS sidecar)"
            } else {
                "must be a URL like redis://host:6379"
            };
            self.problem(key, why.to_owned());
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
        Some(OverridesConfig {
            redis_url: url.into(),
            key: format!("{prefix}:overrides"),
            channel: format!("{prefix}:overrides:changes"),
        })
    }

    fn prices(&mut self, table: &toml::Table, base_dir: &Path) -> crate::usage::PriceTable {
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

    fn backends(&mut self, table: &toml::Table, env: &dyn Fn(&str) -> Option<String>) -> BTreeMap<String, Backend> {
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
                    forward_headers: b.forward_headers.map(|h| h.into_iter().map(|s| s.to_ascii_lowercase()).collect()),
                    mock: b.mock,
                },
            );
        }
        out
    }

    fn routes(&mut self, table: &toml::Table, backends: &BTreeMap<String, Backend>) -> Vec<Route> {
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

/// `"30s"`-style durations, optional.
mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}"))))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "secret".to_owned())
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "t.toml", PathBuf::new(), &env) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|p| format!("{}: {}", p.path, p.why)).collect(),
        }
    }

    #[test]
    fn every_problem_is_listed_with_its_key_path() {
        let got = problems(
            r#"
            listen = "nope"
            colour = 1
            [backends.a]
            kind = "openai"
            base_url = "ftp://x"
            api_key_env = "UNSET"
            [backends.b]
            kind = "anthropic"
            base_url = "https://api.anthropic.com"
            connect_timeout = "soon"
            [[routes]]
            model = "m"
            control = { backend = "missing", model = "x" }
            variants = { v = { backend = "a", model = "y" } }
            [[routes]]
            model = "m"
            control = { backend = "a", model = "x", extra = 1 }
            "#,
        );
        let joined = got.join("\n");
        for needle in [
            "colour: unknown key",
            "listen: \"nope\" is not an address",
            "backends.a.base_url:",
            "backends.a.api_key_env: environment variable UNSET is not set",
            "backends.b.connect_timeout:",
            "routes[0].control.backend: no backend named \"missing\"",
            "routes[0].variants: variants need a flag",
            "routes[1].control.extra",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
    }

    #[test]
    fn a_valid_config_resolves_defaults_and_secrets() {
        let cfg = parse(
            r#"
            [backends.a]
            kind = "anthropic"
            base_url = "https://api.anthropic.com/"
            api_key_env = "SET"
            idle_timeout = "5s"
            [[routes]]
            model = "m"
            control = { backend = "a", model = "claude" }
            "#,
            "t.toml",
            PathBuf::new(),
            &env,
        )
        .expect("valid");
        let a = &cfg.backends["a"];
        assert_eq!(a.base_url, "https://api.anthropic.com");
        assert_eq!(a.idle_timeout, Duration::from_secs(5));
        assert_eq!(a.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert!(a.api_key.is_some());
        assert_eq!(cfg.listen, DEFAULT_LISTEN);
        assert!(format!("{a:?}").find("secret").is_none(), "secrets never appear in Debug output");
    }

    #[test]
    fn shared_overrides_take_a_redis_url_without_a_password_or_one_from_the_environment() {
        let cfg = parse("[overrides]\nredis_url = \"redis://127.0.0.1:6379\"", "t.toml", PathBuf::new(), &env)
            .expect("valid");
        let o = cfg.overrides.expect("overrides configured");
        assert_eq!((o.key.as_str(), o.channel.as_str()), ("switchyard:overrides", "switchyard:overrides:changes"));
        let env_url = |name: &str| (name == "REDIS_URL").then(|| "redis://:hunter2@redis:6379/0".to_owned());
        let text = "[overrides]\nredis_url_env = \"REDIS_URL\"\nkey_prefix = \"fleet-a\"";
        let o = parse(text, "t.toml", PathBuf::new(), &env_url).expect("valid").overrides.expect("configured");
        assert_eq!(o.key, "fleet-a:overrides");
        assert!(!format!("{o:?}").contains("hunter2"), "the password never appears in Debug output");
        assert!(problems("").is_empty());
    }

    #[test]
    fn shared_overrides_refuse_a_password_in_the_file_and_other_mistakes_without_echoing_secrets() {
        let cases = [
            ("redis_url = \"redis://:hunter2@redis:6379\"", "overrides.redis_url: carries a password"),
            ("redis_url = \"redis://default:hunter2@redis\"", "overrides.redis_url: carries a password"),
            ("redis_url_env = \"UNSET\"", "overrides.redis_url_env: environment variable UNSET is not set"),
            ("redis_url = \"http://redis\"", "overrides.redis_url: must be a URL like redis://"),
            ("redis_url = \"rediss://redis\"", "overrides.redis_url: rediss:// (TLS) is not supported"),
            (
                "redis_url = \"redis://a\"\nredis_url_env = \"SET\"",
                "overrides: give `redis_url` or `redis_url_env`, not both",
            ),
            ("key_prefix = \"x\"", "overrides: needs `redis_url`"),
            ("redis_url = \"redis://a\"\ncolour = 1", "overrides.colour: unknown field `colour`"),
        ];
        for (body, want) in cases {
            let got = problems(&format!("[overrides]\n{body}")).join("\n");
            assert!(got.contains(want), "{body}: want {want:?} in {got:?}");
            assert!(!got.contains("hunter2"), "{body}: the password is never echoed: {got}");
        }
        assert_eq!(url_password("redis://user@host:1/0"), None);
        assert_eq!(url_password("redis://host:6379"), None);
    }
}
