//! The soak client (`bench/soak.sh` drives it): sustained mixed load on a running gateway — both
//! dialects, stream and not, many distinct_ids, a share of requests asking the bench upstream for a
//! fault (`x-mock-fault`), a share hung up on mid-stream as an impatient caller would — while the
//! flags file is rewritten and the kill switch toggled. Then the
//! checks, each printed PASS or FAIL (exit 1 on any FAIL): every request got exactly one response,
//! complete or a well-formed error of its dialect, or the defined outcome of its fault; no request
//! lost; the gateway's counters add up to the client's; every rewrite and kill took effect; RSS and
//! open descriptors back near the baseline after an idle settle; the gateway still serves.
//! A table on stderr, one JSON line on stdout. `switchyard-soak config` writes the gateway config
//! the soak expects (`setup.rs`).

#[path = "../benchkit/mod.rs"]
mod benchkit;
mod chaos;
mod classify;
mod load;
mod setup;

use benchkit::{fd_count, print_line, rss_kib, Conn, Error, Target};
use chaos::{lock, ChaosCounts};
use clap::Parser;
use load::{one, parse_faults, run_load, Load, Route, Tally};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Soak test client for Switchyard: load with faults, reloads and kills; then the checks")]
enum Mode {
    /// Writes switchyard.toml and flags.json for the soak into a directory.
    Config(ConfigArgs),
    /// Runs the soak against a gateway started with that config.
    Run(Cli),
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Where to write switchyard.toml and flags.json.
    #[arg(long)]
    dir: std::path::PathBuf,
    /// The bench upstream's base URL.
    #[arg(long)]
    upstream: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    #[arg(long, default_value = "SWITCHYARD_ADMIN_TOKEN")]
    admin_token_env: String,
    #[arg(long, default_value_t = 1000)]
    feedback_capacity: usize,
    #[arg(long, default_value = "1s")]
    first_byte_timeout: String,
    #[arg(long, default_value = "1s")]
    idle_timeout: String,
}

#[derive(clap::Args, Clone)]
struct Cli {
    /// The gateway, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// The bench upstream (for its injected-fault counts), e.g. http://127.0.0.1:9001
    #[arg(long)]
    upstream: Option<String>,
    /// The gateway's process id (RSS and descriptors are read from /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds of load (after the warm-up).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Seconds of fault-free warm-up before the baseline is read.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Idle seconds after the load before the last RSS and descriptor reading.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Stop the load after this many requests even before `duration`.
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// Faults asked of the upstream, percent of load requests per kind.
    #[arg(long, default_value = "500=1,429=1,529=1,reset=1,reset_mid=1,stall=0.5,slow=0.5,malformed=1")]
    faults: String,
    /// Percent of fault-free streamed load requests the client hangs up on after the first chunk
    /// (slowed to 50 ms a chunk by the upstream, so the hang-up is mid-stream).
    #[arg(long, default_value_t = 1.0)]
    cancel: f64,
    /// Every this many seconds (0: never) a fault storm: for `storm_length` seconds every request to
    /// `storm_route` asks for a 500 from the variants, so the route's cut-off trips.
    #[arg(long, default_value_t = 10.0)]
    storm_every: f64,
    #[arg(long, default_value_t = 3.0)]
    storm_length: f64,
    #[arg(long, default_value = setup::STORM_ROUTE)]
    storm_route: String,
    /// Percent of the workers that speak HTTP/2 (cleartext) to the gateway; the others HTTP/1.1.
    #[arg(long, default_value_t = 25.0)]
    h2: f64,
    /// Routes to call: `model` or `model=flag`, comma-separated.
    #[arg(long, default_value = setup::ROUTES)]
    routes: String,
    /// Models of the routes' variants: half the faults are scoped to them (so fallback serves).
    #[arg(long, default_value = setup::VARIANT_MODELS)]
    variant_models: String,
    /// Distinct callers (x-distinct-id soak-user-N).
    #[arg(long, default_value_t = 10_000)]
    distinct_ids: u64,
    /// The gateway's flags file, rewritten every `reload_every` seconds.
    #[arg(long)]
    flags_file: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 3.0)]
    reload_every: f64,
    /// The flag killed and revived every `kill_every` seconds through the admin API (`none`: no kills).
    #[arg(long, default_value = setup::KILL_FLAG)]
    kill_flag: String,
    #[arg(long, default_value_t = 4.0)]
    kill_every: f64,
    /// Environment variable holding the admin token.
    #[arg(long, default_value = "SWITCHYARD_ADMIN_TOKEN")]
    admin_token_env: String,
    /// RSS after the settle may exceed the baseline by max(this many MiB, `rss_tolerance_pct`).
    #[arg(long, default_value_t = 10.0)]
    rss_tolerance_mib: f64,
    #[arg(long, default_value_t = 25.0)]
    rss_tolerance_pct: f64,
    /// Open descriptors after the settle may exceed the baseline by this many.
    #[arg(long, default_value_t = 16)]
    fd_tolerance: usize,
    /// Per-request deadline in seconds; a request still unanswered then is lost.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
}

