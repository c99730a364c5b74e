//! How records are shown to clients (the response DTOs), and how they are documented.
//!
//! - A **job** is its stored record, except that the lease shows only `{worker, deadline}`:
//!   the fencing token is a capability of the holder and is never served.
//! - An **execution** is its stored record with the live state of the current step's job
//!   folded in ([`sluice_core::Execution::observe`]: a leased job shows its step as
//!   `running`), and without the pipeline snapshot unless asked for
//!   (`?include=pipeline`); `pipeline_id` and `pipeline_version` always say which version
//!   it runs.
//! - Everything else is a typed view defined here (`Serialize` + `ToSchema`), so what is
//!   served and what the OpenAPI document says come from one definition.
//!
//! Jobs and executions are served as their stored records with one change each, so their
//! schemas are the records' own (derived in `sluice-core`, feature `openapi`) with the same
//! change applied: [`JobView`] and [`ExecutionView`]. The OpenAPI tests check served
//! responses against these schemas.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;
use sluice_core::job::Lease;
use sluice_core::{Execution, Job, Millis, Pipeline};
use sluice_store::{QueueStats, Store, StoreError, StoredPipeline};
use utoipa::openapi::schema::{Object, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ApiError;

/// Serializes a value the API built itself; failing to is a bug.
fn to_value(value: &impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value)
        .map_err(|e| ApiError::Internal(format!("cannot serialize a view: {e}")))
}

// Built from an allow-list so that a field added to the stored lease later is not served
// by accident.
/// Who holds a job, until when.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Lease)]
pub(crate) struct LeaseView {
    /// The worker that holds the lease.
    worker: String,
    /// When the lease expires unless extended by a heartbeat (ms since the Unix epoch).
    deadline: Millis,
}

impl From<&Lease> for LeaseView {
    fn from(lease: &Lease) -> Self {
        Self {
            worker: lease.worker.clone(),
            deadline: lease.deadline,
        }
    }
}

/// The client view of a job: everything but the lease token.
pub(crate) fn job(job: &Job) -> Result<Value, ApiError> {
    let mut view = to_value(job)?;
    if let Some(map) = view.as_object_mut() {
        map.remove("lease");
        if let Some(lease) = &job.lease {
            map.insert("lease".into(), to_value(&LeaseView::from(lease))?);
        }
    }
    Ok(view)
}

/// The client view of an execution: the current step's job folded in, and the pipeline
/// snapshot only when `include_pipeline`.
pub(crate) async fn execution(
    store: &Store,
    mut exec: Execution,
    include_pipeline: bool,
) -> Result<Value, ApiError> {
    let current_job = exec.steps.get(exec.current).and_then(|s| s.job_id.clone());
    if let Some(job_id) = current_job {
        match store.get_job(&job_id).await {
            Ok(Some(job)) => exec.observe(&job),
            // Pruned, or an id this deployment cannot address: show the stored state.
            Ok(None) | Err(StoreError::BadId(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut view = to_value(&exec)?;
    if !include_pipeline && let Some(map) = view.as_object_mut() {
        map.remove("pipeline");
    }
    Ok(view)
}

/// The object schema inside `schema`; the records patched here are structs, whose derived
/// schemas are inline objects.
fn object_mut(schema: &mut RefOr<Schema>) -> Option<&mut Object> {
    match schema {
        RefOr::T(Schema::Object(object)) => Some(object),
        _ => None,
    }
}

/// The schema of [`job`]: a job record whose `lease` is a [`LeaseView`].
pub(crate) struct JobView;

impl PartialSchema for JobView {
    fn schema() -> RefOr<Schema> {
        let mut schema = Job::schema();
        if let Some(object) = object_mut(&mut schema) {
            // The record's own `lease` is left out of its schema (`schema(ignore)`).
            let mut lease = Ref::from_schema_name(LeaseView::name());
            lease.description =
                "Present while a worker holds the job; it never carries the token.".into();
            object.properties.insert("lease".into(), lease.into());
        }
        schema
    }
}

impl ToSchema for JobView {
    fn name() -> Cow<'static, str> {
        Job::name()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        Job::schemas(schemas);
        schemas.push((LeaseView::name().into_owned(), LeaseView::schema()));
        LeaseView::schemas(schemas);
    }
}

/// The schema of [`execution`]: an execution record whose pipeline snapshot is optional
/// (sent only with `?include=pipeline`).
pub(crate) struct ExecutionView;

impl PartialSchema for ExecutionView {
    fn schema() -> RefOr<Schema> {
        let mut schema = Execution::schema();
        if let Some(object) = object_mut(&mut schema) {
            object.required.retain(|name| name != "pipeline");
        }
        schema
    }
}

impl ToSchema for ExecutionView {
    fn name() -> Cow<'static, str> {
        Execution::name()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        Execution::schemas(schemas);
    }
}

/// One line of the pipeline list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PipelineSummary {
    /// The pipeline id.
    id: String,
    /// Its human name.
    name: String,
    /// Its free text, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    description: Option<String>,
    /// The current version (1 for the first).
    version: u32,
    /// How many steps the current version has.
    steps: usize,
    /// When it was first applied (ms since the Unix epoch).
    created_at: Millis,
    /// When the current version was applied (ms since the Unix epoch).
    updated_at: Millis,
}

impl From<&StoredPipeline> for PipelineSummary {
    fn from(stored: &StoredPipeline) -> Self {
        let p = &stored.pipeline;
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            version: stored.version,
            steps: p.steps.len(),
            created_at: stored.created_at,
            updated_at: stored.updated_at,
        }
    }
}

