//! `sluice schedule create|list|get|runs|run-now|enable|disable|delete`: schedules over the
//! HTTP API. A schedule is named by its id or its name.

use serde_json::{Value, json};
use sluice_core::Cadence;

use crate::client::{Client, ClientError, encode, print_json, s};

/// What `sluice schedule create` was asked.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CreateArgs {
    /// The schedule's name (unique).
    pub name: String,
    /// The pipeline to fire.
    #[arg(long)]
    pub pipeline: String,
    /// A cron expression (`"0 9 * * 1-5"`, `@daily`).
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    pub cron: Option<String>,
    /// An interval of at least a minute (`6h`), counted from each fire.
    #[arg(long)]
    pub every: Option<String>,
    /// The IANA time zone of the cadence (default UTC).
    #[arg(long)]
    pub tz: Option<String>,
    /// With --every: the weekdays it may fire on, 1 = Monday … 7 = Sunday (default: all).
    #[arg(long, value_delimiter = ',', requires = "every")]
    pub weekdays: Vec<u8>,
    /// With --every: the local hours it may fire in, `9-17` or wrapping `22-6`.
    #[arg(long, requires = "every")]
    pub hours: Option<String>,
    /// The target of its executions (default `schedule:<name>`).
    #[arg(long)]
    pub target: Option<String>,
    /// The input of its executions: inline JSON, or @file.
    #[arg(long)]
    pub input: Option<String>,
    /// While the target is busy: `skip` (default; it fires once the target frees) or
    /// `allow`.
    #[arg(long, value_parser = ["skip", "allow"])]
    pub overlap: Option<String>,
    /// Fires missed while no scheduler ran: `one` (default; one late fire) or `none`.
    #[arg(long, value_parser = ["one", "none"])]
    pub catch_up: Option<String>,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
}

