//! The emulator's clock.
//!
//! Everything time-dependent (token lifetimes, refresh-token inactivity, which incidents exist
//! yet, rate-limit windows) reads this clock. It runs `scale` times faster than the wall clock
//! from the moment the emulator started (`--time-scale`), and tests can also jump it forward.

use std::sync::Mutex;
use std::time::Instant;

use xdrsync_model::Timestamp;

/// Emulator time: `start + scale × real elapsed + offset`.
#[derive(Debug)]
pub struct Clock {
    started_real: Instant,
    started_at: Timestamp,
    scale: f64,
    offset: Mutex<chrono::Duration>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new(1.0)
    }
}

impl Clock {
    /// A clock running `scale` times real time, starting now.
    pub fn new(scale: f64) -> Self {
        Clock {
            started_real: Instant::now(),
            started_at: Timestamp::now(),
            scale: if scale.is_finite() && scale > 0.0 {
                scale
            } else {
                1.0
            },
            offset: Mutex::new(chrono::Duration::zero()),
        }
    }

    /// How many emulator seconds pass per real second.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The emulator's current time.
    pub fn now(&self) -> Timestamp {
        let offset = *self.offset.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = self.started_real.elapsed().as_secs_f64() * self.scale;
        let elapsed = chrono::Duration::nanoseconds((elapsed * 1e9) as i64);
        self.started_at.add(elapsed).add(offset)
    }

    /// Converts an emulator duration into the real time it takes.
    pub fn real(&self, emulated: std::time::Duration) -> std::time::Duration {
        emulated.div_f64(self.scale)
    }

    /// Moves the clock forward (or back) by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_time_runs_faster() {
        let c = Clock::new(3600.0);
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = c.now();
        // 20 ms real ≈ 72 s emulated.
        assert!(b.ticks() - a.ticks() > 60 * 10_000_000, "{a} → {b}");
        c.advance(chrono::Duration::days(1));
        assert!(c.now().ticks() - b.ticks() >= 86_400 * 10_000_000);
    }
}
