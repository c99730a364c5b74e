//! Gate jobs: which part of a gate a job runs, and the probes.
//!
//! The engine enqueues two sorts of jobs for a `gate` step, told apart by their payload:
//! `{"gate": "probe"}` (job kind `gate`) evaluates the probe once, and
//! `{"gate": "helper", "attempt": n}` (job kind: the helper's kind) runs the gate's helper
//! as if it were a step of that kind. The runtime dispatches on [`gate_job`]; this module
//! runs probes.
//!
//! A probe that gives a verdict completes its job with
//! `{"verdict": "pass"|"pending"|"fail", "summary": S}`; the engine decides what the gate does
//! next. A probe that gives no verdict (cannot start, times out, is killed, answers with
//! something else than a verdict) fails its attempt as retryable, so that the engine can
//! count consecutive probe errors; a probe that cannot even be described (a URL or header
//! that cannot be used) fails for good.
//!
//! - **Command probe**: run like a `command` step (context file, `SLUICE_*` variables,
//!   timeout). Exit 0 is `pass`, exit [`PENDING_EXIT_CODE`] (75) `pending`, any other exit
//!   `fail`. S is the `summary` member of the JSON the probe wrote to `$SLUICE_OUTPUT` (for
//!   any exit code), else the last non-empty line of its standard output, else `null`.
//! - **HTTP probe**: a GET of the rendered URL with the rendered headers, answering 2xx with
//!   `{"verdict": …, "summary": …}`.
//!
//! A summary that is not a string is kept as its JSON text; every summary is capped at
//! [`SUMMARY_CHARS`] characters.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sluice_core::job::{Job, JobError, Outcome};
use sluice_store::metrics::GatePoll;
use tokio_util::sync::CancellationToken;

use crate::command::{self, CommandResult, CommandSpec};
use crate::http::{self, Answer, Exchange, HttpClient, MAX_BODY_BYTES};

/// Exit code with which a command probe says `pending` (`EX_TEMPFAIL`).
pub const PENDING_EXIT_CODE: i32 = 75;
/// Most characters of a probe's summary.
pub const SUMMARY_CHARS: usize = 500;

/// What a job of a gate step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateJob {
    /// One evaluation of the probe.
    Probe,
    /// One run of the helper.
    Helper,
}

/// What `job` (a job of a gate step) runs, from its payload's `gate` member; a job of kind
/// `gate` without one runs the probe.
///
/// # Errors
/// A message when the payload names neither.
pub fn gate_job(job: &Job) -> Result<GateJob, String> {
    match job.payload.get("gate").and_then(Value::as_str) {
        Some("probe") => Ok(GateJob::Probe),
        Some("helper") => Ok(GateJob::Helper),
        None if job.kind == "gate" => Ok(GateJob::Probe),
        Some(other) => Err(format!(
            "payload.gate is `{other}`; expected `probe` or `helper`"
        )),
        None => Err(format!(
            "a `{}` job of a gate step needs payload.gate",
            job.kind
        )),
    }
}

/// A probe's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The gate may open.
    Pass,
    /// Not yet: probe again after the interval.
    Pending,
    /// The awaited thing failed (the helper, when there is one, runs next).
    Fail,
}

impl Verdict {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Pending => "pending",
            Verdict::Fail => "fail",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pass" => Verdict::Pass,
            "pending" => Verdict::Pending,
            "fail" => Verdict::Fail,
            _ => return None,
        })
    }

    /// The completed probe job: `{"verdict": …, "summary": …}`.
    pub fn outcome(self, summary: Value) -> Outcome {
        Outcome::Completed(json!({ "verdict": self.as_str(), "summary": summary }))
    }
}

/// What a settled attempt of `job` counts as in `sluice_gate_polls_total`: its verdict, or
/// `error` when the probe gave none; `None` when `job` is not a probe job of a gate step.
pub fn poll(job: &Job, outcome: &Outcome) -> Option<GatePoll> {
    if job.execution_id.is_none() || gate_job(job) != Ok(GateJob::Probe) {
        return None;
    }
    let verdict = match outcome {
        Outcome::Completed(answer) => answer.get("verdict").and_then(Value::as_str).and_then(Verdict::parse),
        _ => None,
    };
    Some(match verdict {
        Some(Verdict::Pass) => GatePoll::Pass,
        Some(Verdict::Pending) => GatePoll::Pending,
        Some(Verdict::Fail) => GatePoll::Fail,
        None => GatePoll::Error,
    })
}

