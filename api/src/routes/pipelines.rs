//! `PUT /v1/pipelines/{id}`, `GET /v1/pipelines`, `GET /v1/pipelines/{id}`.
//!
//! Apply takes the pipeline in its JSON file form (durations as `"10s"`; the canonical form
//! with `timeout_ms` is accepted too), validates all of it with
//! [`sluice_core::pipeline::from_value`] and stores a new version only when the canonical
//! form changed. The body's `id` must equal the path's; when the body has none, the path's
//! is used.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sluice_core::pipeline::{self, KINDS};
use sluice_core::{Backoff, Problem};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use crate::AppState;
use crate::error::{ApiError, PipelineInvalid, PipelineNotFound, quote};
use crate::extract::{ApiJson, ApiPath};
use crate::fields::kind_of;
use crate::views::{PipelineApplied, PipelineList, PipelineSummary, PipelineView};

// Documentation only, like `StepDocument` and `RetryDocument`: `pipeline::from_value` reads
// the body; a test checks that these fields are the ones it accepts.
/// A pipeline document as `PUT /v1/pipelines/{id}` takes it: the file form, with durations
/// written like `30s` (the canonical form the API answers with is accepted too). Every
/// problem of a document is reported at once.
#[derive(ToSchema)]
#[schema(as = PipelineDocument, example = json!({
    "name": "Release",
    "steps": [
        {"name": "build", "kind": "command", "run": ["make", "build"], "timeout": "10m"},
        {"name": "deploy", "kind": "command", "run": ["./deploy", "{{ steps.build.output.url }}"],
         "retry": {"max_attempts": 5, "backoff": "exponential", "initial": "2s", "max": "1m"}}
    ]
}))]
#[expect(
    dead_code,
    reason = "documentation only: the handler validates a JSON value"
)]
pub(crate) struct PipelineDocument {
    /// Lowercase letters, digits, `-`, `_`, `.`; 1 to 64 characters, starting with a
    /// letter or digit. Must equal the path's id; defaults to it.
    #[schema(required = false)]
    id: String,
    /// Human name (at most 200 characters); defaults to the id.
    #[schema(required = false)]
    name: String,
    /// Free text.
    #[schema(required = false)]
    description: String,
    /// The ordered steps (1 to 256), with unique names.
    #[schema(min_items = 1, max_items = 256)]
    steps: Vec<StepDocument>,
}

/// One step of a pipeline document. The common fields apply to every kind; `run`, `env`
/// and `cwd` belong to `command` steps, `output` to `noop` steps. `run`, `env` values and
/// `cwd` may hold `{{ … }}` placeholders naming the input, the execution or earlier steps.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documentation only: the handler validates a JSON value"
)]
pub(crate) struct StepDocument {
    /// Unique within the pipeline: letters, digits, `-`, `_`; 1 to 64 characters.
    name: String,
    /// What the step does.
    #[schema(schema_with = step_kind_schema)]
    kind: String,
    /// Queue whose workers run the step's job: letters, digits, `-`, `_`, `.`; 1 to 64
    /// characters. Default `default`.
    #[schema(required = false)]
    queue: String,
    /// Time limit of one attempt, as a duration such as `30s`, `5m` or `1h30m`.
    #[schema(required = false, example = "10m")]
    timeout: String,
    /// Time limit of one attempt in milliseconds (the canonical form of `timeout`; give
    /// one of the two).
    #[schema(required = false, minimum = 1)]
    timeout_ms: u64,
    /// Retry policy of the step's job.
    #[schema(required = false)]
    retry: RetryDocument,
    /// Park for a human after the step (not available in this release: only `false`).
    #[schema(required = false)]
    requires_approval: bool,
    /// `command`: the program and its arguments (at least the program).
    #[schema(required = false, min_items = 1)]
    run: Vec<String>,
    /// `command`: extra environment variables (names starting with `SLUICE_` are reserved).
    #[schema(required = false)]
    env: BTreeMap<String, String>,
    /// `command`: the working directory.
    #[schema(required = false)]
    cwd: String,
    /// `noop`: the output recorded for the step (default `null`).
    #[schema(required = false)]
    output: Value,
}

