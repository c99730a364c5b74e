//! Human approvals: `approval` steps, and steps with `requires_approval = true` once their
//! job has produced its output.
//!
//! A step waiting for approval is `blocked`, and so is its execution (unless an operator
//! paused it). Votes ([`plan_vote`]):
//! - **approve**: one vote per subject (a repeat changes nothing); at `required_approvals`
//!   distinct subjects the step succeeds and the execution goes on;
//! - **reject**: the step fails and the execution fails with kind `rejected`;
//! - **request changes**: the step (or, for an `approval` step, the step before it) runs
//!   again with the feedback in its context (`feedback` in `SLUICE_CONTEXT`); the approval
//!   is asked again afterwards.
//!
//! Who may vote: everyone allowed to call the API as `user`, unless the step lists
//! `approvers` (token subjects, and `role:<role>` for that role or a higher one).
//! Every vote is an audit entry on the execution.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Millis;
use crate::control::Decision;
use crate::event::{Event, names};
use crate::execution::{
    AuditEntry, Execution, ExecutionStatus, Failure, FailureKind, MAX_AUDIT, MAX_OUTPUT_HISTORY, OutputRecord, Plan,
    StepStatus, push_capped, set_once,
};
use crate::pipeline::StepKind;
use crate::steps;

/// Where an approval stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for votes.
    Pending,
    /// Reached quorum.
    Approved,
    /// Someone rejected it.
    Rejected,
    /// Someone asked for changes; the step runs again.
    ChangesRequested,
}

/// One approval vote.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVote {
    /// Who (token subject).
    pub subject: String,
    /// When.
    pub at: Millis,
    /// What they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The approval a step waits for or got.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalState {
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Distinct approvals needed.
    pub required: u32,
    /// Approvals so far, one per subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalVote>,
    /// Who rejected it or asked for changes, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<ApprovalVote>,
    /// When it was asked for.
    pub requested_at: Millis,
}

impl ApprovalState {
    /// An approval asked for now.
    pub fn new(required: u32, now: Millis) -> Self {
        Self { status: ApprovalStatus::Pending, required: required.max(1), approvals: Vec::new(), decided_by: None, requested_at: now }
    }
}

/// A request for changes, as the step that runs again sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// What to change.
    pub text: String,
    /// Who asked.
    pub by: String,
    /// When.
    pub at: Millis,
    /// The step whose approval asked for it.
    pub from_step: String,
}

/// A vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    /// Approve, with an optional comment.
    Approve(Option<String>),
    /// Reject, with the reason.
    Reject(Option<String>),
    /// Ask for changes, with the feedback.
    RequestChanges(String),
}

impl Vote {
    /// The name recorded in the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Vote::Approve(_) => "approve",
            Vote::Reject(_) => "reject",
            Vote::RequestChanges(_) => "request_changes",
        }
    }
}

/// Who votes: the token's subject and every role it holds (a role includes those below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// Token subject.
    pub subject: String,
    /// Role names the caller holds, e.g. `["worker", "user"]` for a `user` token.
    pub roles: Vec<String>,
}

/// Why a vote was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteRefusal {
    /// The step does not wait for an approval (409 `NOT_AWAITING_APPROVAL`).
    NotAwaitingApproval(String),
    /// The voter is not among the step's approvers (403 `NOT_AN_APPROVER`).
    NotAnApprover(String),
    /// A request for changes on an `approval` step that has no step before it (409
    /// `NOTHING_TO_REWORK`).
    NothingToRework(String),
}

/// Whether `voter` may vote on a step listing `approvers` (empty: anyone).
pub fn may_vote(approvers: &[String], voter: &Voter) -> bool {
    approvers.is_empty()
        || approvers.iter().any(|a| match a.strip_prefix("role:") {
            Some(role) => voter.roles.iter().any(|r| r == role),
            None => *a == voter.subject,
        })
}

