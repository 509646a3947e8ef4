//! The dashboard page in a real browser: headless Chromium loads `/dashboard`, lets the page poll
//! `/dashboard/data` for a few seconds of virtual time and dumps the DOM it built.
//!
//! - `live_gateway`: the `switchyard` binary on `config/demo.toml` after some traffic; the flag's
//!   section, its state and Kill button, and a row per variant that got traffic with its backend/model
//!   and request count.
//! - `fixture_escaping_quantiles_and_outage`: `tests/dashboard/fixture.json` from a tiny local server
//!   that fails after two polls; markup in flag keys and variant names stays text, a quantile matches
//!   the hand-computed `histogram_quantile`, and the unreachable banner shows over the kept data.
//!
//! Chromium: `$CHROMIUM`, else `chromium` or `chromium-browser` on PATH; `.ci/run` installs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Chromium binary, or a failure telling how to get one.
fn chromium() -> PathBuf {
    if let Some(c) = std::env::var_os("CHROMIUM").filter(|c| !c.is_empty()) {
        return PathBuf::from(c);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no Chromium found (set CHROMIUM, or put chromium / chromium-browser on PATH): \
         run .ci/run, which installs Debian's chromium package"
    );
}

/// Loads `url` in headless Chromium with a fresh profile and returns the DOM after `budget_ms` of
/// virtual time.
fn dump_dom(url: &str, budget_ms: u32) -> String {
    let profile = common::temp_dir("chromium");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start Chromium ({e}): run .ci/run, which installs it"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Chromium did not finish within 120 s; stderr:\n{}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = out.join().unwrap();
    let err = err.join().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(status.success() && dom.contains("</html>"), "Chromium failed ({status}); stderr:\n{err}\nstdout:\n{dom}");
    dom
}

/// One HTTP/1.1 exchange over a fresh connection: status, lower-cased headers, body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, BTreeMap<String, String>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// The markup from the element that carries `marker` to the end of that element (`</tag>`).
fn element<'a>(dom: &'a str, marker: &str, end_tag: &str) -> &'a str {
    let start = dom.find(marker).unwrap_or_else(|| panic!("no {marker} in the DOM:\n{dom}"));
    let start = dom[..=start].rfind('<').unwrap();
    let len = dom[start..].find(end_tag).unwrap_or_else(|| panic!("no {end_tag} after {marker}"));
    &dom[start..start + len + end_tag.len()]
}

/// The text of the cell `data-col="col"` in a row's markup.
fn cell(row: &str, col: &str) -> String {
    let marker = format!("data-col=\"{col}\"");
    let at = row.find(&marker).unwrap_or_else(|| panic!("no {col} cell in {row}"));
    let open = at + row[at..].find('>').unwrap() + 1;
    let close = open + row[open..].find('<').unwrap();
    row[open..close].to_owned()
}

#[test]
fn live_gateway() {
    let gw = common::spawn_binary(&["--config", "config/demo.toml"]);
    let body = r#"{"model":"summarizer","messages":[]}"#;

    // Enough users that the 20% rollout reaches both experiment variants; example.com emails always
    // get claude-sonnet. The variant header says which target served each call.
    let mut served: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..200 {
        let id = format!("user-{i}");
        let mut headers = vec![("x-distinct-id", id.as_str())];
        if i % 10 == 0 {
            headers.push(("x-person-properties", r#"{"email":"a@example.com"}"#));
        }
        let (status, h, b) = http(gw.addr, "POST", "/v1/chat/completions", &headers, body);
        assert_eq!(status, 200, "{b}");
        let variant = h.get("x-switchyard-variant").cloned().unwrap_or_else(|| "control".to_owned());
        *served.entry(variant).or_default() += 1;
        if i >= 40 && ["control", "claude-sonnet", "gpt-4o"].iter().all(|v| served.contains_key(*v)) {
            break;
        }
    }
    for v in ["control", "claude-sonnet", "gpt-4o"] {
        assert!(served.contains_key(v), "no traffic reached {v}: {served:?}");
    }

    let (status, h, page) = http(gw.addr, "GET", "/dashboard", &[], "");
    assert_eq!(status, 200, "GET /dashboard: {page}");
    assert!(h.get("content-type").is_some_and(|c| c.starts_with("text/html")), "{h:?}");
    // Nothing loaded from elsewhere (the SVG namespace is a name, not a fetch).
    let page = page.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"),
        "external URL in the page"
    );

    let dom = dump_dom(&format!("http://{}/dashboard", gw.addr), 6000);

    // The page got data and shows no outage.
    assert!(!dom.contains("Waiting for the first data"), "the page never rendered data:\n{dom}");
    let banner = element(&dom, "id=\"unreachable\"", "</div>");
    assert!(banner.contains(" hidden"), "gateway reported unreachable: {banner}");

    // The flag's section: name, state, Kill button.
    let section = element(&dom, "data-flag=\"new-summarization-model\"", "</section>");
    assert!(section.contains(">new-summarization-model</span>"), "{section}");
    assert!(section.contains("data-state=\"active\""), "{section}");
    assert!(section.contains(">active</span>"), "{section}");
    let button = element(section, "class=\"flag-toggle", "</button>");
    assert!(button.contains(">Kill</button>") && button.contains("data-action=\"kill\""), "{button}");
    assert!(button.contains("aria-label=\"Kill flag new-summarization-model\""), "{button}");

    // One row per variant that got traffic, with its backend / model and its request count.
    let targets = [
        ("control", "mock-legacy / llama3"),
        ("claude-sonnet", "mock-claude / claude-sonnet-4-5"),
        ("gpt-4o", "mock-gpt / gpt-4o"),
    ];
    for (variant, target) in targets {
        let row = element(section, &format!("<tr data-variant=\"{variant}\""), "</tr>");
        assert!(row.contains(&format!(">{variant}</span>")), "{row}");
        assert!(row.contains(&format!("summarizer · {target}")), "{row}");
        let requests: u64 = cell(row, "requests").replace(',', "").parse().unwrap();
        assert!(requests > 0, "{variant}: {row}");
        assert_eq!(requests, served[variant], "{variant}: the page's count differs from the traffic sent: {row}");
        let latency = cell(row, "lat");
        assert!(latency.contains("ms") || latency.contains(" s"), "{variant}: no latency quantiles: {row}");
        for col in ["rate", "err", "ttft", "tokens", "cost", "fb", "fallbacks"] {
            assert!(!cell(row, col).is_empty(), "{variant}: empty {col} cell: {row}");
        }
    }
    // A trend card (two SVG charts) per variant.
    assert_eq!(section.matches("<figure class=\"trend\"").count(), 3, "{section}");
    assert_eq!(section.matches("<svg class=\"spark\"").count(), 6, "{section}");
}

/// Serves the page at `/dashboard` and `fixture.json` at `/dashboard/data` for `ok_polls` polls, then 503.
fn fixture_server(ok_polls: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let polls = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let polls = polls.clone();
            // A thread each: Chromium may open a connection it sends nothing on.
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("").split('?').next().unwrap_or("").to_owned();
                let (status, ctype, body): (&str, &str, &str) = match path.as_str() {
                    "/dashboard" => ("200 OK", "text/html; charset=utf-8", include_str!("../src/dashboard.html")),
                    "/dashboard/data" if polls.fetch_add(1, Ordering::SeqCst) < ok_polls => {
                        ("200 OK", "application/json", include_str!("dashboard/fixture.json"))
                    }
                    "/dashboard/data" => ("503 Service Unavailable", "text/plain", "down"),
                    _ => ("404 Not Found", "text/plain", "not found"),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes());
            });
        }
    });
    addr
}

