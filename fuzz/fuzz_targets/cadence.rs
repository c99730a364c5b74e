//! Cadences: cron expressions and windowed intervals in IANA time zones, and their fire
//! times.
//!
//! The input is text, one field a line (so that seeds are readable):
//!
//! ```text
//! 30 2 * * *        <- a cron expression, or an interval such as 90m
//! Europe/Berlin     <- the time zone
//! 22-6              <- the interval's hours (empty: none)
//! 12345             <- the interval's weekdays, one digit each (empty: every day)
//! 1774744200000     <- the instant to compute fire times from (ms since the epoch)
//! ```
//!
//! The text is tried both as a cron expression and as an interval. For every cadence that
//! is accepted: fire times move strictly forward, an interval fires on whole minutes, the
//! stored form reads back and validates, and the count of fires in a window is capped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::Cadence;

/// 2026-03-29 00:30 UTC, the night Europe changes to summer time.
const NOW: i64 = 1_774_744_200_000;
const WEEK_MS: i64 = 7 * 86_400_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let expr = lines.next().unwrap_or_default();
    let timezone = lines.next().unwrap_or_default();
    let hours = lines.next().filter(|h| !h.is_empty());
    let weekdays: Vec<u8> = lines
        .next()
        .unwrap_or_default()
        .bytes()
        .map(|b| b.wrapping_sub(b'0'))
        .collect();
    let after = lines
        .next()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or(NOW);

    if let Ok(c) = Cadence::cron(expr, timezone) {
        exercise(&c, after);
    }
    if let Ok(c) = Cadence::every(expr, &weekdays, hours, timezone) {
        exercise(&c, after);
        for at in [c.next_after(after), c.next_after_fire(after)]
            .into_iter()
            .flatten()
        {
            assert_eq!(
                at.rem_euclid(60_000),
                0,
                "an interval fires at {at}, not on a whole minute"
            );
        }
    }
});

fn exercise(c: &Cadence, after: i64) {
    c.validate()
        .expect("a cadence a constructor accepted validates");
    let stored = serde_json::to_value(c).expect("a cadence serialises");
    let read: Cadence =
        serde_json::from_value(stored).expect("the stored form of a cadence reads back");
    assert_eq!(&read, c);

    let mut at = after;
    let mut next = c.next_after(after);
    for _ in 0..4 {
        let Some(t) = next else { break };
        assert!(t > at, "fire time {t} is not after {at}");
        at = t;
        next = c.next_after_fire(t);
    }
    let count = c.count_between(after, after.saturating_add(WEEK_MS), 20);
    assert!(count <= 20);
}
