//! Schedules: `POST /v1/schedules`, `GET /v1/schedules`, `GET`/`PATCH`/`DELETE
//! /v1/schedules/{id}`, `POST /v1/schedules/{id}/run-now` and `GET
//! /v1/schedules/{id}/runs`.
//!
//! `{id}` is a schedule's id or its name (names are unique and never look like ids). The
//! rules (defaults, cadences, what a change does to `next_run_at`, catch-up) live in
//! `sluice_core::schedule`; a handler checks the body there, asks the engine, and renders
//! the schedule.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::Schedule;
use sluice_core::schedule::{self, ScheduleRun, Source};
use sluice_store::{Created, RanNow, RunCursor, ScheduleFilter, Updated};

use super::page_size;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{
    ApiError, BadRequest, PipelineNotFound, ScheduleNameTaken, ScheduleNotFound, TargetBusy, ValidationFailed, quote,
};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

// Documentation only: `sluice_core::schedule::parse_spec` reads the body field by field; a
// test checks that these fields are `SPEC_FIELDS`.
/// The body of `POST /v1/schedules`: exactly one of `cron` and `every`. `null` reads as an
/// absent field.
#[derive(ToSchema)]
#[schema(as = CreateSchedule, example = json!({
    "name": "nightly-web", "pipeline": "release", "target": "repo:acme/web",
    "input": {"branch": "main"}, "cron": "0 2 * * *", "timezone": "Europe/Berlin"
}))]
#[expect(dead_code, reason = "documentation only: the handler checks a JSON value")]
pub(crate) struct CreateScheduleRequest {
    /// Unique; 1 to 80 characters, no control characters, not of the form of a schedule id.
    #[schema(min_length = 1, max_length = 80)]
    name: String,
    /// The id of the pipeline to fire (its current version at each fire).
    #[schema(min_length = 1, max_length = 200)]
    pipeline: String,
    /// The target of the executions (at most one live execution per target); default
    /// `schedule:<name>`.
    #[schema(min_length = 1, max_length = 200)]
    target: Option<String>,
    /// The input of the executions; default `{}`.
    input: Option<BTreeMap<String, Value>>,
    /// A 5-field cron expression (minute hour day-of-month month day-of-week), or
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    #[schema(example = "0 9 * * 1-5", min_length = 1, max_length = 200)]
    cron: Option<String>,
    /// An interval of at least one minute, such as `6h` or `90m`, counted from each fire.
    #[schema(example = "6h", min_length = 1, max_length = 40)]
    every: Option<String>,
    /// The IANA time zone the cadence is read in; default `UTC`.
    #[schema(example = "America/New_York", min_length = 1, max_length = 80)]
    timezone: Option<String>,
    /// With `every`: the weekdays it may fire on, 1 (Monday) to 7 (Sunday); default every
    /// day.
    weekdays: Option<Vec<u8>>,
    /// With `every`: the local hours it may fire in, `from-to` (the hour `to` excluded),
    /// such as `9-17`, or wrapping midnight, `22-6`; default all day.
    #[schema(example = "22-6", min_length = 1, max_length = 20)]
    hours: Option<String>,
    /// Default `true`.
    enabled: Option<bool>,
    /// Default `skip`.
    overlap: Option<schedule::Overlap>,
    /// Default `one`.
    catch_up: Option<schedule::CatchUp>,
}