/// Plans `vote` by `voter` on step `index` of `exec`.
///
/// # Errors
/// A [`VoteRefusal`] when the step waits for no approval or the voter may not vote.
pub fn plan_vote(
    exec: &Execution,
    index: usize,
    vote: &Vote,
    voter: &Voter,
    now: Millis,
    next_job_id: &mut dyn FnMut() -> String,
) -> Result<Decision, VoteRefusal> {
    let Some(step) = exec.steps.get(index) else {
        return Err(VoteRefusal::NotAwaitingApproval(format!("the execution has no step {index}")));
    };
    let waiting = exec.status.is_live()
        && index == exec.current
        && step.status == StepStatus::Blocked
        && step.approval.as_ref().is_some_and(|a| a.status == ApprovalStatus::Pending);
    if !waiting {
        return Err(VoteRefusal::NotAwaitingApproval(format!(
            "step `{}` is {} and the execution is {}; only a blocked step waiting for approval takes votes",
            step.name,
            step.status.as_str(),
            exec.status.as_str()
        )));
    }
    let def = &exec.pipeline.steps[index];
    let approvers: &[String] = match &def.kind {
        StepKind::Approval { approvers, .. } => approvers,
        _ => &[],
    };
    if !may_vote(approvers, voter) {
        return Err(VoteRefusal::NotAnApprover(format!(
            "`{}` is not an approver of step `{}` (approvers: {})",
            voter.subject,
            step.name,
            approvers.join(", ")
        )));
    }
    let is_approval_step = matches!(def.kind, StepKind::Approval { .. });
    if let Vote::RequestChanges(_) = vote
        && is_approval_step
        && index == 0
    {
        return Err(VoteRefusal::NothingToRework(format!(
            "step `{}` is the first step: there is no earlier step to run again",
            step.name
        )));
    }
    let Some(approval) = step.approval.clone() else {
        return Err(VoteRefusal::NotAwaitingApproval(format!("step `{}` waits for no approval", step.name)));
    };
    if let Vote::Approve(_) = vote
        && approval.approvals.iter().any(|v| v.subject == voter.subject)
    {
        return Ok(Decision::Unchanged);
    }

    let mut next = exec.clone();
    next.updated_at = now;
    let mut plan = Plan::default();
    let mut approval = approval;
    let comment = match vote {
        Vote::Approve(c) | Vote::Reject(c) => c.clone(),
        Vote::RequestChanges(f) => Some(f.clone()),
    };
    let cast = ApprovalVote { subject: voter.subject.clone(), at: now, comment: comment.clone() };
    match vote {
        Vote::Approve(_) => {
            approval.approvals.push(cast);
            let count = u32::try_from(approval.approvals.len()).unwrap_or(u32::MAX);
            plan.events.push(vote_event(&next, index, vote, &voter.subject, count, approval.required));
            if count >= approval.required {
                approval.status = ApprovalStatus::Approved;
                next.steps[index].approval = Some(approval.clone());
                if is_approval_step {
                    let by: Vec<Value> = approval.approvals.iter().map(|v| json!(v.subject)).collect();
                    next.steps[index].output = Some(json!({ "approved_by": by }));
                }
                steps::finish(&mut next, index, None, &mut plan, now, next_job_id);
            } else {
                next.steps[index].approval = Some(approval);
            }
        }
        Vote::Reject(reason) => {
            approval.status = ApprovalStatus::Rejected;
            approval.decided_by = Some(cast);
            plan.events.push(vote_event(&next, index, vote, &voter.subject, 0, approval.required));
            let step = &mut next.steps[index];
            step.approval = Some(approval);
            step.status = StepStatus::Failed;
            set_once(&mut step.finished_at, now);
            let message = match reason {
                Some(r) => format!("step `{}` was rejected by {}: {r}", step.name, voter.subject),
                None => format!("step `{}` was rejected by {}", step.name, voter.subject),
            };
            let failure = Failure {
                kind: FailureKind::Rejected,
                message,
                detail: reason.clone(),
                step: Some(step.name.clone()),
                exit_code: None,
                stderr_tail: None,
                run: next.run,
                occurred_at: now,
            };
            next.fail_into(failure, &mut plan, now);
        }
        Vote::RequestChanges(text) => {
            approval.status = ApprovalStatus::ChangesRequested;
            approval.decided_by = Some(cast);
            plan.events.push(vote_event(&next, index, vote, &voter.subject, 0, approval.required));
            next.steps[index].approval = Some(approval);
            let target = if is_approval_step { index - 1 } else { index };
            let feedback = Feedback { text: text.clone(), by: voter.subject.clone(), at: now, from_step: next.steps[index].name.clone() };
            rework(&mut next, target, index, feedback, &mut plan, now, next_job_id);
        }
    }
    let entry = AuditEntry { action: vote.name().to_string(), actor: voter.subject.clone(), reason: comment, at: now, run: next.run };
    push_capped(&mut next.audit, entry, MAX_AUDIT);
    plan.execution = Some(next);
    Ok(Decision::Apply(Box::new(plan)))
}

