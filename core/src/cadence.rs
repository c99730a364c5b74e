//! The cadence of a schedule: when it fires.
//!
//! A cadence is either a **cron** expression or an **interval** (`every`) with an optional
//! window, and always names an IANA time zone. Everything here is pure arithmetic on
//! [`Millis`] (milliseconds since the Unix epoch, UTC); the time zone rules come from the IANA
//! database (the system's copy when there is one, else the copy built into the binary).
//!
//! # Cron
//!
//! Five fields, `minute hour day-of-month month day-of-week`, matched against the **local
//! wall-clock time** of the zone. Each field is `*`, a value, a range `a-b`, a step `*/n`,
//! `a-b/n` or `a/n` (from `a` to the end of the field), or a comma-separated list of those.
//! Ranges: minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 (or `jan`…`dec`),
//! day-of-week 0-7 (0 and 7 are Sunday, or `sun`…`sat`). As in the classic cron, when both
//! day fields are restricted a day matches if *either* does; when one of them starts with
//! `*` a day must match both. The macros `@hourly`, `@daily` (`@midnight`), `@weekly`
//! (Sunday 00:00), `@monthly` and `@yearly` (`@annually`) stand for their usual expressions.
//! An expression that can never match (`0 0 30 2 *`) is refused.
//!
//! Daylight saving time, both rules applied to every expression alike:
//! - a matching local time that does not exist (skipped by a spring-forward change) fires
//!   **once, at the first instant after the gap**: `30 2 * * *` in `Europe/Berlin` fires at
//!   03:00 local time on the day the clocks go from 02:00 to 03:00; several matching times
//!   in one gap (`*/15 2 * * *`) make that one fire;
//! - a matching local time that occurs twice (a fall-back change) fires **once, at its first
//!   occurrence**. An expression with a wildcard hour follows the wall clock too, so
//!   `@hourly` does not fire during the repeated hour and has one two-hour interval that
//!   night; an interval cadence (`every = "1h"`) is the way to fire by real time.
//!
//! # Interval
//!
//! `every` is a duration of whole minutes, at least `1m` and at most `366d`. The window is
//! `weekdays` (1 = Monday … 7 = Sunday; empty = every day) and `hours` (`lo-hi` with hours
//! 0-23: `lo < hi` allows `[lo, hi)`, so `9-17` is 09:00–16:59; `lo >= hi` wraps midnight, so
//! `22-6` is 22:00–05:59; `lo == hi` allows every hour). An instant is inside the window when
//! its local weekday and local hour are both allowed.
//!
//! After a fire at `fired_at` the next fire is computed from that actual fire time:
//! 1. `base = fired_at + every`, rounded **up** to a whole minute (UTC);
//! 2. while the instant is outside the window, move to the next local hour boundary (the
//!    next instant whose local minute is 0; across a gap, the first instant after it), and
//!    test again, for at most a year of steps.
//!
//! The steps are in real time and every candidate is re-tested, so DST changes need no date
//! arithmetic: a repeated local hour is tested twice with the same answer, a skipped one never.
//! In a zone with a 30- or 45-minute offset a window opens on the local hour (09:00 in
//! `Asia/Kolkata` is 03:30 UTC).
//!
//! [`Cadence::next_after`] (used when a schedule is created or enabled) fires as soon as
//! allowed: the first whole minute strictly after `after` that is inside the window. So a new
//! interval schedule fires on the next minute when the window is open, else when it opens.

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::describe::quote;
use crate::{Millis, Problem, duration};

const MINUTE_MS: i64 = 60_000;
/// The longest interval: a leap year.
const MAX_EVERY_MS: u64 = 366 * 86_400_000;
/// How far ahead a cron search looks. A valid expression matches at least once every eight
/// years (`0 0 29 2 *` across a century year that is not a leap year); a cycle of 28 years
/// brings every date back to every weekday.
const CRON_SEARCH_YEARS: i16 = 30;
/// How many window steps an interval takes at most: a year of local hours, with room for
/// DST changes.
const MAX_WINDOW_STEPS: u32 = 24 * 367;
/// How much of the user's text a message quotes.
const QUOTE_LIMIT: usize = 60;
/// The window's hours rule, worded to follow an example of what is wrong.
const HOURS_RULE: &str = "expected `start-end` with hours 0-23, such as `9-17` or `22-6`";

