//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not a stable API).
//!
//! [`check_body`] runs a request body through everything its handler does before it
//! reaches the store: the JSON extractor and its rejections (415, 413, 400, 422), the
//! handler's own field checks, the domain checks behind them (a pipeline's validation, a
//! schedule's cadence and its next fire time, a schedule patch applied to a stored
//! schedule), and the rendering of the problem document. Nothing here needs Redis.

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::Value;
use sluice_core::schedule::{self, Schedule, Source};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiOptionalJson};
use crate::routes::{actions, approvals, executions, jobs, pipelines, workers};

/// A request body of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `PUT /v1/pipelines/{id}`.
    PipelineApply,
    /// `POST /v1/executions`.
    ExecutionStart,
    /// `POST /v1/jobs`.
    JobEnqueue,
    /// `POST /v1/queues/{q}/lease`.
    Lease,
    /// `POST /v1/jobs/{id}/heartbeat`.
    Heartbeat,
    /// `POST /v1/jobs/{id}/result`.
    Result,
    /// `POST /v1/schedules`.
    ScheduleCreate,
    /// `PATCH /v1/schedules/{id}`.
    SchedulePatch,
    /// `POST /v1/executions/{id}/cancel` (and retry, pause, resume).
    Action,
    /// `POST /v1/executions/{id}/restart`.
    Restart,
    /// `POST /v1/executions/{id}/steps/{step}/approve`.
    Approve,
    /// `POST /v1/executions/{id}/steps/{step}/reject`.
    Reject,
    /// `POST /v1/executions/{id}/steps/{step}/request-changes`.
    RequestChanges,
}

impl Operation {
    /// Every operation, so that a fuzz input's first byte can pick one.
    pub const ALL: &[Operation] = &[
        Operation::PipelineApply,
        Operation::ExecutionStart,
        Operation::JobEnqueue,
        Operation::Lease,
        Operation::Heartbeat,
        Operation::Result,
        Operation::ScheduleCreate,
        Operation::SchedulePatch,
        Operation::Action,
        Operation::Restart,
        Operation::Approve,
        Operation::Reject,
        Operation::RequestChanges,
    ];

    /// Whether an empty body reads as `{}` (the actions and votes, whose fields are all
    /// optional or carried by the path).
    fn optional_body(self) -> bool {
        matches!(
            self,
            Operation::Action
                | Operation::Restart
                | Operation::Approve
                | Operation::Reject
                | Operation::RequestChanges
        )
    }
}

/// The time the checks run at: a fixed instant (2026-03-29 00:30 UTC, the night Europe
/// changes to summer time), so that a crash reproduces.
const NOW: sluice_core::Millis = 1_774_744_200_000;

/// Runs `body`, sent with `content_type`, through the checks of `operation`, and answers
/// the status the API would answer if the body is refused, or `None` when it passes every
/// check made before the store.
///
/// # Panics
/// Never on its own: a panic is the bug the fuzz target looks for.
pub fn check_body(
    operation: Operation,
    content_type: Option<&str>,
    body: &[u8],
) -> Option<StatusCode> {
    let mut request = Request::builder().method("POST").uri("/v1/fuzz");
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let Ok(request) = request.body(axum::body::Body::from(body.to_vec())) else {
        // A content type that is not a valid header value: no request reaches a handler.
        return None;
    };
    let value = futures::executor::block_on(async {
        if operation.optional_body() {
            ApiOptionalJson::from_request(request, &())
                .await
                .map(|ApiOptionalJson(v)| v)
        } else {
            ApiJson::<Value>::from_request(request, &())
                .await
                .map(|ApiJson(v)| v)
        }
    });
    let refused = match value {
        Ok(value) => checks(operation, value).err(),
        Err(e) => Some(e),
    };
    refused.map(|e| e.into_response().status())
}

/// What the handler of `operation` checks before it reaches the store.
fn checks(operation: Operation, body: Value) -> Result<(), ApiError> {
    let invalid = |problems| ApiError::Validation { problems };
    match operation {
        Operation::PipelineApply => {
            pipelines::validate("fuzz", body)
                .map_err(|problems| ApiError::PipelineInvalid { problems })?;
        }
        Operation::ExecutionStart => {
            executions::parse_start(&body).map_err(invalid)?;
        }
        Operation::JobEnqueue => {
            jobs::parse_enqueue(&body, 4, NOW).map_err(invalid)?;
        }
        Operation::Lease => {
            workers::parse_lease(&body).map_err(invalid)?;
        }
        Operation::Heartbeat => {
            workers::parse_heartbeat(&body).map_err(invalid)?;
        }
        Operation::Result => {
            workers::parse_result(&body).map_err(invalid)?;
        }
        Operation::ScheduleCreate => {
            let spec = schedule::parse_spec(&body, "", None).map_err(invalid)?;
            let created = Schedule::new(spec, "fuzz".into(), Source::Api, NOW);
            if let Some(first) = created.next_run_at {
                schedule::plan_due(&created, first.saturating_add(3_600_000));
            }
        }
        Operation::SchedulePatch => {
            let patch = schedule::parse_patch(&body).map_err(invalid)?;
            for stored in stored_schedules() {
                stored.patched(&patch, NOW).map_err(invalid)?;
            }
        }
        Operation::Action => {
            let mut problems = Vec::new();
            actions::parse_reason(&body, actions::ACTION_FIELDS, &mut problems);
            if !problems.is_empty() {
                return Err(invalid(problems));
            }
        }
        Operation::Restart => {
            let mut problems = Vec::new();
            let (step, _) = actions::parse_restart(&body, &mut problems);
            if step.is_none() || !problems.is_empty() {
                return Err(invalid(problems));
            }
        }
        Operation::Approve => {
            approvals::text_field(&body, "comment", approvals::REASON_CHARS, false)?;
        }
        Operation::Reject => {
            approvals::text_field(&body, "reason", approvals::REASON_CHARS, true)?;
        }
        Operation::RequestChanges => {
            approvals::text_field(&body, "feedback", approvals::FEEDBACK_CHARS, true)?;
        }
    }
    Ok(())
}

/// A cron schedule and a windowed interval schedule, as a patch finds them in the store.
fn stored_schedules() -> Vec<Schedule> {
    let specs = [
        serde_json::json!({"name": "nightly", "pipeline": "p", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}),
        serde_json::json!({"name": "office", "pipeline": "p", "every": "90m", "weekdays": [1, 2, 3, 4, 5],
            "hours": "22-6", "timezone": "Asia/Kolkata"}),
    ];
    specs
        .iter()
        .filter_map(|s| schedule::parse_spec(s, "", None).ok())
        .map(|spec| Schedule::new(spec, "fuzz".into(), Source::Api, NOW))
        .collect()
}