/// Runs step `target` again (through step `upto`) with `feedback` in its context.
fn rework(
    next: &mut Execution,
    target: usize,
    upto: usize,
    feedback: Feedback,
    plan: &mut Plan,
    now: Millis,
    next_job_id: &mut dyn FnMut() -> String,
) {
    for i in target..=upto {
        if let Some(output) = next.steps[i].output.clone() {
            let record = OutputRecord {
                step: next.steps[i].name.clone(),
                index: i,
                run: next.run,
                output,
                finished_at: next.steps[i].finished_at,
            };
            push_capped(&mut next.output_history, record, MAX_OUTPUT_HISTORY);
        }
        // The approval of the step that asked stays visible until its next round starts.
        let keep = (i == upto).then(|| next.steps[i].approval.clone()).flatten();
        next.steps[i].reset();
        next.steps[i].approval = keep;
    }
    next.steps[target].feedback = Some(feedback);
    if next.status == ExecutionStatus::Blocked {
        next.status = ExecutionStatus::Running;
    }
    if next.status == ExecutionStatus::Paused {
        next.current = target;
        return;
    }
    steps::enter(next, target, plan, now, next_job_id);
}

fn vote_event(exec: &Execution, index: usize, vote: &Vote, subject: &str, approvals: u32, required: u32) -> Event {
    Event::new(
        names::APPROVAL_VOTED,
        json!({
            "execution_id": exec.id, "run": exec.run, "step": index, "name": exec.steps[index].name,
            "vote": vote.name(), "subject": subject, "approvals": approvals, "required": required,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Driver, noop, step};

    fn approval(required: u32, approvers: &[&str]) -> crate::StepDef {
        step(
            "approve",
            StepKind::Approval { required_approvals: required, approvers: approvers.iter().map(|s| (*s).to_string()).collect() },
        )
    }

    fn voter(subject: &str, roles: &[&str]) -> Voter {
        Voter { subject: subject.into(), roles: roles.iter().map(|s| (*s).to_string()).collect() }
    }

    fn vote(d: &mut Driver, index: usize, v: &Vote, who: &Voter) -> Result<bool, VoteRefusal> {
        let exec = d.exec.clone();
        let now = d.now;
        let decision = plan_vote(&exec, index, v, who, now, &mut d.ids())?;
        match decision {
            Decision::Apply(plan) => {
                d.apply(*plan);
                Ok(true)
            }
            Decision::Unchanged => Ok(false),
        }
    }

    #[test]
    fn two_distinct_subjects_are_needed_and_a_repeat_counts_once() {
        let mut d = Driver::start(vec![noop("build"), approval(2, &[]), noop("deploy")]);
        d.complete(10, json!({"sha": "abc"}));
        assert_eq!(d.exec.status, ExecutionStatus::Blocked);
        assert!(d.job.is_none(), "an approval step runs no job");
        let alice = voter("alice", &["worker", "user"]);
        assert!(vote(&mut d, 1, &Vote::Approve(None), &alice).unwrap());
        assert!(!vote(&mut d, 1, &Vote::Approve(None), &alice).unwrap(), "same subject again changes nothing");
        assert_eq!(d.exec.status, ExecutionStatus::Blocked);
        vote(&mut d, 1, &Vote::Approve(Some("ship it".into())), &voter("bob", &["worker", "user"])).unwrap();
        assert_eq!(d.exec.status, ExecutionStatus::Running);
        assert_eq!(d.exec.steps[1].status, StepStatus::Succeeded);
        assert_eq!(d.exec.steps[1].output.as_ref().unwrap()["approved_by"], json!(["alice", "bob"]));
        assert_eq!(d.exec.current, 2);
        assert_eq!(d.job.as_ref().unwrap().kind, "noop");
        assert_eq!(d.exec.audit.len(), 2);
        assert_eq!(d.emitted(names::APPROVAL_VOTED), 2);
        assert_eq!(d.emitted(names::EXECUTION_BLOCKED), 1);
        assert!(matches!(
            vote(&mut d, 1, &Vote::Approve(None), &voter("carol", &[])),
            Err(VoteRefusal::NotAwaitingApproval(_))
        ));
    }

    #[test]
    fn approvers_policy_admits_listed_subjects_and_roles() {
        let mut d = Driver::start(vec![approval(1, &["role:admin", "release-manager"]), noop("deploy")]);
        assert!(matches!(
            vote(&mut d, 0, &Vote::Approve(None), &voter("mallory", &["worker", "user"])),
            Err(VoteRefusal::NotAnApprover(_))
        ));
        assert!(may_vote(&["release-manager".into()], &voter("release-manager", &[])));
        vote(&mut d, 0, &Vote::Approve(None), &voter("root", &["worker", "user", "admin"])).unwrap();
        assert_eq!(d.exec.current, 1);
    }

    #[test]
    fn reject_fails_with_kind_rejected() {
        let mut d = Driver::start(vec![approval(1, &[]), noop("deploy")]);
        vote(&mut d, 0, &Vote::Reject(Some("not today".into())), &voter("alice", &[])).unwrap();
        assert_eq!(d.exec.status, ExecutionStatus::Failed);
        let failure = d.exec.failure.clone().unwrap();
        assert_eq!(failure.kind, FailureKind::Rejected);
        assert!(failure.message.contains("not today"));
    }

    #[test]
    fn request_changes_reruns_the_previous_step_with_feedback_then_asks_again() {
        let mut d = Driver::start(vec![noop("draft"), approval(1, &[]), noop("publish")]);
        d.complete(10, json!({"v": 1}));
        let first_job = d.exec.steps[0].job_id.clone();
        vote(&mut d, 1, &Vote::RequestChanges("shorter please".into()), &voter("ed", &[])).unwrap();
        assert_eq!(d.exec.status, ExecutionStatus::Running);
        assert_eq!(d.exec.current, 0);
        assert_ne!(d.exec.steps[0].job_id, first_job, "a fresh job for the rework");
        assert_eq!(d.exec.context(0)["feedback"]["text"], "shorter please");
        assert_eq!(d.exec.output_history[0].output, json!({"v": 1}));
        d.complete(20, json!({"v": 2}));
        assert_eq!(d.exec.status, ExecutionStatus::Blocked, "a new approval is asked");
        assert_eq!(d.exec.steps[1].approval.as_ref().unwrap().status, ApprovalStatus::Pending);
        vote(&mut d, 1, &Vote::Approve(None), &voter("ed", &[])).unwrap();
        assert_eq!(d.exec.current, 2);

        let mut d = Driver::start(vec![approval(1, &[]), noop("x")]);
        assert!(matches!(
            vote(&mut d, 0, &Vote::RequestChanges("?".into()), &voter("ed", &[])),
            Err(VoteRefusal::NothingToRework(_))
        ));
    }

    #[test]
    fn requires_approval_parks_after_the_output_and_request_changes_reruns_the_step() {
        let mut build = noop("build");
        build.requires_approval = true;
        let mut d = Driver::start(vec![build, noop("deploy")]);
        d.complete(10, json!({"artifact": "a1"}));
        assert_eq!(d.exec.status, ExecutionStatus::Blocked);
        assert_eq!(d.exec.steps[0].status, StepStatus::Blocked);
        assert_eq!(d.exec.steps[0].output, Some(json!({"artifact": "a1"})));
        vote(&mut d, 0, &Vote::RequestChanges("use the other flag".into()), &voter("ed", &[])).unwrap();
        assert_eq!(d.exec.steps[0].status, StepStatus::Queued);
        assert_eq!(d.exec.context(0)["feedback"]["text"], "use the other flag");
        d.complete(20, json!({"artifact": "a2"}));
        assert_eq!(d.exec.status, ExecutionStatus::Blocked);
        vote(&mut d, 0, &Vote::Approve(None), &voter("ed", &[])).unwrap();
        assert_eq!(d.exec.steps[0].status, StepStatus::Succeeded);
        assert_eq!(d.exec.steps[0].output, Some(json!({"artifact": "a2"})));
        assert_eq!(d.exec.current, 1);
    }
}
