//! Queue time: the wall clock, or (for tests only) a clock that runs `time_scale` times faster,
//! so that a test can watch retries and a 7-day queue lifetime expire in seconds without a
//! different code path for them.

use std::time::{Duration, Instant, SystemTime};

/// The delivery runner's clock. Every queue decision (next attempt, lifetime, warnings) reads
/// it; only sleeping converts back to real time.
#[derive(Debug, Clone)]
pub struct Clock {
    scale: u32,
    real_start: SystemTime,
    mono_start: Instant,
}

impl Clock {
    /// A clock running `scale` times faster than real time (1: the wall clock itself).
    pub fn new(scale: u32) -> Clock {
        Clock {
            scale: scale.max(1),
            real_start: SystemTime::now(),
            mono_start: Instant::now(),
        }
    }

    /// Now, in queue time.
    pub fn now(&self) -> SystemTime {
        if self.scale == 1 {
            return SystemTime::now();
        }
        self.real_start + self.mono_start.elapsed().saturating_mul(self.scale)
    }

    /// How long to really wait for `d` of queue time to pass.
    pub fn real(&self, d: Duration) -> Duration {
        d / self.scale
    }

    /// How much queue time passes in `d` of real time.
    pub fn from_real(&self, d: Duration) -> Duration {
        d.saturating_mul(self.scale)
    }

    /// Real time to wait until queue time `t` (zero if it is past).
    pub fn until(&self, t: SystemTime) -> Duration {
        self.real(t.duration_since(self.now()).unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_clock_runs_faster() {
        let c = Clock::new(3600);
        let t0 = c.now();
        std::thread::sleep(Duration::from_millis(20));
        let passed = c.now().duration_since(t0).unwrap_or_default();
        assert!(passed >= Duration::from_secs(72), "{passed:?}");
        assert_eq!(c.real(Duration::from_secs(3600)), Duration::from_secs(1));
    }
}
