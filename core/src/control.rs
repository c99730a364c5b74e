//! Operator actions on an execution: cancel, retry, restart from a step, pause, resume.
//!
//! Each action is planned here from the execution as read and committed by the store like
//! any other [`Plan`], under the execution's revision. Besides the execution's next state, a
//! plan may stop jobs ([`Plan::stop_jobs`]: a pending job is cancelled, a running one is
//! marked and its worker told to kill it) and claim the target's live slot
//! ([`Plan::claim_target`]: a retry or restart of a terminal execution must take it back).
//!
//! Rules (SPEC section 3):
//! - **cancel**: `running`, `blocked` or `paused` → `cancelled`; the current step's job is
//!   stopped; on a terminal execution nothing changes (the caller returns it as it is).
//! - **retry**: only from `failed` or `cancelled`; the same execution, `run` + 1, the failure
//!   moved to `failure_history`; it resumes at the first step that did not succeed, and
//!   succeeded steps keep their outputs and never run again.
//! - **restart** from step `k`: any status; the current job is stopped first; steps before
//!   `k` keep their outputs (each must have succeeded); outputs of the reset steps move to
//!   `output_history`; `run` + 1.
//! - **pause**: `running` or `blocked` → `paused`; takes effect at the next step boundary
//!   (an in-flight job still runs and its result is recorded; the next step waits).
//! - **resume**: `paused` → `running` (or `blocked` when the current step waits for a
//!   human); enqueues the current step's job if the pause stopped before it.
//!
//! Every applied action appends an [`AuditEntry`] naming the actor and the reason.

use serde_json::json;

use crate::Millis;
use crate::event::{Event, names};
use crate::execution::{
    AuditEntry, Execution, ExecutionEvent, ExecutionStatus, Failure, FailureKind, MAX_AUDIT,
    MAX_FAILURE_HISTORY, MAX_OUTPUT_HISTORY, OutputRecord, Plan, StepStatus, push_capped,
    set_once, transition,
};
use crate::steps;

/// An operator action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop a live execution.
    Cancel,
    /// Resume a failed or cancelled execution at its first step that did not succeed.
    Retry,
    /// Run again from the step with this index.
    Restart {
        /// Index of the first step to run again.
        from: usize,
    },
    /// Stop at the next step boundary.
    Pause,
    /// Go on after a pause.
    Resume,
}

impl Action {
    /// The name recorded in the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Retry => "retry",
            Action::Restart { .. } => "restart",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }
}

/// Who acts, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The caller's subject.
    pub subject: String,
    /// The reason given, if any.
    pub reason: Option<String>,
}

/// Why an action is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Retry needs a `failed` or `cancelled` execution.
    #[error("execution is {}; only failed or cancelled executions can be retried", .0.as_str())]
    NotRetryable(ExecutionStatus),
    /// Restart's step index is outside the pipeline, or a step before it did not succeed.
    #[error("{0}")]
    StepOutOfRange(String),
    /// Pause needs a `running` or `blocked` execution.
    #[error("execution is {}; only running or blocked executions can be paused", .0.as_str())]
    NotPausable(ExecutionStatus),
    /// Resume needs a `paused` execution.
    #[error("execution is {}; only paused executions can be resumed", .0.as_str())]
    NotPaused(ExecutionStatus),
}

/// What an action does.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Commit this plan.
    Apply(Box<Plan>),
    /// Nothing to do (cancel of a terminal execution); return the execution as it is.
    Unchanged,
}