/// A retry policy in a pipeline document. Durations are written like `30s`; the
/// canonical `…_ms` fields are accepted instead.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documentation only: the handler validates a JSON value"
)]
pub(crate) struct RetryDocument {
    /// Attempts in total, including the first (1 to 100; default 3).
    #[schema(required = false, minimum = 1, maximum = 100)]
    max_attempts: u32,
    /// Growth of the delay between attempts (default `exponential`).
    #[schema(required = false)]
    backoff: Backoff,
    /// Delay after the first failed attempt (default `1s`).
    #[schema(required = false, example = "1s")]
    initial: String,
    /// `initial` in milliseconds.
    #[schema(required = false)]
    initial_ms: u64,
    /// Upper bound of any delay (default `1m`).
    #[schema(required = false, example = "1m")]
    max: String,
    /// `max` in milliseconds.
    #[schema(required = false)]
    max_ms: u64,
    /// Spread delays by ±20 % (default `true`).
    #[schema(required = false)]
    jitter: bool,
}

/// The schema of a step's `kind`: one of the kinds this release runs.
fn step_kind_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(KINDS.iter().copied()))
        .build()
}

/// Checks the body against the path id and validates it; every problem is collected.
fn validate(path_id: &str, mut body: Value) -> Result<sluice_core::Pipeline, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(map) = body.as_object_mut() else {
        return Err(vec![Problem::new(
            "",
            format!("the pipeline must be a JSON object, not {}", kind_of(&body)),
        )]);
    };
    match map.get("id") {
        None | Some(Value::Null) => {
            map.insert("id".into(), Value::String(path_id.to_string()));
        }
        Some(Value::String(given)) if given != path_id => problems.push(Problem::new(
            "id",
            format!(
                "is `{}` but the path names `{}`; they must be equal (or leave `id` out)",
                quote(given),
                quote(path_id)
            ),
        )),
        // Equal, or not a string (the validator reports that).
        Some(_) => {}
    }
    match pipeline::from_value(&body) {
        Ok(p) if problems.is_empty() => Ok(p),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

/// Apply a pipeline.
///
/// Validates the whole document and stores a new version only when its canonical form
/// changed. Answers 201 for a new pipeline, 200 otherwise, with the canonical form.
#[utoipa::path(
    put, path = "/v1/pipelines/{id}", tag = "pipelines", operation_id = "pipelines.apply",
    params(("id" = String, Path, description = "The pipeline id.")),
    request_body = PipelineDocument,
    responses(
        (status = CREATED, description = "A new pipeline (version 1).", body = PipelineApplied,
            headers(("Location" = String, description = "`/v1/pipelines/{id}`"))),
        (status = OK, description = "An existing pipeline: a new version when `changed`.",
            body = PipelineApplied),
        (status = UNPROCESSABLE_ENTITY, response = inline(PipelineInvalid)),
    ),
)]
pub async fn apply(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let pipeline =
        validate(&id, body).map_err(|problems| ApiError::PipelineInvalid { problems })?;
    let (version, changed) = state
        .engine
        .store()
        .put_pipeline(&pipeline, state.engine.now())
        .await?;
    if changed {
        tracing::info!(pipeline.id = %pipeline.id, pipeline.version = version, "pipeline applied");
    }
    let body = PipelineApplied {
        id: pipeline.id.clone(),
        version,
        changed,
        pipeline,
    };
    if version == 1 && changed {
        let location = format!("/v1/pipelines/{}", body.id);
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            Json(body),
        )
            .into_response())
    } else {
        Ok(Json(body).into_response())
    }
}

/// List pipelines.
///
/// One line per pipeline (its current version), sorted by id.
#[utoipa::path(
    get, path = "/v1/pipelines", tag = "pipelines", operation_id = "pipelines.list",
    responses(
        (status = OK, description = "Every pipeline.", body = PipelineList),
    ),
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<PipelineList>, ApiError> {
    let stored = state.engine.store().list_pipelines().await?;
    let items = stored.iter().map(PipelineSummary::from).collect();
    Ok(Json(PipelineList { items }))
}

