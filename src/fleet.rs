//! Admin overrides shared by a fleet through Redis (`[overrides] redis_url`, `redis://` or `rediss://`
//! with TLS: a private CA and a client certificate for mutual TLS optional). The overrides live in
//! the hash `{prefix}:overrides` (field: flag key, value: that flag's override, a JSON object) and
//! every change is announced on the channel `{prefix}:overrides:changes`, so a `PATCH` on one replica
//! is applied by all the others as soon as the message arrives.
//!
//! The local change always comes first (the admin API and the state file work without Redis); this
//! task then writes it to Redis, or queues it while Redis is away and writes it on reconnect. On each
//! (re)connect a replica subscribes, writes what it queued, then reloads the hash: while Redis is
//! reachable it is the truth. A Redis that lost its data (restarted without persistence) has no seed
//! marker and is re-seeded from the replica's overrides, so a kill switch survives a Redis restart.
//! On loss a replica keeps the last overrides it saw and reconnects with backoff.

use crate::config::OverridesConfig;
use crate::snapshot::Overrides;
use crate::state::AppState;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Marks a hash written by Switchyard; absent after Redis lost its data. A flag key cannot hold ':'.
const SEED_FIELD: &str = ":seeded";
/// Connecting and subscribing; Redis on the same network answers in milliseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One command (or pipeline) round trip.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// A PING this often notices a dead connection that the kernel has not reported.
const PING_EVERY: Duration = Duration::from_secs(1);
/// First retry after a loss: quick, a restart is often over in a moment.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two connection attempts while Redis stays away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One override change to share: `None` drops the flag's override.
#[derive(Debug)]
pub struct Change {
    pub flag: String,
    pub value: Option<Map<String, Value>>,
}

/// The admin API's side of the sync task.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Change>,
}

impl Publisher {
    /// Queues a change already applied locally for the other replicas; never blocks.
    pub fn share(&self, flag: &str, value: Option<Map<String, Value>>) {
        if self.tx.send(Change { flag: flag.to_owned(), value }).is_err() {
            tracing::warn!(flag, "shared overrides task has stopped; the change stays on this replica");
        }
    }
}

/// A channel pair: the publisher for `AppState`, the receiver for `run`.
pub fn channel() -> (Publisher, mpsc::UnboundedReceiver<Change>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Publisher { tx }, rx)
}

/// What goes over the pub/sub channel.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// The replica that made the change; it does not re-apply its own.
    from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flag: Option<String>,
    /// The flag's whole override, `null` when it was dropped.
    #[serde(default, rename = "override")]
    value: Option<Map<String, Value>>,
    /// Re-read the whole hash (after a re-seed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    reload: bool,
}

enum Ended {
    Shutdown,
    Lost(String),
}

struct Session {
    con: MultiplexedConnection,
    /// Kept so the subscription stays open.
    _sink: PubSubSink,
    messages: PubSubStream,
}

/// The Redis client: plain, or TLS (`rediss://`) verified against `ca_file` or the system's roots,
/// presenting the client certificate when one is configured.
pub fn client(cfg: &OverridesConfig) -> redis::RedisResult<redis::Client> {
    let url = cfg.redis_url.expose_secret();
    let Some(tls) = &cfg.tls else { return redis::Client::open(url) };
    let client_tls = match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert), Some(key)) => {
            Some(redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.expose_secret().to_vec() })
        }
        _ => None,
    };
    redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls, root_cert: tls.ca_pem.clone() })
}

/// Keeps this replica's overrides in sync with Redis until `shutdown`.
pub async fn run(
    state: Arc<AppState>,
    cfg: OverridesConfig,
    mut changes: mpsc::UnboundedReceiver<Change>,
    shutdown: CancellationToken,
) {
    let client = match client(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "shared overrides off: the Redis URL is not usable");
            return;
        }
    };
    let replica = format!("{:016x}", fastrand::u64(..));
    let mut pending: BTreeMap<String, Option<Map<String, Value>>> = BTreeMap::new();
    let mut failures: u32 = 0;
    loop {
        match connect(&client, &cfg).await {
            Ok(session) => {
                let ended = serve(&state, &cfg, &replica, session, &mut changes, &mut pending, &shutdown).await;
                match ended {
                    Ended::Shutdown => return,
                    Ended::Lost(why) => {
                        count(&state, "lost");
                        state.metrics.overrides_redis_connected.set(0);
                        tracing::warn!(error = %why, queued = pending.len(), "lost Redis; keeping the last shared overrides seen, reconnecting");
                        failures = 0;
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                count(&state, "connect_error");
                if failures == 1 || failures % 12 == 0 {
                    tracing::warn!(error = %e, failures, "cannot reach Redis for shared overrides; retrying with backoff");
                }
            }
        }
        let backoff = MIN_BACKOFF.saturating_mul(1 << failures.min(6)).min(MAX_BACKOFF);
        let sleep = tokio::time::sleep(backoff.mul_f64(0.8 + fastrand::f64() * 0.4));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                change = changes.recv() => match change {
                    Some(c) => { pending.insert(c.flag, c.value); }
                    None => return,
                },
                () = shutdown.cancelled() => return,
            }
        }
    }
}

