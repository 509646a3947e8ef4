//! A fleet of three `switchyard` processes sharing admin overrides through one real `redis-server`:
//! a kill on one replica is honoured by the others within a second (the time is measured and
//! printed), a Redis stop and restart crashes nobody and loses no override, and a revive made after
//! the restart reaches every replica. Needs `redis-server` on PATH (`.ci/run` installs it).
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
    let redis = Redis { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(port) {
        assert!(Instant::now() < deadline, "redis-server did not answer on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    redis
}

fn replica_config(flags: &Path, redis_port: u16, prefix: &str) -> String {
    format!(
        r#"
[flags]
file = {flags:?}
file_poll_interval = "100ms"
[admin]
token_env = "TEST_ADMIN_TOKEN"
[overrides]
redis_url = "redis://127.0.0.1:{redis_port}"
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
    let dir = temp_dir("fleet");
    let config = dir.join("switchyard.toml");
    std::fs::write(&config, replica_config(flags, redis_port, prefix)).unwrap();
    spawn_binary_env(&["--config", config.to_str().unwrap()], &[("TEST_ADMIN_TOKEN", ADMIN_TOKEN)])
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
