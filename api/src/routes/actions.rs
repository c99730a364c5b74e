//! Operator actions on an execution: `POST /v1/executions/{id}/cancel`, `/retry`,
//! `/restart`, `/pause`, `/resume`; its events (`GET /v1/executions/{id}/events`); and the
//! listing `GET /v1/executions`.
//!
//! The rules live in `sluice_core::control`; a handler reads the body, names the caller (the
//! audit entry's actor), asks the engine to act, and renders the execution as it now is.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use sluice_core::control::{Action, Operator};
use sluice_core::{ExecutionStatus, Problem, ids};
use sluice_store::engine::Acted;
use sluice_store::{ExecutionFilter, ListCursor};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{
    ApiError, BadRequest, ExecutionNotFound, ExecutionNotPausable, ExecutionNotPaused, ExecutionNotRetryable,
    StepOutOfRange, TargetBusy, ValidationFailed, quote,
};
use crate::extract::{ApiOptionalJson, ApiPath, ApiQuery};
use crate::fields::Fields;
use crate::views::{self, EventView, ExecutionView};

/// Longest `reason` accepted, in characters.
pub(crate) const REASON_CHARS: std::ops::RangeInclusive<usize> = 1..=1000;
/// Fields of an action body.
pub(crate) const ACTION_FIELDS: &[&str] = &["reason"];
/// Fields of a restart body.
pub(crate) const RESTART_FIELDS: &[&str] = &["from_step", "reason"];

// Documentation only: `parse_action` reads the body field by field.
/// The body of an operator action; may be empty.
#[derive(ToSchema)]
#[schema(as = ActionBody, example = json!({"reason": "superseded by build 43"}))]
#[expect(dead_code, reason = "documentation only: the handler checks a JSON value")]
pub(crate) struct ActionRequest {
    /// Why; recorded in the execution's audit log.
    #[schema(min_length = 1, max_length = 1000)]
    reason: Option<String>,
}

// Documentation only: `parse_restart` reads the body field by field.
/// The body of `POST /v1/executions/{id}/restart`.
#[derive(ToSchema)]
#[schema(as = RestartBody, example = json!({"from_step": "deploy", "reason": "config fixed"}))]
#[expect(dead_code, reason = "documentation only: the handler checks a JSON value")]
pub(crate) struct RestartRequest {
    /// The step to run again from: its name, or its index (from 0).
    from_step: Value,
    /// Why; recorded in the execution's audit log.
    #[schema(min_length = 1, max_length = 1000)]
    reason: Option<String>,
}

/// Reads `reason` (and checks the other fields are `known`).
pub(crate) fn parse_reason(body: &Value, known: &[&str], problems: &mut Vec<Problem>) -> Option<String> {
    let f = Fields::object(body, "", problems)?;
    f.only(known, problems);
    f.string("reason", REASON_CHARS, false, problems).map(str::to_string)
}

fn operator(caller: Caller, reason: Option<String>) -> Operator {
    Operator { subject: caller.subject, reason }
}

/// Carries out `action` and renders the answer.
async fn act(state: &AppState, id: &str, action: Action, operator: &Operator) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::ExecutionNotFound { id: quote(id) };
    if ids::parse(id, ids::EXECUTION).is_err() {
        return Err(not_found());
    }
    let store = state.engine.store();
    let exec = match state.engine.act(id, action, operator).await? {
        Acted::Applied(exec) => {
            tracing::info!(
                execution.id = %exec.id, action = action.name(), actor = %operator.subject,
                run = exec.run, status = exec.status.as_str(), "operator action applied"
            );
            *exec
        }
        Acted::Unchanged(exec) => *exec,
        Acted::Refused(refusal) => return Err(ApiError::Refused { id: id.to_string(), refusal }),
        Acted::TargetBusy { target, holder } => return Err(ApiError::TargetBusy { target: quote(&target), holder }),
        Acted::NotFound => return Err(not_found()),
    };
    Ok(Json(views::execution(store, exec, false).await?))
}

/// Runs a simple action (its body carries only an optional `reason`).
async fn simple(state: &AppState, id: &str, body: &Value, caller: Caller, action: Action) -> Result<Json<Value>, ApiError> {
    let mut problems = Vec::new();
    let reason = parse_reason(body, ACTION_FIELDS, &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::Validation { problems });
    }
    act(state, id, action, &operator(caller, reason)).await
}

