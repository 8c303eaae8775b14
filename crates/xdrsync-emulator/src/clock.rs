//! The emulator's clock.
//!
//! Everything time-dependent (token lifetimes, which incidents exist yet) reads this clock, so
//! tests can run the emulator at a fixed instant or shifted into the future.

use std::sync::Mutex;

use xdrsync_model::Timestamp;

/// Wall-clock time plus an adjustable offset.
#[derive(Debug, Default)]
pub struct Clock {
    offset: Mutex<chrono::Duration>,
}

impl Clock {
    /// The emulator's current time.
    pub fn now(&self) -> Timestamp {
        let offset = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        Timestamp::now().add(offset)
    }

    /// Moves the clock forward (or back) by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
    }
}
