//! The cadence of a schedule: when it fires.

use serde::{Deserialize, Serialize};

use crate::{Millis, Problem};

/// How often a schedule fires, in which time zone.
///
/// Serialised as `{"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}` or
/// `{"every_ms": 21600000, "weekdays": [1, 2, 3, 4, 5], "hours": "22-6", "timezone": "UTC"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cadence {
    /// A 5-field cron expression (or a macro such as `@daily`); absent for an interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron: Option<String>,
    /// The interval in milliseconds; absent for a cron cadence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every_ms: Option<u64>,
    /// Weekdays an interval may fire on, 1 = Monday … 7 = Sunday; empty = every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    weekdays: Vec<u8>,
    /// Local hours an interval may fire in, `lo-hi` (`9-17`, wrapping `22-6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hours: Option<String>,
    /// IANA time zone name the cadence is evaluated in.
    timezone: String,
}

impl Cadence {
    /// A 5-field cron expression (or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`)
    /// evaluated in the IANA zone `timezone`.
    ///
    /// # Errors
    /// Every problem found, at fields `cron` and `timezone`.
    pub fn cron(expr: &str, timezone: &str) -> Result<Cadence, Vec<Problem>> {
        let _ = (expr, timezone);
        todo!()
    }

    /// An interval `every` (a duration such as `6h` or `90m`, at least one minute, whole
    /// minutes), with an optional window: `weekdays` (1 = Monday … 7 = Sunday; empty = every
    /// day) and `hours` (`9-17`, wrapping `22-6`), evaluated in `timezone`.
    ///
    /// # Errors
    /// Every problem found, at fields `every`, `weekdays`, `hours` and `timezone`.
    pub fn every(
        every: &str,
        weekdays: &[u8],
        hours: Option<&str>,
        timezone: &str,
    ) -> Result<Cadence, Vec<Problem>> {
        let _ = (every, weekdays, hours, timezone);
        todo!()
    }

    /// The first fire time strictly after `after`; `None` if there is none.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let _ = after;
        todo!()
    }

    /// The fire after one that happened at `fired_at`: for an interval, computed from the
    /// actual fire time; for cron, the next match after `fired_at`.
    pub fn next_after_fire(&self, fired_at: Millis) -> Option<Millis> {
        let _ = fired_at;
        todo!()
    }

    /// How many fire times fall in `(from, to]`, counting at most `cap`.
    pub fn count_between(&self, from: Millis, to: Millis, cap: u32) -> u32 {
        let _ = (from, to, cap);
        todo!()
    }

    /// The cron expression, for a cron cadence.
    pub fn cron_expr(&self) -> Option<&str> {
        self.cron.as_deref()
    }

    /// The interval in milliseconds, for an interval cadence.
    pub fn every_ms(&self) -> Option<u64> {
        self.every_ms
    }

    /// The weekdays an interval may fire on (1 = Monday … 7 = Sunday); empty = every day.
    pub fn weekdays(&self) -> &[u8] {
        &self.weekdays
    }

    /// The local hours an interval may fire in (`9-17`, `22-6`), if limited.
    pub fn hours(&self) -> Option<&str> {
        self.hours.as_deref()
    }

    /// The time zone name.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// Re-validates a deserialised cadence (its stored form), with the same problems as the
    /// constructors.
    ///
    /// # Errors
    /// Every problem found.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        todo!()
    }
}

/// One line for people: `cron 0 9 * * 1-5 (Europe/Berlin)`,
/// `every 6h on 1,2,3,4,5 hours 22-6 (UTC)`.
impl std::fmt::Display for Cadence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        todo!()
    }
}