/// Runs a command probe once.
pub async fn run_command_probe(spec: CommandSpec, cancel: CancellationToken) -> Outcome {
    match command::run(spec, cancel).await {
        Ok(result) => command_probe_outcome(&result),
        Err(e) => Outcome::Failed(JobError::retryable(format!("probe: {e}"))),
    }
}

/// Maps a command probe's run to its outcome (see the module docs).
pub fn command_probe_outcome(result: &CommandResult) -> Outcome {
    let verdict = match result.exit_code {
        _ if result.cancelled || result.timed_out => None,
        Some(0) => Some(Verdict::Pass),
        Some(PENDING_EXIT_CODE) => Some(Verdict::Pending),
        Some(_) => Some(Verdict::Fail),
        None => None,
    };
    match verdict {
        Some(verdict) => verdict.outcome(command_summary(result)),
        None => match command::outcome(result) {
            Outcome::Failed(error) if error.retryable => Outcome::Failed(JobError {
                message: format!("probe: {}", error.message),
                ..error
            }),
            other => other,
        },
    }
}

fn command_summary(result: &CommandResult) -> Value {
    let written = result
        .output
        .as_ref()
        .and_then(|o| o.get("summary"))
        .filter(|s| !s.is_null());
    match written {
        Some(summary) => summary_value(summary),
        None => result
            .stdout_tail
            .lines()
            .rev()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map_or(Value::Null, |line| {
                Value::String(http::cap_chars(line, SUMMARY_CHARS))
            }),
    }
}

fn summary_value(summary: &Value) -> Value {
    match summary {
        Value::Null => Value::Null,
        Value::String(s) => Value::String(http::cap_chars(s, SUMMARY_CHARS)),
        other => Value::String(http::cap_chars(&other.to_string(), SUMMARY_CHARS)),
    }
}

/// One evaluation of an HTTP probe, everything rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpProbe {
    /// The URL to GET.
    pub url: String,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// The job's id (sent as `Sluice-Job-Id`).
    pub job_id: String,
    /// The attempt number (sent as `Sluice-Attempt`).
    pub attempt: u32,
    /// Time limit of the exchange.
    pub timeout: Duration,
}

impl HttpProbe {
    /// The evaluation run by `job`, with its time limit (default [`http::DEFAULT_TIMEOUT`]).
    pub fn for_job(url: String, headers: BTreeMap<String, String>, job: &Job) -> Self {
        HttpProbe {
            url,
            headers,
            job_id: job.id.clone(),
            attempt: job.attempts,
            timeout: http::attempt_timeout(job.timeout_ms),
        }
    }
}

/// Runs an HTTP probe once.
pub async fn run_http_probe(
    client: &HttpClient,
    probe: &HttpProbe,
    cancel: &CancellationToken,
) -> Outcome {
    let what = format!("probe GET {}", http::shown_url(&probe.url));
    let exchange = Exchange {
        method: Method::GET,
        url: &probe.url,
        headers: &probe.headers,
        sluice_headers: http::job_headers(&probe.job_id, probe.attempt).into(),
        body: None,
        timeout: probe.timeout,
    };
    match client.exchange(exchange, cancel).await {
        Ok(answer) => match read_verdict(&answer) {
            Ok((verdict, summary)) => verdict.outcome(summary),
            Err(why) => Outcome::Failed(JobError::retryable(format!("{what} {why}"))),
        },
        Err(failure) => Outcome::Failed(failure.into_job_error(&what)),
    }
}