/// Every pipeline, sorted by id.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PipelineList {
    /// One line per pipeline.
    pub(crate) items: Vec<PipelineSummary>,
}

/// A pipeline's current version, with its timestamps.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StoredPipeline)]
pub(crate) struct PipelineView {
    /// The pipeline id.
    id: String,
    /// The current version (1 for the first).
    version: u32,
    /// When it was first applied (ms since the Unix epoch).
    created_at: Millis,
    /// When the current version was applied (ms since the Unix epoch).
    updated_at: Millis,
    /// The definition, in canonical form (durations in milliseconds).
    pipeline: Pipeline,
}

impl From<StoredPipeline> for PipelineView {
    fn from(stored: StoredPipeline) -> Self {
        Self {
            id: stored.pipeline.id.clone(),
            version: stored.version,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
            pipeline: stored.pipeline,
        }
    }
}

/// The answer to applying a pipeline.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PipelineApplied {
    /// The pipeline id.
    pub(crate) id: String,
    /// The current version: new when `changed`, else the one already stored.
    pub(crate) version: u32,
    /// Whether this apply stored a new version.
    pub(crate) changed: bool,
    /// The definition, in canonical form (durations in milliseconds).
    pub(crate) pipeline: Pipeline,
}

/// The answer to enqueueing a job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobEnqueued {
    /// The job: the new one, or the pending one that holds the `dedupe_key`.
    #[schema(value_type = JobView)]
    pub(crate) job: Value,
    /// Whether a pending job of the queue already held the `dedupe_key`.
    pub(crate) deduplicated: bool,
}

/// The answer to cancelling a job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobCancelled {
    /// Always `true`.
    pub(crate) success: bool,
    /// The cancelled job.
    #[schema(value_type = JobView)]
    pub(crate) job: Value,
}

/// One queue's figures, summed over the shards. A queue that never held a job has zero
/// figures (it can still be paused).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = QueueStats)]
pub(crate) struct QueueView {
    /// The queue name.
    queue: String,
    /// Pending jobs ready to run.
    ready: u64,
    /// Of those, the ones waiting for an external worker (kinds sluice's own workers do not
    /// run).
    external_ready: u64,
    /// Pending jobs waiting for a later time (a delay, a retry backoff).
    delayed: u64,
    /// Pending jobs in a worker's prefetch buffer, not started yet.
    reserved: u64,
    /// Running jobs.
    running: u64,
    /// Jobs completed since the queue first held a job.
    completed: u64,
    /// Jobs failed for good (retries spent, or not retryable) since then.
    failed: u64,
    /// Attempts that failed and were scheduled again since then.
    retried: u64,
    /// Pending jobs cancelled since then.
    cancelled: u64,
    /// How long the job waiting longest among the ready ones has waited, in ms; `null` when
    /// none is ready.
    oldest_ready_age_ms: Option<u64>,
    /// Whether the queue is paused: workers lease none of its jobs (jobs already running go
    /// on, enqueueing goes on).
    paused: bool,
    /// The ids of the live workers serving the queue (heard from within the last minute).
    workers: Vec<String>,
}