async fn connect(client: &redis::Client, cfg: &OverridesConfig) -> Result<Session, String> {
    let work = async {
        let con = client.get_multiplexed_async_connection().await?;
        let (mut sink, messages) = client.get_async_pubsub().await?.split();
        sink.subscribe(&cfg.channel).await?;
        Ok::<_, redis::RedisError>(Session { con, _sink: sink, messages })
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, work).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("connecting timed out".to_owned()),
    }
}

/// One connected session: seed or flush, reload, then follow the channel and write local changes.
async fn serve(
    state: &AppState,
    cfg: &OverridesConfig,
    replica: &str,
    mut s: Session,
    changes: &mut mpsc::UnboundedReceiver<Change>,
    pending: &mut BTreeMap<String, Option<Map<String, Value>>>,
    shutdown: &CancellationToken,
) -> Ended {
    // Subscribed first, so nothing written from here on is missed; messages about writes the reload
    // below already saw are re-applied in order, which converges on the same state.
    let seeded: Result<bool, String> =
        command(&mut s.con, redis::cmd("HEXISTS").arg(&cfg.key).arg(SEED_FIELD).clone()).await;
    let prepared = match seeded {
        Err(e) => Err(e),
        Ok(false) => seed(state, cfg, replica, &mut s.con).await,
        Ok(true) => {
            let mut result = Ok(());
            while let Some((flag, value)) = pending.pop_first() {
                if let Err(e) = write(cfg, replica, &mut s.con, &flag, value.as_ref()).await {
                    pending.insert(flag, value);
                    result = Err(e);
                    break;
                }
            }
            result
        }
    };
    if let Err(e) = prepared {
        return Ended::Lost(e);
    }
    pending.clear();
    match reload(state, cfg, &mut s.con).await {
        Ok(n) => {
            count(state, "connected");
            state.metrics.overrides_redis_connected.set(1);
            tracing::info!(key = %cfg.key, channel = %cfg.channel, overrides = n, "connected to Redis; shared overrides loaded");
        }
        Err(e) => return Ended::Lost(e),
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = s.messages.next() => {
                let Some(msg) = msg else { return Ended::Lost("the subscription closed".to_owned()) };
                match msg.get_payload::<String>() {
                    Ok(text) => {
                        if let Err(e) = receive(state, cfg, replica, &mut s.con, &text).await {
                            return Ended::Lost(e);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable shared-overrides message ignored"),
                }
            }
            change = changes.recv() => {
                let Some(Change { flag, value }) = change else { return Ended::Shutdown };
                if let Err(e) = write(cfg, replica, &mut s.con, &flag, value.as_ref()).await {
                    count(state, "publish_error");
                    pending.insert(flag, value);
                    return Ended::Lost(e);
                }
                count(state, "published");
            }
            _ = ping.tick() => {
                if let Err(e) = command::<String>(&mut s.con, redis::cmd("PING")).await {
                    return Ended::Lost(e);
                }
            }
            () = shutdown.cancelled() => return Ended::Shutdown,
        }
    }
}

/// Runs one command with a deadline.
async fn command<T: redis::FromRedisValue>(con: &mut MultiplexedConnection, cmd: redis::Cmd) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<T>(con)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("Redis did not answer in time".to_owned()),
    }
}

async fn pipeline(con: &mut MultiplexedConnection, pipe: &redis::Pipeline) -> Result<(), String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(con)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("Redis did not answer in time".to_owned()),
    }
}

