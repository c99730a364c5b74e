//! `sluice schedule next`: the fire times of a cadence, worked out locally (no API needed).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use sluice_core::{Cadence, Millis};

/// What `sluice schedule next` was asked.
#[derive(Debug, clap::Args)]
pub struct NextArgs {
    /// A cron expression (`"0 9 * * 1-5"`, `@daily`), or with --every a duration (`6h`).
    pub spec: String,
    /// The IANA time zone the cadence is evaluated in.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// How many fire times to print (1 to 1000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// SPEC is an interval (`every`), not a cron expression.
    #[arg(long)]
    pub every: bool,
    /// With --every: the weekdays it may fire on, 1 = Monday … 7 = Sunday (default: all).
    #[arg(long, value_delimiter = ',', requires = "every")]
    pub weekdays: Vec<u8>,
    /// With --every: the local hours it may fire in, `9-17` or wrapping `22-6`.
    #[arg(long, requires = "every")]
    pub hours: Option<String>,
    /// Count from this RFC 3339 instant instead of now, as if the schedule were created then.
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<Timestamp>,
}

fn parse_instant(text: &str) -> Result<Timestamp, String> {
    text.parse::<Timestamp>()
        .map_err(|e| format!("expected an RFC 3339 instant such as 2026-03-06T15:00:00Z ({e})"))
}

/// The fire times a schedule created at `from` would make, each fire on time: the first
/// after `from`, then each computed from the one before. Fewer than `count` only at the end
/// of the calendar.
pub fn fires(cadence: &Cadence, from: Millis, count: u32) -> Vec<Millis> {
    let mut out = Vec::new();
    let mut next = cadence.next_after(from);
    while let Some(at) = next.filter(|_| out.len() < count as usize) {
        out.push(at);
        next = cadence.next_after_fire(at);
    }
    out
}

/// `sluice schedule next`: prints the fire times in UTC and in the cadence's zone; exit 1
/// with every problem when the cadence is refused.
pub fn next(args: &NextArgs, as_json: bool) -> i32 {
    let cadence = if args.every {
        Cadence::every(&args.spec, &args.weekdays, args.hours.as_deref(), &args.tz)
    } else {
        Cadence::cron(&args.spec, &args.tz)
    };
    let cadence = match cadence {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return 1;
        }
    };
    let Ok(tz) = TimeZone::get(cadence.timezone()) else {
        eprintln!("error: timezone: `{}` cannot be loaded", cadence.timezone());
        return 1;
    };
    let from = args.from.unwrap_or_else(Timestamp::now).as_millisecond();
    // Each fire as (UTC, local RFC 3339, zone abbreviation).
    let rows: Vec<(String, String, String)> = fires(&cadence, from, args.count)
        .into_iter()
        .filter_map(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| {
            let local = t.to_zoned(tz.clone());
            (
                t.to_string(),
                local.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                local.strftime("%Z").to_string(),
            )
        })
        .collect();
    if as_json {
        let items: Vec<Value> = rows
            .iter()
            .map(|(utc, local, abbreviation)| json!({ "utc": utc, "local": local, "abbreviation": abbreviation }))
            .collect();
        let out = json!({ "cadence": cadence, "items": items });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("{:<22} LOCAL ({})", "UTC", cadence.timezone());
        for (utc, local, abbreviation) in &rows {
            println!("{utc:<22} {local} {abbreviation}");
        }
    }
    0
}