impl From<QueueStats> for QueueView {
    fn from(stats: QueueStats) -> Self {
        Self {
            queue: stats.queue,
            ready: stats.ready,
            external_ready: stats.external_ready,
            delayed: stats.delayed,
            reserved: stats.reserved,
            running: stats.running,
            completed: stats.completed,
            failed: stats.failed,
            retried: stats.retried,
            cancelled: stats.cancelled,
            oldest_ready_age_ms: stats.oldest_ready_age_ms.map(|age| u64::try_from(age).unwrap_or(0)),
            paused: stats.paused,
            workers: stats.workers,
        }
    }
}

/// Every queue's figures, sorted by name.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueueList {
    /// One entry per queue that ever held a job (or only the one asked for with `?queue=`).
    pub(crate) items: Vec<QueueView>,
}

/// A job leased by an external worker: the work, and what reporting on it takes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LeasedJob {
    /// The job id (`job_<shard>_<ULID>`).
    id: String,
    /// Its queue.
    queue: String,
    /// Its kind (never one sluice's workers run: `command`, `noop`, `http`, `gate`,
    /// `sleep`).
    kind: String,
    /// Its input, as enqueued. For an `external` step: `{"params": …, "context": …}`, the
    /// step's `params` and the step context (`{"execution": {…}, "input": {…}, "steps":
    /// {"<name>": {"status": …, "output": …}}}`: the execution input and the outputs of
    /// the steps before it).
    payload: Value,
    /// This attempt's number, from 1.
    attempt: u32,
    /// Attempts allowed in total: a failure of the last one is final.
    max_attempts: u32,
    /// The lease's fencing token: send it with each heartbeat and with the result. It is
    /// a capability; keep it to the worker.
    token: String,
    /// When the lease expires unless a heartbeat extends it (ms since the Unix epoch).
    lease_deadline: Millis,
    /// The execution, for a step job.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    execution_id: Option<String>,
    /// The index of the step in that execution, for a step job.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    step: Option<u32>,
}

impl LeasedJob {
    /// The view of a job just leased (running, with its lease).
    pub(crate) fn of(job: Job) -> Result<Self, ApiError> {
        let lease = job
            .lease
            .ok_or_else(|| ApiError::Internal(format!("leased job {} has no lease", job.id)))?;
        Ok(Self {
            id: job.id,
            queue: job.queue,
            kind: job.kind,
            payload: job.payload,
            attempt: job.attempts,
            max_attempts: job.retry.max_attempts,
            token: lease.token,
            lease_deadline: lease.deadline,
            execution_id: job.execution_id,
            step: job.step,
        })
    }
}

/// The answer to a lease: the jobs leased, none when the wait ran out.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Leases {
    /// The jobs, each already `running` under its own lease (at most `max`).
    pub(crate) jobs: Vec<LeasedJob>,
}

/// The answer to a heartbeat.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HeartbeatAnswer {
    /// The job.
    pub(crate) job_id: String,
    /// The lease's new deadline (ms since the Unix epoch).
    pub(crate) lease_deadline: Millis,
    /// The job's execution was cancelled or restarted by an operator: stop the work and
    /// post a failed result (it is recorded, and changes nothing else).
    pub(crate) cancel_requested: bool,
}

/// What a posted result reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PostedOutcome {
    /// The work succeeded (with its `output`).
    Completed,
    /// The work failed (with its `error`; retried per the job's retry policy when
    /// `retryable`).
    Failed,
}