impl CreateArgs {
    /// The body of `POST /v1/schedules`; the API checks it.
    pub fn body(&self) -> Result<Value, ClientError> {
        let mut body = json!({ "name": self.name, "pipeline": self.pipeline });
        let input = self.input.as_deref().map(|i| crate::client::parse_input(Some(i))).transpose()?;
        let fields = [
            ("cron", self.cron.as_ref().map(|v| json!(v))),
            ("every", self.every.as_ref().map(|v| json!(v))),
            ("timezone", self.tz.as_ref().map(|v| json!(v))),
            ("weekdays", (!self.weekdays.is_empty()).then(|| json!(self.weekdays))),
            ("hours", self.hours.as_ref().map(|v| json!(v))),
            ("target", self.target.as_ref().map(|v| json!(v))),
            ("input", input),
            ("overlap", self.overlap.as_ref().map(|v| json!(v))),
            ("catch_up", self.catch_up.as_ref().map(|v| json!(v))),
            ("enabled", self.disabled.then_some(json!(false))),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        Ok(body)
    }
}

/// A time (ms since the epoch) for people: RFC 3339 in UTC, or `-`.
fn time(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_i64)
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "-".to_string(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// A schedule's cadence in one line (`cron 0 9 * * 1-5 (Europe/Berlin)`).
fn cadence(v: &Value) -> String {
    v.get("cadence")
        .and_then(|c| serde_json::from_value::<Cadence>(c.clone()).ok())
        .map_or_else(|| v.get("cadence").map(Value::to_string).unwrap_or_default(), |c| c.to_string())
}

fn yes_no(v: &Value, key: &str) -> &'static str {
    if v.get(key).and_then(Value::as_bool).unwrap_or(false) { "yes" } else { "no" }
}

/// The path of schedule `key` (an id or a name) under `/v1/schedules`.
fn path(key: &str, rest: &str) -> String {
    format!("/v1/schedules/{}{rest}", encode(key))
}

/// Prints a schedule, one field a line.
fn print_schedule(v: &Value) {
    println!("schedule {}  `{}`", s(v, "id"), s(v, "name"));
    let input = v.get("input").map(Value::to_string).unwrap_or_default();
    for (label, value) in [
        ("pipeline", s(v, "pipeline").to_string()),
        ("target", s(v, "target").to_string()),
        ("input", input),
        ("cadence", cadence(v)),
        ("enabled", yes_no(v, "enabled").to_string()),
        ("overlap", s(v, "overlap").to_string()),
        ("catch up", s(v, "catch_up").to_string()),
        ("next run", time(v, "next_run_at")),
        ("last run", time(v, "last_run_at")),
        ("source", s(v, "source").to_string()),
    ] {
        println!("  {label:<9} {value}");
    }
}

/// Prints schedules as a table.
fn print_schedules(items: &[Value]) {
    println!("{:<28} {:<34} {:<16} {:<24} {:<7} {:<20} CADENCE", "NAME", "ID", "PIPELINE", "TARGET", "ENABLED", "NEXT RUN");
    for v in items {
        println!(
            "{:<28} {:<34} {:<16} {:<24} {:<7} {:<20} {}",
            s(v, "name"),
            s(v, "id"),
            s(v, "pipeline"),
            s(v, "target"),
            yes_no(v, "enabled"),
            time(v, "next_run_at"),
            cadence(v)
        );
    }
}

/// Prints history rows as a table.
fn print_runs(items: &[Value]) {
    println!("{:<20} {:<8} {:<9} {:<20} {:>8} {:>6} {:<34} REASON", "AT", "TRIGGER", "STATUS", "DUE", "LATE", "MISSED", "EXECUTION");
    for r in items {
        let late = r.get("late_ms").and_then(Value::as_u64).unwrap_or(0);
        let late = if late == 0 { "-".to_string() } else { sluice_core::duration::format(std::time::Duration::from_millis(late / 1000 * 1000)) };
        let reason = match (r.get("reason").and_then(Value::as_str), r.get("blocked_by").and_then(Value::as_str)) {
            (Some(why), Some(by)) => format!("{why} ({by})"),
            (Some(why), None) => why.to_string(),
            _ => String::new(),
        };
        println!(
            "{:<20} {:<8} {:<9} {:<20} {:>8} {:>6} {:<34} {}",
            time(r, "at"),
            if s(r, "trigger") == "run_now" { "run-now" } else { "due" },
            s(r, "status"),
            time(r, "due_at"),
            late,
            r.get("missed").and_then(Value::as_u64).unwrap_or(0),
            r.get("execution_id").and_then(Value::as_str).unwrap_or("-"),
            reason
        );
    }
}

/// `sluice schedule create`
pub async fn create(c: &Client, args: &CreateArgs, as_json: bool) -> Result<(), ClientError> {
    let v = c.post("/v1/schedules", &args.body()?).await?;
    if as_json {
        print_json(&v);
    } else {
        println!("created schedule {} `{}`: {}; next run {}", s(&v, "id"), s(&v, "name"), cadence(&v), time(&v, "next_run_at"));
    }
    Ok(())
}

/// Filters of `sluice schedule list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only enabled (`true`) or disabled (`false`) ones.
    pub enabled: Option<bool>,
    /// Page size.
    pub limit: usize,
    /// Continue after this cursor.
    pub cursor: Option<String>,
}

/// `sluice schedule list`
pub async fn list(c: &Client, filter: &ListFilter, as_json: bool) -> Result<(), ClientError> {
    let mut query = vec![format!("limit={}", filter.limit)];
    for (name, value) in [("pipeline", &filter.pipeline), ("target", &filter.target), ("cursor", &filter.cursor)] {
        if let Some(v) = value {
            query.push(format!("{name}={}", encode(v)));
        }
    }
    if let Some(e) = filter.enabled {
        query.push(format!("enabled={e}"));
    }
    let page = c.get(&format!("/v1/schedules?{}", query.join("&"))).await?;
    if as_json {
        print_json(&page);
        return Ok(());
    }
    let items = page.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    if items.is_empty() && filter.cursor.is_none() {
        println!("no schedules");
    } else {
        print_schedules(&items);
    }
    if let Some(cursor) = page.get("next_cursor").and_then(Value::as_str) {
        println!("more: sluice schedule list --cursor {cursor}");
    }
    Ok(())
}

