//! The soak harness works: the fault-injecting bench upstream and the soak client, as the binaries
//! `bench/soak.sh` runs, for a few seconds against an in-process gateway with the config the client
//! writes (`switchyard-soak config`); every check passes. The soak itself is `bench/soak.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const SOAK: &str = env!("CARGO_BIN_EXE_switchyard-soak");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_with_faults_reloads_and_kills_passes_every_check() {
    let upstream =
        spawn_bench_upstream(&["--faults", "none", "--chunks", "5", "--stall-ms", "1200", "--slow-ms", "1200"]);
    let up_url = format!("http://{}", upstream.addr);
    let dir = temp_dir("soak");
    let made = std::process::Command::new(SOAK)
        .args([
            "config",
            "--dir",
            dir.to_str().unwrap(),
            "--upstream",
            &up_url,
            "--admin-token-env",
            "TEST_ADMIN_TOKEN",
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let config = std::fs::read_to_string(dir.join("switchyard.toml")).unwrap();
    let gw = gateway_in(&dir, &config, &up_url).await;

    let flags = dir.join("flags.json");
    let args: Vec<String> = [
        "run",
        "--url",
        &format!("http://{}", gw.addr),
        "--upstream",
        &up_url,
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--settle",
        "0.2",
        "--concurrency",
        "8",
        "--faults",
        "500=3,429=2,529=2,reset=3,reset_mid=3,stall=2,slow=2,malformed=3",
        "--flags-file",
        flags.to_str().unwrap(),
        "--reload-every",
        "0.7",
        "--kill-every",
        "1.2",
        "--admin-token-env",
        "TEST_ADMIN_TOKEN",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(SOAK).args(&args).env("TEST_ADMIN_TOKEN", ADMIN_TOKEN).output().unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the soak failed:\n{report}");
    let v = json(&out.stdout);
    let s = &v["switchyard_soak"];
    assert_eq!(s["passed"], true, "{report}");
    assert_eq!(s["lost"], 0, "{report}");
    assert!(s["requests"].as_u64().unwrap() > 100, "{report}");
    let injected: u64 = s["faults_injected"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert!(injected > 0, "no fault reached the upstream:\n{report}");
    assert!(s["kills"].as_u64().unwrap() >= 1, "{report}");
    assert!(s["flag_rewrites"]["valid"].as_u64().unwrap() >= 1, "{report}");
    assert!(report.lines().filter(|l| l.starts_with("PASS")).count() >= 7, "{report}");
    eprintln!("{report}");
}