// Documentation only: `sluice_core::schedule::parse_patch` reads the body field by field; a
// test checks that these fields are `PATCH_FIELDS`.
/// The body of `PATCH /v1/schedules/{id}`: the fields to change. A field left out (or
/// `null`) stays as it is, except `hours: null`, which removes the window's hours. A change
/// of the cadence (any of `cron`, `every`, `timezone`, `weekdays`, `hours`) keeps the
/// cadence's other fields (`cron` or `every` switches its kind) and recomputes
/// `next_run_at` from now; so does enabling a disabled schedule; disabling clears it.
#[derive(ToSchema)]
#[schema(as = UpdateSchedule, example = json!({"enabled": false}))]
#[expect(dead_code, reason = "documentation only: the handler checks a JSON value")]
pub(crate) struct UpdateScheduleRequest {
    /// The pipeline to fire.
    #[schema(min_length = 1, max_length = 200)]
    pipeline: Option<String>,
    /// The target; it must belong to the same shard as the current one (always so with one
    /// shard).
    #[schema(min_length = 1, max_length = 200)]
    target: Option<String>,
    /// The input of the executions.
    input: Option<BTreeMap<String, Value>>,
    /// A cron expression (makes the cadence a cron cadence).
    #[schema(min_length = 1, max_length = 200)]
    cron: Option<String>,
    /// An interval (makes the cadence an interval).
    #[schema(min_length = 1, max_length = 40)]
    every: Option<String>,
    /// The IANA time zone.
    #[schema(min_length = 1, max_length = 80)]
    timezone: Option<String>,
    /// The weekdays of an interval, 1 (Monday) to 7 (Sunday); `[]` for every day.
    weekdays: Option<Vec<u8>>,
    /// The hours of an interval; `null` for all day.
    #[schema(min_length = 1, max_length = 20)]
    hours: Option<String>,
    /// Enable or disable.
    enabled: Option<bool>,
    /// `skip` or `allow`.
    overlap: Option<schedule::Overlap>,
    /// `one` or `none`.
    catch_up: Option<schedule::CatchUp>,
}

/// A page of schedules.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SchedulePage)]
pub(crate) struct SchedulePage {
    /// In name order.
    items: Vec<Schedule>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// A page of a schedule's history.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ScheduleRunPage)]
pub(crate) struct RunPage {
    /// Newest first.
    items: Vec<ScheduleRun>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// What `run-now` did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RanNowView {
    /// The schedule after the fire (`last_run_at` now; an enabled schedule's cadence
    /// advanced from now).
    schedule: Schedule,
    /// The history row of the fire; `execution_id` is the execution it started.
    run: ScheduleRun,
}

/// Query of `GET /v1/schedules`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only schedules of this pipeline.
    pub pipeline: Option<String>,
    /// Only schedules on this target.
    pub target: Option<String>,
    /// Only enabled (`true`) or disabled (`false`) schedules.
    pub enabled: Option<bool>,
    /// Where to continue: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 20).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// Query of `GET /v1/schedules/{id}/runs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Where to continue: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 20).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
}

/// The schedule `key` names (an id or a name), or 404.
async fn find(state: &AppState, key: &str) -> Result<Schedule, ApiError> {
    match state.engine.find_schedule(key).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) | Err(sluice_store::StoreError::BadId(_)) => Err(ApiError::ScheduleNotFound { id: quote(key) }),
        Err(e) => Err(e.into()),
    }
}

/// Create a schedule.
///
/// Fires `pipeline` on `target` at the times of its cadence: `cron` (5 fields, in
/// `timezone`) or `every` (an interval counted from each fire, optionally within
/// `weekdays` and `hours`). An enabled schedule is due at its first fire time after now.
#[utoipa::path(
    post, path = "/v1/schedules", tag = "schedules",
    operation_id = "schedules.create", request_body = CreateScheduleRequest,
    responses(
        (status = CREATED, description = "The schedule.", body = Schedule,
            headers(("Location" = String, description = "`/v1/schedules/{id}`"))),
        (status = CONFLICT, response = inline(ScheduleNameTaken)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn create(State(state): State<AppState>, ApiJson(body): ApiJson<Value>) -> Result<Response, ApiError> {
    let spec = schedule::parse_spec(&body, "", None).map_err(|problems| ApiError::Validation { problems })?;
    match state.engine.create_schedule(spec, Source::Api).await? {
        Created::Created(s) => {
            let location = format!("/v1/schedules/{}", s.id);
            Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(*s)).into_response())
        }
        Created::NameTaken(holder) => {
            let name = body.get("name").and_then(Value::as_str).map(quote).unwrap_or_default();
            Err(ApiError::ScheduleNameTaken { name, holder })
        }
        Created::Invalid(problems) => Err(ApiError::Validation { problems }),
    }
}

