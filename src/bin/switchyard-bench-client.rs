//! The benchmark's own client, for what a load generator measures badly: latency with exactly
//! one request in flight (`latency`), time to first and last byte of streams (`stream`), both for
//! several targets taken in turns (`interleaved`: the machine's noise falls on every target
//! alike), and the memory of a proxy holding many open streams (`open-streams`). Each run uses raw
//! hyper 1 HTTP/1.1 connections (keep-alive, `TCP_NODELAY`) and prints one JSON line of results.
//! Driven by `bench/run.sh`; a non-2xx answer counts as an error, never as a sample.

#[allow(dead_code, reason = "the soak client uses the rest of the shared module")]
mod benchkit;

use benchkit::{print_line, rss_kib, Error};
use bytes::Bytes;
use clap::{Args as ClapArgs, Parser, Subcommand};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Latency and streaming client for Switchyard's benchmark")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Sequential requests, one in flight; percentiles of the full response time.
    Latency(Common),
    /// Sequential streaming requests; percentiles of time to first and last body byte.
    Stream(Common),
    /// `latency` (or `stream`) for several targets in one run, one request in flight in all: a
    /// block of requests to each target in turn, so that a burst of noise on the shared machine
    /// (another tenant, a daemon) falls on all of them, not on whichever target ran at the time.
    Interleaved {
        /// A JSON array of targets: `{"name", "url", "body_file", "headers": ["name: value", ..]}`.
        #[arg(long)]
        targets_file: std::path::PathBuf,
        /// Requests to one target before the next one's turn.
        #[arg(long, default_value_t = 10)]
        block: usize,
        /// Streaming requests: time to first and last byte, as `stream` measures them.
        #[arg(long)]
        stream: bool,
        #[command(flatten)]
        counts: Counts,
    },
    /// Opens many streams at once, then reads the RSS of the given processes while they are open.
    OpenStreams {
        #[command(flatten)]
        common: Common,
        /// Streams to hold open at once.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Process ids whose RSS is summed (e.g. nginx's master and workers).
        #[arg(long = "rss-pid")]
        rss_pids: Vec<u32>,
        /// How long to wait once every stream is open before reading RSS.
        #[arg(long, default_value_t = 300)]
        hold_ms: u64,
    },
}

#[derive(ClapArgs)]
struct Common {
    /// Target URL, e.g. http://127.0.0.1:8080/v1/chat/completions
    #[arg(long)]
    url: Uri,
    /// File holding the JSON request body.
    #[arg(long)]
    body_file: std::path::PathBuf,
    /// Extra header, "name: value"; repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    #[command(flatten)]
    counts: Counts,
}

/// How many sequential requests a run makes (to each target, when several take turns).
#[derive(ClapArgs)]
struct Counts {
    /// Measured requests.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Unmeasured requests first.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Stop measuring after this many seconds (the whole run's) even if fewer requests were made.
    #[arg(long, default_value_t = 60.0)]
    max_seconds: f64,
}

/// The bench's request: one body for every request.
struct Target {
    template: benchkit::Target,
    body: Bytes,
}

impl Target {
    fn new(c: &Common) -> Result<Self, Error> {
        Self::from_parts(&c.url, &c.headers, &c.body_file)
    }

    fn from_parts(url: &Uri, headers: &[String], body_file: &std::path::Path) -> Result<Self, Error> {
        let template = benchkit::Target::new(url, headers)?;
        let body = std::fs::read(body_file).map_err(|e| format!("{}: {e}", body_file.display()))?;
        Ok(Target { template, body: Bytes::from(body) })
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, Error> {
        self.template.request(self.body.clone())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Error> {
        benchkit::connect(&self.template.authority).await
    }
}

/// Times of one request: first body byte and end of body, from just before sending.
struct Timing {
    first: Duration,
    last: Duration,
}

async fn one(target: &Target, send: &mut SendRequest<Full<Bytes>>, stop_after_first: bool) -> Result<Timing, Error> {
    let req = target.request()?;
    send.ready().await?;
    let start = Instant::now();
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body.collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        return Err(format!("status {status}: {text}").into());
    }
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            first = Some(start.elapsed());
            if stop_after_first {
                // Keep the rest of the stream flowing in the background; the caller holds it open.
                tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
                break;
            }
        }
    }
    let last = start.elapsed();
    Ok(Timing { first: first.unwrap_or(last), last })
}