/// Sums of a counter family from Prometheus text, by the value of one label (`""`: all).
fn counter_sums(text: &str, family: &str, by: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(family) else { continue };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let Ok(v) = value.trim().parse::<f64>() else { continue };
        let key = if by.is_empty() {
            String::new()
        } else {
            let needle = format!("{by}=\"");
            labels.split_once(&needle).and_then(|(_, r)| r.split_once('"')).map_or(String::new(), |(v, _)| v.to_owned())
        };
        *out.entry(key).or_default() += v;
    }
    out
}

fn total(m: &BTreeMap<String, f64>) -> u64 {
    m.values().sum::<f64>() as u64
}

/// RSS (KiB), peak RSS (KiB) and open descriptors of `pid`, or zeros.
fn reading(pid: Option<u32>) -> (u64, u64, usize) {
    pid.map_or((0, 0, 0), |p| {
        let (rss, hwm) = rss_kib(p);
        (rss, hwm, fd_count(p))
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn soak(cli: Cli) -> Result<(Value, bool), Error> {
    let base: http::Uri = cli.url.parse()?;
    let authority = base.authority().ok_or("--url needs host:port")?.to_string();
    let routes: Vec<Route> = cli
        .routes
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once('=') {
            Some((m, f)) => Route { model: m.to_owned(), flag: Some(f.to_owned()) },
            None => Route { model: r.to_owned(), flag: None },
        })
        .collect();
    if routes.is_empty() {
        return Err("--routes names no route".into());
    }
    let kill_flag = Some(cli.kill_flag.clone()).filter(|f| f != "none");
    let kill_epoch = Arc::new(AtomicU64::new(0));
    let storm = Arc::new(AtomicBool::new(false));
    let make_load = |with_faults: bool| -> Result<Load, Error> {
        Ok(Load {
            openai: Target::new(&format!("http://{authority}/v1/chat/completions").parse()?, &[])?,
            anthropic: Target::new(&format!("http://{authority}/v1/messages").parse()?, &[])?,
            routes: routes.clone(),
            faults: parse_faults(&cli.faults)?,
            variant_models: cli.variant_models.clone(),
            distinct_ids: cli.distinct_ids.max(1),
            kill_flag: kill_flag.clone(),
            kill_epoch: kill_epoch.clone(),
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            max_requests: cli.max_requests,
            timeout: Duration::from_secs_f64(cli.request_timeout),
            with_faults,
            cancel: cli.cancel / 100.0,
            h2_workers: (cli.concurrency as f64 * cli.h2 / 100.0).round() as usize,
            storm: storm.clone(),
            storm_route: cli.storm_route.clone(),
        })
    };

    // Warm-up without faults, then every client connection closed before the baseline is read.
    let started = Instant::now();
    let warm = make_load(false)?;
    let mut tally =
        run_load(Arc::new(warm), cli.concurrency, Instant::now() + Duration::from_secs_f64(cli.warmup)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_start, _, fds_start) = reading(cli.pid);
    let metrics_before = chaos::get(&authority, "/metrics").await?;
    let reloads_before = counter_sums(&metrics_before, "switchyard_flag_reloads_total", "outcome");

    // Load, with the flags file rewritten and the kill switch toggled meanwhile.
    let stop_chaos = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Mutex::new(ChaosCounts::default()));
    let mut chaos_tasks = Vec::new();
    if let Some(path) = &cli.flags_file {
        let every = Duration::from_secs_f64(cli.reload_every);
        chaos_tasks.push(tokio::spawn(chaos::rewrite_flags(path.clone(), every, stop_chaos.clone(), counts.clone())));
    }
    if let Some(flag) = &kill_flag {
        let token = std::env::var(&cli.admin_token_env).map_err(|_| format!("{} is not set", cli.admin_token_env))?;
        let every = Duration::from_secs_f64(cli.kill_every);
        let kill = chaos::KillSwitch { base: cli.url.clone(), token, flag: flag.clone(), every };
        chaos_tasks.push(tokio::spawn(chaos::toggle_kill(
            kill,
            stop_chaos.clone(),
            kill_epoch.clone(),
            storm.clone(),
            counts.clone(),
        )));
    }
    let load = Arc::new(make_load(true)?);
    let load_started = Instant::now();
    let deadline = load_started + Duration::from_secs_f64(cli.duration);
    let storms = Arc::new(AtomicU64::new(0));
    if cli.storm_every > 0.0 {
        let (stop, storm, storms, epoch) = (stop_chaos.clone(), storm.clone(), storms.clone(), kill_epoch.clone());
        let (every, length) = (Duration::from_secs_f64(cli.storm_every), Duration::from_secs_f64(cli.storm_length));
        chaos_tasks.push(tokio::spawn(async move {
            loop {
                chaos::nap(every, &stop).await;
                // Not while the flag is killed: everyone is on control then.
                while epoch.load(Ordering::Acquire) % 2 == 1 && !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                storm.store(true, Ordering::Relaxed);
                storms.fetch_add(1, Ordering::Relaxed);
                chaos::nap(length, &stop).await;
                storm.store(false, Ordering::Relaxed);
            }
        }));
    }
    // Once a second: RSS and descriptors, and which variants are cut off (trips and restores).
    let sampler = {
        let pid = cli.pid;
        let stop = stop_chaos.clone();
        let authority = authority.clone();
        tokio::spawn(async move {
            let (mut samples, mut trips, mut restores) = (Vec::new(), 0u64, 0u64);
            let mut cut = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                samples.push(reading(pid));
                let Ok(text) = chaos::get(&authority, "/metrics").await else { continue };
                let now: std::collections::BTreeSet<String> = text
                    .lines()
                    .filter(|l| l.starts_with("switchyard_variant_cut_off{") && l.ends_with(" 1"))
                    .map(str::to_owned)
                    .collect();
                trips += now.difference(&cut).count() as u64;
                restores += cut.difference(&now).count() as u64;
                cut = now;
            }
            (samples, trips, restores)
        })
    };
    let load_tally = run_load(load.clone(), cli.concurrency, deadline).await;
    let load_seconds = load_started.elapsed().as_secs_f64();
    stop_chaos.store(true, Ordering::Relaxed);
    for t in chaos_tasks {
        let _ = t.await;
    }
    let (samples, cut_trips, cut_restores) = sampler.await.unwrap_or_default();
    let storms = storms.load(Ordering::Relaxed);
    tally.merge(load_tally);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_end, hwm, fds_end) = reading(cli.pid);
    tokio::time::sleep(Duration::from_secs_f64(cli.settle)).await;
    let (rss_settled, _, fds_settled) = reading(cli.pid);

    // The gateway's view.
    let metrics = chaos::get(&authority, "/metrics").await?;
    let gw_status = counter_sums(&metrics, "switchyard_requests_total", "status");
    let gw_errors = total(&counter_sums(&metrics, "switchyard_request_errors_total", ""));
    let gw_fallbacks = total(&counter_sums(&metrics, "switchyard_fallbacks_total", ""));
    let gw_error_kinds = counter_sums(&metrics, "switchyard_request_errors_total", "kind");
    let gw_faults = counter_sums(&metrics, "switchyard_upstream_faults_total", "fault");
    let gw_cancels = gw_error_kinds.get("client_cancel").copied().unwrap_or(0.0) as u64;
    let in_flight = total(&counter_sums(&metrics, "switchyard_in_flight_requests", ""));
    let reloads_after = counter_sums(&metrics, "switchyard_flag_reloads_total", "outcome");
    let upstream_faults = match &cli.upstream {
        Some(u) => {
            let a = u.trim_start_matches("http://").trim_end_matches('/');
            chaos::get(a, "/mock/faults").await.ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
        }
        None => None,
    };
    // Still serving: one plain request after all that.
    let healthy = chaos::get(&authority, "/healthz").await.is_ok() && {
        let after = make_load(false)?;
        let mut t = Tally::default();
        let mut send = Conn::open(&after.openai.authority, false).await?;
        one(&after, &mut send, &mut t).await.is_ok() && t.outcomes.get("complete") == Some(&1)
    };
    let counts = std::mem::take(&mut *lock(&counts));

    // Checks.
    let mut checks: Vec<(String, bool, String)> = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| checks.push((name.to_owned(), ok, detail));
    let answered: u64 = tally.statuses.values().sum();
    check(
        "every request answered exactly once",
        tally.lost == 0 && answered == tally.sent,
        format!("{} sent, {} answered, {} lost", tally.sent, answered, tally.lost),
    );
    check(
        "every answer complete, a well-formed error, or its fault's defined outcome",
        tally.unexpected == 0,
        format!("{} unexpected", tally.unexpected),
    );
    let gw_total: u64 = total(&gw_status);
    check(
        "requests add up (client sent = sum of switchyard_requests_total)",
        gw_total == tally.sent,
        format!("client {} vs gateway {}", tally.sent, gw_total),
    );
    let client_by_status: BTreeMap<String, u64> = tally.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let gw_by_status: BTreeMap<String, u64> = gw_status.iter().map(|(k, v)| (k.clone(), *v as u64)).collect();
    check(
        "statuses add up (client and gateway, status by status)",
        client_by_status == gw_by_status,
        format!("client {client_by_status:?} vs gateway {gw_by_status:?}"),
    );
    let gw_caller_errors = gw_errors.saturating_sub(gw_fallbacks).saturating_sub(gw_cancels);
    check(
        "errors add up (client-seen errors = errors_total - fallbacks_total - client_cancel)",
        gw_caller_errors == tally.client_errors,
        format!(
            "client {} vs gateway {} ({} errors - {} fallbacks - {} client_cancel)",
            tally.client_errors, gw_caller_errors, gw_errors, gw_fallbacks, gw_cancels
        ),
    );
    check(
        "hang-ups add up (client hung up = client_cancel)",
        gw_cancels == tally.cancelled,
        format!("client hung up on {} streams, gateway counted {} client_cancel", tally.cancelled, gw_cancels),
    );
    check(
        "nothing left in flight (switchyard_in_flight_requests = 0)",
        in_flight == 0,
        format!("{in_flight} in flight"),
    );
    if cli.flags_file.is_some() {
        let d = |k: &str| {
            (reloads_after.get(k).copied().unwrap_or(0.0) - reloads_before.get(k).copied().unwrap_or(0.0)) as u64
        };
        let ok =
            d("ok") == counts.valid_rewrites && d("error") == counts.invalid_rewrites && counts.rewrite_errors == 0;
        check(
            "every flags-file rewrite applied, every invalid one rejected",
            ok,
            format!(
                "{} valid written / {} applied, {} invalid written / {} rejected",
                counts.valid_rewrites,
                d("ok"),
                counts.invalid_rewrites,
                d("error")
            ),
        );
    }
    if kill_flag.is_some() {
        let ok = counts.admin_failures == 0
            && counts.gauge_mismatches == 0
            && counts.kills > 0
            && tally.kill_violations == 0;
        check("kill switch: every kill and revive took, killed means control", ok,
            format!("{} kills, {} revives, {} admin failures, {} gauge mismatches, {} requests while killed, {} not on control",
                counts.kills, counts.revives, counts.admin_failures, counts.gauge_mismatches, tally.kill_checked, tally.kill_violations));
    }
    if cli.pid.is_some() {
        let allowance = (cli.rss_tolerance_mib * 1024.0).max(rss_start as f64 * cli.rss_tolerance_pct / 100.0);
        check(
            "RSS back to baseline after the settle",
            (rss_settled as f64) <= rss_start as f64 + allowance,
            format!(
                "start {:.1} MiB, end of load {:.1} MiB, after {}s idle {:.1} MiB (allowed up to {:.1}), peak {:.1}",
                mib(rss_start),
                mib(rss_end),
                cli.settle,
                mib(rss_settled),
                mib(rss_start) + allowance / 1024.0,
                mib(hwm)
            ),
        );
        check(
            "no descriptor leak",
            fds_settled <= fds_start + cli.fd_tolerance,
            format!(
                "start {fds_start}, end of load {fds_end}, after the settle {fds_settled} (allowed up to {})",
                fds_start + cli.fd_tolerance
            ),
        );
    }
    check("the gateway still serves", healthy, String::new());
    let passed = checks.iter().all(|c| c.1);

    // Report.
    let fallbacks_by_reason = counter_sums(&metrics, "switchyard_fallbacks_total", "reason");
    let rate = tally.sent as f64 / started.elapsed().as_secs_f64();
    let mut out = String::new();
    out.push_str(&format!(
        "soak: {:.1}s of load ({:.1}s warm-up), {} requests ({rate:.0}/s overall), concurrency {}\n",
        load_seconds, cli.warmup, tally.sent, cli.concurrency
    ));
    out.push_str(&format!("  shapes:            {:?}\n", tally.shapes));
    out.push_str(&format!("  outcomes:          {:?}\n", tally.outcomes));
    out.push_str(&format!("  statuses:          {:?}\n", tally.statuses));
    out.push_str(&format!(
        "  faults asked:      {:?} (total {})\n",
        tally.faults_asked,
        tally.faults_asked.values().sum::<u64>()
    ));
    if let Some(u) = &upstream_faults {
        out.push_str(&format!(
            "  faults injected:   {} (upstream's count, fallback attempts included)\n",
            u["injected"]
        ));
    }
    if !gw_faults.is_empty() {
        let seen: BTreeMap<_, _> = gw_faults.iter().map(|(k, v)| (k.clone(), *v as u64)).collect();
        out.push_str(&format!("  upstream faults:   {seen:?} (the gateway's switchyard_upstream_faults_total)\n"));
    }
    out.push_str(&format!(
        "  gateway errors:    {:?}\n",
        gw_error_kinds.iter().map(|(k, v)| (k.clone(), *v as u64)).collect::<BTreeMap<_, _>>()
    ));
    out.push_str(&format!(
        "  fallbacks:         {:?} (client saw {})\n",
        fallbacks_by_reason.iter().map(|(k, v)| (k.clone(), *v as u64)).collect::<BTreeMap<_, _>>(),
        tally.fallbacks_seen
    ));
    out.push_str(&format!(
        "  flags rewrites:    {} valid, {} invalid; kills {}, revives {}\n",
        counts.valid_rewrites, counts.invalid_rewrites, counts.kills, counts.revives
    ));
    if cli.pid.is_some() {
        let series: Vec<String> = samples.iter().map(|s| format!("{:.1}", mib(s.0))).collect();
        out.push_str(&format!(
            "  RSS MiB:           start {:.1}, end {:.1}, settled {:.1}, peak {:.1}; per second: {}\n",
            mib(rss_start),
            mib(rss_end),
            mib(rss_settled),
            mib(hwm),
            series.join(" ")
        ));
        out.push_str(&format!("  open fds:          start {fds_start}, end {fds_end}, settled {fds_settled}\n"));
    }
    out.push_str(&format!(
        "  cut-off:           {storms} fault storms on {}; variants cut off {cut_trips} times, restored {cut_restores} times (sampled each second)\n",
        cli.storm_route
    ));
    if let Some(p) = &counts.first_problem {
        out.push_str(&format!("  first chaos problem: {p}\n"));
    }
    for e in &tally.examples {
        out.push_str(&format!("  example: {e}\n"));
    }
    for (name, ok, detail) in &checks {
        out.push_str(&format!(
            "{} {name}{}{detail}\n",
            if *ok { "PASS" } else { "FAIL" },
            if detail.is_empty() { "" } else { ": " }
        ));
    }
    eprint!("{out}");
    let result = json!({"switchyard_soak": {
        "passed": passed,
        "load_seconds": load_seconds, "warmup_seconds": cli.warmup, "settle_seconds": cli.settle,
        "concurrency": cli.concurrency, "requests": tally.sent, "lost": tally.lost, "unexpected": tally.unexpected,
        "outcomes": tally.outcomes, "statuses": client_by_status, "shapes": tally.shapes,
        "faults_asked": tally.faults_asked, "faults_injected": upstream_faults.map(|u| u["injected"].clone()),
        "fallbacks": gw_fallbacks, "gateway_errors": gw_caller_errors, "client_errors": tally.client_errors,
        "cancelled_by_client": tally.cancelled,
        "gateway_upstream_faults": gw_faults.iter().map(|(k, v)| (k.clone(), *v as u64)).collect::<BTreeMap<_, _>>(),
        "cut_off": {"storms": storms, "trips_seen": cut_trips, "restores_seen": cut_restores},
        "flag_rewrites": {"valid": counts.valid_rewrites, "invalid": counts.invalid_rewrites},
        "kills": counts.kills, "revives": counts.revives, "requests_while_killed": tally.kill_checked,
        "rss_kib": {"start": rss_start, "end": rss_end, "settled": rss_settled, "peak": hwm},
        "fds": {"start": fds_start, "end": fds_end, "settled": fds_settled},
        "checks": checks.iter().map(|(n, ok, d)| json!({"check": n, "pass": ok, "detail": d})).collect::<Vec<_>>(),
    }});
    Ok((result, passed))
}

fn main() -> ExitCode {
    let cli = match Mode::parse() {
        Mode::Run(cli) => cli,
        Mode::Config(c) => {
            let setup = setup::Setup {
                upstream: &c.upstream,
                listen: &c.listen,
                admin_token_env: &c.admin_token_env,
                feedback_capacity: c.feedback_capacity,
                first_byte_timeout: &c.first_byte_timeout,
                idle_timeout: &c.idle_timeout,
            };
            return match setup.write(&c.dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard-soak config: {e}");
                    ExitCode::from(2)
                }
            };
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(soak(cli)) {
        Ok((v, passed)) => {
            print_line(&v);
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("switchyard-soak: {e}");
            ExitCode::from(2)
        }
    }
}
