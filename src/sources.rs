//! The only writer of the flag snapshot. Sources deliver definitions (the flags file, re-read when its
//! metadata changes; the PostHog poller with ETag / 304, backoff and a disk cache) and the admin API
//! delivers overrides; `publish` parses, validates, compiles and swaps once. A bad delivery keeps the
//! last good snapshot, is logged with its reason and counted in `switchyard_flag_reloads_total`.

use crate::config::{PosthogConfig, PosthogKeys};
use crate::snapshot::{self, Origin, Overrides};
use crate::state::AppState;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the flags file's metadata is checked: cheap, and well inside a kill switch's budget.
pub const DEFAULT_FILE_POLL: Duration = Duration::from_secs(1);
/// PostHog's SDKs poll every 30 s.
pub const DEFAULT_POSTHOG_POLL: Duration = Duration::from_secs(30);
/// Longest wait between PostHog polls while it keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// One PostHog request, headers and body.
const POSTHOG_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Inner {
    file: Option<Arc<Value>>,
    posthog: Option<(Arc<Value>, Origin)>,
    overrides: Arc<Overrides>,
}

/// What the sources last delivered; guarded by a mutex that only writers take.
#[derive(Default)]
pub struct Sources {
    inner: Mutex<Inner>,
}

impl Sources {
    /// Takes new definitions from `origin`; on error the last good snapshot stays.
    pub fn set_definitions(&self, state: &AppState, origin: Origin, doc: Value) -> Result<(), String> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let doc = Arc::new(doc);
        let outcome = match origin {
            Origin::File if inner.posthog.is_some() => {
                // PostHog's definitions take precedence; keep the file for when PostHog is not configured.
                snapshot::build(doc.clone(), origin, inner.overrides.clone()).map(|_| ())
            }
            _ => {
                let snap = snapshot::build(doc.clone(), origin, inner.overrides.clone());
                snap.map(|s| install(state, s))
            }
        };
        let source = match origin {
            Origin::File => "file",
            Origin::Posthog | Origin::PosthogCache => "posthog",
        };
        match &outcome {
            Ok(()) => {
                state.metrics.flag_reloads.with_label_values(&[source, "ok"]).inc();
                match origin {
                    Origin::File => inner.file = Some(doc),
                    _ => inner.posthog = Some((doc, origin)),
                }
            }
            Err(e) => {
                state.metrics.flag_reloads.with_label_values(&[source, "error"]).inc();
                tracing::error!(source, error = %e, "flag definitions rejected; keeping the last good snapshot");
            }
        }
        outcome
    }

    /// Applies `change` to the admin overrides and republishes; the change is undone if it cannot compile.
    pub fn update_overrides(
        &self,
        state: &AppState,
        change: impl FnOnce(&mut Overrides),
    ) -> Result<Arc<Overrides>, String> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (*inner.overrides).clone();
        change(&mut next);
        let next = Arc::new(next);
        if let Some((doc, origin)) = current_source(&inner) {
            install(state, snapshot::build(doc, origin, next.clone())?);
        }
        inner.overrides = next.clone();
        Ok(next)
    }

    /// The admin overrides in force.
    pub fn overrides(&self) -> Arc<Overrides> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).overrides.clone()
    }
}

fn current_source(inner: &Inner) -> Option<(Arc<Value>, Origin)> {
    inner.posthog.clone().or_else(|| inner.file.clone().map(|f| (f, Origin::File)))
}

/// Swaps the snapshot in and refreshes what depends on it.
fn install(state: &AppState, snap: snapshot::Snapshot) {
    for route in state.routes.values() {
        if let Some(flag) = &route.flag {
            let active = snap.flags.flag(flag).is_some_and(|f| f.active());
            state.metrics.flag_active.with_label_values(&[flag]).set(i64::from(active));
        }
    }
    tracing::info!(
        origin = snap.origin.as_str(),
        flags = snap.flags.len(),
        overrides = snap.overrides.len(),
        "flag snapshot published"
    );
    state.snapshot.store(Some(Arc::new(snap)));
    state.ready.store(true, Ordering::Release);
}

