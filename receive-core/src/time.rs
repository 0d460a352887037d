//! The receive core's clock: a typed instant, passed in by the I/O layer. The core never
//! reads a clock itself, so tests drive time as they like.

use std::ops::Add;
use std::time::Duration;

/// A moment of the receiver's run: the time since it started (live), or since the first
/// frame of a capture (replay).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(Duration);

impl Timestamp {
    /// The start of the run.
    pub const START: Self = Self(Duration::ZERO);

    /// `since_start` after the start of the run.
    pub const fn since_start(since_start: Duration) -> Self {
        Self(since_start)
    }

    /// Time since the start of the run.
    pub const fn since_start_duration(self) -> Duration {
        self.0
    }

    /// The placement engine's clock: nanoseconds since the start (saturating).
    pub fn engine_nanos(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub fn saturating_since(self, earlier: Self) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Self;
    /// Saturating: a deadline past the end of time is never reached.
    fn add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_clock_is_nanoseconds_and_saturates() {
        let t = Timestamp::since_start(Duration::from_millis(3));
        assert_eq!(t.engine_nanos(), 3_000_000);
        assert_eq!((t + Duration::MAX).engine_nanos(), u64::MAX);
        assert_eq!(Timestamp::START.saturating_since(t), Duration::ZERO);
        assert_eq!(
            t.saturating_since(Timestamp::START),
            Duration::from_millis(3)
        );
    }
}
