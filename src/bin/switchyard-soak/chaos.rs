//! What the soak does to the gateway while load runs: rewrites the flags file (new rollouts and
//! variant splits, and now and then an invalid file that must be rejected), and toggles the kill
//! switch through the admin API (`PATCH /admin/flags/KEY {"active": false}`, then
//! `DELETE /admin/flags/KEY/override`). Counts what it did; `kill_epoch` is odd while killed.

use crate::benchkit::{self, Error};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default, Debug)]
pub struct ChaosCounts {
    pub valid_rewrites: u64,
    pub invalid_rewrites: u64,
    pub rewrite_errors: u64,
    pub kills: u64,
    pub revives: u64,
    pub admin_failures: u64,
    /// `switchyard_flag_active` did not say 0 after a kill or 1 after a revive.
    pub gauge_mismatches: u64,
    pub first_problem: Option<String>,
}

impl ChaosCounts {
    fn problem(&mut self, p: String) {
        self.first_problem.get_or_insert(p);
    }
}

/// Rewrites `path` every `every` until `stop`: each flag's rollouts and variant split drawn anew;
/// every fifth rewrite is invalid JSON (the gateway must keep the last good snapshot).
pub async fn rewrite_flags(
    path: PathBuf,
    every: Duration,
    stop: Arc<AtomicBool>,
    counts: Arc<std::sync::Mutex<ChaosCounts>>,
) {
    let Ok(text) = std::fs::read(&path) else {
        lock(&counts).problem(format!("cannot read {}", path.display()));
        return;
    };
    let Ok(template) = serde_json::from_slice::<Value>(&text) else {
        lock(&counts).problem(format!("{} is not JSON", path.display()));
        return;
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        nap(every, &stop).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        n += 1;
        let invalid = n % 5 == 0;
        let bytes =
            if invalid { b"{\"flags\": [ {\"key\": ".to_vec() } else { mutate(&template, n).to_string().into_bytes() };
        // Written beside and renamed over, as deploy tools do: the gateway never reads half a file.
        let tmp = path.with_extension("json.tmp");
        let res = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
        let mut c = lock(&counts);
        match res {
            Ok(()) if invalid => c.invalid_rewrites += 1,
            Ok(()) => c.valid_rewrites += 1,
            Err(e) => {
                c.rewrite_errors += 1;
                c.problem(format!("rewrite failed: {e}"));
            }
        }
    }
}

/// The template with every group's rollout and every multivariate split drawn anew.
fn mutate(template: &Value, n: u64) -> Value {
    let mut doc = template.clone();
    if let Some(flags) = doc["flags"].as_array_mut() {
        for flag in flags {
            flag["name"] = Value::from(format!("soak rewrite {n}"));
            if let Some(groups) = flag["filters"]["groups"].as_array_mut() {
                for g in groups {
                    g["rollout_percentage"] = Value::from([0, 25, 50, 75, 100, 100][fastrand::usize(..6)]);
                }
            }
            if let Some(variants) = flag["filters"]["multivariate"]["variants"].as_array_mut() {
                let k = variants.len();
                let mut left = 100u64;
                for (i, v) in variants.iter_mut().enumerate() {
                    let p = if i + 1 == k { left } else { fastrand::u64(..=left) };
                    left -= p;
                    v["rollout_percentage"] = Value::from(p);
                }
            }
        }
    }
    doc
}

/// Which flag to kill, through which gateway and token, how often.
pub struct KillSwitch {
    pub base: String,
    pub token: String,
    pub flag: String,
    pub every: Duration,
}

/// Kills `flag` through the admin API every `every`, and revives it (drops the override) half a
/// period later, until `stop`; no kill starts during a fault storm (a killed flag sends everyone to
/// control, and the storm is there to trip a variant's cut-off).
pub async fn toggle_kill(
    kill: KillSwitch,
    stop: Arc<AtomicBool>,
    kill_epoch: Arc<AtomicU64>,
    storm: Arc<AtomicBool>,
    counts: Arc<std::sync::Mutex<ChaosCounts>>,
) {
    let KillSwitch { base, token, flag, every } = kill;
    let authority = base.trim_start_matches("http://").trim_end_matches('/').to_owned();
    while !stop.load(Ordering::Relaxed) {
        nap(every / 2, &stop).await;
        while storm.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let path = format!("/admin/flags/{flag}");
        match admin(&authority, &token, Method::PATCH, &path, r#"{"active": false}"#).await {
            Ok(200) => {
                kill_epoch.fetch_add(1, Ordering::AcqRel);
                lock(&counts).kills += 1;
                check_gauge(&authority, &flag, 0, &counts).await;
            }
            other => failed(&counts, "kill", other),
        }
        nap(every / 2, &stop).await;
        // Leave the killed state before the revive is sent: a request overlapping it proves nothing.
        if kill_epoch.load(Ordering::Acquire) % 2 == 1 {
            kill_epoch.fetch_add(1, Ordering::AcqRel);
        }
        match admin(&authority, &token, Method::DELETE, &format!("{path}/override"), "").await {
            Ok(200) => {
                lock(&counts).revives += 1;
                check_gauge(&authority, &flag, 1, &counts).await;
            }
            other => failed(&counts, "revive", other),
        }
    }
}

fn failed(counts: &std::sync::Mutex<ChaosCounts>, what: &str, res: Result<u16, Error>) {
    let mut c = lock(counts);
    c.admin_failures += 1;
    c.problem(format!("{what}: {}", res.map_or_else(|e| e.to_string(), |s| format!("status {s}"))));
}

async fn check_gauge(authority: &str, flag: &str, want: i64, counts: &std::sync::Mutex<ChaosCounts>) {
    let line = format!("switchyard_flag_active{{flag=\"{flag}\"}} {want}");
    match get(authority, "/metrics").await {
        Ok(text) if text.lines().any(|l| l == line) => {}
        Ok(_) => {
            let mut c = lock(counts);
            c.gauge_mismatches += 1;
            c.problem(format!("after the admin call /metrics did not show {line}"));
        }
        Err(e) => lock(counts).problem(format!("GET /metrics: {e}")),
    }
}

async fn admin(authority: &str, token: &str, method: Method, path: &str, body: &'static str) -> Result<u16, Error> {
    let mut send = benchkit::connect(authority).await?;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("authorization", format!("Bearer {token}"))
        .header("x-switchyard-actor", "switchyard-soak")
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req)).await??;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// A GET on a fresh connection; the body as text.
pub async fn get(authority: &str, path: &str) -> Result<String, Error> {
    let mut send = benchkit::connect(authority).await?;
    let req = Request::builder().uri(path).header("host", authority).body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req)).await??;
    let status = resp.status();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await??.to_bytes();
    if !status.is_success() {
        return Err(format!("GET {path}: status {status}").into());
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Sleeps `d`, or less once `stop` is set (so the chaos tasks end with the load, not a period later).
pub async fn nap(d: Duration, stop: &AtomicBool) {
    let until = tokio::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = tokio::time::Instant::now();
        if now >= until {
            return;
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(100))).await;
    }
}

pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