/// Get a pipeline.
///
/// Its current version, in canonical form, with its timestamps.
#[utoipa::path(
    get, path = "/v1/pipelines/{id}", tag = "pipelines", operation_id = "pipelines.get",
    params(("id" = String, Path, description = "The pipeline id.")),
    responses(
        (status = OK, description = "The pipeline.", body = PipelineView),
        (status = NOT_FOUND, response = inline(PipelineNotFound)),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PipelineView>, ApiError> {
    match state.engine.store().get_pipeline(&id).await? {
        Some(stored) => Ok(Json(PipelineView::from(stored))),
        None => Err(ApiError::PipelineNotFound { id: quote(&id) }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::openapi::property_names;

    fn body() -> Value {
        json!({"steps": [{"name": "a", "kind": "noop"}]})
    }

    #[test]
    fn the_path_id_is_used_when_the_body_has_none() {
        assert_eq!(validate("p1", body()).unwrap().id, "p1");
    }

    #[test]
    fn a_body_id_that_differs_from_the_path_is_a_problem_beside_the_others() {
        let mut b = body();
        b["id"] = json!("other");
        b["steps"][0]["colour"] = json!("blue");
        let problems = validate("p1", b).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["id", "steps[0].colour"]);
        assert!(problems[0].message.contains("the path names `p1`"));
    }

    #[test]
    fn a_non_object_body_is_one_problem() {
        let problems = validate("p1", json!([1])).unwrap_err();
        assert_eq!(
            problems,
            [Problem::new(
                "",
                "the pipeline must be a JSON object, not an array"
            )]
        );
    }

    /// The fields the validator lists when it meets an unknown one in `document` (the
    /// probe field `zz` at `at`).
    fn listed_fields(document: Value, at: &str) -> BTreeSet<String> {
        let problems = pipeline::from_value(&document).unwrap_err();
        let problem = problems
            .iter()
            .find(|p| p.field == at)
            .unwrap_or_else(|| panic!("no problem at {at}: {problems:?}"));
        let listed = problem
            .message
            .strip_prefix("unknown field; expected one of ")
            .unwrap_or_else(|| panic!("{}", problem.message));
        listed.split(", ").map(str::to_string).collect()
    }

    fn names(fields: &[&str]) -> BTreeSet<String> {
        fields.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn the_documented_pipeline_fields_are_the_ones_the_validator_accepts() {
        let step = json!({"name": "a", "kind": "noop"});
        let top = listed_fields(json!({"id": "p", "steps": [step], "zz": 1}), "zz");
        assert_eq!(property_names::<PipelineDocument>(), top);

        // The validator lists the file-form fields; it also accepts the canonical form's
        // `…_ms` twins, which the documents list too.
        let command = json!({"name": "a", "kind": "command", "run": ["x"], "zz": 1});
        let noop = json!({"name": "a", "kind": "noop", "zz": 1});
        let mut step_fields = listed_fields(json!({"id": "p", "steps": [command]}), "steps[0].zz");
        step_fields.extend(listed_fields(
            json!({"id": "p", "steps": [noop]}),
            "steps[0].zz",
        ));
        step_fields.extend(names(&["timeout_ms"]));
        assert_eq!(property_names::<StepDocument>(), step_fields);

        let retry = json!({"name": "a", "kind": "noop", "retry": {"zz": 1}});
        let mut retry_fields =
            listed_fields(json!({"id": "p", "steps": [retry]}), "steps[0].retry.zz");
        retry_fields.extend(names(&["initial_ms", "max_ms"]));
        assert_eq!(property_names::<RetryDocument>(), retry_fields);

        // The twins are accepted indeed.
        let canonical = json!({"id": "p", "steps": [{
            "name": "a", "kind": "noop", "timeout_ms": 1000,
            "retry": {"initial_ms": 1000, "max_ms": 2000}
        }]});
        assert!(pipeline::from_value(&canonical).is_ok());
    }

    #[test]
    fn the_documented_step_kinds_are_the_ones_this_release_runs() {
        let schema = serde_json::to_value(<StepDocument as utoipa::PartialSchema>::schema());
        let schema = schema.unwrap();
        assert_eq!(schema["properties"]["kind"]["enum"], json!(KINDS));
    }
}
