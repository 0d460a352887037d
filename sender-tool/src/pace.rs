//! Pacing to --rate-pps.

use std::time::{Duration, Instant};

/// Spins until each packet's due time at `rate` packets per second.
pub(crate) struct Pacer {
    pub(crate) rate: Option<u64>,
    pub(crate) start: Instant,
    pub(crate) sent: u64,
}

impl Pacer {
    /// Counts from now (after a pause for building, so that it does not burst).
    pub(crate) fn restart(&mut self) {
        self.start = Instant::now();
        self.sent = 0;
    }

    pub(crate) fn wait(&mut self) {
        self.sent += 1;
        let Some(rate) = self.rate else { return };
        let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
        while self.start.elapsed() < due {
            std::hint::spin_loop();
        }
    }
}
