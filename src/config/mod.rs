//! The TOML configuration: its model (unknown keys rejected), loading with every problem reported at
//! once with its key path, secrets read only from the environment variables the config names, and
//! the defaults (each a named constant with the reason for its value).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod validate;
use validate::Validator;

/// Address when neither the config nor `--listen` gives one: loopback, so a demo never opens a public port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Connecting to a provider is fast or broken; 5 s leaves room for a slow TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Until the upstream's response headers: large non-streamed completions can take minutes.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest silence between two stream chunks; providers send pings well inside this.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An idle keep-alive connection to a backend is closed after this; providers close theirs after
/// about 2 minutes.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Whole exchange, streams included: the longest reasonable generation.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(600);
/// Request bodies above this are refused with 413; Anthropic's own cap is 32 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Request heads above this are refused with 431; SDK requests carry a few KiB of headers.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// More headers than this are refused with 431 (hyper's own default is 100).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// A slow client gets this long to send its request head (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Open client connections at once; beyond, new ones wait in the accept queue.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// LLM requests in flight at once (streams included); beyond, 503 + `retry-after`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4_096;
/// On SIGTERM, how long in-flight streams may run before the process exits anyway.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// PostHog's last good definitions, relative to the config file's folder.
pub const DEFAULT_POSTHOG_CACHE: &str = "posthog-definitions-cache.json";
/// Admin overrides persist here (relative to the config file's folder) so they survive a restart.
pub const DEFAULT_STATE_FILE: &str = "switchyard-state.json";
/// Prefix of the Redis keys shared overrides use: the hash `{prefix}:overrides` and the pub/sub
/// channel `{prefix}:overrides:changes`. A second fleet on the same Redis picks another prefix.
pub const DEFAULT_REDIS_PREFIX: &str = "switchyard";
/// A translated non-stream response is read whole up to this; LLM answers are kilobytes, long
/// tool outputs or base64 images a few MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
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
    /// Client API keys; `None`: open access.
    pub auth: Option<crate::auth::Auth>,
    /// `[export.posthog]` with its project key, when events go to PostHog.
    pub export: Option<(crate::export::ExportConfig, String)>,
    /// Directory of the config file: relative paths inside it are resolved against it.
    pub base_dir: PathBuf,
    /// The config file's name, as problems cite it.
    pub source: String,
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
    #[serde(default, with = "opt_duration")]
    pool_idle_timeout: Option<Duration>,
    /// When set, only these request headers (lower-case) are forwarded, besides the ones Switchyard sets.
    forward_headers: Option<Vec<String>>,
    /// Calls to this backend at once; beyond, the call fails as overloaded (and falls back to control).
    max_in_flight: Option<usize>,
    /// PEM bundle of the CAs trusted for this backend's HTTPS, instead of the system's roots.
    ca_file: Option<PathBuf>,
    /// Mutual TLS: the certificate chain (PEM, leaf first) Switchyard presents to this backend.
    client_cert_file: Option<PathBuf>,
    /// Mutual TLS: the private key of `client_cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    client_key_file: Option<PathBuf>,
    /// Largest response read whole to translate it; larger ones fail with 502.
    max_response_bytes: Option<usize>,
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
    /// How long an idle keep-alive connection is kept for reuse (0: never reused).
    pub pool_idle_timeout: Duration,
    pub forward_headers: Option<Vec<String>>,
    pub max_in_flight: Option<usize>,
    /// Trust roots from `ca_file`; `None`: the system's. Verification is never off.
    pub ca_roots: Option<std::sync::Arc<rustls::RootCertStore>>,
    /// Mutual TLS: the certificate and key presented to the backend (`client_cert_file`,
    /// `client_key_file`), checked to belong together; `None`: no client certificate.
    pub client_cert: Option<std::sync::Arc<rustls::sign::CertifiedKey>>,
    /// Non-stream responses that must be translated are read whole up to this size (else 502);
    /// relayed responses and streams are never held, so this does not limit them.
    pub max_response_bytes: usize,
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
    /// PEM bundle of the CAs trusted for a `rediss://` server, instead of the system's roots.
    ca_file: Option<PathBuf>,
    /// Mutual TLS with the Redis server: certificate chain and key (PEM), both or neither.
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
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
    /// TLS material for a `rediss://` URL (PEM, as the redis client takes it); `None` with `redis://`,
    /// or with `rediss://` and neither `ca_file` nor a client certificate (system roots).
    pub tls: Option<RedisTls>,
}

/// `[overrides]` TLS files, read and checked at load: the CA bundle (else the system's roots) and
/// the client certificate and key for mutual TLS.
#[derive(Clone)]
pub struct RedisTls {
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<secrecy::SecretSlice<u8>>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_pem.is_some())
            .finish()
    }
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
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    #[serde(default, with = "opt_duration")]
    header_read_timeout: Option<Duration>,
    max_connections: Option<usize>,
    max_in_flight: Option<usize>,
    #[serde(default, with = "opt_duration")]
    shutdown_grace: Option<Duration>,
    #[serde(default)]
    log_format: LogFormat,
    feedback_capacity: Option<usize>,
    workers: Option<usize>,
    tls: Option<TlsToml>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsToml {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default, with = "opt_duration")]
    reload_interval: Option<Duration>,
}

