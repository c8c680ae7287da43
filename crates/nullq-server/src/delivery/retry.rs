//! When to try again: exponential backoff from `retry_min` to `retry_max`, with jitter so that
//! a queue that built up while the smarthost was down does not come back as one burst.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The delay after the `attempts`-th failed attempt (1 for the first): `min · 2^(attempts-1)`,
/// capped at `max`, then spread by ±20% (and capped at `max` again).
pub fn backoff(attempts: u32, min: Duration, max: Duration) -> Duration {
    backoff_at(attempts, min, max, jitter())
}

/// [`backoff`] with the spread given: `jitter` in [0, 1) (0.5: exactly the base delay), so
/// that the delivery decision stays a pure function of its inputs.
pub fn backoff_at(attempts: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << doublings).min(max);
    // 0.8 .. 1.2 of the base delay.
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    base.mul_f64(factor).min(max).max(min.min(max))
}

/// A number in [0, 1). A fresh `RandomState` is randomly keyed, which is all jitter needs: no
/// crate, no seed to manage.
pub fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x006e_756c_6c71);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_min_to_max_with_jitter() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(3600));
        for _ in 0..200 {
            let first = backoff(1, min, max);
            assert!(
                first >= min && first <= Duration::from_secs(72),
                "{first:?}"
            );
            let fourth = backoff(4, min, max);
            assert!(
                fourth >= Duration::from_secs(384) && fourth <= Duration::from_secs(576),
                "{fourth:?}"
            );
            let late = backoff(40, min, max);
            assert!(late >= Duration::from_secs(2880) && late <= max, "{late:?}");
        }
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(3, min, max).as_millis()).collect();
        assert!(spread.len() > 10, "no jitter: {spread:?}");
        assert_eq!(backoff_at(3, min, max, 0.5), Duration::from_secs(240));
        assert_eq!(backoff_at(3, min, max, 0.0), Duration::from_secs(192));
    }
}