/// How often a schedule fires, in which time zone.
///
/// Serialised as `{"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}` or
/// `{"every_ms": 21600000, "weekdays": [1, 2, 3, 4, 5], "hours": "22-6", "timezone": "UTC"}`.
/// Deserialising does not validate (a stored cadence stays readable even if the time zone
/// database changed): call [`Cadence::validate`] on input. An invalid cadence never fires
/// ([`Cadence::next_after`] answers `None`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cadence {
    /// A 5-field cron expression (or a macro such as `@daily`); absent for an interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cron: Option<String>,
    /// The interval in milliseconds (whole minutes, 1 minute to 366 days); absent for a cron
    /// cadence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every_ms: Option<u64>,
    /// Weekdays an interval may fire on, 1 = Monday … 7 = Sunday; empty = every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    weekdays: Vec<u8>,
    /// Local hours an interval may fire in, `lo-hi` (`9-17` is 09:00–16:59, `22-6` wraps
    /// midnight, `lo == hi` is every hour).
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
        let mut problems = Vec::new();
        let expr = expr.trim();
        if let Err(messages) = CronSpec::parse(expr) {
            problems.extend(messages.into_iter().map(|m| Problem::new("cron", m)));
        }
        match zone(timezone, &mut problems) {
            Some(tz) if problems.is_empty() => Ok(Cadence {
                cron: Some(expr.to_string()),
                every_ms: None,
                weekdays: Vec::new(),
                hours: None,
                timezone: canonical_name(&tz, timezone),
            }),
            _ => Err(problems),
        }
    }

    /// An interval `every` (a duration such as `6h` or `90m`, whole minutes, at least one
    /// minute and at most 366 days), with an optional window: `weekdays` (1 = Monday … 7 =
    /// Sunday; empty = every day) and `hours` (`9-17`, wrapping `22-6`), evaluated in
    /// `timezone`.
    ///
    /// # Errors
    /// Every problem found, at fields `every`, `weekdays`, `hours` and `timezone`.
    pub fn every(
        every: &str,
        weekdays: &[u8],
        hours: Option<&str>,
        timezone: &str,
    ) -> Result<Cadence, Vec<Problem>> {
        let mut problems = Vec::new();
        let every_ms = match duration::parse(every) {
            Ok(d) => {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                check_every(ms, every, &mut problems);
                Some(ms)
            }
            Err(message) => {
                problems.push(Problem::new("every", message));
                None
            }
        };
        check_weekdays(weekdays, &mut problems);
        if let Some(hours) = hours {
            check_hours(hours, &mut problems);
        }
        match (every_ms, zone(timezone, &mut problems)) {
            (Some(every_ms), Some(tz)) if problems.is_empty() => {
                let mut weekdays = weekdays.to_vec();
                weekdays.sort_unstable();
                weekdays.dedup();
                Ok(Cadence {
                    cron: None,
                    every_ms: Some(every_ms),
                    weekdays,
                    hours: hours.map(str::to_string),
                    timezone: canonical_name(&tz, timezone),
                })
            }
            _ => Err(problems),
        }
    }

    /// The first fire time strictly after `after`; `None` if there is none (the cadence is
    /// invalid, or the time is beyond the calendar's range).
    ///
    /// For cron, the first match after `after`. For an interval, the first whole minute after
    /// `after` that is inside the window: the cadence fires as soon as it is allowed to.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        match self.compile().ok()? {
            Compiled::Cron(spec, tz) => spec.next_after(&tz, after),
            Compiled::Every(every) => every.first_allowed(after.checked_add(1)?),
        }
    }

    /// The fire after one that happened at `fired_at`: for an interval, computed from the
    /// actual fire time (`fired_at + every`, rounded up to a whole minute, then moved into the
    /// window); for cron, the next match after `fired_at`.
    pub fn next_after_fire(&self, fired_at: Millis) -> Option<Millis> {
        match self.compile().ok()? {
            Compiled::Cron(spec, tz) => spec.next_after(&tz, fired_at),
            Compiled::Every(every) => every.after_fire(fired_at),
        }
    }

    /// How many fire times fall in `(from, to]`, counting at most `cap`: the first is
    /// [`next_after`](Self::next_after)`(from)`, each later one
    /// [`next_after_fire`](Self::next_after_fire) of the one before.
    pub fn count_between(&self, from: Millis, to: Millis, cap: u32) -> u32 {
        let Ok(compiled) = self.compile() else {
            return 0;
        };
        let mut count = 0;
        let mut next = match &compiled {
            Compiled::Cron(spec, tz) => spec.next_after(tz, from),
            Compiled::Every(every) => from.checked_add(1).and_then(|t| every.first_allowed(t)),
        };
        while let Some(at) = next {
            if at > to || count >= cap {
                break;
            }
            count += 1;
            next = match &compiled {
                Compiled::Cron(spec, tz) => spec.next_after(tz, at),
                Compiled::Every(every) => every.after_fire(at),
            };
        }
        count
    }

    /// The time zone name.
    pub fn timezone(&self) -> &str {
        &self.timezone
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

    /// Re-validates a deserialised cadence (its stored form), with the same problems as the
    /// constructors.
    ///
    /// # Errors
    /// Every problem found.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        self.compile().map(|_| ())
    }

    /// Checks everything and readies the cadence for arithmetic.
    fn compile(&self) -> Result<Compiled, Vec<Problem>> {
        /// What the stored fields describe, once checked.
        enum Rule {
            Cron(CronSpec),
            Every(u64),
        }
        let mut problems = Vec::new();
        let rule = match (&self.cron, self.every_ms) {
            (Some(_), Some(_)) => {
                problems.push(Problem::new(
                    "cron",
                    "cannot be combined with `every`: a cadence is a cron expression or an interval",
                ));
                None
            }
            (None, None) => {
                problems.push(Problem::new(
                    "cron",
                    "is required unless an interval (`every`) is given",
                ));
                None
            }
            (Some(expr), None) => {
                let only_interval = "applies to an interval (`every`) only; a cron expression names its own days and hours";
                if !self.weekdays.is_empty() {
                    problems.push(Problem::new("weekdays", only_interval));
                }
                if self.hours.is_some() {
                    problems.push(Problem::new("hours", only_interval));
                }
                match CronSpec::parse(expr) {
                    Ok(spec) => Some(Rule::Cron(spec)),
                    Err(messages) => {
                        problems.extend(messages.into_iter().map(|m| Problem::new("cron", m)));
                        None
                    }
                }
            }
            (None, Some(ms)) => {
                check_every(
                    ms,
                    &duration::format(std::time::Duration::from_millis(ms)),
                    &mut problems,
                );
                check_weekdays(&self.weekdays, &mut problems);
                if let Some(hours) = &self.hours {
                    check_hours(hours, &mut problems);
                }
                Some(Rule::Every(ms))
            }
        };
        let tz = zone(&self.timezone, &mut problems);
        let (Some(rule), Some(tz), true) = (rule, tz, problems.is_empty()) else {
            return Err(problems);
        };
        Ok(match rule {
            Rule::Cron(spec) => Compiled::Cron(spec, tz),
            Rule::Every(ms) => Compiled::Every(Every {
                every_ms: i64::try_from(ms).unwrap_or(i64::MAX),
                weekdays: self.weekdays.iter().fold(0u8, |set, d| set | (1 << d)),
                hours: self.hours.as_deref().and_then(parse_hours).map(|(lo, hi)| hour_set(lo, hi)),
                tz,
            }),
        })
    }
}

/// One line for people: `cron 0 9 * * 1-5 (Europe/Berlin)`,
/// `every 6h on weekdays 1,2,3,4,5 in hours 22-6 (UTC)`.
impl std::fmt::Display for Cadence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(expr) = &self.cron {
            write!(f, "cron {expr}")?;
        }
        if let Some(ms) = self.every_ms {
            write!(f, "every {}", duration::format(std::time::Duration::from_millis(ms)))?;
            if !self.weekdays.is_empty() {
                let days: Vec<String> = self.weekdays.iter().map(u8::to_string).collect();
                write!(f, " on weekdays {}", days.join(","))?;
            }
            if let Some(hours) = &self.hours {
                write!(f, " in hours {hours}")?;
            }
        }
        write!(f, " ({})", self.timezone)
    }
}

/// A checked cadence, ready for arithmetic.
enum Compiled {
    Cron(CronSpec, TimeZone),
    Every(Every),
}

// ----- validation helpers --------------------------------------------------------------------

