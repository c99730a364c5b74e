//! [`Pulse`]: how a service loop shows that it makes progress against Redis.
//!
//! A loop beats its pulse after each round that succeeded against Redis (a heartbeat, a
//! lease pass, a scheduler tick); a supervisor reads it. The `sluice` binary feeds the
//! systemd watchdog only when the pulse moved since its previous feed, so a process whose
//! loop is stuck, or cannot reach Redis, stops feeding it and is restarted.
//!
//! A pulse is a counter, not a time: reading it involves no clock, and "moved since I last
//! looked" is the only question a supervisor asks. Clones share one counter.

use std::sync::Arc;

use tokio::sync::watch;

/// A shared counter of successful rounds; see the module docs.
#[derive(Debug, Clone)]
pub struct Pulse {
    beats: Arc<watch::Sender<u64>>,
}

impl Default for Pulse {
    fn default() -> Self {
        Self::new()
    }
}

impl Pulse {
    /// A pulse that has not beaten yet.
    #[must_use]
    pub fn new() -> Self {
        Self { beats: Arc::new(watch::Sender::new(0)) }
    }

    /// Records one successful round.
    pub fn beat(&self) {
        self.beats.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How many rounds succeeded so far.
    #[must_use]
    pub fn beats(&self) -> u64 {
        *self.beats.borrow()
    }

    /// Completes once the pulse has beaten at least once (at once if it already has).
    pub async fn first_beat(&self) {
        let mut rx = self.beats.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|n| *n > 0).await;
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

    #[tokio::test]
    async fn first_beat_waits_for_a_beat_and_returns_at_once_afterwards() {
        let pulse = Pulse::new();
        let waiter = tokio::spawn({
            let pulse = pulse.clone();
            async move { pulse.first_beat().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "returned before any beat");
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
