//! The soak's load: workers on keep-alive connections (HTTP/1.1 or HTTP/2) sending a random mix of
//! routes, dialects, stream or not and distinct_ids, some asking the upstream for a fault, some hung
//! up on mid-stream; each answer classified (`classify.rs`), checked against its fault, and tallied.

use crate::benchkit::{Conn, Error, Target};
use crate::classify::{allowed, classify, Observed, Outcome, FAULT_KINDS};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::error::Dialect;

/// One route of the mix.
#[derive(Clone)]
pub struct Route {
    pub model: String,
    pub flag: Option<String>,
}

/// Everything the client counted.
#[derive(Default)]
pub struct Tally {
    pub sent: u64,
    pub outcomes: BTreeMap<&'static str, u64>,
    pub statuses: BTreeMap<u16, u64>,
    /// By `dialect/stream|whole`.
    pub shapes: BTreeMap<String, u64>,
    pub faults_asked: BTreeMap<&'static str, u64>,
    pub fallbacks_seen: u64,
    pub client_errors: u64,
    /// Streams the client hung up on (the gateway counts each as `client_cancel`).
    pub cancelled: u64,
    pub lost: u64,
    pub unexpected: u64,
    /// Requests made and answered entirely while the flag was killed, and those not served by control.
    pub kill_checked: u64,
    pub kill_violations: u64,
    pub examples: Vec<String>,
}

impl Tally {
    pub fn merge(&mut self, o: Tally) {
        self.sent += o.sent;
        for (k, v) in o.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in o.shapes {
            *self.shapes.entry(k).or_default() += v;
        }
        for (k, v) in o.faults_asked {
            *self.faults_asked.entry(k).or_default() += v;
        }
        self.fallbacks_seen += o.fallbacks_seen;
        self.client_errors += o.client_errors;
        self.cancelled += o.cancelled;
        self.lost += o.lost;
        self.unexpected += o.unexpected;
        self.kill_checked += o.kill_checked;
        self.kill_violations += o.kill_violations;
        for e in o.examples {
            if self.examples.len() < 8 {
                self.examples.push(e);
            }
        }
    }

    pub fn example(&mut self, e: String) {
        if self.examples.len() < 8 {
            self.examples.push(e);
        }
    }
}

/// What the load workers share.
pub struct Load {
    pub openai: Target,
    pub anthropic: Target,
    pub routes: Vec<Route>,
    pub faults: Vec<(&'static str, f64)>,
    pub variant_models: String,
    pub distinct_ids: u64,
    pub kill_flag: Option<String>,
    pub kill_epoch: Arc<AtomicU64>,
    pub stop: AtomicBool,
    pub sent: AtomicU64,
    pub max_requests: u64,
    pub timeout: Duration,
    pub with_faults: bool,
    pub cancel: f64,
    /// Workers 0..h2_workers speak HTTP/2.
    pub h2_workers: usize,
    /// On during a fault storm.
    pub storm: Arc<AtomicBool>,
    pub storm_route: String,
}

pub fn parse_faults(spec: &str) -> Result<Vec<(&'static str, f64)>, Error> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "none") {
        let (k, p) = part.split_once('=').ok_or("--faults: kind=percent,...")?;
        let kind =
            FAULT_KINDS.iter().find(|f| **f == k.trim()).ok_or_else(|| format!("--faults: unknown kind {k:?}"))?;
        out.push((*kind, p.trim().parse::<f64>()? / 100.0));
    }
    Ok(out)
}

