//! Entering and leaving steps: what each step kind does when the execution reaches it, and
//! what happens once a step has produced its result.
//!
//! Every path that moves an execution onto a step (start, a step succeeding, retry, restart,
//! resume, a request for changes) goes through [`enter`], so a kind behaves the same however
//! it was reached:
//!
//! | kind | on entry |
//! |---|---|
//! | `command`, `noop`, `http`, `external` | one job, step `queued` |
//! | `gate` | gate state initialised, a probe job, step `queued` |
//! | `sleep` | a job delayed until the wake time, step `waiting` |
//! | `approval` | no job; step and execution `blocked` |
//!
//! and every step that produced its result goes through [`succeed`], which parks the
//! execution when the step `requires_approval`, and otherwise moves to the next step (or
//! completes the execution after the last).

use serde_json::{Value, json};

use crate::Millis;
use crate::approval::ApprovalState;
use crate::event::{Event, names};
use crate::execution::{Execution, ExecutionStatus, Plan, StepStatus, enqueued_event, set_once, step_job};
use crate::gate::GateState;
use crate::job::NewJob;
use crate::pipeline::StepKind;

/// Moves `next` onto step `index` and starts it: its job goes into `plan.jobs`, its events
/// into `plan.events`. `next_job_id` is called once when the step needs a job.
pub(crate) fn enter(
    next: &mut Execution,
    index: usize,
    plan: &mut Plan,
    now: Millis,
    next_job_id: &mut dyn FnMut() -> String,
) {
    next.current = index;
    let id = next.id.clone();
    let def = next.pipeline.steps[index].clone();
    let step = &mut next.steps[index];
    step.gate = None;
    step.approval = None;
    step.wake_at = None;
    match &def.kind {
        StepKind::Approval { required_approvals, .. } => {
            step.status = StepStatus::Blocked;
            set_once(&mut step.started_at, now);
            step.approval = Some(ApprovalState::new(*required_approvals, now));
            park(next, index, *required_approvals, plan);
        }
        StepKind::Sleep { for_ms, until } => {
            let wake = until.unwrap_or_else(|| now.saturating_add(i64::try_from(for_ms.unwrap_or(0)).unwrap_or(i64::MAX)));
            let mut job = step_job(&id, index, &def, next_job_id());
            job.run_at = Some(wake);
            job.payload = json!({ "until": wake });
            step.status = StepStatus::Waiting;
            step.wake_at = Some(wake);
            set_once(&mut step.started_at, now);
            add_job(next, index, job, plan);
        }
        StepKind::Gate(_) => {
            step.gate = Some(GateState::new(now));
            let job = crate::gate::probe_job(&id, index, &def, next_job_id(), None);
            step.status = StepStatus::Queued;
            add_job(next, index, job, plan);
        }
        StepKind::External { params } => {
            let mut job = step_job(&id, index, &def, next_job_id());
            job.payload = json!({
                "params": params.clone().unwrap_or(Value::Null),
                "context": next.context(index),
            });
            next.steps[index].status = StepStatus::Queued;
            add_job(next, index, job, plan);
        }
        StepKind::Command { .. } | StepKind::Noop { .. } | StepKind::Http { .. } => {
            let job = step_job(&id, index, &def, next_job_id());
            step.status = StepStatus::Queued;
            add_job(next, index, job, plan);
        }
    }
}

/// Makes `job` the live job of step `index`.
pub(crate) fn add_job(next: &mut Execution, index: usize, job: NewJob, plan: &mut Plan) {
    next.steps[index].job_id = Some(job.id.clone());
    plan.events.push(enqueued_event(&job));
    plan.jobs.push(job);
}

/// Parks the execution on a human for step `index` (a paused execution stays paused; resume
/// brings it back to `blocked`).
fn park(next: &mut Execution, index: usize, required: u32, plan: &mut Plan) {
    if next.status == ExecutionStatus::Running {
        next.status = ExecutionStatus::Blocked;
    }
    plan.events.push(Event::new(
        names::EXECUTION_BLOCKED,
        json!({
            "execution_id": next.id, "run": next.run, "step": index,
            "name": next.steps[index].name, "required_approvals": required,
        }),
    ));
}

