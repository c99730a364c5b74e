//! `PUT /v1/pipelines/{id}`, `GET /v1/pipelines`, `GET /v1/pipelines/{id}`.
//!
//! Apply takes the pipeline in its JSON file form (durations as `"10s"`; the canonical form
//! with `timeout_ms` is accepted too), validates all of it with
//! [`sluice_core::pipeline::from_value`] and stores a new version only when the canonical
//! form changed. The body's `id` must equal the path's; when the body has none, the path's
//! is used.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_core::Problem;
use sluice_core::pipeline;

use crate::AppState;
use crate::error::{ApiError, quote};
use crate::extract::{ApiJson, ApiPath};
use crate::fields::kind_of;
use crate::views;

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

/// `PUT /v1/pipelines/{id}`: 201 for a new pipeline, 200 otherwise, with
/// `{id, version, changed, pipeline}` (the canonical form).
///
/// # Errors
/// 422 `PIPELINE_INVALID` listing every problem; store failures.
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
    let body = json!({
        "id": pipeline.id,
        "version": version,
        "changed": changed,
        "pipeline": pipeline,
    });
    if version == 1 && changed {
        let location = format!("/v1/pipelines/{}", pipeline.id);
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

/// `GET /v1/pipelines`: `{"items": [{id, name, description?, version, steps, created_at,
/// updated_at}]}`, sorted by id.
///
/// # Errors
/// Store failures.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let stored = state.engine.store().list_pipelines().await?;
    let items: Vec<Value> = stored.iter().map(views::pipeline_summary).collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET /v1/pipelines/{id}`: `{id, version, created_at, updated_at, pipeline}`.
///
/// # Errors
/// 404 `PIPELINE_NOT_FOUND`; store failures.
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    match state.engine.store().get_pipeline(&id).await? {
        Some(stored) => Ok(Json(views::pipeline(&stored)?)),
        None => Err(ApiError::PipelineNotFound { id: quote(&id) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