/// One request of the mix, sent on `send`; what came back, classified and checked.
pub async fn one(load: &Load, send: &mut Conn, tally: &mut Tally) -> Result<(), Error> {
    let route = &load.routes[fastrand::usize(..load.routes.len())];
    let dialect = if fastrand::bool() { Dialect::OpenAi } else { Dialect::Anthropic };
    let stream = fastrand::bool();
    let fault = if load.with_faults {
        let mut roll = fastrand::f64();
        load.faults.iter().find_map(|(k, p)| {
            roll -= p;
            (roll < 0.0).then_some(*k)
        })
    } else {
        None
    };
    let storming = load.with_faults && load.storm.load(Ordering::Relaxed) && route.model == load.storm_route;
    let fault = if storming { Some("500") } else { fault };
    let scoped = storming || (fault.is_some() && !load.variant_models.is_empty() && fastrand::bool());
    let cancel = load.with_faults && stream && fault.is_none() && fastrand::f64() < load.cancel;
    // The same body is valid in both dialects.
    let body = json!({"model": route.model, "stream": stream, "max_tokens": 64,
        "messages": [{"role": "user", "content": "soak: say something"}]});
    let target = if dialect == Dialect::OpenAi { &load.openai } else { &load.anthropic };
    let mut req = target.request(Bytes::from(body.to_string()))?;
    let h = req.headers_mut();
    h.insert("x-distinct-id", format!("soak-user-{}", fastrand::u64(..load.distinct_ids)).parse()?);
    if dialect == Dialect::Anthropic {
        h.insert("anthropic-version", http::HeaderValue::from_static("2023-06-01"));
    }
    if let Some(f) = fault {
        let v = if scoped { format!("{f};models={}", load.variant_models) } else { f.to_owned() };
        h.insert("x-mock-fault", v.parse()?);
        *tally.faults_asked.entry(f).or_default() += 1;
    }
    if cancel {
        h.insert("x-mock-chunk-delay-ms", http::HeaderValue::from_static("50"));
    }
    let epoch_before = load.kill_epoch.load(Ordering::Acquire);
    tally.sent += 1;
    let proto = if matches!(send, Conn::H2(_)) { "h2" } else { "h1" };
    let shape = format!("{}/{}/{proto}", dialect.as_str(), if stream { "stream" } else { "whole" });
    *tally.shapes.entry(shape).or_default() += 1;
    let exchange = async {
        let resp = send.send(req).await?;
        let (parts, mut body) = resp.into_parts();
        if cancel && parts.status == 200 {
            // Hang up after the first chunk: the caller's connection is dropped with the body.
            let _ = body.frame().await;
            return Ok::<_, Error>((parts, None, false));
        }
        let mut bytes = bytes::BytesMut::new();
        let mut body_error = false;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        bytes.extend_from_slice(d);
                    }
                }
                Err(_) => {
                    body_error = true;
                    break;
                }
            }
        }
        Ok::<_, Error>((parts, Some(bytes.freeze()), body_error))
    };
    let (parts, bytes, body_error) = match tokio::time::timeout(load.timeout, exchange).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tally.lost += 1;
            *tally.outcomes.entry("lost").or_default() += 1;
            tally.example(format!(
                "lost: {} {} stream={stream} fault={fault:?}: no response: {e}",
                dialect.as_str(),
                route.model
            ));
            return Err(e);
        }
        Err(_) => {
            tally.lost += 1;
            *tally.outcomes.entry("lost").or_default() += 1;
            tally.example(format!(
                "lost: {} {} stream={stream} fault={fault:?}: no answer in {:?}",
                dialect.as_str(),
                route.model,
                load.timeout
            ));
            return Err("timed out".into());
        }
    };
    let Some(bytes) = bytes else {
        *tally.statuses.entry(parts.status.as_u16()).or_default() += 1;
        *tally.outcomes.entry("cancelled_by_client").or_default() += 1;
        tally.cancelled += 1;
        return Err("hung up".into());
    };
    let epoch_after = load.kill_epoch.load(Ordering::Acquire);
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (backend, model, variant) =
        (header("x-switchyard-backend"), header("x-switchyard-model"), header("x-switchyard-variant"));
    let fell_back = parts.headers.contains_key("x-switchyard-fallback");
    let sse = header("content-type").starts_with("text/event-stream");
    let status = parts.status.as_u16();
    let outcome = classify(&Observed { dialect, stream_requested: stream, status, sse, body: &bytes, body_error });
    *tally.statuses.entry(status).or_default() += 1;
    *tally.outcomes.entry(outcome.name()).or_default() += 1;
    tally.fallbacks_seen += u64::from(fell_back);
    if outcome.is_error() {
        tally.client_errors += 1;
    }
    // Backends are named by their dialect (`openai-*`, `anthropic-*`) in the soak's config.
    let same_dialect = backend.starts_with(dialect.as_str());
    let in_scope = !scoped || fell_back || load.variant_models.split(',').any(|m| m == model);
    let reached = fault.filter(|_| in_scope);
    let describe = || {
        let snippet = String::from_utf8_lossy(&bytes[..bytes.len().min(160)]).into_owned();
        format!("{} {} stream={stream} fault={fault:?} scoped={scoped} status={status} backend={backend} model={model} fallback={fell_back}: {snippet}", dialect.as_str(), route.model)
    };
    match &outcome {
        Outcome::Lost(why) => {
            tally.lost += 1;
            tally.example(format!("lost ({why}): {}", describe()));
        }
        o if !allowed(reached, o, stream, same_dialect) => {
            tally.unexpected += 1;
            tally.example(format!("unexpected {}: {}", o.name(), describe()));
        }
        _ => {}
    }
    if epoch_before == epoch_after && epoch_before % 2 == 1 && route.flag.is_some() && route.flag == load.kill_flag {
        tally.kill_checked += 1;
        if variant != "control" {
            tally.kill_violations += 1;
            tally.example(format!("served {variant:?} while {:?} was killed: {}", load.kill_flag, describe()));
        }
    }
    if body_error {
        return Err("body broke off".into());
    }
    Ok(())
}

/// `concurrency` workers, each on its own keep-alive connection (a new one after a broken answer),
/// until `until` or the request cap.
pub async fn run_load(load: Arc<Load>, concurrency: usize, until: Instant) -> Tally {
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let load = load.clone();
        let h2 = worker < load.h2_workers;
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut send = None;
            while Instant::now() < until && !load.stop.load(Ordering::Relaxed) {
                if load.sent.fetch_add(1, Ordering::Relaxed) >= load.max_requests {
                    break;
                }
                let conn = match send.take() {
                    Some(s) => s,
                    None => match Conn::open(&load.openai.authority, h2).await {
                        Ok(s) => s,
                        Err(e) => {
                            tally.example(format!("cannot connect to the gateway: {e}"));
                            tally.lost += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let mut conn = conn;
                if one(&load, &mut conn, &mut tally).await.is_ok() && !conn.is_closed() {
                    send = Some(conn);
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for t in tasks {
        if let Ok(t) = t.await {
            total.merge(t);
        }
    }
    total
}