/// The zone called `name`, or a problem at `timezone`.
fn zone(name: &str, problems: &mut Vec<Problem>) -> Option<TimeZone> {
    if name.trim().is_empty() {
        problems.push(Problem::new(
            "timezone",
            "is required: an IANA time zone such as `Europe/Berlin` or `UTC`",
        ));
        return None;
    }
    match TimeZone::get(name) {
        Ok(tz) => Some(tz),
        Err(_) => {
            problems.push(Problem::new(
                "timezone",
                format!(
                    "`{}` is not an IANA time zone (for example `Europe/Berlin` or `UTC`)",
                    quote(name, QUOTE_LIMIT)
                ),
            ));
            None
        }
    }
}

/// The database's spelling of a zone found by `name` (lookups ignore case).
fn canonical_name(tz: &TimeZone, name: &str) -> String {
    tz.iana_name().unwrap_or(name).to_string()
}

/// Problems with an interval of `ms` milliseconds, written `text`.
fn check_every(ms: u64, text: &str, problems: &mut Vec<Problem>) {
    if ms < 60_000 {
        problems.push(Problem::new("every", "must be at least 1m"));
    } else if ms > MAX_EVERY_MS {
        problems.push(Problem::new("every", "must be at most 366d"));
    } else if !ms.is_multiple_of(60_000) {
        problems.push(Problem::new(
            "every",
            format!("`{}` is not a whole number of minutes", quote(text, QUOTE_LIMIT)),
        ));
    }
}

fn check_weekdays(weekdays: &[u8], problems: &mut Vec<Problem>) {
    for day in weekdays {
        if !(1..=7).contains(day) {
            problems.push(Problem::new(
                "weekdays",
                format!("`{day}` is not a weekday; use 1 (Monday) to 7 (Sunday)"),
            ));
        }
    }
}

fn check_hours(hours: &str, problems: &mut Vec<Problem>) {
    let quoted = quote(hours, QUOTE_LIMIT);
    let Some((lo, hi)) = hours.split_once('-') else {
        problems
            .push(Problem::new("hours", format!("`{quoted}` is not an hour range; {HOURS_RULE}")));
        return;
    };
    let (Some(lo), Some(hi)) = (parse_hour_number(lo), parse_hour_number(hi)) else {
        problems
            .push(Problem::new("hours", format!("`{quoted}` is not an hour range; {HOURS_RULE}")));
        return;
    };
    for hour in [lo, hi] {
        if hour > 23 {
            problems.push(Problem::new(
                "hours",
                format!("`{quoted}`: hour {hour} is out of range 0-23"),
            ));
        }
    }
}

/// A number of one or two digits.
fn parse_hour_number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `lo-hi` of a valid window.
fn parse_hours(text: &str) -> Option<(u32, u32)> {
    let (lo, hi) = text.split_once('-')?;
    let (lo, hi) = (parse_hour_number(lo)?, parse_hour_number(hi)?);
    (lo <= 23 && hi <= 23).then_some((lo, hi))
}

/// The hours `[lo, hi)` as a bit set; `lo >= hi` wraps midnight, so `lo == hi` is every hour.
fn hour_set(lo: u32, hi: u32) -> u32 {
    (0..24)
        .filter(|h| if lo < hi { *h >= lo && *h < hi } else { *h >= lo || *h < hi })
        .fold(0, |set, h| set | (1 << h))
}

// ----- time helpers --------------------------------------------------------------------------

fn to_timestamp(ms: Millis) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

/// The instant a local wall-clock time stands for: the only one; in a gap (a skipped time)
/// the first instant after the gap; in a fold (a repeated time) the first occurrence.
fn local_to_instant(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // `dt` read with the offset after the gap is an instant before the change; the
            // change itself is the next transition.
            let before_change = after.to_timestamp(dt).ok()?;
            tz.following(before_change).next().map(|t| t.timestamp())
        }
    }
}

// ----- cron ----------------------------------------------------------------------------------

/// A parsed cron expression: one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CronSpec {
    /// Bits 0..=59.
    minutes: u64,
    /// Bits 0..=23.
    hours: u64,
    /// Bits 1..=31.
    days: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u64,
    /// Whether the day-of-month field starts with `*` (then a day must match both day fields).
    days_star: bool,
    /// Whether the day-of-week field starts with `*`.
    weekdays_star: bool,
}

const MONTH_NAMES: [&str; 12] =
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const FIELD_RULE: &str = "a cron expression has 5: minute hour day-of-month month day-of-week";

/// What one cron field may hold.
struct FieldKind {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names of the values from `min` on (`jan` = 1, `sun` = 0); empty when there are none.
    names: &'static [&'static str],
}

const FIELDS: [FieldKind; 5] = [
    FieldKind { name: "minute", min: 0, max: 59, names: &[] },
    FieldKind { name: "hour", min: 0, max: 23, names: &[] },
    FieldKind { name: "day-of-month", min: 1, max: 31, names: &[] },
    FieldKind { name: "month", min: 1, max: 12, names: &MONTH_NAMES },
    FieldKind { name: "day-of-week", min: 0, max: 7, names: &DAY_NAMES },
];

