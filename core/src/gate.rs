//! Polling gates: probe, wait, call the helper, probe again, until the gate passes or its
//! budget is spent.
//!
//! A gate step never holds a worker while it waits. Each probe is a short job of kind
//! `gate` (payload `{"gate": "probe"}`); a probe that answers pending is followed by the next
//! probe as a job delayed by `interval`, which the scheduler (or a leasing worker) promotes
//! when due. The probe's job answers `{"verdict": "pass"|"pending"|"fail", "summary": …}`;
//! a probe that gives no verdict (crash, timeout, unreadable answer) fails its job.
//!
//! Settling a gate job ([`settle`]):
//!
//! | job | answer | next |
//! |---|---|---|
//! | probe | pass | the step succeeds with `{verdict, summary, polls, helper_attempts}` |
//! | probe | pending, budget left | next probe after `interval` |
//! | probe | pending, `polls >= max_polls` | `on_exhausted`: `fail` → execution fails (kind `timeout`); `pass` → passes once `watch_window` has gone by since the gate started, else probes again; `rearm` → probes again |
//! | probe | fail, helper runs left | the helper runs (`helper_attempts` + 1) |
//! | probe | fail, no helper run left | execution fails (kind `job_failed`), naming the gate and the last summary |
//! | probe | no verdict | `probe_errors` + 1; at `max_probe_errors` in a row the execution fails (kind `timeout`) with the last error, else the next probe after `interval` |
//! | helper | settled (success or failure) | logged; the probe runs again at once |
//!
//! `polls` counts probes that gave a verdict; every probe and helper run is in the step's
//! `gate.log` (the newest [`MAX_GATE_LOG`]).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Millis;
use crate::execution::{Execution, Failure, FailureKind, Plan, StepStatus, push_capped, step_job};
use crate::job::{Job, NewJob, Settlement};
use crate::pipeline::{Exhaustion, GateDef, HelperDef, StepDef, StepKind};
use crate::retry::RetryPolicy;
use crate::steps;

/// Most entries kept in a gate's log.
pub const MAX_GATE_LOG: usize = 100;

/// Longest summary kept from a probe, in characters.
pub const MAX_SUMMARY_CHARS: usize = 500;

/// What the gate is doing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatePhase {
    /// Probing (or waiting for the next probe).
    Checking,
    /// The helper is running.
    Working,
}

/// A probe's answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The condition holds: the gate passes.
    Pass,
    /// Not yet: probe again later.
    Pending,
    /// The condition is broken: run the helper, or fail.
    Fail,
}

impl Verdict {
    /// Reads a verdict name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pass" => Some(Verdict::Pass),
            "pending" => Some(Verdict::Pending),
            "fail" => Some(Verdict::Fail),
            _ => None,
        }
    }
}

/// The progress of a gate step.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateState {
    /// Probing or helping.
    pub phase: GatePhase,
    /// When the gate started (the watch window counts from here).
    pub since: Millis,
    /// Probes that gave a verdict.
    pub polls: u32,
    /// Runs of the helper.
    pub helper_attempts: u32,
    /// Probes in a row that gave no verdict.
    pub probe_errors: u32,
    /// The latest verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<Verdict>,
    /// The latest probe summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_summary: Option<String>,
    /// When the next probe is due, while waiting for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_probe_at: Option<Millis>,
    /// Probes and helper runs, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<GateLogEntry>,
}

/// One probe or helper run of a gate.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateLogEntry {
    /// When it settled.
    pub at: Millis,
    /// `probe` or `helper`.
    pub what: String,
    /// The probe's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The probe's summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Why the probe gave no verdict, or why the helper failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The helper run (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Whether the helper succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    /// The job.
    pub job_id: String,
}

impl GateState {
    /// A gate that starts now.
    pub fn new(now: Millis) -> Self {
        Self {
            phase: GatePhase::Checking,
            since: now,
            polls: 0,
            helper_attempts: 0,
            probe_errors: 0,
            last_verdict: None,
            last_summary: None,
            next_probe_at: None,
            log: Vec::new(),
        }
    }
}

