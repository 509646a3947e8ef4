//! A fleet of three `switchyard` processes sharing admin overrides through one real `redis-server`:
//! a kill on one replica is honoured by the others within a second (the time is measured and
//! printed), a Redis stop and restart crashes nobody and loses no override, and a revive made after
//! the restart reaches every replica. Over `rediss://` (TLS, the server asking for client
//! certificates) replicas with the private CA and a client certificate share a kill; one without
//! the certificate, or without the CA, is refused, keeps serving and keeps its own state.
//! Needs `redis-server` on PATH (`.ci/run` installs it; Debian's is built with TLS).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FLAG: &str = "fleet-flag";

/// `redis-server` as a child process on a loopback port, without persistence; killed on drop.
struct Redis {
    child: Child,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("redis-server")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("redis-server is not on PATH: tests/fleet.rs needs a real Redis; run .ci/run (it installs Debian's redis-server)")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn start_redis(port: u16) -> Redis {
    let child = Command::new(redis_server_path())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    wait_for(Redis { child }, || ping(port), &format!("redis-server did not answer on port {port}"))
}

/// `redis` once `ready` holds (checked every 20 ms, for up to 10 s).
fn wait_for(redis: Redis, ready: impl Fn() -> bool, what: &str) -> Redis {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    redis
}

/// `redis-server` serving only TLS on `port` with a certificate from `ca`, and asking every client
/// for a certificate from the same CA (mutual TLS). Ready once the port takes connections.
fn start_redis_tls(port: u16, ca: &TestCa, dir: &Path) -> Redis {
    let (cert, key) = leaf(ca);
    std::fs::write(dir.join("redis.pem"), cert).unwrap();
    std::fs::write(dir.join("redis-key.pem"), key).unwrap();
    std::fs::write(dir.join("redis-ca.pem"), &ca.pem).unwrap();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let child = Command::new(redis_server_path())
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-cert-file", &file("redis.pem"), "--tls-key-file", &file("redis-key.pem")])
        .args(["--tls-ca-cert-file", &file("redis-ca.pem"), "--tls-auth-clients", "yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server with TLS");
    let listening = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    wait_for(Redis { child }, listening, &format!("redis-server (TLS) did not listen on port {port}"))
}

fn replica_config(flags: &Path, redis_port: u16, prefix: &str) -> String {
    replica_config_with(flags, &format!("redis_url = \"redis://127.0.0.1:{redis_port}\""), prefix)
}

/// A replica's config; `redis` is the `[overrides]` lines naming the server (and its TLS files).
fn replica_config_with(flags: &Path, redis: &str, prefix: &str) -> String {
    format!(
        r#"
[flags]
file = {flags:?}
file_poll_interval = "100ms"
[admin]
token_env = "TEST_ADMIN_TOKEN"
[overrides]
{redis}
key_prefix = "{prefix}"
[backends.legacy]
kind = "mock"
[backends.claude]
kind = "mock"
[[routes]]
model = "summarizer"
flag = "{FLAG}"
control = {{ backend = "legacy", model = "llama3" }}
variants = {{ "on" = {{ backend = "claude", model = "claude-sonnet-4-5" }} }}
"#
    )
}

/// Starts one replica in its own config dir (its own state file).
fn replica(flags: &Path, redis_port: u16, prefix: &str) -> Binary {
    replica_from(&replica_config(flags, redis_port, prefix))
}

fn replica_from(config_text: &str) -> Binary {
    let dir = temp_dir("fleet");
    let config = dir.join("switchyard.toml");
    std::fs::write(&config, config_text).unwrap();
    spawn_binary_env(&["--config", config.to_str().unwrap()], &[("TEST_ADMIN_TOKEN", ADMIN_TOKEN)])
}

/// `switchyard_overrides_sync_total{outcome}` of one replica (0 when absent).
async fn sync_count(addr: SocketAddr, outcome: &str) -> f64 {
    let (_, _, body) = call(addr, "GET", "/metrics", &[], "").await;
    let want = format!("switchyard_overrides_sync_total{{outcome=\"{outcome}\"}} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(want.as_str()).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

async fn redis_connected(addr: SocketAddr) -> bool {
    let (status, _, body) = call(addr, "GET", "/metrics", &[], "").await;
    status == 200 && String::from_utf8_lossy(&body).lines().any(|l| l == "switchyard_overrides_redis_connected 1")
}

async fn all_connected(addrs: &[SocketAddr]) -> bool {
    let addrs = addrs.to_vec();
    eventually(Duration::from_secs(15), move || {
        let addrs = addrs.clone();
        Box::pin(async move {
            for a in addrs {
                if !redis_connected(a).await {
                    return false;
                }
            }
            true
        })
    })
    .await
}

async fn admin_patch(addr: SocketAddr, body: &str) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, _, b) =
        call(addr, "PATCH", &format!("/admin/flags/{FLAG}"), &[("authorization", auth.as_str())], body.to_owned())
            .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
}

/// How long after `start` replica `addr` first serves `want`; `None` if not within 5 s.
async fn time_until(addr: SocketAddr, want: &str, start: Instant) -> Option<Duration> {
    while start.elapsed() < Duration::from_secs(5) {
        if variant_for(addr, "summarizer", "user-1").await == want {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Every replica serves `want` to a sample of ids.
async fn all_serve(addrs: &[SocketAddr], want: &str) {
    for (i, addr) in addrs.iter().enumerate() {
        for id in 0..20 {
            assert_eq!(variant_for(*addr, "summarizer", &format!("user-{id}")).await, want, "replica {i}, user-{id}");
        }
    }
}

fn still_running(replicas: &mut [Binary]) {
    for (i, r) in replicas.iter_mut().enumerate() {
        assert!(r.child.try_wait().unwrap().is_none(), "replica {i} exited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_on_one_replica_reaches_the_fleet_within_a_second_and_survives_a_redis_restart() {
    let port = free_port();
    let mut redis = start_redis(port);
    let (_dir, flags) = flags_dir("fleet-flags", &variant_flag(FLAG, &[("on", 100.0)]));
    let prefix = format!("fleet-test-{:x}", fastrand::u64(..));
    let mut replicas: Vec<Binary> = (0..3).map(|_| replica(&flags, port, &prefix)).collect();
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let (a, b, c) = (addrs[0], addrs[1], addrs[2]);
    assert!(all_connected(&addrs).await, "every replica connects to Redis");
    all_serve(&addrs, "on").await;

    // Kill on A: B and C follow within a second.
    let start = Instant::now();
    admin_patch(a, r#"{"active": false}"#).await;
    let (on_b, on_c) = tokio::join!(time_until(b, "control", start), time_until(c, "control", start));
    let (on_b, on_c) = (on_b.expect("B honours the kill"), on_c.expect("C honours the kill"));
    eprintln!("kill propagation from A (PATCH sent -> first request served by control): B {on_b:?}, C {on_c:?}");
    assert!(on_b < Duration::from_secs(1) && on_c < Duration::from_secs(1), "B {on_b:?}, C {on_c:?}");
    all_serve(&addrs, "control").await;

    // Redis goes away: nobody crashes, the kill stays.
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    still_running(&mut replicas);
    for addr in &addrs {
        assert_eq!(call(*addr, "GET", "/healthz", &[], "").await.0, 200);
        assert!(!redis_connected(*addr).await, "{addr} noticed that Redis is gone");
    }
    all_serve(&addrs, "control").await;

    // Redis comes back empty (no persistence) on the same port: the replicas reconnect, re-seed it
    // from what they hold, and the kill is still in force everywhere.
    drop(redis);
    let _redis = start_redis(port);
    assert!(all_connected(&addrs).await, "every replica reconnects to the restarted Redis");
    still_running(&mut replicas);
    all_serve(&addrs, "control").await;

    // A revive on B after the restart reaches A and C.
    let start = Instant::now();
    admin_patch(b, r#"{"active": true}"#).await;
    let (on_a, on_c) = tokio::join!(time_until(a, "on", start), time_until(c, "on", start));
    let (on_a, on_c) = (on_a.expect("A honours the revive"), on_c.expect("C honours the revive"));
    eprintln!("revive propagation from B after the Redis restart: A {on_a:?}, C {on_c:?}");
    assert!(on_a < Duration::from_secs(1) && on_c < Duration::from_secs(1), "A {on_a:?}, C {on_c:?}");
    all_serve(&addrs, "on").await;
    still_running(&mut replicas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rediss_the_fleet_verifies_the_server_and_presents_its_client_certificate() {
    let port = free_port();
    let dir = temp_dir("fleet-tls");
    let authority = ca("Redis CA");
    let _redis = start_redis_tls(port, &authority, &dir);
    let (cert, key) = leaf(&authority);
    std::fs::write(dir.join("client.pem"), cert).unwrap();
    std::fs::write(dir.join("client-key.pem"), key).unwrap();
    let file = |name: &str| dir.join(name);
    let url = format!("redis_url = \"rediss://127.0.0.1:{port}\"");
    let ca_line = format!("ca_file = {:?}", file("redis-ca.pem"));
    let cert_lines =
        format!("client_cert_file = {:?}\nclient_key_file = {:?}", file("client.pem"), file("client-key.pem"));
    let (_flags_dir, flags) = flags_dir("fleet-tls-flags", &variant_flag(FLAG, &[("on", 100.0)]));
    let prefix = format!("fleet-tls-{:x}", fastrand::u64(..));
    let config = |lines: &[&str]| replica_config_with(&flags, &lines.join("\n"), &prefix);

    let mut replicas = vec![
        replica_from(&config(&[&url, &ca_line, &cert_lines])),
        replica_from(&config(&[&url, &ca_line, &cert_lines])),
        // No client certificate: the server refuses it.
        replica_from(&config(&[&url, &ca_line])),
        // The system's roots only: the replica refuses the server.
        replica_from(&config(&[&url, &cert_lines])),
    ];
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let (a, b, no_cert, no_ca) = (addrs[0], addrs[1], addrs[2], addrs[3]);
    assert!(all_connected(&[a, b]).await, "replicas with the CA and a client certificate connect over TLS");
    for addr in [no_cert, no_ca] {
        let refused = eventually(Duration::from_secs(15), move || {
            Box::pin(async move { sync_count(addr, "connect_error").await >= 1.0 })
        })
        .await;
        assert!(refused, "{addr}: the TLS connection is refused and counted");
        assert!(!redis_connected(addr).await, "{addr} is not connected");
    }
    all_serve(&addrs, "on").await;

    // A kill on A reaches B through the TLS Redis; the refused replicas keep their own state.
    let start = Instant::now();
    admin_patch(a, r#"{"active": false}"#).await;
    let on_b = time_until(b, "control", start).await.expect("B honours the kill");
    eprintln!("kill propagation over rediss:// from A to B: {on_b:?}");
    assert!(on_b < Duration::from_secs(1), "B {on_b:?}");
    all_serve(&[a, b], "control").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    all_serve(&[no_cert, no_ca], "on").await;
    still_running(&mut replicas);
}