/// Plans `action` on `exec` by `operator` at `now`. `next_job_id` mints job ids in the
/// execution's shard.
///
/// # Errors
/// A [`Refusal`] when the action is not allowed in the execution's state.
pub fn plan_action(
    exec: &Execution,
    action: Action,
    operator: &Operator,
    now: Millis,
    next_job_id: &mut dyn FnMut() -> String,
) -> Result<Decision, Refusal> {
    let mut next = exec.clone();
    next.updated_at = now;
    let mut plan = Plan::default();
    match action {
        Action::Cancel => {
            if !exec.status.is_live() {
                return Ok(Decision::Unchanged);
            }
            cancel(&mut next, &mut plan, operator, now);
        }
        Action::Retry => {
            if transition(exec.status, ExecutionEvent::Retry).is_err() {
                return Err(Refusal::NotRetryable(exec.status));
            }
            let from = exec.steps.iter().position(|s| s.status != StepStatus::Succeeded).unwrap_or(exec.steps.len() - 1);
            rerun(&mut next, &mut plan, from, names::EXECUTION_RETRIED, now, next_job_id);
        }
        Action::Restart { from } => {
            check_restart(exec, from)?;
            if exec.status.is_live() {
                plan.stop_jobs.extend(exec.current_job());
            }
            for (index, step) in next.steps.iter().enumerate().skip(from) {
                if let Some(output) = &step.output {
                    let record = OutputRecord {
                        step: step.name.clone(),
                        index,
                        run: exec.run,
                        output: output.clone(),
                        finished_at: step.finished_at,
                    };
                    push_capped(&mut next.output_history, record, MAX_OUTPUT_HISTORY);
                }
            }
            rerun(&mut next, &mut plan, from, names::EXECUTION_RESTARTED, now, next_job_id);
        }
        Action::Pause => {
            next.status = transition(exec.status, ExecutionEvent::Pause).map_err(|_| Refusal::NotPausable(exec.status))?;
            next.paused_at = Some(now);
            plan.events.push(Event::new(
                names::INSTANCE_PAUSED,
                json!({ "execution_id": exec.id, "run": exec.run, "from": exec.status.as_str() }),
            ));
        }
        Action::Resume => {
            transition(exec.status, ExecutionEvent::Resume).map_err(|_| Refusal::NotPaused(exec.status))?;
            resume(&mut next, &mut plan, now, next_job_id);
        }
    }
    let entry = AuditEntry {
        action: action.name().to_string(),
        actor: operator.subject.clone(),
        reason: operator.reason.clone(),
        at: now,
        run: next.run,
    };
    push_capped(&mut next.audit, entry, MAX_AUDIT);
    plan.execution = Some(next);
    Ok(Decision::Apply(Box::new(plan)))
}

fn cancel(next: &mut Execution, plan: &mut Plan, operator: &Operator, now: Millis) {
    next.status = ExecutionStatus::Cancelled;
    set_once(&mut next.finished_at, now);
    next.paused_at = None;
    let index = next.current;
    if matches!(
        next.steps[index].status,
        StepStatus::Queued | StepStatus::Running | StepStatus::Waiting | StepStatus::Blocked
    ) {
        plan.stop_jobs.extend(next.current_job());
    }
    let step = &mut next.steps[index];
    if !matches!(step.status, StepStatus::Succeeded | StepStatus::Failed | StepStatus::Skipped) {
        step.status = StepStatus::Cancelled;
        set_once(&mut step.finished_at, now);
    }
    let message = match &operator.reason {
        Some(reason) => format!("cancelled by {}: {reason}", operator.subject),
        None => format!("cancelled by {}", operator.subject),
    };
    next.failure = Some(Failure {
        kind: FailureKind::Cancelled,
        message,
        detail: None,
        step: Some(step.name.clone()),
        exit_code: None,
        stderr_tail: None,
        run: next.run,
        occurred_at: now,
    });
    plan.release_target = next.target.clone();
    plan.events.push(Event::new(
        names::EXECUTION_CANCELLED,
        json!({ "execution_id": next.id, "run": next.run, "step": index, "actor": operator.subject }),
    ));
}

fn check_restart(exec: &Execution, from: usize) -> Result<(), Refusal> {
    let count = exec.steps.len();
    if from >= count {
        return Err(Refusal::StepOutOfRange(format!(
            "step index {from} is out of range; the pipeline has {count} step(s), indexes 0 to {}",
            count - 1
        )));
    }
    if let Some(missing) = exec.steps[..from].iter().position(|s| s.status != StepStatus::Succeeded) {
        return Err(Refusal::StepOutOfRange(format!(
            "cannot restart from step {from}: step {missing} (`{}`) before it has not succeeded; restart from step {missing} or earlier",
            exec.steps[missing].name
        )));
    }
    Ok(())
}

