//! Automatic cut-off of a failing variant: a per (route, variant) sliding-window error rate, lock-free
//! (atomics only, nothing locked per request). Above the threshold with enough requests the variant
//! is cut off (its users go to control) for a cool-down, then half-open: a few probe requests go
//! through; if they all succeed the variant is restored, one failure cuts it off again.

use serde::Deserialize;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Per-route `[routes.cutoff]` settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CutoffConfig {
    /// Error share (0.0–1.0) at or above which the variant is cut off.
    pub error_rate: f64,
    /// Fewest requests in the window before the rate is trusted.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    #[serde(default = "default_window", with = "humantime_serde_compat")]
    pub window: Duration,
    #[serde(default = "default_cooldown", with = "humantime_serde_compat")]
    pub cooldown: Duration,
    /// Successful probes needed in the half-open state to restore the variant.
    #[serde(default = "default_probes")]
    pub probes: u32,
}

fn default_min_requests() -> u64 {
    20
}
fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_probes() -> u32 {
    3
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

const BUCKETS: usize = 10;
const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

struct Bucket {
    epoch: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

/// The state shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "cut_off",
            State::HalfOpen => "half_open",
        }
    }
}

pub struct Breaker {
    cfg: CutoffConfig,
    origin: Instant,
    bucket_ms: u64,
    buckets: [Bucket; BUCKETS],
    state: AtomicU8,
    /// Milliseconds since `origin` when an open breaker turns half-open.
    open_until_ms: AtomicU64,
    probes_started: AtomicU32,
    probes_passed: AtomicU32,
}

/// What `allow` decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// A half-open trial request.
    Probe,
    No,
}

impl Breaker {
    pub fn new(cfg: CutoffConfig) -> Self {
        let bucket_ms = (cfg.window.as_millis() as u64 / BUCKETS as u64).max(1);
        Breaker {
            cfg,
            origin: Instant::now(),
            bucket_ms,
            buckets: std::array::from_fn(|_| Bucket {
                epoch: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
            state: AtomicU8::new(CLOSED),
            open_until_ms: AtomicU64::new(0),
            probes_started: AtomicU32::new(0),
            probes_passed: AtomicU32::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            OPEN if self.now_ms() >= self.open_until_ms.load(Ordering::Acquire) => State::HalfOpen,
            OPEN => State::Open,
            HALF_OPEN => State::HalfOpen,
            _ => State::Closed,
        }
    }

    /// Whether the variant may serve this request.
    pub fn allow(&self) -> Admit {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admit::Yes,
            OPEN => {
                if self.now_ms() < self.open_until_ms.load(Ordering::Acquire) {
                    return Admit::No;
                }
                if self.state.compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    self.probes_started.store(0, Ordering::Release);
                    self.probes_passed.store(0, Ordering::Release);
                    tracing::warn!("variant cut-off: cool-down over, probing");
                }
                self.allow()
            }
            _ => {
                if self.probes_started.fetch_add(1, Ordering::AcqRel) < self.cfg.probes {
                    Admit::Probe
                } else {
                    Admit::No
                }
            }
        }
    }

    /// Records the outcome of a request the variant served. Returns the new state when it changed.
    pub fn record(&self, admit: Admit, failed: bool) -> Option<State> {
        if admit == Admit::Probe {
            if failed {
                return self.trip();
            }
            let passed = self.probes_passed.fetch_add(1, Ordering::AcqRel) + 1;
            if passed >= self.cfg.probes
                && self.state.compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                for b in &self.buckets {
                    b.requests.store(0, Ordering::Release);
                    b.errors.store(0, Ordering::Release);
                }
                return Some(State::Closed);
            }
            return None;
        }
        let now = self.now_ms();
        let epoch = now / self.bucket_ms;
        let b = &self.buckets[(epoch % BUCKETS as u64) as usize];
        let seen = b.epoch.load(Ordering::Acquire);
        if seen != epoch && b.epoch.compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            b.requests.store(0, Ordering::Release);
            b.errors.store(0, Ordering::Release);
        }
        b.requests.fetch_add(1, Ordering::AcqRel);
        if failed {
            b.errors.fetch_add(1, Ordering::AcqRel);
        }
        let (requests, errors) = self.window(epoch);
        if self.state.load(Ordering::Acquire) == CLOSED
            && requests >= self.cfg.min_requests
            && errors as f64 >= self.cfg.error_rate * requests as f64
        {
            return self.trip();
        }
        None
    }

    fn trip(&self) -> Option<State> {
        let until = self.now_ms() + self.cfg.cooldown.as_millis() as u64;
        self.open_until_ms.store(until, Ordering::Release);
        let previous = self.state.swap(OPEN, Ordering::AcqRel);
        (previous != OPEN).then_some(State::Open)
    }

    /// Requests and errors in the current window.
    fn window(&self, epoch: u64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|b| {
                let e = b.epoch.load(Ordering::Acquire);
                e <= epoch && epoch - e < BUCKETS as u64
            })
            .fold((0, 0), |(r, e), b| (r + b.requests.load(Ordering::Acquire), e + b.errors.load(Ordering::Acquire)))
    }

    /// (requests, errors) in the current window, for operators.
    pub fn figures(&self) -> (u64, u64) {
        self.window(self.now_ms() / self.bucket_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cooldown_ms: u64) -> Breaker {
        Breaker::new(CutoffConfig {
            error_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(60),
            cooldown: Duration::from_millis(cooldown_ms),
            probes: 2,
        })
    }

    #[test]
    fn trips_only_with_enough_requests_above_the_threshold() {
        let b = breaker(10_000);
        for _ in 0..9 {
            assert_eq!(b.record(Admit::Yes, true), None, "fewer than min_requests never trips");
        }
        assert_eq!(b.record(Admit::Yes, true), Some(State::Open));
        assert_eq!(b.allow(), Admit::No);
        let healthy = breaker(10_000);
        for i in 0..100 {
            healthy.record(Admit::Yes, i % 3 == 0);
        }
        assert_eq!(healthy.state(), State::Closed, "33% errors stays under a 50% threshold");
    }

    #[test]
    fn half_open_probes_restore_or_trip_again() {
        let b = breaker(0);
        for _ in 0..10 {
            b.record(Admit::Yes, true);
        }
        assert_eq!(b.allow(), Admit::Probe, "cool-down of 0: the next request probes");
        assert_eq!(b.record(Admit::Probe, true), Some(State::Open), "a failed probe cuts off again");
        let (p1, p2) = (b.allow(), b.allow());
        assert_eq!((p1, p2), (Admit::Probe, Admit::Probe));
        assert_eq!(b.allow(), Admit::No, "only `probes` trial requests at once");
        assert_eq!(b.record(Admit::Probe, false), None);
        assert_eq!(b.record(Admit::Probe, false), Some(State::Closed));
        assert_eq!(b.allow(), Admit::Yes);
        assert_eq!(b.figures(), (0, 0), "a restored variant starts with a clean window");
    }
}
