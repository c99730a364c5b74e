//! `POST /v1/executions` (`controlPlane.execution.start`) and `GET /v1/executions/{id}`.
//!
//! A start snapshots the pipeline's current version and, in one atomic store write, claims
//! the target's live slot and the idempotency key and enqueues the first step's job. The
//! answer says which of the three things happened: a new execution (201), the execution an
//! earlier start with the same idempotency key made (200), or a busy target (409).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_core::execution::StartRequest;
use sluice_core::{Problem, ids};
use sluice_store::StartOutcome;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{
    ApiError, BadRequest, ExecutionNotFound, PipelineNotFound, TargetBusy, ValidationFailed, quote,
};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::fields::{Fields, kind_of};
use crate::views::{self, ExecutionView};

/// Fields of a start body.
const START_FIELDS: &[&str] = &["pipeline", "input", "target", "idempotency_key"];
/// Longest pipeline id accepted in a start (ids are shorter; this bounds what is quoted).
const PIPELINE_ID_CHARS: usize = 200;
/// Bounds of `target` and `idempotency_key`, in characters.
const KEY_CHARS: std::ops::RangeInclusive<usize> = 1..=200;

// Documentation only: `parse_start` reads the body field by field; a test checks that these
// fields are `START_FIELDS`.
/// The body of `POST /v1/executions`. `null` reads as an absent field.
#[derive(ToSchema)]
#[schema(as = StartExecution, example = json!({
    "pipeline": "release", "input": {"sha": "4f2a9c1"}, "target": "repo:acme/web",
    "idempotency_key": "deploy-4f2a9c1"
}))]
#[expect(
    dead_code,
    reason = "documentation only: the handler checks a JSON value"
)]
pub(crate) struct StartExecutionRequest {
    /// The id of the pipeline to run; its current version is snapshotted.
    #[schema(min_length = 1, max_length = 200)]
    pipeline: String,
    /// The input the steps' placeholders read (`{{ input.… }}`); default `{}`.
    input: Option<BTreeMap<String, Value>>,
    /// At most one live execution per target; a start on a busy target is refused (409).
    #[schema(min_length = 1, max_length = 200)]
    target: Option<String>,
    /// Starts with the same key return the execution the first one made.
    #[schema(min_length = 1, max_length = 200)]
    idempotency_key: Option<String>,
}

/// A checked start body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StartBody {
    pipeline: String,
    input: Value,
    target: Option<String>,
    idempotency_key: Option<String>,
}

/// Reads a start body, reporting every problem.
pub(crate) fn parse_start(body: &Value) -> Result<StartBody, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(f) = Fields::object(body, "", &mut problems) else {
        return Err(problems);
    };
    f.only(START_FIELDS, &mut problems);
    let pipeline = f.required_string("pipeline", 1..=PIPELINE_ID_CHARS, true, &mut problems);
    let input = match f.get("input") {
        None => Some(Value::Object(Map::new())),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(other) => {
            problems.push(Problem::new(
                "input",
                format!("must be a JSON object, not {}", kind_of(other)),
            ));
            None
        }
    };
    let target = f.string("target", KEY_CHARS, true, &mut problems);
    let idempotency_key = f.string("idempotency_key", KEY_CHARS, false, &mut problems);
    match (pipeline, input) {
        (Some(pipeline), Some(input)) if problems.is_empty() => Ok(StartBody {
            pipeline: pipeline.to_string(),
            input,
            target: target.map(str::to_string),
            idempotency_key: idempotency_key.map(str::to_string),
        }),
        _ => Err(problems),
    }
}

