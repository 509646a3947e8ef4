//! The one background task that drains the export queue: batches of up to `batch_size` events or whatever
//! waited `flush_interval`, POSTed to `{host}/batch/`, retried with exponential backoff (honouring
//! `retry-after` on 429 and 503), given up and counted after `ATTEMPTS`; on shutdown, a final flush bounded
//! by `SHUTDOWN_GRACE`, and whatever is left counted as dropped.

use super::{events, ExportConfig, ExportMetrics, Pending};
use crate::upstream::{build_client_with, HttpClient};
use bytes::Bytes;
use http::{header, StatusCode};
use http_body_util::{BodyExt, Full};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for the final flush (and a batch already in flight) before giving up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Tries per batch, the first included.
pub const ATTEMPTS: u32 = 3;
/// Wait before the second try; doubled before each later one.
pub const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// A longer `retry-after` is cut to this, so one answer cannot stall the export for long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// PostHog answers a batch in well under a second; this bounds a hung connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Sender {
    client: HttpClient,
    url: String,
    api_key: String,
    batch_size: usize,
    interval: Duration,
    metrics: ExportMetrics,
    /// Events received and not yet handed to a request.
    buf: Vec<Pending>,
    /// Events in the batch being sent: lost if shutdown's grace runs out mid-request.
    in_flight: usize,
}

/// What one POST came to.
enum Outcome {
    Accepted,
    /// Worth another try, after `after` if the server said so.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Not worth retrying (4xx other than 408/429, or a request we could not build).
    Refused(String),
}

impl Sender {
    pub(crate) fn new(cfg: &ExportConfig, api_key: String, metrics: ExportMetrics) -> Self {
        Sender {
            client: build_client_with(CONNECT_TIMEOUT, "posthog-export"),
            url: format!("{}/batch/", cfg.host.trim().trim_end_matches('/')),
            api_key,
            batch_size: cfg.batch_size(),
            interval: cfg.flush_interval(),
            metrics,
            buf: Vec::new(),
            in_flight: 0,
        }
    }