// Documentation only: the engine records the answer (`sluice_store::engine`) and a replay
// serves it as recorded; the OpenAPI tests check served answers against this schema.
/// The answer to a posted result; a repeat of the post with the same `Idempotency-Key`
/// gets the same answer.
#[derive(ToSchema)]
#[schema(as = ResultApplied)]
#[expect(dead_code, reason = "documentation only: the engine records the answer")]
pub(crate) struct ResultAnswer {
    /// The job.
    job_id: String,
    /// The attempt the result settled.
    attempt: u32,
    /// What the result reported.
    outcome: PostedOutcome,
    /// The job's status right after the result: `completed`, `failed` (for good), or
    /// `pending` (failed, another attempt due at `next_attempt_at`).
    job_status: sluice_core::JobStatus,
    /// With `job_status` `pending`: when the next attempt may start (ms since the Unix
    /// epoch).
    #[schema(required = false)]
    next_attempt_at: Millis,
}

/// The answer of a probe that passed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub(crate) status: &'static str,
}

/// The passing probe answer.
pub(crate) const OK: Status = Status { status: "ok" };

#[cfg(test)]
mod tests {
    use sluice_core::job::Lease;
    use sluice_core::{JobStatus, RetryPolicy};

    use serde_json::json;

    use super::*;

    #[test]
    fn a_job_view_never_carries_the_lease_token() {
        let job = Job {
            id: "job_0_01JD0000000000000000000000".into(),
            queue: "default".into(),
            kind: "noop".into(),
            payload: Value::Null,
            status: JobStatus::Running,
            priority: 0,
            attempts: 1,
            retry: RetryPolicy::default(),
            timeout_ms: None,
            scheduled_at: 0,
            dedupe_key: None,
            lease: Some(Lease {
                token: "secret".into(),
                worker: "w1".into(),
                deadline: 42,
            }),
            result: None,
            last_error: None,
            created_at: 0,
            updated_at: 0,
            started_at: Some(1),
            finished_at: None,
            execution_id: None,
            step: None,
        };
        let view = super::job(&job).unwrap();
        assert_eq!(view["lease"], json!({"worker": "w1", "deadline": 42}));
        assert!(!view.to_string().contains("secret"));
        assert_eq!(view["status"], "running");
    }

    #[test]
    fn the_job_schema_shows_the_lease_without_its_token() {
        let schema = serde_json::to_value(JobView::schema()).unwrap();
        assert_eq!(
            schema["properties"]["lease"]["$ref"],
            "#/components/schemas/Lease"
        );
        let lease = serde_json::to_value(LeaseView::schema()).unwrap();
        assert_eq!(lease["required"], json!(["worker", "deadline"]));
        // Only the external workers' own exchanges name a token: the lease handed to the
        // worker, and what it sends back under it.
        let document = serde_json::to_value(crate::openapi()).unwrap();
        let mut with_token: Vec<&str> = document["components"]["schemas"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, schema)| schema["properties"].get("token").is_some())
            .map(|(name, _)| name.as_str())
            .collect();
        with_token.sort_unstable();
        assert_eq!(with_token, ["HeartbeatBody", "LeasedJob", "ResultBody"]);
    }

    #[test]
    fn the_execution_schema_makes_the_pipeline_snapshot_optional() {
        let schema = serde_json::to_value(ExecutionView::schema()).unwrap();
        let required = schema["required"].as_array().unwrap();
        assert!(required.contains(&json!("steps")));
        assert!(!required.contains(&json!("pipeline")));
        assert!(schema["properties"]["pipeline"].is_object());
    }
}

// Documentation only: events are served as `sluice_store::StoredEvent`.
/// One event.
#[derive(ToSchema)]
#[schema(as = Event)]
#[expect(dead_code, reason = "documentation only: the store's event is served")]
pub(crate) struct EventView {
    /// Where the event sits: in the live stream, the cursor to resume after it (the shards'
    /// stream ids joined by commas); in an execution's list, its stream id.
    id: String,
    /// The stable event name (`execution.step.completed`, `job.cancelled`, …).
    #[schema(rename = "type")]
    kind: String,
    /// The payload: the ids of the records it is about and what changed.
    data: Value,
    /// When it was appended.
    at: Millis,
}