/// Reads and parses a definitions file.
pub fn read_definitions(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    crate::flags::model::FlagDefinitions::from_value(v.clone()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(v)
}

/// Problems with the flags file a config points at (for `switchyard check`): unreadable or invalid,
/// entries that are not flags, and, when the file is the only source, routes naming a flag it lacks.
pub fn check_flags(cfg: &crate::config::Config) -> Vec<crate::config::Problem> {
    let Some(path) = cfg.flags.as_ref().and_then(|f| f.file.as_ref()) else { return Vec::new() };
    let file = path.display().to_string();
    let problem = |path: &str, why: String| crate::config::Problem { file: file.clone(), path: path.to_owned(), why };
    let defs = match read_definitions(path).and_then(crate::flags::model::FlagDefinitions::from_value) {
        Ok(d) => d,
        Err(e) => return vec![problem("", e)],
    };
    let mut out: Vec<_> = defs.skipped.iter().map(|s| problem("", format!("not a flag: {s}"))).collect();
    if cfg.flags.as_ref().is_some_and(|f| f.posthog.is_none()) {
        for (i, r) in cfg.routes.iter().enumerate() {
            if let Some(flag) = r.flag.as_ref().filter(|k| !defs.flags.iter().any(|f| &&f.key == k)) {
                out.push(crate::config::Problem {
                    file: cfg.source.clone(),
                    path: format!("routes[{i}].flag"),
                    why: format!("no flag {flag:?} in {file}: the route would always serve control"),
                });
            }
        }
    }
    out
}

/// What identifies a version of the file without reading it; `metadata` follows symlinks, so the
/// atomic symlink swap of a mounted ConfigMap changes it too.
#[derive(PartialEq, Eq, Clone, Copy)]
pub(crate) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The file's stamp now; `None` when it cannot be read (also used for the TLS certificate files).
pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp { modified: m.modified().ok(), len: m.len(), inode })
}

