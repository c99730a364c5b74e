//! Human decisions on a step waiting for approval:
//! `POST /v1/executions/{id}/steps/{step}/approve`, `/reject` and `/request-changes`.
//!
//! The rules live in `sluice_core::approval`: one vote per subject, the step's `approvers`
//! policy, quorum, reject and rework. A handler reads the body, resolves `{step}` (a name or
//! an index from 0), names the voter from the caller's token, and renders the execution as
//! it now is. Every vote is an audit entry on the execution.

use axum::Json;
use axum::extract::State;
use serde_json::Value;
use sluice_core::approval::{Vote, Voter};
use sluice_core::{Execution, Problem, ids};
use sluice_store::engine::Acted;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::error::{
    ApiError, ExecutionNotFound, NotAnApprover, NotAwaitingApproval, NothingToRework, StepNotFound, ValidationFailed,
    quote,
};
use crate::extract::{ApiOptionalJson, ApiPath};
use crate::fields::Fields;
use crate::views;

/// Longest comment or reason, in characters.
pub(crate) const REASON_CHARS: std::ops::RangeInclusive<usize> = 1..=1000;
/// Longest feedback, in characters.
pub(crate) const FEEDBACK_CHARS: std::ops::RangeInclusive<usize> = 1..=10_000;

// Documentation only: the handlers check a JSON value field by field.
/// The body of an approval; may be empty.
#[derive(ToSchema)]
#[schema(as = ApproveBody, example = json!({"comment": "checked the canary dashboards"}))]
#[expect(dead_code, reason = "documentation only: the handler checks a JSON value")]
pub(crate) struct ApproveRequest {
    /// Recorded with the vote and in the audit log.
    #[schema(min_length = 1, max_length = 1000)]
    comment: Option<String>,
}

// Documentation only.
/// The body of a rejection.
#[derive(ToSchema)]
#[schema(as = RejectBody, example = json!({"reason": "error rate doubled on the canary"}))]
#[expect(dead_code, reason = "documentation only: the handler checks a JSON value")]
pub(crate) struct RejectRequest {
    /// Why; becomes the failure's detail and is recorded in the audit log.
    #[schema(min_length = 1, max_length = 1000)]
    reason: String,
}

// Documentation only.
/// The body of a request for changes.
#[derive(ToSchema)]
#[schema(as = RequestChangesBody, example = json!({"feedback": "bump the replica count to 3"}))]
#[expect(dead_code, reason = "documentation only: the handler checks a JSON value")]
pub(crate) struct RequestChangesRequest {
    /// What to change; the step that runs again sees it as `feedback` in its context.
    #[schema(min_length = 1, max_length = 10000)]
    feedback: String,
}

/// The voter a token stands for: its subject and every role up to its own.
fn voter(caller: &Caller) -> Voter {
    let roles = Role::ALL.iter().filter(|r| **r <= caller.role).map(|r| r.as_str().to_string()).collect();
    Voter { subject: caller.subject.clone(), roles }
}

/// The index of step `step` (a name, or an index from 0) of `exec`.
fn step_index(exec: &Execution, step: &str) -> Result<usize, ApiError> {
    let by_name = exec.steps.iter().position(|s| s.name == step);
    let by_index = step.parse::<usize>().ok().filter(|i| *i < exec.steps.len());
    by_name.or(by_index).ok_or_else(|| ApiError::StepNotFound {
        id: exec.id.clone(),
        step: quote(step),
        steps: exec.steps.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", "),
    })
}

/// Reads the body: at most `field` (required when `required`), nothing else.
pub(crate) fn text_field(body: &Value, field: &str, chars: std::ops::RangeInclusive<usize>, required: bool) -> Result<Option<String>, ApiError> {
    let mut problems: Vec<Problem> = Vec::new();
    let text = Fields::object(body, "", &mut problems).and_then(|f| {
        f.only(&[field], &mut problems);
        if required { f.required_string(field, chars, false, &mut problems) } else { f.string(field, chars, false, &mut problems) }
    });
    if problems.is_empty() { Ok(text.map(str::to_string)) } else { Err(ApiError::Validation { problems }) }
}

/// Casts `vote` by the caller on `{step}` of execution `id`.
async fn cast(state: &AppState, id: &str, step: &str, vote: Vote, caller: &Caller) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::ExecutionNotFound { id: quote(id) };
    if ids::parse(id, ids::EXECUTION).is_err() {
        return Err(not_found());
    }
    let store = state.engine.store();
    let exec = store.get_execution(id).await?.ok_or_else(not_found)?;
    let index = step_index(&exec, step)?;
    let step_name = exec.steps[index].name.clone();
    let exec = match state.engine.vote(id, index, &vote, &voter(caller)).await? {
        Acted::Applied(exec) => {
            tracing::info!(
                execution.id = %exec.id, step = %step_name, vote = vote.name(), actor = %caller.subject,
                status = exec.status.as_str(), "approval vote recorded"
            );
            *exec
        }
        Acted::Unchanged(exec) => *exec,
        Acted::Refused(refusal) => return Err(ApiError::VoteRefused { id: id.to_string(), step: step_name, refusal }),
        Acted::TargetBusy { target, holder } => return Err(ApiError::TargetBusy { target: quote(&target), holder }),
        Acted::NotFound => return Err(not_found()),
    };
    Ok(Json(views::execution(store, exec, false).await?))
}

