//! Bounds what forged SPIs can cost. Deriving an inbound SA takes an X25519
//! exchange plus HKDF (tens of microseconds) and happens under the peer's
//! SA-list lock; a forged packet with a plausible SPI would otherwise buy
//! one derivation each. After a derivation whose packet fails to
//! authenticate, the next one for that peer waits `BACKOFF`: at most ~200
//! failed derivations per second per peer, while a legitimate new
//! generation (every packet of its flows carries it) still gets through
//! within milliseconds once the forgeries pause.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BACKOFF: Duration = Duration::from_millis(5);

#[derive(Debug)]
pub struct DeriveGate {
    origin: Instant,
    /// Nanoseconds since `origin` before which no derivation is tried.
    not_before: AtomicU64,
}

impl Default for DeriveGate {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            not_before: AtomicU64::new(0),
        }
    }
}

impl DeriveGate {
    fn now(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn allows(&self, at: Instant) -> bool {
        self.now(at) >= self.not_before.load(Ordering::Relaxed)
    }

    pub fn failed(&self, at: Instant) {
        let until = self.now(at).saturating_add(BACKOFF.as_nanos() as u64);
        self.not_before.fetch_max(until, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_backoff_after_failure_only() {
        let g = DeriveGate::default();
        let t = Instant::now();
        assert!(g.allows(t));
        g.failed(t);
        assert!(!g.allows(t + Duration::from_millis(1)));
        assert!(g.allows(t + BACKOFF));
    }
}