/// Nearest-rank percentiles in microseconds.
fn summary(mut us: Vec<f64>) -> Value {
    if us.is_empty() {
        return Value::Null;
    }
    us.sort_by(f64::total_cmp);
    let n = us.len();
    let pct = |q: f64| {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        us[rank - 1]
    };
    let mean = us.iter().sum::<f64>() / n as f64;
    json!({"n": n, "mean": mean, "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
           "p999": pct(0.999), "min": us[0], "max": us[n - 1]})
}

/// One target of an `interleaved` run, as the targets file gives it.
#[derive(serde::Deserialize)]
struct TargetSpec {
    name: String,
    url: String,
    body_file: std::path::PathBuf,
    #[serde(default)]
    headers: Vec<String>,
}

/// What one target of a sequential run collected.
struct Samples {
    target: Target,
    send: SendRequest<Full<Bytes>>,
    first: Vec<f64>,
    last: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    done: usize,
}

impl Samples {
    async fn new(target: Target, requests: usize) -> Result<Self, Error> {
        let send = target.connect().await?;
        let (first, last) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
        Ok(Samples { target, send, first, last, errors: 0, first_error: None, done: 0 })
    }

    /// One request; `measured`: its times are samples.
    async fn run(&mut self, measured: bool) -> Result<(), Error> {
        match one(&self.target, &mut self.send, false).await {
            Ok(t) => {
                if measured {
                    self.first.push(t.first.as_secs_f64() * 1e6);
                    self.last.push(t.last.as_secs_f64() * 1e6);
                }
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
                if self.send.is_closed() {
                    self.send = self.target.connect().await?;
                }
            }
        }
        self.done += 1;
        Ok(())
    }

    fn report(self, streaming: bool) -> Value {
        let mut out = json!({"ok": self.last.len(), "errors": self.errors, "first_error": self.first_error});
        if streaming {
            out["ttfb_us"] = summary(self.first);
            out["ttlb_us"] = summary(self.last);
        } else {
            out["latency_us"] = summary(self.last);
        }
        out
    }
}

/// Sequential requests to each of `targets` in turn, `block` at a time, one in flight in all:
/// `counts.warmup` unmeasured ones each, then `counts.requests` measured ones each (or until
/// `counts.max_seconds`). Returns each target's samples and the measured seconds.
async fn sequential(targets: Vec<Target>, block: usize, counts: &Counts) -> Result<(Vec<Samples>, f64), Error> {
    let mut all = Vec::with_capacity(targets.len());
    for t in targets {
        all.push(Samples::new(t, counts.requests).await?);
    }
    let block = block.max(1);
    let deadline = Duration::from_secs_f64(counts.max_seconds);
    let mut started = Instant::now();
    for (measured, per_target) in [(false, counts.warmup), (true, counts.requests)] {
        started = Instant::now();
        for s in &mut all {
            s.done = 0;
        }
        'turns: while all.iter().any(|s| s.done < per_target) {
            for s in &mut all {
                for _ in 0..block.min(per_target - s.done) {
                    // Checked before every measured request.
                    if measured && started.elapsed() > deadline {
                        break 'turns;
                    }
                    s.run(measured).await?;
                }
            }
        }
    }
    Ok((all, started.elapsed().as_secs_f64()))
}

async fn single(c: &Common, streaming: bool) -> Result<Value, Error> {
    let (mut all, elapsed) = sequential(vec![Target::new(c)?], usize::MAX, &c.counts).await?;
    let mut out = all.remove(0).report(streaming);
    out["mode"] = json!(if streaming { "stream" } else { "latency" });
    out["url"] = json!(c.url.to_string());
    out["seconds"] = json!(elapsed);
    Ok(out)
}