/// List schedules.
///
/// In name order, filtered by pipeline, target and whether they are enabled, a page at a
/// time; follow `next_cursor` for the next page.
#[utoipa::path(
    get, path = "/v1/schedules", tag = "schedules",
    operation_id = "schedules.list",
    params(ListQuery),
    responses(
        (status = OK, description = "A page of schedules.", body = SchedulePage),
        (status = BAD_REQUEST, response = inline(BadRequest)),
    ),
)]
pub async fn list(State(state): State<AppState>, ApiQuery(query): ApiQuery<ListQuery>) -> Result<Json<SchedulePage>, ApiError> {
    let limit = page_size(query.limit)?;
    let filter = ScheduleFilter {
        pipeline: query.pipeline.filter(|p| !p.is_empty()),
        target: query.target.filter(|t| !t.is_empty()),
        enabled: query.enabled,
    };
    let cursor = query.cursor.filter(|c| !c.is_empty());
    let (items, next_cursor) = state.engine.list_schedules(&filter, cursor.as_deref(), limit).await?;
    Ok(Json(SchedulePage { items, next_cursor }))
}

/// Get a schedule.
#[utoipa::path(
    get, path = "/v1/schedules/{id}", tag = "schedules",
    operation_id = "schedules.get",
    params(("id" = String, Path, description = "The schedule's id (`sch_<shard>_<ULID>`) or name.")),
    responses(
        (status = OK, description = "The schedule.", body = Schedule),
        (status = NOT_FOUND, response = inline(ScheduleNotFound)),
    ),
)]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Json<Schedule>, ApiError> {
    find(&state, &id).await.map(Json)
}

/// Change a schedule.
///
/// Enable or disable it, or change its cadence, target, input, pipeline, overlap or
/// catch-up. Re-enabling and a new cadence recompute `next_run_at` from now (a due time
/// that passed while it was disabled does not fire); other changes keep it.
#[utoipa::path(
    patch, path = "/v1/schedules/{id}", tag = "schedules",
    operation_id = "schedules.update", request_body = UpdateScheduleRequest,
    params(("id" = String, Path, description = "The schedule's id or name.")),
    responses(
        (status = OK, description = "The schedule, changed.", body = Schedule),
        (status = NOT_FOUND, response = inline(ScheduleNotFound)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Schedule>, ApiError> {
    let patch = schedule::parse_patch(&body).map_err(|problems| ApiError::Validation { problems })?;
    let current = find(&state, &id).await?;
    match state.engine.update_schedule(&current.id, &patch).await? {
        Updated::Updated(s) => {
            tracing::info!(schedule.id = %s.id, schedule.name = %s.name, enabled = s.enabled, next_run_at = ?s.next_run_at, "schedule changed");
            Ok(Json(*s))
        }
        Updated::NotFound => Err(ApiError::ScheduleNotFound { id: quote(&id) }),
        Updated::Invalid(problems) => Err(ApiError::Validation { problems }),
    }
}

/// Delete a schedule.
///
/// The schedule and its history go; executions it started are kept.
#[utoipa::path(
    delete, path = "/v1/schedules/{id}", tag = "schedules",
    operation_id = "schedules.delete",
    params(("id" = String, Path, description = "The schedule's id or name.")),
    responses(
        (status = OK, description = "The schedule as it was.", body = Schedule),
        (status = NOT_FOUND, response = inline(ScheduleNotFound)),
    ),
)]
pub async fn delete(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Json<Schedule>, ApiError> {
    let current = find(&state, &id).await?;
    if !state.engine.delete_schedule(&current.id).await? {
        return Err(ApiError::ScheduleNotFound { id: quote(&id) });
    }
    Ok(Json(current))
}

/// Fire a schedule now.
///
/// Starts an execution at once, whatever the cadence (also while disabled); refused with
/// 409 `TARGET_BUSY` while the target has a live execution, unless `overlap` is `allow`.
/// Like any fire it sets `last_run_at` and, for an enabled schedule, moves `next_run_at` to
/// the cadence's next fire after now (an interval counts from this run).
#[utoipa::path(
    post, path = "/v1/schedules/{id}/run-now", tag = "schedules",
    operation_id = "schedules.runNow",
    params(("id" = String, Path, description = "The schedule's id or name.")),
    responses(
        (status = CREATED, description = "The execution started.", body = RanNowView,
            headers(("Location" = String, description = "`/v1/executions/{id}` of the execution started"))),
        (status = NOT_FOUND, response = inline(ScheduleNotFound)),
        (status = NOT_FOUND, response = inline(PipelineNotFound)),
        (status = CONFLICT, response = inline(TargetBusy)),
    ),
)]
pub async fn run_now(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    let current = find(&state, &id).await?;
    match state.engine.run_now(&current.id).await? {
        RanNow::Fired { schedule, run } => {
            let location = format!("/v1/executions/{}", run.execution_id.as_deref().unwrap_or_default());
            Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(RanNowView { schedule: *schedule, run })).into_response())
        }
        RanNow::TargetBusy { target, holder } => Err(ApiError::TargetBusy { target: quote(&target), holder }),
        RanNow::PipelineMissing(pipeline) => Err(ApiError::PipelineNotFound { id: quote(&pipeline) }),
        RanNow::NotFound => Err(ApiError::ScheduleNotFound { id: quote(&id) }),
    }
}

