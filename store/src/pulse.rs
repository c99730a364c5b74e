//! [`Pulse`]: how a service loop shows that it runs, and whether Redis answers it.
//!
//! A loop beats its pulse after each round that succeeded against Redis (a heartbeat, a
//! lease pass, a scheduler tick) and marks a miss after each round that Redis did not answer
//! (unreachable, timed out, busy); a supervisor reads it:
//! - **rounds** (beats and misses) move while the loop runs at all: the `sluice` binary feeds
//!   the systemd watchdog only when they moved since its previous feed, so a process whose
//!   loop is stuck stops feeding it and is restarted, while one that keeps retrying an
//!   unreachable Redis with backoff is left alone (a restart would not bring Redis back);
//! - **readiness** is the outcome of the latest round: ready after a beat, not ready after a
//!   miss (and before the first beat). The readiness endpoint of a worker or scheduler and
//!   its systemd status report it.
//!
//! A pulse is a pair of counters and a flag, not a time: reading it involves no clock, and
//! "moved since I last looked" is the only question the watchdog asks. Clones share one state.

use std::sync::Arc;

use tokio::sync::watch;

/// What a pulse has recorded so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    /// Rounds that succeeded.
    beats: u64,
    /// Rounds that ended, successful or not.
    rounds: u64,
    /// Whether the latest round succeeded.
    ready: bool,
}

/// A shared record of a loop's rounds; see the module docs.
#[derive(Debug, Clone)]
pub struct Pulse {
    state: Arc<watch::Sender<State>>,
}

impl Default for Pulse {
    fn default() -> Self {
        Self::new()
    }
}

impl Pulse {
    /// A pulse that has not beaten yet (not ready).
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(State::default())),
        }
    }

    /// Records one round that succeeded against Redis: the loop is ready.
    pub fn beat(&self) {
        self.state.send_modify(|s| {
            s.beats = s.beats.wrapping_add(1);
            s.rounds = s.rounds.wrapping_add(1);
            s.ready = true;
        });
    }

    /// Records one round that Redis did not answer: the loop runs but is not ready.
    pub fn miss(&self) {
        self.state.send_modify(|s| {
            s.rounds = s.rounds.wrapping_add(1);
            s.ready = false;
        });
    }

    /// How many rounds succeeded so far.
    #[must_use]
    pub fn beats(&self) -> u64 {
        self.state.borrow().beats
    }

    /// How many rounds ended so far, successful or not.
    #[must_use]
    pub fn rounds(&self) -> u64 {
        self.state.borrow().rounds
    }

    /// Whether the latest round succeeded against Redis (false before the first beat).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.state.borrow().ready
    }

    /// Completes once the pulse has beaten at least once (at once if it already has).
    pub async fn first_beat(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|s| s.beats > 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_counter() {
        let pulse = Pulse::new();
        let reader = pulse.clone();
        assert_eq!(reader.beats(), 0);
        pulse.beat();
        pulse.beat();
        assert_eq!(reader.beats(), 2);
    }

    #[test]
    fn misses_are_rounds_that_leave_the_loop_not_ready() {
        let pulse = Pulse::new();
        assert!(!pulse.is_ready(), "ready before any round");
        pulse.beat();
        assert!(pulse.is_ready());
        pulse.miss();
        pulse.miss();
        assert!(!pulse.is_ready());
        assert_eq!((pulse.beats(), pulse.rounds()), (1, 3));
        pulse.beat();
        assert!(pulse.is_ready());
        assert_eq!((pulse.beats(), pulse.rounds()), (2, 4));
    }

    #[tokio::test]
    async fn first_beat_waits_for_a_beat_and_returns_at_once_afterwards() {
        let pulse = Pulse::new();
        let waiter = tokio::spawn({
            let pulse = pulse.clone();
            async move { pulse.first_beat().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "returned before any beat");
        pulse.miss();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a miss is no beat");
        pulse.beat();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("first_beat returned after the beat")
            .expect("the waiter did not panic");
        // Already beaten: no waiting.
        tokio::time::timeout(std::time::Duration::from_millis(100), pulse.first_beat())
            .await
            .expect("first_beat of a pulse that beat returns at once");
    }
}
