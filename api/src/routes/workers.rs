//! External workers: `POST /v1/queues/{q}/lease`, `POST /v1/jobs/{id}/heartbeat` and
//! `POST /v1/jobs/{id}/result`.
//!
//! A queue has two lanes: the jobs of the kinds sluice's own workers run (`command`, `noop`,
//! `http`, `gate`, `sleep`) and the jobs of every other kind (an `external` step, a
//! standalone job of kind `resize-image`), which only external workers get, here. A lease
//! hands out jobs already `running`, each with its fencing token; the worker extends the
//! lease with heartbeats while it works and posts the result with the token and an
//! `Idempotency-Key`. A lease that expires (the worker died or stopped heartbeating) is
//! reclaimed by the scheduler as a failed attempt, and the job is retried per its policy.
//!
//! **Exactly once.** The engine applies a posted result in the same atomic write that records
//! its `Idempotency-Key` and answer. The same key again gets that answer again (200, with
//! `Idempotent-Replayed: true`), however the job moved since; another key for an attempt a
//! posted result already settled is 409 `RESULT_ALREADY_APPLIED`; a token that no longer
//! holds the lease is 409 `LEASE_LOST`, and nothing changes.
//!
//! **Without a token** a result is for the job's current attempt: it applies while the job
//! runs, under whichever lease it runs (so a service that was only told the job id can
//! answer), and is 409 otherwise (`RESULT_ALREADY_APPLIED` when a posted result settled the
//! job's last attempt, else `LEASE_LOST`). Workers that lease should always send the token:
//! it is what keeps a late result of an expired lease from landing on the next attempt.
//!
//! **Long-poll.** With `wait_ms`, a lease that finds nothing waits for the queue's external
//! lane notification (one subscription per API process, shared by every waiting request),
//! a delayed job's due time or a slow recheck, until a job is leased or the wait runs out;
//! a server shutting down ends every wait at once (with no jobs).

use std::ops::RangeInclusive;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sluice_core::job::{JobError, Outcome};
use sluice_core::{JobStatus, Millis, Problem, ids};
use sluice_store::engine::{PostedResult, ResultPosted};
use sluice_store::{ExternalWakeups, LeaseState, Leased, Store, StoreError};
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, JobNotFound, LeaseLost, ResultConflict, ValidationFailed, quote};
use crate::extract::{ApiJson, ApiPath};
use crate::fields::Fields;
use crate::views::{HeartbeatAnswer, LeasedJob, Leases, PostedOutcome, ResultAnswer};

/// The header that names a posted result.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The header set (to `true`) on the answer to a repeated post.
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Fields of a lease body.
const LEASE_FIELDS: &[&str] = &["worker", "max", "wait_ms", "lease_ttl_ms"];
/// Fields of a heartbeat body.
const HEARTBEAT_FIELDS: &[&str] = &["token", "extend_ms"];
/// Fields of a result body.
const RESULT_FIELDS: &[&str] = &["token", "outcome", "output", "error", "retryable"];

/// Bounds of `max`.
const MAX_JOBS: RangeInclusive<i64> = 1..=100;
/// Bounds of `wait_ms`.
const WAIT_MS: RangeInclusive<i64> = 0..=30_000;
/// Bounds of `lease_ttl_ms` and `extend_ms`.
const LEASE_MS: RangeInclusive<i64> = 1_000..=3_600_000;
/// A lease's length when the worker names none, and a heartbeat's extension.
const DEFAULT_LEASE_MS: i64 = 30_000;
/// Bounds of `worker` and `token`, in characters.
const NAME_CHARS: RangeInclusive<usize> = 1..=200;
/// Bounds of `error`, in characters.
const ERROR_CHARS: RangeInclusive<usize> = 1..=10_000;
/// Bounds of the `Idempotency-Key` header, in bytes (visible ASCII).
const KEY_BYTES: RangeInclusive<usize> = 1..=255;
/// How long a waiting lease trusts the notifications before looking again by itself.
const RECHECK: Duration = Duration::from_secs(5);
/// The error of a failed result that gives none.
const UNSPECIFIED_FAILURE: &str = "the external worker reported a failure";