/// Approve a step.
///
/// One vote per subject (a repeat changes nothing and answers 200). Once
/// `required_approvals` distinct subjects approved, the step succeeds and the execution goes
/// on. A step listing `approvers` only takes votes from those subjects and roles.
#[utoipa::path(
    post, path = "/v1/executions/{id}/steps/{step}/approve", tag = "approvals",
    operation_id = "controlPlane.execution.approve", request_body = ApproveRequest,
    params(
        ("id" = String, Path, description = "The execution id."),
        ("step" = String, Path, description = "The step: its name, or its index from 0."),
    ),
    responses(
        (status = OK, description = "The execution with the vote counted.", body = crate::views::ExecutionView),
        (status = NOT_FOUND, response = inline(ExecutionNotFound)),
        (status = NOT_FOUND, response = inline(StepNotFound)),
        (status = FORBIDDEN, response = inline(NotAnApprover)),
        (status = CONFLICT, response = inline(NotAwaitingApproval)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn approve(
    State(state): State<AppState>,
    ApiPath((id, step)): ApiPath<(String, String)>,
    caller: Caller,
    ApiOptionalJson(body): ApiOptionalJson,
) -> Result<Json<Value>, ApiError> {
    let comment = text_field(&body, "comment", REASON_CHARS, false)?;
    cast(&state, &id, &step, Vote::Approve(comment), &caller).await
}

/// Reject a step.
///
/// The step fails and the execution fails with kind `rejected`; `reason` becomes the
/// failure's detail.
#[utoipa::path(
    post, path = "/v1/executions/{id}/steps/{step}/reject", tag = "approvals",
    operation_id = "controlPlane.execution.reject", request_body = RejectRequest,
    params(
        ("id" = String, Path, description = "The execution id."),
        ("step" = String, Path, description = "The step: its name, or its index from 0."),
    ),
    responses(
        (status = OK, description = "The execution, failed with kind `rejected`.", body = crate::views::ExecutionView),
        (status = NOT_FOUND, response = inline(ExecutionNotFound)),
        (status = NOT_FOUND, response = inline(StepNotFound)),
        (status = FORBIDDEN, response = inline(NotAnApprover)),
        (status = CONFLICT, response = inline(NotAwaitingApproval)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn reject(
    State(state): State<AppState>,
    ApiPath((id, step)): ApiPath<(String, String)>,
    caller: Caller,
    ApiOptionalJson(body): ApiOptionalJson,
) -> Result<Json<Value>, ApiError> {
    let reason = text_field(&body, "reason", REASON_CHARS, true)?;
    cast(&state, &id, &step, Vote::Reject(reason), &caller).await
}

/// Request changes on a step.
///
/// The step (for an `approval` step, the step before it) runs again with `feedback` in its
/// context (`SLUICE_CONTEXT` → `feedback`); the approval is asked again afterwards. The
/// outputs it replaces move to `output_history`.
#[utoipa::path(
    post, path = "/v1/executions/{id}/steps/{step}/request-changes", tag = "approvals",
    operation_id = "controlPlane.execution.requestChanges", request_body = RequestChangesRequest,
    params(
        ("id" = String, Path, description = "The execution id."),
        ("step" = String, Path, description = "The step: its name, or its index from 0."),
    ),
    responses(
        (status = OK, description = "The execution, running the step again.", body = crate::views::ExecutionView),
        (status = NOT_FOUND, response = inline(ExecutionNotFound)),
        (status = NOT_FOUND, response = inline(StepNotFound)),
        (status = FORBIDDEN, response = inline(NotAnApprover)),
        (status = CONFLICT, response = inline(NotAwaitingApproval)),
        (status = CONFLICT, response = inline(NothingToRework)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn request_changes(
    State(state): State<AppState>,
    ApiPath((id, step)): ApiPath<(String, String)>,
    caller: Caller,
    ApiOptionalJson(body): ApiOptionalJson,
) -> Result<Json<Value>, ApiError> {
    let feedback = text_field(&body, "feedback", FEEDBACK_CHARS, true)?.unwrap_or_default();
    cast(&state, &id, &step, Vote::RequestChanges(feedback), &caller).await
}