/// Reads a probe's verdict and summary from its answer.
///
/// # Errors
/// What is wrong with the answer, as a fragment that reads after `probe GET <url>`.
pub fn read_verdict(answer: &Answer) -> Result<(Verdict, Value), String> {
    let status = http::status_text(answer.status);
    if !answer.status.is_success() {
        return Err(format!("answered {status}{}", answer.excerpt_suffix()));
    }
    if answer.truncated {
        return Err(format!(
            "answered {status} with a body larger than {} KiB",
            MAX_BODY_BYTES / 1024
        ));
    }
    let body: Value = serde_json::from_slice(&answer.body).map_err(|e| {
        format!(
            "answered {status} with a body that is not JSON ({e}){}",
            answer.excerpt_suffix()
        )
    })?;
    let verdict = match body.get("verdict") {
        Some(Value::String(v)) => Verdict::parse(v).ok_or_else(|| {
            format!(
                "answered verdict `{}`; expected pass, pending or fail",
                http::cap_chars(v, 40)
            )
        })?,
        Some(other) => {
            return Err(format!(
                "answered a verdict that is not a string: {}",
                http::cap_chars(&other.to_string(), 40)
            ));
        }
        None => {
            return Err(format!(
                "answered {status} without a `verdict`{}",
                answer.excerpt_suffix()
            ));
        }
    };
    Ok((
        verdict,
        body.get("summary").map_or(Value::Null, summary_value),
    ))
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;
    use crate::test_job as job;

    #[test]
    fn the_payload_says_what_a_gate_job_runs() {
        assert_eq!(
            gate_job(&job("gate", json!({"gate": "probe"}))),
            Ok(GateJob::Probe)
        );
        assert_eq!(gate_job(&job("gate", Value::Null)), Ok(GateJob::Probe));
        assert_eq!(
            gate_job(&job("command", json!({"gate": "helper", "attempt": 2}))),
            Ok(GateJob::Helper)
        );
        assert!(
            gate_job(&job("command", Value::Null))
                .unwrap_err()
                .contains("payload.gate")
        );
        assert!(
            gate_job(&job("gate", json!({"gate": "other"})))
                .unwrap_err()
                .contains("`other`")
        );
    }

    #[test]
    fn probe_attempts_count_as_polls_by_verdict_and_other_jobs_do_not() {
        let probe = job("gate", json!({"gate": "probe"}));
        for verdict in [Verdict::Pass, Verdict::Pending, Verdict::Fail] {
            let polled = poll(&probe, &verdict.outcome(Value::Null)).map(GatePoll::as_str);
            assert_eq!(polled, Some(verdict.as_str()));
        }
        let no_verdict = Outcome::Failed(JobError::retryable("probe: timed out"));
        assert_eq!(poll(&probe, &no_verdict), Some(GatePoll::Error));
        assert_eq!(poll(&probe, &Outcome::Completed(json!({"verdict": "maybe"}))), Some(GatePoll::Error));
        let helper = job("command", json!({"gate": "helper", "attempt": 1}));
        assert_eq!(poll(&helper, &Verdict::Pass.outcome(Value::Null)), None);
        let standalone = sluice_core::Job { execution_id: None, ..probe };
        assert_eq!(poll(&standalone, &Verdict::Pass.outcome(Value::Null)), None);
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.as_bytes().to_vec(),
            truncated: false,
            location: None,
        }
    }

    #[test]
    fn verdicts_are_read_with_their_summaries() {
        let read = |body: &str| read_verdict(&answer(200, body));
        assert_eq!(
            read(r#"{"verdict": "pass", "summary": "green"}"#),
            Ok((Verdict::Pass, json!("green")))
        );
        assert_eq!(
            read(r#"{"verdict": "pending"}"#),
            Ok((Verdict::Pending, Value::Null))
        );
        assert_eq!(
            read(r#"{"verdict": "fail", "summary": {"failed": 3}}"#),
            Ok((Verdict::Fail, json!(r#"{"failed":3}"#)))
        );
        let long = format!(
            r#"{{"verdict": "pass", "summary": "{}"}}"#,
            "x".repeat(2 * SUMMARY_CHARS)
        );
        let (_, summary) = read(&long).unwrap();
        assert_eq!(summary.as_str().unwrap().chars().count(), SUMMARY_CHARS + 1);
    }

    #[test]
    fn answers_without_a_verdict_are_errors() {
        let read = |status: u16, body: &str| read_verdict(&answer(status, body)).unwrap_err();
        assert_eq!(read(503, "busy"), "answered 503 Service Unavailable: busy");
        assert!(read(200, "<html>").starts_with("answered 200 OK with a body that is not JSON"));
        assert_eq!(
            read(200, r#"{"verdict": "maybe"}"#),
            "answered verdict `maybe`; expected pass, pending or fail"
        );
        assert_eq!(
            read(200, r#"{"verdict": true}"#),
            "answered a verdict that is not a string: true"
        );
        assert_eq!(
            read(200, r#"{"state": "ok"}"#),
            r#"answered 200 OK without a `verdict`: {"state": "ok"}"#
        );
    }
}