/// The long-polls of the lease route: the process's one subscription to the external
/// lanes' notifications, made on first use, and closed when the server shuts down so that no
/// poll holds the shutdown up.
#[derive(Debug, Default)]
pub(crate) struct LongPolls {
    wakeups: OnceLock<ExternalWakeups>,
    closed: AtomicBool,
}

impl LongPolls {
    /// The subscription (started on first use); `None` once closed.
    fn wakeups(&self, store: &Store) -> Option<&ExternalWakeups> {
        if self.is_closed() {
            return None;
        }
        Some(self.wakeups.get_or_init(|| ExternalWakeups::spawn(store)))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Ends every wait, now and later.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(wakeups) = self.wakeups.get() {
            wakeups.close();
        }
    }
}

// Documentation only: `parse_lease` reads the body field by field; a test checks that these
// fields are `LEASE_FIELDS`.
/// The body of `POST /v1/queues/{q}/lease`.
#[derive(ToSchema)]
#[schema(as = LeaseBody, example = json!({"worker": "thumbnailer-7", "max": 5, "wait_ms": 20000, "lease_ttl_ms": 60000}))]
#[expect(
    dead_code,
    reason = "documentation only: the handler checks a JSON value"
)]
pub(crate) struct LeaseRequest {
    /// Who leases: shown as the lease's holder (`GET /v1/jobs/{id}`), 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    worker: String,
    /// Most jobs to lease: 1 to 100, default 1.
    #[schema(minimum = 1, maximum = 100)]
    max: Option<u32>,
    /// How long to wait for a job when there is none, in ms: 0 (answer at once, the
    /// default) to 30000.
    #[schema(minimum = 0, maximum = 30000)]
    wait_ms: Option<u32>,
    /// How long each lease lasts unless a heartbeat extends it, in ms: 1000 to 3600000,
    /// default 30000.
    #[schema(minimum = 1000, maximum = 3600000)]
    lease_ttl_ms: Option<u32>,
}

// Documentation only: `parse_heartbeat` reads the body field by field.
/// The body of `POST /v1/jobs/{id}/heartbeat`.
#[derive(ToSchema)]
#[schema(as = HeartbeatBody, example = json!({"token": "01JD8X3Q2W4E5R6T7Y8U9I0OPA.1", "extend_ms": 60000}))]
#[expect(
    dead_code,
    reason = "documentation only: the handler checks a JSON value"
)]
pub(crate) struct HeartbeatRequest {
    /// The lease's token, as leased.
    #[schema(min_length = 1, max_length = 200)]
    token: String,
    /// The lease's new length from now, in ms: 1000 to 3600000, default 30000.
    #[schema(minimum = 1000, maximum = 3600000)]
    extend_ms: Option<u32>,
}

// Documentation only: `parse_result` reads the body field by field.
/// The body of `POST /v1/jobs/{id}/result`, sent with an `Idempotency-Key` header.
#[derive(ToSchema)]
#[schema(as = ResultBody, example = json!({
    "token": "01JD8X3Q2W4E5R6T7Y8U9I0OPA.1", "outcome": "completed",
    "output": {"thumbnail": "s3://media/cat-64.png"}
}))]
#[expect(
    dead_code,
    reason = "documentation only: the handler checks a JSON value"
)]
pub(crate) struct ResultRequest {
    /// The lease's token. Without it the result is for the job's current attempt and
    /// applies only while the job runs; a worker that leased the job should always send it.
    #[schema(min_length = 1, max_length = 200)]
    token: Option<String>,
    /// What the work did.
    outcome: PostedOutcome,
    /// With `completed`: the output, any JSON value (default `null`); a step's output is
    /// what later steps see.
    output: Option<Value>,
    /// With `failed`: what went wrong, 1 to 10000 characters.
    #[schema(min_length = 1, max_length = 10000)]
    error: Option<String>,
    /// With `failed`: whether another attempt may help (default `true`): the job is retried
    /// per its retry policy until its attempts are spent; `false` fails it for good.
    retryable: Option<bool>,
}