fn content_hash(v: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Loads the flags file now, then re-reads it whenever its metadata changes, until `shutdown`.
pub async fn watch_file(state: Arc<AppState>, path: PathBuf, every: Duration, shutdown: CancellationToken) {
    let mut last_stamp = None;
    let mut last_hash = None;
    loop {
        let now = stamp(&path);
        if now != last_stamp {
            last_stamp = now;
            match tokio::fs::read(&path).await {
                Err(e) => {
                    state.metrics.flag_reloads.with_label_values(&["file", "error"]).inc();
                    tracing::error!(path = %path.display(), error = %e, "cannot read the flags file; keeping the last good snapshot");
                }
                Ok(bytes) => {
                    let h = content_hash(&bytes);
                    if Some(h) != last_hash {
                        let parsed = serde_json::from_slice::<Value>(&bytes)
                            .map_err(|e| format!("{} is not valid JSON: {e}", path.display()));
                        let applied = match parsed {
                            Ok(doc) => state.sources.set_definitions(&state, Origin::File, doc),
                            Err(e) => {
                                state.metrics.flag_reloads.with_label_values(&["file", "error"]).inc();
                                tracing::error!(error = %e, "flags file rejected; keeping the last good snapshot");
                                Err(e)
                            }
                        };
                        if applied.is_ok() {
                            last_hash = Some(h);
                        }
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

enum Fetched {
    New(Bytes, Option<String>),
    NotModified(Option<String>),
}

/// Polls PostHog's flag-definitions endpoint until `shutdown`; `wake` triggers an immediate poll.
pub async fn poll_posthog(
    state: Arc<AppState>,
    cfg: PosthogConfig,
    keys: PosthogKeys,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let every = cfg.poll_interval.unwrap_or(DEFAULT_POSTHOG_POLL);
    if let Some(cache) = &cfg.cache_file {
        match read_definitions(cache) {
            Ok(doc) => {
                if state.sources.set_definitions(&state, Origin::PosthogCache, doc).is_ok() {
                    tracing::info!(path = %cache.display(), "loaded PostHog definitions from the disk cache");
                }
            }
            Err(e) => tracing::info!(error = %e, "no usable PostHog definitions cache"),
        }
    }
    let client = crate::upstream::build_client_with(Duration::from_secs(5), "posthog");
    let url = format!(
        "{}/flags/definitions?token={}&send_cohorts",
        cfg.host.trim_end_matches('/'),
        percent_encode(&keys.project_api_key)
    );
    let mut etag: Option<String> = None;
    let mut failures: u32 = 0;
    loop {
        match fetch(&client, &url, &keys, etag.as_deref()).await {
            Ok(Fetched::NotModified(new_etag)) => {
                failures = 0;
                etag = new_etag.or(etag);
                state.metrics.flag_reloads.with_label_values(&["posthog", "unchanged"]).inc();
            }
            Ok(Fetched::New(body, new_etag)) => {
                let parsed =
                    serde_json::from_slice::<Value>(&body).map_err(|e| format!("PostHog sent invalid JSON: {e}"));
                match parsed.and_then(|doc| state.sources.set_definitions(&state, Origin::Posthog, doc)) {
                    Ok(()) => {
                        failures = 0;
                        etag = new_etag;
                        if let Some(cache) = &cfg.cache_file {
                            write_cache(cache, &body).await;
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        state.metrics.flag_reloads.with_label_values(&["posthog", "error"]).inc();
                        tracing::error!(error = %e, "PostHog definitions rejected; keeping the last good snapshot");
                    }
                }
            }
            Err(e) => {
                failures += 1;
                state.metrics.flag_reloads.with_label_values(&["posthog", "error"]).inc();
                tracing::warn!(error = %e, failures, "PostHog poll failed; keeping the last good snapshot");
            }
        }
        let backoff = every.saturating_mul(1 << failures.min(5)).min(MAX_BACKOFF.max(every));
        // ±10% jitter so a fleet of replicas does not poll in lockstep.
        let delay = backoff.mul_f64(0.9 + fastrand::f64() * 0.2);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = wake.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn fetch(
    client: &crate::upstream::HttpClient,
    url: &str,
    keys: &PosthogKeys,
    etag: Option<&str>,
) -> Result<Fetched, String> {
    use secrecy::ExposeSecret;
    let mut req = http::Request::get(url)
        .header("authorization", format!("Bearer {}", keys.secret_key.expose_secret()))
        .header("user-agent", concat!("switchyard/", env!("CARGO_PKG_VERSION")));
    if let Some(e) = etag {
        req = req.header("if-none-match", e);
    }
    let req = req.body(Full::new(Bytes::new())).map_err(|e| format!("bad PostHog request: {e}"))?;
    let work = async {
        let resp = client.request(req).await.map_err(|e| format!("PostHog unreachable: {e}"))?;
        let status = resp.status();
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        if status == http::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified(etag));
        }
        let body = resp.into_body().collect().await.map_err(|e| format!("PostHog response broke off: {e}"))?.to_bytes();
        if !status.is_success() {
            let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(format!("PostHog answered {status}: {snippet}"));
        }
        Ok(Fetched::New(body, etag))
    };
    tokio::time::timeout(POSTHOG_TIMEOUT, work).await.map_err(|_| "PostHog did not answer in time".to_owned())?
}

/// Writes the cache atomically (temp file + rename), so a crash never leaves half a file.
async fn write_cache(path: &Path, body: &[u8]) {
    let tmp = path.with_extension("tmp");
    let result = async {
        tokio::fs::write(&tmp, body).await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the PostHog definitions cache");
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
