//! What a worker does when its queue is empty (`datapath.busyPoll`,
//! `busyPollUs`): poll again, or sleep until the queue is readable. Kept
//! apart from the packet work so the policy can be tested without a TUN.

use std::time::{Duration, Instant};

/// A sleep at least this long marks the traffic as sparse, which turns
/// on busy polling (`datapath.busyPollUs`) for the next rounds.
const SPARSE_GAP: Duration = Duration::from_millis(1);
/// Rounds after such a sleep that are followed by busy polling. A
/// request/response exchange needs one or two; bulk traffic keeps a worker
/// from ever sleeping again once it polls, so without a limit it polled
/// (`sched_yield`) through a whole transfer (~3500 yields per second per
/// worker in a single-stream iperf3, syscall trace, docs/datapath.md).
const SPARSE_ROUNDS: u32 = 4;
/// An always-polling worker whose queue stayed empty this long drops its
/// cached SAs, as a sleeping one does before it sleeps: an idle worker
/// keeps no old keys alive. Shorter than any gap of sparse traffic, longer
/// than the gaps within bulk (where the cache saves a lock per packet).
const FORGET_AFTER: Duration = Duration::from_millis(1);

/// How a worker waits for packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polling {
    /// Sleep on an empty queue; after a sleep of at least [`SPARSE_GAP`],
    /// poll for this long after each of the next [`SPARSE_ROUNDS`] rounds
    /// (zero: never poll).
    Sparse(Duration),
    /// Never sleep: poll, yielding the CPU between empty polls.
    Always,
}

/// The worker's next step on an empty queue with nothing to flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnEmpty {
    /// Yield the CPU, then read again.
    Poll,
    /// Drop the cached SAs (idle), yield, then read again.
    Forget,
    /// Drop the cached SAs and block until the queue is readable; report
    /// how long with [`Idle::woke`].
    Sleep,
}

/// Where an always-polling worker is in a stretch of empty polls.
#[derive(Debug, Clone, Copy)]
enum Stretch {
    Busy,
    EmptySince(Instant),
    Forgotten,
}

/// The empty-queue policy's state, one per worker.
#[derive(Debug)]
pub struct Idle {
    polling: Polling,
    /// Sparse: until when an empty queue is polled instead of slept on.
    /// Only set by rounds after a long sleep (sparse, latency-bound
    /// traffic): an idle worker never spins, and a busy one (bulk) does
    /// not either, where spinning measurably took CPU from the application
    /// and the other worker (docs/datapath.md, Latency).
    poll_until: Option<Instant>,
    /// Sparse: the last sleep was long.
    sparse: bool,
    /// Rounds that handled packets since the last sleep.
    rounds: u32,
    /// Always: how long the queue has been empty.
    stretch: Stretch,
}

impl Idle {
    pub fn new(polling: Polling) -> Self {
        Self {
            polling,
            poll_until: None,
            sparse: false,
            rounds: 0,
            stretch: Stretch::Busy,
        }
    }

    /// A round handled packets.
    pub fn handled(&mut self) {
        self.rounds = self.rounds.saturating_add(1);
        match self.polling {
            Polling::Sparse(window) => {
                self.poll_until =
                    (self.sparse && self.rounds <= SPARSE_ROUNDS).then(|| Instant::now() + window);
            }
            Polling::Always => self.stretch = Stretch::Busy,
        }
    }

    /// The queue was found empty at `now` and nothing is being coalesced.
    pub fn empty(&mut self, now: Instant) -> OnEmpty {
        match self.polling {
            Polling::Sparse(_) if self.poll_until.is_some_and(|t| now < t) => OnEmpty::Poll,
            Polling::Sparse(_) => {
                self.poll_until = None;
                OnEmpty::Sleep
            }
            Polling::Always => self.empty_always(now),
        }
    }

    fn empty_always(&mut self, now: Instant) -> OnEmpty {
        match self.stretch {
            Stretch::Busy => {
                self.stretch = Stretch::EmptySince(now);
                OnEmpty::Poll
            }
            Stretch::EmptySince(t) if now.saturating_duration_since(t) >= FORGET_AFTER => {
                self.stretch = Stretch::Forgotten;
                OnEmpty::Forget
            }
            Stretch::EmptySince(_) | Stretch::Forgotten => OnEmpty::Poll,
        }
    }

    /// The worker slept `slept` after [`OnEmpty::Sleep`].
    pub fn woke(&mut self, slept: Duration) {
        self.sparse =
            matches!(self.polling, Polling::Sparse(w) if !w.is_zero()) && slept >= SPARSE_GAP;
        self.rounds = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn test_always_never_sleeps_and_forgets_once_per_idle_stretch() {
        let mut idle = Idle::new(Polling::Always);
        let t0 = Instant::now();
        assert_eq!(idle.empty(t0), OnEmpty::Poll);
        assert_eq!(idle.empty(t0 + MS / 2), OnEmpty::Poll);
        assert_eq!(idle.empty(t0 + MS), OnEmpty::Forget);
        for s in 2..100 {
            assert_eq!(idle.empty(t0 + MS * s), OnEmpty::Poll);
        }
        // Packets again: the next idle stretch forgets again.
        idle.handled();
        let t1 = t0 + MS * 200;
        assert_eq!(idle.empty(t1), OnEmpty::Poll);
        assert_eq!(idle.empty(t1 + MS * 3), OnEmpty::Forget);
    }

    #[test]
    fn test_always_keeps_keys_while_packets_keep_coming() {
        let mut idle = Idle::new(Polling::Always);
        let t0 = Instant::now();
        for s in 0..100 {
            // Empty polls between reads, each gap shorter than FORGET_AFTER.
            assert_eq!(idle.empty(t0 + MS * s), OnEmpty::Poll);
            assert_eq!(idle.empty(t0 + MS * s + MS / 2), OnEmpty::Poll);
            idle.handled();
        }
    }

    #[test]
    fn test_sparse_polls_only_after_a_long_sleep_and_for_few_rounds() {
        let mut idle = Idle::new(Polling::Sparse(Duration::from_secs(60)));
        // Not woken from a long sleep yet: sleeps at once.
        idle.handled();
        assert_eq!(idle.empty(Instant::now()), OnEmpty::Sleep);
        idle.woke(MS * 2);
        for _ in 0..SPARSE_ROUNDS {
            idle.handled();
            assert_eq!(idle.empty(Instant::now()), OnEmpty::Poll);
        }
        // Past the rounds limit (bulk): sleeps again.
        idle.handled();
        assert_eq!(idle.empty(Instant::now()), OnEmpty::Sleep);
        // A short sleep (busy traffic) does not start polling.
        idle.woke(MS / 2);
        idle.handled();
        assert_eq!(idle.empty(Instant::now()), OnEmpty::Sleep);
    }

    #[test]
    fn test_sparse_window_ends_and_zero_never_polls() {
        let mut idle = Idle::new(Polling::Sparse(Duration::from_micros(200)));
        idle.woke(MS * 2);
        idle.handled();
        assert_eq!(idle.empty(Instant::now() + MS), OnEmpty::Sleep);
        let mut idle = Idle::new(Polling::Sparse(Duration::ZERO));
        idle.woke(MS * 50);
        idle.handled();
        assert_eq!(idle.empty(Instant::now()), OnEmpty::Sleep);
    }
}