/// A lease body, read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LeaseParams {
    worker: String,
    max: usize,
    wait: Duration,
    lease_ms: Millis,
}

pub(crate) fn parse_lease(body: &Value) -> Result<LeaseParams, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(f) = Fields::object(body, "", &mut problems) else {
        return Err(problems);
    };
    f.only(LEASE_FIELDS, &mut problems);
    let worker = f.required_string("worker", NAME_CHARS, true, &mut problems);
    let max = f.integer("max", MAX_JOBS, &mut problems).unwrap_or(1);
    let wait_ms = f.integer("wait_ms", WAIT_MS, &mut problems).unwrap_or(0);
    let lease_ms = f
        .integer("lease_ttl_ms", LEASE_MS, &mut problems)
        .unwrap_or(DEFAULT_LEASE_MS);
    match worker {
        Some(worker) if problems.is_empty() => Ok(LeaseParams {
            worker: worker.to_string(),
            max: usize::try_from(max).unwrap_or(1),
            wait: Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)),
            lease_ms,
        }),
        _ => Err(problems),
    }
}

/// A heartbeat body, read: the token and the lease's new length.
pub(crate) fn parse_heartbeat(body: &Value) -> Result<(String, Millis), Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(f) = Fields::object(body, "", &mut problems) else {
        return Err(problems);
    };
    f.only(HEARTBEAT_FIELDS, &mut problems);
    let token = f.required_string("token", NAME_CHARS, true, &mut problems);
    let extend_ms = f
        .integer("extend_ms", LEASE_MS, &mut problems)
        .unwrap_or(DEFAULT_LEASE_MS);
    match token {
        Some(token) if problems.is_empty() => Ok((token.to_string(), extend_ms)),
        _ => Err(problems),
    }
}

/// A result body, read: the token, if any, and the outcome.
pub(crate) fn parse_result(body: &Value) -> Result<(Option<String>, Outcome), Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(f) = Fields::object(body, "", &mut problems) else {
        return Err(problems);
    };
    f.only(RESULT_FIELDS, &mut problems);
    let token = f.string("token", NAME_CHARS, true, &mut problems);
    let outcome = match f.required_string("outcome", 1..=20, true, &mut problems) {
        Some("completed") => Some(PostedOutcome::Completed),
        Some("failed") => Some(PostedOutcome::Failed),
        Some(other) => {
            problems.push(Problem::new(
                "outcome",
                format!(
                    "`{}` is not an outcome; use `completed` or `failed`",
                    quote(other)
                ),
            ));
            None
        }
        None => None,
    };
    let error = f.string("error", ERROR_CHARS, false, &mut problems);
    let retryable = f.boolean("retryable", &mut problems);
    let only_for = |field: &str, outcome: &str, problems: &mut Vec<Problem>| {
        if f.get(field).is_some() {
            problems.push(Problem::new(
                field,
                format!("is only for outcome `{outcome}`"),
            ));
        }
    };
    let outcome = match outcome {
        Some(PostedOutcome::Completed) => {
            only_for("error", "failed", &mut problems);
            only_for("retryable", "failed", &mut problems);
            Some(Outcome::Completed(
                f.get("output").cloned().unwrap_or(Value::Null),
            ))
        }
        Some(PostedOutcome::Failed) => {
            only_for("output", "completed", &mut problems);
            Some(Outcome::Failed(JobError {
                retryable: retryable.unwrap_or(true),
                ..JobError::terminal(error.unwrap_or(UNSPECIFIED_FAILURE))
            }))
        }
        None => None,
    };
    match outcome {
        Some(outcome) if problems.is_empty() => Ok((token.map(str::to_string), outcome)),
        _ => Err(problems),
    }
}