#[test]
fn fixture_escaping_quantiles_and_outage() {
    let addr = fixture_server(2);
    let dom = dump_dom(&format!("http://{addr}/dashboard"), 6000);

    // Markup from config (flag key, variant, backend, model) is shown as text, never parsed.
    assert!(dom.contains(">&lt;img src=x onerror=alert(1)&gt;</span>"), "flag key not shown as text:\n{dom}");
    assert!(dom.contains(">&lt;b&gt;bold&lt;/b&gt;</span>"), "variant not shown as text:\n{dom}");
    assert!(dom.contains("odd · b&amp;e\"&lt; / m'odel"), "backend/model not shown as text:\n{dom}");
    assert!(!dom.contains("<b>bold"), "variant name became markup:\n{dom}");
    assert!(!dom.contains("<img src"), "flag key became markup:\n{dom}");

    // The killed flag offers Revive and shows its override.
    let killed = element(&dom, "data-state=\"killed\"", "</section>");
    assert!(killed.contains(">Revive</button>") && killed.contains("data-action=\"revive\""), "{killed}");
    assert!(killed.contains("override: {\"active\":false}"), "{killed}");
    assert!(killed.contains(">cut off</span>"), "{killed}");

    // Identical polls carry no traffic of their own, so the quantiles are since start (†). Control's
    // latency buckets: 10 in (0.01, 0.025], 200 in (0.025, 0.05], 80 in (0.05, 0.1], 10 in (0.1, 0.25]:
    // p50 = 0.025 + 0.025 * (150 - 10) / 200 = 42.5 ms, p99 = 0.1 + 0.15 * (297 - 290) / 10 = 205 ms.
    let flag = element(&dom, "data-flag=\"new-summarization-model\"", "</section>");
    let control = element(flag, "<tr data-variant=\"control\"", "</tr>");
    assert_eq!(cell(control, "lat"), "43 / 205 ms †", "{control}");
    assert_eq!(cell(control, "requests"), "300", "{control}");
    assert_eq!(cell(control, "rate"), "—", "same now_ms twice: no rate yet: {control}");
    let claude = element(flag, "<tr data-variant=\"claude-sonnet\"", "</tr>");
    assert_eq!(cell(claude, "fb"), "0.75 (4)", "{claude}");
    assert_eq!(cell(claude, "err"), "2.5% †", "{claude}");
    assert_eq!(cell(claude, "cost"), "$0.420", "{claude}");
    assert!(claude.contains(">closed</span>"), "{claude}");
    let gpt = element(flag, "<tr data-variant=\"gpt-4o\"", "</tr>");
    assert!(gpt.contains(">half-open</span>"), "{gpt}");
    // p50 = 0.05 + 0.05 * (40 - 20) / 50 = 70 ms; p99 in (2.5, 5]: 2.5 + 2.5 * (79.2 - 79) / 1 = 3 s.
    assert_eq!(cell(gpt, "lat"), "0.07 / 3.00 s †", "one unit for the pair: {gpt}");
    assert!(dom.contains("Routes without a flag"), "{dom}");

    // After two good polls the data endpoint fails: the banner says so and the last data stays.
    let banner = element(&dom, "id=\"unreachable\"", "</div>");
    assert!(!banner.contains(" hidden") && banner.contains("Gateway unreachable (HTTP 503"), "{banner}");
    assert!(banner.contains("showing the data from"), "{banner}");
}