/// A new run starting at step `from`: earlier steps are kept, `from` gets a fresh job, later
/// steps are reset to `pending`.
fn rerun(
    next: &mut Execution,
    plan: &mut Plan,
    from: usize,
    event: &str,
    now: Millis,
    next_job_id: &mut dyn FnMut() -> String,
) {
    if !next.status.is_live() {
        plan.claim_target = next.target.clone();
    }
    if let Some(failure) = next.failure.take() {
        push_capped(&mut next.failure_history, failure, MAX_FAILURE_HISTORY);
    }
    next.run += 1;
    next.status = ExecutionStatus::Running;
    next.current = from;
    next.started_at = now;
    next.finished_at = None;
    next.paused_at = None;
    for step in next.steps.iter_mut().skip(from) {
        step.reset();
    }
    plan.events.push(Event::new(
        event,
        json!({ "execution_id": next.id, "run": next.run, "step": from, "name": next.steps[from].name }),
    ));
    steps::enter(next, from, plan, now, next_job_id);
}

fn resume(next: &mut Execution, plan: &mut Plan, now: Millis, next_job_id: &mut dyn FnMut() -> String) {
    next.paused_at = None;
    let index = next.current;
    next.status = if next.steps[index].status == StepStatus::Blocked {
        ExecutionStatus::Blocked
    } else {
        ExecutionStatus::Running
    };
    let mut entered = Plan::default();
    if next.steps[index].status == StepStatus::Pending {
        // The pause took effect at this boundary: the step has not started yet (entering an
        // approval step parks the execution again).
        steps::enter(next, index, &mut entered, now, next_job_id);
    }
    plan.events.push(Event::new(
        names::INSTANCE_RESUMED,
        json!({ "execution_id": next.id, "run": next.run, "status": next.status.as_str() }),
    ));
    plan.events.append(&mut entered.events);
    plan.jobs.append(&mut entered.jobs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::{StartRequest, plan_settle, plan_start};
    use crate::job::{Job, JobError, JobStatus, Settlement};
    use crate::pipeline;

    const NOW: Millis = 1_000;

    fn exec(steps: usize) -> Execution {
        let mut toml = String::from("id = \"p\"\n");
        for i in 0..steps {
            toml.push_str(&format!("[[steps]]\nname = \"s{i}\"\nkind = \"noop\"\n"));
        }
        let pipeline = pipeline::parse_toml(&toml).unwrap();
        let req = StartRequest {
            pipeline,
            pipeline_version: 1,
            input: json!({}),
            target: Some("t".into()),
            idempotency_key: None,
        };
        let mut e = plan_start(req, "ex_0_A".into(), "job_0_1".into(), 0).execution.unwrap();
        e.rev = 1;
        e
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 100;
        move || {
            n += 1;
            format!("job_0_{n}")
        }
    }

    fn op() -> Operator {
        Operator { subject: "alice".into(), reason: Some("because".into()) }
    }

    fn job_of(e: &Execution) -> Job {
        let step = &e.steps[e.current];
        Job {
            id: step.job_id.clone().unwrap(),
            queue: "default".into(),
            kind: "noop".into(),
            payload: json!(null),
            status: JobStatus::Running,
            priority: 0,
            attempts: 1,
            retry: crate::RetryPolicy::default(),
            timeout_ms: None,
            scheduled_at: 0,
            created_at: 0,
            updated_at: 0,
            started_at: Some(0),
            finished_at: None,
            lease: None,
            result: None,
            last_error: None,
            dedupe_key: None,
            execution_id: Some(e.id.clone()),
            step: Some(u32::try_from(e.current).unwrap()),
        }
    }

    /// Settles the current step's job with `settlement` and returns the next state.
    fn settle(e: &Execution, settlement: &Settlement) -> Execution {
        let plan = plan_settle(e, &job_of(e), settlement, NOW, &mut ids());
        plan.execution.unwrap_or_else(|| e.clone())
    }

    fn apply(e: &Execution, action: Action) -> (Execution, Plan) {
        match plan_action(e, action, &op(), NOW, &mut ids()).unwrap() {
            Decision::Apply(plan) => (plan.execution.clone().unwrap(), *plan),
            Decision::Unchanged => panic!("unchanged"),
        }
    }

    fn done() -> Settlement {
        Settlement::Completed { output: json!({"ok": true}) }
    }

    fn failed() -> Settlement {
        Settlement::Failed { error: JobError::terminal("boom") }
    }

    #[test]
    fn cancel_stops_the_current_job_releases_the_target_and_is_idempotent() {
        let e = exec(3);
        let (next, plan) = apply(&e, Action::Cancel);
        assert_eq!(next.status, ExecutionStatus::Cancelled);
        assert_eq!(next.steps[0].status, StepStatus::Cancelled);
        assert_eq!(plan.stop_jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["job_0_1"]);
        assert_eq!(plan.release_target.as_deref(), Some("t"));
        assert_eq!(next.failure.as_ref().unwrap().kind, FailureKind::Cancelled);
        assert_eq!(next.failure.as_ref().unwrap().message, "cancelled by alice: because");
        assert_eq!(next.audit.len(), 1);
        assert_eq!(next.audit[0].action, "cancel");
        assert!(plan.events.iter().any(|ev| ev.kind == names::EXECUTION_CANCELLED));
        let again = plan_action(&next, Action::Cancel, &op(), NOW, &mut ids()).unwrap();
        assert_eq!(again, Decision::Unchanged);
    }

    #[test]
    fn retry_resumes_at_the_first_step_that_did_not_succeed() {
        let e = exec(4);
        let e = settle(&e, &done());
        let e = settle(&e, &done());
        let e = settle(&e, &failed());
        assert_eq!(e.status, ExecutionStatus::Failed);
        let (next, plan) = apply(&e, Action::Retry);
        assert_eq!(next.id, e.id);
        assert_eq!(next.run, 2);
        assert_eq!(next.current, 2);
        assert_eq!(next.status, ExecutionStatus::Running);
        assert_eq!(next.steps[0], e.steps[0], "succeeded steps are kept untouched");
        assert_eq!(next.steps[1], e.steps[1]);
        assert_eq!(next.steps[2].status, StepStatus::Queued);
        assert_eq!(next.steps[2].attempts, 0);
        assert_eq!(next.steps[3].status, StepStatus::Pending);
        assert_eq!(plan.jobs.len(), 1);
        assert_eq!(plan.jobs[0].step, Some(2));
        assert_eq!(plan.claim_target.as_deref(), Some("t"));
        assert!(next.failure.is_none());
        assert_eq!(next.failure_history.len(), 1);
        assert_eq!(next.failure_history[0].step.as_deref(), Some("s2"));
        assert!(next.finished_at.is_none());
    }

    #[test]
    fn retry_is_refused_unless_failed_or_cancelled() {
        let running = exec(2);
        assert_eq!(
            plan_action(&running, Action::Retry, &op(), NOW, &mut ids()),
            Err(Refusal::NotRetryable(ExecutionStatus::Running))
        );
        let completed = settle(&settle(&running, &done()), &done());
        assert_eq!(completed.status, ExecutionStatus::Completed);
        assert_eq!(
            plan_action(&completed, Action::Retry, &op(), NOW, &mut ids()),
            Err(Refusal::NotRetryable(ExecutionStatus::Completed))
        );
        let (cancelled, _) = apply(&running, Action::Cancel);
        let (retried, _) = apply(&cancelled, Action::Retry);
        assert_eq!(retried.current, 0);
        assert_eq!(retried.failure_history[0].kind, FailureKind::Cancelled);
    }

    #[test]
    fn restart_keeps_earlier_outputs_and_moves_reset_outputs_to_history() {
        let e = exec(3);
        let e = settle(&settle(&settle(&e, &done()), &done()), &done());
        assert_eq!(e.status, ExecutionStatus::Completed);
        let (next, plan) = apply(&e, Action::Restart { from: 1 });
        assert_eq!(next.run, 2);
        assert_eq!(next.current, 1);
        assert_eq!(next.steps[0], e.steps[0]);
        assert_eq!(next.steps[1].status, StepStatus::Queued);
        assert!(next.steps[1].output.is_none());
        assert_eq!(next.output_history.len(), 2);
        assert_eq!(next.output_history[0].step, "s1");
        assert_eq!(next.output_history[0].run, 1);
        assert_eq!(plan.claim_target.as_deref(), Some("t"));
        assert!(plan.stop_jobs.is_empty());
    }

    #[test]
    fn restart_of_a_live_execution_stops_its_job_first() {
        let e = settle(&exec(3), &done());
        let live_job = e.steps[1].job_id.clone().unwrap();
        let (next, plan) = apply(&e, Action::Restart { from: 0 });
        assert_eq!(plan.stop_jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), vec![live_job]);
        assert!(plan.claim_target.is_none(), "a live execution already holds its target");
        assert_eq!(next.current, 0);
        assert_eq!(next.output_history.len(), 1);
    }

    #[test]
    fn restart_out_of_range_or_past_an_unsucceeded_step_is_refused() {
        let e = exec(3);
        let err = plan_action(&e, Action::Restart { from: 3 }, &op(), NOW, &mut ids()).unwrap_err();
        assert!(matches!(&err, Refusal::StepOutOfRange(m) if m.contains("indexes 0 to 2")), "{err}");
        let err = plan_action(&e, Action::Restart { from: 2 }, &op(), NOW, &mut ids()).unwrap_err();
        assert!(matches!(&err, Refusal::StepOutOfRange(m) if m.contains("step 0 (`s0`)")), "{err}");
    }

    #[test]
    fn pause_takes_effect_at_the_boundary_and_resume_enqueues_the_next_step() {
        let e = exec(3);
        let (paused, plan) = apply(&e, Action::Pause);
        assert_eq!(paused.status, ExecutionStatus::Paused);
        assert!(plan.stop_jobs.is_empty(), "the in-flight job is not stopped");
        assert_eq!(plan.events[0].kind, names::INSTANCE_PAUSED);
        // The in-flight job's result is recorded; the next step gets no job.
        let at_boundary = settle(&paused, &done());
        assert_eq!(at_boundary.status, ExecutionStatus::Paused);
        assert_eq!(at_boundary.steps[0].status, StepStatus::Succeeded);
        assert_eq!(at_boundary.current, 1);
        assert_eq!(at_boundary.steps[1].status, StepStatus::Pending);
        assert!(at_boundary.steps[1].job_id.is_none());
        let (resumed, plan) = apply(&at_boundary, Action::Resume);
        assert_eq!(resumed.status, ExecutionStatus::Running);
        assert_eq!(resumed.steps[1].status, StepStatus::Queued);
        assert_eq!(plan.jobs.len(), 1);
        assert_eq!(plan.events[0].kind, names::INSTANCE_RESUMED);
        assert!(resumed.paused_at.is_none());
        assert_eq!(resumed.audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(), ["pause", "resume"]);
    }

    #[test]
    fn resume_before_the_boundary_enqueues_nothing() {
        let (paused, _) = apply(&exec(2), Action::Pause);
        let (resumed, plan) = apply(&paused, Action::Resume);
        assert_eq!(resumed.status, ExecutionStatus::Running);
        assert!(plan.jobs.is_empty());
    }

    #[test]
    fn pause_and_resume_refusals_name_the_status() {
        let e = exec(2);
        assert_eq!(
            plan_action(&e, Action::Resume, &op(), NOW, &mut ids()),
            Err(Refusal::NotPaused(ExecutionStatus::Running))
        );
        let (paused, _) = apply(&e, Action::Pause);
        assert_eq!(
            plan_action(&paused, Action::Pause, &op(), NOW, &mut ids()),
            Err(Refusal::NotPausable(ExecutionStatus::Paused))
        );
        let (cancelled, _) = apply(&e, Action::Cancel);
        assert_eq!(
            plan_action(&cancelled, Action::Pause, &op(), NOW, &mut ids()).unwrap_err().to_string(),
            "execution is cancelled; only running or blocked executions can be paused"
        );
    }
}