    /// Runs until `shutdown` is cancelled (then flushes, for at most `SHUTDOWN_GRACE`) or every `Exporter`
    /// handle is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Pending>, shutdown: CancellationToken) {
        {
            let work = self.work(&mut rx, &shutdown);
            tokio::pin!(work);
            tokio::select! {
                () = &mut work => return,
                () = shutdown.cancelled() => {}
            }
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut work).await.is_ok() {
                return;
            }
        }
        rx.close();
        let mut lost = self.buf.len() + self.in_flight;
        while rx.try_recv().is_ok() {
            lost += 1;
        }
        tracing::warn!(lost, "PostHog export: shutdown grace over before the queue was flushed");
        self.metrics.dropped.with_label_values(&["shutdown"]).inc_by(lost as u64);
    }

    async fn work(&mut self, rx: &mut mpsc::Receiver<Pending>, shutdown: &CancellationToken) {
        // When the oldest buffered event has waited `interval`.
        let mut due: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                msg = rx.recv() => {
                    let Some(p) = msg else { break };
                    self.buf.push(p);
                    if self.buf.len() >= self.batch_size {
                        self.flush().await;
                        due = None;
                    } else if due.is_none() {
                        due = Some(Instant::now() + self.interval);
                    }
                }
                () = sleep_until(due) => {
                    self.flush().await;
                    due = None;
                }
            }
        }
        rx.close();
        while let Ok(p) = rx.try_recv() {
            self.buf.push(p);
            if self.buf.len() >= self.batch_size {
                self.flush().await;
            }
        }
        self.flush().await;
    }

    /// Sends the buffer as one batch and counts the outcome.
    async fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(self.batch_size.min(1024)));
        let n = batch.len();
        self.in_flight = n;
        let items: Vec<serde_json::Value> = batch.iter().map(events::batch_item).collect();
        drop(batch);
        let body = serde_json::json!({ "api_key": self.api_key, "batch": items });
        let result = match serde_json::to_vec(&body) {
            Ok(bytes) => self.post_with_retries(Bytes::from(bytes)).await,
            Err(e) => Err(format!("batch not serialisable: {e}")),
        };
        match result {
            Ok(()) => self.metrics.sent.inc_by(n as u64),
            Err(why) => {
                tracing::warn!(events = n, error = %why, "PostHog export: batch dropped");
                self.metrics.failed_batches.inc();
                self.metrics.dropped.with_label_values(&["send_failed"]).inc_by(n as u64);
            }
        }
        self.in_flight = 0;
    }

    async fn post_with_retries(&self, body: Bytes) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let wait = match self.post_once(body.clone()).await {
                Outcome::Accepted => return Ok(()),
                Outcome::Refused(why) => return Err(why),
                Outcome::Retry { why, after } => {
                    last = why;
                    after.unwrap_or(BASE_BACKOFF * 2u32.pow(attempt - 1))
                }
            };
            if attempt < ATTEMPTS {
                tracing::debug!(attempt, error = %last, ?wait, "PostHog export: retrying batch");
                tokio::time::sleep(wait).await;
            }
        }
        Err(format!("{last} (after {ATTEMPTS} attempts)"))
    }

    async fn post_once(&self, body: Bytes) -> Outcome {
        let req = http::Request::post(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body));
        let req = match req {
            Ok(r) => r,
            Err(e) => return Outcome::Refused(format!("bad export URL {:?}: {e}", self.url)),
        };
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| format!("{e:?}"))?;
            let (parts, body) = resp.into_parts();
            // Read the (small) answer so the connection can go back to the pool.
            let _ = body.collect().await;
            Ok::<_, String>(parts)
        };
        let parts = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Err(_) => return Outcome::Retry { why: format!("no answer within {REQUEST_TIMEOUT:?}"), after: None },
            Ok(Err(e)) => return Outcome::Retry { why: format!("request failed: {e}"), after: None },
            Ok(Ok(parts)) => parts,
        };
        classify(parts.status, &parts.headers)
    }
}

fn classify(status: StatusCode, headers: &http::HeaderMap) -> Outcome {
    let why = format!("PostHog answered {status}");
    match status.as_u16() {
        200..=299 => Outcome::Accepted,
        429 | 503 => Outcome::Retry { why, after: retry_after(headers, chrono::Utc::now()) },
        408 | 500..=599 => Outcome::Retry { why, after: None },
        _ => Outcome::Refused(why),
    }
}

/// `retry-after` as seconds or an HTTP date (RFC 9110 §10.2.3), capped at `MAX_RETRY_AFTER`.
fn retry_after(headers: &http::HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            (at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(header::RETRY_AFTER, v.parse().unwrap());
        h
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:50Z").unwrap().with_timezone(&chrono::Utc)
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_caps_them() {
        assert_eq!(retry_after(&headers("3"), now()), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT"), now()), Some(Duration::from_secs(10)));
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:00:00 GMT"), now()), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("3600"), now()), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&headers("soon"), now()), None);
        assert_eq!(retry_after(&http::HeaderMap::new(), now()), None);
    }

    #[test]
    fn statuses_are_classified_by_whether_a_retry_can_help() {
        let none = http::HeaderMap::new();
        let kind = |s: u16, h: &http::HeaderMap| match classify(StatusCode::from_u16(s).unwrap(), h) {
            Outcome::Accepted => "ok".to_owned(),
            Outcome::Retry { after, .. } => format!("retry {after:?}"),
            Outcome::Refused(_) => "refused".to_owned(),
        };
        assert_eq!(kind(200, &none), "ok");
        assert_eq!(kind(500, &none), "retry None");
        assert_eq!(kind(408, &none), "retry None");
        assert_eq!(kind(429, &headers("2")), "retry Some(2s)");
        assert_eq!(kind(503, &headers("1")), "retry Some(1s)");
        assert_eq!(kind(400, &none), "refused");
        assert_eq!(kind(401, &none), "refused");
    }
}
