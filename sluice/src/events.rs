//! `sluice events`: the API's event stream (`GET /v1/events`), printed as it arrives.
//!
//! - Without `--follow` it prints the events kept after `--after` (from the oldest kept
//!   without it) and exits once caught up (`once=true`).
//! - With `--follow` it prints new events as they happen (after `--after` when given, else
//!   from now on) until Ctrl-C, which exits 0. When the connection drops or the API answers
//!   5xx, it reconnects with backoff, sending the last position it saw as `Last-Event-ID`,
//!   so nothing is missed or printed twice. The first connection must succeed.
//!
//! Output: a table (time in UTC, type, execution, step, job), or with `--json` one event per
//! line as the API sends it (`{"id", "type", "data", "at"}`).

use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, ClientError, encode};

/// First wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait before reconnecting.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What `sluice events` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start after this cursor.
    pub after: Option<String>,
    /// Only this execution's events.
    pub execution: Option<String>,
    /// Only events whose type starts with this.
    pub kind: Option<String>,
    /// Keep streaming.
    pub follow: bool,
    /// JSON lines instead of a table.
    pub json: bool,
}

/// How one connection ended.
enum End {
    /// The stream ended (caught up with `once=true`, or the server closed it).
    Closed,
    /// The reader of our output went away (a closed pipe).
    OutputClosed,
}

/// `sluice events`
pub async fn run(c: &Client, options: &Options) -> Result<i32, ClientError> {
    let mut out = Printer::new(options.json);
    if !options.follow {
        let after = options.after.clone().unwrap_or_else(|| "0".into());
        let response = c
            .open_stream(&path(options, Some(&after), true), None)
            .await?;
        let mut position = Some(after);
        read(response, &mut out, &mut position).await?;
        return Ok(0);
    }
    tokio::select! {
        result = follow(c, options, &mut out) => result,
        Ok(()) = tokio::signal::ctrl_c() => Ok(0),
    }
}

/// Streams until the output closes; reconnects after failures that may pass.
async fn follow(c: &Client, options: &Options, out: &mut Printer) -> Result<i32, ClientError> {
    let mut position = options.after.clone();
    let first = c
        .open_stream(&path(options, position.as_deref(), false), None)
        .await?;
    let mut response = Some(first);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let outcome = match response.take() {
            Some(r) => read(r, out, &mut position).await,
            None => match c
                .open_stream(&path(options, None, false), position.as_deref())
                .await
            {
                Ok(r) => {
                    eprintln!("reconnected");
                    backoff = FIRST_BACKOFF;
                    read(r, out, &mut position).await
                }
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(End::OutputClosed) => return Ok(0),
            Ok(End::Closed) => eprintln!(
                "the API closed the stream; reconnecting in {}",
                show(backoff)
            ),
            Err(ClientError::Refused { status, problem }) if status < 500 => {
                return Err(ClientError::Refused { status, problem });
            }
            Err(ClientError::Refused { status, .. }) => {
                eprintln!(
                    "the API answered {status}; reconnecting in {}",
                    show(backoff)
                );
            }
            Err(e) => eprintln!("{}; reconnecting in {}", describe(&e), show(backoff)),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn show(d: Duration) -> String {
    sluice_core::duration::format(d)
}

fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable(why) => format!("connection lost ({why})"),
        ClientError::Refused { status, .. } => format!("the API answered {status}"),
        ClientError::Input(why) => why.clone(),
    }
}

/// The request path: the filters, `after` when given, and `once`.
fn path(options: &Options, after: Option<&str>, once: bool) -> String {
    let mut query = Vec::new();
    for (name, value) in [
        ("after", after),
        ("execution", options.execution.as_deref()),
        ("type", options.kind.as_deref()),
    ] {
        if let Some(v) = value {
            query.push(format!("{name}={}", encode(v)));
        }
    }
    if once {
        query.push("once=true".into());
    }
    if query.is_empty() {
        "/v1/events".into()
    } else {
        format!("/v1/events?{}", query.join("&"))
    }
}

/// Prints the events of one response until it ends, keeping `position` at the last id seen.
async fn read(
    mut response: reqwest::Response,
    out: &mut Printer,
    position: &mut Option<String>,
) -> Result<End, ClientError> {
    if out.header(&mut std::io::stdout().lock()).is_err() {
        return Ok(End::OutputClosed);
    }
    let mut parser = Parser::default();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let Some(chunk) = chunk else {
            return Ok(End::Closed);
        };
        for message in parser.push(&chunk) {
            if let Some(id) = message.id {
                *position = Some(id);
            }
            if let Some(data) = message.data
                && out.event(&data).is_err()
            {
                return Ok(End::OutputClosed);
            }
        }
    }
}

