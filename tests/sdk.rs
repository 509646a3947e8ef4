#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End-to-end tests with the official Python SDKs (`openai`, `anthropic`).
//!
//! Spawns the real `switchyard` binary on `config/demo.toml` (mock backends, no network) on a
//! random port, then runs `python -m pytest -q tests/sdk` against it with `SWITCHYARD_URL` set.
//! `SWITCHYARD_BIN` (this binary) is set too: `tests/sdk/test_translation.py` starts a second gateway
//! of its own whose `anthropic` and `openai` backends point at a fake provider
//! (`tests/sdk/fake_upstream.py`), to test cross-dialect translation end to end.
//!
//! Python interpreter: `$SWITCHYARD_PYTHON` if set, else `.venv/bin/python` in the crate root if it
//! exists, else `python3`. The SDKs must be importable there: run `.ci/run`, or
//! `python3 -m venv .venv && .venv/bin/pip install -r tests/sdk/requirements.txt`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long the gateway may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Kills and reaps the gateway when dropped, including when the test panics.
struct Gateway {
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = manifest_dir().join(".venv").join("bin").join("python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case colour is on despite `NO_COLOR`.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The port in a `switchyard listening ... addr=127.0.0.1:PORT` line.
fn parse_port(line: &str) -> Option<u16> {
    let line = strip_ansi(line);
    if !line.contains("switchyard listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    let addr = rest.split_whitespace().next()?.trim_matches('"');
    let port = addr.rsplit(':').next()?;
    port.parse().ok()
}

/// Reads the gateway's stderr on a thread (so the pipe never fills up), reports the port once
/// the listening line appears, and keeps every line for diagnostics.
fn watch_stderr(stderr: ChildStderr) -> (mpsc::Receiver<u16>, thread::JoinHandle<Vec<String>>) {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let mut lines = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(port) = parse_port(&line) {
                    let _ = tx.send(port);
                    sent = true;
                }
            }
            lines.push(line);
        }
        lines
    });
    (rx, handle)
}

fn start_gateway(root: &Path) -> (Gateway, u16, thread::JoinHandle<Vec<String>>) {
    let config = root.join("config").join("demo.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("NO_COLOR", "1")
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the switchyard binary");
    let stderr = child.stderr.take().expect("gateway stderr is piped");
    let gateway = Gateway { child };
    let (rx, log) = watch_stderr(stderr);
    match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(port) => (gateway, port, log),
        Err(_) => {
            drop(gateway); // kill it so the stderr thread ends
            let lines = log.join().unwrap_or_default();
            panic!(
                "switchyard did not print a `switchyard listening ... addr=...` line within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// Fails (never skips) when the interpreter is missing or lacks the SDKs.
fn check_python(python: &Path) {
    let out = Command::new(python)
        .args([
            "-c",
            "import openai, anthropic, pytest; print(openai.__version__, anthropic.__version__, pytest.__version__)",
        ])
        .stdin(Stdio::null())
        .output();
    let help = "the SDK tests need Python with openai, anthropic and pytest installed: run `.ci/run`, \
                or `python3 -m venv .venv && .venv/bin/pip install -r tests/sdk/requirements.txt` \
                (or point SWITCHYARD_PYTHON at an interpreter that has them)";
    match out {
        Ok(out) if out.status.success() => {
            eprintln!(
                "sdk test: {} with openai/anthropic/pytest {}",
                python.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(out) => panic!(
            "{} cannot import the SDKs ({}): {help}\n{}",
            python.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) => panic!("cannot run {}: {err}; {help}", python.display()),
    }
}

#[test]
fn python_sdks_against_demo_gateway() {
    let root = manifest_dir();
    let python = python();
    check_python(&python);

    let (gateway, port, log) = start_gateway(&root);
    let url = format!("http://127.0.0.1:{port}");

    let mut pytest = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/sdk"])
        .env("SWITCHYARD_URL", &url)
        // test_translation.py starts its own gateway (backends on a fake provider) from this binary.
        .env("SWITCHYARD_BIN", env!("CARGO_BIN_EXE_switchyard"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pytest");
    // Drain stderr on a thread so neither pipe can fill up and block pytest.
    let mut err_pipe = pytest.stderr.take().expect("pytest stderr is piped");
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    let _ = pytest.stdout.take().expect("pytest stdout is piped").read_to_string(&mut stdout);
    let status = pytest.wait().expect("wait for pytest");
    let stderr = err_reader.join().unwrap_or_default();

    drop(gateway);
    let gateway_log = log.join().unwrap_or_default();

    assert!(
        status.success(),
        "pytest against {url} failed ({status})\n--- pytest stdout ---\n{stdout}\n--- pytest stderr ---\n{stderr}\n--- gateway stderr ---\n{}",
        gateway_log.join("\n")
    );
    eprintln!("{}", stdout.trim_end());
}

#[test]
fn listening_line_is_parsed_with_or_without_colour() {
    assert_eq!(
        parse_port("2026-01-01T00:00:00Z  INFO switchyard: switchyard listening addr=127.0.0.1:4242"),
        Some(4242)
    );
    assert_eq!(
        parse_port("\u{1b}[32m INFO\u{1b}[0m \u{1b}[2mswitchyard\u{1b}[0m: switchyard listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:5151"),
        Some(5151)
    );
    assert_eq!(parse_port("INFO switchyard: loading config addr=127.0.0.1:1"), None);
}
