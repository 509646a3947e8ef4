//! Feedback on answers: `POST /v1/feedback` with a response's request id and a score, attributed to
//! the route and variant that served that request.
//!
//! Served requests are remembered in a fixed-size, lock-free lookup table: sets of seven slots of
//! two words each (a set fills two cache lines), the set chosen by a keyed hash of the request id,
//! the oldest slot of the set replaced by each new request. Remembering a request is two stores
//! and one increment on lines the request touches anyway: no allocation, no lock, no growing or
//! dropping of a map on the request path, and memory that stays flat (allocated in chunks as
//! first used, so an idle gateway pays nothing). A slot holds the id's hash mixed with its value
//! (which target served it, and when), so a slot being rewritten while it is read never yields a
//! wrong attribution: it reads as absent.

use crate::error::{Dialect, ErrorKind, GatewayError};
use crate::metrics::Metrics;
use serde::Deserialize;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// How long after a response its feedback is accepted.
pub const FEEDBACK_TTL: Duration = Duration::from_secs(3600);
/// Slots of the lookup table (8 MiB in all once every slot is used), unless `[server]
/// feedback_capacity` says otherwise. With sets of seven, a request is still remembered after
/// 100,000 later ones in all but about 0.1 % of cases, after 200,000 in 96 %.
pub const FEEDBACK_CAPACITY: usize = 400_000;
/// The most `feedback_capacity` may ask for: 2 GiB once every slot is used (sets of seven slots in
/// 128 bytes, their number rounded up to a power of two); the index of chunks is allocated at start.
pub const MAX_FEEDBACK_CAPACITY: usize = 64 << 20;

/// Slots per set.
const WAYS: usize = 7;
/// Sets per chunk of the table, allocated when first used.
const CHUNK_SETS: usize = 1024;
/// The unit of a slot's time stamp: a tenth of a second (a `u32` of them lasts 13 years).
const TICK_MS: u128 = 100;

#[derive(Default)]
struct Slot {
    /// The request id's key mixed with `value` (`tag_of`); 0: empty or taken.
    tag: AtomicU64,
    /// The target (upper half) and the tick it was served at (lower half).
    value: AtomicU64,
}

#[derive(Default)]
#[repr(align(64))]
struct Set {
    /// Which slot the next request replaces (modulo the ways in use).
    next: AtomicU32,
    slots: [Slot; WAYS],
}

/// A request id's key: its SipHash under keys drawn at start, so a caller that chooses its own
/// `x-request-id` cannot aim at another request's slot or tag.
fn key(keys: &RandomState, request_id: &str) -> u64 {
    keys.hash_one(request_id)
}

/// What a slot stores beside `value`: a slot read while it is rewritten pairs the old tag with the
/// new value (or the reverse), and matches no key.
fn tag_of(key: u64, value: u64) -> u64 {
    key ^ value.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
}

#[derive(Clone, Debug, PartialEq)]
struct Attribution {
    route: Arc<str>,
    variant: Arc<str>,
}

pub struct FeedbackStore {
    keys: RandomState,
    chunks: Box<[OnceLock<Box<[Set]>>]>,
    /// Sets in the table: a power of two.
    sets: usize,
    /// Slots in use per set (fewer than `WAYS` only for a table smaller than one set).
    ways: usize,
    origin: Instant,
    /// The targets requests are attributed to, by the number `register` gave them.
    targets: RwLock<Vec<Attribution>>,
}

