//! `POST /v1/jobs` (`jobs.enqueue`), `GET /v1/jobs/{id}` (`jobs.get`) and
//! `POST /v1/jobs/{id}/cancel` (`jobs.cancel`).
//!
//! A standalone job's id is minted here: in the shard of its `dedupe_key` when it has one
//! (so a duplicate is detected inside one shard, atomically), else in a random shard.
//! Cancelling is only for pending jobs; it is one atomic store write that also fails the
//! job's execution (kind `cancelled`) when the job runs a step.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sluice_core::job::{MAX_PRIORITY, NewJob, kinds};
use sluice_core::pipeline::{QUEUE_NAME_RULE, is_queue_name};
use sluice_core::{Millis, Problem, RetryPolicy, ids};
use sluice_store::engine::Cancelled;
use sluice_store::{EnqueueOutcome, StoreError};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, JobNotFound, JobNotPending, ValidationFailed, quote};
use crate::extract::{ApiJson, ApiPath};
use crate::fields::{Fields, kind_of, path};
use crate::views::{self, JobCancelled, JobEnqueued, JobView};

/// Fields of an enqueue body.
const ENQUEUE_FIELDS: &[&str] = &[
    "queue",
    "kind",
    "payload",
    "delay",
    "priority",
    "max_attempts",
    "dedupe_key",
    "timeout",
];
/// Fields of a `command` job's payload.
const COMMAND_FIELDS: &[&str] = &["run", "env", "cwd"];
/// Bounds of `max_attempts`.
const ATTEMPTS: RangeInclusive<i64> = 1..=100;
/// Bounds of `dedupe_key`, in characters.
const DEDUPE_KEY_CHARS: RangeInclusive<usize> = 1..=200;
/// Environment variables sluice sets itself; a payload may not set them.
const RESERVED_ENV_PREFIX: &str = "SLUICE_";

// Documentation only: `parse_enqueue` reads the body field by field; a test checks that
// these fields are `ENQUEUE_FIELDS`.
/// The body of `POST /v1/jobs`. `null` reads as an absent field.
#[derive(ToSchema)]
#[schema(as = EnqueueJob, example = json!({
    "queue": "reports", "kind": "command", "payload": {"run": ["./nightly-report"]},
    "delay": "5m", "priority": 10, "max_attempts": 5, "dedupe_key": "nightly", "timeout": "30m"
}))]
#[expect(
    dead_code,
    reason = "documentation only: the handler checks a JSON value"
)]
pub(crate) struct EnqueueJobRequest {
    /// Queue name: letters, digits, `.`, `_`, `-`; 1 to 64 characters. Default `default`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    queue: Option<String>,
    /// Job kind: a lowercase letter, then up to 63 lowercase letters, digits, `_`, `.` or
    /// `-`. sluice's workers run `command` and `noop` jobs; a job of any other kind waits in
    /// its queue for an external worker (`POST /v1/queues/{q}/lease`).
    #[schema(pattern = "^[a-z][a-z0-9_.-]{0,63}$")]
    kind: String,
    /// Kind-specific input, any JSON value; for kind `command` it is required and is a
    /// `CommandPayload`.
    payload: Option<Value>,
    /// Run no earlier than this long from now, as a duration such as `30s` or `5m`.
    #[schema(example = "5m")]
    delay: Option<String>,
    /// Higher runs first; -1000 to 1000, default 0.
    #[schema(minimum = -1000, maximum = 1000)]
    priority: Option<i32>,
    /// Attempts in total, including the first; 1 to 100, default 3.
    #[schema(minimum = 1, maximum = 100)]
    max_attempts: Option<u32>,
    /// While a pending job of the queue holds this key, enqueueing another with it returns
    /// that job instead (200, `deduplicated: true`).
    #[schema(min_length = 1, max_length = 200)]
    dedupe_key: Option<String>,
    /// Time limit of one attempt, as a duration such as `30s` or `5m` (longer than zero).
    #[schema(example = "30m")]
    timeout: Option<String>,
}

// Documentation only: `check_command_payload` reads it; a test checks that these fields are
// `COMMAND_FIELDS`.
/// The payload of a `command` job (`POST /v1/jobs` with kind `command`). `null` reads as
/// an absent field.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "documentation only: the handler checks a JSON value"
)]
pub(crate) struct CommandPayload {
    /// The program and its arguments (at least the program); no NUL characters.
    #[schema(min_items = 1)]
    run: Vec<String>,
    /// Extra environment variables; names starting with `SLUICE_` are reserved.
    env: Option<BTreeMap<String, String>>,
    /// The working directory.
    cwd: Option<String>,
}