/// Cancel an execution.
///
/// A running, blocked or paused execution becomes `cancelled`: its pending job is cancelled
/// and a running one is killed by its worker (SIGTERM, then SIGKILL after the grace period).
/// A terminal execution is returned unchanged (200).
#[utoipa::path(
    post, path = "/v1/executions/{id}/cancel", tag = "executions",
    operation_id = "controlPlane.execution.cancel", request_body = ActionRequest,
    params(("id" = String, Path, description = "The execution id.")),
    responses(
        (status = OK, description = "The execution, cancelled (or unchanged if it had ended).", body = ExecutionView),
        (status = NOT_FOUND, response = inline(ExecutionNotFound)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    caller: Caller,
    ApiOptionalJson(body): ApiOptionalJson,
) -> Result<Json<Value>, ApiError> {
    simple(&state, &id, &body, caller, Action::Cancel).await
}

/// Retry a failed or cancelled execution.
///
/// The same execution (same id, `run` + 1) resumes at its first step that did not succeed;
/// succeeded steps keep their outputs and never run again; the failure moves to
/// `failure_history`.
#[utoipa::path(
    post, path = "/v1/executions/{id}/retry", tag = "executions",
    operation_id = "controlPlane.execution.retry", request_body = ActionRequest,
    params(("id" = String, Path, description = "The execution id.")),
    responses(
        (status = OK, description = "The execution, running again.", body = ExecutionView),
        (status = NOT_FOUND, response = inline(ExecutionNotFound)),
        (status = CONFLICT, response = inline(ExecutionNotRetryable)),
        (status = CONFLICT, response = inline(TargetBusy)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    caller: Caller,
    ApiOptionalJson(body): ApiOptionalJson,
) -> Result<Json<Value>, ApiError> {
    simple(&state, &id, &body, caller, Action::Retry).await
}

/// Pause an execution.
///
/// A running or blocked execution becomes `paused`, taking effect at the next step boundary:
/// a job in flight still runs and its result is recorded; the next step waits for resume.
#[utoipa::path(
    post, path = "/v1/executions/{id}/pause", tag = "executions",
    operation_id = "workflow.instance.pause", request_body = ActionRequest,
    params(("id" = String, Path, description = "The execution id.")),
    responses(
        (status = OK, description = "The execution, paused.", body = ExecutionView),
        (status = NOT_FOUND, response = inline(ExecutionNotFound)),
        (status = CONFLICT, response = inline(ExecutionNotPausable)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn pause(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    caller: Caller,
    ApiOptionalJson(body): ApiOptionalJson,
) -> Result<Json<Value>, ApiError> {
    simple(&state, &id, &body, caller, Action::Pause).await
}

/// Resume a paused execution.
///
/// It becomes `running` again (or `blocked` if its step waits for a human), and the step
/// the pause held back is queued. Emits `workflow.instance.resumed`.
#[utoipa::path(
    post, path = "/v1/executions/{id}/resume", tag = "executions",
    operation_id = "workflow.instance.resume", request_body = ActionRequest,
    params(("id" = String, Path, description = "The execution id.")),
    responses(
        (status = OK, description = "The execution, resumed.", body = ExecutionView),
        (status = NOT_FOUND, response = inline(ExecutionNotFound)),
        (status = CONFLICT, response = inline(ExecutionNotPaused)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn resume(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    caller: Caller,
    ApiOptionalJson(body): ApiOptionalJson,
) -> Result<Json<Value>, ApiError> {
    simple(&state, &id, &body, caller, Action::Resume).await
}

/// The step a restart names: an index, or a step name looked up in the execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StepRef {
    Index(usize),
    Name(String),
}

pub(crate) fn parse_restart(body: &Value, problems: &mut Vec<Problem>) -> (Option<StepRef>, Option<String>) {
    let reason = parse_reason(body, RESTART_FIELDS, problems);
    let step = match body.get("from_step") {
        None | Some(Value::Null) => {
            problems.push(Problem::new("from_step", "is required: a step name or its index (from 0)"));
            None
        }
        Some(Value::String(name)) if !name.is_empty() => Some(StepRef::Name(name.clone())),
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(i) => Some(StepRef::Index(i)),
            None => {
                problems.push(Problem::new("from_step", "must be a step index of 0 or more"));
                None
            }
        },
        Some(other) => {
            problems.push(Problem::new(
                "from_step",
                format!("must be a step name or index, not {}", crate::fields::kind_of(other)),
            ));
            None
        }
    };
    (step, reason)
}

/// Restart an execution from a step.
///
/// Any status. In-flight work is stopped first; steps before `from_step` keep their outputs
/// (each must have succeeded); outputs of the reset steps move to `output_history`; same id,
/// `run` + 1.
#[utoipa::path(
    post, path = "/v1/executions/{id}/restart", tag = "executions",
    operation_id = "controlPlane.execution.restart", request_body = RestartRequest,
    params(("id" = String, Path, description = "The execution id.")),
    responses(
        (status = OK, description = "The execution, running from the chosen step.", body = ExecutionView),
        (status = NOT_FOUND, response = inline(ExecutionNotFound)),
        (status = CONFLICT, response = inline(TargetBusy)),
        (status = UNPROCESSABLE_ENTITY, response = inline(StepOutOfRange)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn restart(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    caller: Caller,
    ApiOptionalJson(body): ApiOptionalJson,
) -> Result<Json<Value>, ApiError> {
    let mut problems = Vec::new();
    let (step, reason) = parse_restart(&body, &mut problems);
    let Some(step) = step.filter(|_| problems.is_empty()) else {
        return Err(ApiError::Validation { problems });
    };
    let from = match step {
        StepRef::Index(i) => i,
        StepRef::Name(name) => {
            let exec = match state.engine.store().get_execution(&id).await {
                Ok(Some(e)) => e,
                Ok(None) | Err(sluice_store::StoreError::BadId(_)) => {
                    return Err(ApiError::ExecutionNotFound { id: quote(&id) });
                }
                Err(e) => return Err(e.into()),
            };
            let Some(i) = exec.steps.iter().position(|s| s.name == name) else {
                let names: Vec<&str> = exec.steps.iter().map(|s| s.name.as_str()).collect();
                return Err(ApiError::Refused {
                    id: id.clone(),
                    refusal: sluice_core::control::Refusal::StepOutOfRange(format!(
                        "no step is named `{}`; the steps are {}",
                        quote(&name),
                        names.join(", ")
                    )),
                });
            };
            i
        }
    };
    act(&state, &id, Action::Restart { from }, &operator(caller, reason)).await
}

/// Query of `GET /v1/executions`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only executions in this status (`running`, `blocked`, `paused`, `completed`,
    /// `failed`, `cancelled`).
    pub status: Option<String>,
    /// Only executions of this pipeline.
    pub pipeline: Option<String>,
    /// Only executions of this target.
    pub target: Option<String>,
    /// Where to continue: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 20).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

// Documentation only: `list` builds the page from the views.
/// A page of executions.
#[derive(ToSchema)]
#[schema(as = ExecutionPage)]
#[expect(dead_code, reason = "documentation only: the handler builds the JSON")]
pub(crate) struct ExecutionPage {
    /// Newest first, without their pipeline snapshots.
    items: Vec<ExecutionView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// List executions.
///
/// Newest first, filtered by status, pipeline and target, a page at a time; follow
/// `next_cursor` for the next page.
#[utoipa::path(
    get, path = "/v1/executions", tag = "executions",
    operation_id = "controlPlane.execution.list",
    params(ListQuery),
    responses(
        (status = OK, description = "A page of executions.", body = ExecutionPage),
        (status = BAD_REQUEST, response = inline(BadRequest)),
    ),
)]
pub async fn list(State(state): State<AppState>, ApiQuery(query): ApiQuery<ListQuery>) -> Result<Json<Value>, ApiError> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(ExecutionStatus::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            let known: BTreeSet<&str> = ExecutionStatus::ALL.iter().map(|x| x.as_str()).collect();
            ApiError::BadRequest(format!(
                "unknown `status` `{}`; expected one of {}",
                quote(s),
                known.into_iter().collect::<Vec<_>>().join(", ")
            ))
        })?),
    };
    let cursor = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(ListCursor::parse(c).ok_or_else(|| {
            ApiError::BadRequest(format!("`cursor` `{}` is not a cursor this API gave out", quote(c)))
        })?),
    };
    let limit = super::page_size(query.limit)?;
    let filter = ExecutionFilter { status, pipeline: query.pipeline.filter(|p| !p.is_empty()), target: query.target.filter(|t| !t.is_empty()) };
    let store = state.engine.store();
    let page = store.list_executions(&filter, cursor.as_ref(), limit).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for exec in page.items {
        items.push(views::execution(store, exec, false).await?);
    }
    Ok(Json(serde_json::json!({ "items": items, "next_cursor": page.next_cursor })))
}