/// Whether `job` is a run of the gate's helper (else it is a probe).
pub fn is_helper_job(job: &Job) -> bool {
    job.payload.get("gate").and_then(Value::as_str) == Some("helper")
}

/// A probe job of gate step `index` (`def`), due at `run_at` (`None`: now). Probes are
/// never retried as jobs: the gate counts probe errors itself.
pub fn probe_job(execution_id: &str, index: usize, def: &StepDef, job_id: String, run_at: Option<Millis>) -> NewJob {
    let mut job = step_job(execution_id, index, def, job_id);
    job.payload = json!({ "gate": "probe" });
    job.retry = RetryPolicy { max_attempts: 1, ..def.retry.clone() };
    job.run_at = run_at;
    job
}

/// A run (1-based `attempt`) of the helper of gate step `index`.
fn helper_job(exec: &Execution, index: usize, helper: &HelperDef, job_id: String, attempt: u32) -> NewJob {
    let def = StepDef {
        name: exec.pipeline.steps[index].name.clone(),
        queue: helper.queue.clone(),
        timeout_ms: helper.timeout_ms,
        retry: helper.retry.clone(),
        requires_approval: false,
        kind: helper.kind.clone(),
    };
    let mut job = step_job(&exec.id, index, &def, job_id);
    let mut payload = json!({ "gate": "helper", "attempt": attempt });
    match &helper.kind {
        StepKind::Noop { output } => payload["output"] = output.clone().unwrap_or(Value::Null),
        StepKind::External { params } => {
            payload["params"] = params.clone().unwrap_or(Value::Null);
            payload["context"] = exec.context(index);
        }
        _ => {}
    }
    job.payload = payload;
    job
}

/// The queue and kind of the live job of a gate step in `state`.
pub(crate) fn live_job_lane(def: &GateDef, step_def: &StepDef, state: Option<&GateState>) -> (String, String) {
    match (state.map(|s| s.phase), &def.helper) {
        (Some(GatePhase::Working), Some(helper)) => (helper.queue.clone(), helper.kind.name().to_string()),
        _ => (step_def.queue.clone(), step_def.kind.name().to_string()),
    }
}

fn summary_of(output: &Value) -> Option<String> {
    output.get("summary").and_then(|s| match s {
        Value::Null => None,
        Value::String(s) => Some(s.chars().take(MAX_SUMMARY_CHARS).collect()),
        other => Some(other.to_string().chars().take(MAX_SUMMARY_CHARS).collect()),
    })
}