/// `[server.tls]`: the listener terminates TLS with this certificate, re-read when the files change.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub reload_interval: Duration,
    /// The pair as loaded and checked when the config was read.
    pub key: rustls::sign::CertifiedKey,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_body_bytes: usize,
    /// Request head (line and headers) larger than this: 431.
    pub max_header_bytes: usize,
    /// More request headers than this: 431.
    pub max_headers: usize,
    /// A client gets this long to send its request head (slowloris).
    pub header_read_timeout: Duration,
    /// Open client connections; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// LLM requests being served at once; more get 503 with `retry-after` (load shedding).
    pub max_in_flight: usize,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// Served requests remembered for feedback, per generation (two are kept).
    pub feedback_capacity: usize,
    /// `None`: plain HTTP (run behind a TLS-terminating load balancer).
    pub tls: Option<TlsConfig>,
    /// Threads serving connections, each with its own event loop and backend pools (`0` in the file:
    /// one per CPU). `server::start` serves on the caller's runtime as worker 0 and starts the rest.
    pub workers: usize,
}

/// Most worker threads `[server] workers` may ask for.
pub const MAX_WORKERS: usize = 256;

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
        if !["listen", "flags", "backends", "routes", "admin", "server", "overrides", "prices", "export", "auth"]
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
    let backends = v.backends(&table, env, &base_dir);
    let routes = v.routes(&table, &backends);
    let admin_toml = v.section::<AdminToml>(&table, "admin").unwrap_or_default();
    let admin = AdminConfig {
        token: admin_toml.token_env.as_deref().and_then(env).filter(|s| !s.is_empty()).map(Into::into),
        state_file: Some(base_dir.join(admin_toml.state_file.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE)))),
    };
    let overrides = v.section::<OverridesToml>(&table, "overrides").and_then(|o| v.overrides(o, env, &base_dir));
    let prices = v.prices(&table, &base_dir);
    let auth =
        v.section::<crate::auth::AuthToml>(&table, "auth").and_then(|t| match crate::auth::Auth::resolve(&t, env) {
            Ok(a) => Some(a),
            Err(problems) => {
                problems.into_iter().for_each(|(path, why)| v.problem(&path, why));
                None
            }
        });
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
    let st = server_toml.as_ref();
    let tls = st.and_then(|s| s.tls.as_ref()).and_then(|t| v.tls(t, &base_dir));
    let server = ServerConfig {
        max_body_bytes: st.and_then(|s| s.max_body_bytes).unwrap_or(DEFAULT_MAX_BODY_BYTES),
        max_header_bytes: st.and_then(|s| s.max_header_bytes).unwrap_or(DEFAULT_MAX_HEADER_BYTES).max(8192),
        max_headers: st.and_then(|s| s.max_headers).unwrap_or(DEFAULT_MAX_HEADERS).max(16),
        header_read_timeout: st.and_then(|s| s.header_read_timeout).unwrap_or(DEFAULT_HEADER_READ_TIMEOUT),
        max_connections: st.and_then(|s| s.max_connections).unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1),
        max_in_flight: st.and_then(|s| s.max_in_flight).unwrap_or(DEFAULT_MAX_IN_FLIGHT).max(1),
        shutdown_grace: server_toml.as_ref().and_then(|s| s.shutdown_grace).unwrap_or(DEFAULT_SHUTDOWN_GRACE),
        feedback_capacity: match st.and_then(|s| s.feedback_capacity) {
            None => crate::feedback::FEEDBACK_CAPACITY,
            Some(n) if n > crate::feedback::MAX_FEEDBACK_CAPACITY => {
                let max = crate::feedback::MAX_FEEDBACK_CAPACITY;
                v.problem("server.feedback_capacity", format!("{n} slots; at most {max} (2 GiB once used)"));
                1
            }
            Some(n) => n.max(1),
        },
        workers: match st.and_then(|s| s.workers) {
            None | Some(0) => std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WORKERS),
            Some(n) if n > MAX_WORKERS => {
                v.problem("server.workers", format!("{n} worker threads; at most {MAX_WORKERS}"));
                1
            }
            Some(n) => n,
        },
        log_format: server_toml.map(|s| s.log_format).unwrap_or_default(),
        tls,
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
    Ok(Config {
        listen,
        flags,
        posthog_keys,
        backends,
        routes,
        admin,
        server,
        overrides,
        prices,
        auth,
        export,
        base_dir,
        source: file.to_owned(),
    })
}

/// The password in a URL's user info (`redis://user:pass@host`), if any.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, pass)| pass).filter(|p| !p.is_empty())
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
mod tests;