/// One message of a `text/event-stream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

/// Splits a `text/event-stream` into messages, whatever the chunk boundaries: lines end in
/// `\n` (a `\r` before it is dropped), a blank line ends a message, lines starting with `:`
/// are comments (keep-alives).
#[derive(Debug, Default)]
struct Parser {
    line: Vec<u8>,
    message: Message,
    /// Whether the message being read has any field.
    started: bool,
}

impl Parser {
    fn push(&mut self, bytes: &[u8]) -> Vec<Message> {
        let mut done = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let raw = std::mem::take(&mut self.line);
            let line =
                String::from_utf8_lossy(raw.strip_suffix(b"\r").unwrap_or(&raw)).into_owned();
            if line.is_empty() {
                if std::mem::take(&mut self.started) {
                    done.push(std::mem::take(&mut self.message));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            self.started = true;
            match field {
                "id" => self.message.id = Some(value),
                "event" => self.message.event = Some(value),
                "data" => {
                    self.message.data = Some(match self.message.data.take() {
                        Some(before) => format!("{before}\n{value}"),
                        None => value,
                    });
                }
                _ => {}
            }
        }
        done
    }
}

/// Prints events as a table or JSON lines.
struct Printer {
    json: bool,
    header: bool,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            json,
            header: false,
        }
    }

    /// Prints the table's header, once (nothing for JSON lines); an error means the output
    /// is closed.
    fn header(&mut self, stdout: &mut impl std::io::Write) -> std::io::Result<()> {
        if self.json || std::mem::replace(&mut self.header, true) {
            return Ok(());
        }
        writeln!(
            stdout,
            "{:<24} {:<26} {:<32} {:<8} JOB",
            "TIME (UTC)", "TYPE", "EXECUTION", "STEP"
        )?;
        stdout.flush()
    }

    /// Prints one event (its `data:`); an error means the output is closed.
    fn event(&mut self, data: &str) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            writeln!(stdout, "{data}")?;
            return stdout.flush();
        }
        self.header(&mut stdout)?;
        let event: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let payload = event.get("data").cloned().unwrap_or(Value::Null);
        // A step index, or a step name (a failure names its step).
        let step = match payload.get("step") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(name)) => name.clone(),
            _ => String::new(),
        };
        writeln!(
            stdout,
            "{:<24} {:<26} {:<32} {:<8} {}",
            event
                .get("at")
                .and_then(Value::as_i64)
                .map(utc)
                .unwrap_or_default(),
            field(&event, "type"),
            field(&payload, "execution_id"),
            step,
            field(&payload, "job_id"),
        )?;
        stdout.flush()
    }
}

/// `ms` since the Unix epoch as `2024-11-21T14:03:05.123Z`.
fn utc(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_reads_messages_across_chunks_and_skips_comments() {
        let mut parser = Parser::default();
        let text = "id: 0-0\n\n:\n\nid: 1-0\nevent: job.enqueued\ndata: {\"a\":\r\ndata: 1}\n\n";
        let mut messages = Vec::new();
        for piece in text.as_bytes().chunks(3) {
            messages.extend(parser.push(piece));
        }
        assert_eq!(
            messages,
            [
                Message {
                    id: Some("0-0".into()),
                    ..Message::default()
                },
                Message {
                    id: Some("1-0".into()),
                    event: Some("job.enqueued".into()),
                    data: Some("{\"a\":\n1}".into())
                },
            ]
        );
        assert!(
            parser.push(b"id: 2-0\ndata: x\n").is_empty(),
            "a message ends at a blank line"
        );
        assert_eq!(parser.push(b"\n").len(), 1);
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_732_200_000_123), "2024-11-21T14:40:00.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn paths_carry_the_filters_encoded() {
        let options = Options {
            execution: Some("ex_0_A".into()),
            kind: Some("job.".into()),
            ..Options::default()
        };
        assert_eq!(
            path(&options, Some("1-0,2-0"), true),
            "/v1/events?after=1-0%2C2-0&execution=ex_0_A&type=job.&once=true"
        );
        assert_eq!(path(&Options::default(), None, false), "/v1/events");
    }
}