/// Start an execution.
///
/// Snapshots the pipeline's current version and, in one atomic write, claims the target,
/// records the idempotency key and queues the first step's job. Answers 201 with the new
/// execution, or 200 with the one an earlier start with the same idempotency key made.
#[utoipa::path(
    post, path = "/v1/executions", tag = "executions",
    operation_id = "controlPlane.execution.start", request_body = StartExecutionRequest,
    responses(
        (status = CREATED, description = "A new execution.", body = ExecutionView,
            headers(("Location" = String, description = "`/v1/executions/{id}`"))),
        (status = OK, body = ExecutionView,
            description = "The execution an earlier start with the same `idempotency_key` made."),
        (status = NOT_FOUND, response = inline(PipelineNotFound)),
        (status = CONFLICT, response = inline(TargetBusy)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn start(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let body = parse_start(&body).map_err(|problems| ApiError::Validation { problems })?;
    let store = state.engine.store();
    let Some(stored) = store.get_pipeline(&body.pipeline).await? else {
        return Err(ApiError::PipelineNotFound {
            id: quote(&body.pipeline),
        });
    };
    let target = body.target.clone();
    let request = StartRequest {
        pipeline: stored.pipeline,
        pipeline_version: stored.version,
        input: body.input,
        target: body.target,
        idempotency_key: body.idempotency_key,
    };
    match store.start_execution(request, state.engine.now()).await? {
        StartOutcome::Started(exec) => {
            tracing::info!(
                execution.id = %exec.id, pipeline.id = %exec.pipeline_id,
                pipeline.version = exec.pipeline_version, target = ?exec.target,
                "execution started"
            );
            let location = format!("/v1/executions/{}", exec.id);
            let view = views::execution(store, exec, false).await?;
            Ok((
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(view),
            )
                .into_response())
        }
        StartOutcome::Existing(exec) => {
            Ok(Json(views::execution(store, exec, false).await?).into_response())
        }
        StartOutcome::Busy { holder } => Err(ApiError::TargetBusy {
            target: target.as_deref().map(quote).unwrap_or_default(),
            holder,
        }),
    }
}

/// Query of `GET /v1/executions/{id}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViewQuery {
    /// Comma-separated extras; `pipeline` adds the pipeline snapshot. Anything else is
    /// refused (400 `BAD_REQUEST`).
    #[serde(default)]
    #[param(example = "pipeline")]
    pub include: Option<String>,
}

/// Whether `include` asks for the pipeline snapshot; anything unknown is refused.
fn includes_pipeline(include: Option<&str>) -> Result<bool, ApiError> {
    let mut pipeline = false;
    for part in include
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part {
            "pipeline" => pipeline = true,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown value `{}` in `include`; expected `pipeline`",
                    quote(other)
                )));
            }
        }
    }
    Ok(pipeline)
}

/// Get an execution.
///
/// The execution with its current step's job state folded in (a leased job shows its step
/// as `running`); the pipeline snapshot only with `?include=pipeline`.
#[utoipa::path(
    get, path = "/v1/executions/{id}", tag = "executions",
    operation_id = "controlPlane.execution.get",
    params(
        ("id" = String, Path, description = "The execution id (`ex_<shard>_<ULID>`)."),
        ViewQuery,
    ),
    responses(
        (status = OK, description = "The execution.", body = ExecutionView),
        (status = BAD_REQUEST, response = inline(BadRequest)),
        (status = NOT_FOUND, response = inline(ExecutionNotFound)),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ViewQuery>,
) -> Result<Json<Value>, ApiError> {
    let include_pipeline = includes_pipeline(query.include.as_deref())?;
    let not_found = || ApiError::ExecutionNotFound { id: quote(&id) };
    if ids::parse(&id, ids::EXECUTION).is_err() {
        return Err(not_found());
    }
    let store = state.engine.store();
    match store.get_execution(&id).await {
        Ok(Some(exec)) => Ok(Json(views::execution(store, exec, include_pipeline).await?)),
        Ok(None) | Err(sluice_store::StoreError::BadId(_)) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::openapi::property_names;

    #[test]
    fn a_minimal_start_body_defaults_input_to_an_empty_object() {
        let body = parse_start(&json!({"pipeline": "p"})).unwrap();
        assert_eq!(body.input, json!({}));
        assert_eq!((body.target, body.idempotency_key), (None, None));
    }

    #[test]
    fn every_problem_of_a_start_body_is_reported() {
        let problems = parse_start(&json!({
            "input": [1], "target": "a\nb", "idempotency_key": "", "colour": "blue"
        }))
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["colour", "pipeline", "input", "target", "idempotency_key"]
        );
    }

    #[test]
    fn the_documented_start_fields_are_the_ones_the_handler_accepts() {
        let accepted: BTreeSet<String> = START_FIELDS.iter().map(|f| f.to_string()).collect();
        assert_eq!(property_names::<StartExecutionRequest>(), accepted);
    }

    #[test]
    fn include_accepts_pipeline_and_refuses_the_rest() {
        assert!(!includes_pipeline(None).unwrap());
        assert!(includes_pipeline(Some("pipeline")).unwrap());
        assert!(includes_pipeline(Some(" pipeline ,")).unwrap());
        assert!(includes_pipeline(Some("jobs")).is_err());
    }
}