// Documentation only: `events` builds the list.
/// An execution's events.
#[derive(ToSchema)]
#[schema(as = EventList)]
#[expect(dead_code, reason = "documentation only: the handler builds the JSON")]
pub(crate) struct EventList {
    /// Oldest first (the newest 1 000).
    items: Vec<EventView>,
}

/// List an execution's events.
///
/// Every event about the execution, oldest first: its steps, its jobs, operator actions.
#[utoipa::path(
    get, path = "/v1/executions/{id}/events", tag = "events",
    operation_id = "controlPlane.execution.events",
    params(("id" = String, Path, description = "The execution id.")),
    responses(
        (status = OK, description = "The events.", body = EventList),
        (status = NOT_FOUND, response = inline(ExecutionNotFound)),
    ),
)]
pub async fn events(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::ExecutionNotFound { id: quote(&id) };
    if ids::parse(&id, ids::EXECUTION).is_err() {
        return Err(not_found());
    }
    let store = state.engine.store();
    if store.get_execution(&id).await?.is_none() {
        return Err(not_found());
    }
    let items = store.execution_events(&id).await?;
    Ok(Json(serde_json::json!({ "items": items })))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::openapi::property_names;

    #[test]
    fn the_documented_action_fields_are_the_ones_the_handlers_accept() {
        let set = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(property_names::<ActionRequest>(), set(ACTION_FIELDS));
        assert_eq!(property_names::<RestartRequest>(), set(RESTART_FIELDS));
    }

    #[test]
    fn restart_bodies_name_a_step_by_name_or_index() {
        let mut p = Vec::new();
        assert_eq!(parse_restart(&json!({"from_step": 2}), &mut p).0, Some(StepRef::Index(2)));
        assert_eq!(parse_restart(&json!({"from_step": "build"}), &mut p).0, Some(StepRef::Name("build".into())));
        assert!(p.is_empty());
        parse_restart(&json!({"from_step": -1, "reason": "", "x": 1}), &mut p);
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["x", "reason", "from_step"]);
    }
}
