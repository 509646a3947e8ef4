//! The binary's commands: `check` lists every config problem at once, and a bad config never starts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn switchyard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap()
}

#[test]
fn check_accepts_the_demo_config_with_a_summary() {
    let out = switchyard(&["check", "--config", "config/demo.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("ok: 3 backends, 2 routes"), "{err}");
}

#[test]
fn check_lists_every_problem_with_file_and_key_path_and_exits_64() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        r#"
listen = "everywhere"
[backends.a]
kind = "openai"
base_url = "https://api.openai.com"
api_key_env = "SWITCHYARD_TEST_UNSET_KEY"
[backends.b]
kind = "carrier-pigeon"
[[routes]]
model = "m"
control = { backend = "nope", model = "x" }
"#,
    )
    .unwrap();
    let out = switchyard(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "bad.toml: listen:",
        "bad.toml: backends.a.api_key_env: environment variable SWITCHYARD_TEST_UNSET_KEY is not set",
        "bad.toml: backends.b.kind:",
        "bad.toml: routes[0].control.backend: no backend named \"nope\"",
        "4 problem(s) found",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let serve = switchyard(&["--config", path.to_str().unwrap()]);
    assert_eq!(serve.status.code(), Some(64), "serve refuses a bad config before starting");
    assert!(String::from_utf8_lossy(&serve.stderr).contains("not starting"));
}

#[test]
fn the_production_template_names_its_missing_keys() {
    let out = switchyard(&["check", "--config", "config/switchyard.toml"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backends.anthropic.api_key_env: environment variable ANTHROPIC_API_KEY is not set"), "{err}");
    assert!(err.contains("backends.openai.api_key_env: environment variable OPENAI_API_KEY is not set"), "{err}");
}

#[test]
fn check_validates_the_flags_file_the_config_points_at() {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gw.toml");
    std::fs::write(
        &config,
        "[flags]\nfile = \"flags.json\"\n[backends.m]\nkind = \"mock\"\n[[routes]]\nmodel = \"m\"\nflag = \"missing-flag\"\ncontrol = { backend = \"m\", model = \"x\" }\n",
    )
    .unwrap();
    std::fs::write(dir.join("flags.json"), r#"{"flags": [{"key": "other", "active": true}, {"no_key": 1}]}"#).unwrap();
    let out = switchyard(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flags.json: not a flag: flags[1]"), "{err}");
    assert!(err.contains("routes[0].flag: no flag \"missing-flag\""), "{err}");
    std::fs::write(dir.join("flags.json"), "{not json").unwrap();
    let err =
        String::from_utf8_lossy(&switchyard(&["check", "--config", config.to_str().unwrap()]).stderr).into_owned();
    assert!(err.contains("is not valid JSON"), "{err}");
}
