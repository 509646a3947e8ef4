//! Every curl example in README.md, run against the binary serving `config/demo.toml`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

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
    assert!(commands.len() >= 4, "found {commands:?}");
    let gw = common::spawn_binary(&["--config", "config/demo.toml"]);
    for cmd in commands {
        let cmd = cmd.replace("127.0.0.1:8080", &gw.addr.to_string()).replace("localhost:8080", &gw.addr.to_string());
        let out = std::process::Command::new("sh").args(["-c", &cmd]).output().expect("sh runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd}\nfailed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        assert!(!stdout.trim().is_empty(), "{cmd} printed nothing");
        if cmd.contains("/v1/chat/completions") {
            let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(v["object"], "chat.completion", "{stdout}");
        }
        if cmd.contains("\"stream\": true") {
            assert!(stdout.contains("event: message_stop"), "{stdout}");
        }
    }
}
