//! Every curl example in README.md, run in order against the binary serving the demo config (a copy
//! in a temp dir, so the admin examples persist nothing into the repository).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

const ADMIN_TOKEN: &str = "readme-admin-token";

/// The shell commands in the README's `sh` blocks that call curl (continuation lines joined).
fn readme_curl_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut current = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        current.push_str(line.trim_end_matches('\\'));
        if line.ends_with('\\') {
            continue;
        }
        if current.trim_start().starts_with("curl ") {
            out.push(std::mem::take(&mut current));
        }
        current.clear();
    }
    out
}

#[test]
fn every_readme_curl_example_succeeds_against_the_demo() {
    let commands = readme_curl_commands();
    assert!(commands.len() >= 8, "found {commands:?}");
    let dir = common::temp_dir("readme");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["demo.toml", "demo-flags.json"] {
        std::fs::copy(root.join("config").join(f), dir.join(f)).unwrap();
    }
    let config = dir.join("demo.toml");
    let gw =
        common::spawn_binary_env(&["--config", config.to_str().unwrap()], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let mut seen = Vec::new();
    for cmd in commands {
        let cmd = cmd.replace("127.0.0.1:8080", &gw.addr.to_string());
        let out = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .env("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("sh runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{cmd}\nfailed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        assert!(!stdout.trim().is_empty(), "{cmd} printed nothing");
        let as_json = || serde_json::from_str::<serde_json::Value>(&stdout).unwrap();
        if cmd.contains("/v1/chat/completions") {
            assert_eq!(as_json()["model"], "claude-sonnet-4-5", "staff get claude-sonnet: {stdout}");
        } else if cmd.contains("\"stream\": true") {
            assert!(stdout.contains("event: message_stop"), "{stdout}");
        } else if cmd.contains("/v1/feedback") {
            assert_eq!(as_json()["variant"], "claude-sonnet", "{stdout}");
        } else if cmd.contains("-X PATCH") {
            assert_eq!(as_json()["killed"], true, "{stdout}");
        } else if cmd.contains("-X DELETE") {
            assert_eq!(as_json()["override"], serde_json::Value::Null, "{stdout}");
        } else if cmd.contains("/admin/flags") {
            assert_eq!(as_json()["flags"][0]["killed"], true, "{stdout}");
        } else if cmd.contains("/metrics") {
            assert!(stdout.contains("switchyard_feedback_score_count"), "{stdout}");
        }
        seen.push(cmd);
    }
    for needle in ["/v1/chat/completions", "/v1/messages", "/v1/feedback", "/metrics", "-X PATCH", "-X DELETE"] {
        assert!(seen.iter().any(|c| c.contains(needle)), "the README shows {needle}");
    }
}