/// `^[a-z][a-z0-9_.-]{0,63}$`.
fn is_kind_name(name: &str) -> bool {
    let mut chars = name.chars();
    (1..=64).contains(&name.len())
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

/// Checks the payload of a `command` job: `{"run": [...], "env"?: {...}, "cwd"?: "..."}`.
fn check_command_payload(payload: Option<&Value>, problems: &mut Vec<Problem>) {
    let Some(payload) = payload else {
        problems.push(Problem::new(
            "payload",
            "is required for kind `command`: {\"run\": [\"program\", \"arg\", …]}",
        ));
        return;
    };
    let Some(f) = Fields::object(payload, "payload", problems) else {
        return;
    };
    f.only(COMMAND_FIELDS, problems);
    match f.get("run") {
        None => problems.push(Problem::new(
            "payload.run",
            "is required; give the program and its arguments, e.g. [\"echo\", \"hello\"]",
        )),
        Some(Value::Array(items)) if items.is_empty() => {
            problems.push(Problem::new(
                "payload.run",
                "must not be empty; give at least the program",
            ));
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("payload.run[{i}]");
                match item.as_str() {
                    None => problems.push(Problem::new(
                        at,
                        format!("must be a string, not {}", kind_of(item)),
                    )),
                    Some("") if i == 0 => {
                        problems.push(Problem::new(at, "must not be empty (it is the program)"))
                    }
                    Some(s) if s.contains('\0') => {
                        problems.push(Problem::new(at, "must not contain NUL characters"))
                    }
                    Some(_) => {}
                }
            }
        }
        Some(other) => problems.push(Problem::new(
            "payload.run",
            format!("must be an array of strings, not {}", kind_of(other)),
        )),
    }
    if let Some(env) = f.get("env")
        && let Some(env) = Fields::object(env, "payload.env", problems)
    {
        for (key, value) in env.entries() {
            let at = path("payload.env", key);
            if key.is_empty() || key.contains(['=', '\0']) {
                problems.push(Problem::new(
                    at,
                    "is not a valid variable name (empty, or has `=` or NUL)",
                ));
            } else if key.starts_with(RESERVED_ENV_PREFIX) {
                problems.push(Problem::new(
                    at,
                    format!(
                        "is reserved: sluice sets the `{RESERVED_ENV_PREFIX}…` variables itself"
                    ),
                ));
            } else {
                match value.as_str() {
                    None => problems.push(Problem::new(
                        at,
                        format!("must be a string, not {}", kind_of(value)),
                    )),
                    Some(s) if s.contains('\0') => {
                        problems.push(Problem::new(at, "must not contain NUL characters"))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    if let Some(cwd) = f.string("cwd", 1..=4096, false, problems)
        && cwd.contains('\0')
    {
        problems.push(Problem::new(
            "payload.cwd",
            "must not contain NUL characters",
        ));
    }
}

/// Reads an enqueue body into the job to create (its id minted for `shards` shards),
/// reporting every problem.
pub(crate) fn parse_enqueue(body: &Value, shards: u32, now: Millis) -> Result<NewJob, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(f) = Fields::object(body, "", &mut problems) else {
        return Err(problems);
    };
    f.only(ENQUEUE_FIELDS, &mut problems);

    let queue = match f.string("queue", 1..=64, true, &mut problems) {
        None if f.get("queue").is_none() => Some(sluice_core::pipeline::DEFAULT_QUEUE),
        Some(q) if !is_queue_name(q) => {
            problems.push(Problem::new(
                "queue",
                format!("`{}` is not a valid queue name; {QUEUE_NAME_RULE}", quote(q)),
            ));
            None
        }
        other => other,
    };
    let kind = match f.required_string("kind", 1..=64, true, &mut problems) {
        Some(k) if !is_kind_name(k) => {
            problems.push(Problem::new(
                "kind",
                format!(
                    "`{}` is not a valid job kind; use a lowercase letter then up to 63 lowercase \
                     letters, digits, `_`, `.` or `-` (built in: {}, {})",
                    quote(k),
                    kinds::COMMAND,
                    kinds::NOOP
                ),
            ));
            None
        }
        other => other,
    };
    let payload = f.get("payload");
    if kind == Some(kinds::COMMAND) {
        check_command_payload(payload, &mut problems);
    }
    let delay = f.duration("delay", &mut problems);
    let priority = f.integer(
        "priority",
        -i64::from(MAX_PRIORITY)..=i64::from(MAX_PRIORITY),
        &mut problems,
    );
    let max_attempts = f.integer("max_attempts", ATTEMPTS, &mut problems);
    let dedupe_key = f.string("dedupe_key", DEDUPE_KEY_CHARS, true, &mut problems);
    let timeout = match f.duration("timeout", &mut problems) {
        Some(t) if t.is_zero() => {
            problems.push(Problem::new("timeout", "must be longer than zero"));
            None
        }
        other => other,
    };

    let (Some(queue), Some(kind)) = (queue, kind) else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let shard = match dedupe_key {
        Some(key) => ids::shard_for_key(key, shards),
        None => ids::random_shard(shards),
    };
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Ok(NewJob {
        id: ids::new_id(ids::JOB, shard),
        queue: queue.to_string(),
        kind: kind.to_string(),
        payload: payload.cloned().unwrap_or(Value::Null),
        priority: priority.and_then(|p| i32::try_from(p).ok()).unwrap_or(0),
        retry: RetryPolicy {
            max_attempts: max_attempts
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(sluice_core::retry::DEFAULT_MAX_ATTEMPTS),
            ..RetryPolicy::default()
        },
        timeout_ms: timeout.map(millis),
        run_at: delay
            .filter(|d| !d.is_zero())
            .map(|d| now.saturating_add(i64::try_from(millis(d)).unwrap_or(i64::MAX))),
        dedupe_key: dedupe_key.map(str::to_string),
        execution_id: None,
        step: None,
    })
}

/// Enqueue a job.
///
/// Answers 201 `{job, deduplicated: false}` for a new job, 200 `{job, deduplicated: true}`
/// when a pending job of the queue already holds the `dedupe_key`.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs", operation_id = "jobs.enqueue",
    request_body = EnqueueJobRequest,
    responses(
        (status = CREATED, description = "A new job.", body = JobEnqueued,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = OK, description = "The pending job that already holds the `dedupe_key`.",
            body = JobEnqueued),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn enqueue(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let store = state.engine.store();
    let now = state.engine.now();
    let job = parse_enqueue(&body, store.shards(), now)
        .map_err(|problems| ApiError::Validation { problems })?;
    let outcome = store.enqueue(std::slice::from_ref(&job), now).await?;
    let Some(outcome) = outcome.into_iter().next() else {
        return Err(ApiError::Internal(
            "enqueue answered nothing for one job".into(),
        ));
    };
    let Some(stored) = store.get_job(outcome.id()).await? else {
        return Err(ApiError::Internal(format!(
            "job {} vanished right after enqueue",
            outcome.id()
        )));
    };
    let view = views::job(&stored)?;
    match outcome {
        EnqueueOutcome::Created(id) => {
            tracing::info!(job.id = %id, queue = %job.queue, job.kind = %job.kind, "job enqueued");
            let location = format!("/v1/jobs/{id}");
            let body = JobEnqueued {
                job: view,
                deduplicated: false,
            };
            Ok((
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(body),
            )
                .into_response())
        }
        EnqueueOutcome::Existing(_) => Ok(Json(JobEnqueued {
            job: view,
            deduplicated: true,
        })
        .into_response()),
    }
}

/// Get a job.
///
/// The job record; its lease (while a worker holds it) shows who holds it and until when,
/// never the token.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "jobs.get",
    params(("id" = String, Path, description = "The job id (`job_<shard>_<ULID>`).")),
    responses(
        (status = OK, description = "The job.", body = JobView),
        (status = NOT_FOUND, response = inline(JobNotFound)),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::JobNotFound { id: quote(&id) };
    if ids::parse(&id, ids::JOB).is_err() {
        return Err(not_found());
    }
    match state.engine.store().get_job(&id).await {
        Ok(Some(job)) => Ok(Json(views::job(&job)?)),
        Ok(None) | Err(StoreError::BadId(_)) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// Cancel a pending job.
///
/// Atomically removes the job from its queue, so no worker can start it any more, and
/// emits `job.cancelled`; a step job's execution then fails with kind `cancelled`. Takes no
/// body.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs", operation_id = "jobs.cancel",
    params(("id" = String, Path, description = "The job id (`job_<shard>_<ULID>`).")),
    responses(
        (status = OK, description = "The job is cancelled.", body = JobCancelled),
        (status = NOT_FOUND, response = inline(JobNotFound)),
        (status = CONFLICT, response = inline(JobNotPending)),
    ),
)]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobCancelled>, ApiError> {
    let not_found = || ApiError::JobNotFound { id: quote(&id) };
    if ids::parse(&id, ids::JOB).is_err() {
        return Err(not_found());
    }
    match state.engine.cancel_job(&id).await {
        Ok(Cancelled::Cancelled(job)) => {
            tracing::info!(job.id = %job.id, execution.id = ?job.execution_id, queue = %job.queue, "job cancelled");
            Ok(Json(JobCancelled {
                success: true,
                job: views::job(&job)?,
            }))
        }
        Ok(Cancelled::NotFound) | Err(StoreError::BadId(_)) => Err(not_found()),
        Ok(Cancelled::NotPending(status)) => Err(ApiError::JobNotPending { id, status }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fields::problem_fields as fields;
    use crate::openapi::{name_set, property_names};

    #[test]
    fn defaults_of_a_minimal_body() {
        let job = parse_enqueue(&json!({"kind": "noop"}), 1, 1_000).unwrap();
        assert_eq!(job.queue, "default");
        assert_eq!(job.priority, 0);
        assert_eq!(job.retry, RetryPolicy::default());
        assert_eq!((job.run_at, job.timeout_ms), (None, None));
        assert_eq!(ids::shard_of(&job.id, ids::JOB), Ok(0));
    }

    #[test]
    fn options_are_applied() {
        let job = parse_enqueue(
            &json!({
                "queue": "deploy", "kind": "acme.build-v2", "payload": {"x": 1}, "delay": "10s",
                "priority": -5, "max_attempts": 7, "dedupe_key": "k", "timeout": "1m"
            }),
            8,
            1_000,
        )
        .unwrap();
        assert_eq!(job.run_at, Some(11_000));
        assert_eq!(job.timeout_ms, Some(60_000));
        assert_eq!(job.retry.max_attempts, 7);
        assert_eq!(job.priority, -5);
        assert_eq!(
            ids::shard_of(&job.id, ids::JOB),
            Ok(ids::shard_for_key("k", 8))
        );
    }

    #[test]
    fn every_problem_of_an_enqueue_body_is_reported() {
        let problems = parse_enqueue(
            &json!({
                "queue": "a b", "kind": "Build", "delay": "soon", "priority": 5000,
                "max_attempts": 0, "dedupe_key": "", "timeout": "0s", "colour": 1
            }),
            1,
            0,
        )
        .unwrap_err();
        assert_eq!(
            fields(&problems),
            [
                "colour",
                "queue",
                "kind",
                "delay",
                "priority",
                "max_attempts",
                "dedupe_key",
                "timeout"
            ]
        );
    }

    #[test]
    fn a_command_payload_is_checked() {
        let problems = parse_enqueue(&json!({"kind": "command"}), 1, 0).unwrap_err();
        assert_eq!(fields(&problems), ["payload"]);
        let problems = parse_enqueue(
            &json!({"kind": "command", "payload": {
                "run": ["", 3], "env": {"SLUICE_X": "1", "A": 2}, "cwd": "", "shell": true
            }}),
            1,
            0,
        )
        .unwrap_err();
        assert_eq!(
            fields(&problems),
            [
                "payload.shell",
                "payload.run[0]",
                "payload.run[1]",
                "payload.env.A",
                "payload.env.SLUICE_X",
                "payload.cwd"
            ]
        );
        assert!(parse_enqueue(&json!({"kind": "command", "payload": {"run": []}}), 1, 0).is_err());
        assert!(
            parse_enqueue(
                &json!({"kind": "command", "payload": {"run": ["echo", "hi"], "env": {"A": "b"}}}),
                1,
                0
            )
            .is_ok()
        );
    }

    #[test]
    fn the_documented_enqueue_fields_are_the_ones_the_handler_accepts() {
        assert_eq!(property_names::<EnqueueJobRequest>(), name_set(ENQUEUE_FIELDS));
        assert_eq!(property_names::<CommandPayload>(), name_set(COMMAND_FIELDS));
    }

    #[test]
    fn kind_names() {
        assert!(is_kind_name("a"));
        assert!(is_kind_name("acme.build_v2-x"));
        assert!(!is_kind_name("1a"));
        assert!(!is_kind_name(&format!("a{}", "b".repeat(64))));
    }
}