/// The `Idempotency-Key` header: required, 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Err(ApiError::BadRequest(format!(
            "the `{IDEMPOTENCY_KEY}` header is required: a key naming this result (for example \
             the job id and the attempt), the same on every retry of the same post"
        )));
    };
    let bytes = value.as_bytes();
    if !KEY_BYTES.contains(&bytes.len()) || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(ApiError::BadRequest(format!(
            "the `{IDEMPOTENCY_KEY}` header must be 1 to 255 visible ASCII characters (no \
             spaces)"
        )));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Checks a job id from the path: a malformed one is a job that does not exist.
fn job_id(id: &str) -> Result<(), ApiError> {
    match ids::parse(id, ids::JOB) {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::JobNotFound { id: quote(id) }),
    }
}

/// Leases for `body`, waiting as it asks when nothing is ready.
async fn wait_for_jobs(
    state: &AppState,
    queue: &str,
    body: &LeaseParams,
) -> Result<Leased, StoreError> {
    let engine = &state.engine;
    let lease = || engine.lease_external(queue, &body.worker, body.max, body.lease_ms);
    if body.wait.is_zero() {
        return lease().await;
    }
    let Some(wakeups) = state.long_polls.wakeups(engine.store()) else {
        return lease().await;
    };
    let until = Instant::now() + body.wait;
    let waker = wakeups.waker(queue);
    loop {
        // Listen before looking, so a job that arrives in between wakes this wait.
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let leased = lease().await?;
        let left = until.saturating_duration_since(Instant::now());
        if !leased.jobs.is_empty() || left.is_zero() || state.long_polls.is_closed() {
            return Ok(leased);
        }
        let mut nap = left.min(RECHECK);
        if let Some(due) = leased.next_due {
            let until_due = u64::try_from(due - engine.now()).unwrap_or(0);
            nap = nap.min(Duration::from_millis(until_due));
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(nap) => {}
        }
    }
}

