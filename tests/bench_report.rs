//! `bench/report.py`, the benchmark's aggregation, on raw results of known values: medians over
//! repetitions, "added" as the median of per-repetition differences, max-throughput ratios to
//! direct and to nginx for every proxy (the plain build, the profile-guided `pgo` target and the
//! floor), a failed cell reported as an error and never averaged in, and the Markdown report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::{json, Value};
use std::path::Path;

fn write(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
}

fn oha(rps: f64, ok: u64, failed: u64) -> String {
    let mut codes = json!({"200": ok});
    if failed > 0 {
        codes["502"] = json!(failed);
    }
    json!({"summary": {"requestsPerSec": rps}, "statusCodeDistribution": codes, "errorDistribution": {},
           "latencyPercentiles": {"p50": 0.0002, "p99": 0.0005, "p99.9": 0.001}})
    .to_string()
}

#[test]
fn the_report_gives_medians_added_figures_and_ratios_for_every_target() {
    let dir = common::temp_dir("bench-report");
    let raw = dir.join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    // Three repetitions; per target a base figure moved by the repetition, so the medians are rep 2's.
    let rps =
        [("direct", 40_000.0), ("switchyard", 24_000.0), ("pgo", 28_000.0), ("floor", 30_000.0), ("nginx", 32_000.0)];
    let p99 = [("direct", 100.0), ("switchyard", 200.0), ("pgo", 180.0), ("floor", 150.0), ("nginx", 160.0)];
    for rep in 1..=3 {
        let shift = f64::from(rep - 2);
        for (t, r) in rps {
            let stem = raw.join(format!("rate-0__passthrough__{t}__r{rep}"));
            write(&stem.with_extension("oha"), &oha(r + 1000.0 * shift, 100_000, 0));
            write(&stem.with_extension("cpu"), r#"{"cpu_ticks":50,"clk_tck":100}"#);
        }
        for (t, p) in p99 {
            let lat = json!({"latency_us": {"p50": p / 2.0, "p99": p + 10.0 * shift, "p999": p * 2.0}, "errors": 0});
            write(&raw.join(format!("latency__passthrough__{t}__r{rep}.json")), &lat.to_string());
        }
    }
    // A 1k req/s run where the pgo target failed every request in one repetition.
    for rep in 1..=3 {
        for (t, _) in rps {
            let failed = if t == "pgo" && rep == 3 { 500 } else { 0 };
            let ok = if failed > 0 { 0 } else { 10_000 };
            write(&raw.join(format!("rate-1000__passthrough__{t}__r{rep}.oha")), &oha(1000.0, ok, failed));
        }
    }
    write(
        &raw.join("idle-start.json"),
        r#"{"kind":"idle","phase":"start","direct":2048,"switchyard":9216,"pgo":9300,"nginx":21000}"#,
    );
    let machine = dir.join("machine.txt");
    write(&machine, "nproc=2\npgo=measured\n");
    let commands = dir.join("commands.log");
    write(&commands, "oha -z 10s http://127.0.0.1:1/\n");
    let results = dir.join("RESULTS.md");
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/report.py"))
        .args(["--raw", raw.to_str().unwrap(), "--machine", machine.to_str().unwrap()])
        .args(["--commands", commands.to_str().unwrap(), "--results", results.to_str().unwrap()])
        .envs([("PATHS", "passthrough"), ("STREAM_PATHS", ""), ("RATES", "1000"), ("REPS", "3")])
        .envs([("CHUNKS", "50"), ("OPEN_STREAMS", "1000"), ("QUICK", "0"), ("BLOCK", "10")])
        .output()
        .expect("python3 runs bench/report.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "report.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let bench = &last["switchyard_bench"];
    let r = &bench["results"]["passthrough"];

    let max = &r["max_rps"];
    assert_eq!(max["pgo"], json!(28_000.0));
    assert_eq!(max["switchyard_over_nginx"], json!(0.75));
    assert_eq!(max["pgo_over_nginx"], json!(0.875));
    assert_eq!(max["pgo_over_direct"], json!(0.7));
    assert_eq!(max["switchyard_over_floor"], json!(0.8));
    assert_eq!(max["floor_over_nginx"], json!(0.9375));
    assert!(max.get("nginx_over_floor").is_none(), "each ratio once: {max}");

    let lat = &r["one_in_flight_p99_us"];
    assert_eq!(lat["direct"], json!(100.0));
    assert_eq!(lat["switchyard_added"], json!(100.0));
    assert_eq!(lat["pgo_added"], json!(80.0));
    assert_eq!(lat["nginx_added"], json!(60.0));

    // The failed repetition is an error, and the pgo cell's median is over the two that answered.
    let errors = &bench["errors"]["rate-1000/passthrough/pgo"];
    assert_eq!(errors["errors"], json!(500), "{}", bench["errors"]);
    assert_eq!(r["rate_1000_achieved_rps"]["pgo"], json!(1000));
    assert!(bench["errors"].get("rate-1000/passthrough/switchyard").is_none());

    let md = std::fs::read_to_string(&results).unwrap();
    let header = md.lines().find(|l| l.starts_with("| path |")).expect("a results table");
    assert!(
        header.contains("| direct | switchyard | pgo | floor | nginx | switchyard added | pgo added |"),
        "{header}"
    );
    let row = md.lines().find(|l| l.starts_with("| passthrough | max throughput ÷ nginx |")).expect("the ÷ nginx row");
    assert!(row.contains("| 0.75× | 0.88× | 0.94× | 1.00× |"), "{row}");
    assert!(md.contains("profile-guided"), "the report says what the pgo target is");
    assert!(md.contains("`rate-1000/passthrough/pgo`: 500"), "failed cells are listed");
    std::fs::remove_dir_all(&dir).ok();
}