/// `sluice schedule get ID`
pub async fn get(c: &Client, key: &str, as_json: bool) -> Result<(), ClientError> {
    let v = c.get(&path(key, "")).await?;
    if as_json { print_json(&v) } else { print_schedule(&v) }
    Ok(())
}

/// `sluice schedule runs ID`
pub async fn runs(c: &Client, key: &str, limit: usize, cursor: Option<&str>, as_json: bool) -> Result<(), ClientError> {
    let mut query = format!("?limit={limit}");
    if let Some(c) = cursor {
        query.push_str(&format!("&cursor={}", encode(c)));
    }
    let page = c.get(&path(key, &format!("/runs{query}"))).await?;
    if as_json {
        print_json(&page);
        return Ok(());
    }
    let items = page.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    if items.is_empty() && cursor.is_none() {
        println!("no runs recorded");
    } else {
        print_runs(&items);
    }
    if let Some(next) = page.get("next_cursor").and_then(Value::as_str) {
        println!("more: sluice schedule runs {key} --cursor {next}");
    }
    Ok(())
}

/// `sluice schedule run-now ID`
pub async fn run_now(c: &Client, key: &str, as_json: bool) -> Result<(), ClientError> {
    let v = c.post(&path(key, "/run-now"), &json!({})).await?;
    if as_json {
        print_json(&v);
    } else {
        let schedule = v.get("schedule").cloned().unwrap_or_default();
        let run = v.get("run").cloned().unwrap_or_default();
        println!(
            "schedule `{}` fired: execution {}; next run {}",
            s(&schedule, "name"),
            s(&run, "execution_id"),
            time(&schedule, "next_run_at")
        );
    }
    Ok(())
}

/// `sluice schedule enable|disable ID`
pub async fn set_enabled(c: &Client, key: &str, enabled: bool, as_json: bool) -> Result<(), ClientError> {
    let v = c.patch(&path(key, ""), &json!({ "enabled": enabled })).await?;
    if as_json {
        print_json(&v);
    } else if enabled {
        println!("schedule `{}` enabled; next run {}", s(&v, "name"), time(&v, "next_run_at"));
    } else {
        println!("schedule `{}` disabled", s(&v, "name"));
    }
    Ok(())
}

/// `sluice schedule delete ID`
pub async fn delete(c: &Client, key: &str, as_json: bool) -> Result<(), ClientError> {
    let v = c.delete(&path(key, "")).await?;
    if as_json {
        print_json(&v);
    } else {
        println!("schedule `{}` ({}) deleted with its history", s(&v, "name"), s(&v, "id"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_sends_only_what_was_given() {
        let args = CreateArgs {
            name: "n".into(),
            pipeline: "p".into(),
            every: Some("6h".into()),
            weekdays: vec![1, 5],
            hours: Some("22-6".into()),
            tz: Some("Asia/Kolkata".into()),
            input: Some(r#"{"a": 1}"#.into()),
            disabled: true,
            ..CreateArgs::default()
        };
        assert_eq!(
            args.body().unwrap(),
            json!({"name": "n", "pipeline": "p", "every": "6h", "weekdays": [1, 5], "hours": "22-6",
                   "timezone": "Asia/Kolkata", "input": {"a": 1}, "enabled": false})
        );
        let bare = CreateArgs { name: "n".into(), pipeline: "p".into(), cron: Some("@daily".into()), ..CreateArgs::default() };
        assert_eq!(bare.body().unwrap(), json!({"name": "n", "pipeline": "p", "cron": "@daily"}));
    }

    #[test]
    fn times_and_cadences_read_for_people_and_names_are_encoded() {
        assert_eq!(time(&json!({"at": 1_700_000_040_000_i64}), "at"), "2023-11-14T22:14:00Z");
        assert_eq!(time(&json!({}), "at"), "-");
        let v = json!({"cadence": {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"}});
        assert_eq!(cadence(&v), Cadence::cron("0 9 * * 1-5", "Europe/Berlin").unwrap().to_string());
        assert_eq!(path("a b/c", "/runs"), "/v1/schedules/a%20b%2Fc/runs");
    }
}