/// Lease jobs of a queue (external workers).
///
/// Leases up to `max` jobs of the queue that sluice's own workers do not run (every kind
/// but `command`, `noop`, `http`, `gate` and `sleep`), oldest first within a priority. Each
/// comes back `running`, its attempt counted, with its fencing token and lease deadline:
/// heartbeat it before the deadline, then post its result. With `wait_ms`, waits for a
/// job that long when none is ready (long-poll); an empty `jobs` means none came. Jobs of a
/// paused queue are not handed out.
#[utoipa::path(
    post, path = "/v1/queues/{q}/lease", tag = "workers", operation_id = "queues.lease",
    request_body = LeaseRequest,
    params(("q" = String, Path, description = "The queue name (letters, digits, `.`, `_`, `-`).")),
    responses(
        (status = OK, description = "The jobs leased, each running under its own lease.", body = Leases),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn lease(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Leases>, ApiError> {
    super::queues::checked(&queue, "q")?;
    let body = parse_lease(&body).map_err(|problems| ApiError::Validation { problems })?;
    let leased = wait_for_jobs(&state, &queue, &body).await?;
    if !leased.jobs.is_empty() {
        tracing::info!(queue = %queue, worker = %body.worker, jobs = leased.jobs.len(), "jobs leased by an external worker");
    }
    let jobs = leased
        .jobs
        .into_iter()
        .map(LeasedJob::of)
        .collect::<Result<_, _>>()?;
    Ok(Json(Leases { jobs }))
}

/// Extend a job's lease.
///
/// Extends the lease held under `token` to `extend_ms` from now. `cancel_requested` says
/// the job's execution was cancelled or restarted by an operator: stop the work and post a
/// failed result. A token that does not hold the lease any more is 409 `LEASE_LOST`: stop
/// the work, its result would be refused.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/heartbeat", tag = "workers", operation_id = "jobs.heartbeat",
    request_body = HeartbeatRequest,
    params(("id" = String, Path, description = "The job id (`job_<shard>_<ULID>`).")),
    responses(
        (status = OK, description = "The lease is extended.", body = HeartbeatAnswer),
        (status = NOT_FOUND, response = inline(JobNotFound)),
        (status = CONFLICT, response = inline(LeaseLost)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let (token, extend_ms) =
        parse_heartbeat(&body).map_err(|problems| ApiError::Validation { problems })?;
    job_id(&id)?;
    let store = state.engine.store();
    let lease_deadline = state.engine.now().saturating_add(extend_ms);
    let held = match store
        .heartbeat(&[(id.clone(), token)], lease_deadline)
        .await
    {
        Ok(held) => held,
        Err(StoreError::BadId(_)) => return Err(ApiError::JobNotFound { id: quote(&id) }),
        Err(e) => return Err(e.into()),
    };
    let cancel_requested = match held.first() {
        Some(LeaseState::Held) => false,
        Some(LeaseState::CancelRequested) => true,
        Some(LeaseState::Lost) | None => {
            return Err(match store.get_job(&id).await? {
                None => ApiError::JobNotFound { id: quote(&id) },
                Some(job) => ApiError::LeaseLost {
                    detail: format!(
                        "job `{id}` is {}{}; this token does not hold its lease any more: stop \
                         the work, its result would be refused",
                        job.status.as_str(),
                        if job.status == JobStatus::Running {
                            " under another lease"
                        } else {
                            ""
                        },
                    ),
                    id,
                },
            });
        }
    };
    Ok(Json(HeartbeatAnswer {
        job_id: id,
        lease_deadline,
        cancel_requested,
    }))
}

/// Post a job's result.
///
/// Settles the job's current attempt: `completed` completes the job (and advances its
/// execution, whose next step sees `output`); `failed` retries it per its retry policy
/// (unless `retryable` is false or its attempts are spent, then it fails). Applied exactly
/// once: the `Idempotency-Key` header names the result, and a repeat with the same key
/// answers what the first post answered (200, `Idempotent-Replayed: true`), even after the
/// job moved on. Also the endpoint an `http` step's service posts to after answering 202,
/// with the token it was sent.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/result", tag = "workers", operation_id = "jobs.result",
    request_body = ResultRequest,
    params(
        ("id" = String, Path, description = "The job id (`job_<shard>_<ULID>`)."),
        ("Idempotency-Key" = String, Header, description = "Names this result: 1 to 255 visible ASCII characters, the same on every retry of the post (for example `<job id>-<attempt>`)."),
    ),
    responses(
        (status = OK, description = "The result is applied (or was, by an earlier post with the same key).",
            body = ResultAnswer,
            headers(("Idempotent-Replayed" = bool, description = "`true` when an earlier post with the same key applied the result; absent otherwise."))),
        (status = NOT_FOUND, response = inline(JobNotFound)),
        (status = CONFLICT, response = inline(ResultConflict)),
        (status = UNPROCESSABLE_ENTITY, response = inline(ValidationFailed)),
    ),
)]
pub async fn result(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let (token, outcome) =
        parse_result(&body).map_err(|problems| ApiError::Validation { problems })?;
    job_id(&id)?;
    let posted = PostedResult {
        idempotency_key: key,
        token,
        outcome,
    };
    match state.engine.post_result(&id, &posted).await {
        Ok(ResultPosted::Applied(answer)) => Ok(Json(answer).into_response()),
        Ok(ResultPosted::Replayed(answer)) => {
            Ok(([(REPLAYED, HeaderValue::from_static("true"))], Json(answer)).into_response())
        }
        Ok(ResultPosted::AlreadyApplied) => Err(ApiError::ResultAlreadyApplied { id }),
        Ok(ResultPosted::LeaseLost) => Err(ApiError::LeaseLost {
            detail: format!(
                "the token does not hold the lease of job `{id}` (it expired and the job was \
                 reclaimed or leased again, or the job settled), or no attempt of it runs; \
                 nothing changed"
            ),
            id,
        }),
        Ok(ResultPosted::NotFound) | Err(StoreError::BadId(_)) => {
            Err(ApiError::JobNotFound { id: quote(&id) })
        }
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
    fn the_documented_fields_are_the_ones_the_handlers_accept() {
        assert_eq!(property_names::<LeaseRequest>(), name_set(LEASE_FIELDS));
        assert_eq!(
            property_names::<HeartbeatRequest>(),
            name_set(HEARTBEAT_FIELDS)
        );
        assert_eq!(property_names::<ResultRequest>(), name_set(RESULT_FIELDS));
    }

    #[test]
    fn a_lease_body_has_defaults_and_bounds() {
        let body = parse_lease(&json!({"worker": "w"})).unwrap();
        assert_eq!(
            body,
            LeaseParams {
                worker: "w".into(),
                max: 1,
                wait: Duration::ZERO,
                lease_ms: DEFAULT_LEASE_MS
            }
        );
        let body = parse_lease(
            &json!({"worker": "w", "max": 100, "wait_ms": 30000, "lease_ttl_ms": 1000}),
        )
        .unwrap();
        assert_eq!(
            (body.max, body.wait, body.lease_ms),
            (100, Duration::from_secs(30), 1_000)
        );
        let problems =
            parse_lease(&json!({"max": 0, "wait_ms": 30001, "lease_ttl_ms": 999, "queue": "q"}))
                .unwrap_err();
        assert_eq!(
            fields(&problems),
            ["queue", "worker", "max", "wait_ms", "lease_ttl_ms"]
        );
    }

    #[test]
    fn a_heartbeat_needs_its_token() {
        assert_eq!(
            parse_heartbeat(&json!({"token": "t"})).unwrap(),
            ("t".into(), DEFAULT_LEASE_MS)
        );
        assert_eq!(
            parse_heartbeat(&json!({"token": "t", "extend_ms": 5000}))
                .unwrap()
                .1,
            5_000
        );
        let problems = parse_heartbeat(&json!({"extend_ms": 10})).unwrap_err();
        assert_eq!(fields(&problems), ["token", "extend_ms"]);
    }

    #[test]
    fn a_result_reads_into_an_outcome() {
        let (token, outcome) =
            parse_result(&json!({"token": "t", "outcome": "completed", "output": {"a": 1}}))
                .unwrap();
        assert_eq!(
            (token.as_deref(), outcome),
            (Some("t"), Outcome::Completed(json!({"a": 1})))
        );
        let (token, outcome) = parse_result(&json!({"outcome": "completed"})).unwrap();
        assert_eq!((token, outcome), (None, Outcome::Completed(Value::Null)));
        let (_, outcome) =
            parse_result(&json!({"outcome": "failed", "error": "disk full"})).unwrap();
        assert_eq!(outcome, Outcome::Failed(JobError::retryable("disk full")));
        let (_, outcome) = parse_result(&json!({"outcome": "failed", "retryable": false})).unwrap();
        assert_eq!(
            outcome,
            Outcome::Failed(JobError::terminal(UNSPECIFIED_FAILURE))
        );
    }

    #[test]
    fn every_problem_of_a_result_body_is_reported() {
        let problems =
            parse_result(&json!({"outcome": "done", "token": "", "retryable": "yes", "x": 1}))
                .unwrap_err();
        assert_eq!(fields(&problems), ["x", "token", "outcome", "retryable"]);
        let problems =
            parse_result(&json!({"outcome": "completed", "error": "e", "retryable": true}))
                .unwrap_err();
        assert_eq!(fields(&problems), ["error", "retryable"]);
        assert_eq!(problems[0].message, "is only for outcome `failed`");
        let problems = parse_result(&json!({"outcome": "failed", "output": 1})).unwrap_err();
        assert_eq!(fields(&problems), ["output"]);
        assert_eq!(fields(&parse_result(&json!({})).unwrap_err()), ["outcome"]);
    }

    #[test]
    fn the_idempotency_key_header_is_required_and_plain() {
        let mut headers = HeaderMap::new();
        let missing = idempotency_key(&headers).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("`Idempotency-Key` header is required"),
            "{missing}"
        );
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("job_0_X-1"));
        assert_eq!(idempotency_key(&headers).unwrap(), "job_0_X-1");
        for bad in ["", "a b", &"k".repeat(256)] {
            headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                idempotency_key(&headers).unwrap_err().code(),
                "BAD_REQUEST",
                "{bad:?}"
            );
        }
    }
}
