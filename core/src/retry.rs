//! Retry policy and backoff, decided in code (never in Lua).
//!
//! `max_attempts` counts every run including the first, so `max_attempts = 3` means at most
//! three executions of the job. The delay before attempt `n + 1`, after attempt `n` failed:
//!
//! - `fixed`: `initial`;
//! - `exponential`: `min(initial × 2^(n−1), max)`;
//! - with `jitter`, the delay is multiplied by a factor drawn uniformly from `[0.8, 1.2)`
//!   (the caller supplies the sample so the function stays pure), then capped at `max`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default number of attempts of a job or step that declares no retry policy.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// How the delay grows between attempts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay every time.
    Fixed,
    /// Doubling from `initial` up to `max`.
    #[default]
    Exponential,
}

/// A retry policy: how many attempts, and how long to wait between them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (at least 1).
    pub max_attempts: u32,
    /// Growth of the delay.
    pub backoff: Backoff,
    /// Delay after the first failed attempt, in milliseconds.
    pub initial_ms: u64,
    /// Upper bound of any delay, in milliseconds.
    pub max_ms: u64,
    /// Spread delays by ±20 % so that failed jobs do not retry in lockstep.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::Exponential,
            initial_ms: 1_000,
            max_ms: 60_000,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// Whether another attempt is allowed after `attempts` attempts have run.
    pub fn allows_another(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }

    /// The delay after attempt `attempt` (1-based) failed. `jitter_sample` is a number in
    /// `[0, 1)`; it is ignored when jitter is off.
    pub fn delay_after(&self, attempt: u32, jitter_sample: f64) -> Duration {
        let base = match self.backoff {
            Backoff::Fixed => self.initial_ms,
            Backoff::Exponential => {
                let exp = attempt.saturating_sub(1).min(63);
                self.initial_ms.saturating_mul(1u64 << exp)
            }
        };
        let mut ms = base.min(self.max_ms.max(self.initial_ms));
        if self.jitter {
            let sample = jitter_sample.clamp(0.0, 0.999_999);
            let factor = 0.8 + 0.4 * sample;
            // Precision loss is irrelevant at millisecond delays.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            {
                ms = ((ms as f64) * factor).floor() as u64;
            }
            ms = ms.min(self.max_ms.max(self.initial_ms));
        }
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff, jitter: bool) -> RetryPolicy {
        RetryPolicy { max_attempts: 5, backoff, initial_ms: 1_000, max_ms: 5_000, jitter }
    }

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let p = policy(Backoff::Exponential, false);
        let delays: Vec<u64> =
            (1..=5).map(|n| p.delay_after(n, 0.5).as_millis() as u64).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(p.delay_after(u32::MAX, 0.0), Duration::from_millis(5_000));
    }

    #[test]
    fn fixed_is_constant() {
        let p = policy(Backoff::Fixed, false);
        assert_eq!(p.delay_after(1, 0.0), p.delay_after(4, 0.9));
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_under_the_cap() {
        let p = policy(Backoff::Exponential, true);
        assert_eq!(p.delay_after(1, 0.0), Duration::from_millis(800));
        assert_eq!(p.delay_after(1, 0.5), Duration::from_millis(1_000));
        assert!(p.delay_after(1, 0.999) < Duration::from_millis(1_200));
        assert_eq!(p.delay_after(5, 0.999), Duration::from_millis(5_000));
    }

    #[test]
    fn attempts_count_the_first_run() {
        let p = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
        assert!(p.allows_another(2));
        assert!(!p.allows_another(3));
    }
}
