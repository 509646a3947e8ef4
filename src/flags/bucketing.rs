//! Bucketing: the SHA-1 hash PostHog SDKs use, the rollout test and the variant choice.
//! Tiny pure functions; golden vectors in `tests/vectors/` pin them to posthog-python.

use sha1::{Digest, Sha1};

/// `0xFFFFFFFFFFFFFFF` (15 hex digits) as a float, exactly as `float(0xFFFFFFFFFFFFFFF)`.
const LONG_SCALE: f64 = 1_152_921_504_606_846_975_u64 as f64;

/// Salt for the variant hash.
pub const VARIANT_SALT: &str = "variant";

/// `_hash(key, bucketing_value, salt)`: SHA-1 of `"{key}.{id}{salt}"`, first 15 hex digits / LONG_SCALE.
/// The result lies in `[0, 1]` (1.0 is reachable through float rounding).
pub fn hash(key: &str, bucketing_value: &str, salt: &str) -> f64 {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b".");
    h.update(bucketing_value.as_bytes());
    h.update(salt.as_bytes());
    let digest = h.finalize();
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(first) >> 4;
    n as f64 / LONG_SCALE
}

/// Rollout test: out of rollout iff `hash > rollout_percentage / 100`.
pub fn in_rollout(hash_value: f64, rollout_percentage: f64) -> bool {
    hash_value <= rollout_percentage / 100.0
}

/// Whether every hash is in a rollout of `rollout_percentage` (100 or more: no hash exceeds 1.0),
/// so that the rollout test can skip hashing: the same answer as [`in_rollout`] for any hash.
pub fn whole_rollout(rollout_percentage: f64) -> bool {
    rollout_percentage >= 100.0
}

/// Cumulative variant boundaries in declaration order, accumulated in f64 like posthog-python
/// (`value_max = value_min + pct / 100`). Element `i` is `(value_min, value_max)` of variant `i`.
pub fn variant_bounds(percentages: &[f64]) -> Vec<(f64, f64)> {
    let mut lo = 0.0_f64;
    percentages
        .iter()
        .map(|p| {
            let hi = lo + p / 100.0;
            let range = (lo, hi);
            lo = hi;
            range
        })
        .collect()
}

/// Index of the first variant whose `[min, max)` holds `hash_value`, if any.
pub fn pick_variant(bounds: &[(f64, f64)], hash_value: f64) -> Option<usize> {
    bounds.iter().position(|(lo, hi)| hash_value >= *lo && hash_value < *hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_hash_exceeds_a_whole_rollout() {
        // The largest hash: all fifteen hex digits `f`, which float rounding makes exactly 1.0.
        let largest = (u64::MAX >> 4) as f64 / LONG_SCALE;
        assert_eq!(largest, 1.0);
        for p in [100.0, 100.5, 1e300, f64::INFINITY] {
            assert!(whole_rollout(p) && in_rollout(largest, p) && in_rollout(0.0, p), "{p}");
        }
        for p in [99.999_999, 0.0, -1.0, f64::NAN] {
            assert!(!whole_rollout(p), "{p}");
        }
        for id in 0..2000 {
            let h = hash("flag", &format!("user-{id}"), "");
            assert!(in_rollout(h, 100.0), "{id}: {h}");
        }
    }

    #[test]
    fn hash_matches_worked_examples_of_the_spec() {
        assert_eq!(hash("simple-flag", "distinct_id_0", ""), 0.7836963764220432);
        assert_eq!(hash("simple-flag", "distinct_id_1", ""), 0.3397069926995401);
        assert_eq!(hash("multivariate-flag", "distinct_id_0", ""), 0.502037796130735);
        assert_eq!(hash("multivariate-flag", "distinct_id_0", VARIANT_SALT), 0.6186454537930379);
    }

    #[test]
    fn third_boundary_of_50_20_20_5_5_is_the_float_sum() {
        let b = variant_bounds(&[50.0, 20.0, 20.0, 5.0, 5.0]);
        assert_eq!(b[2].1, 0.8999999999999999);
        assert_eq!(pick_variant(&b, 0.6186454537930379), Some(1));
        assert_eq!(pick_variant(&b, 1.0), None);
    }

    #[test]
    fn rollout_uses_less_or_equal() {
        assert!(in_rollout(0.45, 45.0));
        assert!(!in_rollout(0.4500001, 45.0));
        assert!(in_rollout(0.0, 0.0));
        assert!(in_rollout(1.0, 100.0));
    }
}