/// List a schedule's runs.
///
/// Its history, newest first: each fire with its execution and that execution's outcome,
/// how late it was and how many due times it stands for (`missed`), and each fire that
/// started nothing (`skipped`: the target was busy, or a late fire with `catch_up =
/// "none"`; `failed`: the pipeline was gone). Kept for `scheduler.history_retention`
/// (default 7 days), at most the newest 1 000 rows.
#[utoipa::path(
    get, path = "/v1/schedules/{id}/runs", tag = "schedules",
    operation_id = "schedules.runs",
    params(("id" = String, Path, description = "The schedule's id or name."), RunsQuery),
    responses(
        (status = OK, description = "A page of the history.", body = RunPage),
        (status = BAD_REQUEST, response = inline(BadRequest)),
        (status = NOT_FOUND, response = inline(ScheduleNotFound)),
    ),
)]
pub async fn runs(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Result<Json<RunPage>, ApiError> {
    let limit = page_size(query.limit)?;
    let cursor = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(RunCursor::parse(c).ok_or_else(|| {
            ApiError::BadRequest(format!("`cursor` `{}` is not a cursor this API gave out", quote(c)))
        })?),
    };
    let current = find(&state, &id).await?;
    let page = state.engine.schedule_runs(&current.id, cursor.as_ref(), limit).await?;
    Ok(Json(RunPage { items: page.items, next_cursor: page.next_cursor.map(|c| c.to_string()) }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::openapi::property_names;

    #[test]
    fn the_documented_fields_are_the_ones_the_handlers_accept() {
        let set = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(property_names::<CreateScheduleRequest>(), set(schedule::SPEC_FIELDS));
        assert_eq!(property_names::<UpdateScheduleRequest>(), set(schedule::PATCH_FIELDS));
    }

    #[test]
    fn a_served_schedule_has_the_members_its_schema_lists_and_never_its_revision() {
        let spec = schedule::parse_spec(&serde_json::json!({"name": "n", "pipeline": "p", "every": "1h"}), "", None).unwrap();
        let mut s = Schedule::new(spec, "sch_0_01JD0000000000000000000000".into(), Source::Api, 0);
        s.last_run_at = Some(1);
        s.rev = 7;
        let served: BTreeSet<String> = serde_json::to_value(&s).unwrap().as_object().unwrap().keys().cloned().collect();
        assert_eq!(served, property_names::<Schedule>());
        assert!(!served.contains("rev"));
    }

    #[test]
    fn page_sizes_are_bounded() {
        use sluice_store::MAX_PAGE;
        assert_eq!(page_size(None).unwrap(), crate::routes::DEFAULT_PAGE);
        assert_eq!(page_size(Some(MAX_PAGE)).unwrap(), MAX_PAGE);
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(MAX_PAGE + 1)).is_err());
    }
}