/// Plans the settlement of a job of gate step `index` into `next` and `plan`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn settle(
    next: &mut Execution,
    index: usize,
    gate: &GateDef,
    job: &Job,
    settlement: &Settlement,
    plan: &mut Plan,
    now: Millis,
    next_job_id: &mut dyn FnMut() -> String,
) {
    let def = next.pipeline.steps[index].clone();
    let name = def.name.clone();
    let mut state = next.steps[index].gate.clone().unwrap_or_else(|| GateState::new(now));
    state.next_probe_at = None;
    let entry = |what: &str| GateLogEntry {
        at: now,
        what: what.to_string(),
        verdict: None,
        summary: None,
        error: None,
        attempt: None,
        succeeded: None,
        job_id: job.id.clone(),
    };

    let probe_after = |state: &mut GateState, delay: Option<u64>| -> Option<Millis> {
        let at = delay.map(|d| now.saturating_add(i64::try_from(d).unwrap_or(i64::MAX)));
        state.next_probe_at = at;
        at
    };

    // What happens next, decided below and carried out at the end.
    enum Next {
        Probe(Option<u64>),
        Helper,
        Pass(Value),
        Fail(FailureKind, String, Option<String>),
        Wait(StepStatus),
    }

    let decision = if is_helper_job(job) {
        match settlement {
            Settlement::Retry { error, .. } => {
                next.steps[index].last_error = Some(error.clone());
                Next::Wait(StepStatus::Queued)
            }
            Settlement::Deferred { .. } => Next::Wait(StepStatus::Waiting),
            Settlement::Completed { .. } | Settlement::Failed { .. } => {
                let mut e = entry("helper");
                e.attempt = Some(state.helper_attempts);
                e.succeeded = Some(matches!(settlement, Settlement::Completed { .. }));
                if let Settlement::Failed { error } = settlement {
                    e.error = Some(error.message.clone());
                    next.steps[index].last_error = Some(error.clone());
                }
                push_capped(&mut state.log, e, MAX_GATE_LOG);
                state.phase = crate::gate::GatePhase::Checking;
                Next::Probe(None)
            }
        }
    } else {
        match settlement {
            Settlement::Completed { output } => {
                let verdict = output.get("verdict").and_then(Value::as_str).and_then(Verdict::parse);
                match verdict {
                    None => probe_error(&mut state, &entry("probe"), format!("the probe answered no verdict: {output}"), gate, &name),
                    Some(verdict) => {
                        let summary = summary_of(output);
                        let mut e = entry("probe");
                        e.verdict = Some(verdict);
                        e.summary.clone_from(&summary);
                        push_capped(&mut state.log, e, MAX_GATE_LOG);
                        state.polls += 1;
                        state.probe_errors = 0;
                        state.last_verdict = Some(verdict);
                        state.last_summary.clone_from(&summary);
                        match verdict {
                            Verdict::Pass => Next::Pass(json!({
                                "verdict": "pass", "summary": summary,
                                "polls": state.polls, "helper_attempts": state.helper_attempts,
                            })),
                            Verdict::Pending if state.polls < gate.max_polls => Next::Probe(Some(gate.interval_ms)),
                            Verdict::Pending => exhausted(&state, gate, &name, now),
                            Verdict::Fail => match &gate.helper {
                                Some(_) if state.helper_attempts < gate.max_attempts => {
                                    state.helper_attempts += 1;
                                    state.phase = GatePhase::Working;
                                    Next::Helper
                                }
                                helper => {
                                    let mut message = format!(
                                        "gate `{name}` failed: {}",
                                        summary.as_deref().unwrap_or("the probe answered fail")
                                    );
                                    if helper.is_some() {
                                        message.push_str(&format!(
                                            " (after {} helper run(s))",
                                            state.helper_attempts
                                        ));
                                    }
                                    Next::Fail(FailureKind::JobFailed, message, summary)
                                }
                            },
                        }
                    }
                }
            }
            Settlement::Failed { error } | Settlement::Retry { error, .. } => {
                next.steps[index].last_error = Some(error.clone());
                probe_error(&mut state, &entry("probe"), error.message.clone(), gate, &name)
            }
            Settlement::Deferred { .. } => Next::Wait(StepStatus::Waiting),
        }
    };

    match decision {
        Next::Probe(delay) => {
            let run_at = probe_after(&mut state, delay);
            let job = probe_job(&next.id, index, &def, next_job_id(), run_at);
            next.steps[index].status = if run_at.is_some() { StepStatus::Waiting } else { StepStatus::Queued };
            next.steps[index].gate = Some(state);
            steps::add_job(next, index, job, plan);
        }
        Next::Helper => {
            let Some(helper) = gate.helper.as_deref() else { return };
            let attempt = state.helper_attempts;
            next.steps[index].gate = Some(state);
            let job = helper_job(next, index, helper, next_job_id(), attempt);
            next.steps[index].status = StepStatus::Queued;
            steps::add_job(next, index, job, plan);
        }
        Next::Pass(output) => {
            next.steps[index].gate = Some(state);
            steps::succeed(next, index, output, Some((&job.id, job.attempts)), plan, now, next_job_id);
        }
        Next::Fail(kind, message, detail) => {
            next.steps[index].gate = Some(state);
            let step = &mut next.steps[index];
            step.status = StepStatus::Failed;
            crate::execution::set_once(&mut step.finished_at, now);
            let failure = Failure {
                kind,
                message,
                detail,
                step: Some(name),
                exit_code: None,
                stderr_tail: None,
                run: next.run,
                occurred_at: now,
            };
            next.fail_into(failure, plan, now);
        }
        Next::Wait(status) => {
            next.steps[index].status = status;
            next.steps[index].gate = Some(state);
        }
    }

    fn probe_error(state: &mut GateState, base: &GateLogEntry, error: String, gate: &GateDef, name: &str) -> Next {
        let mut e = base.clone();
        e.error = Some(error.clone());
        push_capped(&mut state.log, e, MAX_GATE_LOG);
        state.probe_errors += 1;
        if state.probe_errors >= gate.max_probe_errors {
            Next::Fail(
                FailureKind::Timeout,
                format!("gate `{name}`: the probe gave no verdict {} time(s) in a row: {error}", state.probe_errors),
                Some(error),
            )
        } else {
            Next::Probe(Some(gate.interval_ms))
        }
    }

    fn exhausted(state: &GateState, gate: &GateDef, name: &str, now: Millis) -> Next {
        match gate.on_exhausted {
            Exhaustion::Fail => Next::Fail(
                FailureKind::Timeout,
                format!(
                    "gate `{name}` did not pass within its polling budget ({} polls){}",
                    state.polls,
                    state.last_summary.as_deref().map(|s| format!(": {s}")).unwrap_or_default()
                ),
                state.last_summary.clone(),
            ),
            Exhaustion::Pass => {
                let window = i64::try_from(gate.watch_window_ms.unwrap_or(0)).unwrap_or(i64::MAX);
                if now.saturating_sub(state.since) >= window {
                    Next::Pass(json!({
                        "verdict": "pass",
                        "summary": "the watch window went by with no failure",
                        "polls": state.polls, "helper_attempts": state.helper_attempts,
                    }))
                } else {
                    Next::Probe(Some(gate.interval_ms))
                }
            }
            Exhaustion::Rearm => Next::Probe(Some(gate.interval_ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::execution::{ExecutionStatus, StepStatus};
    use crate::job::JobError;
    use crate::pipeline::Probe;
    use crate::testing::{Driver, noop, step};

    fn gate(max_polls: u32, on_exhausted: Exhaustion, helper: bool, max_attempts: u32) -> StepDef {
        step(
            "ci",
            StepKind::Gate(GateDef {
                probe: Probe::Command { run: vec!["probe".into()], env: Default::default(), cwd: None },
                interval_ms: 1_000,
                max_polls,
                on_exhausted,
                watch_window_ms: Some(10_000),
                helper: helper.then(|| {
                    Box::new(HelperDef {
                        queue: "fixers".into(),
                        timeout_ms: None,
                        retry: RetryPolicy::default(),
                        kind: StepKind::Command { run: vec!["fix".into()], env: Default::default(), cwd: None },
                    })
                }),
                max_attempts,
                max_probe_errors: 2,
            }),
        )
    }

    fn verdict(v: &str) -> Value {
        json!({ "verdict": v, "summary": format!("probe says {v}") })
    }

    #[test]
    fn pending_probes_are_delayed_jobs_and_a_pass_moves_on() {
        let mut d = Driver::start(vec![gate(10, Exhaustion::Fail, false, 1), noop("after")]);
        assert_eq!(d.job.as_ref().unwrap().kind, "gate");
        assert_eq!(d.job.as_ref().unwrap().run_at, None, "the first probe runs at once");
        d.complete(100, verdict("pending"));
        assert_eq!(d.job.as_ref().unwrap().run_at, Some(1_100), "next probe after the interval");
        assert_eq!(d.exec.steps[0].status, StepStatus::Waiting);
        d.complete(1_200, verdict("pending"));
        d.complete(2_300, verdict("pass"));
        assert_eq!(d.exec.steps[0].status, StepStatus::Succeeded);
        assert_eq!(d.exec.steps[0].output.as_ref().unwrap()["polls"], 3);
        assert_eq!(d.exec.current, 1);
        assert_eq!(d.job.as_ref().unwrap().kind, "noop");
        assert_eq!(d.exec.steps[0].gate.as_ref().unwrap().log.len(), 3);
    }

    #[test]
    fn a_failing_probe_runs_the_helper_then_probes_again_until_attempts_are_spent() {
        let mut d = Driver::start(vec![gate(10, Exhaustion::Fail, true, 2), noop("after")]);
        d.complete(10, verdict("fail"));
        let helper = d.job.clone().unwrap();
        assert_eq!((helper.kind.as_str(), helper.queue.as_str()), ("command", "fixers"));
        assert_eq!(helper.payload["gate"], "helper");
        assert_eq!(d.exec.current_job().unwrap().queue, "fixers", "stop reaches the helper's queue");
        d.complete(20, json!(null));
        assert_eq!(d.job.as_ref().unwrap().kind, "gate", "probe again after the helper");
        assert_eq!(d.job.as_ref().unwrap().run_at, None);
        d.complete(30, verdict("fail"));
        d.settle(40, Settlement::Failed { error: JobError::terminal("fixer crashed") });
        d.complete(50, verdict("pass"));
        let state = d.exec.steps[0].gate.clone().unwrap();
        assert_eq!(state.helper_attempts, 2);
        assert_eq!(d.exec.steps[0].status, StepStatus::Succeeded);

        let mut d = Driver::start(vec![gate(10, Exhaustion::Fail, true, 1), noop("after")]);
        d.complete(10, verdict("fail"));
        d.complete(20, json!(null));
        d.complete(30, json!({"verdict": "fail", "summary": "3 checks red"}));
        assert_eq!(d.exec.status, ExecutionStatus::Failed);
        let failure = d.exec.failure.clone().unwrap();
        assert_eq!(failure.kind, FailureKind::JobFailed);
        assert!(failure.message.contains("gate `ci`") && failure.message.contains("3 checks red"), "{}", failure.message);
    }

    #[test]
    fn exhaustion_policies() {
        // fail: timeout after max_polls pending answers.
        let mut d = Driver::start(vec![gate(2, Exhaustion::Fail, false, 1)]);
        d.complete(10, verdict("pending"));
        d.complete(20, verdict("pending"));
        assert_eq!(d.exec.status, ExecutionStatus::Failed);
        assert_eq!(d.exec.failure.as_ref().unwrap().kind, FailureKind::Timeout);

        // pass: only once the watch window (10 s) has gone by.
        let mut d = Driver::start(vec![gate(1, Exhaustion::Pass, false, 1)]);
        d.complete(5_000, verdict("pending"));
        assert_eq!(d.exec.steps[0].status, StepStatus::Waiting, "re-armed inside the window");
        d.complete(9_999, verdict("pending"));
        assert_eq!(d.exec.steps[0].status, StepStatus::Waiting);
        d.complete(10_000, verdict("pending"));
        assert_eq!(d.exec.status, ExecutionStatus::Completed);

        // rearm: never fails, passes when the probe passes.
        let mut d = Driver::start(vec![gate(1, Exhaustion::Rearm, false, 1)]);
        for t in 1..50 {
            d.complete(t * 1_000_000, verdict("pending"));
            assert_eq!(d.exec.status, ExecutionStatus::Running);
        }
        d.complete(60_000_000, verdict("pass"));
        assert_eq!(d.exec.status, ExecutionStatus::Completed);
    }

    #[test]
    fn probe_errors_in_a_row_fail_with_the_last_error_and_a_verdict_resets_them() {
        let mut d = Driver::start(vec![gate(10, Exhaustion::Fail, false, 1)]);
        d.settle(10, Settlement::Failed { error: JobError::retryable("connection refused") });
        assert_eq!(d.exec.status, ExecutionStatus::Running);
        d.complete(20, verdict("pending"));
        d.settle(30, Settlement::Failed { error: JobError::retryable("timed out") });
        assert_eq!(d.exec.status, ExecutionStatus::Running, "the verdict in between reset the count");
        d.complete(40, json!({"no": "verdict"}));
        assert_eq!(d.exec.status, ExecutionStatus::Failed);
        let failure = d.exec.failure.clone().unwrap();
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert!(failure.message.contains("no verdict"), "{}", failure.message);
    }
}
