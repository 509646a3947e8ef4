//! Feedback on answers: `POST /v1/feedback` with a response's request id and a score, attributed to
//! the route and variant that served that request. Served requests are remembered in a bounded,
//! expiring lookup (two generations of a concurrent map: the older one is dropped when the newer
//! fills up or ages out), so memory stays flat whatever the traffic. The map is keyed by a keyed
//! hash of the request id, not the id itself: no copy of the id per request, and growing the map
//! re-hashes nothing costly.

use crate::error::{Dialect, ErrorKind, GatewayError};
use crate::metrics::Metrics;
use dashmap::DashMap;
use serde::Deserialize;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after a response its feedback is accepted.
pub const FEEDBACK_TTL: Duration = Duration::from_secs(3600);
/// Most requests remembered per generation (two generations are kept), unless `[server]
/// feedback_capacity` says otherwise.
pub const FEEDBACK_CAPACITY: usize = 100_000;

#[derive(Clone)]
struct Attribution {
    route: Arc<str>,
    variant: Arc<str>,
    at: Instant,
}

/// A request id's key: its SipHash under keys drawn at start, so a caller that chooses its own
/// `x-request-id` cannot aim at another request's key. Two of the up to 200,000 remembered ids
/// share a key with a chance of about 10^-9 (and then one feedback is attributed to the other).
fn key(keys: &RandomState, request_id: &str) -> u64 {
    keys.hash_one(request_id)
}

/// The map's hasher: its keys are already keyed hashes, so it passes them on.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for a `u64` key; any other input still hashes.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type Generation = DashMap<u64, Attribution, BuildHasherDefault<Prehashed>>;

pub struct FeedbackStore {
    keys: RandomState,
    current: arc_swap::ArcSwap<Generation>,
    previous: arc_swap::ArcSwap<Generation>,
    /// When the current generation started, in ms since `origin`.
    generation_started: AtomicU64,
    origin: Instant,
    /// Requests remembered per generation.
    capacity: usize,
    /// Inserts into the current generation (`DashMap::len` would lock every shard per request).
    inserted: AtomicUsize,
}

impl Default for FeedbackStore {
    fn default() -> Self {
        FeedbackStore::new(FEEDBACK_CAPACITY)
    }
}

impl FeedbackStore {
    /// A store remembering up to `capacity` requests per generation (at least one).
    pub fn new(capacity: usize) -> Self {
        FeedbackStore {
            keys: RandomState::new(),
            current: arc_swap::ArcSwap::from_pointee(Generation::default()),
            previous: arc_swap::ArcSwap::from_pointee(Generation::default()),
            generation_started: AtomicU64::new(0),
            origin: Instant::now(),
            capacity: capacity.max(1),
            inserted: AtomicUsize::new(0),
        }
    }

    /// Remembers that `request_id` was served by `route`/`variant`.
    pub fn remember(&self, request_id: &str, route: Arc<str>, variant: Arc<str>) {
        let now_ms = self.origin.elapsed().as_millis() as u64;
        let started = self.generation_started.load(Ordering::Relaxed);
        let inserted = self.inserted.fetch_add(1, Ordering::Relaxed);
        let full = inserted >= self.capacity || now_ms.saturating_sub(started) > FEEDBACK_TTL.as_millis() as u64;
        if full
            && self.generation_started.compare_exchange(started, now_ms, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.previous.store(self.current.swap(Arc::new(Generation::default())));
            self.inserted.store(1, Ordering::Relaxed);
        }
        self.current.load().insert(key(&self.keys, request_id), Attribution { route, variant, at: Instant::now() });
    }

    /// Takes the attribution of `request_id` (feedback counts once), if known and not expired.
    fn take(&self, request_id: &str) -> Option<Attribution> {
        let key = key(&self.keys, request_id);
        let found = self.current.load().remove(&key).or_else(|| self.previous.load().remove(&key));
        found.map(|(_, a)| a).filter(|a| a.at.elapsed() <= FEEDBACK_TTL)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Feedback {
    request_id: String,
    score: f64,
    #[serde(default)]
    comment: Option<String>,
}

/// Scores outside this range are refused: thumbs (-1, 0, 1) and stars (1 to 5) fit.
const SCORE_RANGE: std::ops::RangeInclusive<f64> = -1.0..=5.0;

/// Handles one feedback body; returns the JSON answer.
pub fn submit(store: &FeedbackStore, metrics: &Metrics, body: &[u8]) -> Result<serde_json::Value, GatewayError> {
    let fb: Feedback = serde_json::from_slice(body).map_err(|e| {
        GatewayError::new(
            ErrorKind::InvalidRequest,
            format!("feedback must be {{\"request_id\", \"score\", \"comment\"?}}: {e}"),
        )
    })?;
    if !fb.score.is_finite() || !SCORE_RANGE.contains(&fb.score) {
        return Err(
            GatewayError::new(ErrorKind::InvalidRequest, "`score` must be a number from -1 to 5").with_param("score")
        );
    }
    if fb.comment.as_ref().is_some_and(|c| c.len() > 4096) {
        return Err(
            GatewayError::new(ErrorKind::InvalidRequest, "`comment` is limited to 4096 bytes").with_param("comment")
        );
    }
    let Some(a) = store.take(&fb.request_id) else {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("no recent response with request id {:?} (unknown, expired or already rated)", fb.request_id),
        ));
    };
    metrics.feedback.with_label_values(&[&a.route, &a.variant]).observe(fb.score);
    tracing::info!(target: "switchyard::feedback", request_id = %fb.request_id, route = %a.route, variant = %a.variant,
        score = fb.score, comment = fb.comment.as_deref(), "feedback");
    Ok(serde_json::json!({"request_id": fb.request_id, "route": &*a.route, "variant": &*a.variant, "score": fb.score}))
}

/// Feedback errors use the OpenAI error shape (the endpoint lives beside `/v1/chat/completions`).
pub const DIALECT: Dialect = Dialect::OpenAi;