async fn interleaved(file: &std::path::Path, block: usize, streaming: bool, counts: &Counts) -> Result<Value, Error> {
    let text = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let specs: Vec<TargetSpec> = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut targets = Vec::with_capacity(specs.len());
    for t in &specs {
        targets.push(Target::from_parts(&t.url.parse()?, &t.headers, &t.body_file)?);
    }
    let (all, elapsed) = sequential(targets, block, counts).await?;
    let mut each = serde_json::Map::new();
    for (spec, samples) in specs.iter().zip(all) {
        let mut r = samples.report(streaming);
        r["url"] = json!(spec.url);
        each.insert(spec.name.clone(), r);
    }
    Ok(json!({"mode": if streaming { "interleaved-stream" } else { "interleaved-latency" },
        "block": block, "seconds": elapsed, "targets": each}))
}

async fn open_streams(c: &Common, streams: usize, pids: &[u32], hold: Duration) -> Result<Value, Error> {
    let target = Arc::new(Target::new(c)?);
    let before: Vec<(u64, u64)> = pids.iter().map(|p| rss_kib(*p)).collect();
    let opened = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(100));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(streams);
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    for _ in 0..streams {
        let (target, opened, gate, done_tx) = (target.clone(), opened.clone(), gate.clone(), done_tx.clone());
        let mut hold_rx = hold_rx.clone();
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let res = async {
                let mut send = target.connect().await?;
                one(&target, &mut send, true).await?;
                Ok::<_, Error>(send)
            }
            .await;
            drop(permit);
            match res {
                Ok(send) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    let _ = done_tx.send(Ok(())).await;
                    let _ = hold_rx.wait_for(|released| *released).await;
                    drop(send);
                }
                Err(e) => {
                    let _ = done_tx.send(Err(e.to_string())).await;
                }
            }
        });
    }
    drop(done_tx);
    let (mut errors, mut first_error) = (0usize, None::<String>);
    let wait = tokio::time::timeout(Duration::from_secs(60), async {
        let mut seen = 0;
        while seen < streams {
            match done_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
                None => break,
            }
            seen += 1;
        }
    })
    .await;
    let open_ms = start.elapsed().as_secs_f64() * 1e3;
    tokio::time::sleep(hold).await;
    let during: Vec<(u64, u64)> = pids.iter().map(|p| rss_kib(*p)).collect();
    let _ = hold_tx.send(true);
    Ok(json!({
        "mode": "open-streams", "url": c.url.to_string(), "requested": streams,
        "open": opened.load(Ordering::Relaxed), "errors": errors, "first_error": first_error,
        "timed_out": wait.is_err(), "open_ms": open_ms, "pids": pids,
        "rss_before_kib": before.iter().map(|r| r.0).sum::<u64>(),
        "rss_open_kib": during.iter().map(|r| r.0).sum::<u64>(),
        "hwm_kib": during.iter().map(|r| r.1).sum::<u64>(),
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match &cli.mode {
            Mode::Latency(c) => single(c, false).await,
            Mode::Stream(c) => single(c, true).await,
            Mode::Interleaved { targets_file, block, stream, counts } => {
                interleaved(targets_file, *block, *stream, counts).await
            }
            Mode::OpenStreams { common, streams, rss_pids, hold_ms } => {
                open_streams(common, *streams, rss_pids, Duration::from_millis(*hold_ms)).await
            }
        }
    });
    match result {
        Ok(v) => {
            print_line(&v);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard-bench-client: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s = summary((1..=1000).map(f64::from).collect());
        assert_eq!(s["p50"], 500.0);
        assert_eq!(s["p99"], 990.0);
        assert_eq!(s["p999"], 999.0);
        assert_eq!(s["max"], 1000.0);
    }
}