impl CronSpec {
    /// Parses `expr`; every problem is a message for the field `cron`.
    fn parse(expr: &str) -> Result<CronSpec, Vec<String>> {
        let expr = expr.trim();
        let shown = quote(expr, QUOTE_LIMIT);
        let text = if let Some(name) = expr.strip_prefix('@') {
            match name.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => {
                    return Err(vec![format!(
                        "`{shown}` is not a known macro; use @hourly, @daily, @weekly, @monthly or @yearly"
                    )]);
                }
            }
        } else {
            expr
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.is_empty() {
            return Err(vec![format!("is empty; {FIELD_RULE}")]);
        }
        if fields.len() != 5 {
            let n = fields.len();
            let noun = if n == 1 { "field" } else { "fields" };
            return Err(vec![format!("`{shown}` has {n} {noun}; {FIELD_RULE}")]);
        }
        let mut problems = Vec::new();
        let mut sets = [0u64; 5];
        for (i, (field, kind)) in fields.iter().zip(&FIELDS).enumerate() {
            match parse_field(field, kind) {
                Ok(set) => sets[i] = set,
                Err(message) => problems.push(format!("`{shown}`: {} {message}", kind.name)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // Day-of-week 7 is Sunday, like 0.
        let mut weekdays = sets[4];
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let spec = CronSpec {
            minutes: sets[0],
            hours: sets[1],
            days: sets[2],
            months: sets[3],
            weekdays,
            days_star: fields[2].starts_with('*'),
            weekdays_star: fields[4].starts_with('*'),
        };
        // With both day fields restricted a day matches if either does, and every weekday
        // comes round; otherwise the day of the month must exist in a month named.
        let either = !spec.days_star && !spec.weekdays_star;
        let some_day = (1..=12u8)
            .filter(|m| spec.months & (1 << m) != 0)
            .any(|m| spec.days & ((1u64 << (max_days(m) + 1)) - 2) != 0);
        if !either && !some_day {
            return Err(vec![format!(
                "`{shown}` never matches: no month it names has that day of the month"
            )]);
        }
        Ok(spec)
    }

    fn day_matches(&self, date: Date) -> bool {
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.days_star || self.weekdays_star { day && weekday } else { day || weekday }
    }

    /// The first match strictly after `after`, mapped to an instant by the DST rules.
    ///
    /// Mapping local times to instants never goes backwards (a gap maps to its end, a fold to
    /// its first pass), so the first local match whose instant is after `after` is the answer,
    /// and the search may start at the local minute of `after`.
    fn next_after(&self, tz: &TimeZone, after: Millis) -> Option<Millis> {
        let after_ts = to_timestamp(after)?;
        let start = tz.to_datetime(after_ts);
        let start = start.date().at(start.hour(), start.minute(), 0, 0);
        let last = start.date().checked_add(i32::from(CRON_SEARCH_YEARS).years()).ok()?;
        let mut date = start.date();
        while date <= last {
            if self.months & (1 << date.month()) == 0 {
                date = date.first_of_month().checked_add(1.month()).ok()?;
                continue;
            }
            if self.day_matches(date) {
                for hour in (0..24i8).filter(|h| self.hours & (1 << h) != 0) {
                    for minute in (0..60i8).filter(|m| self.minutes & (1 << m) != 0) {
                        let local = date.at(hour, minute, 0, 0);
                        if local < start {
                            continue;
                        }
                        let at = local_to_instant(tz, local)?.as_millisecond();
                        if at > after {
                            return Some(at);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// The most days month `m` ever has.
fn max_days(m: u8) -> u32 {
    match m {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// One field as a bit set, or what is wrong with it (to follow the field's name).
fn parse_field(text: &str, kind: &FieldKind) -> Result<u64, String> {
    let mut set = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("`{}` has an empty list item", quote(text, QUOTE_LIMIT)));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = match step.parse() {
                    Ok(step) if step >= 1 => step,
                    _ => {
                        return Err(format!(
                            "step `{}` must be a whole number of at least 1",
                            quote(step, QUOTE_LIMIT)
                        ));
                    }
                };
                (range, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (kind.min, kind.max)
        } else if let Some((lo, hi)) = range.split_once('-') {
            let (lo, hi) = (field_value(lo, kind)?, field_value(hi, kind)?);
            if lo > hi {
                return Err(format!("range `{}` runs backwards", quote(range, QUOTE_LIMIT)));
            }
            (lo, hi)
        } else {
            let value = field_value(range, kind)?;
            // `a/n` runs from `a` to the end of the field.
            (value, if step.is_some() { kind.max } else { value })
        };
        let step = step.unwrap_or(1);
        let mut value = lo;
        while value <= hi {
            set |= 1 << value;
            value += step;
        }
    }
    Ok(set)
}

fn field_value(text: &str, kind: &FieldKind) -> Result<u32, String> {
    let shown = quote(text, QUOTE_LIMIT);
    if let Some(i) = kind.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(u32::try_from(i).unwrap_or(0) + kind.min);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        let names = if kind.names.is_empty() {
            String::new()
        } else {
            format!(" or a name ({}…{})", kind.names[0], kind.names[kind.names.len() - 1])
        };
        return Err(format!("`{shown}` is not a number{names}"));
    }
    match text.parse::<u32>() {
        Ok(value) if (kind.min..=kind.max).contains(&value) => Ok(value),
        _ => Err(format!("`{shown}` is out of range {}-{}", kind.min, kind.max)),
    }
}

// ----- interval ------------------------------------------------------------------------------

struct Every {
    every_ms: i64,
    /// Bits 1..=7, Monday = 1; 0 = every day.
    weekdays: u8,
    /// Bits 0..=23; `None` = every hour.
    hours: Option<u32>,
    tz: TimeZone,
}

impl Every {
    fn after_fire(&self, fired_at: Millis) -> Option<Millis> {
        self.first_allowed(fired_at.checked_add(self.every_ms)?)
    }

    /// The first instant at or after `at`, rounded up to a whole minute, inside the window.
    fn first_allowed(&self, at: Millis) -> Option<Millis> {
        let mut at = ceil_minute(at)?;
        for _ in 0..MAX_WINDOW_STEPS {
            let ts = to_timestamp(at)?;
            let local = self.tz.to_datetime(ts);
            if self.allows(local) {
                return Some(at);
            }
            // The next local hour boundary; a wall clock that went back (a fold longer than
            // an hour) could map it to the past, so never step less than an hour then.
            let hour = local.date().at(local.hour(), 0, 0, 0).checked_add(1.hour()).ok()?;
            // Rounded up: before 1972 some zones were offset by seconds (local mean time),
            // so their hour boundaries fall between whole minutes.
            let next = ceil_minute(local_to_instant(&self.tz, hour)?.as_millisecond())?;
            at = if next > at { next } else { at.checked_add(3_600_000)? };
        }
        None
    }

    fn allows(&self, local: DateTime) -> bool {
        let day = local.date().weekday().to_monday_one_offset();
        (self.weekdays == 0 || self.weekdays & (1 << day) != 0)
            && self.hours.is_none_or(|set| set & (1 << local.hour()) != 0)
    }
}

/// `at` rounded up to a whole minute.
fn ceil_minute(at: Millis) -> Option<Millis> {
    at.checked_add(MINUTE_MS - 1)?.div_euclid(MINUTE_MS).checked_mul(MINUTE_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RFC 3339 instant in milliseconds.
    fn at(text: &str) -> Millis {
        text.parse::<Timestamp>().expect("an RFC 3339 instant").as_millisecond()
    }

    fn show(ms: Millis) -> String {
        Timestamp::from_millisecond(ms).expect("in range").to_string()
    }

    /// The first `n` fires after `after`, as a schedule would make them.
    fn fires(cadence: &Cadence, after: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut next = cadence.next_after(at(after));
        while let Some(t) = next {
            if out.len() == n {
                break;
            }
            out.push(show(t));
            next = cadence.next_after_fire(t);
        }
        out
    }

    fn cron(expr: &str, tz: &str) -> Cadence {
        Cadence::cron(expr, tz).unwrap_or_else(|p| panic!("{expr} in {tz}: {p:?}"))
    }

    fn every(every: &str, weekdays: &[u8], hours: Option<&str>, tz: &str) -> Cadence {
        Cadence::every(every, weekdays, hours, tz).unwrap_or_else(|p| panic!("{every}: {p:?}"))
    }

    /// The only problem of a refused cadence, as `field: message`.
    fn refused(result: Result<Cadence, Vec<Problem>>) -> String {
        let problems = result.expect_err("refused");
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems[0].to_string()
    }

    // ----- cron and daylight saving time ---------------------------------------------------

    #[test]
    fn cron_in_the_skipped_hour_fires_once_right_after_the_gap() {
        // Berlin, 2026-03-29: 02:00 CET (01:00 UTC) becomes 03:00 CEST.
        let c = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&c, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 02:30 does not exist: 03:00 CEST, the gap's end
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
        // Every time in the gap makes the one fire; a match right at its end is the same fire.
        let c = cron("0,15,30,45 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&c, "2026-03-29T00:50:00Z", 2),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]
        );
        // 03:00 itself is the first instant after the gap.
        let c = cron("0 3 * * *", "Europe/Berlin");
        assert_eq!(c.next_after(at("2026-03-28T12:00:00Z")), Some(at("2026-03-29T01:00:00Z")));
        let c = cron("30 2,3 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&c, "2026-03-29T00:00:00Z", 3),
            ["2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"]
        );
    }

    #[test]
    fn cron_in_the_repeated_hour_fires_once_at_the_first_occurrence() {
        // Berlin, 2026-10-25: 03:00 CEST (01:00 UTC) becomes 02:00 CET; 02:xx happens twice.
        let c = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&c, "2026-10-23T12:00:00Z", 3),
            [
                "2026-10-24T00:30:00Z", // 02:30 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST, the first time; not 01:30 UTC (CET)
                "2026-10-26T01:30:00Z", // 02:30 CET
            ]
        );
        // Asked during the second pass of the hour, the next fire is the next day's.
        assert_eq!(c.next_after(at("2026-10-25T01:10:00Z")), Some(at("2026-10-26T01:30:00Z")));
        assert_eq!(c.next_after(at("2026-10-25T00:29:59Z")), Some(at("2026-10-25T00:30:00Z")));
    }

    #[test]
    fn cron_outside_the_changes_follows_the_local_clock() {
        let c = cron("0 9 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&c, "2026-03-27T12:00:00Z", 3),
            ["2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"]
        );
        assert_eq!(
            fires(&c, "2026-10-23T12:00:00Z", 3),
            ["2026-10-24T07:00:00Z", "2026-10-25T08:00:00Z", "2026-10-26T08:00:00Z"]
        );
    }

    #[test]
    fn macros_stand_for_their_expressions() {
        let hourly = cron("@hourly", "UTC");
        assert_eq!(
            fires(&hourly, "2026-01-01T10:59:59.999Z", 2),
            ["2026-01-01T11:00:00Z", "2026-01-01T12:00:00Z"]
        );
        // Wall-clock rules apply to @hourly too: one fire for 02:00 on the spring-forward
        // night (at 03:00 CEST), none in the repeated hour on the fall-back night.
        let hourly = cron("@hourly", "Europe/Berlin");
        assert_eq!(
            fires(&hourly, "2026-03-29T00:00:00Z", 2),
            ["2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"]
        );
        assert_eq!(
            fires(&hourly, "2026-10-24T23:30:00Z", 2),
            ["2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z"]
        );
        let daily = cron("@daily", "Europe/Berlin");
        assert_eq!(
            fires(&daily, "2026-03-28T12:00:00Z", 2),
            ["2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"]
        );
        assert_eq!(cron("@midnight", "UTC").next_after(0), Some(at("1970-01-02T00:00:00Z")));
        // 2026-01-01 is a Thursday: the next Sunday 00:00 is January 4.
        let weekly = cron("@weekly", "UTC");
        assert_eq!(
            fires(&weekly, "2026-01-01T00:00:00Z", 2),
            ["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]
        );
        let monthly = cron("@monthly", "Asia/Kolkata");
        assert_eq!(fires(&monthly, "2026-01-15T00:00:00Z", 1), ["2026-01-31T18:30:00Z"]);
        let yearly = cron("@YEARLY", "UTC");
        assert_eq!(fires(&yearly, "2026-01-01T00:00:00Z", 1), ["2027-01-01T00:00:00Z"]);
        assert_eq!(
            fires(&cron("@annually", "UTC"), "2026-01-01T00:00:00Z", 1),
            ["2027-01-01T00:00:00Z"]
        );
    }

    #[test]
    fn cron_fields_lists_ranges_steps_and_names() {
        let c = cron("*/20 8-10/2 * jan,JUL mon-fri", "UTC");
        // 2026-01-01 is a Thursday.
        assert_eq!(
            fires(&c, "2026-01-01T00:00:00Z", 7),
            [
                "2026-01-01T08:00:00Z",
                "2026-01-01T08:20:00Z",
                "2026-01-01T08:40:00Z",
                "2026-01-01T10:00:00Z",
                "2026-01-01T10:20:00Z",
                "2026-01-01T10:40:00Z",
                "2026-01-02T08:00:00Z",
            ]
        );
        // The day after January 30 (a Friday) in a matching month is July 1 (a Wednesday).
        assert_eq!(c.next_after(at("2026-01-30T10:40:00Z")), Some(at("2026-07-01T08:00:00Z")));
        // `a/n` runs to the end of the field; 7 is Sunday like 0.
        let c = cron("50/5 0 * * 7", "UTC");
        assert_eq!(
            fires(&c, "2026-01-03T12:00:00Z", 3),
            ["2026-01-04T00:50:00Z", "2026-01-04T00:55:00Z", "2026-01-11T00:50:00Z"]
        );
    }

    #[test]
    fn day_fields_match_either_when_both_are_restricted_else_both() {
        // The 13th or any Friday: 2026-02-06 is a Friday, 2026-02-13 is a Friday too.
        let either = cron("0 0 13 * 5", "UTC");
        assert_eq!(
            fires(&either, "2026-01-31T00:00:00Z", 4),
            [
                "2026-02-06T00:00:00Z",
                "2026-02-13T00:00:00Z",
                "2026-02-20T00:00:00Z",
                "2026-02-27T00:00:00Z",
            ]
        );
        assert_eq!(either.next_after(at("2026-03-06T00:00:00Z")), Some(at("2026-03-13T00:00:00Z")));
        assert_eq!(either.next_after(at("2026-03-13T00:00:00Z")), Some(at("2026-03-20T00:00:00Z")));
        // Day-of-month starting with `*`: both must match (odd days that are Mondays).
        let both = cron("0 0 */2 * 1", "UTC");
        assert_eq!(
            fires(&both, "2026-01-01T00:00:00Z", 3),
            ["2026-01-05T00:00:00Z", "2026-01-19T00:00:00Z", "2026-02-09T00:00:00Z"]
        );
        // February 29 comes round in leap years only.
        let leap = cron("0 12 29 2 *", "UTC");
        assert_eq!(leap.next_after(at("2026-01-01T00:00:00Z")), Some(at("2028-02-29T12:00:00Z")));
        assert_eq!(leap.next_after(at("2096-03-01T00:00:00Z")), Some(at("2104-02-29T12:00:00Z")));
    }

    #[test]
    fn zones_with_half_hour_offsets() {
        // Asia/Kolkata is UTC+05:30 all year.
        let c = cron("0 9 * * 1-5", "Asia/Kolkata");
        // 2026-01-09 is a Friday.
        assert_eq!(
            fires(&c, "2026-01-09T00:00:00Z", 2),
            ["2026-01-09T03:30:00Z", "2026-01-12T03:30:00Z"]
        );
        // The window opens on the local hour, at :30 UTC.
        let e = every("1h", &[], Some("9-17"), "Asia/Kolkata");
        assert_eq!(
            fires(&e, "2026-01-12T00:00:00Z", 10),
            [
                "2026-01-12T03:30:00Z", // 09:00 local
                "2026-01-12T04:30:00Z",
                "2026-01-12T05:30:00Z",
                "2026-01-12T06:30:00Z",
                "2026-01-12T07:30:00Z",
                "2026-01-12T08:30:00Z",
                "2026-01-12T09:30:00Z",
                "2026-01-12T10:30:00Z", // 16:00 local, the last hour of 9-17
                "2026-01-13T03:30:00Z", // 17:00 is outside: the next morning at 09:00
                "2026-01-13T04:30:00Z",
            ]
        );
        // Australia/Lord_Howe moves its clocks by 30 minutes: on 2026-10-04 02:00 (+10:30)
        // becomes 02:30 (+11), so 02:15 fires at 02:30 local.
        let c = cron("15 2 * * *", "Australia/Lord_Howe");
        assert_eq!(
            fires(&c, "2026-10-02T12:00:00Z", 3),
            ["2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"]
        );
    }

    // ----- interval ------------------------------------------------------------------------

    #[test]
    fn interval_with_a_wrapping_window_on_weekdays() {
        // Berlin in January is UTC+1. 2026-01-12 is a Monday. The window is Monday to
        // Friday, 22:00 to 05:59 local; the weekday is that of the instant itself.
        let c = every("6h", &[1, 2, 3, 4, 5], Some("22-6"), "Europe/Berlin");
        assert_eq!(
            fires(&c, "2026-01-12T09:00:00Z", 12),
            [
                "2026-01-12T21:00:00Z", // Mon 22:00: the window opens
                "2026-01-13T03:00:00Z", // Tue 04:00
                "2026-01-13T21:00:00Z", // Tue 10:00 is outside: Tue 22:00
                "2026-01-14T03:00:00Z", // Wed 04:00
                "2026-01-14T21:00:00Z",
                "2026-01-15T03:00:00Z",
                "2026-01-15T21:00:00Z",
                "2026-01-16T03:00:00Z", // Fri 04:00
                "2026-01-16T21:00:00Z", // Fri 22:00
                "2026-01-18T23:00:00Z", // Sat 04:00 is a Saturday: Mon 00:00
                "2026-01-19T21:00:00Z", // Mon 06:00 is outside: Mon 22:00
                "2026-01-20T03:00:00Z",
            ]
        );
    }

    #[test]
    fn interval_counts_from_the_actual_fire_time_rounded_up_to_a_minute() {
        let c = every("90m", &[], None, "UTC");
        assert_eq!(c.next_after_fire(at("2026-01-13T02:00:00Z")), Some(at("2026-01-13T03:30:00Z")));
        assert_eq!(
            c.next_after_fire(at("2026-01-13T02:00:10.500Z")),
            Some(at("2026-01-13T03:31:00Z"))
        );
        // A late fire inside a window moves the cadence; outside it waits for the window.
        let c = every("6h", &[1, 2, 3, 4, 5], Some("22-6"), "Europe/Berlin");
        assert_eq!(c.next_after_fire(at("2026-01-12T21:07:30Z")), Some(at("2026-01-13T03:08:00Z")));
        assert_eq!(c.next_after_fire(at("2026-01-13T03:00:20Z")), Some(at("2026-01-13T21:00:00Z")));
    }

    #[test]
    fn interval_windows_open_on_a_whole_minute_in_a_zone_offset_by_seconds() {
        // Before 1906 Kolkata kept Madras time, UTC+5:21:10: the local 22:00 at which the
        // window opens is 16:38:50 UTC, and the fire waits for the next whole minute.
        let c = every("90m", &[], Some("22-6"), "Asia/Kolkata");
        let first = c.next_after(at("1900-01-01T12:00:00Z")).expect("a fire time");
        assert_eq!(first, at("1900-01-01T16:39:00Z"));
        let next = c.next_after_fire(at("1900-01-02T00:30:00Z")).expect("a fire time");
        assert_eq!(next, at("1900-01-02T16:39:00Z"));
    }

    #[test]
    fn interval_next_after_fires_as_soon_as_allowed() {
        let c = every("6h", &[], None, "UTC");
        assert_eq!(c.next_after(at("2026-01-12T09:00:00Z")), Some(at("2026-01-12T09:01:00Z")));
        assert_eq!(c.next_after(at("2026-01-12T09:00:00.001Z")), Some(at("2026-01-12T09:01:00Z")));
        assert_eq!(c.next_after(at("2026-01-12T08:59:59.999Z")), Some(at("2026-01-12T09:00:00Z")));
        let c = every("6h", &[6, 7], Some("9-17"), "UTC");
        // 2026-01-12 is a Monday: the window opens on Saturday at 09:00.
        assert_eq!(c.next_after(at("2026-01-12T09:00:00Z")), Some(at("2026-01-17T09:00:00Z")));
        // The same hour on both ends is every hour.
        let c = every("1h", &[3], Some("5-5"), "UTC");
        assert_eq!(c.next_after(at("2026-01-12T09:00:00Z")), Some(at("2026-01-14T00:00:00Z")));
    }

    #[test]
    fn interval_windows_across_daylight_saving_changes() {
        // Real time: 1h apart through the fall-back night.
        let c = every("1h", &[], None, "Europe/Berlin");
        assert_eq!(
            fires(&c, "2026-10-24T23:59:00Z", 3),
            ["2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"]
        );
        // Hour 2 happens twice on 2026-10-25 and is inside the window both times.
        let c = every("30m", &[], Some("2-3"), "Europe/Berlin");
        assert_eq!(
            fires(&c, "2026-10-24T23:59:00Z", 5),
            [
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T01:30:00Z", // 02:30 CET
                "2026-10-26T01:00:00Z", // 03:00 CET is outside: the next day's 02:00 CET
            ]
        );
        // Hour 2 does not happen on 2026-03-29: that day has no fire.
        assert_eq!(
            fires(&c, "2026-03-28T01:00:00Z", 3),
            ["2026-03-28T01:01:00Z", "2026-03-28T01:31:00Z", "2026-03-30T00:00:00Z"]
        );
        // A window opening at the gap opens at its end.
        let c = every("1d", &[], Some("2-4"), "Europe/Berlin");
        assert_eq!(c.next_after(at("2026-03-28T12:00:00Z")), Some(at("2026-03-29T01:00:00Z")));
    }

    // ----- counting --------------------------------------------------------------------------

    #[test]
    fn count_between_counts_fires_in_the_half_open_span() {
        let c = cron("0 9 * * *", "UTC");
        assert_eq!(c.count_between(at("2026-01-01T00:00:00Z"), at("2026-01-10T00:00:00Z"), 100), 9);
        assert_eq!(c.count_between(at("2026-01-01T00:00:00Z"), at("2026-01-10T00:00:00Z"), 5), 5);
        // `from` is excluded, `to` included.
        assert_eq!(c.count_between(at("2026-01-01T09:00:00Z"), at("2026-01-03T09:00:00Z"), 100), 2);
        assert_eq!(c.count_between(at("2026-01-01T09:00:00Z"), at("2026-01-01T09:00:00Z"), 100), 0);
        assert_eq!(c.count_between(at("2026-01-02T00:00:00Z"), at("2026-01-01T00:00:00Z"), 100), 0);
        let e = every("6h", &[1, 2, 3, 4, 5], Some("22-6"), "Europe/Berlin");
        // The fires listed in the window test: Monday 09:00 UTC to Friday 22:00 local.
        assert_eq!(e.count_between(at("2026-01-12T09:00:00Z"), at("2026-01-16T21:00:00Z"), 100), 9);
        assert_eq!(e.count_between(at("2026-01-12T09:00:00Z"), at("2026-01-16T21:00:00Z"), 0), 0);
        // A year of minutes is counted up to the cap without trouble.
        let m = cron("* * * * *", "UTC");
        assert_eq!(m.count_between(0, at("1971-01-01T00:00:00Z"), 1000), 1000);
    }

    // ----- validation ------------------------------------------------------------------------

    #[test]
    fn refuses_bad_cron_expressions_naming_the_field() {
        let rule = "a cron expression has 5: minute hour day-of-month month day-of-week";
        assert_eq!(
            refused(Cadence::cron("0 9 * *", "UTC")),
            format!("cron: `0 9 * *` has 4 fields; {rule}")
        );
        assert_eq!(
            refused(Cadence::cron("0 9 * * * *", "UTC")),
            format!("cron: `0 9 * * * *` has 6 fields; {rule}")
        );
        assert_eq!(refused(Cadence::cron("  ", "UTC")), format!("cron: is empty; {rule}"));
        assert_eq!(
            refused(Cadence::cron("0 24 * * *", "UTC")),
            "cron: `0 24 * * *`: hour `24` is out of range 0-23"
        );
        assert_eq!(
            refused(Cadence::cron("60 0 * * *", "UTC")),
            "cron: `60 0 * * *`: minute `60` is out of range 0-59"
        );
        assert_eq!(
            refused(Cadence::cron("0 0 0 * *", "UTC")),
            "cron: `0 0 0 * *`: day-of-month `0` is out of range 1-31"
        );
        assert_eq!(
            refused(Cadence::cron("0 0 * 13 *", "UTC")),
            "cron: `0 0 * 13 *`: month `13` is out of range 1-12"
        );
        assert_eq!(
            refused(Cadence::cron("0 0 * * 8", "UTC")),
            "cron: `0 0 * * 8`: day-of-week `8` is out of range 0-7"
        );
        assert_eq!(
            refused(Cadence::cron("0 0 * * fri-mon", "UTC")),
            "cron: `0 0 * * fri-mon`: day-of-week range `fri-mon` runs backwards"
        );
        assert_eq!(
            refused(Cadence::cron("*/0 0 * * *", "UTC")),
            "cron: `*/0 0 * * *`: minute step `0` must be a whole number of at least 1"
        );
        assert_eq!(
            refused(Cadence::cron("0 0 * foo *", "UTC")),
            "cron: `0 0 * foo *`: month `foo` is not a number or a name (jan…dec)"
        );
        assert_eq!(
            refused(Cadence::cron("0 0 1,,2 * *", "UTC")),
            "cron: `0 0 1,,2 * *`: day-of-month `1,,2` has an empty list item"
        );
        assert_eq!(
            refused(Cadence::cron("0 0 30 2 *", "UTC")),
            "cron: `0 0 30 2 *` never matches: no month it names has that day of the month"
        );
        assert_eq!(
            refused(Cadence::cron("@often", "UTC")),
            "cron: `@often` is not a known macro; use @hourly, @daily, @weekly, @monthly or @yearly"
        );
        // Every bad field is reported, and so is the zone.
        let problems = Cadence::cron("? 0 L * *", "Mars/Olympus").expect_err("refused");
        let shown: Vec<String> = problems.iter().map(Problem::to_string).collect();
        assert_eq!(
            shown,
            [
                "cron: `? 0 L * *`: minute `?` is not a number",
                "cron: `? 0 L * *`: day-of-month `L` is not a number",
                "timezone: `Mars/Olympus` is not an IANA time zone (for example `Europe/Berlin` or `UTC`)",
            ]
        );
        // Day 31 exists in some named month, and with both day fields restricted any day
        // of the week also matches.
        assert!(Cadence::cron("0 0 31 2,3 *", "UTC").is_ok());
        assert!(Cadence::cron("0 0 30 2 1", "UTC").is_ok());
    }

    #[test]
    fn refuses_unknown_time_zones() {
        assert_eq!(
            refused(Cadence::cron("0 9 * * *", "Europe/Berln")),
            "timezone: `Europe/Berln` is not an IANA time zone (for example `Europe/Berlin` or `UTC`)"
        );
        assert_eq!(
            refused(Cadence::every("1h", &[], None, "+02:00")),
            "timezone: `+02:00` is not an IANA time zone (for example `Europe/Berlin` or `UTC`)"
        );
        assert_eq!(
            refused(Cadence::every("1h", &[], None, "")),
            "timezone: is required: an IANA time zone such as `Europe/Berlin` or `UTC`"
        );
        // Names are looked up ignoring case and kept as the database spells them.
        assert_eq!(cron("0 9 * * *", "europe/berlin").timezone(), "Europe/Berlin");
    }

    #[test]
    fn refuses_bad_intervals_and_windows_naming_the_field() {
        assert_eq!(refused(Cadence::every("30s", &[], None, "UTC")), "every: must be at least 1m");
        assert_eq!(refused(Cadence::every("0m", &[], None, "UTC")), "every: must be at least 1m");
        assert_eq!(
            refused(Cadence::every("90s", &[], None, "UTC")),
            "every: `90s` is not a whole number of minutes"
        );
        assert_eq!(
            refused(Cadence::every("367d", &[], None, "UTC")),
            "every: must be at most 366d"
        );
        assert_eq!(
            refused(Cadence::every("6", &[], None, "UTC")),
            "every: `6` is missing a unit after 6; use ms, s, m, h or d"
        );
        assert_eq!(
            refused(Cadence::every("6h", &[0], None, "UTC")),
            "weekdays: `0` is not a weekday; use 1 (Monday) to 7 (Sunday)"
        );
        assert_eq!(
            refused(Cadence::every("6h", &[1, 8], None, "UTC")),
            "weekdays: `8` is not a weekday; use 1 (Monday) to 7 (Sunday)"
        );
        assert_eq!(
            refused(Cadence::every("6h", &[], Some("25-3"), "UTC")),
            "hours: `25-3`: hour 25 is out of range 0-23"
        );
        for bad in ["a-b", "9", "9-", "-5", "9 - 17", "9-17-20", "009-1"] {
            assert_eq!(
                refused(Cadence::every("6h", &[], Some(bad), "UTC")),
                format!(
                    "hours: `{bad}` is not an hour range; expected `start-end` with hours 0-23, such as `9-17` or `22-6`"
                )
            );
        }
        let problems = Cadence::every("10s", &[9], Some("x"), "Nowhere").expect_err("refused");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["every", "weekdays", "hours", "timezone"]);
        // Weekdays are kept sorted, once each.
        assert_eq!(every("1h", &[5, 1, 5], None, "UTC").weekdays(), [1, 5]);
    }

    // ----- stored form -----------------------------------------------------------------------

    #[test]
    fn serde_round_trips_the_documented_forms() {
        let c = cron("0 9 * * 1-5", "Europe/Berlin");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json, serde_json::json!({"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}));
        assert_eq!(serde_json::from_value::<Cadence>(json).unwrap(), c);

        let e = every("6h", &[1, 2, 3, 4, 5], Some("22-6"), "UTC");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "every_ms": 21_600_000, "weekdays": [1, 2, 3, 4, 5], "hours": "22-6",
                "timezone": "UTC"
            })
        );
        let back: Cadence = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.validate(), Ok(()));
        assert_eq!(e.every_ms(), Some(21_600_000));
        assert_eq!(e.hours(), Some("22-6"));
        assert_eq!(c.cron_expr(), Some("0 9 * * 1-5"));

        let plain = every("1h", &[], None, "UTC");
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            serde_json::json!({"every_ms": 3_600_000, "timezone": "UTC"})
        );
        assert!(serde_json::from_str::<Cadence>(r#"{"cron":"@daily","tz":"UTC"}"#).is_err());
    }

    #[test]
    fn validate_refuses_stored_forms_the_constructors_would_not_make() {
        let read = |text: &str| serde_json::from_str::<Cadence>(text).expect("reads");
        let shown = |c: Cadence| -> Vec<String> {
            c.validate().expect_err("refused").iter().map(Problem::to_string).collect()
        };
        assert_eq!(
            shown(read(r#"{"cron":"0 9 * *","every_ms":60000,"timezone":"UTC"}"#)),
            [
                "cron: cannot be combined with `every`: a cadence is a cron expression or an interval"
            ]
        );
        assert_eq!(
            shown(read(r#"{"timezone":"UTC"}"#)),
            ["cron: is required unless an interval (`every`) is given"]
        );
        assert_eq!(
            shown(read(r#"{"cron":"0 9 * * *","weekdays":[1],"hours":"9-17","timezone":"UTC"}"#)),
            [
                "weekdays: applies to an interval (`every`) only; a cron expression names its own days and hours",
                "hours: applies to an interval (`every`) only; a cron expression names its own days and hours",
            ]
        );
        assert_eq!(
            shown(read(r#"{"every_ms":90000,"weekdays":[0],"hours":"1-24","timezone":"Utc/No"}"#)),
            [
                "every: `1m30s` is not a whole number of minutes",
                "weekdays: `0` is not a weekday; use 1 (Monday) to 7 (Sunday)",
                "hours: `1-24`: hour 24 is out of range 0-23",
                "timezone: `Utc/No` is not an IANA time zone (for example `Europe/Berlin` or `UTC`)",
            ]
        );
        // An invalid cadence never fires.
        let never = read(r#"{"cron":"0 0 30 2 *","timezone":"UTC"}"#);
        assert_eq!(never.next_after(0), None);
        assert_eq!(never.next_after_fire(0), None);
        assert_eq!(never.count_between(0, i64::MAX, 10), 0);
        assert_eq!(read(r#"{"every_ms":30000,"timezone":"UTC"}"#).next_after(0), None);
    }

    #[test]
    fn times_beyond_the_calendar_have_no_fire() {
        assert_eq!(cron("@daily", "UTC").next_after(i64::MAX), None);
        assert_eq!(every("1h", &[], None, "UTC").next_after_fire(i64::MAX - 1000), None);
        assert_eq!(every("1h", &[], None, "UTC").next_after(i64::MIN), None);
    }

    #[test]
    fn displays_as_one_line() {
        assert_eq!(
            cron("0 9 * * 1-5", "Europe/Berlin").to_string(),
            "cron 0 9 * * 1-5 (Europe/Berlin)"
        );
        assert_eq!(
            every("6h", &[1, 2], Some("22-6"), "UTC").to_string(),
            "every 6h on weekdays 1,2 in hours 22-6 (UTC)"
        );
    }
}