impl FeedbackStore {
    /// A store of at least `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let ways = capacity.min(WAYS);
        let sets = capacity.div_ceil(ways).next_power_of_two();
        let chunks = (0..sets.div_ceil(CHUNK_SETS)).map(|_| OnceLock::new()).collect();
        FeedbackStore {
            keys: RandomState::new(),
            chunks,
            sets,
            ways,
            origin: Instant::now(),
            targets: RwLock::default(),
        }
    }

    /// Numbers a target once, at start: `remember` takes the number.
    pub fn register(&self, route: &Arc<str>, variant: &Arc<str>) -> u32 {
        let mut targets = self.targets.write().unwrap_or_else(PoisonError::into_inner);
        let found = targets.iter().position(|a| a.route == *route && a.variant == *variant);
        let index = found.unwrap_or_else(|| {
            targets.push(Attribution { route: route.clone(), variant: variant.clone() });
            targets.len() - 1
        });
        u32::try_from(index).unwrap_or(u32::MAX)
    }

    fn set(&self, key: u64) -> &Set {
        let index = (key >> 32) as usize & (self.sets - 1);
        let chunk = self.chunks[index / CHUNK_SETS]
            .get_or_init(|| (0..self.sets.min(CHUNK_SETS)).map(|_| Set::default()).collect());
        &chunk[index % CHUNK_SETS]
    }

    fn tick(&self, at: Instant) -> u32 {
        u32::try_from(at.saturating_duration_since(self.origin).as_millis() / TICK_MS).unwrap_or(u32::MAX)
    }

    /// Remembers that `request_id` was served at `now` by the target `register` numbered `target`.
    pub fn remember(&self, request_id: &str, target: u32, now: Instant) {
        let key = key(&self.keys, request_id);
        let set = self.set(key);
        let slot = &set.slots[set.next.fetch_add(1, Ordering::Relaxed) as usize % self.ways];
        let value = (u64::from(target) << 32) | u64::from(self.tick(now));
        slot.value.store(value, Ordering::Release);
        slot.tag.store(tag_of(key, value), Ordering::Release);
    }

    /// Takes the attribution of `request_id` (feedback counts once), if known and not expired at `now`.
    fn take(&self, request_id: &str, now: Instant) -> Option<Attribution> {
        let key = key(&self.keys, request_id);
        let set = self.set(key);
        let value = set.slots[..self.ways].iter().find_map(|slot| {
            let tag = slot.tag.load(Ordering::Acquire);
            let value = slot.value.load(Ordering::Acquire);
            let ours = tag != 0 && tag == tag_of(key, value);
            (ours && slot.tag.compare_exchange(tag, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()).then_some(value)
        })?;
        let age_ticks = self.tick(now).checked_sub(value as u32)?;
        if u128::from(age_ticks) * TICK_MS > FEEDBACK_TTL.as_millis() {
            return None;
        }
        let targets = self.targets.read().unwrap_or_else(PoisonError::into_inner);
        targets.get((value >> 32) as usize).cloned()
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
    let Some(a) = store.take(&fb.request_id, Instant::now()) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store(capacity: usize) -> (FeedbackStore, u32, u32) {
        let store = FeedbackStore::new(capacity);
        let (route, a, b) = (Arc::from("m"), Arc::from("a"), Arc::from("b"));
        let (ta, tb) = (store.register(&route, &a), store.register(&route, &b));
        (store, ta, tb)
    }

    fn variant(a: Option<Attribution>) -> Option<String> {
        a.map(|a| a.variant.to_string())
    }

    #[test]
    fn a_remembered_request_is_attributed_once() {
        let (store, ta, tb) = store(1000);
        let now = Instant::now();
        store.remember("req-a", ta, now);
        store.remember("req-b", tb, now);
        assert_eq!(variant(store.take("req-b", now)), Some("b".into()));
        assert_eq!(variant(store.take("req-a", now)), Some("a".into()));
        assert_eq!(store.take("req-a", now), None, "counted once");
        assert_eq!(store.take("req-unknown", now), None);
    }

    #[test]
    fn registering_a_target_twice_gives_the_same_number() {
        let (store, ta, tb) = store(10);
        assert_ne!(ta, tb);
        assert_eq!(store.register(&Arc::from("m"), &Arc::from("a")), ta);
    }

    #[test]
    fn feedback_after_the_ttl_is_refused() {
        let (store, ta, _) = store(10);
        let now = Instant::now();
        store.remember("old", ta, now);
        store.remember("fresh", ta, now);
        assert_eq!(store.take("old", now + FEEDBACK_TTL + Duration::from_secs(1)), None);
        assert_eq!(variant(store.take("fresh", now + FEEDBACK_TTL - Duration::from_secs(1))), Some("a".into()));
    }

    #[test]
    fn a_table_of_one_set_forgets_the_oldest_first() {
        let (store, ta, _) = store(4);
        let now = Instant::now();
        for i in 0..6 {
            store.remember(&format!("r{i}"), ta, now);
        }
        let kept: Vec<bool> = (0..6).map(|i| store.take(&format!("r{i}"), now).is_some()).collect();
        assert_eq!(kept, [false, false, true, true, true, true]);
    }

    #[test]
    fn the_default_table_remembers_almost_every_one_of_the_last_100k() {
        // 65,536 sets of seven: a request is displaced only when seven later ones land in its set,
        // which happens to about 0.1 % of the first of 100,000 requests, and fewer of the later.
        let (store, ta, _) = store(FEEDBACK_CAPACITY);
        let now = Instant::now();
        for i in 0..100_000 {
            store.remember(&format!("r{i}"), ta, now);
        }
        let kept = (0..100_000).filter(|i| store.take(&format!("r{i}"), now).is_some()).count();
        assert!(kept > 99_000, "{kept} of 100000 remembered");
        assert!(store.chunks.iter().all(|c| c.get().is_some()));
    }

    #[test]
    fn concurrent_writers_and_takers_never_misattribute() {
        let (store, ta, tb) = store(1 << 16);
        let store = Arc::new(store);
        let now = Instant::now();
        let writers: Vec<_> = [(ta, "a"), (tb, "b")]
            .into_iter()
            .map(|(t, name)| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        store.remember(&format!("{name}-{i}"), t, now);
                        if i >= 10 {
                            // Another thread's ids are written meanwhile; ours must read back as ours.
                            let got = store.take(&format!("{name}-{}", i - 10), now);
                            assert!(got.as_ref().is_none_or(|a| &*a.variant == name), "{name}: {got:?}");
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
    }
}