/// Writes one flag's override (or its removal) and announces it, atomically.
async fn write(
    cfg: &OverridesConfig,
    replica: &str,
    con: &mut MultiplexedConnection,
    flag: &str,
    value: Option<&Map<String, Value>>,
) -> Result<(), String> {
    let msg =
        Announcement { from: replica.to_owned(), flag: Some(flag.to_owned()), value: value.cloned(), reload: false };
    let msg = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    match value {
        Some(v) => pipe.cmd("HSET").arg(&cfg.key).arg(flag).arg(Value::Object(v.clone()).to_string()).ignore(),
        None => pipe.cmd("HDEL").arg(&cfg.key).arg(flag).ignore(),
    };
    pipe.cmd("PUBLISH").arg(&cfg.channel).arg(msg).ignore();
    pipeline(con, &pipe).await
}

/// Redis has no seed marker (first use, or it restarted without persistence): write this replica's
/// overrides, which already include any change made while Redis was away, and tell the others.
async fn seed(
    state: &AppState,
    cfg: &OverridesConfig,
    replica: &str,
    con: &mut MultiplexedConnection,
) -> Result<(), String> {
    let local = state.sources.overrides();
    let msg = Announcement { from: replica.to_owned(), flag: None, value: None, reload: true };
    let msg = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (flag, value) in local.iter() {
        pipe.cmd("HSET").arg(&cfg.key).arg(flag).arg(Value::Object(value.clone()).to_string()).ignore();
    }
    let now = chrono::Utc::now().to_rfc3339();
    pipe.cmd("HSET").arg(&cfg.key).arg(SEED_FIELD).arg(now).ignore();
    pipe.cmd("PUBLISH").arg(&cfg.channel).arg(msg).ignore();
    pipeline(con, &pipe).await?;
    count(state, "seeded");
    tracing::info!(key = %cfg.key, overrides = local.len(), "Redis held no shared overrides; seeded it with this replica's");
    Ok(())
}

/// Replaces the local overrides with the hash's; returns how many there are.
async fn reload(state: &AppState, cfg: &OverridesConfig, con: &mut MultiplexedConnection) -> Result<usize, String> {
    let fields: BTreeMap<String, String> = command(con, redis::cmd("HGETALL").arg(&cfg.key).clone()).await?;
    let mut shared = Overrides::new();
    for (flag, text) in fields {
        if flag.starts_with(':') {
            continue;
        }
        match serde_json::from_str::<Map<String, Value>>(&text) {
            Ok(v) => {
                shared.insert(flag, v);
            }
            Err(e) => tracing::warn!(flag, error = %e, "shared override is not a JSON object; ignored"),
        }
    }
    let n = shared.len();
    if *state.sources.overrides() != shared {
        let whole = shared.clone();
        if state.sources.update_overrides(state, |o| *o = whole).is_err() {
            // One override does not compile here: take the others.
            for (flag, value) in shared {
                apply(state, &flag, Some(value));
            }
        }
        crate::admin::persist(state, &state.sources.overrides());
    }
    count(state, "reloaded");
    Ok(n)
}

/// Handles one message from the channel.
async fn receive(
    state: &AppState,
    cfg: &OverridesConfig,
    replica: &str,
    con: &mut MultiplexedConnection,
    text: &str,
) -> Result<(), String> {
    let msg = match serde_json::from_str::<Announcement>(text) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "malformed shared-overrides message ignored");
            return Ok(());
        }
    };
    if msg.from == replica {
        return Ok(());
    }
    if msg.reload {
        return reload(state, cfg, con).await.map(|_| ());
    }
    if let Some(flag) = msg.flag {
        if apply(state, &flag, msg.value.clone()) {
            crate::admin::persist(state, &state.sources.overrides());
            let patch = msg.value.map_or(Value::Null, Value::Object);
            tracing::info!(target: "switchyard::audit", flag, from = %msg.from, action = "shared_override",
                %patch, "override received from the fleet");
        }
    }
    Ok(())
}

/// Sets or drops one flag's override locally; false when it did not compile (and nothing changed).
fn apply(state: &AppState, flag: &str, value: Option<Map<String, Value>>) -> bool {
    let result = state.sources.update_overrides(state, |o| match value {
        Some(v) => {
            o.insert(flag.to_owned(), v);
        }
        None => {
            o.remove(flag);
        }
    });
    match result {
        Ok(_) => {
            count(state, "received");
            true
        }
        Err(e) => {
            count(state, "rejected");
            tracing::error!(flag, error = %e, "shared override does not compile here; ignored");
            false
        }
    }
}

fn count(state: &AppState, outcome: &str) {
    state.metrics.overrides_sync.with_label_values(&[outcome]).inc();
}