/// Step `index` produced `output` (its job succeeded, its gate passed, its approval reached
/// quorum): record it, then park for approval when the step asks for one, or go on.
/// `job` names the job and attempt that produced it, for the event.
pub(crate) fn succeed(
    next: &mut Execution,
    index: usize,
    output: Value,
    job: Option<(&str, u32)>,
    plan: &mut Plan,
    now: Millis,
    next_job_id: &mut dyn FnMut() -> String,
) {
    let wants_approval = next.pipeline.steps[index].requires_approval;
    let step = &mut next.steps[index];
    step.output = Some(output);
    if wants_approval {
        // The output is recorded; the step finishes once a human approves it.
        step.status = StepStatus::Blocked;
        step.approval = Some(ApprovalState::new(1, now));
        park(next, index, 1, plan);
        return;
    }
    finish(next, index, job, plan, now, next_job_id);
}

/// Step `index` is done with success (its output already recorded): emit, then move on.
pub(crate) fn finish(
    next: &mut Execution,
    index: usize,
    job: Option<(&str, u32)>,
    plan: &mut Plan,
    now: Millis,
    next_job_id: &mut dyn FnMut() -> String,
) {
    let step = &mut next.steps[index];
    step.status = StepStatus::Succeeded;
    set_once(&mut step.finished_at, now);
    let mut data = json!({ "execution_id": next.id, "run": next.run, "step": index, "name": step.name });
    if let (Some((job_id, attempt)), Some(map)) = (job, data.as_object_mut()) {
        map.insert("job_id".into(), json!(job_id));
        map.insert("attempt".into(), json!(attempt));
    }
    plan.events.push(Event::new(names::STEP_COMPLETED, data));
    next.updated_at = now;
    if index + 1 == next.steps.len() {
        next.status = ExecutionStatus::Completed;
        set_once(&mut next.finished_at, now);
        plan.events.push(Event::new(names::EXECUTION_COMPLETED, json!({ "execution_id": next.id, "run": next.run })));
        plan.release_target = next.target.clone();
        return;
    }
    if next.status == ExecutionStatus::Blocked {
        next.status = ExecutionStatus::Running;
    }
    if next.status == ExecutionStatus::Paused {
        // Takes effect at this boundary: the next step waits for `resume`.
        next.current = index + 1;
        return;
    }
    enter(next, index + 1, plan, now, next_job_id);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{Driver, noop, step};

    #[test]
    fn a_sleep_step_is_a_job_delayed_until_its_wake_time() {
        let mut d = Driver::start(vec![noop("a"), step("soak", StepKind::Sleep { for_ms: Some(3_000), until: None }), noop("b")]);
        d.complete(500, json!(null));
        let job = d.job.clone().unwrap();
        assert_eq!((job.kind.as_str(), job.run_at), ("sleep", Some(3_500)));
        assert_eq!(d.exec.steps[1].status, StepStatus::Waiting);
        assert_eq!(d.exec.steps[1].wake_at, Some(3_500));
        d.complete(3_501, json!({"woke_at": 3_501}));
        assert_eq!(d.exec.current, 2);

        let d = Driver::start(vec![step("until", StepKind::Sleep { for_ms: None, until: Some(99_000) })]);
        assert_eq!(d.job.unwrap().run_at, Some(99_000));
    }

    #[test]
    fn an_external_step_job_carries_params_and_context() {
        let mut d = Driver::start(vec![noop("a"), step("label", StepKind::External { params: Some(json!({"x": 1})) })]);
        d.complete(1, json!({"out": 7}));
        let job = d.job.clone().unwrap();
        assert_eq!(job.kind, "external");
        assert_eq!(job.payload["params"], json!({"x": 1}));
        assert_eq!(job.payload["context"]["steps"]["a"]["output"], json!({"out": 7}));
    }
}
